"""tally's own health from its /metrics (Prometheus): the tally-self dashboard."""

from __future__ import annotations

from panels import *  # noqa: F403 (the builders are this module's vocabulary)


PROM = {"type": "prometheus", "uid": "${prom}"}
SEL = 'job=~"$job", instance=~"$instance"'
RATE = "[$__rate_interval]"
Q99 = 'quantile="0.99"'


def sel(metric: str, extra: str = "") -> str:
    """``metric{job=~"$job", instance=~"$instance"[, extra]}``"""
    return f"{metric}{{{SEL}{', ' + extra if extra else ''}}}"


def rate(metric: str, extra: str = "") -> str:
    return f"rate({sel(metric, extra)}{RATE})"


def pq(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> dict:
    """A Prometheus panel target."""
    t = {"datasource": PROM, "editorMode": "code", "expr": expr.strip(), "legendFormat": legend, "range": not instant, "refId": ref}
    if instant:
        t["instant"] = True
    return t


def prom(panel: dict, *exprs: tuple) -> dict:
    """Turns a panel made by the builders above into a Prometheus panel: its
    targets are (expr, legend[, instant]) tuples, refIds A, B, ..."""
    panel["datasource"] = PROM
    panel["targets"] = [pq(e[0], e[1], chr(ord("A") + n), *e[2:]) for n, e in enumerate(exprs)]
    # Prometheus panels take the datasource's scrape interval (timeInterval 15s) as min interval.
    panel.pop("interval", None)
    return panel


def color(name: str, c: str) -> dict:
    return by_name(name, ("color", {"fixedColor": c, "mode": "fixed"}))


def color_re(regex: str, c: str, dashed: bool = False) -> dict:
    props = [{"id": "color", "value": {"fixedColor": c, "mode": "fixed"}}]
    if dashed:
        props.append({"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}})
    return {"matcher": {"id": "byRegexp", "options": regex}, "properties": props}


def summary_quantiles(metric: str, extra: str = "", by: str = "instance") -> list[tuple]:
    """p50 / p99 / max of a summary, one line per `by` value."""
    out = []
    for q, name in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
        matcher = (extra + ", " if extra else "") + 'quantile="' + q + '"'
        out.append((f"max by ({by}) ({sel(metric, matcher)})", name + " {{" + by + "}}"))
    return out


def prom_variables() -> list[dict]:
    def labels(name: str, label: str, query: str, desc: str) -> dict:
        return {
            "allValue": ".*",
            "current": {"text": ["All"], "value": ["$__all"]},
            "datasource": PROM,
            "definition": query,
            "description": desc,
            "hide": 0,
            "includeAll": True,
            "label": label,
            "multi": True,
            "name": name,
            "options": [],
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        }

    return [
        {
            "current": {"text": "tally-metrics", "value": "tally-prom"},
            "description": "The Prometheus datasource that scrapes tally's /metrics (provisioned as uid tally-prom).",
            "hide": 0,
            "includeAll": False,
            "label": "Prometheus",
            "multi": False,
            "name": "prom",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
        # tally_pipeline_queue_capacity is set at start-up, so every running replica has it.
        labels("job", "Job", "label_values(tally_pipeline_queue_capacity, job)", "Prometheus scrape jobs of tally."),
        labels("instance", "Instance", 'label_values(tally_pipeline_queue_capacity{job=~"$job"}, instance)',
               "tally replicas (scrape targets) of the selected jobs."),
    ]


def tally_self() -> dict:
    i = Ids()
    p = []
    y = 0
    red_above_zero = thresholds(("green", None), ("red", 0.000001))
    # --- overview stats
    p.append(prom(stat(i(), "Items accepted", "Spans, log records and metric points accepted per second (all signals and transports).", "",
                       g(0, y, 6, 4), unit="cps", graph="area"),
                  (f"sum({rate('tally_received_items_total')})", "items/s")))  # fmt: skip
    p.append(prom(stat(i(), "Items refused", "Items refused per second (partial success or whole request), any reason.", "",
                       g(6, y, 6, 4), unit="cps", th=thresholds(("green", None), ("orange", 0.000001)), graph="area"),
                  (f"sum({rate('tally_refused_items_total')})", "items/s")))  # fmt: skip
    p.append(prom(stat(i(), "Requests refused", "Whole requests refused per second before their items could be counted (malformed, too large, overloaded, ...).", "",
                       g(12, y, 6, 4), unit="reqps", th=thresholds(("green", None), ("orange", 0.000001)), graph="area"),
                  (f"sum({rate('tally_refused_requests_total')})", "req/s")))  # fmt: skip
    p.append(prom(stat(i(), "Ledger errors (range)", "Usage-ledger transactions that failed in the time range (their requests were answered 503). Should be 0.", "",
                       g(18, y, 6, 4), th=thresholds(("green", None), ("red", 1)), color="background"),
                  (f"sum(increase({sel('tally_ledger_errors_total')}[$__range]))", "errors", True)))  # fmt: skip
    y += 4
    p.append(row(i(), "Ingest", y))
    y += 1
    p.append(prom(timeseries(i(), "Items received per second by signal and transport",
                             "Accepted spans, log records and metric points per second (tally_received_items_total), by signal and transport (grpc, http).", "",
                             g(0, y, 12, 8), unit="cps"),
                  (f"sum by (signal, transport) ({rate('tally_received_items_total')})", "{{signal}} {{transport}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Request bytes per second by signal and transport",
                             "Request bytes received per second after decompression (tally_received_bytes_total).", "",
                             g(12, y, 12, 8), unit="Bps"),
                  (f"sum by (signal, transport) ({rate('tally_received_bytes_total')})", "{{signal}} {{transport}}")))  # fmt: skip
    y += 8
    p.append(prom(timeseries(i(), "Refused items by reason",
                             "Items refused per second (tally_refused_items_total) by signal and reason: missing_tenant, tenant_mismatch, unauthenticated, malformed, too_large, overloaded, usage_unavailable, too_old, ...", "",
                             g(0, y, 12, 8), unit="cps", draw="bars", stack=True),
                  (f"sum by (signal, reason) ({rate('tally_refused_items_total')})", "{{signal}} {{reason}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Refused requests by reason",
                             "Whole requests refused per second (tally_refused_requests_total) by signal, transport and reason.", "",
                             g(12, y, 12, 8), unit="reqps", draw="bars", stack=True),
                  (f"sum by (signal, transport, reason) ({rate('tally_refused_requests_total')})", "{{signal}} {{transport}} {{reason}}")))  # fmt: skip
    y += 8
    p.append(prom(timeseries(i(), "Request duration p50 / p99",
                             "OTLP export request handling time from the tally_request_duration_seconds buckets (0.5 ms ... 5 s), merged over the selected replicas, by signal and transport.", "",
                             g(0, y, 24, 8), unit="s", overrides=[color_re("^p99", "orange")]),
                  (f"histogram_quantile(0.5, sum by (le, signal, transport) ({rate('tally_request_duration_seconds_bucket')}))", "p50 {{signal}} {{transport}}"),
                  (f"histogram_quantile(0.99, sum by (le, signal, transport) ({rate('tally_request_duration_seconds_bucket')}))", "p99 {{signal}} {{transport}}")))  # fmt: skip
    y += 8
    p.append(row(i(), "Pipeline and back-pressure", y))
    y += 1
    p.append(prom(timeseries(i(), "Queue depth vs capacity",
                             "Requests waiting in the pipeline queue (tally_pipeline_queue_depth) against its capacity (dashed), per replica. A depth at capacity means senders get 429/RESOURCE_EXHAUSTED.", "",
                             g(0, y, 8, 8), overrides=[color_re("^capacity", "red", dashed=True)]),
                  (f"max by (instance) ({sel('tally_pipeline_queue_depth')})", "depth {{instance}}"),
                  (f"max by (instance) ({sel('tally_pipeline_queue_capacity')})", "capacity {{instance}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Queued bytes vs budget",
                             "Request bytes (decompressed) held in the pipeline queue (tally_pipeline_queue_bytes) against the byte budget (dashed), per replica.", "",
                             g(8, y, 8, 8), unit="bytes", overrides=[color_re("^budget", "red", dashed=True)]),
                  (f"max by (instance) ({sel('tally_pipeline_queue_bytes')})", "queued {{instance}}"),
                  (f"max by (instance) ({sel('tally_pipeline_queue_bytes_capacity')})", "budget {{instance}}")))  # fmt: skip
    p.append(prom(gauge(i(), "Queue fill (fullest replica)",
                        "Fullest replica now: queued requests / capacity and queued bytes / budget. Orange from 50 %, red from 80 %.", "",
                        g(16, y, 8, 8), thresholds(("green", None), ("orange", 0.5), ("red", 0.8)), unit="percentunit", max_value=1),
                  (f"max(max by (instance) ({sel('tally_pipeline_queue_depth')}) / max by (instance) ({sel('tally_pipeline_queue_capacity')}))", "requests"),
                  (f"max(max by (instance) ({sel('tally_pipeline_queue_bytes')}) / max by (instance) ({sel('tally_pipeline_queue_bytes_capacity')}))", "bytes")))  # fmt: skip
    y += 8
    bp = prom(timeseries(i(), "Back-pressure (rollup, lake)",
                         "1 while a stage pushes back on ingestion: rollup (closed windows wait for the database, tally_rollup_backpressure) or lake (the spool is full, tally_lake_backpressure); per replica.", "",
                         g(0, y, 12, 7)),
              (f"max by (instance) ({sel('tally_rollup_backpressure')})", "rollup {{instance}}"),
              (f"max by (instance) ({sel('tally_lake_backpressure')})", "lake {{instance}}"))  # fmt: skip
    bp["type"] = "state-timeline"
    bp["fieldConfig"]["defaults"] = {
        "color": {"mode": "thresholds"},
        "custom": {"fillOpacity": 80, "hideFrom": {"legend": False, "tooltip": False, "viz": False}, "lineWidth": 0},
        "mappings": [{"options": {"0": {"color": "green", "index": 0, "text": "flowing"},
                                  "1": {"color": "red", "index": 1, "text": "pushing back"}}, "type": "value"}],
        "thresholds": thresholds(("green", None), ("red", 1)),
    }  # fmt: skip
    bp["options"] = {
        "alignValue": "left",
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": False},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": {"hideZeros": False, "mode": "single", "sort": "none"},
    }
    p.append(bp)
    p.append(prom(timeseries(i(), "Items processed vs received per second",
                             "Items taken off the queue by the downstream stage (tally_processed_items_total) against items accepted (dashed), by signal. A lasting gap means the queue is filling.", "",
                             g(12, y, 12, 7), unit="cps", overrides=[color_re("^received", "text", dashed=True)]),
                  (f"sum by (signal) ({rate('tally_processed_items_total')})", "processed {{signal}}"),
                  (f"sum by (signal) ({rate('tally_received_items_total')})", "received {{signal}}")))  # fmt: skip
    y += 7
    p.append(prom(timeseries(i(), "Items shed by forwarding branches",
                             "Items a forwarding branch of the pipeline (Application Insights) missed per minute because its queue was full (tally_pipeline_shed_items_total), by branch. Billing, rollups and the lake never shed: they push back.", "",
                             g(0, y, 24, 6), unit="cpm", draw="bars", stack=True),
                  (f"60 * sum by (branch) ({rate('tally_pipeline_shed_items_total')})", "{{branch}}")))  # fmt: skip
    y += 6
    p.append(row(i(), "Rollups", y))
    y += 1
    p.append(prom(timeseries(i(), "Rollup flush duration",
                             "Time to write one flush of window rows (tally_rollup_flush_seconds, a summary over the last minute): p50, p99 and max per replica, and the mean over the interval.", "",
                             g(0, y, 8, 8), unit="s"),
                  *summary_quantiles("tally_rollup_flush_seconds"),
                  (f"sum by (instance) ({rate('tally_rollup_flush_seconds_sum')}) / sum by (instance) ({rate('tally_rollup_flush_seconds_count')})", "mean {{instance}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Rollup rows written / dropped",
                             "Window rows written (merged) to the database per second, rows dropped because the database stayed unreachable, and failed flushes that will be retried.", "",
                             g(8, y, 8, 8), unit="cps", overrides=[color("dropped", "red"), color("flush errors", "orange")]),
                  (f"sum({rate('tally_rollup_rows_written_total')})", "written"),
                  (f"sum({rate('tally_rollup_dropped_rows_total')})", "dropped"),
                  (f"sum({rate('tally_flush_errors_total')})", "flush errors")))  # fmt: skip
    p.append(prom(timeseries(i(), "Open series",
                             "Series held in open rollup windows (tally_rollup_open_series), per replica: the rollup stage's memory.", "",
                             g(16, y, 8, 8)),
                  (f"max by (instance) ({sel('tally_rollup_open_series')})", "{{instance}}")))  # fmt: skip
    y += 8
    p.append(prom(timeseries(i(), "Items left out of rollups",
                             "Items refused by the rollups (too_old: before window retention, too_new: beyond max_future) and items folded into an overflow series by a cardinality limit, per second.", "",
                             g(0, y, 12, 7), unit="cps"),
                  (f"sum by (signal, reason) ({rate('tally_rollup_refused_items_total')})", "refused {{signal}} {{reason}}"),
                  (f"sum by (kind, limit) ({rate('tally_rollup_overflow_items_total')})", "overflow {{kind}} per {{limit}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Downsampling and skipped partial flushes",
                             "Rows moved to a coarser resolution or expired by maintenance, by source table, and partial flushes skipped because the previous one was still being written (the database is slower than the flush interval), per minute.", "",
                             g(12, y, 12, 7), unit="cpm"),
                  (f"60 * sum by (table) ({rate('tally_rollup_downsampled_rows_total')})", "downsampled {{table}}"),
                  (f"60 * sum({rate('tally_rollup_partial_flushes_skipped_total')})", "partial flushes skipped")))  # fmt: skip
    y += 7
    p.append(row(i(), "Lake (Parquet)", y))
    y += 1
    p.append(prom(timeseries(i(), "Lake spool bytes",
                             "Bytes in the local spool (complete files waiting for upload plus open files) and rows buffered for encoding, per replica. The spool filling up ends in lake back-pressure.", "",
                             g(0, y, 8, 8), unit="bytes"),
                  (f"max by (instance) ({sel('tally_lake_spool_bytes')})", "spool {{instance}}"),
                  (f"max by (instance) ({sel('tally_lake_buffered_bytes')})", "buffered {{instance}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Lake open files",
                             "Parquet files open for writing (tally_lake_open_files), per replica.", "",
                             g(8, y, 8, 8)),
                  (f"max by (instance) ({sel('tally_lake_open_files')})", "{{instance}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Lake upload and write errors",
                             "Failed uploads to the object store (retried with backoff) and local failures writing lake files (disk full, permissions), per minute.", "",
                             g(16, y, 8, 8), unit="cpm", overrides=[color("upload errors", "orange"), color("write errors", "red")]),
                  (f"60 * sum({rate('tally_lake_upload_errors_total')})", "upload errors"),
                  (f"60 * sum({rate('tally_lake_errors_total')})", "write errors")))  # fmt: skip
    y += 8
    p.append(prom(timeseries(i(), "Lake rows written per second by signal",
                             "Rows written to lake files per second (tally_lake_rows_total), by signal.", "",
                             g(0, y, 8, 7), unit="cps"),
                  (f"sum by (signal) ({rate('tally_lake_rows_total')})", "{{signal}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Lake files written vs uploaded",
                             "Lake files completed into the spool per minute, by signal, against files uploaded to the object store (dashed).", "",
                             g(8, y, 8, 7), unit="cpm", overrides=[color_re("^uploaded", "text", dashed=True)]),
                  (f"60 * sum by (signal) ({rate('tally_lake_files_written_total')})", "written {{signal}}"),
                  (f"60 * sum({rate('tally_lake_files_uploaded_total')})", "uploaded")))  # fmt: skip
    p.append(prom(timeseries(i(), "Lake bytes written vs uploaded",
                             "Bytes of completed lake files per second against bytes uploaded to the object store. Uploads lagging behind writes grow the spool.", "",
                             g(16, y, 8, 7), unit="Bps"),
                  (f"sum({rate('tally_lake_bytes_written_total')})", "written"),
                  (f"sum({rate('tally_lake_bytes_uploaded_total')})", "uploaded")))  # fmt: skip
    y += 7
    p.append(row(i(), "Usage ledger", y))
    y += 1
    p.append(prom(timeseries(i(), "Ledger commit latency",
                             "Time to commit one group of usage records (tally_ledger_commit_seconds, a summary over the last minute): p50, p99 and max per replica. Usage events are acknowledged only after this commit.", "",
                             g(0, y, 8, 8), unit="s"),
                  *summary_quantiles("tally_ledger_commit_seconds")))  # fmt: skip
    p.append(prom(timeseries(i(), "Records per commit",
                             "Usage records per ledger transaction (group commit size, a summary): p50 and max per replica, and the mean over the interval.", "",
                             g(8, y, 8, 8)),
                  *[t for t in summary_quantiles("tally_ledger_commit_records") if not t[1].startswith("p99")],
                  (f"sum by (instance) ({rate('tally_ledger_commit_records_sum')}) / sum by (instance) ({rate('tally_ledger_commit_records_count')})", "mean {{instance}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Ledger commits and errors",
                             "Ledger transactions per second and failed ones (tally_ledger_errors_total: their requests were answered 503).", "",
                             g(16, y, 8, 8), unit="cps", overrides=[color("errors", "red")]),
                  (f"sum({rate('tally_ledger_commit_seconds_count')})", "commits"),
                  (f"sum({rate('tally_ledger_errors_total')})", "errors")))  # fmt: skip
    y += 8
    p.append(prom(timeseries(i(), "Usage events by status",
                             "Usage events per second by outcome (tally_usage_events_total): accepted, duplicate (a retry, counted once), conflict (same id, other content), rejected.", "",
                             g(0, y, 12, 7), unit="cps", draw="bars", stack=True,
                             overrides=[color("accepted", "green"), color("duplicate", "blue"), color("conflict", "orange"), color("rejected", "red")]),
                  (f"sum by (status) ({rate('tally_usage_events_total')})", "{{status}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Usage skipped by reason",
                             "Telemetry that would have produced usage but did not, per minute: sampled (trace sampled below 100 %) or out_of_range (negative, not finite or above the meter's max_value).", "",
                             g(12, y, 12, 7), unit="cpm"),
                  (f"60 * sum by (reason) ({rate('tally_usage_skipped_total')})", "{{reason}}")))  # fmt: skip
    y += 7
    p.append(row(i(), "Alerts", y))
    y += 1
    p.append(prom(timeseries(i(), "Alert notifications by outcome",
                             "Webhook notifications per minute by outcome: delivered, retry (an attempt failed and will be retried), failed (given up), all receivers.", "",
                             g(0, y, 8, 8), unit="cpm", draw="bars", stack=True,
                             overrides=[color("delivered", "green"), color("retry", "orange"), color("failed", "red")]),
                  (f"60 * sum by (outcome) ({rate('tally_alert_notifications_total')})", "{{outcome}}")))  # fmt: skip
    p.append(prom(stat(i(), "Notifications pending", "Notifications waiting in the alert outbox now (all receivers; reported by the replica that sends them).", "",
                       g(8, y, 4, 8), th=thresholds(("green", None), ("orange", 10), ("red", 100)), graph="area"),
                  (f"max({sel('tally_alert_notifications_pending')})", "pending")))  # fmt: skip
    p.append(prom(timeseries(i(), "Alert instances by state",
                             "Alert instances pending, firing and resolved after each evaluation round (tally_alerts), from the replica that evaluates.", "",
                             g(12, y, 12, 8), overrides=[color("firing", "red"), color("pending", "orange"), color("resolved", "green")]),
                  (f"max by (state) ({sel('tally_alerts')})", "{{state}}")))  # fmt: skip
    y += 8
    p.append(prom(timeseries(i(), "Alert delivery time (p99)",
                             "Seconds from a notification's state change to its delivery (tally_alert_delivery_seconds, a summary over the last minute): p99 per receiver.", "",
                             g(0, y, 12, 7), unit="s"),
                  (f"max by (receiver) ({sel('tally_alert_delivery_seconds', Q99)})", "p99 {{receiver}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Alert evaluation time and errors",
                             "Duration of an evaluation round (tally_alert_eval_seconds p99, left axis) and rules whose evaluation failed per minute, by rule.", "",
                             g(12, y, 12, 7), unit="s",
                             overrides=[{"matcher": {"id": "byRegexp", "options": "^errors"},
                                         "properties": [{"id": "unit", "value": "cpm"}, {"id": "custom.axisPlacement", "value": "right"},
                                                        {"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}]}]),
                  (f"max by (instance) ({sel('tally_alert_eval_seconds', Q99)})", "p99 {{instance}}"),
                  (f"60 * sum by (rule) ({rate('tally_alert_eval_errors_total')})", "errors {{rule}}")))  # fmt: skip
    y += 7
    p.append(row(i(), "Stripe sync, webhooks and entitlements", y))
    y += 1
    p.append(prom(timeseries(i(), "Stripe pushes by outcome",
                             "Meter-event calls per minute by outcome (tally_stripe_pushes_total): sent, duplicate (Stripe already had it: delivered), retry, failed, halted, expired, unconfirmed; and pushes planned (dashed, tally_stripe_planned_pushes_total).", "",
                             g(0, y, 12, 8), unit="cpm", draw="bars", stack=True,
                             overrides=[color("sent", "green"), color("duplicate", "blue"), color("retry", "orange"), color("failed", "red"),
                                        color("expired", "dark-red"), color_re("^planned", "text", dashed=True)]),
                  (f"60 * sum by (outcome) ({rate('tally_stripe_pushes_total')})", "{{outcome}}"),
                  (f"60 * sum({rate('tally_stripe_planned_pushes_total')})", "planned")))  # fmt: skip
    p.append(prom(timeseries(i(), "Sync ledger by state",
                             "Pushes in the sync ledger by state (tally_stripe_push_rows), from the replica that leads: pending should drain between sync rounds; failed and expired need a look (GET /v1/stripe/sync).", "",
                             g(12, y, 12, 8), overrides=[color("failed", "red"), color("expired", "dark-red"), color("pending", "orange")]),
                  (f"max by (state) ({sel('tally_stripe_push_rows')})", "{{state}}")))  # fmt: skip
    y += 8
    p.append(prom(timeseries(i(), "Planned to confirmed (delay)",
                             "Seconds from a push being planned to Stripe confirming it (tally_stripe_push_delay_seconds, a summary): p50, p99 and max per replica.", "",
                             g(0, y, 8, 7), unit="s"),
                  *summary_quantiles("tally_stripe_push_delay_seconds")))  # fmt: skip
    p.append(prom(timeseries(i(), "Leader and halted",
                             "1 on the replica that leads the Stripe sync (tally_stripe_leader: exactly one should); halted is 1 while Stripe refuses the API key (tally_stripe_halted).", "",
                             g(8, y, 8, 7), overrides=[color_re("^halted", "red")]),
                  (f"max by (instance) ({sel('tally_stripe_leader')})", "leader {{instance}}"),
                  (f"max by (instance) ({sel('tally_stripe_halted')})", "halted {{instance}}")))  # fmt: skip
    p.append(prom(stat(i(), "Confirmed drift",
                       "Reconciliation lines (tenant x meter x period) whose drift a second read of Stripe confirmed (tally_stripe_drift_lines), and the sum of their |drift| in Stripe units (tally_stripe_drift_units). Should be 0: see tally stripe reconcile.", "",
                       g(16, y, 8, 7), th=thresholds(("green", None), ("red", 1)), color="background"),
                  (f"max({sel('tally_stripe_drift_lines')})", "lines"),
                  (f"max({sel('tally_stripe_drift_units')})", "units")))  # fmt: skip
    y += 7
    p.append(prom(timeseries(i(), "Stripe webhooks by outcome",
                             "Webhook events per minute (tally_stripe_webhooks_total): applied, duplicate (a redelivery: nothing changed), stale (older than the state held), ignored (a type tally does not act on), error (answered 503: Stripe redelivers); and requests refused by reason (dashed, tally_stripe_webhooks_refused_total): a forged or stale signature, a missing secret.", "",
                             g(0, y, 12, 7), unit="cpm", draw="bars", stack=True,
                             overrides=[color("applied", "green"), color("duplicate", "blue"), color("error", "red"), color_re("^refused", "orange", dashed=True)]),
                  (f"60 * sum by (outcome) ({rate('tally_stripe_webhooks_total')})", "{{outcome}}"),
                  (f"60 * sum by (reason) ({rate('tally_stripe_webhooks_refused_total')})", "refused {{reason}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Entitlement checks and billing notices",
                             "GET /v1/entitlements answers per second by reason (tally_entitlement_checks_total: ok, limit_reached, credits_exhausted, subscription_inactive, unknown_tenant), and billing notices queued per minute by event (right axis, tally_billing_notices_total).", "",
                             g(12, y, 12, 7), unit="reqps",
                             overrides=[{"matcher": {"id": "byRegexp", "options": "^notice"},
                                         "properties": [{"id": "unit", "value": "cpm"}, {"id": "custom.axisPlacement", "value": "right"}]}]),
                  (f"sum by (reason) ({rate('tally_entitlement_checks_total')})", "{{reason}}"),
                  (f"60 * sum by (event) ({rate('tally_billing_notices_total')})", "notice {{event}}")))  # fmt: skip
    y += 7
    p.append(row(i(), "Application Insights", y))
    y += 1
    p.append(prom(timeseries(i(), "Items to Application Insights",
                             "Items per second accepted by Application Insights (tally_appinsights_accepted_items_total), sent again (tally_appinsights_retried_items_total: a per-item 408/429/5xx or a failed batch) and given up by reason (tally_appinsights_dropped_items_total: buffer_full, daily_cap, too_old, refused, shutdown). Ingestion never waits for it.", "",
                             g(0, y, 12, 7), unit="cps", overrides=[color("accepted", "green"), color("retried", "orange"), color_re("^dropped", "red")]),
                  (f"sum({rate('tally_appinsights_accepted_items_total')})", "accepted"),
                  (f"sum({rate('tally_appinsights_retried_items_total')})", "retried"),
                  (f"sum by (reason) ({rate('tally_appinsights_dropped_items_total')})", "dropped {{reason}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Track calls by status",
                             "Application Insights track calls per minute by HTTP status (tally_appinsights_requests_total): 200, 206 (some items failed), 429/5xx (retried), 402/439 (daily cap).", "",
                             g(12, y, 6, 7), unit="cpm", draw="bars", stack=True),
                  (f"60 * sum by (status) ({rate('tally_appinsights_requests_total')})", "{{status}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Buffer and daily cap",
                             "Items waiting in the exporter's bounded buffer (tally_appinsights_buffered_items), KiB in its disk spool behind it (tally_appinsights_spool_bytes), and 1 while the daily cap stops sending until the next UTC day (tally_appinsights_daily_cap, right axis).", "",
                             g(18, y, 6, 7),
                             overrides=[{"matcher": {"id": "byRegexp", "options": "^daily cap"},
                                         "properties": [{"id": "custom.axisPlacement", "value": "right"}, {"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}]}]),
                  (f"max by (instance) ({sel('tally_appinsights_buffered_items')})", "buffered {{instance}}"),
                  (f"max by (instance) ({sel('tally_appinsights_daily_cap')})", "daily cap {{instance}}"),
                  (f"max by (instance) ({sel('tally_appinsights_spool_bytes')}) / 1024", "spool KiB {{instance}}")))  # fmt: skip
    y += 7
    p.append(row(i(), "Connections", y))
    y += 1
    p.append(prom(timeseries(i(), "Open connections per listener",
                             "Connections open per listener (otlp_grpc, otlp_http, api, or all in one-port mode), all selected replicas.", "",
                             g(0, y, 8, 8)),
                  (f"sum by (listener) ({sel('tally_connections')})", "{{listener}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Connections refused / idle-closed per listener",
                             "Connections closed at once because the listener was at server.max_connections (refused), and connections closed after server.idle_timeout without traffic, per minute.", "",
                             g(8, y, 8, 8), unit="cpm", overrides=[color_re("^refused", "red")]),
                  (f"60 * sum by (listener) ({rate('tally_connections_refused_total')})", "refused {{listener}}"),
                  (f"60 * sum by (listener) ({rate('tally_connections_idle_closed_total')})", "idle-closed {{listener}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "PostgreSQL sign-in tokens",
                             "With database_auth = \"azure\": Entra ID tokens renewed and renewals failed per hour (tally_database_token_renewals_total). A failure keeps the last token, valid until it expires (about an hour): failures for longer than 30 minutes need a look at the managed identity.", "",
                             g(16, y, 8, 8), unit="short", overrides=[color("failed", "red"), color("renewed", "green")]),
                  (f"3600 * sum by (outcome) ({rate('tally_database_token_renewals_total')})", "{{outcome}}")))  # fmt: skip
    return dashboard(
        "tally-self",
        "tally / tally itself",
        "tally's own health from its /metrics (scraped by Prometheus): ingest and refusals, request latency, pipeline queue and back-pressure, rollups, Parquet lake, usage ledger, alert notifications, Stripe sync, connections.",
        ["tally", "self"],
        p,
        prom_variables(),
        [builtin_annotation()],
        time_from="now-6h",
    )

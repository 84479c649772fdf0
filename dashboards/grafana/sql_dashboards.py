"""The PostgreSQL dashboards: tenant overview, service SLOs, alerts (SQL
conventions in generate.py's docstring)."""

from __future__ import annotations

from panels import *  # noqa: F403 (the builders are this module's vocabulary)


def per_metric(col: str, expr: str, src: str) -> str:
    """A time series of `expr` per value of `col` (the legend), over `src`."""
    return f"""
SELECT {BUCKET}, {col} AS metric, {expr}
FROM (
{src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
"""


def tenant_overview() -> dict:
    i = Ids()
    p = []
    src = rollups("tenant, start_ms, count, errors, hist_idx, hist_cnt", TENANT_SERIES)
    y = 0
    p.append(stat(i(), "Requests (range)", "Entry spans (server and consumer) of the selected tenants in the time range.", f"""
SELECT sum(count) AS requests
FROM (
{src}
) r
""", g(0, y, 6, 4), unit="short"))  # fmt: skip
    p.append(stat(i(), "Error rate (range)", "Failed entry spans / all entry spans in the range. Seed SLO: 1 % warning, 5 % critical.", f"""
SELECT sum(errors)::float8 / nullif(sum(count), 0) AS "error rate"
FROM (
{src}
) r
""", g(6, y, 6, 4), unit="percentunit", th=slo_thresholds(ERROR_RATE), decimals=2))  # fmt: skip
    p.append(stat(i(), "p95 latency (range)", "95th percentile of entry-span durations over the range, merged across the selected tenants (tally_hist_quantile over tally_hist_sum). Seed SLO: 2 s warning, 5 s critical.", f"""
SELECT {q_quantile(0.95)} AS p95
FROM (
{src}
) r
""", g(12, y, 6, 4), unit="s", th=slo_thresholds(P95_SECONDS)))  # fmt: skip
    p.append(stat(i(), "Alerts firing", "Alert instances firing now for the selected tenants.", """
SELECT count(*) AS firing
FROM alert_instances
WHERE state = 'firing' AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])
""", g(18, y, 6, 4), th=thresholds(("green", None), ("red", 1)), color="background"))  # fmt: skip
    y += 4
    p.append(row(i(), "Traffic and latency", y))
    y += 1
    p.append(timeseries(i(), "Request rate by tenant", "Entry spans per second (server and consumer spans), per tenant.", per_metric("tenant", 'sum(count) / (max(step_ms) / 1000.0) AS "req/s"', src), g(0, y, 12, 8), unit="reqps", long=True))  # fmt: skip
    p.append(timeseries(i(), "Error rate by tenant", "Failed / all entry spans per tenant. Lines: 1 % and 5 %.", per_metric("tenant", 'sum(errors)::float8 / nullif(sum(count), 0) AS "error rate"', src), g(12, y, 12, 8), unit="percentunit", th=slo_thresholds(ERROR_RATE), long=True, th_style="dashed", decimals=2))  # fmt: skip
    y += 8
    p.append(timeseries(i(), "Latency p50 / p95 / p99 (selected tenants merged)",
                        "Percentiles of entry-span durations, from the merged HDR histograms of the per-tenant series (exact to the bucket, < 1 %). Lines: 2 s and 5 s.", f"""
SELECT {BUCKET},
       {q_quantile(0.5)} AS p50,
       {q_quantile(0.95)} AS p95,
       {q_quantile(0.99)} AS p99
FROM (
{src}
) r
GROUP BY 1
ORDER BY 1
""", g(0, y, 12, 8), unit="s", th=slo_thresholds(P95_SECONDS), th_style="dashed"))  # fmt: skip
    p.append(timeseries(i(), "p95 latency by tenant", "95th percentile of entry-span durations per tenant. Lines: 2 s and 5 s.", per_metric("tenant", f"{q_quantile(0.95)} AS p95", src), g(12, y, 12, 8), unit="s", th=slo_thresholds(P95_SECONDS), long=True, th_style="dashed"))  # fmt: skip
    y += 8
    p.append(row(i(), "Logs", y))
    y += 1
    logs_src = rollups("start_ms, name, count", "kind = 2 AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])")
    sev_colors = [("FATAL", "purple"), ("ERROR", "red"), ("WARN", "orange"), ("INFO", "green"), ("DEBUG", "blue"), ("TRACE", "text")]
    p.append(timeseries(i(), "Log volume by severity", "Log records per minute of the selected tenants, by severity (kind 2 rollups).", per_metric("name", 'sum(count) / (max(step_ms) / 60000.0) AS "records/min"', logs_src), g(0, y, 24, 8), unit="short", draw="bars", stack=True, long=True,
        overrides=[by_name(s, ("color", {"fixedColor": c, "mode": "fixed"})) for s, c in sev_colors]))  # fmt: skip
    y += 8
    p.append(row(i(), "Queues", y))
    y += 1
    gauge_src = rollups("tenant, service, detail, start_ms, last, last_ms, max", "kind = 3 AND name = ${gauge:sqlstring} AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])")
    p.append(gauge(i(), "Queue depth now", "Latest value of the queue metric per tenant, service and attributes (last point in the range). Thresholds 50 / 200.", f"""
SELECT tenant || ' ' || service || ' ' || detail AS series,
       (array_agg(last ORDER BY last_ms DESC NULLS LAST))[1] AS last
FROM (
{gauge_src}
) r
GROUP BY 1
ORDER BY 1
""", g(0, y, 8, 8), slo_thresholds(QUEUE_DEPTH), field_regex="/^last$/", max_value=300))  # fmt: skip
    p.append(timeseries(i(), "Queue depth (max per interval)", "Highest queue metric value seen in each interval, per tenant, service and attributes. Lines: 50 and 200.", f"""
SELECT {BUCKET}, tenant || ' ' || service || ' ' || detail AS metric, max(max) AS "max"
FROM (
{gauge_src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(8, y, 16, 8), th=slo_thresholds(QUEUE_DEPTH), long=True, th_style="dashed"))  # fmt: skip
    y += 8
    p.append(row(i(), "Alerts", y))
    y += 1
    p.append(table(i(), "Firing alerts", "Alert instances firing now (alert_instances), critical first.", """
SELECT rule, tenant, severity, value, threshold,
       to_timestamp(started_ms / 1000.0) AS started,
       to_timestamp(last_notified_ms / 1000.0) AS "last notified"
FROM alert_instances
WHERE state = 'firing' AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])
ORDER BY severity = 'critical' DESC, started_ms
""", g(0, y, 24, 7), overrides=[by_name("severity", ("mappings", [
        {"options": {"critical": {"color": "red", "index": 0}, "warning": {"color": "orange", "index": 1}}, "type": "value"}]),
        ("custom.cellOptions", {"type": "color-text"}))]))  # fmt: skip
    return dashboard(
        "tally-tenant-overview",
        "tally / Tenant overview",
        "Per-tenant request rate, errors, latency percentiles, log volume, queue depth and firing alerts from tally's PostgreSQL rollups.",
        ["tally"],
        p,
        [ds_variable(), tenant_variable(), gauge_variable()],
        [builtin_annotation(), alerts_annotation()],
    )


# ---------------------------------------------------------------------------
# service-slos
# ---------------------------------------------------------------------------


def service_variable() -> dict:
    sql = f"""
SELECT DISTINCT service
FROM (
{rollups("DISTINCT service", "kind = 1 AND service <> '*' AND name = '*' AND detail = '*' AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])", step=False)}
) s
ORDER BY 1
"""
    return query_variable("service", "Service", sql, "Services with entry spans of the selected tenants in the time range.")


def service_slos() -> dict:
    i = Ids()
    p = []
    svc_src = rollups("service, start_ms, count, errors, hist_idx, hist_cnt", SERVICE_SERIES)
    op_src = rollups("service, name, detail, start_ms, count, errors, hist_idx, hist_cnt", OPERATION_SERIES)
    y = 0
    p.append(stat(i(), "Error rate (range)", "Failed / all entry spans of the selected services. SLO: 1 % warning, 5 % critical.", f"""
SELECT sum(errors)::float8 / nullif(sum(count), 0) AS "error rate"
FROM (
{svc_src}
) r
""", g(0, y, 8, 4), unit="percentunit", th=slo_thresholds(ERROR_RATE), decimals=2))  # fmt: skip
    p.append(stat(i(), "p95 latency (range)", "95th percentile of entry-span durations of the selected services. SLO: 2 s warning, 5 s critical.", f"""
SELECT {q_quantile(0.95)} AS p95
FROM (
{svc_src}
) r
""", g(8, y, 8, 4), unit="s", th=slo_thresholds(P95_SECONDS)))  # fmt: skip
    qsrc = rollups("start_ms, max", "kind = 3 AND name = ${gauge:sqlstring} AND service = ANY (ARRAY[${service:sqlstring}]::text[]) AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])")
    p.append(stat(i(), "Queue depth max (range)", "Highest queue metric value of the selected services. SLO: 50 warning, 200 critical.", f"""
SELECT max(max) AS "queue depth"
FROM (
{qsrc}
) r
""", g(16, y, 8, 4), th=slo_thresholds(QUEUE_DEPTH)))  # fmt: skip
    y += 4
    p.append(row(i(), "Services", y))
    y += 1
    p.append(timeseries(i(), "Request rate by service", "Entry spans per second per service (all selected tenants).", per_metric("service", 'sum(count) / (max(step_ms) / 1000.0) AS "req/s"', svc_src), g(0, y, 8, 8), unit="reqps", long=True))  # fmt: skip
    p.append(timeseries(i(), "Error rate by service", "Failed / all entry spans per service. Lines: 1 % and 5 %.", per_metric("service", 'sum(errors)::float8 / nullif(sum(count), 0) AS "error rate"', svc_src), g(8, y, 8, 8), unit="percentunit", th=slo_thresholds(ERROR_RATE), long=True, th_style="dashed", decimals=2))  # fmt: skip
    p.append(timeseries(i(), "p95 latency by service", "95th percentile of entry-span durations per service. Lines: 2 s and 5 s.", per_metric("service", f"{q_quantile(0.95)} AS p95", svc_src), g(16, y, 8, 8), unit="s", th=slo_thresholds(P95_SECONDS), long=True, th_style="dashed"))  # fmt: skip
    y += 8
    p.append(row(i(), "Operations", y))
    y += 1
    ops_cols = f"""service, name AS operation, detail AS kind,
       sum(count) AS requests,
       sum(errors)::float8 / nullif(sum(count), 0) AS "error rate",
       {q_quantile(0.5)} AS p50,
       {q_quantile(0.95)} AS p95,
       {q_quantile(0.99)} AS p99"""
    op_overrides = [
        by_name("error rate", ("unit", "percentunit"), ("decimals", 2), ("thresholds", slo_thresholds(ERROR_RATE)),
                ("custom.cellOptions", {"type": "color-text"})),
        by_name("p50", ("unit", "s")),
        by_name("p95", ("unit", "s"), ("thresholds", slo_thresholds(P95_SECONDS)), ("custom.cellOptions", {"type": "color-text"})),
        by_name("p99", ("unit", "s")),
    ]  # fmt: skip
    p.append(table(i(), "Top operations by p95", "Operations (span name or http.route, by span kind) of the selected services over the range, slowest p95 first.", f"""
SELECT {ops_cols}
FROM (
{op_src}
) r
GROUP BY 1, 2, 3
ORDER BY p95 DESC NULLS LAST, requests DESC
LIMIT 15
""", g(0, y, 12, 9), overrides=op_overrides))  # fmt: skip
    p.append(table(i(), "Top operations by error rate", "Operations of the selected services over the range, highest error rate first.", f"""
SELECT {ops_cols}
FROM (
{op_src}
) r
GROUP BY 1, 2, 3
ORDER BY "error rate" DESC NULLS LAST, requests DESC
LIMIT 15
""", g(12, y, 12, 9), overrides=op_overrides))  # fmt: skip
    y += 9
    p.append(timeseries(i(), "p95 latency by operation", "95th percentile per operation of the selected services and span kinds. Lines: 2 s and 5 s.", f"""
SELECT {BUCKET}, service || ' ' || name || ' (' || detail || ')' AS metric, {q_quantile(0.95)} AS p95
FROM (
{op_src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(0, y, 24, 9), unit="s", th=slo_thresholds(P95_SECONDS), long=True, th_style="dashed"))  # fmt: skip
    y += 9
    p.append(row(i(), "Queues", y))
    y += 1
    gsrc = rollups("tenant, service, detail, start_ms, last, last_ms, max",
                   "kind = 3 AND name = ${gauge:sqlstring} AND service = ANY (ARRAY[${service:sqlstring}]::text[]) AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])")  # fmt: skip
    p.append(gauge(i(), "Queue depth now", "Latest queue metric value per tenant, service and attributes. Thresholds 50 / 200.", f"""
SELECT tenant || ' ' || service || ' ' || detail AS series,
       (array_agg(last ORDER BY last_ms DESC NULLS LAST))[1] AS last
FROM (
{gsrc}
) r
GROUP BY 1
ORDER BY 1
""", g(0, y, 8, 8), slo_thresholds(QUEUE_DEPTH), field_regex="/^last$/", max_value=300))  # fmt: skip
    p.append(timeseries(i(), "Queue depth (max per interval)", "Highest queue metric value per interval. Lines: 50 and 200.", f"""
SELECT {BUCKET}, tenant || ' ' || service || ' ' || detail AS metric, max(max) AS "max"
FROM (
{gsrc}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(8, y, 16, 8), th=slo_thresholds(QUEUE_DEPTH), long=True, th_style="dashed"))  # fmt: skip
    kinds = custom_variable(
        "span_kind", "Span kind", ["server", "consumer", "client", "producer", "internal"], ["server", "consumer"],
        "Span kinds of the operations listed (server and consumer spans are the requests a service handles).",
    )  # fmt: skip
    return dashboard(
        "tally-service-slos",
        "tally / Service SLOs",
        "Per-service and per-operation request rate, error rate and latency against seed SLO thresholds (error rate 1 % / 5 %, p95 2 s / 5 s, queue depth 50 / 200).",
        ["tally", "slo"],
        p,
        [ds_variable(), tenant_variable(), service_variable(), kinds, gauge_variable()],
        [builtin_annotation(), alerts_annotation()],
    )


# ---------------------------------------------------------------------------
# alerts
# ---------------------------------------------------------------------------

OUTBOX_TENANT = "(CASE WHEN payload LIKE '{%' THEN payload::jsonb ->> 'tenant' END) = ANY (ARRAY[${tenant:sqlstring}]::text[])"


def alerts() -> dict:
    i = Ids()
    p = []
    y = 0
    for n, (title, state, color) in enumerate((("Firing", "firing", "red"), ("Pending", "pending", "orange"), ("Resolved", "resolved", "green"))):
        p.append(stat(i(), title, f"Alert instances {state} now (alert_instances) for the selected tenants.", f"""
SELECT count(*) AS "{state}"
FROM alert_instances
WHERE state = '{state}' AND tenant = ANY (ARRAY[${{tenant:sqlstring}}]::text[])
""", g(6 * n, y, 6, 4), th=thresholds(("green", None), (color, 1)), color="background"))  # fmt: skip
    p.append(stat(i(), "Notifications pending", "Outbox rows still to deliver and the age of the oldest (alert_outbox, selected receivers).", """
SELECT count(*) AS pending,
       coalesce((extract(epoch FROM now()) * 1000 - min(created_ms)) / 1000.0, 0) AS "oldest (s)"
FROM alert_outbox
WHERE outcome = 'pending' AND receiver = ANY (ARRAY[${receiver:sqlstring}]::text[])
""", g(18, y, 6, 4), th=thresholds(("green", None), ("orange", 10), ("red", 300)),
        overrides=[by_name("oldest (s)", ("unit", "s"))]))  # fmt: skip
    y += 4
    p.append(table(i(), "Alert instances", "Every alert instance of the selected tenants: pending, firing, or recently resolved.", """
SELECT rule, tenant, state, severity, value, threshold,
       to_timestamp(since_ms / 1000.0) AS since,
       to_timestamp(started_ms / 1000.0) AS started,
       to_timestamp(last_notified_ms / 1000.0) AS "last notified",
       group_key AS "group"
FROM alert_instances
WHERE tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])
ORDER BY state = 'firing' DESC, state = 'pending' DESC, severity = 'critical' DESC, since_ms DESC
""", g(0, y, 24, 8), overrides=[by_name("state", ("mappings", [
        {"options": {"firing": {"color": "red", "index": 0}, "pending": {"color": "orange", "index": 1},
                     "resolved": {"color": "green", "index": 2}}, "type": "value"}]),
        ("custom.cellOptions", {"type": "color-text"}))]))  # fmt: skip
    y += 8
    p.append(row(i(), "Notifications", y))
    y += 1
    outcome_colors = [("delivered", "green"), ("failed", "red"), ("pending", "orange")]
    p.append(timeseries(i(), "Notification outcomes", "Notifications written to the outbox per interval, by outcome (by creation time).", f"""
SELECT (created_ms / $__interval_ms) * $__interval_ms AS "time", outcome AS metric, count(*) AS notifications
FROM alert_outbox
WHERE {TIME_FILTER.format(col='created_ms')}
  AND receiver = ANY (ARRAY[${{receiver:sqlstring}}]::text[])
  AND {OUTBOX_TENANT}
GROUP BY 1, 2
ORDER BY 1, 2
""", g(0, y, 12, 8), draw="bars", stack=True, long=True,
        overrides=[by_name(s, ("color", {"fixedColor": c, "mode": "fixed"})) for s, c in outcome_colors]))  # fmt: skip
    p.append(timeseries(i(), "Delivery lag", "Seconds from a notification's creation to its delivery (delivered rows, by delivery time): median, p95 and max per interval.", f"""
SELECT (done_ms / $__interval_ms) * $__interval_ms AS "time",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY done_ms - created_ms) / 1000.0 AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY done_ms - created_ms) / 1000.0 AS p95,
       max(done_ms - created_ms) / 1000.0 AS "max"
FROM alert_outbox
WHERE outcome = 'delivered'
  AND {TIME_FILTER.format(col='done_ms')}
  AND receiver = ANY (ARRAY[${{receiver:sqlstring}}]::text[])
  AND {OUTBOX_TENANT}
GROUP BY 1
ORDER BY 1
""", g(12, y, 12, 8), unit="s"))  # fmt: skip
    y += 8
    p.append(table(i(), "Outcomes by receiver", "Per receiver over the range (by creation time): notifications by outcome, attempts and delivery lag.", f"""
SELECT receiver,
       count(*) FILTER (WHERE outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE outcome = 'failed') AS failed,
       count(*) FILTER (WHERE outcome = 'pending') AS pending,
       avg(attempts)::float8 AS "avg attempts",
       max(attempts) AS "max attempts",
       percentile_cont(0.95) WITHIN GROUP (ORDER BY done_ms - created_ms)
         FILTER (WHERE outcome = 'delivered') / 1000.0 AS "p95 lag"
FROM alert_outbox
WHERE {TIME_FILTER.format(col='created_ms')}
  AND receiver = ANY (ARRAY[${{receiver:sqlstring}}]::text[])
  AND {OUTBOX_TENANT}
GROUP BY 1
ORDER BY 1
""", g(0, y, 12, 8), overrides=[by_name("p95 lag", ("unit", "s")), by_name("avg attempts", ("decimals", 2)),
        by_name("failed", ("thresholds", thresholds(("green", None), ("red", 1))), ("custom.cellOptions", {"type": "color-text"}))]))  # fmt: skip
    p.append(table(i(), "Failed notifications", "The latest notifications the sender gave up on (retries exhausted or rejected), with the last error.", f"""
SELECT created_ms AS "time", receiver, fingerprint, attempts,
       CASE WHEN payload LIKE '{{%' THEN payload::jsonb ->> 'rule' END AS rule,
       CASE WHEN payload LIKE '{{%' THEN payload::jsonb ->> 'tenant' END AS tenant,
       last_error AS "last error"
FROM alert_outbox
WHERE outcome = 'failed'
  AND {TIME_FILTER.format(col='created_ms')}
  AND receiver = ANY (ARRAY[${{receiver:sqlstring}}]::text[])
  AND {OUTBOX_TENANT}
ORDER BY created_ms DESC
LIMIT 50
""", g(12, y, 12, 8)))  # fmt: skip
    receiver = query_variable(
        "receiver", "Receiver", "SELECT DISTINCT receiver FROM alert_outbox ORDER BY 1",
        "Webhook receivers with notifications in the outbox.", refresh=1,
    )  # fmt: skip
    return dashboard(
        "tally-alerts",
        "tally / Alerts",
        "tally's alert instances (alert_instances) and webhook notifications (alert_outbox): states, outcomes and delivery lag.",
        ["tally", "alerts"],
        p,
        [ds_variable(), tenant_variable(), receiver],
        [builtin_annotation(), alerts_annotation()],
    )


# ---------------------------------------------------------------------------
# tally-self: tally's own /metrics through Prometheus
# ---------------------------------------------------------------------------
#
# Names are tally's (core/src/metric_names.rs; dashboards/check/promql_check.py
# fails on any other). In tally's exporter (metrics-exporter-prometheus, see
# src/observability.rs) only tally_request_duration_seconds has buckets
# (`_bucket{le}`, so histogram_quantile works); every other histogram is a
# summary: `{quantile="0"|"0.5"|"0.9"|"0.95"|"0.99"|"0.999"|"1"}` over a
# rolling 60 s window per process, plus `_sum` and `_count`. Summary
# quantiles cannot be merged across replicas, so those panels show one line
# per instance.

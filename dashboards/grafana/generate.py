#!/usr/bin/env python3
"""Writes tally's Grafana dashboards (Classic JSON, schemaVersion 41) into
dashboards/grafana/dashboards/. The JSON files are committed; this script is
their source, so the SQL that every rollup panel shares is written once.

    python3 dashboards/grafana/generate.py          # (re)write the files
    python3 dashboards/grafana/generate.py --check  # exit 1 if a file is stale

Editing a dashboard in the Grafana UI and exporting it is fine too: then port
the change here (or stop generating that file).

SQL conventions (see dashboards/README.md):

* every time predicate on an epoch-ms BIGINT column is
  ``col >= $__unixEpochFrom()::bigint*1000 AND col < $__unixEpochTo()::bigint*1000``
  (backend macros, bare column: partition pruning and index use);
* rollups are read from rollup_windows, rollup_hours AND rollup_days with
  UNION ALL: tally's downsampling *moves* rows (windows older than 7 days
  become hours, hours older than 90 days become days), so each period lives
  in exactly one table and a range reaching past 7 days needs all three. Each
  branch buckets by ``step_ms = greatest($__interval_ms, <table resolution>)``
  and rates divide by that step, so hour rows are never squeezed into
  1-minute buckets;
* buckets are ``(start_ms / step_ms) * step_ms AS "time"`` (a bigint of epoch
  ms; Grafana reads e+12 numbers as ms), panels' min interval is 1m (the
  windows' resolution), time series end with ``ORDER BY 1`` (``1, 2`` when a
  string column makes them long);
* string variables are always ``${var:sqlstring}``; no custom allValue;
* every panel uses ``{"type": "grafana-postgresql-datasource", "uid": "${ds}"}``.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards")

DS = {"type": "grafana-postgresql-datasource", "uid": "${ds}"}
TIME_FILTER = "{col} >= $__unixEpochFrom()::bigint*1000 AND {col} < $__unixEpochTo()::bigint*1000"
TABLES = (("rollup_windows", 60000), ("rollup_hours", 3600000), ("rollup_days", 86400000))

# Seed SLO thresholds (tally.default.toml's alert examples).
ERROR_RATE = (0.01, 0.05)  # 1 % warning, 5 % critical
P95_SECONDS = (2, 5)
QUEUE_DEPTH = (50, 200)

US_PER_S = "1000000.0"


def rollups(columns: str, where: str, step: bool = True) -> str:
    """The three rollup tables as one row source (with a ``step_ms`` column)."""
    parts = []
    for table, res in TABLES:
        cols = f"{columns}, greatest($__interval_ms, {res}) AS step_ms" if step else columns
        parts.append(
            f"  SELECT {cols}\n"
            f"  FROM {table}\n"
            f"  WHERE {where}\n"
            f"    AND {TIME_FILTER.format(col='start_ms')}"
        )
    return "\n  UNION ALL\n".join(parts)


TENANT_SERIES = "kind = 1 AND service = '*' AND name = '*' AND detail = '*' AND tenant IN (${tenant:sqlstring})"
SERVICE_SERIES = (
    "kind = 1 AND service IN (${service:sqlstring}) AND name = '*' AND detail = '*' AND tenant IN (${tenant:sqlstring})"
)
OPERATION_SERIES = (
    "kind = 1 AND service IN (${service:sqlstring}) AND name <> '*' AND detail IN (${span_kind:sqlstring})"
    " AND tenant IN (${tenant:sqlstring})"
)
BUCKET = '(start_ms / step_ms) * step_ms AS "time"'


def q_quantile(q: float) -> str:
    return f"tally_hist_quantile(tally_hist_sum(hist_idx, hist_cnt), {q}) / {US_PER_S}"


# ---------------------------------------------------------------------------
# Panel builders (the shapes Grafana 11.6–12 writes)
# ---------------------------------------------------------------------------


class Ids:
    def __init__(self):
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def thresholds(*steps: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def slo_thresholds(pair: tuple[float, float]) -> dict:
    return thresholds(("green", None), ("orange", pair[0]), ("red", pair[1]))


def target(sql: str, fmt: str, ref: str = "A") -> dict:
    return {"datasource": DS, "editorMode": "code", "format": fmt, "rawQuery": True, "rawSql": sql.strip(), "refId": ref}


def timeseries(pid, title, desc, sql, grid, unit="short", th=None, draw="line", stack=False, long=False,
               min_interval="1m", decimals=None, overrides=None, th_style="off", fill=10):  # fmt: skip
    custom = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": "",
        "axisPlacement": "auto",
        "barAlignment": 0,
        "barWidthFactor": 0.6,
        "drawStyle": draw,
        "fillOpacity": 80 if draw == "bars" else fill,
        "gradientMode": "none",
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "insertNulls": False,
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": th_style},
    }
    defaults = {
        "color": {"mode": "palette-classic"},
        "custom": custom,
        "mappings": [],
        "thresholds": th or thresholds(("green", None)),
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "gridPos": grid,
        "id": pid,
        "interval": min_interval,
        "options": {
            "legend": {"calcs": ["mean", "max"] if not long else ["max"], "displayMode": "table" if long else "list",
                       "placement": "right" if long else "bottom", "showLegend": True},
            "tooltip": {"hideZeros": False, "mode": "multi", "sort": "desc"},
        },  # fmt: skip
        "pluginVersion": "12.1.0",
        "targets": [target(sql, "time_series")],
        "title": title,
        "type": "timeseries",
    }


def stat(pid, title, desc, sql, grid, unit="short", th=None, overrides=None, graph="none", color="value", decimals=None):
    defaults = {"color": {"mode": "thresholds"}, "mappings": [], "thresholds": th or thresholds(("green", None)), "unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "gridPos": grid,
        "id": pid,
        "interval": "1m",
        "options": {
            "colorMode": color,
            "graphMode": graph,
            "justifyMode": "auto",
            "orientation": "auto",
            "percentChangeColorMode": "standard",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "value_and_name",
            "wideLayout": True,
        },
        "pluginVersion": "12.1.0",
        "targets": [target(sql, "table")],
        "title": title,
        "type": "stat",
    }


def gauge(pid, title, desc, sql, grid, th, unit="short", field_regex=None, max_value=None):
    defaults = {"color": {"mode": "thresholds"}, "mappings": [], "thresholds": th, "unit": unit, "min": 0}
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": grid,
        "id": pid,
        "interval": "1m",
        "options": {
            "minVizHeight": 75,
            "minVizWidth": 75,
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": field_regex or "", "values": True},
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
            "sizing": "auto",
        },
        "pluginVersion": "12.1.0",
        "targets": [target(sql, "table")],
        "title": title,
        "type": "gauge",
    }


def table(pid, title, desc, sql, grid, overrides=None, sort_by=None, min_interval="1m"):
    options = {"cellHeight": "sm", "frameIndex": 0, "showHeader": True}
    if sort_by:
        options["sortBy"] = [{"desc": True, "displayName": sort_by}]
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
                "mappings": [],
                "thresholds": thresholds(("green", None)),
            },
            "overrides": overrides or [],
        },
        "gridPos": grid,
        "id": pid,
        "interval": min_interval,
        "options": options,
        "pluginVersion": "12.1.0",
        "targets": [target(sql, "table")],
        "title": title,
        "type": "table",
    }


def row(pid, title, y):
    return {"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": pid, "panels": [], "title": title, "type": "row"}


def by_name(name: str, *props: tuple[str, object]) -> dict:
    return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": k, "value": v} for k, v in props]}


def cell_color(th: dict) -> tuple[str, object]:
    return ("custom.cellOptions", {"type": "color-background", "mode": "basic"})


def g(x, y, w, h):
    return {"h": h, "w": w, "x": x, "y": y}


# ---------------------------------------------------------------------------
# Variables and annotations
# ---------------------------------------------------------------------------


def ds_variable() -> dict:
    return {
        "current": {"text": "tally", "value": "tally-pg"},
        "description": "The PostgreSQL datasource holding tally's tables (provisioned as uid tally-pg).",
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "ds",
        "options": [],
        "query": "grafana-postgresql-datasource",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def query_variable(name, label, sql, desc, multi=True, include_all=True, current=None, refresh=2, sort=0):
    sql = sql.strip()
    return {
        "current": current or ({"text": ["All"], "value": ["$__all"]} if include_all and multi else {}),
        "datasource": DS,
        "definition": sql,
        "description": desc,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": sql,
        "refresh": refresh,
        "regex": "",
        "skipUrlSync": False,
        "sort": sort,
        "type": "query",
    }


def custom_variable(name, label, values, current, desc, multi=True, include_all=False):
    cur_list = current if isinstance(current, list) else [current]
    return {
        "current": {"text": cur_list if multi else current, "value": cur_list if multi else current},
        "description": desc,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [{"selected": v in cur_list, "text": v, "value": v} for v in values],
        "query": ",".join(values),
        "skipUrlSync": False,
        "type": "custom",
    }


TENANT_VARIABLE_SQL = f"""
SELECT tenant AS __value, coalesce(max(display_name), tenant) AS __text
FROM (
  SELECT id AS tenant, display_name FROM tenants
  UNION ALL
{rollups("DISTINCT tenant, NULL::text AS display_name", "kind = 1 AND service = '*' AND name = '*' AND detail = '*'", step=False)}
) t
GROUP BY tenant
ORDER BY 2, 1
"""


def tenant_variable() -> dict:
    return query_variable(
        "tenant",
        "Tenant",
        TENANT_VARIABLE_SQL,
        "Tenants from the tenants table and every tenant with span rollups in the time range (text: display name).",
    )


def gauge_variable() -> dict:
    sql = f"""
SELECT DISTINCT name
FROM (
{rollups("DISTINCT name", "kind = 3 AND tenant IN (${tenant:sqlstring})", step=False)}
) m
ORDER BY 1
"""
    return query_variable(
        "gauge", "Queue metric", sql, "Gauge metric shown as queue depth (kind 3 rollups).",
        multi=False, include_all=False, current={"text": "queue.depth", "value": "queue.depth"},
    )  # fmt: skip


def alerts_annotation() -> dict:
    sql = f"""
SELECT started_ms AS "time",
       CASE WHEN state = 'resolved' THEN since_ms END AS timeend,
       rule || ' ' || coalesce(severity, '') || ' (' || tenant || ')' AS text,
       rule || ',' || tenant AS tags
FROM alert_instances
WHERE {TIME_FILTER.format(col='started_ms')}
  AND tenant IN (${{tenant:sqlstring}})
ORDER BY 1
"""
    return {
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "name": "Alerts firing",
        "target": {"editorMode": "code", "format": "table", "rawQuery": True, "rawSql": sql.strip(), "refId": "Anno"},
    }


def builtin_annotation() -> dict:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def dashboard(uid, title, desc, tags, panels, variables, annotations, time_from="now-24h") -> dict:
    return {
        "annotations": {"list": annotations},
        "description": desc,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [
            {"asDropdown": True, "icon": "external link", "includeVars": True, "keepTime": True, "tags": ["tally"],
             "targetBlank": False, "title": "tally", "tooltip": "", "type": "dashboards", "url": ""}
        ],  # fmt: skip
        "panels": panels,
        "refresh": "1m",
        "schemaVersion": 41,
        "tags": tags,
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# ---------------------------------------------------------------------------
# tenant-overview
# ---------------------------------------------------------------------------


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
WHERE state = 'firing' AND tenant IN (${tenant:sqlstring})
""", g(18, y, 6, 4), th=thresholds(("green", None), ("red", 1)), color="background"))  # fmt: skip
    y += 4
    p.append(row(i(), "Traffic and latency", y))
    y += 1
    p.append(timeseries(i(), "Request rate by tenant", "Entry spans per second (server and consumer spans), per tenant.", f"""
SELECT {BUCKET}, tenant AS metric, sum(count) / (max(step_ms) / 1000.0) AS "req/s"
FROM (
{src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(0, y, 12, 8), unit="reqps", long=True))  # fmt: skip
    p.append(timeseries(i(), "Error rate by tenant", "Failed / all entry spans per tenant. Lines: 1 % and 5 %.", f"""
SELECT {BUCKET}, tenant AS metric, sum(errors)::float8 / nullif(sum(count), 0) AS "error rate"
FROM (
{src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(12, y, 12, 8), unit="percentunit", th=slo_thresholds(ERROR_RATE), long=True, th_style="dashed", decimals=2))  # fmt: skip
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
    p.append(timeseries(i(), "p95 latency by tenant", "95th percentile of entry-span durations per tenant. Lines: 2 s and 5 s.", f"""
SELECT {BUCKET}, tenant AS metric, {q_quantile(0.95)} AS p95
FROM (
{src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(12, y, 12, 8), unit="s", th=slo_thresholds(P95_SECONDS), long=True, th_style="dashed"))  # fmt: skip
    y += 8
    p.append(row(i(), "Logs", y))
    y += 1
    logs_src = rollups("start_ms, name, count", "kind = 2 AND tenant IN (${tenant:sqlstring})")
    sev_colors = [("FATAL", "purple"), ("ERROR", "red"), ("WARN", "orange"), ("INFO", "green"), ("DEBUG", "blue"), ("TRACE", "text")]
    p.append(timeseries(i(), "Log volume by severity", "Log records per minute of the selected tenants, by severity (kind 2 rollups).", f"""
SELECT {BUCKET}, name AS metric, sum(count) / (max(step_ms) / 60000.0) AS "records/min"
FROM (
{logs_src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(0, y, 24, 8), unit="short", draw="bars", stack=True, long=True,
        overrides=[by_name(s, ("color", {"fixedColor": c, "mode": "fixed"})) for s, c in sev_colors]))  # fmt: skip
    y += 8
    p.append(row(i(), "Queues", y))
    y += 1
    gauge_src = rollups("tenant, service, detail, start_ms, last, last_ms, max", "kind = 3 AND name = ${gauge:sqlstring} AND tenant IN (${tenant:sqlstring})")
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
WHERE state = 'firing' AND tenant IN (${tenant:sqlstring})
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
{rollups("DISTINCT service", "kind = 1 AND service <> '*' AND name = '*' AND detail = '*' AND tenant IN (${tenant:sqlstring})", step=False)}
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
    qsrc = rollups("start_ms, max", "kind = 3 AND name = ${gauge:sqlstring} AND service IN (${service:sqlstring}) AND tenant IN (${tenant:sqlstring})")
    p.append(stat(i(), "Queue depth max (range)", "Highest queue metric value of the selected services. SLO: 50 warning, 200 critical.", f"""
SELECT max(max) AS "queue depth"
FROM (
{qsrc}
) r
""", g(16, y, 8, 4), th=slo_thresholds(QUEUE_DEPTH)))  # fmt: skip
    y += 4
    p.append(row(i(), "Services", y))
    y += 1
    p.append(timeseries(i(), "Request rate by service", "Entry spans per second per service (all selected tenants).", f"""
SELECT {BUCKET}, service AS metric, sum(count) / (max(step_ms) / 1000.0) AS "req/s"
FROM (
{svc_src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(0, y, 8, 8), unit="reqps", long=True))  # fmt: skip
    p.append(timeseries(i(), "Error rate by service", "Failed / all entry spans per service. Lines: 1 % and 5 %.", f"""
SELECT {BUCKET}, service AS metric, sum(errors)::float8 / nullif(sum(count), 0) AS "error rate"
FROM (
{svc_src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(8, y, 8, 8), unit="percentunit", th=slo_thresholds(ERROR_RATE), long=True, th_style="dashed", decimals=2))  # fmt: skip
    p.append(timeseries(i(), "p95 latency by service", "95th percentile of entry-span durations per service. Lines: 2 s and 5 s.", f"""
SELECT {BUCKET}, service AS metric, {q_quantile(0.95)} AS p95
FROM (
{svc_src}
) r
GROUP BY 1, 2
ORDER BY 1, 2
""", g(16, y, 8, 8), unit="s", th=slo_thresholds(P95_SECONDS), long=True, th_style="dashed"))  # fmt: skip
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
                   "kind = 3 AND name = ${gauge:sqlstring} AND service IN (${service:sqlstring}) AND tenant IN (${tenant:sqlstring})")  # fmt: skip
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

OUTBOX_TENANT = "(CASE WHEN payload LIKE '{%' THEN payload::jsonb ->> 'tenant' END) IN (${tenant:sqlstring})"


def alerts() -> dict:
    i = Ids()
    p = []
    y = 0
    for n, (title, state, color) in enumerate((("Firing", "firing", "red"), ("Pending", "pending", "orange"), ("Resolved", "resolved", "green"))):
        p.append(stat(i(), title, f"Alert instances {state} now (alert_instances) for the selected tenants.", f"""
SELECT count(*) AS "{state}"
FROM alert_instances
WHERE state = '{state}' AND tenant IN (${{tenant:sqlstring}})
""", g(6 * n, y, 6, 4), th=thresholds(("green", None), (color, 1)), color="background"))  # fmt: skip
    p.append(stat(i(), "Notifications pending", "Outbox rows still to deliver and the age of the oldest (alert_outbox, selected receivers).", """
SELECT count(*) AS pending,
       coalesce((extract(epoch FROM now()) * 1000 - min(created_ms)) / 1000.0, 0) AS "oldest (s)"
FROM alert_outbox
WHERE outcome = 'pending' AND receiver IN (${receiver:sqlstring})
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
WHERE tenant IN (${tenant:sqlstring})
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
  AND receiver IN (${{receiver:sqlstring}})
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
  AND receiver IN (${{receiver:sqlstring}})
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
  AND receiver IN (${{receiver:sqlstring}})
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
  AND receiver IN (${{receiver:sqlstring}})
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
                             "Items waiting in the exporter's bounded buffer (tally_appinsights_buffered_items), and 1 while the daily cap stops sending until the next UTC day (tally_appinsights_daily_cap, right axis).", "",
                             g(18, y, 6, 7),
                             overrides=[{"matcher": {"id": "byRegexp", "options": "^daily cap"},
                                         "properties": [{"id": "custom.axisPlacement", "value": "right"}, {"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}]}]),
                  (f"max by (instance) ({sel('tally_appinsights_buffered_items')})", "buffered {{instance}}"),
                  (f"max by (instance) ({sel('tally_appinsights_daily_cap')})", "daily cap {{instance}}")))  # fmt: skip
    y += 7
    p.append(row(i(), "Connections", y))
    y += 1
    p.append(prom(timeseries(i(), "Open connections per listener",
                             "Connections open per listener (otlp_grpc, otlp_http, api, or all in one-port mode), all selected replicas.", "",
                             g(0, y, 12, 8)),
                  (f"sum by (listener) ({sel('tally_connections')})", "{{listener}}")))  # fmt: skip
    p.append(prom(timeseries(i(), "Connections refused / idle-closed per listener",
                             "Connections closed at once because the listener was at server.max_connections (refused), and connections closed after server.idle_timeout without traffic, per minute.", "",
                             g(12, y, 12, 8), unit="cpm", overrides=[color_re("^refused", "red")]),
                  (f"60 * sum by (listener) ({rate('tally_connections_refused_total')})", "refused {{listener}}"),
                  (f"60 * sum by (listener) ({rate('tally_connections_idle_closed_total')})", "idle-closed {{listener}}")))  # fmt: skip
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


DASHBOARDS = {
    "tenant-overview.json": tenant_overview,
    "service-slos.json": service_slos,
    "alerts.json": alerts,
    "tally-self.json": tally_self,
}


def render(d: dict) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    os.makedirs(OUT, exist_ok=True)
    for name, build in DASHBOARDS.items():
        path = os.path.join(OUT, name)
        text = render(build())
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("stale (run dashboards/grafana/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Panel, variable and dashboard builders shared by tally's Grafana dashboards
(generate.py writes them; the SQL conventions are in its docstring)."""

from __future__ import annotations

import os

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


TENANT_SERIES = "kind = 1 AND service = '*' AND name = '*' AND detail = '*' AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])"
SERVICE_SERIES = (
    "kind = 1 AND service = ANY (ARRAY[${service:sqlstring}]::text[]) AND name = '*' AND detail = '*' AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])"
)
OPERATION_SERIES = (
    "kind = 1 AND service = ANY (ARRAY[${service:sqlstring}]::text[]) AND name <> '*' AND detail = ANY (ARRAY[${span_kind:sqlstring}]::text[])"
    " AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])"
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


def _reduced(kind, pid, title, desc, sql, grid, th, unit, max_value, options):
    """A gauge-like panel (gauge, bar gauge): one value per field, coloured
    by thresholds, from 0 (to `max_value` when given)."""
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
        "options": options,
        "pluginVersion": "12.1.0",
        "targets": [target(sql, "table")],
        "title": title,
        "type": kind,
    }


def bargauge(pid, title, desc, sql, grid, unit="short", th=None, max_value=None):
    return _reduced("bargauge", pid, title, desc, sql, grid, th or thresholds(("green", None)), unit, max_value, {
        "displayMode": "gradient",
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": False},
        "maxVizHeight": 300,
        "minVizHeight": 16,
        "minVizWidth": 8,
        "namePlacement": "auto",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
        "showUnfilled": True,
        "sizing": "auto",
        "valueMode": "color",
    })


def gauge(pid, title, desc, sql, grid, th, unit="short", field_regex=None, max_value=None):
    return _reduced("gauge", pid, title, desc, sql, grid, th, unit, max_value, {
        "minVizHeight": 75,
        "minVizWidth": 75,
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": field_regex or "", "values": True},
        "showThresholdLabels": False,
        "showThresholdMarkers": True,
        "sizing": "auto",
    })


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
{rollups("DISTINCT name", "kind = 3 AND tenant = ANY (ARRAY[${tenant:sqlstring}]::text[])", step=False)}
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
  AND tenant = ANY (ARRAY[${{tenant:sqlstring}}]::text[])
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

#!/usr/bin/env python3
"""Writes tally's Azure Monitor Workbook (dashboards/workbooks/tally.workbook.json)
and the list of its queries in dashboards/README.md (between the
``workbook-queries`` markers). Both files are committed; this script is their
source.

    python3 dashboards/workbooks/generate.py          # (re)write both
    python3 dashboards/workbooks/generate.py --check  # exit 1 if either is stale

What tally forwards to Application Insights (the queries rely on it):

* spans as ``requests`` (server/consumer) and ``dependencies`` (client,
  producer, internal), logs as ``traces`` / ``exceptions``; every item carries
  ``customDimensions["tenant.id"]`` and ``user_AccountId`` = the tenant;
  ``cloud_RoleName`` = ``service.namespace.service.name``;
* LLM calls are dependencies whose ``target`` is the provider's host
  (api.openai.com, ...) and whose customDimensions may carry
  ``gen_ai.system`` and ``gen_ai.request.model``;
* usage as the custom metric ``tally.usage``: one row per tenant, meter and
  minute (``value``/``valueSum``, ``valueCount``, ``valueMin``, ``valueMax``;
  customDimensions ``tenant.id``, ``meter``, ``unit``, ``billing_period``
  (YYYY-MM), ``window_id`` (stable per tenant, meter and minute: a replayed
  row has the same one), ``source`` = ledger), and
  ``tally.usage.period_total``: the billing ledger's period-to-date total per
  tenant.id, meter and billing_period, emitted periodically (the latest
  wins).

Classic table and column names (the workbook opens on the Application
Insights component, resourceType microsoft.insights/components); the README
lists the workspace-based (App*) equivalents. Queries are kept to standard
KQL; dashboards/check/kql/check.mjs analyses every one with Microsoft's Kusto
language service against the declared table schemas.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tally.workbook.json")
README = os.path.join(HERE, "..", "README.md")
START, END = "<!-- workbook-queries:start -->", "<!-- workbook-queries:end -->"

COMPONENTS = "microsoft.insights/components"
RESOURCES = ["{AppInsights}"]
NS = uuid.UUID("6f1b8f3e-3c0e-4d59-9a8e-7a11e5b0c0de")  # stable ids: uuid5(NS, name)

DAY_MS = 86_400_000
# Billing-period items filter on the period in the query; their time context
# only has to reach back far enough (2 years > App Insights' longest retention).
PERIOD_CONTEXT_MS = 730 * DAY_MS

TENANT = 'coalesce(tostring(customDimensions["tenant.id"]), user_AccountId)'
TENANT_FILTER = "| where '*' in ({Tenant}) or tenant in ({Tenant})"
FAILED = 'tostring(success) =~ "false"'  # works whether `success` is bool or string
# Hosts of LLM APIs recognised without gen_ai.* attributes (edit to taste).
LLM_HOSTS = [
    "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "api.mistral.ai",
    "api.cohere.com", "api.cohere.ai", "api.groq.com", "api.together.xyz", "api.deepseek.com",
    "api.x.ai", "openrouter.ai", "api.perplexity.ai", "api.fireworks.ai",
]  # fmt: skip
LLM_FILTER = (
    "| where isnotempty(system) or host in (dynamic([" + ", ".join(f'"{h}"' for h in LLM_HOSTS) + "]))\n"
    '    or host endswith ".openai.azure.com" or host endswith ".services.ai.azure.com"\n'
    '    or host startswith "bedrock-runtime." or host endswith "-aiplatform.googleapis.com"'
)


def uid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def q(text: str) -> str:
    return text.strip("\n")


# ---------------------------------------------------------------------------
# Queries (each listed in dashboards/README.md)
# ---------------------------------------------------------------------------

Q = {}

Q["tenants"] = q(f"""
union requests, dependencies, customMetrics
| where timestamp {{TimeRange}}
| extend tenant = {TENANT}
| where isnotempty(tenant)
| summarize by tenant
| order by tenant asc
""")

Q["periods"] = q("""
customMetrics
| where name in ("tally.usage", "tally.usage.period_total")
| extend period = tostring(customDimensions.billing_period)
| where period matches regex @"^[0-9][0-9][0-9][0-9]-[0-9][0-9]$"
| summarize by period
| order by period desc
| project value = period, label = period, selected = row_number() == 1
""")

Q["requests_by_tenant"] = q(f"""
requests
| where timestamp {{TimeRange}}
| extend tenant = {TENANT}
{TENANT_FILTER}
| summarize requests = sum(itemCount), failed = sumif(itemCount, {FAILED}),
    p50_ms = percentile(duration, 50), p95_ms = percentile(duration, 95) by tenant
| extend failed_pct = round(100.0 * failed / requests, 2)
| project tenant, requests, failed, failed_pct, p50_ms = round(p50_ms, 1), p95_ms = round(p95_ms, 1)
| order by failed desc, p95_ms desc
""")

Q["failed_over_time"] = q(f"""
requests
| where timestamp {{TimeRange}}
| extend tenant = {TENANT}
{TENANT_FILTER}
| summarize failed = sumif(itemCount, {FAILED}) by tenant, bin(timestamp, {{TimeRange:grain}})
""")

Q["p95_over_time"] = q(f"""
requests
| where timestamp {{TimeRange}}
| extend tenant = {TENANT}
{TENANT_FILTER}
| summarize p95_ms = percentile(duration, 95) by tenant, bin(timestamp, {{TimeRange:grain}})
""")

Q["failing_operations"] = q(f"""
requests
| where timestamp {{TimeRange}}
| where {FAILED}
| extend tenant = {TENANT}
{TENANT_FILTER}
| summarize failed = sum(itemCount), last_seen = max(timestamp)
    by tenant, role = cloud_RoleName, operation = name, resultCode
| top 50 by failed desc
""")

LLM_BASE = f"""
dependencies
| where timestamp {{TimeRange}}
| extend tenant = {TENANT},
    system = tostring(customDimensions["gen_ai.system"]),
    model = tostring(customDimensions["gen_ai.request.model"]),
    host = tolower(tostring(split(target, ":")[0]))
{LLM_FILTER}
{TENANT_FILTER}
| extend provider = coalesce(host, system)
"""

Q["llm_by_provider"] = q(f"""
{LLM_BASE.strip()}
| summarize calls = sum(itemCount), failed = sumif(itemCount, {FAILED}),
    throttled_429 = sumif(itemCount, resultCode == "429"),
    p50_ms = percentile(duration, 50), p95_ms = percentile(duration, 95),
    systems = make_set(system, 5), models = dcount(model) by provider
| extend failed_pct = round(100.0 * failed / calls, 2)
| project provider, calls, failed, failed_pct, throttled_429, p50_ms = round(p50_ms, 1),
    p95_ms = round(p95_ms, 1), systems, models
| order by calls desc
""")

Q["llm_by_model"] = q(f"""
{LLM_BASE.strip()}
| summarize calls = sum(itemCount), failed = sumif(itemCount, {FAILED}),
    throttled_429 = sumif(itemCount, resultCode == "429"),
    p95_ms = round(percentile(duration, 95), 1) by provider, model, tenant
| top 100 by calls desc
""")

Q["llm_p95_over_time"] = q(f"""
{LLM_BASE.strip()}
| summarize p95_ms = percentile(duration, 95) by provider, bin(timestamp, {{TimeRange:grain}})
""")

Q["llm_429_over_time"] = q(f"""
{LLM_BASE.strip()}
| summarize throttled_429 = sumif(itemCount, resultCode == "429") by provider, bin(timestamp, {{TimeRange:grain}})
""")

Q["errors_by_tenant"] = q(f"""
union
    (exceptions
    | where timestamp {{TimeRange}}
    | extend item = "exception", problem = coalesce(problemId, type, outerMessage)),
    (traces
    | where timestamp {{TimeRange}} and severityLevel >= 3
    | extend item = "error log", problem = substring(message, 0, 160))
| extend tenant = {TENANT}
{TENANT_FILTER}
| summarize items = sum(itemCount), last_seen = max(timestamp) by tenant, item, role = cloud_RoleName, problem
| top 50 by items desc
""")

PERIOD_LETS = """
let period = "{BillingPeriod}";
let start = todatetime(strcat(period, "-01"));
"""

USAGE_ROWS = f"""
| extend tenant = {TENANT},
    meter = tostring(customDimensions.meter),
    unit = tostring(customDimensions.unit),
    billing_period = tostring(customDimensions.billing_period),
    window_id = tostring(customDimensions.window_id)
| where billing_period == period
{TENANT_FILTER}
"""

# One row per window: a replayed copy has the same window_id (the latest copy
# ingested wins; replayed copies are identical anyway).
DEDUP = """
| extend key = coalesce(window_id, strcat(tenant, "/", meter, "/", tostring(timestamp))), ingested = ingestion_time()
| summarize arg_max(ingested, tenant, meter, unit, valueSum, valueCount, timestamp), copies = count() by key
"""

Q["usage"] = q(f"""
{PERIOD_LETS.strip()}
customMetrics
| where timestamp between ((start - 1d) .. (endofmonth(start) + 1d))
| where name == "tally.usage"
{USAGE_ROWS.strip()}
{DEDUP.strip()}
| summarize units = sum(valueSum), events = sum(valueCount), windows = count(),
    replayed_copies_dropped = sum(copies) - count(), first_window = min(timestamp), last_window = max(timestamp)
    by tenant, meter, unit
| order by tenant asc, meter asc
""")

Q["usage_per_day"] = q(f"""
{PERIOD_LETS.strip()}
customMetrics
| where timestamp between ((start - 1d) .. (endofmonth(start) + 1d))
| where name == "tally.usage"
{USAGE_ROWS.strip()}
{DEDUP.strip()}
| summarize units = sum(valueSum) by meter, bin(timestamp, 1d)
""")

Q["reconciliation"] = q(f"""
{PERIOD_LETS.strip()}
let rows = customMetrics
| where timestamp between ((start - 1d) .. (endofmonth(start) + 45d))
| where name in ("tally.usage", "tally.usage.period_total")
{USAGE_ROWS.strip()};
let usage = rows
| where name == "tally.usage"
{DEDUP.strip()}
| project tenant, meter, unit, window_start = timestamp, units = valueSum;
let ledger = rows
| where name == "tally.usage.period_total"
| summarize arg_max(timestamp, valueSum, unit) by tenant, meter
| project tenant, meter, ledger_unit = unit, ledger_total = valueSum, as_of = timestamp;
let pairs = union (usage | distinct tenant, meter), (ledger | distinct tenant, meter)
| distinct tenant, meter;
let after_snapshot = usage
| join kind=inner (ledger | project tenant, meter, as_of) on tenant, meter
| where window_start >= bin(as_of, 1m)
| summarize after_as_of = sum(units) by tenant, meter;
pairs
| join kind=leftouter (usage | summarize forwarded = sum(units), unit = take_any(unit) by tenant, meter) on tenant, meter
| join kind=leftouter ledger on tenant, meter
| join kind=leftouter after_snapshot on tenant, meter
| project tenant, meter, unit = coalesce(unit, ledger_unit), forwarded = coalesce(forwarded, 0.0),
    ledger_total, as_of, after_as_of = coalesce(after_as_of, 0.0)
| extend difference = round(forwarded - coalesce(ledger_total, 0.0), 6)
| extend status = case(
    isnull(ledger_total), "no period total",
    difference == 0, "match",
    difference > 0 and difference <= round(after_as_of, 6), "in flight",
    "drift")
| order by status != "match" desc, abs(difference) desc, tenant asc, meter asc
""")


# ---------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------


def text(name: str, markdown: str) -> dict:
    return {"type": 1, "content": {"json": markdown.strip("\n")}, "name": name}


def query(name: str, title: str, key: str, viz: str = "table", width: str | None = None, period: bool = False,
          no_data: str | None = None, grid: dict | None = None, size: int = 0) -> dict:  # fmt: skip
    content = {
        "version": "KqlItem/1.0",
        "query": Q[key],
        "size": size,
        "title": title,
        "noDataMessage": no_data or "No data for the selected tenants in this time range.",
        "queryType": 0,
        "resourceType": COMPONENTS,
        "crossComponentResources": RESOURCES,
        "visualization": viz,
    }
    if period:
        content["timeContext"] = {"durationMs": PERIOD_CONTEXT_MS}
    else:
        content["timeContext"] = {"durationMs": DAY_MS}
        content["timeContextFromParameter"] = "TimeRange"
    if grid:
        content["gridSettings"] = grid
    item = {"type": 3, "content": content, "name": name}
    if width:
        item["customWidth"] = width
    return item


def group(name: str, title: str, items: list) -> dict:
    return {"type": 12, "content": {"version": "NotebookGroup/1.0", "groupType": "editable", "title": title, "items": items}, "name": name}


def thresholds(column: str, rules: list[tuple[str, str | None, str]], default: str) -> dict:
    grid = [{"operator": op, "thresholdValue": v, "representation": color, "text": "{0}{1}"} for op, v, color in rules]
    grid.append({"operator": "Default", "thresholdValue": None, "representation": default, "text": "{0}{1}"})
    return {"columnMatch": column, "formatter": 18, "formatOptions": {"thresholdsOptions": "colors", "thresholdsGrid": grid}}


def bar(column: str, palette: str) -> dict:
    return {"columnMatch": column, "formatter": 4, "formatOptions": {"palette": palette}}


def parameters() -> dict:
    time_values = [3_600_000, 4 * 3_600_000, 12 * 3_600_000, DAY_MS, 2 * DAY_MS, 3 * DAY_MS, 7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS]
    params = [
        {
            "id": uid("AppInsights"),
            "version": "KqlParameterItem/1.0",
            "name": "AppInsights",
            "label": "Application Insights",
            "type": 5,
            "description": "The Application Insights component tally forwards to (the workbook's own resource by default).",
            "isRequired": True,
            "typeSettings": {
                "resourceTypeFilter": {COMPONENTS: True},
                "additionalResourceOptions": ["value::1"],
                "showDefault": False,
            },
            "value": "value::1",
        },
        {
            "id": uid("TimeRange"),
            "version": "KqlParameterItem/1.0",
            "name": "TimeRange",
            "label": "Time range",
            "type": 4,
            "description": "Time range of the request, dependency and error items (usage items follow the billing period).",
            "isRequired": True,
            "typeSettings": {"selectableValues": [{"durationMs": v} for v in time_values], "allowCustom": True},
            "timeContext": {"durationMs": DAY_MS},
            "value": {"durationMs": DAY_MS},
        },
        {
            "id": uid("Tenant"),
            "version": "KqlParameterItem/1.0",
            "name": "Tenant",
            "label": "Tenant",
            "type": 2,
            "description": "Tenants seen in the time range (customDimensions[\"tenant.id\"], else user_AccountId). All = no filter.",
            "isRequired": True,
            "multiSelect": True,
            "quote": "'",
            "delimiter": ",",
            "query": Q["tenants"],
            "crossComponentResources": RESOURCES,
            "typeSettings": {"additionalResourceOptions": ["value::all"], "selectAllValue": "*", "showDefault": False},
            "defaultValue": "value::all",
            "value": ["value::all"],
            "timeContext": {"durationMs": DAY_MS},
            "timeContextFromParameter": "TimeRange",
            "queryType": 0,
            "resourceType": COMPONENTS,
        },
        {
            "id": uid("BillingPeriod"),
            "version": "KqlParameterItem/1.0",
            "name": "BillingPeriod",
            "label": "Billing period",
            "type": 2,
            "description": "Billing periods (YYYY-MM) with tally.usage rows; the latest is selected.",
            "isRequired": True,
            "multiSelect": False,
            "query": Q["periods"],
            "crossComponentResources": RESOURCES,
            "typeSettings": {"additionalResourceOptions": [], "showDefault": False},
            "timeContext": {"durationMs": PERIOD_CONTEXT_MS},
            "queryType": 0,
            "resourceType": COMPONENTS,
        },
    ]
    return {"type": 9, "content": {"version": "KqlParameterItem/1.0", "parameters": params, "style": "pills",
                                   "queryType": 0, "resourceType": COMPONENTS}, "name": "parameters"}  # fmt: skip


INTRO = """
# tally: tenants, LLM providers and usage

Requests, LLM calls and errors per tenant, and usage per tenant and meter for a billing period,
from what tally forwards to this Application Insights resource. Pick the tenants and the billing
period above; the last section explains where each number comes from.
"""

ABOUT = """
## About these tables

* **Requests** are server and consumer spans tally received, **dependencies** are client,
  producer and internal spans, **traces** and **exceptions** are log records. Every item carries
  the tenant twice: `customDimensions["tenant.id"]` and `user_AccountId`; `cloud_RoleName` is
  `service.namespace.service.name`. Counts add up `itemCount` (tally does not sample, so it is 1).
  Durations are milliseconds; P50/P95 are over the items in the time range.
* **LLM providers** are dependencies whose target host is a known LLM API (api.openai.com,
  api.anthropic.com, Azure OpenAI, Bedrock, ...) or that carry `gen_ai.system`; the provider
  is the target host, `gen_ai.request.model` the model. 429 = throttled by the provider.
* **Usage** is the custom metric `tally.usage`: one row per tenant, meter and minute,
  written from tally's billing ledger (`source` = ledger), never from sampled telemetry.
  `valueSum` is the units of that minute, `valueCount` the usage events. A row replayed after
  a retry has the same `window_id`, so the tables keep one row per `window_id`
  (*replayed copies dropped* counts the others).
* **Reconciliation** compares, per tenant and meter, the sum of those deduplicated rows
  for the billing period with the latest `tally.usage.period_total`, the ledger's own
  period-to-date total, sent periodically (*as of* = its time). *match*: equal;
  *in flight*: usage forwarded for minutes after that snapshot explains the difference
  (normal while the period is open); *drift*: rows missing or extra in Application
  Insights (throttling, daily cap, items dropped); *no period total*: none received yet.
  A closed period should show *match* everywhere. The ledger in PostgreSQL stays the billing
  truth; `tally stripe reconcile --period YYYY-MM` checks it against Stripe.
* These queries use the Application Insights table names. For a workspace-based resource the same
  data is in the Log Analytics workspace as AppRequests, AppDependencies, AppTraces,
  AppExceptions and AppMetrics (see dashboards/README.md in tally's repository).
"""


def workbook() -> dict:
    req_grid = {
        "formatters": [
            bar("requests", "blue"),
            thresholds("failed_pct", [("<", "1", "green"), ("<", "5", "yellow")], "redBright"),
            thresholds("p95_ms", [("<", "2000", "green"), ("<", "5000", "yellow")], "redBright"),
        ],
        "sortBy": [{"itemKey": "failed", "sortOrder": 2}],
    }
    llm_grid = {
        "formatters": [
            bar("calls", "blue"),
            thresholds("failed_pct", [("<", "1", "green"), ("<", "5", "yellow")], "redBright"),
            thresholds("throttled_429", [("==", "0", "green")], "orange"),
        ],
    }
    recon_grid = {
        "formatters": [
            thresholds("difference", [("==", "0", "green")], "redBright"),
            thresholds("status", [("==", "match", "green"), ("==", "in flight", "yellow")], "redBright"),
        ],
    }
    items = [
        text("intro", INTRO),
        parameters(),
        group("requests", "Requests per tenant", [
            query("requests by tenant", "Failed requests and P95 duration per tenant", "requests_by_tenant", grid=req_grid),
            query("failed over time", "Failed requests per tenant", "failed_over_time", viz="timechart", width="50"),
            query("p95 over time", "P95 request duration per tenant (ms)", "p95_over_time", viz="timechart", width="50"),
            query("failing operations", "Failing operations (top 50)", "failing_operations",
                  no_data="No failed requests for the selected tenants in this time range."),
        ]),  # fmt: skip
        group("llm", "LLM providers (dependencies)", [
            query("llm by provider", "Calls, failures, 429s and latency per LLM provider", "llm_by_provider", grid=llm_grid,
                  no_data="No dependency calls to a known LLM provider in this time range."),
            query("llm p95 over time", "P95 duration per provider (ms)", "llm_p95_over_time", viz="timechart", width="50"),
            query("llm 429 over time", "429 responses per provider", "llm_429_over_time", viz="timechart", width="50"),
            query("llm by model", "Per provider, model and tenant (top 100)", "llm_by_model",
                  no_data="No dependency calls to a known LLM provider in this time range."),
        ]),  # fmt: skip
        group("errors", "Errors logged", [
            query("errors by tenant", "Exceptions and error logs per tenant (top 50)", "errors_by_tenant",
                  no_data="No exceptions or error logs for the selected tenants in this time range."),
        ]),  # fmt: skip
        group("usage", "Usage in billing period {BillingPeriod}", [
            query("usage", "Usage per tenant and meter (deduplicated by window_id)", "usage", period=True,
                  grid={"formatters": [bar("units", "green")]},
                  no_data="No tally.usage rows for this billing period and these tenants."),
            query("usage per day", "Units per day and meter", "usage_per_day", viz="barchart", period=True,
                  no_data="No tally.usage rows for this billing period and these tenants."),
            query("reconciliation", "Reconciliation: forwarded usage vs the ledger's period total", "reconciliation",
                  period=True, grid=recon_grid,
                  no_data="Neither tally.usage nor tally.usage.period_total rows for this billing period and these tenants."),
        ]),  # fmt: skip
        text("about", ABOUT),
    ]
    return {
        "version": "Notebook/1.0",
        "items": items,
        "fallbackResourceIds": [],
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    }


# ---------------------------------------------------------------------------
# README section: every query, verbatim
# ---------------------------------------------------------------------------


def walk(items):
    for it in items:
        yield it
        if it.get("type") == 12:
            yield from walk(it["content"]["items"])


def readme_section(wb: dict) -> str:
    lines = [START, "", "Generated by `dashboards/workbooks/generate.py` from the workbook itself.", ""]
    for it in walk(wb["items"]):
        if it["type"] == 9:
            for prm in it["content"]["parameters"]:
                if prm.get("query"):
                    lines += [f"**Parameter `{prm['name']}`** ({prm['label']}):", "", "```kusto", prm["query"], "```", ""]
        elif it["type"] == 3:
            c = it["content"]
            ctx = "time range: the billing period, in the query" if "timeContextFromParameter" not in c else "time range: `{TimeRange}`"
            lines += [f"**{c['title']}** ({c['visualization']}; {ctx}):", "", "```kusto", c["query"], "```", ""]
    lines.append(END)
    return "\n".join(lines)


def render(wb: dict) -> str:
    return json.dumps(wb, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    wb = workbook()
    text_wb = render(wb)
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        print(f"{README}: no {START} ... {END} section")
        return 1
    new_readme = pattern.sub(lambda _: readme_section(wb), readme)
    stale = []
    try:
        with open(OUT, encoding="utf-8") as f:
            if f.read() != text_wb:
                stale.append(os.path.relpath(OUT))
    except FileNotFoundError:
        stale.append(os.path.relpath(OUT))
    if new_readme != readme:
        stale.append(os.path.relpath(README))
    if check:
        if stale:
            print("stale (run dashboards/workbooks/generate.py): " + ", ".join(stale))
            return 1
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text_wb)
    with open(README, "w", encoding="utf-8") as f:
        f.write(new_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

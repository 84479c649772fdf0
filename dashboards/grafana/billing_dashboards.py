"""The PostgreSQL "Usage & billing" dashboard: usage per tenant and meter this
billing period and by day, limits and credits, subscription status, the
Stripe sync and its reconciliation (SQL conventions in generate.py's
docstring).

"This billing period" is what GET /v1/entitlements uses
(aggregator/src/entitlements/state.rs, ``Tenant::period``): the current
period of the tenant's Stripe subscription (stripe_customers, found through
tenants.stripe_customer_id), rolled forward by its own length while Stripe
has not told of the next one, hour-aligned; else the UTC calendar month.
Usage is read from the hourly rollup (usage_hourly) like the API: hours
starting in [period start, period end). A period comparison is column
against column (``u.hour_ms >= p.start_ms``), not a time-range predicate.
"""

from __future__ import annotations

from panels import *  # noqa: F403 (the builders are this module's vocabulary)

# The tenant, meter and status lists as arrays: an empty list (a database
# with no tenants yet) is ARRAY[]::text[], so panels show "no data" instead
# of failing on `IN ()`.
TENANT_IN = "= ANY (ARRAY[${tenant:sqlstring}]::text[])"
METER_IN = "= ANY (ARRAY[${meter:sqlstring}]::text[])"
DENY_IN = "= ANY (ARRAY[${deny:sqlstring}]::text[])"
NOW_MS = "(extract(epoch FROM now()) * 1000)::bigint"

# Stripe's subscription statuses; the default deny list of [entitlements].
STATUSES = ["active", "trialing", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "paused"]
DENY_DEFAULT = ["canceled", "unpaid", "incomplete_expired", "paused"]

# now, the UTC calendar month holding it, and every selected tenant's period.
PERIODS = f"""now_ AS (
  SELECT {NOW_MS} AS now_ms,
         (extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC')) * 1000)::bigint AS month_start_ms,
         (extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') * 1000)::bigint AS month_end_ms
), periods AS (
  SELECT t.id AS tenant, t.display_name, t.stripe_customer_id AS customer, c.subscription_id, c.status,
         c.status_at_s, c.payment, c.payment_at_s, c.updated_ms,
         CASE WHEN s.live THEN (c.period_start_ms + s.k * (c.period_end_ms - c.period_start_ms)) / 3600000 * 3600000
              ELSE n.month_start_ms END AS start_ms,
         CASE WHEN s.live THEN (c.period_end_ms + s.k * (c.period_end_ms - c.period_start_ms)) / 3600000 * 3600000
              ELSE n.month_end_ms END AS end_ms,
         CASE WHEN NOT s.live THEN 'calendar month' WHEN s.k > 0 THEN 'subscription, rolled forward'
              ELSE 'subscription' END AS source
  FROM tenants t
  CROSS JOIN now_ n
  LEFT JOIN stripe_customers c ON c.customer_id = t.stripe_customer_id
  CROSS JOIN LATERAL (
    SELECT coalesce(c.period_end_ms > c.period_start_ms AND c.period_start_ms <= n.now_ms, false) AS live,
           CASE WHEN c.period_end_ms > c.period_start_ms AND n.now_ms >= c.period_end_ms
                THEN (n.now_ms - c.period_start_ms) / (c.period_end_ms - c.period_start_ms) ELSE 0 END AS k
  ) s
  WHERE t.id {TENANT_IN}
)"""

# Usage of each selected tenant and meter in the tenant's period. `sum` is
# what entitlements count for sum and count meters (a count meter records 1
# per event, so its sum equals its events).
PERIOD_USAGE = f"""{PERIODS}, period_usage AS (
  SELECT p.tenant, u.meter, sum(u.sum) AS units, sum(u.count) AS events, min(u.min) AS lowest, max(u.max) AS highest,
         (array_agg(u.last_value ORDER BY u.last_time_ms DESC))[1] AS last_value, max(u.last_time_ms) AS last_ms
  FROM periods p
  JOIN usage_hourly u ON u.tenant = p.tenant AND u.hour_ms >= p.start_ms AND u.hour_ms < p.end_ms
  WHERE u.meter {METER_IN}
  GROUP BY 1, 2
)"""

# Per (tenant, meter) with an allowance or credits: limit, usage, credits and
# the answer GET /v1/entitlements gives (state.rs `answer`). Default limits
# (tally.toml `limit = ...`) are not in the database: the `default_limits`
# textbox holds them as `meter=limit,meter=limit`.
LIMITS = f"""WITH {PERIOD_USAGE}, defaults AS (
  SELECT DISTINCT ON (meter) meter, limit_value
  FROM (
    SELECT trim(split_part(kv, '=', 1)) AS meter,
           CASE WHEN trim(split_part(kv, '=', 2)) ~ '^[0-9]+([.][0-9]*)?([eE][-+]?[0-9]+)?$'
                THEN trim(split_part(kv, '=', 2))::float8 END AS limit_value
    FROM unnest(string_to_array(${{default_limits:sqlstring}}, ',')) AS kv
  ) d
  WHERE limit_value IS NOT NULL
  ORDER BY meter
), own AS (
  SELECT tenant, meter, limit_value FROM tenant_limits
  WHERE limit_value IS NOT NULL AND tenant {TENANT_IN} AND meter {METER_IN}
), credits AS (
  SELECT tenant, meter, sum(amount) AS balance FROM credit_entries
  WHERE tenant {TENANT_IN} AND meter {METER_IN}
  GROUP BY 1, 2
), pairs AS (
  SELECT tenant, meter FROM own
  UNION SELECT tenant, meter FROM credits
  UNION SELECT u.tenant, u.meter FROM period_usage u JOIN defaults d USING (meter)
), lines AS (
  SELECT x.tenant, x.meter, p.status, coalesce(o.limit_value, d.limit_value) AS lim,
         coalesce(u.units, 0) AS used, c.balance
  FROM pairs x
  JOIN periods p ON p.tenant = x.tenant
  LEFT JOIN own o ON o.tenant = x.tenant AND o.meter = x.meter
  LEFT JOIN defaults d ON d.meter = x.meter
  LEFT JOIN period_usage u ON u.tenant = x.tenant AND u.meter = x.meter
  LEFT JOIN credits c ON c.tenant = x.tenant AND c.meter = x.meter
), answers AS (
  SELECT l.*, l.balance - greatest(l.used - coalesce(l.lim, 0), 0) AS credits_left
  FROM lines l
), states AS (
  SELECT a.*,
         CASE WHEN a.status {DENY_IN} THEN 'subscription_inactive'
              WHEN a.balance IS NOT NULL AND a.credits_left <= 0 AND (a.lim IS NULL OR a.used >= a.lim) THEN 'credits_exhausted'
              WHEN a.used >= a.lim AND a.balance IS NOT NULL THEN 'ok (drawing credits)'
              WHEN a.used >= a.lim THEN 'limit_reached'
              ELSE 'ok' END AS state
  FROM answers a
)"""

PUSH_STATE_COLORS = [("sent", "green"), ("pending", "orange"), ("failed", "red"), ("expired", "purple")]


def value_colors(*pairs: tuple[str, str]) -> dict:
    return {"type": "value", "options": {v: {"color": c, "index": i} for i, (v, c) in enumerate(pairs)}}


def colored(name: str, *pairs: tuple[str, str]) -> dict:
    return by_name(name, ("mappings", [value_colors(*pairs)]), ("custom.cellOptions", {"type": "color-text"}))


def ts_col(name: str) -> dict:
    return by_name(name, ("unit", "dateTimeAsIso"))


RED_FROM_1 = thresholds(("green", None), ("red", 1))


def billing_variables() -> list[dict]:
    tenant = query_variable(
        "tenant", "Tenant", "SELECT id AS __value, coalesce(display_name, id) AS __text FROM tenants ORDER BY 2, 1",
        "Tenants known to the ledger (the tenants table: created on first usage, by a limit, a credit or a "
        "Stripe mapping); text: display name.", refresh=1,
    )  # fmt: skip
    # Distinct (tenant, meter) of the hourly rollup by walking its primary
    # key (one index probe per pair, not a scan of every hour), plus meters
    # with limits or credits only.
    meter_sql = f"""
WITH RECURSIVE pairs AS (
  (SELECT tenant, meter FROM usage_hourly ORDER BY tenant, meter LIMIT 1)
  UNION ALL
  SELECT n.tenant, n.meter
  FROM pairs p
  CROSS JOIN LATERAL (
    SELECT u.tenant, u.meter FROM usage_hourly u
    WHERE (u.tenant, u.meter) > (p.tenant, p.meter)
    ORDER BY u.tenant, u.meter
    LIMIT 1
  ) n
)
SELECT meter FROM pairs WHERE tenant {TENANT_IN}
UNION SELECT meter FROM tenant_limits WHERE tenant {TENANT_IN}
UNION SELECT meter FROM credit_entries WHERE tenant {TENANT_IN}
ORDER BY 1
"""
    meter = query_variable("meter", "Meter", meter_sql, "Meters with usage (any time), limits or credits of the selected tenants.", refresh=1)
    deny = custom_variable(
        "deny", "Denying statuses", STATUSES, DENY_DEFAULT,
        "Subscription statuses that deny use: set as tally's entitlements.deny_statuses (these are its defaults).",
    )  # fmt: skip
    defaults = {
        "current": {"text": "", "value": ""},
        "description": "The meters' default limits from tally.toml ([[meters]] limit = ...), as meter=limit pairs "
        "separated by commas, e.g. llm_tokens=1000000,api_calls=50000. They are not in the database; a tenant's own "
        "limit (tenant_limits) overrides them. Empty: only tenants' own limits are shown.",
        "hide": 0,
        "label": "Default limits",
        "name": "default_limits",
        "options": [{"selected": True, "text": "", "value": ""}],
        "query": "",
        "skipUrlSync": False,
        "type": "textbox",
    }
    return [ds_variable(), tenant, meter, deny, defaults]


def stat_row(i, y: int) -> list[dict]:
    p = []
    p.append(stat(i(), "Limits reached", "Tenant × meter pairs whose entitlement answer is limit_reached or credits_exhausted now (see Limits and credits).", f"""
{LIMITS}
SELECT count(*) FILTER (WHERE state IN ('limit_reached', 'credits_exhausted')) AS "limits reached"
FROM states
""", g(0, y, 4, 4), th=RED_FROM_1, color="background"))  # fmt: skip
    p.append(stat(i(), "Subscriptions denying", "Selected tenants whose Stripe subscription status is one of the denying statuses (entitlement answer subscription_inactive).", f"""
WITH {PERIODS}
SELECT count(*) FILTER (WHERE status {DENY_IN}) AS denying
FROM periods
""", g(4, y, 4, 4), th=RED_FROM_1, color="background"))  # fmt: skip
    p.append(stat(i(), "Payment problems", "Selected tenants whose last invoice outcome is payment_failed or payment_action_required (stripe_customers.payment).", f"""
WITH {PERIODS}
SELECT count(*) FILTER (WHERE payment IN ('payment_failed', 'payment_action_required')) AS "payment problems"
FROM periods
""", g(8, y, 4, 4), th=thresholds(("green", None), ("orange", 1)), color="background"))  # fmt: skip
    p.append(stat(i(), "Stripe pushes pending", "Meter events written to the sync ledger and not yet confirmed by Stripe, and the age of the oldest (orange from 15 min, red from 1 h: the sender is behind, halted, or Stripe is refusing calls).", f"""
SELECT count(*) AS pending,
       coalesce(({NOW_MS} - min(created_ms)) / 1000.0, 0) AS "oldest (s)"
FROM stripe_pushes
WHERE state = 'pending' AND tenant {TENANT_IN} AND meter {METER_IN}
""", g(12, y, 4, 4), th=thresholds(("green", None), ("orange", 900), ("red", 3600)),
        overrides=[by_name("oldest (s)", ("unit", "s")), by_name("pending", ("thresholds", thresholds(("green", None))))]))  # fmt: skip
    p.append(stat(i(), "Stripe pushes failed", "Pushes Stripe refused or left unconfirmed (failed: the stripe_sync_failed alert metric) and those too old for Stripe (expired), all time: each needs a hand (POST /v1/stripe/sync/retry once mended).", f"""
SELECT count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'expired') AS expired
FROM stripe_pushes
WHERE state IN ('failed', 'expired') AND tenant {TENANT_IN} AND meter {METER_IN}
""", g(16, y, 4, 4), th=RED_FROM_1, color="background"))  # fmt: skip
    p.append(stat(i(), "Drift confirmed", "Reconciliation lines whose drift (Stripe - expected units) a second read of Stripe confirmed, and the sum of |drift| in Stripe units: the stripe_drift alert metric.", f"""
SELECT count(*) AS lines, coalesce(sum(abs(drift)), 0) AS units
FROM stripe_reconciliations
WHERE drift IS NOT NULL AND drift <> 0 AND checks >= 2 AND tenant {TENANT_IN} AND meter {METER_IN}
""", g(20, y, 4, 4), th=RED_FROM_1, color="background"))  # fmt: skip
    return p


def usage_rows(i, y: int) -> tuple[list[dict], int]:
    p = [row(i(), "Usage", y)]
    y += 1
    p.append(table(i(), "Usage this billing period", "Per tenant and meter, the hourly rollup over the tenant's current billing period (the Stripe subscription's period, else the UTC calendar month; independent of the time range). "
                   "Which number is the meter's value depends on its aggregation: sum → sum (what GET /v1/entitlements calls usage), count → events (= sum), min/max → min/max, avg → sum / events, last → last. "
                   "GET /v1/usage/summary always uses the calendar month.", f"""
WITH {PERIOD_USAGE}
SELECT u.tenant, u.meter, u.units AS "sum", u.events, u.lowest AS "min", u.highest AS "max",
       u.units / nullif(u.events, 0) AS "avg", u.last_value AS "last",
       to_timestamp(u.last_ms / 1000.0) AS "last event",
       to_timestamp(p.start_ms / 1000.0) AS "period start", to_timestamp(p.end_ms / 1000.0) AS "period end",
       p.source AS "period from"
FROM period_usage u
JOIN periods p USING (tenant)
ORDER BY u.meter, u.units DESC, u.tenant
""", g(0, y, 16, 9), overrides=[ts_col("last event"), ts_col("period start"), ts_col("period end")]))  # fmt: skip
    p.append(bargauge(i(), "Top tenants this period", "The 5 biggest users of each meter this billing period, as their share of the meter's usage by the selected tenants (sum; numbers in the table beside).", f"""
WITH {PERIOD_USAGE}, ranked AS (
  SELECT meter, tenant, units / nullif(sum(units) OVER (PARTITION BY meter), 0) AS share,
         row_number() OVER (PARTITION BY meter ORDER BY units DESC, tenant) AS rank
  FROM period_usage
)
SELECT meter || ' · ' || tenant AS series, share
FROM ranked
WHERE rank <= 5 AND share IS NOT NULL
ORDER BY meter, rank
""", g(16, y, 8, 9), unit="percentunit", max_value=1))  # fmt: skip
    y += 9
    p.append(timeseries(i(), "Usage by day", "Sum of each meter's values per UTC day (or longer step on long ranges) over the selected tenants, from the hourly rollup (hours starting in the step). Meters have their own units: compare a meter with itself.", f"""
SELECT (hour_ms / $__interval_ms) * $__interval_ms AS "time", meter AS metric, sum(sum) AS usage
FROM usage_hourly
WHERE {TIME_FILTER.format(col='hour_ms')}
  AND tenant {TENANT_IN} AND meter {METER_IN}
GROUP BY 1, 2
ORDER BY 1, 2
""", g(0, y, 24, 8), long=True, min_interval="1d"))  # fmt: skip
    return p, y + 8


def limit_rows(i, y: int) -> tuple[list[dict], int]:
    p = [row(i(), "Limits, credits and subscriptions", y)]
    y += 1
    used_th = thresholds(("green", None), ("orange", 0.8), ("red", 1))
    p.append(table(i(), "Limits and credits", "Per tenant and meter with a limit (its own, else the Default limits variable) or credits: usage this billing period, what is left, and the answer GET /v1/entitlements gives now. "
                   "Credits remaining = balance (all entries: top-ups, adjustments, draws of closed periods) - this period's usage beyond the limit (all of it without one).", f"""
{LIMITS}
SELECT tenant, meter, lim AS "limit", used, used / nullif(lim, 0) AS "used %",
       greatest(lim - used, 0) AS remaining, balance AS "credits balance", credits_left AS "credits remaining", state
FROM states
ORDER BY state = 'ok', state = 'ok (drawing credits)', "used %" DESC NULLS LAST, tenant, meter
""", g(0, y, 24, 8), overrides=[
        by_name("used %", ("unit", "percentunit"), ("thresholds", used_th), ("custom.cellOptions", {"type": "gauge", "mode": "basic", "valueDisplayMode": "text"}), ("max", 1)),
        colored("state", ("ok", "green"), ("ok (drawing credits)", "yellow"), ("limit_reached", "red"), ("credits_exhausted", "red"),
                ("subscription_inactive", "purple")),
    ]))  # fmt: skip
    y += 8
    p.append(table(i(), "Subscriptions", "Per selected tenant: its Stripe customer and subscription as the webhooks last told (stripe_customers), the billing period entitlements use now, and the last invoice outcome. Status denied in purple, past_due orange.", f"""
WITH {PERIODS}
SELECT tenant, display_name AS name, customer, subscription_id AS subscription,
       coalesce(status, CASE WHEN customer IS NULL THEN 'no customer' ELSE 'no subscription yet' END) AS status,
       CASE WHEN status {DENY_IN} THEN 'denied' ELSE 'allowed' END AS use,
       to_timestamp(start_ms / 1000.0) AS "period start", to_timestamp(end_ms / 1000.0) AS "period end",
       source AS "period from", payment AS "last payment", to_timestamp(payment_at_s) AS "payment at",
       CASE WHEN status IS NOT NULL THEN to_timestamp(status_at_s) END AS "status as of",
       to_timestamp(updated_ms / 1000.0) AS updated
FROM periods
ORDER BY status {DENY_IN} DESC NULLS LAST, payment IN ('payment_failed', 'payment_action_required') DESC NULLS LAST, tenant
""", g(0, y, 14, 8), overrides=[
        ts_col("period start"), ts_col("period end"), ts_col("payment at"), ts_col("status as of"), ts_col("updated"),
        colored("use", ("allowed", "green"), ("denied", "purple")),
        colored("status", ("active", "green"), ("trialing", "green"), ("past_due", "orange"), ("unpaid", "red"), ("canceled", "purple"),
                ("incomplete_expired", "purple"), ("paused", "purple")),
        colored("last payment", ("paid", "green"), ("payment_failed", "red"), ("payment_action_required", "orange")),
    ]))  # fmt: skip
    p.append(table(i(), "Billing notices", "Billing notices queued in the time range (alert_outbox rows of the tally_billing alert, one per receiver): limit warnings, limits reached, credits exhausted, subscription and payment changes, with the receiver's outcome.", f"""
SELECT created_ms AS "time", n.doc ->> 'tenant' AS tenant, n.doc -> 'labels' ->> 'meter' AS meter,
       n.doc -> 'labels' ->> 'event' AS event, n.doc -> 'annotations' ->> 'summary' AS summary, receiver, outcome
FROM (
  SELECT created_ms, receiver, outcome, CASE WHEN payload LIKE '{{%' THEN payload::jsonb END AS doc
  FROM alert_outbox
  WHERE {TIME_FILTER.format(col='created_ms')}
) n
WHERE n.doc ->> 'rule' = 'tally_billing' AND n.doc ->> 'tenant' {TENANT_IN}
ORDER BY created_ms DESC
LIMIT 100
""", g(14, y, 10, 8), overrides=[colored("outcome", ("delivered", "green"), ("pending", "orange"), ("failed", "red"))]))  # fmt: skip
    return p, y + 8


def stripe_rows(i, y: int) -> tuple[list[dict], int]:
    p = [row(i(), "Stripe sync", y)]
    y += 1
    p.append(table(i(), "Stripe sync by tenant and meter", "The sync ledger (stripe_pushes) per tenant and meter: pushes planned in the time range and confirmed (sent), pushes pending, failed or expired now (any age), the last confirmation, the oldest pending push's age, the p95 delay from planning to Stripe's confirmation, "
                   "and the ledger's changed hours not planned yet (usage_changes: the current hour is normal; more waits for the hour to close + stripe.lag, for a customer mapping, or for the leader).", f"""
WITH pushes AS (
  SELECT tenant, meter,
         (array_agg(customer ORDER BY created_ms DESC))[1] AS customer,
         count(*) FILTER (WHERE state = 'sent') AS sent,
         count(*) FILTER (WHERE state = 'pending') AS pending,
         count(*) FILTER (WHERE state = 'failed') AS failed,
         count(*) FILTER (WHERE state = 'expired') AS expired,
         max(sent_ms) AS last_sent_ms,
         min(created_ms) FILTER (WHERE state = 'pending') AS oldest_pending_ms,
         percentile_cont(0.95) WITHIN GROUP (ORDER BY sent_ms - created_ms) / 1000.0 AS p95_delay
  FROM stripe_pushes
  WHERE ({TIME_FILTER.format(col='created_ms')} OR state <> 'sent')
    AND tenant {TENANT_IN} AND meter {METER_IN}
  GROUP BY 1, 2
), waiting AS (
  SELECT tenant, meter, count(*) AS hours, min(hour_ms) AS oldest_ms
  FROM usage_changes
  WHERE tenant {TENANT_IN} AND meter {METER_IN}
  GROUP BY 1, 2
)
SELECT coalesce(s.tenant, w.tenant) AS tenant, coalesce(s.meter, w.meter) AS meter,
       coalesce(s.customer, t.stripe_customer_id, 'no customer') AS customer,
       coalesce(s.sent, 0) AS "sent (range)", coalesce(s.pending, 0) AS pending,
       coalesce(s.failed, 0) AS failed, coalesce(s.expired, 0) AS expired,
       to_timestamp(s.last_sent_ms / 1000.0) AS "last sent",
       ({NOW_MS} - s.oldest_pending_ms) / 1000.0 AS "oldest pending",
       s.p95_delay AS "p95 delay",
       coalesce(w.hours, 0) AS "hours waiting", to_timestamp(w.oldest_ms / 1000.0) AS "oldest waiting hour"
FROM pushes s
FULL JOIN waiting w ON w.tenant = s.tenant AND w.meter = s.meter
LEFT JOIN tenants t ON t.id = coalesce(s.tenant, w.tenant)
ORDER BY coalesce(s.failed, 0) + coalesce(s.expired, 0) DESC, "oldest pending" DESC NULLS LAST, 1, 2
""", g(0, y, 24, 8), overrides=[
        ts_col("last sent"), ts_col("oldest waiting hour"), by_name("oldest pending", ("unit", "s")), by_name("p95 delay", ("unit", "s")),
        by_name("failed", ("thresholds", RED_FROM_1), ("custom.cellOptions", {"type": "color-text"})),
        by_name("expired", ("thresholds", RED_FROM_1), ("custom.cellOptions", {"type": "color-text"})),
    ]))  # fmt: skip
    y += 8
    p.append(timeseries(i(), "Stripe pushes planned", "Meter events written to the sync ledger per interval (by planning time), by their state now: sent, pending, failed, expired.", f"""
SELECT (created_ms / $__interval_ms) * $__interval_ms AS "time", state AS metric, count(*) AS pushes
FROM stripe_pushes
WHERE {TIME_FILTER.format(col='created_ms')}
  AND tenant {TENANT_IN} AND meter {METER_IN}
GROUP BY 1, 2
ORDER BY 1, 2
""", g(0, y, 12, 8), draw="bars", stack=True, long=True, min_interval="1h",
        overrides=[by_name(s, ("color", {"fixedColor": c, "mode": "fixed"})) for s, c in PUSH_STATE_COLORS]))  # fmt: skip
    p.append(timeseries(i(), "Push delay", "Seconds from a push being planned to Stripe confirming it (sent pushes, by confirmation time): median, p95 and max per interval (tally_stripe_push_delay_seconds from the ledger).", f"""
SELECT (sent_ms / $__interval_ms) * $__interval_ms AS "time",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY sent_ms - created_ms) / 1000.0 AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY sent_ms - created_ms) / 1000.0 AS p95,
       max(sent_ms - created_ms) / 1000.0 AS "max"
FROM stripe_pushes
WHERE state = 'sent'
  AND {TIME_FILTER.format(col='sent_ms')}
  AND tenant {TENANT_IN} AND meter {METER_IN}
GROUP BY 1
ORDER BY 1
""", g(12, y, 12, 8), unit="s", min_interval="1h"))  # fmt: skip
    y += 8
    p.append(table(i(), "Failed and expired pushes", "The latest 50 pushes Stripe refused or never confirmed (failed) and those too old for Stripe's 35 days (expired, never sent: correct by hand), any age, with the error.", f"""
SELECT to_timestamp(created_ms / 1000.0) AS planned, tenant, meter, customer, state,
       to_timestamp(window_ms / 1000.0) AS "window", kind, value, attempts, error, identifier
FROM stripe_pushes
WHERE state IN ('failed', 'expired') AND tenant {TENANT_IN} AND meter {METER_IN}
ORDER BY created_ms DESC
LIMIT 50
""", g(0, y, 24, 7), overrides=[ts_col("planned"), ts_col("window"), colored("state", ("failed", "red"), ("expired", "purple"))]))  # fmt: skip
    y += 7
    p.append(row(i(), "Stripe reconciliation", y))
    y += 1
    p.append(table(i(), "Reconciliation", "Stored reconciliation reports (stripe_reconciliations; GET /v1/stripe/reconciliation), latest periods first, drift first: ledger (meter units), expected whole units, units Stripe confirmed receiving (pushed), what Stripe's summaries hold, drift = stripe - expected. "
                   "A drift counts once a second read confirms it (checks >= 2); 'no customer': the tenant's usage waits for a mapping; 'not read': Stripe could not be read (error).", f"""
SELECT period, tenant, meter, status, ledger, expected, pushed, stripe, drift, checks, checked, customers, error
FROM (
  SELECT period_ms, to_char(to_timestamp(period_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM') AS period, tenant, meter,
         CASE WHEN stripe IS NULL AND customers = '' THEN 'no customer'
              WHEN stripe IS NULL THEN 'not read'
              WHEN drift = 0 THEN 'match'
              WHEN checks >= 2 THEN 'drift'
              ELSE 'drift, to recheck' END AS status,
         ledger, expected, pushed, stripe, drift, checks, to_timestamp(checked_ms / 1000.0) AS checked, customers, error
  FROM stripe_reconciliations
  WHERE tenant {TENANT_IN} AND meter {METER_IN}
) r
ORDER BY period_ms DESC, status = 'match', abs(coalesce(drift, 0)) DESC, tenant, meter
LIMIT 500
""", g(0, y, 24, 9), overrides=[
        ts_col("checked"),
        colored("status", ("match", "green"), ("drift", "red"), ("drift, to recheck", "orange"), ("not read", "orange"), ("no customer", "text")),
        by_name("drift", ("thresholds", thresholds(("red", None), ("green", 0), ("red", 1e-9))), ("custom.cellOptions", {"type": "color-text"})),
    ]))  # fmt: skip
    return p, y + 9


def usage_billing() -> dict:
    i = Ids()
    p = stat_row(i, 0)
    more, y = usage_rows(i, 4)
    p += more
    more, y = limit_rows(i, y)
    p += more
    more, y = stripe_rows(i, y)
    p += more
    return dashboard(
        "tally-usage-billing",
        "tally / Usage & billing",
        "Billing-grade usage per tenant and meter this billing period and by day, limits and credits with the entitlement answer, "
        "Stripe subscription status, the Stripe usage sync (pending, failed, delay) and its reconciliation drift.",
        ["tally", "billing"],
        p,
        billing_variables(),
        [builtin_annotation()],
        time_from="now-30d",
    )

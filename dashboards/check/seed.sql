-- DEVELOPMENT ONLY. Synthetic data to develop and check the Grafana
-- dashboards against. It is NOT what tally writes: the final check runs
-- sql_check.py against a database filled by tally itself. Do not load this
-- into a real tally database (it adds default partitions and dummy rows).
--
-- Expects tally's migrations/postgres/*.sql to be applied (0012 and 0013:
-- the histogram functions and the hist_idx/hist_cnt columns). Times are relative to now(), so the default
-- dashboard ranges show data:
--   rollup_windows  1-minute rows for the last 26 hours
--   rollup_hours    hour rows from 30 days ago up to 26 hours ago
--   rollup_days     day rows from 180 days ago up to 30 days ago
-- (disjoint, as tally's downsampling leaves them). Billing: usage_hourly
-- (75 days, three meters), Stripe subscriptions, limits, credits, billing
-- notices, the Stripe sync ledger and reconciliation reports (see the
-- billing section at the end; usage_events is left alone). Deterministic
-- (setseed), idempotent (clears the tables it fills). ~10 s.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
BEGIN;


CREATE TABLE IF NOT EXISTS rollup_windows_dev_default PARTITION OF rollup_windows DEFAULT;
CREATE TABLE IF NOT EXISTS rollup_hours_dev_default PARTITION OF rollup_hours DEFAULT;
CREATE TABLE IF NOT EXISTS rollup_days_dev_default PARTITION OF rollup_days DEFAULT;

TRUNCATE rollup_windows, rollup_hours, rollup_days, alert_instances, alert_outbox;
TRUNCATE usage_hourly, usage_changes, stripe_windows, stripe_periods, stripe_pushes, stripe_reconciliations,
         stripe_customers, stripe_webhook_events, tenant_limits, credit_entries, billing_notices;
DELETE FROM tenants WHERE id IN ('acme', 'globex', 'o''hare', 'initech');

SELECT setseed(0.4242);

INSERT INTO tenants (id, display_name, stripe_customer_id, status, created_ms) VALUES
    ('acme', 'Acme Corp', 'cus_dev_acme', 'active', 1700000000000),
    ('globex', 'Globex', 'cus_dev_globex', 'active', 1700000000000),
    ('o''hare', 'O''Hare "Air"', NULL, 'past_due', 1700000000000),
    ('initech', NULL, 'cus_dev_initech', 'active', 1700000000000);
-- 'umbrella' sends telemetry but is not in `tenants` (the variable must list it).

-- HdrHistogram bucket of a value (tally's core/src/histogram.rs index_of).
CREATE FUNCTION pg_temp.dev_index_of(v bigint) RETURNS smallint LANGUAGE sql IMMUTABLE AS $$
    SELECT (CASE WHEN w < 256 THEN w
            ELSE ((63 - position('1' IN w::bit(64)::text) + 1 - 7 + 1) * 128
                  + (w >> (63 - position('1' IN w::bit(64)::text) + 1 - 7)) - 128)
            END)::smallint
    FROM (SELECT least(greatest(v, 0), 1099511627775) AS w) x
$$;

-- Twenty standard-normal quantiles: a histogram of `n` values is drawn as
-- n/20 values at each exp(mu + sigma * z) (the remainder spread evenly).
CREATE TEMP TABLE dev_z (k int, z float8);
INSERT INTO dev_z SELECT k, z FROM unnest(ARRAY[
    -1.960, -1.440, -1.150, -0.935, -0.755, -0.598, -0.454, -0.319, -0.189, -0.063,
     0.063,  0.189,  0.319,  0.454,  0.598,  0.755,  0.935,  1.150,  1.440,  1.960
]::float8[]) WITH ORDINALITY AS u(z, k);

-- Operations: rate per minute, median latency (µs), spread, error share.
CREATE TEMP TABLE dev_ops (tenant text, service text, op text, kind text, rate float8, median_us float8, sigma float8, errp float8);
INSERT INTO dev_ops VALUES
    ('acme',     'api',    'GET /v1/items',   'server',   120,  40000, 0.6, 0.002),
    ('acme',     'api',    'POST /v1/orders', 'server',    30, 180000, 0.8, 0.01),
    ('acme',     'api',    'SELECT items',    'client',   150,   3000, 0.5, 0.0),
    ('acme',     'worker', 'process job',     'consumer',  20, 900000, 0.7, 0.005),
    ('globex',   'api',    'GET /v1/items',   'server',    60,  90000, 0.9, 0.03),
    ('globex',   'api',    'POST /v1/orders', 'server',    10, 700000, 1.1, 0.06),
    ('globex',   'worker', 'process job',     'consumer',   8, 2500000, 0.9, 0.02),
    ('o''hare',  'api',    'GET /v1/items',   'server',    15,  25000, 0.4, 0.001),
    ('initech',  'web',    'GET /',           'server',     5,  12000, 0.5, 0.0),
    ('umbrella', 'api',    'GET /v1/items',   'server',     3,  60000, 0.7, 0.01);

-- Periods: (table, resolution ms, first start, end) relative to now.
CREATE TEMP TABLE dev_periods AS
WITH n AS (SELECT (floor(extract(epoch FROM now()) / 60) * 60000)::bigint AS now_ms)
SELECT 'rollup_windows'::text AS tbl, 60000::bigint AS res,
       now_ms - 26 * 3600000 AS start_ms, now_ms AS end_ms FROM n
UNION ALL
SELECT 'rollup_hours', 3600000,
       (now_ms - 30 * 86400000::bigint) / 3600000 * 3600000, (now_ms - 26 * 3600000) / 3600000 * 3600000 FROM n
UNION ALL
SELECT 'rollup_days', 86400000,
       (now_ms - 180 * 86400000::bigint) / 86400000 * 86400000, (now_ms - 30 * 86400000::bigint) / 86400000 * 86400000 FROM n;

-- One row per operation and period step, with count/errors and the
-- histogram's (bucket, count) pairs. globex's POST gets slow and failing in
-- the last 3 hours (p95 over 5 s, errors over 5 %).
CREATE TEMP TABLE dev_op_rows AS
WITH steps AS (
    SELECT p.tbl, p.res, s AS start_ms, now_ms.v AS now_ms
    FROM dev_periods p,
         LATERAL generate_series(p.start_ms, p.end_ms - p.res, p.res) s,
         (SELECT max(end_ms) AS v FROM dev_periods) now_ms
), base AS (
    SELECT s.tbl, s.res, s.start_ms, o.*,
           (s.start_ms > s.now_ms - 3 * 3600000 AND o.tenant = 'globex' AND o.op = 'POST /v1/orders') AS bad,
           greatest(0, round(o.rate * (s.res / 60000.0)
               * (1 + 0.5 * sin(2 * pi() * ((s.start_ms / 60000) % 1440) / 1440.0))
               * (0.8 + 0.4 * random())))::bigint AS n
    FROM steps s CROSS JOIN dev_ops o
)
SELECT b.tbl, b.res, b.start_ms, b.tenant, b.service, b.op, b.kind, b.n AS count,
       least(b.n, round(b.n * (CASE WHEN b.bad THEN 0.08 ELSE b.errp END) * (0.5 + random())))::bigint AS errors,
       h.idx, h.cnt, h.sum_us, h.min_us, h.max_us
FROM base b,
LATERAL (
    SELECT array_agg(i ORDER BY i) AS idx, array_agg(c ORDER BY i) AS cnt,
           sum(c * v) AS sum_us, min(v) AS min_us, max(v) AS max_us
    FROM (
        SELECT pg_temp.dev_index_of(v) AS i, sum(c)::bigint AS c, max(v)::float8 AS v
        FROM (
            SELECT (exp(ln(b.median_us * (CASE WHEN b.bad THEN 6 ELSE 1 END)) + b.sigma * z.z))::bigint AS v,
                   (b.n * z.k) / 20 - (b.n * (z.k - 1)) / 20 AS c
            FROM dev_z z
        ) pts
        WHERE c > 0
        GROUP BY 1
    ) buckets
) h
WHERE b.n > 0;

-- Operation rows, then the pre-aggregated entry-span series tally writes:
-- (service, '*', '*') per service and ('*', '*', '*') per tenant, whose
-- histograms are the merge of their operations'.
CREATE TEMP TABLE dev_span_rows AS
WITH entry AS (
    SELECT o.*, s.agg_service
    FROM dev_op_rows o, LATERAL (VALUES (o.service), ('*')) AS s(agg_service)
    WHERE o.kind IN ('server', 'consumer')
), totals AS (
    SELECT tbl, tenant, agg_service AS service, start_ms, sum(count)::bigint AS count, sum(errors)::bigint AS errors,
           sum(sum_us) AS sum_us, min(min_us) AS min_us, max(max_us) AS max_us
    FROM entry GROUP BY 1, 2, 3, 4
), buckets AS (
    SELECT tbl, tenant, agg_service AS service, start_ms, u.i, sum(u.c)::bigint AS c
    FROM entry, unnest(entry.idx, entry.cnt) AS u(i, c)
    GROUP BY 1, 2, 3, 4, 5
), hists AS (
    SELECT tbl, tenant, service, start_ms, array_agg(i ORDER BY i) AS idx, array_agg(c ORDER BY i) AS cnt
    FROM buckets GROUP BY 1, 2, 3, 4
)
SELECT tbl, tenant, service, op AS name, kind AS detail, start_ms, count, errors, sum_us, min_us, max_us, idx, cnt
FROM dev_op_rows
UNION ALL
SELECT t.tbl, t.tenant, t.service, '*', '*', t.start_ms, t.count, t.errors, t.sum_us, t.min_us, t.max_us, h.idx, h.cnt
FROM totals t JOIN hists h USING (tbl, tenant, service, start_ms);

-- Logs per service and severity; gauges: queue depth per queue.
CREATE TEMP TABLE dev_other_rows AS
WITH steps AS (
    SELECT p.tbl, p.res, s AS start_ms FROM dev_periods p,
    LATERAL generate_series(p.start_ms, p.end_ms - p.res, p.res) s
), svc AS (SELECT DISTINCT tenant, service FROM dev_ops)
SELECT s.tbl, v.tenant, 2::smallint AS kind, v.service, sev.name, ''::text AS detail, s.start_ms,
       greatest(0, round(sev.per_min * (s.res / 60000.0) * (0.5 + random())))::bigint AS count,
       0::float8 AS sum, NULL::float8 AS min, NULL::float8 AS max, NULL::float8 AS last, NULL::bigint AS last_ms
FROM steps s CROSS JOIN svc v
CROSS JOIN (VALUES ('INFO', 40.0), ('WARN', 4.0), ('ERROR', 0.8), ('DEBUG', 0.0), ('FATAL', 0.01)) AS sev(name, per_min)
UNION ALL
SELECT s.tbl, q.tenant, 3::smallint, 'worker', 'queue.depth', q.detail, s.start_ms,
       (4 * s.res / 60000)::bigint,
       d.v * 4 * s.res / 60000, d.v * 0.6, d.v * 1.4 + 3, d.v, s.start_ms + s.res - 5000
FROM steps s
CROSS JOIN (VALUES ('acme', '{"queue":"jobs"}', 20.0), ('acme', '{"queue":"emails"}', 5.0),
                   ('globex', '{"queue":"jobs"}', 90.0)) AS q(tenant, detail, level)
CROSS JOIN LATERAL (SELECT round((q.level * (1 + 0.6 * sin(2 * pi() * ((s.start_ms / 60000) % 720) / 720.0))
                                  + 10 * random())::numeric, 0)::float8 AS v) d;

DELETE FROM dev_other_rows WHERE count = 0;

-- Into the three tables.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rollup_windows', 'rollup_hours', 'rollup_days'] LOOP
        EXECUTE format($f$
            INSERT INTO %I (tenant, kind, service, name, detail, start_ms, count, errors, sum, min, max, last, last_ms, hist, hist_idx, hist_cnt)
            SELECT tenant, 1, service, name, detail, start_ms, count, errors, sum_us, min_us, max_us, NULL::float8, NULL::bigint, NULL::bytea, idx, cnt
            FROM dev_span_rows WHERE tbl = %L
            UNION ALL
            SELECT tenant, kind, service, name, detail, start_ms, count, 0, sum, min, max, last, last_ms, NULL::bytea, NULL::smallint[], NULL::bigint[]
            FROM dev_other_rows WHERE tbl = %L
        $f$, t, t, t);
    END LOOP;
END
$$;

-- Alerts: current instances and a day of notifications.
INSERT INTO alert_instances (rule, group_key, tenant, fingerprint, state, severity, value, threshold,
                             since_ms, started_ms, updated_ms, last_notified_ms)
SELECT r.rule, '{"tenant":"' || replace(r.tenant, '"', '\"') || '"}', r.tenant, md5(r.rule || r.tenant), r.state, r.severity,
       r.value, r.threshold, n.now_ms - r.ago_ms, CASE WHEN r.state <> 'pending' THEN n.now_ms - r.ago_ms END,
       n.now_ms, CASE WHEN r.state <> 'pending' THEN n.now_ms - r.ago_ms END
FROM (SELECT max(end_ms) AS now_ms FROM dev_periods) n,
(VALUES
    ('error_rate_high', 'globex', 'firing',   'critical', 0.081, 0.05, 2 * 3600000),
    ('p95_latency_high', 'globex', 'firing',  'warning',  5.9,   2.0,  3 * 3600000),
    ('queue_depth_high', 'globex', 'pending', 'warning',  61,    50,   120000),
    ('p95_latency_high', 'acme',   'resolved', 'warning', 1.1,   2.0,  20 * 3600000),
    ('error_rate_high', 'o''hare', 'firing',  'warning',  0.012, 0.01, 40 * 60000)
) AS r(rule, tenant, state, severity, value, threshold, ago_ms);

INSERT INTO alert_outbox (receiver, fingerprint, payload, created_ms, outcome, attempts, next_attempt_ms, done_ms, last_error)
SELECT rc.receiver, md5(g::text), json_build_object('status', CASE WHEN g % 3 = 0 THEN 'resolved' ELSE 'firing' END,
           'rule', 'error_rate_high', 'tenant', (ARRAY['acme', 'globex', 'o''hare'])[1 + g % 3],
           'severity', 'warning', 'labels', json_build_object('tenant', (ARRAY['acme', 'globex', 'o''hare'])[1 + g % 3]))::text,
       t.created, o.outcome, o.attempts, t.created + 1000, CASE WHEN o.outcome <> 'pending' THEN t.created + o.lag END,
       CASE WHEN o.outcome = 'failed' THEN 'HTTP 503 from receiver' END
FROM generate_series(1, 300) g
CROSS JOIN (SELECT max(end_ms) AS now_ms FROM dev_periods) n
CROSS JOIN LATERAL (SELECT n.now_ms - (g * 287000)::bigint AS created) t
CROSS JOIN LATERAL (SELECT CASE WHEN g % 2 = 0 THEN 'pagerduty' ELSE 'slack' END AS receiver) rc
CROSS JOIN LATERAL (SELECT CASE WHEN g <= 3 THEN 'pending' WHEN g % 17 = 0 THEN 'failed' ELSE 'delivered' END AS outcome,
                           CASE WHEN g % 17 = 0 THEN 8 WHEN g % 5 = 0 THEN 2 ELSE 1 END AS attempts,
                           (200 + (random() * 1500) + CASE WHEN g % 5 = 0 THEN 30000 ELSE 0 END)::bigint AS lag) o;

-- Billing (aggregator/src/entitlements, exporter/src/stripe). Hourly usage of
-- three meters: llm_tokens (sum, by model), api_calls (count: one per
-- event, so sum = count), storage_gb (max of hourly snapshots). usage_events
-- is not filled: the dashboards read usage_hourly, as GET /v1/usage and
-- /v1/entitlements do.
CREATE TEMP TABLE dev_now AS
SELECT max(end_ms) AS now_ms,
       (extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC')) * 1000)::bigint AS month_ms,
       (extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month') * 1000)::bigint AS prev_month_ms,
       (extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC') - interval '2 months') * 1000)::bigint AS prev2_month_ms
FROM dev_periods;

CREATE TEMP TABLE dev_meters (tenant text, meter text, grp text, per_hour float8, kind text);
INSERT INTO dev_meters VALUES
    ('acme',    'llm_tokens', '{"model":"gpt-x"}', 30000, 'sum'),
    ('acme',    'llm_tokens', '{"model":"gpt-y"}', 12000, 'sum'),
    ('acme',    'api_calls',  '{}',                  300, 'count'),
    ('acme',    'storage_gb', '{}',                  120, 'snapshot'),
    ('globex',  'llm_tokens', '{"model":"gpt-x"}', 25000, 'sum'),
    ('globex',  'api_calls',  '{}',                  900, 'count'),
    ('globex',  'storage_gb', '{}',                   40, 'snapshot'),
    ('o''hare', 'llm_tokens', '{"model":"gpt-x"}',  2000, 'sum'),
    ('o''hare', 'api_calls',  '{}',                   60, 'count'),
    ('initech', 'llm_tokens', '{"model":"gpt-y"}',   500, 'sum');

INSERT INTO usage_hourly (tenant, meter, hour_ms, group_key, sum, count, min, max, last_value, last_time_ms)
SELECT m.tenant, m.meter, h, m.grp,
       CASE m.kind WHEN 'sum' THEN round(v.units) WHEN 'count' THEN v.events ELSE v.level END,
       v.events,
       CASE m.kind WHEN 'sum' THEN round(v.units / v.events * 0.2) WHEN 'count' THEN 1 ELSE v.level END,
       CASE m.kind WHEN 'sum' THEN round(v.units / v.events * 3) WHEN 'count' THEN 1 ELSE v.level END,
       CASE m.kind WHEN 'sum' THEN round(v.units / v.events) WHEN 'count' THEN 1 ELSE v.level END,
       least(h + 3599000, n.now_ms - 1000)
FROM dev_now n
CROSS JOIN dev_meters m
CROSS JOIN LATERAL generate_series((n.now_ms / 3600000 - 75 * 24) * 3600000, n.now_ms / 3600000 * 3600000, 3600000) h
CROSS JOIN LATERAL (
    SELECT m.per_hour * (1 + 0.5 * sin(2 * pi() * ((h / 3600000) % 24) / 24.0)) * (0.8 + 0.4 * random()) AS units,
           round(m.per_hour * (1 + 0.0002 * ((h - n.now_ms) / 3600000)))::float8 AS level
) u
CROSS JOIN LATERAL (
    SELECT u.units, u.level,
           CASE m.kind WHEN 'sum' THEN greatest(1, round(u.units / 800)) WHEN 'count' THEN round(u.units) ELSE 1 END::bigint AS events
) v
WHERE v.events > 0;

-- Stripe subscriptions as the webhooks left them: acme's period is anchored
-- mid-month (not on an hour: entitlements align it); globex's period ended 3
-- days ago and Stripe has not told of the next (rolled forward by its
-- length) and its card failed; initech canceled; one customer is not mapped
-- to any tenant yet. o'hare has no customer (calendar month).
INSERT INTO stripe_customers (customer_id, subscription_id, status, period_start_ms, period_end_ms, prev_start_ms,
                              prev_end_ms, status_at_s, payment, payment_at_s, updated_ms)
SELECT c.id, c.sub, c.status, n.now_ms + c.start_h * 3600000::bigint - 1234567, n.now_ms + c.end_h * 3600000::bigint - 1234567,
       n.now_ms + (2 * c.start_h - c.end_h) * 3600000::bigint - 1234567, n.now_ms + c.start_h * 3600000::bigint - 1234567,
       (n.now_ms + c.status_h * 3600000::bigint) / 1000, c.payment, (n.now_ms + c.payment_h * 3600000::bigint) / 1000,
       n.now_ms + greatest(c.status_h, coalesce(c.payment_h, c.status_h)) * 3600000::bigint
FROM dev_now n,
(VALUES
    ('cus_dev_acme',    'sub_dev_acme',    'active',    -12 * 24,  18 * 24, -12 * 24, 'paid',           -12 * 24 + 2),
    ('cus_dev_globex',  'sub_dev_globex',  'past_due',  -33 * 24,  -3 * 24,  -50,     'payment_failed', -50),
    ('cus_dev_initech', 'sub_dev_initech', 'canceled',  -70 * 24, -40 * 24, -40 * 24, NULL,             NULL),
    ('cus_dev_orphan',  'sub_dev_orphan',  'trialing',   -5 * 24,   9 * 24,  -5 * 24, NULL,             NULL)
) AS c(id, sub, status, start_h, end_h, status_h, payment, payment_h);

INSERT INTO stripe_webhook_events (event_id, type, created_s, customer_id, effect, received_ms)
SELECT e.id, e.type, (n.now_ms + e.h * 3600000::bigint) / 1000, e.customer, e.effect, n.now_ms + e.h * 3600000::bigint + 900
FROM dev_now n,
(VALUES
    ('evt_dev_1', 'customer.subscription.updated', 'cus_dev_acme',    'applied', -12 * 24),
    ('evt_dev_2', 'invoice.paid',                  'cus_dev_acme',    'applied', -12 * 24 + 2),
    ('evt_dev_3', 'customer.subscription.updated', 'cus_dev_acme',    'stale',   -12 * 24 + 3),
    ('evt_dev_4', 'invoice.payment_failed',        'cus_dev_globex',  'applied', -50),
    ('evt_dev_5', 'customer.subscription.deleted', 'cus_dev_initech', 'applied', -40 * 24),
    ('evt_dev_6', 'customer.subscription.created', 'cus_dev_orphan',  'applied', -5 * 24)
) AS e(id, type, customer, effect, h);

-- Allowances (globex's api_calls back to the meter's default) and credits:
-- acme draws credits beyond its api_calls allowance, globex has used up
-- its llm_tokens credits, initech is canceled.
INSERT INTO tenant_limits (tenant, meter, limit_value, updated_ms)
SELECT l.tenant, l.meter, l.lim, n.now_ms - 20 * 86400000::bigint
FROM dev_now n,
(VALUES ('acme', 'llm_tokens', 20000000::float8), ('acme', 'api_calls', 50000), ('globex', 'llm_tokens', 1000000),
        ('globex', 'api_calls', NULL), ('o''hare', 'api_calls', 20000)) AS l(tenant, meter, lim);

INSERT INTO credit_entries (tenant, meter, kind, amount, period_start_ms, request_id, reason, created_ms)
SELECT e.tenant, e.meter, e.kind, e.amount,
       CASE WHEN e.kind = 'draw' THEN (c.period_start_ms / 3600000) * 3600000 END,
       e.request_id, e.reason, n.now_ms + e.h * 3600000::bigint
FROM dev_now n
CROSS JOIN (VALUES
    ('acme',    'api_calls',  'topup', 100000::float8, 'in_dev_acme_1',   'invoice in_dev_acme_1',   -20 * 24),
    ('globex',  'llm_tokens', 'topup', 500000,         'in_dev_globex_1', 'invoice in_dev_globex_1', -40 * 24),
    ('globex',  'llm_tokens', 'draw',  -200000,        NULL,              'usage beyond the allowance', -3 * 24 + 1),
    ('initech', 'llm_tokens', 'set',   1000,           NULL,              'balance set by PUT /v1/tenants', -50 * 24)
) AS e(tenant, meter, kind, amount, request_id, reason, h)
LEFT JOIN stripe_customers c ON c.customer_id = 'cus_dev_globex';

-- Billing notices queued once (billing_notices) and sent through the outbox
-- like alerts (rule tally_billing).
CREATE TEMP TABLE dev_notices AS
SELECT b.tenant, b.meter, b.event, b.severity, b.summary, n.now_ms + b.h * 3600000::bigint AS created_ms,
       b.tenant || '/' || coalesce(b.meter || '/' || b.key_part, 'status/' || b.key_part) || '/' || b.event AS key
FROM dev_now n,
(VALUES
    ('globex', 'llm_tokens', 'limit_warning',     'warning',  'tenant globex used 800000 of its 1000000 llm_tokens allowance this period (80 %)', -60, '1'),
    ('globex', 'llm_tokens', 'limit_reached',     'critical', 'tenant globex reached its 1000000 llm_tokens allowance this period', -40, '1'),
    ('globex', 'llm_tokens', 'credits_exhausted', 'critical', 'tenant globex has no llm_tokens credits left', -20, '500000'),
    ('globex', NULL,         'payment_failed',    'warning',  'tenant globex: invoice payment failed', -50, '0'),
    ('acme',   'api_calls',  'limit_warning',     'warning',  'tenant acme used 40000 of its 50000 api_calls allowance this period (80 %)', -150, '2'),
    ('acme',   'api_calls',  'limit_reached',     'critical', 'tenant acme reached its 50000 api_calls allowance this period', -100, '2')
) AS b(tenant, meter, event, severity, summary, h, key_part);

INSERT INTO billing_notices (key, created_ms) SELECT key, created_ms FROM dev_notices;

INSERT INTO alert_outbox (receiver, fingerprint, payload, created_ms, outcome, attempts, next_attempt_ms, done_ms, last_error)
SELECT 'slack', left(md5(d.key), 16),
       jsonb_strip_nulls(jsonb_build_object(
           'status', 'firing', 'rule', 'tally_billing', 'tenant', d.tenant, 'severity', d.severity,
           'labels', jsonb_build_object('alertname', 'tally_billing', 'tenant', d.tenant, 'meter', d.meter,
                                        'event', d.event, 'severity', d.severity),
           'annotations', jsonb_build_object('summary', d.summary),
           'fingerprint', left(md5(d.key), 16), 'starts_at_ms', d.created_ms, 'generator_url',
           'http://tally.example/v1/tenants/' || d.tenant, 'at_ms', d.created_ms))::text,
       d.created_ms, 'delivered', 1, d.created_ms, d.created_ms + 420, NULL
FROM dev_notices d;

-- The Stripe sync ledger: llm_tokens and api_calls (raw meters: one delta
-- per closed hour) of acme and globex for 3 days, planned 5 min after the
-- hour closes; pushes planned in the last 20 minutes are still pending,
-- three globex api_calls hours were refused, one acme hour is older than
-- Stripe's 35 days (expired). o'hare has no customer: its hours wait in
-- usage_changes.
CREATE TEMP TABLE dev_pushes AS
SELECT u.tenant, u.meter, u.hour_ms AS window_ms, t.stripe_customer_id AS customer, floor(sum(u.sum))::bigint AS value,
       u.hour_ms + 3900000 + (random() * 60000)::bigint AS created_ms,
       (u.hour_ms - n.now_ms) / 3600000 AS ago_h
FROM usage_hourly u
JOIN tenants t ON t.id = u.tenant
CROSS JOIN dev_now n
WHERE u.tenant IN ('acme', 'globex') AND u.meter IN ('llm_tokens', 'api_calls')
  AND u.hour_ms >= n.now_ms - 72 * 3600000 AND u.hour_ms + 3900000 <= n.now_ms
GROUP BY u.tenant, u.meter, u.hour_ms, t.stripe_customer_id, n.now_ms;

INSERT INTO stripe_pushes (identifier, tenant, meter, window_ms, period_ms, revision, kind, customer, event_name, value,
                           timestamp_s, state, attempts, next_attempt_ms, created_ms, first_attempt_ms, sent_ms, request_id, error)
SELECT 'tly.' || p.tenant || '.' || p.window_ms || '.r1.' || left(md5(p.tenant || p.customer || p.meter), 12),
       p.tenant, p.meter, p.window_ms,
       (extract(epoch FROM date_trunc('month', to_timestamp(p.window_ms / 1000.0) AT TIME ZONE 'UTC')) * 1000)::bigint,
       1, 'delta', p.customer, p.meter, p.value, (p.window_ms + 1800000) / 1000, s.state,
       CASE s.state WHEN 'pending' THEN 0 WHEN 'failed' THEN 1 ELSE 1 + (p.ago_h % 29 = 0)::int END,
       p.created_ms + CASE WHEN s.state = 'pending' THEN 1000 ELSE 0 END, p.created_ms,
       CASE WHEN s.state <> 'pending' THEN p.created_ms + 120 END,
       CASE WHEN s.state = 'sent' THEN p.created_ms + 300 + (random() * 2500)::bigint + CASE WHEN p.ago_h % 29 = 0 THEN 60000 ELSE 0 END END,
       CASE WHEN s.state = 'sent' THEN 'req_dev_' || left(md5(p.tenant || p.meter || p.window_ms), 14) END,
       CASE WHEN s.state = 'failed' THEN 'Stripe 400 resource_missing: No such customer: ''' || p.customer || '''' END
FROM dev_pushes p
CROSS JOIN dev_now n
CROSS JOIN LATERAL (
    SELECT CASE WHEN p.created_ms > n.now_ms - 1200000 THEN 'pending'
                WHEN p.tenant = 'globex' AND p.meter = 'api_calls' AND p.ago_h BETWEEN -31 AND -29 THEN 'failed'
                ELSE 'sent' END AS state
) s
UNION ALL
SELECT 'tly.acme.' || w || '.r1.' || left(md5('acme' || 'cus_dev_acme' || 'llm_tokens'), 12), 'acme', 'llm_tokens', w,
       (extract(epoch FROM date_trunc('month', to_timestamp(w / 1000.0) AT TIME ZONE 'UTC')) * 1000)::bigint,
       1, 'delta', 'cus_dev_acme', 'llm_tokens', 1200, (w + 1800000) / 1000, 'expired', 0, n.now_ms - 3600000,
       n.now_ms - 3600000, NULL, NULL, NULL, 'older than Stripe accepts (35 days): correct it by hand'
FROM dev_now n, LATERAL (SELECT (n.now_ms / 3600000 - 36 * 24) * 3600000 AS w) x;

INSERT INTO stripe_windows (tenant, meter, window_ms, period_ms, units, covered, revision, updated_ms)
SELECT tenant, meter, window_ms, period_ms, value, value, revision, created_ms FROM stripe_pushes WHERE state <> 'expired';
INSERT INTO stripe_periods (tenant, meter, period_ms, units, covered)
SELECT tenant, meter, period_ms, sum(units), sum(covered) FROM stripe_windows GROUP BY 1, 2, 3;

INSERT INTO usage_changes (tenant, meter, hour_ms, version)
SELECT u.tenant, u.meter, u.hour_ms, 1
FROM usage_hourly u CROSS JOIN dev_now n
WHERE (u.tenant IN ('acme', 'globex') AND u.meter IN ('llm_tokens', 'api_calls') AND u.hour_ms = n.now_ms / 3600000 * 3600000)
   OR (u.tenant = 'o''hare' AND u.hour_ms >= n.now_ms - 6 * 3600000)
GROUP BY 1, 2, 3;

-- Reconciliation reports of the last two calendar months: matches, a
-- confirmed and an unconfirmed drift, a tenant without customer, a line
-- Stripe could not be read for.
INSERT INTO stripe_reconciliations (period_ms, tenant, meter, customers, ledger, expected, pushed, stripe, drift, checks, checked_ms, error)
SELECT r.period_ms, r.tenant, r.meter, r.customers, r.ledger, floor(r.ledger)::bigint,
       CASE WHEN r.customers = '' THEN 0 ELSE floor(r.ledger)::bigint END,
       CASE WHEN r.error IS NULL THEN floor(r.ledger) + r.drift END, CASE WHEN r.error IS NULL THEN r.drift END,
       r.checks, r.checked_ms, r.error
FROM (
    SELECT l.period_ms, l.tenant, l.meter, l.customers, coalesce(sum(u.sum), 0) AS ledger, l.drift, l.checks,
           l.period_end_ms + 3600000 + (l.checks - 1) * 900000 AS checked_ms, l.error
    FROM (
        SELECT p.period_ms, p.period_end_ms, x.*
        FROM dev_now n
        CROSS JOIN LATERAL (VALUES (n.prev_month_ms, n.month_ms, 1), (n.prev2_month_ms, n.prev_month_ms, 2)) AS p(period_ms, period_end_ms, age)
        CROSS JOIN (VALUES
            ('acme',    'llm_tokens', 'cus_dev_acme',    0::float8, 1, NULL::text, 0),
            ('acme',    'api_calls',  'cus_dev_acme',    0,         1, NULL,       0),
            ('globex',  'llm_tokens', 'cus_dev_globex', -12,        2, NULL,       1),
            ('globex',  'api_calls',  'cus_dev_globex',  3,         1, NULL,       1),
            ('o''hare', 'api_calls',  '',                0,         1, 'the tenant has no Stripe customer: its usage waits for the mapping', 1),
            ('initech', 'llm_tokens', 'cus_dev_initech', 0,         1, 'reading Stripe''s summaries for cus_dev_initech: HTTP 500', 1)
        ) AS x(tenant, meter, customers, drift, checks, error, only_latest)
        WHERE x.only_latest = 0 OR p.age = 1
    ) l
    LEFT JOIN usage_hourly u ON u.tenant = l.tenant AND u.meter = l.meter
                            AND u.hour_ms >= l.period_ms AND u.hour_ms < l.period_end_ms
    GROUP BY l.period_ms, l.period_end_ms, l.tenant, l.meter, l.customers, l.drift, l.checks, l.error
) r;

COMMIT;
ANALYZE rollup_windows, rollup_hours, rollup_days, alert_instances, alert_outbox, tenants;
ANALYZE usage_hourly, usage_changes, stripe_customers, stripe_pushes, stripe_reconciliations, tenant_limits, credit_entries;

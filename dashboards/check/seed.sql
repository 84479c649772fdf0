-- DEVELOPMENT ONLY. Synthetic data to develop and check the Grafana
-- dashboards against. It is NOT what tally writes: the final check runs
-- sql_check.py against a database filled by tally itself. Do not load this
-- into a real tally database (it adds default partitions and dummy rows).
--
-- Expects tally's migrations/postgres/*.sql and dashboards/check/hist_functions.sql
-- to be applied. It also adds the two histogram array columns the
-- dashboards read (hist_idx smallint[], hist_cnt bigint[]) if the migrations
-- do not have them yet. Times are relative to now(), so the default
-- dashboard ranges show data:
--   rollup_windows  1-minute rows for the last 26 hours
--   rollup_hours    hour rows from 30 days ago up to 26 hours ago
--   rollup_days     day rows from 180 days ago up to 30 days ago
-- (disjoint, as tally's downsampling leaves them). Deterministic
-- (setseed), idempotent (clears the tables it fills). ~10 s.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
BEGIN;

ALTER TABLE rollup_windows ADD COLUMN IF NOT EXISTS hist_idx smallint[], ADD COLUMN IF NOT EXISTS hist_cnt bigint[];
ALTER TABLE rollup_hours ADD COLUMN IF NOT EXISTS hist_idx smallint[], ADD COLUMN IF NOT EXISTS hist_cnt bigint[];
ALTER TABLE rollup_days ADD COLUMN IF NOT EXISTS hist_idx smallint[], ADD COLUMN IF NOT EXISTS hist_cnt bigint[];

CREATE TABLE IF NOT EXISTS rollup_windows_dev_default PARTITION OF rollup_windows DEFAULT;
CREATE TABLE IF NOT EXISTS rollup_hours_dev_default PARTITION OF rollup_hours DEFAULT;
CREATE TABLE IF NOT EXISTS rollup_days_dev_default PARTITION OF rollup_days DEFAULT;

TRUNCATE rollup_windows, rollup_hours, rollup_days, alert_instances, alert_outbox;
DELETE FROM tenants WHERE id IN ('acme', 'globex', 'o''hare', 'initech');

SELECT setseed(0.4242);

INSERT INTO tenants (id, display_name, stripe_customer_id, status, created_ms) VALUES
    ('acme', 'Acme Corp', 'cus_dev_acme', 'active', 1700000000000),
    ('globex', 'Globex', 'cus_dev_globex', 'active', 1700000000000),
    ('o''hare', 'O''Hare "Air"', NULL, 'past_due', 1700000000000),
    ('initech', NULL, NULL, 'active', 1700000000000);
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

COMMIT;
ANALYZE rollup_windows, rollup_hours, rollup_days, alert_instances, alert_outbox, tenants;

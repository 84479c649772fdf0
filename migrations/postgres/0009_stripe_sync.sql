-- Stripe usage sync (exporter/src/stripe/).

-- One Stripe customer per tenant, and one tenant per customer: a
-- pre-aggregated Stripe meter keeps one value per customer and window, so
-- two tenants on one customer would overwrite each other.
CREATE UNIQUE INDEX tenants_stripe_customer ON tenants (stripe_customer_id) WHERE stripe_customer_id IS NOT NULL;

-- Which (tenant, meter, hour) the ledger changed since the sync last
-- planned it: written in the ledger's own transaction, so no change can be
-- missed. The sync deletes a row once planned, unless `version` moved on
-- meanwhile (the ledger changed the hour again).
CREATE TABLE usage_changes (
    tenant   TEXT   NOT NULL,
    meter    TEXT   NOT NULL,
    hour_ms  BIGINT NOT NULL,
    version  BIGINT NOT NULL,
    PRIMARY KEY (tenant, meter, hour_ms)
);

-- Per (tenant, meter, window): the whole units Stripe is to hold for the
-- window and the scaled ledger value they stand for. A window is an hour
-- (raw and hourly meters), a UTC day (daily meters) or the billing period
-- (period-to-date meters); `revision` numbers its pushes.
CREATE TABLE stripe_windows (
    tenant      TEXT   NOT NULL,
    meter       TEXT   NOT NULL,
    window_ms   BIGINT NOT NULL,
    period_ms   BIGINT NOT NULL,
    units       BIGINT NOT NULL,
    covered     DOUBLE PRECISION NOT NULL,
    revision    BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant, meter, window_ms)
);

-- The same per billing period (UTC calendar month): what carries the
-- fraction of a unit from one window to the next, so a period's units are
-- floor(its scaled ledger total).
CREATE TABLE stripe_periods (
    tenant     TEXT   NOT NULL,
    meter      TEXT   NOT NULL,
    period_ms  BIGINT NOT NULL,
    units      BIGINT NOT NULL,
    covered    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, meter, period_ms)
);

-- The sync ledger: every meter event, written before it is sent and
-- updated after. `identifier` is Stripe's dedupe key, so a send cut off
-- by a crash is sent again under it and Stripe's "already exists" answer
-- counts as delivered. state: pending | sent | failed | expired.
CREATE TABLE stripe_pushes (
    identifier        TEXT   NOT NULL PRIMARY KEY,
    tenant            TEXT   NOT NULL,
    meter             TEXT   NOT NULL,
    window_ms         BIGINT NOT NULL,
    period_ms         BIGINT NOT NULL,
    revision          BIGINT NOT NULL,
    -- delta (raw meters), total (pre-aggregated and period meters), repair
    kind              TEXT   NOT NULL,
    customer          TEXT   NOT NULL,
    event_name        TEXT   NOT NULL,
    value             BIGINT NOT NULL,
    timestamp_s       BIGINT NOT NULL,
    state             TEXT   NOT NULL,
    attempts          BIGINT NOT NULL,
    next_attempt_ms   BIGINT NOT NULL,
    created_ms        BIGINT NOT NULL,
    first_attempt_ms  BIGINT,
    sent_ms           BIGINT,
    request_id        TEXT,
    error             TEXT
);
CREATE INDEX stripe_pushes_due ON stripe_pushes (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX stripe_pushes_window ON stripe_pushes (tenant, meter, window_ms, revision);
CREATE INDEX stripe_pushes_period ON stripe_pushes (period_ms, tenant, meter);

-- Reconciliation: per period, tenant and meter, the ledger against what
-- was pushed and what Stripe's meter event summaries hold.
CREATE TABLE stripe_reconciliations (
    period_ms   BIGINT NOT NULL,
    tenant      TEXT   NOT NULL,
    meter       TEXT   NOT NULL,
    customers   TEXT   NOT NULL,
    ledger      DOUBLE PRECISION NOT NULL,
    expected    BIGINT NOT NULL,
    pushed      BIGINT NOT NULL,
    stripe      DOUBLE PRECISION,
    drift       DOUBLE PRECISION,
    checks      BIGINT NOT NULL,
    checked_ms  BIGINT NOT NULL,
    error       TEXT,
    PRIMARY KEY (period_ms, tenant, meter)
);

-- Usage written before this migration: the hours Stripe still accepts
-- (35 days) are changes to plan, so enabling the sync pushes them
-- (`[stripe] sync_from` leaves out what was billed by other means).
INSERT INTO usage_changes (tenant, meter, hour_ms, version)
    SELECT DISTINCT tenant, meter, hour_ms, 1 FROM usage_hourly
    WHERE hour_ms >= CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT) - 3024000000; -- 35 days in ms

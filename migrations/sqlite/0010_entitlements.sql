-- Subscription status from Stripe webhooks, limits, credits and the
-- notices they cause (exporter/src/stripe/webhook.rs, aggregator/src/entitlements/).

-- Per Stripe customer (the tenant is found through tenants.stripe_customer_id,
-- so a status that arrives before its mapping is kept): the subscription
-- last heard of, its status and current period, and the `created` time of
-- the event it came from; an older event never overwrites a newer one.
CREATE TABLE stripe_customers (
    customer_id      TEXT   NOT NULL PRIMARY KEY,
    subscription_id  TEXT,
    status           TEXT,
    period_start_ms  INTEGER,
    period_end_ms    INTEGER,
    -- The period before the current one (its credit draw is written once it ends).
    prev_start_ms    INTEGER,
    prev_end_ms      INTEGER,
    status_at_s      INTEGER NOT NULL,
    -- The last invoice outcome: paid | payment_failed | payment_action_required.
    payment          TEXT,
    payment_at_s     INTEGER,
    updated_ms       INTEGER NOT NULL
);
CREATE INDEX stripe_customers_updated ON stripe_customers (updated_ms);

-- Every webhook event applied, under its id: written in the transaction of
-- its effect, so a redelivery changes nothing.
CREATE TABLE stripe_webhook_events (
    event_id     TEXT   NOT NULL PRIMARY KEY,
    type         TEXT   NOT NULL,
    created_s    INTEGER NOT NULL,
    customer_id  TEXT,
    effect       TEXT   NOT NULL,
    received_ms  INTEGER NOT NULL
);
CREATE INDEX stripe_webhook_events_received ON stripe_webhook_events (received_ms);

-- A tenant's own allowance per billing period (NULL: back to the meter's default).
CREATE TABLE tenant_limits (
    tenant       TEXT   NOT NULL,
    meter        TEXT   NOT NULL,
    limit_value  REAL,
    updated_ms   INTEGER NOT NULL,
    PRIMARY KEY (tenant, meter)
);
CREATE INDEX tenant_limits_updated ON tenant_limits (updated_ms);

-- The credit ledger: top-ups and adjustments (API), and one draw per
-- (tenant, meter, period) for the usage beyond that period's allowance.
-- The balance is the sum of `amount`.
CREATE TABLE credit_entries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant           TEXT   NOT NULL,
    meter            TEXT   NOT NULL,
    kind             TEXT   NOT NULL, -- topup | set | draw
    amount           REAL NOT NULL,
    period_start_ms  INTEGER,
    request_id       TEXT,
    reason           TEXT,
    created_ms       INTEGER NOT NULL
);
CREATE UNIQUE INDEX credit_entries_draw ON credit_entries (tenant, meter, period_start_ms) WHERE kind = 'draw';
CREATE UNIQUE INDEX credit_entries_request ON credit_entries (tenant, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX credit_entries_tenant ON credit_entries (tenant, meter, id);

-- Billing notices already queued (limit warning, limit reached, credits
-- exhausted, status change): each goes to the outbox once, whichever
-- replica notices it first, across restarts.
CREATE TABLE billing_notices (
    key         TEXT   NOT NULL PRIMARY KEY,
    created_ms  INTEGER NOT NULL
);

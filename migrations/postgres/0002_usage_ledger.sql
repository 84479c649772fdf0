-- Billing-grade usage. One row per (event, meter): the primary key is what
-- makes a usage event count exactly once, across retries and across replicas
-- sharing this database.
CREATE TABLE usage_events (
    tenant         TEXT             NOT NULL,
    source         TEXT             NOT NULL,
    event_id       TEXT             NOT NULL,
    meter          TEXT             NOT NULL,
    value          DOUBLE PRECISION NOT NULL,
    -- For unique_count meters: the value counted distinctly.
    distinct_key   TEXT,
    event_time_ms  BIGINT           NOT NULL,
    -- Group-by values as a JSON object with sorted keys; '{}' when none.
    group_key      TEXT             NOT NULL,
    -- sha256 of the event's content: a retry with the same hash is a
    -- duplicate, with another hash a conflict.
    content_hash   TEXT             NOT NULL,
    received_ms    BIGINT           NOT NULL,
    PRIMARY KEY (tenant, source, event_id, meter)
);
CREATE INDEX usage_events_by_time ON usage_events (tenant, meter, event_time_ms);

-- Hourly rollup, maintained in the same transaction as the inserts above.
CREATE TABLE usage_hourly (
    tenant        TEXT             NOT NULL,
    meter         TEXT             NOT NULL,
    hour_ms       BIGINT           NOT NULL,
    group_key     TEXT             NOT NULL,
    sum           DOUBLE PRECISION NOT NULL,
    count         BIGINT           NOT NULL,
    min           DOUBLE PRECISION NOT NULL,
    max           DOUBLE PRECISION NOT NULL,
    last_value    DOUBLE PRECISION NOT NULL,
    last_time_ms  BIGINT           NOT NULL,
    PRIMARY KEY (tenant, meter, hour_ms, group_key)
);

CREATE TABLE tenants (
    id                  TEXT   PRIMARY KEY,
    display_name        TEXT,
    stripe_customer_id  TEXT,
    status              TEXT   NOT NULL DEFAULT 'active',
    created_ms          BIGINT NOT NULL
);

-- Alerts. One row per alert instance (rule × group, e.g. one per tenant);
-- an instance that is inactive has no row. `alert_meta.last_eval_ms` is the
-- compare-and-set that lets one replica commit each evaluation round.
CREATE TABLE alert_instances (
    rule              TEXT             NOT NULL,
    -- The group's labels as canonical JSON ({"tenant":"acme"}).
    group_key         TEXT             NOT NULL,
    tenant            TEXT             NOT NULL,
    fingerprint       TEXT             NOT NULL,
    state             TEXT             NOT NULL, -- pending | firing | resolved
    severity          TEXT,                      -- warning | critical
    value             DOUBLE PRECISION,
    threshold         DOUBLE PRECISION,
    since_ms          BIGINT           NOT NULL, -- entered this state (or severity)
    started_ms        BIGINT,                    -- began firing (startsAt)
    warning_since_ms  BIGINT,                    -- warning condition held since
    critical_since_ms BIGINT,
    warning_last_ms   BIGINT,                    -- warning condition last held
    critical_last_ms  BIGINT,
    last_notified_ms  BIGINT,
    updated_ms        BIGINT           NOT NULL,
    PRIMARY KEY (rule, group_key)
);
CREATE INDEX alert_instances_tenant ON alert_instances (tenant);

CREATE TABLE alert_meta (
    id           SMALLINT PRIMARY KEY CHECK (id = 1),
    last_eval_ms BIGINT   NOT NULL
);
INSERT INTO alert_meta (id, last_eval_ms) VALUES (1, 0);

-- Notifications, written in the same transaction as the state change that
-- causes them, delivered in id order per receiver.
CREATE TABLE alert_outbox (
    id               BIGSERIAL PRIMARY KEY,
    receiver         TEXT   NOT NULL,
    fingerprint      TEXT   NOT NULL,
    -- The notification as JSON (status, labels, annotations, times).
    payload          TEXT   NOT NULL,
    created_ms       BIGINT NOT NULL,
    outcome          TEXT   NOT NULL DEFAULT 'pending', -- pending | delivered | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT NOT NULL,
    -- A sender claims the head row until then (replicas do not send it twice).
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    done_ms          BIGINT,
    last_error       TEXT
);
CREATE INDEX alert_outbox_pending ON alert_outbox (receiver, id) WHERE outcome = 'pending';
CREATE INDEX alert_outbox_done ON alert_outbox (done_ms) WHERE outcome <> 'pending';

-- Alert rules read the last few windows of every tenant.
CREATE INDEX rollup_windows_recent ON rollup_windows (start_ms, kind);

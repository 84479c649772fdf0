-- Schema parity with PostgreSQL (tests/it/e2e_storage.rs checks it):
-- `tenants.created_ms` was declared `INTEGERNOT NULL` (one word: a type
-- name SQLite accepts, and no constraint), and the TEXT primary keys of
-- rowid tables accepted NULL (an SQLite quirk PostgreSQL does not have).
-- SQLite cannot add constraints in place: each table is rebuilt.

CREATE TABLE tenants_new (
    id                  TEXT    NOT NULL PRIMARY KEY,
    display_name        TEXT,
    stripe_customer_id  TEXT,
    status              TEXT    NOT NULL DEFAULT 'active',
    created_ms          INTEGER NOT NULL
);
INSERT INTO tenants_new (id, display_name, stripe_customer_id, status, created_ms)
    SELECT id, display_name, stripe_customer_id, status, COALESCE(created_ms, 0) FROM tenants WHERE id IS NOT NULL;
DROP TABLE tenants;
ALTER TABLE tenants_new RENAME TO tenants;

CREATE TABLE api_keys_new (
    id          TEXT    NOT NULL PRIMARY KEY,
    hash        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('tenant', 'service', 'admin')),
    tenant      TEXT,
    name        TEXT    NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER
);
INSERT INTO api_keys_new SELECT id, hash, kind, tenant, name, created_ms, revoked_ms FROM api_keys WHERE id IS NOT NULL;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;

CREATE TABLE usage_streams_new (
    stream_id      TEXT    NOT NULL PRIMARY KEY,
    start_time_ns  INTEGER NOT NULL,
    time_ns        INTEGER NOT NULL,
    value          REAL    NOT NULL
);
INSERT INTO usage_streams_new SELECT stream_id, start_time_ns, time_ns, value FROM usage_streams WHERE stream_id IS NOT NULL;
DROP TABLE usage_streams;
ALTER TABLE usage_streams_new RENAME TO usage_streams;

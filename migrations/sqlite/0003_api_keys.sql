-- API keys. Only a hash of each key is stored; `id` is the key's public
-- prefix, shown in lists and logs.
CREATE TABLE api_keys (
    id          TEXT   PRIMARY KEY,
    hash        TEXT   NOT NULL,
    kind        TEXT   NOT NULL CHECK (kind IN ('tenant', 'service', 'admin')),
    tenant      TEXT,
    name        TEXT   NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER
);

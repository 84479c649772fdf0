-- Where exports that read the ledger by recording time have got to
-- (Application Insights' per-tenant usage metric: exporter/src/appinsights/usage_feed.rs).
CREATE TABLE export_cursors (
    name     TEXT   NOT NULL PRIMARY KEY,
    done_ms  INTEGER NOT NULL
);

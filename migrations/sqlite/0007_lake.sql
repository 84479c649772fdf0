-- The Parquet lake's export of the usage ledger: rows received before
-- usage_exported_ms have been written to the lake. A compare-and-set on it
-- lets one replica export each range.
CREATE TABLE lake_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    usage_exported_ms BIGINT   NOT NULL
);
INSERT INTO lake_state (id, usage_exported_ms) VALUES (1, 0);

CREATE INDEX usage_events_received ON usage_events (received_ms);

-- Items accepted per tenant and signal, as counted by the downstream stage.
-- Replicas add to the same row (upsert), so the totals are cluster-wide.
CREATE TABLE ingest_counts (
    tenant      TEXT   NOT NULL,
    signal      TEXT   NOT NULL,
    items       BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant, signal)
);

-- Items accepted per tenant and signal, as counted by the downstream stage.
CREATE TABLE ingest_counts (
    tenant      TEXT    NOT NULL,
    signal      TEXT    NOT NULL,
    items       INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (tenant, signal)
) WITHOUT ROWID;

-- Telemetry rollups (observability-grade, not billing): one row per series
-- and window. Three tables by resolution — windows (1 minute by default),
-- hours, days — each partitioned by time so that downsampling and retention
-- drop whole partitions. Partitions are created by tally as data arrives
-- (windows: one per day, hours: per 30 days, days: per 365 days).
--
-- kind: 1 span (name = operation, detail = span kind), 2 log (name =
-- severity), 3 gauge and 4 histogram (name = metric, detail = attributes as
-- JSON). Several replicas writing the same series and window merge into one
-- row (tally reads, merges and updates the row under a row lock).
CREATE TABLE rollup_windows (
    tenant   TEXT             NOT NULL,
    kind     SMALLINT         NOT NULL,
    service  TEXT             NOT NULL,
    name     TEXT             NOT NULL,
    detail   TEXT             NOT NULL,
    start_ms BIGINT           NOT NULL,
    count    BIGINT           NOT NULL,
    errors   BIGINT           NOT NULL,
    sum      DOUBLE PRECISION NOT NULL,
    min      DOUBLE PRECISION,
    max      DOUBLE PRECISION,
    last     DOUBLE PRECISION,
    last_ms  BIGINT,
    -- HdrHistogram V2 encoding (span durations in µs, histogram values × 1000).
    hist     BYTEA,
    PRIMARY KEY (tenant, kind, service, name, detail, start_ms)
) PARTITION BY RANGE (start_ms);

CREATE TABLE rollup_hours (LIKE rollup_windows INCLUDING ALL) PARTITION BY RANGE (start_ms);
CREATE TABLE rollup_days (LIKE rollup_windows INCLUDING ALL) PARTITION BY RANGE (start_ms);

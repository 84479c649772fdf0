-- Last point seen of each cumulative OTLP Sum stream feeding a meter, so
-- cumulative totals become deltas exactly once. Updated in the same
-- transaction as the ledger rows it produces.
CREATE TABLE usage_streams (
    stream_id      TEXT             PRIMARY KEY,
    -- -1: created as a lock target, no point yet.
    start_time_ns  BIGINT           NOT NULL,
    time_ns        BIGINT           NOT NULL,
    value          DOUBLE PRECISION NOT NULL
);

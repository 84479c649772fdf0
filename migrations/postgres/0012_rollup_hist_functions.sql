-- Latency percentiles from stored histograms, in plain SQL and PL/pgSQL (no C
-- extension: runs on Azure Database for PostgreSQL Flexible Server and any
-- PostgreSQL >= 12).
--
-- Each rollup row keeps its HDR histogram also as two arrays:
--   hist_idx smallint[]  bucket indexes, ascending
--   hist_cnt bigint[]    the bucket counts (> 0), same length
-- with the bucket layout of tally's core/src/histogram.rs (HdrHistogram,
-- lowest value 1, 2 significant digits, largest value 2^40-1):
--   index_of(v): v < 256 -> v; else shift = floor(log2 v) - 7,
--                index = (shift + 1) * 128 + (v >> shift) - 128
--   bucket i:    i < 256 -> [i, i]; else shift = i / 128 - 1,
--                low = ((i % 128) + 128) << shift, width = 1 << shift
-- so there are 4352 buckets (0 ..= 4351). Span durations are in µs,
-- metric histogram values × 1000.
--
-- What tally_hist_sum returns: a dense bigint[4386] (subscripts 1..4386):
--   elements 1 .. 4352     the count of bucket i at subscript i + 1
--   elements 4353 .. 4386  34 block totals, one per 128 buckets
--                          (block b = buckets 128*b .. 128*b + 127)
-- The block totals are why it is not just the 4352 counts: a percentile
-- walks at most 34 block totals and then 128 buckets instead of up to 4352
-- buckets (measured: ~0.9 ms per tally_hist_quantile call walking 4352
-- counts with unnest in SQL, ~0.05 ms with the blocks). The functions below
-- also accept a plain 4352-element array of counts (walked in full).
--
-- Functions:
--   tally_hist_sum(hist_idx, hist_cnt)   aggregate -> bigint[4386] as above;
--                                        NULL when no row had a histogram
--   tally_hist_quantile(h, q)            the highest value of the bucket that
--                                        holds the ceil(q*n)-th smallest value,
--                                        exactly as Histogram::value_at_quantile
--                                        in Rust; NULL when empty
--   tally_hist_count(h)                  number of recorded values
--   tally_hist_bucket_high(i)            highest value of bucket i
--
-- Counts saturate at 2^62 like the Rust side (MAX_COUNT), so sums of hostile
-- counts never overflow bigint. Invalid input (lengths differ, an index out of
-- 0..4351, a count below 0) raises an error rather than giving a wrong
-- percentile.
--
-- Typical panel query (per-tenant series of 1-minute windows):
--   SELECT (start_ms / 60000) * 60000 AS "time",
--          tally_hist_quantile(tally_hist_sum(hist_idx, hist_cnt), 0.95) / 1000.0 AS p95_ms
--   FROM rollup_windows WHERE kind = 1 AND ... GROUP BY 1 ORDER BY 1;
-- PostgreSQL evaluates one identical aggregate call once per group, so p50,
-- p95 and p99 of the same tally_hist_sum(...) cost one aggregation.
--
-- Idempotent (CREATE OR REPLACE; the aggregate is dropped and re-created).

CREATE OR REPLACE FUNCTION tally_hist_bucket_high(i integer) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN i < 0 OR i > 4351 THEN NULL
        WHEN i < 256 THEN i::bigint
        ELSE ((((i % 128) + 128)::bigint) << (i / 128 - 1)) + (1::bigint << (i / 128 - 1)) - 1
    END
$$;

-- Transition function: adds one row's sparse histogram into the dense state
-- (kept to few PL/pgSQL statements per bucket: they are most of its cost
-- besides PostgreSQL copying the 35 KB state between rows).
CREATE OR REPLACE FUNCTION tally_hist_sum_step(state bigint[], idx smallint[], cnt bigint[])
RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    max_count CONSTANT bigint := 4611686018427387904; -- 2^62
    n integer := cardinality(idx);
    ib integer := array_lower(idx, 1) - 1;
    cb integer := array_lower(cnt, 1) - 1;
    k integer;
    c bigint;
BEGIN
    IF n IS NULL OR cnt IS NULL THEN
        RETURN state;
    END IF;
    IF n <> cardinality(cnt) OR array_ndims(idx) > 1 OR array_ndims(cnt) > 1 THEN
        RAISE EXCEPTION 'tally_hist_sum: % bucket indexes but % counts', n, cardinality(cnt);
    END IF;
    IF n = 0 THEN
        RETURN state;
    END IF;
    IF state IS NULL THEN
        state := array_fill(0::bigint, ARRAY[4386]);
    END IF;
    FOR j IN 1 .. n LOOP
        k := idx[ib + j] + 1;
        c := cnt[cb + j];
        IF NOT (k BETWEEN 1 AND 4352 AND c >= 0) THEN
            RAISE EXCEPTION 'tally_hist_sum: bucket index % with count % (indexes are 0..4351, counts >= 0)', k - 1, c;
        END IF;
        state[k] := CASE WHEN c >= max_count - state[k] THEN max_count ELSE state[k] + c END;
        k := 4353 + (k - 1) / 128;
        state[k] := CASE WHEN c >= max_count - state[k] THEN max_count ELSE state[k] + c END;
    END LOOP;
    RETURN state;
END
$$;

-- Combine function (parallel aggregation): adds two states, block by block.
CREATE OR REPLACE FUNCTION tally_hist_sum_combine(a bigint[], b bigint[])
RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    max_count CONSTANT bigint := 4611686018427387904;
    s bigint;
    c bigint;
BEGIN
    IF a IS NULL THEN
        RETURN b;
    END IF;
    IF b IS NULL THEN
        RETURN a;
    END IF;
    FOR blk IN 0 .. 33 LOOP
        CONTINUE WHEN b[4353 + blk] = 0;
        FOR i IN 128 * blk + 1 .. 128 * blk + 128 LOOP
            c := b[i];
            IF c <> 0 THEN
                s := a[i];
                a[i] := CASE WHEN c >= max_count - s THEN max_count ELSE s + c END;
            END IF;
        END LOOP;
        s := a[4353 + blk];
        c := b[4353 + blk];
        a[4353 + blk] := CASE WHEN c >= max_count - s THEN max_count ELSE s + c END;
    END LOOP;
    RETURN a;
END
$$;

DROP AGGREGATE IF EXISTS tally_hist_sum(smallint[], bigint[]);
CREATE AGGREGATE tally_hist_sum(smallint[], bigint[]) (
    SFUNC = tally_hist_sum_step,
    STYPE = bigint[],
    SSPACE = 35100, -- bytes per group: lets the planner prefer sorted grouping over a hash table of many states
    COMBINEFUNC = tally_hist_sum_combine,
    PARALLEL = SAFE
);

-- Checks the shape of a histogram argument: 4386 (with block totals) or 4352
-- (plain counts) elements.
CREATE OR REPLACE FUNCTION tally_hist_check(h bigint[]) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    n integer := coalesce(array_length(h, 1), 0);
BEGIN
    IF n <> 4386 AND n <> 4352 THEN
        RAISE EXCEPTION 'tally histogram: expected 4386 (tally_hist_sum) or 4352 bucket counts, got %', n;
    END IF;
    RETURN n;
END
$$;

-- Recorded values (saturating at 2^62 like Rust's total).
CREATE OR REPLACE FUNCTION tally_hist_count(h bigint[]) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    max_count CONSTANT bigint := 4611686018427387904;
    lo integer := array_lower(h, 1) - 1;
    first integer;
    last integer;
    total numeric := 0;
BEGIN
    IF tally_hist_check(h) = 4386 THEN
        first := 4353; last := 4386;
    ELSE
        first := 1; last := 4352;
    END IF;
    FOR i IN first .. last LOOP
        total := total + h[lo + i];
    END LOOP;
    RETURN least(total, max_count)::bigint;
END
$$;

-- Histogram::value_at_quantile: rank = clamp(ceil(clamp(q,0,1) * total), 1,
-- total) (a NaN q gives rank 1, as Rust's `NaN as u64` is 0); walk the buckets
-- ascending and return the high end of the first whose running count reaches
-- the rank. NULL when the histogram is empty. With block totals the walk
-- skips whole blocks of 128 buckets.
CREATE OR REPLACE FUNCTION tally_hist_quantile(h bigint[], q double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    max_count CONSTANT bigint := 4611686018427387904;
    n integer := cardinality(h);
    lo integer := array_lower(h, 1) - 1;
    sum_all numeric := 0;
    total bigint;
    rank bigint;
    seen bigint := 0;
    c bigint;
    first_bucket integer := 0;
BEGIN
    IF n = 4386 THEN
        FOR blk IN 4353 .. 4386 LOOP
            sum_all := sum_all + h[lo + blk];
        END LOOP;
    ELSIF n = 4352 THEN
        FOR i IN 1 .. 4352 LOOP
            sum_all := sum_all + h[lo + i];
        END LOOP;
    ELSE
        PERFORM tally_hist_check(h);
    END IF;
    total := least(sum_all, max_count)::bigint;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    IF q = 'NaN'::double precision THEN
        rank := 1;
    ELSE
        rank := greatest(1::bigint, least(total,
            ceil(greatest(0::double precision, least(1::double precision, q)) * total::double precision)::bigint));
    END IF;
    IF n = 4386 THEN
        FOR blk IN 0 .. 33 LOOP
            c := h[lo + 4353 + blk];
            IF seen + c >= rank THEN
                first_bucket := 128 * blk;
                EXIT;
            END IF;
            seen := seen + c;
        END LOOP;
    END IF;
    FOR i IN first_bucket .. 4351 LOOP
        c := h[lo + i + 1];
        IF c > 0 THEN
            seen := seen + c;
            IF seen >= rank THEN
                RETURN tally_hist_bucket_high(i)::double precision;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

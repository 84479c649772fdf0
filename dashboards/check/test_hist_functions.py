"""Tests for the histogram functions (migrations/postgres/0012_rollup_hist_functions.sql) against a real PostgreSQL.

The reference is a Python copy of tally's core/src/histogram.rs layout
(index_of, bucket_of, value_at_quantile: HdrHistogram, lowest 1, 2
significant digits, values clamped to 2^40-1, counts saturating at 2^62).
Random histograms are recorded in Python, stored as (hist_idx smallint[],
hist_cnt bigint[]) rows, summed with tally_hist_sum in SQL, and every
percentile must equal the Python one exactly; merging many rows must equal
recording everything into one histogram.

Everything runs in one psql session inside a transaction that is rolled back,
in a private schema (nothing persists). Database: $TALLY_TEST_DATABASE_URL,
default postgresql://postgres@127.0.0.1:5432/postgres.

    python3 -m unittest test_hist_functions        # the tests
    python3 test_hist_functions.py --bench         # timings (not a test)
"""

import csv
import io
import os
import random
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
DB = os.environ.get("TALLY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SQL_FILE = os.path.join(HERE, "..", "..", "migrations", "postgres", "0012_rollup_hist_functions.sql")

MAX_VALUE = (1 << 40) - 1
MAX_COUNT = 1 << 62
BUCKETS = 4352


# --- Python copy of core/src/histogram.rs ----------------------------------


def index_of(v: int) -> int:
    v = min(v, MAX_VALUE)
    if v < 256:
        return v
    shift = v.bit_length() - 1 - 7  # (63 - leading_zeros) - 7
    return (shift + 1) * 128 + (v >> shift) - 128


def bucket_of(i: int) -> tuple[int, int]:
    if i < 256:
        return i, 1
    shift = i // 128 - 1
    return ((i % 128) + 128) << shift, 1 << shift


def sat_add(a: int, b: int) -> int:
    return min(a + b, MAX_COUNT)


class Hist:
    def __init__(self):
        self.counts: dict[int, int] = {}
        self.total = 0

    def record(self, v: int, n: int = 1):
        if n == 0:
            return
        n = min(n, MAX_COUNT)
        i = index_of(v)
        self.counts[i] = sat_add(self.counts.get(i, 0), n)
        self.total = sat_add(self.total, n)

    def merge(self, other: "Hist"):
        for i, c in other.counts.items():
            self.counts[i] = sat_add(self.counts.get(i, 0), c)
        self.total = sat_add(self.total, other.total)

    def arrays(self) -> tuple[list[int], list[int]]:
        idx = sorted(self.counts)
        return idx, [self.counts[i] for i in idx]

    def value_at_quantile(self, q: float):
        """Histogram::value_at_quantile, including Rust's float semantics."""
        if self.total == 0:
            return None
        qc = q if q != q else min(max(q, 0.0), 1.0)  # f64::clamp keeps NaN
        x = qc * float(self.total)
        r = 0 if x != x else int(min(max(-(-x // 1), 0), 2**64 - 1))  # ceil; `as u64` saturates, NaN -> 0
        rank = min(max(r, 1), self.total)
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                low, width = bucket_of(i)
                return low + width - 1
        return None


def sql_array(xs) -> str:
    return "'{" + ",".join(str(x) for x in xs) + "}'"


# --- one psql session -------------------------------------------------------


def run_psql(statements: list[tuple[str, str]]) -> dict[str, list[list[str]]]:
    """Runs (label, sql) pairs after loading the histogram functions (migration 0012) into a private
    schema, in one transaction that is rolled back. Returns label -> CSV rows
    (header dropped); errors become [['ERROR', message]]."""
    lines = [
        "\\set ON_ERROR_STOP off",
        "\\set ON_ERROR_ROLLBACK on",
        "\\pset format csv",
        "\\pset tuples_only on",
        "\\pset null '\\\\N'",
        "BEGIN;",
        "CREATE SCHEMA tally_hist_test;",
        "SET LOCAL search_path = tally_hist_test;",
        "SET LOCAL client_min_messages = warning;",
        "\\i " + SQL_FILE,
    ]
    for label, sql in statements:
        lines.append("\\echo '@@@ " + label + "'")
        lines.append(sql.rstrip().rstrip(";") + ";")
        lines.append("\\if :ERROR")
        lines.append("\\echo '@@@ERROR' :'LAST_ERROR_MESSAGE'")
        lines.append("\\endif")
    lines.append("\\echo '@@@ END'")
    lines.append("ROLLBACK;")
    proc = subprocess.run(
        ["psql", "-X", "-q", "-d", DB, "-v", "VERBOSITY=terse"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "@@@ END" not in proc.stdout:
        raise RuntimeError("psql failed: " + proc.stderr[-2000:])
    out: dict[str, list[list[str]]] = {}
    label = None
    buf: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith("@@@ERROR"):
            out.setdefault(label, []).append(["ERROR", line[len("@@@ERROR ") :]])
            continue
        if line.startswith("@@@ "):
            if label is not None:
                out.setdefault(label, []).extend(r for r in csv.reader(io.StringIO("\n".join(buf))) if r)
            label = line[4:]
            buf = []
            continue
        buf.append(line)
    return out


def num(s: str):
    if s == "\\N":
        return None
    return float(s) if any(ch in s for ch in ".eEn") else int(s)


QS = [0.0, 1e-9, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0, -0.5, 1.5]


def random_values(rng: random.Random, n: int) -> list[int]:
    kind = rng.randrange(5)
    if kind == 0:  # small values, one bucket each
        return [rng.randrange(0, 300) for _ in range(n)]
    if kind == 1:  # log-normal latencies in µs
        return [int(rng.lognormvariate(10, 1.5)) for _ in range(n)]
    if kind == 2:  # spread over the whole range, some above the max (clamped)
        return [int(2 ** rng.uniform(0, 42)) for _ in range(n)]
    if kind == 3:  # two modes
        return [int(rng.gauss(2_000, 100)) if rng.random() < 0.7 else int(rng.gauss(3_000_000, 50_000)) for _ in range(n)]
    return [rng.randrange(1, 1 << 20) for _ in range(n)]


class TestLayout(unittest.TestCase):
    def test_index_of(self):
        # The brief's definition and the boundaries of the layout.
        self.assertEqual(index_of(0), 0)
        self.assertEqual(index_of(255), 255)
        self.assertEqual(index_of(256), 256)
        self.assertEqual(index_of(257), 256)
        self.assertEqual(index_of(MAX_VALUE), 4351)
        self.assertEqual(index_of(1 << 50), 4351)
        for i in range(BUCKETS):
            low, width = bucket_of(i)
            self.assertEqual(index_of(low), i)
            self.assertEqual(index_of(low + width - 1), i)


class TestHistFunctions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rng = random.Random(20261130)
        stmts: list[tuple[str, str]] = []
        cls.expected: dict[str, object] = {}

        # bucket_high for every bucket
        stmts.append(("high", "SELECT i, tally_hist_bucket_high(i) FROM generate_series(-1, 4352) i ORDER BY i"))

        # 1. single random histograms: every quantile exact
        cls.singles = []
        rows = []
        for k in range(60):
            h = Hist()
            for v in random_values(rng, rng.choice([1, 2, 5, 50, 1000, 5000])):
                h.record(v, rng.choice([1, 1, 1, 3, 1000]))
            idx, cnt = h.arrays()
            cls.singles.append(h)
            rows.append(f"({k}, {sql_array(idx)}::smallint[], {sql_array(cnt)}::bigint[])")
        values = ",\n".join(rows)
        qlist = ",".join(repr(q) for q in QS)
        stmts.append((
            "singles",
            f"""SELECT k, q, tally_hist_quantile(s, q), tally_hist_count(s)
                FROM (SELECT k, tally_hist_sum(i, c) AS s FROM (VALUES {values}) AS v(k, i, c) GROUP BY k) x,
                     unnest(ARRAY[{qlist}]::float8[]) AS q
                ORDER BY k, q""",
        ))

        # 2. many rows merged == everything recorded into one histogram,
        #    grouped like a dashboard (GROUP BY a time bucket)
        cls.groups = {}
        rows = []
        for grp in range(8):
            whole = Hist()
            for _ in range(rng.choice([1, 10, 300])):
                part = Hist()
                for v in random_values(rng, rng.randrange(1, 40)):
                    part.record(v)
                    whole.record(v)
                idx, cnt = part.arrays()
                rows.append(f"({grp}, {sql_array(idx)}::smallint[], {sql_array(cnt)}::bigint[])")
            # rows without a histogram do not count
            rows.append(f"({grp}, NULL::smallint[], NULL::bigint[])")
            rows.append(f"({grp}, '{{}}'::smallint[], '{{}}'::bigint[])")
            cls.groups[grp] = whole
        values = ",\n".join(rows)
        stmts.append((
            "merged",
            f"""SELECT g, tally_hist_quantile(tally_hist_sum(i, c), 0.5), tally_hist_quantile(tally_hist_sum(i, c), 0.95),
                       tally_hist_quantile(tally_hist_sum(i, c), 0.99), tally_hist_count(tally_hist_sum(i, c))
                FROM (VALUES {values}) AS v(g, i, c) GROUP BY g ORDER BY g""",
        ))
        # the same through the combine function (what parallel workers do)
        stmts.append((
            "combined",
            f"""WITH v(g, i, c) AS (VALUES {values}),
                parts AS (SELECT g, (row_number() OVER ()) % 3 AS p, i, c FROM v),
                states AS (SELECT g, p, tally_hist_sum(i, c) AS s FROM parts GROUP BY g, p)
                SELECT g, tally_hist_quantile(s, 0.95), tally_hist_count(s)
                FROM (SELECT g, tally_hist_sum_combine(tally_hist_sum_combine(
                        max(s::text) FILTER (WHERE p = 0)::bigint[], max(s::text) FILTER (WHERE p = 1)::bigint[]),
                        max(s::text) FILTER (WHERE p = 2)::bigint[]) AS s
                      FROM states GROUP BY g) x ORDER BY g""",
        ))
        # the plain 4352-count form is accepted too
        whole = cls.groups[0]
        dense = [whole.counts.get(i, 0) for i in range(BUCKETS)]
        stmts.append(("dense4352", f"SELECT tally_hist_quantile({sql_array(dense)}::bigint[], 0.95), tally_hist_count({sql_array(dense)}::bigint[])"))

        # 3. edge cases
        stmts += [
            ("empty_rows", "SELECT tally_hist_sum(i, c) IS NULL, tally_hist_quantile(tally_hist_sum(i, c), 0.5) FROM (VALUES (NULL::smallint[], NULL::bigint[]), ('{}', '{}')) v(i, c)"),
            ("no_rows", "SELECT tally_hist_quantile(tally_hist_sum(i, c), 0.5) FROM (SELECT NULL::smallint[] i, NULL::bigint[] c WHERE false) v"),
            ("zeros", "SELECT tally_hist_quantile(tally_hist_sum(i, c), 0.5), tally_hist_count(tally_hist_sum(i, c)) FROM (VALUES ('{5}'::smallint[], '{0}'::bigint[])) v(i, c)"),
            ("nan_q", "SELECT tally_hist_quantile(tally_hist_sum(i, c), 'NaN') FROM (VALUES ('{3,700}'::smallint[], '{1,5}'::bigint[])) v(i, c)"),
            ("null_q", "SELECT tally_hist_quantile(tally_hist_sum(i, c), NULL) IS NULL FROM (VALUES ('{3}'::smallint[], '{1}'::bigint[])) v(i, c)"),
            ("len_mismatch", "SELECT tally_hist_sum(i, c) FROM (VALUES ('{1,2}'::smallint[], '{1}'::bigint[])) v(i, c)"),
            ("idx_range", "SELECT tally_hist_sum(i, c) FROM (VALUES ('{4352}'::smallint[], '{1}'::bigint[])) v(i, c)"),
            ("idx_negative", "SELECT tally_hist_sum(i, c) FROM (VALUES ('{-1}'::smallint[], '{1}'::bigint[])) v(i, c)"),
            ("cnt_negative", "SELECT tally_hist_sum(i, c) FROM (VALUES ('{1}'::smallint[], '{-1}'::bigint[])) v(i, c)"),
            ("bad_shape", "SELECT tally_hist_quantile('{1,2,3}'::bigint[], 0.5)"),
            ("lower_bound", "SELECT tally_hist_quantile(tally_hist_sum(i, c), 1) FROM (VALUES ('[0:1]={10,300}'::smallint[], '[5:6]={1,1}'::bigint[])) v(i, c)"),
            ("saturate",
             "SELECT tally_hist_count(tally_hist_sum(i, c)), tally_hist_quantile(tally_hist_sum(i, c), 0.5), tally_hist_quantile(tally_hist_sum(i, c), 1) "
             "FROM (VALUES ('{10,4000}'::smallint[], ARRAY[4611686018427387904, 4611686018427387904]::bigint[]), "
             "('{10}'::smallint[], ARRAY[4611686018427387904]::bigint[])) v(i, c)"),
        ]  # fmt: skip
        cls.out = run_psql(stmts)

    def test_bucket_high(self):
        got = {int(r[0]): num(r[1]) for r in self.out["high"]}
        self.assertIsNone(got[-1])
        self.assertIsNone(got[4352])
        for i in range(BUCKETS):
            low, width = bucket_of(i)
            self.assertEqual(got[i], low + width - 1, i)

    def test_singles_exact(self):
        rows = self.out["singles"]
        self.assertEqual(len(rows), 60 * len(QS))
        for k, q, val, count in rows:
            h = self.singles[int(k)]
            want = h.value_at_quantile(float(q))
            self.assertEqual(num(val), want, f"hist {k} q={q}")
            self.assertEqual(int(count), h.total)

    def test_merge_equals_recording_into_one(self):
        rows = self.out["merged"]
        self.assertEqual(len(rows), len(self.groups))
        for g, p50, p95, p99, count in rows:
            whole = self.groups[int(g)]
            self.assertEqual(num(p50), whole.value_at_quantile(0.5))
            self.assertEqual(num(p95), whole.value_at_quantile(0.95))
            self.assertEqual(num(p99), whole.value_at_quantile(0.99))
            self.assertEqual(int(count), whole.total)

    def test_combine(self):
        for g, p95, count in self.out["combined"]:
            whole = self.groups[int(g)]
            self.assertEqual(num(p95), whole.value_at_quantile(0.95))
            self.assertEqual(int(count), whole.total)

    def test_plain_dense_form(self):
        (p95, count), = self.out["dense4352"]  # fmt: skip
        self.assertEqual(num(p95), self.groups[0].value_at_quantile(0.95))
        self.assertEqual(int(count), self.groups[0].total)

    def test_empty_is_null(self):
        self.assertEqual(self.out["empty_rows"], [["t", "\\N"]])
        self.assertEqual(self.out["no_rows"], [["\\N"]])
        self.assertEqual(self.out["zeros"], [["\\N", "0"]])
        self.assertEqual(self.out["null_q"], [["t"]])

    def test_nan_quantile_is_lowest(self):
        # Rust: NaN.clamp(0,1) * n is NaN, `as u64` is 0, rank 1
        self.assertEqual(self.out["nan_q"], [["3"]])

    def test_invalid_input_raises(self):
        for label, msg in [
            ("len_mismatch", "2 bucket indexes but 1 counts"),
            ("idx_range", "bucket index 4352"),
            ("idx_negative", "bucket index -1"),
            ("cnt_negative", "count -1"),
            ("bad_shape", "expected 4386"),
        ]:
            rows = self.out[label]
            self.assertEqual(rows[0][0], "ERROR", label)
            self.assertIn(msg, rows[0][1], label)

    def test_any_lower_bound(self):
        # bucket 300: low 344, width 2 -> 345
        self.assertEqual(self.out["lower_bound"], [["345"]])

    def test_saturation(self):
        h = Hist()
        h.record(10, MAX_COUNT)
        h.record(bucket_of(4000)[0], MAX_COUNT)
        h.record(10, MAX_COUNT)
        (count, p50, p100), = self.out["saturate"]  # fmt: skip
        self.assertEqual(int(count), MAX_COUNT)
        self.assertEqual(num(p50), h.value_at_quantile(0.5))
        self.assertEqual(num(p100), h.value_at_quantile(1.0))


def bench():
    """Times the aggregate on generated rows (printed, not asserted)."""
    for nrows, ngroups, nb in [(10_000, 1, 30), (10_000, 100, 30), (10_000, 10_000, 30), (1_440, 1_440, 60)]:
        script = f"""
            CREATE TEMP TABLE b AS
            SELECT g AS row, g % {ngroups} AS grp,
                   (SELECT array_agg(DISTINCT v ORDER BY v) FROM (SELECT (600 + (random() * 1500)::int)::smallint v
                      FROM generate_series(1, {nb}) WHERE g > 0) s) AS idx
            FROM generate_series(1, {nrows}) g;
            ALTER TABLE b ADD cnt bigint[];
            UPDATE b SET cnt = (SELECT array_agg((1 + random() * 100)::bigint) FROM unnest(idx));
            ANALYZE b;
        """
        query = (
            "SELECT grp, tally_hist_quantile(tally_hist_sum(idx, cnt), 0.5), tally_hist_quantile(tally_hist_sum(idx, cnt), 0.95), "
            "tally_hist_quantile(tally_hist_sum(idx, cnt), 0.99) FROM b GROUP BY grp ORDER BY grp"
        )
        lines = ["\\set ON_ERROR_STOP on", "BEGIN;", "CREATE SCHEMA tally_hist_bench;", "SET LOCAL search_path = tally_hist_bench, pg_temp;",
                 "SET LOCAL client_min_messages = warning;", f"\\i {SQL_FILE}", script, "\\timing on", "\\o /dev/null", query + ";", query + ";", "\\o", "ROLLBACK;"]  # fmt: skip
        t0 = time.time()
        p = subprocess.run(["psql", "-X", "-q", "-d", DB], input="\n".join(lines), capture_output=True, text=True)
        times = [l for l in p.stdout.splitlines() if l.startswith("Time:")]
        shown = " / ".join(times[-3:-1]) if len(times) >= 3 else p.stderr.strip()
        print(f"{nrows} rows x ~{nb} buckets, {ngroups} groups, p50+p95+p99 (two runs): {shown} (wall {time.time() - t0:.1f}s incl. setup)")


if __name__ == "__main__":
    if "--bench" in sys.argv:
        bench()
    else:
        unittest.main()

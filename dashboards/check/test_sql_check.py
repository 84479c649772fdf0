"""Tests for sql_check.py: a dashboard of good and deliberately bad panels
over a demo table created by ``--setup`` (inside the rolled-back transaction,
so nothing persists). Also: the Usage & billing dashboard on a freshly
migrated, empty schema (every panel runs and shows no data). Needs psql and
$TALLY_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres).

    python3 -m unittest test_sql_check
"""

import contextlib
import glob
import io
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sql_check  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DB = os.environ.get("TALLY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DS = {"type": "grafana-postgresql-datasource", "uid": "${ds}"}
NOW = "2026-11-30T12:00:00Z"

SETUP = """
CREATE TABLE sqlcheck_demo (start_ms bigint, tenant text, n bigint, doc jsonb);
INSERT INTO sqlcheck_demo
SELECT 1796040000000 - g * 60000, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'o''hare' END, g, '{"x": 1}'
FROM generate_series(1, 120) g;
CREATE TABLE sqlcheck_tenants (id text, display_name text);
INSERT INTO sqlcheck_tenants VALUES ('acme', 'Acme'), ('o''hare', NULL), ('idle', 'Idle');
"""

WHERE = "tenant IN (${tenant:sqlstring}) AND start_ms >= $__unixEpochFrom()::bigint*1000 AND start_ms < $__unixEpochTo()::bigint*1000"


def panel(pid, title, sql, fmt="time_series", **extra):
    t = {"refId": "A", "datasource": DS, "rawQuery": True, "rawSql": sql, "editorMode": "code"}
    if fmt is not None:
        t["format"] = fmt
    p = {"id": pid, "type": "timeseries", "title": title, "datasource": DS, "interval": "1m", "targets": [t]}
    p.update(extra)
    return p


GOOD = {
    "wide ms": f'SELECT (start_ms / $__interval_ms) * $__interval_ms AS "time", sum(n) AS n FROM sqlcheck_demo WHERE {WHERE} GROUP BY 1 ORDER BY 1',
    "long sorted": f'SELECT start_ms AS "time", tenant AS metric, n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1, 2',
    "timestamp time": f'SELECT to_timestamp(start_ms / 1000.0) AS "time", n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1',
    "seconds epoch": f'SELECT start_ms / 1000 AS "time", n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1',
    "timeGroupAlias": "SELECT $__timeGroupAlias(ts, $__interval), count(*) AS c FROM (SELECT to_timestamp(start_ms / 1000.0) AS ts FROM sqlcheck_demo) x WHERE $__timeFilter(ts) GROUP BY 1 ORDER BY 1",
    "comment with macro": f"SELECT start_ms AS \"time\", n -- $__nope(x) is commented out\nFROM sqlcheck_demo WHERE {WHERE} ORDER BY 1",
}
BAD = {
    "no time column": (f"SELECT start_ms, n FROM sqlcheck_demo WHERE {WHERE}", "time column is missing"),
    "unsorted long": (f'SELECT start_ms AS "time", tenant AS metric, n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 2, 1', "long series must be sorted ascending by time"),
    "microseconds": (f'SELECT start_ms * 1000 AS "time", n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1', "neither seconds (e+09), milliseconds (e+12) nor nanoseconds (e+18)"),
    "paren in macro": ("SELECT $__timeGroupAlias(to_timestamp(start_ms / 1000), '5m'), 1 AS v FROM sqlcheck_demo GROUP BY 1 ORDER BY 1", "interpolation failed: macro __timeGroup needs time column and interval"),
    "unknown macro": ('SELECT $__nope(start_ms) AS "time" FROM sqlcheck_demo', 'interpolation failed: unknown macro "__nope"'),
    "unknown variable": (f'SELECT start_ms AS "time", n FROM sqlcheck_demo WHERE service = $service AND {WHERE} ORDER BY 1', "$service is not a variable"),
    "null time": (f'SELECT CASE WHEN n % 10 = 0 THEN NULL ELSE start_ms END AS "time", n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1', "NULL time"),
    "db error": ('SELECT start_ms AS "time", nope FROM sqlcheck_demo', "db query error: 42703"),
    "int4 overflow": ('SELECT start_ms AS "time", n FROM sqlcheck_demo WHERE start_ms >= $__unixEpochFrom()*1000 ORDER BY 1', "22003"),
    "json value": (f'SELECT start_ms AS "time", doc FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1', "convert value to float failed"),
    "string time": ("SELECT 'yesterday'::text AS \"time\", 1 AS v", "unable to convert data to a time field"),
}


def dashboard():
    panels = []
    pid = 0
    for title, sql in GOOD.items():
        pid += 1
        panels.append(panel(pid, title, sql))
    for title, (sql, _) in BAD.items():
        pid += 1
        panels.append(panel(pid, title, sql))
    panels.append(panel(100, "missing format", f'SELECT start_ms AS "time", n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1', fmt=None))
    panels.append(panel(101, "table ok", "SELECT tenant, count(*) AS n FROM sqlcheck_demo GROUP BY 1 ORDER BY 1", fmt="table"))
    panels.append(panel(102, "seconds filter on ms", 'SELECT start_ms AS "time", n FROM sqlcheck_demo WHERE $__unixEpochFilter(start_ms) ORDER BY 1'))
    panels.append(panel(103, "hidden", "SELECT nope", **{}))
    panels[-1]["targets"][0]["hide"] = True
    panels.append({"id": 104, "type": "timeseries", "title": "prometheus", "datasource": {"type": "prometheus", "uid": "p"},
                   "targets": [{"refId": "A", "expr": "up"}]})  # fmt: skip
    panels.append({"id": 105, "type": "row", "title": "collapsed", "collapsed": True, "panels": [
        panel(106, "inside collapsed row", f'SELECT start_ms AS "time", n FROM sqlcheck_demo WHERE {WHERE} ORDER BY 1')]})  # fmt: skip
    panels.append(panel(107, "from/to macros", 'SELECT $__from::bigint AS "time", ${__to:date:seconds} - ${__from:date:seconds} AS span_s, $__interval_ms AS i'))
    return {
        "uid": "sqlcheck-test",
        "title": "sql_check test",
        "schemaVersion": 41,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"type": "datasource", "name": "ds", "query": "grafana-postgresql-datasource", "current": {"text": "x", "value": "x"}},
            {"type": "query", "name": "tenant", "datasource": DS, "multi": True, "includeAll": True,
             "current": {"text": ["All"], "value": ["$__all"]},
             "query": "SELECT id AS __value, coalesce(display_name, id) AS __text FROM sqlcheck_tenants ORDER BY 2"},
            {"type": "custom", "name": "size", "query": "small : 1,large : 2", "current": {"text": "large", "value": "2"}},
        ]},  # fmt: skip
        "annotations": {"list": [
            {"name": "good anno", "enable": True, "iconColor": "red", "datasource": DS,
             "target": {"refId": "Anno", "rawSql": f"SELECT start_ms AS time, tenant AS text, 'x' AS tags FROM sqlcheck_demo WHERE {WHERE}", "format": "table"}},
            {"name": "bad anno", "enable": True, "iconColor": "red", "datasource": DS,
             "target": {"refId": "Anno", "rawSql": f"SELECT start_ms AS time FROM sqlcheck_demo WHERE {WHERE}", "format": "table"}},
        ]},  # fmt: skip
        "panels": panels,
    }


class TestSqlCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        dash = os.path.join(cls.tmp.name, "dash.json")
        with open(dash, "w") as f:
            json.dump(dashboard(), f)
        setup = os.path.join(cls.tmp.name, "setup.sql")
        with open(setup, "w") as f:
            f.write(SETUP)
        expect = os.path.join(cls.tmp.name, "expect.json")
        with open(expect, "w") as f:
            json.dump({"seconds filter on ms": {"min_rows": 1}, "wide ms": {"columns": ["time", "n"], "min_rows": 30},
                       "table ok": {"columns": ["tenant", "requests"]}}, f)  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cls.rc = sql_check.main([dash, "--db", DB, "--setup", setup, "--now", NOW, "--json", "--expect", expect])
        cls.report = json.loads(out.getvalue())
        cls.by_title = {t["title"]: t for t in cls.report["targets"]}

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cls.rc_one = sql_check.main([dash, "--db", DB, "--setup", setup, "--now", NOW, "--json", "--var", "tenant=o'hare"])
        cls.report_one = json.loads(out.getvalue())
        cls.tmp.cleanup()

    def test_exit_status(self):
        self.assertEqual(self.rc, 1)

    def test_good_panels_pass(self):
        for title in list(GOOD) + ["inside collapsed row", "from/to macros"]:
            with self.subTest(title):
                t = self.by_title[title]
                self.assertEqual(t["status"], "ok", t)

    def test_bad_panels_fail_with_grafanas_reason(self):
        for title, (_, msg) in BAD.items():
            with self.subTest(title):
                t = self.by_title[title]
                self.assertEqual(t["status"], "FAIL", t)
                self.assertTrue(any(msg in f for f in t["failures"]), t["failures"])

    def test_missing_format_fails(self):
        self.assertIn('no "format"', self.by_title["missing format"]["failures"][0])

    def test_expectations(self):
        # $__unixEpochFilter compares seconds with an ms column: no error, no rows
        t = self.by_title["seconds filter on ms"]
        self.assertEqual(t["rows"], 0)
        self.assertIn("expected at least 1 row(s), got 0", t["failures"])
        self.assertEqual(self.by_title["wide ms"]["status"], "ok")
        self.assertIn('expected column "requests" (have: tenant, n)', self.by_title["table ok"]["failures"])

    def test_skips(self):
        self.assertEqual(self.by_title["hidden"]["status"], "skip")
        self.assertEqual(self.by_title["prometheus"]["status"], "skip")

    def test_annotations(self):
        good = next(t for t in self.report["targets"] if t["title"] == "good anno")
        bad = next(t for t in self.report["targets"] if t["title"] == "bad anno")
        self.assertEqual(good["status"], "ok")
        self.assertIn('no "text" column', bad["failures"][0])

    def test_variables(self):
        v = {x["name"]: x for x in self.report["variables"]}
        self.assertEqual(v["tenant"]["options"], 3)
        self.assertEqual(v["tenant"]["value"], ["$__all"])
        self.assertEqual(v["size"]["value"], "2")
        one = {x["name"]: x for x in self.report_one["variables"]}
        self.assertEqual(one["tenant"]["value"], ["o'hare"])

    def test_interpolated_values(self):
        t = self.by_title["wide ms"]
        self.assertEqual(t["interval"], "1m")
        # All → every option quoted; o'hare's quote doubled
        one = next(x for x in self.report_one["targets"] if x["title"] == "no time column")
        self.assertIn("tenant IN ('o''hare')", one["sql"])
        self.assertIn("start_ms >= 1796036400::bigint*1000 AND start_ms < 1796040000::bigint*1000", one["sql"])

    def test_time_classes(self):
        self.assertIn("time read as s×", " ".join(self.by_title["seconds epoch"]["notes"]))
        self.assertIn("time read as ms×", " ".join(self.by_title["wide ms"]["notes"]))


class TestBillingOnEmptySchema(unittest.TestCase):
    """Usage & billing before any usage, Stripe or entitlement row exists (a
    fresh `tally migrate`, Stripe never configured): every variable and panel
    runs, the numbers are 0 and the tables empty. The migrations go into a
    schema of their own inside sql_check's rolled-back transaction."""

    def test_every_panel_runs_and_shows_no_data(self):
        path = os.path.join(ROOT, "dashboards", "grafana", "dashboards", "usage-billing.json")
        with open(path, encoding="utf-8") as f:
            stats = {p["title"] for p in json.load(f)["panels"] if p["type"] == "stat"}
        with tempfile.TemporaryDirectory() as tmp:
            setup = os.path.join(tmp, "empty.sql")
            with open(setup, "w") as f:
                f.write("CREATE SCHEMA sqlcheck_empty;\nSET LOCAL search_path = sqlcheck_empty;\n")
                for m in sorted(glob.glob(os.path.join(ROOT, "migrations", "postgres", "*.sql"))):
                    f.write(f"\\i '{m}'\n")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = sql_check.main([path, "--db", DB, "--setup", setup, "--json", "--expect", os.path.join(HERE, "expect.json")])
        report = json.loads(out.getvalue())
        self.assertEqual(rc, 0, json.dumps(report, indent=1)[:4000])
        for v in report["variables"]:
            if v["type"] == "query":
                self.assertEqual(v["options"], 0, v["name"])
        for t in report["targets"]:
            with self.subTest(t["title"]):
                self.assertEqual(t["status"], "ok", t.get("failures"))
                self.assertEqual(t["rows"], 1 if t["title"] in stats else 0)


if __name__ == "__main__":
    unittest.main()

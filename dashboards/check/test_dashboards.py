"""tally's own rules for its Grafana dashboards (no database needed).

    python3 -m unittest test_dashboards

The rules (dashboards/README.md): Classic JSON, schemaVersion 41, stable uid,
no numeric id; a `ds` datasource variable and every query on
{"type": "grafana-postgresql-datasource", "uid": "${ds}"}; string variables
only as ${var:sqlstring}; no custom allValue; every time predicate on an
epoch-ms column is `col >= $__unixEpochFrom()::bigint*1000 AND col <
$__unixEpochTo()::bigint*1000` (comparing two *_ms columns is allowed);
rollups read from all three rollup tables; time buckets
`(x / step) * step AS "time"`; time series end with ORDER BY 1 (1, 2 for
long ones); every panel has a min interval.

Those rules are for the PostgreSQL dashboards. The Prometheus one
(tally-self.json) has a `prom` datasource variable and every query on
{"type": "prometheus", "uid": "${prom}"}; rate windows are
`[$__rate_interval]` (or `[$__range]`), never a fixed duration; no panel min
interval (the datasource's scrape interval applies). Its PromQL itself is
checked by promql_check.py. Every dashboard's default datasource uid is one
that provisioning/datasources/tally.yaml provisions.
"""

import glob
import json
import os
import re
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARDS = sorted(glob.glob(os.path.join(HERE, "..", "grafana", "dashboards", "*.json")))
DS = {"type": "grafana-postgresql-datasource", "uid": "${ds}"}
PROM = {"type": "prometheus", "uid": "${prom}"}
PROVISIONING = os.path.join(HERE, "..", "grafana", "provisioning", "datasources", "tally.yaml")


def ds_variable(d, query):
    return [v for v in d["templating"]["list"] if v["type"] == "datasource" and v.get("query") == query]
CANONICAL = re.compile(r"(\w+) >= \$__unixEpochFrom\(\)::bigint\*1000 AND \1 < \$__unixEpochTo\(\)::bigint\*1000")


def panels(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", []) if p.get("type") == "row" else []


def queries(d):
    """(where, rawSql, format) of every SQL in the dashboard."""
    for p in panels(d):
        for t in p.get("targets", []):
            yield f"panel {p.get('title')!r}", t.get("rawSql", ""), t.get("format")
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            yield f"variable ${v['name']}", v["query"], "table"
    for a in d["annotations"]["list"]:
        if a.get("target", {}).get("rawSql"):
            yield f"annotation {a['name']!r}", a["target"]["rawSql"], "table"


class TestDashboards(unittest.TestCase):
    def setUp(self):
        self.assertTrue(DASHBOARDS, "no dashboards found")
        self.all = {}
        for path in DASHBOARDS:
            with open(path, encoding="utf-8") as f:
                self.all[os.path.basename(path)] = json.load(f)
        # the PostgreSQL dashboards (the SQL rules below) and the Prometheus ones
        self.dash = {n: d for n, d in self.all.items() if ds_variable(d, "grafana-postgresql-datasource")}
        self.prom = {n: d for n, d in self.all.items() if ds_variable(d, "prometheus")}
        self.assertEqual(set(self.dash) | set(self.prom), set(self.all), "a dashboard with neither a PostgreSQL nor a Prometheus ds variable")
        self.assertIn("tally-self.json", self.prom)

    def test_model(self):
        uids = set()
        for name, d in self.all.items():
            with self.subTest(name):
                self.assertEqual(d["schemaVersion"], 41)
                self.assertNotIn("id", d)
                self.assertTrue(d["uid"].startswith("tally-"))
                self.assertNotIn(d["uid"], uids)
                uids.add(d["uid"])
                ids = [p["id"] for p in panels(d)]
                self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")

    def test_datasource(self):
        for name, d in self.dash.items():
            with self.subTest(name):
                ds = [v for v in d["templating"]["list"] if v["name"] == "ds"]
                self.assertEqual(len(ds), 1)
                self.assertEqual(ds[0]["type"], "datasource")
                self.assertEqual(ds[0]["query"], "grafana-postgresql-datasource")
                for p in panels(d):
                    if p["type"] == "row":
                        continue
                    self.assertEqual(p["datasource"], DS, p["title"])
                    for t in p["targets"]:
                        self.assertEqual(t["datasource"], DS, p["title"])
                for v in d["templating"]["list"]:
                    if v["type"] == "query":
                        self.assertEqual(v["datasource"], DS, v["name"])
                for a in d["annotations"]["list"]:
                    if not a.get("builtIn"):
                        self.assertEqual(a["datasource"], DS, a["name"])

    def test_variables(self):
        for name, d in self.dash.items():
            var_names = [v["name"] for v in d["templating"]["list"] if v["type"] in ("query", "custom", "textbox", "constant")]
            for v in d["templating"]["list"]:
                self.assertFalse(v.get("allValue"), f"{name}: ${v['name']} has a custom allValue")
            for where, sql, _ in queries(d):
                for var in var_names:
                    with self.subTest(f"{name} {where} ${var}"):
                        for m in re.finditer(r"\$\{" + var + r"(:[^}]*)?\}|\$" + var + r"\b|\[\[" + var, sql):
                            self.assertEqual(m.group(0), "${" + var + ":sqlstring}", f"{where}: {m.group(0)}")

    def test_time_predicates(self):
        for name, d in self.dash.items():
            for where, sql, _ in queries(d):
                with self.subTest(f"{name} {where}"):
                    rest = CANONICAL.sub("", sql)
                    self.assertNotRegex(rest, r"\$__(unixEpoch|timeFilter|timeFrom|timeTo|from|to)\b", "non-canonical time predicate")
                    # A *_ms column may be compared with another *_ms column (an hour
                    # against a tenant's billing-period bounds): that is no range predicate.
                    for m in re.finditer(r"\w+_ms\s*(<=|>=|<|>|BETWEEN)\s*(\S*)", rest):
                        column = m.group(1) != "BETWEEN" and re.match(r"(\w+\.)?\w+_ms\b(?!\()", m.group(2))
                        self.assertTrue(column, f"non-canonical comparison on a *_ms column: {m.group(0)}")

    def test_rollups_read_all_tables(self):
        for name, d in self.dash.items():
            for where, sql, _ in queries(d):
                if "rollup_" in sql:
                    with self.subTest(f"{name} {where}"):
                        for t in ("rollup_windows", "rollup_hours", "rollup_days"):
                            self.assertEqual(sql.count(t), sql.count("rollup_windows"), f"{t}: tally moves old rows between the tables")

    def test_time_series_shape(self):
        for name, d in self.dash.items():
            for p in panels(d):
                if p["type"] == "row":
                    continue
                with self.subTest(f"{name} {p['title']}"):
                    self.assertIn(p.get("interval"), ("1m", "1h", "1d"), "panel min interval")
                    for t in p["targets"]:
                        self.assertIn(t["format"], ("time_series", "table"))
                        if t["format"] != "time_series":
                            continue
                        sql = t["rawSql"]
                        self.assertRegex(sql, r"\((\w+) / (\$__interval_ms|step_ms)\) \* \2 AS \"time\"")
                        long = bool(re.search(r"AS metric\b", sql))
                        self.assertTrue(sql.rstrip().endswith("ORDER BY 1, 2" if long else "ORDER BY 1"), sql[-40:])

    def test_default_datasources_are_provisioned(self):
        with open(PROVISIONING, encoding="utf-8") as f:
            provisioned = set(re.findall(r"^\s*uid:\s*(\S+)\s*$", f.read(), re.M))
        self.assertEqual(provisioned, {"tally-pg", "tally-prom"})
        for name, d in self.all.items():
            for v in d["templating"]["list"]:
                if v["type"] == "datasource":
                    with self.subTest(f"{name} ${v['name']}"):
                        self.assertIn(v["current"]["value"], provisioned)

    def test_prometheus_dashboards(self):
        for name, d in self.prom.items():
            with self.subTest(name):
                self.assertEqual([v["name"] for v in ds_variable(d, "prometheus")], ["prom"])
                for v in d["templating"]["list"]:
                    if v["type"] == "query":
                        self.assertEqual(v["datasource"], PROM, v["name"])
                for p in panels(d):
                    if p["type"] == "row":
                        continue
                    self.assertEqual(p["datasource"], PROM, p["title"])
                    self.assertNotIn("interval", p, f"{p['title']}: Prometheus panels take the scrape interval")
                    refs = [t["refId"] for t in p["targets"]]
                    self.assertEqual(len(refs), len(set(refs)), p["title"])
                    for t in p["targets"]:
                        self.assertEqual(t["datasource"], PROM, p["title"])
                        self.assertTrue(t.get("expr", "").strip(), p["title"])
                        self.assertNotIn("rawSql", t)
                        for w in re.findall(r"\[([^\]]*)\]", t["expr"]):
                            self.assertIn(w, ("$__rate_interval", "$__range"), f"{p['title']}: fixed range [{w}]")

    def test_slo_thresholds(self):
        # seed SLO thresholds are drawn: error rate 1 %/5 %, p95 2 s/5 s, queue 50/200
        d = self.dash["service-slos.json"]
        want = {"percentunit": [0.01, 0.05], "s": [2, 5]}
        seen = set()
        for p in panels(d):
            fd = p.get("fieldConfig", {}).get("defaults", {})
            steps = [s["value"] for s in fd.get("thresholds", {}).get("steps", []) if s["value"] is not None]
            if fd.get("unit") in want and p["type"] in ("timeseries", "stat"):
                self.assertEqual(steps, want[fd["unit"]], p["title"])
                seen.add(fd["unit"])
            if "Queue depth" in p.get("title", "") and p["type"] != "row":
                self.assertEqual(steps, [50, 200], p["title"])
                seen.add("queue")
        self.assertEqual(seen, {"percentunit", "s", "queue"})


if __name__ == "__main__":
    unittest.main()

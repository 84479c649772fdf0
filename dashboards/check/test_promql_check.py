"""Tests for promql_check.py: the catalog read from tally's sources, and
deliberately wrong PromQL caught with the reason.

    python3 -m unittest test_promql_check      (needs promql-parser: requirements.txt)
"""

import json
import os
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import promql_check as pc  # noqa: E402

SEL = 'job=~"$job", instance=~"$instance"'
VARS = {"job", "instance", "prom"}
FILTERS = {"job": "job", "instance": "instance"}


def errors(expr, legend=None, filters=FILTERS):
    return pc.check_expr(expr, CAT, VARS, filters, legend)


CAT = pc.load_catalog()


class Catalog(unittest.TestCase):
    def test_real_catalog(self):
        m = CAT.metrics
        self.assertGreater(len(m), 30)
        self.assertEqual(m["tally_received_items_total"].kind, "counter")
        self.assertEqual(m["tally_received_items_total"].labels, {"signal", "transport"})
        self.assertEqual(m["tally_refused_requests_total"].labels, {"signal", "transport", "reason"})
        # the only histogram with buckets (src/observability.rs)
        self.assertEqual(m["tally_request_duration_seconds"].exposition, "histogram")
        self.assertEqual(m["tally_ledger_commit_seconds"].exposition, "summary")
        self.assertEqual(m["tally_pipeline_queue_depth"].exposition, "gauge")
        # values listed in parentheses are not labels
        self.assertEqual(m["tally_usage_events_total"].labels, {"status"})
        self.assertEqual(m["tally_rollup_overflow_items_total"].labels, {"kind", "limit"})
        self.assertEqual(m["tally_connections"].labels, {"listener"})
        # the reason module holds values, not metric names
        self.assertNotIn("missing_tenant", m)
        self.assertIn("tally_request_duration_seconds_bucket", CAT.series)
        self.assertNotIn("tally_request_duration_seconds", CAT.series)
        self.assertIn("tally_ledger_commit_seconds", CAT.series)
        self.assertNotIn("tally_ledger_commit_seconds_bucket", CAT.series)
        self.assertEqual(CAT.quantile_strings(), {"0", "0.5", "0.9", "0.95", "0.99", "0.999", "1"})

    def test_parse_sources(self):
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "core", "src"))
            os.makedirs(os.path.join(root, "src"))
            with open(os.path.join(root, "core", "src", "metric_names.rs"), "w") as f:
                f.write(textwrap.dedent('''\
                    //! Names.
                    /// Things done. Labels: `kind` (`a`, `b`,
                    /// `c`), `where`.
                    pub const DONE: &str = "x_done_total";
                    /// Bytes in and out. Labels: `dir`.
                    pub const BYTES_IN: &str = "x_bytes_in_total";
                    pub const BYTES_OUT: &str = "x_bytes_out_total";

                    /// Latency.
                    pub const LAT: &str = "x_latency_seconds";
                    /// Size.
                    pub const SIZE: &str = "x_size";
                    /// Never recorded.
                    pub const IDLE: &str = "x_idle";
                    pub mod reason {
                        pub const OOPS: &str = "oops";
                    }
                    '''))  # fmt: skip
            with open(os.path.join(root, "src", "observability.rs"), "w") as f:
                f.write(textwrap.dedent('''\
                    let r = PrometheusBuilder::new()
                        .set_quantiles(&[0.5, 0.99])
                        .set_buckets_for_metric(
                            Matcher::Full(m::LAT.to_owned()),
                            &[0.1, 1.0],
                        );
                    fn d() { describe_histogram!(m::SIZE, "size"); }
                    '''))  # fmt: skip
            with open(os.path.join(root, "src", "work.rs"), "w") as f:
                f.write(textwrap.dedent('''\
                    metrics::counter!(metric_names::DONE, "kind" => k, "where" => "here").increment(1);
                    metrics::counter!(
                        metric_names::BYTES_OUT,
                        "dir" => "out",
                        "peer" => format!("{}", p)
                    ).increment(n);
                    metrics::histogram!(metric_names::LAT).record(0.2);
                    metrics::histogram!(metric_names::SIZE, "shape" => "(round)").record(2.0);
                    '''))  # fmt: skip
            cat = pc.load_catalog(root)
        m = cat.metrics
        self.assertEqual(set(m), {"x_done_total", "x_bytes_in_total", "x_bytes_out_total", "x_latency_seconds", "x_size", "x_idle"})
        self.assertEqual(m["x_done_total"].labels, {"kind", "where"})
        self.assertEqual(m["x_bytes_in_total"].labels, {"dir"})
        self.assertEqual(m["x_bytes_out_total"].labels, {"dir", "peer"}, "shares the comment above it, plus the code's labels")
        self.assertEqual(m["x_latency_seconds"].exposition, "histogram")
        self.assertEqual(m["x_size"].exposition, "summary")
        self.assertEqual(m["x_size"].labels, {"shape"})
        self.assertEqual(m["x_idle"].exposition, "unknown")
        self.assertTrue(any("x_idle" in n and "never recorded" in n for n in cat.notes))
        self.assertEqual(cat.quantile_strings(), {"0.5", "0.99"})
        self.assertEqual(set(cat.series), {"x_done_total", "x_bytes_in_total", "x_bytes_out_total", "x_latency_seconds_bucket",
                                           "x_latency_seconds_sum", "x_latency_seconds_count", "x_size", "x_size_sum",
                                           "x_size_count", "x_idle"})  # fmt: skip


class Expressions(unittest.TestCase):
    def assertFails(self, expr, fragment, **kw):
        errs = errors(expr, **kw)
        self.assertTrue(any(fragment in e for e in errs), f"{expr!r}: expected {fragment!r} in {errs}")

    def test_good(self):
        for expr, legend in [
            (f"sum by (signal, transport) (rate(tally_received_items_total{{{SEL}}}[$__rate_interval]))", "{{signal}} {{transport}}"),
            (f"histogram_quantile(0.99, sum by (le, signal) (rate(tally_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))", "{{signal}}"),
            (f'max by (instance) (tally_ledger_commit_seconds{{{SEL}, quantile="0.99"}})', "p99 {{instance}}"),
            (f'tally_rollup_flush_seconds{{{SEL}, quantile=~"0.5|0.99|1"}}', "p{{quantile}}"),
            (f"sum(rate(tally_ledger_commit_seconds_count{{{SEL}}}[5m])) / sum(rate(tally_ledger_commit_seconds_sum{{{SEL}}}[5m]))", None),
            (f"max(tally_pipeline_queue_depth{{{SEL}}} / on (job, instance) tally_pipeline_queue_capacity{{{SEL}}})", None),
            (f"sum(increase(tally_ledger_errors_total{{{SEL}}}[$__range]))", None),
            (f"up{{{SEL}}} == 0", None),
        ]:
            with self.subTest(expr):
                self.assertEqual(errors(expr, legend), [])

    def test_syntax(self):
        self.assertFails(f"sum(rate(tally_received_items_total{{{SEL}}}[$__rate_interval])", "does not parse")
        self.assertFails(f"sum by (signal (rate(tally_received_items_total{{{SEL}}}[1m]))", "does not parse")
        # the parser's type checks: rate() needs a range vector
        self.assertFails(f"rate(tally_received_items_total{{{SEL}}})", "does not parse")

    def test_unknown_metric(self):
        self.assertFails(f"sum(rate(tally_recieved_items_total{{{SEL}}}[1m]))", "not exported by tally")
        # summaries have no buckets in tally's exporter
        self.assertFails(f"histogram_quantile(0.99, sum by (le) (rate(tally_ledger_commit_seconds_bucket{{{SEL}}}[1m])))",
                         "tally_ledger_commit_seconds is a summary")  # fmt: skip
        # a bucketed histogram has no bare series
        self.assertFails(f"tally_request_duration_seconds{{{SEL}}}", "is a histogram")

    def test_function_over_wrong_kind(self):
        self.assertFails(f"rate(tally_pipeline_queue_depth{{{SEL}}}[1m])", "rate() over tally_pipeline_queue_depth, a gauge")
        self.assertFails(f'rate(tally_ledger_commit_seconds{{{SEL}, quantile="0.5"}}[1m])', "a summary")
        self.assertFails(f"deriv(tally_received_items_total{{{SEL}}}[5m])", "not a gauge")
        self.assertFails(f"histogram_quantile(0.9, rate(tally_ledger_commit_seconds_sum{{{SEL}}}[1m]))", "needs _bucket series")
        self.assertFails(f"histogram_quantile(0.9, sum by (signal) (rate(tally_request_duration_seconds_bucket{{{SEL}}}[1m])))",
                         "without `le`")  # fmt: skip

    def test_labels(self):
        self.assertFails(f'tally_received_items_total{{{SEL}, tenant="a"}}', "has no label 'tenant'")
        self.assertFails(f"sum by (reason) (rate(tally_received_items_total{{{SEL}}}[1m]))", "(reason): no series")
        self.assertFails(f"sum by (signal) (rate(tally_received_items_total{{{SEL}}}[1m]))", "legend {{status}}", legend="{{status}}")
        self.assertFails(f'tally_ledger_commit_seconds{{{SEL}, quantile="0.95000"}}', "quantile '0.95000' is not rendered")
        self.assertFails(f'tally_ledger_commit_seconds{{{SEL}, quantile=~"0.5|0.75"}}', "quantile '0.75'")
        self.assertFails(f'tally_received_items_total{{{SEL}, quantile="0.5"}}', "has no label 'quantile'")

    def test_variables(self):
        self.assertFails("sum(rate(tally_received_items_total[1m]))", 'no job=~"$job" matcher')
        self.assertFails('sum(rate(tally_received_items_total{job=~"$job"}[1m]))', 'no instance=~"$instance" matcher')
        self.assertFails(f"sum(rate(tally_received_items_total{{{SEL}, signal=~\"$sig\"}}[1m]))", "$sig is not a variable")
        self.assertFails(f"sum(rate(tally_received_items_total{{{SEL}}}[$job]))", "outside a quoted string")


class Dashboards(unittest.TestCase):
    def test_shipped_dashboards(self):
        for path in sorted(os.listdir(os.path.join(pc.HERE, "..", "grafana", "dashboards"))):
            with self.subTest(path):
                rep = pc.check_dashboard(os.path.join(pc.HERE, "..", "grafana", "dashboards", path), CAT)
                self.assertEqual(rep["failures"], 0, [e for e in rep["expressions"] if e["errors"]])

    def test_tally_self_shows_every_metric(self):
        rep = pc.check_dashboard(os.path.join(pc.HERE, "..", "grafana", "dashboards", "tally-self.json"), CAT)
        self.assertGreater(len(rep["expressions"]), 40)
        self.assertEqual(set(CAT.metrics) - set(rep["used"]), set())

    def test_bad_dashboard(self):
        d = {
            "uid": "bad",
            "templating": {"list": [
                {"name": "prom", "type": "datasource", "query": "prometheus"},
                {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${prom}"},
                 "query": {"query": "label_values(tally_pipeline_queue_capacity, job)"}},
                {"name": "lst", "type": "query", "datasource": {"type": "prometheus", "uid": "${prom}"},
                 "query": "label_values(tally_received_items_total{job=~\"$job\"}, listener)"},
            ]},
            "panels": [
                {"type": "row", "title": "r", "panels": [
                    {"title": "inside a row", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${prom}"},
                     "targets": [{"refId": "A", "expr": "rate(tally_nope_total{job=~\"$job\", listener=~\"$lst\"}[1m])"}]},
                ]},
                {"title": "ok", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${prom}"},
                 "targets": [{"refId": "A", "expr": "sum by (listener) (tally_connections{job=~\"$job\", listener=~\"$lst\"})",
                              "legendFormat": "{{listener}}"}]},
                {"title": "sql", "type": "table", "datasource": {"type": "grafana-postgresql-datasource", "uid": "x"},
                 "targets": [{"refId": "A", "rawSql": "SELECT 1"}]},
            ],
        }  # fmt: skip
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(d, f)
        try:
            rep = pc.check_dashboard(f.name, CAT)
        finally:
            os.unlink(f.name)
        by_where = {e["where"]: e["errors"] for e in rep["expressions"]}
        self.assertEqual(by_where["variable $job"], [])
        self.assertTrue(any("tally_received_items_total has no label 'listener'" in e for e in by_where["variable $lst"]))
        self.assertTrue(any("not exported" in e for e in by_where["panel 'inside a row' [A]"]))
        self.assertEqual(by_where["panel 'ok' [A]"], [])
        self.assertNotIn("panel 'sql' [A]", by_where)
        self.assertEqual(rep["failures"], 2)


if __name__ == "__main__":
    unittest.main()

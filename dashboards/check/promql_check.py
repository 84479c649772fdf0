#!/usr/bin/env python3
"""Checks the PromQL of tally's Grafana dashboards against the metrics tally
really exports.

    promql_check.py DASHBOARD.json [...] [--repo ROOT] [--json] [--catalog]

The parser is ``promql-parser`` from PyPI (pinned in requirements.txt): Python
bindings of the Rust ``promql-parser`` crate, a port of Prometheus' own Go
parser (declared compatible with Prometheus v2.45), including its type checks
(``rate()`` of an instant vector, a scalar where a vector is needed, ...).
``run`` installs it into dashboards/check/.venv.

The catalog of what tally exports is read from the Rust sources, not written
down here:

* metric names: every top-level ``pub const NAME: &str = "tally_...";`` of
  core/src/metric_names.rs (the ``reason`` module holds label values, not
  names);
* labels: the ``Labels: `a`, `b``` sentence of each constant's doc comment
  (parenthesised text, which lists values, is skipped; a constant without a
  doc comment directly after another constant shares that one's comment),
  plus every ``"label" =>`` in a ``counter!``/``gauge!``/``histogram!`` call
  on that constant anywhere in the workspace;
* kind: the macro those calls use (``describe_*!`` included);
* exposition: in metrics-exporter-prometheus a histogram is rendered with
  ``_bucket{le}`` only when src/observability.rs gives it buckets
  (``set_buckets_for_metric(Matcher::Full(m::NAME) ...)``); every other
  histogram is a *summary*: ``NAME{quantile="0"|"0.5"|...}``, ``NAME_sum``,
  ``NAME_count`` (quantiles from ``set_quantiles`` or the exporter's default
  0, 0.5, 0.9, 0.95, 0.99, 0.999, 1, printed like Rust's f64 Display).

Rules, for every Prometheus target and ``label_values(...)`` variable query
(Grafana's variables substituted first: ``$__rate_interval``, ``$__interval``
→ 1m, ``$__range`` → 1h; ``$var`` may only stand inside quoted strings):

1. the expression parses;
2. every ``tally_*`` series name is one tally exports (name + suffix as above);
3. ``rate``/``irate``/``increase``/``resets`` only over counters and
   ``_sum``/``_count``/``_bucket`` series; ``delta``/``deriv``/
   ``predict_linear`` only over gauges; ``histogram_quantile`` only over
   ``_bucket`` series, aggregated ``by (le, ...)`` when aggregated;
4. label names in matchers, ``by``/``without``, ``on``/``ignoring``,
   ``group_left/right`` and the target's ``{{legend}}`` are labels of the
   series involved (plus the scrape labels ``job`` and ``instance``, ``le`` on
   buckets, ``quantile`` on summaries); ``quantile`` values are quantiles the
   exporter renders;
5. when the dashboard has label filter variables (``label_values(…, L)``
   query variables), every ``tally_*`` selector filters on ``L`` with that
   variable, so the picker applies to every panel;
6. every ``$var`` used is a variable of the dashboard or a Grafana built-in.

Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

SCRAPE_LABELS = {"job", "instance"}
DEFAULT_QUANTILES = [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
COUNTER_FUNCS = {"rate", "irate", "increase", "resets"}
GAUGE_FUNCS = {"delta", "idelta", "deriv", "predict_linear", "holt_winters", "double_exponential_smoothing"}
GRAFANA_BUILTINS = {
    "__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__interval_ms": "60000",
    "__range_s": "3600", "__range_ms": "3600000",
}  # fmt: skip
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z_][A-Za-z0-9_]*)(?::[^\]]*)?\]\]")
LEGEND_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


# ---------------------------------------------------------------------------
# The catalog: what tally exports, read from its Rust sources
# ---------------------------------------------------------------------------


@dataclass
class Metric:
    const: str
    name: str
    labels: set = field(default_factory=set)
    kind: str | None = None  # counter | gauge | histogram
    buckets: bool = False
    doc: str = ""

    @property
    def exposition(self) -> str:
        if self.kind == "histogram":
            return "histogram" if self.buckets else "summary"
        return self.kind or "unknown"


@dataclass
class Catalog:
    metrics: dict  # name -> Metric
    quantiles: list
    series: dict = field(default_factory=dict)  # series name -> (Metric, suffix)
    notes: list = field(default_factory=list)

    def build_series(self) -> None:
        self.series = {}
        for m in self.metrics.values():
            kind = m.exposition
            if kind == "histogram":
                suffixes = ("_bucket", "_sum", "_count")
            elif kind == "summary":
                suffixes = ("", "_sum", "_count")
            else:
                suffixes = ("",)
            for s in suffixes:
                self.series[m.name + s] = (m, s)

    def quantile_strings(self) -> set:
        return {rust_f64(q) for q in self.quantiles}


def rust_f64(v: float) -> str:
    """Rust's ``Display`` for f64 (what the exporter prints as quantile): 0 → "0", 0.5 → "0.5"."""
    if v == int(v):
        return str(int(v))
    return repr(v)


def strip_parens(s: str) -> str:
    out, depth = [], 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def doc_labels(doc: str) -> set:
    m = re.search(r"Labels:(.*)", doc, re.S)
    if not m:
        return set()
    rest = strip_parens(m.group(1))
    # the sentence ends at the first full stop outside parentheses
    rest = rest.split(". ")[0]
    return set(re.findall(r"`([a-z_][a-z0-9_]*)`", rest))


CONST_RE = re.compile(r'^\s*pub\s+const\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"\s*;')


def parse_metric_names(text: str) -> dict:
    """Top-level ``pub const`` string constants of metric_names.rs with their doc comments."""
    metrics: dict = {}
    depth = 0
    doc: list[str] = []
    prev_doc = ""
    prev_was_const = False
    for line in text.splitlines():
        stripped = line.strip()
        if depth == 0 and stripped.startswith("///"):
            doc.append(stripped[3:].strip())
            prev_was_const = False
            continue
        m = CONST_RE.match(line) if depth == 0 else None
        if m:
            text_doc = " ".join(doc)
            if not text_doc and prev_was_const:
                text_doc = prev_doc  # one comment above two constants
            const, name = m.groups()
            metrics[name] = Metric(const=const, name=name, labels=doc_labels(text_doc), doc=text_doc)
            prev_doc, prev_was_const, doc = text_doc, True, []
            continue
        depth += line.count("{") - line.count("}")
        if stripped and not stripped.startswith("//"):
            prev_was_const = False
            doc = []
    return metrics


MACRO_RE = re.compile(r"\b(?:describe_)?(counter|gauge|histogram)!\s*\(")


def macro_calls(text: str):
    """(kind, first argument, whole argument text) of every metrics macro call."""
    for m in MACRO_RE.finditer(text):
        i, depth = m.end(), 1
        while i < len(text) and depth:
            ch = text[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == '"':
                i += 1
                while i < len(text) and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
            i += 1
        args = text[m.end() : i - 1]
        first = args.split(",", 1)[0].strip()
        yield m.group(1), first, args


def load_catalog(repo: str = REPO) -> Catalog:
    path = os.path.join(repo, "core", "src", "metric_names.rs")
    with open(path, encoding="utf-8") as f:
        metrics = parse_metric_names(f.read())
    by_const = {m.const: m for m in metrics.values()}
    notes = []
    quantiles = list(DEFAULT_QUANTILES)
    rust_files = [p for p in glob.glob(os.path.join(repo, "**", "*.rs"), recursive=True)
                  if f"{os.sep}vendor{os.sep}" not in p and f"{os.sep}target{os.sep}" not in p and not p.endswith("metric_names.rs")]  # fmt: skip
    for p in rust_files:
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for kind, first, args in macro_calls(text):
            const = first.split("::")[-1]
            m = by_const.get(const)
            if m is None:
                continue
            if m.kind and m.kind != kind:
                notes.append(f"{m.name} is recorded as {m.kind} and as {kind} ({os.path.relpath(p, repo)})")
            m.kind = m.kind or kind
            m.labels |= set(re.findall(r'"([a-z_][a-z0-9_]*)"\s*=>', args))
        if p.endswith(os.path.join("src", "observability.rs")):
            for const in re.findall(r"set_buckets_for_metric\(\s*Matcher::Full\(\s*(?:\w+::)*([A-Z][A-Z0-9_]*)", text):
                if const in by_const:
                    by_const[const].buckets = True
            if re.search(r"set_buckets_for_metric\(\s*Matcher::(Prefix|Suffix)", text):
                notes.append("src/observability.rs uses a Prefix/Suffix bucket matcher: not understood by this check")
            if re.search(r"set_buckets\s*\(", text):
                notes.append("src/observability.rs sets buckets for every histogram: not understood by this check")
            q = re.search(r"set_quantiles\(\s*&\[([^\]]*)\]", text)
            if q:
                quantiles = [float(x) for x in q.group(1).split(",") if x.strip()]
    for m in metrics.values():
        if m.kind is None:
            notes.append(f"{m.name} ({m.const}) is never recorded in the code")
    cat = Catalog(metrics=metrics, quantiles=quantiles, notes=notes)
    cat.build_series()
    return cat


# ---------------------------------------------------------------------------
# PromQL
# ---------------------------------------------------------------------------


def import_parser():
    try:
        import promql_parser  # noqa: F401
    except ImportError:
        sys.exit("promql_check.py needs the promql-parser package: pip install -r dashboards/check/requirements.txt "
                 "(dashboards/check/run installs it into dashboards/check/.venv)")  # fmt: skip
    return promql_parser


def placeholder(name: str) -> str:
    """What ``$name`` becomes inside a string (a valid regex too)."""
    return f"__grafana_var_{name}__"


def substitute(expr: str, variables: set) -> tuple[str, list[str]]:
    """Grafana's interpolation, for parsing: built-in intervals become
    durations; ``$var`` must be inside a quoted string (a label matcher)."""
    errors = []
    out = []
    i = 0
    quote = None
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                out.append(expr[i : i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        m = VAR_RE.match(expr, i) if ch in "$[" else None
        if m:
            name = m.group(1) or m.group(2) or m.group(3)
            if name in GRAFANA_BUILTINS:
                out.append(GRAFANA_BUILTINS[name] if not quote else placeholder(name))
            elif name not in variables:
                errors.append(f"${name} is not a variable of this dashboard")
                out.append(placeholder(name) if quote else "1")
            elif not quote:
                errors.append(f"${name} outside a quoted string: Grafana would paste its raw value into the query")
                out.append("1")
            else:
                out.append(placeholder(name))
            i = m.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out), errors


@dataclass
class Use:
    """A selector found in an expression."""

    name: str | None
    matchers: list  # (op, label, value)
    raw: str


def walk(expr, pq):
    """Every node of the AST (MatrixSelector's vector selector included)."""
    nodes = []

    def visit(node):
        nodes.append(node)
        return True

    pq.walk(expr, visit)
    return nodes


def selectors_under(node, pq) -> list[Use]:
    uses = []
    for n in walk(node, pq):
        vs = n.vector_selector if isinstance(n, pq.MatrixSelector) else n
        if isinstance(vs, pq.VectorSelector):
            ms = [(str(x.op).split(".")[-1], x.name, x.value) for x in vs.matchers.matchers]
            name = vs.name
            if name is None:
                for op, label, value in ms:
                    if label == "__name__" and op == "Equal":
                        name = value
            uses.append(Use(name, ms, str(vs)))
    # a MatrixSelector and its VectorSelector may both be visited
    seen, out = set(), []
    for u in uses:
        if u.raw not in seen:
            seen.add(u.raw)
            out.append(u)
    return out


def allowed_labels(cat: Catalog, series: str) -> set:
    m, suffix = cat.series[series]
    labels = set(m.labels) | SCRAPE_LABELS
    if suffix == "_bucket":
        labels.add("le")
    if m.exposition == "summary" and suffix == "":
        labels.add("quantile")
    return labels


def check_expr(expr: str, cat: Catalog, variables: set, filter_vars: dict, legend: str | None = None) -> list[str]:
    """Errors for one PromQL expression (empty when fine)."""
    pq = import_parser()
    text, errors = substitute(expr, variables)
    try:
        ast = pq.parse(text)
    except Exception as e:  # the parser raises ValueError with Prometheus' message
        return errors + [f"does not parse: {e}"]
    uses = selectors_under(ast, pq)
    known_uses = []
    for u in uses:
        if u.name is None:
            errors.append(f"selector without a metric name: {u.raw}")
            continue
        if not u.name.startswith("tally_"):
            continue
        if u.name not in cat.series:
            hint = ""
            base = re.sub(r"_(bucket|sum|count)$", "", u.name)
            if base in cat.metrics:
                hint = f" ({base} is a {cat.metrics[base].exposition})"
            errors.append(f"{u.name} is not exported by tally (core/src/metric_names.rs){hint}")
            continue
        known_uses.append(u)
        allowed = allowed_labels(cat, u.name)
        for op, label, value in u.matchers:
            if label == "__name__":
                continue
            if label not in allowed:
                errors.append(f"{u.name} has no label {label!r} (labels: {', '.join(sorted(allowed))})")
            if label == "quantile" and "__grafana_var_" not in value:
                qs = cat.quantile_strings()
                vals = value.split("|") if op in ("Re", "NotRe") else [value]
                for v in vals:
                    if v not in qs:
                        errors.append(f"{u.name}: quantile {v!r} is not rendered by the exporter ({', '.join(sorted(qs, key=float))})")
        for label, var in filter_vars.items():
            if not any(lab == label and placeholder(var) in val for _, lab, val in u.matchers):
                errors.append(f'{u.name}: no {label}=~"${var}" matcher (the ${var} picker would not apply)')
    # functions and aggregations
    for n in walk(ast, pq):
        if isinstance(n, pq.Call):
            fname = n.func.name
            inner = [u for a in n.args if isinstance(a, pq.Expr) for u in selectors_under(a, pq)]
            inner = [u for u in inner if u.name in cat.series]
            for u in inner:
                m, suffix = cat.series[u.name]
                if fname in COUNTER_FUNCS and not (m.kind == "counter" or suffix in ("_sum", "_count", "_bucket")):
                    errors.append(f"{fname}() over {u.name}, a {m.exposition if not suffix else m.exposition + ' ' + suffix}: only counters (and _sum/_count/_bucket) increase monotonically")
                if fname in GAUGE_FUNCS and m.kind != "gauge":
                    errors.append(f"{fname}() over {u.name}, which is not a gauge")
            if fname == "histogram_quantile":
                arg = n.args[1] if len(n.args) > 1 else None
                arg_uses = [u for u in selectors_under(arg, pq)] if arg is not None else []
                for u in arg_uses:
                    if not u.name or not u.name.endswith("_bucket"):
                        errors.append(f"histogram_quantile over {u.name}: needs _bucket series")
                a = arg
                while isinstance(a, pq.ParenExpr):
                    a = a.expr
                if isinstance(a, pq.AggregateExpr) and a.modifier is not None:
                    kind = str(a.modifier.type).split(".")[-1]
                    if kind == "By" and "le" not in a.modifier.labels:
                        errors.append("histogram_quantile over an aggregation without `le` in by (...)")
                    if kind == "Without" and "le" in a.modifier.labels:
                        errors.append("histogram_quantile over an aggregation without (le)")
    # label names in grouping clauses and the legend
    union = set(SCRAPE_LABELS)
    for u in known_uses:
        union |= allowed_labels(cat, u.name)
    grouping = []
    for n in walk(ast, pq):
        if isinstance(n, pq.AggregateExpr) and n.modifier is not None:
            grouping += [(f"{str(n.op)} by/without", lab) for lab in n.modifier.labels]
        if isinstance(n, pq.BinaryExpr) and n.modifier is not None:
            if n.modifier.matching is not None:
                grouping += [("on/ignoring", lab) for lab in n.modifier.matching.labels]
            grouping += [("group_left/right", lab) for lab in (n.modifier.group_labels or [])]
    if known_uses:
        for where, lab in grouping:
            if lab not in union:
                errors.append(f"{where} ({lab}): no series in this expression has that label")
        for lab in LEGEND_RE.findall(legend or ""):
            if lab not in union:
                errors.append(f"legend {{{{{lab}}}}}: no series in this expression has that label")
    return errors


# ---------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------


def is_prom(ds, variables_by_name: dict) -> bool:
    if isinstance(ds, dict):
        if ds.get("type") == "prometheus":
            return True
        uid = str(ds.get("uid", ""))
    else:
        uid = str(ds or "")
    m = re.match(r"^\$\{?([A-Za-z_]\w*)\}?$", uid)
    v = variables_by_name.get(m.group(1)) if m else None
    return bool(v and v.get("type") == "datasource" and v.get("query") == "prometheus")


def panels_of(d: dict):
    for p in d.get("panels") or []:
        yield p
        if p.get("type") == "row":
            yield from p.get("panels") or []


def variable_query(v: dict) -> str:
    q = v.get("query")
    if isinstance(q, dict):
        return q.get("query") or ""
    return q or ""


def check_dashboard(path: str, cat: Catalog) -> dict:
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    var_list = (d.get("templating") or {}).get("list") or []
    by_name = {v.get("name"): v for v in var_list}
    names = set(by_name)
    report = {"dashboard": path, "uid": d.get("uid"), "expressions": [], "failures": 0, "used": []}
    # label filter variables: query variables `label_values(..., label)` on Prometheus
    filter_vars = {}
    for v in var_list:
        if v.get("type") == "query" and is_prom(v.get("datasource"), by_name):
            m = LABEL_VALUES_RE.match(variable_query(v))
            if m:
                filter_vars[m.group(2)] = v["name"]
    used = set()

    def add(where: str, expr: str, errors: list[str]):
        report["expressions"].append({"where": where, "expr": expr, "errors": errors})
        if errors:
            report["failures"] += 1

    for v in var_list:
        if v.get("type") != "query" or not is_prom(v.get("datasource"), by_name):
            continue
        q = variable_query(v)
        m = LABEL_VALUES_RE.match(q)
        where = f"variable ${v['name']}"
        if not m:
            if q.strip().startswith(("label_names", "metrics", "query_result")):
                add(where, q, [])
            else:
                add(where, q, ["not a label_values(...) query: not checked"])
            continue
        sel_text, label = m.group(1), m.group(2)
        errs = []
        if sel_text:
            # the variable's own filters may refer to variables defined before it
            errs = check_expr(sel_text, cat, names, {})
            pq = import_parser()
            try:
                uses = selectors_under(pq.parse(substitute(sel_text, names)[0]), pq)
            except Exception:
                uses = []
            for u in uses:
                if u.name in cat.series:
                    used.add(cat.series[u.name][0].name)
                    if label not in allowed_labels(cat, u.name):
                        errs.append(f"{u.name} has no label {label!r}")
        add(where, q, errs)
    for p in panels_of(d):
        if p.get("type") == "row":
            continue
        for t in p.get("targets") or []:
            ds = t.get("datasource") or p.get("datasource")
            if not is_prom(ds, by_name) or t.get("hide"):
                continue
            expr = t.get("expr") or ""
            where = f"panel {p.get('title')!r} [{t.get('refId')}]"
            if not expr.strip():
                add(where, expr, ["empty expr"])
                continue
            errs = check_expr(expr, cat, names, filter_vars, t.get("legendFormat"))
            add(where, expr, errs)
            pq = import_parser()
            try:
                for u in selectors_under(pq.parse(substitute(expr, names)[0]), pq):
                    if u.name in cat.series:
                        used.add(cat.series[u.name][0].name)
            except Exception:
                pass
    report["used"] = sorted(used)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboards", nargs="*")
    ap.add_argument("--repo", default=REPO, help="tally's repository root (default: this checkout)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--catalog", action="store_true", help="print what tally exports, as read from the sources")
    args = ap.parse_args(argv)
    cat = load_catalog(args.repo)
    if not cat.metrics:
        print("no metric names found in core/src/metric_names.rs", file=sys.stderr)
        return 1
    if args.catalog:
        for m in sorted(cat.metrics.values(), key=lambda m: m.name):
            print(f"{m.name:48} {m.exposition:9} labels: {', '.join(sorted(m.labels)) or '-'}")
        print(f"summary quantiles: {', '.join(sorted(cat.quantile_strings(), key=float))}")
        for n in cat.notes:
            print(f"note: {n}")
        if not args.dashboards:
            return 0
    if not args.dashboards:
        ap.error("no dashboards given")
    reports = [check_dashboard(p, cat) for p in args.dashboards]
    if args.json:
        print(json.dumps({"catalog_notes": cat.notes, "reports": reports}, indent=2))
    else:
        for n in cat.notes:
            print(f"note: {n}")
        for r in reports:
            exprs = r["expressions"]
            print(f"== {r['dashboard']} (uid {r['uid']}): {len(exprs)} PromQL expression(s)")
            for e in exprs:
                if e["errors"]:
                    print(f"  FAIL {e['where']}: {e['expr']}")
                    for err in e["errors"]:
                        print(f"         {err}")
            if exprs:
                unused = sorted(set(cat.metrics) - set(r["used"]))
                print(f"  metrics shown: {len(r['used'])} of {len(cat.metrics)}" + (f"; not shown: {', '.join(unused)}" if unused else ""))
            print(f"  -> {len(exprs) - r['failures']} ok, {r['failures']} failed")
    return 1 if any(r["failures"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())

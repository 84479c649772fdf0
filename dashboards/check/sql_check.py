#!/usr/bin/env python3
"""Check every PostgreSQL query of a Grafana dashboard against a real database,
the way Grafana would run it, without a Grafana server.

    sql_check.py DASHBOARD.json [DASHBOARD.json ...] --db postgresql://user@host:5432/db
        [--from now-24h] [--to now] [--var name=value ...] [--expect expectations.json]
        [--json] [--show-sql] [--max-data-points N] [--ds-interval 1m]
        [--setup FILE ...] [--legacy] [--timescaledb] [--now 2026-11-30T12:00:00Z]

For each dashboard:

1. Template variables are resolved in order: ``--var`` values, else the
   saved ``current`` when it is still valid, else the first option. Query
   variables run against the database like ``SqlDatasource.metricFindQuery``
   (a ``table`` query with the dashboard time range; columns ``__text`` /
   ``__value`` if present, else every value of every column, de-duplicated by
   text), in order (a variable can depend on the previous ones).
2. Every panel target (rows and collapsed rows included, hidden targets and
   other datasources skipped) and every SQL annotation is expanded exactly as
   Grafana does (grafana_macros.py: frontend variables and ``$__interval``
   from the range, ``maxDataPoints`` and the panel's min interval, then the
   backend's comment stripping, global substitutions and macros).
3. Variables and then all panel queries of a dashboard run in ONE psql
   session, inside one transaction that is rolled back at the end
   (``ON_ERROR_ROLLBACK on``, so one failing query does not abort the others;
   ``READ ONLY`` unless ``--setup`` files are given, which run first in the
   same transaction; ``TimeZone`` UTC; ``statement_timeout``). Column names
   and types come from ``\\gdesc``; per-query time from ``clock_timestamp()``.
   psql interprets ``:name`` (a defined psql variable) and backslash commands
   outside quotes, as it does for any script; dashboards' SQL rarely has either.
4. Results are checked like Grafana's sqleng: no error; ``time_series``
   needs a column named exactly ``time`` of a type Grafana converts (a
   timestamp, or a number read as an epoch: values whose
   ``FormatFloat(v,'e')`` ends ``e+09`` are seconds, ``e+18`` nanoseconds,
   anything else milliseconds, so anything but the e+09/e+12/e+18 decades is
   flagged), no NULL times, rows sorted ascending by time when a string column
   makes the frame "long", value columns convertible to float; ``table``
   converts ``time``/``timeend`` the same way; annotations need ``time`` and
   ``text``; a missing ``format`` fails (older Grafana panics on it).
   ``--expect FILE``: ``{"Panel title": {"columns": [...], "min_rows": N,
   "types": {"col": "bigint"}}}`` (key ``"Panel title/refId"`` for one target,
   ``"annotation:Name"`` for an annotation), optionally nested under a
   dashboard uid (then a key that matches no panel fails too).

Exit status 1 when anything fails. Needs python3 and psql only.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grafana_macros as gm  # noqa: E402

PG_TYPES = {"grafana-postgresql-datasource", "postgres"}
NULL = "\\N"

# Types Grafana's sqleng reads as numbers, times, and the rest (strings).
NUMERIC_TYPES = {"smallint", "integer", "bigint", "real", "double precision", "numeric"}
TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}
BOOL_TYPES = {"boolean"}
JSON_TYPES = {"json", "jsonb"}


def base_type(t: str) -> str:
    """``numeric(10,2)`` → ``numeric``; ``character varying(5)`` → ``character varying``."""
    return re.sub(r"\(.*\)$", "", t).strip()


# ---------------------------------------------------------------------------
# Time ranges (Grafana's dateMath, in UTC)
# ---------------------------------------------------------------------------

_UNITS_MS = {"s": 1000, "m": 60000, "h": 3600000}


def _start_of(ms: int, unit: str) -> dt.datetime:
    d = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    if unit == "y":
        return d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "M":
        return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":  # moment's default locale: weeks start on Sunday
        d0 = d.replace(hour=0, minute=0, second=0, microsecond=0)
        return d0 - dt.timedelta(days=(d0.weekday() + 1) % 7)
    if unit == "d":
        return d.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "h":
        return d.replace(minute=0, second=0, microsecond=0)
    if unit == "m":
        return d.replace(second=0, microsecond=0)
    return d.replace(microsecond=0)


def _to_ms(d: dt.datetime) -> int:
    return int(round(d.timestamp() * 1000))


def _add(ms: int, n: int, unit: str) -> int:
    if unit in _UNITS_MS:
        return ms + n * _UNITS_MS[unit]
    if unit == "d":
        return gm.go_add_date(ms * gm.MS, 0, 0, n) // gm.MS
    if unit == "w":
        return gm.go_add_date(ms * gm.MS, 0, 0, 7 * n) // gm.MS
    if unit == "M":
        return gm.go_add_date(ms * gm.MS, 0, n, 0) // gm.MS
    return gm.go_add_date(ms * gm.MS, n, 0, 0) // gm.MS


def parse_time(s: str, now_ms: int, round_up: bool) -> int:
    """``now``, ``now-6h``, ``now-7d/d``, ``now/M``, an ISO 8601 time or epoch ms."""
    s = s.strip()
    if re.fullmatch(r"\d{10,}", s):
        return int(s)
    if not s.startswith("now"):
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        return _to_ms(d)
    ms = now_ms
    rest = s[3:]
    for m in re.finditer(r"([+-])(\d+)([smhdwMy])|/([smhdwMy])", rest):
        if m.group(4):
            unit = m.group(4)
            start = _start_of(ms, unit)
            if round_up:
                nxt = _to_ms(start)
                nxt = _add(nxt, 1, unit) if unit not in ("w",) else nxt + 7 * 86400000
                ms = nxt - 1
            else:
                ms = _to_ms(start)
        else:
            n = int(m.group(2)) * (1 if m.group(1) == "+" else -1)
            ms = _add(ms, n, m.group(3))
    if re.sub(r"([+-]\d+[smhdwMy]|/[smhdwMy])", "", rest):
        raise ValueError(f"cannot parse time {s!r}")
    return ms


def relative_to_ms(s: str) -> int:
    """A panel ``timeFrom``/``timeShift`` like ``24h`` or ``now-24h`` as a span."""
    s = s.strip()
    if s.startswith("now-"):
        s = s[4:]
    m = re.fullmatch(r"(\d+)([smhdwMy])", s)
    if not m:
        raise ValueError(f"cannot parse {s!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000, "M": 2592000000, "y": 31536000000}[unit] * n


# ---------------------------------------------------------------------------
# psql
# ---------------------------------------------------------------------------


@dataclass
class Result:
    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    rows: list[list[Optional[str]]] = field(default_factory=list)
    error: Optional[str] = None
    described: bool = False
    ms: Optional[float] = None  # execution time reported by psql \\timing


def _unquote_psql(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == "'" and s[-1] == "'":
        return s[1:-1].replace("''", "'")
    return s


def _split_statements(sql: str) -> list[str]:
    """Statements separated by ``;`` outside quotes/comments/dollar quotes."""
    out, buf, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            buf.append(sql[i : j + 1])
            i = j + 1
            continue
        if c == "$":
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if m:
                tag = m.group(0)
                j = sql.find(tag, i + len(tag))
                j = n if j < 0 else j + len(tag)
                buf.append(sql[i:j])
                i = j
                continue
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            buf.append(sql[i:j])
            i = j
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(sql[i:j])
            i = j
            continue
        if c == ";":
            out.append("".join(buf))
            buf = []
            i += 1
            continue
        buf.append(c)
        i += 1
    out.append("".join(buf))
    return [s for s in out if s.strip()]


class PsqlSession:
    """One psql process, one transaction (rolled back at close), fed batches
    of queries as they become known: variable queries one by one (each may
    depend on the previous variables), then every panel query. Each batch's
    output goes to its own file (``\\o``); psql touches a marker file once
    the batch is done (``\\o`` has closed the file), so no reading of a
    buffered pipe is involved."""

    def __init__(self, db: str, setup: list[str], timeout_s: int, read_only: bool):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="sql_check_")
        self.timeout_s = timeout_s
        self.batches = 0
        self.stderr_path = os.path.join(self.dir, "stderr")
        self._out = open(os.path.join(self.dir, "stdout"), "w")
        self._err = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-d", db], stdin=subprocess.PIPE, stdout=self._out, stderr=self._err, text=True
        )
        lines = [
            "\\set ON_ERROR_STOP off",
            "\\set ON_ERROR_ROLLBACK on",
            "\\set VERBOSITY terse",
            "\\pset format csv",
            "\\pset tuples_only off",
            "\\pset null '\\\\N'",
            "\\pset pager off",
            "BEGIN;",
        ]
        if read_only:
            lines.append("SET TRANSACTION READ ONLY;")
        lines += ["SET LOCAL TimeZone = 'UTC';", f"SET LOCAL statement_timeout = '{int(timeout_s)}s';",
                  "SET LOCAL client_min_messages = warning;"]  # fmt: skip
        # --setup files stop at their first error (psql exits; its message is reported)
        body = ["\\set ON_ERROR_STOP on"] + ["\\i " + f for f in setup] + ["\\set ON_ERROR_STOP off"]
        try:
            self._batch(lines, body, 60 + 60 * len(setup))
        except RuntimeError as e:
            self.close()
            raise RuntimeError(("--setup failed: " if setup else "") + str(e)) from None

    def _stderr_tail(self) -> str:
        try:
            with open(self.stderr_path) as f:
                return f.read()[-2000:].strip()
        except OSError:
            return ""

    def _batch(self, prelude: list[str], body: list[str], timeout: float) -> list[str]:
        n = self.batches
        self.batches += 1
        out_path = os.path.join(self.dir, f"batch{n}.out")
        done_path = os.path.join(self.dir, f"batch{n}.done")
        script = prelude + [f"\\o '{out_path}'", "\\qecho '@@@BEGIN'"] + body + [
            "\\qecho '@@@END'", "\\o", f"\\! touch '{done_path}'"]  # fmt: skip
        try:
            self.proc.stdin.write("\n".join(script) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RuntimeError("psql exited: " + self._stderr_tail()) from None
        deadline = time.time() + timeout
        while not os.path.exists(done_path):
            if self.proc.poll() is not None:
                raise RuntimeError("psql exited: " + self._stderr_tail())
            if time.time() > deadline:
                raise RuntimeError(f"psql did not finish within {timeout:.0f} s")
            time.sleep(0.005)
        with open(out_path) as f:
            return f.read().splitlines()

    def run(self, queries: list[str]) -> list[Result]:
        body = []
        for n, q in enumerate(queries):
            stmts = _split_statements(q)
            body.append(f"\\qecho '@@@DESC {n}'")
            if len(stmts) == 1:
                body += [stmts[0].rstrip(), "\\gdesc"]
            body.append("SELECT extract(epoch FROM clock_timestamp()) AS sql_check_t0 \\gset")
            body.append(f"\\qecho '@@@ROWS {n}'")
            text = ";\n".join(s.rstrip() for s in stmts) if stmts else "SELECT NULL WHERE false"
            body.append(text + ";")
            body += ["\\if :ERROR", "\\qecho '@@@ERR' :SQLSTATE :'LAST_ERROR_MESSAGE'", "\\endif"]
            body.append("SELECT round(((extract(epoch FROM clock_timestamp()) - :sql_check_t0) * 1000)::numeric, 1) AS sql_check_ms \\gset")
            body.append("\\qecho '@@@MS' :sql_check_ms")
        out = self._batch([], body, self.timeout_s * (len(queries) + 2) + 30)
        return _parse_results(out, len(queries))

    def close(self) -> None:
        import shutil

        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("ROLLBACK;\n\\q\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self._out.close()
        self._err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _parse_results(lines: list[str], count: int) -> list[Result]:
    results = [Result() for _ in range(count)]
    section, idx = None, -1
    buf: list[str] = []

    def flush():
        if idx < 0 or section is None:
            return
        rows = [r for r in csv.reader(io.StringIO("\n".join(buf)))]
        r = results[idx]
        if section == "DESC":
            if rows and rows[0] == ["Column", "Type"]:
                r.columns = [(a, b) for a, b in rows[1:]]
                r.described = True
        elif section == "ROWS" and r.error is None:
            if rows:
                if not r.described:
                    r.columns = [(h, "?") for h in rows[0]]
                r.rows = [[None if v == NULL else v for v in row] for row in rows[1:]]

    for line in lines:
        m = re.match(r"@@@(DESC|ROWS) (\d+)$", line)
        if m:
            flush()
            section, idx, buf = m.group(1), int(m.group(2)), []
            continue
        if line.startswith("@@@MS"):
            flush()
            section, buf = None, []
            try:
                results[idx].ms = float(line[len("@@@MS") :].strip())
            except ValueError:
                pass
            continue
        if line.startswith("@@@ERR"):
            rest = line[len("@@@ERR") :].strip()
            code, _, msg = rest.partition(" ")
            results[idx].error = f"{code} {_unquote_psql(msg)}"
            results[idx].rows = []
            section, buf = None, []
            continue
        if line in ("@@@BEGIN", "@@@END"):
            flush()
            section, buf = None, []
            continue
        buf.append(line)
    flush()
    return results


# ---------------------------------------------------------------------------
# Dashboard model
# ---------------------------------------------------------------------------


@dataclass
class Target:
    kind: str  # panel | annotation
    title: str
    ref_id: str
    raw_sql: str
    fmt: Optional[str]
    panel: dict
    target: dict
    sql: str = ""
    interval_ms: int = 0
    interval: str = ""
    from_ms: int = 0
    to_ms: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    result: Optional[Result] = None
    skipped: Optional[str] = None

    @property
    def key(self) -> str:
        return f"annotation:{self.title}" if self.kind == "annotation" else f"{self.title}/{self.ref_id}"


def _ds_is_pg(ds: Any, variables: dict) -> Optional[bool]:
    """True/False for a datasource ref, None when it does not say."""
    if ds is None:
        return None
    if isinstance(ds, str):
        name = ds
        if name.startswith("$"):
            v = variables.get(name.strip("${}"))
            return True if v is not None and v.type == "datasource" else None
        return None
    t = ds.get("type")
    if t is None:
        uid = str(ds.get("uid", ""))
        if uid.startswith("$"):
            return True
        return None
    return t in PG_TYPES


def collect_panels(panels: list) -> list[dict]:
    out = []
    for p in panels or []:
        out.append(p)
        if p.get("type") == "row":
            out.extend(collect_panels(p.get("panels") or []))
    return out


def variable_query_text(v: dict) -> str:
    q = v.get("query")
    if isinstance(q, dict):
        return q.get("rawSql") or q.get("query") or ""
    return q or ""


def parse_custom_options(query: str) -> list[tuple[str, str]]:
    """A custom variable's ``a,b`` or ``text : value`` list."""
    out = []
    for part in re.split(r"(?<!\\),", query or ""):
        part = part.strip().replace("\\,", ",")
        if not part:
            continue
        m = re.fullmatch(r"(.*?)\s+:\s+(.*)", part)
        out.append((m.group(1), m.group(2)) if m else (part, part))
    return out


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def sort_options(opts: list[tuple[str, str]], sort: int) -> list[tuple[str, str]]:
    """Variable ``sort`` (1/2 alphabetical, 3/4 numerical, 5/6 case-insensitive, 7/8 natural)."""
    if not sort:
        return opts

    def num(t):
        m = re.search(r"-?\d+(\.\d+)?", t)
        return float(m.group(0)) if m else -math.inf

    keys = {1: lambda o: o[0], 2: lambda o: o[0], 3: lambda o: num(o[0]), 4: lambda o: num(o[0]),
            5: lambda o: o[0].lower(), 6: lambda o: o[0].lower(), 7: lambda o: _natural_key(o[0]),
            8: lambda o: _natural_key(o[0])}  # fmt: skip
    if sort not in keys:
        return opts
    return sorted(opts, key=keys[sort], reverse=sort in (2, 4, 6, 8))


# ---------------------------------------------------------------------------
# Result checks (sqleng)
# ---------------------------------------------------------------------------


def _time_values_check(rows, ci: int, col: str, ctype: str, failures: list, notes: list) -> list[Optional[float]]:
    """convertSQLTimeColumnToEpochMS: timestamps pass; numbers are epochs."""
    bt = base_type(ctype)
    vals = [r[ci] for r in rows]
    if bt in TIME_TYPES:
        out = []
        for v in vals:
            if v is None:
                out.append(None)
                continue
            try:
                d = dt.datetime.fromisoformat(v.replace(" ", "T").replace("+00", "+00:00") if v.endswith("+00") else v.replace(" ", "T"))
                if d.tzinfo is None:
                    d = d.replace(tzinfo=dt.timezone.utc)
                out.append(d.timestamp() * 1000)
            except ValueError:
                out.append(0.0)  # infinity etc.; order checks only
        return out
    if bt in NUMERIC_TYPES or ctype == "?":
        out, classes = [], {}
        for v in vals:
            if v is None:
                out.append(None)
                continue
            try:
                f = float(v)
            except ValueError:
                failures.append(f'column "{col}": value {v!r} is not a number: unable to convert data to a time field')
                return []
            cls = gm.epoch_class(f)
            classes[cls] = classes.get(cls, 0) + 1
            if cls == "ms?" and classes[cls] == 1:
                failures.append(
                    f'column "{col}": {v} ({gm.go_format_float_e(f)}) is read as epoch milliseconds '
                    "but is neither seconds (e+09), milliseconds (e+12) nor nanoseconds (e+18)"
                )
            out.append(gm.epoch_precision_to_ms(f))
        if classes:
            notes.append(f'{col} read as ' + ", ".join(f"{k}×{n}" for k, n in sorted(classes.items())))
        return out
    failures.append(f'column "{col}" has type {ctype}: unable to convert data to a time field')
    return []


def check_target(t: Target, max_rows: int) -> None:
    r = t.result
    assert r is not None
    if r.error:
        t.failures.append("db query error: " + r.error)
        return
    names = [c[0] for c in r.columns]
    types = {c[0]: c[1] for c in r.columns}
    if len(r.rows) > max_rows:
        t.notes.append(f"Results have been limited to {max_rows} because the SQL row limit was reached")
    fmt = "table" if t.kind == "annotation" else (t.fmt or "time_series")
    if t.kind == "annotation":
        for need in ("time", "text"):
            if need not in names:
                t.failures.append(f'annotation query has no "{need}" column (columns: {", ".join(names)})')
    if fmt == "table":
        for special in ("time", "timeend"):
            matches = [i for i, n in enumerate(names) if (n == special if special == "time" else n.lower() == special)]
            if matches and r.rows:
                _time_values_check(r.rows, matches[0], names[matches[0]], types[names[matches[0]]], t.failures, t.notes)
        return
    # time_series
    if "time" not in names:
        t.failures.append(
            "time column is missing; make sure your data includes a time column for time series format"
            + ("" if r.rows else " (Grafana only reports this once rows come back)")
        )
        return
    ti = names.index("time")
    times = _time_values_check(r.rows, ti, "time", types["time"], t.failures, t.notes) if r.rows else []
    if r.rows and times and any(v is None for v in times):
        t.failures.append(f"{sum(v is None for v in times)} row(s) with a NULL time (data.ErrorNullTimeValues)")
    string_cols, bad = [], []
    for i, (n, ty) in enumerate(r.columns):
        if i == ti:
            continue
        bt = base_type(ty)
        if bt in NUMERIC_TYPES:
            continue
        if bt in JSON_TYPES:
            bad.append(f"{n} ({ty}): convert value to float failed")
        elif bt in BOOL_TYPES or bt in TIME_TYPES:
            t.notes.append(f'value column "{n}" is {ty}, not a number')
        elif ty == "?":
            continue
        else:
            string_cols.append(n)
    for b in bad:
        t.failures.append(b)
    if string_cols:
        t.notes.append("long format (string columns: " + ", ".join(string_cols) + ")")
        if times and all(v is not None for v in times):
            for k in range(1, len(times)):
                if times[k] < times[k - 1]:
                    t.failures.append(
                        f"long series must be sorted ascending by time (row {k + 1}: {r.rows[k][ti]} after {r.rows[k - 1][ti]})"
                    )
                    break


def check_expectation(t: Target, exp: dict) -> None:
    r = t.result
    if r is None or r.error:
        return
    names = [c[0] for c in r.columns]
    for col in exp.get("columns", []):
        if col not in names:
            t.failures.append(f'expected column "{col}" (have: {", ".join(names)})')
    for col, ty in (exp.get("types") or {}).items():
        have = dict(r.columns).get(col)
        if have is not None and base_type(have) != ty:
            t.failures.append(f'expected column "{col}" of type {ty}, got {have}')
    mr = exp.get("min_rows")
    if mr is not None and len(r.rows) < mr:
        t.failures.append(f"expected at least {mr} row(s), got {len(r.rows)}")


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------


class Checker:
    def __init__(self, args):
        self.args = args
        self.now_ms = parse_time(args.now, int(time.time() * 1000), False) if args.now else int(time.time() * 1000)
        self.cli_vars: dict[str, list[str]] = {}
        for kv in args.var or []:
            name, _, value = kv.partition("=")
            self.cli_vars.setdefault(name, []).append(value)
        self.expect: dict = {}
        if args.expect:
            with open(args.expect) as f:
                e = json.load(f)
            self.expect = e.get("panels", e) if isinstance(e, dict) else {}

    def log(self, *a):
        if not self.args.json:
            print(*a)

    def resolve_variables(self, dash: dict, from_ms: int, to_ms: int, report: dict) -> dict:
        variables: dict[str, gm.Variable] = {}
        for v in (dash.get("templating") or {}).get("list") or []:
            name, vtype = v.get("name"), v.get("type")
            multi, include_all = bool(v.get("multi")), bool(v.get("includeAll"))
            var = gm.Variable(name, vtype, multi=multi, include_all=include_all, all_value=v.get("allValue") or None)
            info = {"name": name, "type": vtype}
            opts: list[tuple[str, str]] = []
            if vtype == "query" and _ds_is_pg(v.get("datasource"), variables) is not False:
                raw = variable_query_text(v)
                unknown: list[str] = []
                # metricFindQuery: templateSrv.replace(query, scopedVars, interpolateVariable),
                # a table query with the time range and no intervalMs, which the query
                # service defaults to 1000 ms (pkg/services/query/query.go: MustInt64(1000)).
                fe = gm.scene_interpolate(
                    raw, variables, {"__from": gm.TimeMacro("__from", from_ms), "__to": gm.TimeMacro("__to", to_ms)},
                    gm.sql_legacy_interpolate_variable if self.args.legacy else gm.postgres_interpolate_variable, unknown,
                )  # fmt: skip
                info["sql"] = raw
                try:
                    sql, _ = gm.backend_expand(fe, from_ms, to_ms, 1000, self.args.timescaledb, self.args.legacy, self.now_ms)
                except gm.MacroError as e:
                    info["error"] = f"interpolation failed: {e}"
                    sql = None
                if sql is not None:
                    info["expanded"] = sql
                    res = self.session.run([sql])[0]
                    if res.error:
                        info["error"] = "db query error: " + res.error
                    else:
                        names = [c[0] for c in res.columns]
                        seen = set()
                        if "__text" in names and "__value" in names:
                            ti, vi = names.index("__text"), names.index("__value")
                            # ResponseParser: text: '' + value (a NULL becomes "null")
                            cand = [("null" if r[ti] is None else r[ti], "null" if r[vi] is None else r[vi]) for r in res.rows]
                        else:
                            cand = [(x, x) for r in res.rows for x in r if x is not None]
                        for text, value in cand:
                            if text not in seen:
                                seen.add(text)
                                opts.append((text, value))
                if v.get("regex"):
                    info.setdefault("notes", []).append("variable regex not applied by the checker")
                opts = sort_options(opts, int(v.get("sort") or 0))
            elif vtype == "custom":
                opts = parse_custom_options(v.get("query", ""))
            elif vtype in ("constant", "textbox"):
                q = v.get("query", "")
                cur = (v.get("current") or {}).get("value")
                val = q if vtype == "constant" else (cur if cur not in (None, "") else q)
                opts = [(str(val), str(val))]
            elif vtype == "interval":
                opts = [(o.strip(), o.strip()) for o in (v.get("query") or "").split(",") if o.strip()]
            elif vtype == "datasource":
                cur = v.get("current") or {}
                opts = [(str(cur.get("text", "")), str(cur.get("value", "")))]
            var.options = opts
            # value: CLI > saved current (if valid) > first option
            values = [o[1] for o in opts]
            chosen: Any = None
            if name in self.cli_vars:
                cv = self.cli_vars[name]
                chosen = cv if multi else cv[0]
                if chosen == gm.ALL_VALUE or chosen == [gm.ALL_VALUE]:
                    chosen = [gm.ALL_VALUE] if multi else gm.ALL_VALUE
            else:
                cur = (v.get("current") or {}).get("value")
                cur_list = cur if isinstance(cur, list) else ([cur] if cur is not None else [])
                if cur_list and (cur_list == [gm.ALL_VALUE] and include_all or all(c in values for c in cur_list)) and vtype != "datasource":
                    chosen = cur_list if multi else cur_list[0]
                elif vtype == "datasource":
                    chosen = values[0] if values else ""
                elif values:
                    chosen = [values[0]] if multi else values[0]
                else:
                    chosen = [] if multi else ""
            var.value = chosen
            var.text = [t for t, val in opts if (val in chosen if isinstance(chosen, list) else val == chosen)] or chosen
            info["options"] = len(opts)
            info["value"] = chosen
            if vtype == "query" and not opts and "error" not in info:
                info.setdefault("notes", []).append("no options: `IN (${" + name + ":sqlstring})` would become `IN ()`")
            if "error" in info:
                report["failures"] += 1
            report["variables"].append(info)
            variables[name] = var
        return variables

    def targets(self, dash: dict, variables: dict, from_ms: int, to_ms: int) -> list[Target]:
        out: list[Target] = []
        for p in collect_panels(dash.get("panels") or []):
            if p.get("type") == "row":
                continue
            title = p.get("title") or f"panel {p.get('id')}"
            for tg in p.get("targets") or []:
                ds = tg.get("datasource") or p.get("datasource")
                if "rawSql" not in tg or tg.get("rawSql") in (None, ""):
                    t = Target("panel", title, tg.get("refId", "?"), "", tg.get("format"), p, tg)
                    is_pg = _ds_is_pg(ds, variables)
                    t.skipped = "no rawSql (Grafana skips it)" if is_pg is not False else f"datasource {ds} is not PostgreSQL"
                    out.append(t)
                    continue
                t = Target("panel", title, tg.get("refId", "?"), tg["rawSql"], tg.get("format"), p, tg)
                if _ds_is_pg(ds, variables) is False:
                    t.skipped = f"datasource {ds} is not PostgreSQL"
                elif tg.get("hide"):
                    t.skipped = "hidden"
                out.append(t)
        for a in (dash.get("annotations") or {}).get("list") or []:
            tg = a.get("target") or {}
            sql = tg.get("rawSql") or a.get("rawQuery")
            if not sql or _ds_is_pg(a.get("datasource"), variables) is False:
                continue
            t = Target("annotation", a.get("name", "?"), tg.get("refId", "Anno"), sql, "table", {}, tg)
            if not a.get("enable", True):
                t.notes.append("annotation disabled by default")
            out.append(t)
        for t in out:
            if t.skipped:
                continue
            self.expand(t, variables, from_ms, to_ms)
        return out

    def expand(self, t: Target, variables: dict, from_ms: int, to_ms: int) -> None:
        p, tg = t.panel, t.target
        if t.kind == "panel" and t.fmt is None:
            t.failures.append('target has no "format" (newest Grafana assumes time_series; older builds panic)')
        elif t.fmt not in (None, "time_series", "table"):
            t.notes.append(f"format {t.fmt!r} is read as time_series")
        for k in ("fill", "fillInterval", "fillMode", "fillValue"):
            if tg.get(k):
                t.failures.append("query fill-parameters not supported (target has " + k + ")")
        # panel time overrides (PanelTimeRange): timeFrom replaces the range, timeShift moves it back
        if p.get("timeFrom"):
            span = relative_to_ms(p["timeFrom"])
            from_ms, to_ms = self.now_ms - span, self.now_ms
        if p.get("timeShift"):
            shift = relative_to_ms(p["timeShift"])
            from_ms, to_ms = from_ms - shift, to_ms - shift
        t.from_ms, t.to_ms = from_ms, to_ms
        # interval: calculateInterval(range, maxDataPoints, panel min interval || ds.interval)
        mdp = p.get("maxDataPoints") or self.args.max_data_points
        low = p.get("interval") or self.args.ds_interval
        if t.kind == "annotation":
            mdp, low = self.args.max_data_points, self.args.ds_interval
        try:
            low_i = gm.scene_interpolate(low, variables) if low else low
            interval_ms, interval = gm.calculate_interval(from_ms, to_ms, mdp, low_i)
        except ValueError as e:
            t.failures.append(f"panel interval {low!r}: {e}")
            return
        t.interval_ms, t.interval = int(interval_ms), interval
        unknown: list[str] = []
        try:
            fe = gm.frontend_expand(t.raw_sql, variables, from_ms, to_ms, interval_ms, interval, self.args.legacy, unknown)
        except ValueError as e:
            t.failures.append(f"variable interpolation: {e}")
            return
        for name in unknown:
            if name.isdigit():  # $1: a positional parameter, not a variable
                continue
            if re.search(r"\$" + re.escape(name) + r"\(", t.raw_sql):  # a macro call, left for the backend
                continue
            t.failures.append(f"${name} is not a variable of this dashboard (left in the SQL as written)")
        if re.search(r"\$__unixEpochFilter\(\s*[\w.\"]*_ms\"?\s*\)", fe):
            t.failures.append("$__unixEpochFilter compares epoch seconds; on a *_ms column it matches nothing "
                              "(use col >= $__unixEpochFrom()::bigint*1000 AND col < $__unixEpochTo()::bigint*1000)")
        t.sql = fe  # shown if the backend step fails
        try:
            t.sql, q = gm.backend_expand(fe, from_ms, to_ms, int(interval_ms), self.args.timescaledb, self.args.legacy, self.now_ms)
        except gm.MacroError as e:
            t.failures.append(f"interpolation failed: {e}")
            return
        if q.fill:
            t.notes.append(f"fill: {q.fill.mode} every {gm.go_format_v(q.fill.interval_seconds)}s")

    def check(self, path: str) -> dict:
        with open(path) as f:
            dash = json.load(f)
        trange = dash.get("time") or {}
        from_s = self.args.from_ or trange.get("from") or "now-6h"
        to_s = self.args.to or trange.get("to") or "now"
        from_ms, to_ms = parse_time(from_s, self.now_ms, False), parse_time(to_s, self.now_ms, True)
        report: dict = {"dashboard": path, "title": dash.get("title"), "uid": dash.get("uid"), "from": from_s, "to": to_s,
                        "from_ms": from_ms, "to_ms": to_ms, "variables": [], "targets": [], "failures": 0}  # fmt: skip
        t0 = time.time()
        # one psql session and transaction per dashboard: variables, then panels
        self.session = PsqlSession(self.args.db, self.args.setup or [], self.args.statement_timeout, not self.args.setup)
        try:
            return self._check(dash, path, report, from_ms, to_ms, t0)
        finally:
            self.session.close()

    def _check(self, dash: dict, path: str, report: dict, from_ms: int, to_ms: int, t0: float) -> dict:
        variables = self.resolve_variables(dash, from_ms, to_ms, report)
        targets = self.targets(dash, variables, from_ms, to_ms)
        runnable = [t for t in targets if not t.skipped and t.sql]
        results = self.session.run([t.sql for t in runnable])
        for t, r in zip(runnable, results):
            t.result = r
            check_target(t, self.args.row_limit)
        # expectations: {"<dashboard uid>": {key: spec}} or, for every dashboard, {key: spec}
        expect = self.expect.get(dash.get("uid")) if isinstance(self.expect.get(dash.get("uid")), dict) else None
        per_dashboard = expect is not None
        expect = expect if per_dashboard else self.expect
        used = set()
        for t in targets:
            for key in (t.key, t.title if t.kind == "panel" else None):
                if key and isinstance(expect.get(key), dict):
                    check_expectation(t, expect[key])
                    used.add(key)
        if per_dashboard:
            for key in expect:
                if key not in used and not key.startswith("_"):
                    t_fail = f"expectation {key!r} matches no panel of this dashboard"
                    report.setdefault("errors", []).append(t_fail)
                    report["failures"] += 1
        for t in targets:
            entry = {"kind": t.kind, "title": t.title, "refId": t.ref_id, "format": t.fmt,
                     "status": "skip" if t.skipped else ("FAIL" if t.failures else "ok")}  # fmt: skip
            if t.skipped:
                entry["reason"] = t.skipped
            else:
                entry.update({"interval": t.interval, "interval_ms": t.interval_ms, "failures": t.failures, "notes": t.notes})
                if t.result is not None:
                    entry["columns"] = [f"{n}:{ty}" for n, ty in t.result.columns]
                    entry["rows"] = len(t.result.rows)
                    entry["first_row"] = t.result.rows[0] if t.result.rows else None  # for tests comparing values
                    entry["ms"] = t.result.ms
                entry["sql"] = t.sql
            if entry["status"] == "FAIL":
                report["failures"] += 1
            report["targets"].append(entry)
        report["seconds"] = round(time.time() - t0, 2)
        return report


def print_report(rep: dict, show_sql: bool) -> None:
    rng = f"{rep['from']} .. {rep['to']}"
    print(f"== {rep['dashboard']} ({rep.get('title')}, uid {rep.get('uid')}) {rng}")
    for v in rep["variables"]:
        status = "FAIL" if "error" in v else "ok"
        extra = f"  error: {v['error']}" if "error" in v else ""
        print(f"  var  {status:4} ${v['name']} ({v['type']}): {v.get('options', 0)} option(s), value {v.get('value')!r}{extra}")
        for n in v.get("notes", []):
            print(f"             note: {n}")
    for t in rep["targets"]:
        label = f"{t['title']} [{t['refId']}]" if t["kind"] == "panel" else f"annotation {t['title']}"
        if t["status"] == "skip":
            print(f"  skip      {label}: {t['reason']}")
            continue
        cols = ", ".join(t.get("columns", []))
        ms = f", {t['ms']:.0f} ms" if t.get("ms") is not None else ""
        print(f"  {t['status']:4}      {label} ({t.get('format') or '-'}, interval {t.get('interval')}{ms}): {t.get('rows', '-')} row(s); {cols}")
        for f in t.get("failures", []):
            print(f"            FAIL: {f}")
        for n in t.get("notes", []):
            print(f"            note: {n}")
        if "sql" in t and (show_sql or t["failures"]):
            print("            sql: " + t["sql"].replace("\n", "\n                 "))
    for n in rep.get("notes", []):
        print(f"  note: {n}")
    for n in rep.get("errors", []):
        print(f"  FAIL: {n}")
    ok = sum(1 for t in rep["targets"] if t["status"] == "ok")
    skipped = sum(1 for t in rep["targets"] if t["status"] == "skip")
    print(f"  -> {ok} ok, {rep['failures']} failed, {skipped} skipped ({rep['seconds']} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dashboards", nargs="+", metavar="DASHBOARD.json")
    ap.add_argument("--db", required=True, help="PostgreSQL URL for psql")
    ap.add_argument("--from", dest="from_", help="range start (default: the dashboard's time.from)")
    ap.add_argument("--to", help="range end (default: the dashboard's time.to)")
    ap.add_argument("--now", help="fix 'now' (ISO time or epoch ms)")
    ap.add_argument("--var", action="append", help="name=value (repeat for several values; $__all for All)")
    ap.add_argument("--expect", help="expectations JSON: {title: {columns: [...], min_rows: N}}")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--show-sql", action="store_true", help="print every expanded query")
    ap.add_argument("--max-data-points", type=int, default=1000, help="maxDataPoints when a panel has none (Grafana: the panel width in px)")
    ap.add_argument("--ds-interval", default="1m", help="the datasource's timeInterval (SqlDatasource default 1m)")
    ap.add_argument("--setup", action="append", help="SQL file run first in the same (rolled back) transaction")
    ap.add_argument("--legacy", action="store_true", help="older Grafana: SqlDatasource quoting, no comment stripping")
    ap.add_argument("--timescaledb", action="store_true", help="datasource with TimescaleDB on ($__timeGroup → time_bucket)")
    ap.add_argument("--row-limit", type=int, default=1000000)
    ap.add_argument("--statement-timeout", type=int, default=30, help="seconds per statement")
    args = ap.parse_args(argv)
    args.setup = [os.path.abspath(s) for s in (args.setup or [])]
    checker = Checker(args)
    reports, failed = [], 0
    for path in args.dashboards:
        try:
            rep = checker.check(path)
        except (RuntimeError, OSError, json.JSONDecodeError, ValueError) as e:
            rep = {"dashboard": path, "error": str(e), "failures": 1, "variables": [], "targets": []}
        reports.append(rep)
        failed += rep["failures"]
        if not args.json:
            if "error" in rep:
                print(f"== {path}\n  FAIL: {rep['error']}")
            else:
                print_report(rep, args.show_sql)
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

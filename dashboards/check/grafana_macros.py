"""What Grafana does to a PostgreSQL panel's ``rawSql`` before it reaches the
database, ported to Python so dashboards can be checked without a Grafana
server.

Two halves, in the order Grafana applies them:

1. **Frontend** (the dashboard in the browser): template variables and the
   built-in ``$__from``/``$__to``/``$__interval``/``$__interval_ms`` are
   replaced by ``templateSrv.replace(rawSql, scopedVars,
   PostgresDatasource.interpolateVariable)``. Sources:
   grafana/scenes ``packages/scenes/src/variables/interpolation/sceneInterpolator.ts``
   (``sceneInterpolator``, ``formatValue``), ``…/formatRegistry.ts`` (formats),
   ``…/variables/constants.ts`` (``VARIABLE_REGEX``), ``…/macros/timeMacros.ts``
   (``TimeFromAndToMacro``), ``SceneQueryRunner`` (``__interval`` scoped vars),
   grafana/grafana ``public/app/plugins/datasource/grafana-postgresql-datasource/datasource.ts``
   (``interpolateVariable``), ``packages/grafana-sql/src/datasource/SqlDatasource.ts``
   (older ``interpolateVariable``, ``metricFindQuery``) and
   ``packages/grafana-data/src/datetime/rangeutil.ts`` (``calculateInterval``,
   ``roundInterval``, ``secondsToHms``, ``describeInterval``).

2. **Backend** (the PostgreSQL datasource plugin, Go): comment stripping,
   global substitutions and the macro engine. Sources: grafana/grafana
   ``pkg/tsdb/grafana-postgresql-datasource/macros.go`` (commit 446b3e1f:
   ``stripSQLComments``, ``postgresMacroEngine.Interpolate``,
   ``evaluateMacro``), ``pkg/tsdb/sqlmacro/sqlmacro.go`` (``Expr``,
   ``ContainsMacro``), ``…/sqleng/sql_engine.go`` (``Interpolate``,
   ``SetupFillmode``, ``epochPrecisionToMS``,
   ``ReplaceAllStringSubmatchFunc``) and grafana/grafana-plugin-sdk-go
   ``backend/gtime/gtime.go`` (``ParseInterval``, ``FormatInterval``), plus
   the Go standard library behaviour they rely on (``time.ParseDuration``,
   ``Duration.Seconds``, ``time.RFC3339Nano``, ``fmt`` ``%v`` of a float64,
   ``strconv.FormatFloat(v, 'e', -1, 64)``, ``strconv.ParseFloat``).

This is an independent re-implementation written from reading those
functions; each Python function names the one it mirrors. Times are integers:
epoch milliseconds on the frontend side, epoch nanoseconds on the Go side.
Durations on the Go side are integer nanoseconds (Go ``time.Duration``).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Optional, Union

NS = 1
US = 1_000
MS = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_MAX_I64 = (1 << 63) - 1

# ---------------------------------------------------------------------------
# Go standard library behaviour
# ---------------------------------------------------------------------------


class GoError(ValueError):
    """An error a Go function would return (message as Go would print it)."""


def _go_quote(s: str) -> str:
    # strconv.Quote for the printable ASCII strings that appear in practice.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_UNIT_NS = {
    "ns": NS,
    "us": US,
    "\u00b5s": US,  # U+00B5 micro sign
    "\u03bcs": US,  # U+03BC Greek mu
    "ms": MS,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}


def _leading_int(s: str) -> tuple[int, str]:
    """Go time.leadingInt: digits → uint64, error on overflow."""
    x = 0
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        if x > _MAX_I64 // 10:
            raise OverflowError
        x = x * 10 + (ord(s[i]) - 48)
        if x > 1 << 63:
            raise OverflowError
        i += 1
    return x, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    """Go time.leadingFraction: digits after '.', keeps consuming on overflow."""
    x = 0
    scale = 1.0
    overflow = False
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            if x > _MAX_I64 // 10:
                overflow = True
            else:
                y = x * 10 + (ord(s[i]) - 48)
                if y > 1 << 63:
                    overflow = True
                else:
                    x = y
                    scale *= 10
        i += 1
    return x, scale, s[i:]


def go_parse_duration(orig: str) -> int:
    """Go ``time.ParseDuration``: ``[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+`` → ns."""
    s = orig
    d = 0
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise GoError("time: invalid duration " + _go_quote(orig))
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise GoError("time: invalid duration " + _go_quote(orig))
        pl = len(s)
        try:
            v, s = _leading_int(s)
        except OverflowError:
            raise GoError("time: invalid duration " + _go_quote(orig)) from None
        pre = pl != len(s)
        post = False
        f, scale = 0, 1.0
        if s and s[0] == ".":
            s = s[1:]
            pl = len(s)
            f, scale, s = _leading_fraction(s)
            post = pl != len(s)
        if not pre and not post:
            raise GoError("time: invalid duration " + _go_quote(orig))
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise GoError("time: missing unit in duration " + _go_quote(orig))
        u, s = s[:i], s[i:]
        if u not in _UNIT_NS:
            raise GoError("time: unknown unit " + _go_quote(u) + " in duration " + _go_quote(orig))
        unit = _UNIT_NS[u]
        if v > (1 << 63) // unit:
            raise GoError("time: invalid duration " + _go_quote(orig))
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > 1 << 63:
                raise GoError("time: invalid duration " + _go_quote(orig))
        d += v
        if d > 1 << 63:
            raise GoError("time: invalid duration " + _go_quote(orig))
    if neg:
        return -d
    if d > _MAX_I64:
        raise GoError("time: invalid duration " + _go_quote(orig))
    return d


def go_duration_seconds(d: int) -> float:
    """Go ``Duration.Seconds``: whole seconds + remainder/1e9 (truncating division)."""
    sec = abs(d) // SECOND
    nsec = abs(d) % SECOND
    if d < 0:
        sec, nsec = -sec, -nsec
    return float(sec) + float(nsec) / 1e9


def _shortest_digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of |f| and the decimal point position
    (value = 0.DIGITS × 10^dp), as Go's strconv computes for precision -1."""
    t = Decimal(repr(abs(f))).as_tuple()
    digits = "".join(map(str, t.digits)).lstrip("0")
    if not digits:
        return "0", 1
    exp = int(t.exponent)
    # value = int(all digits) × 10^exp; leading zeros were stripped
    dp = len(digits) + exp
    digits = digits.rstrip("0")
    return digits, dp


def _fmt_e(neg: bool, digits: str, dp: int) -> str:
    exp = dp - 1 if digits != "0" else 0
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if exp < 0 else "+"
    e = abs(exp)
    return ("-" if neg else "") + mant + "e" + sign + (f"{e:02d}")


def go_format_float_e(f: float) -> str:
    """Go ``strconv.FormatFloat(f, 'e', -1, 64)``."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    digits, dp = _shortest_digits(f)
    return _fmt_e(math.copysign(1.0, f) < 0, digits, dp)


def go_format_v(f: float) -> str:
    """Go ``fmt.Sprintf("%v", f)`` for a float64: ``%g`` with the shortest
    round-trip digits; strconv uses precision 6 to choose the form when
    printing the shortest digits, so the exponent form starts at 1e+06
    (``2.592e+06``) and below 1e-04."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    neg = math.copysign(1.0, f) < 0
    if f == 0:
        return "-0" if neg else "0"
    digits, dp = _shortest_digits(f)
    exp = dp - 1
    if exp < -4 or exp >= 6:
        return _fmt_e(neg, digits, dp)
    if dp <= 0:
        body = "0." + "0" * (-dp) + digits
    elif dp >= len(digits):
        body = digits + "0" * (dp - len(digits))
    else:
        body = digits[:dp] + "." + digits[dp:]
    return ("-" if neg else "") + body


def go_format_fixed3(f: float) -> str:
    """Go ``fmt.Sprintf("%.3f", f)`` (correctly rounded, like Python)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return "%.3f" % f


def go_parse_float(s: str) -> float:
    """Go ``strconv.ParseFloat(s, 64)`` for the forms a fill value takes:
    decimal (with exponent), ``Inf``/``Infinity``/``NaN`` (any case, signed),
    hexadecimal (``0x1p-2``). Underscores are only legal with a base prefix
    in Go, so ``1_0`` is refused (Python's ``float`` would accept it)."""
    err = GoError(f"strconv.ParseFloat: parsing {_go_quote(s)}: invalid syntax")
    body = s[1:] if s[:1] in "+-" else s
    low = body.lower()
    if low in ("inf", "infinity"):
        return float("-inf") if s.startswith("-") else float("inf")
    if low == "nan" and s == body:
        return float("nan")
    if low.startswith("0x"):
        try:
            v = float.fromhex(body.replace("_", ""))
        except ValueError:
            raise err from None
        return -v if s.startswith("-") else v
    if "_" in s or not body or not re.fullmatch(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", body):
        raise err
    v = float(body)
    if math.isinf(v):
        raise GoError(f"strconv.ParseFloat: parsing {_go_quote(s)}: value out of range")
    return -v if s.startswith("-") else v


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def ns_to_datetime(ns: int) -> tuple[_dt.datetime, int]:
    """(UTC datetime at whole seconds, nanoseconds within the second)."""
    sec, frac = divmod(ns, SECOND)
    return _EPOCH + _dt.timedelta(seconds=sec), frac


def go_rfc3339nano(ns: int) -> str:
    """Go ``t.UTC().Format(time.RFC3339Nano)``: fraction without trailing
    zeros (none at all when zero) and ``Z``."""
    d, frac = ns_to_datetime(ns)
    s = "%04d-%02d-%02dT%02d:%02d:%02d" % (d.year, d.month, d.day, d.hour, d.minute, d.second)
    if frac:
        s += "." + ("%09d" % frac).rstrip("0")
    return s + "Z"


def go_unix(ns: int) -> int:
    """Go ``t.Unix()`` (floor to whole seconds)."""
    return ns // SECOND


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 31 if m in (1, 3, 5, 7, 8, 10, 12) else 30


def go_add_date(ns: int, years: int, months: int, days: int) -> int:
    """Go ``t.AddDate(y, m, d)`` in UTC: add fields, then normalise (Jan 31 +
    1 month = Mar 3 or 2)."""
    d, frac = ns_to_datetime(ns)
    y = d.year + years
    m0 = d.month - 1 + months
    y += m0 // 12
    m = m0 % 12 + 1
    base = _dt.datetime(y, m, 1, d.hour, d.minute, d.second, tzinfo=_dt.timezone.utc)
    out = base + _dt.timedelta(days=d.day - 1 + days)
    return (out - _EPOCH) // _dt.timedelta(microseconds=1) * 1000 + frac


# ---------------------------------------------------------------------------
# grafana-plugin-sdk-go backend/gtime
# ---------------------------------------------------------------------------

_DATE_UNIT = re.compile(r"^([0-9]+)([dwMy])$")


def gtime_parse_interval(inp: str, now_ns: Optional[int] = None) -> int:
    """gtime.ParseInterval: ``N[dwMy]`` by the calendar from now (UTC), else
    ``time.ParseDuration``. ``now_ns`` makes months and years deterministic."""
    m = _DATE_UNIT.match(inp)
    if not m:
        return go_parse_duration(inp)
    num = int(m.group(1))
    if num > _MAX_I64:
        raise GoError(f'strconv.Atoi: parsing "{m.group(1)}": value out of range')
    if now_ns is None:
        import time

        now_ns = time.time_ns()
    unit = m.group(2)
    if unit == "d":
        return go_add_date(now_ns, 0, 0, num) - now_ns
    if unit == "w":
        return go_add_date(now_ns, 0, 0, num * 7) - now_ns
    if unit == "M":
        return go_add_date(now_ns, 0, num, 0) - now_ns
    return go_add_date(now_ns, num, 0, 0) - now_ns


def gtime_format_interval(inter: int) -> str:
    """gtime.FormatInterval: the largest whole unit (y d h m s ms), ``1ms``
    below a millisecond."""
    year = HOUR * 24 * 365
    day = HOUR * 24
    for size, suffix in ((year, "y"), (day, "d"), (HOUR, "h"), (MINUTE, "m"), (SECOND, "s"), (MS, "ms")):
        if inter >= size:
            return f"{inter // size}{suffix}"
    return "1ms"


# ---------------------------------------------------------------------------
# Backend: comment stripping, sqleng.Interpolate, the macro engine
# ---------------------------------------------------------------------------

#: sqlmacro.Expr — a complete macro call ``$name(args)``; args cannot hold ``)``.
MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
# Go's RE2 \s is [\t\n\f\r ] and its $ (no multiline) is the end of the text.
_GO_SPACE = r"[\t\n\f\r ]"
_MACRO_TOKEN_RE = re.compile(r"\$(__[a-zA-Z0-9_]*|[_a-zA-Z0-9]+" + _GO_SPACE + r"*\()")
_SQLCOMMENTER_RE = re.compile(
    r"^/\*{s}*[a-zA-Z0-9%_.-]+='[^'*]*'({s}*,{s}*[a-zA-Z0-9%_.-]+='[^'*]*')*{s}*\*/\Z".format(s=_GO_SPACE)
)


def contains_macro(s: str) -> bool:
    """sqlmacro.ContainsMacro: any ``$__…`` token or ``$name(`` call start."""
    return _MACRO_TOKEN_RE.search(s) is not None


def _is_dollar_tag_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "_"


def strip_sql_comments(sql: str) -> str:
    """macros.go ``stripSQLComments`` (446b3e1f): drops ``--`` and ``/* */``
    comments outside ``'…'``, ``"…"`` and ``$tag$…$tag$``; keeps a closed
    SQLCommenter tag (``/*k='v',…*/``) unless it holds a macro token; an
    unclosed block comment swallows the rest."""
    out: list[str] = []
    i, n = 0, len(sql)

    def consume_quoted(i: int, q: str) -> int:  # consumeQuoted
        out.append(q)
        i += 1
        while i < n:
            if sql[i] == q:
                out.append(q)
                i += 1
                if i < n and sql[i] == q:
                    out.append(q)
                    i += 1
                else:
                    break
            else:
                out.append(sql[i])
                i += 1
        return i

    def consume_dollar(i: int, closing: str) -> int:  # consumeDollarQuoted
        out.append(closing)
        i += len(closing)
        while i < n:
            if sql.startswith(closing, i):
                out.append(closing)
                i += len(closing)
                break
            out.append(sql[i])
            i += 1
        return i

    while i < n:
        c = sql[i]
        if c == "$":
            j = i + 1
            if j < n and sql[j] == "$":
                i = consume_dollar(i, "$$")
            elif j < n and _is_dollar_tag_char(sql[j]) and not ("0" <= sql[j] <= "9"):
                k = j + 1
                while k < n and _is_dollar_tag_char(sql[k]):
                    k += 1
                if k < n and sql[k] == "$":
                    i = consume_dollar(i, sql[i : k + 1])
                else:
                    out.append(c)
                    i += 1
            else:
                out.append(c)
                i += 1
        elif c == "'":
            i = consume_quoted(i, "'")
        elif c == '"':
            i = consume_quoted(i, '"')
        elif c == "/" and i + 1 < n and sql[i + 1] == "*":
            start = i
            i += 2
            closed = False
            while i + 1 < n:
                if sql[i] == "*" and sql[i + 1] == "/":
                    i += 2
                    closed = True
                    break
                i += 1
            # Unclosed: Go leaves i at n-1 (or n), so the last byte is then
            # copied by the next round of the outer loop; kept as is.
            if closed:
                comment = sql[start:i]
                if _SQLCOMMENTER_RE.match(comment) and not contains_macro(comment):
                    out.append(comment)
        elif c == "-" and i + 1 < n and sql[i + 1] == "-":
            while i < n and sql[i] != "\n":
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def sqleng_interpolate(sql: str, interval_ns: int, from_ns: int, to_ns: int) -> str:
    """sqleng ``Interpolate``: global plain-text substitutions, in this order:
    ``$__interval_ms``, ``$__interval``, ``$__unixEpochFrom()``,
    ``$__unixEpochTo()`` (seconds)."""
    ms = abs(interval_ns) // MS * (1 if interval_ns >= 0 else -1)  # Duration.Milliseconds truncates
    sql = sql.replace("$__interval_ms", str(ms))
    sql = sql.replace("$__interval", gtime_format_interval(interval_ns))
    sql = sql.replace("$__unixEpochFrom()", str(go_unix(from_ns)))
    sql = sql.replace("$__unixEpochTo()", str(go_unix(to_ns)))
    return sql


class MacroError(ValueError):
    """evaluateMacro's error; Grafana reports ``interpolation failed: <msg>``."""


@dataclass
class FillConfig:
    """What sqleng.SetupFillmode writes into the query model."""

    interval_seconds: float
    mode: str  # null | previous | value
    value: Optional[float] = None


@dataclass
class BackendQuery:
    """The parts of backend.DataQuery the macro engine reads."""

    from_ns: int
    to_ns: int
    interval_ns: int
    fill: Optional[FillConfig] = None
    now_ns: Optional[int] = None  # for gtime M/y intervals


def setup_fillmode(query: BackendQuery, interval_ns: int, fillmode: str) -> None:
    """sqleng.SetupFillmode: ``NULL`` | ``previous`` | a float."""
    secs = go_duration_seconds(interval_ns)
    if fillmode == "NULL":
        query.fill = FillConfig(secs, "null")
    elif fillmode == "previous":
        query.fill = FillConfig(secs, "previous")
    else:
        try:
            v = go_parse_float(fillmode)
        except GoError:
            raise MacroError(f"error parsing fill value {fillmode}") from None
        query.fill = FillConfig(secs, "value", v)


def evaluate_macro(
    query: BackendQuery, name: str, args: list[str], timescaledb: bool = False, legacy: bool = False
) -> str:
    """postgresMacroEngine.evaluateMacro (446b3e1f; ``legacy``: the older
    version without the "interval must be positive" check)."""
    tr_from, tr_to = query.from_ns, query.to_ns
    if name == "__time":
        if len(args) == 0:
            raise MacroError(f"missing time column argument for macro {name}")
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        if len(args) == 0:
            raise MacroError(f"missing time column argument for macro {name}")
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        if len(args) == 0:
            raise MacroError(f"missing time column argument for macro {name}")
        return f"{args[0]} BETWEEN '{go_rfc3339nano(tr_from)}' AND '{go_rfc3339nano(tr_to)}'"
    if name == "__timeFrom":
        return f"'{go_rfc3339nano(tr_from)}'"
    if name == "__timeTo":
        return f"'{go_rfc3339nano(tr_to)}'"
    if name in ("__timeGroup", "__unixEpochGroup"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        try:
            interval = gtime_parse_interval(args[1].strip("'"), query.now_ns)
        except GoError:
            raise MacroError(f"error parsing interval {args[1]}") from None
        if interval <= 0 and not legacy:
            raise MacroError(f"interval must be positive, got {args[1]}")
        if len(args) == 3:
            setup_fillmode(query, interval, args[2])
        secs = go_duration_seconds(interval)
        if name == "__unixEpochGroup":
            return f"floor(({args[0]})/{go_format_v(secs)})*{go_format_v(secs)}"
        if timescaledb:
            return f"time_bucket('{go_format_fixed3(secs)}s',{args[0]})"
        return f"floor(extract(epoch from {args[0]})/{go_format_v(secs)})*{go_format_v(secs)}"
    if name == "__timeGroupAlias":
        return evaluate_macro(query, "__timeGroup", args, timescaledb, legacy) + ' AS "time"'
    if name == "__unixEpochGroupAlias":
        return evaluate_macro(query, "__unixEpochGroup", args, timescaledb, legacy) + ' AS "time"'
    if name == "__unixEpochFilter":
        if len(args) == 0:
            raise MacroError(f"missing time column argument for macro {name}")
        return f"{args[0]} >= {go_unix(tr_from)} AND {args[0]} <= {go_unix(tr_to)}"
    if name == "__unixEpochNanoFilter":
        if len(args) == 0:
            raise MacroError(f"missing time column argument for macro {name}")
        return f"{args[0]} >= {tr_from} AND {args[0]} <= {tr_to}"
    if name == "__unixEpochNanoFrom":
        return str(tr_from)
    if name == "__unixEpochNanoTo":
        return str(tr_to)
    raise MacroError(f"unknown macro {_go_quote(name)}")


def postgres_interpolate(query: BackendQuery, sql: str, timescaledb: bool = False, legacy: bool = False) -> str:
    """postgresMacroEngine.Interpolate (446b3e1f): strip comments, then
    sqleng.Interpolate, then expand every ``$name(args)`` left to right.

    ``legacy=True`` follows older builds (e.g. 0577088): sqleng.Interpolate
    runs first in sql_engine.go, no comment stripping, no positivity check.

    The pre-5.3 quirk: a ``$__timeGroup(...)`` whose *first occurrence* in
    the SQL is directly followed by ``,`` becomes ``$__timeGroupAlias``.
    Args are split on ``,`` and trimmed of spaces only. The first macro error
    wins and the whole interpolation fails (Grafana: "interpolation failed").
    """
    if not legacy:
        sql = strip_sql_comments(sql)
    sql = sqleng_interpolate(sql, query.interval_ns, query.from_ns, query.to_ns)
    first_error: list[MacroError] = []

    def repl(groups: list[str]) -> str:
        name = groups[1]
        if name == "__timeGroup":
            idx = sql.find(groups[0])
            if idx >= 0:
                idx += len(groups[0])
                if len(sql) > idx and sql[idx] == ",":
                    name = "__timeGroupAlias"
        args = [a.strip(" ") for a in groups[2].split(",")]
        try:
            return evaluate_macro(query, name, args, timescaledb, legacy)
        except MacroError as e:
            if not first_error:
                first_error.append(e)
                return "macro_error()"
            return ""  # Go returns the empty result of a later failing macro

    out = replace_all_string_submatch_func(MACRO_RE, sql, repl)
    if first_error:
        raise first_error[0]
    return out


def replace_all_string_submatch_func(rx: re.Pattern, s: str, repl: Callable[[list[str]], str]) -> str:
    """SQLMacroEngineBase.ReplaceAllStringSubmatchFunc: all matches are found
    on the input, then replaced left to right with ``repl(groups)``."""
    result = []
    last = 0
    for m in rx.finditer(s):
        groups = [m.group(0)] + [g if g is not None else "" for g in m.groups()]
        result.append(s[last : m.start()] + repl(groups))
        last = m.end()
    return "".join(result) + s[last:]


def epoch_precision_to_ms(value: float) -> float:
    """sqleng epochPrecisionToMS: by FormatFloat(v,'e',-1,64): ``e+09`` →
    seconds ×1000, ``e+18`` → ns ÷1e6, anything else taken as ms."""
    s = go_format_float_e(value)
    if s.endswith("e+09"):
        return value * 1e3
    if s.endswith("e+18"):
        return value / 1e6
    return value


def epoch_class(value: float) -> str:
    """How Grafana reads a numeric time value: ``s``, ``ns``, ``ms`` (the
    plausible e+12 epoch-ms decade) or ``ms?`` (read as ms, but the magnitude
    says it is something else, e.g. e+15 = µs, e+10/e+11 = s×10 or ms before
    2001)."""
    s = go_format_float_e(value)
    if s.endswith("e+09"):
        return "s"
    if s.endswith("e+18"):
        return "ns"
    if s.endswith("e+12"):
        return "ms"
    return "ms?"


def backend_expand(
    sql: str,
    from_ms: int,
    to_ms: int,
    interval_ms: int,
    timescaledb: bool = False,
    legacy: bool = False,
    now_ms: Optional[int] = None,
) -> tuple[str, BackendQuery]:
    """The whole backend step for one target: what sql_engine.go executes."""
    q = BackendQuery(from_ms * MS, to_ms * MS, interval_ms * MS, now_ns=None if now_ms is None else now_ms * MS)
    return postgres_interpolate(q, sql, timescaledb=timescaledb, legacy=legacy), q


# ---------------------------------------------------------------------------
# Frontend: rangeutil
# ---------------------------------------------------------------------------

_INTERVALS_IN_SECONDS = {"y": 31536000, "M": 2592000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_INTERVAL_RE = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])", re.ASCII)


def js_number(s: str) -> float:
    """JavaScript ``Number(str)`` for the strings that reach it here."""
    t = s.strip(" \t\n\r\v\f\u00a0\ufeff")
    if t == "":
        return 0.0
    m = re.fullmatch(r"0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)", t)
    if m:
        base = 16 if m.group(1) else 8 if m.group(2) else 2
        return float(int(m.group(1) or m.group(2) or m.group(3), base))
    if re.fullmatch(r"[+-]?Infinity", t):
        return float("-inf") if t.startswith("-") else float("inf")
    if re.fullmatch(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", t):
        return float(t)
    return float("nan")


def js_parse_int(s: str) -> float:
    """JavaScript ``parseInt(str, 10)``."""
    m = re.match(r"\s*([+-]?\d+)", s)
    return float(int(m.group(1))) if m else float("nan")


def js_number_to_string(x: Union[int, float]) -> str:
    """JavaScript ``String(number)``."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    neg = x < 0
    digits, dp = _shortest_digits(x)
    k = len(digits)
    n = dp
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return ("-" if neg else "") + body


def describe_interval(s: str) -> tuple[float, str, float]:
    """rangeutil.describeInterval → (seconds per unit, unit, count). A
    unit-less number counts seconds; ``count`` is ``parseInt`` (``1.5h`` → 1)."""
    if js_number(s) and not math.isnan(js_number(s)):
        return 1, "s", js_parse_int(s)
    m = _INTERVAL_RE.match(s)
    if not m:
        raise ValueError(
            'Invalid interval string, has to be either unit-less or end with one of the following units: "'
            + ", ".join(_INTERVALS_IN_SECONDS)
            + '"'
        )
    return _INTERVALS_IN_SECONDS[m.group(2)], m.group(2), js_parse_int(m.group(1))


def interval_to_ms(s: str) -> float:
    """rangeutil.intervalToMs."""
    sec, _, count = describe_interval(s)
    return sec * 1000 * count


_ROUND_TABLE = [
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500),
    (1500, 1000), (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000),
    (25000, 20000), (45000, 30000), (90000, 60000), (210000, 120000),
    (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
    (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
]  # fmt: skip


def round_interval(interval: float) -> int:
    """rangeutil.roundInterval: the nice interval (ms) for a raw one."""
    for below, nice in _ROUND_TABLE:
        if interval < below:
            return nice
    return 31536000000


def seconds_to_hms(seconds: float) -> str:
    """rangeutil.secondsToHms: the largest non-zero unit (y d h m s ms)."""
    num_years = math.floor(seconds / 31536000)
    if num_years:
        return f"{num_years}y"
    num_days = math.floor(math.fmod(seconds, 31536000) / 86400)
    if num_days:
        return f"{num_days}d"
    num_hours = math.floor(math.fmod(math.fmod(seconds, 31536000), 86400) / 3600)
    if num_hours:
        return f"{num_hours}h"
    num_minutes = math.floor(math.fmod(math.fmod(math.fmod(seconds, 31536000), 86400), 3600) / 60)
    if num_minutes:
        return f"{num_minutes}m"
    num_seconds = math.floor(math.fmod(math.fmod(math.fmod(math.fmod(seconds, 31536000), 86400), 3600), 60))
    if num_seconds:
        return f"{num_seconds}s"
    num_ms = math.floor(seconds * 1000.0)
    if num_ms:
        return f"{num_ms}ms"
    return "less than a millisecond"


def calculate_interval(from_ms: int, to_ms: int, resolution: float, low_limit: Optional[str] = None) -> tuple[Union[int, float], str]:
    """rangeutil.calculateInterval → (intervalMs, interval). ``resolution`` is
    the request's maxDataPoints; ``low_limit`` the panel's min interval, else
    the datasource's ``timeInterval`` (SqlDatasource: ``'1m'`` by default)."""
    low_ms: float = 1
    if low_limit:
        low_ms = interval_to_ms(low_limit)
    interval_ms: Union[int, float] = round_interval((to_ms - from_ms) / resolution)
    if low_ms > interval_ms:
        interval_ms = low_ms
    if isinstance(interval_ms, float) and interval_ms.is_integer():
        interval_ms = int(interval_ms)
    return interval_ms, seconds_to_hms(interval_ms / 1000)


# ---------------------------------------------------------------------------
# Frontend: template variables and formats
# ---------------------------------------------------------------------------

ALL_VALUE = "$__all"
ALL_TEXT = "All"

#: scenes VARIABLE_REGEX (JavaScript ``\w`` = ASCII word characters).
VARIABLE_RE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}",
    re.ASCII,
)

Value = Union[str, int, float, list]


@dataclass
class Variable:
    """A resolved dashboard variable (what scenes' MultiValueVariable or a
    macro returns from ``getValue``)."""

    name: str
    type: str = "custom"
    value: Value = ""
    text: Union[str, list] = ""
    multi: bool = False
    include_all: bool = False
    all_value: Optional[str] = None
    options: list = field(default_factory=list)  # [(text, value)]

    def get_value(self, field_path: Optional[str] = None) -> Union[Value, "_CustomAllValue"]:
        """MultiValueVariable.getValue: ``$__all`` → the custom allValue (as
        written), else every option's value; a numeric field path indexes an
        array value."""
        v = self.value
        if v == ALL_VALUE or (isinstance(v, list) and v and v[0] == ALL_VALUE):
            if self.all_value:
                return _CustomAllValue(self.all_value)
            v = [o[1] for o in self.options]
        if field_path is not None and isinstance(v, list):
            try:
                idx = int(field_path)
            except ValueError:
                return v
            if 0 <= idx < len(v):
                return v[idx]
        return v

    def get_value_text(self) -> str:
        v = self.value
        if v == ALL_VALUE or (isinstance(v, list) and v and v[0] == ALL_VALUE):
            return ALL_TEXT
        t = self.text
        if isinstance(t, list):
            return " + ".join(t)
        return str(t) if t != "" else (" + ".join(v) if isinstance(v, list) else str(v))


@dataclass
class _CustomAllValue:
    """scenes CustomAllValue: the allValue inserted as written (then
    interpolated again), ``All`` for the text format."""

    value: str

    def formatter(self, fmt: Any) -> str:
        if fmt == "text":
            return ALL_TEXT
        if fmt == "percentencode":
            return _percent_encode(self.value)
        return self.value


@dataclass
class TimeMacro:
    """``$__from`` / ``$__to``: epoch ms numbers (TimeFromAndToMacro)."""

    name: str
    ms: int
    type: str = "time_macro"
    multi: bool = False
    include_all: bool = False

    def get_value(self, field_path: Optional[str] = None) -> int:
        return self.ms

    def get_value_text(self) -> str:
        return ""


@dataclass
class ScopedVar:
    """A scoped variable (``__interval``, ``__interval_ms``, a repeat value)."""

    name: str
    value: Value
    text: str = ""
    type: str = "scoped"
    multi: bool = False
    include_all: bool = False

    def get_value(self, field_path: Optional[str] = None) -> Value:
        return self.value

    def get_value_text(self) -> str:
        return self.text or str(self.value)


def _js_str(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return js_number_to_string(v)
    if isinstance(v, list):
        return ",".join(_js_str(x) for x in v)
    return str(v)


def _percent_encode(v: Any) -> str:
    from urllib.parse import quote

    return quote(_js_str(v), safe="-_.~")


def _escape_regex(s: str) -> str:
    # @grafana/data escapeRegex: /[\\^$*+?.()|[\]{}\/]/g → '\\$&'
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", s)


def _lucene_escape(s: str) -> str:
    if not math.isnan(js_number(s)):
        return s
    return re.sub(r'([!*+\-=<>\s&|()\[\]{}^~?:\\/"])', r"\\\1", s)


def _iso_ms(ms: float) -> str:
    d, frac = ns_to_datetime(int(ms) * MS)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (d.year, d.month, d.day, d.hour, d.minute, d.second, frac // MS)


def _js_round(x: float) -> int:
    return math.floor(x + 0.5)


def _sqlstring_one(v: Any) -> str:
    return "'" + _js_str(v).replace("'", "''").replace('"', '\\"') + "'"


def format_registry(fmt: str, value: Value, args: list[str], variable: Any) -> str:
    """scenes formatRegistry formatters (the SQL-relevant ones and a few more)."""
    is_list = isinstance(value, list)
    if fmt == "raw":
        return _js_str(value)
    if fmt == "csv":
        return ",".join(_js_str(v) for v in value) if is_list else _js_str(value)
    if fmt == "sqlstring":
        # sqlStringFormatter: ' doubled, " backslash-escaped, each quoted, comma-joined
        return ",".join(_sqlstring_one(v) for v in value) if is_list else _sqlstring_one(value)
    if fmt == "singlequote":
        one = lambda v: "'" + _js_str(v).replace("'", "\\'") + "'"  # noqa: E731
        return ",".join(one(v) for v in value) if is_list else one(value)
    if fmt == "doublequote":
        one = lambda v: '"' + _js_str(v).replace('"', '\\"') + '"'  # noqa: E731
        return ",".join(one(v) for v in value) if is_list else one(value)
    if fmt == "pipe":
        return "|".join(_js_str(v) for v in value) if is_list else _js_str(value)
    if fmt == "join":
        sep = args[0] if args else ","
        return sep.join(_js_str(v) for v in value) if is_list else _js_str(value)
    if fmt == "json":
        import json

        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if fmt == "regex":
        if isinstance(value, str):
            return _escape_regex(value)
        if is_list:
            esc = [_escape_regex(_js_str(v)) for v in value]
            return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"
        return _escape_regex(_js_str(value))
    if fmt == "distributed":
        if is_list:
            return ",".join(_js_str(v) if i == 0 else f"{variable.name}={_js_str(v)}" for i, v in enumerate(value))
        return _js_str(value)
    if fmt == "lucene":
        if isinstance(value, str):
            return _lucene_escape(value)
        if is_list:
            if not value:
                return "__empty__"
            return "(" + " OR ".join('"' + _lucene_escape(_js_str(v)) + '"' for v in value) + ")"
        return _lucene_escape(_js_str(value))
    if fmt == "percentencode":
        return _percent_encode("{" + ",".join(_js_str(v) for v in value) + "}" if is_list else value)
    if fmt == "queryparam":
        vals = value if is_list else [value]
        return "&".join(f"var-{variable.name}={_percent_encode(v)}" for v in vals)
    if fmt == "text":
        return variable.get_value_text() if hasattr(variable, "get_value_text") else _js_str(value)
    if fmt == "date":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            nr = float(value)
        elif isinstance(value, str):
            nr = js_parse_int(value)
        else:
            nr = float("nan")
        if math.isnan(nr):
            return "NaN"
        arg = args[0] if args else "iso"
        if arg == "ms":
            return _js_str(value)
        if arg == "seconds":
            return str(_js_round(nr / 1000))
        if arg == "iso":
            return _iso_ms(nr)
        raise ValueError(f"date format {':'.join(args)!r} (moment.js pattern) is not supported by this checker")
    if fmt == "glob":
        if is_list and len(value) > 1:
            return "{" + ",".join(_js_str(v) for v in value) + "}"
        return _js_str(value)
    raise KeyError(fmt)


InterpolateFn = Callable[[Value, Any], Any]


def postgres_interpolate_variable(value: Value, variable: Any) -> Any:
    """PostgresDatasource.interpolateVariable (newest): a string has ``'``
    doubled and **no** quotes added; a list is each ``quoteLiteral``-ed and
    comma-joined; a number stays a number."""
    if isinstance(value, str):
        return value.replace("'", "''")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, list):
        return ",".join("'" + _js_str(v).replace("'", "''") + "'" for v in value)
    return value


def sql_legacy_interpolate_variable(value: Value, variable: Any) -> Any:
    """SqlDatasource.interpolateVariable (older builds): as above, but a plain
    string of a multi/includeAll variable is quoted too."""
    if isinstance(value, str) and (getattr(variable, "multi", False) or getattr(variable, "include_all", False)):
        return "'" + value.replace("'", "''") + "'"
    return postgres_interpolate_variable(value, variable)


def _format_value(variable: Any, value: Any, fmt: Union[str, InterpolateFn, None], variables, scoped, interp_fn) -> str:
    """sceneInterpolator ``formatValue``."""
    if value is None:
        return ""
    if isinstance(value, _CustomAllValue):
        return scene_interpolate(value.formatter(fmt), variables, scoped, interp_fn)
    if callable(fmt):
        return _js_str(fmt(value, variable))
    args: list[str] = []
    if not fmt:
        fmt = "glob"
    else:
        parts = fmt.split(":")
        if len(parts) > 1:
            fmt, args = parts[0], parts[1:]
    try:
        return format_registry(fmt, value, args, variable)
    except KeyError:
        return format_registry("glob", value, args, variable)


def scene_interpolate(
    target: str,
    variables: dict,
    scoped: Optional[dict] = None,
    fmt: Union[str, InterpolateFn, None] = None,
    unknown: Optional[list] = None,
) -> str:
    """sceneInterpolator: replace every ``VARIABLE_REGEX`` match. Lookup
    order: scoped vars, dashboard variables, macros (``__from``/``__to`` are
    passed as scoped entries here). An explicit ``:format`` beats ``fmt``;
    unknown names (``$__timeFilter``, ``$__unixEpochFrom``…) stay as written."""
    if not target:
        return target or ""
    scoped = scoped or {}

    def repl(m: re.Match) -> str:
        var1, var2, fmt2, var3, field_path, fmt3 = m.groups()
        name = var1 or var2 or var3
        f = fmt2 or fmt3 or fmt
        variable = scoped.get(name) or variables.get(name)
        if variable is None:
            if unknown is not None:
                unknown.append(name)
            return m.group(0)
        return _format_value(variable, variable.get_value(field_path), f, variables, scoped, fmt)

    return VARIABLE_RE.sub(repl, target)


def frontend_scoped_vars(from_ms: int, to_ms: int, interval_ms: Union[int, float], interval: str) -> dict:
    """What a panel query request carries: ``__interval``/``__interval_ms``
    (SceneQueryRunner) and the ``__from``/``__to`` macros (epoch ms)."""
    return {
        "__interval": ScopedVar("__interval", interval, interval),
        "__interval_ms": ScopedVar("__interval_ms", interval_ms, js_number_to_string(interval_ms)),
        "__from": TimeMacro("__from", from_ms),
        "__to": TimeMacro("__to", to_ms),
    }


def frontend_expand(
    raw_sql: str,
    variables: dict,
    from_ms: int,
    to_ms: int,
    interval_ms: Union[int, float],
    interval: str,
    legacy: bool = False,
    unknown: Optional[list] = None,
    extra_scoped: Optional[dict] = None,
) -> str:
    """``applyTemplateVariables``: templateSrv.replace(rawSql, scopedVars,
    interpolateVariable)."""
    scoped = frontend_scoped_vars(from_ms, to_ms, interval_ms, interval)
    if extra_scoped:
        scoped.update(extra_scoped)
    fn = sql_legacy_interpolate_variable if legacy else postgres_interpolate_variable
    return scene_interpolate(raw_sql, variables, scoped, fn, unknown)


def expand(
    raw_sql: str,
    variables: dict,
    from_ms: int,
    to_ms: int,
    interval_ms: Union[int, float],
    interval: str,
    legacy: bool = False,
    timescaledb: bool = False,
    now_ms: Optional[int] = None,
    unknown: Optional[list] = None,
) -> tuple[str, BackendQuery]:
    """Frontend then backend: the SQL PostgreSQL receives for a panel target."""
    sql = frontend_expand(raw_sql, variables, from_ms, to_ms, interval_ms, interval, legacy, unknown)
    return backend_expand(sql, from_ms, to_ms, int(interval_ms), timescaledb, legacy, now_ms)

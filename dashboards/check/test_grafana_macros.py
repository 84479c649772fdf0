"""Tests for grafana_macros.py.

The backend expectations are those of grafana/grafana
``pkg/tsdb/grafana-postgresql-datasource/macros_test.go`` (commit 446b3e1f);
each test names the ``t.Run`` case it reproduces. Frontend expectations follow
grafana/scenes ``formatRegistry.ts`` / ``sceneInterpolator.ts``, the
PostgreSQL datasource's ``interpolateVariable`` and grafana-data
``rangeutil.ts``. Run: ``python3 -m unittest test_grafana_macros`` (stdlib only).
"""

import datetime as dt
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grafana_macros as g  # noqa: E402


def ns(y, mo, d, h=0, mi=0, s=0, nanos=0):
    t = dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.timezone.utc)
    return int((t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).total_seconds()) * g.SECOND + nanos


FROM = ns(2018, 4, 12, 18, 0, 0)
TO = FROM + 5 * g.MINUTE


def interp(sql, frm=FROM, to=TO, interval=0, timescaledb=False):
    q = g.BackendQuery(frm, to, interval)
    return g.postgres_interpolate(q, sql, timescaledb=timescaledb)


class TestMacroEngine(unittest.TestCase):
    """macros_test.go TestMacroEngine, "Given a time range between 2018-04-12 00:00 and 2018-04-12 00:05"."""

    def test_time(self):  # "interpolate __time function"
        self.assertEqual(interp("select $__time(time_column)"), 'select time_column AS "time"')

    def test_time_wrapped(self):  # "interpolate __time function wrapped in aggregation"
        self.assertEqual(interp("select min($__time(time_column))"), 'select min(time_column AS "time")')

    def test_time_filter(self):  # "interpolate __timeFilter function"
        self.assertEqual(
            interp("WHERE $__timeFilter(time_column)"),
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        )

    def test_time_from(self):  # "interpolate __timeFrom function"
        self.assertEqual(interp("select $__timeFrom()"), "select '2018-04-12T18:00:00Z'")

    def test_time_to(self):  # "interpolate __timeTo function"
        self.assertEqual(interp("select $__timeTo()"), "select '2018-04-12T18:05:00Z'")

    def test_time_group_pre53(self):  # "interpolate __timeGroup function pre 5.3 compatibility"
        self.assertEqual(
            interp("SELECT $__timeGroup(time_column,'5m'), value"),
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        )
        self.assertEqual(
            interp("SELECT $__timeGroup(time_column,'5m') as time, value"),
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
        )

    def test_time_group(self):  # "interpolate __timeGroup function"
        sql = interp("SELECT $__timeGroup(time_column,'5m')")
        sql2 = interp("SELECT $__timeGroupAlias(time_column,'5m')")
        self.assertEqual(sql, "SELECT floor(extract(epoch from time_column)/300)*300")
        self.assertEqual(sql2, sql + ' AS "time"')

    def test_time_group_spaces(self):  # "interpolate __timeGroup function with spaces between args"
        sql = interp("$__timeGroup(time_column , '5m')")
        sql2 = interp("$__timeGroupAlias(time_column , '5m')")
        self.assertEqual(sql, "floor(extract(epoch from time_column)/300)*300")
        self.assertEqual(sql2, sql + ' AS "time"')

    def test_time_group_timescale(self):  # "... with TimescaleDB enabled"
        self.assertEqual(
            interp("GROUP BY $__timeGroup(time_column,'5m')", timescaledb=True),
            "GROUP BY time_bucket('300.000s',time_column)",
        )

    def test_time_group_timescale_spaces(self):  # "... with spaces between args and TimescaleDB enabled"
        self.assertEqual(
            interp("GROUP BY $__timeGroup(time_column , '5m')", timescaledb=True),
            "GROUP BY time_bucket('300.000s',time_column)",
        )

    def test_time_group_timescale_large(self):  # "... with large time range as an argument and TimescaleDB enabled"
        self.assertEqual(
            interp("GROUP BY $__timeGroup(time_column , '12d')", timescaledb=True),
            "GROUP BY time_bucket('1036800.000s',time_column)",
        )

    def test_time_group_timescale_small(self):  # "... with small time range as an argument and TimescaleDB enabled"
        self.assertEqual(
            interp("GROUP BY $__timeGroup(time_column , '20ms')", timescaledb=True),
            "GROUP BY time_bucket('0.020s',time_column)",
        )

    def test_unix_epoch_filter(self):  # "interpolate __unixEpochFilter function"
        self.assertEqual(interp("select $__unixEpochFilter(time)"), "select time >= 1523556000 AND time <= 1523556300")

    def test_unix_epoch_nano_filter(self):  # "interpolate __unixEpochNanoFilter function"
        self.assertEqual(
            interp("select $__unixEpochNanoFilter(time)"),
            "select time >= 1523556000000000000 AND time <= 1523556300000000000",
        )

    def test_unix_epoch_nano_from(self):  # "interpolate __unixEpochNanoFrom function"
        self.assertEqual(interp("select $__unixEpochNanoFrom()"), "select 1523556000000000000")

    def test_unix_epoch_nano_to(self):  # "interpolate __unixEpochNanoTo function"
        self.assertEqual(interp("select $__unixEpochNanoTo()"), "select 1523556300000000000")

    def test_unix_epoch_group(self):  # "interpolate __unixEpochGroup function"
        sql = interp("SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')")
        sql2 = interp("SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')")
        self.assertEqual(sql, "SELECT floor((time_column+time_adjustment)/300)*300")
        self.assertEqual(sql2, sql + ' AS "time"')


class TestMacroEngineOldDates(unittest.TestCase):
    """macros_test.go TestMacroEngine, the 1960–1965, 1960–1980 and
    1960–1980 with .5 s ranges (negative epochs, RFC3339Nano fractions)."""

    def test_1960_1965(self):  # "Given a time range between 1960-02-01 07:00 and 1965-02-03 08:00"
        frm, to = ns(1960, 2, 1, 7), ns(1965, 2, 3, 8)
        self.assertEqual(
            interp("WHERE $__timeFilter(time_column)", frm, to),
            "WHERE time_column BETWEEN '1960-02-01T07:00:00Z' AND '1965-02-03T08:00:00Z'",
        )
        self.assertEqual(interp("select $__unixEpochFilter(time)", frm, to), "select time >= -312915600 AND time <= -154886400")
        self.assertEqual(
            interp("select $__unixEpochNanoFilter(time)", frm, to),
            "select time >= -312915600000000000 AND time <= -154886400000000000",
        )

    def test_1960_1980(self):  # "Given a time range between 1960-02-01 07:00 and 1980-02-03 08:00"
        frm, to = ns(1960, 2, 1, 7), ns(1980, 2, 3, 8)
        self.assertEqual(
            interp("WHERE $__timeFilter(time_column)", frm, to),
            "WHERE time_column BETWEEN '1960-02-01T07:00:00Z' AND '1980-02-03T08:00:00Z'",
        )
        self.assertEqual(interp("select $__unixEpochFilter(time)", frm, to), "select time >= -312915600 AND time <= 318412800")
        self.assertEqual(
            interp("select $__unixEpochNanoFilter(time)", frm, to),
            "select time >= -312915600000000000 AND time <= 318412800000000000",
        )

    def test_half_seconds(self):  # "Given a time range between 1960-02-01 07:00:00.5 and 1980-02-03 08:00:00.5"
        frm, to = ns(1960, 2, 1, 7, nanos=500_000_000), ns(1980, 2, 3, 8, nanos=500_000_000)
        self.assertEqual(g.go_rfc3339nano(frm), "1960-02-01T07:00:00.5Z")
        self.assertEqual(g.go_rfc3339nano(to), "1980-02-03T08:00:00.5Z")
        self.assertEqual(
            interp("WHERE $__timeFilter(time_column)", frm, to),
            "WHERE time_column BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'",
        )
        # Go's Unix() floors: .5 s before the epoch is the earlier second.
        self.assertEqual(g.go_unix(frm), -312915600)


class TestInterpolateSQLCommenter(unittest.TestCase):
    """macros_test.go TestInterpolateSQLCommenter (query Interval 10m)."""

    def test_inert_tag(self):  # "preserves an inert trailing tag while interpolating the body"
        self.assertEqual(
            interp("SELECT $__interval /*app='grafana',source='bi'*/", interval=10 * g.MINUTE),
            "SELECT 10m /*app='grafana',source='bi'*/",
        )

    def test_tag_with_interval(self):  # "strips a tag that embeds the interval macro"
        self.assertEqual(interp("SELECT 1 /*i='$__interval'*/", interval=10 * g.MINUTE), "SELECT 1 ")

    def test_tag_across_boundary(self):  # "strips a tag whose macro completes across the comment boundary"
        self.assertEqual(
            interp("SELECT 1 /*k='$__timeFilter(t'*/ WHERE (x = 1)", interval=10 * g.MINUTE),
            "SELECT 1  WHERE (x = 1)",
        )


class TestStripSQLComments(unittest.TestCase):
    """macros_test.go TestStripSQLComments, every table row."""

    CASES = [
        ("line comment stripped", "SELECT 1 -- a comment", "SELECT 1 "),
        ("block comment stripped", "SELECT /* a comment */ 1", "SELECT  1"),
        ("multiline block comment stripped", "SELECT /*\n  multiline\n  comment\n*/ 1", "SELECT  1"),
        ("line comment inside single-quoted string preserved", "SELECT '-- not a comment' AS label", "SELECT '-- not a comment' AS label"),
        ("block comment inside single-quoted string preserved", "SELECT '/* not a comment */' AS label", "SELECT '/* not a comment */' AS label"),
        ("line comment inside double-quoted identifier preserved", 'SELECT "col -- name" FROM t', 'SELECT "col -- name" FROM t'),
        ("block comment inside double-quoted identifier preserved", 'SELECT "col /* name */" FROM t', 'SELECT "col /* name */" FROM t'),
        ("doubled-quote escape inside single-quoted string", "SELECT 'it''s fine -- not a comment' AS v", "SELECT 'it''s fine -- not a comment' AS v"),
        ("doubled-quote escape inside double-quoted identifier", 'SELECT "col ""-- name""" FROM t', 'SELECT "col ""-- name""" FROM t'),
        ("mixed: -- inside string then real -- comment", "SELECT '-- in string' AS a -- real comment", "SELECT '-- in string' AS a "),
        ("mixed: block comment inside string then real block comment", "SELECT '/* in string */' AS a /* real comment */", "SELECT '/* in string */' AS a "),
        ("no-op: query with no comments", "SELECT col FROM t WHERE col > 1", "SELECT col FROM t WHERE col > 1"),
        ("newline after line comment is preserved", "SELECT 1 -- comment\nFROM t", "SELECT 1 \nFROM t"),
        ("line comment inside empty dollar-quoted string preserved", "SELECT $$ -- not a comment $$", "SELECT $$ -- not a comment $$"),
        ("block comment inside empty dollar-quoted string preserved", "SELECT $$ /* not a comment */ $$", "SELECT $$ /* not a comment */ $$"),
        ("line comment inside tagged dollar-quoted string preserved", "SELECT $body$ -- not a comment $body$", "SELECT $body$ -- not a comment $body$"),
        ("grafana macro not confused with dollar-quote", "SELECT $__timeFrom() -- comment", "SELECT $__timeFrom() "),
        ("positional parameter not confused with dollar-quote", "SELECT $1 -- comment", "SELECT $1 "),
        (
            "preserves trailing SQLCommenter tag before semicolon",
            "SELECT 1 AS value\n/*application='grafana',source='bi',route='test',feature='repro'*/;",
            "SELECT 1 AS value\n/*application='grafana',source='bi',route='test',feature='repro'*/;",
        ),
        ("preserves inline SQLCommenter tag", "SELECT 1 /*application='grafana',feature='panel'*/", "SELECT 1 /*application='grafana',feature='panel'*/"),
        ("strips block comment shaped like a tag but containing a macro", "SELECT 1 /*range='$__timeFilter(t)'*/", "SELECT 1 "),
    ]

    def test_table(self):
        for name, inp, want in self.CASES:
            with self.subTest(name):
                self.assertEqual(g.strip_sql_comments(inp), want)

    def test_unclosed_block_comment_quirk(self):
        # Not in macros_test.go: Go's loop stops one byte short of the end
        # of an unclosed comment, and the outer loop then copies that byte.
        self.assertEqual(g.strip_sql_comments("SELECT 1 /* abc"), "SELECT 1 c")


class TestMacroErrors(unittest.TestCase):
    """evaluateMacro's error paths (messages as Grafana prints them)."""

    def test_unknown(self):
        with self.assertRaisesRegex(g.MacroError, 'unknown macro "__nope"'):
            interp("SELECT $__nope(x)")

    def test_paren_inside_arg(self):
        # An argument cannot contain ')': the macro ends at the first one.
        with self.assertRaisesRegex(g.MacroError, "macro __timeGroup needs time column and interval"):
            interp("SELECT $__timeGroup(to_timestamp(t),'5m')")

    def test_bad_interval(self):
        with self.assertRaisesRegex(g.MacroError, "error parsing interval '5x'"):
            interp("SELECT $__timeGroup(t,'5x')")

    def test_zero_interval(self):
        with self.assertRaisesRegex(g.MacroError, "interval must be positive, got '0s'"):
            interp("SELECT $__timeGroup(t,'0s')")

    def test_fill(self):
        q = g.BackendQuery(FROM, TO, 0)
        out = g.postgres_interpolate(q, "SELECT $__timeGroupAlias(t,'1m',previous), v")
        self.assertEqual(out, 'SELECT floor(extract(epoch from t)/60)*60 AS "time", v')
        self.assertEqual(q.fill, g.FillConfig(60.0, "previous"))
        q = g.BackendQuery(FROM, TO, 0)
        g.postgres_interpolate(q, "SELECT $__timeGroup(t,'1h',0.5)")
        self.assertEqual(q.fill, g.FillConfig(3600.0, "value", 0.5))
        with self.assertRaisesRegex(g.MacroError, "error parsing fill value zero"):
            interp("SELECT $__timeGroup(t,'1h',zero)")

    def test_alias_quirk_uses_first_occurrence(self):
        # The ',' test looks at the first occurrence of the same macro text.
        out = interp("SELECT $__timeGroup(t,'5m'), 1 GROUP BY $__timeGroup(t,'5m')")
        self.assertEqual(
            out,
            'SELECT floor(extract(epoch from t)/300)*300 AS "time", 1 GROUP BY floor(extract(epoch from t)/300)*300 AS "time"',
        )


class TestMissingColumnQuirk(unittest.TestCase):
    def test_empty_args_is_one_empty_arg(self):
        # Go's strings.Split("", ",") returns [""], so "missing time column"
        # can never fire: $__timeFilter() expands with an empty column.
        self.assertEqual(
            interp("SELECT $__timeFilter()"),
            "SELECT  BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        )


class TestSqlengInterpolate(unittest.TestCase):
    """sqleng.Interpolate: global substitutions."""

    def test_all(self):
        out = g.sqleng_interpolate(
            "$__interval_ms $__interval $__unixEpochFrom() $__unixEpochTo()", 5 * g.MINUTE, FROM, TO
        )
        self.assertEqual(out, "300000 5m 1523556000 1523556300")

    def test_unix_epoch_from_with_cast(self):
        out = interp("start_ms >= $__unixEpochFrom()::bigint*1000 AND start_ms < $__unixEpochTo()::bigint*1000")
        self.assertEqual(out, "start_ms >= 1523556000::bigint*1000 AND start_ms < 1523556300::bigint*1000")


class TestGoFormatting(unittest.TestCase):
    def test_v(self):
        for f, want in [(300.0, "300"), (0.02, "0.02"), (2592000.0, "2.592e+06"), (86400.0, "86400"),
                        (1e6, "1e+06"), (999999.0, "999999"), (0.0001, "0.0001"), (0.00001, "1e-05"),
                        (1.5, "1.5"), (-60.0, "-60"), (31536000.0, "3.1536e+07")]:  # fmt: skip
            self.assertEqual(g.go_format_v(f), want, f)

    def test_e(self):
        self.assertEqual(g.go_format_float_e(1.7e12), "1.7e+12")
        self.assertEqual(g.go_format_float_e(1523556000.0), "1.523556e+09")
        self.assertEqual(g.go_format_float_e(1.5e18), "1.5e+18")
        self.assertEqual(g.go_format_float_e(1.7e15), "1.7e+15")

    def test_epoch_precision(self):
        self.assertEqual(g.epoch_precision_to_ms(1523556000.0), 1523556000000.0)
        self.assertEqual(g.epoch_precision_to_ms(1523556000000.0), 1523556000000.0)
        self.assertEqual(g.epoch_precision_to_ms(1.523556e18), 1523556000000.0)
        self.assertEqual(g.epoch_class(1.523556e15), "ms?")
        self.assertEqual(g.epoch_class(1.523556e12), "ms")


class TestGtime(unittest.TestCase):
    """gtime.ParseInterval / FormatInterval and time.ParseDuration."""

    def test_parse_duration(self):
        self.assertEqual(g.go_parse_duration("1h30m"), 90 * g.MINUTE)
        self.assertEqual(g.go_parse_duration("1.5s"), 1500 * g.MS)
        self.assertEqual(g.go_parse_duration("-2m"), -2 * g.MINUTE)
        self.assertEqual(g.go_parse_duration("0"), 0)
        self.assertEqual(g.go_parse_duration("300µs"), 300 * g.US)
        self.assertEqual(g.go_parse_duration(".5h"), 30 * g.MINUTE)
        for bad in ["", "5", "1d", "1.s.", "x1s", "1 s"]:
            with self.assertRaises(g.GoError, msg=bad):
                g.go_parse_duration(bad)

    def test_parse_interval_calendar(self):
        now = ns(2024, 1, 31, 12)
        self.assertEqual(g.gtime_parse_interval("1d", now), 24 * g.HOUR)
        self.assertEqual(g.gtime_parse_interval("2w", now), 14 * 24 * g.HOUR)
        # Jan 31 + 1 month = Feb 31 → Mar 2 (2024 is a leap year): 31 days
        self.assertEqual(g.gtime_parse_interval("1M", now), 31 * 24 * g.HOUR)
        self.assertEqual(g.gtime_parse_interval("1y", now), 366 * 24 * g.HOUR)
        self.assertEqual(g.gtime_parse_interval("5m", now), 5 * g.MINUTE)

    def test_format_interval(self):
        for d, want in [(g.MS // 2, "1ms"), (20 * g.MS, "20ms"), (90 * g.SECOND, "1m"), (3 * g.HOUR, "3h"),
                        (30 * 24 * g.HOUR, "30d"), (400 * 24 * g.HOUR, "1y")]:  # fmt: skip
            self.assertEqual(g.gtime_format_interval(d), want)


class TestRangeUtil(unittest.TestCase):
    """rangeutil.calculateInterval / roundInterval / secondsToHms."""

    def test_round(self):
        self.assertEqual(g.round_interval(5), 1)
        self.assertEqual(g.round_interval(86400), 60000)  # 24 h / 1000 points = 86.4 s → 1m
        self.assertEqual(g.round_interval(3628800000), 31536000000)

    def test_calculate(self):
        day = 86400000
        self.assertEqual(g.calculate_interval(0, day, 1000, None), (60000, "1m"))
        self.assertEqual(g.calculate_interval(0, 6 * 3600000, 1000, None), (20000, "20s"))
        self.assertEqual(g.calculate_interval(0, 6 * 3600000, 1000, "1m"), (60000, "1m"))
        self.assertEqual(g.calculate_interval(0, 7 * day, 1000, "1m"), (600000, "10m"))
        self.assertEqual(g.calculate_interval(0, 90 * day, 1000, "1m"), (7200000, "2h"))
        self.assertEqual(g.calculate_interval(0, 90 * day, 100, "1m"), (43200000, "12h"))
        self.assertEqual(g.calculate_interval(0, 3600000, 1000, "1h"), (3600000, "1h"))
        self.assertEqual(g.calculate_interval(0, 3600000, 1000, "90"), (90000, "1m"))

    def test_seconds_to_hms(self):
        self.assertEqual(g.seconds_to_hms(0.001), "1ms")
        self.assertEqual(g.seconds_to_hms(90), "1m")
        self.assertEqual(g.seconds_to_hms(2592000), "30d")


class TestFrontendInterpolation(unittest.TestCase):
    """Variable syntax, formats, multi-value and All semantics."""

    def setUp(self):
        self.vars = {
            "tenant": g.Variable("tenant", "query", ["acme", "o'reilly"], multi=True, include_all=True,
                                 options=[("Acme", "acme"), ("O'Reilly", "o'reilly"), ("Globex", "globex")]),
            "one": g.Variable("one", "custom", "it's", options=[("it's", "it's")]),
            "all": g.Variable("all", "query", "$__all", multi=True, include_all=True,
                              options=[("a", "a"), ("b", "b")]),
            "custom_all": g.Variable("custom_all", "query", "$__all", include_all=True, all_value=".*",
                                     options=[("a", "a")]),
            "single_multi": g.Variable("single_multi", "query", ["x"], multi=True, options=[("x", "x")]),
        }  # fmt: skip

    def fe(self, sql, legacy=False):
        return g.frontend_expand(sql, self.vars, 1523556000000, 1523556300000, 60000, "1m", legacy=legacy)

    def test_default_format_list(self):
        # interpolateVariable: arrays → each quoteLiteral'd, comma-joined
        self.assertEqual(self.fe("IN ($tenant)"), "IN ('acme','o''reilly')")
        self.assertEqual(self.fe("IN ([[tenant]])"), "IN ('acme','o''reilly')")
        self.assertEqual(self.fe("IN (${tenant})"), "IN ('acme','o''reilly')")
        self.assertEqual(self.fe("IN ($single_multi)"), "IN ('x')")

    def test_default_format_string(self):
        # newest: quotes doubled, no quotes added; legacy: same for non-multi
        self.assertEqual(self.fe("x = '$one'"), "x = 'it''s'")
        self.assertEqual(self.fe("x = '$one'", legacy=True), "x = 'it''s'")

    def test_sqlstring(self):
        self.assertEqual(self.fe("IN (${tenant:sqlstring})"), "IN ('acme','o''reilly')")
        self.assertEqual(self.fe("= ${one:sqlstring}"), "= 'it''s'")
        v = {"q": g.Variable("q", value='say "hi"')}
        self.assertEqual(g.frontend_expand("${q:sqlstring}", v, 0, 1, 1, "1ms"), "'say \\\"hi\\\"'")

    def test_csv_raw_singlequote(self):
        self.assertEqual(self.fe("${tenant:csv}"), "acme,o'reilly")
        self.assertEqual(self.fe("${tenant:raw}"), "acme,o'reilly")
        self.assertEqual(self.fe("${tenant:singlequote}"), "'acme','o\\'reilly'")
        self.assertEqual(self.fe("${tenant:doublequote}"), '"acme","o\'reilly"')
        self.assertEqual(self.fe("${tenant:pipe}"), "acme|o'reilly")
        self.assertEqual(self.fe("${tenant:regex}"), "(acme|o'reilly)")
        self.assertEqual(self.fe("[[tenant:csv]]"), "acme,o'reilly")

    def test_all(self):
        self.assertEqual(self.fe("IN (${all:sqlstring})"), "IN ('a','b')")
        self.assertEqual(self.fe("IN ($all)"), "IN ('a','b')")
        self.assertEqual(self.fe("${all:text}"), "All")
        # a custom allValue goes in as written, whatever the format
        self.assertEqual(self.fe("~ '${custom_all:sqlstring}'"), "~ '.*'")
        self.assertEqual(self.fe("~ '$custom_all'"), "~ '.*'")

    def test_time_macros(self):
        self.assertEqual(self.fe("$__from $__to"), "1523556000000 1523556300000")
        self.assertEqual(self.fe("${__from:date:seconds} ${__to:date:seconds}"), "1523556000 1523556300")
        self.assertEqual(self.fe("${__from:date:iso}"), "2018-04-12T18:00:00.000Z")
        self.assertEqual(self.fe("${__from:date}"), "2018-04-12T18:00:00.000Z")
        self.assertEqual(self.fe("${__from:date:ms}"), "1523556000000")

    def test_interval_is_frontend(self):
        self.assertEqual(self.fe("$__interval $__interval_ms"), "1m 60000")

    def test_unknown_left_for_backend(self):
        unknown = []
        out = g.frontend_expand("$__timeFilter(t) AND $__unixEpochFrom() $nope", self.vars, 0, 1, 1, "1ms",
                                unknown=unknown)  # fmt: skip
        self.assertEqual(out, "$__timeFilter(t) AND $__unixEpochFrom() $nope")
        self.assertEqual(unknown, ["__timeFilter", "__unixEpochFrom", "nope"])

    def test_empty_multi_breaks_sql(self):
        v = {"e": g.Variable("e", value="$__all", multi=True, include_all=True, options=[])}
        self.assertEqual(g.frontend_expand("IN (${e:sqlstring})", v, 0, 1, 1, "1ms"), "IN ()")

    def test_full_pipeline(self):
        raw = (
            "SELECT (start_ms / $__interval_ms) * $__interval_ms AS \"time\", sum(count) "
            "FROM rollup_windows WHERE tenant IN (${tenant:sqlstring}) -- $__bogus(x)\n"
            "AND start_ms >= $__unixEpochFrom()::bigint*1000 AND start_ms < $__unixEpochTo()::bigint*1000 "
            "GROUP BY 1 ORDER BY 1"
        )
        sql, _ = g.expand(raw, self.vars, 1523556000000, 1523556300000, 60000, "1m")
        self.assertEqual(
            sql,
            "SELECT (start_ms / 60000) * 60000 AS \"time\", sum(count) FROM rollup_windows "
            "WHERE tenant IN ('acme','o''reilly') \n"
            "AND start_ms >= 1523556000::bigint*1000 AND start_ms < 1523556300::bigint*1000 GROUP BY 1 ORDER BY 1",
        )


if __name__ == "__main__":
    unittest.main()

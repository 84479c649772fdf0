//! What to push for a window, without I/O: the window geometry of each kind
//! of Stripe meter, the whole-unit arithmetic with its carried fraction,
//! identifiers and timestamps.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use sha2_hmac::{Digest, Sha256};
use tally_core::{DAY_MS, HOUR_MS};
use tally_store::{Planned, PushKind};

/// How a Stripe meter takes tally's pushes; follows the Stripe meter's
/// formula and `event_time_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A raw `sum` meter: every event counts, so each hour's units go out
    /// as they grow (the first push, then corrections with their own
    /// identifiers).
    Deltas,
    /// A pre-aggregated `sum` meter (`event_time_window` hour or day): Stripe
    /// keeps the latest event per window, so a window's whole units go out,
    /// and again when they change.
    Totals { day: bool },
    /// A `last` meter: the period-to-date value, re-sent when it changes.
    PeriodValue,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Deltas => "hourly deltas (raw meter)",
            Shape::Totals { day: false } => "hourly totals (pre-aggregated per hour)",
            Shape::Totals { day: true } => "daily totals (pre-aggregated per day)",
            Shape::PeriodValue => "period-to-date value (last meter)",
        }
    }

    pub fn push_kind(self) -> PushKind {
        match self {
            Shape::Deltas => PushKind::Delta,
            _ => PushKind::Total,
        }
    }

    /// The window holding `hour_ms`: `[start, end)`.
    pub fn window(self, hour_ms: i64) -> (i64, i64) {
        match self {
            Shape::Deltas | Shape::Totals { day: false } => {
                let start = hour_ms.div_euclid(HOUR_MS) * HOUR_MS;
                (start, start + HOUR_MS)
            }
            Shape::Totals { day: true } => {
                let start = hour_ms.div_euclid(DAY_MS) * DAY_MS;
                (start, start + DAY_MS)
            }
            Shape::PeriodValue => period(hour_ms),
        }
    }

    /// Hours starting before this are in windows that are closed (their end
    /// `lag` behind `now_ms`), so their usage can be planned.
    pub fn closed_before(self, now_ms: i64, lag_ms: i64) -> i64 {
        let t = now_ms - lag_ms;
        match self {
            Shape::Totals { day: true } => t.div_euclid(DAY_MS) * DAY_MS,
            _ => t.div_euclid(HOUR_MS) * HOUR_MS,
        }
    }

    /// The event timestamp of a window's pushes: mid-window (never on a
    /// boundary, where clock skew could move it), or for period values the
    /// present, kept inside the period.
    pub fn timestamp_s(self, window: (i64, i64), now_ms: i64) -> i64 {
        match self {
            Shape::PeriodValue => (now_ms / 1000).clamp(window.0 / 1000, window.1 / 1000 - 1),
            _ => (window.0 + (window.1 - window.0) / 2) / 1000,
        }
    }
}

/// The billing period (UTC calendar month) holding `ms`: `[start, end)`.
pub fn period(ms: i64) -> (i64, i64) {
    let t = DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let start = Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().unwrap_or_default();
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or_default();
    (start.timestamp_millis(), end.timestamp_millis())
}

/// `YYYY-MM` of a period start, and back.
pub fn period_name(start_ms: i64) -> String {
    DateTime::from_timestamp_millis(start_ms).unwrap_or_default().format("%Y-%m").to_string()
}

pub fn parse_period(s: &str) -> Result<(i64, i64), String> {
    let bad = || format!("period {s:?}: expected YYYY-MM");
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let start = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().ok_or_else(bad)?;
    Ok(period(start.timestamp_millis()))
}

/// `x` rounded down to a whole number, except that a value within a
/// billionth of a whole number is that number: sums of decimal fractions
/// land a hair below the integer they stand for (0.1 × 3 × 10 =
/// 2.9999999999999996), and a bill must not lose a unit to that.
pub fn whole_units(x: f64) -> i64 {
    let r = x.round();
    let units = if (x - r).abs() <= 1e-9 * x.abs().max(1.0) { r } else { x.floor() };
    units as i64
}

/// A window's new plan, given the scaled ledger value the window now
/// holds, the window's plan so far and its period's (all windows' sums).
/// Sum meters: the period's units stay floor(its scaled total), the window
/// takes the change (so a fraction carries from window to window and no
/// unit is lost or made up). Period values: the value's whole units. The
/// push (its value) when the units changed; `None` when nothing changed.
pub fn plan_window(shape: Shape, scaled: f64, window: Planned, period: Planned) -> Option<(Planned, Option<i64>)> {
    let units = match shape {
        Shape::PeriodValue => whole_units(scaled),
        _ => {
            let period_covered = period.covered - window.covered + scaled;
            window.units + whole_units(period_covered) - period.units
        }
    };
    if units == window.units {
        // Only a fraction moved: remember it, push nothing.
        let same = (scaled - window.covered).abs() <= f64::EPSILON * scaled.abs().max(1.0);
        return (!same).then_some((Planned { covered: scaled, ..window }, None));
    }
    let next = Planned { units, covered: scaled, revision: window.revision + 1 };
    let value = match shape {
        Shape::Deltas => units - window.units,
        _ => units,
    };
    Some((next, Some(value)))
}

/// The Stripe `identifier` of a window's push: deterministic (a resend
/// after a crash carries the same one, and Stripe's "already exists" answer
/// proves it landed), unique per tenant, customer, Stripe meter, window and
/// revision, at most 100 characters whatever the tenant id:
/// `tly.<tenant, cut to 40 safe characters>.<window>.r<revision>.<12 hex
/// of a hash of tenant, customer and event name>`.
pub fn identifier(
    tenant: &str,
    customer: &str,
    event_name: &str,
    shape: Shape,
    window_ms: i64,
    revision: i64,
) -> String {
    let readable: String =
        tenant.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).take(40).collect();
    let t = DateTime::from_timestamp_millis(window_ms).unwrap_or_default();
    let window = match shape {
        Shape::Deltas | Shape::Totals { day: false } => t.format("%Y%m%d%H"),
        Shape::Totals { day: true } => t.format("%Y%m%d"),
        Shape::PeriodValue => t.format("%Y%m"),
    };
    let mut h = Sha256::new();
    for part in [tenant, customer, event_name] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    format!("tly.{readable}.{window}.r{revision}.{}", hex::encode(&digest[..6]))
}

/// Stripe takes events up to 35 days old; tally stops an hour short of
/// that, so a push never races the limit.
pub const MAX_AGE_MS: i64 = 35 * DAY_MS - HOUR_MS;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn windows_periods_and_timestamps() {
        let h = at("2026-11-30T13:00:00Z");
        assert_eq!(Shape::Deltas.window(h + 5), (h, h + HOUR_MS));
        assert_eq!(Shape::Totals { day: true }.window(h), (at("2026-11-30T00:00:00Z"), at("2026-12-01T00:00:00Z")));
        assert_eq!(Shape::PeriodValue.window(h), (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z")));
        assert_eq!(period(at("2026-12-31T23:59:59Z")), (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")));
        assert_eq!(Shape::Deltas.timestamp_s((h, h + HOUR_MS), 0), h / 1000 + 1800);
        let p = Shape::PeriodValue.window(h);
        assert_eq!(Shape::PeriodValue.timestamp_s(p, h + 7_000), h / 1000 + 7);
        assert_eq!(Shape::PeriodValue.timestamp_s(p, at("2026-12-02T00:00:00Z")), p.1 / 1000 - 1);
        // An hour counts as closed once its end is `lag` behind now.
        let now = at("2026-11-30T14:04:00Z");
        assert_eq!(Shape::Deltas.closed_before(now, 5 * 60_000), h);
        assert_eq!(Shape::Deltas.closed_before(now + 120_000, 5 * 60_000), h + HOUR_MS);
        assert_eq!(Shape::Totals { day: true }.closed_before(now, 0), at("2026-11-30T00:00:00Z"));
        assert_eq!(parse_period("2026-02").unwrap(), (at("2026-02-01T00:00:00Z"), at("2026-03-01T00:00:00Z")));
        assert!(parse_period("2026-13").is_err() && parse_period("26-01").is_err() && parse_period("x").is_err());
        assert_eq!(period_name(at("2026-02-01T00:00:00Z")), "2026-02");
    }

    #[test]
    fn whole_units_do_not_lose_a_unit_to_binary_fractions() {
        assert_eq!(whole_units(0.1 * 3.0 * 10.0), 3);
        assert_eq!(whole_units(4.35 * 100.0), 435);
        assert_eq!(whole_units(2.5), 2);
        assert_eq!(whole_units(0.999), 0);
        assert_eq!(whole_units(-0.5), -1);
        assert_eq!(whole_units(1e15), 1_000_000_000_000_000);
    }

    #[test]
    fn identifiers_are_stable_short_and_distinct() {
        let h = at("2026-11-30T13:00:00Z");
        let id = identifier("acme", "cus_A", "tokens", Shape::Deltas, h, 1);
        assert_eq!(id, identifier("acme", "cus_A", "tokens", Shape::Deltas, h, 1));
        assert!(id.starts_with("tly.acme.2026113013.r1."), "{id}");
        let others = [
            identifier("acme", "cus_A", "tokens", Shape::Deltas, h, 2),
            identifier("acme", "cus_B", "tokens", Shape::Deltas, h, 1),
            identifier("acme", "cus_A", "calls", Shape::Deltas, h, 1),
            identifier("acme", "cus_A", "tokens", Shape::Deltas, h + HOUR_MS, 1),
            identifier("acme2", "cus_A", "tokens", Shape::Deltas, h, 1),
        ];
        assert!(others.iter().all(|o| *o != id));
        let long = identifier(&"x".repeat(500), &"c".repeat(255), &"e".repeat(100), Shape::Deltas, h, 999_999);
        assert!(long.len() <= 100, "{} chars", long.len());
        // Tenants that differ only past the readable cut still differ.
        let a = identifier(&format!("{}a", "x".repeat(60)), "c", "e", Shape::Deltas, h, 1);
        let b = identifier(&format!("{}b", "x".repeat(60)), "c", "e", Shape::Deltas, h, 1);
        assert_ne!(a, b);
        assert_eq!(identifier("a", "c", "e", Shape::PeriodValue, h, 1).split('.').nth(2), Some("202611"));
    }

    #[test]
    fn late_usage_is_a_correction_or_a_new_total() {
        let none = Planned::default();
        let (w, v) = plan_window(Shape::Deltas, 10.0, none, none).unwrap();
        assert_eq!((w.units, w.revision, v), (10, 1, Some(10)));
        let p = Planned { units: 10, covered: 10.0, revision: 0 };
        let (w2, v2) = plan_window(Shape::Deltas, 13.0, w, p).unwrap();
        assert_eq!((w2.units, w2.revision, v2), (13, 2, Some(3)));
        let (t2, tv) = plan_window(Shape::Totals { day: false }, 13.0, w, p).unwrap();
        assert_eq!((t2.units, tv), (13, Some(13)));
        assert_eq!(plan_window(Shape::Deltas, 10.0, w, p), None, "nothing changed");
        let (pv, pvv) = plan_window(Shape::PeriodValue, 7.9, none, none).unwrap();
        assert_eq!((pv.units, pvv), (7, Some(7)));
    }

    proptest! {
        /// Whatever the order and size of fractional usage across a
        /// period's hours, the units pushed add up to floor(total × scale),
        /// per hour never below zero; integer usage lands per hour exactly.
        #[test]
        fn pushes_add_up_to_the_floor_of_the_scaled_total(
            steps in proptest::collection::vec((0usize..24, 0u32..5_000), 1..200),
            scale in prop_oneof![Just(1.0), Just(1000.0), Just(0.001)],
            integer in any::<bool>(),
        ) {
            let mut ledger = [0.0f64; 24];
            let mut windows = [Planned::default(); 24];
            let mut period = Planned::default();
            let mut pushed = [0i64; 24];
            for (hour, v) in steps {
                ledger[hour] += if integer { f64::from(v) } else { f64::from(v) / 1000.0 };
                let scaled = ledger[hour] * scale;
                if let Some((next, push)) = plan_window(Shape::Deltas, scaled, windows[hour], period) {
                    period.units += next.units - windows[hour].units;
                    period.covered += next.covered - windows[hour].covered;
                    pushed[hour] += push.unwrap_or(0);
                    windows[hour] = next;
                }
                prop_assert!(pushed.iter().all(|&p| p >= 0));
                let total: f64 = ledger.iter().sum::<f64>() * scale;
                prop_assert_eq!(pushed.iter().sum::<i64>(), whole_units(total));
            }
            if integer && scale == 1.0 {
                for h in 0..24 {
                    prop_assert_eq!(pushed[h], ledger[h] as i64);
                }
            }
        }
    }
}

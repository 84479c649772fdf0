//! Rollup rows: what the aggregator writes per series and window, what the
//! store merges on conflict and downsamples, and what queries merge per step.
//! One shape for every kind of series keeps the merge rules in one place.

use crate::{Histogram, HistogramSum, TenantId};

/// What a series measures; stored as a small integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RollupKind {
    /// Per (service, operation, span kind): requests, errors, duration µs.
    Span = 1,
    /// Per (service, severity): log record counts.
    Log = 2,
    /// Per (service, metric, attributes): gauge and sum points.
    Gauge = 3,
    /// Per (service, metric, attributes): OTLP histogram points.
    Histogram = 4,
}

impl RollupKind {
    pub fn from_i16(v: i16) -> Option<RollupKind> {
        Some(match v {
            1 => RollupKind::Span,
            2 => RollupKind::Log,
            3 => RollupKind::Gauge,
            4 => RollupKind::Histogram,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RollupKind::Span => "span",
            RollupKind::Log => "log",
            RollupKind::Gauge => "gauge",
            RollupKind::Histogram => "histogram",
        }
    }
}

/// Service, operation and detail of the pre-aggregated span series of entry
/// spans (SERVER and CONSUMER: what request rates count): (service, `ALL`,
/// `ALL`) per service and (`ALL`, `ALL`, `ALL`) per tenant. They make a
/// tenant's or service's SLO one row per window to read, whatever its
/// number of operations. `detail` is never `ALL` on other span series.
pub const ALL: &str = "*";

/// Metric histogram values are held × this in HDR histograms (which hold
/// integers), so e.g. seconds keep millisecond resolution.
pub const HISTOGRAM_SCALE: f64 = 1000.0;

/// Service, operation or metric name, and detail of the series that take
/// what a cardinality limit keeps out.
pub const OVERFLOW: &str = "_overflow";
/// The `detail` of a metric's overflow series (OpenTelemetry's own marker).
pub const OVERFLOW_ATTRIBUTES: &str = r#"{"otel.metric.overflow":"true"}"#;

/// A series: its tenant, kind and three dimensions whose meaning depends on
/// the kind — `name` is the operation, severity or metric name; `detail` the
/// span kind or the metric point's attributes as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub tenant: TenantId,
    pub kind: RollupKind,
    pub service: Box<str>,
    pub name: Box<str>,
    pub detail: Box<str>,
}

/// A window's aggregate. Meaning by kind: `count` is requests, records or
/// points; `errors` counts failed requests; `sum`/`min`/`max` are span
/// durations in µs or point values; `last` is the latest point value (by
/// `last_ms`); `hist` holds span durations in µs or histogram points'
/// values × 1,000.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupValues {
    pub count: u64,
    pub errors: u64,
    pub sum: f64,
    /// +∞ when nothing set it.
    pub min: f64,
    /// −∞ when nothing set it.
    pub max: f64,
    pub last: f64,
    /// `i64::MIN` when nothing set `last`.
    pub last_ms: i64,
    pub hist: Option<Histogram>,
}

impl Default for RollupValues {
    fn default() -> RollupValues {
        RollupValues {
            count: 0,
            errors: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: 0.0,
            last_ms: i64::MIN,
            hist: None,
        }
    }
}

impl RollupValues {
    /// One finished span of `duration_us`.
    pub fn add_span(&mut self, duration_us: u64, error: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        let d = duration_us as f64;
        self.sum += d;
        self.min = self.min.min(d);
        self.max = self.max.max(d);
        self.hist.get_or_insert_with(Histogram::new).record(duration_us);
    }

    /// One gauge or sum point.
    pub fn add_point(&mut self, value: f64, time_ms: i64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if time_ms >= self.last_ms {
            self.last = value;
            self.last_ms = time_ms;
        }
    }

    /// Merges another window's aggregate of the same series: counts add,
    /// extremes widen, the later `last` wins (on a tie, `other`, the one
    /// merged in later, as in [`RollupValues::add_point`]: two points in
    /// one millisecond give the same `last` whether they were written
    /// together or by two flushes), histograms merge exactly.
    pub fn merge(&mut self, other: &RollupValues) {
        self.count += other.count;
        self.errors += other.errors;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.last_ms >= self.last_ms && other.last_ms != i64::MIN {
            self.last = other.last;
            self.last_ms = other.last_ms;
        }
        match (&mut self.hist, &other.hist) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.hist = Some(b.clone()),
            _ => {}
        }
    }

    /// Many aggregates merged into one; histograms are summed densely, which
    /// is what makes merging a day of windows cheap.
    pub fn merged<'a>(all: impl IntoIterator<Item = &'a RollupValues>) -> RollupValues {
        let mut out = RollupValues::default();
        let mut hist: Option<HistogramSum> = None;
        for v in all {
            out.merge(&v.clone_scalars());
            if let Some(h) = &v.hist {
                hist.get_or_insert_with(HistogramSum::default).add(h);
            }
        }
        out.hist = hist.map(HistogramSum::into_histogram);
        out
    }

    fn clone_scalars(&self) -> RollupValues {
        RollupValues { hist: None, ..*self }
    }

    /// Nothing added since it was created (or taken).
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.errors == 0 && self.hist.is_none() && self.last_ms == i64::MIN
    }

    pub fn min_opt(&self) -> Option<f64> {
        self.min.is_finite().then_some(self.min)
    }

    pub fn max_opt(&self) -> Option<f64> {
        self.max.is_finite().then_some(self.max)
    }

    pub fn last_opt(&self) -> Option<f64> {
        (self.last_ms != i64::MIN).then_some(self.last)
    }
}

/// One series' aggregate over the window (or hour, or day) starting at `start_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub key: SeriesKey,
    pub start_ms: i64,
    pub values: RollupValues,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_later_last_and_widens_extremes() {
        let mut a = RollupValues::default();
        a.add_point(5.0, 10);
        a.add_point(1.0, 20);
        let mut b = RollupValues::default();
        b.add_point(9.0, 15);
        a.merge(&b);
        assert_eq!((a.count, a.sum, a.min, a.max, a.last, a.last_ms), (3, 15.0, 1.0, 9.0, 1.0, 20));
        let empty = RollupValues::default();
        a.merge(&empty);
        assert_eq!(a.last_opt(), Some(1.0));
        assert_eq!(empty.min_opt(), None);
    }

    #[test]
    fn a_tie_in_time_goes_to_what_is_merged_later_as_when_added() {
        let mut together = RollupValues::default();
        together.add_point(4.0, 10);
        together.add_point(9.0, 10);
        let (mut first, mut second) = (RollupValues::default(), RollupValues::default());
        first.add_point(4.0, 10);
        second.add_point(9.0, 10);
        first.merge(&second);
        assert_eq!((together.last, first.last), (9.0, 9.0));
    }
}

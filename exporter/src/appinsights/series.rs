//! Cumulative metric series → deltas, with a bounded memory.
//!
//! App Insights adds metric rows up (`sum(valueSum)`), so a cumulative
//! counter forwarded as is would count its history again every interval.
//! Each cumulative series (tenant, resource, scope, metric, kind, point
//! attributes) keeps its last point here, and what is sent is the change.
//! The rules are the ledger's (store/src/ledger.rs), with one difference
//! for series not in the table:
//!
//! - A point at or before the series' last time is a resend or stale:
//!   nothing is sent and the state stays.
//! - A new (later) start time is a restart of the sender: the whole value
//!   counts (the new stream began at zero). An earlier start time is a late
//!   point of an old stream: nothing.
//! - A lower value (a lower histogram count, a bucket count going down) with
//!   the same start time is a reset too: the whole value counts.
//! - A series not in the table counts its whole value only if it started
//!   at or after `count_after_ns` (the mapper's start, and after an
//!   eviction past the evicted series' start); otherwise its first point is
//!   a baseline and only later changes are sent. The ledger can count the
//!   whole value because its state is durable; this table is not, so after
//!   a restart of tally (or an eviction) re-sending lifetime totals would
//!   double-count. The price: the change during one interval of a series
//!   tally was not watching is lost (OpenTelemetry Collector's
//!   cumulativetodelta processor makes the same trade).
//!
//! The table holds at most `max` series; when full, the least recently
//! updated one is forgotten. Histogram deltas carry exact count and sum;
//! their min and max are exact when the cumulative min fell (or max rose),
//! otherwise bounded by the buckets that changed, clamped to the cumulative
//! min/max.

use std::collections::{BTreeMap, HashMap};

use sha2_hmac::{Digest, Sha256};

pub(crate) type SeriesKey = [u8; 16];

/// A series identity from its canonical encoding (tally_core::canonical),
/// hashed so the table holds 16 bytes per key.
pub(crate) fn key(encoded: &[u8]) -> SeriesKey {
    let digest = Sha256::digest(encoded);
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cumulative {
    Sum(f64),
    Hist(HistPoint),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistPoint {
    pub count: u64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub buckets: Buckets,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Buckets {
    None,
    /// Bucket `i` holds values in `(bounds[i-1], bounds[i]]`.
    Explicit {
        bounds: Vec<f64>,
        counts: Vec<u64>,
    },
    /// OTLP exponential buckets: index `i` holds `(base^i, base^(i+1)]`
    /// (negated for the negative range), `base = 2^(2^-scale)`.
    Exponential {
        scale: i32,
        zero_count: u64,
        zero_threshold: f64,
        positive: (i32, Vec<u64>),
        negative: (i32, Vec<u64>),
    },
}

/// What one histogram interval sends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistDelta {
    pub count: u64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

struct Entry {
    seq: u64,
    start_ns: u64,
    time_ns: u64,
    last: Cumulative,
}

enum Step {
    Whole,
    Since(Cumulative),
}

pub(crate) struct SeriesTable {
    max: usize,
    count_after_ns: u64,
    entries: HashMap<SeriesKey, Entry>,
    by_age: BTreeMap<u64, SeriesKey>,
    next_seq: u64,
}

impl SeriesTable {
    pub fn new(max: usize, count_after_ns: u64) -> SeriesTable {
        SeriesTable { max: max.max(1), count_after_ns, entries: HashMap::new(), by_age: BTreeMap::new(), next_seq: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The change of a cumulative monotonic sum, or `None` to send nothing.
    pub fn sum(&mut self, key: SeriesKey, start_ns: u64, time_ns: u64, value: f64) -> Option<f64> {
        match self.observe(key, start_ns, time_ns, Cumulative::Sum(value))? {
            Step::Since(Cumulative::Sum(prev)) if value >= prev => Some(value - prev),
            _ => Some(value),
        }
    }

    /// The change of a cumulative histogram, or `None` to send nothing.
    pub fn histogram(&mut self, key: SeriesKey, start_ns: u64, time_ns: u64, cur: HistPoint) -> Option<HistDelta> {
        let whole = HistDelta { count: cur.count, sum: cur.sum, min: cur.min, max: cur.max };
        match self.observe(key, start_ns, time_ns, Cumulative::Hist(cur.clone()))? {
            Step::Since(Cumulative::Hist(prev)) => Some(hist_delta(&prev, &cur).unwrap_or(whole)),
            _ => Some(whole),
        }
    }

    /// Records `cur` and says what to send (see the module docs).
    fn observe(&mut self, key: SeriesKey, start_ns: u64, time_ns: u64, cur: Cumulative) -> Option<Step> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(e) = self.entries.get_mut(&key) {
            if start_ns < e.start_ns || (start_ns == e.start_ns && time_ns <= e.time_ns) {
                return None;
            }
            let step = if start_ns > e.start_ns {
                e.last = cur;
                Step::Whole
            } else {
                Step::Since(std::mem::replace(&mut e.last, cur))
            };
            e.start_ns = start_ns;
            e.time_ns = time_ns;
            self.by_age.remove(&e.seq);
            e.seq = seq;
            self.by_age.insert(seq, key);
            return Some(step);
        }
        while self.entries.len() >= self.max {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.count_after_ns = self.count_after_ns.max(evicted.start_ns.saturating_add(1));
            }
        }
        let fresh = start_ns >= self.count_after_ns;
        self.entries.insert(key, Entry { seq, start_ns, time_ns, last: cur });
        self.by_age.insert(seq, key);
        fresh.then_some(Step::Whole)
    }
}

/// `cur − prev`, or `None` when the counts went down (a reset).
fn hist_delta(prev: &HistPoint, cur: &HistPoint) -> Option<HistDelta> {
    let count = cur.count.checked_sub(prev.count)?;
    let sum = cur.sum - prev.sum;
    let bounds = bucket_bounds(&prev.buckets, &cur.buckets)?;
    // A new lowest (highest) value is exactly the cumulative min (max).
    let exact_min = match (prev.min, cur.min) {
        (Some(p), Some(c)) if c < p => Some(c),
        (None, Some(c)) => Some(c),
        _ => None,
    };
    let exact_max = match (prev.max, cur.max) {
        (Some(p), Some(c)) if c > p => Some(c),
        (None, Some(c)) => Some(c),
        _ => None,
    };
    let (lo, hi) = bounds.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let min = exact_min.or_else(|| finite(cur.min.map_or(lo, |m| lo.max(m))));
    let max = exact_max.or_else(|| finite(cur.max.map_or(hi, |m| hi.min(m))));
    let (min, max) = match (min, max) {
        (Some(a), Some(b)) if a > b => (None, None),
        other => other,
    };
    Some(HistDelta { count, sum, min, max })
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The range covered by the buckets that grew: `Some(None)` when the
/// layouts differ or there are none (no estimate), `None` when a bucket
/// count went down (a reset).
fn bucket_bounds(prev: &Buckets, cur: &Buckets) -> Option<Option<(f64, f64)>> {
    match (prev, cur) {
        (Buckets::Explicit { bounds: pb, counts: pc }, Buckets::Explicit { bounds: cb, counts: cc })
            if pb == cb && pc.len() == cc.len() =>
        {
            let mut grew = Vec::new();
            for (i, (p, c)) in pc.iter().zip(cc).enumerate() {
                if c < p {
                    return None;
                }
                if c > p {
                    grew.push(i);
                }
            }
            let (Some(&first), Some(&last)) = (grew.first(), grew.last()) else { return Some(None) };
            let lo = if first == 0 { f64::NEG_INFINITY } else { cb.get(first - 1).copied().unwrap_or(f64::INFINITY) };
            let hi = cb.get(last).copied().unwrap_or(f64::INFINITY);
            Some(Some((lo, hi)))
        }
        (
            Buckets::Exponential { scale: ps, zero_count: pz, positive: pp, negative: pn, .. },
            Buckets::Exponential { scale: cs, zero_count: cz, zero_threshold, positive: cp, negative: cn },
        ) if ps >= cs => {
            // Cumulative exponential histograms only ever lower their scale;
            // the old counts are merged down to the current one.
            // i64: scales are untrusted input and must not overflow.
            let shift = (i64::from(*ps) - i64::from(*cs)).min(63) as u32;
            let pos = exp_growth(&merge(pp, shift), &merge(cp, 0))?;
            let neg = exp_growth(&merge(pn, shift), &merge(cn, 0))?;
            let zero = cz.checked_sub(*pz)? > 0;
            let width = (-f64::from(*cs)).exp2(); // log2 of the base
            let lower = |i: i64| (i as f64 * width).exp2();
            let lo = match (neg.last(), zero, pos.first()) {
                (Some(&k), _, _) => -lower(k + 1),
                (None, true, _) => -zero_threshold,
                (None, false, Some(&k)) => lower(k),
                (None, false, None) => return Some(None),
            };
            let hi = match (pos.last(), zero, neg.first()) {
                (Some(&k), _, _) => lower(k + 1),
                (None, true, _) => *zero_threshold,
                (None, false, Some(&k)) => -lower(k),
                (None, false, None) => return Some(None),
            };
            Some(Some((lo, hi)))
        }
        _ => Some(None),
    }
}

/// Exponential bucket counts by index, indexes shifted down by `shift`
/// scales (two neighbours merge per step).
fn merge((offset, counts): &(i32, Vec<u64>), shift: u32) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for (i, c) in counts.iter().enumerate() {
        if *c > 0 {
            *out.entry((i64::from(*offset) + i as i64) >> shift).or_insert(0) += c;
        }
    }
    out
}

/// Indexes (ascending) whose count grew; `None` if any went down.
fn exp_growth(prev: &BTreeMap<i64, u64>, cur: &BTreeMap<i64, u64>) -> Option<Vec<i64>> {
    if prev.iter().any(|(i, p)| cur.get(i).copied().unwrap_or(0) < *p) {
        return None;
    }
    Some(cur.iter().filter(|(i, c)| **c > prev.get(i).copied().unwrap_or(0)).map(|(i, _)| *i).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    const K: SeriesKey = [1; 16];

    #[test]
    fn sums_follow_the_ledgers_rules() {
        let mut t = SeriesTable::new(10, 0);
        assert_eq!(t.sum(K, 1, 10, 5.0), Some(5.0)); // new since the mapper started
        assert_eq!(t.sum(K, 1, 20, 8.0), Some(3.0));
        assert_eq!(t.sum(K, 1, 20, 8.0), None); // resend
        assert_eq!(t.sum(K, 1, 15, 7.0), None); // stale
        assert_eq!(t.sum(K, 1, 30, 8.0), Some(0.0));
        assert_eq!(t.sum(K, 2, 40, 3.0), Some(3.0)); // restarted sender
        assert_eq!(t.sum(K, 1, 50, 99.0), None); // late point of the old stream
        assert_eq!(t.sum(K, 2, 50, 1.0), Some(1.0)); // drop without a new start
        assert_eq!(t.sum(K, 2, 60, 4.0), Some(3.0));
    }

    #[test]
    fn unknown_old_series_are_a_baseline_and_eviction_keeps_totals_right() {
        let mut t = SeriesTable::new(2, 100);
        assert_eq!(t.sum(K, 50, 110, 1000.0), None); // started before tally: baseline
        assert_eq!(t.sum(K, 50, 120, 1010.0), Some(10.0));
        assert_eq!(t.sum([2; 16], 150, 160, 7.0), Some(7.0)); // started since: all of it
        // A third series evicts K (least recently updated) …
        assert_eq!(t.sum([3; 16], 170, 180, 1.0), Some(1.0));
        assert_eq!(t.len(), 2);
        // … whose return is a baseline again, not 1020 counted twice.
        assert_eq!(t.sum(K, 50, 190, 1020.0), None);
        assert_eq!(t.sum(K, 50, 200, 1025.0), Some(5.0));
    }

    fn explicit(count: u64, sum: f64, min: f64, max: f64, counts: &[u64]) -> HistPoint {
        HistPoint {
            count,
            sum,
            min: Some(min),
            max: Some(max),
            buckets: Buckets::Explicit { bounds: vec![1.0, 10.0, 100.0], counts: counts.to_vec() },
        }
    }

    #[test]
    fn histogram_deltas_are_exact_where_they_can_be_and_bounded_elsewhere() {
        let mut t = SeriesTable::new(10, 0);
        let first = explicit(2, 5.5, 0.5, 5.0, &[1, 1, 0, 0]);
        assert_eq!(
            t.histogram(K, 1, 10, first.clone()),
            Some(HistDelta { count: 2, sum: 5.5, min: Some(0.5), max: Some(5.0) })
        );
        // Same again: a zero delta (the mapper sends nothing for it).
        assert_eq!(t.histogram(K, 1, 20, first).map(|d| d.count), Some(0));
        // Two values in (10, 100]: bounded by that bucket and the cumulative max.
        let d = t.histogram(K, 1, 30, explicit(4, 85.5, 0.5, 50.0, &[1, 1, 2, 0])).unwrap();
        assert_eq!(d, HistDelta { count: 2, sum: 80.0, min: Some(10.0), max: Some(50.0) });
        // A new max is exact.
        let d = t.histogram(K, 1, 40, explicit(5, 285.5, 0.5, 200.0, &[1, 1, 2, 1])).unwrap();
        assert_eq!((d.min, d.max), (Some(100.0), Some(200.0)));
        // Counts going down: a reset, the whole point counts.
        let d = t.histogram(K, 1, 50, explicit(1, 3.0, 3.0, 3.0, &[0, 1, 0, 0])).unwrap();
        assert_eq!(d, HistDelta { count: 1, sum: 3.0, min: Some(3.0), max: Some(3.0) });
    }

    #[test]
    fn absurd_scales_do_not_panic() {
        let exp = |scale| HistPoint {
            count: 1,
            sum: 1.0,
            min: None,
            max: None,
            buckets: Buckets::Exponential {
                scale,
                zero_count: 0,
                zero_threshold: 0.0,
                positive: (i32::MAX, vec![1]),
                negative: (i32::MIN, vec![1]),
            },
        };
        let mut t = SeriesTable::new(10, 0);
        t.histogram(K, 1, 10, exp(i32::MAX));
        let mut more = exp(i32::MIN);
        more.count = 3;
        // Nonsense layouts read as a reset: the whole point counts, nothing panics.
        assert_eq!(t.histogram(K, 1, 20, more).map(|d| d.count), Some(3));
    }

    #[test]
    fn exponential_deltas_merge_scales() {
        let exp = |count, sum, scale, offset, counts: &[u64]| HistPoint {
            count,
            sum,
            min: Some(1.5),
            max: Some(900.0),
            buckets: Buckets::Exponential {
                scale,
                zero_count: 0,
                zero_threshold: 0.0,
                positive: (offset, counts.to_vec()),
                negative: (0, vec![]),
            },
        };
        let mut t = SeriesTable::new(10, 0);
        // Scale 0: bucket i is (2^i, 2^(i+1)]. Values in (1,2] and (512,1024].
        t.histogram(K, 1, 10, exp(2, 901.5, 0, 0, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 1])).unwrap();
        // Scale -1 (buckets of 4x): old index 0 → 0, 9 → 4; a new value in (16, 64].
        let d = t.histogram(K, 1, 20, exp(3, 931.5, -1, 0, &[1, 0, 1, 0, 1])).unwrap();
        assert_eq!(d, HistDelta { count: 1, sum: 30.0, min: Some(16.0), max: Some(64.0) });
    }
}

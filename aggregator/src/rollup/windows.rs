//! Open windows in memory: per window, a hash table of series. The hot path
//! (a span of a series already seen) hashes borrowed strings and allocates
//! nothing; a new series is checked against the cardinality limits first.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::BuildHasher,
};

use hashbrown::{HashTable, hash_table::Entry};
use tally_core::{
    TenantId, metric_names,
    rollup::{ALL, OVERFLOW, OVERFLOW_ATTRIBUTES, RollupKind, RollupRow, RollupValues, SeriesKey},
};

/// A series named by borrowed parts, for lookups without allocating.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'a> {
    pub tenant: &'a TenantId,
    pub kind: RollupKind,
    pub service: &'a str,
    pub name: &'a str,
    pub detail: &'a str,
}

impl SeriesRef<'_> {
    fn matches(&self, k: &SeriesKey) -> bool {
        self.kind == k.kind
            && self.name == &*k.name
            && self.service == &*k.service
            && self.detail == &*k.detail
            && self.tenant == &k.tenant
    }

    fn to_owned(self) -> SeriesKey {
        SeriesKey {
            tenant: self.tenant.clone(),
            kind: self.kind,
            service: self.service.into(),
            name: self.name.into(),
            detail: self.detail.into(),
        }
    }

    /// The limit group of the per-metric limit: the metric name for
    /// metrics, the service for spans and logs.
    fn group(&self) -> &str {
        match self.kind {
            RollupKind::Span | RollupKind::Log => self.service,
            RollupKind::Gauge | RollupKind::Histogram => self.name,
        }
    }
}

fn hash_of(
    state: &hashbrown::DefaultHashBuilder,
    tenant: &str,
    kind: RollupKind,
    service: &str,
    name: &str,
    detail: &str,
) -> u64 {
    state.hash_one((tenant, kind as u8, service, name, detail))
}

/// Cardinality limits, per window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_tenant: u32,
    pub per_metric: u32,
}

#[derive(Default)]
struct Window {
    /// When the first item arrived (the stage's clock).
    opened_ms: i64,
    series: HashTable<(SeriesKey, RollupValues)>,
    per_tenant: HashMap<TenantId, u32>,
    per_group: HashMap<(TenantId, RollupKind, Box<str>), u32>,
    /// Tenants already warned about in this window (one log line each).
    warned: HashSet<TenantId>,
}

/// The open windows, keyed by start.
pub struct Windows {
    width_ms: i64,
    limits: Limits,
    hasher: hashbrown::DefaultHashBuilder,
    open: BTreeMap<i64, Window>,
    series: usize,
    clock_ms: i64,
}

impl Windows {
    pub fn new(width_ms: i64, limits: Limits) -> Windows {
        Windows { width_ms, limits, hasher: Default::default(), open: BTreeMap::new(), series: 0, clock_ms: 0 }
    }

    pub fn width_ms(&self) -> i64 {
        self.width_ms
    }

    /// The time windows opened from now on record as their opening.
    pub fn set_clock(&mut self, now_ms: i64) {
        self.clock_ms = now_ms;
    }

    /// Series held across open windows (what memory is proportional to).
    pub fn series(&self) -> usize {
        self.series
    }

    /// Applies `f` to the values of series `key` in the window holding
    /// `time_ms`, creating the series — or, beyond a limit, using the
    /// overflow series instead.
    pub fn update(&mut self, key: SeriesRef<'_>, time_ms: i64, f: impl FnOnce(&mut RollupValues)) {
        let start = time_ms.div_euclid(self.width_ms) * self.width_ms;
        let clock = self.clock_ms;
        let window = self.open.entry(start).or_insert_with(|| Window { opened_ms: clock, ..Window::default() });
        let hasher = &self.hasher;
        let hash = hash_of(hasher, key.tenant.as_str(), key.kind, key.service, key.name, key.detail);
        let rehash = |(k, _): &(SeriesKey, RollupValues)| {
            hash_of(hasher, k.tenant.as_str(), k.kind, &k.service, &k.name, &k.detail)
        };
        match window.series.entry(hash, |(k, _)| key.matches(k), rehash) {
            Entry::Occupied(mut o) => f(&mut o.get_mut().1),
            // The tenant's own aggregate is never folded (one per tenant).
            Entry::Vacant(v) if key.service == ALL && key.detail == ALL => {
                f(&mut v.insert((key.to_owned(), RollupValues::default())).get_mut().1);
                self.series += 1;
            }
            Entry::Vacant(v) => {
                let tenant_n = window.per_tenant.get(key.tenant).copied().unwrap_or(0);
                let group = (key.tenant.clone(), key.kind, Box::<str>::from(key.group()));
                let group_n = window.per_group.get(&group).copied().unwrap_or(0);
                let over = if tenant_n >= self.limits.per_tenant {
                    Some("tenant")
                } else if group_n >= self.limits.per_metric {
                    Some("metric")
                } else {
                    None
                };
                match over {
                    None => {
                        let mut o = v.insert((key.to_owned(), RollupValues::default()));
                        f(&mut o.get_mut().1);
                        *window.per_tenant.entry(key.tenant.clone()).or_default() += 1;
                        *window.per_group.entry(group).or_default() += 1;
                        self.series += 1;
                    }
                    Some(limit) => {
                        metrics::counter!(metric_names::ROLLUP_OVERFLOW, "kind" => key.kind.as_str(), "limit" => limit)
                            .increment(1);
                        if window.warned.insert(key.tenant.clone()) {
                            tracing::warn!(
                                tenant = %key.tenant, kind = key.kind.as_str(), limit, series = ?key.to_owned(),
                                "series limit reached: folding new series into the overflow series for this window"
                            );
                        }
                        let overflow = overflow_of(&key, limit);
                        let hash = hash_of(
                            hasher,
                            key.tenant.as_str(),
                            key.kind,
                            &overflow.service,
                            &overflow.name,
                            &overflow.detail,
                        );
                        let entry = window.series.entry(hash, |(k, _)| *k == overflow, rehash);
                        let values = match entry {
                            Entry::Occupied(o) => o.into_mut(),
                            Entry::Vacant(v) => {
                                self.series += 1;
                                v.insert((overflow, RollupValues::default())).into_mut()
                            }
                        };
                        f(&mut values.1);
                    }
                }
            }
        }
    }

    /// Takes out the series of the windows that start before `before_ms`
    /// and opened at or before `opened_by_ms`, oldest window first, as at
    /// most `max_rows` rows; a window goes once all its series are taken.
    /// The second bound makes late data (a window reopened after it was
    /// written, e.g. by a client whose clock is behind) gather for a while
    /// rather than cost a database merge on every flush. Series a partial
    /// take left clean are dropped here: their rows are already written.
    pub fn take_before(&mut self, before_ms: i64, opened_by_ms: i64, max_rows: usize) -> Vec<RollupRow> {
        let closed: Vec<i64> = self.closed(before_ms, opened_by_ms).collect();
        let mut rows = Vec::with_capacity(max_rows.min(self.series));
        for start in closed {
            let Some(window) = self.open.get_mut(&start) else { continue };
            let mut left = max_rows - rows.len();
            // Clean series go whatever the limit: they cost no row.
            let taken = window.series.extract_if(|(_, values)| {
                let take = values.is_empty() || left > 0;
                left -= usize::from(!values.is_empty() && left > 0);
                take
            });
            let mut n = 0;
            for (key, values) in taken {
                n += 1;
                if !values.is_empty() {
                    rows.push(RollupRow { key, start_ms: start, values });
                }
            }
            self.series -= n;
            if window.series.is_empty() {
                self.open.remove(&start);
            }
            if rows.len() == max_rows {
                break;
            }
        }
        rows
    }

    /// The starts of the windows [`Windows::take_before`] would take from,
    /// oldest first.
    pub fn closed(&self, before_ms: i64, opened_by_ms: i64) -> impl Iterator<Item = i64> + '_ {
        self.open.range(..before_ms).filter(move |(_, w)| w.opened_ms <= opened_by_ms).map(|(&start, _)| start)
    }

    /// What the open windows gathered since it was last taken, as at most
    /// `max_rows` rows, leaving the windows open (their series still count
    /// against the limits): written and merged into the stored rows, this is
    /// how queries and alerts see the current window before it closes. Taken
    /// series are clean until they gather again, so calls in a row go
    /// through all of them; fewer than `max_rows` rows means all were taken.
    pub fn take_partial(&mut self, max_rows: usize) -> Vec<RollupRow> {
        let mut rows = Vec::with_capacity(max_rows.min(self.series));
        for (&start, window) in &mut self.open {
            for (key, values) in window.series.iter_mut() {
                if rows.len() == max_rows {
                    return rows;
                }
                if !values.is_empty() {
                    rows.push(RollupRow { key: key.clone(), start_ms: start, values: std::mem::take(values) });
                }
            }
        }
        rows
    }

    /// Every open window, as rows (shutdown).
    pub fn take_all(&mut self) -> Vec<RollupRow> {
        self.take_before(i64::MAX, i64::MAX, usize::MAX)
    }
}

/// The series that takes what a limit keeps out: per metric, the metric's
/// overflow series; per tenant, one series per kind.
fn overflow_of(key: &SeriesRef<'_>, limit: &str) -> SeriesKey {
    if key.detail == ALL {
        // A service's aggregate: folds into an aggregate of its own, so the
        // operations' overflow series does not count the same spans twice.
        return SeriesKey {
            tenant: key.tenant.clone(),
            kind: key.kind,
            service: OVERFLOW.into(),
            name: ALL.into(),
            detail: ALL.into(),
        };
    }
    let metric = matches!(key.kind, RollupKind::Gauge | RollupKind::Histogram);
    SeriesKey {
        tenant: key.tenant.clone(),
        kind: key.kind,
        service: OVERFLOW.into(),
        name: if metric && limit == "metric" { key.name.into() } else { OVERFLOW.into() },
        detail: if metric { OVERFLOW_ATTRIBUTES.into() } else { OVERFLOW.into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(w: &mut Windows, tenant: &TenantId, op: &str, t: i64, us: u64) {
        let key = SeriesRef { tenant, kind: RollupKind::Span, service: "api", name: op, detail: "server" };
        w.update(key, t, |v| v.add_span(us, false));
    }

    #[test]
    fn windows_split_by_time_and_series() {
        let t = TenantId::parse("acme").unwrap();
        let mut w = Windows::new(60_000, Limits { per_tenant: 100, per_metric: 100 });
        span(&mut w, &t, "GET /a", 1_000, 5);
        span(&mut w, &t, "GET /a", 59_999, 7);
        span(&mut w, &t, "GET /b", 60_000, 9);
        assert_eq!(w.series(), 2);
        let first = w.take_before(60_000, i64::MAX, usize::MAX);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].values.count, first[0].values.sum), (2, 12.0));
        let rest = w.take_all();
        assert_eq!((rest.len(), rest[0].start_ms, &*rest[0].key.name), (1, 60_000, "GET /b"));
        assert_eq!(w.series(), 0);
    }

    #[test]
    fn partial_takes_add_up_to_the_whole_window() {
        let t = TenantId::parse("acme").unwrap();
        let mut w = Windows::new(60_000, Limits { per_tenant: 1, per_metric: 100 });
        span(&mut w, &t, "GET /a", 1_000, 5);
        let first = w.take_partial(10);
        assert_eq!((first.len(), first[0].values.count), (1, 1));
        assert!(w.take_partial(10).is_empty(), "nothing new, nothing written");
        span(&mut w, &t, "GET /a", 2_000, 7);
        span(&mut w, &t, "GET /b", 3_000, 9); // over the limit: overflow, as before the partial take
        let rest = w.take_all();
        let count = |name: &str| rest.iter().find(|r| &*r.key.name == name).map(|r| r.values.count);
        assert_eq!((count("GET /a"), count(OVERFLOW)), (Some(1), Some(1)));
        assert_eq!(first[0].values.sum + rest.iter().map(|r| r.values.sum).sum::<f64>(), 21.0);
    }

    #[test]
    fn partial_takes_in_chunks_go_through_every_series_once() {
        let t = TenantId::parse("acme").unwrap();
        let mut w = Windows::new(60_000, Limits { per_tenant: 1000, per_metric: 100 });
        for i in 0..25 {
            span(&mut w, &t, &format!("GET /{i}"), 1_000, 5);
            span(&mut w, &t, &format!("GET /{i}"), 61_000, 5); // and in the next window
        }
        let mut names = std::collections::HashSet::new();
        let mut chunks = Vec::new();
        loop {
            let rows = w.take_partial(20);
            chunks.push(rows.len());
            for r in &rows {
                assert!(names.insert((r.start_ms, r.key.name.clone())), "taken twice: {:?}", r.key);
            }
            if rows.len() < 20 {
                break;
            }
        }
        assert_eq!(chunks, [20, 20, 10]);
        assert_eq!(names.len(), 50);
        assert_eq!(w.series(), 50, "the windows stay open");
    }

    #[test]
    fn series_a_partial_take_left_clean_do_not_count_against_a_chunk() {
        let t = TenantId::parse("acme").unwrap();
        let mut w = Windows::new(60_000, Limits { per_tenant: 1000, per_metric: 100 });
        for i in 0..25 {
            span(&mut w, &t, &format!("GET /{i}"), 1_000, 5);
        }
        assert_eq!(w.take_partial(100).len(), 25);
        span(&mut w, &t, "GET /0", 2_000, 5);
        // One chunk of 1 row: the 24 clean series go with it, not one per call.
        let rows = w.take_before(60_000, i64::MAX, 1);
        assert_eq!((rows.len(), &*rows[0].key.name), (1, "GET /0"));
        assert_eq!((w.series(), w.closed(60_000, i64::MAX).count()), (0, 0));
    }

    #[test]
    fn reopened_windows_wait_until_they_are_old_enough() {
        let t = TenantId::parse("acme").unwrap();
        let mut w = Windows::new(60_000, Limits { per_tenant: 100, per_metric: 100 });
        w.set_clock(1_000_000);
        span(&mut w, &t, "GET /a", 0, 5); // a long-closed window, opened now
        assert!(w.take_before(500_000, 1_000_000 - 10_000, 10).is_empty());
        assert_eq!(w.take_before(500_000, 1_000_000, 10).len(), 1);
    }

    #[test]
    fn limits_fold_new_series_into_overflow() {
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let mut w = Windows::new(60_000, Limits { per_tenant: 3, per_metric: 100 });
        for i in 0..10 {
            span(&mut w, &a, &format!("op{i}"), 0, 1);
        }
        span(&mut w, &a, "op0", 0, 1); // existing series still counted on its own
        span(&mut w, &b, "op0", 0, 1); // other tenants unaffected
        let rows = w.take_all();
        let of = |t: &TenantId, name: &str| {
            rows.iter().find(|r| r.key.tenant == *t && &*r.key.name == name).map(|r| r.values.count)
        };
        assert_eq!(of(&a, "op0"), Some(2));
        assert_eq!(of(&a, OVERFLOW), Some(7));
        assert_eq!(of(&b, "op0"), Some(1));
        assert_eq!(rows.iter().filter(|r| r.key.tenant == a).map(|r| r.values.count).sum::<u64>(), 11);
    }
}

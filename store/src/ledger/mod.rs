//! The usage ledger: exactly-once inserts keyed by (tenant, source, event
//! id, meter) and the hourly rollup maintained in the same transaction.
//!
//! Bulk statements differ by dialect (PostgreSQL binds whole columns as
//! arrays through `UNNEST`; SQLite takes multi-row `VALUES`), so each backend
//! has its own statements below; the steps and everything computed in memory
//! are shared.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{PgConnection, Row, SqliteConnection};
use tally_core::{CumulativePoint, TenantId, UsageOutcome, UsageRecord, hour_start};

use crate::{Result, Store, store::BeginWrite};

/// The ledger's unique key of a record.
type Key<'a> = (&'a str, &'a str, &'a str, &'a str);

fn key(r: &UsageRecord) -> Key<'_> {
    (r.tenant.as_str(), &r.source, &r.event_id, &r.meter)
}

/// Hourly rollup delta of the records inserted by one transaction.
#[derive(Debug, Clone, PartialEq)]
struct HourlyDelta {
    sum: f64,
    count: i64,
    min: f64,
    max: f64,
    last_value: f64,
    last_time_ms: i64,
}

type HourlyKey<'a> = (&'a str, &'a str, i64, &'a str);

fn hourly_deltas<'a>(inserted: impl Iterator<Item = &'a UsageRecord>) -> BTreeMap<HourlyKey<'a>, HourlyDelta> {
    // BTreeMap: rows are upserted in key order, so concurrent writers lock
    // them in the same order and cannot deadlock.
    let mut deltas: BTreeMap<HourlyKey<'a>, HourlyDelta> = BTreeMap::new();
    for r in inserted {
        let k = (r.tenant.as_str(), &*r.meter, hour_start(r.event_time_ms), r.group_key.as_str());
        let d = deltas.entry(k).or_insert(HourlyDelta {
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last_value: r.value,
            last_time_ms: i64::MIN,
        });
        d.sum += r.value;
        d.count += 1;
        d.min = d.min.min(r.value);
        d.max = d.max.max(r.value);
        if r.event_time_ms >= d.last_time_ms {
            d.last_value = r.value;
            d.last_time_ms = r.event_time_ms;
        }
    }
    deltas
}

/// A cumulative stream's last point: (start time, time, value); time -1
/// when the row is only a lock target.
type StreamState = (i64, i64, f64);

/// Turns cumulative points into delta records against `state`, updating it.
/// Points at or before a stream's last time are resends or stale: nothing.
/// A new start time or a lower value is a reset: the whole value counts.
/// A delta above the point's `max_value` is not billed (the stream still
/// moves on). A stream an earlier version stored under its legacy id
/// continues from that state, and the legacy row is kept in step (replicas
/// of the earlier version may still read it). Returns the delta records
/// (zero deltas dropped) and the changed streams.
fn apply_cumulative(
    state: &mut HashMap<String, StreamState>,
    points: &[CumulativePoint],
) -> (Vec<UsageRecord>, Vec<String>) {
    let mut legacy_rows: Vec<(&str, &str)> = Vec::new();
    for p in points {
        let Some(legacy) = p.legacy_stream_id.as_deref() else { continue };
        let Some(&old) = state.get(legacy) else { continue };
        legacy_rows.push((legacy, &p.stream_id));
        if old.1 >= 0 && state.get(&p.stream_id).is_none_or(|s| s.1 < old.1) {
            state.insert(p.stream_id.clone(), old);
        }
    }
    let mut order: Vec<&CumulativePoint> = points.iter().collect();
    order.sort_by(|a, b| (&a.stream_id, a.time_ns).cmp(&(&b.stream_id, b.time_ns)));
    let mut records = Vec::new();
    let mut changed = Vec::new();
    for p in order {
        let total = p.record.value;
        let delta = match state.get(&p.stream_id) {
            Some(&(_, time, _)) if time >= 0 && p.time_ns <= time => continue,
            Some(&(start, time, last)) if time >= 0 && start == p.start_time_ns && total >= last => total - last,
            _ => total,
        };
        state.insert(p.stream_id.clone(), (p.start_time_ns, p.time_ns, total));
        if changed.last() != Some(&p.stream_id) {
            changed.push(p.stream_id.clone());
        }
        if delta > p.max_value {
            tracing::warn!(meter = %p.record.meter, tenant = %p.record.tenant, delta, max = p.max_value,
                "cumulative usage delta above the meter's max_value; not billed");
        } else if delta > 0.0 {
            records.push(UsageRecord { value: delta, ..p.record.clone() });
        }
    }
    legacy_rows.sort_unstable();
    legacy_rows.dedup();
    for (legacy, id) in legacy_rows {
        if let Some(&now) = state.get(id).filter(|_| changed.iter().any(|c| c == id)) {
            state.insert(legacy.to_owned(), now);
            changed.push(legacy.to_owned());
        }
    }
    (records, changed)
}

impl Store {
    /// Writes `records` in one transaction and says, for each, whether it was
    /// stored now, stored before with the same content (duplicate), or stored
    /// before with different content (conflict). Only accepted records reach
    /// the hourly rollup. Unknown tenants are created on first sight.
    ///
    /// `cumulative` points are turned into deltas against their streams in
    /// the same transaction (their outcomes are not reported: a resent or
    /// stale point simply bills nothing).
    pub async fn record_usage(
        &self,
        records: &[UsageRecord],
        cumulative: &[CumulativePoint],
        now_ms: i64,
    ) -> Result<Vec<UsageOutcome>> {
        // The same key twice in one batch: the first is written, the others
        // are judged against it.
        let mut first_of: HashMap<Key<'_>, usize> = HashMap::with_capacity(records.len());
        let mut unique: Vec<&UsageRecord> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            first_of.entry(key(r)).or_insert_with(|| {
                unique.push(r);
                i
            });
        }
        // Sorted, like the rollup rows, so concurrent writers insert in the
        // same order.
        unique.sort_by(|a, b| key(a).cmp(&key(b)));
        let (inserted, existing) = match self {
            Store::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                let written = write_usage(&mut *tx, &unique, cumulative, now_ms).await?;
                tx.commit().await?;
                written
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let written = write_usage(&mut *tx, &unique, cumulative, now_ms).await?;
                tx.commit().await?;
                written
            }
        };

        Ok(records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let k = key(r);
                let first = first_of[&k];
                let stored_hash = if inserted.contains(&k) {
                    if first == i {
                        return UsageOutcome::Accepted;
                    }
                    &records[first].content_hash
                } else {
                    match existing.get(&owned(k)) {
                        Some(h) => h,
                        // Deleted between insert and lookup: cannot happen in
                        // one transaction; treat as conflict rather than count.
                        None => return UsageOutcome::Conflict,
                    }
                };
                let legacy_hash = r.legacy.as_ref().and_then(|l| l.content_hash.as_ref());
                if *stored_hash == r.content_hash || Some(stored_hash) == legacy_hash {
                    UsageOutcome::Duplicate
                } else {
                    UsageOutcome::Conflict
                }
            })
            .collect())
    }
}

type OwnedKey = (String, String, String, String);

/// One dialect's statement for each step of a ledger write (PostgreSQL
/// binds whole columns as arrays, SQLite takes multi-row `VALUES`; see
/// [`pg`] and [`lite`]).
trait LedgerSql: Send {
    fn cumulative_deltas(
        &mut self,
        points: &[CumulativePoint],
    ) -> impl Future<Output = Result<Vec<UsageRecord>>> + Send;
    fn ensure_tenants(&mut self, tenants: &[&TenantId], now_ms: i64) -> impl Future<Output = Result<()>> + Send;
    fn insert_events<'a>(
        &mut self,
        rows: &[&'a UsageRecord],
        now_ms: i64,
    ) -> impl Future<Output = Result<HashSet<Key<'a>>>> + Send;
    fn stored_hashes(
        &mut self,
        rows: &[&UsageRecord],
    ) -> impl Future<Output = Result<HashMap<OwnedKey, String>>> + Send;
    fn upsert_hourly(
        &mut self,
        deltas: &BTreeMap<HourlyKey<'_>, HourlyDelta>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Marks (tenant, meter, hour) changed for the Stripe sync, bumping the
    /// version of a row already there. `hours` is sorted and distinct.
    fn mark_changed(&mut self, hours: &[(&str, &str, i64)]) -> impl Future<Output = Result<()>> + Send;
}

/// The steps of a ledger write, in one transaction on either backend:
/// cumulative points become deltas (updating their streams), tenants are
/// created on first sight, records are inserted (the unique key decides
/// what is new; records an earlier version stored under a legacy id are
/// judged against that row instead), the hourly rollup takes what was
/// inserted, and the hours it changed are marked for the Stripe sync (in
/// the same transaction, so none is missed). Returns the keys inserted and the stored hashes of the others.
async fn write_usage<'r, C: LedgerSql>(
    tx: &mut C,
    unique: &[&'r UsageRecord],
    cumulative: &[CumulativePoint],
    now_ms: i64,
) -> Result<(HashSet<Key<'r>>, HashMap<OwnedKey, String>)> {
    let deltas = tx.cumulative_deltas(cumulative).await?;
    let mut delta_refs: Vec<&UsageRecord> = deltas.iter().collect();
    delta_refs.sort_by(|a, b| key(a).cmp(&key(b)));
    let mut tenants: Vec<&TenantId> = unique.iter().chain(&delta_refs).map(|r| &r.tenant).collect();
    tenants.sort();
    tenants.dedup();
    tx.ensure_tenants(&tenants, now_ms).await?;
    let legacy_probes = legacy_probes(unique);
    let probes: Vec<&UsageRecord> = legacy_probes.iter().map(|(_, p)| p).collect();
    let mut existing = tx.stored_hashes(&probes).await?;
    let mut to_insert = unique.to_vec();
    if !existing.is_empty() {
        existing = legacy_probes
            .iter()
            .filter_map(|(k, p)| Some((k.clone(), existing.get(&owned(key(p)))?.clone())))
            .collect();
        to_insert.retain(|r| !existing.contains_key(&owned(key(r))));
    }
    let inserted = tx.insert_events(&to_insert, now_ms).await?;
    let inserted_deltas = tx.insert_events(&delta_refs, now_ms).await?;
    let stored: Vec<&UsageRecord> = to_insert.iter().copied().filter(|r| !inserted.contains(&key(r))).collect();
    existing.extend(tx.stored_hashes(&stored).await?);
    let hourly = hourly_deltas(
        unique
            .iter()
            .copied()
            .filter(|r| inserted.contains(&key(r)))
            .chain(delta_refs.iter().copied().filter(|r| inserted_deltas.contains(&key(r)))),
    );
    tx.upsert_hourly(&hourly).await?;
    let mut changed: Vec<(&str, &str, i64)> = hourly.keys().map(|k| (k.0, k.1, k.2)).collect();
    changed.dedup();
    tx.mark_changed(&changed).await?;
    Ok((inserted, existing))
}

/// For each record carrying a legacy event id: its own key, and a copy of it
/// under the legacy id (to look that row up).
fn legacy_probes(records: &[&UsageRecord]) -> Vec<(OwnedKey, UsageRecord)> {
    records
        .iter()
        .filter_map(|r| {
            let id = r.legacy.as_ref()?.event_id.as_ref()?;
            Some((owned(key(r)), UsageRecord { event_id: id.clone(), legacy: None, ..(*r).clone() }))
        })
        .collect()
}

fn owned(k: Key<'_>) -> OwnedKey {
    (k.0.to_owned(), k.1.to_owned(), k.2.to_owned(), k.3.to_owned())
}

mod lite;
mod pg;

#[cfg(test)]
mod tests {
    use super::*;

    fn point(stream: &str, start: i64, time: i64, total: f64) -> CumulativePoint {
        CumulativePoint {
            record: UsageRecord {
                tenant: TenantId::parse("t").unwrap(),
                source: "otlp/metric".into(),
                event_id: format!("{stream}:{start}:{time}"),
                meter: "m".into(),
                value: total,
                distinct_key: None,
                event_time_ms: time,
                group_key: "{}".into(),
                content_hash: String::new(),
                legacy: None,
            },
            stream_id: stream.into(),
            legacy_stream_id: None,
            max_value: 1e15,
            start_time_ns: start,
            time_ns: time,
        }
    }

    #[test]
    fn cumulative_points_become_deltas_once() {
        let mut state = HashMap::new();
        let billed = |state: &mut HashMap<_, _>, pts: &[CumulativePoint]| {
            apply_cumulative(state, pts).0.iter().map(|r| r.value).sum::<f64>()
        };
        // 5, 12, 20 in one process: 20 in all, whatever the batching.
        assert_eq!(billed(&mut state, &[point("a", 1, 10, 5.0), point("a", 1, 20, 12.0)]), 12.0);
        assert_eq!(billed(&mut state, &[point("a", 1, 20, 12.0)]), 0.0); // resend
        assert_eq!(billed(&mut state, &[point("a", 1, 15, 9.0)]), 0.0); // stale
        assert_eq!(billed(&mut state, &[point("a", 1, 30, 20.0)]), 8.0);
        // Restarted process: new start time, counts from zero again.
        assert_eq!(billed(&mut state, &[point("a", 2, 40, 3.0)]), 3.0);
        // A drop without a new start time is a reset too.
        assert_eq!(billed(&mut state, &[point("a", 2, 50, 1.0)]), 1.0);
        // A lock-target row (time -1) is no state yet.
        state.insert("b".into(), (-1, -1, 0.0));
        assert_eq!(billed(&mut state, &[point("b", 7, 70, 4.0)]), 4.0);
    }

    #[test]
    fn a_stream_under_its_legacy_id_continues_and_big_deltas_are_not_billed() {
        let mut state = HashMap::new();
        state.insert("old".to_owned(), (1, 10, 100.0));
        state.insert("new".to_owned(), (-1, -1, 0.0)); // the lock target just created
        let mut p = point("new", 1, 20, 130.0);
        p.legacy_stream_id = Some("old".into());
        let (records, changed) = apply_cumulative(&mut state, &[p]);
        assert_eq!(records.iter().map(|r| r.value).sum::<f64>(), 30.0);
        // Both rows move on, so a replica of the earlier version stays right.
        assert_eq!((state["new"], state["old"]), ((1, 20, 130.0), (1, 20, 130.0)));
        assert_eq!(changed, ["new", "old"]);
        let mut big = point("new", 1, 30, 130.0 + 2e15);
        big.max_value = 1e15;
        assert!(apply_cumulative(&mut state, &[big]).0.is_empty());
        assert_eq!(state["new"].1, 30); // the stream moved past it
    }
}

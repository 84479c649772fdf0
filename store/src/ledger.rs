//! The usage ledger: exactly-once inserts keyed by (tenant, source, event
//! id, meter) and the hourly rollup maintained in the same transaction.
//!
//! Bulk statements differ by dialect (PostgreSQL binds whole columns as
//! arrays through `UNNEST`; SQLite takes multi-row `VALUES`), so each backend
//! has its own statements below; the steps and everything computed in memory
//! are shared.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{PgConnection, Row, SqliteConnection};
use tally_core::{Aggregation, CumulativePoint, TenantId, UsageOutcome, UsageRecord, hour_start};

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
        // The same steps on either backend, in one transaction: cumulative
        // points become deltas (updating their streams), tenants are created
        // on first sight, records are inserted (the unique key decides what
        // is new), the rollup takes what was inserted.
        macro_rules! write_usage {
            ($db:ident, $pool:expr) => {{
                let mut tx = $pool.begin_write().await?;
                let deltas = $db::cumulative_deltas(&mut tx, cumulative).await?;
                let mut delta_refs: Vec<&UsageRecord> = deltas.iter().collect();
                delta_refs.sort_by(|a, b| key(a).cmp(&key(b)));
                let mut tenants: Vec<&TenantId> = unique.iter().chain(&delta_refs).map(|r| &r.tenant).collect();
                tenants.sort();
                tenants.dedup();
                $db::ensure_tenants(&mut tx, &tenants, now_ms).await?;
                // Records an earlier version stored under their legacy id
                // are not inserted again: they are judged against that row.
                let legacy_probes = legacy_probes(&unique);
                let probes: Vec<&UsageRecord> = legacy_probes.iter().map(|(_, p)| p).collect();
                let mut existing = $db::stored_hashes(&mut tx, &probes).await?;
                let mut to_insert = unique.clone();
                if !existing.is_empty() {
                    existing = legacy_probes
                        .iter()
                        .filter_map(|(k, p)| Some((k.clone(), existing.get(&owned(key(p)))?.clone())))
                        .collect();
                    to_insert.retain(|r| !existing.contains_key(&owned(key(r))));
                }
                let inserted = $db::insert_events(&mut tx, &to_insert, now_ms).await?;
                let inserted_deltas = $db::insert_events(&mut tx, &delta_refs, now_ms).await?;
                let stored: Vec<&UsageRecord> =
                    to_insert.iter().copied().filter(|r| !inserted.contains(&key(r))).collect();
                existing.extend($db::stored_hashes(&mut tx, &stored).await?);
                let hourly = hourly_deltas(
                    unique
                        .iter()
                        .copied()
                        .filter(|r| inserted.contains(&key(r)))
                        .chain(delta_refs.iter().copied().filter(|r| inserted_deltas.contains(&key(r)))),
                );
                $db::upsert_hourly(&mut tx, &hourly).await?;
                tx.commit().await?;
                (inserted, existing)
            }};
        }
        let (inserted, existing) = match self {
            Store::Postgres(pool) => write_usage!(pg, pool),
            Store::Sqlite(pool) => write_usage!(lite, pool),
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

/// PostgreSQL: whole columns bound as arrays, one statement per step.
mod pg {
    use super::*;

    pub async fn cumulative_deltas(tx: &mut PgConnection, points: &[CumulativePoint]) -> Result<Vec<UsageRecord>> {
        if points.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&str> = points.iter().map(|p| p.stream_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        // Rows an earlier version kept under legacy ids are read (and
        // locked) too, never created.
        let mut read: Vec<&str> =
            ids.iter().copied().chain(points.iter().filter_map(|p| p.legacy_stream_id.as_deref())).collect();
        read.sort_unstable();
        read.dedup();
        // A row per stream to lock, even for new streams, so two writers
        // cannot both take a new stream's first point as its whole value.
        sqlx::query(
            "INSERT INTO usage_streams (stream_id, start_time_ns, time_ns, value) \
             SELECT id, -1, -1, 0 FROM UNNEST($1::text[]) AS t(id) ORDER BY id ON CONFLICT (stream_id) DO NOTHING",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT stream_id, start_time_ns, time_ns, value FROM usage_streams \
             WHERE stream_id = ANY($1) ORDER BY stream_id FOR UPDATE",
        )
        .bind(&read)
        .fetch_all(&mut *tx)
        .await?;
        let mut state = HashMap::new();
        for r in &rows {
            state.insert(r.try_get::<String, _>(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
        }
        let (records, changed) = apply_cumulative(&mut state, points);
        let st: Vec<_> = changed.iter().map(|id| (id.as_str(), state[id])).collect();
        sqlx::query(
            "UPDATE usage_streams SET start_time_ns = u.s, time_ns = u.t, value = u.v \
             FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::float8[]) AS u(id, s, t, v) \
             WHERE usage_streams.stream_id = u.id",
        )
        .bind(st.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(st.iter().map(|(_, s)| s.0).collect::<Vec<_>>())
        .bind(st.iter().map(|(_, s)| s.1).collect::<Vec<_>>())
        .bind(st.iter().map(|(_, s)| s.2).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        Ok(records)
    }

    pub async fn ensure_tenants(tx: &mut PgConnection, tenants: &[&TenantId], now_ms: i64) -> Result<()> {
        let ids: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        sqlx::query(
            "INSERT INTO tenants (id, created_ms) SELECT id, $2 FROM UNNEST($1::text[]) AS t(id) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    pub async fn insert_events<'a>(
        tx: &mut PgConnection,
        rows: &[&'a UsageRecord],
        now_ms: i64,
    ) -> Result<HashSet<Key<'a>>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let col = |f: fn(&UsageRecord) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        let inserted = sqlx::query(
            "INSERT INTO usage_events (tenant, source, event_id, meter, value, distinct_key, \
                 event_time_ms, group_key, content_hash, received_ms) \
             SELECT t, s, e, m, v, d, ts, g, h, $10 FROM UNNEST($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::float8[], $6::text[], $7::int8[], $8::text[], $9::text[]) \
                 AS x(t, s, e, m, v, d, ts, g, h) \
             ON CONFLICT DO NOTHING \
             RETURNING tenant, source, event_id, meter",
        )
        .bind(col(|r| r.tenant.as_str()))
        .bind(col(|r| &r.source))
        .bind(col(|r| &r.event_id))
        .bind(col(|r| &r.meter))
        .bind(rows.iter().map(|r| r.value).collect::<Vec<f64>>())
        .bind(rows.iter().map(|r| r.distinct_key.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(rows.iter().map(|r| r.event_time_ms).collect::<Vec<i64>>())
        .bind(col(|r| &r.group_key))
        .bind(col(|r| &r.content_hash))
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let returned: HashSet<OwnedKey> = inserted
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(rows.iter().map(|r| key(r)).filter(|k| returned.contains(&owned(*k))).collect())
    }

    pub async fn stored_hashes(tx: &mut PgConnection, rows: &[&UsageRecord]) -> Result<HashMap<OwnedKey, String>> {
        if rows.is_empty() {
            return Ok(HashMap::new());
        }
        let col = |f: fn(&UsageRecord) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        let found = sqlx::query(
            "SELECT u.tenant, u.source, u.event_id, u.meter, u.content_hash FROM usage_events u \
             JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS k(t, s, e, m) \
               ON u.tenant = k.t AND u.source = k.s AND u.event_id = k.e AND u.meter = k.m",
        )
        .bind(col(|r| r.tenant.as_str()))
        .bind(col(|r| &r.source))
        .bind(col(|r| &r.event_id))
        .bind(col(|r| &r.meter))
        .fetch_all(&mut *tx)
        .await?;
        found
            .iter()
            .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?), row.try_get(4)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn upsert_hourly(tx: &mut PgConnection, deltas: &BTreeMap<HourlyKey<'_>, HourlyDelta>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let keys: Vec<_> = deltas.keys().collect();
        let vals: Vec<_> = deltas.values().collect();
        sqlx::query(
            "INSERT INTO usage_hourly (tenant, meter, hour_ms, group_key, sum, count, min, max, last_value, last_time_ms) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::float8[], $6::int8[], \
                 $7::float8[], $8::float8[], $9::float8[], $10::int8[]) \
             ON CONFLICT (tenant, meter, hour_ms, group_key) DO UPDATE SET \
                 sum = usage_hourly.sum + EXCLUDED.sum, \
                 count = usage_hourly.count + EXCLUDED.count, \
                 min = LEAST(usage_hourly.min, EXCLUDED.min), \
                 max = GREATEST(usage_hourly.max, EXCLUDED.max), \
                 last_value = CASE WHEN EXCLUDED.last_time_ms >= usage_hourly.last_time_ms \
                     THEN EXCLUDED.last_value ELSE usage_hourly.last_value END, \
                 last_time_ms = GREATEST(usage_hourly.last_time_ms, EXCLUDED.last_time_ms)",
        )
        .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.3).collect::<Vec<_>>())
        .bind(vals.iter().map(|d| d.sum).collect::<Vec<_>>())
        .bind(vals.iter().map(|d| d.count).collect::<Vec<_>>())
        .bind(vals.iter().map(|d| d.min).collect::<Vec<_>>())
        .bind(vals.iter().map(|d| d.max).collect::<Vec<_>>())
        .bind(vals.iter().map(|d| d.last_value).collect::<Vec<_>>())
        .bind(vals.iter().map(|d| d.last_time_ms).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// SQLite: multi-row `VALUES`, in chunks under SQLite's parameter limit.
mod lite {
    use sqlx::{QueryBuilder, Sqlite};

    use super::*;

    /// Rows per statement: 10 columns × 90 rows stays under 999 parameters.
    const CHUNK: usize = 90;

    /// SQLite has one writer at a time, so reading then writing the streams
    /// inside the transaction is already serialized.
    pub async fn cumulative_deltas(tx: &mut SqliteConnection, points: &[CumulativePoint]) -> Result<Vec<UsageRecord>> {
        let mut state = HashMap::new();
        let mut ids: Vec<&String> =
            points.iter().flat_map(|p| std::iter::once(&p.stream_id).chain(&p.legacy_stream_id)).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let row = sqlx::query("SELECT start_time_ns, time_ns, value FROM usage_streams WHERE stream_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(r) = row {
                state.insert(id.clone(), (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
            }
        }
        let (records, changed) = apply_cumulative(&mut state, points);
        for id in &changed {
            let (start, time, value) = state[id];
            sqlx::query(
                "INSERT INTO usage_streams (stream_id, start_time_ns, time_ns, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (stream_id) DO UPDATE SET start_time_ns = excluded.start_time_ns, \
                 time_ns = excluded.time_ns, value = excluded.value",
            )
            .bind(id)
            .bind(start)
            .bind(time)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        Ok(records)
    }

    pub async fn ensure_tenants(tx: &mut SqliteConnection, tenants: &[&TenantId], now_ms: i64) -> Result<()> {
        for t in tenants {
            sqlx::query("INSERT INTO tenants (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(t.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    pub async fn insert_events<'a>(
        tx: &mut SqliteConnection,
        rows: &[&'a UsageRecord],
        now_ms: i64,
    ) -> Result<HashSet<Key<'a>>> {
        let mut returned = HashSet::new();
        for chunk in rows.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO usage_events (tenant, source, event_id, meter, value, distinct_key, \
                 event_time_ms, group_key, content_hash, received_ms) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.tenant.as_str())
                    .push_bind(&r.source)
                    .push_bind(&r.event_id)
                    .push_bind(&*r.meter)
                    .push_bind(r.value)
                    .push_bind(r.distinct_key.as_deref())
                    .push_bind(r.event_time_ms)
                    .push_bind(&r.group_key)
                    .push_bind(&r.content_hash)
                    .push_bind(now_ms);
            });
            qb.push(" ON CONFLICT DO NOTHING RETURNING tenant, source, event_id, meter");
            for row in qb.build().fetch_all(&mut *tx).await? {
                returned.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?));
            }
        }
        Ok(rows.iter().map(|r| key(r)).filter(|k| returned.contains(&owned(*k))).collect())
    }

    pub async fn stored_hashes(tx: &mut SqliteConnection, rows: &[&UsageRecord]) -> Result<HashMap<OwnedKey, String>> {
        let mut out = HashMap::new();
        for r in rows {
            let hash: Option<String> = sqlx::query_scalar(
                "SELECT content_hash FROM usage_events \
                 WHERE tenant = $1 AND source = $2 AND event_id = $3 AND meter = $4",
            )
            .bind(r.tenant.as_str())
            .bind(&r.source)
            .bind(&r.event_id)
            .bind(&*r.meter)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(h) = hash {
                out.insert(owned(key(r)), h);
            }
        }
        Ok(out)
    }

    pub async fn upsert_hourly(tx: &mut SqliteConnection, deltas: &BTreeMap<HourlyKey<'_>, HourlyDelta>) -> Result<()> {
        let deltas: Vec<_> = deltas.iter().collect();
        for chunk in deltas.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO usage_hourly (tenant, meter, hour_ms, group_key, sum, count, min, max, last_value, last_time_ms) ",
            );
            qb.push_values(chunk, |mut b, (k, d)| {
                b.push_bind(k.0)
                    .push_bind(k.1)
                    .push_bind(k.2)
                    .push_bind(k.3)
                    .push_bind(d.sum)
                    .push_bind(d.count)
                    .push_bind(d.min)
                    .push_bind(d.max)
                    .push_bind(d.last_value)
                    .push_bind(d.last_time_ms);
            });
            qb.push(
                " ON CONFLICT (tenant, meter, hour_ms, group_key) DO UPDATE SET \
                 sum = usage_hourly.sum + excluded.sum, \
                 count = usage_hourly.count + excluded.count, \
                 min = MIN(usage_hourly.min, excluded.min), \
                 max = MAX(usage_hourly.max, excluded.max), \
                 last_value = CASE WHEN excluded.last_time_ms >= usage_hourly.last_time_ms \
                     THEN excluded.last_value ELSE usage_hourly.last_value END, \
                 last_time_ms = MAX(usage_hourly.last_time_ms, excluded.last_time_ms)",
            );
            qb.build().execute(&mut *tx).await?;
        }
        Ok(())
    }
}

/// One hourly rollup row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HourlyUsage {
    pub hour_ms: i64,
    pub group_key: String,
    pub sum: f64,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub last_value: f64,
    pub last_time_ms: i64,
}

impl Store {
    /// Hourly rollup rows of one tenant and meter with `from_ms <= hour < to_ms`.
    pub async fn usage_hourly(
        &self,
        tenant: &TenantId,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<HourlyUsage>> {
        const SELECT: &str = "SELECT hour_ms, group_key, sum, count, min, max, last_value, last_time_ms \
             FROM usage_hourly WHERE tenant = $1 AND meter = $2 AND hour_ms >= $3 AND hour_ms < $4 \
             ORDER BY hour_ms, group_key";
        let rows = crate::on_pool!(self, |pool| {
            sqlx::query_as::<_, HourlyUsage>(SELECT)
                .bind(tenant.as_str())
                .bind(meter)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// Distinct `(hour, group_key, distinct_key)` of a `unique_count` meter in
    /// `[from_ms, to_ms)`: the one query that reads the ledger itself.
    pub async fn usage_distinct(
        &self,
        tenant: &TenantId,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, String, String)>> {
        const SELECT: &str = "SELECT DISTINCT (event_time_ms / 3600000) * 3600000, group_key, distinct_key \
             FROM usage_events WHERE tenant = $1 AND meter = $2 AND event_time_ms >= $3 AND event_time_ms < $4 \
             AND distinct_key IS NOT NULL";
        let rows = crate::on_pool!(self, |pool| {
            sqlx::query(SELECT)
                .bind(tenant.as_str())
                .bind(meter)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(rows)
    }
}

impl Store {
    /// Every tenant's value of a meter over `[from_ms, to_ms)` (hourly rows
    /// whose hour starts in range; `unique_count` reads the ledger), as the
    /// meter's aggregation defines it: what usage-quota alerts compare.
    pub async fn usage_totals(
        &self,
        meter: &str,
        aggregation: Aggregation,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, f64)>> {
        const TOTALS: &str = "SELECT tenant, SUM(sum), CAST(SUM(count) AS BIGINT), MIN(min), MAX(max) \
             FROM usage_hourly WHERE meter = $1 AND hour_ms >= $2 AND hour_ms < $3 GROUP BY tenant ORDER BY tenant";
        const LAST: &str = "SELECT tenant, last_value FROM usage_hourly \
             WHERE meter = $1 AND hour_ms >= $2 AND hour_ms < $3 ORDER BY tenant, last_time_ms";
        const DISTINCT: &str = "SELECT tenant, COUNT(DISTINCT distinct_key) FROM usage_events \
             WHERE meter = $1 AND event_time_ms >= $2 AND event_time_ms < $3 AND distinct_key IS NOT NULL \
             GROUP BY tenant ORDER BY tenant";
        let sql = match aggregation {
            Aggregation::Last => LAST,
            Aggregation::UniqueCount => DISTINCT,
            _ => TOTALS,
        };
        let rows = crate::on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(meter)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    let tenant: String = r.try_get(0)?;
                    let value = match aggregation {
                        Aggregation::Last => r.try_get::<f64, _>(1)?,
                        Aggregation::UniqueCount => r.try_get::<i64, _>(1)? as f64,
                        Aggregation::Sum => r.try_get::<f64, _>(1)?,
                        Aggregation::Count => r.try_get::<i64, _>(2)? as f64,
                        Aggregation::Min => r.try_get::<f64, _>(3)?,
                        Aggregation::Max => r.try_get::<f64, _>(4)?,
                        Aggregation::Avg => {
                            let n = r.try_get::<i64, _>(2)?;
                            if n > 0 { r.try_get::<f64, _>(1)? / n as f64 } else { 0.0 }
                        }
                    };
                    Ok((tenant, value))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        // Rows of `Last` come oldest first: the last row of a tenant wins.
        let mut out: Vec<(String, f64)> = Vec::new();
        for (tenant, value) in rows {
            match out.last_mut() {
                Some(last) if last.0 == tenant => last.1 = value,
                _ => out.push((tenant, value)),
            }
        }
        Ok(out)
    }
}

/// A tenant as stored (created on first sight of its usage).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub display_name: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub status: String,
    pub created_ms: i64,
}

impl Store {
    pub async fn tenants(&self) -> Result<Vec<TenantRow>> {
        const SELECT: &str = "SELECT id, display_name, stripe_customer_id, status, created_ms FROM tenants ORDER BY id";
        let rows = crate::on_pool!(self, |pool| sqlx::query_as::<_, TenantRow>(SELECT).fetch_all(pool).await)?;
        Ok(rows)
    }
}

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

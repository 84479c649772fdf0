//! SQLite: multi-row `VALUES`, in chunks under SQLite's parameter limit.

use sqlx::{QueryBuilder, Sqlite};

use super::*;

/// Rows per statement: 10 columns × 90 rows stays under 999 parameters.
const CHUNK: usize = 90;

impl LedgerSql for SqliteConnection {
    /// SQLite has one writer at a time, so reading then writing the streams
    /// inside the transaction is already serialized.
    async fn cumulative_deltas(&mut self, points: &[CumulativePoint]) -> Result<Vec<UsageRecord>> {
        let mut state = HashMap::new();
        let mut ids: Vec<&String> =
            points.iter().flat_map(|p| std::iter::once(&p.stream_id).chain(&p.legacy_stream_id)).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let row = sqlx::query("SELECT start_time_ns, time_ns, value FROM usage_streams WHERE stream_id = $1")
                .bind(id)
                .fetch_optional(&mut *self)
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
            .execute(&mut *self)
            .await?;
        }
        Ok(records)
    }

    async fn ensure_tenants(&mut self, tenants: &[&TenantId], now_ms: i64) -> Result<()> {
        for t in tenants {
            sqlx::query("INSERT INTO tenants (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(t.as_str())
                .bind(now_ms)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }

    async fn insert_events<'a>(&mut self, rows: &[&'a UsageRecord], now_ms: i64) -> Result<HashSet<Key<'a>>> {
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
            for row in qb.build().fetch_all(&mut *self).await? {
                returned.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?));
            }
        }
        Ok(rows.iter().map(|r| key(r)).filter(|k| returned.contains(&owned(*k))).collect())
    }

    async fn stored_hashes(&mut self, rows: &[&UsageRecord]) -> Result<HashMap<OwnedKey, String>> {
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
            .fetch_optional(&mut *self)
            .await?;
            if let Some(h) = hash {
                out.insert(owned(key(r)), h);
            }
        }
        Ok(out)
    }

    async fn upsert_hourly(&mut self, deltas: &BTreeMap<HourlyKey<'_>, HourlyDelta>) -> Result<()> {
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
            qb.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn mark_changed(&mut self, hours: &[(&str, &str, i64)]) -> Result<()> {
        for chunk in hours.chunks(CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO usage_changes (tenant, meter, hour_ms, version) ");
            qb.push_values(chunk, |mut b, k| {
                b.push_bind(k.0).push_bind(k.1).push_bind(k.2).push_bind(1_i64);
            });
            qb.push(" ON CONFLICT (tenant, meter, hour_ms) DO UPDATE SET version = usage_changes.version + 1");
            qb.build().execute(&mut *self).await?;
        }
        Ok(())
    }
}

//! PostgreSQL: whole columns bound as arrays, one statement per step.

use super::*;

impl LedgerSql for PgConnection {
    async fn cumulative_deltas(&mut self, points: &[CumulativePoint]) -> Result<Vec<UsageRecord>> {
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
        .execute(&mut *self)
        .await?;
        let rows = sqlx::query(
            "SELECT stream_id, start_time_ns, time_ns, value FROM usage_streams \
             WHERE stream_id = ANY($1) ORDER BY stream_id FOR UPDATE",
        )
        .bind(&read)
        .fetch_all(&mut *self)
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
        .execute(&mut *self)
        .await?;
        Ok(records)
    }

    async fn ensure_tenants(&mut self, tenants: &[&TenantId], now_ms: i64) -> Result<()> {
        let ids: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        sqlx::query(
            "INSERT INTO tenants (id, created_ms) SELECT id, $2 FROM UNNEST($1::text[]) AS t(id) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(now_ms)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn insert_events<'a>(&mut self, rows: &[&'a UsageRecord], now_ms: i64) -> Result<HashSet<Key<'a>>> {
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
        .fetch_all(&mut *self)
        .await?;
        let returned: HashSet<OwnedKey> = inserted
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(rows.iter().map(|r| key(r)).filter(|k| returned.contains(&owned(*k))).collect())
    }

    async fn stored_hashes(&mut self, rows: &[&UsageRecord]) -> Result<HashMap<OwnedKey, String>> {
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
        .fetch_all(&mut *self)
        .await?;
        found
            .iter()
            .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?), row.try_get(4)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn upsert_hourly(&mut self, deltas: &BTreeMap<HourlyKey<'_>, HourlyDelta>) -> Result<()> {
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
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn mark_changed(&mut self, hours: &[(&str, &str, i64)]) -> Result<()> {
        if hours.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO usage_changes (tenant, meter, hour_ms, version) \
             SELECT t, m, h, 1 FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS x(t, m, h) \
             ON CONFLICT (tenant, meter, hour_ms) DO UPDATE SET version = usage_changes.version + 1",
        )
        .bind(hours.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(hours.iter().map(|k| k.1).collect::<Vec<_>>())
        .bind(hours.iter().map(|k| k.2).collect::<Vec<_>>())
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

//! PostgreSQL: every step one statement, columns bound as arrays.

use sqlx::{PgConnection, Row};

use super::*;

fn planned(rows: Vec<sqlx::postgres::PgRow>) -> Result<HashMap<Slot, Planned>> {
    rows.iter()
        .map(|r| {
            let plan = Planned { units: r.try_get(3)?, covered: r.try_get(4)?, revision: r.try_get(5)? };
            Ok(((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?), plan))
        })
        .collect()
}

fn columns(keys: &[Slot]) -> (Vec<&str>, Vec<&str>, Vec<i64>) {
    (
        keys.iter().map(|k| k.0.as_str()).collect(),
        keys.iter().map(|k| k.1.as_str()).collect(),
        keys.iter().map(|k| k.2).collect(),
    )
}

impl PlanSql for PgConnection {
    async fn lock_planner(&mut self) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(crate::locks::STRIPE_PLAN).execute(&mut *self).await?;
        Ok(())
    }

    async fn read_periods(&mut self, keys: &[Slot]) -> Result<HashMap<Slot, Planned>> {
        let (t, m, p) = columns(keys);
        let rows = sqlx::query(
            "SELECT s.tenant, s.meter, s.period_ms, s.units, s.covered, CAST(0 AS BIGINT) FROM stripe_periods s \
             JOIN UNNEST($1::text[], $2::text[], $3::int8[]) AS k(t, m, p) \
               ON s.tenant = k.t AND s.meter = k.m AND s.period_ms = k.p",
        )
        .bind(t)
        .bind(m)
        .bind(p)
        .fetch_all(&mut *self)
        .await?;
        planned(rows)
    }

    async fn read_windows(&mut self, keys: &[Slot]) -> Result<HashMap<Slot, Planned>> {
        let (t, m, w) = columns(keys);
        let rows = sqlx::query(
            "SELECT s.tenant, s.meter, s.window_ms, s.units, s.covered, s.revision FROM stripe_windows s \
             JOIN UNNEST($1::text[], $2::text[], $3::int8[]) AS k(t, m, w) \
               ON s.tenant = k.t AND s.meter = k.m AND s.window_ms = k.w",
        )
        .bind(t)
        .bind(m)
        .bind(w)
        .fetch_all(&mut *self)
        .await?;
        planned(rows)
    }

    async fn write_windows(&mut self, rows: &[(&WindowKey, Planned)], now_ms: i64) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO stripe_windows (tenant, meter, window_ms, period_ms, units, covered, revision, updated_ms) \
             SELECT t, m, w, p, u, c, r, $8 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
                 $6::float8[], $7::int8[]) AS x(t, m, w, p, u, c, r) \
             ON CONFLICT (tenant, meter, window_ms) DO UPDATE SET units = excluded.units, \
             covered = excluded.covered, revision = excluded.revision, updated_ms = excluded.updated_ms",
        )
        .bind(rows.iter().map(|(k, _)| k.tenant.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.meter.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.window_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.period_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p)| p.units).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p)| p.covered).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p)| p.revision).collect::<Vec<_>>())
        .bind(now_ms)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn write_periods(&mut self, rows: &[(&Slot, Planned)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO stripe_periods (tenant, meter, period_ms, units, covered) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::float8[]) \
             ON CONFLICT (tenant, meter, period_ms) DO UPDATE SET units = excluded.units, covered = excluded.covered",
        )
        .bind(rows.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p)| p.units).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, p)| p.covered).collect::<Vec<_>>())
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn insert_pushes(&mut self, rows: &[PushRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let text = |f: fn(&PushRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
        let int = |f: fn(&PushRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO stripe_pushes (identifier, tenant, meter, window_ms, period_ms, revision, kind, customer, \
                 event_name, value, timestamp_s, state, error, attempts, next_attempt_ms, created_ms) \
             SELECT i, t, m, w, p, r, k, c, n, v, ts, s, e, 0, $14, $14 FROM UNNEST($1::text[], $2::text[], \
                 $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::text[], $10::int8[], \
                 $11::int8[], $12::text[], $13::text[]) AS x(i, t, m, w, p, r, k, c, n, v, ts, s, e)",
        )
        .bind(text(|r| &r.identifier))
        .bind(text(|r| &r.tenant))
        .bind(text(|r| &r.meter))
        .bind(int(|r| r.window_ms))
        .bind(int(|r| r.period_ms))
        .bind(int(|r| r.revision))
        .bind(text(|r| r.kind.as_str()))
        .bind(text(|r| &r.customer))
        .bind(text(|r| &r.event_name))
        .bind(int(|r| r.value))
        .bind(int(|r| r.timestamp_s))
        .bind(text(|r| r.state.as_str()))
        .bind(rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
        .bind(rows[0].created_ms)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn delete_changes(&mut self, done: &[UsageChange]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM usage_changes c USING UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) AS d(t, m, h, v) \
             WHERE c.tenant = d.t AND c.meter = d.m AND c.hour_ms = d.h AND c.version = d.v",
        )
        .bind(done.iter().map(|c| c.tenant.as_str()).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.meter.as_str()).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.hour_ms).collect::<Vec<_>>())
        .bind(done.iter().map(|c| c.version).collect::<Vec<_>>())
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

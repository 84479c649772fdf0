//! SQLite: a statement per row, in process (cheap without a network).

use sqlx::{Row, SqliteConnection};

use super::*;

const PUSH_INSERT: &str = "INSERT INTO stripe_pushes (identifier, tenant, meter, window_ms, period_ms, revision, kind, \
     customer, event_name, value, timestamp_s, state, error, attempts, next_attempt_ms, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $14, $14)";

/// `sql` (units, covered, revision of one slot) for each of `keys`.
async fn read_slots(conn: &mut SqliteConnection, sql: &'static str, keys: &[Slot]) -> Result<HashMap<Slot, Planned>> {
    let mut out = HashMap::new();
    for k in keys {
        let row = sqlx::query(sql).bind(&k.0).bind(&k.1).bind(k.2).fetch_optional(&mut *conn).await?;
        if let Some(r) = row {
            out.insert(k.clone(), Planned { units: r.try_get(0)?, covered: r.try_get(1)?, revision: r.try_get(2)? });
        }
    }
    Ok(out)
}

impl PlanSql for SqliteConnection {
    async fn lock_planner(&mut self) -> Result<()> {
        Ok(()) // the write transaction (BEGIN IMMEDIATE) already excludes every other writer
    }

    async fn read_periods(&mut self, keys: &[Slot]) -> Result<HashMap<Slot, Planned>> {
        read_slots(
            self,
            "SELECT units, covered, 0 FROM stripe_periods WHERE tenant = $1 AND meter = $2 AND period_ms = $3",
            keys,
        )
        .await
    }

    async fn read_windows(&mut self, keys: &[Slot]) -> Result<HashMap<Slot, Planned>> {
        let sql =
            "SELECT units, covered, revision FROM stripe_windows WHERE tenant = $1 AND meter = $2 AND window_ms = $3";
        read_slots(self, sql, keys).await
    }

    async fn write_windows(&mut self, rows: &[(&WindowKey, Planned)], now_ms: i64) -> Result<()> {
        for (k, p) in rows {
            sqlx::query(
                "INSERT INTO stripe_windows (tenant, meter, window_ms, period_ms, units, covered, revision, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (tenant, meter, window_ms) DO UPDATE SET units = excluded.units, \
                 covered = excluded.covered, revision = excluded.revision, updated_ms = excluded.updated_ms",
            )
            .bind(&k.tenant)
            .bind(&k.meter)
            .bind(k.window_ms)
            .bind(k.period_ms)
            .bind(p.units)
            .bind(p.covered)
            .bind(p.revision)
            .bind(now_ms)
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }

    async fn write_periods(&mut self, rows: &[(&Slot, Planned)]) -> Result<()> {
        for (k, p) in rows {
            sqlx::query(
                "INSERT INTO stripe_periods (tenant, meter, period_ms, units, covered) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant, meter, period_ms) DO UPDATE SET units = excluded.units, covered = excluded.covered",
            )
            .bind(&k.0)
            .bind(&k.1)
            .bind(k.2)
            .bind(p.units)
            .bind(p.covered)
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }

    async fn insert_pushes(&mut self, rows: &[PushRow]) -> Result<()> {
        for r in rows {
            sqlx::query(PUSH_INSERT)
                .bind(&r.identifier)
                .bind(&r.tenant)
                .bind(&r.meter)
                .bind(r.window_ms)
                .bind(r.period_ms)
                .bind(r.revision)
                .bind(r.kind.as_str())
                .bind(&r.customer)
                .bind(&r.event_name)
                .bind(r.value)
                .bind(r.timestamp_s)
                .bind(r.state.as_str())
                .bind(&r.error)
                .bind(r.created_ms)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }

    async fn delete_changes(&mut self, done: &[UsageChange]) -> Result<()> {
        for c in done {
            sqlx::query("DELETE FROM usage_changes WHERE tenant = $1 AND meter = $2 AND hour_ms = $3 AND version = $4")
                .bind(&c.tenant)
                .bind(&c.meter)
                .bind(c.hour_ms)
                .bind(c.version)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

//! Cursors of exports that read the ledger by the time it recorded usage
//! (Application Insights' per-tenant usage metric), and the read itself.

use sqlx::Row;

use crate::{Result, Store, on_pool};

/// Usage the ledger recorded in one minute, per tenant and meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteUsage {
    pub tenant: String,
    pub meter: String,
    /// The start of the UTC minute the ledger recorded it in, Unix ms.
    pub minute_ms: i64,
    pub sum: f64,
    pub count: i64,
    pub min: f64,
    pub max: f64,
}

impl Store {
    /// Where the export `name` has read up to (exclusive), if it started.
    pub async fn export_cursor(&self, name: &str) -> Result<Option<i64>> {
        const SELECT: &str = "SELECT done_ms FROM export_cursors WHERE name = $1";
        let v = on_pool!(self, |pool| sqlx::query_scalar(SELECT).bind(name).fetch_optional(pool).await)?;
        Ok(v)
    }

    /// Moves the cursor from `old` (None: not started) to `new`; `false`
    /// when someone else moved it meanwhile (nothing written).
    pub async fn advance_export_cursor(&self, name: &str, old: Option<i64>, new: i64) -> Result<bool> {
        const INSERT: &str = "INSERT INTO export_cursors (name, done_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        const CAS: &str = "UPDATE export_cursors SET done_ms = $1 WHERE name = $2 AND done_ms = $3";
        let n = on_pool!(self, |pool| match old {
            None => sqlx::query(INSERT).bind(name).bind(new).execute(pool).await.map(|r| r.rows_affected()),
            Some(old) => sqlx::query(CAS).bind(new).bind(name).bind(old).execute(pool).await.map(|r| r.rows_affected()),
        })?;
        Ok(n == 1)
    }

    /// Usage recorded (`received_ms`) in `[from_ms, to_ms)`, per tenant,
    /// meter and minute of recording.
    pub async fn usage_by_recorded_minute(&self, from_ms: i64, to_ms: i64) -> Result<Vec<MinuteUsage>> {
        const SELECT: &str = "SELECT tenant, meter, (received_ms / 60000) * 60000 AS minute, SUM(value), \
             COUNT(*), MIN(value), MAX(value) FROM usage_events WHERE received_ms >= $1 AND received_ms < $2 \
             GROUP BY tenant, meter, minute ORDER BY minute, tenant, meter";
        let rows = on_pool!(self, |pool| {
            sqlx::query(SELECT)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(MinuteUsage {
                        tenant: r.try_get(0)?,
                        meter: r.try_get(1)?,
                        minute_ms: r.try_get(2)?,
                        sum: r.try_get(3)?,
                        count: r.try_get(4)?,
                        min: r.try_get(5)?,
                        max: r.try_get(6)?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(rows)
    }
}

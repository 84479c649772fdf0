//! The lake's export of the usage ledger: a watermark on `received_ms`,
//! advanced by compare-and-set so one replica exports each range.

use sqlx::Row;
use tally_core::{TenantId, UsageRecord};

use crate::{Result, Store, StoreError, on_pool};

impl Store {
    /// Usage received before this has been exported (0: nothing yet).
    pub async fn lake_usage_watermark(&self) -> Result<i64> {
        const SELECT: &str = "SELECT usage_exported_ms FROM lake_state WHERE id = 1";
        Ok(on_pool!(self, |pool| sqlx::query_scalar(SELECT).fetch_one(pool).await)?)
    }

    /// The oldest `received_ms` in the ledger, if any.
    pub async fn oldest_usage_received(&self) -> Result<Option<i64>> {
        const SELECT: &str = "SELECT MIN(received_ms) FROM usage_events";
        Ok(on_pool!(self, |pool| sqlx::query_scalar(SELECT).fetch_one(pool).await)?)
    }

    /// Moves the watermark from `old` to `new`; `false` if another replica moved it first.
    pub async fn advance_lake_usage_watermark(&self, old: i64, new: i64) -> Result<bool> {
        const CAS: &str = "UPDATE lake_state SET usage_exported_ms = $1 WHERE id = 1 AND usage_exported_ms = $2";
        let n =
            on_pool!(self, |pool| sqlx::query(CAS).bind(new).bind(old).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Usage records received in `[from_ms, to_ms)`.
    pub async fn usage_received(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>> {
        const SELECT: &str = "SELECT tenant, source, event_id, meter, value, distinct_key, event_time_ms, group_key, \
             content_hash FROM usage_events WHERE received_ms >= $1 AND received_ms < $2 \
             ORDER BY received_ms, tenant, source, event_id, meter";
        macro_rules! decode {
            ($rows:expr) => {
                $rows
                    .iter()
                    .map(|r| {
                        let tenant: String = r.try_get(0)?;
                        Ok(UsageRecord {
                            tenant: TenantId::parse(&tenant)
                                .map_err(|e| StoreError::Corrupt(format!("usage tenant {tenant:?}: {e}")))?,
                            source: r.try_get(1)?,
                            event_id: r.try_get(2)?,
                            meter: r.try_get::<String, _>(3)?.into(),
                            value: r.try_get(4)?,
                            distinct_key: r.try_get(5)?,
                            event_time_ms: r.try_get(6)?,
                            group_key: r.try_get(7)?,
                            content_hash: r.try_get(8)?,
                            legacy: None,
                        })
                    })
                    .collect()
            };
        }
        on_pool!(self, |pool| {
            let rows = sqlx::query(SELECT).bind(from_ms).bind(to_ms).fetch_all(pool).await?;
            decode!(rows)
        })
    }
}

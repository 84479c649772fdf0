//! Usage queries over the hourly rollup (and, for `unique_count`, the ledger).

use sqlx::Row;
use tally_core::{Aggregation, TenantId};

use crate::{Result, Store};

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

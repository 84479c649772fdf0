//! Reconciliation reports: per billing period, tenant and meter, the ledger
//! against what was pushed and what Stripe holds.

use sqlx::AssertSqlSafe;

use crate::{Result, Store, store::BeginWrite};

/// One line of a reconciliation report.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReconRow {
    pub period_ms: i64,
    pub tenant: String,
    pub meter: String,
    /// The Stripe customers the tenant's pushes of the period went to,
    /// comma-separated.
    pub customers: String,
    /// The ledger's value for the period, in the meter's unit.
    pub ledger: f64,
    /// The whole units Stripe should hold: floor(ledger × stripe_scale).
    pub expected: i64,
    /// The units Stripe confirmed receiving.
    pub pushed: i64,
    /// What Stripe's meter event summaries hold (`None`: not read).
    pub stripe: Option<f64>,
    /// `stripe - expected` (`None`: not read).
    pub drift: Option<f64>,
    /// How many times Stripe was read for this line (a drift is called
    /// only after a second read: summaries are eventually consistent).
    pub checks: i64,
    pub checked_ms: i64,
    pub error: Option<String>,
}

const COLUMNS: &str =
    "period_ms, tenant, meter, customers, ledger, expected, pushed, stripe, drift, checks, checked_ms, error";

impl Store {
    /// Stores report lines, replacing earlier ones of the same period,
    /// tenant and meter.
    pub async fn save_reconciliation(&self, rows: &[ReconRow]) -> Result<()> {
        let upsert = format!(
            "INSERT INTO stripe_reconciliations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (period_ms, tenant, meter) DO UPDATE SET customers = excluded.customers, \
             ledger = excluded.ledger, expected = excluded.expected, pushed = excluded.pushed, \
             stripe = excluded.stripe, drift = excluded.drift, checks = excluded.checks, \
             checked_ms = excluded.checked_ms, error = excluded.error"
        );
        crate::on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for r in rows {
                sqlx::query(AssertSqlSafe(upsert.as_str()))
                    .bind(r.period_ms)
                    .bind(&r.tenant)
                    .bind(&r.meter)
                    .bind(&r.customers)
                    .bind(r.ledger)
                    .bind(r.expected)
                    .bind(r.pushed)
                    .bind(r.stripe)
                    .bind(r.drift)
                    .bind(r.checks)
                    .bind(r.checked_ms)
                    .bind(&r.error)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The stored report of a period (of one tenant, or all).
    pub async fn reconciliation(&self, period_ms: i64, tenant: Option<&str>) -> Result<Vec<ReconRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM stripe_reconciliations WHERE period_ms = $1 {} ORDER BY tenant, meter",
            if tenant.is_some() { "AND tenant = $2" } else { "" }
        );
        let rows = crate::on_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, ReconRow>(AssertSqlSafe(sql.as_str())).bind(period_ms);
            if let Some(t) = tenant {
                q = q.bind(t);
            }
            q.fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// Per tenant, the sum of |drift| over the stored report lines whose
    /// drift a second read confirmed (the `stripe_drift` alert metric).
    pub async fn drift_by_tenant(&self) -> Result<Vec<(String, f64)>> {
        const SELECT: &str = "SELECT tenant, SUM(ABS(drift)) FROM stripe_reconciliations \
             WHERE drift IS NOT NULL AND drift <> 0 AND checks >= 2 GROUP BY tenant ORDER BY tenant";
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, (String, f64)>(SELECT).fetch_all(pool).await)?)
    }
}

//! Allowances per tenant and meter, the credit ledger (top-ups,
//! adjustments, one draw per period), billing notices queued once, and the
//! usage reads the entitlement cache is built from.

use sqlx::Row;

use crate::{NewNotification, Result, Store, on_pool, store::BeginWrite};

/// A tenant's own allowance for a meter (`None`: the meter's default).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitRow {
    pub tenant: String,
    pub meter: String,
    pub limit: Option<f64>,
    pub updated_ms: i64,
}

/// What a credit entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditKind {
    /// Added through `POST /v1/tenants/{tenant}/credits`.
    Topup,
    /// The balance set through `PUT /v1/tenants/{tenant}` (the difference).
    Set,
    /// Usage beyond a closed period's allowance.
    Draw,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Topup => "topup",
            CreditKind::Set => "set",
            CreditKind::Draw => "draw",
        }
    }
}

/// A credit entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCredit {
    pub tenant: String,
    pub meter: String,
    pub kind: CreditKind,
    pub amount: f64,
    /// Draws: the period drawn for (one draw per period).
    pub period_start_ms: Option<i64>,
    /// Top-ups: the caller's idempotency key (one entry per key).
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub created_ms: i64,
}

/// A credit entry as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CreditEntry {
    pub id: i64,
    pub tenant: String,
    pub meter: String,
    /// [`CreditKind::as_str`].
    pub kind: String,
    pub amount: f64,
    pub period_start_ms: Option<i64>,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub created_ms: i64,
}

/// The credits of one tenant and meter, from its entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreditBalance {
    pub tenant: String,
    pub meter: String,
    /// The sum of every entry.
    pub balance: f64,
    /// Top-ups and positive adjustments, ever.
    pub granted: f64,
    /// Periods (their start) already drawn.
    pub drawn: Vec<i64>,
    pub first_ms: i64,
}

/// Usage of one tenant and meter over a range: `sum` and `count` of its
/// hourly rows.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodUsage {
    pub tenant: String,
    pub meter: String,
    pub hour_ms: i64,
    pub sum: f64,
    pub count: i64,
}

const ENTRY_COLUMNS: &str = "id, tenant, meter, kind, amount, period_start_ms, request_id, reason, created_ms";

impl Store {
    /// Sets (or with `None` returns to the default) `tenant`'s allowances.
    pub async fn set_limits(&self, tenant: &str, limits: &[(String, Option<f64>)], now_ms: i64) -> Result<()> {
        const UPSERT: &str = "INSERT INTO tenant_limits (tenant, meter, limit_value, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, meter) DO UPDATE SET limit_value = excluded.limit_value, updated_ms = excluded.updated_ms";
        const TENANT: &str = "INSERT INTO tenants (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(TENANT).bind(tenant).bind(now_ms).execute(&mut *tx).await?;
            for (meter, limit) in limits {
                sqlx::query(UPSERT).bind(tenant).bind(meter).bind(*limit).bind(now_ms).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Allowances changed at or after `since_ms` (0: all), of `tenant` or
    /// every tenant.
    pub async fn limits(&self, tenant: Option<&str>, since_ms: i64) -> Result<Vec<LimitRow>> {
        const SELECT: &str = "SELECT tenant, meter, limit_value, updated_ms FROM tenant_limits \
             WHERE updated_ms >= $1 AND ($2 IS NULL OR tenant = $2) ORDER BY tenant, meter";
        let rows = on_pool!(self, |pool| {
            sqlx::query(SELECT)
                .bind(since_ms)
                .bind(tenant)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(LimitRow {
                        tenant: r.try_get(0)?,
                        meter: r.try_get(1)?,
                        limit: r.try_get(2)?,
                        updated_ms: r.try_get(3)?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(rows)
    }

    /// Writes a credit entry; `None` when its request id or its period (a
    /// draw) was written before (the entry then is the earlier one's).
    pub async fn add_credit(&self, c: &NewCredit) -> Result<Option<CreditEntry>> {
        let insert = format!(
            "INSERT INTO credit_entries (tenant, meter, kind, amount, period_start_ms, request_id, reason, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING {ENTRY_COLUMNS}"
        );
        const TENANT: &str = "INSERT INTO tenants (id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
        let row = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(TENANT).bind(&c.tenant).bind(c.created_ms).execute(&mut *tx).await?;
            let row = sqlx::query_as::<_, CreditEntry>(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(&c.tenant)
                .bind(&c.meter)
                .bind(c.kind.as_str())
                .bind(c.amount)
                .bind(c.period_start_ms)
                .bind(&c.request_id)
                .bind(&c.reason)
                .bind(c.created_ms)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        })?;
        Ok(row)
    }

    /// Credit entries of `tenant` (and `meter`), newest first.
    pub async fn credit_entries(&self, tenant: &str, meter: Option<&str>, limit: i64) -> Result<Vec<CreditEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE tenant = $1 AND ($2 IS NULL OR meter = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, CreditEntry>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(tenant)
                .bind(meter)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// Per (tenant, meter) with credit entries: the balance (sum of every
    /// entry), what was ever added, the periods already drawn and when the
    /// first entry was written; of `tenant` or every tenant, and only those
    /// with an entry written at or after `changed_since` (0: all).
    pub async fn credit_balances(&self, tenant: Option<&str>, changed_since: i64) -> Result<Vec<CreditBalance>> {
        const SELECT: &str = "SELECT tenant, meter, kind, amount, period_start_ms, created_ms FROM credit_entries \
             WHERE ($1 IS NULL OR tenant = $1) \
             AND (tenant, meter) IN (SELECT tenant, meter FROM credit_entries WHERE created_ms >= $2) \
             ORDER BY tenant, meter, id";
        type Raw = (String, String, String, f64, Option<i64>, i64);
        let rows: Vec<Raw> = on_pool!(self, |pool| sqlx::query_as::<_, Raw>(SELECT)
            .bind(tenant)
            .bind(changed_since)
            .fetch_all(pool)
            .await)?;
        let mut out: Vec<CreditBalance> = Vec::new();
        for (tenant, meter, kind, amount, period, created_ms) in rows {
            if out.last().is_none_or(|l| l.tenant != tenant || l.meter != meter) {
                out.push(CreditBalance { tenant, meter, first_ms: created_ms, ..CreditBalance::default() });
            }
            let last = out.last_mut().expect("pushed above");
            last.balance += amount;
            if kind != CreditKind::Draw.as_str() && amount > 0.0 {
                last.granted += amount;
            }
            if let (true, Some(p)) = (kind == CreditKind::Draw.as_str(), period) {
                last.drawn.push(p);
            }
        }
        Ok(out)
    }

    /// Queues `notifications` under `key` unless that key was queued
    /// before (by this or another replica, before a restart): `true` when
    /// queued now.
    pub async fn queue_notice(&self, key: &str, notifications: &[NewNotification], now_ms: i64) -> Result<bool> {
        const NOTICE: &str =
            "INSERT INTO billing_notices (key, created_ms) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
        let queued = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if sqlx::query(NOTICE).bind(key).bind(now_ms).execute(&mut *tx).await?.rows_affected() == 0 {
                return Ok(false);
            }
            for n in notifications {
                sqlx::query(crate::alerts::OUTBOX_INSERT)
                    .bind(&n.receiver)
                    .bind(&n.fingerprint)
                    .bind(&n.payload)
                    .bind(n.created_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        })?;
        Ok(queued)
    }

    /// Per (tenant, meter, hour) with `from_ms <= hour < to_ms` (all groups
    /// added up), for `tenant` or every tenant.
    pub async fn hourly_usage(&self, tenant: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<PeriodUsage>> {
        self.usage_sums(tenant, from_ms, to_ms, true).await
    }

    /// Per (tenant, meter) over `[from_ms, to_ms)`, for `tenant` or every
    /// tenant: `hour_ms` is `from_ms`.
    pub async fn range_usage(&self, tenant: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<PeriodUsage>> {
        self.usage_sums(tenant, from_ms, to_ms, false).await
    }

    async fn usage_sums(
        &self,
        tenant: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        by_hour: bool,
    ) -> Result<Vec<PeriodUsage>> {
        let (hour, group) = if by_hour { ("hour_ms", ", hour_ms") } else { ("CAST($1 AS BIGINT)", "") };
        let sql = format!(
            "SELECT tenant, meter, {hour}, SUM(sum), CAST(SUM(count) AS BIGINT) FROM usage_hourly \
             WHERE hour_ms >= $1 AND hour_ms < $2 AND ($3 IS NULL OR tenant = $3) \
             GROUP BY tenant, meter{group} ORDER BY tenant, meter{group}"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(from_ms)
                .bind(to_ms)
                .bind(tenant)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(PeriodUsage {
                        tenant: r.try_get(0)?,
                        meter: r.try_get(1)?,
                        hour_ms: r.try_get(2)?,
                        sum: r.try_get::<Option<f64>, _>(3)?.unwrap_or(0.0),
                        count: r.try_get::<Option<i64>, _>(4)?.unwrap_or(0),
                    })
                })
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(rows)
    }

    /// Tenants created at or after `since_ms` (0: all).
    pub async fn tenant_ids(&self, since_ms: i64) -> Result<Vec<String>> {
        const SELECT: &str = "SELECT id FROM tenants WHERE created_ms >= $1 ORDER BY id";
        let rows = on_pool!(self, |pool| sqlx::query_scalar(SELECT).bind(since_ms).fetch_all(pool).await)?;
        Ok(rows)
    }
}

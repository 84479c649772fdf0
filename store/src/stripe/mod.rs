//! The Stripe sync's tables (migration 0009): the ledger's changes still to
//! plan, each window's and period's planned units, the push ledger (written
//! before each call and after), and the tenant ↔ customer mapping. The
//! planning and sending themselves are `tally_exporter::stripe`.

use sqlx::{AssertSqlSafe, Row};
use tally_core::Aggregation;

use crate::{Result, Store, StoreError};

mod plan;
mod pushes;
mod reconcile;

pub use reconcile::ReconRow;

/// An hour of a tenant's meter the ledger changed since the sync last
/// planned it, with the tenant's Stripe customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageChange {
    pub tenant: String,
    pub meter: String,
    pub hour_ms: i64,
    pub version: i64,
    pub customer: String,
}

/// A window (hour, day or billing period) of a tenant's meter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub tenant: String,
    pub meter: String,
    pub window_ms: i64,
    pub period_ms: i64,
}

/// What is planned for a window or a period: the whole units Stripe is to
/// hold, the scaled ledger value they stand for, and (windows) how many
/// pushes it took.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Planned {
    pub units: i64,
    pub covered: f64,
    pub revision: i64,
}

/// Where a push stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushState {
    /// Written, not yet confirmed by Stripe (never sent, or cut off).
    Pending,
    Sent,
    /// Refused by Stripe, or unconfirmed for too long to resend blindly.
    Failed,
    /// Too old for Stripe (its timestamp window): listed for manual
    /// correction, never sent.
    Expired,
}

impl PushState {
    pub const ALL: [PushState; 4] = [PushState::Pending, PushState::Sent, PushState::Failed, PushState::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Pending => "pending",
            PushState::Sent => "sent",
            PushState::Failed => "failed",
            PushState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<PushState> {
        PushState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What a push carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushKind {
    /// A raw meter's units for a window (the first push or a correction):
    /// Stripe adds them up.
    Delta,
    /// A window's whole units (pre-aggregated meters) or the period's value
    /// (period meters): Stripe keeps the latest.
    Total,
    /// Sent by reconciliation to mend drift Stripe shows.
    Repair,
}

impl PushKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::Delta => "delta",
            PushKind::Total => "total",
            PushKind::Repair => "repair",
        }
    }

    pub fn parse(s: &str) -> Option<PushKind> {
        [PushKind::Delta, PushKind::Total, PushKind::Repair].into_iter().find(|v| v.as_str() == s)
    }
}

/// A push to write (its window and revision come from the plan).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPush {
    pub identifier: String,
    pub kind: PushKind,
    pub customer: String,
    pub event_name: String,
    pub value: i64,
    pub timestamp_s: i64,
    /// `Pending`, or `Expired` for usage too old to send.
    pub state: PushState,
    pub error: Option<String>,
}

/// A push as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRow {
    pub identifier: String,
    pub tenant: String,
    pub meter: String,
    pub window_ms: i64,
    pub period_ms: i64,
    pub revision: i64,
    pub kind: PushKind,
    pub customer: String,
    pub event_name: String,
    pub value: i64,
    pub timestamp_s: i64,
    pub state: PushState,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub first_attempt_ms: Option<i64>,
    pub sent_ms: Option<i64>,
    pub request_id: Option<String>,
    pub error: Option<String>,
}

/// What one attempt at a push came to.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// Stripe has it (answered 200, or "already exists" for a resend).
    Sent {
        request_id: Option<String>,
    },
    /// Try again at `next_ms`.
    Retry {
        next_ms: i64,
        error: String,
    },
    Failed {
        error: String,
    },
    Expired {
        error: String,
    },
}

const PUSH_COLUMNS: &str = "identifier, tenant, meter, window_ms, period_ms, revision, kind, customer, event_name, \
     value, timestamp_s, state, attempts, next_attempt_ms, created_ms, first_attempt_ms, sent_ms, request_id, error";

/// A push as read, before its kind and state are checked.
#[derive(sqlx::FromRow)]
struct RawPush {
    identifier: String,
    tenant: String,
    meter: String,
    window_ms: i64,
    period_ms: i64,
    revision: i64,
    kind: String,
    customer: String,
    event_name: String,
    value: i64,
    timestamp_s: i64,
    state: String,
    attempts: i64,
    next_attempt_ms: i64,
    created_ms: i64,
    first_attempt_ms: Option<i64>,
    sent_ms: Option<i64>,
    request_id: Option<String>,
    error: Option<String>,
}

impl TryFrom<RawPush> for PushRow {
    type Error = StoreError;

    fn try_from(r: RawPush) -> Result<PushRow> {
        let kind =
            PushKind::parse(&r.kind).ok_or_else(|| StoreError::Corrupt(format!("stripe_pushes.kind {:?}", r.kind)))?;
        let state = PushState::parse(&r.state)
            .ok_or_else(|| StoreError::Corrupt(format!("stripe_pushes.state {:?}", r.state)))?;
        Ok(PushRow {
            identifier: r.identifier,
            tenant: r.tenant,
            meter: r.meter,
            window_ms: r.window_ms,
            period_ms: r.period_ms,
            revision: r.revision,
            kind,
            customer: r.customer,
            event_name: r.event_name,
            value: r.value,
            timestamp_s: r.timestamp_s,
            state,
            attempts: r.attempts,
            next_attempt_ms: r.next_attempt_ms,
            created_ms: r.created_ms,
            first_attempt_ms: r.first_attempt_ms,
            sent_ms: r.sent_ms,
            request_id: r.request_id,
            error: r.error,
        })
    }
}

fn checked(rows: Vec<RawPush>) -> Result<Vec<PushRow>> {
    rows.into_iter().map(PushRow::try_from).collect()
}

/// `$from, $from+1, …` for `n` values: an `IN (…)` list both engines take.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// Changed hours, oldest first, of tenants mapped to a Stripe customer
    /// (other tenants' changes wait for their mapping): for each `(meter,
    /// closed_before_ms)`, the meter's hours starting before that bound.
    pub async fn usage_changes(&self, meters: &[(&str, i64)], limit: i64) -> Result<Vec<UsageChange>> {
        if meters.is_empty() {
            return Ok(Vec::new());
        }
        let bounds: Vec<String> =
            (0..meters.len()).map(|i| format!("(c.meter = ${} AND c.hour_ms < ${})", 2 + 2 * i, 3 + 2 * i)).collect();
        let sql = format!(
            "SELECT c.tenant, c.meter, c.hour_ms, c.version, t.stripe_customer_id FROM usage_changes c \
             JOIN tenants t ON t.id = c.tenant \
             WHERE t.stripe_customer_id IS NOT NULL AND ({}) \
             ORDER BY c.hour_ms, c.tenant, c.meter LIMIT $1",
            bounds.join(" OR ")
        );
        crate::on_pool!(self, |pool| {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(limit);
            for (m, before) in meters {
                q = q.bind(*m).bind(*before);
            }
            q.fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(UsageChange {
                        tenant: r.try_get(0)?,
                        meter: r.try_get(1)?,
                        hour_ms: r.try_get(2)?,
                        version: r.try_get(3)?,
                        customer: r.try_get(4)?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
    }

    /// Forgets changes of meters that are not synced (the ledger marks
    /// every meter's).
    pub async fn drop_usage_changes_except(&self, meters: &[&str]) -> Result<u64> {
        let sql = if meters.is_empty() {
            "DELETE FROM usage_changes".to_owned()
        } else {
            format!("DELETE FROM usage_changes WHERE meter NOT IN ({})", placeholders(1, meters.len()))
        };
        crate::on_pool!(self, |pool| {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
            for m in meters {
                q = q.bind(*m);
            }
            Ok(q.execute(pool).await?.rows_affected())
        })
    }

    /// A tenant's meter over `[from_ms, to_ms)` (whole hours): the sum of
    /// values and the number of events.
    pub async fn usage_window(&self, tenant: &str, meter: &str, from_ms: i64, to_ms: i64) -> Result<(f64, i64)> {
        const SELECT: &str = "SELECT COALESCE(SUM(sum), 0.0), CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM usage_hourly \
             WHERE tenant = $1 AND meter = $2 AND hour_ms >= $3 AND hour_ms < $4";
        crate::on_pool!(self, |pool| {
            let r = sqlx::query(SELECT).bind(tenant).bind(meter).bind(from_ms).bind(to_ms).fetch_one(pool).await?;
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
    }

    /// [`Store::usage_window`] of many windows at once, in order:
    /// `(tenant, meter, from_ms, to_ms)` each.
    pub async fn usage_windows(&self, keys: &[(&str, &str, i64, i64)]) -> Result<Vec<(f64, i64)>> {
        match self {
            Store::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT COALESCE(SUM(u.sum), 0.0), CAST(COALESCE(SUM(u.count), 0) AS BIGINT) \
                     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY AS k(t, m, f, e, i) \
                     LEFT JOIN usage_hourly u ON u.tenant = k.t AND u.meter = k.m AND u.hour_ms >= k.f AND u.hour_ms < k.e \
                     GROUP BY k.i ORDER BY k.i",
                )
                .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| k.3).collect::<Vec<_>>())
                .fetch_all(pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
            }
            Store::Sqlite(_) => {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    out.push(self.usage_window(k.0, k.1, k.2, k.3).await?);
                }
                Ok(out)
            }
        }
    }

    /// A tenant's meter over `[from_ms, to_ms)` as its aggregation defines
    /// it (`None`: no usage in the range).
    pub async fn usage_value(
        &self,
        tenant: &str,
        meter: &str,
        aggregation: Aggregation,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Option<f64>> {
        let sql = match aggregation {
            Aggregation::Sum => "SELECT SUM(sum) FROM usage_hourly",
            Aggregation::Count => "SELECT CAST(SUM(count) AS DOUBLE PRECISION) FROM usage_hourly",
            Aggregation::Min => "SELECT MIN(min) FROM usage_hourly",
            Aggregation::Max => "SELECT MAX(max) FROM usage_hourly",
            Aggregation::Avg => "SELECT SUM(sum) / SUM(count) FROM usage_hourly",
            Aggregation::Last => "SELECT last_value FROM usage_hourly",
            Aggregation::UniqueCount => {
                "SELECT CAST(COUNT(DISTINCT distinct_key) AS DOUBLE PRECISION) FROM usage_events \
                 WHERE tenant = $1 AND meter = $2 AND event_time_ms >= $3 AND event_time_ms < $4 \
                 AND distinct_key IS NOT NULL HAVING COUNT(*) > 0"
            }
        };
        let sql = match aggregation {
            Aggregation::UniqueCount => sql.to_owned(),
            Aggregation::Last => format!(
                "{sql} WHERE tenant = $1 AND meter = $2 AND hour_ms >= $3 AND hour_ms < $4 \
                 ORDER BY last_time_ms DESC, hour_ms DESC LIMIT 1"
            ),
            _ => format!("{sql} WHERE tenant = $1 AND meter = $2 AND hour_ms >= $3 AND hour_ms < $4"),
        };
        crate::on_pool!(self, |pool| {
            let row = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(tenant)
                .bind(meter)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => r.try_get::<Option<f64>, _>(0)?,
                None => None,
            })
        })
    }

    /// The planned windows of a tenant's meter in a period, by start.
    pub async fn planned_windows(&self, tenant: &str, meter: &str, period_ms: i64) -> Result<Vec<(i64, Planned)>> {
        const SELECT: &str = "SELECT window_ms, units, covered, revision FROM stripe_windows \
             WHERE tenant = $1 AND meter = $2 AND period_ms = $3 ORDER BY window_ms";
        crate::on_pool!(self, |pool| {
            sqlx::query(SELECT)
                .bind(tenant)
                .bind(meter)
                .bind(period_ms)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get(0)?,
                        Planned { units: r.try_get(1)?, covered: r.try_get(2)?, revision: r.try_get(3)? },
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })
    }
}

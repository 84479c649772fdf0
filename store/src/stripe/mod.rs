//! The Stripe sync's tables (migration 0009): the ledger's changes still to
//! plan, each window's and period's planned units, the push ledger (written
//! before each call and after), and the tenant ↔ customer mapping. The
//! planning and sending themselves are `tally_exporter::stripe`.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};
use tally_core::Aggregation;

use crate::{Result, Store, StoreError, store::BeginWrite};

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

    /// Plans windows in one transaction, serialised against any other
    /// planner (another replica that also thinks it leads): for each key,
    /// in order, `plan` gets the window's and its period's state as stored
    /// (or as changed by an earlier key of this batch) and returns the
    /// window's new state and the push it takes, if any. The new states and
    /// pushes are written, each period moving by its windows' changes, and
    /// `done` changes are deleted unless the ledger changed them again.
    /// Returns the pushes written; with `commit` false nothing is written
    /// (a dry run: what would be pushed).
    pub async fn plan_stripe<F>(
        &self,
        keys: &[WindowKey],
        done: &[UsageChange],
        commit: bool,
        mut plan: F,
    ) -> Result<Vec<PushRow>>
    where
        F: FnMut(&WindowKey, Planned, Planned) -> Option<(Planned, Option<NewPush>)> + Send,
    {
        let now = tally_core::now_ms();
        crate::on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if matches!(self, Store::Postgres(_)) {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(crate::locks::STRIPE_PLAN)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut periods: HashMap<(String, String, i64), (Planned, Planned)> = HashMap::new();
            let mut pushes = Vec::new();
            for key in keys {
                let pk = (key.tenant.clone(), key.meter.clone(), key.period_ms);
                if !periods.contains_key(&pk) {
                    let row = sqlx::query(
                        "SELECT units, covered FROM stripe_periods WHERE tenant = $1 AND meter = $2 AND period_ms = $3",
                    )
                    .bind(&key.tenant)
                    .bind(&key.meter)
                    .bind(key.period_ms)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let p = match row {
                        Some(r) => Planned { units: r.try_get(0)?, covered: r.try_get(1)?, revision: 0 },
                        None => Planned::default(),
                    };
                    periods.insert(pk.clone(), (p, p));
                }
                let row = sqlx::query(
                    "SELECT units, covered, revision FROM stripe_windows WHERE tenant = $1 AND meter = $2 AND window_ms = $3",
                )
                .bind(&key.tenant)
                .bind(&key.meter)
                .bind(key.window_ms)
                .fetch_optional(&mut *tx)
                .await?;
                let window = match row {
                    Some(r) => Planned { units: r.try_get(0)?, covered: r.try_get(1)?, revision: r.try_get(2)? },
                    None => Planned::default(),
                };
                let Some(period) = periods.get_mut(&pk) else { continue };
                let Some((next, push)) = plan(key, window, period.1) else { continue };
                period.1.units += next.units - window.units;
                period.1.covered += next.covered - window.covered;
                sqlx::query(
                    "INSERT INTO stripe_windows (tenant, meter, window_ms, period_ms, units, covered, revision, updated_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (tenant, meter, window_ms) DO UPDATE SET units = excluded.units, \
                     covered = excluded.covered, revision = excluded.revision, updated_ms = excluded.updated_ms",
                )
                .bind(&key.tenant)
                .bind(&key.meter)
                .bind(key.window_ms)
                .bind(key.period_ms)
                .bind(next.units)
                .bind(next.covered)
                .bind(next.revision)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if let Some(p) = push {
                    let row = PushRow {
                        identifier: p.identifier,
                        tenant: key.tenant.clone(),
                        meter: key.meter.clone(),
                        window_ms: key.window_ms,
                        period_ms: key.period_ms,
                        revision: next.revision,
                        kind: p.kind,
                        customer: p.customer,
                        event_name: p.event_name,
                        value: p.value,
                        timestamp_s: p.timestamp_s,
                        state: p.state,
                        attempts: 0,
                        next_attempt_ms: now,
                        created_ms: now,
                        first_attempt_ms: None,
                        sent_ms: None,
                        request_id: None,
                        error: p.error,
                    };
                    let insert = format!(
                        "INSERT INTO stripe_pushes ({PUSH_COLUMNS}) VALUES \
                         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
                    );
                    sqlx::query(AssertSqlSafe(insert))
                        .bind(&row.identifier)
                        .bind(&row.tenant)
                        .bind(&row.meter)
                        .bind(row.window_ms)
                        .bind(row.period_ms)
                        .bind(row.revision)
                        .bind(row.kind.as_str())
                        .bind(&row.customer)
                        .bind(&row.event_name)
                        .bind(row.value)
                        .bind(row.timestamp_s)
                        .bind(row.state.as_str())
                        .bind(row.attempts)
                        .bind(row.next_attempt_ms)
                        .bind(row.created_ms)
                        .bind(row.first_attempt_ms)
                        .bind(row.sent_ms)
                        .bind(&row.request_id)
                        .bind(&row.error)
                        .execute(&mut *tx)
                        .await?;
                    pushes.push(row);
                }
            }
            for ((tenant, meter, period_ms), (before, after)) in &periods {
                if before == after {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO stripe_periods (tenant, meter, period_ms, units, covered) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant, meter, period_ms) DO UPDATE SET units = excluded.units, covered = excluded.covered",
                )
                .bind(tenant)
                .bind(meter)
                .bind(period_ms)
                .bind(after.units)
                .bind(after.covered)
                .execute(&mut *tx)
                .await?;
            }
            for c in done {
                sqlx::query(
                    "DELETE FROM usage_changes WHERE tenant = $1 AND meter = $2 AND hour_ms = $3 AND version = $4",
                )
                .bind(&c.tenant)
                .bind(&c.meter)
                .bind(c.hour_ms)
                .bind(c.version)
                .execute(&mut *tx)
                .await?;
            }
            if commit {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok(pushes)
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

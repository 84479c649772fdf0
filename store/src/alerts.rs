//! Alert state and the notification outbox.
//!
//! An evaluation round reads every instance, decides, and commits its
//! changes together with the notifications they cause, in one transaction.
//! The commit is a compare-and-set on `alert_meta.last_eval_ms`: a round
//! started before another replica committed one is discarded, so two
//! replicas can never both page for the same change. On PostgreSQL a
//! transaction-scoped advisory lock also keeps replicas from committing at
//! the same moment.
//!
//! Delivery claims a receiver's oldest pending notification for a lease
//! (an atomic UPDATE … RETURNING), so replicas neither send one twice nor
//! overtake it with the next one: per receiver, notifications go out in order.

use sqlx::{Row, sqlite::SqliteRow};
use tally_core::{
    TenantId,
    alert::{AlertInstance, AlertState, Severity},
};

use crate::{Result, Store, StoreError, on_pool, store::BeginWrite};

const INSTANCE_COLUMNS: &str = "rule, group_key, tenant, fingerprint, state, severity, value, threshold, since_ms, \
     started_ms, warning_since_ms, critical_since_ms, warning_last_ms, critical_last_ms, last_notified_ms, updated_ms";

/// Adds one [`NewNotification`] to the outbox (bind receiver, fingerprint,
/// payload, created_ms): alert rounds, webhooks and billing notices write
/// it in their own transactions.
pub(crate) const OUTBOX_INSERT: &str = "INSERT INTO alert_outbox (receiver, fingerprint, payload, created_ms, \
     next_attempt_ms) VALUES ($1, $2, $3, $4, $4)";

/// A notification to add to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub receiver: String,
    pub fingerprint: String,
    /// The [`tally_core::alert::Notification`] as JSON.
    pub payload: String,
    pub created_ms: i64,
}

/// A notification claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub receiver: String,
    pub payload: String,
    pub created_ms: i64,
    /// Attempts before this one.
    pub attempts: i32,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attempt<'a> {
    Delivered,
    /// Failed; try again at `next_ms`.
    Retry {
        next_ms: i64,
        error: &'a str,
    },
    /// Failed for good (the retry schedule is exhausted, or the receiver
    /// refused it as invalid).
    Failed {
        error: &'a str,
    },
}

/// Column by position, for both backends.
macro_rules! decode_instance {
    ($row:expr) => {{
        let r = $row;
        let state: String = r.try_get(4)?;
        let severity: Option<String> = r.try_get(5)?;
        Ok::<_, StoreError>(AlertInstance {
            rule: r.try_get(0)?,
            group_key: r.try_get(1)?,
            tenant: r.try_get(2)?,
            fingerprint: r.try_get(3)?,
            state: AlertState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("alert state {state:?}")))?,
            severity: match severity {
                Some(s) => {
                    Some(Severity::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("alert severity {s:?}")))?)
                }
                None => None,
            },
            value: r.try_get(6)?,
            threshold: r.try_get(7)?,
            since_ms: r.try_get(8)?,
            started_ms: r.try_get(9)?,
            warning_since_ms: r.try_get(10)?,
            critical_since_ms: r.try_get(11)?,
            warning_last_ms: r.try_get(12)?,
            critical_last_ms: r.try_get(13)?,
            last_notified_ms: r.try_get(14)?,
            updated_ms: r.try_get(15)?,
        })
    }};
}

fn decode_pg(r: &sqlx::postgres::PgRow) -> Result<AlertInstance> {
    decode_instance!(r)
}

fn decode_sqlite(r: &SqliteRow) -> Result<AlertInstance> {
    decode_instance!(r)
}

impl Store {
    /// When the last round was committed, and every stored instance.
    pub async fn alert_round_state(&self) -> Result<(i64, Vec<AlertInstance>)> {
        const META: &str = "SELECT last_eval_ms FROM alert_meta WHERE id = 1";
        let select = format!("SELECT {INSTANCE_COLUMNS} FROM alert_instances ORDER BY rule, group_key");
        match self {
            Store::Postgres(pool) => {
                let last: i64 = sqlx::query_scalar(META).fetch_one(pool).await?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch_all(pool).await?;
                Ok((last, rows.iter().map(decode_pg).collect::<Result<_>>()?))
            }
            Store::Sqlite(pool) => {
                let last: i64 = sqlx::query_scalar(META).fetch_one(pool).await?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch_all(pool).await?;
                Ok((last, rows.iter().map(decode_sqlite).collect::<Result<_>>()?))
            }
        }
    }

    /// The stored instances, of one tenant or all, for the API.
    pub async fn alert_instances(&self, tenant: Option<&TenantId>) -> Result<Vec<AlertInstance>> {
        let filter = if tenant.is_some() { "WHERE tenant = $1" } else { "" };
        let select =
            format!("SELECT {INSTANCE_COLUMNS} FROM alert_instances {filter} ORDER BY tenant, rule, group_key");
        match self {
            Store::Postgres(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(select));
                if let Some(t) = tenant {
                    q = q.bind(t.as_str());
                }
                q.fetch_all(pool).await?.iter().map(decode_pg).collect()
            }
            Store::Sqlite(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(select));
                if let Some(t) = tenant {
                    q = q.bind(t.as_str());
                }
                q.fetch_all(pool).await?.iter().map(decode_sqlite).collect()
            }
        }
    }

    /// Commits a round: instance upserts and deletions, and the outbox rows
    /// they cause, if no round was committed since `read_eval_ms` (what
    /// [`Store::alert_round_state`] returned). `false`: another replica
    /// committed meanwhile, nothing was written.
    pub async fn commit_alert_round(
        &self,
        read_eval_ms: i64,
        now_ms: i64,
        upserts: &[AlertInstance],
        deletes: &[(String, String)],
        outbox: &[NewNotification],
    ) -> Result<bool> {
        const CAS: &str = "UPDATE alert_meta SET last_eval_ms = $1 WHERE id = 1 AND last_eval_ms = $2";
        const DELETE: &str = "DELETE FROM alert_instances WHERE rule = $1 AND group_key = $2";
        let upsert = format!(
            "INSERT INTO alert_instances ({INSTANCE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (rule, group_key) DO UPDATE SET state = excluded.state, severity = excluded.severity, \
             value = excluded.value, threshold = excluded.threshold, since_ms = excluded.since_ms, \
             started_ms = excluded.started_ms, warning_since_ms = excluded.warning_since_ms, \
             critical_since_ms = excluded.critical_since_ms, warning_last_ms = excluded.warning_last_ms, \
             critical_last_ms = excluded.critical_last_ms, last_notified_ms = excluded.last_notified_ms, \
             updated_ms = excluded.updated_ms"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if matches!(self, Store::Postgres(_)) {
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(crate::locks::ALERTS)
                    .fetch_one(&mut *tx)
                    .await?;
                if !locked {
                    return Ok(false);
                }
            }
            let won = sqlx::query(CAS).bind(now_ms).bind(read_eval_ms).execute(&mut *tx).await?.rows_affected() == 1;
            if !won {
                return Ok(false);
            }
            for i in upserts {
                sqlx::query(sqlx::AssertSqlSafe(upsert.as_str()))
                    .bind(&i.rule)
                    .bind(&i.group_key)
                    .bind(&i.tenant)
                    .bind(&i.fingerprint)
                    .bind(i.state.as_str())
                    .bind(i.severity.map(Severity::as_str))
                    .bind(i.value)
                    .bind(i.threshold)
                    .bind(i.since_ms)
                    .bind(i.started_ms)
                    .bind(i.warning_since_ms)
                    .bind(i.critical_since_ms)
                    .bind(i.warning_last_ms)
                    .bind(i.critical_last_ms)
                    .bind(i.last_notified_ms)
                    .bind(i.updated_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            for (rule, group) in deletes {
                sqlx::query(DELETE).bind(rule).bind(group).execute(&mut *tx).await?;
            }
            for n in outbox {
                sqlx::query(OUTBOX_INSERT)
                    .bind(&n.receiver)
                    .bind(&n.fingerprint)
                    .bind(&n.payload)
                    .bind(n.created_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Claims `receiver`'s oldest pending notification until
    /// `now_ms + lease_ms`, if it is due and nobody holds it.
    pub async fn claim_notification(&self, receiver: &str, now_ms: i64, lease_ms: i64) -> Result<Option<OutboxRow>> {
        const CLAIM: &str = "UPDATE alert_outbox SET claimed_until_ms = $2 + $3 \
             WHERE id = (SELECT id FROM alert_outbox WHERE receiver = $1 AND outcome = 'pending' ORDER BY id LIMIT 1) \
             AND outcome = 'pending' AND next_attempt_ms <= $2 AND claimed_until_ms <= $2 \
             RETURNING id, receiver, payload, created_ms, attempts";
        let row = on_pool!(self, |pool| {
            sqlx::query(CLAIM)
                .bind(receiver)
                .bind(now_ms)
                .bind(lease_ms)
                .fetch_optional(pool)
                .await?
                .map(|r| {
                    Ok::<_, sqlx::Error>(OutboxRow {
                        id: r.try_get(0)?,
                        receiver: r.try_get(1)?,
                        payload: r.try_get(2)?,
                        created_ms: r.try_get(3)?,
                        attempts: r.try_get(4)?,
                    })
                })
                .transpose()
        })?;
        Ok(row)
    }

    /// Records the outcome of an attempt on a claimed notification.
    pub async fn finish_notification(&self, id: i64, now_ms: i64, attempt: Attempt<'_>) -> Result<()> {
        const DELIVERED: &str = "UPDATE alert_outbox SET outcome = 'delivered', attempts = attempts + 1, \
             done_ms = $2, claimed_until_ms = 0, last_error = NULL WHERE id = $1";
        const RETRY: &str = "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_ms = $2, \
             claimed_until_ms = 0, last_error = $3 WHERE id = $1";
        const FAILED: &str = "UPDATE alert_outbox SET outcome = 'failed', attempts = attempts + 1, done_ms = $2, \
             claimed_until_ms = 0, last_error = $3 WHERE id = $1";
        on_pool!(self, |pool| {
            let q = match attempt {
                Attempt::Delivered => sqlx::query(DELIVERED).bind(id).bind(now_ms).bind(None::<&str>),
                Attempt::Retry { next_ms, error } => sqlx::query(RETRY).bind(id).bind(next_ms).bind(Some(error)),
                Attempt::Failed { error } => sqlx::query(FAILED).bind(id).bind(now_ms).bind(Some(error)),
            };
            q.execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Notifications waiting for delivery, all receivers.
    pub async fn pending_notifications(&self) -> Result<i64> {
        const COUNT: &str = "SELECT COUNT(*) FROM alert_outbox WHERE outcome = 'pending'";
        Ok(on_pool!(self, |pool| sqlx::query_scalar(COUNT).fetch_one(pool).await)?)
    }

    /// Deletes delivered and failed notifications finished before `before_ms`.
    pub async fn prune_alert_outbox(&self, before_ms: i64) -> Result<u64> {
        const DELETE: &str = "DELETE FROM alert_outbox WHERE outcome <> 'pending' AND done_ms < $1";
        Ok(on_pool!(self, |pool| sqlx::query(DELETE).bind(before_ms).execute(pool).await.map(|r| r.rows_affected()))?)
    }
}

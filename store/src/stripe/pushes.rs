//! The push ledger: due pushes, their outcomes, and what the API lists.

use std::collections::HashMap;

use sqlx::AssertSqlSafe;

use super::{PUSH_COLUMNS, PushOutcome, PushRow, PushState, RawPush, checked};
use crate::{Result, Store, store::BeginWrite};

impl Store {
    /// Pending pushes due by `now_ms`, oldest first, at most `limit`; of a
    /// window's pending pushes only the first (a window's pushes go out in
    /// order: a later total must not be overtaken by an earlier one).
    pub async fn due_pushes(&self, now_ms: i64, limit: i64) -> Result<Vec<PushRow>> {
        let sql = format!(
            "SELECT {PUSH_COLUMNS} FROM stripe_pushes p WHERE state = 'pending' AND next_attempt_ms <= $1 \
             AND NOT EXISTS (SELECT 1 FROM stripe_pushes e WHERE e.tenant = p.tenant AND e.meter = p.meter \
                 AND e.window_ms = p.window_ms AND e.revision < p.revision AND e.state = 'pending') \
             ORDER BY next_attempt_ms, created_ms, identifier LIMIT $2"
        );
        let rows = crate::on_pool!(self, |pool| {
            sqlx::query_as::<_, RawPush>(AssertSqlSafe(sql.as_str())).bind(now_ms).bind(limit).fetch_all(pool).await
        })?;
        checked(rows)
    }

    /// When the next pending push comes due, if any.
    pub async fn next_push_due_ms(&self) -> Result<Option<i64>> {
        const SELECT: &str = "SELECT MIN(next_attempt_ms) FROM stripe_pushes WHERE state = 'pending'";
        crate::on_pool!(self, |pool| Ok(sqlx::query_scalar::<_, Option<i64>>(SELECT).fetch_one(pool).await?))
    }

    /// Records attempts' outcomes, in one transaction (one statement on
    /// PostgreSQL).
    pub async fn finish_pushes(&self, outcomes: &[(String, PushOutcome)], now_ms: i64) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&str, PushState, i64, Option<i64>, Option<&str>, Option<&str>)> = outcomes
            .iter()
            .map(|(id, outcome)| match outcome {
                PushOutcome::Sent { request_id } => {
                    (id.as_str(), PushState::Sent, now_ms, Some(now_ms), request_id.as_deref(), None)
                }
                PushOutcome::Retry { next_ms, error } => {
                    (id.as_str(), PushState::Pending, *next_ms, None, None, Some(error.as_str()))
                }
                PushOutcome::Failed { error } => {
                    (id.as_str(), PushState::Failed, now_ms, None, None, Some(error.as_str()))
                }
                PushOutcome::Expired { error } => {
                    (id.as_str(), PushState::Expired, now_ms, None, None, Some(error.as_str()))
                }
            })
            .collect();
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "UPDATE stripe_pushes p SET state = u.s, attempts = p.attempts + 1, next_attempt_ms = u.n, \
                     first_attempt_ms = COALESCE(p.first_attempt_ms, $7), sent_ms = u.sent, \
                     request_id = COALESCE(u.req, p.request_id), error = u.err \
                     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[]) \
                         AS u(id, s, n, sent, req, err) \
                     WHERE p.identifier = u.id AND p.state = 'pending'",
                )
                .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.5).collect::<Vec<_>>())
                .bind(now_ms)
                .execute(pool)
                .await?;
            }
            Store::Sqlite(pool) => {
                const SET: &str = "UPDATE stripe_pushes SET state = $2, attempts = attempts + 1, next_attempt_ms = $3, \
                     first_attempt_ms = COALESCE(first_attempt_ms, $4), sent_ms = $5, \
                     request_id = COALESCE($6, request_id), error = $7 WHERE identifier = $1 AND state = 'pending'";
                let mut tx = pool.begin_write().await?;
                for r in &rows {
                    sqlx::query(SET)
                        .bind(r.0)
                        .bind(r.1.as_str())
                        .bind(r.2)
                        .bind(now_ms)
                        .bind(r.3)
                        .bind(r.4)
                        .bind(r.5)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// How many pushes are in each state (of one tenant, or all).
    pub async fn push_counts(&self, tenant: Option<&str>) -> Result<HashMap<PushState, i64>> {
        let sql = format!(
            "SELECT state, COUNT(*) FROM stripe_pushes {} GROUP BY state",
            if tenant.is_some() { "WHERE tenant = $1" } else { "" }
        );
        let rows: Vec<(String, i64)> = crate::on_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql.as_str()));
            if let Some(t) = tenant {
                q = q.bind(t);
            }
            q.fetch_all(pool).await
        })?;
        Ok(rows.into_iter().filter_map(|(s, n)| Some((PushState::parse(&s)?, n))).collect())
    }

    /// Pushes, newest first: of one tenant and/or in one state, at most `limit`.
    pub async fn pushes(&self, tenant: Option<&str>, state: Option<PushState>, limit: i64) -> Result<Vec<PushRow>> {
        let mut filter = Vec::new();
        if tenant.is_some() {
            filter.push(format!("tenant = ${}", filter.len() + 2));
        }
        if state.is_some() {
            filter.push(format!("state = ${}", filter.len() + 2));
        }
        let filter = if filter.is_empty() { String::new() } else { format!("WHERE {}", filter.join(" AND ")) };
        let sql =
            format!("SELECT {PUSH_COLUMNS} FROM stripe_pushes {filter} ORDER BY created_ms DESC, identifier LIMIT $1");
        let rows = crate::on_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, RawPush>(AssertSqlSafe(sql.as_str())).bind(limit);
            if let Some(t) = tenant {
                q = q.bind(t);
            }
            if let Some(s) = state {
                q = q.bind(s.as_str());
            }
            q.fetch_all(pool).await
        })?;
        checked(rows)
    }

    /// Every push of one billing period (reconciliation), oldest first.
    pub async fn period_pushes(&self, period_ms: i64, tenant: Option<&str>) -> Result<Vec<PushRow>> {
        let sql = format!(
            "SELECT {PUSH_COLUMNS} FROM stripe_pushes WHERE period_ms = $1 {} ORDER BY tenant, meter, window_ms, revision",
            if tenant.is_some() { "AND tenant = $2" } else { "" }
        );
        let rows = crate::on_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, RawPush>(AssertSqlSafe(sql.as_str())).bind(period_ms);
            if let Some(t) = tenant {
                q = q.bind(t);
            }
            q.fetch_all(pool).await
        })?;
        checked(rows)
    }

    /// Failed pushes per tenant (the `stripe_sync_failed` alert metric).
    pub async fn failed_pushes_by_tenant(&self) -> Result<Vec<(String, i64)>> {
        const SELECT: &str =
            "SELECT tenant, COUNT(*) FROM stripe_pushes WHERE state = 'failed' GROUP BY tenant ORDER BY tenant";
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, (String, i64)>(SELECT).fetch_all(pool).await)?)
    }

    /// Makes failed pushes (of one tenant, or all) pending again, once the
    /// cause is mended; returns how many.
    pub async fn retry_failed_pushes(&self, tenant: Option<&str>, now_ms: i64) -> Result<u64> {
        let sql = format!(
            "UPDATE stripe_pushes SET state = 'pending', next_attempt_ms = $1, first_attempt_ms = NULL \
             WHERE state = 'failed' {}",
            if tenant.is_some() { "AND tenant = $2" } else { "" }
        );
        crate::on_pool!(self, |pool| {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(now_ms);
            if let Some(t) = tenant {
                q = q.bind(t);
            }
            Ok(q.execute(pool).await?.rows_affected())
        })
    }
}

//! Planning in one transaction: read the windows' and periods' plans, let
//! the caller decide, write the new plans, the pushes and the changes done.
//! Each dialect reads and writes a batch its own way (PostgreSQL binds
//! whole columns as arrays, SQLite runs a statement per row, in process);
//! the steps are shared.

use std::collections::HashMap;

use super::{NewPush, Planned, PushRow, UsageChange, WindowKey};
use crate::{Result, Store, store::BeginWrite};

mod lite;
mod pg;

/// (tenant, meter, period or window start).
type Slot = (String, String, i64);

trait PlanSql: Send {
    /// Holds off any other planner until the transaction ends.
    fn lock_planner(&mut self) -> impl Future<Output = Result<()>> + Send;
    fn read_periods(&mut self, keys: &[Slot]) -> impl Future<Output = Result<HashMap<Slot, Planned>>> + Send;
    fn read_windows(&mut self, keys: &[Slot]) -> impl Future<Output = Result<HashMap<Slot, Planned>>> + Send;
    fn write_windows(&mut self, rows: &[(&WindowKey, Planned)], now_ms: i64)
    -> impl Future<Output = Result<()>> + Send;
    fn write_periods(&mut self, rows: &[(&Slot, Planned)]) -> impl Future<Output = Result<()>> + Send;
    fn insert_pushes(&mut self, rows: &[PushRow]) -> impl Future<Output = Result<()>> + Send;
    fn delete_changes(&mut self, done: &[UsageChange]) -> impl Future<Output = Result<()>> + Send;
}

impl Store {
    /// Plans windows in one transaction, serialised against any other
    /// planner (another replica that also thinks it leads): for each key,
    /// in order, `plan` gets the window's and its period's plan as stored
    /// (or as changed by an earlier key of this batch) and returns the
    /// window's new plan and the push it takes, if any. The new plans and
    /// pushes are written, each period moving by its windows' changes, and
    /// `done` changes are deleted unless the ledger changed them again.
    /// Returns the pushes written; with `commit` false nothing is written
    /// (a dry run: what would be pushed).
    pub async fn plan_stripe<F>(
        &self,
        keys: &[WindowKey],
        done: &[UsageChange],
        commit: bool,
        plan: F,
    ) -> Result<Vec<PushRow>>
    where
        F: FnMut(&WindowKey, Planned, Planned) -> Option<(Planned, Option<NewPush>)> + Send,
    {
        let now = tally_core::now_ms();
        crate::on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let pushes = plan_in(&mut *tx, keys, done, now, plan).await?;
            if commit {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok(pushes)
        })
    }
}

async fn plan_in<C: PlanSql, F>(
    tx: &mut C,
    keys: &[WindowKey],
    done: &[UsageChange],
    now: i64,
    mut plan: F,
) -> Result<Vec<PushRow>>
where
    F: FnMut(&WindowKey, Planned, Planned) -> Option<(Planned, Option<NewPush>)> + Send,
{
    tx.lock_planner().await?;
    let slot = |k: &WindowKey, at: i64| (k.tenant.clone(), k.meter.clone(), at);
    let mut period_keys: Vec<Slot> = keys.iter().map(|k| slot(k, k.period_ms)).collect();
    period_keys.sort();
    period_keys.dedup();
    let window_keys: Vec<Slot> = keys.iter().map(|k| slot(k, k.window_ms)).collect();
    let stored_periods = tx.read_periods(&period_keys).await?;
    let windows = tx.read_windows(&window_keys).await?;
    let mut periods: HashMap<Slot, Planned> = stored_periods.clone();
    let mut new_windows = Vec::new();
    let mut pushes = Vec::new();
    for key in keys {
        let pk = slot(key, key.period_ms);
        let period = periods.get(&pk).copied().unwrap_or_default();
        let window = windows.get(&slot(key, key.window_ms)).copied().unwrap_or_default();
        let Some((next, push)) = plan(key, window, period) else { continue };
        periods.insert(
            pk,
            Planned {
                units: period.units + next.units - window.units,
                covered: period.covered + next.covered - window.covered,
                revision: 0,
            },
        );
        new_windows.push((key, next));
        if let Some(p) = push {
            pushes.push(PushRow {
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
            });
        }
    }
    let changed: Vec<(&Slot, Planned)> =
        periods.iter().filter(|(k, p)| stored_periods.get(*k) != Some(*p)).map(|(k, p)| (k, *p)).collect();
    tx.write_windows(&new_windows, now).await?;
    tx.write_periods(&changed).await?;
    tx.insert_pushes(&pushes).await?;
    tx.delete_changes(done).await?;
    Ok(pushes)
}

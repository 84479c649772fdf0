//! Sends the push ledger's pending rows: at the configured rate, at most
//! `max_in_flight` at once and never two for one (customer, Stripe meter)
//! (Stripe answers a second with 429), outcomes written back in small
//! batches. A row stays pending until its outcome is written, so a crash
//! anywhere sends it again under the same identifier.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use tally_core::{metric_names, now_ms};
use tally_store::{PushOutcome, PushRow, Store};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    SyncStatus,
    client::{Client, Delivered, MeterEvent},
    config::SyncMeter,
    plan::MAX_AGE_MS,
};
use crate::delivery::{Backoff, CallError};

/// A send whose outcome is still unknown after this long is not sent again
/// blindly: Stripe keeps identifiers for at least 24 h, after that a resend
/// could count twice. Reconciliation decides.
const UNCONFIRMED_MS: i64 = 23 * 3_600_000;

/// How often outcomes are written back.
const FLUSH: Duration = Duration::from_millis(100);
/// Due pushes read at a time.
const FETCH: i64 = 2000;

pub struct Sender {
    pub store: Store,
    pub client: Arc<Client>,
    pub meters: Arc<Vec<SyncMeter>>,
    pub status: Arc<SyncStatus>,
    pub max_in_flight: usize,
    pub backoff: Backoff,
}

type Key = (String, String);

impl Sender {
    /// Sends until `stop`; what is in flight then is finished and written.
    pub async fn run(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut tasks: JoinSet<(PushRow, Result<Delivered, CallError>)> = JoinSet::new();
        // Fetched, not yet sent, in the order they are due.
        let mut ready: VecDeque<PushRow> = VecDeque::new();
        // Every identifier fetched whose outcome is not yet written back
        // (ready, in flight, or decided): not to be taken twice.
        let mut known: HashSet<String> = HashSet::new();
        let mut in_flight: HashSet<Key> = HashSet::new();
        let mut outcomes: Vec<(String, PushOutcome)> = Vec::new();
        let mut fetch = true;
        let mut flush = tokio::time::interval(FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sending = !stop.is_cancelled() && !self.status.halted();
            if sending && fetch && ready.len() < self.max_in_flight * 2 {
                fetch = false;
                match self.store.due_pushes(now_ms(), FETCH + known.len() as i64).await {
                    Ok(rows) => {
                        let full = rows.len() as i64 == FETCH + known.len() as i64;
                        for row in rows {
                            if known.insert(row.identifier.clone()) {
                                ready.push_back(row);
                            }
                        }
                        fetch = full; // a full page: more are due at once
                    }
                    Err(e) => tracing::warn!(error = %e, "reading due Stripe pushes failed"),
                }
            }
            // Send what may go: at most max_in_flight, one per (customer, meter).
            let mut i = 0;
            while sending && i < ready.len() && tasks.len() < self.max_in_flight {
                let row = &ready[i];
                let key = (row.customer.clone(), row.event_name.clone());
                if in_flight.contains(&key) {
                    i += 1;
                    continue;
                }
                let Some(row) = ready.remove(i) else { break };
                if let Some(outcome) = too_late(&row, now_ms()) {
                    outcomes.push((row.identifier.clone(), outcome));
                    continue;
                }
                in_flight.insert(key);
                let (client, meters) = (self.client.clone(), self.meters.clone());
                tasks.spawn(async move {
                    let result = send(&client, &meters, &row).await;
                    (row, result)
                });
            }
            if !sending && !ready.is_empty() {
                // Halted or stopping: what was not sent is fetched again later.
                for row in ready.drain(..) {
                    known.remove(&row.identifier);
                }
            }
            if stop.is_cancelled() && tasks.is_empty() {
                // One last write; what it cannot write is sent again later.
                if let Err(e) = self.store.finish_pushes(&outcomes, now_ms()).await {
                    tracing::warn!(error = %e, outcomes = outcomes.len(), "recording Stripe push outcomes at exit failed");
                }
                return;
            }
            tokio::select! {
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok((row, result)) = joined {
                        in_flight.remove(&(row.customer.clone(), row.event_name.clone()));
                        let outcome = self.outcome(&row, result);
                        outcomes.push((row.identifier, outcome));
                    }
                }
                _ = flush.tick(), if !outcomes.is_empty() => {
                    match self.store.finish_pushes(&outcomes, now_ms()).await {
                        Ok(()) => {
                            for (id, _) in outcomes.drain(..) {
                                known.remove(&id);
                            }
                            fetch |= ready.len() < self.max_in_flight;
                        }
                        // Kept, and written on the next tick; if tally stops
                        // first, the rows are sent again (same identifiers).
                        Err(e) => tracing::warn!(error = %e, outcomes = outcomes.len(), "recording Stripe push outcomes failed"),
                    }
                }
                _ = wake.notified() => fetch = true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => fetch = true,
                _ = stop.cancelled(), if !stop.is_cancelled() => {}
            }
        }
    }

    /// What an attempt came to, counted in `/metrics`.
    fn outcome(&self, row: &PushRow, result: Result<Delivered, CallError>) -> PushOutcome {
        let count =
            |outcome: &'static str| metrics::counter!(metric_names::STRIPE_PUSHES, "outcome" => outcome).increment(1);
        match result {
            Ok(d) => {
                count(if d.duplicate { "duplicate" } else { "sent" });
                metrics::histogram!(metric_names::STRIPE_PUSH_DELAY_SECONDS)
                    .record((now_ms() - row.created_ms).max(0) as f64 / 1000.0);
                PushOutcome::Sent { request_id: d.request_id }
            }
            Err(e) if e.halts() => {
                count("halted");
                self.status.halt(format!("Stripe refuses the API key: {e}"));
                // Not this push's fault: it goes first once the key works.
                PushOutcome::Retry { next_ms: now_ms(), error: e.to_string() }
            }
            Err(e) if e.is_retriable() => {
                count("retry");
                let failures = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
                let wait = self.backoff.wait(failures, e.retry_after()).unwrap_or(Duration::from_secs(600));
                tracing::debug!(identifier = %row.identifier, error = %e, retry_in = ?wait, "Stripe push not delivered; will retry");
                PushOutcome::Retry { next_ms: now_ms() + wait.as_millis() as i64, error: e.to_string() }
            }
            Err(e) => {
                count("failed");
                tracing::error!(identifier = %row.identifier, tenant = %row.tenant, meter = %row.meter, error = %e, "Stripe refused a push; not retried (see GET /v1/stripe/sync)");
                PushOutcome::Failed { error: e.to_string() }
            }
        }
    }
}

/// A pending row that must not be sent: too old for Stripe, or unconfirmed
/// for too long to resend blindly.
fn too_late(row: &PushRow, now: i64) -> Option<PushOutcome> {
    if row.timestamp_s * 1000 < now - MAX_AGE_MS {
        metrics::counter!(metric_names::STRIPE_PUSHES, "outcome" => "expired").increment(1);
        return Some(PushOutcome::Expired {
            error: "older than the 35 days Stripe accepts: correct it by hand (listed in GET /v1/stripe/sync)".into(),
        });
    }
    if row.first_attempt_ms.is_some_and(|t| t < now - UNCONFIRMED_MS) {
        metrics::counter!(metric_names::STRIPE_PUSHES, "outcome" => "unconfirmed").increment(1);
        return Some(PushOutcome::Failed {
            error: format!(
                "unconfirmed after {} attempts over 23 h: not resent blindly (Stripe's identifier window is 24 h); \
                 reconcile the period to see whether it landed",
                row.attempts
            ),
        });
    }
    None
}

async fn send(client: &Client, meters: &[SyncMeter], row: &PushRow) -> Result<Delivered, CallError> {
    let meter = meters
        .iter()
        .find(|m| m.name == row.meter)
        .ok_or_else(|| CallError::refused(format!("meter {} is no longer synced", row.meter)))?;
    client
        .meter_event(&MeterEvent {
            event_name: &row.event_name,
            identifier: &row.identifier,
            timestamp_s: row.timestamp_s,
            customer_key: &meter.customer_key,
            customer: &row.customer,
            value_key: &meter.value_key,
            value: row.value,
        })
        .await
}

/// Pending rows by state for `/metrics`.
pub fn publish_counts(counts: &HashMap<tally_store::PushState, i64>) {
    for state in tally_store::PushState::ALL {
        metrics::gauge!(metric_names::STRIPE_PUSH_ROWS, "state" => state.as_str())
            .set(counts.get(&state).copied().unwrap_or(0) as f64);
    }
}

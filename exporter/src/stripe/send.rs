//! Sends the push ledger's pending rows: at the configured rate, at most
//! `max_in_flight` at once and never two for one (customer, Stripe meter)
//! (Stripe answers a second with 429), outcomes written back in small
//! batches. A row stays pending until its outcome is written, so a crash
//! anywhere sends it again under the same identifier.

use std::{
    collections::{HashMap, HashSet},
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
        // Sent (or decided) but not yet written back: not to be fetched again.
        let mut busy: HashSet<String> = HashSet::new();
        let mut in_flight: HashSet<Key> = HashSet::new();
        let mut outcomes: Vec<(String, PushOutcome)> = Vec::new();
        let mut fetch = true;
        let mut flush = tokio::time::interval(FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if fetch && !stop.is_cancelled() && !self.status.halted() && tasks.len() < self.max_in_flight {
                fetch = false;
                let limit = (self.max_in_flight * 4 + busy.len()) as i64;
                match self.store.due_pushes(now_ms(), limit).await {
                    Ok(rows) => {
                        for row in rows {
                            if tasks.len() >= self.max_in_flight {
                                fetch = true; // more are due
                                break;
                            }
                            let key = (row.customer.clone(), row.event_name.clone());
                            if busy.contains(&row.identifier) || in_flight.contains(&key) {
                                continue;
                            }
                            busy.insert(row.identifier.clone());
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
                    }
                    Err(e) => tracing::warn!(error = %e, "reading due Stripe pushes failed"),
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
                    fetch = true;
                }
                _ = flush.tick(), if !outcomes.is_empty() => {
                    match self.store.finish_pushes(&outcomes, now_ms()).await {
                        Ok(()) => {
                            for (id, _) in outcomes.drain(..) {
                                busy.remove(&id);
                            }
                            fetch = true;
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
                PushOutcome::Retry { next_ms: now_ms() + 60_000, error: e.to_string() }
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

//! Delivers the alert outbox. Per receiver, the oldest pending
//! notification is claimed (so replicas neither send it twice nor overtake
//! it), sent, and its outcome recorded: delivered; retried after the next
//! wait of `alerting.retry_schedule` (network errors, timeouts, 408, 429,
//! 5xx); or failed (the schedule is exhausted, or the receiver answered
//! another 4xx: it refuses the request itself). A notification waits for
//! the one before it, so receivers see them in order. The outbox is in the
//! database, so a restart loses nothing; a send that was cut off by a crash
//! is sent again after its claim expires, with the same `webhook-id`, so
//! receivers can tell.

mod body;
mod receiver;

use std::{sync::Arc, time::Duration};

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tally_core::{alert::Notification, metric_names, now_ms};
use tally_store::{Attempt, OutboxRow, Store};

use crate::delivery::{self, Backoff, CallError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use body::{alertmanager, pagerduty, signature};
pub use receiver::{
    PAGERDUTY_URL, PublicOnly, Receiver, ReceiverConfig, ReceiverKind, check_receivers, private_host, private_ip,
    signing_key,
};

/// How often the outbox is looked at without being woken (other replicas'
/// notifications, retries coming due).
const POLL: Duration = Duration::from_secs(1);

/// Delivers the alert outbox to the configured receivers (webhooks,
/// PagerDuty), per receiver in order, with the retry schedule; see the
/// module docs.
pub struct Dispatcher {
    store: Store,
    receivers: Vec<(Receiver, reqwest::Client)>,
    backoff: Backoff,
    send_timeout: Duration,
    external_url: String,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        receivers: Vec<Receiver>,
        retry_schedule: Vec<Duration>,
        send_timeout: Duration,
        external_url: String,
    ) -> reqwest::Result<Dispatcher> {
        let receivers = receivers
            .into_iter()
            .map(|r| receiver::client(r.allow_private, send_timeout).map(|client| (r, client)))
            .collect::<reqwest::Result<_>>()?;
        Ok(Dispatcher {
            store,
            receivers,
            backoff: Backoff::schedule(retry_schedule),
            send_timeout,
            external_url: external_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Delivers until `shutdown`; a send in progress is finished first.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        if self.receivers.is_empty() {
            return;
        }
        loop {
            let sends = self.receivers.iter().map(|(r, c)| self.drain(r, c, &shutdown));
            futures::future::join_all(sends).await;
            match self.store.pending_notifications().await {
                Ok(n) => metrics::gauge!(metric_names::ALERT_NOTIFICATIONS_PENDING).set(n as f64),
                Err(e) => tracing::warn!(error = %e, "counting pending notifications failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Sends `receiver`'s due notifications in order until none is due.
    async fn drain(&self, receiver: &Receiver, client: &reqwest::Client, shutdown: &CancellationToken) {
        // The claim outlives the longest send, so nobody else takes it meanwhile.
        let lease_ms = (self.send_timeout + Duration::from_secs(5)).as_millis() as i64;
        while !shutdown.is_cancelled() {
            let row = match self.store.claim_notification(&receiver.name, now_ms(), lease_ms).await {
                Ok(Some(row)) => row,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(receiver = %receiver.name, error = %e, "reading the alert outbox failed");
                    return;
                }
            };
            let sent = self.send(receiver, client, &row).await;
            let now = now_ms();
            let labels = |outcome: &'static str| [("receiver", receiver.name.clone()), ("outcome", outcome.to_owned())];
            let error = sent.as_ref().err().map(ToString::to_string).unwrap_or_default();
            let error = error.as_str();
            let attempt = match &sent {
                Ok(()) => {
                    metrics::counter!(metric_names::ALERT_NOTIFICATIONS, &labels("delivered")).increment(1);
                    metrics::histogram!(metric_names::ALERT_DELIVERY_SECONDS, "receiver" => receiver.name.clone())
                        .record((now - row.created_ms).max(0) as f64 / 1000.0);
                    Attempt::Delivered
                }
                Err(e) if e.is_retriable() => {
                    let failures = u32::try_from(row.attempts.max(0)).unwrap_or(u32::MAX).saturating_add(1);
                    match self.backoff.wait(failures, e.retry_after()) {
                        Some(wait) => {
                            metrics::counter!(metric_names::ALERT_NOTIFICATIONS, &labels("retry")).increment(1);
                            tracing::warn!(receiver = %receiver.name, id = row.id, attempt = failures, %error, retry_in = ?wait, "alert notification not delivered; will retry");
                            Attempt::Retry { next_ms: now + wait.as_millis() as i64, error }
                        }
                        None => {
                            metrics::counter!(metric_names::ALERT_NOTIFICATIONS, &labels("failed")).increment(1);
                            tracing::error!(receiver = %receiver.name, id = row.id, attempts = failures, %error, "alert notification given up: retry schedule exhausted");
                            Attempt::Failed { error }
                        }
                    }
                }
                // Refused, or the receiver refuses tally's credentials: a
                // retry of the same request gets the same answer.
                Err(e) => {
                    metrics::counter!(metric_names::ALERT_NOTIFICATIONS, &labels("failed")).increment(1);
                    tracing::error!(receiver = %receiver.name, id = row.id, %error, kind = e.kind.as_str(), "alert notification refused by the receiver; not retried");
                    Attempt::Failed { error }
                }
            };
            if let Err(e) = self.store.finish_notification(row.id, now, attempt).await {
                // The claim expires and it is sent again (same webhook-id).
                tracing::warn!(receiver = %receiver.name, id = row.id, error = %e, "recording a delivery failed");
                return;
            }
            if sent.is_err() {
                return; // the next one waits for this one
            }
        }
    }

    async fn send(&self, receiver: &Receiver, client: &reqwest::Client, row: &OutboxRow) -> Result<(), CallError> {
        let n: Notification = serde_json::from_str(&row.payload)
            .map_err(|e| CallError::refused(format!("stored notification does not parse: {e}")))?;
        if !receiver.allow_private
            && let Some(why) = private_host(&receiver.url)
        {
            return Err(CallError::refused(format!("target is {why}")));
        }
        let body = match receiver.kind {
            ReceiverKind::Webhook => alertmanager(&n, &receiver.name, &self.external_url),
            ReceiverKind::Pagerduty => pagerduty(&n, receiver.routing_key.as_deref().unwrap_or_default()),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut req =
            client.post(receiver.url.clone()).header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if receiver.kind == ReceiverKind::Webhook {
            // Stable across retries: receivers deduplicate on it.
            let id = format!("msg_{}_{}", n.fingerprint, row.id);
            let timestamp = now_ms() / 1000;
            req = req.header("webhook-id", &id).header("webhook-timestamp", timestamp.to_string());
            if let Some(key) = &receiver.signing_key {
                req = req.header("webhook-signature", signature(key, &id, timestamp, &body));
            }
        }
        delivery::send(req.body(body), 300).await?.into_result().map(drop)
    }
}

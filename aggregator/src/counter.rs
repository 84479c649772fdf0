use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tally_core::{QueuedRequest, Signal, TelemetryBatch, TenantId, metric_names};
use tally_store::{IngestCount, Store};
use tokio::sync::mpsc;

/// Counts accepted items per tenant and signal and adds them to the store
/// every flush interval and when its input closes.
pub struct IngestCounter {
    store: Store,
    flush_interval: Duration,
    pending: HashMap<(TenantId, Signal), u64>,
}

impl IngestCounter {
    pub fn new(store: Store, flush_interval: Duration) -> IngestCounter {
        IngestCounter { store, flush_interval, pending: HashMap::new() }
    }

    /// Runs until every sender of `rx` is gone (the receivers have stopped),
    /// then flushes what it holds. It does not watch a shutdown signal of
    /// its own: stopping on the input closing is what guarantees the queue
    /// is drained first.
    pub async fn run(mut self, mut rx: mpsc::Receiver<QueuedRequest>) {
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = rx.recv() => match request {
                    Some(request) => {
                        self.add(&request.batches);
                        metrics::gauge!(metric_names::QUEUE_DEPTH).set(rx.len() as f64);
                    }
                    None => break,
                },
                _ = tick.tick() => self.flush().await,
            }
        }
        // Final flush: retry a few times, the process is about to exit.
        for attempt in 0..5 {
            self.flush().await;
            if self.pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        if !self.pending.is_empty() {
            tracing::error!(rows = self.pending.len(), "ingest counts could not be written before exit");
        }
    }

    fn add(&mut self, batches: &[TelemetryBatch]) {
        for b in batches {
            *self.pending.entry((b.tenant.clone(), b.signal())).or_default() += b.items;
            metrics::counter!(metric_names::PROCESSED_ITEMS, "signal" => b.signal().as_str()).increment(b.items);
        }
    }

    /// Writes pending counts in one transaction; on failure keeps them for
    /// the next attempt.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let rows: Vec<IngestCount> = self
            .pending
            .iter()
            .map(|((tenant, signal), items)| IngestCount { tenant: tenant.clone(), signal: *signal, items: *items })
            .collect();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        match self.store.add_ingest_counts(&rows, now_ms).await {
            Ok(()) => self.pending.clear(),
            Err(e) => {
                metrics::counter!(metric_names::FLUSH_ERRORS).increment(1);
                tracing::warn!(error = %e, retriable = e.is_retriable(), "flushing ingest counts failed; will retry");
            }
        }
    }
}

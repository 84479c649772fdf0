use std::time::Duration;

use tally_core::{TelemetryBatch, metric_names};
use tokio::sync::mpsc;

/// The sending side of the bounded queue between the receivers and the
/// downstream stages. One queue entry is one request's batches (one per
/// tenant), so a request is enqueued whole or not at all.
#[derive(Debug, Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Vec<TelemetryBatch>>,
    enqueue_timeout: Duration,
}

pub type PipelineReceiver = mpsc::Receiver<Vec<TelemetryBatch>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueError {
    /// The queue stayed full for the whole enqueue timeout.
    Full,
    /// The downstream stage has stopped (shutdown).
    Closed,
}

impl Pipeline {
    pub fn new(capacity: usize, enqueue_timeout: Duration) -> (Pipeline, PipelineReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        metrics::gauge!(metric_names::QUEUE_CAPACITY).set(capacity as f64);
        (
            Pipeline {
                tx,
                enqueue_timeout,
            },
            rx,
        )
    }

    pub(crate) async fn send(&self, batches: Vec<TelemetryBatch>) -> Result<(), EnqueueError> {
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(EnqueueError::Closed),
            Err(mpsc::error::TrySendError::Full(())) => {
                match tokio::time::timeout(self.enqueue_timeout, self.tx.reserve()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(EnqueueError::Closed),
                    Err(_) => return Err(EnqueueError::Full),
                }
            }
        };
        permit.send(batches);
        metrics::gauge!(metric_names::QUEUE_DEPTH)
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        Ok(())
    }
}

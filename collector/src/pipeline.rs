use std::{sync::Arc, time::Duration};

use tally_core::{QueuedRequest, TelemetryBatch, metric_names};
use tokio::{
    sync::{Semaphore, TryAcquireError, mpsc},
    time::{Instant, timeout_at},
};

/// The sending side of the bounded queue between the receivers and the
/// downstream stages. One entry is one request's batches, so a request is
/// enqueued whole or not at all. Two bounds: entries, and the request bytes
/// (decompressed wire size) held, which bounds memory whatever the request
/// sizes — decoded data takes a few times its wire size.
#[derive(Debug, Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<QueuedRequest>,
    budget: Arc<Semaphore>,
    max_bytes: u32,
    enqueue_timeout: Duration,
}

pub type PipelineReceiver = mpsc::Receiver<QueuedRequest>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueError {
    /// The queue stayed full for the whole enqueue timeout.
    Full,
    /// The downstream stage has stopped (shutdown).
    Closed,
}

impl Pipeline {
    pub fn new(capacity: usize, max_bytes: usize, enqueue_timeout: Duration) -> (Pipeline, PipelineReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        metrics::gauge!(metric_names::QUEUE_CAPACITY).set(capacity as f64);
        metrics::gauge!(metric_names::QUEUE_BYTES_CAPACITY).set(f64::from(max_bytes));
        let budget = Arc::new(Semaphore::new(max_bytes as usize));
        (Pipeline { tx, budget, max_bytes, enqueue_timeout }, rx)
    }

    /// Enqueues one request's batches, `bytes` being its size; waits up to
    /// the enqueue timeout for room.
    pub(crate) async fn send(&self, batches: Vec<TelemetryBatch>, bytes: usize) -> Result<(), EnqueueError> {
        let deadline = Instant::now() + self.enqueue_timeout;
        // A request larger than the whole budget still passes when the queue is empty.
        let want = (bytes.max(1) as u64).min(u64::from(self.max_bytes)) as u32;
        let permit = match self.budget.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(EnqueueError::Closed),
            Err(TryAcquireError::NoPermits) => {
                match timeout_at(deadline, self.budget.clone().acquire_many_owned(want)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(EnqueueError::Closed),
                    Err(_) => return Err(EnqueueError::Full),
                }
            }
        };
        let slot = match self.tx.try_reserve() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(EnqueueError::Closed),
            Err(mpsc::error::TrySendError::Full(())) => match timeout_at(deadline, self.tx.reserve()).await {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) => return Err(EnqueueError::Closed),
                Err(_) => return Err(EnqueueError::Full),
            },
        };
        metrics::gauge!(metric_names::QUEUE_BYTES).increment(f64::from(want));
        slot.send(QueuedRequest::new(batches, BudgetShare { _permit: permit, bytes: want }));
        metrics::gauge!(metric_names::QUEUE_DEPTH).set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        Ok(())
    }
}

/// A queued request's share of the byte budget; returned (and the gauge
/// lowered) when the downstream stage drops the request.
struct BudgetShare {
    _permit: tokio::sync::OwnedSemaphorePermit,
    bytes: u32,
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        metrics::gauge!(metric_names::QUEUE_BYTES).decrement(f64::from(self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn byte_budget_bounds_the_queue_and_is_returned_on_drop() {
        let (p, mut rx) = Pipeline::new(100, 1000, Duration::from_millis(10));
        p.send(vec![], 600).await.unwrap();
        assert_eq!(p.send(vec![], 600).await, Err(EnqueueError::Full));
        p.send(vec![], 400).await.unwrap(); // exactly fills the budget
        drop(rx.recv().await); // gives 600 back
        // Oversized requests need the whole budget, so they wait for an empty queue.
        assert_eq!(p.send(vec![], 5000).await, Err(EnqueueError::Full));
        drop(rx.recv().await);
        p.send(vec![], 5000).await.unwrap();
        drop(rx);
        assert_eq!(p.send(vec![], 1).await, Err(EnqueueError::Closed));
    }

    #[tokio::test]
    async fn entry_bound_holds_too() {
        let (p, _rx) = Pipeline::new(2, 1 << 20, Duration::from_millis(10));
        p.send(vec![], 1).await.unwrap();
        p.send(vec![], 1).await.unwrap();
        assert_eq!(p.send(vec![], 1).await, Err(EnqueueError::Full));
    }
}

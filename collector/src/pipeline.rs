//! The pipeline between the receivers and the downstream consumers: a
//! fan-out that hands every accepted request to each consumer (the rollup
//! stage, the lake writer, a forwarder) as peers, each through a bounded
//! queue of its own, and each with its own answer to being slow:
//!
//! - [`Policy::Block`] (rollups, the lake): a request is enqueued on every
//!   blocking branch or on none; while one is full, the request waits up to
//!   the enqueue timeout and is then refused (429 / RESOURCE_EXHAUSTED) —
//!   push-back, never loss. These branches share one byte budget (the
//!   decompressed wire size of the requests they hold), returned when the
//!   last of them is done with a request.
//! - [`Policy::Shed`] (forwarders such as Application Insights): a request
//!   goes only if the branch has room now, in its queue and in a byte budget
//!   of its own; otherwise the branch misses it, counted
//!   (`tally_pipeline_shed_items_total{branch}`). A forwarder never slows
//!   ingestion down, and what it holds never counts against the others.
//!
//! The decoded batches are shared (an `Arc`), never copied per branch.

use std::{sync::Arc, time::Duration};

use tally_core::{QueuedRequest, TelemetryBatch, metric_names};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc},
    time::{Instant, timeout_at},
};

/// What a branch does when it cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Wait for room (pushing back on the sender); never miss a request.
    Block,
    /// Miss the request (counted) unless there is room now; `max_bytes` is
    /// the branch's own budget of request bytes held.
    Shed { max_bytes: usize },
}

/// One consumer's side of the pipeline.
pub type PipelineReceiver = mpsc::Receiver<QueuedRequest>;

#[derive(Debug, Clone)]
struct Branch {
    name: &'static str,
    tx: mpsc::Sender<QueuedRequest>,
    /// Shed branches: their own byte budget.
    budget: Option<(Arc<Semaphore>, u32)>,
}

/// Builds the fan-out: one [`Pipeline::branch`] per consumer, then [`Pipeline::build`].
#[derive(Debug)]
pub struct PipelineBuilder {
    capacity: usize,
    max_bytes: u32,
    enqueue_timeout: Duration,
    branches: Vec<Branch>,
}

/// The sending side of the fan-out, held by the receivers (cheap to clone).
#[derive(Debug, Clone)]
pub struct Pipeline {
    branches: Arc<[Branch]>,
    budget: Arc<Semaphore>,
    max_bytes: u32,
    enqueue_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueError {
    /// A blocking branch stayed full for the whole enqueue timeout.
    Full,
    /// A blocking branch has stopped (shutdown).
    Closed,
}

fn clamp_bytes(n: usize) -> u32 {
    n.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32
}

impl PipelineBuilder {
    /// A branch for one consumer, with a queue of `capacity` requests.
    pub fn branch(&mut self, name: &'static str, policy: Policy) -> PipelineReceiver {
        let (tx, rx) = mpsc::channel(self.capacity);
        let budget = match policy {
            Policy::Block => None,
            Policy::Shed { max_bytes } => {
                let max = clamp_bytes(max_bytes);
                Some((Arc::new(Semaphore::new(max as usize)), max))
            }
        };
        self.branches.push(Branch { name, tx, budget });
        rx
    }

    pub fn build(self) -> Pipeline {
        metrics::gauge!(metric_names::QUEUE_CAPACITY).set(self.capacity as f64);
        metrics::gauge!(metric_names::QUEUE_BYTES_CAPACITY).set(f64::from(self.max_bytes));
        Pipeline {
            branches: self.branches.into(),
            budget: Arc::new(Semaphore::new(self.max_bytes as usize)),
            max_bytes: self.max_bytes,
            enqueue_timeout: self.enqueue_timeout,
        }
    }
}

impl Pipeline {
    /// Blocking branches hold `capacity` requests and `max_bytes` request
    /// bytes (together); a request waits up to `enqueue_timeout` for room.
    pub fn builder(capacity: usize, max_bytes: usize, enqueue_timeout: Duration) -> PipelineBuilder {
        PipelineBuilder {
            capacity: capacity.max(1),
            max_bytes: clamp_bytes(max_bytes),
            enqueue_timeout,
            branches: Vec::new(),
        }
    }

    /// Hands one request's batches, `bytes` being its size, to every
    /// branch: to all blocking branches or (refused) to none, waiting up to
    /// the enqueue timeout; to each shedding branch that has room.
    pub(crate) async fn send(&self, batches: Vec<TelemetryBatch>, bytes: usize) -> Result<(), EnqueueError> {
        let deadline = Instant::now() + self.enqueue_timeout;
        // A request larger than the whole budget still passes when nothing is held.
        let want = (bytes.max(1) as u64).min(u64::from(self.max_bytes)) as u32;
        let permit = acquire(&self.budget, want, deadline).await?;
        let mut slots = Vec::new();
        let mut depth = 0;
        for b in self.branches.iter().filter(|b| b.budget.is_none()) {
            let slot = match b.tx.try_reserve() {
                Ok(slot) => slot,
                Err(mpsc::error::TrySendError::Closed(())) => return Err(EnqueueError::Closed),
                Err(mpsc::error::TrySendError::Full(())) => match timeout_at(deadline, b.tx.reserve()).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => return Err(EnqueueError::Closed),
                    Err(_) => return Err(EnqueueError::Full),
                },
            };
            depth = depth.max(b.tx.max_capacity() - b.tx.capacity());
            slots.push(slot);
        }
        let items: u64 = batches.iter().map(|b| b.items).sum();
        let batches = Arc::new(batches);
        metrics::gauge!(metric_names::QUEUE_BYTES).increment(f64::from(want));
        let share: Arc<dyn std::any::Any + Send + Sync> = Arc::new(BudgetShare { _permit: permit, bytes: want });
        for slot in slots {
            slot.send(QueuedRequest::shared(batches.clone(), share.clone()));
        }
        drop(share);
        for b in self.branches.iter() {
            let Some((budget, max)) = &b.budget else { continue };
            let want = (bytes.max(1) as u64).min(u64::from(*max)) as u32;
            let sent = budget
                .clone()
                .try_acquire_many_owned(want)
                .ok()
                .and_then(|p| b.tx.try_reserve().ok().map(|slot| (p, slot)))
                .map(|(p, slot)| slot.send(QueuedRequest::shared(batches.clone(), Arc::new(p))));
            if sent.is_none() {
                metrics::counter!(metric_names::PIPELINE_SHED_ITEMS, "branch" => b.name).increment(items);
            }
        }
        metrics::gauge!(metric_names::QUEUE_DEPTH).set(depth as f64);
        Ok(())
    }
}

async fn acquire(budget: &Arc<Semaphore>, want: u32, deadline: Instant) -> Result<OwnedSemaphorePermit, EnqueueError> {
    match budget.clone().try_acquire_many_owned(want) {
        Ok(p) => Ok(p),
        Err(TryAcquireError::Closed) => Err(EnqueueError::Closed),
        Err(TryAcquireError::NoPermits) => match timeout_at(deadline, budget.clone().acquire_many_owned(want)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(EnqueueError::Closed),
            Err(_) => Err(EnqueueError::Full),
        },
    }
}

/// A queued request's share of the blocking branches' byte budget; returned
/// (and the gauge lowered) when the last of them drops the request.
struct BudgetShare {
    _permit: OwnedSemaphorePermit,
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

    fn one(capacity: usize, max_bytes: usize) -> (Pipeline, PipelineReceiver) {
        let mut b = Pipeline::builder(capacity, max_bytes, Duration::from_millis(10));
        let rx = b.branch("rollups", Policy::Block);
        (b.build(), rx)
    }

    #[tokio::test]
    async fn byte_budget_bounds_the_queue_and_is_returned_on_drop() {
        let (p, mut rx) = one(100, 1000);
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
        let (p, _rx) = one(2, 1 << 20);
        p.send(vec![], 1).await.unwrap();
        p.send(vec![], 1).await.unwrap();
        assert_eq!(p.send(vec![], 1).await, Err(EnqueueError::Full));
    }

    /// Every blocking branch gets each request, or none does; the budget
    /// comes back only when the last of them is done with it.
    #[tokio::test]
    async fn blocking_branches_get_all_or_nothing_and_share_the_budget() {
        let mut b = Pipeline::builder(1, 1000, Duration::from_millis(10));
        let (mut rollups, mut lake) = (b.branch("rollups", Policy::Block), b.branch("lake", Policy::Block));
        let p = b.build();
        p.send(vec![], 600).await.unwrap();
        let (r, l) = (rollups.recv().await.unwrap(), lake.recv().await.unwrap());
        assert!(Arc::ptr_eq(&r.batches, &l.batches), "shared, not copied");
        drop(r);
        // The lake still holds it: the budget is not back.
        assert_eq!(p.send(vec![], 600).await, Err(EnqueueError::Full));
        drop(l);
        p.send(vec![], 600).await.unwrap();
        // The lake's queue is full (capacity 1): the rollups' must not get it alone.
        drop(rollups.recv().await);
        assert_eq!(p.send(vec![], 1).await, Err(EnqueueError::Full));
        assert!(rollups.try_recv().is_err());
    }

    /// A slow forwarder misses requests instead of slowing anything down,
    /// and what it holds does not count against the blocking budget.
    #[tokio::test]
    async fn a_shedding_branch_never_pushes_back() {
        let mut b = Pipeline::builder(4, 1000, Duration::from_millis(10));
        let mut rollups = b.branch("rollups", Policy::Block);
        let mut forward = b.branch("forwarder", Policy::Shed { max_bytes: 700 });
        let p = b.build();
        for _ in 0..3 {
            p.send(vec![], 300).await.unwrap();
            drop(rollups.recv().await);
        }
        // The forwarder took what its 700 bytes allow (two), missed the third.
        assert!(forward.try_recv().is_ok() && forward.try_recv().is_ok());
        assert!(forward.try_recv().is_err());
    }
}

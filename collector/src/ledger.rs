//! Group commit into the usage ledger. Requests hand their records to one
//! writer task; while it commits, newer requests queue up and go into the
//! next transaction together, so throughput does not hang on one commit
//! (one fsync) per request. Every request is answered only after the
//! transaction holding its records has committed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tally_core::{CumulativePoint, UsageOutcome, UsageRecord, metric_names};
use tally_store::Store;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Why records could not be written; nothing of the request was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// Worth retrying later (the database is busy or unreachable).
    #[error("usage ledger unavailable: {0}")]
    Unavailable(String),
    /// Refused for what the records hold; retrying the same will not help.
    #[error("usage not recorded: {0}")]
    Refused(String),
    #[error("tally is shutting down")]
    ShuttingDown,
}

struct Job {
    records: Vec<UsageRecord>,
    cumulative: Vec<CumulativePoint>,
    reply: oneshot::Sender<Result<Vec<UsageOutcome>, LedgerError>>,
}

/// Told the records each transaction accepted, after it commits (the
/// entitlement counters follow the ledger this way). Must not block.
pub type CommitObserver = Arc<dyn Fn(&[UsageRecord], &[UsageOutcome]) + Send + Sync>;

/// A handle for writing usage records; cheap to clone.
#[derive(Debug, Clone)]
pub struct UsageLedger {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("records", &self.records.len()).finish()
    }
}

impl UsageLedger {
    /// Starts `writers` writer tasks (each commits one group at a time; on
    /// SQLite, which has one writer anyway, always one). They stop once every
    /// handle is dropped and what was queued is committed. `max_batch`
    /// bounds the records of one transaction.
    pub fn start(store: Store, max_batch: usize, writers: usize) -> (UsageLedger, tokio::task::JoinHandle<()>) {
        Self::start_observed(store, max_batch, writers, None)
    }

    /// [`UsageLedger::start`], telling `observer` what each commit accepted.
    pub fn start_observed(
        store: Store,
        max_batch: usize,
        writers: usize,
        observer: Option<CommitObserver>,
    ) -> (UsageLedger, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let writers = if store.backend() == tally_store::Backend::Sqlite { 1 } else { writers.max(1) };
        let rx = Arc::new(Mutex::new(rx));
        let tasks: Vec<_> = (0..writers)
            .map(|_| tokio::spawn(run(store.clone(), rx.clone(), max_batch.max(1), observer.clone())))
            .collect();
        let all = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        (UsageLedger { tx }, all)
    }

    /// Writes `records` and returns each one's outcome, after commit.
    pub async fn record(&self, records: Vec<UsageRecord>) -> Result<Vec<UsageOutcome>, LedgerError> {
        self.record_with_streams(records, Vec::new()).await
    }

    /// Writes `records` and the deltas of cumulative `points` (see
    /// `Store::record_usage`) in one transaction; outcomes are `records`'.
    pub async fn record_with_streams(
        &self,
        records: Vec<UsageRecord>,
        cumulative: Vec<CumulativePoint>,
    ) -> Result<Vec<UsageOutcome>, LedgerError> {
        if records.is_empty() && cumulative.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { records, cumulative, reply }).await.map_err(|_| LedgerError::ShuttingDown)?;
        answer.await.map_err(|_| LedgerError::ShuttingDown)?
    }
}

/// One writer: takes what is queued (up to `max_batch` records) and commits
/// it, while the other writers may be committing their own group. Writers
/// write keys in sorted order, so their transactions cannot deadlock.
async fn run(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize, observer: Option<CommitObserver>) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut jobs = vec![first];
            let mut n = jobs[0].records.len() + jobs[0].cumulative.len();
            while n < max_batch {
                match rx.try_recv() {
                    Ok(job) => {
                        n += job.records.len() + job.cumulative.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        commit(&store, jobs, observer.as_ref()).await;
    }
}

async fn commit(store: &Store, jobs: Vec<Job>, observer: Option<&CommitObserver>) {
    let mut all = Vec::with_capacity(jobs.iter().map(|j| j.records.len()).sum());
    let mut cumulative = Vec::new();
    let mut parts = Vec::with_capacity(jobs.len());
    for job in jobs {
        parts.push((job.records.len(), job.cumulative.len(), job.reply));
        all.extend(job.records);
        cumulative.extend(job.cumulative);
    }
    let result = write(store, &all, &cumulative).await;
    match result {
        Ok(outcomes) => {
            if let Some(observe) = observer {
                observe(&all, &outcomes);
            }
            let mut outcomes = outcomes.into_iter();
            for (n, _, reply) in parts {
                let _ = reply.send(Ok(outcomes.by_ref().take(n).collect()));
            }
        }
        // The database refuses something in this group (events are checked
        // before they get here, so this should not happen): commit each
        // request on its own, so only the one carrying it fails and its
        // neighbours are not answered 503 because of it.
        Err(e) if !e.is_retriable() && parts.len() > 1 => {
            tracing::warn!(error = %e, requests = parts.len(), "usage ledger commit refused; committing its requests one by one");
            let (mut records, mut points) = (all.into_iter(), cumulative.into_iter());
            for (n, c, reply) in parts {
                let mine: Vec<UsageRecord> = records.by_ref().take(n).collect();
                let my_points: Vec<CumulativePoint> = points.by_ref().take(c).collect();
                let result = write(store, &mine, &my_points).await.map_err(|e| failed(&e, mine.len()));
                if let (Some(observe), Ok(outcomes)) = (observer, &result) {
                    observe(&mine, outcomes);
                }
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let err = failed(&e, all.len());
            for (_, _, reply) in parts {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// One transaction; a retriable failure (busy, connection lost) is retried
/// briefly here, otherwise the requests get an error and their senders
/// retry, which is safe: ids make the retry exactly-once.
async fn write(
    store: &Store,
    records: &[UsageRecord],
    cumulative: &[CumulativePoint],
) -> Result<Vec<UsageOutcome>, tally_store::StoreError> {
    let now_ms = tally_core::now_ms();
    let start = Instant::now();
    let mut result = store.record_usage(records, cumulative, now_ms).await;
    for backoff in [50, 200, 800] {
        match &result {
            // Quick failures only (a serialization conflict, one dropped
            // connection): when the database is down each attempt waits
            // out the pool's acquire timeout, and the sender should have
            // its 503 rather than wait four of them.
            Err(e) if e.is_retriable() && start.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                result = store.record_usage(records, cumulative, now_ms).await;
            }
            _ => break,
        }
    }
    metrics::histogram!(metric_names::LEDGER_COMMIT_DURATION).record(start.elapsed().as_secs_f64());
    metrics::histogram!(metric_names::LEDGER_COMMIT_RECORDS).record(records.len() as f64);
    result
}

/// The error a request gets for a failed commit (logged and counted here).
fn failed(e: &tally_store::StoreError, records: usize) -> LedgerError {
    tracing::error!(error = %e, records, "usage ledger commit failed");
    metrics::counter!(metric_names::LEDGER_ERRORS).increment(1);
    if e.is_retriable() {
        LedgerError::Unavailable("database busy or unreachable, retry".into())
    } else {
        LedgerError::Refused("the database refused these records (see tally's log); they were not recorded".into())
    }
}

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
    #[error("usage ledger unavailable: {0}")]
    Unavailable(String),
    #[error("tally is shutting down")]
    ShuttingDown,
}

struct Job {
    records: Vec<UsageRecord>,
    cumulative: Vec<CumulativePoint>,
    reply: oneshot::Sender<Result<Vec<UsageOutcome>, LedgerError>>,
}

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
        let (tx, rx) = mpsc::channel(1024);
        let writers = if store.backend() == tally_store::Backend::Sqlite { 1 } else { writers.max(1) };
        let rx = Arc::new(Mutex::new(rx));
        let tasks: Vec<_> =
            (0..writers).map(|_| tokio::spawn(run(store.clone(), rx.clone(), max_batch.max(1)))).collect();
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
async fn run(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize) {
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
        commit(&store, jobs).await;
    }
}

async fn commit(store: &Store, jobs: Vec<Job>) {
    let mut all = Vec::with_capacity(jobs.iter().map(|j| j.records.len()).sum());
    let mut cumulative = Vec::new();
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        replies.push((job.records.len(), job.reply));
        all.extend(job.records);
        cumulative.extend(job.cumulative);
    }
    let now_ms = tally_core::now_ms();
    let start = Instant::now();
    // A retriable failure (busy, connection lost) is retried briefly here;
    // otherwise the requests get an error and their senders retry, which is
    // safe: ids make the retry exactly-once.
    let mut result = store.record_usage(&all, &cumulative, now_ms).await;
    for backoff in [50, 200, 800] {
        match &result {
            Err(e) if e.is_retriable() => {
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                result = store.record_usage(&all, &cumulative, now_ms).await;
            }
            _ => break,
        }
    }
    metrics::histogram!(metric_names::LEDGER_COMMIT_DURATION).record(start.elapsed().as_secs_f64());
    metrics::histogram!(metric_names::LEDGER_COMMIT_RECORDS).record(all.len() as f64);
    match result {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for (n, reply) in replies {
                let _ = reply.send(Ok(outcomes.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, records = all.len(), "usage ledger commit failed");
            metrics::counter!(metric_names::LEDGER_ERRORS).increment(1);
            let err = LedgerError::Unavailable(if e.is_retriable() {
                "database busy or unreachable, retry".into()
            } else {
                "database error, see tally's log".into()
            });
            for (_, reply) in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

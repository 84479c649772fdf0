//! The rollup writer: a task that writes the stage's flushes to the store,
//! one at a time and in order, so a slow database slows the writer, not
//! the stage. Its queue is bounded ([`QUEUE`] flushes): when it is full the
//! stage keeps rows in its windows (merged) instead of handing them over,
//! and pushes back on ingestion once a closed window waits too long.
//!
//! A flush the database refuses for what it holds is written row by row,
//! dropping only the rows refused. A failure worth retrying (the database
//! unreachable or busy) is retried with backoff; once the stage has gone
//! (shutdown), a flush is given a few last attempts and then dropped, and
//! counted, with whatever follows it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tally_core::{metric_names, rollup::RollupRow};
use tally_store::{IngestCount, RollupTable, Store};
use tokio::sync::{Notify, mpsc};

/// Flushes waiting for the writer at most.
pub const QUEUE: usize = 4;
/// Attempts a flush gets once the stage has stopped.
const FINAL_ATTEMPTS: u32 = 5;

/// One flush: closed windows' rows (a chunk) and the ingest counts since the last.
#[derive(Debug)]
pub struct Flush {
    pub rows: Vec<RollupRow>,
    pub counts: Vec<IngestCount>,
    pub at_ms: i64,
}

/// The stage's side of the writer.
pub struct Writer {
    pub tx: mpsc::Sender<Flush>,
    /// Flushes with rows the writer is done with (written or dropped).
    pub done: Arc<AtomicU64>,
    /// Signalled each time the writer is done with a flush with rows.
    pub written: Arc<Notify>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts the writer task; it ends once every sender is gone and what
    /// was queued is written (or given up).
    pub fn spawn(store: Store) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done, written) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
        let task = tokio::spawn(run(store, rx, done.clone(), written.clone()));
        Writer { tx, done, written, task }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Flush>, done: Arc<AtomicU64>, written: Arc<Notify>) {
    // Set once a flush was given up at shutdown: the rest follow it.
    let mut giving_up = false;
    while let Some(mut f) = rx.recv().await {
        let with_rows = !f.rows.is_empty();
        if giving_up {
            drop_flush(&f);
        } else {
            giving_up = !write_with_retries(&store, &mut f, &rx).await;
        }
        if with_rows {
            done.fetch_add(1, Ordering::Relaxed);
            written.notify_one();
        }
    }
}

/// Writes `f`; `false` when it was given up (the stage has stopped and the
/// database stayed unreachable).
async fn write_with_retries(store: &Store, f: &mut Flush, rx: &mpsc::Receiver<Flush>) -> bool {
    let mut backoff = Duration::ZERO;
    let mut final_attempts = 0;
    loop {
        match write(store, f).await {
            Ok(()) => return true,
            Err(e) if !e.is_retriable() => {
                // Something in this flush the database refuses (it would be
                // refused forever): row by row, dropping only what fails.
                metrics::counter!(metric_names::FLUSH_ERRORS).increment(1);
                tracing::error!(error = %e, "rollup flush refused by the database; isolating the bad rows");
                write_isolated(store, f).await;
                return true;
            }
            Err(e) => {
                metrics::counter!(metric_names::FLUSH_ERRORS).increment(1);
                tracing::warn!(error = %e, rows = f.rows.len(), "writing rollups failed; will retry");
                if rx.is_closed() {
                    final_attempts += 1;
                    if final_attempts >= FINAL_ATTEMPTS {
                        drop_flush(f);
                        return false;
                    }
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn drop_flush(f: &Flush) {
    metrics::counter!(metric_names::ROLLUP_DROPPED_ROWS).increment(f.rows.len() as u64);
    tracing::error!(rows = f.rows.len(), "rollups could not be written before exit");
}

/// Counts first, then rollups; what was written is cleared, so a retry
/// after a partial failure writes nothing twice.
#[tracing::instrument(name = "rollup flush", skip_all)]
async fn write(store: &Store, f: &mut Flush) -> tally_store::Result<()> {
    if !f.counts.is_empty() {
        store.add_ingest_counts(&f.counts, f.at_ms).await?;
        f.counts.clear();
    }
    if !f.rows.is_empty() {
        let started = Instant::now();
        store.write_rollups(RollupTable::Windows, &f.rows).await?;
        metrics::histogram!(metric_names::ROLLUP_FLUSH_DURATION).record(started.elapsed().as_secs_f64());
        metrics::counter!(metric_names::ROLLUP_ROWS_WRITTEN).increment(f.rows.len() as u64);
        f.rows.clear();
    }
    Ok(())
}

/// Writes a flush one row at a time, dropping (and counting) the rows the
/// database refuses; a row failing for a passing reason is dropped too
/// rather than stalling everyone behind it.
async fn write_isolated(store: &Store, f: &mut Flush) {
    if !f.counts.is_empty()
        && let Err(e) = store.add_ingest_counts(&f.counts, f.at_ms).await
    {
        tracing::error!(error = %e, "ingest counts dropped");
    }
    for row in std::mem::take(&mut f.rows) {
        if let Err(e) = store.write_rollups(RollupTable::Windows, std::slice::from_ref(&row)).await {
            metrics::counter!(metric_names::ROLLUP_DROPPED_ROWS).increment(1);
            tracing::error!(error = %e, series = ?row.key, start_ms = row.start_ms, "rollup row dropped");
        } else {
            metrics::counter!(metric_names::ROLLUP_ROWS_WRITTEN).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use tally_core::{
        Signal, TenantId,
        rollup::{RollupKind, RollupValues, SeriesKey},
    };
    use tally_store::RollupFilter;

    use super::*;

    fn row(start_ms: i64, count: u64) -> RollupRow {
        RollupRow {
            key: SeriesKey {
                tenant: TenantId::parse("acme").unwrap(),
                kind: RollupKind::Log,
                service: "svc".into(),
                name: "INFO".into(),
                detail: "".into(),
            },
            start_ms,
            values: RollupValues { count, ..RollupValues::default() },
        }
    }

    async fn sqlite() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("", dir.path()).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn flushes_are_written_in_order_and_signalled() {
        let (_dir, store) = sqlite().await;
        let w = Writer::spawn(store.clone());
        let tenant = TenantId::parse("acme").unwrap();
        for i in 0..3 {
            let counts = vec![IngestCount { tenant: tenant.clone(), signal: Signal::Logs, items: 2 }];
            w.tx.send(Flush { rows: vec![row(60_000, i + 1)], counts, at_ms: 1 }).await.unwrap();
        }
        drop(w.tx);
        w.task.await.unwrap();
        assert_eq!(w.done.load(Ordering::Relaxed), 3);
        let filter = RollupFilter {
            tenant: &tenant,
            kind: RollupKind::Log,
            service: None,
            name: None,
            detail: None,
            from_ms: 0,
            to_ms: 120_000,
        };
        let rows = store.read_rollups(&filter).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.values.count).sum::<u64>(), 6); // merged into one row
        assert_eq!(store.ingest_counts(Some(&tenant)).await.unwrap()[0].items, 6);
    }

    /// The database gone for good at shutdown: each flush is given up and
    /// counted, and the writer ends rather than retrying forever.
    #[tokio::test]
    async fn an_unreachable_database_at_shutdown_is_given_up() {
        let (_dir, store) = sqlite().await;
        store.close().await; // every write now fails with a retriable error
        let w = Writer::spawn(store);
        for i in 0..3 {
            w.tx.send(Flush { rows: vec![row(60_000, i + 1)], counts: Vec::new(), at_ms: 1 }).await.unwrap();
        }
        drop(w.tx);
        tokio::time::timeout(Duration::from_secs(30), w.task).await.unwrap().unwrap();
        assert_eq!(w.done.load(Ordering::Relaxed), 3);
    }
}

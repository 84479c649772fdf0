//! The rollup stage: consumes the collector's queue into windows, hands
//! closed windows to a writer task (so a slow database does not stall the
//! queue), and on shutdown writes every open window.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, UNIX_EPOCH},
};

use tally_core::{Payload, QueuedRequest, Signal, TelemetryBatch, TenantId, metric_names, now_ms, rollup::RollupRow};
use tally_store::{IngestCount, RollupTable, Store};
use tokio::sync::mpsc;

use super::{
    extract::{self, AttributeFilter, Observed, TimeRange},
    windows::{Limits, Windows},
};
use crate::RollupConfig;

/// Longest a window reopened by late data waits before it is written again.
const LATE_HOLD_MS: i64 = 10_000;
/// Rows per partial flush: with 100,000 series open, a partial flush is
/// written as a few of these (one at a time) rather than held as 100,000
/// rows at once.
const PARTIAL_CHUNK_ROWS: usize = 10_000;

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// One flush: closed windows' rows and the ingest counts since the last.
struct Flush {
    rows: Vec<RollupRow>,
    counts: Vec<IngestCount>,
    at_ms: i64,
    /// Had rows when sent: the stage waits for these before a partial chunk.
    with_rows: bool,
}

pub struct RollupStage {
    store: Store,
    config: RollupConfig,
    flush_interval: Duration,
    windows: Windows,
    keep: AttributeFilter,
    counts: HashMap<(TenantId, Signal), u64>,
    /// The lake writer, passed each request once rolled up.
    lake: Option<mpsc::Sender<QueuedRequest>>,
    /// Flushes with rows handed to the writer, and (its side) those it is
    /// done with: the next chunk of a partial flush waits while they differ.
    sent: u64,
    done: Arc<AtomicU64>,
    /// A partial flush is under way (more chunks to take).
    partial_due: bool,
}

impl RollupStage {
    pub fn new(store: Store, config: RollupConfig, flush_interval: Duration) -> RollupStage {
        let limits = Limits { per_tenant: config.max_series_per_tenant, per_metric: config.max_series_per_metric };
        RollupStage {
            store,
            windows: Windows::new(ms(config.window), limits),
            keep: AttributeFilter::new(&config.metric_attributes),
            config,
            flush_interval,
            counts: HashMap::new(),
            lake: None,
            sent: 0,
            done: Arc::new(AtomicU64::new(0)),
            partial_due: false,
        }
    }

    /// Passes every request on to the lake writer; a writer that does not
    /// keep up (its spool is full) holds the stage back, and with it the
    /// receivers: back-pressure rather than loss.
    pub fn with_lake(mut self, lake: mpsc::Sender<QueuedRequest>) -> RollupStage {
        self.lake = Some(lake);
        self
    }

    /// Runs until every sender of `rx` is gone (the receivers have stopped),
    /// then writes every open window and waits for the writer. It watches no
    /// shutdown signal of its own: stopping when the input closes is what
    /// guarantees the queue is drained first.
    pub async fn run(mut self, mut rx: mpsc::Receiver<QueuedRequest>) {
        let (tx, writes) = mpsc::unbounded_channel();
        let writer =
            tokio::spawn(write_loop(self.store.clone(), writes, self.config.max_pending_rows, self.done.clone()));
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let partial_every = self.config.partial_flush_interval;
        let mut partial = tokio::time::interval(partial_every.max(Duration::from_millis(100)));
        partial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = rx.recv() => match request {
                    Some(request) => {
                        self.add(&request.batches);
                        metrics::gauge!(metric_names::QUEUE_DEPTH).set(rx.len() as f64);
                        if let Some(lake) = self.lake.clone() {
                            // Windows keep being written while the lake holds back.
                            let mut request = Some(request);
                            loop {
                                tokio::select! {
                                    permit = lake.reserve() => {
                                        match permit {
                                            Ok(p) => p.send(request.take().expect("sent once")),
                                            Err(_) => {
                                                tracing::error!("the lake writer has stopped; telemetry is no longer written to the lake");
                                                self.lake = None;
                                            }
                                        }
                                        break;
                                    }
                                    _ = tick.tick() => self.on_tick(&tx),
                                    _ = partial.tick(), if !partial_every.is_zero() => self.start_partial(&tx),
                                }
                            }
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.on_tick(&tx),
                _ = partial.tick(), if !partial_every.is_zero() => self.start_partial(&tx),
            }
        }
        // The lake writer finishes its files once this sender is gone.
        self.lake = None;
        let rows = self.windows.take_all();
        self.send(&tx, rows, now_ms());
        drop(tx);
        if writer.await.is_err() {
            tracing::error!("rollup writer panicked");
        }
    }

    /// Windows that have ended and whose lateness has passed.
    fn flush_closed(&mut self, tx: &mpsc::UnboundedSender<Flush>) {
        let now = now_ms();
        let lateness = ms(self.config.allowed_lateness);
        let cutoff = now - lateness - self.windows.width_ms() + 1;
        // Windows reopened by late data gather it this long first.
        let hold = lateness.min(LATE_HOLD_MS);
        let rows = self.windows.take_before(cutoff, now - hold);
        self.send(tx, rows, now);
    }

    fn on_tick(&mut self, tx: &mpsc::UnboundedSender<Flush>) {
        self.flush_closed(tx);
        self.continue_partial(tx);
    }

    /// Starts writing what the open windows gathered since the last time;
    /// a partial flush still under way (the database is slower than the
    /// interval) is not started twice.
    fn start_partial(&mut self, tx: &mpsc::UnboundedSender<Flush>) {
        if self.partial_due {
            metrics::counter!(metric_names::ROLLUP_PARTIAL_SKIPPED).increment(1);
        }
        self.partial_due = true;
        self.continue_partial(tx);
    }

    /// The next chunk of a partial flush, once the writer is done with the
    /// last: the windows keep gathering meanwhile, and rows wait there,
    /// merged, rather than as a backlog of taken rows.
    fn continue_partial(&mut self, tx: &mpsc::UnboundedSender<Flush>) {
        if !self.partial_due || self.done.load(Ordering::Relaxed) < self.sent {
            return;
        }
        let rows = self.windows.take_partial(PARTIAL_CHUNK_ROWS);
        self.partial_due = rows.len() == PARTIAL_CHUNK_ROWS;
        self.send(tx, rows, now_ms());
    }

    fn send(&mut self, tx: &mpsc::UnboundedSender<Flush>, rows: Vec<RollupRow>, at_ms: i64) {
        metrics::gauge!(metric_names::ROLLUP_OPEN_SERIES).set(self.windows.series() as f64);
        let counts: Vec<IngestCount> =
            self.counts.drain().map(|((tenant, signal), items)| IngestCount { tenant, signal, items }).collect();
        if rows.is_empty() && counts.is_empty() {
            return;
        }
        // The writer only stops after this sender is dropped.
        let with_rows = !rows.is_empty();
        if tx.send(Flush { rows, counts, at_ms, with_rows }).is_ok() && with_rows {
            self.sent += 1;
        }
    }

    fn add(&mut self, batches: &[TelemetryBatch]) {
        let now = now_ms();
        self.windows.set_clock(now);
        for b in batches {
            let signal = b.signal();
            *self.counts.entry((b.tenant.clone(), signal)).or_default() += b.items;
            metrics::counter!(metric_names::PROCESSED_ITEMS, "signal" => signal.as_str()).increment(b.items);
            let range = TimeRange {
                oldest_ms: now - ms(self.config.window_retention),
                newest_ms: now + ms(self.config.max_future),
                received_ms: b.received_at.duration_since(UNIX_EPOCH).map_or(now, |d| d.as_millis() as i64),
            };
            let w = &mut self.windows;
            let seen = match &b.payload {
                Payload::Spans(d) => extract::spans(w, &b.tenant, &range, d),
                Payload::Logs(d) => extract::logs(w, &b.tenant, &range, d),
                Payload::Metrics(d) => extract::metrics(w, &b.tenant, &range, &self.keep, d),
            };
            refused(signal, seen);
        }
    }
}

fn refused(signal: Signal, seen: Observed) {
    use metric_names::reason;
    for (n, why) in [(seen.too_old, reason::TOO_OLD), (seen.too_new, reason::TOO_NEW)] {
        if n > 0 {
            metrics::counter!(metric_names::ROLLUP_REFUSED, "signal" => signal.as_str(), "reason" => why).increment(n);
        }
    }
}

/// Writes flushes in order; while the database fails, keeps them (up to
/// `max_pending_rows` rows, dropping the oldest beyond) and retries with
/// backoff. After the stage has gone, a few last attempts.
async fn write_loop(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Flush>,
    max_pending_rows: usize,
    done: Arc<AtomicU64>,
) {
    let mut pending: VecDeque<Flush> = VecDeque::new();
    let mut backoff = Duration::ZERO;
    let mut closed = false;
    let mut final_attempts = 0;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(f) => pending.push_back(f),
                None => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(f) => pending.push_back(f),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        shed(&mut pending, max_pending_rows);
        let Some(front) = pending.front_mut() else { continue };
        match write(&store, front).await {
            Ok(()) => {
                if pending.pop_front().is_some_and(|f| f.with_rows) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                backoff = Duration::ZERO;
            }
            Err(e) if !e.is_retriable() => {
                // Something in this flush the database refuses (it would be
                // refused forever): write it row by row and drop only what fails.
                metrics::counter!(metric_names::FLUSH_ERRORS).increment(1);
                tracing::error!(error = %e, "rollup flush refused by the database; isolating the bad rows");
                if let Some(mut f) = pending.pop_front() {
                    write_isolated(&store, &mut f).await;
                    if f.with_rows {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                metrics::counter!(metric_names::FLUSH_ERRORS).increment(1);
                tracing::warn!(error = %e, pending = pending.len(), "writing rollups failed; will retry");
                if closed {
                    final_attempts += 1;
                    if final_attempts >= 5 {
                        let rows: usize = pending.iter().map(|f| f.rows.len()).sum();
                        metrics::counter!(metric_names::ROLLUP_DROPPED_ROWS).increment(rows as u64);
                        tracing::error!(rows, "rollups could not be written before exit");
                        return;
                    }
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
                // Keep receiving while waiting, so the channel cannot grow unseen.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                while !closed {
                    tokio::select! {
                        _ = &mut wait => break,
                        f = rx.recv() => match f {
                            Some(f) => pending.push_back(f),
                            None => closed = true,
                        },
                    }
                }
                if closed {
                    wait.await;
                }
            }
        }
    }
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

/// Drops the oldest rows beyond `max_rows` (ingest counts are kept: small).
fn shed(pending: &mut VecDeque<Flush>, max_rows: usize) {
    let mut total: usize = pending.iter().map(|f| f.rows.len()).sum();
    for f in pending.iter_mut() {
        if total <= max_rows {
            break;
        }
        let n = f.rows.len().min(total - max_rows);
        f.rows.drain(..n);
        total -= n;
        metrics::counter!(metric_names::ROLLUP_DROPPED_ROWS).increment(n as u64);
        tracing::error!(rows = n, "database unreachable for long: dropped the oldest rollup rows");
    }
}

/// Counts first, then rollups; what was written is cleared, so a retry
/// after a partial failure writes nothing twice.
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

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
use tokio::{
    sync::{Notify, mpsc},
    time::{Interval, MissedTickBehavior},
};

use super::{
    extract::{self, AttributeFilter, Observed, TimeRange},
    windows::{Limits, Windows},
};
use crate::RollupConfig;

/// Longest a window reopened by late data waits before it is written again.
const LATE_HOLD_MS: i64 = 10_000;
/// Rows handed to the writer at a time: with 100,000 series open, a window
/// (or a partial flush) is written as a few of these, one after the other,
/// rather than held as 100,000 rows at once.
const CHUNK_ROWS: usize = 10_000;

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
    /// Signalled by the writer each time it is done with a flush.
    written: Arc<Notify>,
    /// A partial flush is under way (more chunks to take).
    partial_due: bool,
    /// Not taking requests: closed windows wait for the writer.
    paused: bool,
}

/// What woke the stage, besides a request.
enum Due {
    /// `pipeline.flush_interval`: ingest counts, closed windows.
    Tick,
    /// `rollups.partial_flush_interval`.
    Partial,
    /// The writer is done with a flush: the next chunk can go.
    Written,
}

struct Timers {
    tick: Interval,
    partial: Option<Interval>,
    written: Arc<Notify>,
}

impl Timers {
    fn new(flush_every: Duration, partial_every: Duration, written: Arc<Notify>) -> Timers {
        let interval = |every: Duration| {
            let mut i = tokio::time::interval(every.max(Duration::from_millis(100)));
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        };
        Timers {
            tick: interval(flush_every),
            partial: (!partial_every.is_zero()).then(|| interval(partial_every)),
            written,
        }
    }

    async fn next(&mut self) -> Due {
        let partial = async {
            match &mut self.partial {
                Some(p) => p.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.tick.tick() => Due::Tick,
            _ = partial => Due::Partial,
            _ = self.written.notified() => Due::Written,
        }
    }
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
            written: Arc::new(Notify::new()),
            partial_due: false,
            paused: false,
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
    ///
    /// Rows go to the writer one chunk at a time, closed windows before
    /// partial flushes, so what waits for the database waits in the windows
    /// (merged) rather than as a growing list of rows. While a closed window
    /// has waited longer than a window's width, the database is not keeping
    /// up: the stage stops taking requests until it has caught up, the queue
    /// fills and the receivers push back (429 / RESOURCE_EXHAUSTED).
    pub async fn run(mut self, mut rx: mpsc::Receiver<QueuedRequest>) {
        let (tx, writes) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(
            self.store.clone(),
            writes,
            self.config.max_pending_rows,
            self.done.clone(),
            self.written.clone(),
        ));
        let mut timers = Timers::new(self.flush_interval, self.config.partial_flush_interval, self.written.clone());
        metrics::gauge!(metric_names::ROLLUP_BACKPRESSURE).set(0.0);
        loop {
            let paused = self.behind() && !rx.is_closed();
            if paused != self.paused {
                self.paused = paused;
                metrics::gauge!(metric_names::ROLLUP_BACKPRESSURE).set(f64::from(u8::from(paused)));
                if paused {
                    tracing::warn!(
                        "rollup writes are a window behind; pausing ingestion until the database catches up"
                    );
                } else {
                    tracing::info!("rollup writes caught up; ingestion resumes");
                }
            }
            tokio::select! {
                request = rx.recv(), if !paused => match request {
                    Some(request) => {
                        self.add(&request.batches);
                        metrics::gauge!(metric_names::QUEUE_DEPTH).set(rx.len() as f64);
                        self.pass_to_lake(request, &mut timers, &tx).await;
                    }
                    None => break,
                },
                due = timers.next() => self.on(due, &tx),
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

    /// Hands a rolled-up request to the lake writer; windows keep being
    /// written while the lake holds back (its spool is full).
    async fn pass_to_lake(&mut self, request: QueuedRequest, timers: &mut Timers, tx: &mpsc::UnboundedSender<Flush>) {
        let Some(lake) = self.lake.clone() else { return };
        loop {
            tokio::select! {
                permit = lake.reserve() => {
                    match permit {
                        Ok(p) => p.send(request),
                        Err(_) => {
                            tracing::error!("the lake writer has stopped; telemetry is no longer written to the lake");
                            self.lake = None;
                        }
                    }
                    return;
                }
                due = timers.next() => self.on(due, tx),
            }
        }
    }

    fn on(&mut self, due: Due, tx: &mpsc::UnboundedSender<Flush>) {
        match due {
            Due::Partial => {
                if self.partial_due {
                    metrics::counter!(metric_names::ROLLUP_PARTIAL_SKIPPED).increment(1);
                }
                self.partial_due = true;
            }
            Due::Tick => self.send_counts(tx),
            Due::Written => {}
        }
        self.next_chunk(tx);
    }

    /// Where closed windows are taken from: those ended more than the
    /// allowed lateness ago, and (reopened by late data) gathering for a while.
    fn closed_bounds(&self, now: i64) -> (i64, i64) {
        let lateness = ms(self.config.allowed_lateness);
        let before = now - lateness - self.windows.width_ms() + 1;
        (before, now - lateness.min(LATE_HOLD_MS))
    }

    /// A closed window has waited for the writer longer than a window's
    /// width past when it was due: it would have been taken a width ago.
    fn behind(&self) -> bool {
        let (before, opened_by) = self.closed_bounds(now_ms() - self.windows.width_ms());
        self.windows.closed(before, opened_by).next().is_some()
    }

    /// The next chunk of rows, once the writer is done with the last:
    /// closed windows first, then the partial flush under way, if any.
    /// Meanwhile the windows keep gathering, and rows wait there, merged.
    fn next_chunk(&mut self, tx: &mpsc::UnboundedSender<Flush>) {
        if self.done.load(Ordering::Relaxed) < self.sent {
            return;
        }
        let now = now_ms();
        let (before, opened_by) = self.closed_bounds(now);
        let mut rows = self.windows.take_before(before, opened_by, CHUNK_ROWS);
        if rows.is_empty() && self.partial_due {
            rows = self.windows.take_partial(CHUNK_ROWS);
            self.partial_due = rows.len() == CHUNK_ROWS;
        }
        self.send(tx, rows, now);
    }

    fn send_counts(&mut self, tx: &mpsc::UnboundedSender<Flush>) {
        self.send(tx, Vec::new(), now_ms());
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
    written: Arc<Notify>,
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
                    written.notify_one();
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
                        written.notify_one();
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

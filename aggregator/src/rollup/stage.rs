//! The rollup stage: consumes the collector's queue into windows, hands
//! closed windows to the [writer](super::writer) a chunk at a time (so a
//! slow database does not stall the queue), and on shutdown writes every
//! open window.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use tally_core::{Payload, QueuedRequest, Signal, TelemetryBatch, TenantId, metric_names, now_ms, rollup::RollupRow};
use tally_store::{IngestCount, Store};
use tokio::{
    sync::{Notify, mpsc},
    time::{Interval, MissedTickBehavior},
};

use super::{
    extract::{self, AttributeFilter, Observed, TimeRange},
    windows::{Limits, Windows},
    writer::{Flush, Writer},
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

/// The rollup stage: consumes the pipeline's requests into per-tenant
/// windows and hands closed windows (and partial flushes) to its writer a
/// chunk at a time; pushes back on ingestion when the database falls a
/// window behind. Run it with [`RollupStage::run`].
pub struct RollupStage {
    store: Store,
    config: RollupConfig,
    flush_interval: Duration,
    windows: Windows,
    keep: AttributeFilter,
    counts: HashMap<(TenantId, Signal), u64>,
    /// Flushes with rows handed to the writer, and (its side) those it is
    /// done with: the next chunk waits while they differ.
    sent: u64,
    done: Arc<AtomicU64>,
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
            sent: 0,
            done: Arc::new(AtomicU64::new(0)),
            partial_due: false,
            paused: false,
        }
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
        let writer = Writer::spawn(self.store.clone());
        let tx = writer.tx;
        self.done = writer.done;
        let mut timers = Timers::new(self.flush_interval, self.config.partial_flush_interval, writer.written);
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
                    Some(request) => self.add(&request.batches),
                    None => break,
                },
                due = timers.next() => self.on(due, &tx),
            }
        }
        // Every open window, a chunk at a time (the writer's queue is bounded).
        let mut rows = self.windows.take_all();
        if rows.len() > self.config.max_pending_rows {
            let dropped = rows.len() - self.config.max_pending_rows;
            metrics::counter!(metric_names::ROLLUP_DROPPED_ROWS).increment(dropped as u64);
            tracing::error!(rows = dropped, "more open rollup rows than rollups.max_pending_rows at exit; dropped");
            rows.truncate(self.config.max_pending_rows);
        }
        let mut counts = self.take_counts();
        let now = now_ms();
        while !rows.is_empty() || !counts.is_empty() {
            let chunk: Vec<RollupRow> = rows.drain(..rows.len().min(CHUNK_ROWS)).collect();
            if tx.send(Flush { rows: chunk, counts: std::mem::take(&mut counts), at_ms: now }).await.is_err() {
                break;
            }
        }
        drop(tx);
        if writer.task.await.is_err() {
            tracing::error!("rollup writer panicked");
        }
    }

    fn on(&mut self, due: Due, tx: &mpsc::Sender<Flush>) {
        match due {
            Due::Partial => {
                if self.partial_due {
                    metrics::counter!(metric_names::ROLLUP_PARTIAL_SKIPPED).increment(1);
                }
                self.partial_due = true;
            }
            Due::Tick | Due::Written => {}
        }
        // Counts go with the next chunk, or alone on a tick.
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
    fn next_chunk(&mut self, tx: &mpsc::Sender<Flush>) {
        if self.done.load(Ordering::Relaxed) < self.sent {
            return;
        }
        // Rows are taken only with a place in the writer's queue for them.
        let Ok(slot) = tx.try_reserve() else { return };
        let now = now_ms();
        let (before, opened_by) = self.closed_bounds(now);
        let mut rows = self.windows.take_before(before, opened_by, CHUNK_ROWS);
        if rows.is_empty() && self.partial_due {
            rows = self.windows.take_partial(CHUNK_ROWS);
            self.partial_due = rows.len() == CHUNK_ROWS;
        }
        metrics::gauge!(metric_names::ROLLUP_OPEN_SERIES).set(self.windows.series() as f64);
        let counts = self.take_counts();
        if rows.is_empty() && counts.is_empty() {
            return;
        }
        if !rows.is_empty() {
            self.sent += 1;
        }
        slot.send(Flush { rows, counts, at_ms: now });
    }

    /// The ingest counts since the last flush.
    fn take_counts(&mut self) -> Vec<IngestCount> {
        self.counts.drain().map(|((tenant, signal), items)| IngestCount { tenant, signal, items }).collect()
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

//! The Application Insights branch of the pipeline: maps what it is handed
//! into envelopes, keeps them in a bounded buffer, and sends them in
//! batches. It never pushes back: the pipeline sheds for it when it falls
//! behind, and when its own buffer is full the newest items are dropped and
//! counted — this is observability-grade data, and billing and rollups must
//! not wait for Azure.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tally_core::{Payload, QueuedRequest, metric_names, now_ms};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    Mapper,
    client::{Gzipper, TrackClient, Tracked},
    config::AppInsightsConfig,
    spool::Spool,
};
use crate::delivery::Backoff;

/// Items older than this are not sent (the ingestion refuses items older
/// than 48 h).
const MAX_AGE_MS: i64 = 47 * 3_600_000;

/// An envelope serialized once, with its time.
struct Item {
    json: Bytes,
    time_ms: i64,
}

struct Buffer {
    items: VecDeque<Item>,
    bytes: usize,
}

/// Puts envelopes into the forwarder's buffer (the pipeline branch does,
/// and the usage feed); cheap to clone.
#[derive(Clone)]
pub struct Feed {
    buffer: Arc<Mutex<Buffer>>,
    wake: Arc<Notify>,
    spool: Option<Arc<Spool>>,
    max_items: usize,
    max_bytes: usize,
    batch: usize,
}

impl Feed {
    fn new(config: &AppInsightsConfig, spool: Option<Spool>) -> Feed {
        Feed {
            buffer: Arc::new(Mutex::new(Buffer { items: VecDeque::new(), bytes: 0 })),
            wake: Arc::new(Notify::new()),
            spool: spool.map(Arc::new),
            max_items: config.max_buffer_items,
            max_bytes: config.max_buffer_bytes,
            batch: config.max_batch_items,
        }
    }

    /// Buffers `envelopes`; what memory cannot hold goes to the spool, and
    /// beyond its budget is dropped and counted.
    pub async fn push(&self, envelopes: Vec<super::Envelope>) {
        // Serialized outside the lock, through one scratch buffer copied out
        // at its exact length: no growth reallocations per item, no slack
        // kept in the buffer.
        let mut scratch = Vec::with_capacity(4096);
        let items: Vec<Item> = envelopes
            .iter()
            .filter_map(|e| {
                scratch.clear();
                serde_json::to_writer(&mut scratch, e).ok()?;
                Some(Item { json: Bytes::copy_from_slice(&scratch), time_ms: e.time.0 / 1_000_000 })
            })
            .collect();
        drop(envelopes);
        let mut overflow = Vec::new();
        {
            let mut b = self.buffer.lock().expect("appinsights buffer");
            for item in items {
                if b.items.len() >= self.max_items || b.bytes + item.json.len() > self.max_bytes {
                    overflow.push((item.time_ms, item.json));
                    continue;
                }
                b.bytes += item.json.len();
                b.items.push_back(item);
            }
            metrics::gauge!(metric_names::APPINSIGHTS_BUFFERED).set(b.items.len() as f64);
            if b.items.len() >= self.batch {
                self.wake.notify_one();
            }
        }
        self.spill(overflow).await;
    }

    /// Writes `items` to the spool, or drops and counts them.
    async fn spill(&self, items: Vec<(i64, Bytes)>) {
        if items.is_empty() {
            return;
        }
        let written = match &self.spool {
            Some(spool) => match spool.write(&items).await {
                Ok(w) => {
                    metrics::gauge!(metric_names::APPINSIGHTS_SPOOL_BYTES).set(spool.bytes().await as f64);
                    w
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing the Application Insights spool failed");
                    false
                }
            },
            None => false,
        };
        if !written {
            metrics::counter!(metric_names::APPINSIGHTS_DROPPED, "reason" => "buffer_full")
                .increment(items.len() as u64);
        }
    }

    /// Moves the oldest spool segment back into memory when it has room.
    async fn unspool(&self) {
        let Some(spool) = &self.spool else { return };
        let room = {
            let b = self.buffer.lock().expect("appinsights buffer");
            b.items.len() < self.max_items / 2
        };
        if !room || !spool.has_segments().await {
            return;
        }
        match spool.take().await {
            Ok(Some(items)) => {
                let mut b = self.buffer.lock().expect("appinsights buffer");
                for (time_ms, json) in items {
                    b.bytes += json.len();
                    b.items.push_back(Item { json, time_ms });
                }
                metrics::gauge!(metric_names::APPINSIGHTS_BUFFERED).set(b.items.len() as f64);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the Application Insights spool failed"),
        }
        metrics::gauge!(metric_names::APPINSIGHTS_SPOOL_BYTES).set(spool.bytes().await as f64);
    }

    fn is_empty(&self) -> bool {
        self.buffer.lock().expect("appinsights buffer").items.is_empty()
    }
}

/// Starts the forwarder on the pipeline branch `rx`: returns its feed (for
/// other producers) and its task, which ends once `rx` closes and what is
/// buffered went (or `drain_timeout` passed).
pub fn start(
    rx: mpsc::Receiver<QueuedRequest>,
    mapper: Mapper,
    client: TrackClient,
    config: AppInsightsConfig,
    spool: Option<Spool>,
) -> (Feed, tokio::task::JoinHandle<()>) {
    let feed = Feed::new(&config, spool);
    let task = tokio::spawn(run(rx, mapper, client, config, feed.clone()));
    (feed, task)
}

async fn run(
    mut rx: mpsc::Receiver<QueuedRequest>,
    mut mapper: Mapper,
    client: TrackClient,
    config: AppInsightsConfig,
    feed: Feed,
) {
    let stop_sending = CancellationToken::new();
    let sender = tokio::spawn(send_loop(feed.clone(), client, config.clone(), stop_sending.clone()));
    mapper.set_sample_rate(config.sample_percent);
    let percent = config.sample_percent.unwrap_or(100.0);
    while let Some(req) = rx.recv().await {
        let mut envelopes = Vec::new();
        let mut sampled_out = 0;
        for batch in req.batches.iter() {
            match &batch.payload {
                Payload::Spans(rs) if config.traces => {
                    for r in rs {
                        if percent < 100.0 {
                            let (kept, out) = super::sample_spans(r, percent);
                            sampled_out += out;
                            mapper.spans(&batch.tenant, &kept, &mut envelopes);
                        } else {
                            mapper.spans(&batch.tenant, r, &mut envelopes);
                        }
                    }
                }
                Payload::Logs(rl) if config.logs => {
                    for r in rl {
                        if percent < 100.0 {
                            let (kept, out) = super::sample_logs(r, percent);
                            sampled_out += out;
                            mapper.logs(&batch.tenant, &kept, &mut envelopes);
                        } else {
                            mapper.logs(&batch.tenant, r, &mut envelopes);
                        }
                    }
                }
                Payload::Metrics(rm) if config.metrics => {
                    rm.iter().for_each(|r| mapper.metrics(&batch.tenant, r, &mut envelopes))
                }
                _ => {}
            }
        }
        drop(req); // frees the branch's byte budget
        if sampled_out > 0 {
            metrics::counter!(metric_names::APPINSIGHTS_DROPPED, "reason" => "sampled").increment(sampled_out);
        }
        feed.push(envelopes).await;
    }
    // Send what is left, for a while.
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while !feed.is_empty() {
            feed.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    stop_sending.cancel();
    let _ = sender.await;
    if drained.is_err() {
        // Kept for the next start when there is a spool, else dropped.
        let left: Vec<(i64, Bytes)> = {
            let mut b = feed.buffer.lock().expect("appinsights buffer");
            b.bytes = 0;
            b.items.drain(..).map(|i| (i.time_ms, i.json)).collect()
        };
        let n = left.len();
        match &feed.spool {
            Some(spool) if matches!(spool.write(&left).await, Ok(true)) => {
                tracing::info!(items = n, "Application Insights items spooled at shutdown");
            }
            _ => {
                metrics::counter!(metric_names::APPINSIGHTS_DROPPED, "reason" => "shutdown").increment(n as u64);
                tracing::warn!(items = n, "Application Insights items still buffered at shutdown: dropped");
            }
        }
    }
}

/// The start of the next UTC day, in ms.
fn next_utc_day(now: i64) -> i64 {
    (now / 86_400_000 + 1) * 86_400_000
}

async fn send_loop(feed: Feed, client: TrackClient, config: AppInsightsConfig, stop: CancellationToken) {
    let (buffer, wake) = (feed.buffer.clone(), feed.wake.clone());
    let backoff = Backoff::exponential(Duration::from_millis(500), Duration::from_secs(60));
    let mut failures = 0u32;
    let mut capped_until = 0i64;
    let mut gzip = Gzipper::default();
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(config.flush_interval) => {}
            _ = stop.cancelled() => return,
        }
        loop {
            feed.unspool().await;
            let now = now_ms();
            let batch: Vec<Item> = {
                let mut b = buffer.lock().expect("appinsights buffer");
                let (mut old, mut capped) = (0u64, 0u64);
                while b.items.front().is_some_and(|i| i.time_ms < now - MAX_AGE_MS || now < capped_until) {
                    let i = b.items.pop_front().expect("checked");
                    b.bytes -= i.json.len();
                    if now < capped_until { capped += 1 } else { old += 1 }
                }
                for (n, reason) in [(old, "too_old"), (capped, "daily_cap")] {
                    if n > 0 {
                        metrics::counter!(metric_names::APPINSIGHTS_DROPPED, "reason" => reason).increment(n);
                    }
                }
                let take = b.items.len().min(config.max_batch_items);
                let batch: Vec<Item> = b.items.drain(..take).collect();
                b.bytes -= batch.iter().map(|i| i.json.len()).sum::<usize>();
                metrics::gauge!(metric_names::APPINSIGHTS_BUFFERED).set(b.items.len() as f64);
                batch
            };
            if batch.is_empty() {
                break;
            }
            let body = gzip.array(&batch.iter().map(|i| &i.json[..]).collect::<Vec<_>>());
            let (mut again, wait) = match client.track(body, batch.len()).await {
                Ok(Tracked::Partial { accepted, retry, dropped }) => {
                    failures = 0;
                    metrics::counter!(metric_names::APPINSIGHTS_ACCEPTED).increment(accepted as u64);
                    if !dropped.is_empty() {
                        metrics::counter!(metric_names::APPINSIGHTS_DROPPED, "reason" => "refused")
                            .increment(dropped.len() as u64);
                    }
                    let wait = (!retry.is_empty()).then(|| backoff.wait(1, None)).flatten();
                    (retry, wait)
                }
                Ok(Tracked::DailyCap) => {
                    capped_until = next_utc_day(now_ms());
                    metrics::gauge!(metric_names::APPINSIGHTS_DAILY_CAP).set(1.0);
                    tracing::warn!("Application Insights daily cap reached: nothing is sent until the next UTC day");
                    metrics::counter!(metric_names::APPINSIGHTS_DROPPED, "reason" => "daily_cap")
                        .increment(batch.len() as u64);
                    (Vec::new(), None)
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e.message, status = ?e.status, failures, "Application Insights send failed; retried");
                    ((0..batch.len()).collect(), backoff.wait(failures, e.retry_after()))
                }
            };
            if now_ms() >= capped_until {
                metrics::gauge!(metric_names::APPINSIGHTS_DAILY_CAP).set(0.0);
            }
            if !again.is_empty() {
                again.sort_unstable();
                metrics::counter!(metric_names::APPINSIGHTS_RETRIED).increment(again.len() as u64);
                let mut slots: Vec<Option<Item>> = batch.into_iter().map(Some).collect();
                let mut b = buffer.lock().expect("appinsights buffer");
                for i in again.into_iter().rev() {
                    if let Some(item) = slots.get_mut(i).and_then(Option::take) {
                        b.bytes += item.json.len();
                        b.items.push_front(item);
                    }
                }
                metrics::gauge!(metric_names::APPINSIGHTS_BUFFERED).set(b.items.len() as f64);
            }
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

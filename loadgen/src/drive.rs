//! Driving the load: workers sending at a rate or flat out, and the report.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tally_collector::otlp::OtlpSignal;

use crate::{LoadgenArgs, Payloads, transport::Sender};

#[derive(Default)]
pub(crate) struct Stats {
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    items_sent: AtomicU64,
    items_acked: AtomicU64,
    items_rejected: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// One worker's way of sending request number `i`: `Ok(items rejected)` or
/// `Err(error kind)`.
pub(crate) trait Target: Send + 'static {
    fn send(&mut self, i: usize) -> impl Future<Output = Result<u64, String>> + Send;
}

pub(crate) struct OtlpTarget<S> {
    pub(crate) sender: Sender<S>,
    /// Swapped for freshly stamped ones every `--restamp`.
    pub(crate) payloads: Payloads,
}

impl<S: OtlpSignal> Target for OtlpTarget<S> {
    async fn send(&mut self, i: usize) -> Result<u64, String> {
        let payloads = self.payloads.read().unwrap_or_else(|p| p.into_inner()).clone();
        let body = payloads[i % payloads.len()].clone();
        self.sender.send(body).await.map(|rejected| rejected.max(0) as u64)
    }
}

/// Usage events: batches of unique CloudEvents, acknowledged per event.
pub(crate) struct EventsTarget {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    /// Unique per run and worker, so every event id is new.
    pub(crate) run: String,
    pub(crate) time: String,
    pub(crate) tenants: usize,
    pub(crate) per_request: usize,
    pub(crate) event_type: String,
}

impl Target for EventsTarget {
    async fn send(&mut self, i: usize) -> Result<u64, String> {
        use std::fmt::Write as _;
        let mut body = String::with_capacity(self.per_request * 200 + 2);
        body.push('[');
        for k in 0..self.per_request {
            if k > 0 {
                body.push(',');
            }
            let _ = write!(
                body,
                r#"{{"specversion":"1.0","id":"{run}-{i}-{k}","source":"loadgen","type":"{ty}","subject":"tenant-{t}","time":"{time}","data":{{"tokens":{tokens},"model":"model-{m}"}}}}"#,
                run = self.run,
                ty = self.event_type,
                t = (i + k) % self.tenants,
                time = self.time,
                tokens = 100 + (i * 7 + k * 13) % 900,
                m = k % 3,
            );
        }
        body.push(']');
        let resp = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(body)
            .send()
            .await
            .map_err(|e| if e.is_connect() { "http_connect".to_owned() } else { "http_transport".to_owned() })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("http_{}", status.as_u16()));
        }
        let answer: serde_json::Value = resp.json().await.map_err(|_| "http_bad_response".to_owned())?;
        let n = |k: &str| answer[k].as_u64().unwrap_or(0);
        Ok(n("rejected") + n("conflict"))
    }
}

/// Runs one worker per target until the duration is over, then reports.
pub(crate) async fn drive<T: Target>(args: LoadgenArgs, targets: Vec<T>) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let deadline = start + args.duration;
    // Requests per second per worker, when rate-limited.
    let interval = (args.rate > 0).then(|| {
        let requests_per_sec = args.rate as f64 / args.spans_per_request as f64;
        Duration::from_secs_f64(args.concurrency as f64 / requests_per_sec).max(Duration::from_micros(1))
    });

    let mut workers = Vec::new();
    for (w, mut target) in targets.into_iter().enumerate() {
        let (concurrency, items, stats) = (args.concurrency, args.spans_per_request as u64, stats.clone());
        workers.push(tokio::spawn(async move {
            let mut tick = interval.map(tokio::time::interval);
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut i = w;
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                stats.items_sent.fetch_add(items, Relaxed);
                let sent_at = Instant::now();
                let result = target.send(i).await;
                i += concurrency;
                match result {
                    Ok(rejected) => {
                        latencies_us.push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        stats.requests_ok.fetch_add(1, Relaxed);
                        let rejected = rejected.min(items);
                        stats.items_acked.fetch_add(items - rejected, Relaxed);
                        stats.items_rejected.fetch_add(rejected, Relaxed);
                    }
                    Err(reason) => {
                        stats.requests_failed.fetch_add(1, Relaxed);
                        *stats.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
                        // Back off a little so a refusing server is not spun on.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            latencies_us
        }));
    }

    let progress = (!args.quiet).then(|| {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let acked = stats.items_acked.load(Relaxed);
                eprintln!(
                    "loadgen: t={:>4.0}s acked={acked} ({}/s) failed_requests={}",
                    start.elapsed().as_secs_f64(),
                    acked - last,
                    stats.requests_failed.load(Relaxed)
                );
                last = acked;
            }
        })
    });
    let mut latencies_us = Vec::new();
    for w in workers {
        latencies_us.extend(w.await?);
    }
    if let Some(p) = progress {
        p.abort();
    }
    latencies_us.sort_unstable();
    report(&args, &stats, start.elapsed().as_secs_f64(), &latencies_us)
}

/// The `q` quantile of sorted latencies, in milliseconds.
fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    (f64::from(sorted_us[i]) / 10.0).round() / 100.0
}

fn report(args: &LoadgenArgs, stats: &Stats, elapsed: f64, sorted_latencies_us: &[u32]) -> anyhow::Result<()> {
    let errors = stats.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let acked = stats.items_acked.load(Relaxed);
    let summary = serde_json::json!({
        "signal": format!("{:?}", args.signal).to_lowercase(),
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "compression": format!("{:?}", args.compression).to_lowercase(),
        "duration_s": (elapsed * 1000.0).round() / 1000.0,
        "requests_ok": stats.requests_ok.load(Relaxed),
        "requests_failed": stats.requests_failed.load(Relaxed),
        "items_sent": stats.items_sent.load(Relaxed),
        "items_acked": acked,
        "items_rejected": stats.items_rejected.load(Relaxed),
        "items_per_sec": (acked as f64 / elapsed).round(),
        "latency_ms": {
            "p50": quantile_ms(sorted_latencies_us, 0.50),
            "p90": quantile_ms(sorted_latencies_us, 0.90),
            "p99": quantile_ms(sorted_latencies_us, 0.99),
            "max": quantile_ms(sorted_latencies_us, 1.0),
        },
        "errors": errors,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{summary}")?;
    } else {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

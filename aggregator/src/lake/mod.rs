//! The Parquet lake's writer: a branch of the pipeline (beside the rollup
//! stage) that writes every accepted request, row by row, into Parquet
//! files per (signal, tenant, hour) in the [`Spool`]; the uploader
//! (tally-exporter) moves complete files to the object store.
//!
//! It runs on a thread of its own (encoding Parquet is CPU work). When the
//! spool holds `lake.max_spool_bytes` (the object store has been
//! unreachable for long), it stops taking requests: its branch of the
//! pipeline fills, and the receivers answer 429 / RESOURCE_EXHAUSTED —
//! telemetry pushes back rather than being dropped.

mod files;
mod replay;
pub mod schema;
mod usage_export;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use prost::Message;
use serde::Deserialize;
use tally_core::{Payload, QueuedRequest, metric_names, now_ms};
use tokio::sync::mpsc;

pub use files::{FileKey, FileLimits, LakeFiles};
pub use replay::Replay;
use schema::{Origin, Rows, service_of};
use tally_core::lake::{LakeSignal, Spool, hour_of_ns};
pub use usage_export::UsageExport;

/// `[lake]`: the Parquet files (where they go is the top-level `lake_url`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Write telemetry to the lake at all.
    pub enabled: bool,
    /// Complete files wait here until uploaded; empty: `<data_dir>/spool`.
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub spool_dir: String,
    /// Spooled bytes (complete and open files) beyond which ingestion pushes back.
    pub max_spool_bytes: u64,
    /// A file is closed at this size…
    pub max_file_bytes: u64,
    /// …or this long after it was opened.
    #[serde(with = "humantime_serde")]
    pub max_file_age: Duration,
    /// Most rows per Parquet row group.
    pub row_group_rows: usize,
    /// Rows waiting to be encoded, all open files together (approximate
    /// bytes): past it the file holding most is encoded as a smaller row
    /// group. Bounds the lake's memory whatever the number of tenants.
    pub max_buffered_bytes: usize,
    /// zstd compression level: higher compresses a little better and costs
    /// CPU and memory (each column being written holds a compressor).
    pub zstd_level: i32,
    /// Names this replica's files (`<writer>-<seq>.parquet`); empty: the host name.
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub writer_id: String,
    /// Longest wait between upload attempts while the object store fails.
    #[serde(with = "humantime_serde")]
    pub max_upload_backoff: Duration,
    /// How often the usage ledger is exported to the lake (`usage/`).
    #[serde(with = "humantime_serde")]
    pub usage_export_interval: Duration,
    /// Usage is exported this long after it was received (ledger
    /// transactions in flight have committed by then).
    #[serde(with = "humantime_serde")]
    pub usage_export_lag: Duration,
}

impl LakeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_file_bytes == 0
            || self.row_group_rows == 0
            || self.max_file_age.is_zero()
            || self.max_buffered_bytes == 0
        {
            return Err(
                "lake.max_file_bytes, row_group_rows, max_buffered_bytes and max_file_age must be greater than 0"
                    .into(),
            );
        }
        if self.max_spool_bytes < self.max_file_bytes {
            return Err("lake.max_spool_bytes must be at least lake.max_file_bytes".into());
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err("lake.zstd_level: 1 to 22".into());
        }
        if self.writer_id.contains(['/', '\\']) {
            return Err("lake.writer_id: no slashes".into());
        }
        Ok(())
    }

    /// The writer id: configured, else the host name, else "tally".
    pub fn writer(&self) -> String {
        if !self.writer_id.is_empty() {
            return self.writer_id.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "tally".to_owned())
    }
}

const PLAUSIBLE_PAST_NS: u64 = 7 * 24 * 3_600 * 1_000_000_000;
const PLAUSIBLE_FUTURE_NS: u64 = 3_600 * 1_000_000_000;

/// What a row holds in the builders besides its item's OTLP bytes (which
/// include its attributes): fixed-size columns, offsets, its origin's index.
/// Its resource is stored once per run of rows (see `schema`).
const ROW_BYTES: usize = 64;

/// The running writer's thread.
pub struct LakeWriter {
    pub thread: std::thread::JoinHandle<()>,
    /// Set when tally shuts down: what was acknowledged is written even past
    /// the spool limit, so the queue drains and shutdown cannot hang.
    pub draining: Arc<AtomicBool>,
}

/// Starts the writer thread, taking requests from its branch of the
/// pipeline (`rx`) into files in `spool`; it ends once `rx` is closed and
/// every file is closed.
pub fn start_writer(
    config: &LakeConfig,
    spool: Arc<Spool>,
    rx: mpsc::Receiver<QueuedRequest>,
) -> std::io::Result<LakeWriter> {
    let limits = FileLimits {
        max_file_bytes: config.max_file_bytes,
        max_file_age_ms: config.max_file_age.as_millis() as i64,
        row_group_rows: config.row_group_rows,
        max_buffered_bytes: config.max_buffered_bytes,
        zstd_level: config.zstd_level,
    };
    let files = LakeFiles::new(spool.clone(), &config.writer(), limits)?;
    let handle = tokio::runtime::Handle::current();
    let max_spool = config.max_spool_bytes;
    let draining = Arc::new(AtomicBool::new(false));
    let flag = draining.clone();
    let thread = std::thread::Builder::new()
        .name("tally-lake".into())
        .spawn(move || run(rx, files, handle, spool, max_spool, flag))?;
    Ok(LakeWriter { thread, draining })
}

fn run(
    mut rx: mpsc::Receiver<QueuedRequest>,
    mut files: LakeFiles,
    handle: tokio::runtime::Handle,
    spool: Arc<Spool>,
    max_spool: u64,
    draining: Arc<AtomicBool>,
) {
    let mut last_age_check = now_ms();
    loop {
        let held = spool.bytes() + files.open_bytes();
        metrics::gauge!(metric_names::LAKE_SPOOL_BYTES).set(held as f64);
        metrics::gauge!(metric_names::LAKE_OPEN_FILES).set(files.open_files() as f64);
        metrics::gauge!(metric_names::LAKE_BUFFERED_BYTES).set(files.buffered_bytes() as f64);
        // A full spool stops intake, unless tally is shutting down: what was
        // acknowledged is written even past the limit.
        let full = held >= max_spool && !draining.load(Ordering::Relaxed) && !rx.is_closed();
        metrics::gauge!(metric_names::LAKE_BACKPRESSURE).set(if full { 1.0 } else { 0.0 });
        let next = if full {
            std::thread::sleep(Duration::from_millis(200));
            Err(())
        } else {
            handle.block_on(async { tokio::time::timeout(Duration::from_secs(1), rx.recv()).await }).map_err(|_| ())
        };
        match next {
            Ok(Some(request)) => {
                if let Err(e) = add(&mut files, &request) {
                    metrics::counter!(metric_names::LAKE_ERRORS).increment(1);
                    tracing::error!(error = %e, "writing to the lake spool failed; this request's rows are not in the lake");
                }
            }
            Ok(None) => break,
            Err(()) => {}
        }
        let now = now_ms();
        if now - last_age_check >= 1000 {
            last_age_check = now;
            if let Err(e) = files.close_aged(now) {
                metrics::counter!(metric_names::LAKE_ERRORS).increment(1);
                tracing::error!(error = %e, "closing lake files failed");
            }
        }
    }
    if let Err(e) = files.close_all().map(drop) {
        metrics::counter!(metric_names::LAKE_ERRORS).increment(1);
        tracing::error!(error = %e, "closing lake files at shutdown failed");
    }
}

/// One request's rows into their files.
fn add(files: &mut LakeFiles, request: &QueuedRequest) -> std::io::Result<()> {
    let now = now_ms();
    for b in request.batches.iter() {
        let tenant = b.tenant.as_str();
        // Items go to the hour of their time; without a plausible one (none,
        // over a week old, over an hour ahead), to the hour they were received,
        // so a hostile request cannot open a file per hour of history.
        let received_ns = b.received_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let (oldest, newest) = (received_ns.saturating_sub(PLAUSIBLE_PAST_NS), received_ns + PLAUSIBLE_FUTURE_NS);
        let hour = |ns: u64| hour_of_ns(if (oldest..=newest).contains(&ns) { ns } else { received_ns });
        // One key per batch, its hour set per row: no allocation per row.
        let signal = match &b.payload {
            Payload::Spans(_) => LakeSignal::Spans,
            Payload::Logs(_) => LakeSignal::Logs,
            Payload::Metrics(_) => LakeSignal::Metrics,
        };
        let mut key = FileKey { signal, tenant: tenant.to_owned(), hour_ms: 0 };
        match &b.payload {
            Payload::Spans(data) => {
                for rs in data {
                    let service = service_of(rs.resource.as_ref());
                    for ss in &rs.scope_spans {
                        let o = Origin {
                            tenant,
                            service: &service,
                            resource: rs.resource.as_ref(),
                            scope: ss.scope.as_ref(),
                        };
                        for span in &ss.spans {
                            key.hour_ms = hour(span.start_time_unix_nano);
                            add_row(files, &key, now, span.encoded_len() + ROW_BYTES, |r| {
                                if let Rows::Spans(r) = r {
                                    r.push(&o, span)
                                }
                            })?;
                        }
                    }
                }
            }
            Payload::Logs(data) => {
                for rl in data {
                    let service = service_of(rl.resource.as_ref());
                    for sl in &rl.scope_logs {
                        let o = Origin {
                            tenant,
                            service: &service,
                            resource: rl.resource.as_ref(),
                            scope: sl.scope.as_ref(),
                        };
                        for rec in &sl.log_records {
                            let t =
                                if rec.time_unix_nano != 0 { rec.time_unix_nano } else { rec.observed_time_unix_nano };
                            key.hour_ms = hour(t);
                            add_row(files, &key, now, rec.encoded_len() + ROW_BYTES, |r| {
                                if let Rows::Logs(r) = r {
                                    r.push(&o, rec)
                                }
                            })?;
                        }
                    }
                }
            }
            Payload::Metrics(data) => {
                for rm in data {
                    let service = service_of(rm.resource.as_ref());
                    for sm in &rm.scope_metrics {
                        let o = Origin {
                            tenant,
                            service: &service,
                            resource: rm.resource.as_ref(),
                            scope: sm.scope.as_ref(),
                        };
                        for metric in &sm.metrics {
                            // A metric's points share a file: the hour of its first
                            // point (an exporter's points of one collection share a time).
                            key.hour_ms = hour(first_point_time(metric));
                            let points = tally_core::data_points(metric).max(1);
                            add_row(files, &key, now, metric.encoded_len() + points * ROW_BYTES, |r| {
                                if let Rows::Metrics(r) = r {
                                    r.push_metric(&o, metric);
                                }
                            })?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The time of a metric's first data point (0 with none).
fn first_point_time(m: &tally_core::otlp::metrics::v1::Metric) -> u64 {
    use tally_core::otlp::metrics::v1::metric::Data;
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.first().map(|p| p.time_unix_nano),
        Some(Data::Sum(s)) => s.data_points.first().map(|p| p.time_unix_nano),
        Some(Data::Histogram(h)) => h.data_points.first().map(|p| p.time_unix_nano),
        Some(Data::ExponentialHistogram(h)) => h.data_points.first().map(|p| p.time_unix_nano),
        Some(Data::Summary(s)) => s.data_points.first().map(|p| p.time_unix_nano),
        None => None,
    }
    .unwrap_or(0)
}

/// One row of about `bytes` into the file for `key`; `push` writes it into
/// the file's rows (of the key's signal).
fn add_row(
    files: &mut LakeFiles,
    key: &FileKey,
    now_ms: i64,
    bytes: usize,
    push: impl FnOnce(&mut Rows),
) -> std::io::Result<()> {
    push(files.rows(key, now_ms)?);
    files.added(key, bytes)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tally_core::{
        TelemetryBatch, TenantId,
        otlp::trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    use super::*;

    /// Files in a fresh spool of this test process, never closed by size or age.
    fn unit_files(name: &str) -> (std::path::PathBuf, LakeFiles) {
        let spool = std::env::temp_dir().join(format!("tally-lake-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&spool);
        let limits = FileLimits {
            max_file_bytes: u64::MAX,
            max_file_age_ms: i64::MAX,
            row_group_rows: 100,
            max_buffered_bytes: 1 << 20,
            zstd_level: 3,
        };
        let files = LakeFiles::new(Arc::new(Spool::open(&spool).unwrap()), "w", limits).unwrap();
        (spool, files)
    }

    #[test]
    fn implausible_times_go_to_the_hour_received_and_open_no_file_each() {
        let (spool, mut files) = unit_files("spans");
        let now = SystemTime::now();
        let now_ns = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        // A hostile request: one span per hour of 40 years, plus times of 0 and far future.
        let spans: Vec<Span> = (0..350_000u64)
            .step_by(1000)
            .map(|h| h * 3_600_000_000_000)
            .chain([0, u64::MAX, now_ns + 10 * 3_600_000_000_000, now_ns])
            .map(|t| Span { start_time_unix_nano: t, end_time_unix_nano: t, ..Default::default() })
            .collect();
        let n = spans.len();
        let batch = TelemetryBatch {
            tenant: TenantId::parse("acme").unwrap(),
            received_at: now,
            items: n as u64,
            payload: Payload::Spans(vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }]),
        };
        add(&mut files, &QueuedRequest::new(vec![batch], ())).unwrap();
        // All but the plausible span share the hour received (at most two hours around now).
        assert!(files.open_files() <= 2, "{} files open", files.open_files());
        let closed = files.close_all().unwrap();
        assert!(!closed.is_empty());
        let _ = std::fs::remove_dir_all(&spool);
    }

    #[test]
    fn metric_points_go_to_the_hour_of_their_time() {
        use tally_core::otlp::metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric};
        let (spool, mut files) = unit_files("metrics");
        let now = SystemTime::now();
        let five_hours_ago =
            now.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 - 5 * 3_600_000_000_000;
        let point = NumberDataPoint { time_unix_nano: five_hours_ago, ..Default::default() };
        let metric = Metric {
            name: "queue.depth".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point.clone(), point] })),
            ..Default::default()
        };
        let batch = TelemetryBatch {
            tenant: TenantId::parse("acme").unwrap(),
            received_at: now,
            items: 2,
            payload: Payload::Metrics(vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
                ..Default::default()
            }]),
        };
        add(&mut files, &QueuedRequest::new(vec![batch], ())).unwrap();
        let closed = files.close_all().unwrap();
        let want = tally_core::lake::lake_path(LakeSignal::Metrics, "acme", hour_of_ns(five_hours_ago), "w", 0);
        let want_dir = want.rsplit_once('/').unwrap().0;
        assert_eq!(closed.len(), 1);
        assert!(closed[0].0.to_string_lossy().contains(want_dir), "{:?} not under {want_dir}", closed[0].0);
        let _ = std::fs::remove_dir_all(&spool);
    }
}

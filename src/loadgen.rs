//! `tally loadgen`: an OTLP client that sends synthetic traces, logs or
//! metrics over gRPC or HTTP, at a target rate or as fast as it can, and
//! reports items sent and acknowledged and the errors seen.
//!
//! Requests are generated and encoded (and compressed, for HTTP) once up
//! front, so the generator spends its CPU on sending, not on building
//! payloads: it shares the machine with the server it measures.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};
use tally_collector::otlp::{self, Logs, Metrics, OtlpSignal, Proto, RawMessage, Traces, WireCodec};
use tally_core::otlp::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalArg {
    Traces,
    Logs,
    Metrics,
    /// CloudEvents usage events to `POST /v1/events` (endpoint: the API port).
    Events,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
}

#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Base URL of the receiver: http://127.0.0.1:4317 for gRPC, :4318 for HTTP.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    #[arg(long, value_enum, default_value = "traces")]
    pub signal: SignalArg,
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Compression,
    /// How long to send, e.g. 10s, 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Target items (spans, log records, data points) per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    #[arg(long, default_value_t = 5)]
    pub services: usize,
    #[arg(long, default_value_t = 20)]
    pub routes: usize,
    /// Items per request (spans, log records or data points).
    #[arg(long, default_value_t = 100)]
    pub spans_per_request: usize,
    /// Spans per trace (the first is the server span, the rest its children).
    #[arg(long, default_value_t = 5)]
    pub spans_per_trace: usize,
    /// Attributes on each span or log record, besides the semantic ones.
    #[arg(long, default_value_t = 8)]
    pub attributes_per_span: usize,
    /// Fraction of server spans with an error status (HTTP 500).
    #[arg(long, default_value_t = 0.01)]
    pub error_ratio: f64,
    /// Median span duration, milliseconds (durations are log-normal).
    #[arg(long, default_value_t = 40.0)]
    pub latency_p50_ms: f64,
    /// 99th percentile span duration, milliseconds.
    #[arg(long, default_value_t = 800.0)]
    pub latency_p99_ms: f64,
    /// Distinct pre-built requests cycled through.
    #[arg(long, default_value_t = 64)]
    pub distinct_requests: usize,
    /// How often the pre-built requests are built again with current
    /// timestamps, so a run longer than a rollup window plus its lateness
    /// measures steady state rather than the late-data path.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub restamp: Duration,
    /// Extra request header (gRPC metadata), `name=value`; repeatable.
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// CloudEvents `type` of `--signal events` (a meter must be declared for it;
    /// events carry `data.tokens` and `data.model`).
    #[arg(long, default_value = "llm.completion")]
    pub event_type: String,
    /// Resource attribute carrying the tenant.
    #[arg(long, default_value = "tenant.id")]
    pub tenant_attribute: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the final summary as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

#[derive(Default)]
struct Stats {
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    items_sent: AtomicU64,
    items_acked: AtomicU64,
    items_rejected: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.concurrency > 0 && args.spans_per_request > 0,
        "concurrency and spans-per-request must be > 0"
    );
    anyhow::ensure!(
        args.tenants > 0 && args.services > 0 && args.routes > 0,
        "tenants, services and routes must be > 0"
    );
    match args.signal {
        SignalArg::Traces => run_signal::<Traces>(args, build_traces).await,
        SignalArg::Logs => run_signal::<Logs>(args, build_logs).await,
        SignalArg::Metrics => run_signal::<Metrics>(args, build_metrics).await,
        SignalArg::Events => {
            let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let client =
                reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(args.concurrency).build()?;
            let time = chrono::DateTime::from_timestamp_millis(run_id as i64)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let targets = (0..args.concurrency)
                .map(|w| EventsTarget {
                    client: client.clone(),
                    url: format!("{}/v1/events", args.endpoint.trim_end_matches('/')),
                    run: format!("{run_id}-{w}"),
                    time: time.clone(),
                    tenants: args.tenants,
                    per_request: args.spans_per_request,
                    event_type: args.event_type.clone(),
                })
                .collect();
            drive(args, targets).await
        }
    }
}

async fn run_signal<S: OtlpSignal>(
    args: LoadgenArgs,
    build: fn(&LoadgenArgs, &mut Generator, usize) -> S::Request,
) -> anyhow::Result<()> {
    let payloads = Arc::new(std::sync::RwLock::new(Arc::new(encode_payloads::<S>(&args, build))));
    let restamp = spawn_restamp::<S>(args.clone(), payloads.clone(), build);
    let mut targets = Vec::new();
    for _ in 0..args.concurrency {
        targets.push(OtlpTarget { sender: Sender::<S>::connect(&args).await?, payloads: payloads.clone() });
    }
    let result = drive(args, targets).await;
    restamp.abort();
    result
}

type Payloads = Arc<std::sync::RwLock<Arc<Vec<Bytes>>>>;

/// Builds `payloads` again with current timestamps every `--restamp`, off
/// the async workers (the same seed: the same series and ids, new times).
fn spawn_restamp<S: OtlpSignal>(
    args: LoadgenArgs,
    payloads: Payloads,
    build: fn(&LoadgenArgs, &mut Generator, usize) -> S::Request,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(args.restamp).await;
            let a = args.clone();
            let Ok(fresh) = tokio::task::spawn_blocking(move || encode_payloads::<S>(&a, build)).await else {
                return;
            };
            *payloads.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        }
    })
}

/// The pre-built requests, stamped with the current time.
fn encode_payloads<S: OtlpSignal>(
    args: &LoadgenArgs,
    build: fn(&LoadgenArgs, &mut Generator, usize) -> S::Request,
) -> Vec<Bytes> {
    let mut generator = Generator::new(args);
    (0..args.distinct_requests.max(1))
        .map(|i| {
            let bytes = prost::Message::encode_to_vec(&build(args, &mut generator, i));
            match (args.protocol, args.compression) {
                (Protocol::Http, Compression::Gzip) => {
                    otlp::compress(&bytes, otlp::Encoding::Gzip).unwrap_or_default().into()
                }
                _ => bytes.into(),
            }
        })
        .collect()
}

/// One worker's way of sending request number `i`: `Ok(items rejected)` or
/// `Err(error kind)`.
trait Target: Send + 'static {
    fn send(&mut self, i: usize) -> impl Future<Output = Result<u64, String>> + Send;
}

struct OtlpTarget<S> {
    sender: Sender<S>,
    /// Swapped for freshly stamped ones every `--restamp`.
    payloads: Payloads,
}

impl<S: OtlpSignal> Target for OtlpTarget<S> {
    async fn send(&mut self, i: usize) -> Result<u64, String> {
        let payloads = self.payloads.read().unwrap_or_else(|p| p.into_inner()).clone();
        let body = payloads[i % payloads.len()].clone();
        self.sender.send(body).await.map(|rejected| rejected.max(0) as u64)
    }
}

/// Usage events: batches of unique CloudEvents, acknowledged per event.
struct EventsTarget {
    client: reqwest::Client,
    url: String,
    /// Unique per run and worker, so every event id is new.
    run: String,
    time: String,
    tenants: usize,
    per_request: usize,
    event_type: String,
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
async fn drive<T: Target>(args: LoadgenArgs, targets: Vec<T>) -> anyhow::Result<()> {
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

/// One connection and how to send a pre-encoded request over it.
enum Sender<S> {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>, tonic::metadata::MetadataMap, std::marker::PhantomData<S>),
    Http(reqwest::Client, String, reqwest::header::HeaderMap),
}

impl<S: OtlpSignal> Sender<S> {
    async fn connect(args: &LoadgenArgs) -> anyhow::Result<Sender<S>> {
        let base = args.endpoint.trim_end_matches('/').to_owned();
        match args.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(base.clone())?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {base}"))?;
                let mut client = tonic::client::Grpc::new(channel);
                if args.compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let mut md = tonic::metadata::MetadataMap::new();
                for (k, v) in &args.headers {
                    md.insert(tonic::metadata::MetadataKey::from_bytes(k.as_bytes())?, v.parse()?);
                }
                Ok(Sender::Grpc(client, md, std::marker::PhantomData))
            }
            Protocol::Http => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(reqwest::header::CONTENT_TYPE, "application/x-protobuf".parse()?);
                if args.compression == Compression::Gzip {
                    headers.insert(reqwest::header::CONTENT_ENCODING, "gzip".parse()?);
                }
                for (k, v) in &args.headers {
                    headers.insert(reqwest::header::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
                }
                let client =
                    reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(args.concurrency).build()?;
                Ok(Sender::Http(client, format!("{base}{}", S::HTTP_PATH), headers))
            }
        }
    }

    /// Sends one request; `Ok(rejected items)` or `Err(error kind)`.
    async fn send(&mut self, body: Bytes) -> Result<i64, String> {
        match self {
            Sender::Grpc(client, md, _) => {
                client.ready().await.map_err(|e| format!("grpc_connect: {e}"))?;
                let mut req = tonic::Request::new(RawMessage(body));
                *req.metadata_mut() = md.clone();
                let path = http::uri::PathAndQuery::from_static(S::GRPC_PATH);
                match client.unary(req, path, WireCodec::<RawMessage, Proto<S::Response>>::default()).await {
                    Ok(resp) => Ok(S::rejected(&resp.into_inner().0)),
                    Err(status) => Err(format!("grpc_{:?}", status.code()).to_lowercase()),
                }
            }
            Sender::Http(client, url, headers) => {
                let resp = client.post(url.as_str()).headers(headers.clone()).body(body).send().await.map_err(|e| {
                    if e.is_connect() { "http_connect".to_owned() } else { "http_transport".to_owned() }
                })?;
                let status = resp.status();
                // tally's own answer to the load it is sent: small.
                #[allow(clippy::disallowed_methods)]
                let bytes = resp.bytes().await.map_err(|_| "http_transport".to_owned())?;
                if !status.is_success() {
                    return Err(format!("http_{}", status.as_u16()));
                }
                let decoded: S::Response = prost::Message::decode(bytes).map_err(|_| "http_bad_response".to_owned())?;
                Ok(S::rejected(&decoded))
            }
        }
    }
}

/// Random but reproducible building blocks of synthetic telemetry.
pub struct Generator {
    rng: SmallRng,
    now_ns: u64,
    /// Log-normal parameters of span durations, in nanoseconds.
    mu: f64,
    sigma: f64,
}

impl Generator {
    fn new(args: &LoadgenArgs) -> Generator {
        let p50 = (args.latency_p50_ms.max(0.001) * 1e6).ln();
        let p99 = (args.latency_p99_ms.max(args.latency_p50_ms).max(0.001) * 1e6).ln();
        Generator {
            rng: SmallRng::seed_from_u64(args.seed),
            now_ns: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
            mu: p50,
            sigma: (p99 - p50) / 2.326,
        }
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut id = [0u8; N];
        self.rng.fill_bytes(&mut id);
        id[0] |= 1; // never all zero
        id.to_vec()
    }

    fn duration_ns(&mut self) -> u64 {
        // Box-Muller: one standard normal sample.
        let (u1, u2): (f64, f64) = (self.rng.random::<f64>().max(f64::MIN_POSITIVE), self.rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (self.mu + self.sigma * z).exp().min(3.6e12) as u64
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

/// The resource of request `i`: tenants and services round-robin.
fn resource(args: &LoadgenArgs, i: usize) -> Resource {
    let tenant = i % args.tenants;
    let service = (i / args.tenants) % args.services;
    Resource {
        attributes: vec![
            kv("service.name", s(format!("svc-{service}"))),
            kv(&args.tenant_attribute, s(format!("tenant-{tenant}"))),
            kv("service.version", s("1.4.2")),
            kv("deployment.environment.name", s("bench")),
            kv("telemetry.sdk.name", s("tally-loadgen")),
        ],
        ..Default::default()
    }
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "tally-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

fn extra_attributes(args: &LoadgenArgs, g: &mut Generator, out: &mut Vec<KeyValue>) {
    for j in 0..args.attributes_per_span {
        let v = g.rng.random_range(0..1000u32);
        out.push(kv(
            &format!("app.attr_{j}"),
            if j % 2 == 0 { s(format!("value-{v}")) } else { Value::IntValue(v.into()) },
        ));
    }
}

fn build_traces(args: &LoadgenArgs, g: &mut Generator, i: usize) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(args.spans_per_request);
    let per_trace = args.spans_per_trace.max(1);
    while spans.len() < args.spans_per_request {
        let trace_id = g.id::<16>();
        let route = format!("/api/v1/items{}", g.rng.random_range(0..args.routes));
        let error = g.rng.random_bool(args.error_ratio.clamp(0.0, 1.0));
        let root_id = g.id::<8>();
        let root_dur = g.duration_ns();
        let start = g.now_ns - root_dur;
        for k in 0..per_trace.min(args.spans_per_request - spans.len()) {
            let root = k == 0;
            let span_id = if root { root_id.clone() } else { g.id::<8>() };
            let dur = if root { root_dur } else { g.duration_ns().min(root_dur) };
            let mut attributes = Vec::with_capacity(args.attributes_per_span + 3);
            if root {
                attributes.push(kv("http.request.method", s("GET")));
                attributes.push(kv("http.route", s(route.clone())));
                attributes.push(kv("http.response.status_code", Value::IntValue(if error { 500 } else { 200 })));
            } else {
                attributes.push(kv("db.system.name", s("postgresql")));
            }
            extra_attributes(args, g, &mut attributes);
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id,
                parent_span_id: if root { Vec::new() } else { root_id.clone() },
                name: if root { format!("GET {route}") } else { format!("SELECT items{k}") },
                kind: if root { SpanKind::Server } else { SpanKind::Client } as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes,
                status: Some(Status {
                    code: if root && error { StatusCode::Error } else { StatusCode::Unset } as i32,
                    message: String::new(),
                }),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(args, i)),
            scope_spans: vec![ScopeSpans { scope: scope(), spans, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

fn build_logs(args: &LoadgenArgs, g: &mut Generator, i: usize) -> ExportLogsServiceRequest {
    let log_records = (0..args.spans_per_request)
        .map(|k| {
            let error = g.rng.random_bool(args.error_ratio.clamp(0.0, 1.0));
            let mut attributes = Vec::with_capacity(args.attributes_per_span);
            extra_attributes(args, g, &mut attributes);
            LogRecord {
                time_unix_nano: g.now_ns,
                observed_time_unix_nano: g.now_ns,
                severity_number: if error { 17 } else { 9 },
                severity_text: if error { "ERROR" } else { "INFO" }.into(),
                body: Some(AnyValue { value: Some(s(format!("request {k} handled"))) }),
                attributes,
                trace_id: g.id::<16>(),
                span_id: g.id::<8>(),
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(args, i)),
            scope_logs: vec![ScopeLogs { scope: scope(), log_records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

/// A gauge (queue depth per queue), a cumulative counter and a histogram;
/// `spans_per_request` data points in all.
fn build_metrics(args: &LoadgenArgs, g: &mut Generator, i: usize) -> ExportMetricsServiceRequest {
    let n = args.spans_per_request;
    let (gauges, sums) = (n / 3, n / 3);
    let hists = n - gauges - sums;
    let point = |g: &mut Generator, k: usize, v: number_data_point::Value| NumberDataPoint {
        attributes: vec![kv("queue", s(format!("q{k}")))],
        start_time_unix_nano: g.now_ns - 60_000_000_000,
        time_unix_nano: g.now_ns,
        value: Some(v),
        ..Default::default()
    };
    let gauge_points = (0..gauges)
        .map(|k| {
            let v = number_data_point::Value::AsInt(g.rng.random_range(0..300));
            point(g, k, v)
        })
        .collect();
    let sum_points = (0..sums)
        .map(|k| {
            let v = number_data_point::Value::AsInt(g.rng.random_range(0..100_000));
            point(g, k, v)
        })
        .collect();
    let bounds = vec![5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0];
    let hist_points = (0..hists)
        .map(|k| {
            let counts: Vec<u64> = (0..=bounds.len()).map(|_| g.rng.random_range(0..50)).collect();
            HistogramDataPoint {
                attributes: vec![kv("http.route", s(format!("/api/v1/items{}", k % args.routes)))],
                start_time_unix_nano: g.now_ns - 60_000_000_000,
                time_unix_nano: g.now_ns,
                count: counts.iter().sum(),
                sum: Some(counts.iter().sum::<u64>() as f64 * 40.0),
                bucket_counts: counts,
                explicit_bounds: bounds.clone(),
                ..Default::default()
            }
        })
        .collect();
    let metric = |name: &str, unit: &str, data| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(args, i)),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![
                    metric("worker.queue.depth", "{task}", metric::Data::Gauge(Gauge { data_points: gauge_points })),
                    metric(
                        "tasks.completed",
                        "{task}",
                        metric::Data::Sum(Sum {
                            data_points: sum_points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "http.server.request.duration",
                        "ms",
                        metric::Data::Histogram(Histogram {
                            data_points: hist_points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        }),
                    ),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    /// Runs longer than a window plus its lateness send current times, not
    /// the times of the start.
    #[tokio::test]
    async fn requests_are_restamped() {
        let args = Cli::parse_from(["loadgen", "--restamp", "50ms", "--distinct-requests", "2"]).args;
        let first_start = |p: &Payloads| {
            let body = p.read().unwrap()[0].clone();
            let req: <Traces as OtlpSignal>::Request = prost::Message::decode(body).unwrap();
            req.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano
        };
        let payloads: Payloads =
            Arc::new(std::sync::RwLock::new(Arc::new(encode_payloads::<Traces>(&args, build_traces))));
        let before = first_start(&payloads);
        let task = spawn_restamp::<Traces>(args, payloads.clone(), build_traces);
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        assert!(first_start(&payloads) > before, "not restamped");
    }
}

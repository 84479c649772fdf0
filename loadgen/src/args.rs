//! The command line of `tally loadgen`.

use std::time::Duration;

use clap::{Args, ValueEnum};

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

pub(crate) fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

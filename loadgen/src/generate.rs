//! Synthetic, reproducible OTLP traces, logs and metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};
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

use crate::LoadgenArgs;

/// Random but reproducible building blocks of synthetic telemetry.
pub(crate) struct Generator {
    rng: SmallRng,
    now_ns: u64,
    /// Log-normal parameters of span durations, in nanoseconds.
    mu: f64,
    sigma: f64,
}

impl Generator {
    pub(crate) fn new(args: &LoadgenArgs) -> Generator {
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

pub(crate) fn build_traces(args: &LoadgenArgs, g: &mut Generator, i: usize) -> ExportTraceServiceRequest {
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

pub(crate) fn build_logs(args: &LoadgenArgs, g: &mut Generator, i: usize) -> ExportLogsServiceRequest {
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
pub(crate) fn build_metrics(args: &LoadgenArgs, g: &mut Generator, i: usize) -> ExportMetricsServiceRequest {
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

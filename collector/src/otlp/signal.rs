//! What differs between the three OTLP signals, behind one trait, so the
//! receivers and the ingest logic are written once.

use serde::{Serialize, de::DeserializeOwned};
use tally_core::{
    Payload, Signal, TenantId,
    otlp::{
        collector::{
            logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse},
            metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse},
            trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse},
        },
        common::v1::KeyValue,
        logs::v1::{ResourceLogs, ScopeLogs},
        metrics::v1::{Metric, ResourceMetrics, ScopeMetrics, metric::Data},
        trace::v1::{ResourceSpans, ScopeSpans},
    },
};

use crate::{
    otlp::budget::Msg,
    otlp_usage::{OtlpMeters, UsageOut},
};

/// Why one item was refused; also the `reason` label in `/metrics`.
pub type Reason = &'static str;

/// Where one item goes: a tenant key (decided by the caller) or refused.
pub type Route<K> = Result<K, Reason>;

/// One OTLP signal: its request and response types, names, and how to walk
/// its items.
pub trait OtlpSignal: Send + Sync + 'static {
    type Request: prost::Message + Default + DeserializeOwned + Send + 'static;
    type Response: prost::Message + Serialize + Default + Send + 'static;
    type Resource: Send + 'static;

    const SIGNAL: Signal;
    /// OTLP/HTTP path, e.g. `/v1/traces`.
    const HTTP_PATH: &'static str;
    /// gRPC service name, e.g. `opentelemetry.proto.collector.trace.v1.TraceService`.
    const GRPC_SERVICE: &'static str;
    /// gRPC method path.
    const GRPC_PATH: &'static str;
    /// The JSON field that must be present in a non-empty OTLP/JSON body.
    const JSON_FIELD: &'static str;
    /// Plural noun for messages ("spans", "log records", "data points").
    const NOUN: &'static str;
    /// The request's message type, for the decode budget.
    const ROOT: Msg;

    fn into_resources(req: Self::Request) -> Vec<Self::Resource>;
    fn resource_attributes(res: &Self::Resource) -> &[KeyValue];
    fn count_items(res: &Self::Resource) -> u64;
    /// Checks that don't depend on the tenant (ids of the right length).
    fn all_items_valid(res: &Self::Resource) -> bool;
    /// Splits a resource by the route of each of its items. `route` sees
    /// each item's attributes (`None` for an item failing validation).
    fn partition<K: PartialEq>(
        res: Self::Resource,
        route: &mut dyn FnMut(Option<&[KeyValue]>) -> Route<K>,
    ) -> Vec<(Route<K>, Self::Resource, u64)>;
    fn payload(resources: Vec<Self::Resource>) -> Payload;
    fn response(rejected: i64, message: String) -> Self::Response;
    /// Usage this resource's items produce for `meters` (spans and metric
    /// points); returns the metered items skipped as sampled.
    fn extract_usage(_meters: &OtlpMeters, _tenant: &TenantId, _res: &Self::Resource, _out: &mut UsageOut) -> u64 {
        0
    }
    /// Items a response says were rejected (the load generator reads it).
    fn rejected(resp: &Self::Response) -> i64;
}

pub struct Traces;
pub struct Logs;
pub struct Metrics;

/// Appends `v` to the group keyed `k`, creating it on first use. Requests
/// carry few distinct tenants, so a linear scan beats hashing.
fn push_group<K: PartialEq, V>(groups: &mut Vec<(K, Vec<V>)>, k: K, v: V) {
    match groups.iter_mut().find(|(gk, _)| *gk == k) {
        Some((_, vs)) => vs.push(v),
        None => groups.push((k, vec![v])),
    }
}

/// Re-assembles per-route scopes into per-route resources.
fn collect_resources<K: PartialEq, S, R>(
    scopes: Vec<(Route<K>, S, u64)>,
    mut make: impl FnMut(Vec<S>) -> R,
) -> Vec<(Route<K>, R, u64)> {
    let mut groups: Vec<(Route<K>, Vec<(S, u64)>)> = Vec::new();
    for (k, s, n) in scopes {
        push_group(&mut groups, k, (s, n));
    }
    groups
        .into_iter()
        .map(|(k, scopes)| {
            let n = scopes.iter().map(|(_, n)| n).sum();
            (k, make(scopes.into_iter().map(|(s, _)| s).collect()), n)
        })
        .collect()
}

/// Span ids must be 16/8 non-zero bytes. On log records both are optional:
/// empty or all-zero means "not set" (logs.proto).
fn valid_trace_ids(trace_id: &[u8], span_id: &[u8], optional: bool) -> bool {
    let set = |id: &[u8]| id.iter().any(|b| *b != 0);
    let ok = |id: &[u8], len| id.len() == len && set(id);
    if optional {
        let unset = |id: &[u8]| id.is_empty() || (!set(id) && (id.len() == 16 || id.len() == 8));
        (unset(trace_id) || ok(trace_id, 16)) && (unset(span_id) || ok(span_id, 8))
    } else {
        ok(trace_id, 16) && ok(span_id, 8)
    }
}

pub const INVALID_ID: Reason = "invalid_id";

impl OtlpSignal for Traces {
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    type Resource = ResourceSpans;
    const SIGNAL: Signal = Signal::Spans;
    const HTTP_PATH: &'static str = "/v1/traces";
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const JSON_FIELD: &'static str = "resourceSpans";
    const NOUN: &'static str = "spans";
    const ROOT: Msg = Msg::TraceRequest;

    fn into_resources(req: Self::Request) -> Vec<ResourceSpans> {
        req.resource_spans
    }
    fn resource_attributes(res: &ResourceSpans) -> &[KeyValue] {
        res.resource.as_ref().map_or(&[], |r| &r.attributes)
    }
    fn count_items(res: &ResourceSpans) -> u64 {
        res.scope_spans.iter().map(|s| s.spans.len() as u64).sum()
    }
    fn all_items_valid(res: &ResourceSpans) -> bool {
        res.scope_spans.iter().flat_map(|s| &s.spans).all(|s| valid_trace_ids(&s.trace_id, &s.span_id, false))
    }
    fn partition<K: PartialEq>(
        res: ResourceSpans,
        route: &mut dyn FnMut(Option<&[KeyValue]>) -> Route<K>,
    ) -> Vec<(Route<K>, ResourceSpans, u64)> {
        let ResourceSpans { resource, scope_spans, schema_url } = res;
        let mut scopes = Vec::new();
        for ss in scope_spans {
            let mut groups = Vec::new();
            for span in ss.spans {
                let valid = valid_trace_ids(&span.trace_id, &span.span_id, false);
                let k = route(valid.then_some(span.attributes.as_slice()));
                push_group(&mut groups, k, span);
            }
            for (k, spans) in groups {
                let n = spans.len() as u64;
                scopes.push((k, ScopeSpans { scope: ss.scope.clone(), spans, schema_url: ss.schema_url.clone() }, n));
            }
        }
        collect_resources(scopes, |scope_spans| ResourceSpans {
            resource: resource.clone(),
            scope_spans,
            schema_url: schema_url.clone(),
        })
    }
    fn payload(resources: Vec<ResourceSpans>) -> Payload {
        Payload::Spans(resources)
    }
    fn extract_usage(meters: &OtlpMeters, tenant: &TenantId, res: &ResourceSpans, out: &mut UsageOut) -> u64 {
        meters.extract_spans(tenant, res, &mut out.records)
    }
    fn response(rejected: i64, message: String) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (rejected > 0 || !message.is_empty())
                .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message: message }),
        }
    }
    fn rejected(resp: &ExportTraceServiceResponse) -> i64 {
        resp.partial_success.as_ref().map_or(0, |p| p.rejected_spans)
    }
}

impl OtlpSignal for Logs {
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    type Resource = ResourceLogs;
    const SIGNAL: Signal = Signal::Logs;
    const HTTP_PATH: &'static str = "/v1/logs";
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const JSON_FIELD: &'static str = "resourceLogs";
    const NOUN: &'static str = "log records";
    const ROOT: Msg = Msg::LogsRequest;

    fn into_resources(req: Self::Request) -> Vec<ResourceLogs> {
        req.resource_logs
    }
    fn resource_attributes(res: &ResourceLogs) -> &[KeyValue] {
        res.resource.as_ref().map_or(&[], |r| &r.attributes)
    }
    fn count_items(res: &ResourceLogs) -> u64 {
        res.scope_logs.iter().map(|s| s.log_records.len() as u64).sum()
    }
    fn all_items_valid(res: &ResourceLogs) -> bool {
        res.scope_logs.iter().flat_map(|s| &s.log_records).all(|l| valid_trace_ids(&l.trace_id, &l.span_id, true))
    }
    fn partition<K: PartialEq>(
        res: ResourceLogs,
        route: &mut dyn FnMut(Option<&[KeyValue]>) -> Route<K>,
    ) -> Vec<(Route<K>, ResourceLogs, u64)> {
        let ResourceLogs { resource, scope_logs, schema_url } = res;
        let mut scopes = Vec::new();
        for sl in scope_logs {
            let mut groups = Vec::new();
            for rec in sl.log_records {
                let valid = valid_trace_ids(&rec.trace_id, &rec.span_id, true);
                let k = route(valid.then_some(rec.attributes.as_slice()));
                push_group(&mut groups, k, rec);
            }
            for (k, log_records) in groups {
                let n = log_records.len() as u64;
                scopes.push((
                    k,
                    ScopeLogs { scope: sl.scope.clone(), log_records, schema_url: sl.schema_url.clone() },
                    n,
                ));
            }
        }
        collect_resources(scopes, |scope_logs| ResourceLogs {
            resource: resource.clone(),
            scope_logs,
            schema_url: schema_url.clone(),
        })
    }
    fn payload(resources: Vec<ResourceLogs>) -> Payload {
        Payload::Logs(resources)
    }
    fn extract_usage(meters: &OtlpMeters, tenant: &TenantId, res: &ResourceLogs, out: &mut UsageOut) -> u64 {
        meters.extract_logs(tenant, res, out);
        0
    }
    fn response(rejected: i64, message: String) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: (rejected > 0 || !message.is_empty())
                .then_some(ExportLogsPartialSuccess { rejected_log_records: rejected, error_message: message }),
        }
    }
    fn rejected(resp: &ExportLogsServiceResponse) -> i64 {
        resp.partial_success.as_ref().map_or(0, |p| p.rejected_log_records)
    }
}

/// Splits a metric's data points by route, keeping name, unit and type.
fn partition_metric<K: PartialEq>(
    m: Metric,
    route: &mut dyn FnMut(Option<&[KeyValue]>) -> Route<K>,
) -> Vec<(Route<K>, Metric, u64)> {
    use tally_core::otlp::metrics::v1;
    let Metric { name, description, unit, metadata, data } = m;
    let shell = |data| Metric {
        name: name.clone(),
        description: description.clone(),
        unit: unit.clone(),
        metadata: metadata.clone(),
        data: Some(data),
    };
    // Each arm: group the points, then rebuild the same metric type (with
    // its temporality and monotonicity) around each group.
    macro_rules! split {
        ($v:ident, $m:ident) => {{
            let mut groups = Vec::new();
            for point in std::mem::take(&mut $m.data_points) {
                let k = route(Some(point.attributes.as_slice()));
                push_group(&mut groups, k, point);
            }
            groups
                .into_iter()
                .map(|(k, data_points)| {
                    let n = data_points.len() as u64;
                    // Gauge and Summary have no other field to copy.
                    #[allow(clippy::needless_update)]
                    let data = v1::$v { data_points, ..$m.clone() };
                    (k, shell(Data::$v(data)), n)
                })
                .collect()
        }};
    }
    match data {
        Some(Data::Gauge(mut m)) => split!(Gauge, m),
        Some(Data::Sum(mut m)) => split!(Sum, m),
        Some(Data::Histogram(mut m)) => split!(Histogram, m),
        Some(Data::ExponentialHistogram(mut m)) => split!(ExponentialHistogram, m),
        Some(Data::Summary(mut m)) => split!(Summary, m),
        // A metric without data carries no items; route it with no attributes
        // so its metadata still reaches a tenant.
        None => vec![(route(Some(&[])), Metric { name, description, unit, metadata, data: None }, 0)],
    }
}

impl OtlpSignal for Metrics {
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;
    type Resource = ResourceMetrics;
    const SIGNAL: Signal = Signal::MetricPoints;
    const HTTP_PATH: &'static str = "/v1/metrics";
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    const JSON_FIELD: &'static str = "resourceMetrics";
    const NOUN: &'static str = "data points";
    const ROOT: Msg = Msg::MetricsRequest;

    fn into_resources(req: Self::Request) -> Vec<ResourceMetrics> {
        req.resource_metrics
    }
    fn resource_attributes(res: &ResourceMetrics) -> &[KeyValue] {
        res.resource.as_ref().map_or(&[], |r| &r.attributes)
    }
    fn count_items(res: &ResourceMetrics) -> u64 {
        res.scope_metrics.iter().flat_map(|s| &s.metrics).map(|m| tally_core::data_points(m) as u64).sum()
    }
    fn all_items_valid(_: &ResourceMetrics) -> bool {
        true
    }
    fn partition<K: PartialEq>(
        res: ResourceMetrics,
        route: &mut dyn FnMut(Option<&[KeyValue]>) -> Route<K>,
    ) -> Vec<(Route<K>, ResourceMetrics, u64)> {
        let ResourceMetrics { resource, scope_metrics, schema_url } = res;
        let mut scopes = Vec::new();
        for sm in scope_metrics {
            let mut groups: Vec<(Route<K>, Vec<(Metric, u64)>)> = Vec::new();
            for m in sm.metrics {
                for (k, part, n) in partition_metric(m, route) {
                    push_group(&mut groups, k, (part, n));
                }
            }
            for (k, metrics) in groups {
                let n = metrics.iter().map(|(_, n)| n).sum();
                let metrics = metrics.into_iter().map(|(m, _)| m).collect();
                scopes.push((
                    k,
                    ScopeMetrics { scope: sm.scope.clone(), metrics, schema_url: sm.schema_url.clone() },
                    n,
                ));
            }
        }
        collect_resources(scopes, |scope_metrics| ResourceMetrics {
            resource: resource.clone(),
            scope_metrics,
            schema_url: schema_url.clone(),
        })
    }
    fn payload(resources: Vec<ResourceMetrics>) -> Payload {
        Payload::Metrics(resources)
    }
    fn extract_usage(meters: &OtlpMeters, tenant: &TenantId, res: &ResourceMetrics, out: &mut UsageOut) -> u64 {
        meters.extract_metrics(tenant, res, out);
        0
    }
    fn response(rejected: i64, message: String) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: (rejected > 0 || !message.is_empty())
                .then_some(ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message: message }),
        }
    }
    fn rejected(resp: &ExportMetricsServiceResponse) -> i64 {
        resp.partial_success.as_ref().map_or(0, |p| p.rejected_data_points)
    }
}

#[cfg(test)]
mod tests {
    use tally_core::otlp::{
        common::v1::{AnyValue, any_value::Value},
        metrics::v1::{
            ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, NumberDataPoint,
            Sum, Summary, SummaryDataPoint,
        },
        trace::v1::Span,
    };

    use super::*;

    fn tag(i: usize) -> Vec<KeyValue> {
        vec![KeyValue {
            key: "k".into(),
            value: Some(AnyValue { value: Some(Value::IntValue((i % 3) as i64)) }),
            ..Default::default()
        }]
    }

    /// Routes by the `k` attribute; refuses invalid items.
    fn route(attrs: Option<&[KeyValue]>) -> Route<i64> {
        match attrs.ok_or(INVALID_ID)?.first().and_then(|kv| kv.value.as_ref()?.value.clone()) {
            Some(Value::IntValue(k)) => Ok(k),
            _ => Err("none"),
        }
    }

    #[test]
    fn partitioning_spans_keeps_every_span_once_under_its_route() {
        let spans = |scope: usize| -> Vec<Span> {
            (0..10)
                .map(|i| Span {
                    trace_id: vec![1; 16],
                    span_id: if i == 7 { vec![] } else { vec![(scope * 10 + i + 1) as u8; 8] },
                    attributes: tag(i),
                    ..Default::default()
                })
                .collect()
        };
        let res = ResourceSpans {
            scope_spans: (0..3).map(|s| ScopeSpans { spans: spans(s), ..Default::default() }).collect(),
            ..Default::default()
        };
        assert_eq!(Traces::count_items(&res), 30);
        assert!(!Traces::all_items_valid(&res));
        let parts = Traces::partition(res, &mut route);
        assert_eq!(
            parts
                .iter()
                .map(|(_, r, n)| {
                    assert_eq!(Traces::count_items(r), *n);
                    n
                })
                .sum::<u64>(),
            30
        );
        let of = |k: Route<i64>| parts.iter().find(|(r, _, _)| *r == k).map_or(0, |(_, _, n)| *n);
        // i % 3 over 0..10 is 4×0, 3×1, 3×2 per scope; span 7 (k = 1) is invalid.
        assert_eq!((of(Ok(0)), of(Ok(1)), of(Ok(2)), of(Err(INVALID_ID))), (12, 6, 9, 3));
        // Every span of a part carries that part's route.
        for (k, r, _) in &parts {
            for span in r.scope_spans.iter().flat_map(|s| &s.spans) {
                let valid = span.span_id.len() == 8;
                assert_eq!(route(valid.then_some(&span.attributes)), *k);
            }
        }
    }

    #[test]
    fn partitioning_metrics_keeps_every_point_and_the_metric_type() {
        let n = 6;
        let number = |i| NumberDataPoint { attributes: tag(i), ..Default::default() };
        let metrics = vec![
            Data::Gauge(Gauge { data_points: (0..n).map(number).collect() }),
            Data::Sum(Sum {
                data_points: (0..n).map(number).collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
            Data::Histogram(Histogram {
                data_points: (0..n).map(|i| HistogramDataPoint { attributes: tag(i), ..Default::default() }).collect(),
                aggregation_temporality: 1,
            }),
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: (0..n)
                    .map(|i| ExponentialHistogramDataPoint { attributes: tag(i), ..Default::default() })
                    .collect(),
                aggregation_temporality: 1,
            }),
            Data::Summary(Summary {
                data_points: (0..n).map(|i| SummaryDataPoint { attributes: tag(i), ..Default::default() }).collect(),
            }),
        ];
        let res = ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: metrics
                    .into_iter()
                    .enumerate()
                    .map(|(i, data)| Metric { name: format!("m{i}"), data: Some(data), ..Default::default() })
                    .chain([Metric { name: "empty".into(), data: None, ..Default::default() }])
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(Metrics::count_items(&res), 30);
        let parts = Metrics::partition(res, &mut route);
        assert_eq!(parts.iter().map(|(_, _, n)| n).sum::<u64>(), 30);
        for (k, r, n) in &parts {
            assert_eq!(Metrics::count_items(r), *n);
            let ms = &r.scope_metrics[0].metrics;
            if *k == Err("none") {
                assert_eq!((ms.len(), *n), (1, 0)); // the data-less metric
                continue;
            }
            // Each route gets all five metrics, with their type and temporality.
            assert_eq!(ms.len(), 5);
            assert!(matches!(&ms[1].data, Some(Data::Sum(s)) if s.is_monotonic && s.aggregation_temporality == 2));
            assert_eq!(*n, 10);
        }
    }
}

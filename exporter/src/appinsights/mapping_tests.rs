//! Mapper behaviour the golden capture does not cover: sampling, tenants,
//! options, edge cases of each signal.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use tally_core::{
    TenantId,
    otlp::{
        common::v1::{AnyValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        metrics::v1::{
            AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
            ScopeMetrics, Sum, metric::Data as Kind, number_data_point::Value as Num,
        },
        resource::v1::Resource,
        trace::v1::{
            ResourceSpans, ScopeSpans, Span,
            span::{Event, Link, SpanKind},
        },
    },
};

use super::{Data, Envelope, Mapper, MapperConfig, envelope::MetricPoint};

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}
fn s(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}
fn i(k: &str, v: i64) -> KeyValue {
    kv(k, Value::IntValue(v))
}
fn resource() -> Option<Resource> {
    Some(Resource { attributes: vec![s("service.name", "api"), s("tenant.id", "spoofed")], ..Default::default() })
}
fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}
fn mapper() -> Mapper {
    Mapper::new(MapperConfig::new("ik"))
}

fn span(kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        name: "op".into(),
        kind: kind as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_250_000_500,
        attributes: attrs,
        ..Default::default()
    }
}

fn map_spans(m: &mut Mapper, t: &str, spans: Vec<Span>) -> Vec<Envelope> {
    let rs = ResourceSpans {
        resource: resource(),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    };
    let mut out = Vec::new();
    m.spans(&tenant(t), &rs, &mut out);
    out
}

fn map_logs(m: &mut Mapper, records: Vec<LogRecord>) -> Vec<Envelope> {
    let rl = ResourceLogs {
        resource: resource(),
        scope_logs: vec![ScopeLogs {
            scope: Some(InstrumentationScope { name: "app.log".into(), ..Default::default() }),
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Vec::new();
    m.logs(&tenant("acme"), &rl, &mut out);
    out
}

fn map_metrics(m: &mut Mapper, t: &str, metrics: Vec<Metric>) -> Vec<MetricPoint> {
    let rm = ResourceMetrics {
        resource: resource(),
        scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
        ..Default::default()
    };
    let mut out = Vec::new();
    m.metrics(&tenant(t), &rm, &mut out);
    out.into_iter()
        .map(|e| match e.data {
            Data::MetricData(mut d) => {
                assert!(e.sample_rate.is_none(), "metrics are never sampled");
                d.metrics.remove(0)
            }
            other => panic!("not a metric: {other:?}"),
        })
        .collect()
}

fn point(start: u64, time: u64, v: i64) -> NumberDataPoint {
    NumberDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(Num::AsInt(v)),
        ..Default::default()
    }
}
fn counter(points: Vec<NumberDataPoint>, temporality: AggregationTemporality, monotonic: bool) -> Metric {
    Metric {
        name: "c".into(),
        data: Some(Kind::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

#[test]
fn the_resolved_tenant_wins_over_attributes() {
    let out = map_spans(&mut mapper(), "acme", vec![span(SpanKind::Internal, vec![s("tenant.id", "other")])]);
    assert_eq!(&out[0].tags["ai.user.accountId"], "acme");
    let Data::RemoteDependencyData(d) = &out[0].data else { panic!() };
    assert_eq!(d.properties["tenant.id"], "acme");
    assert_eq!(d.duration, "0.00:00:00.250001"); // µs, rounded
}

#[test]
fn sampled_items_carry_the_rate_and_untraced_logs_do_not() {
    let mut m = mapper();
    m.set_sample_rate(Some(25.0));
    let mut sp = span(SpanKind::Server, vec![]);
    sp.events = vec![
        Event { name: "exception".into(), attributes: vec![s("exception.type", "E")], ..Default::default() },
        Event { name: "note".into(), ..Default::default() },
    ];
    let out = map_spans(&mut m, "acme", vec![sp]);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|e| e.sample_rate == Some(25.0)));
    let traced = LogRecord { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() };
    let logs = map_logs(&mut m, vec![traced, LogRecord::default()]);
    assert_eq!(logs[0].sample_rate, Some(25.0));
    assert_eq!(logs[1].sample_rate, None);
    assert!(logs[1].tags.get("ai.operation.id").is_none());
    m.set_sample_rate(Some(100.0));
    assert!(map_spans(&mut m, "acme", vec![span(SpanKind::Client, vec![])])[0].sample_rate.is_none());
}

#[test]
fn span_events_can_be_left_out_but_exceptions_stay() {
    let mut config = MapperConfig::new("ik");
    config.span_events_as_messages = false;
    let mut sp = span(SpanKind::Client, vec![]);
    sp.events = vec![
        Event { name: "grpc.message".into(), ..Default::default() },
        Event { name: "exception".into(), attributes: vec![s("exception.message", "m")], ..Default::default() },
    ];
    let out = map_spans(&mut Mapper::new(config), "acme", vec![sp]);
    assert_eq!(
        out.iter().map(|e| e.name).collect::<Vec<_>>(),
        ["Microsoft.ApplicationInsights.RemoteDependency", "Microsoft.ApplicationInsights.Exception"]
    );
    let Data::ExceptionData(x) = &out[1].data else { panic!() };
    assert_eq!((x.exceptions[0].type_name.as_str(), x.exceptions[0].message.as_str()), ("Exception", "m"));
    assert_eq!((x.exceptions[0].has_full_stack, &x.exceptions[0].stack), (false, &None));
}

#[test]
fn request_success_follows_the_docs() {
    let code = |c: Option<i64>, error: bool| {
        let mut attrs = vec![s("http.request.method", "GET"), s("url.full", "https://h/p")];
        attrs.extend(c.map(|c| i("http.response.status_code", c)));
        let mut sp = span(SpanKind::Server, attrs);
        if error {
            sp.status = Some(tally_core::otlp::trace::v1::Status { code: 2, ..Default::default() });
        }
        let Data::RequestData(r) = &map_spans(&mut mapper(), "acme", vec![sp])[0].data else { panic!() };
        (r.response_code.clone(), r.success, r.name.clone())
    };
    assert_eq!(code(Some(200), false), ("200".into(), true, "GET /p".into()));
    assert_eq!(code(Some(401), false), ("401".into(), true, "GET /p".into()));
    assert!(!code(Some(404), false).1);
    assert!(!code(Some(503), false).1);
    assert!(!code(Some(200), true).1);
    assert_eq!(code(None, false), ("0".into(), true, "GET /p".into()));
}

#[test]
fn dependencies_by_kind_and_links() {
    let mut sp = span(
        SpanKind::Client,
        vec![
            s("db.system", "mssql"),
            s("db.statement", "SELECT 1"),
            s("server.address", "sql"),
            i("server.port", 1433),
        ],
    );
    sp.links = vec![Link { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() }];
    let producer =
        span(SpanKind::Producer, vec![s("messaging.system", "servicebus"), s("messaging.destination.name", "jobs")]);
    let plain = span(SpanKind::Client, vec![s("peer.service", "legacy"), s("gen_ai.provider.name", "anthropic")]);
    let out = map_spans(&mut mapper(), "acme", vec![sp, producer, plain]);
    let dep = |n: usize| match &out[n].data {
        Data::RemoteDependencyData(d) => d.clone(),
        _ => panic!(),
    };
    assert_eq!(
        (dep(0).dependency_type.unwrap(), dep(0).target.unwrap(), dep(0).data.unwrap()),
        ("SQL".into(), "sql".into(), "SELECT 1".into())
    );
    assert_eq!(
        dep(0).properties["_MS.links"],
        format!(r#"[{{"id":"{}","operation_Id":"{}"}}]"#, "02".repeat(8), "01".repeat(16))
    );
    assert_eq!(
        (dep(1).dependency_type.unwrap(), dep(1).target.unwrap()),
        ("Queue Message | servicebus".into(), "jobs".into())
    );
    assert_eq!(
        (dep(2).dependency_type.unwrap(), dep(2).target.unwrap()),
        ("GenAI | anthropic".into(), "legacy".into())
    );
}

#[test]
fn long_fields_are_cut_to_the_limits() {
    let mut sp = span(SpanKind::Internal, vec![s(&"k".repeat(151), "x"), s("big", &"é".repeat(9000))]);
    sp.name = "n".repeat(2000);
    let out = map_spans(&mut mapper(), "acme", vec![sp]);
    let Data::RemoteDependencyData(d) = &out[0].data else { panic!() };
    assert_eq!(d.name.len(), 1024);
    assert_eq!(out[0].tags["ai.operation.name"].len(), 1024);
    assert_eq!(d.properties["big"].chars().count(), 8192);
    assert!(!d.properties.contains_key(&"k".repeat(151)));
}

#[test]
fn log_kinds_and_bodies() {
    let body = |v: Value| Some(AnyValue { value: Some(v) });
    let map_body = Value::KvlistValue(KeyValueList { values: vec![i("n", 1)] });
    let out = map_logs(
        &mut mapper(),
        vec![
            LogRecord { body: body(Value::StringValue("  ".into())), severity_number: 13, ..Default::default() },
            LogRecord { body: body(map_body), ..Default::default() },
            LogRecord {
                attributes: vec![s("microsoft.custom_event.name", "signup"), s("plan", "pro")],
                ..Default::default()
            },
            LogRecord {
                observed_time_unix_nano: 7_000,
                attributes: vec![s("exception.type", "E"), s("logger_name", "mine")],
                ..Default::default()
            },
        ],
    );
    let Data::MessageData(m) = &out[0].data else { panic!() };
    assert_eq!((m.message.as_str(), m.severity_level), ("n/a", Some(2)));
    assert_eq!(m.properties["logger_name"], "app.log");
    let Data::MessageData(m) = &out[1].data else { panic!() };
    assert_eq!(m.message, r#"{"n":1}"#);
    let Data::EventData(e) = &out[2].data else { panic!() };
    assert_eq!((e.name.as_str(), e.properties["plan"].as_str()), ("signup", "pro"));
    assert!(!e.properties.contains_key("microsoft.custom_event.name"));
    let Data::ExceptionData(x) = &out[3].data else { panic!() };
    assert_eq!((x.exceptions[0].message.as_str(), x.properties["logger_name"].as_str()), ("Exception", "mine"));
    assert_eq!(out[3].time.0, 7_000, "observed time when the record has none");
}

#[test]
fn metric_temporalities() {
    let mut m = mapper();
    let values = |pts: &[MetricPoint]| pts.iter().map(|p| p.value).collect::<Vec<_>>();
    // Delta and non-monotonic sums pass through; a cumulative counter becomes deltas.
    let delta = counter(vec![point(0, 10, 4), point(0, 20, 4)], AggregationTemporality::Delta, true);
    assert_eq!(values(&map_metrics(&mut m, "acme", vec![delta])), [4.0, 4.0]);
    let updown = counter(vec![point(1, 10, 4), point(1, 20, 2)], AggregationTemporality::Cumulative, false);
    assert_eq!(values(&map_metrics(&mut m, "acme", vec![updown])), [4.0, 2.0]);
    let cum =
        counter(vec![point(1, 10, 4), point(1, 20, 4), point(1, 30, 9)], AggregationTemporality::Cumulative, true);
    assert_eq!(values(&map_metrics(&mut m, "acme", vec![cum.clone()])), [4.0, 5.0]); // the zero change sends nothing
    // Another tenant's identical series is its own series.
    assert_eq!(values(&map_metrics(&mut m, "globex", vec![cum])), [4.0, 5.0]);
    assert_eq!(m.series_len(), 2);
    // Gauges: each point; "no recorded value" points are skipped.
    let mut empty = point(0, 30, 0);
    empty.flags = 1;
    let gauge = Metric {
        name: "g".into(),
        data: Some(Kind::Gauge(Gauge { data_points: vec![point(0, 10, 7), empty] })),
        ..Default::default()
    };
    assert_eq!(values(&map_metrics(&mut m, "acme", vec![gauge])), [7.0]);
    // A delta histogram with no measurements sends nothing.
    let hist = |count, sum| HistogramDataPoint {
        time_unix_nano: 10,
        count,
        sum: Some(sum),
        min: Some(1.0),
        max: Some(2.0),
        ..Default::default()
    };
    let h = Metric {
        name: "h".into(),
        data: Some(Kind::Histogram(Histogram {
            data_points: vec![hist(0, 0.0), hist(2, 3.0)],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    };
    let pts = map_metrics(&mut m, "acme", vec![h]);
    assert_eq!(
        pts,
        [MetricPoint { ns: None, name: "h".into(), value: 3.0, count: Some(2), min: Some(1.0), max: Some(2.0) }]
    );
}

#[test]
fn a_restart_of_tally_does_not_resend_lifetime_totals() {
    let mut config = MapperConfig::new("ik");
    config.count_series_started_after_ns = 100;
    config.max_series = 1;
    let mut m = Mapper::new(config);
    let c = |name: &str, start, time, v| {
        let mut m = counter(vec![point(start, time, v)], AggregationTemporality::Cumulative, true);
        m.name = name.into();
        m
    };
    assert!(map_metrics(&mut m, "acme", vec![c("a", 50, 110, 1000)]).is_empty()); // baseline
    assert_eq!(map_metrics(&mut m, "acme", vec![c("a", 50, 120, 1004)])[0].value, 4.0);
    assert_eq!(map_metrics(&mut m, "acme", vec![c("b", 150, 160, 3)])[0].value, 3.0); // evicts "a"
    assert!(map_metrics(&mut m, "acme", vec![c("a", 50, 130, 1010)]).is_empty()); // baseline again
    assert_eq!(m.series_len(), 1);
}

//! Golden test: tally's [`Mapper`] against Microsoft's exporter.
//!
//! tests/data/appinsights/reference_capture.json holds what the official
//! Python exporter (1.0.0b58) sent for a fixed set of spans, logs and
//! metrics, and the OTLP protobuf the same signals produced. Here the OTLP
//! is mapped by tally and compared with the captured envelopes field by
//! field — name, baseType, every tag, every baseData field — after
//!
//! 1. normalising only what is volatile or formatting: time and duration
//!    precision (compared at µs and ms), `ai.internal.sdkVersion`, the
//!    host-derived `ai.device.*`, metric times (collection times, which
//!    differ between the two readers), and JSON number spelling (`5` vs
//!    `5.0`);
//! 2. applying [`differences`], tally's deliberate differences, each with
//!    its reason. Each entry states the captured value too, and the test
//!    fails if the capture does not say that (or an entry goes unused), so
//!    the table cannot drift from the data.
//!
//! Envelopes are matched by span id (spans), span id + baseType (span
//! events), log body (logs) and metric name + export (metrics). What the
//! official exporter sends and tally deliberately does not is in
//! [`NOT_PRODUCED`].

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use prost::Message;
use serde_json::{Value, json};
use tally_core::{
    TenantId,
    otlp::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
};

use super::{ConnectionString, Envelope, EnvelopeTime, LOG_BODY_PROPERTY, Mapper, MapperConfig, SDK_VERSION};

const CAPTURE: &str = include_str!("../../../tests/data/appinsights/reference_capture.json");

/// Envelopes the official exporter sends that tally does not produce.
const NOT_PRODUCED: &[(&str, &str)] = &[(
    "metric _OTELRESOURCE_",
    "a per-batch metric (value 0) carrying all resource attributes; tally puts the one that matters \
     (tenant.id) on every item instead, and role/instance/version are tags already (its per-batch cost \
     is a known complaint: ApplicationInsights-dotnet#3192)",
)];

/// One deliberate difference: at `path` (a JSON pointer into the envelope)
/// the official exporter has `python` and tally has `tally` (`None` =
/// absent).
struct Difference {
    item: &'static str,
    path: &'static str,
    python: Option<Value>,
    tally: Option<Value>,
    why: &'static str,
}

/// Applied to every envelope: the tenant on every item.
fn global_differences() -> Vec<Difference> {
    let why = "every item carries its tenant (Python copies no resource attribute into items)";
    vec![
        Difference { item: "*", path: "/tags/ai.user.accountId", python: None, tally: Some(json!("acme")), why },
        Difference {
            item: "*",
            path: "/data/baseData/properties/tenant.id",
            python: None,
            tally: Some(json!("acme")),
            why,
        },
    ]
}

/// tally's deliberate differences, per item (README.md in this folder
/// lists them with the bug each fixes).
fn differences() -> Vec<Difference> {
    let d =
        |item, path, python: Option<Value>, tally: Option<Value>, why| Difference { item, path, python, tally, why };
    let zero_ids = "no all-zero operation ids on logs without trace context: they would join all such logs into one fake operation";
    vec![
        d(
            "span 0cd58cc6f137bdc5",
            "/data/baseData/type",
            Some(json!("rpc.system")),
            Some(json!("grpc")),
            "RPC type is the value of rpc.system, not the attribute's name",
        ),
        d(
            "span 0cd58cc6f137bdc5",
            "/data/baseData/target",
            Some(json!("grpc")),
            Some(json!("inventory:50051")),
            "RPC target is the server (server.address:port), not the RPC system",
        ),
        d(
            "span b7b3ff7b623dd8df",
            "/data/baseData/target",
            Some(json!("api.openai.com:None")),
            Some(json!("api.openai.com")),
            "no server.port means no port, not ':None'",
        ),
        d(
            "span b7b3ff7b623dd8df",
            "/data/baseData/success",
            Some(json!(true)),
            Some(json!(false)),
            "an HTTP dependency answered 429 failed",
        ),
        d(
            "span 05840f4ce50ee168",
            "/data/baseData/success",
            Some(json!(true)),
            Some(json!(false)),
            "an HTTP dependency answered 404 failed (OTel: 4xx on a CLIENT span is an error)",
        ),
        d(
            "span e52fec142d752a6a",
            "/data/baseData/target",
            Some(json!("rabbitmq")),
            Some(json!("orders")),
            "messaging.destination.name (current semconv) is read",
        ),
        d(
            "span 43c243ee094546ce",
            "/data/baseData/source",
            None,
            Some(json!("orders")),
            "messaging.destination.name (current semconv) is read",
        ),
        d(
            "span 1f76663f8330df68",
            "/data/baseData/properties/app.tags",
            Some(json!("('a', 'b')")),
            Some(json!(r#"["a","b"]"#)),
            "arrays as JSON, not Python tuple reprs",
        ),
        d(
            "span 1f76663f8330df68",
            "/data/baseData/properties/app.cached",
            Some(json!("True")),
            Some(json!("true")),
            "booleans as true/false, not Python reprs",
        ),
        d(
            "span 1aa5148c01a8c3f5",
            "/data/baseData/url",
            Some(json!("https://pizza.example.com:443/orders/42?expand=lines")),
            Some(json!("https://pizza.example.com/orders/42?expand=lines")),
            "the scheme's default port is left out of a built URL",
        ),
        d(
            "span 5e97f5f843c901ee",
            "/data/baseData/url",
            Some(json!("https://pizza.example.com:443/checkout")),
            Some(json!("https://pizza.example.com/checkout")),
            "the scheme's default port is left out of a built URL",
        ),
        d(
            "span 44d09f3d38c20ebb",
            "/data/baseData/success",
            Some(json!(true)),
            Some(json!(false)),
            "a request answered 503 failed (docs: success is code < 400 or 401), whatever the span status",
        ),
        d(
            "event 1f76663f8330df68 MessageData",
            "/tags/ai.operation.name",
            None,
            Some(json!("compute-total")),
            "span events carry their span's operation name",
        ),
        d(
            "event 5e97f5f843c901ee ExceptionData",
            "/tags/ai.operation.name",
            None,
            Some(json!("POST /checkout")),
            "span events carry their span's operation name, so exceptions group with their request",
        ),
        d("log inventory sync finished", "/tags/ai.operation.id", Some(json!("0".repeat(32))), None, zero_ids),
        d("log inventory sync finished", "/tags/ai.operation.parentId", Some(json!("0".repeat(16))), None, zero_ids),
        d("log inventory sync failed", "/tags/ai.operation.id", Some(json!("0".repeat(32))), None, zero_ids),
        d("log inventory sync failed", "/tags/ai.operation.parentId", Some(json!("0".repeat(16))), None, zero_ids),
        d("log card declined", "/tags/ai.operation.id", Some(json!("0".repeat(32))), None, zero_ids),
        d("log card declined", "/tags/ai.operation.parentId", Some(json!("0".repeat(16))), None, zero_ids),
        d(
            "log checkout failed for tenant acme",
            "/data/baseData/exceptions/0/message",
            Some(json!("checkout failed for tenant acme")),
            Some(json!("boom")),
            "an exception's message is exception.message; the log body moves to a property",
        ),
        d(
            "log checkout failed for tenant acme",
            "/data/baseData/properties/log.body",
            None,
            Some(json!("checkout failed for tenant acme")),
            "the log body of an exception log is kept",
        ),
        d(
            "log card declined",
            "/data/baseData/exceptions/0/message",
            Some(json!("card declined")),
            Some(json!("declined")),
            "an exception's message is exception.message; the log body moves to a property",
        ),
        d(
            "log card declined",
            "/data/baseData/properties/log.body",
            None,
            Some(json!("card declined")),
            "the log body of an exception log is kept",
        ),
        d(
            "log card declined",
            "/data/baseData/exceptions/0/stack",
            Some(json!("None")),
            None,
            "no stack trace is no stack, not the text 'None'",
        ),
        d(
            "metric 1 llm.tokens",
            "/data/baseData/metrics/0/value",
            Some(json!(0.0)),
            Some(json!(1270.0)),
            "exponential histograms send their real sum (Python sends 0)",
        ),
        d(
            "metric 1 llm.tokens",
            "/data/baseData/metrics/0/count",
            Some(json!(1.0)),
            Some(json!(3.0)),
            "exponential histograms send their real count",
        ),
        d(
            "metric 1 llm.tokens",
            "/data/baseData/metrics/0/min",
            None,
            Some(json!(120.0)),
            "exponential histograms send their min",
        ),
        d(
            "metric 1 llm.tokens",
            "/data/baseData/metrics/0/max",
            None,
            Some(json!(900.0)),
            "exponential histograms send their max",
        ),
    ]
}

fn capture() -> Value {
    serde_json::from_str(CAPTURE).expect("reference_capture.json parses")
}

fn decode<T: Message + Default>(b64: &Value) -> T {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64 text")).expect("base64");
    T::decode(bytes.as_slice()).expect("OTLP protobuf")
}

fn tenant_of(resource: Option<&tally_core::otlp::resource::v1::Resource>) -> TenantId {
    let attrs = resource.map(|r| r.attributes.as_slice()).unwrap_or_default();
    TenantId::parse(tally_core::attributes::str(attrs, "tenant.id").expect("resource has tenant.id")).expect("tenant")
}

/// tally's envelopes for the capture's OTLP, keyed like the official ones.
fn tally_envelopes(cap: &Value) -> (BTreeMap<String, Envelope>, Mapper) {
    let cs = ConnectionString::parse(cap["connection_string"].as_str().unwrap()).expect("capture's connection string");
    let mut mapper = Mapper::new(MapperConfig::new(cs.instrumentation_key));
    let mut keyed = BTreeMap::new();
    let mut put = |key: String, e: Envelope| assert!(keyed.insert(key.clone(), e).is_none(), "tally made two {key}");

    let traces: ExportTraceServiceRequest = decode(&cap["otlp"]["traces"][0]);
    let mut out = Vec::new();
    for rs in &traces.resource_spans {
        mapper.spans(&tenant_of(rs.resource.as_ref()), rs, &mut out);
    }
    for e in out {
        put(key(&e, 0), e);
    }
    let logs: ExportLogsServiceRequest = decode(&cap["otlp"]["logs"][0]);
    let mut out = Vec::new();
    for rl in &logs.resource_logs {
        mapper.logs(&tenant_of(rl.resource.as_ref()), rl, &mut out);
    }
    for e in out {
        put(key(&e, 1), e);
    }
    for (export, body) in cap["otlp"]["metrics"].as_array().unwrap().iter().enumerate() {
        let metrics: ExportMetricsServiceRequest = decode(body);
        let mut out = Vec::new();
        for rm in &metrics.resource_metrics {
            mapper.metrics(&tenant_of(rm.resource.as_ref()), rm, &mut out);
        }
        for e in out {
            put(key(&e, 2 + export), e);
        }
    }
    (keyed, mapper)
}

/// The matching key of an envelope from capture request `request` (0
/// traces, 1 logs, 2/3 metrics exports 1/2); works on both sides.
fn key(e: &Envelope, request: usize) -> String {
    let v = serde_json::to_value(e).unwrap();
    key_of(&v, request)
}

fn key_of(v: &Value, request: usize) -> String {
    let base = &v["data"]["baseData"];
    let base_type = v["data"]["baseType"].as_str().unwrap_or_default();
    match (request, base_type) {
        (0, "RequestData" | "RemoteDependencyData") => format!("span {}", base["id"].as_str().unwrap()),
        (0, "MetricData") => format!("metric {}", base["metrics"][0]["name"].as_str().unwrap()),
        (0, _) => format!("event {} {base_type}", v["tags"]["ai.operation.parentId"].as_str().unwrap()),
        (1, "ExceptionData") => {
            let body = base["properties"][LOG_BODY_PROPERTY].as_str();
            format!("log {}", body.or(base["exceptions"][0]["message"].as_str()).unwrap())
        }
        (1, _) => format!("log {}", base["message"].as_str().unwrap()),
        (n, _) => format!("metric {} {}", n - 1, base["metrics"][0]["name"].as_str().unwrap()),
    }
}

/// Normalises volatile fields and formatting (see the module docs).
fn normalise(v: &mut Value) {
    let tags = v["tags"].as_object_mut().unwrap();
    tags.retain(|k, _| k != "ai.internal.sdkVersion" && !k.starts_with("ai.device."));
    let is_metric = v["data"]["baseType"] == "MetricData";
    let time = v["time"].as_str().unwrap();
    v["time"] = if is_metric {
        json!("<collection time>")
    } else {
        json!(EnvelopeTime::parse(time).expect("time").to_rfc3339())
    };
    if let Some(d) = v["data"]["baseData"].get_mut("duration") {
        *d = json!(format!("{} ms", duration_ms(d.as_str().unwrap())));
    }
    numbers_as_floats(v);
}

/// `D.HH:MM:SS.fff…` → whole milliseconds, rounded half up (as Python).
fn duration_ms(s: &str) -> u64 {
    let (days, rest) = s.split_once('.').unwrap();
    let (hms, frac) = rest.split_once('.').unwrap();
    let parts: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let secs = days.parse::<u64>().unwrap() * 86_400 + parts[0] * 3600 + parts[1] * 60 + parts[2];
    let ns = format!("{frac:0<9}")[..9].parse::<u64>().unwrap();
    secs * 1000 + (ns + 500_000) / 1_000_000
}

fn numbers_as_floats(v: &mut Value) {
    match v {
        Value::Number(n) => *v = json!(n.as_f64().unwrap()),
        Value::Array(a) => a.iter_mut().for_each(numbers_as_floats),
        Value::Object(o) => o.values_mut().for_each(numbers_as_floats),
        _ => {}
    }
}

/// The parent object and last key of a JSON pointer (keys here hold no `/`).
fn parent<'a>(v: &'a mut Value, path: &str) -> (&'a mut Value, String) {
    let (dir, last) = path.rsplit_once('/').unwrap();
    (v.pointer_mut(dir).unwrap_or_else(|| panic!("no {dir}")), last.to_owned())
}

fn set(v: &mut Value, path: &str, to: Option<Value>) {
    let (p, last) = parent(v, path);
    match (p, to) {
        (Value::Object(o), Some(t)) => {
            o.insert(last, t);
        }
        (Value::Object(o), None) => {
            o.remove(&last);
        }
        (Value::Array(a), Some(t)) => a[last.parse::<usize>().unwrap()] = t,
        _ => panic!("cannot set {path}"),
    }
}

/// Every leaf where `a` and `b` differ, as `path: python … / tally …`.
fn diff(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(&format!("{path}/{k}"), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}/{i}"), Some(p), Some(q), out);
            }
        }
        (a, b) if a != b => {
            let show = |v: Option<&Value>| v.map_or("(absent)".to_owned(), Value::to_string);
            out.push(format!("  {path}:\n      official: {}\n      tally:    {}", show(a), show(b)));
        }
        _ => {}
    }
}

#[test]
fn golden_envelopes_match_field_by_field() {
    let cap = capture();
    let (mut tally, _) = tally_envelopes(&cap);
    let specific = differences();
    let global = global_differences();
    let mut used = BTreeSet::new();
    let mut failures = Vec::new();
    let not_produced: BTreeSet<&str> = NOT_PRODUCED.iter().map(|(k, _)| *k).collect();

    for (i, captured) in cap["envelopes"].as_array().unwrap().iter().enumerate() {
        let request = captured["request"].as_u64().unwrap() as usize;
        let mut official = captured["envelope"].clone();
        let k = key_of(&official, request);
        if not_produced.contains(k.as_str()) {
            used.insert(format!("not produced {k}"));
            continue;
        }
        let Some(mine) = tally.remove(&k) else {
            failures.push(format!("#{i} {k}: the official exporter sent it, tally did not"));
            continue;
        };
        normalise(&mut official);
        let mut mine = serde_json::to_value(&mine).unwrap();
        normalise(&mut mine);
        for (n, d) in specific
            .iter()
            .enumerate()
            .filter(|(_, d)| d.item == k)
            .chain(global.iter().enumerate().map(|(n, d)| (n + 10_000, d)))
        {
            let expected = d.python.clone().map(|mut v| {
                numbers_as_floats(&mut v);
                v
            });
            let (p, last) = parent(&mut official, d.path);
            let now = p.get(last.as_str()).or_else(|| last.parse::<usize>().ok().and_then(|i| p.get(i))).cloned();
            if now != expected {
                failures.push(format!(
                    "#{i} {k}: difference table says official {} = {:?}, capture has {:?} ({})",
                    d.path, expected, now, d.why
                ));
            }
            let mut to = d.tally.clone();
            if let Some(v) = &mut to {
                numbers_as_floats(v);
            }
            set(&mut official, d.path, to);
            used.insert(n.to_string());
        }
        let mut lines = Vec::new();
        diff("", Some(&official), Some(&mine), &mut lines);
        if !lines.is_empty() {
            failures
                .push(format!("#{i} {k} differs beyond the table of deliberate differences:\n{}", lines.join("\n")));
        }
    }
    for k in tally.keys() {
        failures.push(format!("{k}: tally sent it, the official exporter did not"));
    }
    for (n, d) in specific.iter().enumerate() {
        if !used.contains(&n.to_string()) {
            failures.push(format!("difference for {} {} matched no envelope", d.item, d.path));
        }
    }
    for (k, _) in NOT_PRODUCED {
        if !used.contains(&format!("not produced {k}")) {
            failures.push(format!("{k} is listed as not produced but the capture has no such envelope"));
        }
    }
    assert!(failures.is_empty(), "tally vs the official exporter:\n\n{}\n", failures.join("\n\n"));
}

#[test]
fn cumulative_counter_becomes_the_officials_deltas() {
    let (tally, mapper) = tally_envelopes(&capture());
    let value = |k: &str| serde_json::to_value(&tally[k]).unwrap()["data"]["baseData"]["metrics"][0]["value"].clone();
    // OTLP says 5 then 8 (cumulative); the official exporter sent 5 and 3.
    assert_eq!(value("metric 1 orders.placed"), json!(5.0));
    assert_eq!(value("metric 2 orders.placed"), json!(3.0));
    // Up-down counters and gauges pass through as they are.
    assert_eq!(value("metric 2 jobs.active"), json!(2.0));
    assert_eq!(value("metric 2 queue.depth"), json!(42.0));
    // Histograms without new measurements send nothing in export 2.
    assert!(!tally.contains_key("metric 2 llm.request.duration") && !tally.contains_key("metric 2 llm.tokens"));
    assert_eq!(mapper.series_len(), 3); // orders.placed, llm.request.duration, llm.tokens
}

#[test]
fn times_and_versions_that_the_normalisation_hides() {
    let cap = capture();
    let (tally, _) = tally_envelopes(&cap);
    let metrics: ExportMetricsServiceRequest = decode(&cap["otlp"]["metrics"][1]);
    let point_time = metrics.resource_metrics[0].scope_metrics[0].metrics[0].data.as_ref().map(|d| match d {
        tally_core::otlp::metrics::v1::metric::Data::Sum(s) => s.data_points[0].time_unix_nano,
        _ => 0,
    });
    let e = &tally["metric 2 orders.placed"];
    assert_eq!(Some(e.time.0 as u64), point_time, "a metric item's time is its point's time");
    assert_eq!(tally["span 1aa5148c01a8c3f5"].time.to_rfc3339(), "2026-01-01T12:00:00.000000Z");
    let Some(super::Data::RequestData(r)) = tally.get("span 1aa5148c01a8c3f5").map(|e| &e.data) else { panic!() };
    assert_eq!(r.duration, "0.00:00:00.250000");
    assert!(tally.values().all(|e| &e.tags["ai.internal.sdkVersion"] == SDK_VERSION));
    assert!(tally.values().all(|e| !e.tags.iter().any(|(k, _)| k.starts_with("ai.device."))));
    assert!(tally.values().all(|e| e.sample_rate.is_none()));
    let cs = ConnectionString::parse(cap["connection_string"].as_str().unwrap()).unwrap();
    assert!(cs.track_url().ends_with(cap["requests"][0]["path"].as_str().unwrap()));
}

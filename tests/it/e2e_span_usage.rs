//! Usage from spans (`span_attribute` meters): billed exactly once per span
//! across resends and transports, sampled traces not billed unless scaled,
//! and a real Python SDK client billed for its token attributes.

use serde_json::Value;
use tally_core::otlp::{collector::trace::v1::ExportTraceServiceRequest, common::v1::KeyValue};

use crate::support::*;

const METERS: &str = r#"
[[meters]]
name = "input_tokens"
aggregation = "sum"
span_attribute = "gen_ai.usage.input_tokens"
group_by = { model = "gen_ai.request.model" }

[[meters]]
name = "output_tokens"
aggregation = "sum"
span_attribute = "gen_ai.usage.output_tokens"

[[meters]]
name = "chat_calls"
aggregation = "count"
span_attribute = "gen_ai.usage.output_tokens"
span_name = "chat"

[[meters]]
name = "output_tokens_scaled"
aggregation = "sum"
span_attribute = "gen_ai.usage.output_tokens"
scale_sampled = true
"#;

fn int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(tally_core::otlp::common::v1::AnyValue {
            value: Some(tally_core::otlp::common::v1::any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// Five spans of tenant acme: three plain chats, one chat of a trace sampled
/// at 50 % (tracestate), one span sampled at 25 % (attribute).
fn llm_request() -> ExportTraceServiceRequest {
    let mut req = traces(vec![kv("tenant.id", "acme")], 5, vec![]);
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    for span in spans.iter_mut().take(3) {
        span.name = "chat".into();
        span.attributes = vec![
            int("gen_ai.usage.input_tokens", 100),
            int("gen_ai.usage.output_tokens", 10),
            kv("gen_ai.request.model", "m1"),
        ];
    }
    spans[3].name = "chat".into();
    spans[3].trace_state = "ot=th:8".into();
    spans[3].attributes = vec![int("gen_ai.usage.input_tokens", 1000), int("gen_ai.usage.output_tokens", 100)];
    spans[4].name = "embed".into();
    spans[4].attributes = vec![
        int("gen_ai.usage.output_tokens", 40),
        KeyValue {
            key: "sampling.probability".into(),
            value: Some(tally_core::otlp::common::v1::AnyValue {
                value: Some(tally_core::otlp::common::v1::any_value::Value::DoubleValue(0.25)),
            }),
            ..Default::default()
        },
    ];
    req
}

async fn spans_bill_once_and_skip_sampled(db: Db) {
    let _metrics = METRICS_LOCK.lock().await;
    let s = TestServer::start(db, METERS).await;
    let before = s.metrics().await;
    let body = encode(&llm_request());
    // Over HTTP, resent over HTTP, and once more over gRPC: same span ids.
    for _ in 0..2 {
        post_otlp_http(&s, "/v1/traces", body.clone()).await;
    }
    let mut grpc = grpc_client(&s.grpc_url()).await;
    assert_eq!(grpc_export_traces(&mut grpc, body, &[]).await.unwrap().partial_success, None);

    assert_eq!(s.usage_total("acme", "input_tokens").await, 300.0);
    assert_eq!(s.usage_total("acme", "output_tokens").await, 30.0);
    assert_eq!(s.usage_total("acme", "chat_calls").await, 3.0);
    assert_eq!(s.usage_total("acme", "output_tokens_scaled").await, 30.0 + 100.0 / 0.5 + 40.0 / 0.25);
    let by_model: Value = s.get_json("/v1/usage?tenant=acme&meter=input_tokens&from=2020-01-01T00:00:00Z&to=2030-01-01T00:00:00Z&window=month&group_by=model", None).await;
    assert_eq!(by_model["series"][0]["group"]["model"], "m1", "{by_model}");

    // Per send, 4 (meter, span) pairs were skipped as sampled: input 1,
    // output 2, chat_calls 1 (the 25 % span is not named chat); the scaled
    // meter skips none.
    let after = s.metrics().await;
    let skipped = metric_value(&after, "tally_usage_skipped_total{reason=\"sampled\"}")
        - metric_value(&before, "tally_usage_skipped_total{reason=\"sampled\"}");
    assert_eq!(skipped, 3.0 * 4.0, "{after}");
    // Telemetry itself is all accepted (usage is derived, not a filter).
    assert_eq!(s.wait_counts("acme", (15, 0, 0)).await, (15, 0, 0));
    s.stop().await;
}

#[tokio::test]
async fn spans_bill_once_and_skip_sampled_on_sqlite() {
    spans_bill_once_and_skip_sampled(Db::Sqlite).await;
}

#[tokio::test]
async fn spans_bill_once_and_skip_sampled_on_postgres() {
    spans_bill_once_and_skip_sampled(Db::Postgres).await;
}

#[tokio::test]
async fn python_sdk_spans_are_billed_for_their_tokens() {
    let s = TestServer::start(Db::Sqlite, METERS).await;
    for protocol in ["grpc", "http/protobuf"] {
        let endpoint = if protocol == "grpc" { s.grpc_url() } else { s.http_url("") };
        otel_send(&[
            "--endpoint",
            &endpoint,
            "--protocol",
            protocol,
            "--tenant",
            "llm-app",
            "--service",
            "chat-api",
            "--spans",
            "9",
            "--logs",
            "0",
            "--metric-series",
            "0",
            "--span-attr",
            "gen_ai.usage.input_tokens=7",
            "--span-attr",
            "gen_ai.request.model=small",
        ])
        .await;
    }
    // Two runs of 9 spans (new span ids each run), 7 tokens each.
    assert_eq!(s.usage_total("llm-app", "input_tokens").await, 2.0 * 9.0 * 7.0);
    s.stop().await;
}

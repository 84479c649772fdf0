//! Application Insights end to end: the real Python OpenTelemetry SDK and a
//! gRPC client send to tally, tally forwards to the ingestion stand-in
//! (`tally-standins`, which answers as Azure does), scripted to answer 206
//! with mixed per-item codes, 429 with Retry-After, 503 and a 307; every
//! item accepted arrives exactly once and what Azure refused is not sent
//! again. Then the stand-in is down while OTLP load and usage events go on:
//! every export is answered 200, usage is recorded, the buffer stays within
//! its bound and what it held arrives once Azure is back. Per-tenant usage
//! from the ledger arrives once per minute; sampling keeps whole traces.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tally_standins::appinsights::{Behaviour, FakeIngestion, IngestionConfig};

use crate::support::*;

fn config(extra: &str) -> String {
    format!(
        r#"
        [[meters]]
        name = "tokens"
        aggregation = "sum"
        event_type = "llm.completion"
        value = "$.tokens"
        [appinsights]
        flush_interval = "100ms"
        max_batch_items = 10
        {extra}
        "#
    )
}

async fn start(ingestion: &FakeIngestion, extra: &str) -> TestServer {
    let env = vec![("APPLICATIONINSIGHTS_CONNECTION_STRING".into(), ingestion.connection_string())];
    TestServer::start_with_env(Db::Sqlite, &config(extra), env).await
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn requests_of(ingestion: &FakeIngestion, name: &str) -> Vec<Value> {
    ingestion
        .accepted()
        .into_iter()
        .map(|a| a.envelope)
        .filter(|e| e["name"].as_str().is_some_and(|n| n.ends_with(name)))
        .collect()
}

#[tokio::test]
async fn every_accepted_item_arrives_once_through_partial_throttled_and_failed_answers() {
    let ingestion = FakeIngestion::start(IngestionConfig::default()).await.unwrap();
    ingestion.push(Behaviour::Partial(vec![(0, 500), (1, 400), (2, 429)]));
    ingestion.push(Behaviour::Throttle { retry_after: Some(1) });
    ingestion.push(Behaviour::Status(503));
    ingestion.push(Behaviour::Redirect { status: 307, base: ingestion.url().trim_end_matches('/').to_owned() });
    let s = start(&ingestion, "").await;

    // 30 SERVER spans over gRPC, in three batches of ten at tally's side.
    send_traces(&s, &spans_at("acme", "/checkout", 30, now_ms(), 20, false)).await;
    // The real SDK: spans and logs of another tenant.
    let sent = otel_send(&[
        "--endpoint",
        &s.grpc_url(),
        "--protocol",
        "grpc",
        "--tenant",
        "globex",
        "--service",
        "api",
        "--spans",
        "5",
        "--logs",
        "4",
    ])
    .await;
    assert_eq!(sent["spans"], 5, "{sent}");

    // acme: 30 requests less the one refused with 400. globex (the SDK):
    // 5 spans (requests or dependencies by kind) and 4 log messages.
    let of = |tenant: &str, names: &[&str]| {
        ingestion
            .accepted()
            .iter()
            .filter(|a| a.envelope["data"]["baseData"]["properties"]["tenant.id"] == tenant)
            .filter(|a| names.iter().any(|n| a.envelope["name"].as_str().is_some_and(|x| x.ends_with(n))))
            .count()
    };
    let spans = ["Request", "RemoteDependency"];
    wait_for("the items to arrive", 30, || {
        of("acme", &spans) >= 29 && of("globex", &spans) >= 5 && of("globex", &["Message"]) >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await; // anything sent twice would show now
    assert!(ingestion.duplicates().is_empty(), "sent twice: {:?}", ingestion.duplicates());
    assert_eq!(of("acme", &["Request"]), 29, "the one refused with 400 is not sent again");
    // (Messages: the 4 log records, and span events as Python's exporter maps them.)
    assert_eq!(of("globex", &spans), 5);
    assert!(of("globex", &["Message"]) >= 4);
    let statuses: Vec<u16> = ingestion.requests().iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..4], [206, 429, 503, 307], "{statuses:?}");
    assert!(ingestion.requests().iter().all(|r| r.gzip), "every batch gzipped");

    let m = s.metrics().await;
    assert!(metric_value(&m, "tally_appinsights_dropped_items_total{reason=\"refused\"}") >= 1.0, "{m}");
    assert!(metric_value(&m, "tally_appinsights_retried_items_total") >= 2.0);
    s.stop().await;
    ingestion.shutdown().await;
}

/// Azure down for 6 s while 8 rounds of 20 spans and a usage event go in;
/// the memory buffer holds 50 items, with or without the spool behind it.
/// Azure down for `outage` while `rounds` exports and usage events arrive,
/// spread over it.
async fn azure_down(spool: bool, outage: Duration, rounds: u32) {
    let ingestion = FakeIngestion::start(IngestionConfig::default()).await.unwrap();
    let extra = if spool { "max_buffer_items = 50" } else { "max_buffer_items = 50\nspool_max_bytes = 0" };
    let s = start(&ingestion, extra).await;
    ingestion.down_for(outage);
    let started = Instant::now();
    let pause = outage.mul_f64(0.8) / rounds;
    for round in 0..rounds {
        tokio::time::sleep(pause).await;
        // Each export answered at once, whatever Azure does.
        let t = Instant::now();
        send_traces(&s, &spans_at("acme", "/pay", 20, now_ms(), 10, false)).await;
        assert!(t.elapsed() < Duration::from_secs(2), "an export waited {:?} for Azure", t.elapsed());
        let event = json!([{"specversion": "1.0", "id": format!("u{round}"), "source": "app", "type": "llm.completion",
                            "subject": "acme", "data": {"tokens": 10}}]);
        let resp: Value = s.http.post(s.api_url("/v1/events")).json(&event).send().await.unwrap().json().await.unwrap();
        assert_eq!(resp["accepted"], 1, "{resp}");
        let m = s.metrics().await;
        assert!(metric_value(&m, "tally_appinsights_buffered_items") <= 50.0, "buffer over its bound");
    }
    assert!(started.elapsed() < outage, "the load ran while Azure was down");
    assert_eq!(s.usage_total("acme", "tokens").await, 10.0 * f64::from(rounds), "billing unaffected");
    let spans = 20 * rounds as usize;
    if spool {
        // (Counters are the process's, shared with the test without a spool:
        // judged by what arrives and what is on disk.)
        let segments = || std::fs::read_dir(s.dir.path().join("appinsights-spool")).unwrap().count();
        assert!(segments() >= 1, "the spool took what memory could not");
        // Back up: everything arrives, once.
        wait_for("every span", 60, || requests_of(&ingestion, "Request").len() >= spans).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(requests_of(&ingestion, "Request").len(), spans);
        assert_eq!(segments(), 0, "the spool emptied");
    } else {
        let m = s.metrics().await;
        let full = metric_value(&m, "tally_appinsights_dropped_items_total{reason=\"buffer_full\"}");
        let shed = metric_value(&m, "tally_pipeline_shed_items_total{branch=\"appinsights\"}");
        assert!(full + shed >= (spans / 2) as f64, "{spans} spans into a buffer of 50: dropped {}", full + shed);
        // Back up: what the buffer held arrives, once (after the forwarder's
        // backoff, at most a minute).
        wait_for("the buffered items to arrive", 100, || requests_of(&ingestion, "Request").len() >= 40).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(ingestion.duplicates().is_empty());
    s.stop().await;
    ingestion.shutdown().await;
}

#[tokio::test]
async fn azure_down_for_a_minute_never_slows_ingestion_or_billing_and_memory_stays_bounded() {
    azure_down(false, Duration::from_secs(60), 30).await;
}

#[tokio::test]
async fn azure_down_spools_what_memory_cannot_hold_and_sends_it_all() {
    azure_down(true, Duration::from_secs(6), 8).await;
}

#[tokio::test]
async fn what_is_buffered_at_shutdown_is_sent_after_the_next_start() {
    let ingestion = FakeIngestion::start(IngestionConfig::default()).await.unwrap();
    let extra = "drain_timeout = \"500ms\"";
    let mut s = start(&ingestion, extra).await;
    ingestion.down_for(Duration::from_secs(600));
    send_traces(&s, &spans_at("acme", "/kept", 30, now_ms(), 10, false)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s = s.restart(&config(extra)).await;
    assert!(std::fs::read_dir(s.dir.path().join("appinsights-spool")).unwrap().count() >= 1, "spooled at shutdown");
    ingestion.up();
    wait_for("the spooled spans", 60, || requests_of(&ingestion, "Request").len() >= 30).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(requests_of(&ingestion, "Request").len(), 30);
    assert!(ingestion.duplicates().is_empty());
    s.stop().await;
    ingestion.shutdown().await;
}

#[tokio::test]
async fn per_tenant_usage_from_the_ledger_arrives_once_per_minute() {
    let ingestion = FakeIngestion::start(IngestionConfig::default()).await.unwrap();
    let s = start(&ingestion, "usage_interval = \"200ms\"").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the feed's cursor starts now
    let events: Vec<Value> = [("acme", "a1", 10), ("acme", "a2", 20), ("acme", "a3", 30), ("globex", "g1", 7)]
        .iter()
        .map(|(t, id, n)| {
            json!({"specversion": "1.0", "id": id, "source": "app", "type": "llm.completion", "subject": t,
                   "data": {"tokens": n}})
        })
        .collect();
    let resp: Value = s.http.post(s.api_url("/v1/events")).json(&events).send().await.unwrap().json().await.unwrap();
    assert_eq!(resp["accepted"], 4, "{resp}");
    // A minute is read once it closed (plus 10 s for commits to land).
    let usage = || -> Vec<Value> {
        requests_of(&ingestion, "Metric")
            .into_iter()
            .filter(|e| e["data"]["baseData"]["metrics"][0]["name"] == "tally.usage")
            .collect()
    };
    wait_for("the usage items", 100, || usage().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let items = usage();
    assert_eq!(items.len(), 2, "{items:?}");
    let of = |tenant: &str| items.iter().find(|e| e["data"]["baseData"]["properties"]["tenant.id"] == tenant).unwrap();
    let acme = &of("acme")["data"]["baseData"];
    assert_eq!((acme["metrics"][0]["value"].as_f64(), acme["metrics"][0]["count"].as_u64()), (Some(60.0), Some(3)));
    assert_eq!(acme["properties"]["meter"], "tokens", "{acme}");
    assert!(acme["properties"]["window_id"].as_str().is_some_and(|w| w.len() == 32), "{acme}");
    assert_eq!(of("globex")["data"]["baseData"]["metrics"][0]["value"], 7.0);
    s.stop().await;
    ingestion.shutdown().await;
}

#[tokio::test]
async fn sampling_keeps_whole_traces_and_says_so() {
    let ingestion = FakeIngestion::start(IngestionConfig::default()).await.unwrap();
    let s = start(&ingestion, "sample_percent = 50").await;
    let mut req = spans_at("acme", "/search", 200, now_ms(), 5, false);
    for (i, span) in req.resource_spans[0].scope_spans[0].spans.iter_mut().enumerate() {
        span.trace_id = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835).to_be_bytes().to_vec();
    }
    let kept: Vec<String> = req.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .filter(|s| tally_exporter::appinsights::keep_trace(&s.trace_id, 50.0))
        .map(|s| s.trace_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    assert!((60..140).contains(&kept.len()), "{} of 200 kept", kept.len());
    send_traces(&s, &req).await;
    wait_for("the kept spans", 30, || requests_of(&ingestion, "Request").len() >= kept.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = requests_of(&ingestion, "Request");
    assert_eq!(got.len(), kept.len());
    for e in &got {
        assert_eq!(e["sampleRate"], 50.0, "{e}");
        assert!(kept.contains(&e["tags"]["ai.operation.id"].as_str().unwrap().to_owned()), "{e}");
    }
    s.stop().await;
    ingestion.shutdown().await;
}

#[tokio::test]
async fn entra_id_tokens_from_the_managed_identity_and_a_refused_one_renewed() {
    use tally_standins::identity::{FakeIdentity, IdentityConfig};
    const MONITOR: &str = "https://monitor.azure.com";
    let identity = FakeIdentity::start(IdentityConfig::default()).await.unwrap();
    let ingestion = FakeIngestion::start(IngestionConfig::default()).await.unwrap();
    ingestion.require_bearer(identity.checker(MONITOR));
    let env = vec![
        ("APPLICATIONINSIGHTS_CONNECTION_STRING".into(), ingestion.connection_string()),
        ("IDENTITY_ENDPOINT".into(), identity.identity_endpoint()),
        ("IDENTITY_HEADER".into(), identity.identity_header().to_owned()),
    ];
    let s = TestServer::start_with_env(Db::Sqlite, &config("entra_id = true"), env).await;
    send_traces(&s, &spans_at("acme", "/a", 10, now_ms(), 5, false)).await;
    wait_for("the first spans", 30, || requests_of(&ingestion, "Request").len() >= 10).await;
    assert_eq!(identity.requests_for(MONITOR), 1, "one token, cached");

    // The service stops taking that token (revoked): tally fetches another.
    let old = identity.current_token(MONITOR).unwrap();
    identity.rotate();
    ingestion.forbid_token(&old);
    let mut req = spans_at("acme", "/b", 10, now_ms(), 5, false);
    req.resource_spans[0].scope_spans[0].spans.iter_mut().for_each(|s| s.trace_id = vec![9; 16]);
    send_traces(&s, &req).await;
    wait_for("the spans after the renewal", 30, || requests_of(&ingestion, "Request").len() >= 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ingestion.duplicates().is_empty());
    assert_eq!(requests_of(&ingestion, "Request").len(), 20);
    assert!(ingestion.requests().iter().any(|r| r.status == 403), "the revoked token was refused once");
    assert_eq!(identity.requests_for(MONITOR), 2);
    s.stop().await;
    ingestion.shutdown().await;
    identity.shutdown().await;
}

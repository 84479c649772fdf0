//! Alerts end to end, against a real HTTP receiver
//! (`tests/clients/webhook_receiver.py`) that verifies Standard Webhooks
//! signatures with the `standardwebhooks` package and checks the
//! Alertmanager v4 and PagerDuty Events v2 bodies: error rate crossing the
//! warning then the critical threshold and recovering; P95 from histograms
//! merged across windows; a queue-depth gauge rule to two receivers; usage
//! quotas at 80 % and 100 %; and a receiver that is down while tally
//! restarts.
//!
//! Rounds are fast here: 10 s rollup windows written every 200 ms,
//! evaluation every 300 ms, retries after 200 ms.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{receiver::Receiver, support::*};

/// Rollups and alerting sped up; `{port}` is the receiver's.
fn fast(port: u16, rules: &str) -> String {
    format!(
        r#"
        [rollups]
        window = "10s"
        partial_flush_interval = "200ms"
        [alerting]
        eval_interval = "300ms"
        retry_schedule = ["200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms",
                          "500ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms",
                          "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
        send_timeout = "2s"
        [[receivers]]
        name = "oncall"
        type = "webhook"
        url = "http://127.0.0.1:{port}/hook"
        secret_env = "TALLY_TEST_WEBHOOK_SECRET"
        allow_private = true
        [[receivers]]
        name = "pd"
        type = "pagerduty"
        url = "http://127.0.0.1:{port}/pd"
        routing_key_env = "TALLY_TEST_PD_KEY"
        allow_private = true
        {rules}
        "#
    )
}

/// (status, severity) of each accepted webhook, with the one alert checked.
fn summary(hooks: &[Value]) -> Vec<(String, String)> {
    hooks
        .iter()
        .map(|h| {
            let b = &h["body"];
            assert_eq!(b["version"], "4");
            assert_eq!(b["alerts"].as_array().unwrap().len(), 1);
            let a = &b["alerts"][0];
            assert_eq!(a["status"], b["status"]);
            (a["status"].as_str().unwrap().to_owned(), a["labels"]["severity"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Polls `/v1/alerts` until an instance of `rule` satisfies `done`.
async fn wait_alert(s: &TestServer, tenant: &str, rule: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = s.get_json(&format!("/v1/alerts?tenant={tenant}"), None).await;
        let found = v["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == rule && done(a)).cloned();
        match found {
            Some(a) => return a,
            None if Instant::now() > deadline => panic!("no {rule} alert as expected for {tenant}: {v}"),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `errors` failed and `ok` good SERVER spans for `tenant`, now.
async fn requests(s: &TestServer, tenant: &str, ok: usize, errors: usize) {
    let now = now_ms();
    if ok > 0 {
        send_traces(s, &spans_at(tenant, "GET /cart", ok, now, 20, false)).await;
    }
    if errors > 0 {
        send_traces(s, &spans_at(tenant, "GET /cart", errors, now, 20, true)).await;
    }
}

const ERROR_RATE: &str = r#"
    [[alerts]]
    name = "HighErrorRate"
    metric = "error_rate"
    window = "20s"
    for = "0s"
    warning = 0.01
    critical = 0.05
    min_requests = 20
    receivers = ["oncall"]
    annotations = { summary = "{{tenant}}: error rate {{value}} above {{threshold}}" }
"#;

async fn error_rate_pages_warning_then_critical_then_resolved(db: Db) {
    let mut hook = Receiver::start().await;
    let s = TestServer::start(db, &fast(hook.port, ERROR_RATE)).await;
    // 2 % errors: warning. Another tenant with 10 requests, all failed, is
    // below min_requests and pages nobody.
    requests(&s, "acme", 196, 4).await;
    requests(&s, "tiny", 0, 10).await;
    let a = wait_alert(&s, "acme", "HighErrorRate", |a| a["state"] == "firing").await;
    assert_eq!((a["severity"].as_str(), a["value"].as_f64()), (Some("warning"), Some(0.02)));
    let first = hook.accepted("/hook", 1).await;
    assert_eq!(summary(&first), [("firing".into(), "warning".into())]);
    let body = &first[0]["body"];
    assert_eq!(body["receiver"], "oncall");
    assert_eq!(body["groupLabels"], json!({"alertname": "HighErrorRate", "tenant": "acme"}));
    assert_eq!(body["alerts"][0]["labels"]["tenant"], "acme");
    assert_eq!(body["alerts"][0]["annotations"]["summary"], "acme: error rate 0.02 above 0.01");
    assert!(body["alerts"][0]["generatorURL"].as_str().unwrap().ends_with("/v1/alerts?tenant=acme"));
    // 104 of 300 failed: critical, a second page with the same fingerprint.
    requests(&s, "acme", 0, 100).await;
    wait_alert(&s, "acme", "HighErrorRate", |a| a["severity"] == "critical").await;
    let two = hook.accepted("/hook", 2).await;
    assert_eq!(summary(&two)[1], ("firing".into(), "critical".into()));
    assert_eq!(two[0]["body"]["alerts"][0]["fingerprint"], two[1]["body"]["alerts"][0]["fingerprint"]);
    // Nothing more is sent: once the failures leave the 20 s window there
    // is no value, and the alert resolves.
    let resolved = wait_alert(&s, "acme", "HighErrorRate", |a| a["state"] == "resolved").await;
    assert_eq!(resolved["severity"], "critical");
    let three = hook.accepted("/hook", 3).await;
    assert_eq!(summary(&three)[2], ("resolved".into(), "critical".into()));
    assert_ne!(three[2]["body"]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    // Exactly three, each a distinct message, and nothing for "tiny".
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let all = hook.accepted("/hook", 3).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let ids: std::collections::HashSet<&str> = all.iter().map(|r| r["webhook_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    let tiny = s.get_json("/v1/alerts?tenant=tiny", None).await;
    assert_eq!(tiny["alerts"], json!([]));
    let m = s.metrics().await;
    assert!(
        metric_value(&m, r#"tally_alert_notifications_total{receiver="oncall",outcome="delivered"}"#) >= 3.0,
        "{m}"
    );
    hook.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn error_rate_pages_warning_then_critical_then_resolved_on_sqlite() {
    error_rate_pages_warning_then_critical_then_resolved(Db::Sqlite).await;
}

#[tokio::test]
async fn error_rate_pages_warning_then_critical_then_resolved_on_postgres() {
    error_rate_pages_warning_then_critical_then_resolved(Db::Postgres).await;
}

/// Sleeps until `offset` into the next 10 s rollup window.
async fn next_window(offset_ms: i64) {
    let now = now_ms();
    let next = (now / 10_000 + 1) * 10_000 + offset_ms;
    tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
}

#[tokio::test]
async fn p95_comes_from_histograms_merged_over_the_window() {
    let hook = Receiver::start().await;
    let rule = r#"
        [[alerts]]
        name = "SlowCheckout"
        metric = "p95_latency_ms"
        window = "20s"
        warning = 50
        critical = 80
        receivers = ["oncall"]
    "#;
    let s = TestServer::start(Db::Sqlite, &fast(hook.port, rule)).await;
    let endpoint = s.grpc_url();
    let send = |max_ms: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            let args = ["--endpoint", &endpoint, "--protocol", "grpc", "--tenant", "acme", "--service", "checkout"];
            let mut args = args.to_vec();
            args.extend(["--slo-requests", "100", "--slo-max-ms", max_ms]);
            otel_send(&args).await;
        }
    };
    // Two windows from the Python SDK (one export request each): 1..10 ms
    // ten times (p95 10 ms: no alert), then 1..100 ms once each (p95 95 ms
    // on its own). Over both, p95 is 90 ms: critical at that value.
    // Averaging the windows' p95s would say 52.5 (warning only).
    next_window(500).await;
    send("10").await;
    next_window(500).await;
    send("100").await;
    let a = wait_alert(&s, "acme", "SlowCheckout", |a| a["severity"] == "critical").await;
    let p95 = a["value"].as_f64().unwrap();
    assert!((89.0..=91.0).contains(&p95), "p95 {p95}");
    let hooks = hook.accepted("/hook", 1).await;
    assert_eq!(summary(&hooks)[0], ("firing".into(), "critical".into()));
    s.stop().await;
}

#[tokio::test]
async fn queue_depth_gauge_pages_webhook_and_pagerduty() {
    let hook = Receiver::start().await;
    let rule = r#"
        [[alerts]]
        name = "QueueBacklog"
        metric = "gauge:worker.queue.depth"
        aggregate = "max"
        window = "20s"
        warning = 50
        critical = 200
        group_by = ["tenant", "queue"]
        receivers = ["oncall", "pd"]
    "#;
    let s = TestServer::start(Db::Sqlite, &fast(hook.port, rule)).await;
    let endpoint = s.grpc_url();
    let depths = |d: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            otel_send(&[
                "--endpoint",
                &endpoint,
                "--protocol",
                "grpc",
                "--tenant",
                "acme",
                "--service",
                "worker",
                "--queue-depths",
                d,
            ])
            .await;
        }
    };
    depths("10,60,30").await;
    let a = wait_alert(&s, "acme", "QueueBacklog", |a| a["state"] == "firing").await;
    assert_eq!((a["severity"].as_str(), a["value"].as_f64()), (Some("warning"), Some(60.0)));
    assert_eq!(a["labels"], json!({"tenant": "acme", "queue": "emails"}));
    depths("250").await;
    wait_alert(&s, "acme", "QueueBacklog", |a| a["severity"] == "critical").await;
    let hooks = hook.accepted("/hook", 2).await;
    assert_eq!(summary(&hooks), [("firing".into(), "warning".into()), ("firing".into(), "critical".into())]);
    assert_eq!(hooks[0]["body"]["alerts"][0]["labels"]["queue"], "emails");
    // PagerDuty got the same two as triggers of one incident (dedup_key).
    let pd = hook.accepted("/pd", 2).await;
    let actions: Vec<(&str, &str)> = pd
        .iter()
        .map(|r| (r["body"]["event_action"].as_str().unwrap(), r["body"]["payload"]["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("trigger", "warning"), ("trigger", "critical")]);
    assert_eq!(pd[0]["body"]["routing_key"], PD_ROUTING_KEY);
    assert_eq!(pd[0]["body"]["dedup_key"], hooks[0]["body"]["alerts"][0]["fingerprint"]);
    // The window empties: resolved, to both.
    let pd = hook.accepted("/pd", 3).await;
    assert_eq!(pd[2]["body"]["event_action"], "resolve");
    assert_eq!(summary(&hook.accepted("/hook", 3).await)[2].0, "resolved");
    s.stop().await;
}

#[tokio::test]
async fn usage_quota_pages_at_80_and_100_percent() {
    let hook = Receiver::start().await;
    let rules = r#"
        [[meters]]
        name = "llm_tokens"
        aggregation = "sum"
        event_type = "llm.completion"
        value = "$.tokens"
        [[alerts]]
        name = "CreditsRunningOut"
        metric = "usage:llm_tokens"
        quota = 1000
        quotas = { bigco = 100000 }
        warning = 0.8
        critical = 1.0
        receivers = ["oncall"]
    "#;
    let s = TestServer::start(Db::Sqlite, &fast(hook.port, rules)).await;
    let post = |id: &'static str, tenant: &'static str, tokens: u64| {
        let (http, url) = (s.http.clone(), s.api_url("/v1/events"));
        async move {
            let time = rfc3339(now_ms());
            let event = json!({"specversion": "1.0", "id": id, "source": "gw", "type": "llm.completion",
                               "subject": tenant, "time": time, "data": {"tokens": tokens}});
            let r = http.post(url).header("content-type", "application/cloudevents+json").body(event.to_string());
            assert_eq!(r.send().await.unwrap().status(), 200);
        }
    };
    post("e1", "acme", 500).await;
    post("e2", "bigco", 5000).await; // 5 % of its own quota
    post("e3", "acme", 300).await; // 80 %: warning (quotas fire on reaching)
    let a = wait_alert(&s, "acme", "CreditsRunningOut", |a| a["state"] == "firing").await;
    assert_eq!((a["severity"].as_str(), a["value"].as_f64()), (Some("warning"), Some(0.8)));
    post("e3", "acme", 300).await; // a resend: deduplicated, still 80 %
    post("e4", "acme", 200).await; // 100 %: critical
    wait_alert(&s, "acme", "CreditsRunningOut", |a| a["severity"] == "critical").await;
    let hooks = hook.accepted("/hook", 2).await;
    assert_eq!(summary(&hooks), [("firing".into(), "warning".into()), ("firing".into(), "critical".into())]);
    assert!(hooks.iter().all(|h| h["body"]["alerts"][0]["labels"]["tenant"] == "acme"));
    assert_eq!(s.get_json("/v1/alerts?tenant=bigco", None).await["alerts"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn notifications_wait_for_a_receiver_that_is_down_across_a_restart() {
    let mut hook = Receiver::reserve(); // not running: connections are refused
    let config = fast(hook.port, ERROR_RATE);
    let s = TestServer::start(Db::Sqlite, &config).await;
    requests(&s, "acme", 196, 4).await;
    wait_alert(&s, "acme", "HighErrorRate", |a| a["severity"] == "warning").await;
    // Retried meanwhile, not given up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retry = r#"tally_alert_notifications_total{receiver="oncall",outcome="retry"}"#;
    while metric_value(&s.metrics().await, retry) < 2.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric_value(&s.metrics().await, retry) >= 2.0);
    // tally restarts with the notification still undelivered; the state
    // resumes (no second warning page), and the escalation is queued behind.
    let s = s.restart(&config).await;
    requests(&s, "acme", 0, 100).await;
    wait_alert(&s, "acme", "HighErrorRate", |a| a["severity"] == "critical").await;
    assert!(hook.records().is_empty());
    hook.run().await;
    let hooks = hook.accepted("/hook", 2).await;
    assert_eq!(summary(&hooks), [("firing".into(), "warning".into()), ("firing".into(), "critical".into())]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let firing: Vec<Value> =
        hook.accepted("/hook", 2).await.into_iter().filter(|h| h["body"]["status"] == "firing").collect();
    assert_eq!(firing.len(), 2, "each once: {firing:?}");
    hook.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn two_replicas_on_one_database_page_once() {
    let hook = Receiver::start().await;
    let config = fast(hook.port, ERROR_RATE);
    let a = TestServer::start(Db::Postgres, &config).await;
    let (b, _dir) = a.replica(&config).await;
    // Data reaches either replica; both evaluate every 300 ms and both send.
    requests(&a, "acme", 196, 4).await;
    wait_alert(&a, "acme", "HighErrorRate", |x| x["severity"] == "warning").await;
    let mut client = grpc_client(&format!("http://{}", b.grpc_addr)).await;
    let failed = spans_at("acme", "GET /cart", 100, now_ms(), 20, true);
    grpc_export_traces(&mut client, encode(&failed), &[]).await.unwrap();
    wait_alert(&a, "acme", "HighErrorRate", |x| x["severity"] == "critical").await;
    hook.accepted("/hook", 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hooks = hook.accepted("/hook", 2).await;
    assert_eq!(summary(&hooks), [("firing".into(), "warning".into()), ("firing".into(), "critical".into())]);
    b.shutdown().await.unwrap();
    a.stop().await;
}

#[tokio::test]
async fn alerts_api_is_tenant_scoped_and_checks_parameters() {
    let hook = Receiver::reserve();
    let s = TestServer::start(Db::Sqlite, &fast(hook.port, ERROR_RATE)).await;
    let r = s.http.get(s.api_url("/v1/alerts?tenant=acme&state=burning")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state"));
    let r = s.http.get(s.api_url("/v1/alerts?tenant=a%20b")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let all = s.get_json("/v1/alerts", None).await;
    assert_eq!(all, json!({"alerts": []}));
    s.stop().await;
}

/// Benchmark (not a timed test): one evaluation round over 1,000 tenants
/// with 10 minutes of one-minute windows each, four rules (error rate,
/// p95, queue depth, request rate), on PostgreSQL. Run with
/// `cargo test --release --test it bench_alert_round -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn bench_alert_round_1000_tenants() {
    use tally_core::{
        TenantId,
        rollup::{ALL, RollupKind, RollupRow, RollupValues, SeriesKey},
    };
    let db = TestDb::new(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let store = tally_store::Store::open(&db.url, dir.path()).await.unwrap();
    store.migrate().await.unwrap();
    let now = now_ms() / 60_000 * 60_000 + 30_000;
    let mut rows = Vec::new();
    for t in 0..1000 {
        let tenant = TenantId::parse(&format!("tenant-{t}")).unwrap();
        for w in 0..10 {
            let mut span = RollupValues::default();
            for i in 0..50u64 {
                span.add_span(
                    1000 + (i * 37 + t as u64 * 11) % 3_000_000,
                    (i + t as u64).is_multiple_of(40) || t % 10 == 0 && i % 5 == 0,
                );
            }
            let mut gauge = RollupValues::default();
            gauge.add_point((t % 100) as f64, now);
            let start_ms = now / 60_000 * 60_000 - w * 60_000;
            let key = |kind, name: &str, detail: &str| SeriesKey {
                tenant: tenant.clone(),
                kind,
                service: if kind == RollupKind::Span { ALL.into() } else { "worker".into() },
                name: name.into(),
                detail: detail.into(),
            };
            rows.push(RollupRow { key: key(RollupKind::Span, ALL, ALL), start_ms, values: span });
            rows.push(RollupRow {
                key: key(RollupKind::Gauge, "queue.depth", r#"{"queue":"q"}"#),
                start_ms,
                values: gauge,
            });
        }
    }
    for chunk in rows.chunks(5000) {
        store.write_rollups(tally_store::RollupTable::Windows, chunk).await.unwrap();
    }
    let rules = r#"
        [[alerts]]
        name = "HighErrorRate"
        metric = "error_rate"
        warning = 0.01
        critical = 0.05
        min_requests = 20
        [[alerts]]
        name = "SlowRequests"
        metric = "p95_latency_ms"
        window = "10m"
        warning = 2000
        critical = 5000
        [[alerts]]
        name = "QueueBacklog"
        metric = "gauge:queue.depth"
        warning = 50
        critical = 90
        [[alerts]]
        name = "LowTraffic"
        metric = "request_rate"
        below = true
        warning = 0.1
    "#;
    let config = tally::Config::from_toml(&[rules]).unwrap();
    let engine = tally_aggregator::alert::AlertEngine::new(
        store.clone(),
        config.alert_rules().unwrap(),
        config.alerting.clone(),
        std::sync::Arc::new(vec![]),
        Duration::from_secs(60),
        "http://tally".into(),
    );
    let mut times = Vec::new();
    for round in 0..6 {
        let started = Instant::now();
        let report = engine.round(now + round * 31_000).await.unwrap().expect("round committed");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        println!("round {round}: {:.1} ms, {report:?}", times[round as usize]);
    }
    times.sort_by(f64::total_cmp);
    println!("alert round over 1,000 tenants x 4 rules: median {:.1} ms (first round writes every instance)", times[3]);
    store.close().await;
    db.drop_db().await;
}

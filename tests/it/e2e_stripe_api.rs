//! The Stripe sync's edges, in process against the stand-in: the tenant ↔
//! customer mapping API and its checks, usage that waits for its mapping,
//! usage too old for Stripe, a push Stripe refuses (failed, listed,
//! alerted, retried on request), one call in flight per customer and
//! meter, a start refused when Stripe's meters do not fit, and the dry run.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tally_standins::stripe::{FakeStripe, MeterSpec, RateLimits, StripeConfig};

use crate::{daemon::Daemon, support::*};

const KEY: &str = "sk_test_api_checks";
const HOUR: i64 = 3_600_000;

const METERS: &str = r#"
[[meters]]
name = "tokens"
aggregation = "sum"
event_type = "llm.completion"
value = "$.tokens"

[[meters]]
name = "storage_gb"
aggregation = "sum"
event_type = "storage.used"
value = "$.gb"
stripe_event_name = "storage"
stripe_scale = 1000
"#;

fn config(stripe: &FakeStripe, extra: &str) -> String {
    format!(
        "{METERS}\n[stripe]\napi_base = \"{}\"\nsync_interval = \"200ms\"\nlag = \"0s\"\ntimeout = \"2s\"\n\
         max_requests_per_second = 1000\n{extra}",
        stripe.url()
    )
}

async fn fake(config: StripeConfig) -> FakeStripe {
    let config = config.meter(MeterSpec::sum("tokens")).meter(MeterSpec::sum("storage").hourly());
    FakeStripe::start(config).await.unwrap()
}

async fn start(stripe: &FakeStripe, extra: &str) -> TestServer {
    TestServer::start_with_env(Db::Sqlite, &config(stripe, extra), vec![("STRIPE_API_KEY".into(), KEY.into())]).await
}

fn event(id: &str, tenant: &str, time_ms: i64, ty: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "api-test", "type": ty, "subject": tenant,
           "time": rfc3339(time_ms), "data": data})
}

async fn post(s: &TestServer, events: Vec<Value>) {
    let resp = s.http.post(s.api_url("/v1/events")).json(&events).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"].as_u64(), Some(events.len() as u64), "{body}");
}

async fn put_customer(s: &TestServer, tenant: &str, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut req = s.http.put(s.api_url(&format!("/v1/tenants/{tenant}"))).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn wait(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn usage_waits_for_its_mapping_and_the_mapping_is_checked() {
    let stripe = fake(StripeConfig::default()).await;
    let s = start(&stripe, "").await;
    let hour = (now_ms() / HOUR - 3) * HOUR;
    post(&s, vec![event("e1", "initech", hour + 60_000, "llm.completion", json!({"tokens": 40}))]).await;
    let t = s.get_json("/v1/tenants/initech", None).await;
    assert_eq!(t["stripe_sync"]["waiting_for_mapping"], true, "{t}");
    tokio::time::sleep(Duration::from_millis(800)).await; // several sync rounds
    assert!(stripe.events().is_empty(), "an unmapped tenant's usage was pushed");

    // Refused: not a customer id, an unknown field, a taken customer.
    let (code, body) = put_customer(&s, "initech", json!({"stripe_customer_id": "acct_123"}), None).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("stripe_customer_id"), "{body}");
    let (code, _) = put_customer(&s, "initech", json!({"stripe_customer": "cus_1"}), None).await;
    assert_eq!(code, 400);
    assert_eq!(put_customer(&s, "hooli", json!({"stripe_customer_id": "cus_Shared1"}), None).await.0, 200);
    let (code, body) = put_customer(&s, "initech", json!({"stripe_customer_id": "cus_Shared1"}), None).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("hooli"), "{body}");
    assert_eq!(
        s.get_json("/v1/tenants/nobody", None).await["error"],
        "tenant nobody is not known (no usage, no mapping)"
    );

    // Mapped: the waiting hour goes out.
    let (code, body) = put_customer(&s, "initech", json!({"stripe_customer_id": "cus_Initech1"}), None).await;
    assert_eq!((code, body["stripe_customer_id"].as_str()), (200, Some("cus_Initech1")), "{body}");
    wait("the waiting usage to be pushed", async || stripe.total("tokens", "cus_Initech1", 0, i64::MAX) == Some(40.0))
        .await;
    wait("the push to be recorded", async || {
        s.get_json("/v1/tenants/initech", None).await["stripe_sync"]["pushes"]["sent"] == 1
    })
    .await;
    let sync = s.get_json("/v1/stripe/sync", None).await;
    assert_eq!((sync["enabled"].as_bool(), sync["leader"].as_bool()), (Some(true), Some(true)), "{sync}");
    assert_eq!(sync["meters"].as_array().map(Vec::len), Some(2), "{sync}");

    // A tenant key reads its own tenant, not others, and maps nothing.
    let out = tenant_key(&s, "initech").await;
    let (code, _) = put_customer(&s, "initech", json!({"stripe_customer_id": "cus_Other1"}), Some(&out)).await;
    assert_eq!(code, 403);
    let own = s.get_json("/v1/tenants/initech", Some(&out)).await;
    assert_eq!(own["id"], "initech", "{own}");
    let other = s.get_json("/v1/tenants/hooli", Some(&out)).await;
    assert!(other["error"].as_str().unwrap().contains("may not read"), "{other}");
    let scoped = s.get_json("/v1/stripe/sync", Some(&out)).await;
    assert!(scoped["error"].as_str().unwrap().contains("must name its tenant"), "{scoped}");
    let recon = s.get_json("/v1/stripe/reconciliation?tenant=initech&period=2026-13", Some(&out)).await;
    assert!(recon["error"].as_str().unwrap().contains("YYYY-MM"), "{recon}");
    s.stop().await;
    stripe.shutdown().await;
}

/// A tenant key for `tenant`, made in the server's database.
#[tokio::test]
async fn what_stripe_cannot_take_is_expired_or_failed_listed_and_alerted() {
    let stripe = fake(StripeConfig::default()).await;
    let alert = "[alerting]\neval_interval = \"300ms\"\n[[alerts]]\nname = \"StripePushesFailing\"\n\
                 metric = \"stripe_sync_failed\"\ncritical = 0\n";
    let s = start(&stripe, alert).await;
    assert_eq!(put_customer(&s, "acme", json!({"stripe_customer_id": "cus_Acme1"}), None).await.0, 200);
    let old = (now_ms() / HOUR - 40 * 24) * HOUR;
    let recent = (now_ms() / HOUR - 2) * HOUR;
    post(
        &s,
        vec![
            // 40 days old: past Stripe's 35 days.
            event("old", "acme", old + 1_000, "llm.completion", json!({"tokens": 5})),
            // 1e14 GB × 1000 = 10^17 MB: more digits than Stripe takes.
            event("huge", "acme", recent + 1_000, "storage.used", json!({"gb": 1e14})),
            event("fine", "acme", recent + 2_000, "llm.completion", json!({"tokens": 9})),
        ],
    )
    .await;
    let mut sync = Value::Null;
    wait("the failed and the expired push", async || {
        sync = s.get_json("/v1/stripe/sync", None).await;
        sync["pushes"]["failed"] == 1 && sync["pushes"]["expired"] == 1 && sync["pushes"]["sent"] == 1
    })
    .await;
    let failed = &sync["failed"][0];
    assert_eq!(
        (failed["meter"].as_str(), failed["value"].as_i64()),
        (Some("storage_gb"), Some(100_000_000_000_000_000))
    );
    assert!(failed["error"].as_str().unwrap().starts_with("HTTP 400"), "{failed}");
    assert!(sync["expired"][0]["error"].as_str().unwrap().contains("35 days"), "{sync}");
    assert_eq!(stripe.events().len(), 1, "only the pushable event reached Stripe");
    let a = wait_alert(&s, "acme", "StripePushesFailing").await;
    assert_eq!((a["severity"].as_str(), a["value"].as_f64()), (Some("critical"), Some(1.0)), "{a}");
    let metrics = s.metrics().await;
    assert!(metric_value(&metrics, "tally_stripe_pushes_total{outcome=\"failed\"}") >= 1.0, "{metrics}");

    // Retried on request: pending again, refused again.
    let r: Value = s.http.post(s.api_url("/v1/stripe/sync/retry")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["retried"], 1, "{r}");
    wait("the retried push to fail again", async || {
        let v = s.get_json("/v1/stripe/sync", None).await;
        v["pushes"]["failed"] == 1 && v["failed"][0]["attempts"] == 2
    })
    .await;
    s.stop().await;
    stripe.shutdown().await;
}

async fn wait_alert(s: &TestServer, tenant: &str, rule: &str) -> Value {
    let mut found = Value::Null;
    wait("the alert to fire", async || {
        let v = s.get_json(&format!("/v1/alerts?tenant={tenant}"), None).await;
        found = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["rule"] == rule && a["state"] == "firing")
            .cloned()
            .unwrap_or_default();
        !found.is_null()
    })
    .await;
    found
}

#[tokio::test]
async fn a_key_stripe_stops_accepting_halts_the_sync_until_it_works_again() {
    let stripe = fake(StripeConfig::default()).await;
    let s = start(&stripe, "").await;
    assert_eq!(put_customer(&s, "acme", json!({"stripe_customer_id": "cus_Acme1"}), None).await.0, 200);
    stripe.set_api_keys(["sk_test_rolled"]); // the key was rolled in the dashboard
    let hour = (now_ms() / HOUR - 2) * HOUR;
    post(&s, vec![event("h1", "acme", hour + 10, "llm.completion", json!({"tokens": 3}))]).await;
    let mut sync = Value::Null;
    wait("the sync to halt", async || {
        sync = s.get_json("/v1/stripe/sync", None).await;
        !sync["halted"].is_null()
    })
    .await;
    assert!(sync["halted"].as_str().unwrap().contains("401"), "{sync}");
    assert!(!sync["halted"].as_str().unwrap().contains(KEY), "the key leaked: {sync}");
    assert_eq!(sync["pushes"]["pending"], 1, "the push waits, it is not failed: {sync}");
    assert_eq!(metric_value(&s.metrics().await, "tally_stripe_halted"), 1.0);
    stripe.set_api_keys([KEY]);
    wait("the sync to resume and push", async || stripe.total("tokens", "cus_Acme1", 0, i64::MAX) == Some(3.0)).await;
    wait("the halt to clear", async || s.get_json("/v1/stripe/sync", None).await["halted"].is_null()).await;
    s.stop().await;
    stripe.shutdown().await;
}

#[tokio::test]
async fn one_call_in_flight_per_customer_and_meter() {
    let stripe = fake(StripeConfig {
        processing_time: Duration::from_millis(40),
        rate_limits: RateLimits::UNLIMITED,
        ..StripeConfig::default()
    })
    .await;
    let s = start(&stripe, "max_in_flight = 16\n").await;
    for (t, c) in [("acme", "cus_A1"), ("globex", "cus_G1")] {
        assert_eq!(put_customer(&s, t, json!({"stripe_customer_id": c}), None).await.0, 200);
    }
    let first = (now_ms() / HOUR - 30) * HOUR;
    let mut events = Vec::new();
    for h in 0..24 {
        for t in ["acme", "globex"] {
            events.push(event(
                &format!("{t}-{h}"),
                t,
                first + h * HOUR + 5,
                "llm.completion",
                json!({"tokens": h + 1}),
            ));
        }
    }
    post(&s, events).await;
    wait("48 hours pushed", async || stripe.events().len() == 48).await;
    let concurrency = stripe.max_concurrency();
    assert_eq!(concurrency.get(&("cus_A1".into(), "tokens".into())), Some(&1), "{concurrency:?}");
    assert_eq!(concurrency.get(&("cus_G1".into(), "tokens".into())), Some(&1), "{concurrency:?}");
    assert_eq!(stripe.stats().concurrency_limited, 0);
    s.stop().await;
    stripe.shutdown().await;
}

#[tokio::test]
async fn the_start_is_refused_when_stripe_does_not_fit() {
    // tokens is a sum meter; a `last` Stripe meter cannot take its hours.
    let stripe = FakeStripe::start(
        StripeConfig::default().meter(MeterSpec::last("tokens")).meter(MeterSpec::sum("storage").hourly()),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "data_dir = \"{}\"\n[api]\naddr = \"127.0.0.1:0\"\n[otlp]\ngrpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n[lake]\nenabled = false\n",
        dir.path().display()
    );
    let cfg = tally::Config::from_toml(&[&base, &config(&stripe, "")]).unwrap();
    let env = |name: &str| (name == "STRIPE_API_KEY").then(|| KEY.to_owned());
    let err = tally::server::start_with_env(cfg.clone(), &env).await.err().unwrap().to_string();
    assert!(err.contains("meters.tokens") && err.contains("formula sum, not last"), "{err}");

    // A key Stripe refuses.
    let strict = fake(StripeConfig { api_keys: vec!["sk_test_other".into()], ..StripeConfig::default() }).await;
    let cfg = tally::Config::from_toml(&[&base, &config(&strict, "")]).unwrap();
    let err = tally::server::start_with_env(cfg, &env).await.err().unwrap().to_string();
    assert!(err.contains("HTTP 401") && err.contains("STRIPE_API_KEY"), "{err}");
    assert!(!err.contains(KEY), "the key leaked into the error: {err}");
    stripe.shutdown().await;
    strict.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_shows_the_next_pushes_and_sends_nothing() {
    let stripe = fake(StripeConfig::default()).await;
    // The daemon runs without a key: the sync is off.
    let d = Daemon::start("", METERS, vec![]).await;
    let hour = (now_ms() / HOUR - 2) * HOUR;
    let resp = d
        .http
        .post(d.url("/v1/events"))
        .json(&json!([event("d1", "acme", hour + 10, "llm.completion", json!({"tokens": 12}))]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (code, out, err) = d.command(&["tenants", "set", "acme", "--stripe-customer", "cus_Dry1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let env_cmd = |args: &'static [&'static str]| {
        let mut cmd = crate::daemon::tally_cmd();
        cmd.arg("--config")
            .arg(&d.config)
            .args(args)
            .env("STRIPE_API_KEY", KEY)
            .env("TALLY_STRIPE_API_BASE", stripe.url());
        cmd
    };
    for _ in 0..2 {
        let out = env_cmd(&["stripe", "sync", "--dry-run"]).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let planned = v["would_plan"].as_array().unwrap();
        assert_eq!(planned.len(), 1, "{v}");
        assert_eq!((planned[0]["tenant"].as_str(), planned[0]["value"].as_i64()), (Some("acme"), Some(12)));
    }
    assert!(stripe.events().is_empty(), "a dry run sent something");
    let (code, out, _) = d.command(&["tenants", "list"]).await;
    assert!(code == 0 && out.contains("cus_Dry1"), "{out}");
    stripe.shutdown().await;
}

#[tokio::test]
async fn a_closed_period_is_reconciled_by_itself_and_drift_counts_once_confirmed() {
    let stripe = fake(StripeConfig::default()).await;
    let s = start(&stripe, "").await;
    assert_eq!(put_customer(&s, "acme", json!({"stripe_customer_id": "cus_Auto1"}), None).await.0, 200);
    let hour = (now_ms() / HOUR - 3) * HOUR;
    let events =
        (0..3).map(|i| event(&format!("a{i}"), "acme", hour + i * 60_000, "llm.completion", json!({"tokens": 10 + i})));
    post(&s, events.collect()).await;
    wait("the hour to reach Stripe", async || stripe.total("tokens", "cus_Auto1", 0, i64::MAX) == Some(33.0)).await;

    // The leader's step after the period closes, run at chosen times.
    let dir = tempfile::tempdir().unwrap();
    let base = format!("data_dir = \"{}\"", dir.path().display());
    let cfg = tally::Config::from_toml(&[&base, &config(&stripe, "")]).unwrap();
    let env = |name: &str| (name == "STRIPE_API_KEY").then(|| KEY.to_owned());
    let sync = tally_exporter::stripe::Stripe::connect(&cfg.stripe, &cfg.meters, &env).await.unwrap().unwrap();
    let store = s.server.as_ref().unwrap().store.clone();
    let reconciler = sync.reconciler(store.clone());
    let (period, end) = tally_exporter::stripe::plan::period(hour);
    let closed = end + cfg.stripe.close_grace.as_millis() as i64 + 60_000;
    reconciler.after_close(closed - 120_000, &cfg.stripe).await;
    assert!(store.reconciliation(period, None).await.unwrap().is_empty(), "reconciled before close_grace");
    reconciler.after_close(closed, &cfg.stripe).await;
    let rows = store.reconciliation(period, None).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].expected, rows[0].stripe, rows[0].drift, rows[0].checks), (33, Some(33.0), Some(0.0), 1));

    // Stripe loses an event: a first read finds the drift, but only a
    // second read after recheck_after counts it (summaries lag).
    let lost = stripe.events().into_iter().find(|e| e.event_name == "tokens").unwrap();
    assert!(stripe.remove_event(&lost.identifier));
    s.exec_sql("DELETE FROM stripe_reconciliations").await;
    reconciler.after_close(closed, &cfg.stripe).await;
    let rows = store.reconciliation(period, None).await.unwrap();
    assert_eq!((rows[0].drift, rows[0].checks), (Some(-(lost.value as f64)), 1));
    assert!(store.drift_by_tenant().await.unwrap().is_empty(), "unconfirmed drift counted");
    // At least a day after the push whatever today's date (near a month's
    // end the period closes within hours of it).
    let recheck = (closed + cfg.stripe.recheck_after.as_millis() as i64).max(now_ms() + 25 * HOUR);
    reconciler.after_close(recheck, &cfg.stripe).await;
    let rows = store.reconciliation(period, None).await.unwrap();
    assert_eq!((rows[0].drift, rows[0].checks), (Some(-(lost.value as f64)), 2));
    // Over 24 h after the push: reported, not edited.
    assert!(rows[0].error.as_deref().is_some_and(|e| e.contains("over 24 h ago")), "{rows:?}");
    assert_eq!(store.drift_by_tenant().await.unwrap(), [("acme".to_owned(), lost.value as f64)]);
    assert_eq!(metric_value(&s.metrics().await, "tally_stripe_drift_lines"), 1.0);
    let report = s
        .get_json(
            &format!("/v1/stripe/reconciliation?period={}", tally_exporter::stripe::plan::period_name(period)),
            None,
        )
        .await;
    assert_eq!(
        (report["drift_lines"].as_u64(), report["lines"][0]["confirmed"].as_bool()),
        (Some(1), Some(true)),
        "{report}"
    );
    s.stop().await;
    stripe.shutdown().await;
}

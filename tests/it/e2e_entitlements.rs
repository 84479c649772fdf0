//! Entitlements end to end: Stripe webhooks signed by the official `stripe`
//! package (`tests/clients/stripe_sign.py`), a subscription's life with a
//! redelivered and a late event, limits and credits crossed by usage events
//! with the answer flipping at the line, and the notices a real receiver
//! (`tests/clients/webhook_receiver.py`) gets once, across a restart; on
//! SQLite and PostgreSQL, with a second replica on PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{receiver::Receiver, support::*};

const WHSEC: &str = "whsec_entitlementTestSecret0123456789";

fn config(port: u16) -> String {
    format!(
        r#"
        [[meters]]
        name = "tokens"
        aggregation = "sum"
        event_type = "llm.completion"
        value = "$.tokens"
        limit = 1000

        [[meters]]
        name = "tasks"
        aggregation = "count"
        event_type = "task.done"

        [entitlements]
        refresh_interval = "200ms"

        [alerting]
        retry_schedule = ["200ms", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
        send_timeout = "2s"

        [[receivers]]
        name = "billing"
        type = "webhook"
        url = "http://127.0.0.1:{port}/hook"
        secret_env = "TALLY_TEST_WEBHOOK_SECRET"
        allow_private = true
        "#
    )
}

async fn start(db: Db, port: u16) -> TestServer {
    TestServer::start_with_env(db, &config(port), vec![("STRIPE_WEBHOOK_SECRET".into(), WHSEC.into())]).await
}

/// The Stripe-Signature header the official library makes for `body`.
async fn sign(body: &str, secrets: &[&str], t: i64) -> String {
    let mut cmd = tokio::process::Command::new(client_python());
    cmd.arg(clients_dir().join("stripe_sign.py")).args(["--timestamp", &t.to_string()]);
    for s in secrets {
        cmd.args(["--secret", s]);
    }
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    child.stdin.take().unwrap().write_all(body.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "stripe_sign.py failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn deliver(s: &TestServer, body: &str, header: Option<&str>) -> (u16, Value) {
    let mut req = s.http.post(s.api_url("/v1/stripe/webhook")).body(body.to_owned());
    if let Some(h) = header {
        req = req.header("Stripe-Signature", h);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// Signs with the official library (now) and delivers.
async fn send_event(s: &TestServer, event: &Value) -> Value {
    let body = event.to_string();
    let header = sign(&body, &[WHSEC], now_ms() / 1000).await;
    let (code, answer) = deliver(s, &body, Some(&header)).await;
    assert_eq!(code, 200, "{answer}");
    answer
}

fn subscription(id: &str, created: i64, kind: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "event", "type": format!("customer.subscription.{kind}"), "created": created,
        "api_version": "2025-09-30.clover", "livemode": false,
        "data": {"object": {
            "id": "sub_Life1", "object": "subscription", "customer": "cus_Life1", "status": status,
            "metadata": {"tenant_id": "lifeco"},
            "items": {"object": "list", "data": [{"current_period_start": created, "current_period_end": created + 30 * 86400}]}
        }}
    })
}

fn invoice(id: &str, created: i64, kind: &str) -> Value {
    json!({
        "id": id, "object": "event", "type": format!("invoice.{kind}"), "created": created,
        "data": {"object": {"id": "in_1", "object": "invoice", "customer": "cus_Life1",
                            "parent": {"subscription_details": {"subscription": "sub_Life1", "metadata": {"tenant_id": "lifeco"}}}}}
    })
}

async fn entitlement(s: &TestServer, tenant: &str, meter: &str) -> Value {
    s.get_json(&format!("/v1/entitlements?tenant={tenant}&meter={meter}"), None).await
}

/// Billing notices the receiver accepted: (event, tenant, meter).
async fn notices(hook: &Receiver, n: usize) -> Vec<(String, String, String)> {
    hook.accepted("/hook", n)
        .await
        .iter()
        .map(|h| {
            let a = &h["body"]["alerts"][0];
            assert_eq!(a["labels"]["alertname"], "tally_billing", "{h}");
            let l = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
            (l("event"), l("tenant"), l("meter"))
        })
        .collect()
}

#[tokio::test]
async fn webhook_signatures_made_by_the_stripe_library() {
    let s = start(Db::Sqlite, Receiver::reserve().port).await;
    let body = subscription("evt_Sig1", now_ms() / 1000, "created", "active").to_string();
    let now = now_ms() / 1000;
    let good = sign(&body, &[WHSEC], now).await;

    let (code, err) = deliver(&s, &body.replace("active", "canceled"), Some(&good)).await;
    assert_eq!(code, 400, "tampered body: {err}");
    assert!(err["error"].as_str().unwrap().contains("matches the body and the webhook secret"), "{err}");
    let wrong = sign(&body, &["whsec_someoneElse"], now).await;
    assert_eq!(deliver(&s, &body, Some(&wrong)).await.0, 400, "wrong secret");
    // (The boundary itself is a unit test's: signing takes a moment here.)
    for offset in [-310, 310] {
        let header = sign(&body, &[WHSEC], now_ms() / 1000 + offset).await;
        let (code, err) = deliver(&s, &body, Some(&header)).await;
        assert_eq!(code, 400, "{err}");
        assert!(err["error"].as_str().unwrap().contains("outside the tolerance of 300 s"), "{err}");
    }
    let (code, err) = deliver(&s, &body, None).await;
    assert_eq!((code, err["error"].as_str()), (400, Some("missing Stripe-Signature header")));
    assert_eq!(deliver(&s, &body, Some("t=abc,v1=00")).await.0, 400);
    // An API key is no signature.
    let resp =
        s.http.post(s.api_url("/v1/stripe/webhook")).bearer_auth("tly_x").body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    // A rolled secret: the old and the new one sign; any v1 may match.
    let rolled = sign(&body, &["whsec_theOldSecret", WHSEC], now).await;
    let (code, ok) = deliver(&s, &body, Some(&rolled)).await;
    assert_eq!((code, ok["effect"].as_str()), (200, Some("applied")), "{ok}");
    // Nothing refused changed anything: the status is the signed one.
    assert_eq!(entitlement(&s, "lifeco", "tokens").await["subscription_status"], "active");

    // (The recorder is the process's: only this test sends refused webhooks.)
    let m = s.metrics().await;
    let refused = |r: &str| metric_value(&m, &format!("tally_stripe_webhooks_refused_total{{reason=\"{r}\"}}"));
    assert_eq!(refused("bad_signature"), 2.0);
    assert_eq!(refused("outside_tolerance"), 2.0);
    assert_eq!(refused("missing_signature"), 2.0);
    assert_eq!(refused("malformed_signature"), 1.0);
    assert!(metric_value(&m, "tally_stripe_webhooks_total{outcome=\"applied\"}") >= 1.0);
    s.stop().await;

    // Without a secret the endpoint says why, and Stripe retries.
    let s = TestServer::start(Db::Sqlite, &config(Receiver::reserve().port)).await;
    let (code, err) = deliver(&s, &body, Some(&good)).await;
    assert_eq!(code, 503, "{err}");
    assert!(err["error"].as_str().unwrap().contains("STRIPE_WEBHOOK_SECRET"), "{err}");
    s.stop().await;
}

async fn subscription_life(db: Db) {
    let hook = Receiver::start().await;
    let s = start(db, hook.port).await;
    let t0 = now_ms() / 1000 - 600;
    let created = subscription("evt_L1", t0, "created", "trialing");
    let active = subscription("evt_L2", t0 + 10, "updated", "active");
    let failed = invoice("evt_L3", t0 + 20, "payment_failed");
    let past_due = subscription("evt_L4", t0 + 21, "updated", "past_due");
    let canceled = subscription("evt_L5", t0 + 40, "deleted", "canceled");

    assert_eq!(send_event(&s, &created).await["tenant"], "lifeco", "the metadata maps the customer");
    assert_eq!(entitlement(&s, "lifeco", "tokens").await["allowed"], true);
    assert_eq!(send_event(&s, &active).await["effect"], "applied");
    assert_eq!(send_event(&s, &active).await["effect"], "duplicate", "a redelivery changes nothing");
    assert_eq!(send_event(&s, &failed).await["subscription_status"], "past_due");
    let e = entitlement(&s, "lifeco", "tokens").await;
    assert_eq!(
        (e["allowed"].as_bool(), e["subscription_status"].as_str()),
        (Some(true), Some("past_due")),
        "grace: {e}"
    );
    assert_eq!(send_event(&s, &canceled).await["subscription_status"], "canceled");
    // Delivered late, out of order: older than what is held.
    assert_eq!(send_event(&s, &past_due).await["effect"], "stale");
    assert_eq!(send_event(&s, &created).await["effect"], "duplicate");

    let e = entitlement(&s, "lifeco", "tokens").await;
    assert_eq!((e["allowed"].as_bool(), e["reason"].as_str()), (Some(false), Some("subscription_inactive")), "{e}");
    let t = s.get_json("/v1/tenants/lifeco", None).await;
    assert_eq!(
        (t["stripe_customer_id"].as_str(), t["subscription_status"].as_str()),
        (Some("cus_Life1"), Some("canceled")),
        "{t}"
    );
    assert_eq!(t["subscription"]["id"], "sub_Life1");
    assert_eq!(t["subscription"]["last_payment"], "payment_failed");

    // Each change told once: trialing, active, past_due, canceled.
    let got = notices(&hook, 4).await;
    let statuses: Vec<String> = hook
        .accepted("/hook", 4)
        .await
        .iter()
        .map(|h| h["body"]["alerts"][0]["annotations"]["subscription_status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["trialing", "active", "past_due", "canceled"]);
    assert!(got.iter().all(|(e, t, _)| e == "subscription_status" && t == "lifeco"), "{got:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.accepted("/hook", 5).await.len(), 4, "a notice twice");

    // A tenant key asks about its own tenant only (from here on keys are needed).
    let key = tenant_key(&s, "lifeco").await;
    let ask = async |tenant: &str| {
        let url = s.api_url(&format!("/v1/entitlements?tenant={tenant}&meter=tokens"));
        s.http.get(url).bearer_auth(&key).send().await.unwrap().status().as_u16()
    };
    assert_eq!((ask("lifeco").await, ask("acme").await), (200, 403));
    s.stop().await;
}

#[tokio::test]
async fn a_subscription_life_on_sqlite() {
    subscription_life(Db::Sqlite).await;
}

#[tokio::test]
async fn a_subscription_life_on_postgres() {
    subscription_life(Db::Postgres).await;
}

fn tokens_event(id: &str, tokens: u64) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "app", "type": "llm.completion", "subject": "acme",
           "time": rfc3339(now_ms()), "data": {"tokens": tokens}})
}

/// Posts `event`; returns the answer's (accepted, duplicate).
async fn post_event(s: &TestServer, event: &Value) -> (u64, u64) {
    let resp = s.http.post(s.api_url("/v1/events")).json(&vec![event]).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    (body["accepted"].as_u64().unwrap_or(0), body["duplicate"].as_u64().unwrap_or(0))
}

async fn use_tokens(s: &TestServer, id: &str, tokens: u64) {
    assert_eq!(post_event(s, &tokens_event(id, tokens)).await, (1, 0));
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn limits_and_credits(db: Db) {
    let hook = Receiver::start().await;
    let mut s = start(db, hook.port).await;
    let answer = async |s: &TestServer| {
        let e = entitlement(s, "acme", "tokens").await;
        (e["allowed"].as_bool().unwrap(), e["reason"].as_str().unwrap().to_owned(), e["usage"].as_f64().unwrap())
    };
    assert_eq!(answer(&s).await.1, "unknown_tenant");
    use_tokens(&s, "u1", 799).await;
    assert_eq!(answer(&s).await, (true, "ok".into(), 799.0));
    use_tokens(&s, "u2", 1).await; // 80 %
    use_tokens(&s, "u3", 199).await;
    assert_eq!(answer(&s).await, (true, "ok".into(), 999.0), "one below the line");
    let line = tokens_event("u4", 1);
    assert_eq!(post_event(&s, &line).await, (1, 0));
    assert_eq!(answer(&s).await, (false, "limit_reached".into(), 1000.0), "at the line");
    assert_eq!(post_event(&s, &line).await, (0, 1), "a retry");
    assert_eq!(answer(&s).await.2, 1000.0, "a retry counts once");

    // Credits cover what is beyond the allowance, until spent.
    let put =
        s.http.put(s.api_url("/v1/tenants/acme")).json(&json!({"credits": {"tokens": 500}})).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let e = entitlement(&s, "acme", "tokens").await;
    assert_eq!((e["allowed"].as_bool(), e["credits_remaining"].as_f64()), (Some(true), Some(500.0)), "{e}");
    use_tokens(&s, "u5", 499).await;
    assert_eq!(entitlement(&s, "acme", "tokens").await["credits_remaining"], 1.0);
    use_tokens(&s, "u6", 1).await;
    assert_eq!(answer(&s).await.1, "credits_exhausted");

    // Warning, reached, exhausted: each once, also across a restart.
    let got = notices(&hook, 3).await;
    let events: Vec<&str> = got.iter().map(|n| n.0.as_str()).collect();
    assert_eq!(events, ["limit_warning", "limit_reached", "credits_exhausted"], "{got:?}");
    assert!(got.iter().all(|(_, t, m)| t == "acme" && m == "tokens"));
    s = s.restart(&config(hook.port)).await;
    assert_eq!(answer(&s).await, (false, "credits_exhausted".into(), 1500.0), "after the restart");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.accepted("/hook", 4).await.len(), 3, "a notice again after the restart");

    // A top-up re-allows; retried with its request id it adds nothing.
    for _ in 0..2 {
        let resp = s
            .http
            .post(s.api_url("/v1/tenants/acme/credits"))
            .json(&json!({"meter": "tokens", "amount": 100, "reason": "top-up", "request_id": "order-17"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let e = entitlement(&s, "acme", "tokens").await;
    assert_eq!((e["allowed"].as_bool(), e["credits_remaining"].as_f64()), (Some(true), Some(100.0)), "{e}");
    let entries = s.get_json("/v1/tenants/acme/credits", None).await;
    let kinds: Vec<&str> = entries["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["topup", "set"], "{entries}");

    // Bad input: a clear 400 naming the field.
    let bad = s
        .http
        .post(s.api_url("/v1/tenants/acme/credits"))
        .json(&json!({"meter": "tokens", "amount": -5}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("amount"));
    let bad = s.get_json("/v1/entitlements?tenant=acme&meter=nope", None).await;
    assert!(bad["error"].as_str().unwrap().contains("meter"), "{bad}");
    let tenant = s.get_json("/v1/tenants/acme", None).await;
    assert_eq!(tenant["entitlements"]["tokens"]["usage"], 1500.0, "{tenant}");
    assert_eq!(tenant["entitlements"]["tokens"]["limit"], 1000.0, "{tenant}");

    // A limit of its own lifts the tenant above the default.
    let put =
        s.http.put(s.api_url("/v1/tenants/acme")).json(&json!({"limits": {"tokens": 5000}})).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let e = entitlement(&s, "acme", "tokens").await;
    assert_eq!((e["allowed"].as_bool(), e["limit"].as_f64()), (Some(true), Some(5000.0)), "{e}");

    if s.db.url.starts_with("postgres") {
        // A second replica reaches the same answers from the database.
        let (replica, _dir) = s.replica(&config(hook.port)).await;
        let url = format!("http://{}/v1/entitlements?tenant=acme&meter=tokens", replica.api_addr);
        let mine = entitlement(&s, "acme", "tokens").await;
        wait_for("the replica to agree", async || {
            s.http.get(&url).send().await.unwrap().json::<Value>().await.unwrap() == mine
        })
        .await;
        // Usage through the replica reaches the first within a refresh.
        let event = json!({"specversion": "1.0", "id": "r1", "source": "app", "type": "llm.completion", "subject": "acme",
                           "time": rfc3339(now_ms()), "data": {"tokens": 3500}});
        let resp =
            s.http.post(format!("http://{}/v1/events", replica.api_addr)).json(&vec![event]).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        wait_for("the first to see the replica's usage", async || {
            entitlement(&s, "acme", "tokens").await["usage"] == 5000.0
        })
        .await;
        assert_eq!(entitlement(&s, "acme", "tokens").await["reason"], "ok", "credits cover the line");
        replica.shutdown().await.unwrap();
    }
    s.stop().await;
}

#[tokio::test]
async fn limits_and_credits_on_sqlite() {
    limits_and_credits(Db::Sqlite).await;
}

#[tokio::test]
async fn limits_and_credits_on_postgres_with_a_replica() {
    limits_and_credits(Db::Postgres).await;
}

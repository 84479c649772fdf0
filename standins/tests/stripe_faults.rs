//! The Stripe stand-in over real HTTP (reqwest): rate limits, the
//! concurrency rule, injected faults and signed webhooks.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, KEY, form, start};
use tally_standins::stripe::{Fault, MeterSpec, RateLimits};

#[tokio::test]
async fn global_rate_limit_in_test_mode() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    stripe.set_rate_limits(RateLimits::TEST_MODE);
    let c = Client::new(&stripe);
    let mut limited = 0;
    for _ in 0..60 {
        let a = c.get("/v1/billing/meters").await;
        if a.status == 429 {
            assert_eq!(a.body["error"]["code"], "rate_limit");
            assert!(a.message().starts_with("Request rate limit exceeded."));
            limited += 1;
        }
    }
    assert!(limited >= 10, "60 calls at 25/s: {limited} limited");
    assert_eq!(stripe.stats().rate_limited, limited);
}

#[tokio::test]
async fn one_call_at_a_time_per_customer_and_meter() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    stripe.set_processing_time(Duration::from_millis(300));
    let c = Client::new(&stripe);
    let now = stripe.now();
    let (a, b, other) = tokio::join!(
        c.event("tokens", "cus_1", "1", "c1", now),
        async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            c.event("tokens", "cus_1", "1", "c2", now).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            c.event("tokens", "cus_2", "1", "c3", now).await
        }
    );
    assert_eq!(a.status, 200);
    assert_eq!(other.status, 200);
    assert_eq!(b.status, 429, "{}", b.body);
    assert_eq!(b.header("stripe-rate-limited-reason"), Some("endpoint-concurrency"));
    assert_eq!(b.body["error"]["code"], "rate_limit");
    let max = stripe.max_concurrency();
    assert_eq!(max.get(&("cus_1".to_owned(), "tokens".to_owned())), Some(&2));
    assert_eq!(max.get(&("cus_2".to_owned(), "tokens".to_owned())), Some(&1));
    assert_eq!(stripe.stats().concurrency_limited, 1);
    assert_eq!(stripe.stats().too_many_requests(), 1);
    assert_eq!(stripe.events().len(), 2);
}

#[tokio::test]
async fn injected_faults() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    let c = Client::new(&stripe);
    let now = stripe.now();
    stripe.inject(Fault::ServerError, 1);
    let e500 = c.event("tokens", "cus_1", "1", "f1", now).await;
    assert_eq!((e500.status, e500.body["error"]["type"].as_str()), (500, Some("api_error")));
    assert_eq!(e500.header("stripe-should-retry"), Some("true"));
    stripe.inject(Fault::RateLimit, 1);
    assert_eq!(c.event("tokens", "cus_1", "1", "f1", now).await.status, 429);
    assert!(stripe.events().is_empty());
    assert_eq!(c.event("tokens", "cus_1", "1", "f1", now).await.status, 200);

    // slow: recorded, answered after the client gave up
    stripe.set_slow_delay(Duration::from_millis(1500));
    stripe.inject(Fault::Slow, 1);
    let slow = c
        .http
        .post(format!("{}/v1/billing/meter_events", c.base))
        .bearer_auth(KEY)
        .timeout(Duration::from_millis(300))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("event_name", "tokens"),
            ("payload[stripe_customer_id]", "cus_1"),
            ("payload[value]", "2"),
            ("identifier", "f2"),
        ]))
        .send()
        .await;
    assert!(slow.as_ref().is_err_and(|e| e.is_timeout()), "{slow:?}");
    assert!(stripe.events().iter().any(|e| e.identifier == "f2"));

    // reset before recording: nothing recorded
    stripe.inject(Fault::ResetBeforeRecord, 1);
    let r1 = c
        .http
        .execute(
            c.post_req(
                "/v1/billing/meter_events",
                &[
                    ("event_name", "tokens"),
                    ("payload[stripe_customer_id]", "cus_1"),
                    ("payload[value]", "3"),
                    ("identifier", "f3"),
                ],
            )
            .build()
            .expect("req"),
        )
        .await;
    assert!(r1.is_err(), "{r1:?}");
    assert!(!stripe.events().iter().any(|e| e.identifier == "f3"));

    // reset after recording: applied, the client never heard; the same
    // idempotency key replays the 200, a new key meets the duplicate rule
    stripe.inject(Fault::ResetAfterRecord, 1);
    let params = [
        ("event_name", "tokens"),
        ("payload[stripe_customer_id]", "cus_1"),
        ("payload[value]", "4"),
        ("identifier", "f4"),
    ];
    let r2 = c
        .http
        .execute(
            c.post_req("/v1/billing/meter_events", &params).header("Idempotency-Key", "ik-f4").build().expect("req"),
        )
        .await;
    assert!(r2.is_err(), "{r2:?}");
    assert!(stripe.events().iter().any(|e| e.identifier == "f4"));
    let replay = c.send(c.post_req("/v1/billing/meter_events", &params).header("Idempotency-Key", "ik-f4")).await;
    assert_eq!((replay.status, replay.header("idempotent-replayed")), (200, Some("true")));
    let dup = c.send(c.post_req("/v1/billing/meter_events", &params).header("Idempotency-Key", "ik-f4-b")).await;
    assert_eq!(dup.status, 400);
    let s = stripe.stats();
    assert_eq!(
        (
            s.injected_server_error,
            s.injected_rate_limit,
            s.injected_slow,
            s.injected_reset_before_record,
            s.injected_reset_after_record
        ),
        (1, 1, 1, 1, 1)
    );
}

#[tokio::test]
async fn seeded_fault_probabilities() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    stripe.set_fault_seed(42);
    stripe.set_faults(tally_standins::stripe::FaultPlan { server_error: 0.3, rate_limit: 0.2, ..Default::default() });
    let c = Client::new(&stripe);
    let now = stripe.now();
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(c.event("tokens", "cus_1", "1", &format!("p{i}"), now).await.status);
    }
    let n500 = statuses.iter().filter(|s| **s == 500).count() as u64;
    let n429 = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert!(n500 > 0 && n429 > 0, "{statuses:?}");
    let s = stripe.stats();
    assert_eq!((s.injected_server_error, s.injected_rate_limit), (n500, n429));
    assert_eq!(stripe.events().len() as u64, 40 - n500 - n429);
    stripe.clear_faults();
    stripe.reset();
    assert!(stripe.events().is_empty());
    assert_eq!(stripe.stats().calls, 0);
}

#[tokio::test]
async fn signed_webhooks_reach_a_receiver() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(1);
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let sig = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let _ = tx.send((sig, body.to_vec())).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let event = json!({"id": "evt_1", "object": "event", "type": "customer.subscription.updated"});
    let d = tally_standins::stripe::send_signed_event(&url, "whsec_abc", &event).await.expect("delivered");
    assert_eq!((d.status, d.body.as_str()), (200, "ok"));
    let (sig, body) = rx.recv().await.expect("received");
    let t: i64 = sig.trim_start_matches("t=").split(',').next().and_then(|t| t.parse().ok()).expect("t");
    assert_eq!(sig, tally_standins::stripe::stripe_signature_header("whsec_abc", t, &body));
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("json"), event);
}

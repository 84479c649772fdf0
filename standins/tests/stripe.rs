//! The Stripe stand-in over real HTTP (reqwest): meter events, meters,
//! summaries, adjustments and v2 streams.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Answer, Client, KEY, hour_start, start};
use tally_standins::stripe::{MeterSpec, UnknownEventName};

#[tokio::test]
async fn meter_event_is_accepted_and_answered_as_stripe_does() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    let c = Client::new(&stripe);
    let now = stripe.now();
    let a = c.event("tokens", "cus_1", "42", "ev-1", now - 10).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.header("request-id").is_some_and(|r| r.starts_with("req_")));
    assert_eq!(a.body["object"], "billing.meter_event");
    assert_eq!(a.body["identifier"], "ev-1");
    assert_eq!(a.body["timestamp"], now - 10);
    assert_eq!(a.body["payload"], json!({"stripe_customer_id": "cus_1", "value": "42"}));
    assert_eq!(a.body["livemode"], false);
    // no identifier, no timestamp: both filled in
    let b = c
        .post(
            "/v1/billing/meter_events",
            &[("event_name", "tokens"), ("payload[stripe_customer_id]", "cus_1"), ("payload[value]", "-2")],
        )
        .await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert!(b.body["identifier"].as_str().is_some_and(|s| !s.is_empty()));
    let events = stripe.events();
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].customer.as_deref(), events[0].value), (Some("cus_1"), 42));
    assert_eq!(stripe.total("tokens", "cus_1", now - 3600, now + 3600), Some(40.0));
}

#[tokio::test]
async fn authentication() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    let c = Client::new(&stripe);
    let url = format!("{}/v1/billing/meters", stripe.url());
    let none = c.send(c.http.get(&url)).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["error"]["type"], "invalid_request_error");
    assert!(none.message().starts_with("You did not provide an API key."));
    assert!(none.header("request-id").is_some());
    let bad = c.send(c.http.get(&url).bearer_auth("sk_live_abcdefgh1234")).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.message(), "Invalid API Key provided: sk_live_********1234");
    let basic = c.send(c.http.get(&url).basic_auth(KEY, Some(""))).await;
    assert_eq!(basic.status, 200, "{}", basic.body);
    assert_eq!(stripe.stats().auth_failures, 2);
    let unknown = c.get("/v1/charges").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.message().starts_with("Unrecognized request URL (GET: /v1/charges)."));
}

#[tokio::test]
async fn synchronous_refusals() {
    let stripe = start(&[MeterSpec::sum("tokens"), MeterSpec::count("calls")]).await;
    let c = Client::new(&stripe);
    let now = stripe.now();
    assert_eq!(c.event("tokens", "cus_1", "1", "dup", now).await.status, 200);
    let dup = c.event("tokens", "cus_1", "1", "dup", now).await;
    assert_eq!(dup.status, 400);
    assert_eq!(dup.body["error"]["type"], "invalid_request_error");
    assert_eq!(dup.message(), "An event already exists with identifier dup.");
    assert_eq!(dup.header("stripe-should-retry"), Some("false"));

    let old = c.event("tokens", "cus_1", "1", "old", now - 35 * 86_400 - 60).await;
    assert_eq!(old.status, 400);
    assert_eq!(old.body["error"]["param"], "timestamp");
    assert!(old.message().starts_with("The event timestamp cannot be more than 35 days in past."), "{}", old.message());
    assert_eq!(c.event("tokens", "cus_1", "1", "edge", now - 35 * 86_400 + 60).await.status, 200);
    let future = c.event("tokens", "cus_1", "1", "fut", now + 400).await;
    assert_eq!(future.status, 400);
    assert!(future.message().contains("5 minutes in future"), "{}", future.message());
    assert_eq!(c.event("tokens", "cus_1", "1", "soon", now + 240).await.status, 200);

    for bad in ["1.5", "ten", "1234567890123456"] {
        let a = c.event("tokens", "cus_1", bad, &format!("bad-{bad}"), now).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(a.body["error"]["param"], "payload[value]");
    }
    assert!(c.event("tokens", "cus_1", "1234567890123456", "d16", now).await.message().contains("at most 15 digits"));
    assert_eq!(c.event("tokens", "cus_1", "-123456789012345", "neg15", now).await.status, 200);
    // a count meter needs no value
    let count =
        c.post("/v1/billing/meter_events", &[("event_name", "calls"), ("payload[stripe_customer_id]", "cus_1")]).await;
    assert_eq!(count.status, 200, "{}", count.body);

    let missing = c.post("/v1/billing/meter_events", &[("payload[value]", "1")]).await;
    assert_eq!((missing.status, missing.body["error"]["code"].as_str()), (400, Some("parameter_missing")));
    assert_eq!(missing.message(), "Missing required param: event_name.");
    let long = "x".repeat(101);
    assert_eq!(c.event(&long, "cus_1", "1", "long", now).await.status, 400);
    assert_eq!(c.event("tokens", "cus_1", "1", &long, now).await.status, 400);
    let extra =
        c.post("/v1/billing/meter_events", &[("event_name", "tokens"), ("payload[value]", "1"), ("foo", "x")]).await;
    assert_eq!(extra.message(), "Received unknown parameter: foo");
    assert_eq!(stripe.stats().duplicate_identifiers, 1);
}

#[tokio::test]
async fn unknown_meter_and_customer_are_accepted_and_reported_later() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    stripe.set_customers(["cus_known"]);
    let c = Client::new(&stripe);
    let now = stripe.now();
    assert_eq!(c.event("nope", "cus_known", "5", "a1", now).await.status, 200);
    assert_eq!(c.event("tokens", "cus_ghost", "5", "a2", now).await.status, 200);
    assert_eq!(c.event("tokens", "cus_known", "5", "a3", now).await.status, 200);
    let codes: Vec<(String, String)> = stripe.async_errors().into_iter().map(|e| (e.identifier, e.code)).collect();
    assert_eq!(codes, vec![("a1".into(), "no_meter".into()), ("a2".into(), "meter_event_customer_not_found".into())]);
    assert_eq!(stripe.total("tokens", "cus_ghost", now - 60, now + 60), None);
    assert_eq!(stripe.total("tokens", "cus_known", now - 60, now + 60), Some(5.0));
    stripe.set_unknown_event_name(UnknownEventName::Reject);
    let refused = c.event("nope", "cus_known", "5", "a4", now).await;
    assert_eq!((refused.status, refused.body["error"]["param"].as_str()), (400, Some("event_name")));
}

#[tokio::test]
async fn idempotency_keys_replay_or_refuse() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    let c = Client::new(&stripe);
    let ts = stripe.now().to_string();
    let params = [
        ("event_name", "tokens"),
        ("payload[stripe_customer_id]", "cus_1"),
        ("payload[value]", "3"),
        ("identifier", "idem-1"),
        ("timestamp", ts.as_str()),
    ];
    let first = c.send(c.post_req("/v1/billing/meter_events", &params).header("Idempotency-Key", "k1")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = c.send(c.post_req("/v1/billing/meter_events", &params).header("Idempotency-Key", "k1")).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_ne!(again.header("request-id"), first.header("request-id"));
    let mut other = params;
    other[2] = ("payload[value]", "4");
    let clash = c.send(c.post_req("/v1/billing/meter_events", &other).header("Idempotency-Key", "k1")).await;
    assert_eq!(clash.status, 400);
    assert_eq!(clash.body["error"]["type"], "idempotency_error");
    assert!(clash.message().starts_with("Keys for idempotent requests can only be used with the same parameters"));
    assert_eq!(stripe.events().len(), 1);
    assert_eq!(stripe.stats().idempotent_replays, 1);
}

#[tokio::test]
async fn aggregation_raw_and_pre_aggregated() {
    let stripe = start(&[MeterSpec::sum("tokens"), MeterSpec::last("seats"), MeterSpec::sum("storage").hourly()]).await;
    let c = Client::new(&stripe);
    let h = hour_start(stripe.now()) - 2 * 3600;
    for (i, (name, v, ts)) in [
        ("tokens", "10", h + 100),
        ("tokens", "5", h + 200),
        ("seats", "3", h + 300),
        ("seats", "7", h + 100), // received later, but earlier in time: not "last"
        ("storage", "40", h + 1800),
        ("storage", "55", h + 60), // same hour, received later: overwrites
        ("storage", "9", h + 3600 + 10),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(c.event(name, "cus_a", v, &format!("e{i}"), *ts).await.status, 200);
    }
    assert_eq!(stripe.total("tokens", "cus_a", h, h + 3600), Some(15.0));
    assert_eq!(stripe.total("seats", "cus_a", h, h + 3600), Some(3.0));
    assert_eq!(stripe.total("storage", "cus_a", h, h + 3600), Some(55.0));
    assert_eq!(stripe.total("storage", "cus_a", h, h + 7200), Some(64.0));
    let hourly: Vec<(String, i64, f64)> =
        stripe.hourly_totals().into_iter().map(|t| (t.event_name, t.hour_start - h, t.value)).collect();
    assert_eq!(
        hourly,
        vec![
            ("seats".into(), 0, 3.0),
            ("storage".into(), 0, 55.0),
            ("storage".into(), 3600, 9.0),
            ("tokens".into(), 0, 15.0)
        ]
    );
}

#[tokio::test]
async fn adjustments_cancel_within_24_hours() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    let c = Client::new(&stripe);
    let now = stripe.now();
    c.event("tokens", "cus_1", "10", "keep", now).await;
    c.event("tokens", "cus_1", "7", "drop", now).await;
    let adj = c
        .post(
            "/v1/billing/meter_event_adjustments",
            &[("event_name", "tokens"), ("type", "cancel"), ("cancel[identifier]", "drop")],
        )
        .await;
    assert_eq!(adj.status, 200, "{}", adj.body);
    assert_eq!(adj.body["object"], "billing.meter_event_adjustment");
    assert_eq!(adj.body["status"], "pending");
    assert_eq!(adj.body["cancel"]["identifier"], "drop");
    assert_eq!(stripe.total("tokens", "cus_1", now - 60, now + 60), Some(10.0));
    let unknown = c
        .post(
            "/v1/billing/meter_event_adjustments",
            &[("event_name", "tokens"), ("type", "cancel"), ("cancel[identifier]", "never")],
        )
        .await;
    assert_eq!((unknown.status, unknown.body["error"]["param"].as_str()), (400, Some("cancel[identifier]")));
    // a day later: too late to cancel, and the identifier is free again
    stripe.advance_clock(Duration::from_secs(86_400 + 5));
    let late = c
        .post(
            "/v1/billing/meter_event_adjustments",
            &[("event_name", "tokens"), ("type", "cancel"), ("cancel[identifier]", "keep")],
        )
        .await;
    assert_eq!(late.status, 400);
    assert!(late.message().contains("within 24 hours"), "{}", late.message());
    assert_eq!(c.event("tokens", "cus_1", "1", "keep", stripe.now()).await.status, 200);
    // test API: drift
    assert!(stripe.remove_event("keep"));
    assert!(!stripe.remove_event("keep"));
}

#[tokio::test]
async fn meters_list_and_retrieve() {
    let stripe = start(&[MeterSpec::sum("a"), MeterSpec::count("b"), MeterSpec::last("c").daily()]).await;
    let c = Client::new(&stripe);
    let ids: Vec<String> = stripe.meters().into_iter().map(|m| m.id).collect();
    assert!(stripe.set_meter_active(&ids[1], false));
    let page1 = c.get("/v1/billing/meters?limit=2").await;
    assert_eq!(page1.body["object"], "list");
    assert_eq!(page1.body["url"], "/v1/billing/meters");
    assert_eq!(page1.body["has_more"], true);
    let names: Vec<&str> =
        page1.body["data"].as_array().expect("data").iter().filter_map(|m| m["event_name"].as_str()).collect();
    assert_eq!(names, ["c", "b"]); // newest first
    let last = page1.body["data"][1]["id"].as_str().expect("id");
    let page2 = c.get(&format!("/v1/billing/meters?limit=2&starting_after={last}")).await;
    assert_eq!(page2.body["has_more"], false);
    assert_eq!(page2.body["data"][0]["event_name"], "a");
    let back = c.get(&format!("/v1/billing/meters?limit=1&ending_before={}", ids[0])).await;
    assert_eq!(back.body["data"][0]["event_name"], "b");
    let active = c.get("/v1/billing/meters?status=active").await;
    assert_eq!(active.body["data"].as_array().map(Vec::len), Some(2));
    let one = c.get(&format!("/v1/billing/meters/{}", ids[2])).await;
    assert_eq!(one.body["event_time_window"], "day");
    assert_eq!(one.body["default_aggregation"]["formula"], "last");
    assert_eq!(one.body["customer_mapping"], json!({"event_payload_key": "stripe_customer_id", "type": "by_id"}));
    assert_eq!(c.get("/v1/billing/meters/mtr_missing").await.status, 404);
    let created = c
        .post(
            "/v1/billing/meters",
            &[
                ("display_name", "Storage"),
                ("event_name", "storage"),
                ("default_aggregation[formula]", "sum"),
                ("event_time_window", "hour"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.body["id"].as_str().is_some_and(|i| i.starts_with("mtr_")));
}

#[tokio::test]
async fn event_summaries_paginate_align_and_lag() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    let c = Client::new(&stripe);
    let id = stripe.meters()[0].id.clone();
    let now = stripe.now();
    let day = now - now.rem_euclid(86_400) - 86_400; // yesterday 00:00 UTC
    for i in 0..5 {
        c.event("tokens", "cus_1", &(i + 1).to_string(), &format!("s{i}"), day + i * 3600 + 5).await;
    }
    let base =
        format!("/v1/billing/meters/{id}/event_summaries?customer=cus_1&start_time={day}&end_time={}", day + 86_400);
    let whole = c.get(&base).await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    assert_eq!(whole.body["data"][0]["aggregated_value"], 15.0);
    assert_eq!(whole.body["data"][0]["object"], "billing.meter_event_summary");
    let p1 = c.get(&format!("{base}&value_grouping_window=hour&limit=2")).await;
    let starts = |a: &Answer| -> Vec<i64> {
        a.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|s| s["start_time"].as_i64())
            .map(|t| (t - day) / 3600)
            .collect()
    };
    assert_eq!(starts(&p1), [4, 3]);
    assert_eq!(p1.body["has_more"], true);
    let cursor = p1.body["data"][1]["id"].as_str().expect("id");
    let p2 = c.get(&format!("{base}&value_grouping_window=hour&limit=2&starting_after={cursor}")).await;
    assert_eq!(starts(&p2), [2, 1]);
    let daily = c.get(&format!("{base}&value_grouping_window=day")).await;
    assert_eq!(daily.body["data"][0]["aggregated_value"], 15.0);
    // alignment
    let misaligned = c
        .get(&format!(
            "/v1/billing/meters/{id}/event_summaries?customer=cus_1&start_time={}&end_time={}",
            day + 30,
            day + 3600
        ))
        .await;
    assert_eq!((misaligned.status, misaligned.body["error"]["param"].as_str()), (400, Some("start_time")));
    let not_hour = c.get(&format!("/v1/billing/meters/{id}/event_summaries?customer=cus_1&start_time={}&end_time={}&value_grouping_window=hour", day + 60, day + 3600)).await;
    assert_eq!(not_hour.status, 400);
    let not_day = c.get(&format!("/v1/billing/meters/{id}/event_summaries?customer=cus_1&start_time={}&end_time={}&value_grouping_window=day", day + 3600, day + 86_400)).await;
    assert_eq!(not_day.status, 400);
    assert_eq!(
        c.get(&format!("/v1/billing/meters/{id}/event_summaries?start_time={day}&end_time={}", day + 60))
            .await
            .message(),
        "Missing required param: customer."
    );
    assert_eq!(c.get(&format!("{base}&limit=101")).await.status, 400);
    // eventual consistency
    stripe.set_summary_lag(Duration::from_secs(600));
    c.event("tokens", "cus_1", "100", "late", day + 7 * 3600).await;
    assert_eq!(c.get(&base).await.body["data"][0]["aggregated_value"], 0.0);
    stripe.set_summary_lag(Duration::ZERO);
    assert_eq!(c.get(&base).await.body["data"][0]["aggregated_value"], 115.0);
}

#[tokio::test]
async fn v2_sessions_and_streams() {
    let stripe = start(&[MeterSpec::sum("tokens")]).await;
    let c = Client::new(&stripe);
    let session = c
        .send(c.http.post(format!("{}/v2/billing/meter_event_session", c.base)).bearer_auth(KEY).json(&json!({})))
        .await;
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(session.body["object"], "v2.billing.meter_event_session");
    let token = session.body["authentication_token"].as_str().expect("token").to_owned();
    let expires = session.body["expires_at"].as_str().expect("expires_at");
    let created = session.body["created"].as_str().expect("created");
    let (e, cr) = (
        chrono::DateTime::parse_from_rfc3339(expires).expect("rfc3339"),
        chrono::DateTime::parse_from_rfc3339(created).expect("rfc3339"),
    );
    assert_eq!((e - cr).num_seconds(), 900);
    let stream = |body: Value, token: &str| {
        c.http.post(format!("{}/v2/billing/meter_event_stream", c.base)).bearer_auth(token).json(&body)
    };
    let ts = chrono::DateTime::from_timestamp(stripe.now(), 0).expect("ts").to_rfc3339();
    let ok = c
        .send(stream(
            json!({"events": [
                {"event_name": "tokens", "identifier": "v2-1", "payload": {"stripe_customer_id": "cus_1", "value": "5"}, "timestamp": ts},
                {"event_name": "tokens", "identifier": "v2-1", "payload": {"stripe_customer_id": "cus_1", "value": "5"}},
                {"event_name": "tokens", "identifier": "v2-bad", "payload": {"stripe_customer_id": "cus_1", "value": "x"}},
                {"event_name": "tokens", "payload": {"stripe_customer_id": "cus_1", "value": "2"}}
            ]}),
            &token,
        ))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body, json!({}));
    assert_eq!(stripe.events().len(), 2);
    assert_eq!(stripe.stats().stream_duplicates_dropped, 1);
    assert_eq!(
        stripe.async_errors().iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
        ["meter_event_invalid_value"]
    );
    let many: Vec<Value> = (0..101).map(|i| json!({"event_name": "tokens", "identifier": format!("m{i}"), "payload": {"stripe_customer_id": "cus_1", "value": "1"}})).collect();
    assert_eq!(c.send(stream(json!({ "events": many }), &token)).await.status, 400);
    let with_key = c.send(stream(json!({"events": [{"event_name": "tokens", "payload": {"value": "1"}}]}), KEY)).await;
    assert_eq!(with_key.status, 401);
    stripe.advance_clock(Duration::from_secs(901));
    let expired = c
        .send(stream(
            json!({"events": [{"event_name": "tokens", "payload": {"stripe_customer_id": "cus_1", "value": "1"}}]}),
            &token,
        ))
        .await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.body["error"]["code"], "billing_meter_event_session_expired");
    assert_eq!(expired.body["error"]["type"], "temporary_session_expired");
}

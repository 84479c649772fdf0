//! Billing-grade usage events on SQLite and PostgreSQL: exactly once under
//! concurrent retries, conflicts refused, bad events refused one by one,
//! nothing lost or doubled across a restart, and the usage queries.

use serde_json::{Value, json};

use crate::support::*;

const METERS: &str = r#"
[[meters]]
name = "llm_tokens"
aggregation = "sum"
unit = "tokens"
event_type = "llm.completion"
value = "$.tokens"
group_by = { model = "$.model" }

[[meters]]
name = "llm_calls"
aggregation = "count"
unit = "calls"
event_type = "llm.completion"

[[meters]]
name = "storage_gb"
aggregation = "max"
unit = "GB"
event_type = "storage.snapshot"
value = "$.gb"

[[meters]]
name = "active_users"
aggregation = "unique_count"
unit = "users"
event_type = "user.active"
value = "$.user"
"#;

fn completion(id: &str, tenant: &str, time: &str, tokens: u64, model: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "llm-gateway", "type": "llm.completion",
           "subject": tenant, "time": time, "data": {"tokens": tokens, "model": model}})
}

async fn post_events(s: &TestServer, content_type: &str, body: &Value) -> (u16, Value) {
    let resp = s
        .http
        .post(s.api_url("/v1/events"))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn usage(s: &TestServer, query: &str) -> Value {
    let resp = s.http.get(s.api_url(&format!("/v1/usage?{query}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{query}");
    resp.json().await.unwrap()
}

async fn exactly_once_and_conflicts(db: Db) {
    let s = TestServer::start(db, METERS).await;
    let event = completion("evt-1", "acme", "2026-10-05T10:15:00Z", 120, "gpt-x");

    // The same event 20 times at once: one accepted, 19 duplicates.
    let sends = (0..20).map(|_| post_events(&s, "application/cloudevents+json", &event));
    let answers = futures::future::join_all(sends).await;
    let mut statuses: Vec<&str> = answers
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            body["results"][0]["status"].as_str().unwrap()
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses.iter().filter(|s| **s == "accepted").count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "duplicate").count(), 19, "{statuses:?}");
    assert_eq!(s.usage_total("acme", "llm_tokens").await, 120.0);
    assert_eq!(s.usage_total("acme", "llm_calls").await, 1.0);

    // Same source and id, other content: a conflict, never counted.
    let changed = completion("evt-1", "acme", "2026-10-05T10:15:00Z", 999, "gpt-x");
    let (code, body) = post_events(&s, "application/json", &changed).await;
    assert_eq!(code, 200);
    assert_eq!(body["results"][0]["status"], "conflict", "{body}");
    assert_eq!(s.usage_total("acme", "llm_tokens").await, 120.0);

    // The same id from another source, or for another tenant, is another event.
    let mut other_source = event.clone();
    other_source["source"] = json!("batch-job");
    let (_, body) = post_events(&s, "application/json", &json!([other_source])).await;
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(s.usage_total("acme", "llm_tokens").await, 240.0);
    s.stop().await;
}

#[tokio::test]
async fn exactly_once_and_conflicts_on_sqlite() {
    exactly_once_and_conflicts(Db::Sqlite).await;
}

#[tokio::test]
async fn exactly_once_and_conflicts_on_postgres() {
    exactly_once_and_conflicts(Db::Postgres).await;
}

async fn bad_events_are_refused_one_by_one(db: Db) {
    let s = TestServer::start(db, &format!("{METERS}\n[events]\nmax_batch = 10")).await;
    let good = completion("ok-1", "acme", "2026-10-05T10:00:00Z", 10, "m");
    let mut no_id = completion("x", "acme", "2026-10-05T10:00:00Z", 1, "m");
    no_id.as_object_mut().unwrap().remove("id");
    let wrong_type = completion("bad-2", "acme", "2026-10-05T10:00:00Z", 1, "m");
    let mut wrong_type = wrong_type;
    wrong_type["data"]["tokens"] = json!("ten");
    let mut bad_time = completion("bad-3", "acme", "2026-10-05T10:00:00Z", 1, "m");
    bad_time["time"] = json!("05/10/2026");
    let mut unknown = completion("bad-4", "acme", "2026-10-05T10:00:00Z", 1, "m");
    unknown["type"] = json!("video.minutes");
    let good2 = completion("ok-2", "acme", "2026-10-05T11:00:00Z", 5, "m");
    let batch = json!([good, no_id, wrong_type, bad_time, unknown, good2]);

    let (code, body) = post_events(&s, "application/cloudevents-batch+json", &batch).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(2), Some(4)), "{body}");
    let reasons: Vec<&str> = body["results"].as_array().unwrap().iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(reasons[0].starts_with("id: required"), "{reasons:?}");
    assert!(reasons[1].starts_with("data.tokens: must be a number"), "{reasons:?}");
    assert!(reasons[2].starts_with("time:"), "{reasons:?}");
    assert!(reasons[3].starts_with("type: no meter"), "{reasons:?}");
    assert_eq!(s.usage_total("acme", "llm_tokens").await, 15.0);

    // Whole-request errors: oversize batch, not JSON, wrong shape, wrong type.
    let big: Vec<Value> =
        (0..11).map(|i| completion(&format!("big-{i}"), "acme", "2026-10-05T10:00:00Z", 1, "m")).collect();
    let (code, body) = post_events(&s, "application/json", &json!(big)).await;
    assert_eq!(code, 413);
    assert!(body["error"].as_str().unwrap().contains("events.max_batch (10)"), "{body}");
    let resp =
        s.http.post(s.api_url("/v1/events")).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let (code, _) = post_events(&s, "application/cloudevents+json", &json!([])).await;
    assert_eq!(code, 400);
    let resp =
        s.http.post(s.api_url("/v1/events")).header("content-type", "text/csv").body("a,b").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(s.usage_total("acme", "llm_tokens").await, 15.0);
    s.stop().await;
}

#[tokio::test]
async fn bad_events_are_refused_one_by_one_on_sqlite() {
    bad_events_are_refused_one_by_one(Db::Sqlite).await;
}

#[tokio::test]
async fn bad_events_are_refused_one_by_one_on_postgres() {
    bad_events_are_refused_one_by_one(Db::Postgres).await;
}

async fn restart_loses_nothing_and_doubles_nothing(db: Db) {
    let s = TestServer::start(db, METERS).await;
    let batch_a: Vec<Value> =
        (0..50).map(|i| completion(&format!("a-{i}"), "acme", "2026-10-06T09:30:00Z", 3, "m")).collect();
    let (_, body) = post_events(&s, "application/json", &json!(batch_a)).await;
    assert_eq!(body["accepted"], 50);

    let s = s.restart(METERS).await;
    // The sender did not see the first answer and sends A again, then B.
    let (_, body) = post_events(&s, "application/json", &json!(batch_a)).await;
    assert_eq!((body["accepted"].as_u64(), body["duplicate"].as_u64()), (Some(0), Some(50)), "{body}");
    let batch_b: Vec<Value> =
        (0..30).map(|i| completion(&format!("b-{i}"), "acme", "2026-10-06T10:30:00Z", 2, "m")).collect();
    let (_, body) = post_events(&s, "application/json", &json!(batch_b)).await;
    assert_eq!(body["accepted"], 30);
    assert_eq!(s.usage_total("acme", "llm_tokens").await, 50.0 * 3.0 + 30.0 * 2.0);
    assert_eq!(s.usage_total("acme", "llm_calls").await, 80.0);
    s.stop().await;
}

#[tokio::test]
async fn restart_loses_nothing_and_doubles_nothing_on_sqlite() {
    restart_loses_nothing_and_doubles_nothing(Db::Sqlite).await;
}

#[tokio::test]
async fn restart_loses_nothing_and_doubles_nothing_on_postgres() {
    restart_loses_nothing_and_doubles_nothing(Db::Postgres).await;
}

async fn usage_queries_window_group_and_aggregate(db: Db) {
    let s = TestServer::start(db, METERS).await;
    let events = json!([
        completion("q1", "acme", "2026-10-05T10:15:00Z", 100, "small"),
        completion("q2", "acme", "2026-10-05T10:45:00Z", 50, "large"),
        completion("q3", "acme", "2026-10-05T13:00:00Z", 10, "small"),
        completion("q4", "acme", "2026-10-20T08:00:00Z", 7, "large"),
        completion("q5", "globex", "2026-10-05T10:15:00Z", 1000, "small"),
        {"specversion": "1.0", "id": "s1", "source": "blob", "type": "storage.snapshot", "subject": "acme",
         "time": "2026-10-05T00:00:00Z", "data": {"gb": 12.5}},
        {"specversion": "1.0", "id": "s2", "source": "blob", "type": "storage.snapshot", "subject": "acme",
         "time": "2026-10-06T00:00:00Z", "data": {"gb": 20}},
        {"specversion": "1.0", "id": "s3", "source": "blob", "type": "storage.snapshot", "subject": "acme",
         "time": "2026-10-07T00:00:00Z", "data": {"gb": 15}},
        {"specversion": "1.0", "id": "u1", "source": "web", "type": "user.active", "subject": "acme",
         "time": "2026-10-05T09:00:00Z", "data": {"user": "ann"}},
        {"specversion": "1.0", "id": "u2", "source": "web", "type": "user.active", "subject": "acme",
         "time": "2026-10-05T17:00:00Z", "data": {"user": "ann"}},
        {"specversion": "1.0", "id": "u3", "source": "web", "type": "user.active", "subject": "acme",
         "time": "2026-10-06T09:00:00Z", "data": {"user": "bob"}},
    ]);
    let (_, body) = post_events(&s, "application/json", &events).await;
    assert_eq!(body["accepted"], 11, "{body}");

    let range = "from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z";
    let hourly = usage(&s, &format!("tenant=acme&meter=llm_tokens&{range}&window=hour")).await;
    assert_eq!(hourly["total"], 167.0);
    let points: Vec<(String, f64)> = hourly["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_str().unwrap().to_owned(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        points,
        [
            ("2026-10-05T10:00:00Z".to_owned(), 150.0),
            ("2026-10-05T13:00:00Z".to_owned(), 10.0),
            ("2026-10-20T08:00:00Z".to_owned(), 7.0)
        ]
    );
    let daily = usage(&s, &format!("tenant=acme&meter=llm_tokens&{range}&window=day&group_by=model")).await;
    let by_model: Vec<(String, String, f64)> = daily["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_str().unwrap().to_owned(),
                p["group"]["model"].as_str().unwrap().to_owned(),
                p["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_model,
        [
            ("2026-10-05T00:00:00Z".into(), "large".into(), 50.0),
            ("2026-10-05T00:00:00Z".into(), "small".into(), 110.0),
            ("2026-10-20T00:00:00Z".into(), "large".into(), 7.0)
        ]
    );
    let monthly = usage(&s, &format!("tenant=acme&meter=llm_calls&{range}&window=month")).await;
    assert_eq!(monthly["series"][0]["start"], "2026-10-01T00:00:00Z");
    assert_eq!(monthly["series"][0]["value"], 4.0);
    // Storage billed by the period's peak; users counted distinctly.
    assert_eq!(s.usage_total("acme", "storage_gb").await, 20.0);
    assert_eq!(s.usage_total("acme", "active_users").await, 2.0);
    let daily_users = usage(&s, &format!("tenant=acme&meter=active_users&{range}&window=day")).await;
    let values: Vec<f64> =
        daily_users["series"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(values, [1.0, 1.0]);
    // Tenants are separate.
    assert_eq!(s.usage_total("globex", "llm_tokens").await, 1000.0);

    let summary: Value = s.get_json("/v1/usage/summary?tenant=acme&period=2026-10", None).await;
    assert_eq!(summary["period"], "2026-10");
    let meters: Vec<(String, f64)> = summary["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["meter"].as_str().unwrap().to_owned(), m["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        meters,
        [
            ("llm_tokens".to_owned(), 167.0),
            ("llm_calls".to_owned(), 4.0),
            ("storage_gb".to_owned(), 20.0),
            ("active_users".to_owned(), 2.0)
        ]
    );
    // Query errors name the parameter.
    let resp = s
        .http
        .get(s.api_url("/v1/usage?tenant=acme&meter=nope&from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("meter"));
    let resp = s.http.get(s.api_url("/v1/usage/summary?tenant=acme&period=October")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn usage_queries_window_group_and_aggregate_on_sqlite() {
    usage_queries_window_group_and_aggregate(Db::Sqlite).await;
}

#[tokio::test]
async fn usage_queries_window_group_and_aggregate_on_postgres() {
    usage_queries_window_group_and_aggregate(Db::Postgres).await;
}

//! What the ledger refuses, and that refusing it costs nobody else: values
//! beyond a meter's bound (sums stay finite), text the database cannot
//! store (NUL), commits isolating a request the database refuses, and
//! content compared by value (`1` and `1.0` are one event).

use serde_json::{Value, json};
use tally_collector::{LedgerError, UsageLedger};
use tally_core::{TenantId, UsageOutcome, UsageRecord};
use tally_store::Store;

use crate::support::*;

const METERS: &str = r#"
[[meters]]
name = "llm_tokens"
aggregation = "sum"
event_type = "llm.completion"
value = "$.tokens"
"#;

/// An event an hour old (one time for the whole test run, so a resend is
/// the same content).
fn event(id: &str, source: &str, tenant: &str, tokens: Value) -> Value {
    static TIME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let time = TIME.get_or_init(|| rfc3339(now_ms() - 3_600_000));
    json!({"specversion": "1.0", "id": id, "source": source, "type": "llm.completion",
           "subject": tenant, "time": time, "data": {"tokens": tokens}})
}

async fn post(s: &TestServer, body: &Value) -> (u16, Value) {
    let resp = s.http.post(s.api_url("/v1/events")).json(body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn sums_stay_finite(db: Db) {
    let s = TestServer::start(db, METERS).await;
    let huge = [event("h1", "gw", "acme", json!(1.7e308)), event("h2", "gw", "acme", json!(1.7e308))];
    let (code, body) = post(&s, &json!(huge)).await;
    assert_eq!(code, 200, "{body}");
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["status"], "rejected", "{body}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.starts_with("data.tokens:") && reason.contains("max_value (1000000000000000)"), "{reason}");
    }
    let ok = [event("m1", "gw", "acme", json!(1e15)), event("m2", "gw", "acme", json!(1e15))];
    let (_, body) = post(&s, &json!(ok)).await;
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(s.usage_total("acme", "llm_tokens").await, 2e15);
    let summary = s.get_json("/v1/usage/summary?tenant=acme", None).await;
    assert_eq!(summary["meters"][0]["value"].as_f64(), Some(2e15), "{summary}");
    s.stop().await;
}

#[tokio::test]
async fn values_beyond_a_meters_bound_are_refused_on_sqlite() {
    sums_stay_finite(Db::Sqlite).await;
}

#[tokio::test]
async fn values_beyond_a_meters_bound_are_refused_on_postgres() {
    sums_stay_finite(Db::Postgres).await;
}

/// One tenant sends events carrying NUL (which PostgreSQL refuses) while
/// another sends 100 batches: every innocent batch is accepted, the poison
/// is rejected per event with a reason (not a 503 inviting retries).
#[tokio::test]
async fn a_poisoned_event_costs_no_other_request() {
    let s = TestServer::start(Db::Postgres, METERS).await;
    let innocent = (0..100).map(|b| {
        let batch: Vec<Value> = (0..10).map(|i| event(&format!("ok-{b}-{i}"), "gw", "innocent", json!(1))).collect();
        let s = &s;
        async move { post(s, &json!(batch)).await }
    });
    let poison = (0..33).map(|b| {
        let batch = json!([
            event(&format!("bad\u{0}{b}"), "gw", "poison", json!(1)),
            event(&format!("bad-{b}"), "g\u{0}w", "poison", json!(1)),
        ]);
        let s = &s;
        async move { post(s, &batch).await }
    });
    let (innocent, poison) = tokio::join!(futures::future::join_all(innocent), futures::future::join_all(poison));
    for (code, body) in &innocent {
        assert_eq!((*code, body["accepted"].as_u64()), (200, Some(10)), "{body}");
    }
    for (code, body) in &poison {
        assert_eq!((*code, body["rejected"].as_u64()), (200, Some(2)), "{body}");
        for r in body["results"].as_array().unwrap() {
            assert!(r["reason"].as_str().unwrap().contains("must not contain NUL"), "{body}");
        }
    }
    assert_eq!(s.usage_total("innocent", "llm_tokens").await, 1000.0);
    s.stop().await;
}

fn record(tenant: &str, source: &str, id: &str) -> UsageRecord {
    UsageRecord {
        tenant: TenantId::parse(tenant).unwrap(),
        source: source.into(),
        event_id: id.into(),
        meter: "llm_tokens".into(),
        value: 1.0,
        distinct_key: None,
        event_time_ms: now_ms(),
        group_key: "{}".into(),
        content_hash: "h".into(),
        legacy: None,
    }
}

/// Below the API's checks: if the database still refuses a commit for what
/// one request holds, the group commit retries request by request, so only
/// that one fails — and with a non-retriable error.
#[tokio::test]
async fn the_group_commit_isolates_a_refused_request() {
    let db = TestDb::new(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db.url, dir.path()).await.unwrap();
    store.migrate().await.unwrap();
    let (ledger, task) = UsageLedger::start(store.clone(), 5000, 1);
    let send = |records: Vec<UsageRecord>| {
        let ledger: UsageLedger = ledger.clone();
        async move { ledger.record(records).await }
    };
    // Enough requests at once that they share transactions.
    let good = (0..50).map(|i| send(vec![record("innocent", "gw", &format!("e{i}"))]));
    let bad = send(vec![record("poison", "g\u{0}w", "x")]);
    let (good, bad) = tokio::join!(futures::future::join_all(good), bad);
    for g in good {
        assert_eq!(g.unwrap(), [UsageOutcome::Accepted]);
    }
    assert!(matches!(bad, Err(LedgerError::Refused(_))), "{bad:?}");
    drop(ledger);
    task.await.unwrap();
    store.close().await;
    db.drop_db().await;
}

/// `1` and `1.0` are the same content: a resend is a duplicate, not a conflict.
async fn numbers_compare_by_value(db: Db) {
    let s = TestServer::start(db, METERS).await;
    let (_, first) = post(&s, &event("n1", "gw", "acme", json!(1))).await;
    assert_eq!(first["accepted"], 1, "{first}");
    let (_, again) = post(&s, &event("n1", "gw", "acme", json!(1.0))).await;
    assert_eq!(again["duplicate"], 1, "{again}");
    let (_, other) = post(&s, &event("n1", "gw", "acme", json!(2))).await;
    assert_eq!(other["conflict"], 1, "{other}");
    s.stop().await;
}

#[tokio::test]
async fn numbers_compare_by_value_on_sqlite() {
    numbers_compare_by_value(Db::Sqlite).await;
}

#[tokio::test]
async fn numbers_compare_by_value_on_postgres() {
    numbers_compare_by_value(Db::Postgres).await;
}

/// `window=week`: ISO weeks, starting Monday 00:00 UTC.
#[tokio::test]
async fn weekly_windows_start_on_monday() {
    let s = TestServer::start(Db::Sqlite, METERS).await;
    let at = |id: &str, time: &str| {
        json!({"specversion": "1.0", "id": id, "source": "gw", "type": "llm.completion", "subject": "acme",
               "time": time, "data": {"tokens": 10}})
    };
    let batch = json!([
        at("sun", "2026-11-22T23:59:00Z"),
        at("mon", "2026-11-23T00:00:00Z"),
        at("wed", "2026-11-25T12:00:00Z"),
    ]);
    assert_eq!(post(&s, &batch).await.1["accepted"], 3);
    let v = s
        .get_json(
            "/v1/usage?tenant=acme&meter=llm_tokens&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&window=week",
            None,
        )
        .await;
    let points: Vec<(String, f64)> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_str().unwrap().to_owned(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(points, [("2026-11-16T00:00:00Z".to_owned(), 10.0), ("2026-11-23T00:00:00Z".to_owned(), 20.0)]);
    s.stop().await;
}

//! Losing the database under load: tally's connections are cut, then its
//! PostgreSQL crashes and comes back. Meanwhile usage-event clients get 503
//! with Retry-After (never a 500, never a lost acknowledgement), `/readyz`
//! says not ready, and tally recovers by itself — same process, no restart.
//! At the end every acknowledged event is stored exactly once.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{private_pg::PrivatePostgres, support::*};

const METERS: &str = r#"
[[meters]]
name = "llm_tokens"
aggregation = "sum"
unit = "tokens"
event_type = "llm.completion"
value = "$.tokens"
"#;

#[derive(Default)]
struct Seen {
    sent: BTreeSet<String>,
    acked: BTreeSet<String>,
    statuses: Vec<u16>,
    unavailable_without_retry_after: u32,
}

fn event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "db-loss", "type": "llm.completion",
           "subject": "acme", "time": "2026-10-05T10:15:00Z", "data": {"tokens": 1}})
}

async fn post(http: &reqwest::Client, url: &str, ids: &[String]) -> Result<(u16, bool, Value), reqwest::Error> {
    let body = Value::Array(ids.iter().map(|id| event(id)).collect());
    let resp = http
        .post(url)
        .header("content-type", "application/cloudevents-batch+json")
        .timeout(Duration::from_secs(20))
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().contains_key("retry-after");
    Ok((status, retry_after, resp.json().await.unwrap_or(Value::Null)))
}

async fn ready(s: &TestServer) -> u16 {
    let resp = s.http.get(s.api_url("/readyz")).timeout(Duration::from_secs(15)).send().await;
    resp.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn wait_ready(s: &TestServer, want: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = ready(s).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz answered {got}, waited for {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn connections_cut_and_a_database_crash_answer_503_and_lose_nothing() {
    let pg = PrivatePostgres::start();
    pg.psql("CREATE ROLE tally LOGIN PASSWORD 'db-loss-pw'");
    pg.psql("CREATE DATABASE tally OWNER tally");
    let url = format!("postgres://tally:db-loss-pw@127.0.0.1:{}/tally", pg.port);
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_on(TestDb::external(&url), dir, METERS, Vec::new()).await;
    let events_url = s.api_url("/v1/events");

    // Four clients send batches of 5 new events each, without pause, and
    // record what was acknowledged.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (seen, stop, url, http) = (seen.clone(), stop.clone(), events_url.clone(), s.http.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..5).map(|i| format!("c{c}-{n}-{i}")).collect();
                    n += 1;
                    seen.lock().unwrap().sent.extend(ids.iter().cloned());
                    let Ok((status, retry_after, body)) = post(&http, &url, &ids).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    {
                        let mut seen = seen.lock().unwrap();
                        seen.statuses.push(status);
                        if status == 200 {
                            let results = body["results"].as_array().cloned().unwrap_or_default();
                            for (id, r) in ids.iter().zip(results) {
                                if matches!(r["status"].as_str(), Some("accepted" | "duplicate")) {
                                    seen.acked.insert(id.clone());
                                }
                            }
                        } else if status == 503 && !retry_after {
                            seen.unavailable_without_retry_after += 1;
                        }
                    }
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();

    let acked = || seen.lock().unwrap().acked.len();
    let wait_more = |from: usize, what: &'static str| {
        let acked = &acked;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked() < from + 50 {
                assert!(Instant::now() < deadline, "no acknowledgements {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_more(0, "at the start").await;

    // 1. Every connection tally holds is cut.
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tally'");
    wait_more(acked(), "after the connections were cut").await;

    // 2. The server crashes: not ready, 503s; then it is back.
    pg.stop();
    let down_at = acked();
    wait_ready(&s, 503, 30).await;
    // Requests waiting for a connection get their 503 within the pool's
    // acquire timeout (3 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = seen.lock().unwrap().statuses.len();
    pg.start_server();
    wait_ready(&s, 200, 60).await;
    wait_more(acked(), "after the database came back").await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.statuses[..during].contains(&503), "clients saw 503 while the database was down");
    assert!(seen.statuses.iter().all(|s| matches!(s, 200 | 503)), "only 200 and 503: {:?}", seen.statuses);
    assert_eq!(seen.unavailable_without_retry_after, 0, "every 503 says when to come back");
    assert!(seen.acked.len() > down_at, "tally took events again without a restart");

    // Every acknowledged event is stored: sent again, each is a duplicate.
    let ids: Vec<String> = seen.acked.iter().cloned().collect();
    for chunk in ids.chunks(100) {
        let (status, _, body) = post(&s.http, &events_url, chunk).await.unwrap();
        assert_eq!(status, 200, "{body}");
        for r in body["results"].as_array().unwrap() {
            assert_eq!(r["status"], "duplicate", "an acknowledged event was lost: {r}");
        }
    }
    // And once: with every event ever sent stored now (the unacknowledged
    // ones land or are duplicates), the ledger counts each exactly once.
    let all: Vec<String> = seen.sent.iter().cloned().collect();
    for chunk in all.chunks(100) {
        let (status, _, body) = post(&s.http, &events_url, chunk).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(s.usage_total("acme", "llm_tokens").await, all.len() as f64);
    s.stop().await;
}

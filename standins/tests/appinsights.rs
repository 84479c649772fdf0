//! The Application Insights ingestion stand-in over real HTTP.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};
use tally_standins::appinsights::{Behaviour, FakeIngestion, IngestionConfig};

const IKEY: &str = "11111111-2222-3333-4444-555555555555";

fn envelope(n: usize) -> Value {
    json!({"name": "Microsoft.ApplicationInsights.Message", "time": "2026-11-30T00:27:28.404488Z", "iKey": IKEY,
           "tags": {"ai.cloud.role": "tally"},
           "data": {"baseType": "MessageData", "baseData": {"ver": 2, "message": format!("m{n}"), "severityLevel": 1}}})
}

async fn start() -> FakeIngestion {
    FakeIngestion::start(IngestionConfig { ikey: IKEY.into(), ..IngestionConfig::default() }).await.expect("start")
}

async fn post(
    url: &str,
    body: Vec<u8>,
    gzip: bool,
    ndjson: bool,
) -> reqwest::Result<(u16, reqwest::header::HeaderMap, Value)> {
    let mut req = reqwest::Client::new()
        .post(format!("{url}v2.1/track"))
        .header("Content-Type", if ndjson { "application/x-json-stream" } else { "application/json" });
    let body = if gzip {
        req = req.header("Content-Encoding", "gzip");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).expect("gzip");
        gz.finish().expect("gzip")
    } else {
        body
    };
    let resp = req.body(body).send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Ok((status, headers, resp.json().await.unwrap_or(Value::Null)))
}

fn array(n: usize) -> Vec<u8> {
    serde_json::to_vec(&(0..n).map(envelope).collect::<Vec<_>>()).expect("json")
}

#[tokio::test]
async fn accepts_arrays_ndjson_and_gzip() {
    let ai = start().await;
    let (status, _, body) = post(&ai.url(), array(3), false, false).await.expect("post");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"itemsReceived": 3, "itemsAccepted": 3, "errors": []}));
    let nd = (0..2).map(|i| envelope(10 + i).to_string()).collect::<Vec<_>>().join("\n");
    assert_eq!(post(&ai.url(), nd.into_bytes(), true, true).await.expect("post").0, 200);
    assert_eq!(ai.accepted().len(), 5);
    let log = ai.requests();
    assert_eq!((log[0].gzip, log[1].gzip), (false, true));
    assert_eq!(log[1].content_type.as_deref(), Some("application/x-json-stream"));
    assert_eq!((log[1].items_received, log[1].items_accepted, log[1].status), (2, 2, 200));
    // the same batch again: every envelope is a duplicate
    post(&ai.url(), array(3), false, false).await.expect("post");
    assert_eq!(ai.duplicates().len(), 3);
    assert!(ai.connection_string().contains(&format!("InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.1:")));
}

#[tokio::test]
async fn invalid_items_are_refused_one_by_one() {
    let ai = start().await;
    let mut items: Vec<Value> = (0..3).map(envelope).collect();
    items[1]["iKey"] = json!("wrong");
    items[2].as_object_mut().expect("obj").remove("data");
    let (status, _, body) =
        post(&ai.url(), serde_json::to_vec(&items).expect("json"), false, false).await.expect("post");
    assert_eq!(status, 206);
    assert_eq!(body["itemsAccepted"], 1);
    let idx: Vec<(i64, i64)> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["index"].as_i64().unwrap_or(-1), e["statusCode"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(idx, [(1, 400), (2, 400)]);
    let (status, _, _) = post(&ai.url(), b"{not json".to_vec(), false, false).await.expect("post");
    assert_eq!(status, 400);
}

#[tokio::test]
async fn scripted_answers() {
    let ai = start().await;
    let other = start().await;
    ai.push(Behaviour::Partial(vec![(1, 500), (2, 400), (3, 429)]));
    ai.push(Behaviour::Throttle { retry_after: Some(7) });
    ai.push(Behaviour::Status(503));
    ai.push(Behaviour::Status(439));
    ai.push(Behaviour::Status(402));
    ai.push(Behaviour::Redirect { status: 307, base: other.url() });
    let (s, _, body) = post(&ai.url(), array(4), false, false).await.expect("post");
    assert_eq!((s, body["itemsAccepted"].as_i64()), (206, Some(1)));
    let codes: Vec<i64> =
        body["errors"].as_array().expect("errors").iter().filter_map(|e| e["statusCode"].as_i64()).collect();
    assert_eq!(codes, [500, 400, 429]);
    assert_eq!(ai.accepted().len(), 1);
    assert_eq!(ai.accepted()[0].envelope["data"]["baseData"]["message"], "m0");
    let (s, h, _) = post(&ai.url(), array(2), false, false).await.expect("post");
    assert_eq!((s, h.get("retry-after").and_then(|v| v.to_str().ok())), (429, Some("7")));
    assert_eq!(post(&ai.url(), array(2), false, false).await.expect("post").0, 503);
    assert_eq!(post(&ai.url(), array(2), false, false).await.expect("post").0, 439);
    assert_eq!(post(&ai.url(), array(2), false, false).await.expect("post").0, 402);
    // reqwest follows the 307 to the second stand-in with the same body
    let (s, _, _) = post(&ai.url(), array(2), false, false).await.expect("post");
    assert_eq!(s, 200);
    assert_eq!(other.accepted().len(), 2);
    assert_eq!(ai.requests()[5].status, 307);
    assert_eq!(ai.accepted().len(), 1);
    // back to the default
    assert_eq!(post(&ai.url(), array(1), false, false).await.expect("post").0, 200);
}

#[tokio::test]
async fn down_resets_connections_for_a_while() {
    let ai = start().await;
    ai.push(Behaviour::Down(Duration::from_millis(400)));
    assert!(post(&ai.url(), array(1), false, false).await.is_err());
    assert!(post(&ai.url(), array(1), false, false).await.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(post(&ai.url(), array(1), false, false).await.expect("up again").0, 200);
    ai.push(Behaviour::Reset);
    assert!(post(&ai.url(), array(1), false, false).await.is_err());
    assert_eq!(ai.accepted().len(), 1);
    ai.push(Behaviour::Slow(Duration::from_millis(200)));
    let slow = reqwest::Client::new()
        .post(format!("{}v2.1/track", ai.url()))
        .timeout(Duration::from_millis(50))
        .body(array(1))
        .send()
        .await;
    assert!(slow.is_err_and(|e| e.is_timeout()));
}

#[tokio::test]
async fn bearer_tokens() {
    let ai = start().await;
    ai.require_token("good");
    ai.forbid_token("no-role");
    let send = |token: Option<&'static str>| {
        let url = format!("{}v2.1/track", ai.url());
        async move {
            let mut r = reqwest::Client::new().post(url).body(array(1));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.expect("post").status().as_u16()
        }
    };
    assert_eq!(send(None).await, 401);
    assert_eq!(send(Some("bad")).await, 401);
    assert_eq!(send(Some("no-role")).await, 403);
    assert_eq!(send(Some("good")).await, 200);
    assert_eq!(ai.requests().last().and_then(|r| r.authorization.clone()).as_deref(), Some("Bearer good"));
}

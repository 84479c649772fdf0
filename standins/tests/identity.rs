//! The managed-identity stand-in over real HTTP.

use std::time::Duration;

use serde_json::Value;
use tally_standins::appinsights::{FakeIngestion, IngestionConfig};
use tally_standins::identity::{FakeIdentity, IdentityConfig};

const MONITOR: &str = "https://monitor.azure.com";

async fn get(url: String, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn app_service_endpoint() {
    let id = FakeIdentity::start(IdentityConfig::default()).await.expect("start");
    let url = |q: &str| format!("{}?{q}", id.identity_endpoint());
    let secret = id.identity_header().to_owned();
    let (s, body) =
        get(url("resource=https://monitor.azure.com&api-version=2019-08-01"), &[("X-IDENTITY-HEADER", &secret)]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], MONITOR);
    let expires_on: i64 =
        body["expires_on"].as_str().and_then(|e| e.parse().ok()).expect("expires_on is a string of seconds");
    assert!(expires_on > 1_700_000_000);
    let token = body["access_token"].as_str().expect("token").to_owned();
    assert!(id.is_valid(&token, MONITOR));
    assert!(!id.is_valid(&token, "https://storage.azure.com"));
    // the same token until rotated
    let (_, again) = get(
        url("resource=https://monitor.azure.com&api-version=2019-08-01&client_id=abc"),
        &[("X-IDENTITY-HEADER", &secret)],
    )
    .await;
    assert_eq!(again["access_token"], token.as_str());
    assert_eq!(again["client_id"], "abc");
    let rotated = id.rotate();
    assert_ne!(rotated.get(MONITOR), Some(&token));
    assert_eq!(id.current_token(MONITOR).as_ref(), rotated.get(MONITOR));
    assert!(id.is_valid(&token, MONITOR), "old tokens live until they expire");
    assert_eq!(id.requests_for(MONITOR), 2);
    // refusals
    assert_eq!(get(url("resource=x&api-version=2019-08-01"), &[]).await.0, 400);
    assert_eq!(get(url("resource=x&api-version=2019-08-01"), &[("X-IDENTITY-HEADER", "wrong")]).await.0, 400);
    assert_eq!(get(url("resource=x&api-version=2017-09-01"), &[("X-IDENTITY-HEADER", &secret)]).await.0, 400);
    assert_eq!(get(url("api-version=2019-08-01"), &[("X-IDENTITY-HEADER", &secret)]).await.0, 400);
}

#[tokio::test]
async fn imds_endpoint_and_failures() {
    let id = FakeIdentity::start(IdentityConfig { lifetime: Duration::from_secs(600), ..IdentityConfig::default() })
        .await
        .expect("start");
    let url = format!("{}?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F", id.imds_endpoint());
    let (s, body) = get(url.clone(), &[("Metadata", "true")]).await;
    assert_eq!(s, 200, "{body}");
    for field in ["expires_in", "expires_on", "not_before"] {
        assert!(
            body[field].as_str().is_some_and(|v| v.parse::<i64>().is_ok()),
            "{field} is a string of digits: {body}"
        );
    }
    assert_eq!(body["expires_in"], "600");
    assert_eq!(body["resource"], "https://storage.azure.com/");
    let (s, body) = get(url.clone(), &[]).await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_request")));
    assert_eq!(body["error_description"], "Required metadata header not specified");
    // object_store sends api-version=2019-08-01 to IMDS as well
    let newer = format!("{}?api-version=2019-08-01&resource=x", id.imds_endpoint());
    assert_eq!(get(newer, &[("Metadata", "true")]).await.0, 200);
    id.fail_next(2);
    assert_eq!(get(url.clone(), &[("Metadata", "true")]).await.0, 500);
    assert_eq!(get(url.clone(), &[("Metadata", "true")]).await.0, 500);
    assert_eq!(get(url.clone(), &[("Metadata", "true")]).await.0, 200);
    id.fail_for(Duration::from_millis(300));
    assert_eq!(get(url.clone(), &[("Metadata", "true")]).await.0, 500);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(get(url, &[("Metadata", "true")]).await.0, 200);
    // the refused request (no Metadata header) never reached the token logic
    assert_eq!(id.requests_for("https://storage.azure.com/"), 6);
}

#[tokio::test]
async fn ingestion_accepts_only_current_identity_tokens() {
    let id = FakeIdentity::start(IdentityConfig::default()).await.expect("start");
    let ai = FakeIngestion::start(IngestionConfig::default()).await.expect("start");
    ai.require_bearer(id.checker(MONITOR));
    let secret = id.identity_header().to_owned();
    let (_, tok) = get(
        format!("{}?resource={MONITOR}&api-version=2019-08-01", id.identity_endpoint()),
        &[("X-IDENTITY-HEADER", &secret)],
    )
    .await;
    let token = tok["access_token"].as_str().expect("token");
    let send = |t: String| {
        let url = format!("{}v2.1/track", ai.url());
        async move {
            reqwest::Client::new().post(url).bearer_auth(t).body("[]").send().await.expect("post").status().as_u16()
        }
    };
    assert_eq!(send(token.to_owned()).await, 200);
    assert_eq!(send("forged".into()).await, 401);
}

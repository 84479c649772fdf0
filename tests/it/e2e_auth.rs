//! API keys: with a key present everything under OTLP and /v1 needs one;
//! a tenant key writes and reads only its tenant; revocation takes effect.

use std::time::Duration;

use serde_json::{Value, json};
use tally_collector::auth::hash_key;
use tally_core::otlp::collector::trace::v1::ExportTraceServiceResponse;
use tally_store::ApiKeyRow;

use crate::support::*;

const CONFIG: &str = r#"
[auth]
refresh_interval = "100ms"

[[meters]]
name = "llm_tokens"
aggregation = "sum"
event_type = "llm.completion"
value = "$.tokens"
"#;

async fn add_key(s: &TestServer, id: &str, kind: &str, tenant: Option<&str>) -> String {
    let key = format!("tly_{id}_{}", "s3cret".repeat(6));
    let row = ApiKeyRow {
        id: id.into(),
        hash: hash_key(&key),
        kind: kind.into(),
        tenant: tenant.map(Into::into),
        name: if kind == "service" { "billing-backend".into() } else { String::new() },
        created_ms: 1,
        revoked_ms: None,
    };
    s.server.as_ref().unwrap().store.insert_api_key(&row).await.unwrap();
    key
}

fn event(id: &str, subject: Option<&str>) -> Value {
    let mut e = json!({"specversion": "1.0", "id": id, "source": "gw", "type": "llm.completion",
                       "time": "2026-10-05T10:00:00Z", "data": {"tokens": 10}});
    if let Some(s) = subject {
        e["subject"] = json!(s);
    }
    e
}

async fn send_events(s: &TestServer, key: Option<&str>, events: Value) -> (u16, Value) {
    let mut req =
        s.http.post(s.api_url("/v1/events")).header("content-type", "application/json").body(events.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn get(s: &TestServer, key: Option<&str>, path: &str) -> u16 {
    let mut req = s.http.get(s.api_url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn post_spans(
    s: &TestServer,
    key: Option<&str>,
    tenant_attr: Option<&str>,
    n: usize,
) -> (u16, Option<ExportTraceServiceResponse>) {
    let attrs = tenant_attr.map(|t| vec![kv("tenant.id", t)]).unwrap_or_default();
    let mut req = s
        .http
        .post(s.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(encode(&traces(attrs, n, vec![])));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, (status == 200).then(|| prost::Message::decode(body).unwrap()))
}

#[tokio::test]
async fn keys_scope_writes_and_reads() {
    let _metrics = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Sqlite, CONFIG).await;
    // Open before any key exists.
    assert_eq!(send_events(&s, None, json!([event("open-1", Some("acme"))])).await.0, 200);

    let acme = add_key(&s, "acmekey00001", "tenant", Some("acme")).await;
    let admin = add_key(&s, "adminkey0001", "admin", None).await;
    let service = add_key(&s, "servicekey01", "service", None).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // next key reload

    // No key, or a wrong one: 401 on OTLP and /v1; probes stay open.
    assert_eq!(send_events(&s, None, json!([event("x", Some("acme"))])).await.0, 401);
    assert_eq!(send_events(&s, Some("tly_acmekey00001_wrong"), json!([event("x", Some("acme"))])).await.0, 401);
    assert_eq!(post_spans(&s, None, Some("acme"), 1).await.0, 401);
    let mut grpc = grpc_client(&s.grpc_url()).await;
    let err = grpc_export_traces(&mut grpc, encode(&traces(vec![kv("tenant.id", "acme")], 1, vec![])), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert_eq!(get(&s, None, "/healthz").await, 200);
    assert_eq!(get(&s, None, "/metrics").await, 200);

    // A tenant key: its own tenant by default, others refused per event.
    let (code, body) = send_events(
        &s,
        Some(&acme),
        json!([event("t-1", None), event("t-2", Some("acme")), event("t-3", Some("globex"))]),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(2), Some(1)), "{body}");
    assert!(body["results"][2]["reason"].as_str().unwrap().contains("only send usage for tenant acme"));
    // ... and per resource on OTLP, over HTTP and gRPC.
    let (code, resp) = post_spans(&s, Some(&acme), None, 3).await;
    assert_eq!((code, resp.unwrap().partial_success), (200, None));
    let (_, resp) = post_spans(&s, Some(&acme), Some("globex"), 2).await;
    let partial = resp.unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("another tenant"), "{}", partial.error_message);
    let auth = format!("Bearer {acme}");
    let resp =
        grpc_export_traces(&mut grpc, encode(&traces(vec![], 4, vec![])), &[("authorization", &auth)]).await.unwrap();
    assert_eq!(resp.partial_success, None);

    // Reads: own tenant only; all tenants for admins only.
    let range = "meter=llm_tokens&from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z";
    assert_eq!(get(&s, Some(&acme), &format!("/v1/usage?tenant=acme&{range}")).await, 200);
    assert_eq!(get(&s, Some(&acme), &format!("/v1/usage?tenant=globex&{range}")).await, 403);
    assert_eq!(get(&s, Some(&acme), "/v1/usage/summary?tenant=globex").await, 403);
    assert_eq!(get(&s, Some(&acme), "/v1/ingest/counts").await, 403);
    assert_eq!(get(&s, Some(&admin), &format!("/v1/usage?tenant=globex&{range}")).await, 200);
    assert_eq!(get(&s, Some(&admin), "/v1/ingest/counts").await, 200);
    assert_eq!(get(&s, Some(&acme), "/v1/tenants").await, 403);
    let why: Value =
        s.http.get(s.api_url("/v1/tenants")).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
    assert!(why["error"].as_str().unwrap().contains("needs an admin key"), "{why}");
    let tenants: Value = s.get_json("/v1/tenants", Some(&admin)).await;
    let ids: Vec<&str> = tenants["tenants"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme"], "created on first usage"); // globex's first usage comes below
    // A service key writes for the tenants its data names, and reads nothing.
    let (_, body) = send_events(&s, Some(&service), json!([event("s-1", Some("globex"))])).await;
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(get(&s, Some(&service), &format!("/v1/usage?tenant=globex&{range}")).await, 403);

    let total = |tenant: &'static str| {
        let (s, admin) = (&s, admin.clone());
        async move {
            let v: Value = s.get_json(&format!("/v1/usage?tenant={tenant}&{range}"), Some(&admin)).await;
            v["total"].as_f64().unwrap()
        }
    };
    assert_eq!(total("acme").await, 30.0); // open-1, t-1, t-2
    assert_eq!(total("globex").await, 10.0); // s-1 only
    assert_eq!(s_counts_eventually(&s, &admin, "acme", 7).await, 7);

    // Revoked: refused once the keys reload.
    s.server.as_ref().unwrap().store.revoke_api_key("acmekey00001", 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(send_events(&s, Some(&acme), json!([event("t-9", None)])).await.0, 401);
    s.stop().await;
}

/// Spans counted for `tenant`, polled until `want` or a timeout.
async fn s_counts_eventually(s: &TestServer, admin: &str, tenant: &str, want: u64) -> u64 {
    for _ in 0..100 {
        let v: Value = s.get_json(&format!("/v1/ingest/counts?tenant={tenant}"), Some(admin)).await;
        let n = v["tenants"][0]["spans"].as_u64().unwrap_or(0);
        if n == want {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    0
}

/// Open mode is decided at start: a key created while open ends it within
/// a second (and at once for a request carrying that key); revoking every
/// key afterwards does not reopen tally; a new key works on its first use,
/// without waiting for the periodic reload.
#[tokio::test]
async fn open_mode_ends_with_the_first_key_and_never_returns() {
    // Keys reload rarely, so only the mechanisms above can explain what follows.
    let s = TestServer::start(Db::Sqlite, &CONFIG.replace("100ms", "1h")).await;
    assert_eq!(send_events(&s, None, json!([event("o-1", Some("acme"))])).await.0, 200);
    let admin = add_key(&s, "adminkey0001", "admin", None).await;
    // The new key is accepted on its first request, which also ends open mode.
    assert_eq!(get(&s, Some(&admin), "/v1/tenants").await, 200);
    assert_eq!(send_events(&s, None, json!([event("o-2", Some("acme"))])).await.0, 401);

    // Every key revoked: still closed; a new key works at once.
    s.server.as_ref().unwrap().store.revoke_api_key("adminkey0001", 2).await.unwrap();
    assert_eq!(get(&s, None, "/v1/tenants").await, 401);
    let fresh = add_key(&s, "adminkey0002", "admin", None).await;
    assert_eq!(get(&s, Some(&fresh), "/v1/tenants").await, 200);
    s.stop().await;

    // Started open, a key created elsewhere: unauthenticated requests are
    // refused within about a second, with no request carrying the key.
    let s = TestServer::start(Db::Sqlite, &CONFIG.replace("100ms", "1h")).await;
    assert_eq!(get(&s, None, "/v1/tenants").await, 200);
    add_key(&s, "adminkey0003", "admin", None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&s, None, "/v1/tenants").await, 401);
    s.stop().await;
}

//! Hostile clients: decompression and decode bombs, unauthenticated or
//! stalled gRPC uploads, idle, trickling and surplus connections. Each is
//! refused or cut off, and honest clients are still served.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tally_collector::auth::hash_key;
use tally_store::ApiKeyRow;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::*;

/// An OTLP trace request of `n` empty spans, encoded by hand (a Vec of 4
/// million decoded spans would take the test itself a gigabyte).
fn empty_spans(n: usize) -> Vec<u8> {
    fn varint(mut v: usize, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let scope: Vec<u8> = [0x12, 0x00].repeat(n); // ScopeSpans.spans (field 2), each empty
    let mut resource = vec![0x12]; // ResourceSpans.scope_spans
    varint(scope.len(), &mut resource);
    resource.extend_from_slice(&scope);
    let mut request = vec![0x0a]; // ExportTraceServiceRequest.resource_spans
    varint(resource.len(), &mut request);
    request.extend_from_slice(&resource);
    request
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Peak resident memory of a process, in bytes (Linux).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// The issue's bomb: 4 million empty spans, 7.8 KB gzipped. Over HTTP twice
/// at once and over gRPC, it is refused for its item count before it is
/// decoded, and tally's memory stays where an idle tally's is.
#[tokio::test]
async fn a_decode_bomb_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .env("TALLY_DATA_DIR", dir.path())
        .env("TALLY_OTLP_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("TALLY_OTLP_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("TALLY_API_ADDR", format!("127.0.0.1:{api}"))
        .env("TALLY_LAKE_ENABLED", "false")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let ready = Instant::now() + Duration::from_secs(20);
    while client.get(format!("http://127.0.0.1:{api}/readyz")).send().await.is_err() {
        assert!(Instant::now() < ready, "tally did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw = empty_spans(4_000_000);
    let bomb = Bytes::from(gzip_bytes(&raw));
    assert!(bomb.len() < 20_000, "{} bytes", bomb.len());
    let post = || {
        client
            .post(format!("http://127.0.0.1:{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
    };
    let (a, b) = tokio::join!(post(), post());
    for resp in [a.unwrap(), b.unwrap()] {
        assert_eq!(resp.status(), 413);
        let body = resp.bytes().await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("max_items_per_request"), "{body:?}");
    }
    let mut grpc_client = grpc_client(&format!("http://127.0.0.1:{grpc}")).await;
    let err = grpc_export_traces(&mut grpc_client, Bytes::from(raw), &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_items_per_request"), "{err:?}");
    let peak = peak_rss(child.id().unwrap());
    println!("peak RSS after the bombs: {} MiB", peak >> 20);
    // An idle tally takes ~50 MiB; decoding one bomb took 2.6 GB before.
    assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
    child.kill().await.unwrap();
}

const KEYED: &str = r#"
[otlp]
max_concurrent_requests = 4
max_concurrent_requests_per_caller = 2
request_timeout = "2s"
"#;

async fn add_key(s: &TestServer, id: &str, tenant: &str) -> String {
    let key = format!("tly_{id}_{}", "s3cret".repeat(6));
    let row = ApiKeyRow {
        id: id.into(),
        hash: hash_key(&key),
        kind: "tenant".into(),
        tenant: Some(tenant.into()),
        name: String::new(),
        created_ms: 1,
        revoked_ms: None,
    };
    s.server.as_ref().unwrap().store.insert_api_key(&row).await.unwrap();
    key
}

/// A gRPC export whose body is never finished: the headers and the first
/// bytes of a frame, then nothing. Returns the pending response.
fn stalled_grpc(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    // The 5-byte frame header promises 1,000 bytes that never come.
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(&[0, 0, 0, 0x03, 0xe8]))).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(tx);
    });
    let mut req = client
        .post(format!("{url}/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn grpc_status(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned())
}

/// Unauthenticated half-sent streams are answered UNAUTHENTICATED from
/// their headers and hold no slot; one tenant's stalled uploads take at
/// most its share, are cut off at `otlp.request_timeout`, and another
/// tenant is served meanwhile.
#[tokio::test]
async fn stalled_and_unauthenticated_grpc_streams_leave_room_for_others() {
    let s = TestServer::start(Db::Sqlite, KEYED).await;
    let acme = add_key(&s, "acmekey00001", "acme").await;
    let globex = add_key(&s, "globexkey001", "globex").await;
    // The first request with a key ends the open mode tally started in.
    let resp = s.http.get(s.api_url("/v1/alerts?tenant=acme")).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = s.grpc_url();

    let unauthenticated: Vec<_> = (0..40).map(|_| stalled_grpc(&h2, &url, None)).collect();
    for resp in futures::future::join_all(unauthenticated).await {
        assert_eq!(grpc_status(&resp.unwrap()).as_deref(), Some("16"), "UNAUTHENTICATED");
    }

    let started = Instant::now();
    let stalled: Vec<_> = (0..6).map(|_| tokio::spawn(stalled_grpc(&h2, &url, Some(&acme)))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let auth = format!("Bearer {globex}");
    let mut client = grpc_client(&url).await;
    let req = traces(vec![kv("tenant.id", "globex")], 3, vec![]);
    let resp = grpc_export_traces(&mut client, encode(&req), &[("authorization", &auth)]).await;
    assert!(resp.is_ok(), "{resp:?}");
    // acme's own: two held their slots until the deadline, the rest were
    // refused as over its share (RESOURCE_EXHAUSTED) or timed out.
    for h in stalled {
        let resp = h.await.unwrap().unwrap();
        let code = grpc_status(&resp).unwrap();
        assert!(code == "4" || code == "8", "DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED, got {code}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    s.stop().await;
}

const TIGHT: &str = r#"
[server]
max_connections = 20
idle_timeout = "1s"
header_read_timeout = "1s"
body_timeout = "1s"
max_uri_bytes = 1024
max_header_bytes = 4096
"#;

/// Reads until the server closes the connection; how long it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn idle_trickling_and_surplus_connections_are_cut_off() {
    let s = TestServer::start(Db::Sqlite, TIGHT).await;
    let api = s.server.as_ref().unwrap().api_addr;

    // Idle connections are closed after server.idle_timeout.
    let mut idle = TcpStream::connect(api).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await.is_some(), "idle connection left open");

    // Headers trickled a byte at a time are cut off at header_read_timeout.
    let mut trickle = TcpStream::connect(api).await.unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let trickling = tokio::spawn(async move {
        for _ in 0..20 {
            if trickle.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut buf = [0u8; 1024];
        matches!(trickle.read(&mut buf).await, Ok(0) | Err(_))
    });
    assert!(trickling.await.unwrap(), "trickled headers kept the connection");

    // A /v1/events body that stalls is answered 408 at body_timeout.
    let mut stall = TcpStream::connect(api).await.unwrap();
    stall
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[{",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stall.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_timeout"), "{answer}");

    // Beyond max_connections new connections are closed at once, and once
    // the idle ones are gone, /healthz answers again.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(TcpStream::connect(api).await.unwrap());
    }
    let mut closed_at_once = 0;
    for c in &mut held {
        if closed_within(c, Duration::from_millis(200)).await.is_some() {
            closed_at_once += 1;
        }
    }
    assert!(closed_at_once >= 10, "{closed_at_once} of 30 closed at once");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let resp = s.http.get(s.api_url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    println!("healthz after the flood: {:?}", started.elapsed());
    let metrics = s.metrics().await;
    assert!(metric_value(&metrics, "tally_connections_refused_total{listener=\"api\"}") >= 10.0, "{metrics}");
    s.stop().await;
}

/// Long request targets and header blocks get the API's JSON error shape.
#[tokio::test]
async fn oversized_targets_and_headers_get_json_errors() {
    let s = TestServer::start(Db::Sqlite, TIGHT).await;
    let resp = s.http.get(s.api_url(&format!("/v1/usage?tenant={}", "a".repeat(2000)))).send().await.unwrap();
    assert_eq!(resp.status(), 414);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("server.max_uri_bytes"), "{body}");
    let resp = s.http.get(s.api_url("/healthz")).header("x-big", "b".repeat(5000)).send().await.unwrap();
    assert_eq!(resp.status(), 431);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("server.max_header_bytes"), "{body}");
    s.stop().await;
}

/// Hundreds of idle and trickling connections held open (within the
/// default connection cap) do not slow honest requests: /healthz and an
/// OTLP/HTTP export each answer within 100 ms while they are held.
#[tokio::test]
async fn held_idle_and_trickling_connections_do_not_slow_health_or_otlp() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let (api, http) = (s.server.as_ref().unwrap().api_addr, s.server.as_ref().unwrap().http_addr);
    let mut held = Vec::new();
    for i in 0..300 {
        held.push(TcpStream::connect(if i % 2 == 0 { api } else { http }).await.unwrap());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tricklers = Vec::new();
    for i in 0..50 {
        let stop = stop.clone();
        let mut c = TcpStream::connect(if i % 2 == 0 { api } else { http }).await.unwrap();
        tricklers.push(tokio::spawn(async move {
            let _ = c.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n").await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if c.write_all(b"X").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = encode(&traces(vec![kv("tenant.id", "held")], 5, vec![]));
    let (mut health, mut otlp) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let started = Instant::now();
        let resp = s.http.get(s.api_url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        health.push(started.elapsed());
        let started = Instant::now();
        post_otlp_http(&s, "/v1/traces", body.clone()).await;
        otlp.push(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    health.sort();
    otlp.sort();
    println!(
        "with 350 held connections: /healthz median {:?} worst {:?}, OTLP export median {:?} worst {:?}",
        health[10], health[19], otlp[10], otlp[19]
    );
    // The median holds the 100 ms; the worst gets slack for a CI machine
    // running the other tests on its two cores at the same time.
    assert!(health[10] < Duration::from_millis(100) && otlp[10] < Duration::from_millis(100), "{health:?} {otlp:?}");
    assert!(health[19] < Duration::from_secs(1) && otlp[19] < Duration::from_secs(1), "{health:?} {otlp:?}");
    drop(held);
    for t in tricklers {
        let _ = t.await;
    }
    s.stop().await;
}

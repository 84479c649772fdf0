//! Bad input over HTTP and gRPC: each gets its documented status and
//! message, is counted in /metrics, and the server keeps serving.

use reqwest::StatusCode;
use tally_core::otlp::collector::trace::v1::ExportTraceServiceResponse;

use crate::support::*;

/// `google.rpc.Status` as tally sends it in error bodies.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

const LIMITS: &str = "[otlp]\nmax_request_bytes = 65536\nmax_compressed_request_bytes = 32768";

async fn post(
    s: &TestServer,
    content_type: &str,
    encoding: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = s.http.post(s.http_url("/v1/traces")).header("content-type", content_type).body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

async fn status_message(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let is_json = resp.headers()["content-type"].to_str().unwrap().starts_with("application/json");
    let body = resp.bytes().await.unwrap();
    let message = if is_json {
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["message"].as_str().unwrap().to_owned()
    } else {
        <RpcStatus as prost::Message>::decode(body).unwrap().message
    };
    (status, message)
}

#[tokio::test]
async fn http_bad_input_gets_clear_errors_and_server_keeps_serving() {
    let _metrics = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Sqlite, LIMITS).await;
    let good = encode(&traces(vec![kv("tenant.id", "good")], 3, vec![]));
    let before = s.metrics().await;

    // Truncated protobuf.
    let (status, msg) =
        status_message(post(&s, "application/x-protobuf", None, good.slice(..good.len() - 3)).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.starts_with("invalid protobuf"), "{msg}");

    // Wrong content type.
    let (status, msg) = status_message(post(&s, "text/plain", None, "hello").await).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(msg.contains("text/plain") && msg.contains("application/x-protobuf"), "{msg}");

    // Unsupported content encoding.
    let (status, msg) = status_message(post(&s, "application/x-protobuf", Some("br"), good.clone()).await).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(msg.contains("\"br\""), "{msg}");

    // Oversize body, declared length.
    let (status, msg) = status_message(post(&s, "application/x-protobuf", None, vec![0u8; 70_000]).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(msg.contains("65536"), "{msg}");

    // Oversize body, chunked (no Content-Length): the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![0u8; 10_000])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, _) = status_message(post(&s, "application/x-protobuf", None, body).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Gzip bomb: 16 MiB of zeros in ~16 KiB, under the compressed limit;
    // refused once inflation passes the 64 KiB limit.
    let bomb = gzip(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 32768, "bomb is {} bytes", bomb.len());
    let (status, msg) = status_message(post(&s, "application/x-protobuf", Some("gzip"), bomb).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(msg.contains("after decompression"), "{msg}");

    // Corrupt gzip.
    let (status, msg) = status_message(post(&s, "application/x-protobuf", Some("gzip"), "not gzip").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("gzip"), "{msg}");

    // Invalid JSON, with the error in JSON.
    let (status, msg) = status_message(post(&s, "application/json", None, "{\"resourceSpans\": [").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.starts_with("invalid OTLP/JSON"), "{msg}");

    // Enum names instead of numbers: refused, naming the field.
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","kind":"SPAN_KIND_SERVER"}]}]}]}"#;
    let (status, msg) = status_message(post(&s, "application/json", None, body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("spans[0].kind"), "{msg}");

    // snake_case JSON would decode to nothing: refused with a hint.
    let (status, msg) = status_message(post(&s, "application/json", None, r#"{"resource_spans":[{}]}"#).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("resourceSpans"), "{msg}");

    // Missing tenant: 200 with partial success naming the fix.
    let no_tenant = encode(&traces(vec![kv("service.name", "x")], 4, vec![]));
    let resp = post(&s, "application/x-protobuf", None, no_tenant).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp: ExportTraceServiceResponse = prost::Message::decode(resp.bytes().await.unwrap()).unwrap();
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 4);
    assert!(
        partial.error_message.contains("no tenant") && partial.error_message.contains("tenant.id"),
        "{}",
        partial.error_message
    );

    // Invalid ids: refused per span, the valid ones in the same request kept.
    let mut mixed = traces(vec![kv("tenant.id", "good")], 3, vec![]);
    mixed.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
    let resp = post(&s, "application/x-protobuf", None, encode(&mixed)).await;
    let resp: ExportTraceServiceResponse = prost::Message::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);

    // A gzip request is answered in gzip when the client accepts it.
    let resp = s
        .http
        .post(s.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "zstd, gzip;q=0.8")
        .body(gzip(&encode(&traces(vec![kv("tenant.id", "good")], 2, vec![]))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&resp.bytes().await.unwrap()[..]), &mut plain)
        .unwrap();
    let resp: ExportTraceServiceResponse = prost::Message::decode(&plain[..]).unwrap();
    assert_eq!(resp.partial_success, None);

    // Still serving: a good request succeeds, with no partial success.
    let resp = post(&s, "application/x-protobuf", None, good).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp: ExportTraceServiceResponse = prost::Message::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(resp.partial_success, None);
    assert_eq!(s.wait_counts("good", (7, 0, 0)).await, (7, 0, 0));

    // Counted in /metrics, exactly (tests that refuse hold METRICS_LOCK).
    let after = s.metrics().await;
    let delta = |series: &str| metric_value(&after, series) - metric_value(&before, series);
    let refused = |reason: &str| {
        delta(&format!("tally_refused_requests_total{{signal=\"spans\",transport=\"http\",reason=\"{reason}\"}}"))
    };
    assert_eq!(refused("malformed"), 4.0, "{after}");
    assert_eq!(refused("too_large"), 3.0);
    assert_eq!(refused("unsupported_media_type"), 1.0);
    assert_eq!(refused("unsupported_encoding"), 1.0);
    assert_eq!(refused("empty"), 1.0);
    assert_eq!(delta("tally_refused_items_total{signal=\"spans\",reason=\"missing_tenant\"}"), 4.0);
    assert_eq!(delta("tally_refused_items_total{signal=\"spans\",reason=\"invalid_id\"}"), 1.0);
    assert_eq!(delta("tally_received_items_total{signal=\"spans\",transport=\"http\"}"), 7.0);
    s.stop().await;
}

#[tokio::test]
async fn grpc_bad_input_gets_otlp_status_codes() {
    let _metrics = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Sqlite, LIMITS).await;
    let mut client = grpc_client(&s.grpc_url()).await;
    let good = encode(&traces(vec![kv("tenant.id", "g")], 2, vec![]));

    let err = grpc_export_traces(&mut client, good.slice(..good.len() - 3), &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("invalid protobuf"), "{}", err.message());

    let err = grpc_export_traces(&mut client, vec![0u8; 70_000].into(), &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Compressed with gRPC's own gzip: tiny on the wire, 16 MiB inflated.
    let mut gz = client.clone().send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let err = grpc_export_traces(&mut gz, vec![0u8; 16 << 20].into(), &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    let no_tenant = encode(&traces(vec![], 3, vec![]));
    let resp = grpc_export_traces(&mut client, no_tenant.clone(), &[]).await.unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 3);
    // The tenant header works as gRPC metadata too.
    let resp = grpc_export_traces(&mut client, no_tenant, &[("x-tenant-id", "g")]).await.unwrap();
    assert_eq!(resp.partial_success, None);

    // Still serving, including gzip-compressed requests.
    assert_eq!(grpc_export_traces(&mut client, good.clone(), &[]).await.unwrap().partial_success, None);
    assert_eq!(grpc_export_traces(&mut gz, good, &[]).await.unwrap().partial_success, None);
    assert_eq!(s.wait_counts("g", (7, 0, 0)).await, (7, 0, 0));
    s.stop().await;
}

/// Query parameters the database could not compare, malformed query
/// strings, and a few more: a 400 (or 403) in the API's JSON shape, naming
/// the parameter — on PostgreSQL, where NUL used to be a 500.
#[tokio::test]
async fn api_parameters_are_checked_and_answered_in_json() {
    let s = TestServer::start(Db::Postgres, "").await;
    let get = |path: String| {
        let s = &s;
        async move {
            let resp = s.http.get(s.api_url(&path)).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (status, body["error"].as_str().unwrap_or_default().to_owned())
        }
    };
    for (path, field) in [
        ("/v1/slo?tenant=acme&service=%00", "service"),
        ("/v1/slo?tenant=acme&operation=a%00b", "operation"),
        ("/v1/gauges?tenant=acme&name=%00", "name"),
        ("/v1/histograms?tenant=acme&name=q%00", "name"),
        ("/v1/logs/counts?tenant=acme&service=%00", "service"),
    ] {
        let (status, error) = get(path.to_owned()).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert!(error.starts_with(&format!("{field}: must not contain NUL")), "{path}: {error}");
    }
    let (status, error) = get("/v1/slo/top?tenant=acme&limit=lots".into()).await;
    assert_eq!(status, 400);
    assert!(error.starts_with("query string:") && error.contains("limit"), "{error}");
    let (status, error) = get("/v1/usage/summary?tenant=acme&period=%2B2026-11".into()).await;
    assert_eq!((status, error.as_str()), (400, "period: \"+2026-11\" is not YYYY-MM"));
    // A ranking has no steps: any range it can read is fine.
    let (status, error) = get("/v1/slo/top?tenant=acme&from=2020-01-01T00:00:00Z".into()).await;
    assert_eq!(status, 200, "{error}");
    s.stop().await;
}

//! Push-back instead of loss: a full queue or too many requests in flight
//! answer 429 + Retry-After (HTTP) / RESOURCE_EXHAUSTED with RetryInfo
//! (gRPC); a request is
//! enqueued whole or not at all; slow senders are cut off.

use std::{sync::Arc, time::Duration};

use tally_collector::{Ingest, OtlpConfig, Pipeline, PipelineReceiver, Policy, TenancyConfig, TenantResolver, otlp};

use crate::support::*;

/// Receivers on free ports feeding a queue nobody drains unless the test does.
struct Receivers {
    http_url: String,
    grpc_url: String,
    rx: PipelineReceiver,
}

async fn receivers(queue_capacity: usize, max_concurrent_requests: usize, request_timeout: Duration) -> Receivers {
    let mut fanout = Pipeline::builder(queue_capacity, 1 << 20, Duration::from_millis(20));
    let rx = fanout.branch("test", Policy::Block);
    let pipeline = fanout.build();
    let tenancy = TenancyConfig {
        resource_attributes: vec!["tenant.id".into()],
        header: "x-tenant-id".into(),
        host_attributes: vec![],
        host_pattern: String::new(),
        default_tenant: String::new(),
    };
    let ingest = Arc::new(
        Ingest::new(
            TenantResolver::new(&tenancy).unwrap(),
            pipeline,
            max_concurrent_requests,
            Duration::from_millis(20),
        )
        .with_retry_after(Duration::from_secs(3)),
    );
    let config = OtlpConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        max_request_bytes: 1 << 20,
        max_compressed_request_bytes: 1 << 20,
        max_items_per_request: 100_000,
        max_decoded_bytes: 64 << 20,
        enqueue_timeout: Duration::from_millis(20),
        retry_after_secs: 3,
        max_concurrent_requests,
        max_concurrent_requests_per_caller: max_concurrent_requests,
        request_timeout,
    };
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_url = format!("http://{}/v1/traces", http_listener.local_addr().unwrap());
    tokio::spawn(axum::serve(http_listener, otlp::http_router(ingest.clone(), &config)).into_future());
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_url = format!("http://{}", grpc_listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(otlp::grpc_routes(ingest, 1 << 20, request_timeout))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener)),
    );
    Receivers { http_url, grpc_url, rx }
}

async fn post(url: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new().post(url).header("content-type", "application/x-protobuf").body(body).send().await.unwrap()
}

#[tokio::test]
async fn full_queue_refuses_whole_requests_with_retry_after_and_recovers() {
    let _metrics = METRICS_LOCK.lock().await;
    let mut r = receivers(1, 64, Duration::from_secs(30)).await;
    let one_tenant = encode(&traces(vec![kv("tenant.id", "t")], 2, vec![]));
    // Two resources, two tenants: one request, two batches.
    let mut two = traces(vec![kv("tenant.id", "a")], 3, vec![]);
    two.resource_spans.extend(traces(vec![kv("tenant.id", "b")], 4, vec![]).resource_spans);
    let two_tenants = encode(&two);

    assert_eq!(post(&r.http_url, one_tenant.clone()).await.status(), 200); // fills the queue
    let refused = post(&r.http_url, two_tenants.clone()).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "3");
    let mut grpc = grpc_client(&r.grpc_url).await;
    let err = grpc_export_traces(&mut grpc, two_tenants.clone(), &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(otlp::rpc_status::retry_delay(&err), Some(Duration::from_secs(3)), "{err:?}");

    // Only the first request is queued: nothing of the refused ones.
    let queued = r.rx.recv().await.unwrap();
    assert_eq!(queued.batches.iter().map(|b| b.items).sum::<u64>(), 2);
    assert!(r.rx.try_recv().is_err());

    // With room again, the two-tenant request goes in whole, as one entry.
    assert_eq!(post(&r.http_url, two_tenants).await.status(), 200);
    let queued = r.rx.recv().await.unwrap();
    let mut parts: Vec<_> = queued.batches.iter().map(|b| (b.tenant.to_string(), b.items)).collect();
    parts.sort();
    assert_eq!(parts, [("a".to_owned(), 3), ("b".to_owned(), 4)]);
}

#[tokio::test]
async fn requests_in_flight_are_bounded_and_slow_senders_time_out() {
    let _metrics = METRICS_LOCK.lock().await;
    let r = receivers(100, 1, Duration::from_millis(500)).await;
    // A sender that starts a body and never finishes it holds the only slot.
    let (tx, stalled_rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(vec![0x0a])).await.unwrap();
    let stalled = tokio_stream_body(stalled_rx);
    let url = r.http_url.clone();
    let slow = tokio::spawn(async move { post(&url, stalled).await.status() });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let body = encode(&traces(vec![kv("tenant.id", "t")], 1, vec![]));
    let refused = post(&r.http_url, body.clone()).await;
    assert_eq!(refused.status(), 429);
    let mut grpc = grpc_client(&r.grpc_url).await;
    let err = grpc_export_traces(&mut grpc, body.clone(), &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(otlp::rpc_status::retry_delay(&err), Some(Duration::from_secs(3)));

    // The slow sender is cut off with 408, which frees the slot.
    assert_eq!(slow.await.unwrap(), 408);
    drop(tx);
    assert_eq!(post(&r.http_url, body).await.status(), 200);
}

/// A request body fed from a channel: it ends only when the sender is dropped.
fn tokio_stream_body(mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

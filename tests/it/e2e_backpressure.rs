//! A full pipeline queue pushes back: 429 + Retry-After over HTTP,
//! UNAVAILABLE over gRPC; nothing is dropped or half-enqueued.

use std::{sync::Arc, time::Duration};

use tally_collector::{Ingest, OtlpConfig, Pipeline, TenancyConfig, TenantResolver, otlp};

use crate::support::*;

#[tokio::test]
async fn full_queue_refuses_with_retry_after_and_recovers() {
    let (pipeline, mut rx) = Pipeline::new(1, 1 << 20, Duration::from_millis(20));
    let tenancy = TenancyConfig {
        resource_attributes: vec!["tenant.id".into()],
        header: "x-tenant-id".into(),
        host_attributes: vec![],
        host_pattern: String::new(),
        default_tenant: String::new(),
    };
    let ingest = Arc::new(Ingest::new(
        TenantResolver::new(&tenancy).unwrap(),
        pipeline,
    ));
    let config = OtlpConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        max_request_bytes: 1 << 20,
        max_compressed_request_bytes: 1 << 20,
        enqueue_timeout: Duration::from_millis(20),
        retry_after_secs: 3,
    };
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http_listener.local_addr().unwrap();
    tokio::spawn(
        axum::serve(http_listener, otlp::http_router(ingest.clone(), &config)).into_future(),
    );
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc_listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(otlp::grpc_routes(ingest, 1 << 20))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener)),
    );

    let http = reqwest::Client::new();
    let body = encode(&traces(vec![kv("tenant.id", "t")], 2, vec![]));
    let send = || {
        http.post(format!("http://{http_addr}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
    };

    assert_eq!(send().await.unwrap().status(), 200); // fills the queue (capacity 1)
    let refused = send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "3");

    let mut grpc = grpc_client(&format!("http://{grpc_addr}")).await;
    let err = grpc_export_traces(&mut grpc, body.clone(), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    // Exactly the one accepted request is queued; draining makes room again.
    let queued = rx.recv().await.unwrap();
    assert_eq!(queued.batches.iter().map(|b| b.items).sum::<u64>(), 2);
    assert!(rx.try_recv().is_err());
    assert_eq!(send().await.unwrap().status(), 200);
    assert!(grpc_export_traces(&mut grpc, body, &[]).await.is_err()); // full again
    rx.recv().await.unwrap();
}

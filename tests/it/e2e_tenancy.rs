//! Tenant resolution: resource attribute, header, host pattern, default.

use tally_core::otlp::collector::trace::v1::ExportTraceServiceResponse;

use crate::support::*;

async fn post_traces(s: &TestServer, body: bytes::Bytes, header_tenant: Option<&str>) -> ExportTraceServiceResponse {
    let mut req = s.http.post(s.http_url("/v1/traces")).header("content-type", "application/x-protobuf").body(body);
    if let Some(t) = header_tenant {
        req = req.header("x-tenant-id", t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    prost::Message::decode(resp.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn attribute_beats_header_and_host_pattern_splits_per_span() {
    let _metrics = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Sqlite, "[tenancy]\nhost_pattern = \"{tenant}.shop.example.com\"").await;

    // Resource attribute wins over the header.
    post_traces(&s, encode(&traces(vec![kv("tenant.id", "attr")], 2, vec![])), Some("hdr")).await;
    // Header when no attribute.
    post_traces(&s, encode(&traces(vec![], 3, vec![])), Some("hdr")).await;
    // Host pattern per span: one resource, spans of two storefronts and one unknown host.
    let mut req = traces(vec![kv("service.name", "storefront")], 5, vec![]);
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    for (i, host) in [
        "acme.shop.example.com",
        "acme.shop.example.com:443",
        "globex.shop.example.com",
        "x.other.org",
        "Globex.Shop.Example.com",
    ]
    .iter()
    .enumerate()
    {
        spans[i].attributes.push(kv(if i % 2 == 0 { "server.address" } else { "http.host" }, host));
    }
    let resp = post_traces(&s, encode(&req), None).await;
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1, "{}", partial.error_message);

    assert_eq!(s.wait_counts("attr", (2, 0, 0)).await, (2, 0, 0));
    assert_eq!(s.wait_counts("hdr", (3, 0, 0)).await, (3, 0, 0));
    assert_eq!(s.wait_counts("acme", (2, 0, 0)).await, (2, 0, 0));
    assert_eq!(s.wait_counts("globex", (2, 0, 0)).await, (2, 0, 0));

    // An invalid tenant is refused, not sent to a default.
    let resp = post_traces(&s, encode(&traces(vec![kv("tenant.id", "a/b")], 2, vec![])), None).await;
    assert!(resp.partial_success.unwrap().error_message.contains("invalid tenant"));
    s.stop().await;
}

#[tokio::test]
async fn default_tenant_takes_unattributed_data() {
    let _metrics = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Sqlite, "[tenancy]\ndefault_tenant = \"shared\"\nheader = \"\"").await;
    // With the header rule disabled the header is ignored.
    let resp = post_traces(&s, encode(&traces(vec![], 4, vec![])), Some("hdr")).await;
    assert_eq!(resp.partial_success, None);
    assert_eq!(s.wait_counts("shared", (4, 0, 0)).await, (4, 0, 0));
    assert_eq!(s.counts("hdr").await, (0, 0, 0));
    // A named but invalid tenant is refused, not sent to the default.
    let resp = post_traces(&s, encode(&traces(vec![kv("tenant.id", "a/b")], 2, vec![])), None).await;
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("invalid tenant"), "{}", partial.error_message);
    post_traces(&s, encode(&traces(vec![], 1, vec![])), None).await;
    assert_eq!(s.wait_counts("shared", (5, 0, 0)).await, (5, 0, 0));
    s.stop().await;
}

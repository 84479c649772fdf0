//! Graceful shutdown drains the queue and flushes counts before exit.

use tally_core::{Signal, TenantId};
use tally_store::Store;

use crate::support::*;

#[tokio::test]
async fn shutdown_flushes_everything_accepted() {
    // Periodic flushes effectively off: only the shutdown flush writes.
    let mut s = TestServer::start(Db::Sqlite, "[pipeline]\nflush_interval = \"1h\"").await;
    let mut client = grpc_client(&s.grpc_url()).await;
    let body = encode(&traces(vec![kv("tenant.id", "drain")], 50, vec![]));
    for _ in 0..20 {
        grpc_export_traces(&mut client, body.clone(), &[]).await.unwrap();
    }
    s.server.take().unwrap().shutdown().await.unwrap();

    let store = Store::open("", s.dir.path()).await.unwrap();
    let counts = store.ingest_counts(Some(&TenantId::parse("drain").unwrap())).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].signal, counts[0].items), (Signal::Spans, 1000));
}

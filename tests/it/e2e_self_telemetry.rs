//! tally's own traces: a tally (the binary) with `[self_telemetry]` sends
//! the spans of its requests over OTLP/HTTP to a second tally, which files
//! them under the configured tenant.

use std::time::{Duration, Instant};

use crate::{daemon::Daemon, support::*};

#[tokio::test]
async fn own_traces_arrive_at_another_tally() {
    let receiver = TestServer::start(Db::Sqlite, "").await;
    let toml = format!(
        "[self_telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"tally-under-test\"\ntenant = \"ops\"\n",
        receiver.http_url("")
    );
    let mut sender = Daemon::start("", &toml, vec![]).await;
    for _ in 0..5 {
        assert!(sender.http.get(sender.url("/v1/tenants")).send().await.unwrap().status().is_success());
    }
    // The batch exporter sends every 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (spans, _, _) = receiver.counts("ops").await;
        if spans >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "own spans did not arrive ({spans}):\n{}", sender.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sender.kill9().await;
    receiver.stop().await;
}

//! Real OpenTelemetry SDKs as clients: the Python SDK over gRPC and
//! HTTP/protobuf, the Node SDK over HTTP/JSON (chunked bodies), each with
//! and without gzip, for two tenants; tally's per-tenant counts must equal
//! what the clients report sending.

use std::process::Stdio;

use crate::support::*;

struct Run {
    client: &'static str,
    protocol: &'static str,
    compression: &'static str,
    tenant: &'static str,
    spans: u64,
    logs: u64,
    series: u64,
}

const RUNS: &[Run] = &[
    Run { client: "python", protocol: "grpc", compression: "none", tenant: "acme", spans: 700, logs: 40, series: 3 },
    Run { client: "python", protocol: "grpc", compression: "gzip", tenant: "globex", spans: 30, logs: 600, series: 2 },
    Run {
        client: "python",
        protocol: "http/protobuf",
        compression: "none",
        tenant: "globex",
        spans: 25,
        logs: 7,
        series: 4,
    },
    Run {
        client: "python",
        protocol: "http/protobuf",
        compression: "gzip",
        tenant: "acme",
        spans: 11,
        logs: 13,
        series: 1,
    },
    Run { client: "node", protocol: "http/json", compression: "none", tenant: "acme", spans: 9, logs: 5, series: 2 },
    Run {
        client: "node",
        protocol: "http/json",
        compression: "gzip",
        tenant: "globex",
        spans: 520,
        logs: 3,
        series: 5,
    },
];

async fn send(s: &TestServer, run: &Run) -> serde_json::Value {
    let endpoint = if run.protocol == "grpc" { s.grpc_url() } else { s.http_url("") };
    let mut cmd = match run.client {
        "python" => {
            let mut c = tokio::process::Command::new(client_python());
            c.arg(clients_dir().join("otel_send.py"));
            c
        }
        _ => {
            let mut c = tokio::process::Command::new("node");
            c.arg(clients_dir().join("otel_send.mjs"));
            c
        }
    };
    let (spans, logs, series) = (run.spans.to_string(), run.logs.to_string(), run.series.to_string());
    cmd.args(["--endpoint", &endpoint, "--protocol", run.protocol, "--compression", run.compression])
        .args(["--tenant", run.tenant, "--service", &format!("{}-svc", run.client)])
        .args(["--spans", &spans, "--logs", &logs, "--metric-series", &series])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().await.expect("start the test client (run scripts/test-deps)");
    assert!(
        out.status.success(),
        "{} {} {} failed: {}",
        run.client,
        run.protocol,
        run.compression,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("client output {line:?}: {e}"))
}

async fn sdk_clients_counts_match(db: Db) {
    let s = TestServer::start(db, "").await;
    let mut want = std::collections::BTreeMap::<&str, (u64, u64, u64)>::new();
    for run in RUNS {
        let sent = send(&s, run).await;
        let reported =
            (sent["spans"].as_u64().unwrap(), sent["logs"].as_u64().unwrap(), sent["metric_points"].as_u64().unwrap());
        assert_eq!(reported, (run.spans, run.logs, run.series), "{} {} reported {sent}", run.client, run.protocol);
        let w = want.entry(run.tenant).or_default();
        *w = (w.0 + reported.0, w.1 + reported.1, w.2 + reported.2);
    }
    for (tenant, want) in want {
        assert_eq!(s.wait_counts(tenant, want).await, want, "tenant {tenant} on {db:?}");
    }
    let metrics = s.metrics().await;
    for transport in ["grpc", "http"] {
        let series = format!("tally_received_items_total{{signal=\"spans\",transport=\"{transport}\"}}");
        assert!(metric_value(&metrics, &series) > 0.0, "{series} missing");
    }
    s.stop().await;
}

#[tokio::test]
async fn sdk_clients_counts_match_on_sqlite() {
    sdk_clients_counts_match(Db::Sqlite).await;
}

#[tokio::test]
async fn sdk_clients_counts_match_on_postgres() {
    sdk_clients_counts_match(Db::Postgres).await;
}

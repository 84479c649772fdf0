//! The Parquet lake end to end: data sent by the real Python OpenTelemetry
//! SDK lands as Hive-partitioned Parquet in a real Azurite (started here)
//! or the local default directory, and pyarrow and DuckDB
//! (`tests/clients/lake_check.py`) read back what was sent; with Azurite
//! stopped mid-run and tally restarted, every file arrives, none twice; a
//! full spool pushes back on ingestion.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::*;

const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A real Azurite blob service on a port of its own; its data (in `dir`)
/// survives a stop and start.
struct Azurite {
    child: Option<tokio::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Azurite {
    async fn start() -> Azurite {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut a = Azurite { child: None, port, dir: tempfile::tempdir().unwrap() };
        a.run().await;
        a
    }

    async fn run(&mut self) {
        let bin = clients_dir().join("node_modules/.bin/azurite-blob");
        assert!(bin.exists(), "{} not found: run scripts/test-deps (scripts/test does)", bin.display());
        let child = tokio::process::Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &self.port.to_string(), "--location"])
            .arg(self.dir.path())
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "azurite did not start on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it the way an operator would (SIGTERM): Azurite saves its
    /// metadata (containers, blob lists) on the way out.
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().unwrap().to_string();
            std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            if tokio::time::timeout(Duration::from_secs(15), c.wait()).await.is_err() {
                c.kill().await.unwrap();
            }
        }
    }

    fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;",
            self.port
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("AZURE_STORAGE_CONNECTION_STRING".into(), self.connection_string())]
    }
}

/// Runs `tests/clients/lake_check.py` and returns its JSON.
async fn lake_check(args: &[&str]) -> Value {
    let out = tokio::process::Command::new(client_python())
        .arg(clients_dir().join("lake_check.py"))
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "lake_check.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn sdk_send(s: &TestServer, tenant: &str, extra: &[&str]) {
    let endpoint = s.grpc_url();
    let mut args = vec!["--endpoint", &endpoint, "--protocol", "grpc", "--tenant", tenant, "--service", "checkout"];
    args.extend_from_slice(extra);
    otel_send(&args).await;
}

/// Polls `/metrics` until `series` reaches `want`.
async fn wait_metric(s: &TestServer, series: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric_value(&s.metrics().await, series);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn indexes(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect()
}

const LAKE_FAST: &str = r#"
    lake_url = "az://lake/tally"
    shutdown_timeout = "5s"
    [lake]
    enabled = true
    max_file_age = "500ms"
    max_upload_backoff = "300ms"
"#;

#[tokio::test]
async fn sdk_data_lands_in_azurite_as_hive_partitioned_parquet() {
    let _guard = METRICS_LOCK.lock().await;
    let azurite = Azurite::start().await;
    lake_check(&["create-container", "--port", &azurite.port.to_string(), "--container", "lake"]).await;
    let s = TestServer::start_with_env(Db::Sqlite, LAKE_FAST, azurite.env()).await;
    sdk_send(&s, "acme", &["--spans", "20", "--logs", "5", "--metric-series", "3"]).await;
    sdk_send(&s, "beta", &["--spans", "8"]).await;
    s.stop().await; // shutdown closes the open files and uploads them
    let lake =
        lake_check(&["read", "--port", &azurite.port.to_string(), "--container", "lake", "--prefix", "tally"]).await;
    let files: Vec<&str> = lake["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(!files.is_empty());
    for f in &files {
        let parts: Vec<&str> = f.split('/').collect();
        assert_eq!(parts.len(), 5, "{f}");
        assert!(["spans", "logs", "metrics"].contains(&parts[0]), "{f}");
        assert!(["tenant=acme", "tenant=beta"].contains(&parts[1]), "{f}");
        assert!(parts[2].starts_with("date=20") && parts[2].len() == 15, "{f}");
        assert!(parts[3].starts_with("hour=") && parts[3].len() == 7, "{f}");
        assert!(parts[4].ends_with(".parquet"), "{f}");
    }
    let spans = &lake["pyarrow"]["spans"];
    assert_eq!(spans["by_tenant"], serde_json::json!({"acme": 20, "beta": 8}));
    assert_eq!(lake["duckdb"]["spans"]["by_tenant"], serde_json::json!({"acme": 20, "beta": 8}));
    let mut want: Vec<u64> = (0..20).chain(0..8).collect();
    want.sort();
    assert_eq!(indexes(&spans["indexes"]), want, "every span once, with its attributes");
    assert_eq!(spans["kinds"], serde_json::json!(["internal", "server"]));
    assert!(spans["names"].as_array().unwrap().iter().any(|n| n == "db.query"));
    assert_eq!(spans["services"], serde_json::json!(["checkout"]));
    // 4 spans a trace: a SERVER root (status OK) and 3 children with an event.
    assert_eq!((spans["roots_ok"].as_u64(), spans["with_events"].as_u64()), (Some(5 + 2), Some(15 + 6)));
    assert_eq!((spans["null_ids"].as_u64(), spans["partition_mismatch"].as_u64()), (Some(0), Some(0)));
    assert_eq!(lake["duckdb"]["spans"]["max_hex_trace_id_len"], 32);
    assert_eq!(lake["duckdb"]["spans"]["routes"], 28);
    let logs = &lake["pyarrow"]["logs"];
    assert_eq!(logs["by_tenant"], serde_json::json!({"acme": 5}));
    assert_eq!(logs["bodies"][0], "tally test log record 0");
    assert_eq!(lake["duckdb"]["logs"]["rows"], 5);
    let metrics = &lake["pyarrow"]["metrics"];
    assert_eq!(metrics["by_tenant"], serde_json::json!({"acme": 3}));
    assert_eq!(metrics["types"], serde_json::json!(["sum/cumulative"]));
    assert_eq!(metrics["values"], serde_json::json!([1.0, 2.0, 3.0]));
}

#[tokio::test]
async fn azurite_down_and_a_restart_lose_no_file_and_upload_none_twice() {
    let _guard = METRICS_LOCK.lock().await;
    let mut azurite = Azurite::start().await;
    lake_check(&["create-container", "--port", &azurite.port.to_string(), "--container", "lake"]).await;
    azurite.stop().await;
    let s = TestServer::start_with_env(Db::Sqlite, LAKE_FAST, azurite.env()).await;
    let errors_before = metric_value(&s.metrics().await, "tally_lake_upload_errors_total");
    sdk_send(&s, "acme", &["--spans", "12", "--span-attr", "batch=1"]).await;
    // The file closes after 500 ms and cannot be uploaded: it waits in the spool.
    assert!(wait_metric(&s, "tally_lake_upload_errors_total", errors_before + 2.0).await >= errors_before + 2.0);
    assert!(metric_value(&s.metrics().await, "tally_lake_spool_bytes") > 0.0);
    // Restarted with the object store still down: the spool is kept…
    let s = s.restart(LAKE_FAST).await;
    let spool: Vec<PathBuf> = walk(&s.dir.path().join("spool"));
    assert!(!spool.is_empty(), "spooled files survive the restart");
    sdk_send(&s, "acme", &["--spans", "8", "--span-attr", "batch=2"]).await;
    // …and uploaded once Azurite is back.
    azurite.run().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !walk(&s.dir.path().join("spool")).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
    let lake =
        lake_check(&["read", "--port", &azurite.port.to_string(), "--container", "lake", "--prefix", "tally"]).await;
    let spans = &lake["pyarrow"]["spans"];
    assert_eq!(spans["by_tenant"], serde_json::json!({"acme": 20}), "every span once: {lake}");
    let mut want: Vec<u64> = (0..12).chain(0..8).collect();
    want.sort();
    assert_eq!(indexes(&spans["indexes"]), want);
    let files = lake["files"].as_array().unwrap();
    let unique: std::collections::HashSet<&str> = files.iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(unique.len(), files.len());
}

/// Complete files in a spool (not the open ones).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != ".open") {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn the_default_lake_is_a_local_directory_duckdb_reads() {
    let _guard = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Sqlite, "[lake]\nenabled = true\nmax_file_age = \"300ms\"").await;
    sdk_send(&s, "acme", &["--spans", "8", "--logs", "3"]).await;
    let dir = s.dir.path().join("lake");
    // Shutdown closes and uploads the open files; read before the data dir goes.
    let TestServer { server, db, dir: _keep, .. } = s;
    server.unwrap().shutdown().await.unwrap();
    db.drop_db().await;
    let lake = lake_check(&["read", "--dir", dir.to_str().unwrap()]).await;
    assert_eq!(lake["duckdb"]["spans"]["by_tenant"], serde_json::json!({"acme": 8}));
    assert_eq!(lake["duckdb"]["logs"]["by_tenant"], serde_json::json!({"acme": 3}));
    assert_eq!(lake["pyarrow"]["spans"]["rows"], 8);
}

#[tokio::test]
async fn a_full_spool_pushes_back_on_ingestion_instead_of_dropping() {
    let _guard = METRICS_LOCK.lock().await;
    let mut azurite = Azurite::start().await;
    lake_check(&["create-container", "--port", &azurite.port.to_string(), "--container", "lake"]).await;
    azurite.stop().await;
    let config = r#"
        lake_url = "az://lake/tally"
        shutdown_timeout = "5s"
        [otlp]
        enqueue_timeout = "50ms"
        [pipeline]
        queue_capacity = 2
        [lake]
        enabled = true
        max_file_age = "200ms"
        max_file_bytes = 1000
        max_spool_bytes = 1000
        max_upload_backoff = "300ms"
    "#;
    let s = TestServer::start_with_env(Db::Sqlite, config, azurite.env()).await;
    let mut client = grpc_client(&s.grpc_url()).await;
    let mut refused = 0;
    let mut accepted = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused == 0 && Instant::now() < deadline {
        let req = spans_at("acme", "GET /cart", 50, now_ms(), 5, false);
        match grpc_export_traces(&mut client, encode(&req), &[]).await {
            Ok(_) => accepted += 50,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "ingestion never pushed back");
    assert_eq!(metric_value(&s.metrics().await, "tally_lake_backpressure"), 1.0);
    // Back up: the spool drains, ingestion resumes, nothing accepted is lost.
    azurite.run().await;
    let req = spans_at("acme", "GET /cart", 50, now_ms(), 5, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match grpc_export_traces(&mut client, encode(&req), &[]).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(status) => panic!("ingestion did not resume: {status:?}"),
        }
    }
    accepted += 50;
    s.stop().await;
    let lake =
        lake_check(&["read", "--port", &azurite.port.to_string(), "--container", "lake", "--prefix", "tally"]).await;
    assert_eq!(lake["duckdb"]["spans"]["rows"].as_u64(), Some(accepted));
}

/// Every window row of `tenant` in `store`, as comparable facts.
async fn rollup_facts(store: &tally_store::Store, tenant: &str) -> Vec<String> {
    use tally_core::rollup::RollupKind;
    let tenant = tally_core::TenantId::parse(tenant).unwrap();
    let mut out = Vec::new();
    for kind in [RollupKind::Span, RollupKind::Log, RollupKind::Gauge, RollupKind::Histogram] {
        let f = tally_store::RollupFilter {
            tenant: &tenant,
            kind,
            service: None,
            name: None,
            detail: None,
            from_ms: 0,
            to_ms: i64::MAX,
        };
        for r in store.read_rollups(&f).await.unwrap() {
            let p95 = r.values.hist.as_ref().and_then(|h| h.value_at_quantile(0.95));
            out.push(format!(
                "{:?} {} {} {} @{} count={} errors={} sum={} last={:?} p95={p95:?}",
                kind,
                r.key.service,
                r.key.name,
                r.key.detail,
                r.start_ms,
                r.values.count,
                r.values.errors,
                r.values.sum,
                r.values.last_opt()
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn replay_into_an_empty_database_reproduces_rollups_and_usage() {
    let _guard = METRICS_LOCK.lock().await;
    let lake = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
        lake_url = "{}"
        [rollups]
        partial_flush_interval = "100ms"
        [lake]
        enabled = true
        max_file_age = "300ms"
        usage_export_interval = "200ms"
        usage_export_lag = "1s"
        [[meters]]
        name = "llm_tokens"
        aggregation = "sum"
        event_type = "llm.completion"
        value = "$.tokens"
        "#,
        lake.path().display()
    );
    let s = TestServer::start(Db::Sqlite, &config).await;
    sdk_send(
        &s,
        "acme",
        &[
            "--spans",
            "20",
            "--slo-requests",
            "30",
            "--error-every",
            "5",
            "--logs",
            "6",
            "--metric-series",
            "2",
            "--queue-depths",
            "4,9",
        ],
    )
    .await;
    for (i, tokens) in [120, 80, 300].into_iter().enumerate() {
        let event = serde_json::json!({"specversion": "1.0", "id": format!("e{i}"), "source": "gw", "type": "llm.completion",
                                       "subject": "acme", "time": rfc3339(now_ms()), "data": {"tokens": tokens}});
        let r = s
            .http
            .post(s.api_url("/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string());
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    // The usage export runs a second behind; wait for its file in the lake.
    let deadline = Instant::now() + Duration::from_secs(30);
    while walk(&lake.path().join("usage")).is_empty() {
        assert!(Instant::now() < deadline, "usage never reached the lake");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the last partial rollup flush
    let store_a = s.server.as_ref().unwrap().store.clone();
    let before = rollup_facts(&store_a, "acme").await;
    assert!(before.len() >= 4, "{before:?}");
    let month = (0, i64::MAX);
    let usage_a = store_a.usage_totals("llm_tokens", tally_core::Aggregation::Sum, month.0, month.1).await.unwrap();
    assert_eq!(usage_a, [("acme".to_owned(), 500.0)]);
    s.stop().await;

    // A new, empty database, replayed from the lake.
    let dir_b = tempfile::tempdir().unwrap();
    let config_b = tally::Config::from_toml(&[
        &config,
        &format!("data_dir = \"{}\"\n[lake]\nenabled = false", dir_b.path().display()),
    ])
    .unwrap();
    let args = tally::replay::ReplayArgs {
        from: rfc3339(now_ms() - 3_600_000),
        to: rfc3339(now_ms() + 60_000),
        tenant: Some("acme".into()),
        signals: vec!["spans".into(), "logs".into(), "metrics".into(), "usage".into()],
    };
    let none = |_: &str| None;
    let summary = tally::replay::run(&config_b, &args, &none).await.unwrap();
    assert_eq!(summary["spans"]["rows"], 50, "{summary}");
    assert_eq!(summary["usage"]["accepted"], 3, "{summary}");
    let store_b = tally_store::Store::open("", dir_b.path()).await.unwrap();
    assert_eq!(rollup_facts(&store_b, "acme").await, before, "replayed rollups differ");
    let usage_b = store_b.usage_totals("llm_tokens", tally_core::Aggregation::Sum, month.0, month.1).await.unwrap();
    assert_eq!(usage_b, usage_a);
    store_b.close().await;
    // Twice: usage is deduplicated by id.
    let again =
        tally::replay::run(&config_b, &tally::replay::ReplayArgs { signals: vec!["usage".into()], ..args }, &none)
            .await
            .unwrap();
    assert_eq!((again["usage"]["accepted"].as_u64(), again["usage"]["duplicate"].as_u64()), (Some(0), Some(3)));
}

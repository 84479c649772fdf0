//! Test harness: fresh databases, servers on free ports, OTLP helpers.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use sqlx::{Connection, Executor, PgConnection};
use tally::{Config, Server};
use tally_core::otlp::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status},
};

/// Held by tests that make tally refuse items or requests, so the test that
/// checks exact `/metrics` deltas (the registry is process-wide) sees only
/// its own.
pub static METRICS_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The webhook signing secret tests' receivers use (`secret_env =
/// "TALLY_TEST_WEBHOOK_SECRET"`).
pub const WEBHOOK_SECRET: &str = "whsec_dGFsbHktdGVzdC13ZWJob29rLXNlY3JldCE=";
/// The PagerDuty routing key of tests (`routing_key_env = "TALLY_TEST_PD_KEY"`).
pub const PD_ROUTING_KEY: &str = "R0ut1ngK3yOfTh3Test5";

/// The environment tally sees in tests: the process's, plus the test
/// secrets (a test cannot set variables of its own process safely).
fn test_env(name: &str) -> Option<String> {
    match name {
        "TALLY_TEST_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
        "TALLY_TEST_PD_KEY" => Some(PD_ROUTING_KEY.to_owned()),
        _ => std::env::var(name).ok(),
    }
}

/// tally on `url` (empty: SQLite in `dir`), free ports, fast flushes.
async fn start_server(url: &str, dir: &tempfile::TempDir, overrides: &str, env: &[(String, String)]) -> Server {
    let base = format!(
        r#"
        data_dir = "{dir}"
        database_url = "{url}"
        [api]
        addr = "127.0.0.1:0"
        [otlp]
        grpc_addr = "127.0.0.1:0"
        http_addr = "127.0.0.1:0"
        [pipeline]
        flush_interval = "50ms"
        [lake]
        # Only the lake tests write one (they enable it).
        enabled = false
        [events]
        # Fixtures carry fixed dates; the tests of max_age set their own.
        max_age = "3650d"
        "#,
        dir = dir.path().display(),
    );
    let config = Config::from_toml(&[&base, overrides]).unwrap();
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| test_env(name));
    tally::server::start_with_env(config, &lookup).await.unwrap()
}

/// Admin connection for creating per-test PostgreSQL databases.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test; PostgreSQL ones are dropped at the end.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        match db {
            // Empty: the embedded SQLite file in the server's data dir.
            Db::Sqlite => TestDb { url: String::new(), pg_name: None },
            Db::Postgres => {
                static N: AtomicU32 = AtomicU32::new(0);
                let name = format!("tally_it_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
                let admin = pg_admin_url();
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is required for tests (scripts/test starts it): {e}")
                });
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                TestDb { url: format!("{base}/{name}"), pg_name: Some(name) }
            }
        }
    }

    /// A database the test made itself (not dropped here).
    pub fn external(url: &str) -> TestDb {
        TestDb { url: url.to_owned(), pg_name: None }
    }

    pub async fn drop_db(&self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) = PgConnection::connect(&pg_admin_url()).await
        {
            let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
        }
    }
}

/// A tally on free loopback ports with its own data dir and database.
pub struct TestServer {
    pub server: Option<Server>,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// Environment variables this tally sees besides the process's.
    pub env: Vec<(String, String)>,
}

impl TestServer {
    pub async fn start(db: Db, overrides: &str) -> TestServer {
        TestServer::start_with_env(db, overrides, Vec::new()).await
    }

    /// [`TestServer::start`] with environment variables of its own.
    pub async fn start_with_env(db: Db, overrides: &str, env: Vec<(String, String)>) -> TestServer {
        let db = TestDb::new(db).await;
        let dir = tempfile::tempdir().unwrap();
        TestServer::start_on(db, dir, overrides, env).await
    }

    /// Stops and starts again on the same data dir, database and environment.
    pub async fn restart(mut self, overrides: &str) -> TestServer {
        self.server.take().unwrap().shutdown().await.unwrap();
        TestServer::start_on(self.db, self.dir, overrides, self.env).await
    }

    pub async fn start_on(
        db: TestDb,
        dir: tempfile::TempDir,
        overrides: &str,
        env: Vec<(String, String)>,
    ) -> TestServer {
        let server = start_server(&db.url, &dir, overrides, &env).await;
        TestServer { server: Some(server), db, dir, http: reqwest::Client::new(), env }
    }

    /// A second tally on this one's database (a replica), with a data dir
    /// of its own; shut it down before this one stops.
    pub async fn replica(&self, overrides: &str) -> (Server, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (start_server(&self.db.url, &dir, overrides, &self.env).await, dir)
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.server().grpc_addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server().http_addr)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server().api_addr)
    }

    /// `(spans, logs, metric_points)` stored for `tenant`.
    pub async fn counts(&self, tenant: &str) -> (u64, u64, u64) {
        let v: serde_json::Value = self
            .http
            .get(self.api_url(&format!("/v1/ingest/counts?tenant={tenant}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = &v["tenants"][0];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        (n("spans"), n("logs"), n("metric_points"))
    }

    /// Polls until `tenant`'s counts equal `want` (flushes are periodic);
    /// returns the last counts seen.
    pub async fn wait_counts(&self, tenant: &str, want: (u64, u64, u64)) -> (u64, u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.counts(tenant).await;
            if got == want || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET an API path as JSON (as an admin when `key` is given).
    pub async fn get_json(&self, path: &str, key: Option<&str>) -> serde_json::Value {
        let mut req = self.http.get(self.api_url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    /// A meter's total for a tenant over 2020–2030.
    pub async fn usage_total(&self, tenant: &str, meter: &str) -> f64 {
        let path = format!("/v1/usage?tenant={tenant}&meter={meter}&from=2020-01-01T00:00:00Z&to=2030-01-01T00:00:00Z");
        let v = self.get_json(&path, None).await;
        v["total"].as_f64().unwrap_or_else(|| panic!("{v}"))
    }

    /// Runs `sql` on this tally's database directly (to set up state an
    /// earlier version would have left, or to inspect tables).
    pub async fn exec_sql(&self, sql: &str) {
        use sqlx::Connection;
        if self.db.url.is_empty() {
            let path = self.dir.path().join("tally.db");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display())).await.unwrap();
            c.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
        } else {
            let mut c = PgConnection::connect(&self.db.url).await.unwrap();
            c.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
        }
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.api_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
        self.db.drop_db().await;
    }
}

/// Value of one Prometheus sample, `name{labels}` exactly as rendered.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

pub fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(Value::IntValue(value)) }), ..Default::default() }
}

/// A trace request: one resource with `resource_attrs`, `n` valid spans each
/// carrying `span_attrs`.
pub fn traces(resource_attrs: Vec<KeyValue>, n: usize, span_attrs: Vec<KeyValue>) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("span-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: span_attrs.clone(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource_attrs, ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

pub fn encode(msg: &impl prost::Message) -> Bytes {
    msg.encode_to_vec().into()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gRPC client sending raw (pre-encoded) OTLP messages.
pub async fn grpc_client(url: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    tonic::client::Grpc::new(channel)
}

/// Sends a raw trace export over gRPC; returns the response or the status.
pub async fn grpc_export_traces(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    body: Bytes,
    metadata: &[(&'static str, &str)],
) -> Result<tally_core::otlp::collector::trace::v1::ExportTraceServiceResponse, tonic::Status> {
    use tally_loadgen::transport::{RawCodec, RawMessage};
    client.ready().await.unwrap();
    let mut req = tonic::Request::new(RawMessage(body));
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    client.unary(req, path, RawCodec::default()).await.map(|r| r.into_inner())
}

/// Path of the test clients' Python (`scripts/test-deps` installs it).
pub fn client_python() -> PathBuf {
    let p = std::env::var_os("TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/.venv/bin/python"));
    assert!(p.exists(), "{} not found: run scripts/test-deps (scripts/test does)", p.display());
    p
}

/// Runs the Python SDK client `tests/clients/otel_send.py` with `args`;
/// panics with its stderr if it fails, returns its JSON summary.
pub async fn otel_send(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(client_python())
        .arg(clients_dir().join("otel_send.py"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(out.stdout.trim_ascii()).unwrap()
}

pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `n` SERVER spans of operation `op` ending at `end_ms`, lasting `ms` each.
pub fn spans_at(tenant: &str, op: &str, n: usize, end_ms: i64, ms: u64, failed: bool) -> ExportTraceServiceRequest {
    let end = end_ms as u64 * 1_000_000;
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: op.into(),
            kind: 2,
            start_time_unix_nano: end - ms * 1_000_000,
            end_time_unix_nano: end,
            status: failed.then(|| Status { code: 2, message: "boom".into() }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("tenant.id", tenant), kv("service.name", "shop")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// POSTs an OTLP/HTTP protobuf body to `path` (`/v1/traces`, `/v1/logs`,
/// `/v1/metrics`) and asserts the 200.
pub async fn post_otlp_http(s: &TestServer, path: &str, body: Bytes) {
    let resp =
        s.http.post(s.http_url(path)).header("content-type", "application/x-protobuf").body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
}

pub async fn send_traces(s: &TestServer, req: &ExportTraceServiceRequest) {
    let mut client = grpc_client(&s.grpc_url()).await;
    let resp = grpc_export_traces(&mut client, encode(req), &[]).await.unwrap();
    assert!(resp.partial_success.as_ref().is_none_or(|p| p.rejected_spans == 0), "{resp:?}");
}

/// A key of `tenant`'s (inserted in the store; the server loads keys on
/// first use of an unknown one). Ends open mode.
pub async fn tenant_key(s: &TestServer, tenant: &str) -> String {
    let store = s.server.as_ref().unwrap().store.clone();
    let key = format!("tly_{}_{}", "k".repeat(12), "s".repeat(40));
    store
        .insert_api_key(&tally_store::ApiKeyRow {
            id: "k".repeat(12),
            hash: tally_collector::auth::hash_key(&key),
            kind: "tenant".into(),
            tenant: Some(tenant.into()),
            name: String::new(),
            created_ms: now_ms(),
            revoked_ms: None,
        })
        .await
        .unwrap();
    // Keys are reloaded on first use of an unknown one.
    key
}

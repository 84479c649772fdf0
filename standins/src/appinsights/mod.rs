//! `FakeIngestion`: Application Insights' ingestion endpoint (Breeze),
//! `POST /v2.1/track` and `/v2/track`.
//!
//! Bodies are a JSON array or NDJSON, gzip or not. Each envelope needs
//! `name`, `time`, `iKey` (the configured key, case-insensitive) and
//! `data.baseType`; the answer is
//! `{"itemsReceived","itemsAccepted","errors":[{"index","statusCode","message"}]}`
//! (206 when some items fail, 400 when all do).
//!
//! What the next requests get is scripted: a queue of [`Behaviour`]s, then a
//! default ([`Behaviour::Accept`] unless changed). Accepted envelopes are kept
//! with an arrival count (identical envelopes accepted again show up as
//! duplicates); every request is logged with its answer.

mod envelope;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

pub use envelope::{check as check_envelope, decode as decode_body};

use crate::serve::{Conn, DownSwitch, Served, lock, serve};

/// How the stand-in answers one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// 200, every valid item accepted (invalid ones answered 400 per item: 206).
    Accept,
    /// 206: these item indexes fail with these per-item status codes (e.g.
    /// `(1, 500)`, `(2, 400)`, `(3, 429)`); the other valid items are accepted.
    Partial(Vec<(usize, u16)>),
    /// 429 for the whole batch, with `Retry-After: <secs>` when given.
    Throttle { retry_after: Option<u64> },
    /// This status for the whole batch, nothing accepted (500, 503, 402, 439,
    /// 400, 401, 403, 404…).
    Status(u16),
    /// 307/308 with `Location: <base>/v2.1/track` (the same path); nothing accepted.
    Redirect { status: u16, base: String },
    /// Reset this connection and every new one for `duration`.
    Down(Duration),
    /// Reset this connection only (nothing accepted).
    Reset,
    /// Wait, then accept like [`Behaviour::Accept`].
    Slow(Duration),
}

/// Checks the bearer token of each request: `true` accepts.
pub type BearerCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How to start a [`FakeIngestion`].
#[derive(Clone, Debug)]
pub struct IngestionConfig {
    /// Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// The instrumentation key envelopes must carry.
    pub ikey: String,
}

impl Default for IngestionConfig {
    fn default() -> Self {
        IngestionConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ikey: "00000000-0000-0000-0000-000000000000".into(),
        }
    }
}

/// One accepted envelope.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accepted {
    pub envelope: Value,
    /// 1 the first time this exact envelope was accepted, 2 the next, …
    pub arrival: u32,
    /// Which request (0-based, see [`FakeIngestion::requests`]) brought it.
    pub request: usize,
}

/// One request and what it got.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestLog {
    pub path: String,
    /// The status answered (0 when the connection was reset instead).
    pub status: u16,
    /// Body bytes as sent (compressed size when gzip).
    pub bytes: usize,
    pub gzip: bool,
    pub content_type: Option<String>,
    pub items_received: usize,
    pub items_accepted: usize,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Behaviour>,
    default: Option<Behaviour>,
    accepted: Vec<Accepted>,
    seen: HashMap<String, u32>,
    requests: Vec<RequestLog>,
    bearer: Option<BearerCheck>,
    forbidden: Vec<String>,
}

struct Shared {
    ikey: String,
    down: DownSwitch,
    inner: Mutex<Inner>,
}

/// A running ingestion stand-in; dropping it stops the server.
pub struct FakeIngestion {
    served: Served,
    shared: Arc<Shared>,
}

impl FakeIngestion {
    pub async fn start(config: IngestionConfig) -> std::io::Result<FakeIngestion> {
        let down = DownSwitch::default();
        let shared = Arc::new(Shared { ikey: config.ikey, down: down.clone(), inner: Mutex::new(Inner::default()) });
        let router = Router::new()
            .route("/v2.1/track", post(track))
            .route("/v2/track", post(track))
            .with_state(Arc::clone(&shared));
        let served = serve(config.addr, router, down).await?;
        Ok(FakeIngestion { served, shared })
    }

    /// The ingestion endpoint base, `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("{}/", self.served.url())
    }

    /// `InstrumentationKey=…;IngestionEndpoint=…` for this stand-in.
    pub fn connection_string(&self) -> String {
        format!("InstrumentationKey={};IngestionEndpoint={}", self.shared.ikey, self.url())
    }

    pub fn ikey(&self) -> &str {
        &self.shared.ikey
    }

    /// Answer the next request with `b` (after those already queued).
    pub fn push(&self, b: Behaviour) {
        lock(&self.shared.inner).script.push_back(b);
    }

    /// Queue `b` for the next `n` requests.
    pub fn push_n(&self, b: Behaviour, n: usize) {
        lock(&self.shared.inner).script.extend(std::iter::repeat_n(b, n));
    }

    /// What requests get once the queue is empty.
    pub fn set_default(&self, b: Behaviour) {
        lock(&self.shared.inner).default = Some(b);
    }

    /// Reset every connection for `d` from now.
    pub fn down_for(&self, d: Duration) {
        self.shared.down.down_for(d);
    }

    pub fn up(&self) {
        self.shared.down.up();
    }

    /// Require `Authorization: Bearer <token>` that `check` accepts (else 401).
    pub fn require_bearer(&self, check: BearerCheck) {
        lock(&self.shared.inner).bearer = Some(check);
    }

    /// Require exactly this bearer token.
    pub fn require_token(&self, token: &str) {
        let t = token.to_owned();
        self.require_bearer(Arc::new(move |got| got == t));
    }

    /// Answer 403 ("lacks Monitoring Metrics Publisher") for this token.
    pub fn forbid_token(&self, token: &str) {
        lock(&self.shared.inner).forbidden.push(token.to_owned());
    }

    pub fn no_auth(&self) {
        let mut g = lock(&self.shared.inner);
        g.bearer = None;
        g.forbidden.clear();
    }

    /// Every accepted envelope in order.
    pub fn accepted(&self) -> Vec<Accepted> {
        lock(&self.shared.inner).accepted.clone()
    }

    /// Accepted envelopes that had been accepted before (arrival > 1).
    pub fn duplicates(&self) -> Vec<Accepted> {
        self.accepted().into_iter().filter(|a| a.arrival > 1).collect()
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.inner).requests.clone()
    }

    /// Forget envelopes, requests and the script (auth settings stay).
    pub fn reset(&self) {
        let mut g = lock(&self.shared.inner);
        g.accepted.clear();
        g.seen.clear();
        g.requests.clear();
        g.script.clear();
        g.default = None;
        self.shared.down.up();
    }

    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

fn summary(received: usize, accepted: usize, errors: Vec<Value>) -> Value {
    json!({"itemsReceived": received, "itemsAccepted": accepted, "errors": errors})
}

fn answer(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn batch_refused(status: u16, n: usize, message: &str) -> Response {
    let errors = (0..n).map(|i| json!({"index": i, "statusCode": status, "message": message})).collect();
    answer(status, summary(n, 0, errors))
}

fn whole_batch_message(status: u16) -> &'static str {
    match status {
        400 => "Invalid telemetry",
        401 => "Authorization required",
        402 | 439 => "Daily quota exceeded",
        403 => "Unauthorized",
        404 => "Ingestion is allowed only from stamp specific endpoint",
        429 => "Too many requests",
        503 => "Service unavailable",
        _ => "Internal server error",
    }
}

async fn track(
    State(s): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let gzip = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let authorization = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut log = RequestLog {
        path: uri.path().to_owned(),
        status: 0,
        bytes: body.len(),
        gzip,
        content_type: headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
        items_received: 0,
        items_accepted: 0,
        authorization: authorization.clone(),
    };
    let behaviour = {
        let mut g = lock(&s.inner);
        g.script.pop_front().or_else(|| g.default.clone()).unwrap_or(Behaviour::Accept)
    };
    let decoded = envelope::decode(&body, gzip);
    log.items_received = decoded.as_ref().map(Vec::len).unwrap_or(0);
    let n = log.items_received;
    let (resp, accepted_idx): (Response, Vec<usize>) = 'answer: {
        // Auth first, as the service checks the token before the payload.
        {
            let g = lock(&s.inner);
            let token = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
            if let Some(check) = &g.bearer {
                match token {
                    Some(t) if g.forbidden.iter().any(|f| f == t) => {
                        break 'answer (batch_refused(403, n, "Unauthorized"), vec![]);
                    }
                    Some(t) if check(t) => {}
                    _ => break 'answer (batch_refused(401, n, "Authorization required"), vec![]),
                }
            }
        }
        let envelopes = match decoded {
            Ok(e) => e,
            Err(msg) => {
                break 'answer (
                    answer(400, summary(0, 0, vec![json!({"index": 0, "statusCode": 400, "message": msg})])),
                    vec![],
                );
            }
        };
        match behaviour {
            Behaviour::Reset => {
                record(&s, log);
                conn.reset_and_hang().await
            }
            Behaviour::Down(d) => {
                s.down.down_for(d);
                record(&s, log);
                conn.reset_and_hang().await
            }
            Behaviour::Throttle { retry_after } => {
                let mut r = batch_refused(429, n, whole_batch_message(429));
                if let Some(secs) = retry_after {
                    r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                }
                (r, vec![])
            }
            Behaviour::Status(code) => (batch_refused(code, n, whole_batch_message(code)), vec![]),
            Behaviour::Redirect { status, base } => {
                let mut r = answer(status, summary(n, 0, vec![]));
                let location = format!("{}{}", base.trim_end_matches('/'), uri.path());
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(http::header::LOCATION, v);
                }
                (r, vec![])
            }
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                itemwise(&s.ikey, &envelopes, &[])
            }
            Behaviour::Accept => itemwise(&s.ikey, &envelopes, &[]),
            Behaviour::Partial(fails) => itemwise(&s.ikey, &envelopes, &fails),
        }
    };
    log.status = resp.status().as_u16();
    log.items_accepted = accepted_idx.len();
    let mut g = lock(&s.inner);
    let request = g.requests.len();
    if let Ok(envelopes) = envelope::decode(&body, gzip) {
        for i in accepted_idx {
            let key = envelopes[i].to_string();
            let arrival = {
                let seen = g.seen.entry(key).or_insert(0);
                *seen += 1;
                *seen
            };
            g.accepted.push(Accepted { envelope: envelopes[i].clone(), arrival, request });
        }
    }
    g.requests.push(log);
    resp
}

fn record(s: &Shared, log: RequestLog) {
    lock(&s.inner).requests.push(log);
}

/// Per-item verdicts: scripted failures, then envelope checks. 200 when all
/// pass, 400 when none does, else 206.
fn itemwise(ikey: &str, envelopes: &[Value], fails: &[(usize, u16)]) -> (Response, Vec<usize>) {
    let mut errors = Vec::new();
    let mut ok = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        if let Some((_, code)) = fails.iter().find(|(idx, _)| *idx == i) {
            errors.push(json!({"index": i, "statusCode": code, "message": whole_batch_message(*code)}));
        } else if let Err(msg) = envelope::check(e, ikey) {
            errors.push(json!({"index": i, "statusCode": 400, "message": msg}));
        } else {
            ok.push(i);
        }
    }
    let status = if errors.is_empty() {
        200
    } else if ok.is_empty() && fails.is_empty() {
        400
    } else {
        206
    };
    (answer(status, summary(envelopes.len(), ok.len(), errors)), ok)
}

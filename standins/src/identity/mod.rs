//! `FakeIdentity`: the two managed-identity token endpoints Azure workloads use.
//!
//! - **App Service / Container Apps / Functions** (`IDENTITY_ENDPOINT`,
//!   `IDENTITY_HEADER`): `GET /msi/token?resource=…&api-version=2019-08-01[&client_id=…]`
//!   with `X-IDENTITY-HEADER: <secret>` →
//!   `{"access_token","expires_on":"<unix secs>","resource","token_type":"Bearer","client_id"}`.
//! - **IMDS** (VMs, and clients that default to it):
//!   `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…` with
//!   `Metadata: true` → `{"access_token","refresh_token":"","expires_in":"<secs>",
//!   "expires_on":"<unix secs>","not_before":"<unix secs>","resource","token_type":"Bearer"}`.
//!   Numbers are strings in both (object_store parses `expires_on` that way).
//! - **Workload identity** (federated credentials, `AZURE_FEDERATED_TOKEN_FILE`,
//!   `AZURE_AUTHORITY_HOST`): Entra's v2 token endpoint
//!   `POST /{tenant}/oauth2/v2.0/token`, form `grant_type=client_credentials`,
//!   `client_id`, `scope={resource}/.default`, `client_assertion_type=
//!   urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, `client_assertion`
//!   → `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token"}`
//!   (numbers as numbers); a bad request is a 400 with `error`,
//!   `error_description` (AADSTS code first) and `error_codes`.
//!
//! Tokens are random; each resource has a current token until it expires or
//! [`FakeIdentity::rotate`] replaces it (earlier tokens stay valid until
//! their own expiry, as Entra's do).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::SeedableRng;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{Value, json};

use crate::serve::{DownSwitch, Served, lock, serve};

/// How to start a [`FakeIdentity`].
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// The `IDENTITY_HEADER` secret (default: random).
    pub identity_header: String,
    /// Token lifetime (default 1 hour).
    pub lifetime: Duration,
    /// `client_id` reported for the system-assigned identity.
    pub client_id: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            identity_header: random(32),
            lifetime: Duration::from_secs(3600),
            client_id: "00000000-0000-0000-0000-0000000000aa".into(),
        }
    }
}

fn random(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rngs::StdRng::from_os_rng(), n)
}

#[derive(Clone, Debug)]
struct Issued {
    resource: String,
    expires_on: i64,
}

#[derive(Default)]
struct Inner {
    lifetime: Duration,
    /// resource → current token
    current: HashMap<String, String>,
    issued: HashMap<String, Issued>,
    requests: HashMap<String, u64>,
    fail_until: Option<Instant>,
    fail_next: u32,
}

struct Shared {
    header: String,
    client_id: String,
    /// The federated token a workload presents (default: any non-empty).
    assertion: Mutex<Option<String>>,
    inner: Mutex<Inner>,
}

/// A running managed-identity stand-in; dropping it stops the server.
pub struct FakeIdentity {
    served: Served,
    shared: Arc<Shared>,
}

impl FakeIdentity {
    pub async fn start(config: IdentityConfig) -> std::io::Result<FakeIdentity> {
        let shared = Arc::new(Shared {
            header: config.identity_header,
            client_id: config.client_id,
            assertion: Mutex::new(None),
            inner: Mutex::new(Inner { lifetime: config.lifetime, ..Inner::default() }),
        });
        let router = Router::new()
            .route("/msi/token", get(app_service))
            .route("/metadata/identity/oauth2/token", get(imds))
            .route("/{tenant}/oauth2/v2.0/token", post(workload))
            .with_state(Arc::clone(&shared));
        let served = serve(config.addr, router, DownSwitch::default()).await?;
        Ok(FakeIdentity { served, shared })
    }

    pub fn url(&self) -> String {
        self.served.url()
    }

    /// The value for `IDENTITY_ENDPOINT`.
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.served.url())
    }

    /// The value for `IDENTITY_HEADER`.
    pub fn identity_header(&self) -> &str {
        &self.shared.header
    }

    /// The IMDS token URL (what clients call without `IDENTITY_ENDPOINT`).
    pub fn imds_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.served.url())
    }

    /// The value for `AZURE_AUTHORITY_HOST` (workload identity).
    pub fn authority_host(&self) -> String {
        format!("{}/", self.served.url())
    }

    /// Only this federated token is accepted as a client assertion.
    pub fn expect_assertion(&self, token: &str) {
        *lock(&self.shared.assertion) = Some(token.to_owned());
    }

    /// Issue new current tokens for every resource seen so far; returns them.
    pub fn rotate(&self) -> HashMap<String, String> {
        let mut g = lock(&self.shared.inner);
        let resources: Vec<String> = g.current.keys().cloned().collect();
        for r in resources {
            issue(&mut g, &r);
        }
        g.current.clone()
    }

    /// The token a request for `resource` would get now, if one was issued.
    pub fn current_token(&self, resource: &str) -> Option<String> {
        lock(&self.shared.inner).current.get(resource).cloned()
    }

    /// Whether `token` was issued here, for `resource`, and has not expired.
    pub fn is_valid(&self, token: &str, resource: &str) -> bool {
        let now = crate::serve::unix_secs();
        lock(&self.shared.inner).issued.get(token).is_some_and(|i| i.resource == resource && i.expires_on > now)
    }

    /// A checker for [`crate::appinsights::FakeIngestion::require_bearer`].
    pub fn checker(&self, resource: &str) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
        let shared = Arc::clone(&self.shared);
        let resource = resource.to_owned();
        Arc::new(move |token| {
            let now = crate::serve::unix_secs();
            lock(&shared.inner).issued.get(token).is_some_and(|i| i.resource == resource && i.expires_on > now)
        })
    }

    /// Token requests per resource.
    pub fn requests(&self) -> HashMap<String, u64> {
        lock(&self.shared.inner).requests.clone()
    }

    pub fn requests_for(&self, resource: &str) -> u64 {
        lock(&self.shared.inner).requests.get(resource).copied().unwrap_or(0)
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_lifetime(&self, d: Duration) {
        lock(&self.shared.inner).lifetime = d;
    }

    /// Answer 500 to every token request for `d`.
    pub fn fail_for(&self, d: Duration) {
        lock(&self.shared.inner).fail_until = Some(Instant::now() + d);
    }

    /// Answer 500 to the next `n` token requests.
    pub fn fail_next(&self, n: u32) {
        lock(&self.shared.inner).fail_next = n;
    }

    pub fn recover(&self) {
        let mut g = lock(&self.shared.inner);
        g.fail_until = None;
        g.fail_next = 0;
    }

    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

fn issue(g: &mut Inner, resource: &str) -> (String, i64) {
    let token = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.{}", random(48));
    let expires_on = crate::serve::unix_secs() + g.lifetime.as_secs() as i64;
    g.issued.insert(token.clone(), Issued { resource: resource.to_owned(), expires_on });
    g.current.insert(resource.to_owned(), token.clone());
    (token, expires_on)
}

fn bad_request(description: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_request", "error_description": description})))
        .into_response()
}

/// The current token for `resource`, issuing one when there is none or it has
/// less than five minutes left.
/// `None` while failures are injected.
fn token_for(s: &Shared, resource: &str) -> Option<(String, i64, i64)> {
    let mut g = lock(&s.inner);
    *g.requests.entry(resource.to_owned()).or_insert(0) += 1;
    let failing = g.fail_until.is_some_and(|t| Instant::now() < t) || g.fail_next > 0;
    if failing {
        g.fail_next = g.fail_next.saturating_sub(1);
        return None;
    }
    let now = crate::serve::unix_secs();
    let lifetime = g.lifetime.as_secs() as i64;
    let fresh = g.current.get(resource).and_then(|t| g.issued.get(t).map(|i| (t.clone(), i.expires_on)));
    let (token, expires_on) = match fresh {
        Some((t, exp)) if exp - now > 300.min(lifetime / 2) => (t, exp),
        _ => issue(&mut g, resource),
    };
    Some((token, expires_on, now))
}

fn injected_failure() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "unknown_error", "error_description": "Failed to acquire a token (injected)."})),
    )
        .into_response()
}

fn params(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn app_service(State(s): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    let q = params(&uri);
    if headers.get("x-identity-header").and_then(|v| v.to_str().ok()) != Some(s.header.as_str()) {
        return bad_request("The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.");
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return bad_request("Invalid or missing api-version: this endpoint takes api-version=2019-08-01.");
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return bad_request("Required query variable 'resource' is missing.");
    };
    match token_for(&s, resource) {
        None => injected_failure(),
        Some((token, expires_on, _)) => {
            let client_id = q.get("client_id").cloned().unwrap_or_else(|| s.client_id.clone());
            Json(json!({
                "access_token": token,
                "expires_on": expires_on.to_string(),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            }))
            .into_response()
        }
    }
}

async fn imds(State(s): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    let q = params(&uri);
    if headers.get("metadata").and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase).as_deref() != Some("true") {
        return bad_request("Required metadata header not specified");
    }
    let version_ok = q.get("api-version").is_some_and(|v| {
        chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .is_ok_and(|d| d >= chrono::NaiveDate::from_ymd_opt(2018, 2, 1).unwrap_or_default())
    });
    if !version_ok {
        return bad_request("Invalid or missing api-version (2018-02-01 or later).");
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return bad_request("Required audience parameter not specified");
    };
    match token_for(&s, resource) {
        None => injected_failure(),
        Some((token, expires_on, now)) => {
            let body: Value = json!({
                "access_token": token,
                "refresh_token": "",
                "expires_in": (expires_on - now).to_string(),
                "expires_on": expires_on.to_string(),
                "not_before": now.to_string(),
                "resource": resource,
                "token_type": "Bearer",
            });
            Json(body).into_response()
        }
    }
}

fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
    });
    (status, Json(body)).into_response()
}

async fn workload(State(s): State<Arc<Shared>>, body: String) -> Response {
    let form: HashMap<String, String> =
        form_urlencoded::parse(body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id").is_empty() {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if field("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return entra_error(StatusCode::BAD_REQUEST, "invalid_request", 50027, "Invalid client_assertion_type.");
    }
    let expected = lock(&s.assertion).clone();
    let assertion = field("client_assertion");
    if assertion.is_empty() || expected.is_some_and(|e| e != assertion) {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700213,
            "No matching federated identity record found for presented assertion.",
        );
    }
    let Some(resource) = field("scope").strip_suffix("/.default").filter(|r| !r.is_empty()) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    };
    match token_for(&s, resource) {
        None => injected_failure(),
        Some((token, expires_on, now)) => Json(json!({
            "token_type": "Bearer",
            "expires_in": expires_on - now,
            "ext_expires_in": expires_on - now,
            "access_token": token,
        }))
        .into_response(),
    }
}

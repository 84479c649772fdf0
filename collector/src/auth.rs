//! API keys on every write and read: `Authorization: Bearer tly_<id>_<secret>`.
//!
//! Keys live in the database as a hash and a public id; this cache holds
//! the active ones in memory (the OTLP hot path must not query per request)
//! and reloads them every `auth.refresh_interval`, and at once when an
//! unknown id shows up, so a new key works on its first request and a
//! revocation takes effect within the interval.
//!
//! Open mode (no key needed) is decided when tally starts: with no active
//! key then, tally runs open (see `server`: only on loopback unless
//! `auth.open` says otherwise). It ends for good as soon as a key exists
//! (looked for every second while open): revoking every key later does not
//! reopen a running tally, it refuses everyone until a key is created.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use tally_core::{Principal, TenantId};
use tally_store::Store;
use tokio::sync::Mutex;

/// Prefix of every tally API key.
pub const KEY_PREFIX: &str = "tly_";

/// Hex sha256 of a whole key, as stored. Keys are 160+ random bits, so a
/// fast hash is enough (no password stretching needed).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The public id of a key: `tly_<id>_<secret>` → `<id>`.
pub fn key_id(key: &str) -> Option<&str> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send Authorization: Bearer <api key>")]
    Missing,
    #[error("invalid or revoked API key")]
    Invalid,
    #[error("cannot check the API key now (database unavailable), retry")]
    Unavailable,
}

impl AuthError {
    pub fn http_status(self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
            AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn grpc_status(self) -> tonic::Status {
        match self {
            AuthError::Missing | AuthError::Invalid => tonic::Status::unauthenticated(self.to_string()),
            AuthError::Unavailable => tonic::Status::unavailable(self.to_string()),
        }
    }
}

struct KeySet {
    by_id: HashMap<String, ([u8; 32], Principal)>,
}

/// Checks API keys against the active keys in the database.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    keys: Arc<RwLock<Arc<KeySet>>>,
    /// When the keys were last loaded; held while an unknown id reloads.
    last_load: Arc<Mutex<Instant>>,
    /// Running open: set at start when no key existed, cleared for good
    /// once one does.
    open: Arc<AtomicBool>,
}

/// The least time between two reloads caused by unknown key ids: unknown
/// ids cannot make tally query the database more often than this.
const MIN_RELOAD: Duration = Duration::from_millis(200);
/// How often the keys are looked for while tally runs open.
const OPEN_POLL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("open", &self.is_open()).finish()
    }
}

impl Authenticator {
    /// Loads the active keys; with none, tally runs open until one exists.
    pub async fn load(store: Store) -> Result<Authenticator, tally_store::StoreError> {
        let set = load_keys(&store).await?;
        let open = Arc::new(AtomicBool::new(set.by_id.is_empty()));
        let keys = Arc::new(RwLock::new(Arc::new(set)));
        Ok(Authenticator { store, keys, last_load: Arc::new(Mutex::new(Instant::now())), open })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests are not authenticated (no key existed at start, and none
    /// has been created since).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Reloads the active keys; the first key seen ends open mode.
    pub async fn reload(&self) -> Result<(), tally_store::StoreError> {
        let set = load_keys(&self.store).await?;
        let any = !set.by_id.is_empty();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        if any && self.open.swap(false, Ordering::Relaxed) {
            tracing::warn!("an API key exists now: tally no longer runs open, every request needs a key");
        }
        Ok(())
    }

    /// Reloads because `id` is unknown, unless a reload began after this
    /// request arrived (`since`): concurrent unknown ids share one reload,
    /// and reloads are at least [`MIN_RELOAD`] apart.
    async fn reload_for_unknown(&self, since: Instant) -> Result<(), tally_store::StoreError> {
        let mut last = self.last_load.lock().await;
        if *last >= since {
            return Ok(());
        }
        let wait = MIN_RELOAD.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        *last = Instant::now();
        self.reload().await
    }

    /// The caller behind an `Authorization` header value: `Ok(None)` when
    /// tally runs open.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Option<Principal>, AuthError> {
        let arrived = Instant::now();
        let key = authorization.and_then(|value| match value.trim().split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Some(key.trim()),
            _ => None,
        });
        if self.is_open() {
            // A tally key while open: perhaps one was just created, which
            // ends open mode now rather than at the next poll.
            match key.and_then(key_id) {
                Some(id) if !self.snapshot().by_id.contains_key(id) => {
                    self.reload_for_unknown(arrived).await.map_err(|_| AuthError::Unavailable)?;
                    if self.is_open() {
                        return Ok(None);
                    }
                }
                _ => return Ok(None),
            }
        }
        let key = key.ok_or(AuthError::Missing)?;
        let id = key_id(key).ok_or(AuthError::Invalid)?;
        let mut entry = self.snapshot().by_id.get(id).cloned();
        if entry.is_none() {
            // Perhaps created since the last load: it works on first use.
            self.reload_for_unknown(arrived).await.map_err(|_| AuthError::Unavailable)?;
            entry = self.snapshot().by_id.get(id).cloned();
        }
        let (stored, principal) = entry.ok_or(AuthError::Invalid)?;
        let given: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if constant_time_eq(&given, &stored) { Ok(Some(principal)) } else { Err(AuthError::Invalid) }
    }

    /// Reloads every `every` (every second while open) until `shutdown`,
    /// so revocations take effect and a first key ends open mode.
    pub fn spawn_refresh(&self, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                let due = if this.is_open() { OPEN_POLL.min(every) } else { every };
                tokio::select! {
                    _ = tokio::time::sleep(due.saturating_sub(last.elapsed())) => {
                        last = Instant::now();
                        if let Err(e) = this.reload().await {
                            tracing::warn!(error = %e, "reloading api keys failed; keeping the previous set");
                        }
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn load_keys(store: &Store) -> Result<KeySet, tally_store::StoreError> {
    let mut by_id = HashMap::new();
    for row in store.api_keys().await? {
        if row.revoked_ms.is_some() {
            continue;
        }
        let Some(hash) = hex::decode(&row.hash).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()) else { continue };
        let principal = match (row.kind.as_str(), row.tenant.as_deref()) {
            ("admin", _) => Principal::Admin,
            ("service", _) => Principal::Service(row.name.clone()),
            ("tenant", Some(t)) => match TenantId::parse(t) {
                Ok(t) => Principal::Tenant(t),
                Err(_) => continue,
            },
            _ => continue,
        };
        by_id.insert(row.id, (hash, principal));
    }
    Ok(KeySet { by_id })
}

/// The authenticated caller of an API request (`None`: tally runs open).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// axum middleware for the `/v1` API: authenticates and stores [`Caller`]
/// in the request's extensions, or answers 401/503.
pub async fn require_caller(State(auth): State<Authenticator>, mut req: Request, next: Next) -> Response {
    match auth.authenticate(authorization(req.headers())).await {
        Ok(principal) => {
            req.extensions_mut().insert(Caller(principal));
            next.run(req).await
        }
        Err(e) => unauthorized(e),
    }
}

pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// A 401/503 JSON answer with `WWW-Authenticate: Bearer`.
pub fn unauthorized(e: AuthError) -> Response {
    let mut r = (e.http_status(), axum::Json(serde_json::json!({ "error": e.to_string() }))).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_and_hashes() {
        assert_eq!(key_id("tly_abc123_secretsecret"), Some("abc123"));
        assert_eq!(key_id("tly_abc123"), None);
        assert_eq!(key_id("xyz_abc_def"), None);
        assert_eq!(key_id("tly__def"), None);
        assert_eq!(hash_key("k").len(), 64);
        let (a, b) = ([1u8; 32], [1u8; 32]);
        assert!(constant_time_eq(&a, &b));
        let mut c = b;
        c[31] = 2;
        assert!(!constant_time_eq(&a, &c));
    }
}

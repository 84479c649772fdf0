//! The query/admin HTTP API (`[api] addr`, :8080 by default): probes and
//! metrics, and the `/v1` route groups, one file each ([`usage`],
//! [`rollups`], [`alerts`], [`tenants`], [`stripe`], [`entitlements`], [`webhook`]). Shared here: the error shape every answer
//! uses ([`ApiError`]), the query extractor that answers in it
//! ([`Query`]), and the tenant preamble every tenant-scoped query starts
//! with ([`ReadTenant`], [`ReadScope`]).

pub mod alerts;
pub mod entitlements;
pub mod openapi;
pub mod rollups;
pub mod stripe;
pub mod tenants;
pub mod usage;
pub mod webhook;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::{FromRequestParts, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tally_collector::Caller;
use tally_core::{Principal, Signal, TenantId};
use tally_store::Store;

/// What the API's own handlers (probes, metrics, ingest counts, tenants)
/// need; the other route groups carry states of their own.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// Set when shutdown starts, so load balancers stop sending traffic.
    pub draining: Arc<AtomicBool>,
}

/// Probes, metrics and the API's contract: no credentials needed (nothing
/// tenant-specific).
pub fn public_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(openapi::router())
}

/// `/v1` queries of this module; the caller layers authentication on top.
pub fn v1_router(state: ApiState) -> Router {
    Router::new().route("/v1/ingest/counts", get(ingest_counts)).with_state(state)
}

/// Refuses a read of `tenant`'s data by a key that may not read it.
pub fn check_read(caller: &Caller, tenant: &TenantId) -> Result<(), ApiError> {
    match &caller.0 {
        Some(p) if !p.may_read(tenant) => {
            Err(ApiError::forbidden(format!("this {} key may not read tenant {tenant}", p.kind())))
        }
        _ => Ok(()),
    }
}

/// Refuses reads across all tenants to anything but admin keys (where the
/// query may name a tenant instead: `?tenant=…`).
pub fn check_read_all(caller: &Caller) -> Result<(), ApiError> {
    match &caller.0 {
        Some(p) if *p != Principal::Admin => {
            Err(ApiError::forbidden(format!("a {} key must name its tenant (?tenant=…)", p.kind())))
        }
        _ => Ok(()),
    }
}

/// The `tenant` query parameter, checked.
pub fn parse_tenant(s: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(s).map_err(|e| ApiError::bad_request(format!("tenant: {e}")))
}

/// Longest text query parameter (service, operation, metric names).
pub const MAX_TEXT_PARAM: usize = 1024;

/// A text query parameter the database can compare: no NUL (PostgreSQL
/// refuses it in text), at most [`MAX_TEXT_PARAM`] bytes.
pub fn check_text<'a>(field: &str, s: &'a str) -> Result<&'a str, ApiError> {
    if s.contains('\0') {
        return Err(ApiError::bad_request(format!("{field}: must not contain NUL (%00) characters")));
    }
    if s.len() > MAX_TEXT_PARAM {
        return Err(ApiError::bad_request(format!("{field}: longer than {MAX_TEXT_PARAM} bytes")));
    }
    Ok(s)
}

/// A billing period `YYYY-MM` (exactly: no sign, no extra digits), as its
/// first day.
pub fn parse_period(p: &str) -> Result<chrono::NaiveDate, ApiError> {
    let bad = || ApiError::bad_request(format!("period: {p:?} is not YYYY-MM"));
    let b = p.as_bytes();
    if b.len() != 7 || b[4] != b'-' || !b.iter().enumerate().all(|(i, c)| i == 4 || c.is_ascii_digit()) {
        return Err(bad());
    }
    chrono::NaiveDate::parse_from_str(&format!("{p}-01"), "%Y-%m-%d").map_err(|_| bad())
}

/// The preamble of every tenant-scoped query: `?tenant=T`, parsed, and
/// checked against the caller (a tenant key reads only its own tenant).
pub struct ReadTenant(pub TenantId);

/// `?tenant=T`, or none — all tenants, which only admin keys (or open
/// mode) may read.
pub struct ReadScope(pub Option<TenantId>);

#[derive(Deserialize)]
struct TenantParam {
    tenant: Option<String>,
}

fn caller_of(parts: &Parts) -> Caller {
    parts.extensions.get::<Caller>().cloned().unwrap_or(Caller(None))
}

impl<S: Send + Sync> FromRequestParts<S> for ReadTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(TenantParam { tenant }) = Query::from_request_parts(parts, state).await?;
        let tenant = parse_tenant(tenant.as_deref().ok_or_else(|| ApiError::bad_request("tenant: required"))?)?;
        check_read(&caller_of(parts), &tenant)?;
        Ok(ReadTenant(tenant))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReadScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(TenantParam { tenant }) = Query::from_request_parts(parts, state).await?;
        let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
        match &tenant {
            Some(t) => check_read(&caller_of(parts), t)?,
            None => check_read_all(&caller_of(parts))?,
        }
        Ok(ReadScope(tenant))
    }
}

/// axum's `Query`, refusing a bad query string in the API's JSON error
/// shape (axum's own answer is plain text).
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(q)) => Ok(Query(q)),
            Err(e) => Err(ApiError::bad_request(format!("query string: {}", e.body_text()))),
        }
    }
}

/// An RFC 3339 query parameter as Unix milliseconds; `field` names it in errors.
/// Times must fall in years 0000–9999 once in UTC (RFC 3339's range: an
/// offset can push 9999-12-31 into year 10000, which no answer could echo).
pub fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    /// 10000-01-01T00:00:00Z and 0000-01-01T00:00:00Z in ms.
    const RANGE: std::ops::Range<i64> = -62_167_219_200_000..253_402_300_800_000;
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .ok()
        .filter(|ms| RANGE.contains(ms))
        .ok_or_else(|| {
            ApiError::bad_request(format!("{field}: {s:?} is not an RFC 3339 timestamp within years 0000-9999 (UTC)"))
        })
}

/// Unix milliseconds as RFC 3339 UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An error answer: the client sees `message`; details of our own faults go
/// to the log only.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::FORBIDDEN, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::CONFLICT, message: message.into() }
    }

    pub fn internal(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "api request failed");
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: "internal error; see tally's log".into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

async fn metrics() -> Response {
    let handle = crate::observability::prometheus();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

async fn readyz(State(st): State<ApiState>) -> Response {
    if st.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    // Bounded: a probe must answer within its own timeout, database or not.
    let error = match tokio::time::timeout(std::time::Duration::from_secs(2), st.store.ping()).await {
        Ok(Ok(())) => return (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 2 s".to_owned(),
    };
    tracing::warn!(error, "readiness check: database unreachable");
    (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
}

#[derive(Serialize, Default)]
struct TenantCounts {
    tenant: String,
    spans: u64,
    logs: u64,
    metric_points: u64,
}

/// Items accepted per tenant and signal (flushed every
/// `pipeline.flush_interval`): `{"tenants":[{"tenant":…,"spans":N,…}]}`.
async fn ingest_counts(
    State(st): State<ApiState>,
    ReadScope(tenant): ReadScope,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = st.store.ingest_counts(tenant.as_ref()).await.map_err(ApiError::internal)?;
    let mut out: Vec<TenantCounts> = Vec::new();
    for row in rows {
        if out.last().is_none_or(|t| t.tenant != row.tenant.as_str()) {
            out.push(TenantCounts { tenant: row.tenant.to_string(), ..Default::default() });
        }
        let Some(t) = out.last_mut() else { continue };
        match row.signal {
            Signal::Spans => t.spans = row.items,
            Signal::Logs => t.logs = row.items,
            Signal::MetricPoints => t.metric_points = row.items,
        }
    }
    Ok(Json(serde_json::json!({ "tenants": out })))
}

//! Entitlements: `GET /v1/entitlements?tenant=T&meter=M` ("may T still use
//! M right now?", answered from memory), and the credit ledger:
//! `POST /v1/tenants/{tenant}/credits` (a top-up, admin) and
//! `GET /v1/tenants/{tenant}/credits` (the entries, newest first).

use axum::{
    Extension, Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_aggregator::entitlements::{Answer, Entitlements};
use tally_collector::Caller;
use tally_core::{meter::MAX_EXACT, metric_names, now_ms};
use tally_store::{CreditEntry, CreditKind, NewCredit, Store};

use super::{ApiError, Query, check_read, check_text, parse_tenant, rfc3339, tenants::admin_only};

#[derive(Clone)]
pub struct EntitlementsState {
    pub store: Store,
    pub entitlements: Entitlements,
}

pub fn router(state: EntitlementsState) -> Router {
    Router::new()
        .route("/v1/entitlements", get(check))
        .route("/v1/tenants/{tenant}/credits", get(entries).post(top_up))
        .with_state(state)
}

/// An answer as the API shows it.
pub fn answer_json(a: &Answer) -> Value {
    json!({
        "tenant": a.tenant,
        "meter": a.meter,
        "allowed": a.allowed,
        "reason": a.reason,
        "usage": a.usage,
        "limit": a.limit,
        "credits_remaining": a.credits_remaining,
        "subscription_status": a.subscription_status,
        "period_start": rfc3339(a.period_start_ms),
        "period_end": rfc3339(a.period_end_ms),
    })
}

#[derive(Deserialize)]
struct CheckParams {
    tenant: Option<String>,
    meter: Option<String>,
}

async fn check(
    State(st): State<EntitlementsState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<CheckParams>,
) -> Result<Json<Value>, ApiError> {
    let tenant = parse_tenant(p.tenant.as_deref().ok_or_else(|| ApiError::bad_request("tenant: required"))?)?;
    check_read(&caller, &tenant)?;
    let meter = check_text("meter", p.meter.as_deref().ok_or_else(|| ApiError::bad_request("meter: required"))?)?;
    let a = st.entitlements.check(tenant.as_str(), meter).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let reason = serde_json::to_value(a.reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    metrics::counter!(metric_names::ENTITLEMENT_CHECKS, "reason" => reason).increment(1);
    Ok(Json(answer_json(&a)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUp {
    meter: String,
    amount: f64,
    reason: Option<String>,
    /// The caller's idempotency key: a retry with the same key adds nothing.
    request_id: Option<String>,
}

fn entry_json(e: &CreditEntry) -> Value {
    json!({
        "id": e.id,
        "meter": e.meter,
        "kind": e.kind,
        "amount": e.amount,
        "period_start": e.period_start_ms.map(rfc3339),
        "request_id": e.request_id,
        "reason": e.reason,
        "created": rfc3339(e.created_ms),
    })
}

/// Checks a credit amount: finite, within what f64 counts exactly.
pub fn check_amount(field: &str, v: f64, positive: bool) -> Result<f64, ApiError> {
    let ok = v.is_finite() && v.abs() <= MAX_EXACT && (!positive || v > 0.0) && v >= 0.0;
    if ok {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "{field}: must be a number {} and at most 2^53",
            if positive { "> 0" } else { ">= 0" }
        )))
    }
}

async fn top_up(
    State(st): State<EntitlementsState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    body: Result<Json<TopUp>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin_only(&caller, "adding credits")?;
    let id = parse_tenant(&tenant)?;
    let Json(t) = body.map_err(|e| ApiError::bad_request(format!("body: {}", e.body_text())))?;
    if !st.entitlements.is_limitable(&t.meter) {
        return Err(ApiError::bad_request(format!("meter: {:?} is not a configured sum or count meter", t.meter)));
    }
    let amount = check_amount("amount", t.amount, true)?;
    for (field, v) in [("reason", &t.reason), ("request_id", &t.request_id)] {
        if let Some(v) = v {
            check_text(field, v)?;
        }
    }
    let entry = NewCredit {
        tenant: id.as_str().to_owned(),
        meter: t.meter.clone(),
        kind: CreditKind::Topup,
        amount,
        period_start_ms: None,
        request_id: t.request_id.clone(),
        reason: t.reason.clone(),
        created_ms: now_ms(),
    };
    let written = st.store.add_credit(&entry).await.map_err(ApiError::internal)?;
    st.entitlements.reload_tenant(id.as_str()).await.map_err(ApiError::internal)?;
    let answer = st.entitlements.check(id.as_str(), &t.meter).map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::info!(tenant = %id, meter = t.meter, amount, duplicate = written.is_none(), "credits added");
    Ok(Json(json!({
        "entry": written.as_ref().map(entry_json),
        "duplicate": written.is_none(),
        "entitlement": answer_json(&answer),
    })))
}

#[derive(Deserialize)]
struct EntriesParams {
    meter: Option<String>,
    limit: Option<i64>,
}

async fn entries(
    State(st): State<EntitlementsState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    Query(p): Query<EntriesParams>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_tenant(&tenant)?;
    check_read(&caller, &id)?;
    if let Some(m) = &p.meter {
        check_text("meter", m)?;
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let rows = st.store.credit_entries(id.as_str(), p.meter.as_deref(), limit).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "tenant": id.as_str(), "entries": rows.iter().map(entry_json).collect::<Vec<_>>() })))
}

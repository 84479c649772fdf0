//! The Stripe sync as the API shows it: `GET /v1/stripe/sync` (state,
//! pushes by state, those that need a hand), `POST /v1/stripe/sync/retry`
//! (failed pushes, once their cause is mended), `GET
//! /v1/stripe/reconciliation?period=YYYY-MM` (the stored report).

use std::collections::HashMap;

use axum::{
    Extension, Json, Router,
    extract::State,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tally_collector::Caller;
use tally_core::{Principal, now_ms};
use tally_exporter::stripe::{Stripe, plan};
use tally_store::{PushRow, PushState, ReconRow, Store};

use super::{ApiError, Query, ReadScope, rfc3339};

#[derive(Clone)]
pub struct StripeState {
    pub store: Store,
    /// `None`: the sync is off (no key).
    pub stripe: Option<Stripe>,
}

pub fn router(state: StripeState) -> Router {
    Router::new()
        .route("/v1/stripe/sync", get(sync))
        .route("/v1/stripe/sync/retry", post(retry))
        .route("/v1/stripe/reconciliation", get(reconciliation))
        .with_state(state)
}

pub fn push_json(p: &PushRow) -> Value {
    json!({
        "identifier": p.identifier,
        "tenant": p.tenant,
        "meter": p.meter,
        "customer": p.customer,
        "event_name": p.event_name,
        "window_start": rfc3339(p.window_ms),
        "period": plan::period_name(p.period_ms),
        "kind": p.kind.as_str(),
        "revision": p.revision,
        "value": p.value,
        "timestamp": rfc3339(p.timestamp_s * 1000),
        "state": p.state.as_str(),
        "attempts": p.attempts,
        "created": rfc3339(p.created_ms),
        "sent": p.sent_ms.map(rfc3339),
        "stripe_request_id": p.request_id,
        "error": p.error,
    })
}

pub fn counts_json(counts: &HashMap<PushState, i64>) -> Value {
    let m: Map<String, Value> =
        PushState::ALL.iter().map(|s| (s.as_str().to_owned(), json!(counts.get(s).copied().unwrap_or(0)))).collect();
    Value::Object(m)
}

/// The sync's state; with `?tenant=` (required of tenant keys) that
/// tenant's pushes only.
async fn sync(State(st): State<StripeState>, ReadScope(tenant): ReadScope) -> Result<Json<Value>, ApiError> {
    let tenant = tenant.as_ref().map(|t| t.as_str());
    let counts = st.store.push_counts(tenant).await.map_err(ApiError::internal)?;
    let failed = st.store.pushes(tenant, Some(PushState::Failed), 100).await.map_err(ApiError::internal)?;
    let expired = st.store.pushes(tenant, Some(PushState::Expired), 100).await.map_err(ApiError::internal)?;
    let mut out = json!({
        "enabled": st.stripe.is_some(),
        "pushes": counts_json(&counts),
        "failed": failed.iter().map(push_json).collect::<Vec<_>>(),
        "expired": expired.iter().map(push_json).collect::<Vec<_>>(),
    });
    if let Some(s) = &st.stripe {
        out["leader"] = json!(s.status.leader());
        out["halted"] = json!(s.status.halted_reason());
        out["meters"] = s
            .meters
            .iter()
            .map(|m| {
                json!({
                    "meter": m.name, "stripe_event_name": m.event_name, "stripe_meter_id": m.meter_id,
                    "pushes": m.shape.as_str(), "stripe_scale": m.scale,
                })
            })
            .collect();
    }
    Ok(Json(out))
}

/// Makes failed pushes pending again (admin keys, or open mode), e.g.
/// after a customer id was corrected: `{"retried": N}`.
async fn retry(
    State(st): State<StripeState>,
    Extension(caller): Extension<Caller>,
    ReadScope(tenant): ReadScope,
) -> Result<Json<Value>, ApiError> {
    if caller.0.as_ref().is_some_and(|p| *p != Principal::Admin) {
        return Err(ApiError::forbidden("retrying pushes needs an admin key"));
    }
    let n = st
        .store
        .retry_failed_pushes(tenant.as_ref().map(|t| t.as_str()), now_ms())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "retried": n })))
}

#[derive(Deserialize)]
struct PeriodQuery {
    period: Option<String>,
}

pub fn recon_json(r: &ReconRow) -> Value {
    json!({
        "tenant": r.tenant,
        "meter": r.meter,
        "customers": r.customers.split(',').filter(|c| !c.is_empty()).collect::<Vec<_>>(),
        "ledger": r.ledger,
        "expected": r.expected,
        "pushed": r.pushed,
        "stripe": r.stripe,
        "drift": r.drift,
        "confirmed": r.checks >= 2,
        "checked": rfc3339(r.checked_ms),
        "note": r.error,
    })
}

/// The stored reconciliation of a period (made after the period closes,
/// or by `tally stripe reconcile`).
async fn reconciliation(
    State(st): State<StripeState>,
    ReadScope(tenant): ReadScope,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Value>, ApiError> {
    let period = q.period.ok_or_else(|| ApiError::bad_request("period: required (YYYY-MM)"))?;
    let (start, _) = plan::parse_period(&period).map_err(ApiError::bad_request)?;
    let rows = st.store.reconciliation(start, tenant.as_ref().map(|t| t.as_str())).await.map_err(ApiError::internal)?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!(
            "no reconciliation of {period} yet: it runs close_grace after the period ends, or run \
             `tally stripe reconcile --period {period}`"
        )));
    }
    let drift_lines = rows.iter().filter(|r| r.drift.is_some_and(|d| d != 0.0)).count();
    Ok(Json(json!({
        "period": period,
        "drift_lines": drift_lines,
        "lines": rows.iter().map(recon_json).collect::<Vec<_>>(),
    })))
}

//! Tenants: `GET /v1/tenants` (admin), `GET /v1/tenants/{tenant}` (the
//! tenant's own keys too) with its Stripe sync state, and `PUT
//! /v1/tenants/{tenant}` (admin, or open mode) to map it to a Stripe
//! customer.

use axum::{
    Extension, Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_collector::Caller;
use tally_core::{Principal, now_ms};
use tally_store::{MappingError, PushState, Store, TenantRow};

use super::{ApiError, check_read, parse_tenant, rfc3339};

#[derive(Clone)]
pub struct TenantsState {
    pub store: Store,
    /// Whether the Stripe sync runs (a key is set).
    pub stripe_enabled: bool,
}

pub fn router(state: TenantsState) -> Router {
    Router::new().route("/v1/tenants", get(list)).route("/v1/tenants/{tenant}", get(show).put(update)).with_state(state)
}

fn admin_only(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match &caller.0 {
        Some(p) if *p != Principal::Admin => {
            let own = p
                .pinned_tenant()
                .map_or(String::new(), |t| format!("; GET /v1/tenants/{t} reads this key's own tenant"));
            Err(ApiError::forbidden(format!("{what} needs an admin key, not a {} key{own}", p.kind())))
        }
        _ => Ok(()),
    }
}

fn tenant_json(t: &TenantRow) -> Value {
    json!({
        "id": t.id,
        "display_name": t.display_name,
        "stripe_customer_id": t.stripe_customer_id,
        "status": t.status,
        "created": rfc3339(t.created_ms),
    })
}

/// Every tenant (admin keys, or open mode): `{"tenants":[…]}`.
async fn list(State(st): State<TenantsState>, Extension(caller): Extension<Caller>) -> Result<Json<Value>, ApiError> {
    admin_only(&caller, "listing every tenant")?;
    let rows = st.store.tenants().await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "tenants": rows.iter().map(tenant_json).collect::<Vec<_>>() })))
}

/// One tenant and its Stripe sync state: pushes by state, the last sent,
/// and the latest that failed or expired (to correct by hand).
async fn show(
    State(st): State<TenantsState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_tenant(&tenant)?;
    check_read(&caller, &id)?;
    let row = st
        .store
        .tenant(id.as_str())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("tenant {id} is not known (no usage, no mapping)")))?;
    let mut out = tenant_json(&row);
    let counts = st.store.push_counts(Some(id.as_str())).await.map_err(ApiError::internal)?;
    let last_sent = st.store.pushes(Some(id.as_str()), Some(PushState::Sent), 1).await.map_err(ApiError::internal)?;
    let mut problems =
        st.store.pushes(Some(id.as_str()), Some(PushState::Failed), 20).await.map_err(ApiError::internal)?;
    problems
        .extend(st.store.pushes(Some(id.as_str()), Some(PushState::Expired), 20).await.map_err(ApiError::internal)?);
    out["stripe_sync"] = json!({
        "enabled": st.stripe_enabled,
        "waiting_for_mapping": st.stripe_enabled && row.stripe_customer_id.is_none(),
        "pushes": super::stripe::counts_json(&counts),
        "last_sent": last_sent.first().map(super::stripe::push_json),
        "needs_attention": problems.iter().map(super::stripe::push_json).collect::<Vec<_>>(),
    });
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    /// `cus_…`, or null to unmap.
    stripe_customer_id: Option<String>,
}

/// Maps a tenant to a Stripe customer (`null` unmaps it); creates the
/// tenant if it has no usage yet. One tenant per customer.
async fn update(
    State(st): State<TenantsState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    body: Result<Json<Update>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin_only(&caller, "changing a tenant")?;
    let id = parse_tenant(&tenant)?;
    let Json(update) = body.map_err(|e| ApiError::bad_request(format!("body: {}", e.body_text())))?;
    if let Some(c) = &update.stripe_customer_id {
        check_customer_id(c).map_err(ApiError::bad_request)?;
    }
    let row = match st.store.set_stripe_customer(id.as_str(), update.stripe_customer_id.as_deref(), now_ms()).await {
        Ok(row) => row,
        Err(e @ MappingError::CustomerTaken { .. }) => return Err(ApiError::conflict(e.to_string())),
        Err(MappingError::Store(e)) => return Err(ApiError::internal(e)),
    };
    tracing::info!(tenant = %id, customer = ?row.stripe_customer_id, "tenant's Stripe customer set");
    Ok(Json(tenant_json(&row)))
}

/// A Stripe customer id: `cus_` then letters and digits.
pub fn check_customer_id(c: &str) -> Result<(), String> {
    let ok = c.len() <= 255
        && c.strip_prefix("cus_")
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|ch| ch.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "stripe_customer_id: {:?} is not a Stripe customer id (cus_ then letters and digits)",
            c.chars().take(64).collect::<String>()
        ))
    }
}

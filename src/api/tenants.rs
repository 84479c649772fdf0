//! Tenants: `GET /v1/tenants` (admin), `GET /v1/tenants/{tenant}` (the
//! tenant's own keys too) with its subscription status, entitlements
//! (usage this period, limits, credits) and Stripe sync state, and `PUT
//! /v1/tenants/{tenant}` (admin, or open mode) to map it to a Stripe
//! customer and set its limits and credits.

use axum::{
    Extension, Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    routing::get,
};
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tally_aggregator::entitlements::Entitlements;
use tally_collector::Caller;
use tally_core::{Principal, now_ms};
use tally_store::{CreditKind, MappingError, NewCredit, PushState, Store, TenantRow};

use super::{ApiError, check_read, entitlements::answer_json, parse_tenant, rfc3339};

#[derive(Clone)]
pub struct TenantsState {
    pub store: Store,
    /// Whether the Stripe sync runs (a key is set).
    pub stripe_enabled: bool,
    pub entitlements: Entitlements,
}

pub fn router(state: TenantsState) -> Router {
    Router::new().route("/v1/tenants", get(list)).route("/v1/tenants/{tenant}", get(show).put(update)).with_state(state)
}

pub fn admin_only(caller: &Caller, what: &str) -> Result<(), ApiError> {
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

fn tenant_json(t: &TenantRow, ent: &Entitlements) -> Value {
    let answers = ent.tenant(&t.id).unwrap_or_default();
    json!({
        "id": t.id,
        "display_name": t.display_name,
        "stripe_customer_id": t.stripe_customer_id,
        "status": t.status,
        "subscription_status": answers.first().and_then(|a| a.subscription_status.clone()),
        "created": rfc3339(t.created_ms),
        "entitlements": answers.iter().map(|a| (a.meter.clone(), answer_json(a))).collect::<BTreeMap<_, _>>(),
    })
}

/// Every tenant (admin keys, or open mode): `{"tenants":[…]}`.
async fn list(State(st): State<TenantsState>, Extension(caller): Extension<Caller>) -> Result<Json<Value>, ApiError> {
    admin_only(&caller, "listing every tenant")?;
    let rows = st.store.tenants().await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "tenants": rows.iter().map(|t| tenant_json(t, &st.entitlements)).collect::<Vec<_>>() })))
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
    let mut out = tenant_json(&row, &st.entitlements);
    let billing = st.store.tenant_billing(id.as_str()).await.map_err(ApiError::internal)?;
    out["subscription"] = billing.map_or(Value::Null, |b| {
        json!({
            "id": b.subscription_id,
            "status": b.status,
            "current_period_start": b.period_start_ms.map(rfc3339),
            "current_period_end": b.period_end_ms.map(rfc3339),
            "last_payment": b.payment,
            "as_of": b.status_at_s.checked_mul(1000).map(rfc3339),
        })
    });
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
    /// `cus_…`, or null to unmap; absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    stripe_customer_id: Option<Option<String>>,
    /// Allowance per billing period by meter; null returns a meter to its
    /// configured default.
    #[serde(default)]
    limits: BTreeMap<String, Option<f64>>,
    /// The credit balance to hold by meter (written as the difference).
    #[serde(default)]
    credits: BTreeMap<String, f64>,
}

/// Tells a field given as `null` (Some(None)) from one left out (None).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Maps a tenant to a Stripe customer (`null` unmaps it) and sets its
/// limits and credit balances; creates the tenant if it has no usage yet.
/// One tenant per customer.
async fn update(
    State(st): State<TenantsState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    body: Result<Json<Update>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    admin_only(&caller, "changing a tenant")?;
    let id = parse_tenant(&tenant)?;
    let Json(update) = body.map_err(|e| ApiError::bad_request(format!("body: {}", e.body_text())))?;
    if let Some(Some(c)) = &update.stripe_customer_id {
        check_customer_id(c).map_err(ApiError::bad_request)?;
    }
    for m in update.limits.keys().chain(update.credits.keys()) {
        if !st.entitlements.is_limitable(m) {
            return Err(ApiError::bad_request(format!(
                "{m}: not a configured sum or count meter (limits and credits apply to those)"
            )));
        }
    }
    for (m, v) in &update.limits {
        if let Some(v) = v {
            super::entitlements::check_amount(&format!("limits.{m}"), *v, false)?;
        }
    }
    for (m, v) in &update.credits {
        super::entitlements::check_amount(&format!("credits.{m}"), *v, false)?;
    }
    let now = now_ms();
    if let Some(customer) = &update.stripe_customer_id {
        match st.store.set_stripe_customer(id.as_str(), customer.as_deref(), now).await {
            Ok(row) => tracing::info!(tenant = %id, customer = ?row.stripe_customer_id, "tenant's Stripe customer set"),
            Err(e @ MappingError::CustomerTaken { .. }) => return Err(ApiError::conflict(e.to_string())),
            Err(MappingError::Store(e)) => return Err(ApiError::internal(e)),
        }
    }
    if !update.limits.is_empty() {
        let limits: Vec<(String, Option<f64>)> = update.limits.into_iter().collect();
        st.store.set_limits(id.as_str(), &limits, now).await.map_err(ApiError::internal)?;
    }
    if !update.credits.is_empty() {
        st.entitlements.reload_tenant(id.as_str()).await.map_err(ApiError::internal)?;
        for (meter, target) in update.credits {
            let held = st.entitlements.check(id.as_str(), &meter).ok().and_then(|a| a.credits_remaining).unwrap_or(0.0);
            if target == held {
                continue;
            }
            let entry = NewCredit {
                tenant: id.as_str().to_owned(),
                meter,
                kind: CreditKind::Set,
                amount: target - held,
                period_start_ms: None,
                request_id: None,
                reason: Some(format!("balance set to {target} (was {held})")),
                created_ms: now,
            };
            st.store.add_credit(&entry).await.map_err(ApiError::internal)?;
        }
    }
    // The tenant exists from here on (a mapping or a limit created it).
    if st.store.tenant(id.as_str()).await.map_err(ApiError::internal)?.is_none() {
        st.store.set_limits(id.as_str(), &[], now).await.map_err(ApiError::internal)?;
    }
    st.entitlements.reload_tenant(id.as_str()).await.map_err(ApiError::internal)?;
    let row = st
        .store
        .tenant(id.as_str())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("tenant vanished"))?;
    Ok(Json(tenant_json(&row, &st.entitlements)))
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

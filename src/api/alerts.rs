//! `GET /v1/alerts`: alert instances (pending, firing, recently resolved),
//! tenant-scoped like the other queries; an admin may leave out the tenant
//! to see all.

use axum::{Json, Router, extract::State, routing::get};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_core::alert::AlertState;
use tally_store::Store;

use super::{ApiError, Query, ReadScope, rfc3339};

pub fn router(store: Store) -> Router {
    Router::new().route("/v1/alerts", get(alerts)).with_state(store)
}

#[derive(Deserialize)]
struct AlertsQuery {
    /// Only instances in this state.
    state: Option<String>,
}

async fn alerts(
    State(store): State<Store>,
    ReadScope(tenant): ReadScope,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Value>, ApiError> {
    let state =
        match q.state.as_deref() {
            None => None,
            Some(s) => Some(AlertState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!("state: {s:?} is not one of pending, firing, resolved"))
            })?),
        };
    let instances = store.alert_instances(tenant.as_ref()).await.map_err(ApiError::internal)?;
    let alerts: Vec<Value> = instances
        .iter()
        .filter(|i| state.is_none_or(|s| i.state == s))
        .map(|i| {
            json!({
                "rule": i.rule,
                "tenant": i.tenant,
                "labels": i.group(),
                "state": i.state.as_str(),
                "severity": i.severity.map(|s| s.as_str()),
                "value": i.value,
                "threshold": i.threshold,
                "since": rfc3339(i.since_ms),
                "started_at": i.started_ms.map(rfc3339),
                "fingerprint": i.fingerprint,
                "updated_at": rfc3339(i.updated_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

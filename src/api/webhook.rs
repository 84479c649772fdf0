//! `POST /v1/stripe/webhook`: Stripe's events about subscriptions and
//! invoices. Authenticated by Stripe's signature over the raw body, not by
//! an API key (so it sits outside the key check). Answers fast: one
//! transaction records the event id with its effect; a redelivery is a 200
//! that changes nothing; types tally does not act on are acknowledged.

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;
use tally_aggregator::entitlements::{Entitlements, NoticeTargets};
use tally_collector::events::read_body;
use tally_core::{Secret, metric_names, now_ms};
use tally_exporter::stripe::webhook;
use tally_store::{Applied, CustomerBilling, Store};

use super::ApiError;

/// Stripe's events are far below this (its own limit for event objects).
const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct WebhookState {
    pub store: Store,
    /// `[stripe] webhook_secret_env`'s value; None: refused with 503.
    pub secret: Option<Secret>,
    pub secret_env: String,
    pub tolerance_s: i64,
    pub tenant_key: String,
    pub entitlements: Entitlements,
    pub targets: NoticeTargets,
    /// Time a client has to send the body (`server.body_timeout`).
    pub body_timeout: std::time::Duration,
}

pub fn router(state: WebhookState) -> Router {
    Router::new().route("/v1/stripe/webhook", post(receive)).with_state(state)
}

fn refused(reason: &'static str, status: StatusCode, message: String) -> Response {
    metrics::counter!(metric_names::STRIPE_WEBHOOKS_REFUSED, "reason" => reason).increment(1);
    tracing::warn!(reason, %message, "Stripe webhook refused");
    (status, Json(json!({ "error": message }))).into_response()
}

fn outcome(outcome: &'static str) {
    metrics::counter!(metric_names::STRIPE_WEBHOOKS, "outcome" => outcome).increment(1);
}

async fn receive(State(st): State<WebhookState>, headers: HeaderMap, body: Body) -> Response {
    // Read whole (the signature covers the raw bytes), bounded in size and
    // time: this route needs no key, so a trickling client must not hold it.
    let body = match read_body(body, MAX_BODY, "the webhook limit", st.body_timeout).await {
        Ok(b) => b,
        Err((status, message)) => return refused("body", status, message),
    };
    let Some(secret) = &st.secret else {
        return refused(
            "not_configured",
            StatusCode::SERVICE_UNAVAILABLE,
            format!("webhooks are off: {} (stripe.webhook_secret_env) is not set", st.secret_env),
        );
    };
    let header = headers.get("stripe-signature").map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let now = now_ms();
    if let Err(e) = webhook::verify(header, &body, secret.expose().as_bytes(), st.tolerance_s, now / 1000) {
        return refused(e.reason(), StatusCode::BAD_REQUEST, e.to_string());
    }
    let decoded = match webhook::decode(&body, &st.tenant_key) {
        Ok(d) => d,
        Err(e) => return refused("malformed_event", StatusCode::BAD_REQUEST, e),
    };
    let (id, kind) = (decoded.id.clone(), decoded.kind.clone());
    let Some(event) = decoded.into_event() else {
        outcome("ignored");
        return Json(json!({ "received": true, "id": id, "effect": "ignored" })).into_response();
    };
    // The notice is built once, inside the transaction; its event is kept
    // for the metric, counted only once the transaction committed.
    let noticed = std::sync::Mutex::new(None);
    let notices = |before: Option<&CustomerBilling>, after: &CustomerBilling| {
        let (event, rows) = st.targets.status(before, after, now).unzip();
        *noticed.lock().expect("notice event") = event;
        rows.unwrap_or_default()
    };
    match st.store.apply_webhook(&event, now, &notices).await {
        Ok(Applied::Duplicate) => {
            outcome("duplicate");
            Json(json!({ "received": true, "id": id, "effect": "duplicate" })).into_response()
        }
        Ok(Applied::Done { stale, after, .. }) => {
            outcome(if stale { "stale" } else { "applied" });
            if !stale {
                st.entitlements.apply_billing(&after);
                if let Some(event) = noticed.into_inner().expect("notice event") {
                    metrics::counter!(metric_names::BILLING_NOTICES, "event" => event).increment(1);
                }
            }
            tracing::info!(id, kind, tenant = ?after.tenant, status = ?after.status, stale, "Stripe webhook");
            Json(json!({
                "received": true,
                "id": id,
                "effect": if stale { "stale" } else { "applied" },
                "tenant": after.tenant,
                "subscription_status": after.status,
            }))
            .into_response()
        }
        Err(e) => {
            outcome("error");
            let mut r = ApiError::internal(e).into_response();
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE; // Stripe redelivers
            r
        }
    }
}

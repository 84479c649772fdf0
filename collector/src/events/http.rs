use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};
use tally_core::{TenantId, UsageOutcome, metric_names};

use super::{EventClock, EventOutcome, EventsConfig, Meters, check_event};
use crate::{Caller, LedgerError, ledger::UsageLedger};

/// What the events route needs.
#[derive(Debug, Clone)]
pub struct EventsState {
    pub meters: Arc<Meters>,
    pub ledger: UsageLedger,
    pub config: EventsConfig,
    /// Seconds a 503 tells the sender to wait (`Retry-After`).
    pub retry_after_secs: u32,
    /// Time a client has to send the body (`server.body_timeout`).
    pub body_timeout: std::time::Duration,
}

/// `POST /v1/events`.
pub fn events_router(state: EventsState) -> Router {
    Router::new().route("/v1/events", post(post_events)).with_state(Arc::new(state))
}

/// Reads a request body of at most `limit` bytes (named by the config key
/// `limit_key` in the error) within `timeout` (`server.body_timeout`): a
/// client trickling its body cannot hold a request open. The error is the
/// status and message to answer with (413, 408 or 400).
pub async fn read_body(
    body: Body,
    limit: usize,
    limit_key: &str,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, (StatusCode, String)> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, format!("body exceeds {limit_key} ({limit} bytes)")))
        }
        Ok(Err(e)) => Err((StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!("body not received within server.body_timeout ({}s)", timeout.as_secs_f64()),
        )),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// How the body must be shaped, from the content type.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    One,
    Batch,
    Either,
}

async fn post_events(
    State(st): State<Arc<EventsState>>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let shape = match media.as_deref() {
        Some("application/cloudevents+json") => Shape::One,
        Some("application/cloudevents-batch+json") => Shape::Batch,
        Some("application/json") => Shape::Either,
        other => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content type {:?}: use application/cloudevents+json, \
                     application/cloudevents-batch+json or application/json",
                    other.unwrap_or("")
                ),
            );
        }
    };
    let bytes = match read_body(body, st.config.max_body_bytes, "events.max_body_bytes", st.body_timeout).await {
        Ok(b) => b,
        Err((status, message)) => return error(status, message),
    };
    let parsed: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let events = match (parsed, shape) {
        (Value::Array(events), Shape::Batch | Shape::Either) => events,
        (event @ Value::Object(_), Shape::One | Shape::Either) => vec![event],
        (_, Shape::Batch) => return error(StatusCode::BAD_REQUEST, "a cloudevents-batch+json body must be an array"),
        (_, Shape::One) => return error(StatusCode::BAD_REQUEST, "a cloudevents+json body must be one event object"),
        (_, Shape::Either) => {
            return error(StatusCode::BAD_REQUEST, "body must be an event object or an array of events");
        }
    };
    if events.len() > st.config.max_batch {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("batch of {} events exceeds events.max_batch ({})", events.len(), st.config.max_batch),
        );
    }
    // A tenant key pins every event to its tenant; other keys (and open
    // mode) take the tenant from `subject`.
    let principal = caller.and_then(|axum::Extension(Caller(p))| p);
    let pinned: Option<&TenantId> = principal.as_ref().and_then(|p| p.pinned_tenant());
    let clock = EventClock {
        now_ms: tally_core::now_ms(),
        max_future_ms: st.config.max_future.as_millis() as i64,
        max_age_ms: st.config.max_age.as_millis().min(i64::MAX as u128) as i64,
    };
    let checked: Vec<EventOutcome> = events.iter().map(|e| check_event(e, &st.meters, pinned, &clock)).collect();

    let records: Vec<_> = checked
        .iter()
        .filter_map(|o| match o {
            EventOutcome::Records(r) => Some(r.iter().cloned()),
            EventOutcome::Rejected(_) => None,
        })
        .flatten()
        .collect();
    let outcomes = match st.ledger.record(records).await {
        Ok(o) => o,
        // Nothing of the request was stored: it is not worth sending again.
        Err(e @ LedgerError::Refused(_)) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        // Nothing of the request was stored; a retry is safe.
        Err(e) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(st.retry_after_secs));
            return r;
        }
    };

    let mut outcomes = outcomes.into_iter();
    // Per-event statuses, and how many of each.
    const STATUSES: [&str; 4] = ["accepted", "duplicate", "conflict", "rejected"];
    let mut counts = [0u64; 4];
    let results: Vec<Value> = events
        .iter()
        .zip(&checked)
        .map(|(event, checked)| {
            let (status, reason) = match checked {
                EventOutcome::Rejected(reason) => (3, Some(reason.clone())),
                EventOutcome::Records(r) => {
                    let mine: Vec<UsageOutcome> = outcomes.by_ref().take(r.len()).collect();
                    // An event feeding several meters: any conflict makes it a
                    // conflict; all duplicates, a duplicate.
                    if mine.contains(&UsageOutcome::Conflict) {
                        (2, Some("an event with this source and id was recorded with different content".into()))
                    } else if mine.iter().all(|o| *o == UsageOutcome::Duplicate) {
                        (1, None)
                    } else {
                        (0, None)
                    }
                }
            };
            counts[status] += 1;
            let mut r = json!({ "id": event.get("id"), "source": event.get("source"), "status": STATUSES[status] });
            if let Some(reason) = reason {
                r["reason"] = Value::String(reason);
            }
            r
        })
        .collect();
    for (status, n) in STATUSES.into_iter().zip(counts) {
        if n > 0 {
            metrics::counter!(metric_names::USAGE_EVENTS, "status" => status).increment(n);
        }
    }
    Json(json!({
        "accepted": counts[0], "duplicate": counts[1], "conflict": counts[2], "rejected": counts[3],
        "results": results,
    }))
    .into_response()
}

//! v2 meter event sessions and the high-throughput meter event stream.
//!
//! Stripe serves the stream on `meter-events.stripe.com` and the session on
//! `api.stripe.com`; the stand-in serves both on one listener, so a client
//! must use the stand-in's URL for both bases (stripe-python:
//! `base_addresses={"api": url, "meter_events": url}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::api_v1::{check_timestamp, check_value};
use super::http::ApiError;
use super::limits::Fault;
use super::model::{Formula, Source};
use super::state::{AsyncError, Auth, NewEvent, Saved, Shared};
use crate::serve::Conn;

/// At most this many events per stream request.
pub const MAX_STREAM_EVENTS: usize = 100;

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn invalid_v2(message: String) -> ApiError {
    ApiError::v2(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_fields", message)
}

pub async fn create_session(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let r = (|| -> Result<Response, ApiError> {
        s.begin(&headers, Auth::SecretKey, false)?;
        let fp = format!("POST /v2/billing/meter_event_session\n{}", canonical(&body));
        let ticket = match s.idempotency(&headers, fp)? {
            Ok(t) => t,
            Err(replay) => return Ok(replay),
        };
        let mut g = s.lock();
        let now = g.now_ms();
        let ttl = g.settings.session_ttl.as_millis() as i64;
        let token = format!("mes_tok_{}", g.new_id(""));
        let id = g.new_id("mes_");
        g.sessions.insert(token.clone(), now + ttl);
        drop(g);
        let saved = Saved::ok(json!({
            "id": id,
            "object": "v2.billing.meter_event_session",
            "authentication_token": token,
            "created": rfc3339(now),
            "expires_at": rfc3339(now + ttl),
            "livemode": s.livemode,
        }));
        if let Some(t) = ticket {
            t.save(&saved);
        }
        Ok(saved.into_response())
    })();
    r.unwrap_or_else(IntoResponse::into_response)
}

/// A JSON body's parameters in a comparable form.
fn canonical(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into())
}

pub async fn stream(
    State(s): State<Arc<Shared>>,
    axum::Extension(conn): axum::Extension<Conn>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match stream_inner(&s, &conn, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn stream_inner(s: &Arc<Shared>, conn: &Conn, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    s.begin(headers, Auth::SessionToken, true)?;
    let parsed: Value = serde_json::from_slice(body).map_err(|e| invalid_v2(format!("Invalid JSON body: {e}")))?;
    let events = parsed
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_v2("Missing required field: events.".into()))?;
    if events.is_empty() || events.len() > MAX_STREAM_EVENTS {
        return Err(invalid_v2(format!(
            "events must contain between 1 and {MAX_STREAM_EVENTS} items; got {}.",
            events.len()
        )));
    }
    let fault = s.draw_fault();
    match fault {
        Some(Fault::RateLimit) => {
            return Err(ApiError::v2(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit",
                "rate_limit",
                "Request rate limit exceeded.".into(),
            ));
        }
        Some(Fault::ServerError) => {
            return Err(ApiError::v2(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error",
                "An unknown error occurred while processing your request. Please retry.".into(),
            )
            .header("Stripe-Should-Retry", "true"));
        }
        Some(Fault::ResetBeforeRecord) => conn.reset_and_hang().await,
        _ => {}
    }
    let (processing, slow) = {
        let g = s.lock();
        (g.settings.processing_time, g.settings.slow_delay)
    };
    if !processing.is_zero() {
        tokio::time::sleep(processing).await;
    }
    {
        let mut g = s.lock();
        for ev in events {
            take_stream_event(&mut g, ev);
        }
    }
    match fault {
        Some(Fault::ResetAfterRecord) => conn.reset_and_hang().await,
        Some(Fault::Slow) => tokio::time::sleep(slow).await,
        _ => {}
    }
    Ok(Saved::ok(json!({})).into_response())
}

/// Everything in the stream is validated asynchronously: a bad event becomes
/// an async error, a duplicate identifier is dropped.
fn take_stream_event(g: &mut super::state::Inner, ev: &Value) {
    let now = g.now_secs();
    let event_name = ev.get("event_name").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut identifier = ev.get("identifier").and_then(Value::as_str).unwrap_or("").to_owned();
    if identifier.is_empty() {
        identifier = g.new_id("mevt_");
    }
    let fail = |g: &mut super::state::Inner, code: &str, message: String| {
        g.async_errors.push(AsyncError {
            identifier: identifier.clone(),
            event_name: event_name.clone(),
            code: code.to_owned(),
            message,
            source: Source::V2Stream,
            at: now,
        });
    };
    if event_name.is_empty() || event_name.chars().count() > 100 {
        return fail(g, "invalid_event_name", "event_name is required and must be at most 100 characters.".into());
    }
    let payload: BTreeMap<String, String> = match ev.get("payload").and_then(Value::as_object) {
        Some(p) => {
            p.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect()
        }
        None => return fail(g, "missing_dimension_payload_keys", "The event has no payload.".into()),
    };
    let timestamp = match ev.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::String(t)) => match DateTime::parse_from_rfc3339(t) {
            Ok(t) => t.timestamp(),
            Err(_) => return fail(g, "timestamp_invalid", format!("Invalid timestamp {t}: expected RFC 3339.")),
        },
        Some(other) => return fail(g, "timestamp_invalid", format!("Invalid timestamp {other}: expected RFC 3339.")),
    };
    if let Err((code, message)) = check_timestamp(timestamp, now) {
        return fail(g, code, message);
    }
    let meter = g.meter_for(&event_name).cloned();
    let value_key = meter.as_ref().map(|m| m.spec.value_key.clone()).unwrap_or_else(|| "value".into());
    match payload.get(&value_key) {
        Some(raw) => {
            if let Err((code, message)) = check_value(raw) {
                return fail(g, code, message);
            }
        }
        None if meter.as_ref().is_some_and(|m| m.spec.formula != Formula::Count) => {
            return fail(
                g,
                "meter_event_invalid_value",
                format!("The event payload is missing the value key {value_key}."),
            );
        }
        None => {}
    }
    if g.recent(&identifier).is_some() {
        g.stats.stream_duplicates_dropped += 1;
        return;
    }
    g.record(NewEvent { identifier, event_name, payload, timestamp, source: Source::V2Stream });
}

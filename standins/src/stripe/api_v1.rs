//! `POST /v1/billing/meter_events` and `POST /v1/billing/meter_event_adjustments`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::http::{ApiError, Form};
use super::limits::Fault;
use super::model::{Formula, Source, parse_value};
use super::state::{Auth, DAY_SECS, NewEvent, Saved, Shared};
use super::{AdjustmentStatus, UnknownEventName};
use crate::serve::Conn;

/// The 35-calendar-day look-back and the 5-minute allowance for clock drift.
pub const MAX_PAST_SECS: i64 = 35 * DAY_SECS;
pub const MAX_FUTURE_SECS: i64 = 300;

/// Checks on `timestamp` shared by v1 and the v2 stream: `Err((code, message))`.
pub fn check_timestamp(ts: i64, now: i64) -> Result<(), (&'static str, String)> {
    if ts < now - MAX_PAST_SECS {
        return Err((
            "timestamp_too_far_in_past",
            format!(
                "The event timestamp cannot be more than 35 days in past. Expected a timestamp greater than or \
                 equal to {}.",
                now - MAX_PAST_SECS
            ),
        ));
    }
    if ts > now + MAX_FUTURE_SECS {
        return Err((
            "timestamp_in_future",
            format!(
                "The event timestamp cannot be more than 5 minutes in future. Expected a timestamp less than or \
                 equal to {}.",
                now + MAX_FUTURE_SECS
            ),
        ));
    }
    Ok(())
}

/// Checks on the payload value: `Err((code, message))`.
pub fn check_value(raw: &str) -> Result<i64, (&'static str, String)> {
    parse_value(raw).map_err(|too_many_digits| {
        if too_many_digits {
            (
                "meter_event_value_too_many_digits",
                format!("The value in the event payload can have at most 15 digits. Received {raw}."),
            )
        } else {
            (
                "meter_event_invalid_value",
                format!("The value in the event payload must be a whole number. Received {raw}."),
            )
        }
    })
}

pub async fn create_meter_event(
    State(s): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match create(&s, &conn, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn create(s: &Arc<Shared>, conn: &Conn, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    s.begin(headers, Auth::SecretKey, true)?;
    let form = Form::parse(body);
    let ticket = match s.idempotency(headers, format!("POST /v1/billing/meter_events\n{}", form.fingerprint()))? {
        Ok(t) => t,
        Err(replay) => return Ok(replay),
    };
    let event = validate(s, &form)?;
    let customer_key = {
        let g = s.lock();
        g.meter_for(&event.event_name)
            .map(|m| m.spec.customer_key.clone())
            .unwrap_or_else(|| "stripe_customer_id".into())
    };
    let _guard = match event.payload.get(&customer_key) {
        Some(c) => Some(s.enter(c, &event.event_name)?),
        None => None,
    };
    let fault = s.draw_fault();
    match fault {
        Some(Fault::RateLimit) => return Err(ApiError::rate_limited()),
        Some(Fault::ServerError) => return Err(ApiError::server_error()),
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
    let saved = {
        let mut g = s.lock();
        if g.recent(&event.identifier).is_some() {
            g.stats.duplicate_identifiers += 1;
            return Err(ApiError::invalid(
                None,
                Some("identifier"),
                format!("An event already exists with identifier {}.", event.identifier),
            )
            .header("Stripe-Should-Retry", "false"));
        }
        let rec = g.record(event);
        Saved::ok(rec.to_json(s.livemode))
    };
    if let Some(t) = ticket {
        t.save(&saved);
    }
    match fault {
        Some(Fault::ResetAfterRecord) => conn.reset_and_hang().await,
        Some(Fault::Slow) => tokio::time::sleep(slow).await,
        _ => {}
    }
    Ok(saved.into_response())
}

/// The synchronous checks of a v1 meter event.
fn validate(s: &Shared, form: &Form) -> Result<NewEvent, ApiError> {
    if let Some(p) = form.unknown(&["event_name", "payload", "identifier", "timestamp", "expand"]) {
        return Err(ApiError::unknown_param(&p));
    }
    let event_name = form.get("event_name").filter(|v| !v.is_empty()).ok_or_else(|| ApiError::missing("event_name"))?;
    if event_name.chars().count() > 100 {
        return Err(ApiError::too_long("event_name", event_name, 100));
    }
    if !form.has("payload") {
        return Err(ApiError::missing("payload"));
    }
    let payload = form.nested("payload");
    let identifier = match form.get("identifier") {
        Some(id) if id.chars().count() > 100 => return Err(ApiError::too_long("identifier", id, 100)),
        Some(id) if !id.is_empty() => Some(id.to_owned()),
        _ => None,
    };
    let g = s.lock();
    let now = g.now_secs();
    let timestamp = form.integer("timestamp")?.unwrap_or(now);
    check_timestamp(timestamp, now).map_err(|(_, msg)| ApiError::invalid(None, Some("timestamp"), msg))?;
    let meter = g.meter_for(event_name);
    if meter.is_none() && g.settings.unknown_event_name == UnknownEventName::Reject {
        return Err(ApiError::invalid(
            Some("resource_missing"),
            Some("event_name"),
            format!("No active meter found for event_name {event_name}."),
        ));
    }
    let value_key = meter.map(|m| m.spec.value_key.as_str()).unwrap_or("value");
    let formula = meter.map(|m| m.spec.formula);
    match payload.get(value_key) {
        Some(raw) => {
            check_value(raw)
                .map_err(|(_, msg)| ApiError::invalid(None, Some(&format!("payload[{value_key}]")), msg))?;
        }
        // Count meters count events; sum and last need a value.
        None if formula != Some(Formula::Count) && meter.is_some() => {
            return Err(ApiError::invalid(
                None,
                Some(&format!("payload[{value_key}]")),
                format!("The event payload is missing the value key {value_key}."),
            ));
        }
        None => {}
    }
    let mut g = g;
    let identifier = identifier.unwrap_or_else(|| g.new_id("mevt_"));
    Ok(NewEvent { identifier, event_name: event_name.to_owned(), payload, timestamp, source: Source::V1 })
}

pub async fn create_adjustment(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    match adjust(&s, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn adjust(s: &Arc<Shared>, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    s.begin(headers, Auth::SecretKey, false)?;
    let form = Form::parse(body);
    let ticket =
        match s.idempotency(headers, format!("POST /v1/billing/meter_event_adjustments\n{}", form.fingerprint()))? {
            Ok(t) => t,
            Err(replay) => return Ok(replay),
        };
    if let Some(p) = form.unknown(&["event_name", "type", "cancel", "expand"]) {
        return Err(ApiError::unknown_param(&p));
    }
    let event_name = form.get("event_name").filter(|v| !v.is_empty()).ok_or_else(|| ApiError::missing("event_name"))?;
    match form.get("type") {
        None => return Err(ApiError::missing("type")),
        Some("cancel") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                Some("parameter_invalid_string"),
                Some("type"),
                format!("Invalid type: must be one of cancel (got {other})"),
            ));
        }
    }
    let identifier =
        form.nested("cancel").get("identifier").cloned().ok_or_else(|| ApiError::missing("cancel[identifier]"))?;
    let mut g = s.lock();
    let now = g.now_secs();
    let found = g.by_identifier.get(&identifier).copied().filter(|&i| g.events[i].event_name == event_name);
    let Some(i) = found else {
        return Err(ApiError::invalid(
            Some("resource_missing"),
            Some("cancel[identifier]"),
            format!("No meter event with identifier {identifier} was found for event_name {event_name}."),
        ));
    };
    if now - g.events[i].received_at >= DAY_SECS {
        return Err(ApiError::invalid(
            None,
            Some("cancel[identifier]"),
            format!(
                "The meter event with identifier {identifier} cannot be cancelled: events can only be cancelled \
                 within 24 hours of Stripe receiving them."
            ),
        ));
    }
    g.events[i].cancelled = true;
    let status = match g.settings.adjustment_status {
        AdjustmentStatus::Pending => "pending",
        AdjustmentStatus::Complete => "complete",
    };
    let saved = Saved::ok(json!({
        "object": "billing.meter_event_adjustment",
        "livemode": s.livemode,
        "status": status,
        "event_name": event_name,
        "type": "cancel",
        "cancel": {"identifier": identifier},
    }));
    drop(g);
    if let Some(t) = ticket {
        t.save(&saved);
    }
    Ok(saved.into_response())
}

/// `POST /v1/billing/meters` (create) body → meter spec, for tests that want
/// the HTTP route; the Rust API is [`super::FakeStripe::create_meter`].
pub fn meter_spec_from_form(form: &Form) -> Result<super::MeterSpec, ApiError> {
    if let Some(p) = form.unknown(&[
        "display_name",
        "event_name",
        "default_aggregation",
        "customer_mapping",
        "value_settings",
        "event_time_window",
        "expand",
    ]) {
        return Err(ApiError::unknown_param(&p));
    }
    let display_name = form.get("display_name").ok_or_else(|| ApiError::missing("display_name"))?;
    let event_name = form.get("event_name").ok_or_else(|| ApiError::missing("event_name"))?;
    let formula = form
        .nested("default_aggregation")
        .get("formula")
        .cloned()
        .ok_or_else(|| ApiError::missing("default_aggregation[formula]"))?;
    let formula = Formula::parse(&formula).ok_or_else(|| {
        ApiError::invalid(
            Some("parameter_invalid_string"),
            Some("default_aggregation[formula]"),
            format!("Invalid default_aggregation[formula]: must be one of count, last, or sum (got {formula})"),
        )
    })?;
    let mut spec = super::MeterSpec::new(event_name, formula);
    spec.display_name = display_name.to_owned();
    if let Some(w) = form.get("event_time_window") {
        spec.event_time_window = Some(super::TimeWindow::parse(w).ok_or_else(|| {
            ApiError::invalid(
                Some("parameter_invalid_string"),
                Some("event_time_window"),
                format!("Invalid event_time_window: must be one of day or hour (got {w})"),
            )
        })?);
    }
    if let Some(k) = form.nested("customer_mapping").get("event_payload_key") {
        spec.customer_key = k.clone();
    }
    if let Some(k) = form.nested("value_settings").get("event_payload_key") {
        spec.value_key = k.clone();
    }
    Ok(spec)
}

/// Keep `Json` in scope for handlers that answer plain objects.
pub fn ok(value: serde_json::Value) -> Response {
    Json(value).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let now = 1_800_000_000;
        assert!(check_timestamp(now, now).is_ok());
        assert!(check_timestamp(now - MAX_PAST_SECS, now).is_ok());
        assert!(check_timestamp(now + MAX_FUTURE_SECS, now).is_ok());
        let (code, msg) = check_timestamp(now - MAX_PAST_SECS - 1, now).expect_err("too old");
        assert_eq!(code, "timestamp_too_far_in_past");
        assert!(msg.starts_with("The event timestamp cannot be more than 35 days in past."), "{msg}");
        assert_eq!(check_timestamp(now + MAX_FUTURE_SECS + 1, now).map_err(|e| e.0), Err("timestamp_in_future"));
    }

    #[test]
    fn values() {
        assert_eq!(check_value("-12"), Ok(-12));
        assert_eq!(check_value("2.5").map_err(|e| e.0), Err("meter_event_invalid_value"));
        let (code, msg) = check_value("1234567890123456").expect_err("16 digits");
        assert_eq!(code, "meter_event_value_too_many_digits");
        assert_eq!(msg, "The value in the event payload can have at most 15 digits. Received 1234567890123456.");
    }
}

//! `/v1/billing/meters`: list, retrieve, create, deactivate/reactivate, and
//! `GET /v1/billing/meters/{id}/event_summaries`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api_v1::{meter_spec_from_form, ok};
use super::http::{ApiError, Form, query};
use super::model::{Meter, TimeWindow, aggregate};
use super::state::{Auth, Shared};

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `limit`: 1–100, default 10.
fn limit(q: &Form) -> Result<usize, ApiError> {
    match q.integer("limit")? {
        None => Ok(10),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::invalid(
            Some("parameter_invalid_integer"),
            Some("limit"),
            "Invalid limit: must be an integer between 1 and 100.".into(),
        )),
    }
}

/// One page of `items` (already in list order) after `starting_after` or
/// before `ending_before`, by id.
fn page(items: Vec<(String, Value)>, q: &Form, limit: usize, what: &str) -> Result<(Vec<Value>, bool), ApiError> {
    let pos = |id: &str, param: &str| {
        items
            .iter()
            .position(|(i, _)| i == id)
            .ok_or_else(|| ApiError::invalid(Some("resource_missing"), Some(param), format!("No such {what}: '{id}'")))
    };
    if let Some(after) = q.get("starting_after") {
        let from = pos(after, "starting_after")? + 1;
        let rest = &items[from..];
        let more = rest.len() > limit;
        return Ok((rest.iter().take(limit).map(|(_, v)| v.clone()).collect(), more));
    }
    if let Some(before) = q.get("ending_before") {
        let to = pos(before, "ending_before")?;
        let head = &items[..to];
        let start = head.len().saturating_sub(limit);
        return Ok((head[start..].iter().map(|(_, v)| v.clone()).collect(), start > 0));
    }
    let more = items.len() > limit;
    Ok((items.into_iter().take(limit).map(|(_, v)| v).collect(), more))
}

fn list(data: Vec<Value>, has_more: bool, url: String) -> Response {
    ok(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
}

pub async fn list_meters(State(s): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    respond((|| {
        s.begin(&headers, Auth::SecretKey, false)?;
        let q = query(&uri);
        let limit = limit(&q)?;
        let status = q.get("status");
        if let Some(st) = status.filter(|st| !["active", "inactive"].contains(st)) {
            return Err(ApiError::invalid(
                Some("parameter_invalid_string"),
                Some("status"),
                format!("Invalid status: must be one of active or inactive (got {st})"),
            ));
        }
        let g = s.lock();
        // Newest first, as Stripe lists.
        let items: Vec<(String, Value)> = g
            .meters
            .iter()
            .rev()
            .filter(|m| status.is_none_or(|st| (st == "active") == m.active))
            .map(|m| (m.id.clone(), m.to_json(s.livemode)))
            .collect();
        let (data, more) = page(items, &q, limit, "billing meter")?;
        Ok(list(data, more, "/v1/billing/meters".into()))
    })())
}

fn find<'a>(meters: &'a mut [Meter], id: &str) -> Result<&'a mut Meter, ApiError> {
    meters.iter_mut().find(|m| m.id == id).ok_or_else(|| ApiError::not_found("billing meter", id))
}

pub async fn get_meter(State(s): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    respond((|| {
        s.begin(&headers, Auth::SecretKey, false)?;
        let mut g = s.lock();
        Ok(ok(find(&mut g.meters, &id)?.to_json(s.livemode)))
    })())
}

pub async fn create_meter(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    respond((|| {
        s.begin(&headers, Auth::SecretKey, false)?;
        let spec = meter_spec_from_form(&Form::parse(&body))?;
        let mut g = s.lock();
        if g.meters.iter().any(|m| m.active && m.spec.event_name == spec.event_name) {
            return Err(ApiError::invalid(
                None,
                Some("event_name"),
                format!("An active meter with event_name {} already exists.", spec.event_name),
            ));
        }
        let meter = add_meter(&mut g, spec);
        Ok(ok(meter.to_json(s.livemode)))
    })())
}

/// Add a meter to the state (shared by the HTTP route and the Rust API).
pub fn add_meter(g: &mut super::state::Inner, spec: super::MeterSpec) -> Meter {
    let now = g.now_secs();
    let id = g.new_id("mtr_test_");
    let meter = Meter { id, spec, active: true, created: now, updated: now, deactivated_at: None };
    g.meters.push(meter.clone());
    meter
}

pub async fn deactivate(State(s): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    set_active(s, id, headers, false)
}

pub async fn reactivate(State(s): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    set_active(s, id, headers, true)
}

fn set_active(s: Arc<Shared>, id: String, headers: HeaderMap, active: bool) -> Response {
    respond((|| {
        s.begin(&headers, Auth::SecretKey, false)?;
        let mut g = s.lock();
        let now = g.now_secs();
        let m = find(&mut g.meters, &id)?;
        m.active = active;
        m.updated = now;
        m.deactivated_at = if active { None } else { Some(now) };
        Ok(ok(m.to_json(s.livemode)))
    })())
}

/// Summary ids carry their window so they can serve as cursors.
fn summary_id(meter: &str, customer: &str, start: i64, end: i64) -> String {
    format!("mtrusg_test_{}", hex::encode(format!("{meter}|{customer}|{start}|{end}")))
}

fn summary_start(id: &str) -> Option<i64> {
    let raw = hex::decode(id.strip_prefix("mtrusg_test_")?).ok()?;
    String::from_utf8(raw).ok()?.split('|').nth(2)?.parse().ok()
}

pub async fn event_summaries(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    respond((|| {
        s.begin(&headers, Auth::SecretKey, false)?;
        let q = query(&uri);
        if let Some(p) = q.unknown(&[
            "customer",
            "start_time",
            "end_time",
            "value_grouping_window",
            "limit",
            "starting_after",
            "ending_before",
            "expand",
        ]) {
            return Err(ApiError::unknown_param(&p));
        }
        let g = s.lock();
        let meter =
            g.meters.iter().find(|m| m.id == id).cloned().ok_or_else(|| ApiError::not_found("billing meter", &id))?;
        let customer = q.get("customer").filter(|c| !c.is_empty()).ok_or_else(|| ApiError::missing("customer"))?;
        let start = q.integer("start_time")?.ok_or_else(|| ApiError::missing("start_time"))?;
        let end = q.integer("end_time")?.ok_or_else(|| ApiError::missing("end_time"))?;
        let limit = limit(&q)?;
        let window = match q.get("value_grouping_window") {
            None => None,
            Some(w) => Some(TimeWindow::parse(w).ok_or_else(|| {
                ApiError::invalid(
                    Some("parameter_invalid_string"),
                    Some("value_grouping_window"),
                    format!("Invalid value_grouping_window: must be one of day or hour (got {w})"),
                )
            })?),
        };
        check_alignment(start, end, window)?;
        let cutoff = g.now_secs() - g.settings.summary_lag.as_secs() as i64;
        let windows: Vec<(i64, i64)> = match window {
            None => vec![(start, end)],
            Some(w) => {
                (0..).map(|i| start + i * w.secs()).take_while(|t| *t < end).map(|t| (t, t + w.secs())).collect()
            }
        };
        // Newest window first, as Stripe answers; grouped lists leave out
        // windows without usage.
        let items: Vec<(i64, Value)> = windows
            .into_iter()
            .rev()
            .filter_map(|(a, b)| {
                let v = aggregate(&meter, &g.events, customer, a, b, cutoff);
                if window.is_some() && v.is_none() {
                    return None;
                }
                Some((
                    a,
                    json!({
                        "id": summary_id(&meter.id, customer, a, b),
                        "object": "billing.meter_event_summary",
                        "aggregated_value": v.unwrap_or(0.0),
                        "end_time": b,
                        "livemode": s.livemode,
                        "meter": meter.id,
                        "start_time": a,
                    }),
                ))
            })
            .collect();
        drop(g);
        let cursor = |param: &str| -> Result<Option<i64>, ApiError> {
            match q.get(param) {
                None => Ok(None),
                Some(c) => summary_start(c).map(Some).ok_or_else(|| {
                    ApiError::invalid(
                        Some("resource_missing"),
                        Some(param),
                        format!("No such billing meter event summary: '{c}'"),
                    )
                }),
            }
        };
        let (data, more) = if let Some(after) = cursor("starting_after")? {
            let rest: Vec<Value> = items.into_iter().filter(|(a, _)| *a < after).map(|(_, v)| v).collect();
            let more = rest.len() > limit;
            (rest.into_iter().take(limit).collect(), more)
        } else if let Some(before) = cursor("ending_before")? {
            let head: Vec<Value> = items.into_iter().filter(|(a, _)| *a > before).map(|(_, v)| v).collect();
            let from = head.len().saturating_sub(limit);
            (head[from..].to_vec(), from > 0)
        } else {
            let more = items.len() > limit;
            (items.into_iter().take(limit).map(|(_, v)| v).collect(), more)
        };
        Ok(list(data, more, format!("/v1/billing/meters/{id}/event_summaries")))
    })())
}

/// Minute alignment always; hour or 00:00 UTC alignment for grouped summaries.
pub fn check_alignment(start: i64, end: i64, window: Option<TimeWindow>) -> Result<(), ApiError> {
    for (name, t) in [("start_time", start), ("end_time", end)] {
        if t.rem_euclid(60) != 0 {
            return Err(ApiError::invalid(
                None,
                Some(name),
                format!("{name} must be aligned with minute boundaries (a multiple of 60 seconds); got {t}."),
            ));
        }
    }
    if start >= end {
        return Err(ApiError::invalid(None, Some("start_time"), "start_time must be before end_time.".into()));
    }
    if let Some(w) = window {
        for (name, t) in [("start_time", start), ("end_time", end)] {
            if t.rem_euclid(w.secs()) != 0 {
                let boundary = match w {
                    TimeWindow::Hour => "hour boundaries (e.g., 00:00, 01:00, ..., 23:00)",
                    TimeWindow::Day => "UTC day boundaries (00:00 UTC)",
                };
                return Err(ApiError::invalid(
                    None,
                    Some(name),
                    format!(
                        "For value_grouping_window={}, {name} must be aligned with {boundary}; got {t}.",
                        w.as_str()
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_rules() {
        let day = 1_800_000_000 - 1_800_000_000 % 86_400;
        assert!(check_alignment(day + 60, day + 120, None).is_ok());
        assert!(check_alignment(day + 61, day + 120, None).is_err());
        assert!(check_alignment(day + 120, day + 60, None).is_err());
        assert!(check_alignment(day + 3600, day + 7200, Some(TimeWindow::Hour)).is_ok());
        assert!(check_alignment(day + 60, day + 7200, Some(TimeWindow::Hour)).is_err());
        assert!(check_alignment(day, day + 86_400, Some(TimeWindow::Day)).is_ok());
        let e = check_alignment(day + 3600, day + 86_400, Some(TimeWindow::Day)).expect_err("not 00:00");
        assert_eq!(e.body["error"]["param"], "start_time");
    }

    #[test]
    fn summary_ids_are_cursors() {
        let id = summary_id("mtr_1", "cus_1", 3600, 7200);
        assert_eq!(summary_start(&id), Some(3600));
        assert_eq!(summary_start("mtrusg_test_zz"), None);
    }
}

//! `/_standin/…`: a small control API (not Stripe's) so clients in other
//! languages can drive the stand-in the way Rust tests drive
//! [`super::FakeStripe`]. No authentication; loopback only.
//!
//! | route | does |
//! |---|---|
//! | `POST /_standin/inject?fault=server_error&times=1` | queue faults (`rate_limit`, `server_error`, `slow`, `reset_before_record`, `reset_after_record`) |
//! | `POST /_standin/settings?slow_ms=&processing_ms=&summary_lag_secs=&session_ttl_secs=&rate_limit=live\|test\|unlimited` | change knobs |
//! | `POST /_standin/clock?advance_secs=N` | move the stand-in's clock |
//! | `POST /_standin/customers?ids=cus_a,cus_b` | only these customers exist |
//! | `POST /_standin/reset` | clear events, counters, keys, sessions, faults |
//! | `GET /_standin/state` | `{stats, events, async_errors, hourly_totals, max_concurrency}` |

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::http::query;
use super::limits::{Fault, RateLimits};
use super::model::hourly_totals;
use super::state::Shared;

fn bad(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn num(q: &super::http::Form, key: &str) -> Result<Option<u64>, String> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| format!("{key} must be a non-negative integer")),
    }
}

pub async fn inject(State(s): State<Arc<Shared>>, uri: Uri) -> Response {
    let q = query(&uri);
    let fault = match q.get("fault") {
        Some("rate_limit") => Fault::RateLimit,
        Some("server_error") => Fault::ServerError,
        Some("slow") => Fault::Slow,
        Some("reset_before_record") => Fault::ResetBeforeRecord,
        Some("reset_after_record") => Fault::ResetAfterRecord,
        other => return bad(format!("unknown fault {other:?}")),
    };
    let times = match num(&q, "times") {
        Ok(t) => t.unwrap_or(1) as usize,
        Err(msg) => return bad(msg),
    };
    s.lock().faults.queue.extend(std::iter::repeat_n(fault, times));
    Json(json!({"queued": times})).into_response()
}

pub async fn settings(State(s): State<Arc<Shared>>, uri: Uri) -> Response {
    let q = query(&uri);
    let read = |key: &str| num(&q, key);
    let (slow, processing, lag, ttl) =
        match (read("slow_ms"), read("processing_ms"), read("summary_lag_secs"), read("session_ttl_secs")) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            (Err(msg), ..) | (_, Err(msg), ..) | (_, _, Err(msg), _) | (.., Err(msg)) => return bad(msg),
        };
    let limits = match q.get("rate_limit") {
        None => None,
        Some("live") => Some(RateLimits::LIVE),
        Some("test") => Some(RateLimits::TEST_MODE),
        Some("unlimited") => Some(RateLimits::UNLIMITED),
        Some(other) => return bad(format!("unknown rate_limit {other:?}")),
    };
    let mut g = s.lock();
    let st = &mut g.settings;
    if let Some(v) = slow {
        st.slow_delay = Duration::from_millis(v);
    }
    if let Some(v) = processing {
        st.processing_time = Duration::from_millis(v);
    }
    if let Some(v) = lag {
        st.summary_lag = Duration::from_secs(v);
    }
    if let Some(v) = ttl {
        st.session_ttl = Duration::from_secs(v);
    }
    if let Some(l) = limits {
        st.rate_limits = l;
    }
    Json(json!({"ok": true})).into_response()
}

pub async fn clock(State(s): State<Arc<Shared>>, uri: Uri) -> Response {
    match num(&query(&uri), "advance_secs") {
        Ok(secs) => {
            let mut g = s.lock();
            g.settings.clock_offset_ms += secs.unwrap_or(0) as i64 * 1000;
            Json(json!({"now": g.now_secs()})).into_response()
        }
        Err(msg) => bad(msg),
    }
}

pub async fn customers(State(s): State<Arc<Shared>>, uri: Uri) -> Response {
    let q = query(&uri);
    let ids = q.get("ids").unwrap_or("").split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect();
    s.lock().customers = Some(ids);
    Json(json!({"ok": true})).into_response()
}

pub async fn reset(State(s): State<Arc<Shared>>) -> Response {
    s.reset();
    Json(json!({"ok": true})).into_response()
}

pub async fn state(State(s): State<Arc<Shared>>) -> Response {
    let g = s.lock();
    let concurrency: Vec<Value> = g
        .max_concurrency
        .iter()
        .map(|((customer, event_name), max)| json!({"customer": customer, "event_name": event_name, "max": max}))
        .collect();
    Json(json!({
        "now": g.now_secs(),
        "stats": g.stats,
        "events": g.events,
        "async_errors": g.async_errors,
        "hourly_totals": hourly_totals(&g.meters, &g.events),
        "max_concurrency": concurrency,
    }))
    .into_response()
}

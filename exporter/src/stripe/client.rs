//! Stripe's Billing Meter API as tally uses it (v1: form bodies, a secret
//! key), on the delivery core, every call through one rate limiter.

use std::time::Duration;

use reqwest::{
    Url,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use serde_json::Value;
use tally_core::Secret;

use super::limiter::Limiter;
use crate::delivery::{self, Answer, CallError, ErrorKind};

/// The API version tally is written against (sent on every call).
pub const API_VERSION: &str = "2026-10-28.endive";

/// Answers are small; an error page larger than this is cut.
const BODY_LIMIT: usize = 256 * 1024;

/// A Stripe meter, the fields tally checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeMeter {
    pub id: String,
    pub event_name: String,
    /// `sum`, `count` or `last`.
    pub formula: String,
    /// `None` (raw), `hour` or `day` (pre-aggregated).
    pub event_time_window: Option<String>,
    /// `active` or `inactive`.
    pub status: String,
    pub customer_key: String,
    pub value_key: String,
}

/// One meter event to send.
#[derive(Debug, Clone)]
pub struct MeterEvent<'a> {
    pub event_name: &'a str,
    pub identifier: &'a str,
    pub timestamp_s: i64,
    pub customer_key: &'a str,
    pub customer: &'a str,
    pub value_key: &'a str,
    pub value: i64,
}

/// Stripe has the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub request_id: Option<String>,
    /// Answered "already exists with identifier": an earlier send landed.
    pub duplicate: bool,
}

/// One meter event summary: `aggregated_value` over `[start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub start_s: i64,
    pub end_s: i64,
    pub value: f64,
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: Secret,
    limiter: Limiter,
}

impl Client {
    pub fn new(api_base: &str, key: Secret, timeout: Duration, per_second: f64) -> Result<Client, String> {
        let mut base = Url::parse(api_base).map_err(|e| format!("stripe.api_base: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("stripe client: {e}"))?;
        Ok(Client { http, base, key, limiter: Limiter::new(per_second) })
    }

    fn url(&self, path: &str) -> Result<Url, CallError> {
        self.base.join(path).map_err(|e| CallError::refused(format!("{path}: {e}")))
    }

    /// One call: a slot from the limiter, the key, the version; a rate
    /// limit on the whole account pauses every caller.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Answer, CallError> {
        self.limiter.acquire().await;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.key.expose()))
            .map_err(|_| CallError::halt("the Stripe API key is not a valid header value"))?;
        let answer =
            delivery::send(req.header(AUTHORIZATION, auth).header("Stripe-Version", API_VERSION), BODY_LIMIT).await?;
        if answer.status.as_u16() == 429 && answer.header("stripe-rate-limited-reason") != Some("endpoint-concurrency")
        {
            // Without a Retry-After, a quarter second: at the account's
            // limit a few calls spill into the next second's count, and a
            // long pause would cost more than they do.
            let wait = delivery::retry_after(&answer.headers).unwrap_or(Duration::from_millis(250));
            self.limiter.pause(wait);
        }
        Ok(answer)
    }

    /// Every meter of the account (`GET /v1/billing/meters`, all pages).
    pub async fn meters(&self) -> Result<Vec<StripeMeter>, CallError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = self.url("v1/billing/meters")?;
            url.query_pairs_mut().append_pair("limit", "100");
            if let Some(a) = &after {
                url.query_pairs_mut().append_pair("starting_after", a);
            }
            let page = json(self.call(self.http.get(url)).await?)?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            for m in &data {
                out.push(StripeMeter {
                    id: text(m, "/id"),
                    event_name: text(m, "/event_name"),
                    formula: text(m, "/default_aggregation/formula"),
                    event_time_window: m["event_time_window"].as_str().map(Into::into),
                    status: text(m, "/status"),
                    customer_key: m
                        .pointer("/customer_mapping/event_payload_key")
                        .and_then(Value::as_str)
                        .unwrap_or("stripe_customer_id")
                        .into(),
                    value_key: m
                        .pointer("/value_settings/event_payload_key")
                        .and_then(Value::as_str)
                        .unwrap_or("value")
                        .into(),
                });
            }
            match (page["has_more"].as_bool(), data.last()) {
                (Some(true), Some(last)) => after = Some(text(last, "/id")),
                _ => return Ok(out),
            }
        }
    }

    /// `POST /v1/billing/meter_events`. "An event already exists with
    /// identifier …" is delivery (an earlier send landed, its answer lost);
    /// `Stripe-Should-Retry` decides what else is retried.
    #[tracing::instrument(name = "stripe meter event", skip_all, fields(otel.kind = "client"))]
    pub async fn meter_event(&self, ev: &MeterEvent<'_>) -> Result<Delivered, CallError> {
        let value = ev.value.to_string();
        let timestamp = ev.timestamp_s.to_string();
        let body = form(&[
            ("event_name", ev.event_name),
            ("identifier", ev.identifier),
            ("timestamp", &timestamp),
            (&format!("payload[{}]", ev.customer_key), ev.customer),
            (&format!("payload[{}]", ev.value_key), &value),
        ]);
        let req = self
            .http
            .post(self.url("v1/billing/meter_events")?)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            // Per attempt: the identifier is what dedupes; a key reused
            // across attempts would replay a cached 429 (stripe.md §1).
            .header("Idempotency-Key", attempt_key(ev.identifier))
            .body(body);
        let answer = self.call(req).await?;
        let request_id = answer.header("request-id").map(Into::into);
        if answer.status.is_success() {
            return Ok(Delivered { request_id, duplicate: false });
        }
        let message = error_message(&answer);
        if answer.status.as_u16() == 400 && message.contains("already exists with identifier") {
            return Ok(Delivered { request_id, duplicate: true });
        }
        Err(stripe_error(&answer, message))
    }

    /// `GET /v1/billing/meters/{id}/event_summaries` for one customer over
    /// `[start_s, end_s)` (minute-aligned; hour- or day-aligned with a
    /// grouping), every page.
    pub async fn summaries(
        &self,
        meter_id: &str,
        customer: &str,
        start_s: i64,
        end_s: i64,
        grouping: Option<&str>,
    ) -> Result<Vec<Summary>, CallError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = self.url(&format!("v1/billing/meters/{meter_id}/event_summaries"))?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("customer", customer)
                    .append_pair("start_time", &start_s.to_string())
                    .append_pair("end_time", &end_s.to_string())
                    .append_pair("limit", "100");
                if let Some(g) = grouping {
                    q.append_pair("value_grouping_window", g);
                }
                if let Some(a) = &after {
                    q.append_pair("starting_after", a);
                }
            }
            let page = json(self.call(self.http.get(url)).await?)?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            for s in &data {
                out.push(Summary {
                    start_s: s["start_time"].as_i64().unwrap_or_default(),
                    end_s: s["end_time"].as_i64().unwrap_or_default(),
                    value: s["aggregated_value"].as_f64().unwrap_or_default(),
                });
            }
            match (page["has_more"].as_bool(), data.last()) {
                (Some(true), Some(last)) => after = Some(text(last, "/id")),
                _ => return Ok(out),
            }
        }
    }
}

/// A JSON answer, or the error it is.
fn json(answer: Answer) -> Result<Value, CallError> {
    if !answer.status.is_success() {
        let message = error_message(&answer);
        return Err(stripe_error(&answer, message));
    }
    serde_json::from_slice(&answer.body).map_err(|e| CallError::retriable(format!("Stripe answered non-JSON: {e}")))
}

/// The delivery core's reading of a Stripe error, corrected by what Stripe
/// says: `Stripe-Should-Retry` wins, and 409 (a concurrent request with
/// the same idempotency key) is retried, as Stripe's own SDKs do.
fn stripe_error(answer: &Answer, message: String) -> CallError {
    let mut e = answer.error().unwrap_or_else(|| CallError::retriable("no error"));
    e.message = message;
    match answer.header("stripe-should-retry") {
        Some("true") => e.kind = ErrorKind::Retriable,
        Some("false") if e.kind == ErrorKind::Retriable => e.kind = ErrorKind::Refused,
        _ if answer.status.as_u16() == 409 => e.kind = ErrorKind::Retriable,
        _ => {}
    }
    e
}

/// `error.message` of a Stripe error body (else the body's start), with
/// the code when there is one.
fn error_message(answer: &Answer) -> String {
    let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
    match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(err) => {
            let message = err["message"].as_str().unwrap_or_default();
            match err["code"].as_str() {
                Some(code) => format!("{code}: {message}"),
                None => message.to_owned(),
            }
        }
        None => answer.text().chars().take(300).collect(),
    }
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn attempt_key(identifier: &str) -> String {
    use rand::Rng;
    format!("{identifier}-{:016x}", rand::rng().random::<u64>())
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_encode_like_browsers() {
        assert_eq!(
            form(&[("payload[stripe_customer_id]", "cus_1"), ("x", "a b&c=d/é")]),
            "payload%5Bstripe_customer_id%5D=cus_1&x=a+b%26c%3Dd%2F%C3%A9"
        );
    }

    #[test]
    fn stripe_says_what_is_retried() {
        let answer = |status: u16, headers: &[(&'static str, &str)], body: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            Answer { status: reqwest::StatusCode::from_u16(status).unwrap(), headers: h, body: body.to_owned().into() }
        };
        let kind = |a: Answer| stripe_error(&a, error_message(&a)).kind;
        let err = r#"{"error":{"type":"invalid_request_error","code":"rate_limit","message":"slow down"}}"#;
        assert_eq!(kind(answer(429, &[], err)), ErrorKind::Retriable);
        assert_eq!(kind(answer(500, &[("stripe-should-retry", "false")], err)), ErrorKind::Refused);
        assert_eq!(kind(answer(400, &[("stripe-should-retry", "true")], err)), ErrorKind::Retriable);
        assert_eq!(kind(answer(409, &[], err)), ErrorKind::Retriable);
        assert_eq!(kind(answer(400, &[], err)), ErrorKind::Refused);
        assert_eq!(kind(answer(401, &[], err)), ErrorKind::Halt);
        let a = answer(400, &[], err);
        assert_eq!(stripe_error(&a, error_message(&a)).to_string(), "HTTP 400: rate_limit: slow down");
    }
}

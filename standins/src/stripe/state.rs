//! The fake's state behind one mutex (never held across an await), and the
//! steps every call goes through: auth, rate limit, idempotency, the
//! per-(customer, meter) concurrency rule, faults, recording.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::distr::{Alphanumeric, SampleString};
use rand::{SeedableRng, rngs::StdRng};
use serde::Serialize;
use serde_json::Value;

use super::http::{ApiError, Credential, bad_key, credential, no_key};
use super::limits::{Fault, FaultSource, RateLimits, RateWindows};
use super::model::{Meter, RecordedEvent, Source};
use super::{AdjustmentStatus, StripeConfig, UnknownEventName};
use crate::serve::lock;

/// Identifiers are unique over a rolling 24 hours; cancels reach back as far.
pub const DAY_SECS: i64 = 86_400;

/// An error Stripe would report later (thin event
/// `v1.billing.meter.error_report_triggered` / `no_meter_found`), not in the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AsyncError {
    pub identifier: String,
    pub event_name: String,
    /// Stripe's error code, e.g. `no_meter`, `meter_event_customer_not_found`.
    pub code: String,
    pub message: String,
    pub source: Source,
    pub at: i64,
}

/// Counters for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StripeStats {
    /// Every request that reached a Stripe route.
    pub calls: u64,
    /// v1 `POST meter_events` and v2 `meter_event_stream` calls.
    pub meter_event_calls: u64,
    /// Events recorded (v1 answers 200 or v2 stream events taken in).
    pub events_recorded: u64,
    pub auth_failures: u64,
    /// 429 from the global rate limit.
    pub rate_limited: u64,
    /// 429 `endpoint-concurrency`.
    pub concurrency_limited: u64,
    /// 400 "An event already exists with identifier …".
    pub duplicate_identifiers: u64,
    /// Answers replayed for a repeated `Idempotency-Key`.
    pub idempotent_replays: u64,
    pub injected_rate_limit: u64,
    pub injected_server_error: u64,
    pub injected_slow: u64,
    pub injected_reset_before_record: u64,
    pub injected_reset_after_record: u64,
    /// Stream events dropped as duplicates of a recent identifier.
    pub stream_duplicates_dropped: u64,
}

impl StripeStats {
    /// Every 429 the stand-in sent (rate limit, concurrency, injected).
    pub fn too_many_requests(&self) -> u64 {
        self.rate_limited + self.concurrency_limited + self.injected_rate_limit
    }

    pub(crate) fn count_fault(&mut self, f: Fault) {
        match f {
            Fault::RateLimit => self.injected_rate_limit += 1,
            Fault::ServerError => self.injected_server_error += 1,
            Fault::Slow => self.injected_slow += 1,
            Fault::ResetBeforeRecord => self.injected_reset_before_record += 1,
            Fault::ResetAfterRecord => self.injected_reset_after_record += 1,
        }
    }
}

/// Knobs that tests may turn while the fake runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub rate_limits: RateLimits,
    pub processing_time: Duration,
    pub slow_delay: Duration,
    pub summary_lag: Duration,
    pub session_ttl: Duration,
    pub clock_offset_ms: i64,
    pub unknown_event_name: UnknownEventName,
    pub adjustment_status: AdjustmentStatus,
    /// Accepted secret keys; empty accepts any `sk_test_…` key.
    pub api_keys: Vec<String>,
}

/// A saved answer for an idempotency key.
#[derive(Clone, Debug)]
pub struct Saved {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

impl Saved {
    pub fn ok(body: Value) -> Self {
        Saved { status: StatusCode::OK, body, headers: Vec::new() }
    }

    pub fn into_response(self) -> Response {
        ApiError { status: self.status, body: self.body, headers: self.headers }.into_response()
    }
}

#[derive(Debug)]
enum Idem {
    InFlight { fingerprint: String, at: i64 },
    Done { fingerprint: String, at: i64, saved: Saved },
}

pub struct Inner {
    pub meters: Vec<Meter>,
    pub events: Vec<RecordedEvent>,
    /// identifier → index in `events` of its latest recording.
    pub by_identifier: HashMap<String, usize>,
    pub seq: u64,
    pub next_id: u64,
    pub async_errors: Vec<AsyncError>,
    /// `None`: every customer id exists.
    pub customers: Option<HashSet<String>>,
    idem: HashMap<String, Idem>,
    /// session token → expiry (Unix ms).
    pub sessions: HashMap<String, i64>,
    pub stats: StripeStats,
    in_flight: HashMap<(String, String), usize>,
    pub max_concurrency: HashMap<(String, String), usize>,
    windows: RateWindows,
    pub faults: FaultSource,
    pub settings: Settings,
}

pub struct Shared {
    pub livemode: bool,
    inner: Mutex<Inner>,
}

/// Which credential a route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    SecretKey,
    SessionToken,
}

impl Shared {
    pub fn new(config: &StripeConfig) -> Self {
        let settings = Settings {
            rate_limits: config.rate_limits,
            processing_time: config.processing_time,
            slow_delay: config.slow_delay,
            summary_lag: config.summary_lag,
            session_ttl: config.session_ttl,
            clock_offset_ms: 0,
            unknown_event_name: config.unknown_event_name,
            adjustment_status: config.adjustment_status,
            api_keys: config.api_keys.clone(),
        };
        Shared {
            livemode: false,
            inner: Mutex::new(Inner {
                meters: Vec::new(),
                events: Vec::new(),
                by_identifier: HashMap::new(),
                seq: 0,
                next_id: 1,
                async_errors: Vec::new(),
                customers: None,
                idem: HashMap::new(),
                sessions: HashMap::new(),
                stats: StripeStats::default(),
                in_flight: HashMap::new(),
                max_concurrency: HashMap::new(),
                windows: RateWindows::default(),
                faults: FaultSource::new(config.fault_seed, config.faults),
                settings,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Clear events, counters, keys, sessions and faults; keep meters and settings.
    pub fn reset(&self) {
        let mut g = self.lock();
        g.events.clear();
        g.by_identifier.clear();
        g.async_errors.clear();
        g.idem.clear();
        g.sessions.clear();
        g.stats = StripeStats::default();
        g.in_flight.clear();
        g.max_concurrency.clear();
        g.windows = RateWindows::default();
        g.faults.queue.clear();
        g.faults.plan = Default::default();
    }

    /// Count the call, check the credential, then the rate limit.
    pub fn begin(&self, headers: &HeaderMap, auth: Auth, meter_call: bool) -> Result<(), ApiError> {
        let mut g = self.lock();
        g.stats.calls += 1;
        if meter_call {
            g.stats.meter_event_calls += 1;
        }
        let now_ms = g.now_ms();
        let checked = match (credential(headers), auth) {
            (Credential::None, Auth::SecretKey) => Err(no_key(None)),
            (Credential::Empty(h), Auth::SecretKey) => Err(no_key(Some(&h))),
            (Credential::Key(k), Auth::SecretKey) if !key_ok(&g.settings.api_keys, &k) => Err(bad_key(&k)),
            (Credential::Key(t), Auth::SessionToken) => match g.sessions.get(&t) {
                Some(exp) if *exp > now_ms => Ok(()),
                Some(_) => Err(ApiError::v2(
                    StatusCode::UNAUTHORIZED,
                    "temporary_session_expired",
                    "billing_meter_event_session_expired",
                    "The meter event session has expired. Create a new meter event session to get a new \
                     authentication token."
                        .into(),
                )),
                None => Err(ApiError::v2(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "authentication_failed",
                    "Invalid authentication token: create a meter event session and use its authentication_token."
                        .into(),
                )),
            },
            (_, Auth::SessionToken) => Err(ApiError::v2(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "authentication_failed",
                "Missing authentication token: create a meter event session and send its authentication_token \
                 as a Bearer token."
                    .into(),
            )),
            (Credential::Key(_), Auth::SecretKey) => Ok(()),
        };
        if let Err(e) = checked {
            g.stats.auth_failures += 1;
            return Err(e);
        }
        let limits = g.settings.rate_limits;
        let second = now_ms.div_euclid(1000);
        if !g.windows.admit(&limits, second, meter_call) {
            g.stats.rate_limited += 1;
            return Err(if auth == Auth::SessionToken {
                ApiError::v2(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit",
                    "rate_limit",
                    "Request rate limit exceeded.".into(),
                )
                .header("Stripe-Rate-Limited-Reason", "global-rate")
            } else {
                ApiError::rate_limited()
            });
        }
        Ok(())
    }

    /// Look up an `Idempotency-Key`. `Ok(Some(response))` is a replay;
    /// `Ok(None)` means go on (with a ticket when a key was sent).
    pub fn idempotency(
        self: &Arc<Self>,
        headers: &HeaderMap,
        fingerprint: String,
    ) -> Result<Result<Option<IdemTicket>, Response>, ApiError> {
        let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
            return Ok(Ok(None));
        };
        let mut g = self.lock();
        let now = g.now_secs();
        g.idem.retain(|_, e| match e {
            Idem::InFlight { at, .. } | Idem::Done { at, .. } => now - *at < DAY_SECS,
        });
        match g.idem.get(&key) {
            None => {
                g.idem.insert(key.clone(), Idem::InFlight { fingerprint, at: now });
                Ok(Ok(Some(IdemTicket { key, shared: Arc::clone(self), done: false })))
            }
            Some(Idem::InFlight { .. }) => Err(ApiError::v1(
                StatusCode::CONFLICT,
                "idempotency_error",
                Some("idempotency_key_in_use"),
                None,
                format!(
                    "There is currently another in-progress request using this Idempotent Key (that probably \
                     means you submitted twice, and the other request is still going through): {key}. Please \
                     try again later."
                ),
            )),
            Some(Idem::Done { fingerprint: fp, .. }) if *fp != fingerprint => Err(ApiError::v1(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                None,
                None,
                format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first \
                     used with. Try using a key other than '{key}' if you meant to execute a different request."
                ),
            )),
            Some(Idem::Done { saved, .. }) => {
                let mut saved = saved.clone();
                saved.headers.push(("Idempotent-Replayed", "true".into()));
                saved.headers.push(("Idempotency-Key", key.clone()));
                g.stats.idempotent_replays += 1;
                Ok(Err(saved.into_response()))
            }
        }
    }

    /// Enter the one-call-at-a-time rule for `(customer, event_name)`.
    pub fn enter(self: &Arc<Self>, customer: &str, event_name: &str) -> Result<ConcurrencyGuard, ApiError> {
        let key = (customer.to_owned(), event_name.to_owned());
        let mut g = self.lock();
        let n = {
            let n = g.in_flight.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let max = g.max_concurrency.entry(key.clone()).or_insert(0);
        *max = (*max).max(n);
        if n > 1 {
            if let Some(n) = g.in_flight.get_mut(&key) {
                *n -= 1;
            }
            g.stats.concurrency_limited += 1;
            return Err(ApiError::concurrency_limited());
        }
        Ok(ConcurrencyGuard { key, shared: Arc::clone(self) })
    }

    /// The next injected fault for a meter-event call, counted.
    pub fn draw_fault(&self) -> Option<Fault> {
        let mut g = self.lock();
        let f = g.faults.draw();
        if let Some(f) = f {
            g.stats.count_fault(f);
        }
        f
    }
}

/// Holds an `Idempotency-Key` while its request runs; unsaved on drop.
pub struct IdemTicket {
    key: String,
    shared: Arc<Shared>,
    done: bool,
}

impl IdemTicket {
    /// Save the answer for replays (Stripe saves what an endpoint answered
    /// once it began executing: successes and its own failures).
    pub fn save(mut self, saved: &Saved) {
        let mut g = self.shared.lock();
        let now = g.now_secs();
        if let Some(Idem::InFlight { fingerprint, .. }) = g.idem.remove(&self.key) {
            g.idem.insert(self.key.clone(), Idem::Done { fingerprint, at: now, saved: saved.clone() });
        }
        self.done = true;
    }
}

impl Drop for IdemTicket {
    fn drop(&mut self) {
        if !self.done {
            let mut g = self.shared.lock();
            if matches!(g.idem.get(&self.key), Some(Idem::InFlight { .. })) {
                g.idem.remove(&self.key);
            }
        }
    }
}

/// One meter-event call in flight for a (customer, meter).
pub struct ConcurrencyGuard {
    key: (String, String),
    shared: Arc<Shared>,
}

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        if let Some(n) = g.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// An event that passed the synchronous checks, ready to record.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub identifier: String,
    pub event_name: String,
    pub payload: BTreeMap<String, String>,
    pub timestamp: i64,
    pub source: Source,
}

impl Inner {
    pub fn now_ms(&self) -> i64 {
        crate::serve::unix_ms() + self.settings.clock_offset_ms
    }

    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        let mut rng = StdRng::from_os_rng();
        format!("{prefix}{}{:06}", Alphanumeric.sample_string(&mut rng, 14), self.next_id)
    }

    /// The active meter for an event name, else any meter with it.
    pub fn meter_for(&self, event_name: &str) -> Option<&Meter> {
        let mut all = self.meters.iter().filter(|m| m.spec.event_name == event_name);
        let first = all.clone().find(|m| m.active);
        first.or_else(|| all.next())
    }

    /// The live recording of `identifier`, if received in the last 24 hours.
    pub fn recent(&self, identifier: &str) -> Option<usize> {
        let now = self.now_secs();
        self.by_identifier.get(identifier).copied().filter(|&i| now - self.events[i].received_at < DAY_SECS)
    }

    /// Record an event (after the duplicate check), deciding whether it
    /// applies and noting the asynchronous errors Stripe would report.
    pub fn record(&mut self, ev: NewEvent) -> &RecordedEvent {
        let now = self.now_secs();
        let (customer_key, value_key) = match self.meter_for(&ev.event_name) {
            Some(m) => (m.spec.customer_key.clone(), m.spec.value_key.clone()),
            None => ("stripe_customer_id".to_owned(), "value".to_owned()),
        };
        let customer = ev.payload.get(&customer_key).cloned();
        let meter = self.meter_for(&ev.event_name).cloned();
        let value = ev.payload.get(&value_key).and_then(|v| super::model::parse_value(v).ok());
        let mut problem: Option<(&str, String)> = None;
        match &meter {
            None => {
                if self.settings.unknown_event_name == UnknownEventName::AcceptAsync {
                    problem =
                        Some(("no_meter", format!("No active meter was found for event name {}.", ev.event_name)));
                }
            }
            Some(m) if !m.active => {
                problem = Some(("archived_meter", format!("The meter {} for this event is inactive.", m.id)))
            }
            Some(_) => {}
        }
        if problem.is_none() {
            match &customer {
                None => {
                    problem = Some((
                        "meter_event_no_customer_defined",
                        format!("The event payload has no {customer_key} to map it to a customer."),
                    ))
                }
                Some(c) if self.customers.as_ref().is_some_and(|known| !known.contains(c)) => {
                    problem = Some(("meter_event_customer_not_found", format!("No such customer: '{c}'")))
                }
                Some(_) => {}
            }
        }
        if problem.is_none()
            && value.is_none()
            && meter.as_ref().is_some_and(|m| m.spec.formula != super::Formula::Count)
        {
            problem =
                Some(("meter_event_invalid_value", format!("The event payload has no whole-number {value_key}.")));
        }
        if let Some((code, message)) = problem.clone() {
            self.async_errors.push(AsyncError {
                identifier: ev.identifier.clone(),
                event_name: ev.event_name.clone(),
                code: code.to_owned(),
                message,
                source: ev.source,
                at: now,
            });
        }
        self.seq += 1;
        let rec = RecordedEvent {
            identifier: ev.identifier.clone(),
            event_name: ev.event_name,
            customer,
            value: value.unwrap_or(1),
            timestamp: ev.timestamp,
            received_at: now,
            seq: self.seq,
            payload: ev.payload,
            source: ev.source,
            applied: problem.is_none(),
            cancelled: false,
        };
        self.events.push(rec);
        let idx = self.events.len() - 1;
        self.by_identifier.insert(ev.identifier, idx);
        self.stats.events_recorded += 1;
        &self.events[idx]
    }
}

/// Accepted secret keys; none set: any `sk_test_…` key.
fn key_ok(keys: &[String], key: &str) -> bool {
    if keys.is_empty() { key.starts_with("sk_test_") } else { keys.iter().any(|k| k == key) }
}

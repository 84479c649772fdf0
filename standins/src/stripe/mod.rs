//! `FakeStripe`: Stripe Billing's meter endpoints with Stripe's rules, state
//! and failure modes, on a loopback port.
//!
//! Routes (one listener; point both the API base and the meter-events base
//! of a client at [`FakeStripe::url`]):
//!
//! | route | notes |
//! |---|---|
//! | `POST /v1/billing/meter_events` | form body; sync checks, 24 h identifier dedupe, idempotency keys, concurrency rule, faults |
//! | `POST /v1/billing/meter_event_adjustments` | `type=cancel`, `cancel[identifier]`, 24 h window |
//! | `GET/POST /v1/billing/meters`, `GET /v1/billing/meters/{id}` | list (status, cursors), retrieve, create |
//! | `POST /v1/billing/meters/{id}/deactivate`, `…/reactivate` | |
//! | `GET /v1/billing/meters/{id}/event_summaries` | alignment checks, cursors, eventual-consistency lag |
//! | `POST /v2/billing/meter_event_session` | 15-minute tokens (configurable) |
//! | `POST /v2/billing/meter_event_stream` | ≤ 100 events, session token, async validation |
//!
//! `/_standin/…` is a control API for clients in other languages (see
//! `control.rs`): inject faults, change settings, read the state.
//!
//! Every answer carries `Request-Id: req_…`; errors use Stripe's
//! `{"error":{…}}` shape. What Stripe reports asynchronously (unknown meter
//! or customer, bad stream events) lands in [`FakeStripe::async_errors`].

mod api_meters;
mod api_v1;
mod api_v2;
mod control;
mod http;
mod limits;
mod model;
mod state;
mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use limits::{Fault, FaultPlan, RateLimits};
pub use model::{Formula, HourTotal, Meter, MeterSpec, RecordedEvent, Source, TimeWindow};
pub use state::{AsyncError, StripeStats};
pub use webhook::{Delivery, send_signed_bytes, send_signed_event, stripe_signature_header};

use crate::serve::{DownSwitch, Served, serve};
use state::Shared;

/// What happens to a v1 meter event whose `event_name` matches no meter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownEventName {
    /// Accept it (200) and report `no_meter` asynchronously (the default).
    #[default]
    AcceptAsync,
    /// Refuse it with 400 `No active meter found for event_name …` (some
    /// integrations report seeing this synchronously).
    Reject,
}

/// The `status` a meter event adjustment answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdjustmentStatus {
    #[default]
    Pending,
    Complete,
}

/// How to start a [`FakeStripe`].
#[derive(Clone, Debug)]
pub struct StripeConfig {
    /// Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Accepted secret keys; empty accepts any `sk_test_…` key.
    pub api_keys: Vec<String>,
    pub meters: Vec<MeterSpec>,
    /// Default [`RateLimits::LIVE`].
    pub rate_limits: RateLimits,
    /// How long each accepted meter-event call stays in flight (default 5 ms),
    /// so the per-(customer, meter) concurrency rule is observable.
    pub processing_time: Duration,
    /// The delay of a [`Fault::Slow`] answer (default 30 s).
    pub slow_delay: Duration,
    /// Events received less than this ago are not yet in summaries (default 0).
    pub summary_lag: Duration,
    /// Meter event session lifetime (default 15 minutes).
    pub session_ttl: Duration,
    pub faults: FaultPlan,
    pub fault_seed: u64,
    pub unknown_event_name: UnknownEventName,
    pub adjustment_status: AdjustmentStatus,
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: Vec::new(),
            meters: Vec::new(),
            rate_limits: RateLimits::LIVE,
            processing_time: Duration::from_millis(5),
            slow_delay: Duration::from_secs(30),
            summary_lag: Duration::ZERO,
            session_ttl: Duration::from_secs(15 * 60),
            faults: FaultPlan::default(),
            fault_seed: 0,
            unknown_event_name: UnknownEventName::AcceptAsync,
            adjustment_status: AdjustmentStatus::Pending,
        }
    }
}

impl StripeConfig {
    pub fn meter(mut self, spec: MeterSpec) -> Self {
        self.meters.push(spec);
        self
    }
}

/// A running Stripe stand-in. Dropping it stops the server.
pub struct FakeStripe {
    served: Served,
    shared: Arc<Shared>,
}

impl FakeStripe {
    /// Bind and serve; the meters in `config` are created first.
    pub async fn start(config: StripeConfig) -> std::io::Result<FakeStripe> {
        let shared = Arc::new(Shared::new(&config));
        {
            let mut g = shared.lock();
            for spec in &config.meters {
                api_meters::add_meter(&mut g, spec.clone());
            }
        }
        let served = serve(config.addr, router(Arc::clone(&shared)), DownSwitch::default()).await?;
        Ok(FakeStripe { served, shared })
    }

    /// `http://127.0.0.1:PORT`: the API base and the meter-events base.
    pub fn url(&self) -> String {
        self.served.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    /// Create an active meter (as `POST /v1/billing/meters` would).
    pub fn create_meter(&self, spec: MeterSpec) -> Meter {
        api_meters::add_meter(&mut self.shared.lock(), spec)
    }

    pub fn meters(&self) -> Vec<Meter> {
        self.shared.lock().meters.clone()
    }

    /// Deactivate (`false`) or reactivate a meter; `false` if no such id.
    pub fn set_meter_active(&self, id: &str, active: bool) -> bool {
        let mut g = self.shared.lock();
        let now = g.now_secs();
        match g.meters.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                m.active = active;
                m.updated = now;
                m.deactivated_at = if active { None } else { Some(now) };
                true
            }
            None => false,
        }
    }

    /// Only these customers exist from now on (others get the async error
    /// `meter_event_customer_not_found`). Until called, every id exists.
    pub fn set_customers<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) {
        self.shared.lock().customers = Some(ids.into_iter().map(Into::into).collect());
    }

    /// Every recorded event, in order of receipt (cancelled ones included,
    /// flagged).
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.shared.lock().events.clone()
    }

    /// Applied totals per (customer, event name, UTC hour), each meter under
    /// its own aggregation rules; no summary lag.
    pub fn hourly_totals(&self) -> Vec<HourTotal> {
        let g = self.shared.lock();
        model::hourly_totals(&g.meters, &g.events)
    }

    /// The applied total for one meter (by event name) and customer over
    /// `[start, end)`, ignoring the summary lag; `None` without events.
    pub fn total(&self, event_name: &str, customer: &str, start: i64, end: i64) -> Option<f64> {
        let g = self.shared.lock();
        let meter = g.meter_for(event_name)?;
        model::aggregate(meter, &g.events, customer, start, end, i64::MAX)
    }

    /// Cancel an event as an adjustment would (it stops counting; its
    /// identifier stays taken). `false` if unknown.
    pub fn cancel_event(&self, identifier: &str) -> bool {
        let mut g = self.shared.lock();
        match g.by_identifier.get(identifier).copied() {
            Some(i) => {
                g.events[i].cancelled = true;
                true
            }
            None => false,
        }
    }

    /// Forget every recording of an identifier (the identifier is free again):
    /// Stripe "lost" it, which is drift a reconciliation should find. `false`
    /// if unknown.
    pub fn remove_event(&self, identifier: &str) -> bool {
        let mut g = self.shared.lock();
        let before = g.events.len();
        g.events.retain(|e| e.identifier != identifier);
        if g.events.len() == before {
            return false;
        }
        let reindex: Vec<(String, usize)> =
            g.events.iter().enumerate().map(|(i, e)| (e.identifier.clone(), i)).collect();
        g.by_identifier = reindex.into_iter().collect();
        true
    }

    pub fn stats(&self) -> StripeStats {
        self.shared.lock().stats.clone()
    }

    /// Highest number of simultaneous meter-event calls seen per
    /// (customer, event name), rejected ones included.
    pub fn max_concurrency(&self) -> HashMap<(String, String), usize> {
        self.shared.lock().max_concurrency.clone()
    }

    /// What Stripe would report later through thin events.
    pub fn async_errors(&self) -> Vec<AsyncError> {
        self.shared.lock().async_errors.clone()
    }

    /// Replace the per-call fault probabilities.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.shared.lock().faults.plan = plan;
    }

    pub fn set_fault_seed(&self, seed: u64) {
        self.shared.lock().faults.reseed(seed);
    }

    /// Force `fault` on the next `times` meter-event calls (before the dice).
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut g = self.shared.lock();
        g.faults.queue.extend(std::iter::repeat_n(fault, times));
    }

    pub fn clear_faults(&self) {
        let mut g = self.shared.lock();
        g.faults.queue.clear();
        g.faults.plan = FaultPlan::default();
    }

    pub fn set_rate_limits(&self, limits: RateLimits) {
        self.shared.lock().settings.rate_limits = limits;
    }

    /// Only these secret keys are accepted from now on (a key rolled or
    /// revoked in the dashboard); empty: any `sk_test_…` key.
    pub fn set_api_keys<I: IntoIterator<Item = S>, S: Into<String>>(&self, keys: I) {
        self.shared.lock().settings.api_keys = keys.into_iter().map(Into::into).collect();
    }

    pub fn set_processing_time(&self, d: Duration) {
        self.shared.lock().settings.processing_time = d;
    }

    pub fn set_slow_delay(&self, d: Duration) {
        self.shared.lock().settings.slow_delay = d;
    }

    pub fn set_summary_lag(&self, d: Duration) {
        self.shared.lock().settings.summary_lag = d;
    }

    /// Lifetime of sessions created from now on.
    pub fn set_session_ttl(&self, d: Duration) {
        self.shared.lock().settings.session_ttl = d;
    }

    pub fn set_unknown_event_name(&self, mode: UnknownEventName) {
        self.shared.lock().settings.unknown_event_name = mode;
    }

    /// Move the stand-in's clock forward (identifier windows, cancels,
    /// sessions, summaries and timestamp checks all follow it).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.lock().settings.clock_offset_ms += by.as_millis() as i64;
    }

    /// The stand-in's "now", Unix seconds.
    pub fn now(&self) -> i64 {
        self.shared.lock().now_secs()
    }

    /// Clear events, counters, idempotency keys, sessions, async errors and
    /// faults; keep meters and settings.
    pub fn reset(&self) {
        self.shared.reset();
    }

    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/billing/meter_events", post(api_v1::create_meter_event))
        .route("/v1/billing/meter_event_adjustments", post(api_v1::create_adjustment))
        .route("/v1/billing/meters", get(api_meters::list_meters).post(api_meters::create_meter))
        .route("/v1/billing/meters/{id}", get(api_meters::get_meter))
        .route("/v1/billing/meters/{id}/deactivate", post(api_meters::deactivate))
        .route("/v1/billing/meters/{id}/reactivate", post(api_meters::reactivate))
        .route("/v1/billing/meters/{id}/event_summaries", get(api_meters::event_summaries))
        .route("/v2/billing/meter_event_session", post(api_v2::create_session))
        .route("/v2/billing/meter_event_stream", post(api_v2::stream))
        .route("/_standin/inject", post(control::inject))
        .route("/_standin/settings", post(control::settings))
        .route("/_standin/clock", post(control::clock))
        .route("/_standin/customers", post(control::customers))
        .route("/_standin/reset", post(control::reset))
        .route("/_standin/state", get(control::state))
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn(request_id))
        .with_state(shared)
}

async fn unknown_route(req: Request) -> Response {
    http::ApiError::v1(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        None,
        None,
        format!(
            "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at \
             https://support.stripe.com/.",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

/// Every answer gets a fresh `Request-Id: req_…`.
async fn request_id(req: Request, next: Next) -> Response {
    use rand::SeedableRng;
    use rand::distr::{Alphanumeric, SampleString};
    let mut resp = next.run(req).await;
    let id = format!("req_{}", Alphanumeric.sample_string(&mut rand::rngs::StdRng::from_os_rng(), 14));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("Request-Id", v);
    }
    resp
}

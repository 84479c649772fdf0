//! Stripe usage sync: the ledger as the source of Stripe Billing's
//! usage-based invoices, exactly once through faults and crashes.
//!
//! - [`config`]: `[stripe]`, and the check at start that every synced
//!   tally meter has a Stripe meter that fits it (formula, window).
//! - [`plan`]: what to push for a window (raw meters: each hour's units as
//!   they grow; pre-aggregated meters: a window's total; `last` meters: the
//!   period-to-date value), whole units with the fraction carried, and
//!   deterministic identifiers.
//! - [`sync`]: the leader's loop. The ledger marks each changed (tenant,
//!   meter, hour) in its own transaction; once the hour is closed (plus
//!   `lag`) the planner turns the change into a push row, written before
//!   anything is sent.
//! - [`send`]: the scheduler: the configured rate, one call in flight per
//!   (customer, meter), retries of the same identifier, Stripe's "already
//!   exists" taken as delivered, 401/403 halting the sync.
//! - [`reconcile`]: the period's ledger against the pushes and Stripe's
//!   meter event summaries; drift within 24 h repaired, older reported.
//! - [`client`]: the HTTP calls, on the delivery core.
//! - [`webhook`]: the webhook signature check and the events tally acts on
//!   (subscription status, invoices, customer metadata).

pub mod client;
pub mod config;
mod limiter;
pub mod plan;
pub mod reconcile;
pub mod send;
pub mod sync;
pub mod webhook;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tally_core::{MeterConfig, Secret, metric_names};
use tally_store::Store;

pub use client::{Client, StripeMeter};
pub use config::{Mode, StripeConfig, SyncMeter, resolve_meters};
pub use reconcile::Reconciler;
pub use sync::{Planner, StripeSync};

use crate::{delivery::Backoff, lake::EnvLookup};

/// What the sync is doing, for `GET /v1/stripe/sync` and `/metrics`.
#[derive(Debug, Default)]
pub struct SyncStatus {
    leader: AtomicBool,
    halted: Mutex<Option<String>>,
}

impl SyncStatus {
    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
        metrics::gauge!(metric_names::STRIPE_LEADER).set(if leading { 1.0 } else { 0.0 });
    }

    pub fn leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Stops sending: Stripe refuses the key.
    pub fn halt(&self, why: String) {
        let mut h = self.halted.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_none() {
            tracing::error!(reason = %why, "Stripe sync halted: fix the key (or its permissions); tally retries every minute");
        }
        *h = Some(why);
        metrics::gauge!(metric_names::STRIPE_HALTED).set(1.0);
    }

    pub fn resume(&self) {
        *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = None;
        metrics::gauge!(metric_names::STRIPE_HALTED).set(0.0);
    }

    pub fn halted(&self) -> bool {
        self.halted_reason().is_some()
    }

    pub fn halted_reason(&self) -> Option<String> {
        self.halted.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The sync's parts once connected: what the API and the CLI need.
#[derive(Clone)]
pub struct Stripe {
    pub client: Arc<Client>,
    pub meters: Arc<Vec<SyncMeter>>,
    pub config: StripeConfig,
    pub status: Arc<SyncStatus>,
}

impl Stripe {
    /// Connects when the key variable is set (`None` otherwise: the sync is
    /// off): reads Stripe's meters and checks every synced tally meter
    /// against them. Refused: a key Stripe refuses, meters that do not fit,
    /// or a Stripe that stays unreachable for ~15 s.
    pub async fn connect(
        config: &StripeConfig,
        meters: &[MeterConfig],
        env: EnvLookup<'_>,
    ) -> Result<Option<Stripe>, String> {
        config.validate()?;
        let Some(key) = env(&config.api_key_env).filter(|k| !k.is_empty()) else { return Ok(None) };
        let client = Client::new(&config.api_base, Secret::new(key), config.timeout, config.max_requests_per_second)?;
        let backoff = Backoff::exponential(Duration::from_millis(500), Duration::from_secs(8));
        let mut failures = 0;
        let stripe_meters = loop {
            match client.meters().await {
                Ok(m) => break m,
                Err(e) if e.is_retriable() && failures < 4 => {
                    failures += 1;
                    let wait = backoff.wait(failures, e.retry_after()).unwrap_or_default();
                    tracing::warn!(error = %e, retry_in = ?wait, "reading Stripe's meters failed");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    return Err(format!(
                        "stripe: reading the meters at {} failed: {e} (tally checks them at start; {} holds the key)",
                        tally_core::redact::url(&config.api_base),
                        config.api_key_env
                    ));
                }
            }
        };
        let synced = resolve_meters(meters, &stripe_meters).map_err(|e| format!("stripe: {e}"))?;
        Ok(Some(Stripe {
            client: Arc::new(client),
            meters: Arc::new(synced),
            config: config.clone(),
            status: Arc::new(SyncStatus::default()),
        }))
    }

    /// The sync loop over `store`.
    pub fn sync(&self, store: Store) -> StripeSync {
        StripeSync { store, stripe: self.clone() }
    }

    pub fn planner(&self, store: Store) -> Planner {
        Planner {
            store,
            meters: self.meters.clone(),
            lag_ms: self.config.lag.as_millis() as i64,
            sync_from_ms: self.config.sync_from_ms().ok().flatten(),
        }
    }

    pub fn reconciler(&self, store: Store) -> Reconciler {
        Reconciler {
            store,
            client: self.client.clone(),
            meters: self.meters.clone(),
            lag_ms: self.config.lag.as_millis() as i64,
        }
    }
}

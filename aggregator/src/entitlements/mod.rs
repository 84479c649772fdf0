//! Entitlements: "may tenant T still use meter M right now?", answered
//! from memory.
//!
//! The state (subscription status, allowances, credits, this period's
//! usage) is loaded from the store at start and kept current three ways:
//! the ledger tells [`Entitlements::observe`] what each commit accepted
//! (this replica's usage counts at once); the refresher re-reads the recent
//! hours, changed statuses, limits and credits every `refresh_interval`
//! (other replicas' writes) and everything every `full_refresh_interval`;
//! the API and the webhook update it after their own writes.
//!
//! Usage crossing a limit's warning fraction, the limit, or the end of the
//! credits queues a notice once (per period, per credit level) through
//! [`notice`], whichever replica sees it first.

pub mod notice;
mod refresh;
pub mod state;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock, atomic::AtomicI64},
    time::Duration,
};

use serde::Deserialize;
use tally_core::{MeterConfig, UsageOutcome, UsageRecord, now_ms};
use tally_store::{CustomerBilling, Store};
use tokio::sync::mpsc;

pub use notice::NoticeTargets;
pub use state::{Answer, Reason};
use state::{Billing, MeterInfo, Tenant, Usage};

/// `[entitlements]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EntitlementsConfig {
    /// Subscription statuses that deny use. `past_due` is not among them by
    /// default: a grace while Stripe retries the payment.
    pub deny_statuses: Vec<String>,
    /// A notice when a tenant's usage reaches this fraction of its limit.
    pub warning_fraction: f64,
    /// Receivers (`[[receivers]]` names) of billing notices; empty: all.
    pub receivers: Vec<String>,
    /// How often other replicas' usage and changes are read.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// How often everything is read again.
    #[serde(with = "humantime_serde")]
    pub full_refresh_interval: Duration,
}

impl Default for EntitlementsConfig {
    fn default() -> Self {
        EntitlementsConfig {
            deny_statuses: ["canceled", "unpaid", "incomplete_expired", "paused"].map(String::from).to_vec(),
            warning_fraction: 0.8,
            receivers: Vec::new(),
            refresh_interval: Duration::from_secs(2),
            full_refresh_interval: Duration::from_secs(600),
        }
    }
}

/// Stripe's subscription statuses.
pub const STATUSES: [&str; 8] =
    ["active", "trialing", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "paused"];

impl EntitlementsConfig {
    pub fn validate(&self, receivers: &[&str]) -> Result<(), String> {
        if let Some(s) = self.deny_statuses.iter().find(|s| !STATUSES.contains(&s.as_str())) {
            return Err(format!(
                "entitlements.deny_statuses: {s:?} is not a Stripe subscription status ({STATUSES:?})"
            ));
        }
        if !(self.warning_fraction > 0.0 && self.warning_fraction <= 1.0) {
            return Err("entitlements.warning_fraction: must be > 0 and at most 1 (1: no warning)".into());
        }
        if let Some(r) = self.receivers.iter().find(|r| !receivers.contains(&r.as_str())) {
            return Err(format!("entitlements.receivers: no [[receivers]] named {r:?}"));
        }
        if self.refresh_interval < Duration::from_millis(100) || self.full_refresh_interval < self.refresh_interval {
            return Err("entitlements: refresh_interval >= 100ms and full_refresh_interval >= refresh_interval".into());
        }
        Ok(())
    }
}

/// Why a check could not be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    #[error("meter: {0:?} is not a configured sum or count meter (limits apply to those)")]
    UnknownMeter(String),
}

/// A usage notice for the notifier: its key, the event and the answer.
type Pending = (String, &'static str, Answer);

/// The entitlement state; cheap to clone.
#[derive(Clone)]
pub struct Entitlements {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: RwLock<HashMap<String, Tenant>>,
    meters: Vec<MeterInfo>,
    config: EntitlementsConfig,
    store: Store,
    targets: NoticeTargets,
    notices: mpsc::Sender<Pending>,
    rx: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Notices this replica queued (or found queued): not asked again.
    notified: Mutex<HashSet<String>>,
    /// Hours from here on are kept one by one (refreshed from the store).
    recent_from: AtomicI64,
}

const HOUR: i64 = 3_600_000;
/// Hours kept one by one: late events within them count at once everywhere.
const RECENT_HOURS: i64 = 3;

impl Entitlements {
    pub fn new(store: Store, meters: &[MeterConfig], config: EntitlementsConfig, targets: NoticeTargets) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        Entitlements {
            inner: Arc::new(Inner {
                tenants: RwLock::new(HashMap::new()),
                meters: MeterInfo::from_config(meters),
                config,
                store,
                targets,
                notices: tx,
                rx: Mutex::new(Some(rx)),
                notified: Mutex::new(HashSet::new()),
                recent_from: AtomicI64::new(0),
            }),
        }
    }

    fn meter(&self, name: &str) -> Result<&MeterInfo, CheckError> {
        self.inner.meters.iter().find(|m| m.name == name).ok_or_else(|| CheckError::UnknownMeter(name.to_owned()))
    }

    /// The answer for `tenant` and `meter` now. Reads memory only.
    pub fn check(&self, tenant: &str, meter: &str) -> Result<Answer, CheckError> {
        let m = self.meter(meter)?;
        let tenants = self.inner.tenants.read().expect("entitlement state lock");
        Ok(state::answer(tenant, tenants.get(tenant), m, &self.inner.config.deny_statuses, now_ms()))
    }

    /// Every limitable meter's answer for `tenant` (None: unknown tenant).
    pub fn tenant(&self, tenant: &str) -> Option<Vec<Answer>> {
        let tenants = self.inner.tenants.read().expect("entitlement state lock");
        let t = tenants.get(tenant)?;
        let now = now_ms();
        Some(
            self.inner
                .meters
                .iter()
                .map(|m| state::answer(tenant, Some(t), m, &self.inner.config.deny_statuses, now))
                .collect(),
        )
    }

    /// Whether `meter` takes limits and credits.
    pub fn is_limitable(&self, meter: &str) -> bool {
        self.meter(meter).is_ok()
    }

    /// What the ledger accepted in one commit (a [`tally_collector`]
    /// commit observer calls this).
    pub fn observe(&self, records: &[UsageRecord], outcomes: &[UsageOutcome]) {
        let now = now_ms();
        let recent_from = self.inner.recent_from.load(std::sync::atomic::Ordering::Relaxed);
        let mut touched: Vec<(String, String)> = Vec::new();
        {
            let mut tenants = self.inner.tenants.write().expect("entitlement state lock");
            for (r, o) in records.iter().zip(outcomes) {
                if *o != UsageOutcome::Accepted {
                    continue;
                }
                let Some(m) = self.inner.meters.iter().find(|m| *m.name == *r.meter) else { continue };
                let t = tenants.entry(r.tenant.as_str().to_owned()).or_default();
                let (start, end) = t.period(now);
                if r.event_time_ms < start || r.event_time_ms >= end {
                    continue;
                }
                let u =
                    t.usage.entry(m.name.clone()).or_insert_with(|| Usage { period_start: start, ..Usage::default() });
                if u.period_start != start {
                    continue; // the refresher moves it to the new period
                }
                let v = if m.count { 1.0 } else { r.value };
                let hour = r.event_time_ms / HOUR * HOUR;
                if hour >= recent_from {
                    *u.recent.entry(hour).or_insert(0.0) += v;
                } else {
                    u.base += v;
                }
                touched.push((r.tenant.as_str().to_owned(), m.name.clone()));
            }
        }
        touched.sort();
        touched.dedup();
        self.notice_due(&touched);
    }

    /// A customer's billing state after a webhook changed it.
    pub fn apply_billing(&self, b: &CustomerBilling) {
        let Some(tenant) = &b.tenant else { return };
        let mut tenants = self.inner.tenants.write().expect("entitlement state lock");
        tenants.entry(tenant.clone()).or_default().billing = billing(b);
    }

    /// Queues the notices due for `pairs` (tenant, meter) not yet queued.
    fn notice_due(&self, pairs: &[(String, String)]) {
        if pairs.is_empty() {
            return;
        }
        let now = now_ms();
        let tenants = self.inner.tenants.read().expect("entitlement state lock");
        let mut notified = self.inner.notified.lock().expect("notified lock");
        for (tenant, meter) in pairs {
            let (Some(t), Ok(m)) = (tenants.get(tenant), self.meter(meter)) else { continue };
            if t.limit(m).is_none() && !t.credits.contains_key(meter) {
                continue;
            }
            let a = state::answer(tenant, Some(t), m, &self.inner.config.deny_statuses, now);
            let granted = t.credits.get(meter).map(|c| c.granted);
            for due in state::due_notices(&a, self.inner.config.warning_fraction, granted) {
                if notified.contains(&due.key) {
                    continue;
                }
                // Full: the next refresh finds it due again.
                if self.inner.notices.try_send((due.key.clone(), due.event, a.clone())).is_ok() {
                    notified.insert(due.key);
                }
            }
        }
    }

    /// Runs the refresher and the notifier until `shutdown`.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let rx = self.inner.rx.lock().expect("notifier receiver").take();
        let notifier = rx.map(|rx| tokio::spawn(self.clone().notify(rx, shutdown.clone())));
        self.refresh_loop(shutdown).await;
        if let Some(n) = notifier {
            let _ = n.await;
        }
    }

    async fn notify(self, mut rx: mpsc::Receiver<Pending>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let (key, event, answer) = tokio::select! {
                next = rx.recv() => match next { Some(n) => n, None => return },
                _ = shutdown.cancelled() => return,
            };
            let now = now_ms();
            let rows = self.inner.targets.usage(&key, event, &answer, now);
            match self.inner.store.queue_notice(&key, &rows, now).await {
                Ok(true) => {
                    metrics::counter!(tally_core::metric_names::BILLING_NOTICES, "event" => event).increment(1);
                    tracing::info!(tenant = %answer.tenant, meter = %answer.meter, event, "billing notice queued")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, key, "queuing a billing notice failed; retried at the next refresh");
                    self.inner.notified.lock().expect("notified lock").remove(&key);
                }
            }
        }
    }
}

fn billing(b: &CustomerBilling) -> Billing {
    Billing {
        status: b.status.clone(),
        period: b.period_start_ms.zip(b.period_end_ms),
        prev_period: b.prev_start_ms.zip(b.prev_end_ms),
        payment: b.payment.clone(),
    }
}

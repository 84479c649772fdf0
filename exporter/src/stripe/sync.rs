//! The sync loop: one replica leads (a PostgreSQL advisory lock held on a
//! connection of its own); it plans pushes from the ledger's changes every
//! `sync_interval`, sends them, reconciles closed periods, and when Stripe
//! refuses the key it halts sending and probes until the key works again.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tally_core::{Aggregation, metric_names, now_ms};
use tally_store::{NewPush, PushRow, PushState, Store, StoreError, UsageChange, WindowKey, locks};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    Stripe,
    config::SyncMeter,
    plan::{MAX_AGE_MS, Shape, identifier, period, plan_window},
    send::{Sender, publish_counts},
};
use crate::delivery::Backoff;

/// Changes planned per transaction.
const BATCH: i64 = 500;
/// How often a halted sync asks Stripe whether the key works again (five
/// sync intervals when that is sooner).
const PROBE: Duration = Duration::from_secs(60);

/// Turns the ledger's changes into pushes (see [`plan_window`]).
pub struct Planner {
    pub store: Store,
    pub meters: Arc<Vec<SyncMeter>>,
    pub lag_ms: i64,
    pub sync_from_ms: Option<i64>,
}

impl Planner {
    /// Plans every change whose window has closed, a batch per transaction;
    /// returns the pushes written (or, with `commit` false, the first
    /// batch's pushes, written nowhere).
    pub async fn pass(&self, now: i64, commit: bool) -> Result<Vec<PushRow>, StoreError> {
        let bounds: Vec<(&str, i64)> =
            self.meters.iter().map(|m| (m.name.as_str(), m.shape.closed_before(now, self.lag_ms))).collect();
        let started = std::time::Instant::now();
        let mut written = Vec::new();
        loop {
            let changes = self.store.usage_changes(&bounds, BATCH).await?;
            let n = changes.len() as i64;
            if n == 0 {
                break;
            }
            let pushes = self.plan(&changes, now, commit).await?;
            metrics::counter!(metric_names::STRIPE_PLANNED).increment(pushes.len() as u64);
            written.extend(pushes);
            if n < BATCH || !commit {
                break;
            }
        }
        if commit && !written.is_empty() {
            tracing::info!(pushes = written.len(), took = ?started.elapsed(), "Stripe pushes planned");
        }
        Ok(written)
    }

    async fn plan(&self, changes: &[UsageChange], now: i64, commit: bool) -> Result<Vec<PushRow>, StoreError> {
        // The windows the changes fall in, each with its meter, customer and
        // scaled ledger value.
        let mut windows: BTreeMap<WindowKey, (&SyncMeter, &str, f64)> = BTreeMap::new();
        for c in changes {
            let Some(meter) = self.meters.iter().find(|m| m.name == c.meter) else { continue };
            let (start, end) = meter.shape.window(c.hour_ms);
            if self.sync_from_ms.is_some_and(|from| end <= from) {
                continue; // before the sync's start: never pushed
            }
            let key = WindowKey {
                tenant: c.tenant.clone(),
                meter: c.meter.clone(),
                window_ms: start,
                period_ms: period(start).0,
            };
            windows.entry(key).or_insert((meter, c.customer.as_str(), 0.0));
        }
        // The ledger's value of each window: sums and counts in one query,
        // period values (last, max, …) one by one.
        let sums: Vec<(&str, &str, i64, i64)> = windows
            .iter()
            .filter(|(_, (m, ..))| m.shape != Shape::PeriodValue)
            .map(|(k, (m, ..))| (k.tenant.as_str(), k.meter.as_str(), k.window_ms, m.shape.window(k.window_ms).1))
            .collect();
        let mut sums = self.store.usage_windows(&sums).await?.into_iter();
        for (key, (meter, _, scaled)) in windows.iter_mut() {
            let value = match meter.shape {
                Shape::PeriodValue => {
                    let p = period(key.window_ms);
                    self.store.usage_value(&key.tenant, &key.meter, meter.aggregation, p.0, p.1).await?.unwrap_or(0.0)
                }
                _ => {
                    let (sum, count) = sums.next().unwrap_or_default();
                    if meter.aggregation == Aggregation::Count { count as f64 } else { sum }
                }
            };
            *scaled = value * meter.scale;
        }
        let keys: Vec<WindowKey> = windows.keys().cloned().collect();
        self.store
            .plan_stripe(&keys, changes, commit, |key, window, period| {
                let &(meter, customer, scaled) = windows.get(key)?;
                let (next, value) = plan_window(meter.shape, scaled, window, period)?;
                let push = value.map(|value| {
                    let bounds = meter.shape.window(key.window_ms);
                    let timestamp_s = meter.shape.timestamp_s(bounds, now);
                    let expired = timestamp_s * 1000 < now - MAX_AGE_MS;
                    NewPush {
                        identifier: identifier(
                            &key.tenant,
                            customer,
                            &meter.event_name,
                            meter.shape,
                            key.window_ms,
                            next.revision,
                        ),
                        kind: meter.shape.push_kind(),
                        customer: customer.to_owned(),
                        event_name: meter.event_name.clone(),
                        value,
                        timestamp_s,
                        state: if expired { PushState::Expired } else { PushState::Pending },
                        error: expired
                            .then(|| "usage older than the 35 days Stripe accepts: correct it by hand".to_owned()),
                    }
                });
                Some((next, push))
            })
            .await
    }
}

/// The whole sync, started when `[stripe]` has a key.
pub struct StripeSync {
    pub store: Store,
    pub stripe: Stripe,
}

impl StripeSync {
    /// While leading: reconciles each period after it closes (its own task:
    /// reading every tenant's summaries takes a while at the read rate).
    fn reconcile_closed_periods(&self, leading: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let reconciler = self.stripe.reconciler(self.store.clone());
        let (config, status) = (self.stripe.config.clone(), self.stripe.status.clone());
        async move {
            loop {
                if !status.halted() {
                    reconciler.after_close(now_ms(), &config).await;
                }
                tokio::select! {
                    _ = leading.cancelled() => return,
                    _ = tokio::time::sleep(config.sync_interval) => {}
                }
            }
        }
    }

    /// Leads when it can, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Stripe { client, meters, config, status } = &self.stripe;
        let planner = self.stripe.planner(self.store.clone());
        let known: Vec<&str> = meters.iter().map(|m| m.name.as_str()).collect();
        if let Err(e) = self.store.drop_usage_changes_except(&known).await {
            tracing::warn!(error = %e, "forgetting the changes of meters not synced to Stripe failed");
        }
        while !shutdown.is_cancelled() {
            let lead = match self.store.try_lead(locks::STRIPE_SYNC).await {
                Ok(lead) => lead,
                Err(e) => {
                    tracing::warn!(error = %e, "taking the Stripe sync's lead failed");
                    None
                }
            };
            let Some(mut lead) = lead else {
                status.set_leader(false);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(config.sync_interval) => continue,
                }
            };
            status.set_leader(true);
            tracing::info!("leading the Stripe sync");
            let leading = shutdown.child_token();
            let wake = Arc::new(Notify::new());
            let sender = Sender {
                store: self.store.clone(),
                client: client.clone(),
                meters: meters.clone(),
                status: status.clone(),
                max_in_flight: config.max_in_flight,
                backoff: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(600)),
            };
            let sending = tokio::spawn({
                let (wake, leading) = (wake.clone(), leading.clone());
                async move { sender.run(wake, leading).await }
            });
            let reconciling = tokio::spawn(self.reconcile_closed_periods(leading.clone()));
            let mut last_probe = tokio::time::Instant::now();
            loop {
                let now = now_ms();
                if status.halted() && last_probe.elapsed() >= PROBE.min(config.sync_interval * 5) {
                    last_probe = tokio::time::Instant::now();
                    match client.meters().await {
                        Ok(_) => {
                            tracing::info!("Stripe accepts the API key again; the sync resumes");
                            status.resume();
                            wake.notify_one();
                        }
                        Err(e) => tracing::warn!(error = %e, "Stripe still refuses the API key; the sync stays halted"),
                    }
                }
                match planner.pass(now, true).await {
                    Ok(pushes) if !pushes.is_empty() => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "planning Stripe pushes failed; retried next round"),
                }
                match self.store.push_counts(None).await {
                    Ok(counts) => publish_counts(&counts),
                    Err(e) => tracing::warn!(error = %e, "counting Stripe pushes failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(config.sync_interval) => {}
                }
                if !lead.holds().await {
                    tracing::warn!("lost the Stripe sync's lead (its database connection failed); stepping down");
                    break;
                }
            }
            leading.cancel();
            let _ = tokio::join!(sending, reconciling);
            status.set_leader(false);
        }
    }
}

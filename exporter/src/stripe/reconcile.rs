//! Reconciliation: per billing period, tenant and meter, the ledger
//! against what tally pushed and what Stripe's meter event summaries hold.
//! Drift Stripe shows in windows pushed within the last 24 h is repaired
//! (a correcting event for raw meters, the window's total again for the
//! others); older drift is reported, never edited.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use tally_core::metric_names;
use tally_store::{NewPush, Planned, PushKind, PushRow, PushState, ReconRow, Store, WindowKey};

use super::{
    client::Client,
    config::{StripeConfig, SyncMeter},
    plan::{Shape, identifier, period, whole_units},
};

/// Windows pushed longer ago than this are not repaired: Stripe's
/// identifiers and adjustments hold for 24 h, and the invoice may be final.
const REPAIR_WINDOW_MS: i64 = 23 * 3_600_000;

/// Which report a line is for.
struct Pass {
    period_ms: i64,
    checks: i64,
    now: i64,
}

pub struct Reconciler {
    pub store: Store,
    pub client: Arc<Client>,
    pub meters: Arc<Vec<SyncMeter>>,
    pub lag_ms: i64,
}

impl Reconciler {
    /// The report of the period starting at `period_ms` (of one tenant, or
    /// all), as of `now`: windows still open are left out on both sides.
    /// `checks` is stored with each line (2 = drift confirmed by a re-read).
    pub async fn report(
        &self,
        period_ms: i64,
        tenant: Option<&str>,
        checks: i64,
        now: i64,
    ) -> Result<Vec<ReconRow>, String> {
        let (start, end) = period(period_ms);
        let pushes = self.store.period_pushes(start, tenant).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for meter in self.meters.iter() {
            let until = end.min(meter.shape.closed_before(now, self.lag_ms));
            let mut lines: BTreeMap<String, f64> = BTreeMap::new();
            if until > start {
                let totals = self
                    .store
                    .usage_totals(&meter.name, meter.aggregation, start, until)
                    .await
                    .map_err(|e| e.to_string())?;
                lines.extend(totals.into_iter().filter(|(t, _)| tenant.is_none_or(|x| x == t)));
            }
            let mine: Vec<&PushRow> = pushes.iter().filter(|p| p.meter == meter.name).collect();
            for p in &mine {
                lines.entry(p.tenant.clone()).or_insert(0.0);
            }
            for (t, ledger) in lines {
                let of_tenant: Vec<&PushRow> = mine.iter().copied().filter(|p| p.tenant == t).collect();
                let at = Pass { period_ms: start, checks, now };
                out.push(self.line(meter, &at, &t, ledger, &of_tenant).await?);
            }
        }
        Ok(out)
    }

    async fn line(
        &self,
        meter: &SyncMeter,
        at: &Pass,
        tenant: &str,
        ledger: f64,
        pushes: &[&PushRow],
    ) -> Result<ReconRow, String> {
        let Pass { period_ms, checks, now } = *at;
        let mut customers: BTreeSet<String> = pushes.iter().map(|p| p.customer.clone()).collect();
        if customers.is_empty()
            && let Some(c) =
                self.store.tenant(tenant).await.map_err(|e| e.to_string())?.and_then(|r| r.stripe_customer_id)
        {
            customers.insert(c);
        }
        let mut row = ReconRow {
            period_ms,
            tenant: tenant.to_owned(),
            meter: meter.name.clone(),
            customers: customers.iter().cloned().collect::<Vec<_>>().join(","),
            ledger,
            expected: whole_units(ledger * meter.scale),
            pushed: pushed(meter.shape, pushes),
            stripe: None,
            drift: None,
            checks,
            checked_ms: now,
            error: None,
        };
        if customers.is_empty() {
            row.error = Some("the tenant has no Stripe customer: its usage waits for the mapping".into());
            return Ok(row);
        }
        // A period value lives with the customer of the latest push.
        if meter.shape == Shape::PeriodValue
            && let Some(last) = pushes.iter().filter(|p| p.state == PushState::Sent).max_by_key(|p| p.revision)
        {
            customers = BTreeSet::from([last.customer.clone()]);
        }
        let (start_s, end_s) = summary_range(meter.shape, period_ms, now, self.lag_ms);
        let mut stripe = 0.0;
        for c in customers.iter().filter(|_| end_s > start_s) {
            match self.client.summaries(&meter.meter_id, c, start_s, end_s, None).await {
                Ok(s) => stripe += s.iter().map(|s| s.value).sum::<f64>(),
                Err(e) => {
                    row.error = Some(format!("reading Stripe's summaries for {c}: {e}"));
                    return Ok(row);
                }
            }
        }
        row.stripe = Some(stripe);
        row.drift = Some(stripe - row.expected as f64);
        Ok(row)
    }

    /// Repairs drift Stripe shows in windows pushed within the last 24 h
    /// (pushes written, sent by the sync); returns them. Lines whose drift
    /// lies (also) in older windows get an error saying so.
    pub async fn repair(&self, rows: &mut [ReconRow], now: i64) -> Result<Vec<PushRow>, String> {
        let mut written = Vec::new();
        for row in rows.iter_mut().filter(|r| r.drift.is_some_and(|d| d != 0.0)) {
            let Some(meter) = self.meters.iter().find(|m| m.name == row.meter) else { continue };
            let Some(customer) =
                self.store.tenant(&row.tenant).await.map_err(|e| e.to_string())?.and_then(|t| t.stripe_customer_id)
            else {
                continue;
            };
            let pushes = self.store.period_pushes(row.period_ms, Some(&row.tenant)).await.map_err(|e| e.to_string())?;
            let pushes: Vec<&PushRow> = pushes.iter().filter(|p| p.meter == meter.name).collect();
            let planned =
                self.store.planned_windows(&row.tenant, &meter.name, row.period_ms).await.map_err(|e| e.to_string())?;
            let (start_s, end_s) = summary_range(meter.shape, row.period_ms, now, self.lag_ms);
            if end_s <= start_s {
                continue;
            }
            let grouping = match meter.shape {
                Shape::Deltas | Shape::Totals { day: false } => Some("hour"),
                Shape::Totals { day: true } => Some("day"),
                Shape::PeriodValue => None,
            };
            let summaries = self
                .client
                .summaries(&meter.meter_id, &customer, start_s, end_s, grouping)
                .await
                .map_err(|e| format!("reading Stripe's summaries: {e}"))?;
            let mut stale = 0;
            let mut fixes: BTreeMap<WindowKey, (i64, Planned)> = BTreeMap::new();
            for (window_ms, plan) in &planned {
                let of_window: Vec<&&PushRow> = pushes.iter().filter(|p| p.window_ms == *window_ms).collect();
                if of_window.iter().any(|p| p.state == PushState::Pending) {
                    continue; // still on its way
                }
                let at_stripe: f64 = match meter.shape {
                    Shape::PeriodValue => summaries.iter().map(|s| s.value).sum(),
                    _ => summaries.iter().filter(|s| s.start_s * 1000 == *window_ms).map(|s| s.value).sum(),
                };
                if at_stripe == plan.units as f64 {
                    continue;
                }
                let recent =
                    of_window.iter().filter_map(|p| p.sent_ms).max().is_some_and(|t| t >= now - REPAIR_WINDOW_MS);
                if !recent {
                    stale += 1;
                    continue;
                }
                let value = match meter.shape {
                    Shape::Deltas => plan.units - at_stripe as i64,
                    _ => plan.units,
                };
                let key = WindowKey {
                    tenant: row.tenant.clone(),
                    meter: meter.name.clone(),
                    window_ms: *window_ms,
                    period_ms: row.period_ms,
                };
                fixes.insert(key, (value, *plan));
            }
            if stale > 0 {
                row.error = Some(format!(
                    "drift in {stale} window(s) pushed over 24 h ago: not repaired (Stripe may have invoiced them); \
                     correct it in Stripe"
                ));
            }
            let keys: Vec<WindowKey> = fixes.keys().cloned().collect();
            let pushes = self
                .store
                .plan_stripe(&keys, &[], true, |key, window, _| {
                    let &(value, _) = fixes.get(key)?;
                    let next = Planned { revision: window.revision + 1, ..window };
                    let bounds = meter.shape.window(key.window_ms);
                    let push = NewPush {
                        identifier: identifier(
                            &key.tenant,
                            &customer,
                            &meter.event_name,
                            meter.shape,
                            key.window_ms,
                            next.revision,
                        ),
                        kind: PushKind::Repair,
                        customer: customer.clone(),
                        event_name: meter.event_name.clone(),
                        value,
                        timestamp_s: meter.shape.timestamp_s(bounds, now),
                        state: PushState::Pending,
                        error: None,
                    };
                    Some((next, Some(push)))
                })
                .await
                .map_err(|e| e.to_string())?;
            written.extend(pushes);
        }
        Ok(written)
    }

    /// Reconciles the period before `now`'s once it is `close_grace` past
    /// its end; reads drifted lines again `recheck_after` later, then counts
    /// the drift that stays and repairs what can be repaired.
    pub async fn after_close(&self, now: i64, config: &StripeConfig) {
        let (prev, prev_end) = period(period(now).0 - 1);
        if now < prev_end + config.close_grace.as_millis() as i64 {
            return;
        }
        let stored = match self.store.reconciliation(prev, None).await {
            Ok(rows) => rows,
            Err(e) => return tracing::warn!(error = %e, "reading the stored reconciliation failed"),
        };
        if stored.is_empty() {
            match self.report(prev, None, 1, now).await {
                Ok(rows) => self.save(&rows).await,
                Err(e) => tracing::warn!(error = %e, "reconciling the closed period failed; retried next round"),
            }
            return;
        }
        let first = stored.iter().filter(|r| r.checks == 1 && r.drift.is_some_and(|d| d != 0.0));
        let tenants: BTreeSet<&str> = first.clone().map(|r| r.tenant.as_str()).collect();
        let due = stored.iter().map(|r| r.checked_ms).max().unwrap_or(0) + config.recheck_after.as_millis() as i64;
        if !tenants.is_empty() && now >= due {
            for t in tenants {
                match self.report(prev, Some(t), 2, now).await {
                    Ok(mut rows) => {
                        match self.repair(&mut rows, now).await {
                            Ok(p) if !p.is_empty() => {
                                tracing::warn!(tenant = t, repairs = p.len(), "Stripe drift repaired")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(tenant = t, error = %e, "repairing Stripe drift failed"),
                        }
                        self.save(&rows).await;
                    }
                    Err(e) => tracing::warn!(tenant = t, error = %e, "re-reading drift failed"),
                }
            }
        }
        self.publish(prev).await;
    }

    async fn save(&self, rows: &[ReconRow]) {
        if let Err(e) = self.store.save_reconciliation(rows).await {
            tracing::warn!(error = %e, "storing the reconciliation failed");
        }
    }

    /// Confirmed drift into `/metrics`.
    async fn publish(&self, period_ms: i64) {
        let Ok(rows) = self.store.reconciliation(period_ms, None).await else { return };
        let drifted: Vec<&ReconRow> =
            rows.iter().filter(|r| r.checks >= 2 && r.drift.is_some_and(|d| d != 0.0)).collect();
        metrics::gauge!(metric_names::STRIPE_DRIFT_LINES).set(drifted.len() as f64);
        metrics::gauge!(metric_names::STRIPE_DRIFT_UNITS)
            .set(drifted.iter().map(|r| r.drift.unwrap_or(0.0).abs()).sum::<f64>());
    }
}

/// What Stripe should hold of a tenant's pushes: the sum of raw meters'
/// events, the latest total of each window, or the latest period value.
fn pushed(shape: Shape, pushes: &[&PushRow]) -> i64 {
    let sent = pushes.iter().filter(|p| p.state == PushState::Sent);
    match shape {
        Shape::Deltas => sent.map(|p| p.value).sum(),
        Shape::Totals { .. } => {
            let mut latest: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for p in sent {
                let e = latest.entry(p.window_ms).or_insert((p.revision, p.value));
                if p.revision >= e.0 {
                    *e = (p.revision, p.value);
                }
            }
            latest.values().map(|(_, v)| v).sum()
        }
        Shape::PeriodValue => sent.max_by_key(|p| p.revision).map_or(0, |p| p.value),
    }
}

/// The summaries' range for a period as of `now`, in seconds: its closed
/// windows (a period value's pushes carry the time they were sent, so up
/// to the next whole hour).
fn summary_range(shape: Shape, period_ms: i64, now: i64, lag_ms: i64) -> (i64, i64) {
    let (start, end) = period(period_ms);
    let until = match shape {
        Shape::PeriodValue => (now / 3_600_000 + 1) * 3_600_000,
        _ => shape.closed_before(now, lag_ms),
    };
    (start / 1000, end.min(until).max(start) / 1000)
}

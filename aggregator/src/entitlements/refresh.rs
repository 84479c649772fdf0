//! Filling the entitlement state from the store: everything at start and
//! every `full_refresh_interval`, the recent hours and what changed every
//! `refresh_interval`; and the credit draw of each closed period.

use std::{
    collections::{BTreeMap, HashMap},
    sync::atomic::Ordering,
};

use tally_core::now_ms;
use tally_store::{CreditKind, NewCredit, PeriodUsage, Result};
use tokio_util::sync::CancellationToken;

use super::{
    Entitlements, HOUR, RECENT_HOURS, billing,
    state::{Credits, Tenant, Usage, calendar_month},
};

/// Rows changed this long before the last refresh are read again (commits
/// land after their timestamps were taken).
const OVERLAP_MS: i64 = 10_000;
/// A closed period is drawn from credits this long after it ends (late usage).
const DRAW_GRACE_MS: i64 = HOUR;

impl Entitlements {
    /// Reads everything (at start, before the API serves).
    pub async fn load(&self) -> Result<()> {
        self.full_refresh().await
    }

    pub(super) async fn refresh_loop(&self, shutdown: CancellationToken) {
        let config = &self.inner.config;
        let mut last_full = now_ms();
        let mut last = now_ms();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(config.refresh_interval) => {}
                _ = shutdown.cancelled() => return,
            }
            let started = now_ms();
            let full = started - last_full >= config.full_refresh_interval.as_millis() as i64;
            let result = if full { self.full_refresh().await } else { self.quick_refresh(last - OVERLAP_MS).await };
            match result {
                Ok(()) => {
                    last = started;
                    if full {
                        last_full = started;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "refreshing entitlements failed; answers may lag"),
            }
        }
    }

    /// The per-meter usage of the tenants in `periods` (tenant → its period).
    async fn period_usage(&self, periods: &HashMap<String, (i64, i64)>, recent_from: i64) -> Result<Vec<PeriodUsage>> {
        let mut by_period: BTreeMap<(i64, i64), Vec<&str>> = BTreeMap::new();
        for (t, p) in periods {
            by_period.entry(*p).or_default().push(t);
        }
        let mut out = Vec::new();
        for ((start, _), tenants) in by_period {
            let to = recent_from.max(start);
            if tenants.len() == 1 {
                out.extend(self.inner.store.range_usage(Some(tenants[0]), start, to).await?);
            } else {
                let rows = self.inner.store.range_usage(None, start, to).await?;
                out.extend(rows.into_iter().filter(|r| periods.get(&r.tenant).is_some_and(|p| p.0 == start)));
            }
        }
        Ok(out)
    }

    async fn full_refresh(&self) -> Result<()> {
        let store = &self.inner.store;
        let now = now_ms();
        let recent_from = (now / HOUR - RECENT_HOURS + 1) * HOUR;
        let mut tenants: HashMap<String, Tenant> =
            store.tenant_ids(0).await?.into_iter().map(|t| (t, Tenant::default())).collect();
        for b in store.customer_billing(0).await? {
            if let Some(t) = b.tenant.as_ref().and_then(|t| tenants.get_mut(t)) {
                t.billing = billing(&b);
            }
        }
        for l in store.limits(None, 0).await? {
            if let (Some(t), Some(v)) = (tenants.get_mut(&l.tenant), l.limit) {
                t.limits.insert(l.meter, v);
            }
        }
        self.fill_credits(&mut tenants).await?;
        let periods: HashMap<String, (i64, i64)> = tenants.iter().map(|(id, t)| (id.clone(), t.period(now))).collect();
        for u in self.period_usage(&periods, recent_from).await? {
            self.add(&mut tenants, &periods, u, false);
        }
        for u in store.hourly_usage(None, recent_from, i64::MAX).await? {
            self.add(&mut tenants, &periods, u, true);
        }
        *self.inner.tenants.write().expect("entitlement state lock") = tenants;
        self.inner.recent_from.store(recent_from, Ordering::Relaxed);
        self.draw_closed_periods(now).await?;
        self.notice_all();
        Ok(())
    }

    async fn fill_credits(&self, tenants: &mut HashMap<String, Tenant>) -> Result<()> {
        for c in self.inner.store.credit_balances(None, 0).await? {
            let t = tenants.entry(c.tenant.clone()).or_default();
            t.credits.insert(c.meter.clone(), Credits::from(c));
        }
        Ok(())
    }

    /// Adds a usage row to its tenant's counter (`recent`: one hour, set to
    /// the larger of the two values: usage only grows, and this replica's
    /// commits may be ahead of what the read saw).
    fn add(
        &self,
        tenants: &mut HashMap<String, Tenant>,
        periods: &HashMap<String, (i64, i64)>,
        u: PeriodUsage,
        recent: bool,
    ) {
        let Some(&period) = periods.get(&u.tenant) else { return };
        let t = tenants.entry(u.tenant.clone()).or_default();
        self.add_to(t, period, u, recent);
    }

    /// Whether the counter grew.
    fn add_to(&self, t: &mut Tenant, (start, end): (i64, i64), u: PeriodUsage, recent: bool) -> bool {
        let Some(m) = self.inner.meters.iter().find(|m| m.name == u.meter) else { return false };
        if recent && (u.hour_ms < start || u.hour_ms >= end) {
            return false;
        }
        let v = if m.count { u.count as f64 } else { u.sum };
        let c = t.usage.entry(u.meter).or_insert_with(|| Usage { period_start: start, ..Usage::default() });
        if c.period_start != start {
            return false; // read again once the period moved on
        }
        let slot = if recent { c.recent.entry(u.hour_ms).or_insert(0.0) } else { &mut c.base };
        let grew = v > *slot;
        *slot = if recent { slot.max(v) } else { v };
        grew
    }

    /// Other replicas' recent usage and everything changed since `since`.
    /// The write lock is held for the changes only: whole-state passes run
    /// when the hour turns (the recent window slides, periods end on hours).
    async fn quick_refresh(&self, since: i64) -> Result<()> {
        let store = &self.inner.store;
        let now = now_ms();
        let recent_from = (now / HOUR - RECENT_HOURS + 1) * HOUR;
        let new_tenants = store.tenant_ids(since).await?;
        let billing_rows = store.customer_billing(since).await?;
        let limit_rows = store.limits(None, since).await?;
        // Only (tenant, meter) pairs with an entry since the last refresh.
        let credits = store.credit_balances(None, since).await?;
        let hours = store.hourly_usage(None, recent_from, i64::MAX).await?;
        // Most hours are as held: find the others under the read lock, so
        // checks wait on the write lock only for what changed.
        let hours: Vec<PeriodUsage> = {
            let tenants = self.inner.tenants.read().expect("entitlement state lock");
            hours
                .into_iter()
                .filter(|u| {
                    let held = tenants
                        .get(&u.tenant)
                        .and_then(|t| t.usage.get(&u.meter))
                        .and_then(|c| c.recent.get(&u.hour_ms));
                    let count = self.meter(&u.meter).map(|m| m.count).unwrap_or(false);
                    held.is_none_or(|h| *h < if count { u.count as f64 } else { u.sum })
                })
                .collect()
        };
        let hour_turned = recent_from != self.inner.recent_from.load(Ordering::Relaxed);
        let mut rolled = Vec::new();
        let mut grown = Vec::new();
        {
            let mut tenants = self.inner.tenants.write().expect("entitlement state lock");
            for id in new_tenants {
                tenants.entry(id).or_default();
            }
            for b in &billing_rows {
                if let Some(id) = b.tenant.as_ref() {
                    let t = tenants.entry(id.clone()).or_default();
                    t.billing = billing(b);
                    if t.usage.values().any(|u| u.period_start != t.period(now).0) {
                        rolled.push(id.clone());
                    }
                }
            }
            for l in limit_rows {
                let t = tenants.entry(l.tenant).or_default();
                match l.limit {
                    Some(v) => t.limits.insert(l.meter, v),
                    None => t.limits.remove(&l.meter),
                };
            }
            for c in credits {
                let t = tenants.entry(c.tenant.clone()).or_default();
                t.credits.insert(c.meter.clone(), Credits::from(c));
            }
            if hour_turned {
                // Hours leaving the recent window join the base; a tenant
                // whose period moved on is read again below.
                for (id, t) in tenants.iter_mut() {
                    let (start, _) = t.period(now);
                    for u in t.usage.values_mut() {
                        let old: Vec<i64> = u.recent.range(..recent_from).map(|(h, _)| *h).collect();
                        for h in old {
                            u.base += u.recent.remove(&h).unwrap_or(0.0);
                        }
                    }
                    if t.usage.values().any(|u| u.period_start != start) {
                        rolled.push(id.clone());
                    }
                }
            }
            for u in hours {
                let key = (u.tenant.clone(), u.meter.clone());
                let t = tenants.entry(u.tenant.clone()).or_default();
                let period = t.period(now);
                if self.add_to(t, period, u, true) {
                    grown.push(key);
                }
            }
        }
        self.inner.recent_from.store(recent_from, Ordering::Relaxed);
        rolled.sort();
        rolled.dedup();
        for tenant in &rolled {
            self.reload_usage(tenant).await?;
        }
        if !rolled.is_empty() || !billing_rows.is_empty() || hour_turned {
            self.draw_closed_periods(now).await?;
        }
        if hour_turned || !rolled.is_empty() {
            self.notice_all();
        } else {
            // Other replicas' usage may have crossed a line.
            self.notice_due(&grown);
        }
        Ok(())
    }

    /// Reads one tenant's usage of its current period again (its period
    /// moved on, or its limits or credits changed).
    pub async fn reload_usage(&self, tenant: &str) -> Result<()> {
        let now = now_ms();
        let recent_from = self.inner.recent_from.load(Ordering::Relaxed).max((now / HOUR - RECENT_HOURS + 1) * HOUR);
        let period = {
            let tenants = self.inner.tenants.read().expect("entitlement state lock");
            tenants.get(tenant).map_or_else(|| calendar_month(now), |t| t.period(now))
        };
        let periods = HashMap::from([(tenant.to_owned(), period)]);
        let base = self.period_usage(&periods, recent_from).await?;
        let recent = self.inner.store.hourly_usage(Some(tenant), recent_from, i64::MAX).await?;
        let mut fresh = HashMap::from([(tenant.to_owned(), Tenant::default())]);
        for u in base {
            self.add(&mut fresh, &periods, u, false);
        }
        for u in recent {
            self.add(&mut fresh, &periods, u, true);
        }
        let usage = fresh.remove(tenant).map(|t| t.usage).unwrap_or_default();
        {
            let mut tenants = self.inner.tenants.write().expect("entitlement state lock");
            let t = tenants.entry(tenant.to_owned()).or_default();
            for (meter, mut u) in usage {
                if let Some(old) = t.usage.get(&meter).filter(|o| o.period_start == u.period_start) {
                    for (h, v) in &old.recent {
                        let e = u.recent.entry(*h).or_insert(0.0);
                        *e = e.max(*v);
                    }
                }
                t.usage.insert(meter, u);
            }
            t.usage.retain(|_, u| u.period_start == period.0);
        }
        Ok(())
    }

    /// Reads one tenant's limits, credits and status again after an API
    /// write, so the answer changes at once on this replica.
    pub async fn reload_tenant(&self, tenant: &str) -> Result<()> {
        let store = &self.inner.store;
        let limits = store.limits(Some(tenant), 0).await?;
        let credits = store.credit_balances(Some(tenant), 0).await?;
        let b = store.tenant_billing(tenant).await?;
        {
            let mut tenants = self.inner.tenants.write().expect("entitlement state lock");
            let t = tenants.entry(tenant.to_owned()).or_default();
            t.limits = limits.into_iter().filter_map(|l| Some((l.meter, l.limit?))).collect();
            t.credits = credits.into_iter().map(|c| (c.meter.clone(), Credits::from(c))).collect();
            if let Some(b) = &b {
                t.billing = billing(b);
            }
        }
        self.reload_usage(tenant).await?;
        let pairs: Vec<(String, String)> =
            self.inner.meters.iter().map(|m| (tenant.to_owned(), m.name.clone())).collect();
        self.notice_due(&pairs);
        Ok(())
    }

    /// Checks every (tenant, meter) with a limit or credits for notices due.
    fn notice_all(&self) {
        let pairs: Vec<(String, String)> = {
            let tenants = self.inner.tenants.read().expect("entitlement state lock");
            tenants
                .iter()
                .flat_map(|(id, t)| {
                    self.inner
                        .meters
                        .iter()
                        .filter(|m| t.limit(m).is_some() || t.credits.contains_key(&m.name))
                        .map(|m| (id.clone(), m.name.clone()))
                })
                .collect()
        };
        self.notice_due(&pairs);
    }

    /// Writes the credit draw of each tenant's previous period, once it is
    /// `DRAW_GRACE_MS` past its end: the usage beyond that period's
    /// allowance. One draw per period (a unique key), whichever replica
    /// writes it first; periods that ended before the first credit entry
    /// draw nothing.
    async fn draw_closed_periods(&self, now: i64) -> Result<()> {
        let mut due: Vec<(String, String, (i64, i64), Option<f64>)> = Vec::new();
        {
            let tenants = self.inner.tenants.read().expect("entitlement state lock");
            for (id, t) in tenants.iter() {
                for m in &self.inner.meters {
                    let Some(c) = t.credits.get(&m.name) else { continue };
                    let (start, _) = t.period(now);
                    let prev = match t.billing.prev_period {
                        Some(p) if p.1 <= start && t.billing.period.is_some_and(|cur| cur.0 <= now) => p,
                        _ if t.billing.period.is_some() => {
                            let (s, e) = t.period(now);
                            (s - (e - s), s)
                        }
                        _ => calendar_month(start - 1),
                    };
                    if prev.1 + DRAW_GRACE_MS > now || prev.1 <= c.first_ms || c.drawn.contains(&prev.0) {
                        continue;
                    }
                    due.push((id.clone(), m.name.clone(), prev, t.limit(m)));
                }
            }
        }
        for (tenant, meter, (start, end), limit) in due {
            let usage = self.inner.store.range_usage(Some(&tenant), start, end).await?;
            let count = self.meter(&meter).map(|m| m.count).unwrap_or(false);
            let used =
                usage.iter().find(|u| u.meter == meter).map_or(0.0, |u| if count { u.count as f64 } else { u.sum });
            let over = (used - limit.unwrap_or(0.0)).max(0.0);
            let draw = NewCredit {
                tenant: tenant.clone(),
                meter: meter.clone(),
                kind: CreditKind::Draw,
                amount: -over,
                period_start_ms: Some(start),
                request_id: None,
                reason: Some(format!(
                    "usage {used} beyond the allowance {} of the period ending {end}",
                    limit.unwrap_or(0.0)
                )),
                created_ms: now,
            };
            if self.inner.store.add_credit(&draw).await?.is_some() {
                tracing::info!(tenant, meter, drawn = over, "credits drawn for a closed period");
            }
            let mut tenants = self.inner.tenants.write().expect("entitlement state lock");
            if let Some(c) = tenants.get_mut(&tenant).and_then(|t| t.credits.get_mut(&meter))
                && !c.drawn.contains(&start)
            {
                c.drawn.push(start);
                c.balance -= over;
            }
        }
        Ok(())
    }
}

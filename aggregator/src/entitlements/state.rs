//! The entitlement state in memory and the answer computed from it: pure,
//! no I/O (the refresher in [`super::refresh`] fills it from the store, the
//! ledger's commits add to it).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tally_core::{Aggregation, MeterConfig};

/// Why an entitlement check says what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Ok,
    LimitReached,
    CreditsExhausted,
    SubscriptionInactive,
    UnknownTenant,
}

/// The answer to "may tenant T still use meter M right now?".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub tenant: String,
    pub meter: String,
    pub allowed: bool,
    pub reason: Reason,
    /// Usage this billing period.
    pub usage: f64,
    pub limit: Option<f64>,
    pub credits_remaining: Option<f64>,
    pub subscription_status: Option<String>,
    /// Milliseconds since the epoch.
    pub period_start_ms: i64,
    pub period_end_ms: i64,
}

/// A meter as entitlements see it.
#[derive(Debug, Clone)]
pub struct MeterInfo {
    pub name: String,
    /// `count` meters count records; `sum` meters add values.
    pub count: bool,
    pub default_limit: Option<f64>,
}

impl MeterInfo {
    /// The meters limits and credits can apply to (`sum`, `count`).
    pub fn from_config(meters: &[MeterConfig]) -> Vec<MeterInfo> {
        meters
            .iter()
            .filter(|m| m.limitable())
            .map(|m| MeterInfo {
                name: m.name.clone(),
                count: m.aggregation == Aggregation::Count,
                default_limit: m.limit,
            })
            .collect()
    }
}

/// A tenant's subscription as last heard from Stripe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Billing {
    pub status: Option<String>,
    pub period: Option<(i64, i64)>,
    pub prev_period: Option<(i64, i64)>,
    pub payment: Option<String>,
}

/// Credits of one tenant and meter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credits {
    /// The sum of every entry (top-ups, adjustments, draws of closed periods).
    pub balance: f64,
    /// What was ever added (names the "exhausted" notice: a top-up re-arms it).
    pub granted: f64,
    /// Periods already drawn.
    pub drawn: Vec<i64>,
    /// When the first entry was written (earlier periods draw nothing).
    pub first_ms: i64,
}

impl From<tally_store::CreditBalance> for Credits {
    fn from(c: tally_store::CreditBalance) -> Credits {
        Credits { balance: c.balance, granted: c.granted, drawn: c.drawn, first_ms: c.first_ms }
    }
}

/// Usage of one tenant and meter in its current period: hours before
/// `recent_from` added up in `base`, later ones kept per hour (refreshed
/// from the store, which other replicas write too).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub period_start: i64,
    pub base: f64,
    pub recent: BTreeMap<i64, f64>,
}

impl Usage {
    pub fn total(&self) -> f64 {
        self.base + self.recent.values().sum::<f64>()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tenant {
    pub billing: Billing,
    pub limits: HashMap<String, f64>,
    pub credits: HashMap<String, Credits>,
    pub usage: HashMap<String, Usage>,
}

const HOUR: i64 = 3_600_000;

/// The UTC calendar month holding `t`.
pub fn calendar_month(t: i64) -> (i64, i64) {
    use chrono::{Datelike, TimeZone, Utc};
    let d = Utc.timestamp_millis_opt(t).single().unwrap_or_default();
    let start = Utc.with_ymd_and_hms(d.year(), d.month(), 1, 0, 0, 0).single().unwrap_or_default();
    let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or_default();
    (start.timestamp_millis(), end.timestamp_millis())
}

impl Tenant {
    /// The billing period holding `now`: the subscription's current period,
    /// rolled forward by its own length when Stripe has not told of the next
    /// one yet; else the calendar month. Hour-aligned (usage is hourly).
    pub fn period(&self, now: i64) -> (i64, i64) {
        match self.billing.period {
            Some((start, end)) if end > start && start <= now => {
                let len = end - start;
                let n = if now >= end { (now - start) / len } else { 0 };
                let (s, e) = (start + n * len, end + n * len);
                (s / HOUR * HOUR, e / HOUR * HOUR)
            }
            _ => calendar_month(now),
        }
    }

    pub fn limit(&self, meter: &MeterInfo) -> Option<f64> {
        self.limits.get(&meter.name).copied().or(meter.default_limit)
    }

    /// Usage of `meter` in the period starting at `period_start`.
    pub fn usage(&self, meter: &str, period_start: i64) -> f64 {
        self.usage.get(meter).filter(|u| u.period_start == period_start).map_or(0.0, Usage::total)
    }

    /// Credits left: the balance less this period's use beyond the
    /// allowance (all of it without one). None without credits.
    pub fn credits_remaining(&self, meter: &MeterInfo, usage: f64) -> Option<f64> {
        let c = self.credits.get(&meter.name)?;
        let over = (usage - self.limit(meter).unwrap_or(0.0)).max(0.0);
        Some(c.balance - over)
    }
}

/// Computes the answer for a known tenant (`None`: unknown).
pub fn answer(tenant_id: &str, tenant: Option<&Tenant>, meter: &MeterInfo, deny: &[String], now: i64) -> Answer {
    let Some(t) = tenant else {
        let (start, end) = calendar_month(now);
        return Answer {
            tenant: tenant_id.to_owned(),
            meter: meter.name.clone(),
            allowed: false,
            reason: Reason::UnknownTenant,
            usage: 0.0,
            limit: meter.default_limit,
            credits_remaining: None,
            subscription_status: None,
            period_start_ms: start,
            period_end_ms: end,
        };
    };
    let (start, end) = t.period(now);
    let usage = t.usage(&meter.name, start);
    let limit = t.limit(meter);
    let credits = t.credits_remaining(meter, usage);
    let status = t.billing.status.clone();
    let reason = if status.as_ref().is_some_and(|s| deny.iter().any(|d| d == s)) {
        Reason::SubscriptionInactive
    } else {
        match (limit.is_some_and(|l| usage >= l), credits) {
            (_, Some(c)) if c <= 0.0 && (limit.is_none() || usage >= limit.unwrap_or(0.0)) => Reason::CreditsExhausted,
            (true, Some(_)) => Reason::Ok, // beyond the allowance, drawing credits
            (true, None) => Reason::LimitReached,
            _ => Reason::Ok,
        }
    };
    Answer {
        tenant: tenant_id.to_owned(),
        meter: meter.name.clone(),
        allowed: reason == Reason::Ok,
        reason,
        usage,
        limit,
        credits_remaining: credits,
        subscription_status: status,
        period_start_ms: start,
        period_end_ms: end,
    }
}

/// A usage notice due for an answer: limit warning, limit reached, credits
/// exhausted. The key names it once (per period, or per credit level).
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub key: String,
    pub event: &'static str,
}

/// The usage notices `a` calls for (the caller queues each key once).
pub fn due_notices(a: &Answer, warning_fraction: f64, granted: Option<f64>) -> Vec<Due> {
    let mut out = Vec::new();
    let base = format!("{}/{}/{}", a.tenant, a.meter, a.period_start_ms);
    if let Some(l) = a.limit.filter(|l| *l > 0.0) {
        if a.usage >= l * warning_fraction && warning_fraction < 1.0 {
            out.push(Due { key: format!("{base}/limit_warning"), event: "limit_warning" });
        }
        if a.usage >= l {
            out.push(Due { key: format!("{base}/limit_reached"), event: "limit_reached" });
        }
    }
    if let (Some(c), Some(g)) = (a.credits_remaining, granted)
        && c <= 0.0
    {
        out.push(Due {
            key: format!("{}/{}/credits/{g}/credits_exhausted", a.tenant, a.meter),
            event: "credits_exhausted",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000; // 2026-11-18

    fn meter(limit: Option<f64>) -> MeterInfo {
        MeterInfo { name: "tokens".into(), count: false, default_limit: limit }
    }

    fn tenant(usage: f64, credits: Option<f64>) -> Tenant {
        let mut t = Tenant::default();
        let (start, _) = t.period(NOW);
        t.usage.insert("tokens".into(), Usage { period_start: start, base: usage, recent: BTreeMap::new() });
        if let Some(c) = credits {
            t.credits.insert("tokens".into(), Credits { balance: c, granted: c, drawn: vec![], first_ms: 0 });
        }
        t
    }

    fn reason(t: &Tenant, m: &MeterInfo) -> Reason {
        answer("acme", Some(t), m, &["canceled".into()], NOW).reason
    }

    #[test]
    fn the_answer_flips_exactly_at_the_limit() {
        let m = meter(Some(1000.0));
        assert_eq!(reason(&tenant(999.0, None), &m), Reason::Ok);
        assert_eq!(reason(&tenant(1000.0, None), &m), Reason::LimitReached);
    }

    #[test]
    fn credits_cover_usage_beyond_the_allowance_until_spent() {
        let m = meter(Some(1000.0));
        assert_eq!(reason(&tenant(1200.0, Some(500.0)), &m), Reason::Ok);
        let a = answer("acme", Some(&tenant(1499.0, Some(500.0))), &m, &[], NOW);
        assert_eq!((a.reason, a.credits_remaining), (Reason::Ok, Some(1.0)));
        assert_eq!(reason(&tenant(1500.0, Some(500.0)), &m), Reason::CreditsExhausted);
        // Without an allowance every unit draws credits.
        let m = meter(None);
        assert_eq!(reason(&tenant(499.0, Some(500.0)), &m), Reason::Ok);
        assert_eq!(reason(&tenant(500.0, Some(500.0)), &m), Reason::CreditsExhausted);
        assert_eq!(reason(&tenant(1e12, None), &m), Reason::Ok);
    }

    #[test]
    fn a_denying_status_wins_and_unknown_tenants_are_refused() {
        let mut t = tenant(0.0, None);
        t.billing.status = Some("canceled".into());
        assert_eq!(reason(&t, &meter(None)), Reason::SubscriptionInactive);
        t.billing.status = Some("past_due".into());
        assert_eq!(reason(&t, &meter(None)), Reason::Ok);
        assert_eq!(answer("x", None, &meter(None), &[], NOW).reason, Reason::UnknownTenant);
    }

    #[test]
    fn a_subscription_period_rolls_forward_until_stripe_says_more() {
        let mut t = Tenant::default();
        let day = 24 * HOUR;
        t.billing.period = Some((NOW - 40 * day, NOW - 10 * day));
        assert_eq!(t.period(NOW), ((NOW - 10 * day) / HOUR * HOUR, (NOW + 20 * day) / HOUR * HOUR));
        t.billing.period = None;
        assert_eq!(t.period(NOW), calendar_month(NOW));
        let (s, e) = calendar_month(NOW);
        assert_eq!((s, e), (1_793_491_200_000, 1_796_083_200_000)); // 2026-11-01 .. 2026-12-01
    }

    #[test]
    fn notices_are_named_once_per_period_and_per_credit_level() {
        let m = meter(Some(1000.0));
        let a = answer("acme", Some(&tenant(800.0, None)), &m, &[], NOW);
        let due: Vec<&str> = due_notices(&a, 0.8, None).iter().map(|d| d.event).collect();
        assert_eq!(due, ["limit_warning"]);
        let a = answer("acme", Some(&tenant(1500.0, Some(500.0))), &m, &[], NOW);
        let due = due_notices(&a, 0.8, Some(500.0));
        assert_eq!(
            due.iter().map(|d| d.event).collect::<Vec<_>>(),
            ["limit_warning", "limit_reached", "credits_exhausted"]
        );
        assert!(due[2].key.ends_with("/credits/500/credits_exhausted"));
    }
}

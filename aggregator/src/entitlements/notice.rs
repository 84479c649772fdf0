//! Billing notices as alert notifications, so they go out through the
//! same outbox, receivers, signatures and retries as alerts.
//!
//! The body is the receivers' usual one (Alertmanager webhook v4,
//! PagerDuty, ...) of one firing alert named `tally_billing`, with labels
//! `tenant`, `meter` (absent for status changes) and `event` (one of
//! `limit_warning`, `limit_reached`, `credits_exhausted`,
//! `subscription_status`, `payment_failed`, `payment_action_required`), and
//! the numbers as annotations (`usage`, `limit`, `credits_remaining`,
//! `subscription_status`, `previous_status`, `period_end`) beside a
//! readable `summary`.

use std::collections::BTreeMap;

use tally_core::alert::{Notification, NotificationStatus, Severity, fingerprint};
use tally_store::{CustomerBilling, NewNotification};

use super::state::Answer;

/// The alert name of every billing notice.
pub const ALERTNAME: &str = "tally_billing";

/// Who billing notices go to and how they link back.
#[derive(Debug, Clone)]
pub struct NoticeTargets {
    pub receivers: Vec<String>,
    pub external_url: String,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

impl NoticeTargets {
    fn rows(&self, key: &str, n: Notification, now_ms: i64) -> Vec<NewNotification> {
        let payload = serde_json::to_string(&n).expect("a notification serializes");
        let fp = fingerprint(ALERTNAME, key);
        self.receivers
            .iter()
            .map(|r| NewNotification {
                receiver: r.clone(),
                fingerprint: fp.clone(),
                payload: payload.clone(),
                created_ms: now_ms,
            })
            .collect()
    }

    /// A usage notice (`limit_warning`, `limit_reached`, `credits_exhausted`).
    pub fn usage(&self, key: &str, event: &str, a: &Answer, now_ms: i64) -> Vec<NewNotification> {
        let what = match event {
            "limit_warning" => format!(
                "tenant {} used {} of its {} {} allowance this period ({:.0} %)",
                a.tenant,
                number(a.usage),
                number(a.limit.unwrap_or(0.0)),
                a.meter,
                100.0 * a.usage / a.limit.unwrap_or(1.0).max(f64::MIN_POSITIVE)
            ),
            "limit_reached" => format!(
                "tenant {} reached its {} allowance: {} of {}{}",
                a.tenant,
                a.meter,
                number(a.usage),
                number(a.limit.unwrap_or(0.0)),
                if a.credits_remaining.is_some_and(|c| c > 0.0) { "; now drawing credits" } else { "" }
            ),
            _ => format!(
                "tenant {} has used up its {} credits ({} used this period, {} remaining)",
                a.tenant,
                a.meter,
                number(a.usage),
                number(a.credits_remaining.unwrap_or(0.0))
            ),
        };
        let severity = if event == "limit_warning" { Severity::Warning } else { Severity::Critical };
        let mut annotations = BTreeMap::from([
            ("summary".to_owned(), what),
            ("usage".to_owned(), number(a.usage)),
            ("period_end".to_owned(), rfc3339(a.period_end_ms)),
            ("allowed".to_owned(), a.allowed.to_string()),
        ]);
        if let Some(l) = a.limit {
            annotations.insert("limit".into(), number(l));
        }
        if let Some(c) = a.credits_remaining {
            annotations.insert("credits_remaining".into(), number(c));
        }
        if let Some(s) = &a.subscription_status {
            annotations.insert("subscription_status".into(), s.clone());
        }
        let n =
            self.notification(&a.tenant, Some(&a.meter), event, severity, Some(a.usage), a.limit, annotations, now_ms);
        self.rows(key, n, now_ms)
    }

    /// A subscription status or payment change of a mapped customer: its
    /// event (`subscription_status`, `payment_failed`,
    /// `payment_action_required`) and outbox rows; nothing when nothing a
    /// user would act on changed.
    pub fn status(
        &self,
        before: Option<&CustomerBilling>,
        after: &CustomerBilling,
        now_ms: i64,
    ) -> Option<(&'static str, Vec<NewNotification>)> {
        let tenant = after.tenant.as_deref()?;
        let old_status = before.and_then(|b| b.status.clone());
        let old_payment = before.and_then(|b| b.payment_at_s);
        let (event, summary) = if after.status != old_status {
            let to = after.status.clone().unwrap_or_default();
            let from = old_status.clone().map_or("none".to_owned(), |s| s);
            ("subscription_status", format!("tenant {tenant}'s subscription is now {to} (was {from})"))
        } else if after.payment_at_s != old_payment {
            let p = match after.payment.as_deref()? {
                "payment_failed" => "payment_failed",
                "payment_action_required" => "payment_action_required",
                _ => return None,
            };
            (p, format!("tenant {tenant}: invoice {}", p.replace('_', " ")))
        } else {
            return None;
        };
        let severity = match after.status.as_deref() {
            Some("active" | "trialing") if event == "subscription_status" => Severity::Warning,
            _ => Severity::Critical,
        };
        let mut annotations = BTreeMap::from([("summary".to_owned(), summary)]);
        if let Some(s) = &after.status {
            annotations.insert("subscription_status".into(), s.clone());
        }
        if let Some(s) = old_status {
            annotations.insert("previous_status".into(), s);
        }
        if let Some(e) = after.period_end_ms {
            annotations.insert("period_end".into(), rfc3339(e));
        }
        if let Some(s) = &after.subscription_id {
            annotations.insert("subscription_id".into(), s.clone());
        }
        annotations.insert("stripe_customer_id".into(), after.customer_id.clone());
        let key = format!("{tenant}/status/{}/{}", after.status_at_s, after.payment_at_s.unwrap_or(0));
        let n = self.notification(tenant, None, event, severity, None, None, annotations, now_ms);
        Some((event, self.rows(&key, n, now_ms)))
    }

    #[allow(clippy::too_many_arguments)]
    fn notification(
        &self,
        tenant: &str,
        meter: Option<&str>,
        event: &str,
        severity: Severity,
        value: Option<f64>,
        threshold: Option<f64>,
        annotations: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Notification {
        let mut labels = BTreeMap::from([
            ("alertname".to_owned(), ALERTNAME.to_owned()),
            ("tenant".to_owned(), tenant.to_owned()),
            ("event".to_owned(), event.to_owned()),
            ("severity".to_owned(), severity.as_str().to_owned()),
        ]);
        let mut url = format!("{}/v1/tenants/{tenant}", self.external_url.trim_end_matches('/'));
        if let Some(m) = meter {
            labels.insert("meter".into(), m.to_owned());
            url = format!("{}/v1/entitlements?tenant={tenant}&meter={m}", self.external_url.trim_end_matches('/'));
        }
        Notification {
            status: NotificationStatus::Firing,
            rule: ALERTNAME.to_owned(),
            tenant: tenant.to_owned(),
            severity,
            value,
            threshold,
            fingerprint: fingerprint(ALERTNAME, &format!("{tenant}/{}/{event}", meter.unwrap_or(""))),
            labels,
            annotations,
            starts_at_ms: now_ms,
            ends_at_ms: None,
            generator_url: url,
            at_ms: now_ms,
        }
    }
}

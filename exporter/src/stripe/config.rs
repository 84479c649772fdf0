//! `[stripe]`, and the check at start that every synced tally meter has a
//! Stripe meter that fits it.

use std::time::Duration;

use serde::Deserialize;
use tally_core::{Aggregation, MeterConfig};

use super::{client::StripeMeter, plan::Shape};

/// Which Stripe API meter events go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `POST /v1/billing/meter_events`, one event per call: synchronous
    /// answers (duplicates, timestamps, values), test mode and sandboxes.
    V1,
}

/// `[stripe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// The variable holding the secret key (`sk_live_…`, `sk_test_…` or a
    /// restricted `rk_…` key with Billing meter access). The sync is on
    /// when it is set.
    pub api_key_env: String,
    /// Stripe's API (tests point it at a loopback stand-in).
    pub api_base: String,
    /// How often the sync looks for closed hours to push.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// How long after an hour ends its usage is pushed (late events).
    #[serde(with = "humantime_serde")]
    pub lag: Duration,
    /// How long after a period ends it is reconciled (Stripe's invoice
    /// finalisation grace, 1 h unless changed in the Stripe dashboard).
    #[serde(with = "humantime_serde")]
    pub close_grace: Duration,
    /// How long after a reconciliation finds drift Stripe is read again
    /// before the drift counts (summaries are eventually consistent).
    #[serde(with = "humantime_serde")]
    pub recheck_after: Duration,
    /// Calls per second, all kinds together. The default stays under test
    /// mode's 25/s; live mode allows 1,000 meter-event calls/s.
    pub max_requests_per_second: f64,
    /// Calls in flight at once (never two for one customer and meter).
    pub max_in_flight: usize,
    /// Per call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub mode: Mode,
    /// Usage before this instant (RFC 3339) is never pushed: for usage
    /// billed by other means before tally took over.
    #[serde(default)]
    pub sync_from: Option<String>,
    /// The variable holding the webhook endpoint's signing secret
    /// (`whsec_…`); `POST /v1/stripe/webhook` answers 503 without it.
    pub webhook_secret_env: String,
    /// How far a webhook's signed timestamp may be from now.
    #[serde(with = "humantime_serde")]
    pub webhook_tolerance: Duration,
    /// The metadata key (on the subscription or the customer) naming the
    /// tenant: maps an unmapped customer on its first event.
    pub tenant_metadata_key: String,
}

impl StripeConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_requests_per_second > 0.0 && self.max_requests_per_second <= 10_000.0) {
            return Err("stripe.max_requests_per_second: must be > 0 and at most 10000".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1024 {
            return Err("stripe.max_in_flight: must be 1 to 1024".into());
        }
        if self.sync_interval.is_zero() || self.timeout.is_zero() {
            return Err("stripe.sync_interval and stripe.timeout must be greater than 0".into());
        }
        if self.webhook_tolerance.is_zero() || self.webhook_tolerance > Duration::from_secs(3600) {
            return Err("stripe.webhook_tolerance: must be > 0 and at most 1h".into());
        }
        if self.tenant_metadata_key.is_empty() || self.tenant_metadata_key.len() > 40 {
            return Err("stripe.tenant_metadata_key: 1 to 40 characters (Stripe's metadata key limit)".into());
        }
        reqwest::Url::parse(&self.api_base).map_err(|e| format!("stripe.api_base: {e}"))?;
        self.sync_from_ms()?;
        Ok(())
    }

    pub fn sync_from_ms(&self) -> Result<Option<i64>, String> {
        self.sync_from
            .as_deref()
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| format!("stripe.sync_from: {s:?} is not an RFC 3339 time: {e}"))
            })
            .transpose()
    }
}

/// A tally meter as synced: its Stripe meter, and how pushes fit it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncMeter {
    pub name: String,
    pub aggregation: Aggregation,
    pub scale: f64,
    pub shape: Shape,
    pub event_name: String,
    pub meter_id: String,
    /// The payload keys the Stripe meter reads the customer and the value
    /// from.
    pub customer_key: String,
    pub value_key: String,
}

/// Matches every synced tally meter with its Stripe meter and checks that
/// they fit: the event name exists and is active, `sum` and `count` meters
/// go to `sum` formulas (raw, hourly or daily), the others to `last`.
/// The error lists every problem.
pub fn resolve_meters(meters: &[MeterConfig], stripe: &[StripeMeter]) -> Result<Vec<SyncMeter>, String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for m in meters.iter().filter(|m| m.stripe) {
        let event = m.stripe_event_name();
        let at = format!("meters.{}", m.name);
        let Some(s) = stripe.iter().find(|s| s.event_name == event) else {
            problems.push(format!(
                "{at}: no Stripe meter has event_name {event:?} (create it, set stripe_event_name, or set stripe = false)"
            ));
            continue;
        };
        if s.status != "active" {
            problems.push(format!("{at}: Stripe meter {} ({event:?}) is {}; reactivate it", s.id, s.status));
            continue;
        }
        let wants_sum = matches!(m.aggregation, Aggregation::Sum | Aggregation::Count);
        let shape = match (wants_sum, s.formula.as_str(), s.event_time_window.as_deref()) {
            (true, "sum", None) => Shape::Deltas,
            (true, "sum", Some("hour")) => Shape::Totals { day: false },
            (true, "sum", Some("day")) => Shape::Totals { day: true },
            (false, "last", _) => Shape::PeriodValue,
            (true, f, _) => {
                problems.push(format!(
                    "{at}: tally pushes this {} meter's hourly totals, so Stripe meter {} ({event:?}) needs the \
                     formula sum, not {f}",
                    m.aggregation.as_str(),
                    s.id
                ));
                continue;
            }
            (false, f, _) => {
                problems.push(format!(
                    "{at}: tally pushes this {} meter's period-to-date value, so Stripe meter {} ({event:?}) needs \
                     the formula last, not {f}",
                    m.aggregation.as_str(),
                    s.id
                ));
                continue;
            }
        };
        out.push(SyncMeter {
            name: m.name.clone(),
            aggregation: m.aggregation,
            scale: m.stripe_scale(),
            shape,
            event_name: event.to_owned(),
            meter_id: s.id.clone(),
            customer_key: s.customer_key.clone(),
            value_key: s.value_key.clone(),
        });
    }
    if problems.is_empty() { Ok(out) } else { Err(problems.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(name: &str, aggregation: &str, extra: serde_json::Value) -> MeterConfig {
        let mut v = serde_json::json!({"name": name, "aggregation": aggregation, "event_type": "x", "value": "$.v"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn stripe(event: &str, formula: &str, window: Option<&str>, status: &str) -> StripeMeter {
        StripeMeter {
            id: format!("mtr_{event}"),
            event_name: event.into(),
            formula: formula.into(),
            event_time_window: window.map(Into::into),
            status: status.into(),
            customer_key: "stripe_customer_id".into(),
            value_key: "value".into(),
        }
    }

    #[test]
    fn meters_must_fit_their_stripe_meters() {
        let stripe = [
            stripe("tokens", "sum", None, "active"),
            stripe("storage", "sum", Some("hour"), "active"),
            stripe("seats", "last", None, "active"),
            stripe("calls", "count", None, "active"),
            stripe("old", "sum", None, "inactive"),
        ];
        let ok = [
            meter("tokens", "sum", serde_json::json!({})),
            meter("storage_gb", "sum", serde_json::json!({"stripe_event_name": "storage", "stripe_scale": 1000.0})),
            meter("seats", "max", serde_json::json!({})),
            meter("internal", "sum", serde_json::json!({"stripe": false})),
        ];
        let resolved = resolve_meters(&ok, &stripe).unwrap();
        let shapes: Vec<_> = resolved.iter().map(|m| (m.name.as_str(), m.shape, m.scale)).collect();
        assert_eq!(
            shapes,
            [
                ("tokens", Shape::Deltas, 1.0),
                ("storage_gb", Shape::Totals { day: false }, 1000.0),
                ("seats", Shape::PeriodValue, 1.0)
            ]
        );
        let bad = [
            meter("calls", "count", serde_json::json!({})),
            meter("missing", "sum", serde_json::json!({})),
            meter("old", "sum", serde_json::json!({})),
            meter("tokens", "last", serde_json::json!({})),
        ];
        let e = resolve_meters(&bad, &stripe).unwrap_err();
        assert!(e.contains("meters.calls") && e.contains("formula sum, not count"), "{e}");
        assert!(e.contains("meters.missing: no Stripe meter"), "{e}");
        assert!(e.contains("meters.old") && e.contains("inactive"), "{e}");
        assert!(e.contains("meters.tokens") && e.contains("formula last, not sum"), "{e}");
    }
}

//! Per-tenant usage from the billing ledger as App Insights custom metrics.
//!
//! `tally.usage`: one item per (tenant, meter, 1-minute window), `value` =
//! units in the window, `count` = events, `min`/`max` per event, `time` =
//! window start. The source is the ledger, never raw telemetry, so App
//! Insights shows billing truth without becoming it. `window_id` is a
//! stable hash of tenant, meter and window start: a window sent twice (a
//! retry after a lost answer, a spool replay) has the same id, and KQL can
//! drop the copy (`summarize arg_max(timestamp, *) by window_id`).
//!
//! `tally.usage.period_total`: the ledger's period-to-date total of a
//! tenant and meter, so a Workbook can set `sum(tally.usage)` over the
//! period against it (the latest total wins: `arg_max(timestamp, …)`).
//!
//! Neither carries `sampleRate`: usage is never sampled. Both are tagged
//! `ai.cloud.role = tally` and `ai.user.accountId = tenant`. Keep "custom
//! metrics with dimensions" (Azure Monitor Metrics) off for these names, or
//! `tenant.id` there would hit its 10-dimension / 50k-series limits; the
//! Logs copy (`customMetrics` / `AppMetrics`) has no such cap.

use tally_core::{TenantId, canonical};

use super::{
    envelope::{Data, Envelope, MetricData, MetricPoint, Properties, Tags, insert_property},
    mapping::SDK_VERSION,
    props::TENANT_PROPERTY,
};

pub const USAGE_METRIC: &str = "tally.usage";
pub const PERIOD_TOTAL_METRIC: &str = "tally.usage.period_total";
/// `ai.cloud.role` of usage items: tally itself reports them.
pub const USAGE_ROLE: &str = "tally";

const MINUTE_MS: i64 = 60_000;

/// One tenant's use of one meter in one 1-minute window, from the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageWindow {
    pub tenant: TenantId,
    pub meter: String,
    pub unit: String,
    /// Window start, Unix ms (the start of a UTC minute).
    pub window_start_ms: i64,
    /// Units used in the window (the ledger's sum).
    pub units: f64,
    /// Usage events in the window.
    pub events: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The tenant's plan, when known (a property for slicing).
    pub plan: Option<String>,
}

/// A tenant's period-to-date total of one meter, from the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodTotal {
    pub tenant: TenantId,
    pub meter: String,
    pub unit: String,
    /// `YYYY-MM` (UTC calendar month, as `stripe reconcile --period`).
    pub billing_period: String,
    pub total: f64,
    /// When the total was read, Unix ms (the item's time).
    pub as_of_ms: i64,
}

/// The `tally.usage` item of one window.
pub fn usage_envelope(ikey: &str, w: &UsageWindow) -> Envelope {
    let start = w.window_start_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let mut properties = common_properties(&w.tenant, &w.meter, &w.unit, billing_period(start));
    insert_property(&mut properties, "window_id".to_owned(), window_id(&w.tenant, &w.meter, start));
    if let Some(plan) = &w.plan {
        insert_property(&mut properties, "plan".to_owned(), plan.clone());
    }
    let point = MetricPoint {
        ns: None,
        name: USAGE_METRIC.to_owned(),
        value: w.units,
        count: Some(w.events),
        min: w.min,
        max: w.max,
    };
    envelope(ikey, &w.tenant, start, point, properties)
}

/// The `tally.usage.period_total` item of one tenant and meter.
pub fn period_total_envelope(ikey: &str, t: &PeriodTotal) -> Envelope {
    let properties = common_properties(&t.tenant, &t.meter, &t.unit, t.billing_period.clone());
    let point = MetricPoint {
        ns: None,
        name: PERIOD_TOTAL_METRIC.to_owned(),
        value: t.total,
        count: Some(1),
        min: None,
        max: None,
    };
    envelope(ikey, &t.tenant, t.as_of_ms, point, properties)
}

/// Stable id of a (tenant, meter, window start): 32 hex digits of SHA-256
/// over their canonical encoding (tally_core::canonical), so it survives
/// restarts, replicas and upgrades.
pub fn window_id(tenant: &TenantId, meter: &str, window_start_ms: i64) -> String {
    let mut enc = Vec::new();
    canonical::string(&mut enc, "tally.usage.window/v1");
    canonical::string(&mut enc, tenant.as_str());
    canonical::string(&mut enc, meter);
    enc.extend_from_slice(&window_start_ms.to_le_bytes());
    canonical::sha256_hex(&enc, 32)
}

/// `YYYY-MM` of a Unix ms time, in UTC.
pub fn billing_period(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m").to_string()
}

fn common_properties(tenant: &TenantId, meter: &str, unit: &str, period: String) -> Properties {
    let mut p = Properties::new();
    insert_property(&mut p, TENANT_PROPERTY.to_owned(), tenant.as_str().to_owned());
    insert_property(&mut p, "meter".to_owned(), meter.to_owned());
    insert_property(&mut p, "unit".to_owned(), unit.to_owned());
    insert_property(&mut p, "billing_period".to_owned(), period);
    insert_property(&mut p, "source".to_owned(), "ledger".to_owned());
    p
}

fn envelope(ikey: &str, tenant: &TenantId, time_ms: i64, point: MetricPoint, properties: Properties) -> Envelope {
    let tags = Tags::from([
        ("ai.cloud.role", USAGE_ROLE.to_owned()),
        ("ai.user.accountId", tenant.as_str().to_owned()),
        ("ai.internal.sdkVersion", SDK_VERSION.to_owned()),
    ]);
    let data = Data::MetricData(MetricData { ver: 2, metrics: vec![point], properties });
    let mut e = Envelope::new(ikey.into(), time_ms.saturating_mul(1_000_000), tags.into(), data);
    e.enforce_limits();
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use serde_json::json;

    use super::*;

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn a_window_becomes_one_metric_item() {
        let w = UsageWindow {
            tenant: acme(),
            meter: "ai-tokens".into(),
            unit: "token".into(),
            window_start_ms: 1_767_268_800_000 + 42_000, // mid-minute: floored
            units: 1270.0,
            events: 3,
            min: Some(120.0),
            max: Some(900.0),
            plan: Some("pro".into()),
        };
        let e = usage_envelope("ik", &w);
        let id = window_id(&acme(), "ai-tokens", 1_767_268_800_000);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({
                "name": "Microsoft.ApplicationInsights.Metric",
                "time": "2026-01-01T12:00:00.000000Z",
                "iKey": "ik",
                "tags": {"ai.cloud.role": "tally", "ai.user.accountId": "acme", "ai.internal.sdkVersion": SDK_VERSION},
                "data": {"baseType": "MetricData", "baseData": {
                    "ver": 2,
                    "metrics": [{"name": "tally.usage", "value": 1270.0, "count": 3, "min": 120.0, "max": 900.0}],
                    "properties": {"tenant.id": "acme", "meter": "ai-tokens", "unit": "token",
                        "billing_period": "2026-01", "window_id": id, "source": "ledger", "plan": "pro"}
                }}
            })
        );
        assert!(e.sample_rate.is_none());
    }

    #[test]
    fn window_ids_are_stable_and_distinct() {
        let a = window_id(&acme(), "api-calls", 60_000);
        assert_eq!(a.len(), 32);
        // Pinned (computed independently: SHA-256 of the canonical
        // encoding): the id is stored in App Insights and compared across
        // versions, so it must never change.
        assert_eq!(a, "e284b8e73a55b88edcfb86d55a96e5b7");
        assert_ne!(a, window_id(&acme(), "api-calls", 120_000));
        assert_ne!(a, window_id(&acme(), "api-call", 60_000));
        assert_ne!(
            window_id(&TenantId::parse("a").unwrap(), "bc", 0),
            window_id(&TenantId::parse("ab").unwrap(), "c", 0)
        );
    }

    #[test]
    fn period_totals_and_periods() {
        let t = PeriodTotal {
            tenant: acme(),
            meter: "api-calls".into(),
            unit: "call".into(),
            billing_period: "2026-01".into(),
            total: 12345.0,
            as_of_ms: 1_769_903_999_000, // 2026-01-31T23:59:59Z
        };
        let e = period_total_envelope("ik", &t);
        let Data::MetricData(m) = &e.data else { panic!("metric") };
        assert_eq!(m.metrics[0].name, "tally.usage.period_total");
        assert_eq!(m.metrics[0].value, 12345.0);
        assert_eq!(m.properties["billing_period"], "2026-01");
        assert_eq!(m.properties["source"], "ledger");
        assert!(!m.properties.contains_key("window_id"));
        assert_eq!(e.time.to_rfc3339(), "2026-01-31T23:59:59.000000Z");
        assert_eq!(billing_period(1_769_904_000_000), "2026-02");
        assert_eq!(billing_period(0), "1970-01");
    }
}

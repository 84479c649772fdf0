//! A rule's value per group, from the stored rollups (merged across
//! replicas: every replica writes its windows, partial ones included, and
//! the store merges them) or, for usage rules, from the ledger's totals.

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone, Utc};
use tally_core::{
    MeterConfig, TenantId,
    rollup::{ALL, HISTOGRAM_SCALE, RollupKind, RollupRow, RollupValues},
};
use tally_store::{KeyMatch, RecentFilter, Store};

use super::rule::{AlertMetric, GaugeAggregate, Rule};

/// A group's labels and value (`None`: no value, e.g. too few requests).
pub type Observed = BTreeMap<String, (BTreeMap<String, String>, Option<f64>)>;

/// Span kinds whose spans are a service's requests (as in the per-service
/// and per-tenant series).
const ENTRY_KINDS: [&str; 2] = ["server", "consumer"];

/// The canonical JSON of a group's labels (its key in the store).
pub fn group_key(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_default()
}

/// The rows in `[from, to)` a rule reads: the last `window` of windows,
/// the current (partly written) one included.
fn range(rule: &Rule, width_ms: i64, now_ms: i64) -> (i64, i64) {
    let current = now_ms.div_euclid(width_ms) * width_ms;
    let windows = (rule.window_ms + width_ms - 1) / width_ms;
    (current - (windows - 1) * width_ms, current + width_ms)
}

pub async fn observe(
    store: &Store,
    rule: &Rule,
    meters: &[MeterConfig],
    width_ms: i64,
    now_ms: i64,
) -> tally_store::Result<Observed> {
    match &rule.metric {
        AlertMetric::Usage { meter } => return usage(store, rule, meters, meter, now_ms).await,
        AlertMetric::StripeSyncFailed => {
            let rows = store.failed_pushes_by_tenant().await?;
            return Ok(per_tenant(rule, rows.into_iter().map(|(t, n)| (t, n as f64))));
        }
        AlertMetric::StripeDrift => return Ok(per_tenant(rule, store.drift_by_tenant().await?.into_iter())),
        _ => {}
    }
    let scope = &rule.config.scope;
    let tenant = scope.tenant.as_deref().map(TenantId::parse).transpose().ok().flatten();
    if scope.tenant.is_some() && tenant.is_none() {
        return Ok(Observed::new()); // a tenant id that cannot exist has no data
    }
    let grouped = |label: &str| rule.config.group_by.iter().any(|g| g == label);
    let (from_ms, to_ms) = range(rule, width_ms, now_ms);
    let mut f = RecentFilter {
        kind: RollupKind::Span,
        tenant: tenant.as_ref(),
        service: KeyMatch::Any,
        name: KeyMatch::Any,
        detail: KeyMatch::Any,
        from_ms,
        to_ms,
    };
    let mut entry_kinds_only = false;
    match &rule.metric {
        m if m.is_span() => {
            // The finest series the rule needs: an operation's, a service's
            // entry spans, or the tenant's.
            if grouped("operation") || scope.operation.is_some() {
                f.service = exact(scope.service.as_deref()).or_not(ALL);
                f.name = exact(scope.operation.as_deref()).or_not(ALL);
                entry_kinds_only = true;
            } else if grouped("service") || scope.service.is_some() {
                f.service = exact(scope.service.as_deref()).or_not(ALL);
                f.name = KeyMatch::Is(ALL);
                f.detail = KeyMatch::Is(ALL);
            } else {
                f.service = KeyMatch::Is(ALL);
                f.name = KeyMatch::Is(ALL);
                f.detail = KeyMatch::Is(ALL);
            }
        }
        AlertMetric::LogCount { severity } => {
            f.kind = RollupKind::Log;
            f.service = exact(scope.service.as_deref());
            f.name = KeyMatch::Is(severity);
        }
        AlertMetric::Gauge { name, .. } => {
            f.kind = RollupKind::Gauge;
            f.service = exact(scope.service.as_deref());
            f.name = KeyMatch::Is(name);
        }
        _ => unreachable!("usage rules are handled above"),
    }
    let rows = store.recent_rollups(&f).await?;
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<&RollupValues>> = BTreeMap::new();
    for row in &rows {
        if entry_kinds_only && !ENTRY_KINDS.contains(&&*row.key.detail) {
            continue;
        }
        let Some(labels) = labels_of(rule, row) else { continue };
        groups.entry(labels).or_default().push(&row.values);
    }
    let seconds = (now_ms - from_ms).max(1) as f64 / 1000.0;
    Ok(groups
        .into_iter()
        .map(|(labels, values)| {
            let v = RollupValues::merged(values);
            (group_key(&labels), (labels, value_of(rule, &v, seconds)))
        })
        .collect())
}

/// An exact match if a value was given, else any.
fn exact(v: Option<&str>) -> KeyMatch<'_> {
    v.map_or(KeyMatch::Any, KeyMatch::Is)
}

trait OrNot<'a> {
    /// An exact match if one was given, else "anything but `v`".
    fn or_not(self, v: &'a str) -> KeyMatch<'a>;
}

impl<'a> OrNot<'a> for KeyMatch<'a> {
    fn or_not(self, v: &'a str) -> KeyMatch<'a> {
        match self {
            KeyMatch::Any => KeyMatch::IsNot(v),
            m => m,
        }
    }
}

/// A row's group labels, or `None` if the rule's attribute scope excludes it.
fn labels_of(rule: &Rule, row: &RollupRow) -> Option<BTreeMap<String, String>> {
    let gauge = matches!(rule.metric, AlertMetric::Gauge { .. });
    // Gauge series carry their point attributes as JSON in `detail`.
    let attributes: BTreeMap<String, serde_json::Value> =
        if gauge { serde_json::from_str(&row.key.detail).unwrap_or_default() } else { BTreeMap::new() };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (k, want) in &rule.config.scope.attributes {
        if attributes.get(k).map(text).as_deref() != Some(want.as_str()) {
            return None;
        }
    }
    let labels = rule
        .config
        .group_by
        .iter()
        .map(|g| {
            let v = match g.as_str() {
                "tenant" => row.key.tenant.as_str().to_owned(),
                "service" => row.key.service.to_string(),
                "operation" => row.key.name.to_string(),
                attr => attributes.get(attr).map(text).unwrap_or_default(),
            };
            (g.clone(), v)
        })
        .collect();
    Some(labels)
}

fn value_of(rule: &Rule, v: &RollupValues, seconds: f64) -> Option<f64> {
    let enough = v.count > 0 && v.count >= rule.config.min_requests;
    match &rule.metric {
        AlertMetric::ErrorRate => enough.then(|| v.errors as f64 / v.count as f64),
        AlertMetric::RequestRate => Some(v.count as f64 / seconds),
        AlertMetric::Latency { quantile } => {
            if !enough {
                return None;
            }
            // Durations are recorded in µs.
            v.hist.as_ref().and_then(|h| h.value_at_quantile(*quantile)).map(|us| us as f64 / HISTOGRAM_SCALE)
        }
        AlertMetric::Gauge { aggregate, .. } => match aggregate {
            GaugeAggregate::Max => v.max_opt(),
            GaugeAggregate::Min => v.min_opt(),
            GaugeAggregate::Last => v.last_opt(),
            GaugeAggregate::Avg => (v.count > 0).then(|| v.sum / v.count as f64),
        },
        AlertMetric::LogCount { .. } => Some(v.count as f64),
        AlertMetric::Usage { .. } | AlertMetric::StripeSyncFailed | AlertMetric::StripeDrift => None,
    }
}

/// The calendar month (UTC) holding `now_ms`: the billing period.
fn month_of(now_ms: i64) -> (i64, i64) {
    let now = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_default();
    let start = now.date_naive().with_day(1).unwrap_or_default();
    let end = start.checked_add_months(chrono::Months::new(1)).unwrap_or(start);
    let ms = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_millis();
    (ms(start), ms(end))
}

async fn usage(
    store: &Store,
    rule: &Rule,
    meters: &[MeterConfig],
    meter: &str,
    now_ms: i64,
) -> tally_store::Result<Observed> {
    let Some(m) = meters.iter().find(|m| m.name == meter) else { return Ok(Observed::new()) };
    let (from_ms, to_ms) = month_of(now_ms);
    let mut out = Observed::new();
    for (tenant, total) in store.usage_totals(meter, m.aggregation, from_ms, to_ms).await? {
        if rule.config.scope.tenant.as_ref().is_some_and(|t| *t != tenant) {
            continue;
        }
        let Some(quota) = rule.quota(&tenant) else { continue };
        let labels = BTreeMap::from([("tenant".to_owned(), tenant)]);
        out.insert(group_key(&labels), (labels, Some(total / quota)));
    }
    Ok(out)
}

/// One group per tenant with a value (of the rule's tenant, if scoped).
fn per_tenant(rule: &Rule, values: impl Iterator<Item = (String, f64)>) -> Observed {
    let scope = rule.config.scope.tenant.as_deref();
    values
        .filter(|(t, _)| scope.is_none_or(|s| s == t))
        .map(|(tenant, v)| {
            let labels = BTreeMap::from([("tenant".to_owned(), tenant)]);
            (group_key(&labels), (labels, Some(v)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bounds() {
        // 2026-11-22T08:00:00Z
        let (from, to) = month_of(1_795_334_400_000);
        assert_eq!(from, 1_793_491_200_000); // 2026-11-01
        assert_eq!(to, 1_796_083_200_000); // 2026-12-01
    }
}

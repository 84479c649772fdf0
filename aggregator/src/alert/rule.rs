//! `[alerting]` and `[[alerts]]`: how rounds run, and the rules, checked
//! and compiled once at start.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer};
use tally_core::{MeterConfig, alert::Severity};

/// `[alerting]`: evaluation and delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// How often the rules are evaluated (by one replica).
    #[serde(with = "humantime_serde")]
    pub eval_interval: Duration,
    /// A firing alert is sent again this often (a rule may override it).
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Waits between delivery attempts of one notification; after the last
    /// one fails, the notification is given up (and counted).
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Longest wait for a receiver's answer.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// tally's address as on-call sees it, for `externalURL` and
    /// `generatorURL`; empty: `http://<api.addr>`.
    #[serde(deserialize_with = "tally_core::lenient::string")]
    pub external_url: String,
    /// Resolved instances stay listed (`GET /v1/alerts`) this long.
    #[serde(with = "humantime_serde")]
    pub resolved_retention: Duration,
    /// Delivered and failed notifications are kept this long.
    #[serde(with = "humantime_serde")]
    pub outbox_retention: Duration,
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let texts: Vec<String> = tally_core::lenient::string_list(d)?;
    texts
        .iter()
        .map(|t| humantime::parse_duration(t).map_err(|e| serde::de::Error::custom(format!("{t:?}: {e}"))))
        .collect()
}

/// How a gauge's points over the window become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GaugeAggregate {
    Max,
    Min,
    Avg,
    Last,
}

/// `scope`: which data a rule looks at.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub tenant: Option<String>,
    pub service: Option<String>,
    pub operation: Option<String>,
    /// Gauge point attributes that must match.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One `[[alerts]]` rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    pub name: String,
    /// `error_rate`, `request_rate`, `p50_latency_ms` … `p99_latency_ms`,
    /// `gauge:<metric>`, `log_count:<severity>` or `usage:<meter>`.
    pub metric: String,
    /// For `gauge:` rules: max (default), min, avg or last over the window.
    pub aggregate: Option<GaugeAggregate>,
    #[serde(default)]
    pub scope: Scope,
    /// Labels making one instance each; must include `tenant`.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// How long a firing alert keeps firing after the condition stops holding.
    #[serde(default, with = "humantime_serde")]
    pub keep_firing_for: Duration,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// Fire when the value is below the thresholds (low is bad).
    #[serde(default)]
    pub below: bool,
    /// Fewer requests in the window: no value (error rate and latency rules).
    #[serde(default)]
    pub min_requests: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Templates: `{{tenant}}`, `{{value}}`, `{{threshold}}`, `{{severity}}`,
    /// `{{rule}}` and the group's labels.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub receivers: Vec<String>,
    /// `usage:` rules: the quota of tenants not in `quotas`.
    pub quota: Option<f64>,
    /// `usage:` rules: per-tenant quotas.
    #[serde(default)]
    pub quotas: BTreeMap<String, f64>,
    #[serde(default, with = "humantime_serde")]
    pub repeat_interval: Option<Duration>,
}

fn default_group_by() -> Vec<String> {
    vec!["tenant".into()]
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}

/// What a rule measures.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertMetric {
    ErrorRate,
    /// Requests per second.
    RequestRate,
    /// A latency percentile in ms, from the histograms merged over the window.
    Latency {
        quantile: f64,
    },
    Gauge {
        name: String,
        aggregate: GaugeAggregate,
    },
    LogCount {
        severity: &'static str,
    },
    /// Billing-period-to-date usage as a fraction of the tenant's quota.
    Usage {
        meter: String,
    },
    /// The tenant's Stripe pushes Stripe refused (or that stayed
    /// unconfirmed): they need a hand.
    StripeSyncFailed,
    /// The tenant's drift between ledger and Stripe confirmed by
    /// reconciliation, in Stripe units (summed over meters and periods).
    StripeDrift,
}

impl AlertMetric {
    fn parse(metric: &str) -> Result<AlertMetric, String> {
        if let Some(name) = metric.strip_prefix("gauge:") {
            return nonempty(name, metric)
                .map(|name| AlertMetric::Gauge { name: name.into(), aggregate: GaugeAggregate::Max });
        }
        if let Some(severity) = metric.strip_prefix("log_count:") {
            return log_severity(severity).map(|severity| AlertMetric::LogCount { severity }).ok_or_else(|| {
                format!("{metric:?}: severity must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL, UNSPECIFIED")
            });
        }
        if let Some(meter) = metric.strip_prefix("usage:") {
            return nonempty(meter, metric).map(|meter| AlertMetric::Usage { meter: meter.into() });
        }
        Ok(match metric {
            "error_rate" => AlertMetric::ErrorRate,
            "request_rate" => AlertMetric::RequestRate,
            "p50_latency_ms" => AlertMetric::Latency { quantile: 0.50 },
            "p90_latency_ms" => AlertMetric::Latency { quantile: 0.90 },
            "p95_latency_ms" => AlertMetric::Latency { quantile: 0.95 },
            "p99_latency_ms" => AlertMetric::Latency { quantile: 0.99 },
            "stripe_sync_failed" => AlertMetric::StripeSyncFailed,
            "stripe_drift" => AlertMetric::StripeDrift,
            _ => {
                return Err(format!(
                    "{metric:?}: expected error_rate, request_rate, p50|p90|p95|p99_latency_ms, gauge:<metric>, \
                     log_count:<severity>, usage:<meter>, stripe_sync_failed or stripe_drift"
                ));
            }
        })
    }

    /// Span data (requests, errors, latency).
    pub fn is_span(&self) -> bool {
        matches!(self, AlertMetric::ErrorRate | AlertMetric::RequestRate | AlertMetric::Latency { .. })
    }

    /// The value of a group the round found no data for: none for most
    /// (the condition does not hold); zero for counts and rates.
    pub fn when_missing(&self) -> Option<f64> {
        matches!(self, AlertMetric::RequestRate | AlertMetric::LogCount { .. }).then_some(0.0)
    }
}

fn nonempty<'a>(name: &'a str, metric: &str) -> Result<&'a str, String> {
    if name.is_empty() { Err(format!("{metric:?}: a name must follow the colon")) } else { Ok(name) }
}

/// A severity as the rollups store it (see the rollup extraction).
fn log_severity(s: &str) -> Option<&'static str> {
    const NAMES: [&str; 7] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "UNSPECIFIED"];
    let upper = s.to_ascii_uppercase();
    match upper.as_str() {
        "WARNING" => Some("WARN"),
        "CRITICAL" => Some("FATAL"),
        u => NAMES.into_iter().find(|n| *n == u),
    }
}

/// A checked rule, with durations in ms.
#[derive(Debug, Clone)]
pub struct Rule {
    pub config: AlertRuleConfig,
    pub metric: AlertMetric,
    pub window_ms: i64,
    pub for_ms: i64,
    pub keep_ms: i64,
    pub repeat_ms: i64,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn threshold(&self, severity: Severity) -> Option<f64> {
        match severity {
            Severity::Warning => self.config.warning,
            Severity::Critical => self.config.critical,
        }
    }

    /// The worst threshold `value` crosses. Strictly beyond, except usage
    /// quotas, which fire on reaching them (100 % of the quota is exhausted).
    pub fn level(&self, value: Option<f64>) -> Option<Severity> {
        let v = value?;
        let inclusive = matches!(self.metric, AlertMetric::Usage { .. });
        let beyond = |t: f64| match (self.config.below, inclusive) {
            (false, false) => v > t,
            (false, true) => v >= t,
            (true, false) => v < t,
            (true, true) => v <= t,
        };
        [Severity::Critical, Severity::Warning].into_iter().find(|&s| self.threshold(s).is_some_and(beyond))
    }

    /// A tenant's quota (`usage:` rules).
    pub fn quota(&self, tenant: &str) -> Option<f64> {
        self.config.quotas.get(tenant).copied().or(self.config.quota)
    }
}

/// What rules are checked against.
pub struct RuleContext<'a> {
    /// `rollups.window`.
    pub rollup_window: Duration,
    pub meters: &'a [MeterConfig],
    pub receivers: &'a [&'a str],
    pub default_repeat: Duration,
}

const RESERVED_LABELS: [&str; 3] = ["alertname", "severity", "tenant"];

/// Checks every rule; the error names the rule and the field.
pub fn compile_rules(rules: &[AlertRuleConfig], ctx: &RuleContext<'_>) -> Result<Vec<Rule>, String> {
    let mut out: Vec<Rule> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let at = if r.name.is_empty() { format!("alerts[{i}]") } else { format!("alerts[{}]", r.name) };
        let rule = compile(r, ctx).map_err(|e| format!("{at}.{e}"))?;
        if out.iter().any(|o| o.name() == r.name) {
            return Err(format!("{at}.name: another rule has this name"));
        }
        out.push(rule);
    }
    Ok(out)
}

fn compile(r: &AlertRuleConfig, ctx: &RuleContext<'_>) -> Result<Rule, String> {
    if r.name.is_empty() || r.name.len() > 200 || r.name.chars().any(char::is_control) {
        return Err("name: must be 1–200 characters, no control characters".into());
    }
    let mut metric = AlertMetric::parse(&r.metric).map_err(|e| format!("metric: {e}"))?;
    match (&mut metric, r.aggregate) {
        (AlertMetric::Gauge { aggregate, .. }, Some(a)) => *aggregate = a,
        (_, Some(_)) => return Err("aggregate: only for gauge: rules".into()),
        _ => {}
    }
    if let AlertMetric::Usage { meter } = &metric {
        if !ctx.meters.iter().any(|m| &m.name == meter) {
            return Err(format!("metric: no meter named {meter:?} in [[meters]]"));
        }
        if r.quota.is_none() && r.quotas.is_empty() {
            return Err("quota: usage rules need a quota (and/or per-tenant quotas)".into());
        }
        if r.quota.into_iter().chain(r.quotas.values().copied()).any(|q| !(q > 0.0 && q.is_finite())) {
            return Err("quota: quotas must be positive numbers".into());
        }
    } else if r.quota.is_some() || !r.quotas.is_empty() {
        return Err("quota: only for usage: rules".into());
    }
    match (r.warning, r.critical) {
        (None, None) => return Err("warning: a rule needs a warning and/or a critical threshold".into()),
        (Some(w), Some(c)) if (!r.below && c < w) || (r.below && c > w) => {
            return Err(format!(
                "critical: {c} must be {} the warning threshold {w}",
                if r.below { "at or below" } else { "at or above" }
            ));
        }
        _ => {}
    }
    if r.warning.into_iter().chain(r.critical).any(|t| !t.is_finite()) {
        return Err("warning: thresholds must be finite numbers".into());
    }
    if !r.group_by.iter().any(|g| g == "tenant") {
        return Err("group_by: must include \"tenant\" (alerts are per tenant)".into());
    }
    for g in &r.group_by {
        let ok = match &metric {
            m if m.is_span() => ["tenant", "service", "operation"].contains(&g.as_str()),
            AlertMetric::LogCount { .. } => ["tenant", "service"].contains(&g.as_str()),
            AlertMetric::Usage { .. } | AlertMetric::StripeSyncFailed | AlertMetric::StripeDrift => g == "tenant",
            _ => !g.is_empty(), // gauges: tenant, service or a point attribute
        };
        if !ok {
            return Err(format!("group_by: {g:?} does not apply to metric {:?}", r.metric));
        }
    }
    if r.scope.operation.is_some() && !metric.is_span() {
        return Err("scope.operation: only for request, error and latency rules".into());
    }
    if !r.scope.attributes.is_empty() && !matches!(metric, AlertMetric::Gauge { .. }) {
        return Err("scope.attributes: only for gauge: rules".into());
    }
    let billing =
        matches!(metric, AlertMetric::Usage { .. } | AlertMetric::StripeSyncFailed | AlertMetric::StripeDrift);
    if r.scope.service.is_some() && billing {
        return Err(format!("scope.service: {} has no service", r.metric));
    }
    let width = ctx.rollup_window;
    if !billing && r.window < width {
        return Err(format!(
            "window: {} is shorter than rollups.window ({})",
            humantime::format_duration(r.window),
            humantime::format_duration(width)
        ));
    }
    if let Some(l) = r.labels.keys().find(|l| RESERVED_LABELS.contains(&l.as_str()) || r.group_by.contains(l)) {
        return Err(format!("labels: {l:?} is set by tally"));
    }
    if r.receivers.is_empty() {
        tracing::warn!(rule = %r.name, "alert rule has no receivers: it is evaluated and listed, never sent");
    }
    if let Some(name) = r.receivers.iter().find(|n| !ctx.receivers.contains(&n.as_str())) {
        return Err(format!("receivers: no receiver named {name:?} in [[receivers]]"));
    }
    let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
    Ok(Rule {
        config: r.clone(),
        metric,
        window_ms: ms(r.window),
        for_ms: ms(r.for_),
        keep_ms: ms(r.keep_firing_for),
        repeat_ms: ms(r.repeat_interval.unwrap_or(ctx.default_repeat)).max(1),
    })
}

/// Replaces `{{name}}` (spaces allowed inside the braces) by `vars[name]`;
/// unknown names are left as written, so a typo shows.
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[open..open + 2 + close + 2]),
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A value for people: integers as such, fractions to 4 significant digits.
pub fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if digits == 0 { s } else { s.trim_end_matches('0').trim_end_matches('.').to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_fields: &str) -> Result<Rule, String> {
        let r: AlertRuleConfig = toml_like(toml_fields);
        let ctx = RuleContext {
            rollup_window: Duration::from_secs(60),
            meters: &[],
            receivers: &["oncall"],
            default_repeat: Duration::from_secs(4 * 3600),
        };
        compile(&r, &ctx)
    }

    fn toml_like(json: &str) -> AlertRuleConfig {
        serde_json::from_str(json).expect("rule json")
    }

    #[test]
    fn levels_follow_thresholds_and_direction() {
        let r = rule(r#"{"name":"e","metric":"error_rate","warning":0.01,"critical":0.05}"#).unwrap();
        assert_eq!(r.level(Some(0.005)), None);
        assert_eq!(r.level(Some(0.01)), None, "strictly above");
        assert_eq!(r.level(Some(0.02)), Some(Severity::Warning));
        assert_eq!(r.level(Some(0.2)), Some(Severity::Critical));
        assert_eq!(r.level(None), None);
        let low = rule(r#"{"name":"l","metric":"request_rate","warning":10,"critical":1,"below":true}"#).unwrap();
        assert_eq!(
            (low.level(Some(20.0)), low.level(Some(5.0)), low.level(Some(0.0))),
            (None, Some(Severity::Warning), Some(Severity::Critical))
        );
    }

    #[test]
    fn bad_rules_name_the_field() {
        let err = |j: &str| rule(j).unwrap_err();
        assert!(err(r#"{"name":"x","metric":"latency","warning":1}"#).starts_with("metric:"));
        assert!(err(r#"{"name":"x","metric":"error_rate"}"#).starts_with("warning:"));
        assert!(err(r#"{"name":"x","metric":"error_rate","warning":0.5,"critical":0.1}"#).starts_with("critical:"));
        assert!(
            err(r#"{"name":"x","metric":"error_rate","warning":1,"group_by":["service"]}"#).starts_with("group_by:")
        );
        assert!(err(r#"{"name":"x","metric":"error_rate","warning":1,"window":"10s"}"#).starts_with("window:"));
        assert!(
            err(r#"{"name":"x","metric":"error_rate","warning":1,"receivers":["pager"]}"#).starts_with("receivers:")
        );
        assert!(err(r#"{"name":"x","metric":"usage:tokens","warning":1,"quota":5}"#).starts_with("metric:"));
        assert!(err(r#"{"name":"x","metric":"log_count:LOUD","warning":1}"#).starts_with("metric:"));
        assert!(
            err(r#"{"name":"x","metric":"error_rate","warning":1,"labels":{"tenant":"a"}}"#).starts_with("labels:")
        );
        let g = rule(r#"{"name":"q","metric":"gauge:queue.depth","aggregate":"last","warning":50,"group_by":["tenant","queue"]}"#)
            .unwrap();
        assert_eq!(g.metric, AlertMetric::Gauge { name: "queue.depth".into(), aggregate: GaugeAggregate::Last });
    }

    #[test]
    fn templates_and_values() {
        let vars = BTreeMap::from([("tenant", "acme".to_owned()), ("value", "0.05".to_owned())]);
        assert_eq!(render("{{tenant}}: {{ value }} {{nope}} {{", &vars), "acme: 0.05 {{nope}} {{");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.052631), "0.05263");
        assert_eq!(format_value(2150.25), "2150");
        assert_eq!(format_value(12.3456), "12.35");
    }
}

//! Alert instances and the notifications they cause: shared by the
//! evaluator (aggregator), the store and the senders (exporter).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How bad: rules have a warning and/or a critical threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 2] = [Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where an instance stands. Inactive instances are not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Nothing to report (never stored: the row is deleted).
    Inactive,
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    Firing,
    /// Was firing; kept for a while so it can be looked up.
    Resolved,
}

impl AlertState {
    /// The states that are stored and reported.
    pub const ALL: [AlertState; 3] = [AlertState::Pending, AlertState::Firing, AlertState::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertState> {
        AlertState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One alert instance: a rule applied to one group (by default, a tenant).
/// The `*_since_ms` / `*_last_ms` pairs track each threshold separately, so
/// `for` and `keep_firing_for` apply to warning and critical alike.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertInstance {
    pub rule: String,
    /// The group's labels as canonical JSON, e.g. `{"tenant":"acme"}`.
    pub group_key: String,
    pub tenant: String,
    pub fingerprint: String,
    pub state: AlertState,
    pub severity: Option<Severity>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// When the instance entered its state (or, firing, its severity).
    pub since_ms: i64,
    /// When it began firing (Alertmanager's `startsAt`).
    pub started_ms: Option<i64>,
    pub warning_since_ms: Option<i64>,
    pub critical_since_ms: Option<i64>,
    pub warning_last_ms: Option<i64>,
    pub critical_last_ms: Option<i64>,
    pub last_notified_ms: Option<i64>,
    pub updated_ms: i64,
}

impl AlertInstance {
    /// A rule's instance for a group, before anything happened to it.
    pub fn inactive(rule: &str, group_key: &str, tenant: &str, now_ms: i64) -> AlertInstance {
        AlertInstance {
            rule: rule.to_owned(),
            group_key: group_key.to_owned(),
            tenant: tenant.to_owned(),
            fingerprint: fingerprint(rule, group_key),
            state: AlertState::Inactive,
            severity: None,
            value: None,
            threshold: None,
            since_ms: now_ms,
            started_ms: None,
            warning_since_ms: None,
            critical_since_ms: None,
            warning_last_ms: None,
            critical_last_ms: None,
            last_notified_ms: None,
            updated_ms: now_ms,
        }
    }

    /// The group's labels.
    pub fn group(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.group_key).unwrap_or_default()
    }
}

/// A stable id for (rule, group), the same across severities and restarts:
/// Alertmanager's `fingerprint`, PagerDuty's `dedup_key`. FNV-1a 64 over
/// the rule name and the canonical group, as 16 hex digits.
pub fn fingerprint(rule: &str, group_key: &str) -> String {
    let bytes: Vec<u8> = rule.bytes().chain([0u8]).chain(group_key.bytes()).collect();
    format!("{:016x}", crate::canonical::fnv1a64(&bytes))
}

/// What a receiver is told, stored as JSON in the outbox when the state
/// changes; each receiver type renders it into its own body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub status: NotificationStatus,
    pub rule: String,
    pub tenant: String,
    pub severity: Severity,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// `alertname`, `severity`, `tenant`, the group's and the rule's labels.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub fingerprint: String,
    pub starts_at_ms: i64,
    /// Set when resolved.
    pub ends_at_ms: Option<i64>,
    pub generator_url: String,
    /// When the evaluation that caused it ran.
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    Firing,
    Resolved,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let a = fingerprint("HighErrorRate", r#"{"tenant":"acme"}"#);
        assert_eq!(a, fingerprint("HighErrorRate", r#"{"tenant":"acme"}"#));
        assert_eq!(a.len(), 16);
        assert_ne!(a, fingerprint("HighErrorRate", r#"{"tenant":"beta"}"#));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(fingerprint("ab", "c"), fingerprint("a", "bc"));
    }
}

//! Alert evaluation: every `alerting.eval_interval`, one replica reads
//! each rule's value per group from the stored rollups (or the usage
//! ledger), moves every instance's state machine, and commits the changes
//! and the notifications they cause in one transaction (the outbox). A
//! sender (tally-exporter) delivers the outbox.
//!
//! The current window counts: the rollup stage writes what open windows
//! gathered every `rollups.partial_flush_interval` (15 s by default), so a
//! round sees data at most that old plus the writer's latency.

mod observe;
mod rule;
mod state;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use tally_core::{
    MeterConfig,
    alert::{AlertInstance, AlertState, Notification, NotificationStatus},
    metric_names, now_ms,
};
use tally_store::{NewNotification, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use observe::group_key;
pub use rule::{
    AlertMetric, AlertRuleConfig, AlertingConfig, GaugeAggregate, Rule, RuleContext, Scope, compile_rules,
    format_value, render,
};
pub use state::{Timing, advance};

/// What one committed round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub notifications: usize,
    /// Instances by state after the round.
    pub pending: usize,
    pub firing: usize,
    pub resolved: usize,
    /// Rules that could not be evaluated (their instances were left as they were).
    pub failed_rules: usize,
}

/// Evaluates the alert rules every `alerting.eval_interval` on one replica:
/// reads the rollups and usage they watch, moves each instance through
/// pending → firing → resolved, and commits the changes with the
/// notifications they cause to the outbox in one transaction.
pub struct AlertEngine {
    store: Store,
    rules: Vec<Rule>,
    config: AlertingConfig,
    meters: Arc<Vec<MeterConfig>>,
    width_ms: i64,
    external_url: String,
    /// Woken after a round wrote notifications.
    sent: Arc<Notify>,
}

impl AlertEngine {
    pub fn new(
        store: Store,
        rules: Vec<Rule>,
        config: AlertingConfig,
        meters: Arc<Vec<MeterConfig>>,
        rollup_window: Duration,
        external_url: String,
    ) -> AlertEngine {
        AlertEngine {
            store,
            rules,
            config,
            meters,
            width_ms: rollup_window.as_millis().max(1) as i64,
            external_url: external_url.trim_end_matches('/').to_owned(),
            sent: Arc::new(Notify::new()),
        }
    }

    /// Notified whenever a round has added notifications to the outbox.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.sent.clone()
    }

    /// Rounds every `eval_interval` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.eval_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let started = Instant::now();
            match self.round(now_ms()).await {
                Ok(Some(report)) => {
                    metrics::histogram!(metric_names::ALERT_EVAL_DURATION).record(started.elapsed().as_secs_f64());
                    for (state, n) in
                        [("pending", report.pending), ("firing", report.firing), ("resolved", report.resolved)]
                    {
                        metrics::gauge!(metric_names::ALERTS, "state" => state).set(n as f64);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "alert round failed; next round retries");
                    continue;
                }
            }
            // Without rules one round suffices: it removed the instances of
            // rules no longer configured; nothing more can change.
            if self.rules.is_empty() {
                return;
            }
        }
    }

    /// One round at `now_ms`. `None`: another replica ran one moments ago
    /// (or committed first), so this one wrote nothing.
    #[tracing::instrument(name = "alert round", skip_all)]
    pub async fn round(&self, now_ms: i64) -> tally_store::Result<Option<RoundReport>> {
        let (last_eval_ms, stored) = self.store.alert_round_state().await?;
        let half = (self.config.eval_interval.as_millis() / 2) as i64;
        if last_eval_ms > 0 && now_ms - last_eval_ms < half {
            return Ok(None);
        }
        let mut by_rule: HashMap<String, BTreeMap<String, AlertInstance>> = HashMap::new();
        for i in stored {
            by_rule.entry(i.rule.clone()).or_default().insert(i.group_key.clone(), i);
        }
        let mut report = RoundReport::default();
        let (mut upserts, mut deletes, mut outbox) = (Vec::new(), Vec::new(), Vec::new());
        for rule in &self.rules {
            let mut existing = by_rule.remove(rule.name()).unwrap_or_default();
            let observed = match observe::observe(&self.store, rule, &self.meters, self.width_ms, now_ms).await {
                Ok(o) => o,
                Err(e) => {
                    // Its instances stay as they are until a round succeeds.
                    report.failed_rules += 1;
                    metrics::counter!(metric_names::ALERT_EVAL_ERRORS, "rule" => rule.name().to_owned()).increment(1);
                    tracing::warn!(rule = rule.name(), error = %e, "alert rule not evaluated");
                    continue;
                }
            };
            let mut keys: Vec<String> = observed.keys().chain(existing.keys()).cloned().collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (labels, value) = match observed.get(&key) {
                    Some((labels, value)) => (labels.clone(), *value),
                    None => {
                        (existing.get(&key).map(AlertInstance::group).unwrap_or_default(), rule.metric.when_missing())
                    }
                };
                let stored = existing.remove(&key);
                let tenant = labels.get("tenant").map_or("", String::as_str);
                let mut inst =
                    stored.clone().unwrap_or_else(|| AlertInstance::inactive(rule.name(), &key, tenant, now_ms));
                let timing = Timing { for_ms: rule.for_ms, keep_ms: rule.keep_ms, repeat_ms: rule.repeat_ms };
                let level = rule.level(value);
                let notify = advance(&mut inst, level, value, |s| rule.threshold(s), timing, now_ms);
                let retention = self.config.resolved_retention.as_millis() as i64;
                if inst.state == AlertState::Resolved && notify.is_none() && now_ms - inst.since_ms >= retention {
                    inst.state = AlertState::Inactive;
                }
                if let Some(status) = notify {
                    for receiver in &rule.config.receivers {
                        outbox.push(self.notification(rule, &inst, &labels, status, receiver, now_ms));
                    }
                }
                match inst.state {
                    AlertState::Inactive => {
                        if stored.is_some() {
                            deletes.push((inst.rule, inst.group_key));
                        }
                        continue;
                    }
                    AlertState::Pending => report.pending += 1,
                    AlertState::Firing => report.firing += 1,
                    AlertState::Resolved => report.resolved += 1,
                }
                if stored.as_ref() != Some(&inst) {
                    inst.updated_ms = now_ms;
                    upserts.push(inst);
                }
            }
        }
        // Instances of rules no longer configured go (without a page).
        for (_, instances) in by_rule {
            deletes.extend(instances.into_values().map(|i| (i.rule, i.group_key)));
        }
        report.notifications = outbox.len();
        if !self.store.commit_alert_round(last_eval_ms, now_ms, &upserts, &deletes, &outbox).await? {
            return Ok(None);
        }
        if !outbox.is_empty() {
            self.sent.notify_one();
        }
        let keep = self.config.outbox_retention.as_millis() as i64;
        if let Err(e) = self.store.prune_alert_outbox(now_ms - keep).await {
            tracing::warn!(error = %e, "pruning the alert outbox failed");
        }
        Ok(Some(report))
    }

    /// The outbox row telling `receiver` about `inst`.
    fn notification(
        &self,
        rule: &Rule,
        inst: &AlertInstance,
        group: &BTreeMap<String, String>,
        status: NotificationStatus,
        receiver: &str,
        now_ms: i64,
    ) -> NewNotification {
        let severity = inst.severity.unwrap_or(tally_core::alert::Severity::Warning);
        let mut labels = rule.config.labels.clone();
        labels.extend(group.clone());
        labels.insert("alertname".into(), rule.name().to_owned());
        labels.insert("severity".into(), severity.as_str().to_owned());
        let shown = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), format_value);
        let mut vars: BTreeMap<&str, String> = group.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        vars.insert("rule", rule.name().to_owned());
        vars.insert("metric", rule.config.metric.clone());
        vars.insert("severity", severity.as_str().to_owned());
        vars.insert("value", shown(inst.value));
        vars.insert("threshold", shown(inst.threshold));
        vars.insert("status", status.as_str().to_owned());
        let mut annotations: BTreeMap<String, String> =
            rule.config.annotations.iter().map(|(k, t)| (k.clone(), render(t, &vars))).collect();
        annotations.entry("summary".into()).or_insert_with(|| {
            render(
                "{{rule}}: {{metric}} is {{value}} for tenant {{tenant}} ({{severity}} threshold {{threshold}})",
                &vars,
            )
        });
        let n = Notification {
            status,
            rule: rule.name().to_owned(),
            tenant: inst.tenant.clone(),
            severity,
            value: inst.value,
            threshold: inst.threshold,
            labels,
            annotations,
            fingerprint: inst.fingerprint.clone(),
            starts_at_ms: inst.started_ms.unwrap_or(now_ms),
            ends_at_ms: (status == NotificationStatus::Resolved).then_some(now_ms),
            generator_url: format!("{}/v1/alerts?tenant={}", self.external_url, inst.tenant),
            at_ms: now_ms,
        };
        NewNotification {
            receiver: receiver.to_owned(),
            fingerprint: inst.fingerprint.clone(),
            payload: serde_json::to_string(&n).unwrap_or_default(),
            created_ms: now_ms,
        }
    }
}

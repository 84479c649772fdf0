//! The [`Mapper`]: OTLP spans, logs and metrics of one tenant → envelopes.
//!
//! It follows Microsoft's Python exporter (1.0.0b58, described in
//! tests/data/appinsights/README.md) where that is sane, so that tally's
//! items sit next to ones from Microsoft's SDKs in the same tables; where
//! that exporter has bugs tally deliberately differs — the list is in this
//! folder's README.md, and the golden test (`golden_tests.rs`) checks both
//! the agreement and every difference against a capture of the real thing.
//!
//! Every item carries its tenant twice: `properties["tenant.id"]` (for KQL
//! on customDimensions) and the tag `ai.user.accountId` (App Insights' own
//! "account" of a multi-tenant app). Resource attributes set the role tags
//! only; they are not copied into each item's properties.
//!
//! The spans and logs halves are stateless; metrics keep a bounded table of
//! cumulative series (see `series.rs`) to send deltas.

use std::sync::Arc;

use tally_core::{
    TenantId,
    otlp::{
        common::v1::KeyValue, logs::v1::ResourceLogs, metrics::v1::ResourceMetrics, resource::v1::Resource,
        trace::v1::ResourceSpans,
    },
};

use super::{
    envelope::{Data, Envelope, TagSet, Tags, limit_tags},
    props::{self, TENANT_PROPERTY},
    series::SeriesTable,
};

/// `ai.internal.sdkVersion` on everything tally sends.
pub const SDK_VERSION: &str = concat!("tally:", env!("CARGO_PKG_VERSION"));

/// How the mapper behaves. Build with [`MapperConfig::new`] and adjust.
#[derive(Debug, Clone, PartialEq)]
pub struct MapperConfig {
    /// The iKey written into every envelope.
    pub instrumentation_key: String,
    /// Most cumulative metric series remembered for delta conversion; the
    /// least recently updated is forgotten first.
    pub max_series: usize,
    /// A cumulative series tally has no state for counts its whole value
    /// only if it started at or after this time (Unix ns); otherwise its
    /// first point is a baseline. Set it to the process start so a restart
    /// of tally does not send every counter's lifetime total again.
    pub count_series_started_after_ns: u64,
    /// Span events other than `exception` become Message items (as in
    /// Python's exporter); off drops them (they can be noisy, e.g. gRPC).
    pub span_events_as_messages: bool,
    /// Percent of traces the caller keeps (see [`super::keep_trace`]); set
    /// as `sampleRate` on span, span-event and in-trace log items. `None`
    /// (or 100) means no sampling.
    pub sample_rate: Option<f64>,
}

impl MapperConfig {
    pub fn new(instrumentation_key: impl Into<String>) -> MapperConfig {
        MapperConfig {
            instrumentation_key: instrumentation_key.into(),
            max_series: 20_000,
            count_series_started_after_ns: 0,
            span_events_as_messages: true,
            sample_rate: None,
        }
    }
}

pub struct Mapper {
    pub(crate) config: MapperConfig,
    pub(crate) series: SeriesTable,
    ikey: Arc<str>,
}

/// What every item of one resource shares: iKey, tenant, resource tags.
pub(crate) struct Ctx<'a> {
    pub ikey: Arc<str>,
    pub tenant: &'a TenantId,
    pub tags: Arc<Tags>,
    pub sample_rate: Option<f64>,
    pub span_events: bool,
}

impl Ctx<'_> {
    /// An envelope with the shared tags, the tenant property and limits
    /// applied, appended to `out`.
    pub fn push(&self, out: &mut Vec<Envelope>, time_ns: u64, own_tags: Tags, mut data: Data, sampled: bool) {
        let tags = TagSet { shared: self.tags.clone(), own: own_tags };
        data.properties_mut().insert(TENANT_PROPERTY.to_owned(), self.tenant.as_str().to_owned());
        let mut e = Envelope::new(self.ikey.clone(), i64::try_from(time_ns).unwrap_or(i64::MAX), tags, data);
        if sampled {
            e.sample_rate = self.sample_rate;
        }
        e.enforce_limits();
        out.push(e);
    }
}

impl Mapper {
    pub fn new(config: MapperConfig) -> Mapper {
        let series = SeriesTable::new(config.max_series, config.count_series_started_after_ns);
        let ikey = config.instrumentation_key.as_str().into();
        Mapper { config, series, ikey }
    }

    /// Changes the sampling percent for items mapped from now on.
    pub fn set_sample_rate(&mut self, percent: Option<f64>) {
        self.config.sample_rate = percent;
    }

    /// Cumulative series currently remembered.
    pub fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Spans → Request / RemoteDependency items, each followed by its
    /// events' Exception / Message items.
    pub fn spans(&mut self, tenant: &TenantId, rs: &ResourceSpans, out: &mut Vec<Envelope>) {
        let ctx = self.ctx(tenant, rs.resource.as_ref());
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                super::spans::span(&ctx, span, out);
            }
        }
    }

    /// Log records → Message / Exception / Event items.
    pub fn logs(&mut self, tenant: &TenantId, rl: &ResourceLogs, out: &mut Vec<Envelope>) {
        let ctx = self.ctx(tenant, rl.resource.as_ref());
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref().map(|s| s.name.as_str()).unwrap_or_default();
            for record in &sl.log_records {
                super::logs::record(&ctx, scope, record, out);
            }
        }
    }

    /// Metric points → Metric items, one per point; cumulative monotonic
    /// sums and cumulative histograms become deltas first.
    pub fn metrics(&mut self, tenant: &TenantId, rm: &ResourceMetrics, out: &mut Vec<Envelope>) {
        let ctx = self.ctx(tenant, rm.resource.as_ref());
        let resource_attrs = rm.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                super::metrics::metric(&ctx, &mut self.series, resource_attrs, sm.scope.as_ref(), metric, out);
            }
        }
    }
}

impl Mapper {
    fn ctx<'a>(&self, tenant: &'a TenantId, resource: Option<&Resource>) -> Ctx<'a> {
        let mut tags = resource_tags(tenant, resource.map(|r| r.attributes.as_slice()).unwrap_or_default());
        limit_tags(&mut tags);
        Ctx {
            ikey: self.ikey.clone(),
            tenant,
            tags: Arc::new(tags),
            sample_rate: self.config.sample_rate.filter(|r| *r > 0.0 && *r < 100.0),
            span_events: self.config.span_events_as_messages,
        }
    }
}

/// Tags from the resource, as Python's `_populate_part_a_fields` sets them
/// (without the host-derived `ai.device.*` defaults: tally's host is not
/// the sender's), plus the tenant and tally's SDK version.
pub(crate) fn resource_tags(tenant: &TenantId, attrs: &[KeyValue]) -> Tags {
    let mut tags = Tags::new();
    if let Some(role) = cloud_role(attrs) {
        tags.insert("ai.cloud.role", role);
    }
    if let Some(instance) = props::first(attrs, &["k8s.pod.name", "service.instance.id", "host.name"]) {
        tags.insert("ai.cloud.roleInstance", instance.to_string());
        tags.insert("ai.internal.nodeName", instance.into_owned());
    }
    for (tag, attr) in [
        ("ai.application.ver", "service.version"),
        ("ai.device.id", "device.id"),
        ("ai.device.model", "device.model.name"),
        ("ai.device.oemName", "device.manufacturer"),
    ] {
        if let Some(v) = props::text(attrs, attr) {
            tags.insert(tag, v.into_owned());
        }
    }
    tags.insert("ai.internal.sdkVersion", SDK_VERSION.to_owned());
    tags.insert("ai.user.accountId", tenant.as_str().to_owned());
    tags
}

/// `{service.namespace}.{service.name}`, or the service name; a missing or
/// `unknown_service*` name yields to the first Kubernetes workload name.
fn cloud_role(attrs: &[KeyValue]) -> Option<String> {
    let name = props::text(attrs, "service.name");
    if name.as_deref().is_none_or(|n| n.starts_with("unknown_service")) {
        let k8s = props::first(
            attrs,
            &[
                "k8s.deployment.name",
                "k8s.replicaset.name",
                "k8s.statefulset.name",
                "k8s.job.name",
                "k8s.cronjob.name",
                "k8s.daemonset.name",
            ],
        );
        if let Some(k8s) = k8s {
            return Some(k8s.into_owned());
        }
    }
    let name = name?;
    Some(match props::text(attrs, "service.namespace") {
        Some(ns) => format!("{ns}.{name}"),
        None => name.into_owned(),
    })
}

/// Tags from user, session, client and synthetic-traffic attributes, shared
/// by spans and logs.
pub(crate) fn user_tags(attrs: &[KeyValue], tags: &mut Tags) {
    for (tag, attr) in
        [("ai.user.authUserId", "enduser.id"), ("ai.user.id", "enduser.pseudo.id"), ("ai.session.id", "session.id")]
    {
        if let Some(v) = props::text(attrs, attr) {
            tags.insert(tag, v.into_owned());
        }
    }
    let synthetic = props::text(attrs, "user_agent.synthetic.type").is_some_and(|t| t == "bot" || t == "test")
        || props::first(attrs, &["user_agent.original", "http.user_agent"]).is_some_and(|ua| ua.contains("AlwaysOn"));
    if synthetic {
        tags.insert("ai.operation.syntheticSource", "True".to_owned());
    }
}

/// `ai.location.ip` from the client address attributes.
pub(crate) fn location_tag(attrs: &[KeyValue], tags: &mut Tags) {
    if let Some(ip) = props::first(attrs, &["client.address", "http.client_ip", "net.peer.ip"]) {
        tags.insert("ai.location.ip", ip.into_owned());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use tally_core::otlp::common::v1::{AnyValue, any_value::Value};

    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    #[test]
    fn role_and_instance_follow_pythons_order() {
        let t = TenantId::parse("acme").unwrap();
        let tags = resource_tags(
            &t,
            &[
                kv("service.name", "checkout"),
                kv("service.namespace", "shop"),
                kv("host.name", "vm1"),
                kv("service.instance.id", "pod-1"),
            ],
        );
        assert_eq!(tags["ai.cloud.role"], "shop.checkout");
        assert_eq!(tags["ai.cloud.roleInstance"], "pod-1");
        assert_eq!(tags["ai.internal.nodeName"], "pod-1");
        assert_eq!(tags["ai.user.accountId"], "acme");
        assert_eq!(tags["ai.internal.sdkVersion"], SDK_VERSION);
        assert!(SDK_VERSION.starts_with("tally:"));

        let k8s = resource_tags(
            &t,
            &[
                kv("service.name", "unknown_service:python"),
                kv("k8s.deployment.name", "web"),
                kv("k8s.pod.name", "web-1"),
                kv("host.name", "n"),
            ],
        );
        assert_eq!(k8s["ai.cloud.role"], "web");
        assert_eq!(k8s["ai.cloud.roleInstance"], "web-1");
        let bare = resource_tags(&t, &[kv("host.name", "vm1")]);
        assert!(!bare.contains_key("ai.cloud.role"));
        assert_eq!(bare["ai.cloud.roleInstance"], "vm1");
    }

    #[test]
    fn synthetic_traffic_is_flagged() {
        let mut tags = Tags::new();
        user_tags(&[kv("user_agent.original", "AlwaysOn probe"), kv("enduser.id", "u")], &mut tags);
        assert_eq!(tags["ai.operation.syntheticSource"], "True");
        assert_eq!(tags["ai.user.authUserId"], "u");
    }
}

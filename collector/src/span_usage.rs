//! Usage from spans: meters with `span_attribute` (e.g.
//! `gen_ai.usage.output_tokens`) turn each span carrying that attribute into
//! one usage record, keyed by trace id + span id (+ meter), so an exporter
//! resending a batch is deduplicated by the ledger.
//!
//! Sampled data is not billed: a span of a trace sampled below 100 % (W3C
//! tracestate `ot=th:…`, or a `sampling.probability` / `SampleRate`
//! attribute) is skipped, unless its meter sets `scale_sampled`, which
//! divides the value by the sampling probability.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tally_core::{
    Aggregation, MeterConfig, TenantId, UsageRecord, metric_names,
    otlp::{
        common::v1::{KeyValue, any_value::Value as AnyValue},
        trace::v1::{ResourceSpans, Span},
    },
};

/// The span meters of the config.
#[derive(Debug, Clone, Default)]
pub struct SpanMeters {
    meters: Vec<Arc<MeterConfig>>,
}

pub const SOURCE: &str = "otlp/span";

impl SpanMeters {
    pub fn new(meters: &[MeterConfig]) -> SpanMeters {
        SpanMeters { meters: meters.iter().filter(|m| m.span_attribute.is_some()).cloned().map(Arc::new).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }

    /// Appends the usage records of `res`'s spans to `out`; returns how many
    /// metered spans were skipped as sampled.
    pub fn extract(&self, tenant: &TenantId, res: &ResourceSpans, out: &mut Vec<UsageRecord>) -> u64 {
        let resource_attrs: &[KeyValue] = res.resource.as_ref().map_or(&[], |r| &r.attributes);
        let mut sampled_out = 0;
        for span in res.scope_spans.iter().flat_map(|s| &s.spans) {
            for meter in &self.meters {
                if let Some(record) = self.record(meter, tenant, span, resource_attrs, &mut sampled_out) {
                    out.push(record);
                }
            }
        }
        if sampled_out > 0 {
            metrics::counter!(metric_names::USAGE_SKIPPED, "reason" => "sampled").increment(sampled_out);
        }
        sampled_out
    }

    fn record(
        &self,
        meter: &MeterConfig,
        tenant: &TenantId,
        span: &Span,
        resource_attrs: &[KeyValue],
        sampled_out: &mut u64,
    ) -> Option<UsageRecord> {
        let attribute = meter.span_attribute.as_deref()?;
        let raw = number(attr(&span.attributes, attribute)?)?;
        if meter.span_name.as_deref().is_some_and(|n| n != span.name) {
            return None;
        }
        let lookup = |key: &str| attr(&span.attributes, key).or_else(|| attr(resource_attrs, key));
        if !meter.filter.iter().all(|(k, want)| lookup(k).and_then(text).is_some_and(|v| v == *want)) {
            return None;
        }
        let p = sampling_probability(span);
        let value = match (p < 1.0, meter.scale_sampled) {
            (false, _) => raw,
            (true, true) => raw / p,
            (true, false) => {
                *sampled_out += 1;
                return None;
            }
        };
        let value = if meter.aggregation == Aggregation::Count { 1.0 } else { value };
        if !value.is_finite() || value < 0.0 {
            return None;
        }
        let groups: BTreeMap<&str, Value> = meter
            .group_by
            .iter()
            .filter_map(|(dim, key)| Some((dim.as_str(), Value::String(text(lookup(key)?)?))))
            .collect();
        let group_key = serde_json::to_string(&groups).unwrap_or_else(|_| "{}".into());
        let event_time_ms = (span.end_time_unix_nano / 1_000_000) as i64;
        let content = format!("{value}|{event_time_ms}|{group_key}");
        Some(UsageRecord {
            tenant: tenant.clone(),
            source: SOURCE.to_owned(),
            event_id: format!("{}{}", hex::encode(&span.trace_id), hex::encode(&span.span_id)),
            meter: Arc::from(meter.name.as_str()),
            value,
            distinct_key: None,
            event_time_ms,
            group_key,
            content_hash: hex::encode(Sha256::digest(content.as_bytes())),
        })
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn number(v: &AnyValue) -> Option<f64> {
    match v {
        AnyValue::IntValue(i) => Some(*i as f64),
        AnyValue::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

fn text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The probability with which the span's trace was sampled (1.0: all).
pub fn sampling_probability(span: &Span) -> f64 {
    if let Some(p) = tracestate_probability(&span.trace_state) {
        return p;
    }
    match attr(&span.attributes, "sampling.probability").and_then(number) {
        Some(p) if p > 0.0 && p < 1.0 => return p,
        _ => {}
    }
    match attr(&span.attributes, "SampleRate").and_then(number) {
        Some(rate) if rate > 1.0 => 1.0 / rate,
        _ => 1.0,
    }
}

/// OpenTelemetry's consistent-probability threshold in W3C tracestate:
/// `ot=th:<hex>` with up to 14 hex digits (trailing zeros dropped); a span is
/// kept when its randomness ≥ threshold, so p = 1 − th / 2^56.
fn tracestate_probability(trace_state: &str) -> Option<f64> {
    let ot = trace_state.split(',').find_map(|member| member.trim().strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|kv| kv.strip_prefix("th:"))?;
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{th:0<14}");
    let threshold = u64::from_str_radix(&padded, 16).ok()?;
    Some(1.0 - threshold as f64 / (1u64 << 56) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracestate_thresholds() {
        assert_eq!(tracestate_probability("ot=th:0"), Some(1.0));
        assert_eq!(tracestate_probability("ot=th:8"), Some(0.5));
        assert_eq!(tracestate_probability("vendor=x,ot=rv:abcdef01234567;th:c"), Some(0.25));
        assert_eq!(tracestate_probability("vendor=x"), None);
        assert_eq!(tracestate_probability("ot=th:zz"), None);
    }
}

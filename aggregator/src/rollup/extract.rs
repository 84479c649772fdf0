//! What each OTLP item adds to the rollups: spans to request/error/latency
//! series, log records to severity counts, metric points to gauge and
//! histogram series. Reads only the fields a rollup needs.

use std::{borrow::Cow, collections::BTreeMap};

use tally_core::{
    TenantId, attributes,
    otlp::{
        common::v1::KeyValue,
        logs::v1::ResourceLogs,
        metrics::v1::{
            ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint, ResourceMetrics, metric::Data,
            number_data_point,
        },
        trace::v1::{ResourceSpans, Span, span::SpanKind, status::StatusCode},
    },
    rollup::{ALL, HISTOGRAM_SCALE, RollupKind, RollupValues},
};

use super::windows::{SeriesRef, Windows};

/// Why an item was left out of the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Older than the finest resolution's retention.
    TooOld,
    /// Further in the future than `max_future`.
    TooNew,
}

/// The accepted time range for one batch, fixed when it is processed.
#[derive(Debug, Clone, Copy)]
pub struct TimeRange {
    pub oldest_ms: i64,
    pub newest_ms: i64,
    /// Used for items that carry no timestamp.
    pub received_ms: i64,
}

impl TimeRange {
    fn check(&self, unix_nano: u64) -> Result<i64, Refusal> {
        if unix_nano == 0 {
            return Ok(self.received_ms);
        }
        let ms = (unix_nano / 1_000_000) as i64;
        if ms < self.oldest_ms {
            Err(Refusal::TooOld)
        } else if ms > self.newest_ms {
            Err(Refusal::TooNew)
        } else {
            Ok(ms)
        }
    }
}

/// Counts of items observed and refused, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub items: u64,
    pub too_old: u64,
    pub too_new: u64,
}

impl Observed {
    fn note(&mut self, r: Result<i64, Refusal>) -> Option<i64> {
        match r {
            Ok(t) => {
                self.items += 1;
                Some(t)
            }
            Err(Refusal::TooOld) => {
                self.too_old += 1;
                None
            }
            Err(Refusal::TooNew) => {
                self.too_new += 1;
                None
            }
        }
    }
}

const UNKNOWN_SERVICE: &str = "unknown_service";
/// Longest service, operation or metric name kept; longer ones are cut (a
/// database key has a size limit, and such names are never meant).
const MAX_NAME_BYTES: usize = 256;
/// Longest attribute set kept as is; longer ones are replaced by a hash.
const MAX_DETAIL_BYTES: usize = 1024;

/// A name safe as a database key: NUL (refused by PostgreSQL text) replaced,
/// cut to [`MAX_NAME_BYTES`] on a character boundary. Borrowed when clean.
fn clean(name: &str) -> Cow<'_, str> {
    if name.len() <= MAX_NAME_BYTES && !name.contains('\0') {
        return Cow::Borrowed(name);
    }
    let mut end = name.len().min(MAX_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(name[..end].replace('\0', "\u{fffd}"))
}

/// The resource's service; a literal `*` is renamed, as `*` marks the
/// pre-aggregated series.
fn service(resource: Option<&tally_core::otlp::resource::v1::Resource>) -> Cow<'_, str> {
    match resource.and_then(|r| attributes::str(&r.attributes, "service.name")) {
        Some(ALL) => Cow::Borrowed("(*)"),
        Some(s) => clean(s),
        None => Cow::Borrowed(UNKNOWN_SERVICE),
    }
}

/// A span kind as stored in rollups and the lake (`server`, `client`, …).
pub fn span_kind(kind: i32) -> &'static str {
    match SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
        SpanKind::Unspecified => "unspecified",
    }
}

/// Failed: status ERROR, or a server span answering HTTP 5xx.
fn is_error(span: &Span) -> bool {
    if span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32) {
        return true;
    }
    span.kind == SpanKind::Server as i32
        && ["http.response.status_code", "http.status_code"]
            .iter()
            .find_map(|k| attributes::get(&span.attributes, k))
            .and_then(attributes::number)
            .is_some_and(|code| (500.0..600.0).contains(&code))
}

pub fn spans(w: &mut Windows, tenant: &TenantId, range: &TimeRange, data: &[ResourceSpans]) -> Observed {
    let mut seen = Observed::default();
    for rs in data {
        let service = service(rs.resource.as_ref());
        let service = service.as_ref();
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let Some(t) = seen.note(range.check(span.end_time_unix_nano)) else { continue };
            let name = clean(attributes::str(&span.attributes, "http.route").unwrap_or(&span.name));
            let name = name.as_ref();
            let key = SeriesRef { tenant, kind: RollupKind::Span, service, name, detail: span_kind(span.kind) };
            // An unset start time would make a decades-long span.
            let micros = match span.start_time_unix_nano {
                0 => 0,
                start => {
                    span.end_time_unix_nano.saturating_sub(start).div_ceil(1000).min(tally_core::histogram::MAX_VALUE)
                }
            };
            let error = is_error(span);
            w.update(key, t, |v| v.add_span(micros, error));
            if span.kind == SpanKind::Server as i32 || span.kind == SpanKind::Consumer as i32 {
                for service in [service, ALL] {
                    let key = SeriesRef { tenant, kind: RollupKind::Span, service, name: ALL, detail: ALL };
                    w.update(key, t, |v| v.add_span(micros, error));
                }
            }
        }
    }
    seen
}

/// OpenTelemetry's severity ranges: 1–4 TRACE, 5–8 DEBUG, 9–12 INFO,
/// 13–16 WARN, 17–20 ERROR, 21–24 FATAL; unset numbers fall back to the text.
fn severity(number: i32, text: &str) -> &'static str {
    const NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    if (1..=24).contains(&number) {
        return NAMES[((number - 1) / 4) as usize];
    }
    let t = text.trim();
    match NAMES.iter().find(|n| t.eq_ignore_ascii_case(n)) {
        Some(n) => n,
        None if t.eq_ignore_ascii_case("warning") => "WARN",
        None if t.eq_ignore_ascii_case("critical") => "FATAL",
        None => "UNSPECIFIED",
    }
}

pub fn logs(w: &mut Windows, tenant: &TenantId, range: &TimeRange, data: &[ResourceLogs]) -> Observed {
    let mut seen = Observed::default();
    for rl in data {
        let service = service(rl.resource.as_ref());
        let service = service.as_ref();
        for rec in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
            let time = if rec.time_unix_nano != 0 { rec.time_unix_nano } else { rec.observed_time_unix_nano };
            let Some(t) = seen.note(range.check(time)) else { continue };
            let name = severity(rec.severity_number, &rec.severity_text);
            let key = SeriesRef { tenant, kind: RollupKind::Log, service, name, detail: "" };
            w.update(key, t, |v| v.count += 1);
        }
    }
    seen
}

/// Which point attributes make a metric series.
pub struct AttributeFilter(Vec<String>);

impl AttributeFilter {
    /// Keeps `keys`; an empty list keeps every attribute.
    pub fn new(keys: &[String]) -> AttributeFilter {
        AttributeFilter(keys.to_vec())
    }

    /// The kept attributes as canonical JSON (sorted keys, values as text).
    fn detail(&self, attrs: &[KeyValue]) -> String {
        if attrs.is_empty() {
            return "{}".into();
        }
        let kept: BTreeMap<&str, std::borrow::Cow<'_, str>> = attrs
            .iter()
            .filter(|kv| self.0.is_empty() || self.0.contains(&kv.key))
            .filter_map(|kv| Some((kv.key.as_str(), attributes::text(kv.value.as_ref()?.value.as_ref()?)?)))
            .collect();
        let json = serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into());
        if json.len() <= MAX_DETAIL_BYTES {
            return json;
        }
        // Too long for a database key: distinct sets stay distinct by hash
        // (a specified one: this key is stored, and std's hasher may change).
        format!(r#"{{"otel.attributes.hash":"{:016x}"}}"#, tally_core::canonical::fnv1a64(json.as_bytes()))
    }
}

pub fn metrics(
    w: &mut Windows,
    tenant: &TenantId,
    range: &TimeRange,
    keep: &AttributeFilter,
    data: &[ResourceMetrics],
) -> Observed {
    let mut seen = Observed::default();
    for rm in data {
        let service = service(rm.resource.as_ref());
        let service = service.as_ref();
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let name = clean(&metric.name);
            let name = name.as_ref();
            let mut series =
                |kind: RollupKind, attrs: &[KeyValue], time: u64, f: &mut dyn FnMut(&mut RollupValues, i64)| {
                    let Some(t) = seen.note(range.check(time)) else { return };
                    let detail = keep.detail(attrs);
                    w.update(SeriesRef { tenant, kind, service, name, detail: &detail }, t, |v| f(v, t));
                };
            match &metric.data {
                Some(Data::Gauge(g)) => {
                    for p in &g.data_points {
                        series(RollupKind::Gauge, &p.attributes, p.time_unix_nano, &mut |v, t| number_point(v, p, t));
                    }
                }
                Some(Data::Sum(s)) => {
                    for p in &s.data_points {
                        series(RollupKind::Gauge, &p.attributes, p.time_unix_nano, &mut |v, t| number_point(v, p, t));
                    }
                }
                Some(Data::Histogram(h)) => {
                    for p in &h.data_points {
                        series(RollupKind::Histogram, &p.attributes, p.time_unix_nano, &mut |v, _| {
                            explicit_histogram(v, p)
                        });
                    }
                }
                Some(Data::ExponentialHistogram(h)) => {
                    for p in &h.data_points {
                        series(RollupKind::Histogram, &p.attributes, p.time_unix_nano, &mut |v, _| {
                            exponential_histogram(v, p)
                        });
                    }
                }
                // Summaries carry precomputed quantiles that cannot be merged.
                Some(Data::Summary(_)) | None => {}
            }
        }
    }
    seen
}

fn number_point(v: &mut RollupValues, p: &NumberDataPoint, t: i64) {
    let value = match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => return,
    };
    // NaN marks a stale series in Prometheus-style exporters: not a value.
    if value.is_finite() {
        v.add_point(value, t);
    }
}

fn record_scaled(v: &mut RollupValues, value: f64, count: u64) {
    let scaled = (value.max(0.0) * HISTOGRAM_SCALE).round() as u64;
    v.hist.get_or_insert_with(tally_core::Histogram::new).record_n(scaled, count);
}

fn histogram_totals(v: &mut RollupValues, count: u64, sum: Option<f64>, min: Option<f64>, max: Option<f64>) {
    let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
    v.count = v.count.saturating_add(count).min(tally_core::histogram::MAX_COUNT);
    v.sum += finite(sum).unwrap_or(0.0);
    if let Some(m) = finite(min) {
        v.min = v.min.min(m);
    }
    if let Some(m) = finite(max) {
        v.max = v.max.max(m);
    }
}

/// Each bucket's count is recorded at the bucket's midpoint (the open-ended
/// first and last buckets at their finite bound, or the point's min/max), so
/// percentiles are as precise as the sender's buckets.
fn explicit_histogram(v: &mut RollupValues, p: &HistogramDataPoint) {
    histogram_totals(v, p.count, p.sum, p.min, p.max);
    let b = &p.explicit_bounds;
    for (i, &count) in p.bucket_counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let value = match (i.checked_sub(1).and_then(|j| b.get(j)), b.get(i)) {
            (Some(lo), Some(hi)) => (lo + hi) / 2.0,
            (None, Some(hi)) => p.min.unwrap_or(*hi).min(*hi),
            (Some(lo), None) => p.max.unwrap_or(*lo).max(*lo),
            (None, None) => p.sum.map_or(0.0, |s| s / p.count.max(1) as f64),
        };
        record_scaled(v, value, count);
    }
}

/// Positive buckets at their geometric midpoints; the zero bucket at 0.
/// Negative values are counted but kept out of the percentiles.
fn exponential_histogram(v: &mut RollupValues, p: &ExponentialHistogramDataPoint) {
    histogram_totals(v, p.count, p.sum, p.min, p.max);
    record_scaled(v, 0.0, p.zero_count);
    if let Some(pos) = &p.positive {
        // The spec's scales are -10..=20; others would overflow the arithmetic.
        let base = 2f64.powf(2f64.powi(-p.scale.clamp(-10, 20)));
        for (i, &count) in pos.bucket_counts.iter().enumerate() {
            if count > 0 {
                let lower = base.powi(pos.offset.saturating_add(i32::try_from(i).unwrap_or(i32::MAX)));
                record_scaled(v, lower * base.sqrt(), count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tally_core::otlp::{
        resource::v1::Resource,
        trace::v1::{ScopeSpans, Span},
    };

    use super::*;
    use crate::rollup::windows::Limits;

    fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
        let attr = tally_core::otlp::common::v1::KeyValue {
            key: "service.name".into(),
            value: Some(tally_core::otlp::common::v1::AnyValue {
                value: Some(tally_core::otlp::common::v1::any_value::Value::StringValue(service.into())),
            }),
            ..Default::default()
        };
        ResourceSpans {
            resource: Some(Resource { attributes: vec![attr], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }
    }

    proptest! {
        /// Whatever the timestamps, operations and flush points, the window
        /// counts add up to the spans sent, and the merged windows' histogram
        /// is the histogram of all durations.
        #[test]
        fn window_counts_add_up_to_the_spans_sent(
            spans in proptest::collection::vec((0u64..600_000, 0u64..5_000_000, 0usize..5, any::<bool>()), 1..400),
            flush_at in proptest::collection::vec(0i64..600_000, 0..4),
        ) {
            let base_ms = 1_800_000_000_000i64;
            let tenant = TenantId::parse("p").unwrap();
            let range = TimeRange { oldest_ms: 0, newest_ms: i64::MAX, received_ms: base_ms };
            let mut w = Windows::new(60_000, Limits { per_tenant: 1000, per_metric: 1000 });
            let mut rows = Vec::new();
            let mut flushes = flush_at.clone();
            flushes.sort_unstable();
            let mut all = tally_core::Histogram::new();
            for (i, (at_ms, micros, op, failed)) in spans.iter().enumerate() {
                while flushes.first().is_some_and(|f| *f <= *at_ms as i64) {
                    // In chunks of 3 rows, as the stage takes them while the database keeps up.
                    let before = base_ms + flushes.remove(0);
                    while w.closed(before, i64::MAX).next().is_some() {
                        rows.extend(w.take_before(before, i64::MAX, 3));
                    }
                }
                let end = (base_ms as u64 + at_ms) * 1_000_000;
                let span = Span {
                    name: format!("op{op}"),
                    kind: 2,
                    start_time_unix_nano: end - micros * 1000,
                    end_time_unix_nano: end,
                    span_id: (i as u64).to_be_bytes().to_vec(),
                    status: failed.then(|| tally_core::otlp::trace::v1::Status { code: 2, message: String::new() }),
                    ..Default::default()
                };
                all.record(*micros);
                spans_of(&mut w, &tenant, &range, &[resource_spans("svc", vec![span])]);
            }
            rows.extend(w.take_all());
            // The operations' series, and the tenant's aggregate of its
            // (all SERVER) spans, each add up to what was sent.
            let (ops, aggregates): (Vec<_>, Vec<_>) = rows.iter().partition(|r| &*r.key.detail != ALL);
            let tenant_wide: Vec<_> = aggregates.into_iter().filter(|r| &*r.key.service == ALL).collect();
            for series in [ops, tenant_wide] {
                prop_assert_eq!(series.iter().map(|r| r.values.count).sum::<u64>(), spans.len() as u64);
                prop_assert_eq!(series.iter().map(|r| r.values.errors).sum::<u64>(), spans.iter().filter(|s| s.3).count() as u64);
                let mut merged = tally_core::Histogram::new();
                series.iter().for_each(|r| merged.merge(r.values.hist.as_ref().unwrap()));
                prop_assert_eq!(merged, all.clone());
            }
        }
    }

    fn spans_of(w: &mut Windows, t: &TenantId, r: &TimeRange, d: &[ResourceSpans]) {
        assert_eq!(spans(w, t, r, d).items, 1);
    }

    /// Long attribute sets are stored as a hash: a specified one, pinned.
    #[test]
    fn long_attribute_sets_hash_to_a_stable_key() {
        let long = tally_core::otlp::common::v1::KeyValue {
            key: "q".into(),
            value: Some(tally_core::otlp::common::v1::AnyValue {
                value: Some(tally_core::otlp::common::v1::any_value::Value::StringValue("x".repeat(2000))),
            }),
            ..Default::default()
        };
        let detail = AttributeFilter::new(&[]).detail(&[long]);
        // FNV-1a 64 of {"q":"xx…x"} (2,000 x), computed independently.
        assert_eq!(detail, r#"{"otel.attributes.hash":"ead72bb78d888bea"}"#);
    }

    #[test]
    fn severities_follow_the_spec_ranges() {
        assert_eq!(severity(9, ""), "INFO");
        assert_eq!(severity(17, "whatever"), "ERROR");
        assert_eq!(severity(24, ""), "FATAL");
        assert_eq!(severity(0, "warning"), "WARN");
        assert_eq!(severity(0, "Error"), "ERROR");
        assert_eq!(severity(0, ""), "UNSPECIFIED");
    }

    #[test]
    fn explicit_buckets_record_at_midpoints() {
        let p = HistogramDataPoint {
            count: 4,
            sum: Some(1.0),
            bucket_counts: vec![1, 2, 1],
            explicit_bounds: vec![0.1, 0.5],
            min: Some(0.05),
            max: Some(0.9),
            ..Default::default()
        };
        let mut v = RollupValues::default();
        explicit_histogram(&mut v, &p);
        let h = v.hist.unwrap();
        assert_eq!((v.count, h.count()), (4, 4));
        // Scaled ×1000: 0.05 → 50, 0.3 → 300, 0.9 → 900 (within bucket precision).
        assert_eq!(h.value_at_quantile(0.25), Some(50));
        assert!((300..=302).contains(&h.value_at_quantile(0.75).unwrap()));
        assert!((900..=904).contains(&h.value_at_quantile(1.0).unwrap()));
    }
}

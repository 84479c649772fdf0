//! The lake's Parquet schemas, one per signal, and the column builders that
//! turn OTLP data (and usage records) into Arrow record batches.
//!
//! Typed columns for what people filter on (tenant, service, names, times,
//! ids, status, severity, metric type); attributes as `map<string,string>`
//! (scalars as text, arrays and maps as JSON); events, links, summary
//! quantiles as JSON text. Times are `timestamp[ns, UTC]` (usage: ms). Ids
//! are fixed-size binary (DuckDB: `hex(trace_id)`).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, RecordBatch, UInt32Array,
    builder::{
        BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
        StringBuilder, TimestampMillisecondBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
    },
};
use arrow_schema::{ArrowError, Field, Schema};
use arrow_select::take::take;
use serde_json::{Map, Value, json};

use crate::rollup::extract::span_kind;
use tally_core::{
    UsageRecord,
    lake::LakeSignal,
    otlp::{
        common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
        logs::v1::LogRecord,
        metrics::v1::{
            ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
            exemplar::Value as ExemplarValue, metric::Data, number_data_point,
        },
        resource::v1::Resource,
        trace::v1::{Span, status::StatusCode},
    },
};

/// A scalar attribute as text; arrays, maps and bytes as JSON / hex.
pub fn any_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(_) => any_json(v).to_string(),
        None => String::new(),
    }
}

/// An OTLP value as plain JSON.
pub fn any_json(v: &AnyValue) -> Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(any_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes_json(&kv.values)),
        // A string-table index (profiles only): no string to show.
        Some(any_value::Value::StringValueStrindex(i)) => json!(i),
        None => Value::Null,
    }
}

fn attributes_json(attrs: &[KeyValue]) -> Map<String, Value> {
    attrs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_json))).collect()
}

type AttrMap = MapBuilder<StringBuilder, StringBuilder>;

fn attr_map() -> AttrMap {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

fn append_attrs(b: &mut AttrMap, attrs: &[KeyValue]) {
    for kv in attrs {
        b.keys().append_value(&kv.key);
        match &kv.value {
            Some(v) => b.values().append_value(any_text(v)),
            None => b.values().append_null(),
        }
    }
    // MapBuilder::append only fails on a key/value count mismatch.
    let _ = b.append(true);
}

fn append_id(b: &mut FixedSizeBinaryBuilder, id: &[u8], len: usize) {
    if id.len() == len && id.iter().any(|&x| x != 0) {
        let _ = b.append_value(id);
    } else {
        b.append_null();
    }
}

fn ts(ns: u64) -> Option<i64> {
    (ns != 0).then(|| i64::try_from(ns).unwrap_or(i64::MAX))
}

fn timestamps() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_timezone("UTC")
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The resource's `service.name` (as the rollups see it).
pub fn service_of(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(any_text)
        .unwrap_or_else(|| "unknown_service".to_owned())
}

fn batch(columns: Vec<(&'static str, ArrayRef)>) -> Result<RecordBatch, ArrowError> {
    // Every column nullable, so all batches of a file share one schema.
    let fields: Vec<Field> = columns.iter().map(|(name, a)| Field::new(*name, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect())
}

/// Rows of one signal being gathered for one file.
pub enum Rows {
    Spans(Box<SpanRows>),
    Logs(Box<LogRows>),
    Metrics(Box<MetricRows>),
    Usage(Box<UsageRows>),
}

impl Rows {
    pub fn new(signal: LakeSignal) -> Rows {
        match signal {
            LakeSignal::Spans => Rows::Spans(Box::default()),
            LakeSignal::Logs => Rows::Logs(Box::default()),
            LakeSignal::Metrics => Rows::Metrics(Box::default()),
            LakeSignal::Usage => Rows::Usage(Box::default()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Rows::Spans(r) => r.rows,
            Rows::Logs(r) => r.rows,
            Rows::Metrics(r) => r.rows,
            Rows::Usage(r) => r.rows,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows gathered so far as a record batch; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        match self {
            Rows::Spans(r) => r.finish(),
            Rows::Logs(r) => r.finish(),
            Rows::Metrics(r) => r.finish(),
            Rows::Usage(r) => r.finish(),
        }
    }
}

/// Where a row comes from: its tenant, resource and scope.
pub struct Origin<'a> {
    pub tenant: &'a str,
    pub service: &'a str,
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a InstrumentationScope>,
}

impl Origin<'_> {
    fn resource_attrs(&self) -> &[KeyValue] {
        self.resource.map_or(&[], |r| &r.attributes)
    }

    fn scope_name(&self) -> Option<&str> {
        self.scope.map(|s| s.name.as_str()).and_then(nonempty)
    }
}

/// The columns a row takes from where it came from: tenant, service, scope
/// name and resource attributes. Rows arrive in runs from one origin (a
/// request's resource and scope), so each run's values are stored once and
/// expanded to one per row only when the batch is finished: rows waiting in
/// memory do not each hold a copy of their resource.
struct OriginColumns {
    tenant: StringBuilder,
    service: StringBuilder,
    scope_name: StringBuilder,
    resource_attributes: AttrMap,
    /// The last run's origin, to compare the next row's with.
    last: Option<OwnedOrigin>,
    runs: u32,
    /// Per row, its run.
    run_of_row: Vec<u32>,
}

#[derive(PartialEq)]
struct OwnedOrigin {
    tenant: String,
    service: String,
    scope_name: Option<String>,
    resource_attributes: Vec<KeyValue>,
}

impl OwnedOrigin {
    fn is(&self, o: &Origin<'_>) -> bool {
        self.tenant == o.tenant
            && self.service == o.service
            && self.scope_name.as_deref() == o.scope_name()
            && self.resource_attributes == o.resource_attrs()
    }
}

impl Default for OriginColumns {
    fn default() -> OriginColumns {
        OriginColumns {
            tenant: StringBuilder::new(),
            service: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            resource_attributes: attr_map(),
            last: None,
            runs: 0,
            run_of_row: Vec::new(),
        }
    }
}

impl OriginColumns {
    fn push(&mut self, o: &Origin<'_>) {
        if !self.last.as_ref().is_some_and(|l| l.is(o)) {
            self.tenant.append_value(o.tenant);
            self.service.append_value(o.service);
            self.scope_name.append_option(o.scope_name());
            append_attrs(&mut self.resource_attributes, o.resource_attrs());
            self.last = Some(OwnedOrigin {
                tenant: o.tenant.to_owned(),
                service: o.service.to_owned(),
                scope_name: o.scope_name().map(str::to_owned),
                resource_attributes: o.resource_attrs().to_vec(),
            });
            self.runs += 1;
        }
        self.run_of_row.push(self.runs - 1);
    }

    /// Tenant, service, scope name and resource attributes, one per row.
    fn finish(&mut self) -> Result<[ArrayRef; 4], ArrowError> {
        let rows = UInt32Array::from(std::mem::take(&mut self.run_of_row));
        self.last = None;
        self.runs = 0;
        let per_row = |runs: ArrayRef| take(&runs, &rows, None);
        Ok([
            per_row(Arc::new(self.tenant.finish()))?,
            per_row(Arc::new(self.service.finish()))?,
            per_row(Arc::new(self.scope_name.finish()))?,
            per_row(Arc::new(self.resource_attributes.finish()))?,
        ])
    }
}

pub struct SpanRows {
    rows: usize,
    origin: OriginColumns,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    flags: UInt32Builder,
    attributes: AttrMap,
    events: StringBuilder,
    links: StringBuilder,
}

impl Default for SpanRows {
    fn default() -> SpanRows {
        SpanRows {
            rows: 0,
            origin: OriginColumns::default(),
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            parent_span_id: FixedSizeBinaryBuilder::new(8),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            start_time: timestamps(),
            end_time: timestamps(),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: attr_map(),
            events: StringBuilder::new(),
            links: StringBuilder::new(),
        }
    }
}

impl SpanRows {
    pub fn push(&mut self, o: &Origin<'_>, s: &Span) {
        self.rows += 1;
        self.origin.push(o);
        append_id(&mut self.trace_id, &s.trace_id, 16);
        append_id(&mut self.span_id, &s.span_id, 8);
        append_id(&mut self.parent_span_id, &s.parent_span_id, 8);
        self.trace_state.append_option(nonempty(&s.trace_state));
        self.name.append_value(&s.name);
        self.kind.append_value(span_kind(s.kind));
        self.start_time.append_option(ts(s.start_time_unix_nano));
        self.end_time.append_option(ts(s.end_time_unix_nano));
        self.duration_ns.append_option(
            (s.start_time_unix_nano != 0)
                .then(|| s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano).min(i64::MAX as u64) as i64),
        );
        let status = s.status.as_ref();
        self.status_code.append_value(match status.map(|st| StatusCode::try_from(st.code)) {
            Some(Ok(StatusCode::Ok)) => "ok",
            Some(Ok(StatusCode::Error)) => "error",
            _ => "unset",
        });
        self.status_message.append_option(status.map(|st| st.message.as_str()).and_then(nonempty));
        self.flags.append_value(s.flags);
        append_attrs(&mut self.attributes, &s.attributes);
        self.events.append_option((!s.events.is_empty()).then(|| {
            let events: Vec<Value> = s
                .events
                .iter()
                .map(|e| json!({"time_unix_nano": e.time_unix_nano, "name": e.name, "attributes": attributes_json(&e.attributes)}))
                .collect();
            Value::Array(events).to_string()
        }));
        self.links.append_option((!s.links.is_empty()).then(|| {
            let links: Vec<Value> = s
                .links
                .iter()
                .map(|l| {
                    json!({"trace_id": hex::encode(&l.trace_id), "span_id": hex::encode(&l.span_id),
                           "trace_state": l.trace_state, "attributes": attributes_json(&l.attributes)})
                })
                .collect();
            Value::Array(links).to_string()
        }));
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let [tenant, service, scope_name, resource_attributes] = self.origin.finish()?;
        batch(vec![
            ("tenant", tenant),
            ("service", service),
            ("trace_id", Arc::new(self.trace_id.finish())),
            ("span_id", Arc::new(self.span_id.finish())),
            ("parent_span_id", Arc::new(self.parent_span_id.finish())),
            ("trace_state", Arc::new(self.trace_state.finish())),
            ("name", Arc::new(self.name.finish())),
            ("kind", Arc::new(self.kind.finish())),
            ("start_time", Arc::new(self.start_time.finish())),
            ("end_time", Arc::new(self.end_time.finish())),
            ("duration_ns", Arc::new(self.duration_ns.finish())),
            ("status_code", Arc::new(self.status_code.finish())),
            ("status_message", Arc::new(self.status_message.finish())),
            ("flags", Arc::new(self.flags.finish())),
            ("scope_name", scope_name),
            ("attributes", Arc::new(self.attributes.finish())),
            ("resource_attributes", resource_attributes),
            ("events", Arc::new(self.events.finish())),
            ("links", Arc::new(self.links.finish())),
        ])
    }
}

pub struct LogRows {
    rows: usize,
    origin: OriginColumns,
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    event_name: StringBuilder,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    flags: UInt32Builder,
    attributes: AttrMap,
}

impl Default for LogRows {
    fn default() -> LogRows {
        LogRows {
            rows: 0,
            origin: OriginColumns::default(),
            time: timestamps(),
            observed_time: timestamps(),
            severity_number: Int32Builder::new(),
            severity_text: StringBuilder::new(),
            body: StringBuilder::new(),
            event_name: StringBuilder::new(),
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            flags: UInt32Builder::new(),
            attributes: attr_map(),
        }
    }
}

impl LogRows {
    pub fn push(&mut self, o: &Origin<'_>, r: &LogRecord) {
        self.rows += 1;
        self.origin.push(o);
        // The record's time, else when it was observed (as the rollups do).
        let time = if r.time_unix_nano != 0 { r.time_unix_nano } else { r.observed_time_unix_nano };
        self.time.append_option(ts(time));
        self.observed_time.append_option(ts(r.observed_time_unix_nano));
        self.severity_number.append_value(r.severity_number);
        self.severity_text.append_option(nonempty(&r.severity_text));
        self.body.append_option(r.body.as_ref().map(|b| match &b.value {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => any_json(b).to_string(),
        }));
        self.event_name.append_option(nonempty(&r.event_name));
        append_id(&mut self.trace_id, &r.trace_id, 16);
        append_id(&mut self.span_id, &r.span_id, 8);
        self.flags.append_value(r.flags);
        append_attrs(&mut self.attributes, &r.attributes);
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let [tenant, service, scope_name, resource_attributes] = self.origin.finish()?;
        batch(vec![
            ("tenant", tenant),
            ("service", service),
            ("time", Arc::new(self.time.finish())),
            ("observed_time", Arc::new(self.observed_time.finish())),
            ("severity_number", Arc::new(self.severity_number.finish())),
            ("severity_text", Arc::new(self.severity_text.finish())),
            ("body", Arc::new(self.body.finish())),
            ("event_name", Arc::new(self.event_name.finish())),
            ("trace_id", Arc::new(self.trace_id.finish())),
            ("span_id", Arc::new(self.span_id.finish())),
            ("flags", Arc::new(self.flags.finish())),
            ("scope_name", scope_name),
            ("attributes", Arc::new(self.attributes.finish())),
            ("resource_attributes", resource_attributes),
        ])
    }
}

/// One row per data point.
pub struct MetricRows {
    rows: usize,
    origin: OriginColumns,
    name: StringBuilder,
    description: StringBuilder,
    unit: StringBuilder,
    metric_type: StringBuilder,
    temporality: StringBuilder,
    is_monotonic: BooleanBuilder,
    start_time: TimestampNanosecondBuilder,
    time: TimestampNanosecondBuilder,
    value: Float64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: UInt64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_counts: ListBuilder<UInt64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_counts: ListBuilder<UInt64Builder>,
    quantiles: StringBuilder,
    exemplars: StringBuilder,
    flags: UInt32Builder,
    attributes: AttrMap,
}

impl Default for MetricRows {
    fn default() -> MetricRows {
        MetricRows {
            rows: 0,
            origin: OriginColumns::default(),
            name: StringBuilder::new(),
            description: StringBuilder::new(),
            unit: StringBuilder::new(),
            metric_type: StringBuilder::new(),
            temporality: StringBuilder::new(),
            is_monotonic: BooleanBuilder::new(),
            start_time: timestamps(),
            time: timestamps(),
            value: Float64Builder::new(),
            count: UInt64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_counts: ListBuilder::new(UInt64Builder::new()),
            explicit_bounds: ListBuilder::new(Float64Builder::new()),
            exp_scale: Int32Builder::new(),
            exp_zero_count: UInt64Builder::new(),
            exp_positive_offset: Int32Builder::new(),
            exp_positive_counts: ListBuilder::new(UInt64Builder::new()),
            exp_negative_offset: Int32Builder::new(),
            exp_negative_counts: ListBuilder::new(UInt64Builder::new()),
            quantiles: StringBuilder::new(),
            exemplars: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: attr_map(),
        }
    }
}

/// What varies by point type, appended after the common columns.
struct PointParts<'a> {
    start_ns: u64,
    time_ns: u64,
    flags: u32,
    attributes: &'a [KeyValue],
    exemplars: Option<String>,
}

fn temporality(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

fn exemplars_json(ex: &[tally_core::otlp::metrics::v1::Exemplar]) -> Option<String> {
    (!ex.is_empty()).then(|| {
        let v: Vec<Value> = ex
            .iter()
            .map(|e| {
                let value = match e.value {
                    Some(ExemplarValue::AsDouble(d)) => json!(d),
                    Some(ExemplarValue::AsInt(i)) => json!(i),
                    None => Value::Null,
                };
                json!({"time_unix_nano": e.time_unix_nano, "value": value, "trace_id": hex::encode(&e.trace_id),
                       "span_id": hex::encode(&e.span_id), "attributes": attributes_json(&e.filtered_attributes)})
            })
            .collect();
        Value::Array(v).to_string()
    })
}

impl MetricRows {
    /// Every data point of `metric`; returns how many.
    pub fn push_metric(&mut self, o: &Origin<'_>, metric: &tally_core::otlp::metrics::v1::Metric) -> usize {
        let before = self.rows;
        match &metric.data {
            Some(Data::Gauge(g)) => {
                for p in &g.data_points {
                    self.number(o, metric, "gauge", None, None, p);
                }
            }
            Some(Data::Sum(s)) => {
                for p in &s.data_points {
                    let t = temporality(s.aggregation_temporality);
                    self.number(o, metric, "sum", t, Some(s.is_monotonic), p);
                }
            }
            Some(Data::Histogram(h)) => {
                for p in &h.data_points {
                    self.histogram(o, metric, temporality(h.aggregation_temporality), p);
                }
            }
            Some(Data::ExponentialHistogram(h)) => {
                for p in &h.data_points {
                    self.exponential(o, metric, temporality(h.aggregation_temporality), p);
                }
            }
            Some(Data::Summary(s)) => {
                for p in &s.data_points {
                    self.summary(o, metric, p);
                }
            }
            None => {}
        }
        self.rows - before
    }

    /// The columns every point has; the type-specific ones follow.
    fn common(
        &mut self,
        o: &Origin<'_>,
        m: &tally_core::otlp::metrics::v1::Metric,
        kind: &str,
        temporality: Option<&str>,
        monotonic: Option<bool>,
        p: PointParts<'_>,
    ) {
        self.rows += 1;
        self.origin.push(o);
        self.name.append_value(&m.name);
        self.description.append_option(nonempty(&m.description));
        self.unit.append_option(nonempty(&m.unit));
        self.metric_type.append_value(kind);
        self.temporality.append_option(temporality);
        self.is_monotonic.append_option(monotonic);
        self.start_time.append_option(ts(p.start_ns));
        self.time.append_option(ts(p.time_ns));
        self.exemplars.append_option(p.exemplars);
        self.flags.append_value(p.flags);
        append_attrs(&mut self.attributes, p.attributes);
    }

    fn no_histogram(&mut self) {
        self.count.append_null();
        self.sum.append_null();
        self.min.append_null();
        self.max.append_null();
        self.bucket_counts.append(false);
        self.explicit_bounds.append(false);
    }

    fn no_exponential(&mut self) {
        self.exp_scale.append_null();
        self.exp_zero_count.append_null();
        self.exp_positive_offset.append_null();
        self.exp_positive_counts.append(false);
        self.exp_negative_offset.append_null();
        self.exp_negative_counts.append(false);
    }

    fn number(
        &mut self,
        o: &Origin<'_>,
        m: &tally_core::otlp::metrics::v1::Metric,
        kind: &str,
        t: Option<&str>,
        monotonic: Option<bool>,
        p: &NumberDataPoint,
    ) {
        let parts = PointParts {
            start_ns: p.start_time_unix_nano,
            time_ns: p.time_unix_nano,
            flags: p.flags,
            attributes: &p.attributes,
            exemplars: exemplars_json(&p.exemplars),
        };
        self.common(o, m, kind, t, monotonic, parts);
        self.value.append_option(match p.value {
            Some(number_data_point::Value::AsDouble(d)) => Some(d),
            Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
            None => None,
        });
        self.no_histogram();
        self.no_exponential();
        self.quantiles.append_null();
    }

    fn histogram(
        &mut self,
        o: &Origin<'_>,
        m: &tally_core::otlp::metrics::v1::Metric,
        t: Option<&str>,
        p: &HistogramDataPoint,
    ) {
        let parts = PointParts {
            start_ns: p.start_time_unix_nano,
            time_ns: p.time_unix_nano,
            flags: p.flags,
            attributes: &p.attributes,
            exemplars: exemplars_json(&p.exemplars),
        };
        self.common(o, m, "histogram", t, None, parts);
        self.value.append_null();
        self.count.append_value(p.count);
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        self.bucket_counts.values().append_slice(&p.bucket_counts);
        self.bucket_counts.append(true);
        self.explicit_bounds.values().append_slice(&p.explicit_bounds);
        self.explicit_bounds.append(true);
        self.no_exponential();
        self.quantiles.append_null();
    }

    fn exponential(
        &mut self,
        o: &Origin<'_>,
        m: &tally_core::otlp::metrics::v1::Metric,
        t: Option<&str>,
        p: &ExponentialHistogramDataPoint,
    ) {
        let parts = PointParts {
            start_ns: p.start_time_unix_nano,
            time_ns: p.time_unix_nano,
            flags: p.flags,
            attributes: &p.attributes,
            exemplars: exemplars_json(&p.exemplars),
        };
        self.common(o, m, "exponential_histogram", t, None, parts);
        self.value.append_null();
        self.count.append_value(p.count);
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        self.bucket_counts.append(false);
        self.explicit_bounds.append(false);
        self.exp_scale.append_value(p.scale);
        self.exp_zero_count.append_value(p.zero_count);
        let (pos, neg) = (p.positive.as_ref(), p.negative.as_ref());
        self.exp_positive_offset.append_option(pos.map(|b| b.offset));
        self.exp_positive_counts.values().append_slice(pos.map_or(&[][..], |b| &b.bucket_counts));
        self.exp_positive_counts.append(pos.is_some());
        self.exp_negative_offset.append_option(neg.map(|b| b.offset));
        self.exp_negative_counts.values().append_slice(neg.map_or(&[][..], |b| &b.bucket_counts));
        self.exp_negative_counts.append(neg.is_some());
        self.quantiles.append_null();
    }

    fn summary(&mut self, o: &Origin<'_>, m: &tally_core::otlp::metrics::v1::Metric, p: &SummaryDataPoint) {
        let parts = PointParts {
            start_ns: p.start_time_unix_nano,
            time_ns: p.time_unix_nano,
            flags: p.flags,
            attributes: &p.attributes,
            exemplars: None,
        };
        self.common(o, m, "summary", None, None, parts);
        self.value.append_null();
        self.count.append_value(p.count);
        self.sum.append_value(p.sum);
        self.min.append_null();
        self.max.append_null();
        self.bucket_counts.append(false);
        self.explicit_bounds.append(false);
        self.no_exponential();
        let q: Vec<Value> =
            p.quantile_values.iter().map(|q| json!({"quantile": q.quantile, "value": q.value})).collect();
        self.quantiles.append_value(Value::Array(q).to_string());
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let [tenant, service, scope_name, resource_attributes] = self.origin.finish()?;
        batch(vec![
            ("tenant", tenant),
            ("service", service),
            ("name", Arc::new(self.name.finish())),
            ("description", Arc::new(self.description.finish())),
            ("unit", Arc::new(self.unit.finish())),
            ("type", Arc::new(self.metric_type.finish())),
            ("temporality", Arc::new(self.temporality.finish())),
            ("is_monotonic", Arc::new(self.is_monotonic.finish())),
            ("start_time", Arc::new(self.start_time.finish())),
            ("time", Arc::new(self.time.finish())),
            ("value", Arc::new(self.value.finish())),
            ("count", Arc::new(self.count.finish())),
            ("sum", Arc::new(self.sum.finish())),
            ("min", Arc::new(self.min.finish())),
            ("max", Arc::new(self.max.finish())),
            ("bucket_counts", Arc::new(self.bucket_counts.finish())),
            ("explicit_bounds", Arc::new(self.explicit_bounds.finish())),
            ("exp_scale", Arc::new(self.exp_scale.finish())),
            ("exp_zero_count", Arc::new(self.exp_zero_count.finish())),
            ("exp_positive_offset", Arc::new(self.exp_positive_offset.finish())),
            ("exp_positive_counts", Arc::new(self.exp_positive_counts.finish())),
            ("exp_negative_offset", Arc::new(self.exp_negative_offset.finish())),
            ("exp_negative_counts", Arc::new(self.exp_negative_counts.finish())),
            ("quantiles", Arc::new(self.quantiles.finish())),
            ("exemplars", Arc::new(self.exemplars.finish())),
            ("flags", Arc::new(self.flags.finish())),
            ("scope_name", scope_name),
            ("attributes", Arc::new(self.attributes.finish())),
            ("resource_attributes", resource_attributes),
        ])
    }
}

/// The ledger's accepted usage records.
pub struct UsageRows {
    rows: usize,
    tenant: StringBuilder,
    meter: StringBuilder,
    source: StringBuilder,
    event_id: StringBuilder,
    value: Float64Builder,
    event_time: TimestampMillisecondBuilder,
    group_key: StringBuilder,
    distinct_key: StringBuilder,
    content_hash: StringBuilder,
}

impl Default for UsageRows {
    fn default() -> UsageRows {
        UsageRows {
            rows: 0,
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            source: StringBuilder::new(),
            event_id: StringBuilder::new(),
            value: Float64Builder::new(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            group_key: StringBuilder::new(),
            distinct_key: StringBuilder::new(),
            content_hash: StringBuilder::new(),
        }
    }
}

impl UsageRows {
    pub fn push(&mut self, r: &UsageRecord) {
        self.rows += 1;
        self.tenant.append_value(r.tenant.as_str());
        self.meter.append_value(&r.meter);
        self.source.append_value(&r.source);
        self.event_id.append_value(&r.event_id);
        self.value.append_value(r.value);
        self.event_time.append_value(r.event_time_ms);
        self.group_key.append_value(&r.group_key);
        self.distinct_key.append_option(r.distinct_key.as_deref());
        self.content_hash.append_value(&r.content_hash);
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        batch(vec![
            ("tenant", Arc::new(self.tenant.finish())),
            ("meter", Arc::new(self.meter.finish())),
            ("source", Arc::new(self.source.finish())),
            ("event_id", Arc::new(self.event_id.finish())),
            ("value", Arc::new(self.value.finish())),
            ("event_time", Arc::new(self.event_time.finish())),
            ("group_key", Arc::new(self.group_key.finish())),
            ("distinct_key", Arc::new(self.distinct_key.finish())),
            ("content_hash", Arc::new(self.content_hash.finish())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, MapArray, StringArray};
    use tally_core::otlp::{
        common::v1::{AnyValue, any_value},
        resource::v1::Resource,
    };

    use super::*;

    fn resource(host: &str) -> Resource {
        let value = Some(AnyValue { value: Some(any_value::Value::StringValue(host.into())) });
        Resource {
            attributes: vec![KeyValue { key: "host.name".into(), value, ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn every_row_gets_its_own_origin_back() {
        let (a, b) = (resource("a"), resource("b"));
        let origin = |tenant, service, r| Origin { tenant, service, resource: Some(r), scope: None };
        // Runs from two origins, interleaved, and one that differs only by tenant.
        let rows = [
            origin("t1", "api", &a),
            origin("t1", "api", &a),
            origin("t1", "db", &b),
            origin("t1", "api", &a),
            origin("t2", "api", &a),
        ];
        let mut spans = SpanRows::default();
        for o in &rows {
            spans.push(o, &Span::default());
        }
        let batch = spans.finish().unwrap();
        let text = |name: &str| -> Vec<String> {
            let col = batch.column_by_name(name).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
            col.iter().map(|v| v.unwrap_or_default().to_owned()).collect()
        };
        assert_eq!(text("tenant"), ["t1", "t1", "t1", "t1", "t2"]);
        assert_eq!(text("service"), ["api", "api", "db", "api", "api"]);
        let attrs = batch.column_by_name("resource_attributes").unwrap().as_any().downcast_ref::<MapArray>().unwrap();
        let hosts: Vec<String> = (0..attrs.len())
            .map(|i| {
                let entry = attrs.value(i);
                entry.column(1).as_any().downcast_ref::<StringArray>().unwrap().value(0).to_owned()
            })
            .collect();
        assert_eq!(hosts, ["a", "a", "b", "a", "a"]);
        // The builders start over: a second batch is independent of the first.
        spans.push(&rows[2], &Span::default());
        let batch = spans.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        let services = batch.column_by_name("service").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        assert_eq!(services.value(0), "db");
    }
}

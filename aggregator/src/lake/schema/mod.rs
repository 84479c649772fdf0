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

mod logs;
mod metrics;
mod origin;
mod spans;
mod usage;

pub use logs::LogRows;
pub use metrics::MetricRows;
pub use origin::Origin;
use origin::OriginColumns;
pub use spans::SpanRows;
pub use usage::UsageRows;

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

//! Replay: lake files back into rollups and usage. Parquet rows become OTLP
//! data again and go through the same extraction as live data, so replayed
//! rollups are what live ingestion made (attribute values come back from
//! text: integers, doubles and booleans as such, the rest as strings).
//! Usage rows become ledger records: the ledger deduplicates them by id, so
//! replaying twice adds nothing. Rollups have no ids: replay a range into a
//! database that does not have it yet.

use std::collections::HashMap;

use arrow_array::{
    Array, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array, ListArray, MapArray, RecordBatch, StringArray,
    TimestampMillisecondArray, TimestampNanosecondArray, UInt64Array,
};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tally_core::{
    TenantId, UsageRecord,
    lake::LakeSignal,
    otlp::{
        common::v1::{AnyValue, KeyValue, any_value::Value},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        metrics::v1::{
            AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
            HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
            exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        },
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, Status},
    },
    rollup::RollupRow,
};

use crate::rollup::{
    extract::{self, AttributeFilter, TimeRange},
    windows::{Limits, Windows},
};

/// What replay gathers: rollup windows and usage records.
pub struct Replay {
    windows: Windows,
    keep: AttributeFilter,
    range: TimeRange,
    from_ns: u64,
    to_ns: u64,
    usage: Vec<UsageRecord>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, Error> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("column {name}: missing or of another type").into())
}

fn text(a: &StringArray, i: usize) -> String {
    if a.is_null(i) { String::new() } else { a.value(i).to_owned() }
}

fn ns(a: &TimestampNanosecondArray, i: usize) -> u64 {
    if a.is_null(i) { 0 } else { a.value(i).max(0) as u64 }
}

fn id(a: &FixedSizeBinaryArray, i: usize) -> Vec<u8> {
    if a.is_null(i) { Vec::new() } else { a.value(i).to_vec() }
}

/// An attribute value back from its text.
fn value_of(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        Value::IntValue(i)
    } else if let Ok(d) = s.parse::<f64>()
        && s.contains(['.', 'e', 'E'])
    {
        Value::DoubleValue(d)
    } else if s == "true" || s == "false" {
        Value::BoolValue(s == "true")
    } else {
        Value::StringValue(s.to_owned())
    }
}

fn attrs(a: &MapArray, i: usize) -> Vec<KeyValue> {
    if a.is_null(i) {
        return Vec::new();
    }
    let entries = a.value(i);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_any().downcast_ref::<StringArray>(),
        entries.column(1).as_any().downcast_ref::<StringArray>(),
    ) else {
        return Vec::new();
    };
    (0..keys.len())
        .map(|j| KeyValue {
            key: keys.value(j).to_owned(),
            value: (!values.is_null(j)).then(|| AnyValue { value: Some(value_of(values.value(j))) }),
            ..Default::default()
        })
        .collect()
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(Value::StringValue(service.to_owned())) }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn kind_of(s: &str) -> i32 {
    match s {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => 0,
    }
}

fn u64_list(a: &ListArray, i: usize) -> Vec<u64> {
    if a.is_null(i) {
        return Vec::new();
    }
    a.value(i).as_any().downcast_ref::<UInt64Array>().map(|v| v.values().to_vec()).unwrap_or_default()
}

impl Replay {
    /// Replays items timed in `[from_ms, to_ms)`, into windows of `window_ms`.
    pub fn new(window_ms: i64, from_ms: i64, to_ms: i64, metric_attributes: &[String]) -> Replay {
        Replay {
            windows: Windows::new(window_ms, Limits { per_tenant: u32::MAX, per_metric: u32::MAX }),
            keep: AttributeFilter::new(metric_attributes),
            // The range is applied here, on the times extraction uses.
            range: TimeRange { oldest_ms: i64::MIN, newest_ms: i64::MAX, received_ms: from_ms },
            from_ns: from_ms.max(0) as u64 * 1_000_000,
            to_ns: to_ms.max(0) as u64 * 1_000_000,
            usage: Vec::new(),
        }
    }

    fn in_range(&self, t_ns: u64) -> bool {
        (self.from_ns..self.to_ns).contains(&t_ns)
    }

    /// One lake file; returns the rows replayed (those in the range).
    pub fn add_file(&mut self, signal: LakeSignal, bytes: Bytes) -> Result<u64, Error> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        let mut n = 0;
        for batch in reader {
            let batch = batch?;
            n += match signal {
                LakeSignal::Spans => self.spans(&batch)?,
                LakeSignal::Logs => self.logs(&batch)?,
                LakeSignal::Metrics => self.metrics(&batch)?,
                LakeSignal::Usage => self.usage(&batch)?,
            };
        }
        Ok(n)
    }

    /// Rows grouped by (tenant, service), in their order.
    fn groups(
        tenants: &StringArray,
        services: &StringArray,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<((String, String), Vec<usize>)> {
        let mut order: Vec<((String, String), Vec<usize>)> = Vec::new();
        let mut at: HashMap<(String, String), usize> = HashMap::new();
        for i in (0..tenants.len()).filter(|&i| keep(i)) {
            let key = (text(tenants, i), text(services, i));
            let slot = *at.entry(key.clone()).or_insert_with(|| {
                order.push((key, Vec::new()));
                order.len() - 1
            });
            order[slot].1.push(i);
        }
        order
    }

    fn spans(&mut self, b: &RecordBatch) -> Result<u64, Error> {
        let (tenants, services) = (col::<StringArray>(b, "tenant")?, col::<StringArray>(b, "service")?);
        let (trace, span, parent) = (
            col::<FixedSizeBinaryArray>(b, "trace_id")?,
            col::<FixedSizeBinaryArray>(b, "span_id")?,
            col::<FixedSizeBinaryArray>(b, "parent_span_id")?,
        );
        let (names, kinds) = (col::<StringArray>(b, "name")?, col::<StringArray>(b, "kind")?);
        let (start, end) =
            (col::<TimestampNanosecondArray>(b, "start_time")?, col::<TimestampNanosecondArray>(b, "end_time")?);
        let (status, message) = (col::<StringArray>(b, "status_code")?, col::<StringArray>(b, "status_message")?);
        let attributes = col::<MapArray>(b, "attributes")?;
        let mut n = 0;
        // A span counts at its end (as extraction places it).
        let at = |i: usize| if ns(end, i) != 0 { ns(end, i) } else { ns(start, i) };
        for ((tenant, service), rows) in Self::groups(tenants, services, |i| self.in_range(at(i))) {
            let Ok(tenant) = TenantId::parse(&tenant) else { continue };
            let spans: Vec<Span> = rows
                .iter()
                .map(|&i| Span {
                    trace_id: id(trace, i),
                    span_id: id(span, i),
                    parent_span_id: id(parent, i),
                    name: text(names, i),
                    kind: kind_of(kinds.value(i)),
                    start_time_unix_nano: ns(start, i),
                    end_time_unix_nano: ns(end, i),
                    attributes: attrs(attributes, i),
                    status: Some(Status {
                        code: match status.value(i) {
                            "ok" => 1,
                            "error" => 2,
                            _ => 0,
                        },
                        message: text(message, i),
                    }),
                    ..Default::default()
                })
                .collect();
            n += spans.len() as u64;
            let data = [ResourceSpans {
                resource: resource(&service),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }];
            extract::spans(&mut self.windows, &tenant, &self.range, &data);
        }
        Ok(n)
    }

    fn logs(&mut self, b: &RecordBatch) -> Result<u64, Error> {
        let (tenants, services) = (col::<StringArray>(b, "tenant")?, col::<StringArray>(b, "service")?);
        let time = col::<TimestampNanosecondArray>(b, "time")?;
        let (number, severity) = (col::<Int32Array>(b, "severity_number")?, col::<StringArray>(b, "severity_text")?);
        let mut n = 0;
        for ((tenant, service), rows) in Self::groups(tenants, services, |i| self.in_range(ns(time, i))) {
            let Ok(tenant) = TenantId::parse(&tenant) else { continue };
            let log_records: Vec<LogRecord> = rows
                .iter()
                .map(|&i| LogRecord {
                    time_unix_nano: ns(time, i),
                    severity_number: number.value(i),
                    severity_text: text(severity, i),
                    ..Default::default()
                })
                .collect();
            n += log_records.len() as u64;
            let data = [ResourceLogs {
                resource: resource(&service),
                scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
                ..Default::default()
            }];
            extract::logs(&mut self.windows, &tenant, &self.range, &data);
        }
        Ok(n)
    }

    fn metrics(&mut self, b: &RecordBatch) -> Result<u64, Error> {
        let (tenants, services) = (col::<StringArray>(b, "tenant")?, col::<StringArray>(b, "service")?);
        let (names, types) = (col::<StringArray>(b, "name")?, col::<StringArray>(b, "type")?);
        let (temporality, monotonic) = (col::<StringArray>(b, "temporality")?, col::<BooleanArray>(b, "is_monotonic")?);
        let (start, time) =
            (col::<TimestampNanosecondArray>(b, "start_time")?, col::<TimestampNanosecondArray>(b, "time")?);
        let (value, count, sum) =
            (col::<Float64Array>(b, "value")?, col::<UInt64Array>(b, "count")?, col::<Float64Array>(b, "sum")?);
        let (min, max) = (col::<Float64Array>(b, "min")?, col::<Float64Array>(b, "max")?);
        let (buckets, bounds) = (col::<ListArray>(b, "bucket_counts")?, col::<ListArray>(b, "explicit_bounds")?);
        let (scale, zero) = (col::<Int32Array>(b, "exp_scale")?, col::<UInt64Array>(b, "exp_zero_count")?);
        let (pos_off, pos) =
            (col::<Int32Array>(b, "exp_positive_offset")?, col::<ListArray>(b, "exp_positive_counts")?);
        let (neg_off, neg) =
            (col::<Int32Array>(b, "exp_negative_offset")?, col::<ListArray>(b, "exp_negative_counts")?);
        let attributes = col::<MapArray>(b, "attributes")?;
        let opt = |a: &Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        let mut n = 0;
        for ((tenant, service), rows) in Self::groups(tenants, services, |i| self.in_range(ns(time, i))) {
            let Ok(tenant) = TenantId::parse(&tenant) else { continue };
            let metrics: Vec<Metric> = rows
                .iter()
                .filter_map(|&i| {
                    let t = match temporality.is_null(i) {
                        true => 0,
                        false if temporality.value(i) == "delta" => AggregationTemporality::Delta as i32,
                        false => AggregationTemporality::Cumulative as i32,
                    };
                    let number = || NumberDataPoint {
                        attributes: attrs(attributes, i),
                        start_time_unix_nano: ns(start, i),
                        time_unix_nano: ns(time, i),
                        value: opt(value, i).map(number_data_point::Value::AsDouble),
                        ..Default::default()
                    };
                    let data = match types.value(i) {
                        "gauge" => Data::Gauge(Gauge { data_points: vec![number()] }),
                        "sum" => Data::Sum(Sum {
                            data_points: vec![number()],
                            aggregation_temporality: t,
                            is_monotonic: !monotonic.is_null(i) && monotonic.value(i),
                        }),
                        "histogram" => Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: attrs(attributes, i),
                                start_time_unix_nano: ns(start, i),
                                time_unix_nano: ns(time, i),
                                count: count.value(i),
                                sum: opt(sum, i),
                                bucket_counts: u64_list(buckets, i),
                                explicit_bounds: if bounds.is_null(i) {
                                    Vec::new()
                                } else {
                                    bounds
                                        .value(i)
                                        .as_any()
                                        .downcast_ref::<Float64Array>()
                                        .map(|v| v.values().to_vec())
                                        .unwrap_or_default()
                                },
                                min: opt(min, i),
                                max: opt(max, i),
                                ..Default::default()
                            }],
                            aggregation_temporality: t,
                        }),
                        "exponential_histogram" => Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                attributes: attrs(attributes, i),
                                start_time_unix_nano: ns(start, i),
                                time_unix_nano: ns(time, i),
                                count: count.value(i),
                                sum: opt(sum, i),
                                scale: scale.value(i),
                                zero_count: zero.value(i),
                                positive: (!pos.is_null(i))
                                    .then(|| Buckets { offset: pos_off.value(i), bucket_counts: u64_list(pos, i) }),
                                negative: (!neg.is_null(i))
                                    .then(|| Buckets { offset: neg_off.value(i), bucket_counts: u64_list(neg, i) }),
                                min: opt(min, i),
                                max: opt(max, i),
                                ..Default::default()
                            }],
                            aggregation_temporality: t,
                        }),
                        // Summaries are not rolled up.
                        _ => return None,
                    };
                    Some(Metric { name: text(names, i), data: Some(data), ..Default::default() })
                })
                .collect();
            n += metrics.len() as u64;
            let data = [ResourceMetrics {
                resource: resource(&service),
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                ..Default::default()
            }];
            extract::metrics(&mut self.windows, &tenant, &self.range, &self.keep, &data);
        }
        Ok(n)
    }

    fn usage(&mut self, b: &RecordBatch) -> Result<u64, Error> {
        let (tenants, meters) = (col::<StringArray>(b, "tenant")?, col::<StringArray>(b, "meter")?);
        let (sources, ids) = (col::<StringArray>(b, "source")?, col::<StringArray>(b, "event_id")?);
        let (values, times) = (col::<Float64Array>(b, "value")?, col::<TimestampMillisecondArray>(b, "event_time")?);
        let (groups, distinct, hashes) = (
            col::<StringArray>(b, "group_key")?,
            col::<StringArray>(b, "distinct_key")?,
            col::<StringArray>(b, "content_hash")?,
        );
        let mut n = 0;
        for i in 0..b.num_rows() {
            let t = times.value(i);
            if !self.in_range(t.max(0) as u64 * 1_000_000) {
                continue;
            }
            let Ok(tenant) = TenantId::parse(tenants.value(i)) else { continue };
            self.usage.push(UsageRecord {
                tenant,
                source: text(sources, i),
                event_id: text(ids, i),
                meter: meters.value(i).into(),
                value: values.value(i),
                distinct_key: (!distinct.is_null(i)).then(|| distinct.value(i).to_owned()),
                event_time_ms: t,
                group_key: text(groups, i),
                content_hash: text(hashes, i),
                legacy: None,
            });
            n += 1;
        }
        Ok(n)
    }

    /// The rollup windows gathered so far.
    pub fn take_rollups(&mut self) -> Vec<RollupRow> {
        self.windows.take_all()
    }

    /// The usage records gathered so far.
    pub fn take_usage(&mut self) -> Vec<UsageRecord> {
        std::mem::take(&mut self.usage)
    }
}

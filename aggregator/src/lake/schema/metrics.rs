//! The `metrics` schema: one row per data point, whatever its type.

use super::*;

/// One row per data point.
pub struct MetricRows {
    pub(super) rows: usize,
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

/// What every data point type has (for [`PointParts`]).
trait Point {
    fn parts(&self) -> PointParts<'_>;
}

macro_rules! point {
    ($t:ty, $exemplars:expr) => {
        impl Point for $t {
            fn parts(&self) -> PointParts<'_> {
                PointParts {
                    start_ns: self.start_time_unix_nano,
                    time_ns: self.time_unix_nano,
                    flags: self.flags,
                    attributes: &self.attributes,
                    exemplars: $exemplars(self),
                }
            }
        }
    };
}
point!(NumberDataPoint, |p: &NumberDataPoint| exemplars_json(&p.exemplars));
point!(HistogramDataPoint, |p: &HistogramDataPoint| exemplars_json(&p.exemplars));
point!(ExponentialHistogramDataPoint, |p: &ExponentialHistogramDataPoint| exemplars_json(&p.exemplars));
point!(SummaryDataPoint, |_: &SummaryDataPoint| None);

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

    /// Count, sum, min and max of a distribution (null for numbers).
    fn stats(&mut self, count: Option<u64>, sum: Option<f64>, min: Option<f64>, max: Option<f64>) {
        self.count.append_option(count);
        self.sum.append_option(sum);
        self.min.append_option(min);
        self.max.append_option(max);
    }

    fn no_buckets(&mut self) {
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
        self.common(o, m, kind, t, monotonic, p.parts());
        self.value.append_option(match p.value {
            Some(number_data_point::Value::AsDouble(d)) => Some(d),
            Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
            None => None,
        });
        self.stats(None, None, None, None);
        self.no_buckets();
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
        self.common(o, m, "histogram", t, None, p.parts());
        self.value.append_null();
        self.stats(Some(p.count), p.sum, p.min, p.max);
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
        self.common(o, m, "exponential_histogram", t, None, p.parts());
        self.value.append_null();
        self.stats(Some(p.count), p.sum, p.min, p.max);
        self.no_buckets();
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
        self.common(o, m, "summary", None, None, p.parts());
        self.value.append_null();
        self.stats(Some(p.count), Some(p.sum), None, None);
        self.no_buckets();
        self.no_exponential();
        let q: Vec<Value> =
            p.quantile_values.iter().map(|q| json!({"quantile": q.quantile, "value": q.value})).collect();
        self.quantiles.append_value(Value::Array(q).to_string());
    }

    pub(super) fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
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

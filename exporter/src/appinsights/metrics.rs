//! Metric points → Metric items: one envelope per point, one `metrics[]`
//! entry, point attributes as properties (Python's
//! `export/metrics/_exporter.py`), except where marked ⚑.
//!
//! | OTLP | value | count | min / max |
//! |---|---|---|---|
//! | Gauge | the value | 1 | — |
//! | Sum, delta or not monotonic | the value | 1 | — |
//! | Sum, cumulative monotonic | ⚑ the change since the last point (`series.rs`) | 1 | — |
//! | Histogram | sum | count | min / max |
//! | ExponentialHistogram | ⚑ sum (Python sends 0) | count | min / max |
//! | Summary | ⚑ sum | count | — |
//!
//! Cumulative histograms (and summaries) become deltas too; an interval
//! with no new measurement (a zero change) sends nothing, as Python's delta
//! readers send nothing then. Points flagged "no recorded value" and
//! non-finite values are skipped.

use tally_core::{
    canonical,
    otlp::{
        common::v1::{InstrumentationScope, KeyValue},
        metrics::v1::{
            AggregationTemporality, DataPointFlags, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
            NumberDataPoint, metric::Data as MetricKind, number_data_point::Value as Number,
        },
    },
};

use super::{
    envelope::{Data, Envelope, MetricData, MetricPoint, Properties, Tags},
    mapping::Ctx,
    series::{Buckets, HistDelta, HistPoint, SeriesTable, key},
};

pub(crate) fn metric(
    ctx: &Ctx<'_>,
    series: &mut SeriesTable,
    resource: &[KeyValue],
    scope: Option<&InstrumentationScope>,
    metric: &Metric,
    out: &mut Vec<Envelope>,
) {
    let cumulative = |t: i32| t == AggregationTemporality::Cumulative as i32;
    let series_key = |kind: &str, attrs: &[KeyValue]| {
        let mut enc = Vec::new();
        canonical::string(&mut enc, ctx.tenant.as_str());
        canonical::attributes(&mut enc, resource);
        canonical::string(&mut enc, scope.map(|s| s.name.as_str()).unwrap_or_default());
        canonical::string(&mut enc, scope.map(|s| s.version.as_str()).unwrap_or_default());
        canonical::string(&mut enc, &metric.name);
        canonical::string(&mut enc, kind);
        canonical::attributes(&mut enc, attrs);
        key(&enc)
    };
    let emit = |out: &mut Vec<Envelope>, attrs: &[KeyValue], time: u64, value: f64, d: Option<HistDelta>| {
        if !value.is_finite() {
            return;
        }
        let mut properties = Properties::new();
        super::props::add_properties(&mut properties, attrs, super::props::is_tenant);
        let point = MetricPoint {
            ns: None,
            name: metric.name.clone(),
            value,
            count: Some(d.as_ref().map_or(1, |d| d.count)),
            min: d.as_ref().and_then(|d| d.min),
            max: d.as_ref().and_then(|d| d.max),
        };
        let data = Data::MetricData(MetricData { ver: 2, metrics: vec![point], properties });
        ctx.push(out, time, Tags::new(), data, false);
    };
    match &metric.data {
        Some(MetricKind::Gauge(g)) => {
            for p in g.data_points.iter().filter(|p| recorded(p.flags)) {
                if let Some(v) = number(p) {
                    emit(out, &p.attributes, p.time_unix_nano, v, None);
                }
            }
        }
        Some(MetricKind::Sum(s)) => {
            let to_delta = cumulative(s.aggregation_temporality) && s.is_monotonic;
            for p in s.data_points.iter().filter(|p| recorded(p.flags)) {
                let Some(v) = number(p) else { continue };
                if !to_delta {
                    emit(out, &p.attributes, p.time_unix_nano, v, None);
                } else if let Some(d) =
                    series.sum(series_key("sum", &p.attributes), p.start_time_unix_nano, p.time_unix_nano, v)
                    && d != 0.0
                {
                    emit(out, &p.attributes, p.time_unix_nano, d, None);
                }
            }
        }
        Some(MetricKind::Histogram(h)) => {
            for p in h.data_points.iter().filter(|p| recorded(p.flags)) {
                let point = explicit(p);
                let d = if cumulative(h.aggregation_temporality) {
                    series.histogram(
                        series_key("histogram", &p.attributes),
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        point,
                    )
                } else {
                    Some(whole(point))
                };
                if let Some(d) = d.filter(|d| d.count > 0) {
                    emit(out, &p.attributes, p.time_unix_nano, d.sum, Some(d));
                }
            }
        }
        Some(MetricKind::ExponentialHistogram(h)) => {
            for p in h.data_points.iter().filter(|p| recorded(p.flags)) {
                let point = exponential(p);
                let d = if cumulative(h.aggregation_temporality) {
                    series.histogram(
                        series_key("exponential", &p.attributes),
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        point,
                    )
                } else {
                    Some(whole(point))
                };
                if let Some(d) = d.filter(|d| d.count > 0) {
                    emit(out, &p.attributes, p.time_unix_nano, d.sum, Some(d));
                }
            }
        }
        Some(MetricKind::Summary(s)) => {
            // Summaries are cumulative by definition; their quantiles
            // describe the whole life, not the interval: no min/max.
            for p in s.data_points.iter().filter(|p| recorded(p.flags)) {
                let point = HistPoint { count: p.count, sum: p.sum, min: None, max: None, buckets: Buckets::None };
                let d = series.histogram(
                    series_key("summary", &p.attributes),
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    point,
                );
                if let Some(d) = d.filter(|d| d.count > 0) {
                    emit(out, &p.attributes, p.time_unix_nano, d.sum, Some(HistDelta { min: None, max: None, ..d }));
                }
            }
        }
        None => {}
    }
}

fn recorded(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 == 0
}

fn number(p: &NumberDataPoint) -> Option<f64> {
    match p.value? {
        Number::AsInt(i) => Some(i as f64),
        Number::AsDouble(d) => Some(d),
    }
}

fn whole(p: HistPoint) -> HistDelta {
    HistDelta { count: p.count, sum: p.sum, min: p.min, max: p.max }
}

fn explicit(p: &HistogramDataPoint) -> HistPoint {
    HistPoint {
        count: p.count,
        sum: p.sum.unwrap_or(0.0),
        min: p.min,
        max: p.max,
        buckets: Buckets::Explicit { bounds: p.explicit_bounds.clone(), counts: p.bucket_counts.clone() },
    }
}

fn exponential(p: &ExponentialHistogramDataPoint) -> HistPoint {
    let range = |b: &Option<_>| {
        b.as_ref().map_or(
            (0, Vec::new()),
            |b: &tally_core::otlp::metrics::v1::exponential_histogram_data_point::Buckets| {
                (b.offset, b.bucket_counts.clone())
            },
        )
    };
    HistPoint {
        count: p.count,
        sum: p.sum.unwrap_or(0.0),
        min: p.min,
        max: p.max,
        buckets: Buckets::Exponential {
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            positive: range(&p.positive),
            negative: range(&p.negative),
        },
    }
}

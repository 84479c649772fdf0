//! What a request will cost once decoded, found before it is decoded.
//!
//! A message can be tiny on the wire and large in memory: an empty span is
//! 2 bytes of protobuf (or 3 of JSON) and a few hundred bytes decoded, so
//! an 8 MiB body — or an 8 KB gzip of it — could decode into gigabytes.
//! Both encodings are walked here against the OTLP schema without
//! allocating ([`protobuf`], [`json`]), counting the items (spans, log
//! records, data points) and an upper bound of the bytes the decoded
//! structs take: every message's struct size, every string's and byte
//! string's length, 8 bytes per number of a repeated numeric field, and
//! twice the inline size of list elements (a `Vec` grows by doubling). A
//! request over either limit is refused before anything is materialised,
//! so what one request can make tally hold is bounded by the limits.

pub mod json;
pub mod protobuf;

use std::mem::size_of;

use tally_core::otlp::{
    common::v1::{AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        exponential_histogram_data_point, summary_data_point,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span},
};

/// Limits on what one request may decode into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Spans, log records or data points.
    pub max_items: u64,
    /// Bytes the decoded request may take in memory.
    pub max_decoded_bytes: u64,
}

impl DecodeLimits {
    /// No limit (tests, tools).
    pub const NONE: DecodeLimits = DecodeLimits { max_items: u64::MAX, max_decoded_bytes: u64::MAX };
}

/// What a request decodes into.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub items: u64,
    pub bytes: u64,
}

/// Why the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("request holds more than {limit} {noun} (otlp.max_items_per_request)")]
    TooManyItems { limit: u64, noun: &'static str },
    #[error("request would take more than {limit} bytes once decoded (otlp.max_decoded_bytes); send smaller batches")]
    TooLarge { limit: u64 },
    #[error("invalid protobuf: {0}")]
    Malformed(&'static str),
    /// Refused rather than left uncounted: the decoder would take what the
    /// walk did not see.
    #[error("request nests values deeper than {limit} levels")]
    TooDeep { limit: u32 },
}

/// The OTLP message types, for the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    TraceRequest,
    LogsRequest,
    MetricsRequest,
    ResourceSpans,
    ResourceLogs,
    ResourceMetrics,
    Resource,
    EntityRef,
    Scope,
    ScopeSpans,
    ScopeLogs,
    ScopeMetrics,
    Span,
    Event,
    Link,
    Status,
    LogRecord,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    Buckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
}

/// What a field of a message holds, as far as memory goes.
#[derive(Clone, Copy)]
pub(crate) enum Field {
    /// A message (`repeated`: one element of a list).
    Message(Msg, bool),
    /// Repeated numbers: 8 bytes each, packed or not; `true`: fixed-width
    /// (8 bytes each on the wire too), else varints.
    Numbers(bool),
    /// A repeated string: a `String` per element plus its bytes.
    Strings,
    /// Anything else: scalars (inline) and strings/bytes (their length).
    Other,
}

impl Msg {
    /// The decoded struct's size.
    pub(crate) fn size(self) -> u64 {
        (match self {
            Msg::TraceRequest | Msg::LogsRequest | Msg::MetricsRequest => size_of::<Vec<u8>>(),
            Msg::ResourceSpans => size_of::<ResourceSpans>(),
            Msg::ResourceLogs => size_of::<ResourceLogs>(),
            Msg::ResourceMetrics => size_of::<ResourceMetrics>(),
            Msg::Resource => size_of::<Resource>(),
            Msg::EntityRef => size_of::<EntityRef>(),
            Msg::Scope => size_of::<InstrumentationScope>(),
            Msg::ScopeSpans => size_of::<ScopeSpans>(),
            Msg::ScopeLogs => size_of::<ScopeLogs>(),
            Msg::ScopeMetrics => size_of::<ScopeMetrics>(),
            Msg::Span => size_of::<Span>(),
            Msg::Event => size_of::<span::Event>(),
            Msg::Link => size_of::<span::Link>(),
            Msg::Status => size_of::<Status>(),
            Msg::LogRecord => size_of::<LogRecord>(),
            Msg::Metric => size_of::<Metric>(),
            Msg::Gauge => size_of::<Gauge>(),
            Msg::Sum => size_of::<Sum>(),
            Msg::Histogram => size_of::<Histogram>(),
            Msg::ExpHistogram => size_of::<ExponentialHistogram>(),
            Msg::Summary => size_of::<Summary>(),
            Msg::NumberPoint => size_of::<NumberDataPoint>(),
            Msg::HistogramPoint => size_of::<HistogramDataPoint>(),
            Msg::ExpHistogramPoint => size_of::<ExponentialHistogramDataPoint>(),
            Msg::Buckets => size_of::<exponential_histogram_data_point::Buckets>(),
            Msg::SummaryPoint => size_of::<SummaryDataPoint>(),
            Msg::Quantile => size_of::<summary_data_point::ValueAtQuantile>(),
            Msg::Exemplar => size_of::<Exemplar>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::ArrayValue => size_of::<ArrayValue>(),
            Msg::KvList => size_of::<KeyValueList>(),
        }) as u64
    }

    /// Counted against `max_items`.
    pub(crate) fn is_item(self) -> bool {
        matches!(
            self,
            Msg::Span
                | Msg::LogRecord
                | Msg::NumberPoint
                | Msg::HistogramPoint
                | Msg::ExpHistogramPoint
                | Msg::SummaryPoint
        )
    }

    /// The field numbers holding messages or repeated numbers (opentelemetry-proto v1).
    pub(crate) fn field(self, n: u32) -> Field {
        use Field::{Message as M, Numbers, Other, Strings};
        match (self, n) {
            (Msg::TraceRequest, 1) => M(Msg::ResourceSpans, true),
            (Msg::LogsRequest, 1) => M(Msg::ResourceLogs, true),
            (Msg::MetricsRequest, 1) => M(Msg::ResourceMetrics, true),
            (Msg::ResourceSpans | Msg::ResourceLogs | Msg::ResourceMetrics, 1) => M(Msg::Resource, false),
            (Msg::ResourceSpans, 2) => M(Msg::ScopeSpans, true),
            (Msg::ResourceLogs, 2) => M(Msg::ScopeLogs, true),
            (Msg::ResourceMetrics, 2) => M(Msg::ScopeMetrics, true),
            (Msg::Resource, 1) => M(Msg::KeyValue, true),
            (Msg::Resource, 3) => M(Msg::EntityRef, true),
            (Msg::EntityRef, 3 | 4) => Strings,
            (Msg::ScopeSpans | Msg::ScopeLogs | Msg::ScopeMetrics, 1) => M(Msg::Scope, false),
            (Msg::Scope, 3) => M(Msg::KeyValue, true),
            (Msg::ScopeSpans, 2) => M(Msg::Span, true),
            (Msg::ScopeLogs, 2) => M(Msg::LogRecord, true),
            (Msg::ScopeMetrics, 2) => M(Msg::Metric, true),
            (Msg::Span, 9) | (Msg::Event, 3) | (Msg::Link, 4) => M(Msg::KeyValue, true),
            (Msg::Span, 11) => M(Msg::Event, true),
            (Msg::Span, 13) => M(Msg::Link, true),
            (Msg::Span, 15) => M(Msg::Status, false),
            (Msg::LogRecord, 5) => M(Msg::AnyValue, false),
            (Msg::LogRecord, 6) => M(Msg::KeyValue, true),
            (Msg::Metric, 5) => M(Msg::Gauge, false),
            (Msg::Metric, 7) => M(Msg::Sum, false),
            (Msg::Metric, 9) => M(Msg::Histogram, false),
            (Msg::Metric, 10) => M(Msg::ExpHistogram, false),
            (Msg::Metric, 11) => M(Msg::Summary, false),
            (Msg::Metric, 12) => M(Msg::KeyValue, true),
            (Msg::Gauge | Msg::Sum, 1) => M(Msg::NumberPoint, true),
            (Msg::Histogram, 1) => M(Msg::HistogramPoint, true),
            (Msg::ExpHistogram, 1) => M(Msg::ExpHistogramPoint, true),
            (Msg::Summary, 1) => M(Msg::SummaryPoint, true),
            (Msg::NumberPoint, 7) | (Msg::HistogramPoint, 9) | (Msg::ExpHistogramPoint, 1) => M(Msg::KeyValue, true),
            (Msg::SummaryPoint, 7) | (Msg::Exemplar, 7) => M(Msg::KeyValue, true),
            (Msg::NumberPoint, 5) | (Msg::HistogramPoint, 8) | (Msg::ExpHistogramPoint, 11) => M(Msg::Exemplar, true),
            (Msg::HistogramPoint, 6 | 7) => Numbers(true),
            (Msg::Buckets, 2) => Numbers(false),
            (Msg::ExpHistogramPoint, 8 | 9) => M(Msg::Buckets, false),
            (Msg::SummaryPoint, 6) => M(Msg::Quantile, true),
            (Msg::KeyValue, 2) => M(Msg::AnyValue, false),
            (Msg::AnyValue, 5) => M(Msg::ArrayValue, false),
            (Msg::AnyValue, 6) => M(Msg::KvList, false),
            (Msg::ArrayValue, 1) => M(Msg::AnyValue, true),
            (Msg::KvList, 1) => M(Msg::KeyValue, true),
            _ => Other,
        }
    }
}

/// The running count of a walk, checked against the limits as it grows.
pub(crate) struct Tally {
    pub cost: Cost,
    limits: DecodeLimits,
    noun: &'static str,
}

impl Tally {
    pub fn new(limits: DecodeLimits, noun: &'static str) -> Tally {
        Tally { cost: Cost::default(), limits, noun }
    }

    pub fn bytes(&mut self, bytes: u64) -> Result<(), BudgetError> {
        self.cost.bytes = self.cost.bytes.saturating_add(bytes);
        if self.cost.bytes > self.limits.max_decoded_bytes {
            return Err(BudgetError::TooLarge { limit: self.limits.max_decoded_bytes });
        }
        Ok(())
    }

    /// One message of type `msg` (`repeated`: an element of a list, whose
    /// Vec may be up to twice as long as it is full).
    pub fn message(&mut self, msg: Msg, repeated: bool) -> Result<(), BudgetError> {
        if msg.is_item() {
            self.cost.items += 1;
            if self.cost.items > self.limits.max_items {
                return Err(BudgetError::TooManyItems { limit: self.limits.max_items, noun: self.noun });
            }
        }
        self.bytes(msg.size() * if repeated { 2 } else { 1 })
    }

    /// `n` numbers of a repeated numeric field: 8 bytes each in a Vec that may double.
    pub fn numbers(&mut self, n: usize) -> Result<(), BudgetError> {
        self.bytes(16 * n as u64)
    }

    /// One element of a repeated string field.
    pub fn string_element(&mut self, len: usize) -> Result<(), BudgetError> {
        self.bytes(2 * size_of::<String>() as u64 + len as u64)
    }
}

/// Deeper nesting is refused (prost and serde_json refuse beyond 100 and 128 levels).
pub(crate) const MAX_DEPTH: u32 = 100;

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    /// Real SDK batches (the Python SDK's, captured in
    /// tests/data/appinsights, and the Node SDK's OTLP/JSON sample) are
    /// estimated at a few times their size: the default limit
    /// (`max_decoded_bytes` = 8 × `max_request_bytes`) leaves them room.
    #[test]
    fn real_sdk_batches_estimate_a_few_times_their_size() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let capture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{root}/tests/data/appinsights/reference_capture.json")).unwrap(),
        )
        .unwrap();
        let mut ratios = Vec::new();
        for (signal, msg, noun) in [
            ("traces", Msg::TraceRequest, "spans"),
            ("logs", Msg::LogsRequest, "log records"),
            ("metrics", Msg::MetricsRequest, "data points"),
        ] {
            for body in capture["otlp"][signal].as_array().unwrap() {
                let body = base64::engine::general_purpose::STANDARD.decode(body.as_str().unwrap()).unwrap();
                let cost = protobuf::check(&body, msg, DecodeLimits::NONE, noun).unwrap();
                ratios.push((signal, cost.bytes as f64 / body.len() as f64));
            }
        }
        let json = std::fs::read(format!("{root}/tests/clients/sample_node_traces.json")).unwrap();
        let cost = json::check(&json, Msg::TraceRequest, DecodeLimits::NONE, "spans").unwrap();
        ratios.push(("node json", cost.bytes as f64 / json.len() as f64));
        for (what, ratio) in &ratios {
            assert!((1.0..8.0).contains(ratio), "{what}: estimated at {ratio:.1}× its size ({ratios:?})");
        }
        println!("{ratios:?}");
    }
}

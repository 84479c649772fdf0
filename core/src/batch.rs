use std::{sync::Arc, time::SystemTime};

use crate::{
    Signal, TenantId,
    otlp::{
        logs::v1::ResourceLogs,
        metrics::v1::{Metric, ResourceMetrics, metric::Data},
        trace::v1::ResourceSpans,
    },
};

/// Number of data points of a metric, whatever its type.
pub fn data_points(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Decoded OTLP data of one signal, all belonging to one tenant.
#[derive(Debug, Clone)]
pub enum Payload {
    Spans(Vec<ResourceSpans>),
    Logs(Vec<ResourceLogs>),
    Metrics(Vec<ResourceMetrics>),
}

impl Payload {
    pub fn signal(&self) -> Signal {
        match self {
            Payload::Spans(_) => Signal::Spans,
            Payload::Logs(_) => Signal::Logs,
            Payload::Metrics(_) => Signal::MetricPoints,
        }
    }
}

/// What the collector hands downstream: one tenant's share of one request.
#[derive(Debug, Clone)]
pub struct TelemetryBatch {
    pub tenant: TenantId,
    pub received_at: SystemTime,
    /// Number of spans, log records or metric data points in `payload`.
    pub items: u64,
    pub payload: Payload,
}

impl TelemetryBatch {
    pub fn signal(&self) -> Signal {
        self.payload.signal()
    }
}

/// One accepted request's batches (one per tenant) as one consumer of the
/// pipeline receives them: the batches are shared by every consumer (never
/// copied), and each copy of the request carries a share of a memory
/// budget: dropping it, once processed, gives the share back.
pub struct QueuedRequest {
    pub batches: Arc<Vec<TelemetryBatch>>,
    _budget: Arc<dyn std::any::Any + Send + Sync>,
}

impl QueuedRequest {
    /// `budget` is held until the request is dropped (e.g. a semaphore permit).
    pub fn new(batches: Vec<TelemetryBatch>, budget: impl std::any::Any + Send + Sync) -> QueuedRequest {
        QueuedRequest { batches: Arc::new(batches), _budget: Arc::new(budget) }
    }

    /// One consumer's copy of shared batches, holding `budget` (shared with
    /// other consumers, or its own).
    pub fn shared(batches: Arc<Vec<TelemetryBatch>>, budget: Arc<dyn std::any::Any + Send + Sync>) -> QueuedRequest {
        QueuedRequest { batches, _budget: budget }
    }
}

impl std::fmt::Debug for QueuedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedRequest").field("batches", &self.batches).finish_non_exhaustive()
    }
}

//! tally's data model, shared by every stage: tenants, signals, the telemetry
//! batches that travel from the collector to downstream stages, the names of
//! tally's own metrics, and a `Secret` wrapper for config values. No I/O here.

pub mod alert;
pub mod attributes;
mod auth;
mod batch;
pub mod canonical;
pub mod histogram;
pub mod lake;
pub mod lenient;
pub mod meter;
pub mod metric_names;
pub mod redact;
pub mod rollup;
mod secret;
mod signal;
mod tenant;
mod usage;

pub use auth::Principal;
pub use batch::{Payload, QueuedRequest, TelemetryBatch, data_points};
pub use histogram::{Histogram, HistogramError, HistogramSum};
pub use meter::{Aggregation, JsonPath, MeterConfig};
pub use secret::Secret;
pub use signal::{Signal, Transport};
pub use tenant::{TenantError, TenantId};
pub use usage::{CumulativePoint, DAY_MS, HOUR_MS, LegacyKeys, UsageOutcome, UsageRecord, hour_start, now_ms};

/// The OTLP protobuf types tally works with, re-exported so downstream crates
/// agree on one version.
pub use opentelemetry_proto::tonic as otlp;

//! Application Insights: the connection string, the envelope model with
//! its limits, the OTLP → envelope [`Mapper`] (tenant-aware, with
//! cumulative-to-delta metrics), trace-id sampling and the per-tenant usage
//! metrics (pure, no I/O); and on top, [`client`] (one track call and what
//! its answer means per item) and [`forwarder`] (the pipeline branch: a
//! bounded buffer, batches, retries, the daily cap) fed by the pipeline
//! and by [`usage_feed`] (per-tenant usage from the ledger).
//!
//! The mapping, its deliberate differences from Microsoft's exporter and
//! example KQL are in this folder's README.md; `golden_tests.rs` checks the
//! mapping field by field against a capture of Microsoft's exporter
//! (tests/data/appinsights/).

pub mod client;
pub mod config;
mod connection_string;
pub mod envelope;
pub mod forwarder;
mod logs;
mod mapping;
mod metrics;
mod props;
mod sampling;
mod series;
mod spans;
pub mod spool;
mod usage;
pub mod usage_feed;

#[cfg(test)]
mod envelope_tests;
#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod mapping_tests;

pub use config::AppInsightsConfig;
pub use connection_string::{ConnectionString, DEFAULT_AAD_AUDIENCE, DEFAULT_INGESTION_ENDPOINT};
pub use envelope::{Data, Envelope, EnvelopeTime, format_duration, truncate};
pub use logs::LOG_BODY_PROPERTY;
pub use mapping::{Mapper, MapperConfig, SDK_VERSION};
pub use props::TENANT_PROPERTY;
pub use sampling::{keep_trace, sample_logs, sample_spans, sampling_score};
pub use usage::{
    PERIOD_TOTAL_METRIC, PeriodTotal, USAGE_METRIC, USAGE_ROLE, UsageWindow, billing_period, period_total_envelope,
    usage_envelope, window_id,
};

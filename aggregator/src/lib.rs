//! tally's downstream stages, fed by the collector's bounded queue.
//!
//! [`RollupStage`] rolls spans, logs and metric points up per tenant into
//! windows (requests, errors, HDR latency histograms, log severities,
//! gauges, metric histograms), writes them to the store when they close, and
//! counts accepted items per tenant; [`maintain`] downsamples and expires
//! the stored rollups; [`alert::AlertEngine`] evaluates alert rules over
//! them and writes state changes and notifications. Parquet batching comes
//! later.

pub mod alert;
mod config;
pub mod rollup;

pub use config::{PipelineConfig, RollupConfig};
pub use rollup::{
    maintenance::{MaintenanceReport, maintain, run_maintenance},
    stage::RollupStage,
};

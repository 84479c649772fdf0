//! tally's downstream stages, fed by the collector's bounded queue.
//!
//! [`RollupStage`] rolls spans, logs and metric points up per tenant into
//! windows (requests, errors, HDR latency histograms, log severities,
//! gauges, metric histograms), writes them to the store when they close, and
//! counts accepted items per tenant; [`maintain`] downsamples and expires
//! the stored rollups. Alert evaluation and Parquet batching come later.

mod config;
pub mod rollup;

pub use config::{PipelineConfig, RollupConfig};
pub use rollup::{
    maintenance::{MaintenanceReport, maintain, run_maintenance},
    stage::RollupStage,
};

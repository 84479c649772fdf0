//! tally's downstream stages, fed by the collector's bounded queue.
//!
//! [`RollupStage`] rolls spans, logs and metric points up per tenant into
//! windows (requests, errors, HDR latency histograms, log severities,
//! gauges, metric histograms), writes them to the store when they close, and
//! counts accepted items per tenant; [`maintain`] downsamples and expires
//! the stored rollups; [`entitlements::Entitlements`] answers "may this
//! tenant still use this meter?" from memory; [`alert::AlertEngine`] evaluates alert rules over
//! them and writes state changes and notifications; [`lake`] writes every
//! request into Parquet files in the spool, for the uploader to move to the
//! object store.

pub mod alert;
mod config;
pub mod entitlements;
pub mod lake;
pub mod rollup;

pub use config::RollupConfig;
pub use rollup::{
    maintenance::{MaintenanceReport, maintain, run_maintenance},
    stage::RollupStage,
};

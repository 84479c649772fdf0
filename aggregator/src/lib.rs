//! tally's downstream stages, fed by the collector's bounded queue.
//!
//! For now one stage, [`IngestCounter`], counts accepted items per tenant and
//! signal and adds them to the store; the rollup windows, HDR latency,
//! alert evaluation and Parquet batching replace it in later work.

mod config;
mod counter;

pub use config::PipelineConfig;
pub use counter::IngestCounter;

use std::time::Duration;

use serde::Deserialize;

/// `[pipeline]`: the queue between receivers and downstream stages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Requests the queue holds before receivers push back (429/UNAVAILABLE).
    pub queue_capacity: usize,
    /// Request bytes (decompressed wire size) the queue may hold; bounds
    /// tally's memory under load, decoded data taking a few times this.
    pub max_queued_bytes: usize,
    /// How often downstream state is written to the database.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

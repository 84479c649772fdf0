use std::time::Duration;

use serde::Deserialize;

/// `[rollups]`: per-tenant telemetry windows, limits and retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupConfig {
    /// Width of a window; divides an hour (e.g. 10s, 30s, 1m, 5m).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long after a window ends it stays open for late data before it is
    /// written. Data arriving later still counts: it is merged into the
    /// stored row.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// How often the open windows' data so far is written (merged into the
    /// stored rows), so queries and alerts see the current window; zero
    /// writes a window only once it has closed.
    #[serde(with = "humantime_serde")]
    pub partial_flush_interval: Duration,
    /// Data timestamped further ahead than this is refused (`too_new`).
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Series one tenant may have in one window; more fold into an overflow series.
    pub max_series_per_tenant: u32,
    /// Series per metric (span and log series: per service) in one window.
    pub max_series_per_metric: u32,
    /// Point attributes kept on gauge and histogram series; empty keeps all.
    #[serde(deserialize_with = "tally_core::lenient::string_list")]
    pub metric_attributes: Vec<String>,
    /// Window rows become hour rows after this; older data is refused (`too_old`).
    #[serde(with = "humantime_serde")]
    pub window_retention: Duration,
    /// Hour rows become day rows after this.
    #[serde(with = "humantime_serde")]
    pub hour_retention: Duration,
    /// Day rows are deleted after this.
    #[serde(with = "humantime_serde")]
    pub day_retention: Duration,
    /// How often the leader downsamples and expires rollups.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// Open rows written at shutdown at most; beyond, the rest are dropped
    /// (counted in `tally_rollup_dropped_rows_total`). While running, rows
    /// go to the writer a chunk at a time through a bounded queue.
    pub max_pending_rows: usize,
}

impl RollupConfig {
    pub fn validate(&self) -> Result<(), String> {
        let w = self.window.as_millis();
        if w < 1000 || !w.is_multiple_of(1000) || !3_600_000u128.is_multiple_of(w) {
            return Err(format!("rollups.window: {w} ms must be whole seconds dividing an hour (e.g. 10s, 1m, 5m)"));
        }
        const DAY: u128 = 86_400_000;
        let (wr, hr, dr) =
            (self.window_retention.as_millis(), self.hour_retention.as_millis(), self.day_retention.as_millis());
        if wr < DAY + self.allowed_lateness.as_millis() {
            return Err("rollups.window_retention: must be at least 1 day plus allowed_lateness".into());
        }
        if hr <= wr || dr <= hr {
            return Err("rollups: window_retention < hour_retention < day_retention must hold".into());
        }
        if self.max_series_per_tenant == 0 || self.max_series_per_metric == 0 {
            return Err("rollups.max_series_per_tenant and max_series_per_metric: must be at least 1".into());
        }
        Ok(())
    }
}

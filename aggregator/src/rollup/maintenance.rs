//! Downsampling and retention, run by one leader: window rows older than
//! `window_retention` become hour rows, hour rows older than
//! `hour_retention` become day rows, day rows older than `day_retention` are
//! deleted. Each step moves one whole chunk (a partition on PostgreSQL) in
//! one transaction, so the work is idempotent and a crash counts nothing
//! twice; on PostgreSQL an advisory lock makes one replica do it.

use std::time::Duration;

use tally_core::{DAY_MS, HOUR_MS, metric_names, now_ms};
use tally_store::{RollupTable, Store};
use tokio_util::sync::CancellationToken;

use crate::RollupConfig;

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Chunks moved or dropped.
    pub chunks: u64,
    /// Rows read from the finer tables.
    pub rows: u64,
    /// Chunks left alone because another replica holds the lock.
    pub skipped: u64,
    /// Chunks that failed (logged; tried again next pass).
    pub failed: u64,
}

/// One pass as of `now_ms`.
pub async fn maintain(store: &Store, config: &RollupConfig, now_ms: i64) -> tally_store::Result<MaintenanceReport> {
    let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
    let steps = [
        (RollupTable::Windows, Some((RollupTable::Hours, HOUR_MS)), ms(config.window_retention)),
        (RollupTable::Hours, Some((RollupTable::Days, DAY_MS)), ms(config.hour_retention)),
        (RollupTable::Days, None, ms(config.day_retention)),
    ];
    let mut report = MaintenanceReport::default();
    for (from, into, retention) in steps {
        for chunk in store.expired_rollup_chunks(from, now_ms - retention).await? {
            match store.downsample_rollup_chunk(from, chunk, into).await {
                // One chunk that fails (e.g. a row that will not write) must not
                // stop the others; it is tried again next pass.
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(table = from.name(), chunk_start_ms = chunk, error = %e, "rollup chunk not downsampled");
                }
                Ok(Some(rows)) => {
                    report.chunks += 1;
                    report.rows += rows;
                    metrics::counter!(metric_names::ROLLUP_DOWNSAMPLED_ROWS, "table" => from.name()).increment(rows);
                    tracing::info!(
                        table = from.name(),
                        chunk_start_ms = chunk,
                        rows,
                        "rollup chunk downsampled/expired"
                    );
                }
                Ok(None) => report.skipped += 1,
            }
        }
    }
    Ok(report)
}

/// Runs [`maintain`] every `maintenance_interval` until `stop`.
pub async fn run_maintenance(store: Store, config: RollupConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = maintain(&store, &config, now_ms()).await {
                    tracing::warn!(error = %e, "rollup maintenance failed; will retry next interval");
                }
            }
        }
    }
}

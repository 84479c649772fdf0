//! Usage to the lake: the ledger (the billing record) is exported to
//! Parquet files `usage/tenant=…/date=…/hour=…` (hour of the event time) in
//! ranges of receipt time, `lake.usage_export_lag` behind (one minute), so
//! transactions in flight have committed. The database's watermark moves only after the
//! range's files are complete in the spool (and by compare-and-set: one
//! replica per range), so usage is never left out; a crash between the two
//! exports the range again (replay deduplicates by event id).

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use tally_core::{
    lake::{LakeSignal, Spool, hour_of_ns},
    now_ms,
};
use tally_store::Store;
use tokio_util::sync::CancellationToken;

use super::{FileKey, FileLimits, LakeFiles, schema::Rows};

/// Exports the usage ledger to the lake's `usage/` files: every
/// `usage_export_interval`, the records received since the watermark (less
/// `usage_export_lag`, so transactions in flight have committed) are
/// written as Parquet into the spool, and the watermark is moved by
/// compare-and-set, so one replica exports each range.
pub struct UsageExport {
    pub store: Store,
    /// Files go here, for the uploader, like the writer's.
    pub spool: Arc<Spool>,
    pub writer_id: String,
    pub row_group_rows: usize,
    pub interval: Duration,
    /// Usage received more recently than this is left for the next run
    /// (its transaction may still be in flight); also the step, up to a minute.
    pub lag: Duration,
    /// The last file sequence number used (names never repeat).
    pub seq: Arc<AtomicU64>,
}

impl UsageExport {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.catch_up(now_ms()).await {
                tracing::warn!(error = %e, "exporting usage to the lake failed; will retry");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Exports every complete step up to `now_ms - lag`; returns the rows written.
    pub async fn catch_up(&self, now_ms: i64) -> Result<usize, String> {
        let lag = self.lag.as_millis().min(i64::MAX as u128) as i64;
        let step = lag.clamp(1000, 60_000);
        let mut written = 0;
        let mut from = self.store.lake_usage_watermark().await.map_err(|e| e.to_string())?;
        if from == 0 {
            // First run: start at the oldest usage (or now).
            let oldest = self.store.oldest_usage_received().await.map_err(|e| e.to_string())?;
            let start = oldest.unwrap_or(now_ms - lag);
            if !self.store.advance_lake_usage_watermark(0, start).await.map_err(|e| e.to_string())? {
                return Ok(0);
            }
            from = start;
        }
        while from + step <= now_ms - lag {
            let to = from + step;
            let records = self.store.usage_received(from, to).await.map_err(|e| e.to_string())?;
            let n = records.len();
            // Encoding and fsync are blocking work.
            let (spool, writer, seq, rows) =
                (self.spool.clone(), format!("{}-usage", self.writer_id), self.seq.clone(), self.row_group_rows);
            let files = tokio::task::spawn_blocking(move || write(&records, spool, &writer, &seq, rows))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if !self.store.advance_lake_usage_watermark(from, to).await.map_err(|e| e.to_string())? {
                // Another replica exported this range meanwhile.
                for (path, size) in files {
                    if tokio::fs::remove_file(path).await.is_ok() {
                        self.spool.removed(size);
                    }
                }
                return Ok(written);
            }
            written += n;
            from = to;
        }
        Ok(written)
    }
}

/// Writes `records` into complete files in the spool; returns their paths and sizes.
fn write(
    records: &[tally_core::UsageRecord],
    spool: Arc<Spool>,
    writer: &str,
    seq: &AtomicU64,
    row_group_rows: usize,
) -> std::io::Result<Vec<(PathBuf, u64)>> {
    use std::sync::atomic::Ordering;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let limits = FileLimits {
        max_file_bytes: u64::MAX,
        max_file_age_ms: i64::MAX,
        row_group_rows,
        max_buffered_bytes: 32 << 20,
        // Usage is small and kept longest: compress harder.
        zstd_level: 9,
    };
    let first = seq.load(Ordering::Relaxed).max(now_ms().max(0) as u64 * 1000);
    let mut files = LakeFiles::new_shared(spool, writer, limits, first)?;
    for r in records {
        let hour = hour_of_ns(r.event_time_ms.max(0) as u64 * 1_000_000);
        let key = FileKey { signal: LakeSignal::Usage, tenant: r.tenant.as_str().to_owned(), hour_ms: hour };
        if let Rows::Usage(rows) = files.rows(&key, now_ms())? {
            rows.push(r);
        }
        files.added(&key, r.event_id.len() + r.group_key.len() + 64)?;
    }
    let done = files.close_all();
    seq.store(files.seq(), Ordering::Relaxed);
    done
}

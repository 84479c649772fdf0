//! The Parquet lake, wired: its object store, its spool, the writer on its
//! branch of the pipeline, the usage export and the uploader.

use std::sync::{Arc, atomic::AtomicU64};

use anyhow::Context;
use tally_collector::PipelineReceiver;
use tally_core::lake::Spool;
use tally_exporter::lake::{Uploader, open_lake};
use tally_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, config::EnvLookup};

/// The lake's writer thread, usage export and uploader.
pub struct RunningLake {
    thread: std::thread::JoinHandle<()>,
    /// Set at shutdown: acknowledged data is written even past the spool limit.
    draining: Arc<std::sync::atomic::AtomicBool>,
    uploader: JoinHandle<()>,
    usage: JoinHandle<()>,
    writer_done: CancellationToken,
    upload_stop: CancellationToken,
}

/// Opens the lake's object store, resumes the spool (files left by an
/// earlier run are uploaded too) and starts the writer on `rx`, the usage
/// export and the uploader.
pub fn start(config: &Config, store: &Store, env: EnvLookup<'_>, rx: PipelineReceiver) -> anyhow::Result<RunningLake> {
    let lake = open_lake(&config.lake_url, &config.data_dir, env).map_err(anyhow::Error::msg)?;
    let dir = config.spool_dir();
    let spool = Arc::new(Spool::open(&dir).with_context(|| format!("opening the lake spool {}", dir.display()))?);
    if spool.bytes() > 0 {
        tracing::info!(bytes = spool.bytes(), spool = %dir.display(), "resuming the upload of spooled lake files");
    }
    let writer = tally_aggregator::lake::start_writer(&config.lake, spool.clone(), rx)
        .with_context(|| format!("starting the lake writer in {}", dir.display()))?;
    tracing::info!(lake = %lake.description, spool = %dir.display(), "writing the Parquet lake");
    let (writer_done, upload_stop) = (CancellationToken::new(), CancellationToken::new());
    let usage = tally_aggregator::lake::UsageExport {
        store: store.clone(),
        spool: spool.clone(),
        writer_id: config.lake.writer(),
        row_group_rows: config.lake.row_group_rows,
        interval: config.lake.usage_export_interval,
        lag: config.lake.usage_export_lag,
        seq: Arc::new(AtomicU64::new(0)),
    };
    let usage = tokio::spawn(usage.run(writer_done.clone()));
    let uploader = Uploader { lake, spool, max_backoff: config.lake.max_upload_backoff };
    let uploader = tokio::spawn(uploader.run(writer_done.clone(), upload_stop.clone()));
    Ok(RunningLake { thread: writer.thread, draining: writer.draining, uploader, usage, writer_done, upload_stop })
}

impl RunningLake {
    /// The listeners have stopped: what was acknowledged is written even
    /// past the spool limit, so the lake's branch drains.
    pub fn drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Once its branch of the pipeline has closed: the writer closes its
    /// files, the uploader uploads them (for up to `timeout`; what is left
    /// is uploaded after restart).
    pub async fn finish(self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let RunningLake { thread, mut uploader, usage, writer_done, upload_stop, .. } = self;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        writer_done.cancel();
        let _ = usage.await;
        if tokio::time::timeout(timeout, &mut uploader).await.is_err() {
            upload_stop.cancel();
            let _ = uploader.await;
        }
        match joined {
            Ok(Ok(())) => Ok(()),
            _ => Err(anyhow::anyhow!("the lake writer panicked")),
        }
    }
}

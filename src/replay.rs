//! `tally replay`: reads the lake for a time range (and tenant) and
//! rebuilds the rollups from spans, logs and metrics, and re-derives usage
//! into the ledger where it is missing (deduplicated by id: replaying twice
//! adds nothing). Rollups carry no ids: replay a range into a database that
//! does not hold it (e.g. a new one). Progress goes to stderr.

use std::{io::Write, time::Instant};

use anyhow::Context;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, path::Path as ObjectPath};
use serde_json::{Value, json};
use tally_aggregator::lake::Replay;
use tally_core::{HOUR_MS, TenantId, UsageOutcome, lake::LakeSignal, now_ms};
use tally_exporter::lake::open_lake;
use tally_store::{RollupTable, Store};

use crate::{Config, config::EnvLookup};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Start of the range, RFC 3339 (e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    pub from: String,
    /// End of the range (exclusive), RFC 3339.
    #[arg(long)]
    pub to: String,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Signals to replay, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "spans,logs,metrics,usage")]
    pub signals: Vec<String>,
}

/// Rows written per database transaction.
const CHUNK: usize = 5000;

/// The hour a lake path's partitions name, and its tenant.
fn partitions(path: &str) -> Option<(String, i64)> {
    let (mut tenant, mut date, mut hour) = (None, None, None);
    for part in path.split('/') {
        if let Some(v) = part.strip_prefix("tenant=") {
            tenant = Some(v.to_owned());
        } else if let Some(v) = part.strip_prefix("date=") {
            date = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok();
        } else if let Some(v) = part.strip_prefix("hour=") {
            hour = v.parse::<u32>().ok();
        }
    }
    let at = date?.and_hms_opt(hour?, 0, 0)?.and_utc().timestamp_millis();
    Some((tenant?, at))
}

pub async fn run(config: &Config, args: &ReplayArgs, env: EnvLookup<'_>) -> anyhow::Result<Value> {
    let time = |field: &str, s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .with_context(|| format!("--{field}: {s:?} is not an RFC 3339 time"))
    };
    let (from_ms, to_ms) = (time("from", &args.from)?, time("to", &args.to)?);
    anyhow::ensure!(from_ms < to_ms, "--from must be before --to");
    let tenant = args.tenant.as_deref().map(TenantId::parse).transpose().context("--tenant")?;
    let signals: Vec<LakeSignal> = args
        .signals
        .iter()
        .map(|s| LakeSignal::ALL.into_iter().find(|l| l.as_str() == s).with_context(|| format!("--signals: {s:?}")))
        .collect::<anyhow::Result<_>>()?;
    let store = crate::database::open(config, env).await?.store;
    store.migrate().await?;
    let lake = open_lake(&config.lake_url, &config.data_dir, env).map_err(anyhow::Error::msg)?;
    eprintln!("replay: {} → {}", lake.description, config.database_description());
    let started = Instant::now();
    let mut summary = serde_json::Map::new();
    let (mut rollup_rows, mut accepted, mut duplicates, mut conflicts) = (0usize, 0usize, 0usize, 0usize);
    for signal in signals {
        // A metric's points share the file of its first point's hour (files
        // before 2026-11-22: the hour it was received): an hour of slack on
        // either side.
        let slack = if signal == LakeSignal::Metrics { HOUR_MS } else { 0 };
        let prefix = match lake.prefix.as_ref() {
            "" => ObjectPath::from(signal.as_str()),
            p => ObjectPath::from(format!("{p}/{}", signal.as_str())),
        };
        let mut files: Vec<ObjectPath> = lake
            .store
            .list(Some(&prefix))
            .try_filter_map(|meta| async move { Ok(Some(meta.location)) })
            .try_collect::<Vec<_>>()
            .await
            .with_context(|| format!("listing {prefix}"))?
            .into_iter()
            .filter(|p| p.as_ref().ends_with(".parquet"))
            .filter(|p| {
                partitions(p.as_ref()).is_some_and(|(t, hour)| {
                    tenant.as_ref().is_none_or(|want| want.as_str() == t)
                        && hour + HOUR_MS + slack > from_ms
                        && hour - slack < to_ms
                })
            })
            .collect();
        files.sort();
        let mut replay =
            Replay::new(config.rollups.window.as_millis() as i64, from_ms, to_ms, &config.rollups.metric_attributes);
        let mut rows = 0u64;
        for (i, path) in files.iter().enumerate() {
            let bytes = lake.store.get(path).await.with_context(|| format!("reading {path}"))?.bytes().await?;
            let n = replay.add_file(signal, bytes).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            rows += n;
            eprint!("\rreplay: {} [{}/{}] {rows} rows   ", signal.as_str(), i + 1, files.len());
            let _ = std::io::stderr().flush();
            // Keep memory bounded on long ranges: write what is gathered.
            if (i + 1) % 50 == 0 {
                rollup_rows += write_rollups(&store, replay.take_rollups()).await?;
            }
            if signal == LakeSignal::Usage {
                for r in record(&store, replay.take_usage()).await? {
                    match r {
                        UsageOutcome::Accepted => accepted += 1,
                        UsageOutcome::Duplicate => duplicates += 1,
                        UsageOutcome::Conflict => conflicts += 1,
                    }
                }
            }
        }
        rollup_rows += write_rollups(&store, replay.take_rollups()).await?;
        if !files.is_empty() {
            eprintln!();
        }
        summary.insert(signal.as_str().to_owned(), json!({"files": files.len(), "rows": rows}));
    }
    store.close().await;
    summary.insert("rollup_rows_written".into(), json!(rollup_rows));
    summary.insert("usage".into(), json!({"accepted": accepted, "duplicate": duplicates, "conflict": conflicts}));
    summary.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    Ok(Value::Object(summary))
}

async fn write_rollups(store: &Store, rows: Vec<tally_core::rollup::RollupRow>) -> anyhow::Result<usize> {
    for chunk in rows.chunks(CHUNK) {
        store.write_rollups(RollupTable::Windows, chunk).await.context("writing rollups")?;
    }
    Ok(rows.len())
}

async fn record(store: &Store, records: Vec<tally_core::UsageRecord>) -> anyhow::Result<Vec<UsageOutcome>> {
    let mut out = Vec::with_capacity(records.len());
    for chunk in records.chunks(CHUNK) {
        out.extend(store.record_usage(chunk, &[], now_ms()).await.context("writing usage to the ledger")?);
    }
    Ok(out)
}

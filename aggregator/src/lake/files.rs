//! Open Parquet files, one per (signal, tenant, hour): rows gather in
//! column builders and are encoded into the file one row group at a time;
//! the file is closed when it reaches `max_file_bytes` or `max_file_age` (or
//! at shutdown). A file is written under `<spool>/.open/` and renamed into
//! its partition folder of the spool only once complete, so the uploader
//! never sees half a file.
//!
//! Memory: the rows waiting in builders are the only per-file state that
//! grows (no encoder outlives its row group), and all files together hold at
//! most `max_buffered_bytes` of them: past it, the file holding most is
//! encoded early, as a smaller row group. Many busy tenants thus mean
//! smaller row groups, not more memory.

// Runs on the lake writer's own thread (see `lake::start_writer`), where
// blocking file calls are what it is for.
#![allow(clippy::disallowed_methods)]

use std::{collections::HashMap, fs::File, path::PathBuf, sync::Arc};

use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, Encoding, ZstdLevel},
    file::{
        metadata::KeyValue,
        properties::{EnabledStatistics, WriterProperties},
    },
    schema::types::ColumnPath,
};
use tally_core::{
    lake::{LakeSignal, Spool, lake_path},
    metric_names,
};

use super::schema::Rows;

/// What a file is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub signal: LakeSignal,
    pub tenant: String,
    pub hour_ms: i64,
}

struct OpenFile {
    rows: Rows,
    /// Approximate bytes of the rows in `rows` (see [`LakeFiles::added`]).
    buffered: usize,
    writer: Option<ArrowWriter<File>>,
    open_path: PathBuf,
    lake_path: String,
    opened_ms: i64,
}

/// Page and dictionary-page size limit.
const PAGE_BYTES: usize = 64 << 10;
/// Files open at once; opening one more closes the oldest.
const MAX_OPEN_FILES: usize = 512;
/// Row groups per file: a file's row-group metadata stays in memory until
/// it closes, so a file cut into many small row groups (many busy tenants
/// sharing the row buffer) closes early rather than growing that.
const MAX_ROW_GROUPS: usize = 128;

/// File limits and batching.
#[derive(Debug, Clone)]
pub struct FileLimits {
    pub max_file_bytes: u64,
    pub max_file_age_ms: i64,
    /// Most rows per row group.
    pub row_group_rows: usize,
    /// Rows waiting in builders, all open files together (approximate bytes).
    pub max_buffered_bytes: usize,
    /// zstd level (1–22).
    pub zstd_level: i32,
}

/// The lake writer's open Parquet files, one per (signal, tenant, hour),
/// within one buffer budget; closed files are renamed into the spool.
pub struct LakeFiles {
    /// Where files are written and, complete, handed to the uploader.
    spool: Arc<Spool>,
    writer_id: String,
    seq: u64,
    limits: FileLimits,
    open: HashMap<FileKey, OpenFile>,
    /// Sum of the open files' `buffered`.
    buffered: usize,
}

fn properties(signal: LakeSignal, limits: &FileLimits) -> WriterProperties {
    let row_group_rows = limits.row_group_rows;
    let zstd = ZstdLevel::try_new(limits.zstd_level).map(Compression::ZSTD).unwrap_or(Compression::SNAPPY);
    let mut b = WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        // The writer keeps every row group's metadata until the file closes:
        // statistics only where readers filter (below), not on attributes.
        .set_statistics_enabled(EnabledStatistics::None)
        // Every column of every open file buffers a page and a dictionary:
        // smaller limits keep many open files affordable.
        .set_data_page_size_limit(PAGE_BYTES)
        .set_dictionary_page_size_limit(PAGE_BYTES)
        .set_key_value_metadata(Some(vec![KeyValue::new("tally.schema".to_owned(), format!("{}/1", signal.as_str()))]));
    // Times and durations: delta encoding, no dictionary. Ids: random, no dictionary.
    let (times, ids): (&[&str], &[&str]) = match signal {
        LakeSignal::Spans => (&["start_time", "end_time", "duration_ns"], &["trace_id", "span_id", "parent_span_id"]),
        LakeSignal::Logs => (&["time", "observed_time"], &["trace_id", "span_id"]),
        LakeSignal::Metrics => (&["start_time", "time"], &[]),
        LakeSignal::Usage => (&["event_time"], &["event_id"]),
    };
    // Statistics: per page on the time a row is filed under, per row group
    // on the columns people filter on.
    let (page_stats, chunk_stats): (&str, &[&str]) = match signal {
        LakeSignal::Spans => ("start_time", &["tenant", "service", "name", "kind", "status_code", "duration_ns"]),
        LakeSignal::Logs => ("time", &["tenant", "service", "severity_number"]),
        LakeSignal::Metrics => ("time", &["tenant", "service", "name", "type"]),
        LakeSignal::Usage => ("event_time", &["tenant", "meter", "source"]),
    };
    b = b.set_column_statistics_enabled(ColumnPath::from(page_stats), EnabledStatistics::Page);
    for c in chunk_stats {
        b = b.set_column_statistics_enabled(ColumnPath::from(*c), EnabledStatistics::Chunk);
    }
    for c in times {
        b = b
            .set_column_encoding(ColumnPath::from(*c), Encoding::DELTA_BINARY_PACKED)
            .set_column_dictionary_enabled(ColumnPath::from(*c), false);
    }
    for c in ids {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), false);
    }
    b.build()
}

impl LakeFiles {
    /// Starts over in `spool`: files left open by a crash are incomplete
    /// (no footer) and removed.
    pub fn new(spool: Arc<Spool>, writer_id: &str, limits: FileLimits) -> std::io::Result<Self> {
        let open_dir = spool.open_dir();
        if open_dir.exists() {
            for e in std::fs::read_dir(&open_dir)?.flatten() {
                tracing::warn!(file = %e.path().display(), "removing a lake file left incomplete by a crash");
                let _ = std::fs::remove_file(e.path());
            }
        }
        // File names sort by creation: sequence numbers start at the clock.
        let seq = tally_core::now_ms().max(0) as u64 * 1000;
        LakeFiles::new_shared(spool, writer_id, limits, seq)
    }

    /// Another set of files in a spool already in use (its open files are
    /// left alone); `writer_id` must differ from the others'.
    /// Names continue after sequence number `seq`.
    pub fn new_shared(spool: Arc<Spool>, writer_id: &str, limits: FileLimits, seq: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(spool.open_dir())?;
        Ok(LakeFiles { spool, writer_id: writer_id.to_owned(), seq, limits, open: HashMap::new(), buffered: 0 })
    }

    /// The last sequence number used.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The rows of the file for `key`, opened if needed (closing the
    /// oldest file when too many are open).
    pub fn rows(&mut self, key: &FileKey, now_ms: i64) -> std::io::Result<&mut Rows> {
        if !self.open.contains_key(key) {
            if self.open.len() >= MAX_OPEN_FILES
                && let Some(oldest) = self.open.iter().min_by_key(|(_, f)| f.opened_ms).map(|(k, _)| k.clone())
            {
                self.close(&oldest)?;
            }
            self.seq += 1;
            let lake_path = lake_path(key.signal, &key.tenant, key.hour_ms, &self.writer_id, self.seq);
            let name = lake_path.replace('/', "_");
            let f = OpenFile {
                rows: Rows::new(key.signal),
                buffered: 0,
                writer: None,
                open_path: self.spool.open_dir().join(name),
                lake_path,
                opened_ms: now_ms,
            };
            self.open.insert(key.clone(), f);
        }
        Ok(&mut self.open.get_mut(key).expect("just inserted").rows)
    }

    /// After a row of about `bytes` was added to `key`: encodes the
    /// file's rows once they fill a row group, and the biggest file's while
    /// all files hold more than `max_buffered_bytes`.
    pub fn added(&mut self, key: &FileKey, bytes: usize) -> std::io::Result<()> {
        let Some(f) = self.open.get_mut(key) else { return Ok(()) };
        f.buffered += bytes;
        self.buffered += bytes;
        if f.rows.len() >= self.limits.row_group_rows {
            self.write_row_group(key)?;
        }
        while self.buffered > self.limits.max_buffered_bytes {
            let Some(biggest) = self
                .open
                .iter()
                .filter(|(_, f)| f.buffered > 0)
                .max_by_key(|(_, f)| f.buffered)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.write_row_group(&biggest)?;
        }
        Ok(())
    }

    /// Encodes the rows of `key`'s file as one row group; closes the file
    /// once it is big enough.
    fn write_row_group(&mut self, key: &FileKey) -> std::io::Result<()> {
        let Some(f) = self.open.get_mut(key) else { return Ok(()) };
        self.buffered -= f.buffered;
        let size = write_rows(f, key.signal, &self.limits)?;
        let groups = f.writer.as_ref().map_or(0, |w| w.flushed_row_groups().len());
        if size >= self.limits.max_file_bytes || groups >= MAX_ROW_GROUPS {
            self.close(key)?;
        }
        Ok(())
    }

    /// Closes files older than `max_file_age`; returns how many.
    pub fn close_aged(&mut self, now_ms: i64) -> std::io::Result<usize> {
        let aged: Vec<FileKey> = self
            .open
            .iter()
            .filter(|(_, f)| now_ms - f.opened_ms >= self.limits.max_file_age_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &aged {
            self.close(k)?;
        }
        Ok(aged.len())
    }

    /// Closes every open file (each tried, whatever the others do); returns
    /// the complete files' paths and sizes, or the first error.
    pub fn close_all(&mut self) -> std::io::Result<Vec<(PathBuf, u64)>> {
        let keys: Vec<FileKey> = self.open.keys().cloned().collect();
        let mut done = Vec::new();
        let mut first_error = None;
        for k in &keys {
            match self.close(k) {
                Ok(path) => done.extend(path),
                Err(e) => {
                    tracing::error!(error = %e, signal = k.signal.as_str(), tenant = %k.tenant, "closing a lake file failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Bytes of the open files so far (encoded row groups).
    pub fn open_bytes(&self) -> u64 {
        self.open.values().filter_map(|f| f.writer.as_ref()).map(|w| w.bytes_written() as u64).sum()
    }

    /// Approximate bytes of rows waiting in builders, all files together.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    fn close(&mut self, key: &FileKey) -> std::io::Result<Option<(PathBuf, u64)>> {
        let Some(mut f) = self.open.remove(key) else { return Ok(None) };
        self.buffered -= f.buffered;
        if !f.rows.is_empty()
            && let Err(e) = write_rows(&mut f, key.signal, &self.limits)
        {
            // Kept open for the next attempt (a file whose row group failed
            // may still close; rows already encoded are not lost).
            self.open.insert(key.clone(), f);
            return Err(e);
        }
        let Some(writer) = f.writer.take() else { return Ok(None) };
        let file = writer.into_inner().map_err(std::io::Error::other)?;
        // Durable before it is visible: the uploader deletes the spool copy
        // only after the object store has it.
        file.sync_all()?;
        let size = file.metadata()?.len();
        drop(file);
        let dest = self.spool.dir().join(&f.lake_path);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Counted before it can be uploaded (the uploader subtracts).
        self.spool.added(size);
        if let Err(e) = std::fs::rename(&f.open_path, &dest) {
            self.spool.removed(size);
            return Err(e);
        }
        metrics::counter!(metric_names::LAKE_FILES_WRITTEN, "signal" => key.signal.as_str()).increment(1);
        metrics::counter!(metric_names::LAKE_BYTES_WRITTEN, "signal" => key.signal.as_str()).increment(size);
        Ok(Some((dest, size)))
    }
}

/// Encodes `f`'s rows as one row group (its encoders are dropped with it);
/// returns the file's size so far. The rows leave the builders either way:
/// on error they are lost (and counted as an error by the caller).
fn write_rows(f: &mut OpenFile, signal: LakeSignal, limits: &FileLimits) -> std::io::Result<u64> {
    let n = f.rows.len() as u64;
    f.buffered = 0;
    if n == 0 {
        return Ok(f.writer.as_ref().map_or(0, |w| w.bytes_written() as u64));
    }
    let batch = f.rows.finish().map_err(std::io::Error::other)?;
    if f.writer.is_none() {
        let file = File::create(&f.open_path)?;
        let w = ArrowWriter::try_new(file, batch.schema(), Some(properties(signal, limits)))
            .map_err(std::io::Error::other)?;
        f.writer = Some(w);
    }
    let w = f.writer.as_mut().expect("just created");
    w.write(&batch).map_err(std::io::Error::other)?;
    w.flush().map_err(std::io::Error::other)?;
    metrics::counter!(metric_names::LAKE_ROWS, "signal" => signal.as_str()).increment(n);
    Ok(w.bytes_written() as u64)
}

#[cfg(test)]
mod tests {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use tally_core::otlp::trace::v1::Span;

    use super::*;
    use crate::lake::schema::Origin;

    fn span(i: u64) -> Span {
        let mut id = [0u8; 8];
        id.copy_from_slice(&(i + 1).to_le_bytes());
        Span { span_id: id.to_vec(), name: format!("op-{i}"), start_time_unix_nano: 1, ..Default::default() }
    }

    /// Row groups of the complete file at `path`, and its rows.
    fn read(path: &std::path::Path) -> (usize, usize) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let groups = reader.metadata().num_row_groups();
        let rows = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        (groups, rows)
    }

    #[test]
    fn many_files_share_one_buffer_budget_and_lose_no_row() {
        let spool = std::env::temp_dir().join(format!("tally-lake-budget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&spool);
        let budget = 64 << 10;
        let limits = FileLimits {
            max_file_bytes: u64::MAX,
            max_file_age_ms: i64::MAX,
            row_group_rows: 100_000,
            max_buffered_bytes: budget,
            zstd_level: 3,
        };
        let mut files = LakeFiles::new(Arc::new(Spool::open(&spool).unwrap()), "w", limits).unwrap();
        let (tenants, per_tenant) = (20, 2_000);
        for i in 0..tenants * per_tenant {
            let tenant = format!("t{}", i % tenants);
            let key = FileKey { signal: LakeSignal::Spans, tenant: tenant.clone(), hour_ms: 0 };
            let o = Origin { tenant: &tenant, service: "svc", resource: None, scope: None };
            if let Rows::Spans(r) = files.rows(&key, 0).unwrap() {
                r.push(&o, &span(i));
            }
            files.added(&key, 100).unwrap();
            assert!(files.buffered_bytes() <= budget, "{} buffered after row {i}", files.buffered_bytes());
        }
        let closed = files.close_all().unwrap();
        assert_eq!(closed.len(), tenants as usize);
        assert_eq!(files.buffered_bytes(), 0);
        let mut total = 0;
        for (path, _) in &closed {
            let (groups, rows) = read(path);
            // 20 files share 64 KiB (about 650 rows): smaller row groups, every row kept.
            assert!(groups > 1, "{} row groups in {}", groups, path.display());
            assert_eq!(rows, per_tenant as usize);
            total += rows;
        }
        assert_eq!(total, (tenants * per_tenant) as usize);
        let _ = std::fs::remove_dir_all(&spool);
    }
}

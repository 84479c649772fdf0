//! Open Parquet files, one per (signal, tenant, hour): rows gather in
//! column builders, go to the file in batches, and the file is closed when
//! it reaches `max_file_bytes` or `max_file_age` (or at shutdown). A file is
//! written under `<spool>/.open/` and renamed into its partition folder of
//! the spool only once complete, so the uploader never sees half a file.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

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
    lake::{LakeSignal, OPEN_DIR, lake_path},
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
    /// Approximate bytes of the rows in `rows` (their OTLP encoded size).
    buffered: usize,
    writer: Option<ArrowWriter<File>>,
    open_path: PathBuf,
    lake_path: String,
    opened_ms: i64,
}

/// Rows buffered in a file's builders are encoded once they hold this much,
/// whatever their number (a few huge log bodies must not pile up).
const MAX_BUFFERED_BYTES: usize = 32 << 20;
/// Page and dictionary-page size limit: zstd sizes its window to the page,
/// so smaller pages also mean smaller compressors.
const PAGE_BYTES: usize = 64 << 10;
/// Files open at once; opening one more closes the oldest.
const MAX_OPEN_FILES: usize = 512;
/// Memory all open files' encoders may hold (pages, dictionaries, the row
/// group in progress); beyond it the biggest row groups are flushed early.
const MAX_ENCODER_BYTES: usize = 48 << 20;

/// File limits and batching.
#[derive(Debug, Clone)]
pub struct FileLimits {
    pub max_file_bytes: u64,
    pub max_file_age_ms: i64,
    pub row_group_rows: usize,
    /// Rows gathered in builders before they are encoded into the file.
    pub batch_rows: usize,
    /// zstd level (1–22). Every column of a row group in progress holds a
    /// compressor whose memory grows with the level.
    pub zstd_level: i32,
}

pub struct LakeFiles {
    spool: PathBuf,
    writer_id: String,
    seq: u64,
    limits: FileLimits,
    open: HashMap<FileKey, OpenFile>,
    /// Bytes of complete files in the spool (the uploader subtracts).
    spooled: Arc<AtomicU64>,
}

fn properties(signal: LakeSignal, limits: &FileLimits) -> WriterProperties {
    let row_group_rows = limits.row_group_rows;
    let zstd = ZstdLevel::try_new(limits.zstd_level).map(Compression::ZSTD).unwrap_or(Compression::SNAPPY);
    let mut b = WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
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
    pub fn new(spool: &Path, writer_id: &str, limits: FileLimits, spooled: Arc<AtomicU64>) -> std::io::Result<Self> {
        let open_dir = spool.join(OPEN_DIR);
        if open_dir.exists() {
            for e in std::fs::read_dir(&open_dir)?.flatten() {
                tracing::warn!(file = %e.path().display(), "removing a lake file left incomplete by a crash");
                let _ = std::fs::remove_file(e.path());
            }
        }
        // File names sort by creation: sequence numbers start at the clock.
        let seq = tally_core::now_ms().max(0) as u64 * 1000;
        LakeFiles::new_shared(spool, writer_id, limits, spooled, seq)
    }

    /// Another set of files in a spool already in use (its open files are
    /// left alone); `writer_id` must differ from the others'.
    /// Names continue after sequence number `seq`.
    pub fn new_shared(
        spool: &Path,
        writer_id: &str,
        limits: FileLimits,
        spooled: Arc<AtomicU64>,
        seq: u64,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(spool.join(OPEN_DIR))?;
        Ok(LakeFiles {
            spool: spool.to_owned(),
            writer_id: writer_id.to_owned(),
            seq,
            limits,
            open: HashMap::new(),
            spooled,
        })
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
                open_path: self.spool.join(OPEN_DIR).join(name),
                lake_path,
                opened_ms: now_ms,
            };
            self.open.insert(key.clone(), f);
        }
        Ok(&mut self.open.get_mut(key).expect("just inserted").rows)
    }

    /// After a row of about `bytes` was added to `key`: encodes the rows
    /// once there are enough, and closes the file once it is big enough.
    pub fn added(&mut self, key: &FileKey, bytes: usize) -> std::io::Result<()> {
        let limits = self.limits.clone();
        let Some(f) = self.open.get_mut(key) else { return Ok(()) };
        f.buffered += bytes;
        if f.rows.len() >= limits.batch_rows || f.buffered >= MAX_BUFFERED_BYTES {
            write_rows(f, key.signal, &limits)?;
            self.bound_memory()?;
            let Some(f) = self.open.get_mut(key) else { return Ok(()) };
            let size = f.writer.as_ref().map_or(0, |w| (w.bytes_written() + w.in_progress_size()) as u64);
            if size >= limits.max_file_bytes {
                self.close(key)?;
            }
        }
        Ok(())
    }

    /// Flushes the biggest in-progress row groups while the encoders of all
    /// open files hold more than [`MAX_ENCODER_BYTES`]: with many tenants
    /// open at once, smaller row groups rather than unbounded memory.
    fn bound_memory(&mut self) -> std::io::Result<()> {
        let mut sizes: Vec<(usize, FileKey)> =
            self.open.iter().filter_map(|(k, f)| f.writer.as_ref().map(|w| (w.memory_size(), k.clone()))).collect();
        let mut total: usize = sizes.iter().map(|(m, _)| m).sum();
        if total <= MAX_ENCODER_BYTES {
            return Ok(());
        }
        sizes.sort_by(|a, b| b.0.cmp(&a.0));
        for (size, key) in sizes {
            if total <= MAX_ENCODER_BYTES / 2 {
                break;
            }
            if let Some(w) = self.open.get_mut(&key).and_then(|f| f.writer.as_mut()) {
                w.flush().map_err(std::io::Error::other)?;
                total -= size;
            }
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

    /// Bytes held by open files (encoded so far, plus buffered row groups).
    pub fn open_bytes(&self) -> u64 {
        self.open
            .values()
            .filter_map(|f| f.writer.as_ref())
            .map(|w| (w.bytes_written() + w.in_progress_size()) as u64)
            .sum()
    }

    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    fn close(&mut self, key: &FileKey) -> std::io::Result<Option<(PathBuf, u64)>> {
        let Some(mut f) = self.open.remove(key) else { return Ok(None) };
        if !f.rows.is_empty()
            && let Err(e) = write_rows(&mut f, key.signal, &self.limits)
        {
            // Kept open (its rows with it) for the next attempt.
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
        let dest = self.spool.join(&f.lake_path);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Counted before it can be uploaded (the uploader subtracts).
        self.spooled.fetch_add(size, Ordering::Relaxed);
        if let Err(e) = std::fs::rename(&f.open_path, &dest) {
            self.spooled.fetch_sub(size, Ordering::Relaxed);
            return Err(e);
        }
        metrics::counter!(metric_names::LAKE_FILES_WRITTEN, "signal" => key.signal.as_str()).increment(1);
        metrics::counter!(metric_names::LAKE_BYTES_WRITTEN, "signal" => key.signal.as_str()).increment(size);
        Ok(Some((dest, size)))
    }
}

fn write_rows(f: &mut OpenFile, signal: LakeSignal, limits: &FileLimits) -> std::io::Result<()> {
    let n = f.rows.len() as u64;
    f.buffered = 0;
    let batch = f.rows.finish().map_err(std::io::Error::other)?;
    if f.writer.is_none() {
        let file = File::create(&f.open_path)?;
        let w = ArrowWriter::try_new(file, batch.schema(), Some(properties(signal, limits)))
            .map_err(std::io::Error::other)?;
        f.writer = Some(w);
    }
    if let Some(w) = f.writer.as_mut() {
        w.write(&batch).map_err(std::io::Error::other)?;
    }
    metrics::counter!(metric_names::LAKE_ROWS, "signal" => signal.as_str()).increment(n);
    Ok(())
}

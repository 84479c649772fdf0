//! The lake's spool: the one contract between the writer (aggregator) and
//! the uploader and usage export (exporter, aggregator). Files are written
//! under `<spool>/.open/` and renamed into their partition folder only
//! when complete, so anything outside `.open/` is whole and may be
//! uploaded; the spool counts the bytes of complete files, which the writer
//! holds against `lake.max_spool_bytes` and the uploader lowers.
//!
//! The scan of complete files reads the file system: it is meant for the
//! start and for threads of their own (`spawn_blocking`).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// Where in-progress files live, inside the spool.
pub const OPEN_DIR: &str = ".open";

/// A spool directory and the bytes of the complete files in it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    bytes: AtomicU64,
}

impl Spool {
    /// The spool at `dir`, counting what is already there (files left by
    /// an earlier run are uploaded too).
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir.join(OPEN_DIR))?;
        let spool = Spool { dir: dir.to_owned(), bytes: AtomicU64::new(0) };
        spool.recount();
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where files are written until complete.
    pub fn open_dir(&self) -> PathBuf {
        self.dir.join(OPEN_DIR)
    }

    /// Bytes of complete files waiting for upload.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A file of `size` bytes was completed into the spool.
    pub fn added(&self, size: u64) {
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// A file of `size` bytes left the spool (uploaded, or withdrawn).
    pub fn removed(&self, size: u64) {
        let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(size)));
    }

    /// The complete files, oldest name first (names sort by creation within
    /// a writer), with their sizes; the byte count is set from them, so a
    /// file removed behind the spool's back cannot leave it wrong for long.
    /// Blocking.
    #[allow(clippy::disallowed_methods)] // see the module docs
    pub fn complete_files(&self) -> Vec<(PathBuf, u64)> {
        fn walk(dir: &Path, open: &Path, out: &mut Vec<(PathBuf, u64)>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let p = e.path();
                if p == open {
                    continue;
                }
                match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&p, open, out),
                    Ok(m) if p.extension().is_some_and(|x| x == "parquet") => out.push((p, m.len())),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &self.open_dir(), &mut out);
        out.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()).then_with(|| a.0.cmp(&b.0)));
        self.bytes.store(out.iter().map(|(_, size)| size).sum(), Ordering::Relaxed);
        out
    }

    fn recount(&self) {
        self.complete_files();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_complete_files_only() {
        let dir = std::env::temp_dir().join(format!("tally-spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::open(&dir).unwrap();
        std::fs::write(spool.open_dir().join("w-1.parquet"), b"half").unwrap();
        let part = dir.join("spans/tenant=a/date=2026-11-30/hour=01");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("w-0.parquet"), b"complete").unwrap();
        let reopened = Spool::open(&dir).unwrap();
        assert_eq!(reopened.bytes(), 8);
        assert_eq!(reopened.complete_files().len(), 1);
        reopened.removed(100);
        assert_eq!(reopened.bytes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The forwarder's disk spool: what its memory buffer cannot hold while
//! Azure is slow or down, and what is still buffered at shutdown, as
//! segment files under `data_dir/appinsights-spool` within a byte budget.
//! A segment is written to `N.tmp` and renamed to `N.ndjson` (a crash
//! leaves no half segment); each line is `{time_ms} {envelope JSON}`.
//! Segments are read back oldest first and deleted once back in memory
//! (an item in flight when tally dies may be sent twice; the window_id of
//! usage items lets a query drop the copy).

use std::{collections::VecDeque, io, path::PathBuf};

use bytes::Bytes;
use tokio::sync::Mutex;

struct State {
    /// (sequence number, bytes), oldest first.
    segments: VecDeque<(u64, u64)>,
    bytes: u64,
    next: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`; segments left by an earlier run
    /// are kept, half-written ones removed.
    pub async fn open(dir: PathBuf, max_bytes: u64) -> io::Result<Spool> {
        tokio::fs::create_dir_all(&dir).await?;
        let mut found = Vec::new();
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(e) = entries.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                tokio::fs::remove_file(e.path()).await?;
            } else if let Some(seq) = name.strip_suffix(".ndjson").and_then(|n| n.parse::<u64>().ok()) {
                found.push((seq, e.metadata().await?.len()));
            }
        }
        found.sort_unstable();
        let bytes = found.iter().map(|s| s.1).sum();
        let next = found.last().map_or(0, |s| s.0 + 1);
        Ok(Spool { dir, max_bytes, state: Mutex::new(State { segments: found.into(), bytes, next }) })
    }

    fn path(&self, seq: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{seq:016}.{ext}"))
    }

    /// Writes `items` as one segment; `false` when it would pass the budget
    /// (nothing written).
    pub async fn write(&self, items: &[(i64, Bytes)]) -> io::Result<bool> {
        if items.is_empty() {
            return Ok(true);
        }
        let mut text = Vec::with_capacity(items.iter().map(|i| i.1.len() + 24).sum());
        for (time_ms, json) in items {
            text.extend_from_slice(time_ms.to_string().as_bytes());
            text.push(b' ');
            text.extend_from_slice(json);
            text.push(b'\n');
        }
        let mut st = self.state.lock().await;
        if st.bytes + text.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let seq = st.next;
        let tmp = self.path(seq, "tmp");
        tokio::fs::write(&tmp, &text).await?;
        tokio::fs::rename(&tmp, self.path(seq, "ndjson")).await?;
        st.next += 1;
        st.bytes += text.len() as u64;
        st.segments.push_back((seq, text.len() as u64));
        Ok(true)
    }

    /// Reads and removes the oldest segment.
    pub async fn take(&self) -> io::Result<Option<Vec<(i64, Bytes)>>> {
        let mut st = self.state.lock().await;
        let Some(&(seq, size)) = st.segments.front() else { return Ok(None) };
        let path = self.path(seq, "ndjson");
        let text = tokio::fs::read(&path).await?;
        let items = text
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let at = line.iter().position(|b| *b == b' ')?;
                let time_ms = std::str::from_utf8(&line[..at]).ok()?.parse().ok()?;
                Some((time_ms, Bytes::copy_from_slice(&line[at + 1..])))
            })
            .collect();
        tokio::fs::remove_file(&path).await?;
        st.segments.pop_front();
        st.bytes -= size;
        Ok(Some(items))
    }

    pub async fn bytes(&self) -> u64 {
        self.state.lock().await.bytes
    }

    /// The size of the oldest segment's items, if any (to see whether it fits).
    pub async fn has_segments(&self) -> bool {
        !self.state.lock().await.segments.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn segments_survive_a_reopen_in_order_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("s"), 200).await.unwrap();
        let item = |t: i64, s: &str| (t, Bytes::from(s.to_owned()));
        assert!(spool.write(&[item(1, "{\"a\":1}"), item(2, "{\"b\":2}")]).await.unwrap());
        assert!(spool.write(&[item(3, "{\"c\":3}")]).await.unwrap());
        assert!(!spool.write(&[item(4, &"x".repeat(300))]).await.unwrap(), "over the budget");
        tokio::fs::write(dir.path().join("s/0000000000000009.tmp"), b"half").await.unwrap();
        drop(spool);
        let spool = Spool::open(dir.path().join("s"), 200).await.unwrap();
        assert_eq!(spool.take().await.unwrap().unwrap(), vec![item(1, "{\"a\":1}"), item(2, "{\"b\":2}")]);
        assert_eq!(spool.take().await.unwrap().unwrap(), vec![item(3, "{\"c\":3}")]);
        assert_eq!(spool.take().await.unwrap(), None);
        assert_eq!(spool.bytes().await, 0);
    }
}

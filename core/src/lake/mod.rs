//! The Parquet lake's layout, shared by the writer (aggregator) and the
//! uploader (exporter): signals, Hive-partitioned paths, and the spool
//! ([`Spool`]) they hand files over in.

use chrono::{TimeZone, Utc};

use crate::HOUR_MS;

/// The lake's signals, as they appear in paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LakeSignal {
    Spans,
    Logs,
    Metrics,
    Usage,
}

impl LakeSignal {
    pub const ALL: [LakeSignal; 4] = [LakeSignal::Spans, LakeSignal::Logs, LakeSignal::Metrics, LakeSignal::Usage];

    pub fn as_str(self) -> &'static str {
        match self {
            LakeSignal::Spans => "spans",
            LakeSignal::Logs => "logs",
            LakeSignal::Metrics => "metrics",
            LakeSignal::Usage => "usage",
        }
    }
}

mod spool;

pub use spool::{OPEN_DIR, Spool};

/// The lake path of a file, relative to the prefix (and the spool):
/// `<signal>/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/<writer>-<seq>.parquet`.
pub fn lake_path(signal: LakeSignal, tenant: &str, hour_ms: i64, writer: &str, seq: u64) -> String {
    let t = Utc.timestamp_millis_opt(hour_ms).single().unwrap_or_default();
    format!(
        "{}/tenant={tenant}/date={}/hour={}/{writer}-{seq:020}.parquet",
        signal.as_str(),
        t.format("%Y-%m-%d"),
        t.format("%H")
    )
}

/// The hour holding `ns` (Unix nanoseconds), in ms.
pub fn hour_of_ns(ns: u64) -> i64 {
    let ms = (ns / 1_000_000).min(i64::MAX as u64) as i64;
    ms - ms.rem_euclid(HOUR_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_hive_partitions() {
        // 2026-11-22T08:00:00Z
        let p = lake_path(LakeSignal::Spans, "acme", 1_795_334_400_000, "w1", 42);
        assert_eq!(p, "spans/tenant=acme/date=2026-11-22/hour=08/w1-00000000000000000042.parquet");
        assert_eq!(hour_of_ns(1_795_336_199_999_000_000), 1_795_334_400_000);
    }
}

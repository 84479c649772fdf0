use std::time::Duration;

use serde::Deserialize;

/// `[events]`: the usage events API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_batch: usize,
    /// How far in the future an event's `time` may be (clock skew).
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// How old an event's `time` may be: older usage is refused (Stripe
    /// accepts usage of the past 35 days only); backfills go through
    /// `tally replay` or a raised limit.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Most usage records written in one ledger transaction (group commit).
    pub max_commit_records: usize,
    /// Ledger transactions in flight at once (PostgreSQL; SQLite has one).
    pub ledger_writers: usize,
}

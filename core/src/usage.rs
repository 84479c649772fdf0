//! Usage records: what the billing ledger stores, one per (event, meter).

use std::sync::Arc;

use crate::TenantId;

/// One meter's share of one usage event, ready for the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub tenant: TenantId,
    /// CloudEvents `source`, or `otlp/...` for usage derived from telemetry.
    pub source: String,
    /// CloudEvents `id`, or a deterministic id for OTLP-derived usage.
    pub event_id: String,
    pub meter: Arc<str>,
    pub value: f64,
    /// For `unique_count` meters: the value counted distinctly.
    pub distinct_key: Option<String>,
    pub event_time_ms: i64,
    /// Group-by values as a JSON object with sorted keys (`{}` when none).
    pub group_key: String,
    /// Hex sha256 of the event's content: same id and hash is a duplicate,
    /// same id and another hash a conflict.
    pub content_hash: String,
    /// How an earlier version of tally keyed this record, when that differs:
    /// a resend across an upgrade is then still recognised as a duplicate.
    pub legacy: Option<Box<LegacyKeys>>,
}

/// A record's id and content hash as an earlier tally version computed
/// them (see [`crate::canonical`] for why they changed).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LegacyKeys {
    /// The event id under which an earlier version may have stored it.
    pub event_id: Option<String>,
    /// The content hash an earlier version stored for the same content.
    pub content_hash: Option<String>,
}

/// One point of a cumulative OTLP Sum feeding a meter. The ledger turns it
/// into a delta against the stream's last point (a new start time or a lower
/// value is a reset: the whole value counts) and bills the delta as
/// `record` (whose `value` holds the cumulative total on the way in).
#[derive(Debug, Clone, PartialEq)]
pub struct CumulativePoint {
    pub record: UsageRecord,
    /// Identity of the stream: tenant, meter, resource, scope, metric, attributes.
    pub stream_id: String,
    /// The stream's id as an earlier version computed it: its state carries
    /// over to `stream_id` rather than the running total counting again.
    pub legacy_stream_id: Option<String>,
    /// The meter's `max_value`: a larger delta is not billed.
    pub max_value: f64,
    pub start_time_ns: i64,
    pub time_ns: i64,
}

/// What the ledger did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    /// Stored now; counted once.
    Accepted,
    /// Stored before with the same content: a success, not counted again.
    Duplicate,
    /// Stored before with different content: refused, not counted.
    Conflict,
}

impl UsageOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Accepted => "accepted",
            UsageOutcome::Duplicate => "duplicate",
            UsageOutcome::Conflict => "conflict",
        }
    }
}

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The wall clock as Unix milliseconds (0 if it is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Start of the UTC hour holding `ms`.
pub fn hour_start(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

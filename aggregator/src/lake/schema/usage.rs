//! The `usage` schema: the ledger's accepted usage records.

use super::*;

/// The ledger's accepted usage records.
pub struct UsageRows {
    pub(super) rows: usize,
    tenant: StringBuilder,
    meter: StringBuilder,
    source: StringBuilder,
    event_id: StringBuilder,
    value: Float64Builder,
    event_time: TimestampMillisecondBuilder,
    group_key: StringBuilder,
    distinct_key: StringBuilder,
    content_hash: StringBuilder,
}

impl Default for UsageRows {
    fn default() -> UsageRows {
        UsageRows {
            rows: 0,
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            source: StringBuilder::new(),
            event_id: StringBuilder::new(),
            value: Float64Builder::new(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            group_key: StringBuilder::new(),
            distinct_key: StringBuilder::new(),
            content_hash: StringBuilder::new(),
        }
    }
}

impl UsageRows {
    pub fn push(&mut self, r: &UsageRecord) {
        self.rows += 1;
        self.tenant.append_value(r.tenant.as_str());
        self.meter.append_value(&r.meter);
        self.source.append_value(&r.source);
        self.event_id.append_value(&r.event_id);
        self.value.append_value(r.value);
        self.event_time.append_value(r.event_time_ms);
        self.group_key.append_value(&r.group_key);
        self.distinct_key.append_option(r.distinct_key.as_deref());
        self.content_hash.append_value(&r.content_hash);
    }

    pub(super) fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        batch(vec![
            ("tenant", Arc::new(self.tenant.finish())),
            ("meter", Arc::new(self.meter.finish())),
            ("source", Arc::new(self.source.finish())),
            ("event_id", Arc::new(self.event_id.finish())),
            ("value", Arc::new(self.value.finish())),
            ("event_time", Arc::new(self.event_time.finish())),
            ("group_key", Arc::new(self.group_key.finish())),
            ("distinct_key", Arc::new(self.distinct_key.finish())),
            ("content_hash", Arc::new(self.content_hash.finish())),
        ])
    }
}

//! The `logs` schema: one row per log record.

use super::*;

pub struct LogRows {
    pub(super) rows: usize,
    origin: OriginColumns,
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    event_name: StringBuilder,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    flags: UInt32Builder,
    attributes: AttrMap,
}

impl Default for LogRows {
    fn default() -> LogRows {
        LogRows {
            rows: 0,
            origin: OriginColumns::default(),
            time: timestamps(),
            observed_time: timestamps(),
            severity_number: Int32Builder::new(),
            severity_text: StringBuilder::new(),
            body: StringBuilder::new(),
            event_name: StringBuilder::new(),
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            flags: UInt32Builder::new(),
            attributes: attr_map(),
        }
    }
}

impl LogRows {
    pub fn push(&mut self, o: &Origin<'_>, r: &LogRecord) {
        self.rows += 1;
        self.origin.push(o);
        // The record's time, else when it was observed (as the rollups do).
        let time = if r.time_unix_nano != 0 { r.time_unix_nano } else { r.observed_time_unix_nano };
        self.time.append_option(ts(time));
        self.observed_time.append_option(ts(r.observed_time_unix_nano));
        self.severity_number.append_value(r.severity_number);
        self.severity_text.append_option(nonempty(&r.severity_text));
        self.body.append_option(r.body.as_ref().map(|b| match &b.value {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => any_json(b).to_string(),
        }));
        self.event_name.append_option(nonempty(&r.event_name));
        append_id(&mut self.trace_id, &r.trace_id, 16);
        append_id(&mut self.span_id, &r.span_id, 8);
        self.flags.append_value(r.flags);
        append_attrs(&mut self.attributes, &r.attributes);
    }

    pub(super) fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let [tenant, service, scope_name, resource_attributes] = self.origin.finish()?;
        batch(vec![
            ("tenant", tenant),
            ("service", service),
            ("time", Arc::new(self.time.finish())),
            ("observed_time", Arc::new(self.observed_time.finish())),
            ("severity_number", Arc::new(self.severity_number.finish())),
            ("severity_text", Arc::new(self.severity_text.finish())),
            ("body", Arc::new(self.body.finish())),
            ("event_name", Arc::new(self.event_name.finish())),
            ("trace_id", Arc::new(self.trace_id.finish())),
            ("span_id", Arc::new(self.span_id.finish())),
            ("flags", Arc::new(self.flags.finish())),
            ("scope_name", scope_name),
            ("attributes", Arc::new(self.attributes.finish())),
            ("resource_attributes", resource_attributes),
        ])
    }
}

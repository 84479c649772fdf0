//! The `spans` schema: one row per span.

use super::*;

pub struct SpanRows {
    pub(super) rows: usize,
    origin: OriginColumns,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    flags: UInt32Builder,
    attributes: AttrMap,
    events: StringBuilder,
    links: StringBuilder,
}

impl Default for SpanRows {
    fn default() -> SpanRows {
        SpanRows {
            rows: 0,
            origin: OriginColumns::default(),
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            parent_span_id: FixedSizeBinaryBuilder::new(8),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            start_time: timestamps(),
            end_time: timestamps(),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: attr_map(),
            events: StringBuilder::new(),
            links: StringBuilder::new(),
        }
    }
}

impl SpanRows {
    pub fn push(&mut self, o: &Origin<'_>, s: &Span) {
        self.rows += 1;
        self.origin.push(o);
        append_id(&mut self.trace_id, &s.trace_id, 16);
        append_id(&mut self.span_id, &s.span_id, 8);
        append_id(&mut self.parent_span_id, &s.parent_span_id, 8);
        self.trace_state.append_option(nonempty(&s.trace_state));
        self.name.append_value(&s.name);
        self.kind.append_value(span_kind(s.kind));
        self.start_time.append_option(ts(s.start_time_unix_nano));
        self.end_time.append_option(ts(s.end_time_unix_nano));
        self.duration_ns.append_option(
            (s.start_time_unix_nano != 0)
                .then(|| s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano).min(i64::MAX as u64) as i64),
        );
        let status = s.status.as_ref();
        self.status_code.append_value(match status.map(|st| StatusCode::try_from(st.code)) {
            Some(Ok(StatusCode::Ok)) => "ok",
            Some(Ok(StatusCode::Error)) => "error",
            _ => "unset",
        });
        self.status_message.append_option(status.map(|st| st.message.as_str()).and_then(nonempty));
        self.flags.append_value(s.flags);
        append_attrs(&mut self.attributes, &s.attributes);
        self.events.append_option((!s.events.is_empty()).then(|| {
            let events: Vec<Value> = s
                .events
                .iter()
                .map(|e| json!({"time_unix_nano": e.time_unix_nano, "name": e.name, "attributes": attributes_json(&e.attributes)}))
                .collect();
            Value::Array(events).to_string()
        }));
        self.links.append_option((!s.links.is_empty()).then(|| {
            let links: Vec<Value> = s
                .links
                .iter()
                .map(|l| {
                    json!({"trace_id": hex::encode(&l.trace_id), "span_id": hex::encode(&l.span_id),
                           "trace_state": l.trace_state, "attributes": attributes_json(&l.attributes)})
                })
                .collect();
            Value::Array(links).to_string()
        }));
    }

    pub(super) fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let [tenant, service, scope_name, resource_attributes] = self.origin.finish()?;
        batch(vec![
            ("tenant", tenant),
            ("service", service),
            ("trace_id", Arc::new(self.trace_id.finish())),
            ("span_id", Arc::new(self.span_id.finish())),
            ("parent_span_id", Arc::new(self.parent_span_id.finish())),
            ("trace_state", Arc::new(self.trace_state.finish())),
            ("name", Arc::new(self.name.finish())),
            ("kind", Arc::new(self.kind.finish())),
            ("start_time", Arc::new(self.start_time.finish())),
            ("end_time", Arc::new(self.end_time.finish())),
            ("duration_ns", Arc::new(self.duration_ns.finish())),
            ("status_code", Arc::new(self.status_code.finish())),
            ("status_message", Arc::new(self.status_message.finish())),
            ("flags", Arc::new(self.flags.finish())),
            ("scope_name", scope_name),
            ("attributes", Arc::new(self.attributes.finish())),
            ("resource_attributes", resource_attributes),
            ("events", Arc::new(self.events.finish())),
            ("links", Arc::new(self.links.finish())),
        ])
    }
}

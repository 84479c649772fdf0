//! Log records → Exception (`exception.type` or `exception.message` set),
//! Event (`microsoft.custom_event.name` set) or Message items, as in
//! Python's `export/logs/_exporter.py` except where marked ⚑.

use tally_core::otlp::logs::v1::LogRecord;

use super::{
    envelope::{Data, Envelope, EventData, ExceptionData, MessageData, Properties, Tags, insert_property},
    mapping::{Ctx, location_tag, user_tags},
    props::{self, id_hex, text},
    spans::exception_details,
};

/// Where an exception log's body goes when the exception's own message
/// becomes the item's message (⚑, see [`record`]).
pub const LOG_BODY_PROPERTY: &str = "log.body";

/// Python adds the logger (scope) name under this key.
const LOGGER_NAME_PROPERTY: &str = "logger_name";

pub(crate) fn record(ctx: &Ctx<'_>, scope: &str, r: &LogRecord, out: &mut Vec<Envelope>) {
    let attrs = r.attributes.as_slice();
    let mut tags = Tags::new();
    // ⚑ No trace context, no operation tags (Python sends all-zero ids,
    // which join every such log into one fake operation).
    let trace = id_hex(&r.trace_id);
    if let Some(trace) = &trace {
        tags.insert("ai.operation.id", trace.clone());
        if let Some(span) = id_hex(&r.span_id) {
            tags.insert("ai.operation.parentId", span);
        }
    }
    if let Some(name) = text(attrs, "ai.operation.name") {
        tags.insert("ai.operation.name", name.into_owned());
    }
    user_tags(attrs, &mut tags);
    location_tag(attrs, &mut tags);

    let mut properties = Properties::new();
    props::add_properties(&mut properties, attrs, props::is_ignored_log_attribute);
    if !scope.is_empty() && !properties.contains_key(LOGGER_NAME_PROPERTY) {
        properties.insert(LOGGER_NAME_PROPERTY.to_owned(), scope.to_owned());
    }
    let measurements = props::measurements(attrs);
    let body = props::body_text(r.body.as_ref()).map(|b| b.trim().to_owned()).filter(|b| !b.is_empty());
    let severity = Some(severity_level(r.severity_number));

    let data = if text(attrs, "exception.type").is_some() || text(attrs, "exception.message").is_some() {
        // ⚑ The message is the exception's own (`boom`), as .NET's exporter
        // does; Python sends the log body and the exception's message is
        // lost. The body is kept in a property.
        let details = exception_details(attrs, body.as_deref());
        if let Some(b) = body.filter(|b| *b != details.message) {
            insert_property(&mut properties, LOG_BODY_PROPERTY.to_owned(), b);
        }
        Data::ExceptionData(ExceptionData {
            ver: 2,
            exceptions: vec![details],
            severity_level: severity,
            problem_id: None,
            properties,
            measurements,
        })
    } else if let Some(name) = text(attrs, "microsoft.custom_event.name") {
        Data::EventData(EventData { ver: 2, name: name.into_owned(), properties, measurements })
    } else {
        Data::MessageData(MessageData {
            ver: 2,
            message: body.unwrap_or_else(|| "n/a".to_owned()),
            severity_level: severity,
            properties,
            measurements,
        })
    };
    let time = if r.time_unix_nano != 0 { r.time_unix_nano } else { r.observed_time_unix_nano };
    // A log outside any trace is never sampled by trace id, so it stands
    // for itself: no sampleRate.
    ctx.push(out, time, tags, data, trace.is_some());
}

/// OTel severity number → 0 Verbose … 4 Critical: TRACE/DEBUG (1–8) and
/// unset are 0, INFO 1, WARN 2, ERROR 3, FATAL 4 (Python's formula).
pub(crate) fn severity_level(n: i32) -> u8 {
    if n < 9 { 0 } else { ((n.min(24) - 1) / 4 - 1) as u8 }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn severities_map_like_pythons() {
        let got: Vec<u8> = [0, 1, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 99].into_iter().map(severity_level).collect();
        assert_eq!(got, [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]);
    }
}

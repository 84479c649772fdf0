//! OTLP attributes → envelope properties, measurements and the small
//! lookups the mapping needs.
//!
//! Values are rendered as text the way a KQL user reads them: strings as
//! is, integers in decimal, doubles in their shortest round-trip form
//! (`0.5`, `1.0`), booleans `true`/`false`, and arrays and maps as JSON
//! (`["a","b"]`). Microsoft's Python exporter writes Python reprs instead
//! (`('a', 'b')`, `True`; tests/data/appinsights/README.md, "array/bool
//! attributes become Python reprs").

use std::borrow::Cow;

use base64::Engine;
use serde_json::{Map, Value as Json};
use tally_core::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};

use super::envelope::{Measurements, Properties, insert_property};

/// The value of `key`, if present and set.
pub(crate) fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    tally_core::attributes::get(attrs, key)
}

/// A non-empty scalar attribute as text (so `server.port` may be an int or
/// a string).
pub(crate) fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<Cow<'a, str>> {
    tally_core::attributes::text(get(attrs, key)?).filter(|s| !s.is_empty())
}

/// The first of `keys` that is set.
pub(crate) fn first<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<Cow<'a, str>> {
    keys.iter().find_map(|k| text(attrs, k))
}

/// An integer attribute (an int, a whole double, or a decimal string).
pub(crate) fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match get(attrs, key)? {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A value as property text (see the module docs); `None` for an unset
/// value, which is dropped.
pub(crate) fn render(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::ArrayValue(_) | Value::KvlistValue(_) => Some(json(Some(v)).to_string()),
        Value::StringValueStrindex(_) => None, // profiles only: the table is not here
        other => match json(Some(other)) {
            Json::String(s) => Some(s),
            j => Some(j.to_string()),
        },
    }
}

/// An `AnyValue` as JSON: bytes as base64, non-finite doubles as strings.
pub(crate) fn json(v: Option<&Value>) -> Json {
    match v {
        None | Some(Value::StringValueStrindex(_)) => Json::Null,
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or_else(
            || {
                Json::String(
                    if d.is_nan() {
                        "NaN"
                    } else if *d > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    }
                    .into(),
                )
            },
            Json::Number,
        ),
        Some(Value::BytesValue(b)) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Value::ArrayValue(a)) => Json::Array(a.values.iter().map(|v| json(v.value.as_ref())).collect()),
        Some(Value::KvlistValue(kv)) => Json::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), json(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// A log body as message text: strings as is, anything else as JSON.
pub(crate) fn body_text(body: Option<&AnyValue>) -> Option<String> {
    body.and_then(|b| b.value.as_ref()).and_then(render)
}

/// Adds every attribute not excluded by `skip` to `props` (150/8192 rules).
pub(crate) fn add_properties(props: &mut Properties, attrs: &[KeyValue], skip: fn(&str) -> bool) {
    for kv in attrs {
        if skip(&kv.key) {
            continue;
        }
        if let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()).and_then(render) {
            insert_property(props, kv.key.clone(), v);
        }
    }
}

/// Span (and span event) attributes that Python's exporter keeps out of
/// properties because the envelope carries them elsewhere
/// (`_is_standard_attribute`); the same list keeps customDimensions
/// comparable across exporters.
pub(crate) fn is_standard_span_attribute(key: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "http.",
        "db.",
        "message.",
        "messaging.",
        "rpc.",
        "enduser.",
        "net.",
        "peer.",
        "exception.",
        "thread.",
        "fass.",
        "code.",
    ];
    const EXACT: [&str; 24] = [
        "session.id",
        "_MS.sampleRate",
        "microsoft.custom_measurements",
        "client.address",
        "client.port",
        "server.address",
        "server.port",
        "url.full",
        "url.path",
        "url.query",
        "url.scheme",
        "url.template",
        "error.type",
        "network.local.address",
        "network.local.port",
        "network.protocol.name",
        "network.peer.address",
        "network.peer.port",
        "network.protocol.version",
        "network.transport",
        "user_agent.original",
        "user_agent.synthetic.type",
        TENANT_PROPERTY,
        LINKS_PROPERTY,
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || EXACT.contains(&key)
}

/// Log attributes Python's exporter keeps out of properties
/// (`_IGNORED_ATTRS`): the exception fields, Application Insights markers
/// and the user/session ids that become tags.
pub(crate) fn is_ignored_log_attribute(key: &str) -> bool {
    const EXACT: [&str; 11] = [
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "exception.escaped",
        "APPLICATION_INSIGHTS_EVENT_MARKER_ATTRIBUTE",
        "microsoft.custom_event.name",
        "microsoft.custom_measurements",
        "enduser.id",
        "enduser.pseudo.id",
        "session.id",
        TENANT_PROPERTY,
    ];
    EXACT.contains(&key) || key.starts_with("microsoft.availability.")
}

/// Metric point attributes: all kept but the tenant, which tally sets.
pub(crate) fn is_tenant(key: &str) -> bool {
    key == TENANT_PROPERTY
}

/// The property every item carries: the tenant as tally resolved it (an
/// attribute of the same name in the data is replaced, not trusted).
pub const TENANT_PROPERTY: &str = "tenant.id";
/// Span links, as Python writes them: JSON `[{"operation_Id","id"}]`.
pub(crate) const LINKS_PROPERTY: &str = "_MS.links";

/// `microsoft.custom_measurements` (a map attribute, or a JSON object in a
/// string): Python's only source of measurements.
pub(crate) fn measurements(attrs: &[KeyValue]) -> Measurements {
    let mut out = Measurements::new();
    match get(attrs, "microsoft.custom_measurements") {
        Some(Value::KvlistValue(kv)) => {
            for kv in &kv.values {
                if let Some(n) =
                    kv.value.as_ref().and_then(|v| v.value.as_ref()).and_then(tally_core::attributes::number)
                {
                    out.insert(kv.key.clone(), n);
                }
            }
        }
        Some(Value::StringValue(s)) => {
            if let Ok(Json::Object(map)) = serde_json::from_str::<Json>(s) {
                out.extend(map.into_iter().filter_map(|(k, v)| Some((k, v.as_f64()?))));
            }
        }
        _ => {}
    }
    out
}

/// Lowercase hex of an id, or `None` when it is absent or all zeros (an
/// invalid id in W3C trace context).
pub(crate) fn id_hex(id: &[u8]) -> Option<String> {
    (!id.is_empty() && id.iter().any(|b| *b != 0)).then(|| hex(id))
}

/// Lowercase hex, one allocation (`hex::encode` collects char by char,
/// a measurable cost at three ids per span).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use tally_core::otlp::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    #[test]
    fn hex_is_lowercase_and_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex(&bytes), hex::encode(&bytes));
        assert_eq!(id_hex(&[0; 8]), None);
        assert_eq!(id_hex(&[0xab, 0x01]).as_deref(), Some("ab01"));
    }

    fn any(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn values_render_as_json_not_python_reprs() {
        let arr = Value::ArrayValue(ArrayValue {
            values: vec![any(Value::StringValue("a".into())), any(Value::StringValue("b".into()))],
        });
        assert_eq!(render(&arr).unwrap(), r#"["a","b"]"#);
        assert_eq!(render(&Value::BoolValue(true)).unwrap(), "true");
        assert_eq!(render(&Value::IntValue(-3)).unwrap(), "-3");
        assert_eq!(render(&Value::DoubleValue(1.0)).unwrap(), "1.0");
        assert_eq!(render(&Value::DoubleValue(0.1)).unwrap(), "0.1");
        assert_eq!(render(&Value::DoubleValue(f64::NAN)).unwrap(), "NaN");
        assert_eq!(render(&Value::BytesValue(vec![0, 255])).unwrap(), "AP8=");
        let map = Value::KvlistValue(KeyValueList {
            values: vec![KeyValue { key: "k".into(), value: Some(any(Value::IntValue(1))), ..Default::default() }],
        });
        assert_eq!(render(&map).unwrap(), r#"{"k":1}"#);
        assert_eq!(render(&Value::StringValue("x y".into())).unwrap(), "x y");
    }

    #[test]
    fn exclusions_match_pythons_lists() {
        for k in ["http.route", "db.system", "code.file.path", "client.address", "url.full", "error.type", "tenant.id"]
        {
            assert!(is_standard_span_attribute(k), "{k}");
        }
        for k in ["app.plan", "gen_ai.system", "urlx", "server.addressx", "network.type"] {
            assert!(!is_standard_span_attribute(k), "{k}");
        }
        for k in ["exception.type", "session.id", "microsoft.availability.id", "enduser.id"] {
            assert!(is_ignored_log_attribute(k), "{k}");
        }
        for k in ["code.file.path", "http.method", "client.address", "order.id"] {
            assert!(!is_ignored_log_attribute(k), "{k}");
        }
    }

    #[test]
    fn custom_measurements_from_a_map_or_json() {
        let kv = |k: &str, v: Value| KeyValue { key: k.into(), value: Some(any(v)), ..Default::default() };
        let m = Value::KvlistValue(KeyValueList {
            values: vec![kv("a", Value::IntValue(2)), kv("b", Value::StringValue("x".into()))],
        });
        assert_eq!(measurements(&[kv("microsoft.custom_measurements", m)]), Measurements::from([("a".into(), 2.0)]));
        let s = Value::StringValue(r#"{"latency": 1.5, "bad": "x"}"#.into());
        assert_eq!(
            measurements(&[kv("microsoft.custom_measurements", s)]),
            Measurements::from([("latency".into(), 1.5)])
        );
    }

    #[test]
    fn ids_are_hex_and_zero_ids_absent() {
        assert_eq!(id_hex(&[0xab, 0x01]).as_deref(), Some("ab01"));
        assert_eq!(id_hex(&[0; 16]), None);
        assert_eq!(id_hex(&[]), None);
    }
}

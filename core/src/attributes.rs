//! Reading OTLP attributes (`KeyValue` lists), shared by every stage that
//! looks into spans, logs or points.

use std::borrow::Cow;

use crate::otlp::common::v1::{KeyValue, any_value::Value};

/// The value of attribute `key`, if present and set.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

/// An integer or double value as f64.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

/// A scalar value as text (strings borrowed, numbers and booleans formatted).
pub fn text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::StringValue(s) => Some(Cow::Borrowed(s)),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        Value::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

/// A string attribute, borrowed.
pub fn str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(attrs, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

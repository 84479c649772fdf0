//! Canonical encodings for stored ids. An id that is stored (a billing
//! event id, a metric stream id, a rollup series key) must not change when
//! a dependency or the compiler changes, so it is never built from `Debug`
//! text or from `std`'s unspecified hashers: values are written in the
//! encoding below and hashed with a specified hash (SHA-256, FNV-1a).
//!
//! The encoding of an OTLP `AnyValue` (one tag byte, then the value):
//!
//! | value | bytes |
//! |---|---|
//! | absent | `0x00` |
//! | string | `b's'`, length as u64 LE, UTF-8 bytes |
//! | bool | `b'b'`, `0x00` or `0x01` |
//! | int | `b'i'`, i64 LE |
//! | double | `b'd'`, IEEE 754 bits as u64 LE (`-0.0` as `0.0`, every NaN as `0x7ff8000000000000`) |
//! | bytes | `b'y'`, length as u64 LE, the bytes |
//! | array | `b'a'`, count as u64 LE, each element encoded |
//! | key/value list | `b'k'`, count as u64 LE, each key (length as u64 LE, bytes) then its value |
//! | string table index (profiles) | `b'x'`, i32 LE |
//!
//! An attribute list is encoded as a key/value list in the order given;
//! [`attributes`] sorts it by key first (stable, so repeated keys keep their
//! order), which is what identities use: attribute order is not meaningful.

use sha2::{Digest, Sha256};

use crate::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len());
    out.extend_from_slice(s);
}

/// Appends the canonical encoding of `v` (see the module docs).
pub fn any_value(out: &mut Vec<u8>, v: Option<&AnyValue>) {
    match v.and_then(|v| v.value.as_ref()) {
        None => out.push(0),
        Some(Value::StringValue(s)) => {
            out.push(b's');
            put_str(out, s.as_bytes());
        }
        Some(Value::BoolValue(b)) => out.extend_from_slice(&[b'b', u8::from(*b)]),
        Some(Value::IntValue(i)) => {
            out.push(b'i');
            out.extend_from_slice(&i.to_le_bytes());
        }
        Some(Value::DoubleValue(d)) => {
            out.push(b'd');
            out.extend_from_slice(&double_bits(*d).to_le_bytes());
        }
        Some(Value::BytesValue(b)) => {
            out.push(b'y');
            put_str(out, b);
        }
        Some(Value::ArrayValue(a)) => {
            out.push(b'a');
            put_len(out, a.values.len());
            for v in &a.values {
                any_value(out, Some(v));
            }
        }
        Some(Value::KvlistValue(kv)) => key_values(out, kv.values.iter()),
        Some(Value::StringValueStrindex(i)) => {
            out.push(b'x');
            out.extend_from_slice(&i.to_le_bytes());
        }
    }
}

/// `-0.0` and `0.0` are one value, and every NaN is one NaN.
fn double_bits(d: f64) -> u64 {
    if d == 0.0 {
        0
    } else if d.is_nan() {
        0x7ff8_0000_0000_0000
    } else {
        d.to_bits()
    }
}

fn key_values<'a>(out: &mut Vec<u8>, kvs: impl ExactSizeIterator<Item = &'a KeyValue>) {
    out.push(b'k');
    put_len(out, kvs.len());
    for kv in kvs {
        put_str(out, kv.key.as_bytes());
        any_value(out, kv.value.as_ref());
    }
}

/// Appends an attribute list, sorted by key (see the module docs).
pub fn attributes(out: &mut Vec<u8>, attrs: &[KeyValue]) {
    let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    key_values(out, sorted.into_iter());
}

/// Appends a string field (length-prefixed, so fields cannot run together).
pub fn string(out: &mut Vec<u8>, s: &str) {
    put_str(out, s.as_bytes());
}

/// Hex SHA-256 of `bytes`, cut to `hex_len` hex digits.
pub fn sha256_hex(bytes: &[u8], hex_len: usize) -> String {
    let mut h = hex::encode(Sha256::digest(bytes));
    h.truncate(hex_len);
    h
}

/// FNV-1a 64 of `bytes` (a specified, stable hash for short keys).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A JSON value in a canonical text form, so that equal content hashes
/// equal whatever its spelling: object keys sorted, no whitespace, and
/// numbers by value — `1`, `1.0` and `1e0` are all `1`; other numbers in
/// their shortest round-trip form (`0.5`, `1e300`).
pub fn json(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => number(out, n),
        J::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        J::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(out, v);
            }
            out.push(']');
        }
        J::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                json(out, &o[k]);
            }
            out.push('}');
        }
    }
}

fn number(out: &mut String, n: &serde_json::Number) {
    use std::fmt::Write;
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // Whole numbers that an i64 holds exactly are written as integers.
        if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f:e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json as j;

    use super::*;
    use crate::otlp::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn enc(v: Value) -> String {
        let mut out = Vec::new();
        any_value(&mut out, Some(&AnyValue { value: Some(v) }));
        hex::encode(out)
    }

    /// Golden values, written out by hand from the table in the module
    /// docs: these bytes feed ids stored in databases.
    #[test]
    fn scalar_encodings_are_pinned() {
        assert_eq!(enc(Value::StringValue("x".into())), "73010000000000000078");
        assert_eq!(enc(Value::BoolValue(true)), "6201");
        assert_eq!(enc(Value::IntValue(-1)), "69ffffffffffffffff");
        assert_eq!(enc(Value::DoubleValue(-0.0)), enc(Value::DoubleValue(0.0)));
        assert_eq!(enc(Value::DoubleValue(1.5)), "64000000000000f83f");
        assert_eq!(enc(Value::DoubleValue(f64::NAN)), "64000000000000f87f");
        assert_eq!(enc(Value::BytesValue(vec![1, 2])), "7902000000000000000102");
        let mut none = Vec::new();
        any_value(&mut none, None);
        assert_eq!(none, [0]);
        let arr = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(Value::IntValue(7)) }, AnyValue { value: None }],
        });
        assert_eq!(enc(arr), "61020000000000000069070000000000000000");
        let map = Value::KvlistValue(KeyValueList { values: vec![kv("k", Value::StringValue("v".into()))] });
        assert_eq!(enc(map), "6b010000000000000001000000000000006b73010000000000000076");
    }

    #[test]
    fn attributes_are_sorted_by_key_and_order_free() {
        let a = vec![kv("b", Value::IntValue(1)), kv("a", Value::StringValue("x".into()))];
        let b = vec![kv("a", Value::StringValue("x".into())), kv("b", Value::IntValue(1))];
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        attributes(&mut ea, &a);
        attributes(&mut eb, &b);
        assert_eq!(ea, eb);
        assert_eq!(
            hex::encode(&ea),
            "6b020000000000000001000000000000006173010000000000000078010000000000000062690100000000000000"
        );
        // A string "1" and an int 1 differ; so do ("ab","c") and ("a","bc").
        assert_ne!(enc(Value::StringValue("1".into())), enc(Value::IntValue(1)));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        string(&mut x, "ab");
        string(&mut x, "c");
        string(&mut y, "a");
        string(&mut y, "bc");
        assert_ne!(x, y);
    }

    #[test]
    fn hashes_are_the_specified_ones() {
        // Published test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(sha256_hex(b"abc", 16), "ba7816bf8f01cfea");
    }

    #[test]
    fn json_compares_numbers_by_value() {
        let c = |v: serde_json::Value| {
            let mut s = String::new();
            json(&mut s, &v);
            s
        };
        assert_eq!(c(j!({"b": 1, "a": [1.0, 2.5, "x"]})), r#"{"a":[1,2.5e0,"x"],"b":1}"#);
        assert_eq!(c(j!({"v": 1})), c(j!({"v": 1.0})));
        assert_eq!(c(j!(-0.0)), "0");
        assert_eq!(c(j!(1e300)), "1e300");
        assert_ne!(c(j!(1)), c(j!("1")));
    }
}

//! Decoding `/v2.1/track` bodies and checking envelopes, without I/O.

use std::io::Read;

use serde_json::Value;

/// Decompressed bodies larger than this are refused (Breeze's own item and
/// batch caps are 64 KB × 64,000; this bound only protects the test process).
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Gunzip (bounded) when `gzip`, then split into envelopes: a JSON array, or
/// newline-delimited JSON (`application/x-json-stream`).
pub fn decode(body: &[u8], gzip: bool) -> Result<Vec<Value>, String> {
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(MAX_DECODED_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("Invalid gzip body: {e}"))?;
        if out.len() as u64 > MAX_DECODED_BYTES {
            return Err("Decompressed body too large".into());
        }
        out
    } else {
        body.to_vec()
    };
    let text = std::str::from_utf8(&raw).map_err(|_| "Body is not UTF-8".to_owned())?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str::<Vec<Value>>(trimmed).map_err(|e| format!("Invalid JSON array: {e}"));
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str::<Value>(l).map_err(|e| format!("Invalid JSON on line {}: {e}", i + 1)))
        .collect()
}

/// Why an envelope is refused, in Breeze's manner (`"<code>: <text>"`), or `Ok`.
pub fn check(envelope: &Value, ikey: &str) -> Result<(), String> {
    let Some(obj) = envelope.as_object() else {
        return Err("100: Envelope is not a JSON object".into());
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    if text("name").is_none() {
        return Err("109: Field 'name' on type 'Envelope' is required but missing or empty.".into());
    }
    let Some(time) = text("time") else {
        return Err("109: Field 'time' on type 'Envelope' is required but missing or empty.".into());
    };
    if chrono::DateTime::parse_from_rfc3339(time).is_err() {
        return Err(format!("110: Field 'time' on type 'Envelope' is not a valid date: {time}"));
    }
    match text("iKey") {
        None => return Err("109: Field 'iKey' on type 'Envelope' is required but missing or empty.".into()),
        Some(k) if !k.eq_ignore_ascii_case(ikey) => return Err(format!("400: Invalid instrumentation key: {k}")),
        Some(_) => {}
    }
    let base_type = obj.get("data").and_then(|d| d.get("baseType")).and_then(Value::as_str).filter(|s| !s.is_empty());
    if base_type.is_none() {
        return Err("109: Field 'baseType' on type 'Data' is required but missing or empty.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde_json::json;

    use super::*;

    fn env(ikey: &str) -> Value {
        json!({"name": "Microsoft.ApplicationInsights.Metric", "time": "2026-11-30T00:27:28.404488Z", "iKey": ikey,
               "data": {"baseType": "MetricData", "baseData": {"ver": 2, "metrics": [{"name": "x", "value": 1.0}]}}})
    }

    #[test]
    fn decodes_arrays_ndjson_and_gzip() {
        let items = vec![env("k"), env("k")];
        let array = serde_json::to_vec(&items).expect("json");
        assert_eq!(decode(&array, false).expect("array").len(), 2);
        let nd = format!("{}\n{}\n\n", items[0], items[1]);
        assert_eq!(decode(nd.as_bytes(), false).expect("ndjson").len(), 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&array).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(decode(&gz, true).expect("gzip array").len(), 2);
        assert!(decode(b"[{", false).is_err());
        assert!(decode(b"not gzip", true).is_err());
    }

    #[test]
    fn checks_required_fields_and_ikey() {
        assert!(check(&env("ABC"), "abc").is_ok());
        assert!(check(&env("other"), "abc").expect_err("ikey").contains("Invalid instrumentation key"));
        let mut e = env("abc");
        e["data"] = json!({});
        assert!(check(&e, "abc").expect_err("baseType").contains("baseType"));
        let mut e = env("abc");
        e["time"] = json!("yesterday");
        assert!(check(&e, "abc").is_err());
        let mut e = env("abc");
        e.as_object_mut().expect("object").remove("name");
        assert!(check(&e, "abc").expect_err("name").contains("'name'"));
    }
}

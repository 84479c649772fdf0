//! The envelope module's tests: formats, limits, serialization.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::sync::Arc;

use serde_json::json;

use super::envelope::*;

#[test]
fn durations_use_the_swagger_format_in_microseconds() {
    assert_eq!(format_duration(0), "0.00:00:00.000000");
    assert_eq!(format_duration(250_000_000), "0.00:00:00.250000");
    assert_eq!(format_duration(1_499), "0.00:00:00.000001"); // rounded
    assert_eq!(format_duration(((26 * 3600 + 61) * 1_000_000_000) + 7_000), "1.02:01:01.000007");
    assert_eq!(format_duration(u64::MAX), "999.23:59:59.999999");
}

#[test]
fn time_is_utc_microseconds_with_z_and_round_trips() {
    let t = EnvelopeTime(1_767_268_803_000_999_936);
    assert_eq!(t.to_rfc3339(), "2026-01-01T12:00:03.001000Z"); // rounded like Python
    assert_eq!(EnvelopeTime(1_767_268_800_000_000_000).to_rfc3339(), "2026-01-01T12:00:00.000000Z");
    assert_eq!(EnvelopeTime::parse("2026-01-01T12:00:03.001Z"), Some(EnvelopeTime(1_767_268_803_001_000_000)));
    assert_eq!(EnvelopeTime::parse("2026-01-01T13:00:00+01:00"), Some(EnvelopeTime(1_767_268_800_000_000_000)));
    assert_eq!(EnvelopeTime::parse("yesterday"), None);
}

#[test]
fn hand_formatted_time_equals_chronos() {
    let mut t: i64 = -86_400_000_000_000 * 400;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while t < 4_102_444_800_000_000_000 {
        // 1969 .. 2100 in irregular steps, so every month, leap day and
        // rounding edge comes by
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t += (x % 40_000_000_000_000_000) as i64 + 1;
        let us = t.saturating_add(500).div_euclid(1_000);
        let chrono = chrono::DateTime::from_timestamp_micros(us).unwrap().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        assert_eq!(EnvelopeTime(t).to_rfc3339(), chrono.to_string(), "{t}");
    }
    assert_eq!(EnvelopeTime(951_782_400_000_000_000).to_rfc3339(), "2000-02-29T00:00:00.000000Z");
    assert_eq!(EnvelopeTime(-1).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
    assert_eq!(EnvelopeTime(-1_000).to_rfc3339(), "1969-12-31T23:59:59.999999Z");
    assert_eq!(EnvelopeTime(i64::MAX).to_rfc3339(), "2262-04-11T23:47:16.854775Z");
    assert_eq!(EnvelopeTime(i64::MIN).to_rfc3339(), "1677-09-21T00:12:43.145224Z");
}

#[test]
fn own_tags_win_over_shared_ones_and_all_come_out_sorted() {
    let shared = Arc::new(Tags::from([("ai.cloud.role", "r".to_owned()), ("ai.user.accountId", "t".to_owned())]));
    let tags =
        TagSet { shared, own: Tags::from([("ai.operation.id", "o".to_owned()), ("ai.cloud.role", "mine".to_owned())]) };
    assert_eq!(
        serde_json::to_value(&tags).unwrap(),
        json!({"ai.cloud.role": "mine", "ai.operation.id": "o", "ai.user.accountId": "t"})
    );
    assert_eq!(
        tags.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        ["ai.cloud.role", "ai.operation.id", "ai.user.accountId"]
    );
    assert_eq!(&tags["ai.user.accountId"], "t");
    assert_eq!(tags.get("ai.session.id"), None);
}

#[test]
fn truncation_counts_utf16_and_keeps_chars_whole() {
    let mut s = "abc".to_owned();
    truncate(&mut s, 5);
    assert_eq!(s, "abc");
    let mut s = "ééé".to_owned(); // 6 bytes, 3 units
    truncate(&mut s, 3);
    assert_eq!(s, "ééé");
    truncate(&mut s, 2);
    assert_eq!(s, "éé");
    let mut s = "a😀b".to_owned(); // the emoji is 2 units
    truncate(&mut s, 2);
    assert_eq!(s, "a");
    truncate(&mut s, 0);
    assert_eq!(s, "");
}

#[test]
fn limits_cut_fields_and_drop_long_keys() {
    let mut props = Properties::new();
    props.insert("k".repeat(151), "dropped".into());
    props.insert("k".repeat(150), "v".repeat(9000));
    props.insert(String::new(), "empty key".into());
    let mut e = Envelope::new(
        "ikey".into(),
        0,
        Tags::from([("ai.location.ip", "x".repeat(50))]).into(),
        Data::MessageData(MessageData {
            ver: 2,
            message: "m".repeat(40_000),
            severity_level: None,
            properties: props,
            measurements: Measurements::from([("nan".to_owned(), f64::NAN), ("ok".to_owned(), 1.0)]),
        }),
    );
    e.enforce_limits();
    assert_eq!(e.tags["ai.location.ip"].len(), 45);
    let Data::MessageData(m) = &e.data else { panic!("message") };
    assert_eq!(m.message.len(), 32768);
    assert_eq!(m.properties.len(), 1);
    assert_eq!(m.properties[&"k".repeat(150)].len(), 8192);
    assert_eq!(m.measurements.keys().collect::<Vec<_>>(), ["ok"]);
}

#[test]
fn serializes_as_the_ingestion_api_takes_it() {
    let mut e = Envelope::new(
        "00000000-0000-0000-0000-000000000000".into(),
        1_767_268_800_010_000_000,
        Tags::from([("ai.operation.id", "ab".to_owned())]).into(),
        Data::RemoteDependencyData(RemoteDependencyData {
            ver: 2,
            id: "f41fcb28e1eca229".into(),
            name: "SELECT orders".into(),
            result_code: "0".into(),
            data: None,
            dependency_type: Some("postgresql".into()),
            target: None,
            duration: format_duration(25_000_000),
            success: true,
            properties: Properties::new(),
            measurements: Measurements::new(),
        }),
    );
    e.sample_rate = Some(25.0);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        json!({
            "name": "Microsoft.ApplicationInsights.RemoteDependency",
            "time": "2026-01-01T12:00:00.010000Z",
            "iKey": "00000000-0000-0000-0000-000000000000",
            "sampleRate": 25.0,
            "tags": {"ai.operation.id": "ab"},
            "data": {"baseType": "RemoteDependencyData", "baseData": {
                "ver": 2, "id": "f41fcb28e1eca229", "name": "SELECT orders", "resultCode": "0",
                "type": "postgresql", "duration": "0.00:00:00.025000", "success": true,
                "properties": {}, "measurements": {}
            }}
        })
    );
}

//! Envelopes as the Application Insights ingestion API (`/v2.1/track`)
//! takes them, and the field limits it enforces.
//!
//! Field names and limits follow the ingestion swagger
//! (`Monitor.Exporters/preview/v2.1/swagger.json`) and the classic SDK's
//! `Property.cs`; see `/work/shared/research/appinsights.md` §3. Limits are
//! counted in UTF-16 code units, as the .NET ingestion service counts string
//! length, and cuts fall on char boundaries: a text within the limit here is
//! within it there.
//!
//! Precision: `time` is written with microseconds (`2026-01-01T12:00:00.230000Z`,
//! always six digits, rounded to the nearest microsecond as Python's exporter
//! rounds) and `duration` as `D.HH:MM:SS.ffffff` — the swagger's own format.
//! Microseconds keep sub-millisecond dependencies (a Redis GET) from showing
//! as 0 where Python's millisecond durations would; finer is noise for a
//! store whose `duration` column is milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `Microsoft.ApplicationInsights.*` envelope names, by `baseType`.
pub const REQUEST: &str = "Microsoft.ApplicationInsights.Request";
pub const DEPENDENCY: &str = "Microsoft.ApplicationInsights.RemoteDependency";
pub const MESSAGE: &str = "Microsoft.ApplicationInsights.Message";
pub const EXCEPTION: &str = "Microsoft.ApplicationInsights.Exception";
pub const METRIC: &str = "Microsoft.ApplicationInsights.Metric";
pub const EVENT: &str = "Microsoft.ApplicationInsights.Event";

/// Property keys longer than this are dropped (a cut key could collide).
pub const MAX_PROPERTY_KEY: usize = 150;
/// Property values are cut to this.
pub const MAX_PROPERTY_VALUE: usize = 8192;

/// Properties and measurements are sorted maps so the JSON is deterministic.
pub type Properties = BTreeMap<String, String>;
pub type Measurements = BTreeMap<String, f64>;

/// One telemetry item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub name: String,
    pub time: EnvelopeTime,
    #[serde(rename = "iKey")]
    pub ikey: String,
    /// Percent of items kept by sampling: this item stands for
    /// `100 / sample_rate` items. Absent means 100.
    #[serde(rename = "sampleRate", default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    pub tags: BTreeMap<String, String>,
    pub data: Data,
}

/// `data: {baseType, baseData}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "baseType", content = "baseData")]
pub enum Data {
    RequestData(RequestData),
    RemoteDependencyData(RemoteDependencyData),
    MessageData(MessageData),
    ExceptionData(ExceptionData),
    MetricData(MetricData),
    EventData(EventData),
}

fn ver() -> u8 {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestData {
    #[serde(default = "ver")]
    pub ver: u8,
    pub id: String,
    pub name: String,
    pub duration: String,
    pub success: bool,
    pub response_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub measurements: Measurements,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteDependencyData {
    #[serde(default = "ver")]
    pub ver: u8,
    pub id: String,
    pub name: String,
    pub result_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub dependency_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub duration: String,
    pub success: bool,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub measurements: Measurements,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageData {
    #[serde(default = "ver")]
    pub ver: u8,
    pub message: String,
    /// 0 Verbose, 1 Information, 2 Warning, 3 Error, 4 Critical. Sent as an
    /// integer, as Microsoft's exporters do (the swagger names strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_level: Option<u8>,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub measurements: Measurements,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionData {
    #[serde(default = "ver")]
    pub ver: u8,
    pub exceptions: Vec<ExceptionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_level: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_id: Option<String>,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub measurements: Measurements,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionDetails {
    pub type_name: String,
    pub message: String,
    pub has_full_stack: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricData {
    #[serde(default = "ver")]
    pub ver: u8,
    /// Exactly one point: ingestion reads only the first.
    pub metrics: Vec<MetricPoint>,
    #[serde(default)]
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    pub name: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    #[serde(default = "ver")]
    pub ver: u8,
    pub name: String,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub measurements: Measurements,
}

impl Data {
    /// The envelope `name` for this `baseType`.
    pub fn envelope_name(&self) -> &'static str {
        match self {
            Data::RequestData(_) => REQUEST,
            Data::RemoteDependencyData(_) => DEPENDENCY,
            Data::MessageData(_) => MESSAGE,
            Data::ExceptionData(_) => EXCEPTION,
            Data::MetricData(_) => METRIC,
            Data::EventData(_) => EVENT,
        }
    }

    /// The item's properties (every baseType has them).
    pub fn properties_mut(&mut self) -> &mut Properties {
        match self {
            Data::RequestData(d) => &mut d.properties,
            Data::RemoteDependencyData(d) => &mut d.properties,
            Data::MessageData(d) => &mut d.properties,
            Data::ExceptionData(d) => &mut d.properties,
            Data::MetricData(d) => &mut d.properties,
            Data::EventData(d) => &mut d.properties,
        }
    }

    fn measurements_mut(&mut self) -> Option<&mut Measurements> {
        match self {
            Data::RequestData(d) => Some(&mut d.measurements),
            Data::RemoteDependencyData(d) => Some(&mut d.measurements),
            Data::MessageData(d) => Some(&mut d.measurements),
            Data::ExceptionData(d) => Some(&mut d.measurements),
            Data::EventData(d) => Some(&mut d.measurements),
            Data::MetricData(_) => None,
        }
    }
}

impl Envelope {
    /// An envelope named after its data, without sampling.
    pub fn new(ikey: &str, time_ns: i64, tags: BTreeMap<String, String>, data: Data) -> Envelope {
        Envelope {
            name: data.envelope_name().to_owned(),
            time: EnvelopeTime(time_ns),
            ikey: ikey.to_owned(),
            sample_rate: None,
            tags,
            data,
        }
    }

    /// Cuts every field to the ingestion limits (see the module docs):
    /// over-long texts are truncated, over-long property and measurement
    /// keys dropped, non-finite measurements dropped (JSON has no NaN).
    pub fn enforce_limits(&mut self) {
        for (key, value) in self.tags.iter_mut() {
            truncate(value, tag_limit(key));
        }
        match &mut self.data {
            Data::RequestData(d) => {
                truncate(&mut d.id, 512);
                truncate(&mut d.name, 1024);
                truncate(&mut d.response_code, 1024);
                truncate_opt(&mut d.source, 1024);
                truncate_opt(&mut d.url, 2048);
            }
            Data::RemoteDependencyData(d) => {
                truncate(&mut d.id, 512);
                truncate(&mut d.name, 1024);
                truncate(&mut d.result_code, 1024);
                truncate_opt(&mut d.data, 8192);
                truncate_opt(&mut d.dependency_type, 1024);
                truncate_opt(&mut d.target, 1024);
            }
            Data::MessageData(d) => truncate(&mut d.message, 32768),
            Data::ExceptionData(d) => {
                truncate_opt(&mut d.problem_id, 1024);
                for e in &mut d.exceptions {
                    truncate(&mut e.type_name, 1024);
                    truncate(&mut e.message, 32768);
                    truncate_opt(&mut e.stack, 32768);
                }
            }
            Data::MetricData(d) => {
                for m in &mut d.metrics {
                    truncate(&mut m.name, 1024);
                    truncate_opt(&mut m.ns, 256);
                }
            }
            Data::EventData(d) => truncate(&mut d.name, 512),
        }
        let props = std::mem::take(self.data.properties_mut());
        let limited = self.data.properties_mut();
        for (k, v) in props {
            insert_property(limited, k, v);
        }
        if let Some(m) = self.data.measurements_mut() {
            m.retain(|k, v| !k.is_empty() && utf16_len(k) <= MAX_PROPERTY_KEY && v.is_finite());
        }
    }
}

/// Inserts a property under the ingestion rules (as Python's exporter
/// applies them): an empty key or one over 150 is dropped, the value is cut
/// to 8192.
pub fn insert_property(props: &mut Properties, key: String, mut value: String) {
    if key.is_empty() || utf16_len(&key) > MAX_PROPERTY_KEY {
        return;
    }
    truncate(&mut value, MAX_PROPERTY_VALUE);
    props.insert(key, value);
}

/// Tag limits from the classic SDK's `TagSizeLimits`; tags it does not
/// list (e.g. `ai.user.userAgent`) get 1024.
fn tag_limit(key: &str) -> usize {
    match key {
        "ai.operation.id" | "ai.operation.parentId" | "ai.user.id" => 128,
        "ai.cloud.role" | "ai.cloud.roleInstance" | "ai.internal.nodeName" => 256,
        "ai.device.model" | "ai.device.oemName" | "ai.device.osVersion" => 256,
        "ai.internal.sdkVersion" | "ai.session.id" | "ai.device.locale" | "ai.device.type" => 64,
        "ai.location.ip" => 45,
        _ => 1024,
    }
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Cuts `s` to at most `max` UTF-16 code units, on a char boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return; // UTF-16 units never outnumber UTF-8 bytes
    }
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            s.truncate(i);
            return;
        }
    }
}

fn truncate_opt(s: &mut Option<String>, max: usize) {
    if let Some(s) = s {
        truncate(s, max);
    }
}

/// Longest duration the swagger allows (< 1000 days), in nanoseconds.
const MAX_DURATION_NS: u64 = 1000 * 86_400 * 1_000_000_000 - 1_000;

/// `D.HH:MM:SS.ffffff` (days unpadded), rounded to the nearest microsecond,
/// capped just under 1000 days.
pub fn format_duration(ns: u64) -> String {
    let us = ns.min(MAX_DURATION_NS).saturating_add(500) / 1_000;
    let (secs, frac) = (us / 1_000_000, us % 1_000_000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    format!("{days}.{:02}:{:02}:{:02}.{frac:06}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Envelope time: Unix nanoseconds, written as RFC 3339 UTC with `Z` and
/// six fraction digits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvelopeTime(pub i64);

impl EnvelopeTime {
    pub fn to_rfc3339(self) -> String {
        let us = self.0.saturating_add(500).div_euclid(1_000);
        let dt = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
        dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    pub fn parse(s: &str) -> Option<EnvelopeTime> {
        let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        dt.timestamp_nanos_opt().map(EnvelopeTime)
    }
}

impl Serialize for EnvelopeTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for EnvelopeTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EnvelopeTime::parse(&s).ok_or_else(|| serde::de::Error::custom("time is not an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use serde_json::json;

    use super::*;

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
            "ikey",
            0,
            BTreeMap::from([("ai.location.ip".to_owned(), "x".repeat(50))]),
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
            "00000000-0000-0000-0000-000000000000",
            1_767_268_800_010_000_000,
            BTreeMap::from([("ai.operation.id".to_owned(), "ab".to_owned())]),
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
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}

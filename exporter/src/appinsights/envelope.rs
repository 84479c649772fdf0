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

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap};

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
/// Tags by their `ai.*` key (every key tally writes is a constant).
pub type Tags = BTreeMap<&'static str, String>;

/// An item's tags: those every item of one resource shares (role, tenant,
/// SDK version), held once, and the item's own, which win over them.
/// Serialized as one sorted map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TagSet {
    pub shared: Arc<Tags>,
    pub own: Tags,
}

impl TagSet {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.own.get(key).or_else(|| self.shared.get(key)).map(String::as_str)
    }

    /// Every (key, value), sorted by key, own values over shared ones.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        let mut shared = self.shared.iter().filter(|(k, _)| !self.own.contains_key(*k)).peekable();
        let mut own = self.own.iter().peekable();
        std::iter::from_fn(move || {
            let next = match (shared.peek(), own.peek()) {
                (Some(s), Some(o)) if s.0 < o.0 => shared.next(),
                (Some(_), None) => shared.next(),
                _ => own.next(),
            };
            next.map(|(k, v)| (*k, v.as_str()))
        })
    }
}

impl From<Tags> for TagSet {
    fn from(own: Tags) -> TagSet {
        TagSet { shared: Arc::default(), own }
    }
}

impl std::ops::Index<&str> for TagSet {
    type Output = str;
    fn index(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| panic!("no tag {key}"))
    }
}

impl Serialize for TagSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One telemetry item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    pub name: &'static str,
    pub time: EnvelopeTime,
    #[serde(rename = "iKey")]
    pub ikey: Arc<str>,
    /// Percent of items kept by sampling: this item stands for
    /// `100 / sample_rate` items. Absent means 100.
    #[serde(rename = "sampleRate", default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    pub tags: TagSet,
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
    pub fn new(ikey: Arc<str>, time_ns: i64, tags: TagSet, data: Data) -> Envelope {
        Envelope { name: data.envelope_name(), time: EnvelopeTime(time_ns), ikey, sample_rate: None, tags, data }
    }

    /// Cuts every field to the ingestion limits (see the module docs):
    /// over-long texts are truncated, over-long property and measurement
    /// keys dropped, non-finite measurements dropped (JSON has no NaN).
    pub fn enforce_limits(&mut self) {
        // Shared tags were cut when the resource's tags were built.
        for (key, value) in self.tags.own.iter_mut() {
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
        self.data.properties_mut().retain(|k, v| {
            truncate(v, MAX_PROPERTY_VALUE);
            property_key_ok(k)
        });
        if let Some(m) = self.data.measurements_mut() {
            m.retain(|k, v| property_key_ok(k) && v.is_finite());
        }
    }
}

/// Inserts a property under the ingestion rules (as Python's exporter
/// applies them): an empty key or one over 150 is dropped, the value is cut
/// to 8192.
pub fn insert_property(props: &mut Properties, key: String, mut value: String) {
    if !property_key_ok(&key) {
        return;
    }
    truncate(&mut value, MAX_PROPERTY_VALUE);
    props.insert(key, value);
}

fn property_key_ok(key: &str) -> bool {
    !key.is_empty() && (key.len() <= MAX_PROPERTY_KEY || utf16_len(key) <= MAX_PROPERTY_KEY)
}

/// Cuts every tag to its limit (see [`Envelope::enforce_limits`]).
pub fn limit_tags(tags: &mut Tags) {
    for (key, value) in tags.iter_mut() {
        truncate(value, tag_limit(key));
    }
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
        String::from_utf8_lossy(&self.format()).into_owned()
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` without chrono's formatter (it was a
    /// measurable share of the forwarder's CPU); years outside 0..=9999
    /// are clamped into that range.
    fn format(self) -> [u8; 27] {
        let us = self.0.saturating_add(500).div_euclid(1_000);
        let (secs, frac) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let (y, m, d) = match y {
            ..0 => (0, 1, 1),
            10_000.. => (9999, 12, 31),
            _ => (y, m, d),
        };
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 6, frac);
        out
    }

    pub fn parse(s: &str) -> Option<EnvelopeTime> {
        let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        dt.timestamp_nanos_opt().map(EnvelopeTime)
    }
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic
/// Gregorian calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Serialize for EnvelopeTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.format();
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for EnvelopeTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EnvelopeTime::parse(&s).ok_or_else(|| serde::de::Error::custom("time is not an RFC 3339 timestamp"))
    }
}

//! Meters, recorded events and Stripe's aggregation rules, without any I/O.
//!
//! - Raw meters (`event_time_window` null): every event counts; `sum` adds
//!   values, `count` counts events, `last` keeps the value of the event with
//!   the latest `timestamp` (ties: the one received last).
//! - Pre-aggregated meters (`hour` / `day`): per customer and UTC window of the
//!   event `timestamp`, only the most recently **received** event counts; the
//!   formula then runs over those survivors.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

/// `default_aggregation.formula`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Formula {
    Sum,
    Count,
    Last,
}

impl Formula {
    pub fn as_str(self) -> &'static str {
        match self {
            Formula::Sum => "sum",
            Formula::Count => "count",
            Formula::Last => "last",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sum" => Some(Formula::Sum),
            "count" => Some(Formula::Count),
            "last" => Some(Formula::Last),
            _ => None,
        }
    }
}

/// `event_time_window` of a pre-aggregated meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeWindow {
    Hour,
    Day,
}

impl TimeWindow {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeWindow::Hour => "hour",
            TimeWindow::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(TimeWindow::Hour),
            "day" => Some(TimeWindow::Day),
            _ => None,
        }
    }

    pub fn secs(self) -> i64 {
        match self {
            TimeWindow::Hour => 3600,
            TimeWindow::Day => 86_400,
        }
    }

    /// Start of the UTC window holding `ts`.
    pub fn floor(self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.secs())
    }
}

/// What a test asks for when it creates a meter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterSpec {
    pub event_name: String,
    pub display_name: String,
    pub formula: Formula,
    pub event_time_window: Option<TimeWindow>,
    /// `customer_mapping.event_payload_key` (default `stripe_customer_id`).
    pub customer_key: String,
    /// `value_settings.event_payload_key` (default `value`).
    pub value_key: String,
}

impl MeterSpec {
    pub fn new(event_name: &str, formula: Formula) -> Self {
        MeterSpec {
            event_name: event_name.to_owned(),
            display_name: event_name.to_owned(),
            formula,
            event_time_window: None,
            customer_key: "stripe_customer_id".to_owned(),
            value_key: "value".to_owned(),
        }
    }

    pub fn sum(event_name: &str) -> Self {
        Self::new(event_name, Formula::Sum)
    }

    pub fn count(event_name: &str) -> Self {
        Self::new(event_name, Formula::Count)
    }

    pub fn last(event_name: &str) -> Self {
        Self::new(event_name, Formula::Last)
    }

    /// Pre-aggregated per hour or day.
    pub fn window(mut self, w: TimeWindow) -> Self {
        self.event_time_window = Some(w);
        self
    }

    pub fn hourly(self) -> Self {
        self.window(TimeWindow::Hour)
    }

    pub fn daily(self) -> Self {
        self.window(TimeWindow::Day)
    }

    pub fn keys(mut self, customer_key: &str, value_key: &str) -> Self {
        self.customer_key = customer_key.to_owned();
        self.value_key = value_key.to_owned();
        self
    }

    /// `event_name:formula[:hour|day]`, as the bin's `--meter` takes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let name = parts.next().filter(|n| !n.is_empty()).ok_or("empty meter event name")?;
        let formula = parts.next().unwrap_or("sum");
        let formula = Formula::parse(formula).ok_or_else(|| format!("unknown formula {formula:?} (sum|count|last)"))?;
        let mut spec = MeterSpec::new(name, formula);
        if let Some(w) = parts.next() {
            spec.event_time_window =
                Some(TimeWindow::parse(w).ok_or_else(|| format!("unknown window {w:?} (hour|day)"))?);
        }
        if parts.next().is_some() {
            return Err(format!("too many parts in {s:?}: event_name:formula[:hour|day]"));
        }
        Ok(spec)
    }
}

/// A meter as the stand-in holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Meter {
    pub id: String,
    pub spec: MeterSpec,
    pub active: bool,
    pub created: i64,
    pub updated: i64,
    pub deactivated_at: Option<i64>,
}

impl Meter {
    /// The `billing.meter` object.
    pub fn to_json(&self, livemode: bool) -> Value {
        json!({
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "customer_mapping": {"event_payload_key": self.spec.customer_key, "type": "by_id"},
            "default_aggregation": {"formula": self.spec.formula.as_str()},
            "display_name": self.spec.display_name,
            "event_name": self.spec.event_name,
            "event_time_window": self.spec.event_time_window.map(TimeWindow::as_str),
            "livemode": livemode,
            "status": if self.active { "active" } else { "inactive" },
            "status_transitions": {"deactivated_at": self.deactivated_at},
            "updated": self.updated,
            "value_settings": {"event_payload_key": self.spec.value_key},
        })
    }
}

/// Which API an event came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    V1,
    V2Stream,
}

/// An event Stripe accepted (answered 200 for, or took into a stream).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedEvent {
    pub identifier: String,
    pub event_name: String,
    /// The payload's customer key, if the meter (or the default key) found one.
    pub customer: Option<String>,
    /// The payload's value as a whole number (count meters: 1 when absent).
    pub value: i64,
    pub timestamp: i64,
    /// Server clock, Unix seconds.
    pub received_at: i64,
    /// Order of receipt (ties inside one second).
    pub seq: u64,
    pub payload: BTreeMap<String, String>,
    pub source: Source,
    /// Counts toward totals: a known active meter and a known customer.
    pub applied: bool,
    /// Cancelled by an adjustment (or by the test API).
    pub cancelled: bool,
}

impl RecordedEvent {
    /// The v1 `billing.meter_event` object.
    pub fn to_json(&self, livemode: bool) -> Value {
        json!({
            "object": "billing.meter_event",
            "created": self.received_at,
            "event_name": self.event_name,
            "identifier": self.identifier,
            "livemode": livemode,
            "payload": self.payload,
            "timestamp": self.timestamp,
        })
    }
}

/// One applied total per customer, meter event name and UTC hour.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourTotal {
    pub customer: String,
    pub event_name: String,
    pub hour_start: i64,
    pub value: f64,
}

/// The aggregated value of `events` for `meter` and `customer` over
/// `[start, end)` by event timestamp, counting only events received at or
/// before `received_cutoff`. `None` when no event falls in the range.
pub fn aggregate(
    meter: &Meter,
    events: &[RecordedEvent],
    customer: &str,
    start: i64,
    end: i64,
    received_cutoff: i64,
) -> Option<f64> {
    let mine = events.iter().filter(|e| {
        e.applied
            && !e.cancelled
            && e.event_name == meter.spec.event_name
            && e.customer.as_deref() == Some(customer)
            && e.received_at <= received_cutoff
    });
    let survivors: Vec<&RecordedEvent> = match meter.spec.event_time_window {
        None => mine.filter(|e| e.timestamp >= start && e.timestamp < end).collect(),
        Some(w) => {
            // The most recently received event per window, over all time; then
            // keep the survivors that fall in the range.
            let mut latest: HashMap<i64, &RecordedEvent> = HashMap::new();
            for e in mine {
                let slot = latest.entry(w.floor(e.timestamp)).or_insert(e);
                if e.seq > slot.seq {
                    *slot = e;
                }
            }
            latest.into_values().filter(|e| e.timestamp >= start && e.timestamp < end).collect()
        }
    };
    if survivors.is_empty() {
        return None;
    }
    Some(match meter.spec.formula {
        Formula::Sum => survivors.iter().map(|e| e.value as f64).sum(),
        Formula::Count => survivors.len() as f64,
        Formula::Last => survivors.iter().max_by_key(|e| (e.timestamp, e.seq)).map(|e| e.value as f64).unwrap_or(0.0),
    })
}

/// Applied totals per (customer, event name, hour), each meter under its own
/// rules, sorted by event name, customer and hour.
pub fn hourly_totals(meters: &[Meter], events: &[RecordedEvent]) -> Vec<HourTotal> {
    let mut out = Vec::new();
    for meter in meters {
        let mut keys: Vec<(String, i64)> = events
            .iter()
            .filter(|e| e.applied && !e.cancelled && e.event_name == meter.spec.event_name)
            .filter_map(|e| Some((e.customer.clone()?, TimeWindow::Hour.floor(e.timestamp))))
            .collect();
        keys.sort();
        keys.dedup();
        for (customer, hour) in keys {
            if let Some(value) = aggregate(meter, events, &customer, hour, hour + 3600, i64::MAX) {
                out.push(HourTotal { customer, event_name: meter.spec.event_name.clone(), hour_start: hour, value });
            }
        }
    }
    out.sort_by(|a, b| (&a.event_name, &a.customer, a.hour_start).cmp(&(&b.event_name, &b.customer, b.hour_start)));
    out
}

/// Count significant digits of a whole-number string (no sign, no leading zeros).
pub fn significant_digits(digits: &str) -> usize {
    let t = digits.trim_start_matches('0');
    if t.is_empty() { 1 } else { t.len() }
}

/// Parse a meter event value: an optionally signed run of ASCII digits.
/// `Err(true)` when it is a whole number with more than 15 significant digits,
/// `Err(false)` when it is not a whole number.
pub fn parse_value(s: &str) -> Result<i64, bool> {
    let digits = s.strip_prefix('-').or_else(|| s.strip_prefix('+')).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(false);
    }
    if significant_digits(digits) > 15 {
        return Err(true);
    }
    s.parse::<i64>().map_err(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(spec: MeterSpec) -> Meter {
        Meter { id: "mtr_1".into(), spec, active: true, created: 0, updated: 0, deactivated_at: None }
    }

    fn ev(seq: u64, ts: i64, value: i64) -> RecordedEvent {
        RecordedEvent {
            identifier: format!("id{seq}"),
            event_name: "tokens".into(),
            customer: Some("cus_a".into()),
            value,
            timestamp: ts,
            received_at: 1_000 + seq as i64,
            seq,
            payload: BTreeMap::new(),
            source: Source::V1,
            applied: true,
            cancelled: false,
        }
    }

    const H: i64 = 1_700_000_000 - 1_700_000_000 % 3600;

    #[test]
    fn raw_sum_count_last() {
        let events = vec![ev(1, H + 10, 5), ev(2, H + 5, 7), ev(3, H + 3700, 100)];
        assert_eq!(aggregate(&meter(MeterSpec::sum("tokens")), &events, "cus_a", H, H + 3600, i64::MAX), Some(12.0));
        assert_eq!(aggregate(&meter(MeterSpec::count("tokens")), &events, "cus_a", H, H + 7200, i64::MAX), Some(3.0));
        // last: latest by timestamp, not by receipt
        assert_eq!(aggregate(&meter(MeterSpec::last("tokens")), &events, "cus_a", H, H + 3600, i64::MAX), Some(5.0));
        assert_eq!(aggregate(&meter(MeterSpec::sum("tokens")), &events, "cus_b", H, H + 3600, i64::MAX), None);
    }

    #[test]
    fn pre_aggregated_keeps_latest_received_per_window() {
        let m = meter(MeterSpec::sum("tokens").hourly());
        // Two sends for the same hour: the second received overwrites, even
        // though its timestamp is earlier.
        let events = vec![ev(1, H + 1800, 40), ev(2, H + 60, 55), ev(3, H + 3600 + 1800, 10)];
        assert_eq!(aggregate(&m, &events, "cus_a", H, H + 3600, i64::MAX), Some(55.0));
        assert_eq!(aggregate(&m, &events, "cus_a", H, H + 7200, i64::MAX), Some(65.0));
        let count = meter(MeterSpec::count("tokens").hourly());
        assert_eq!(aggregate(&count, &events, "cus_a", H, H + 7200, i64::MAX), Some(2.0));
        let daily = meter(MeterSpec::sum("tokens").daily());
        assert_eq!(aggregate(&daily, &events, "cus_a", H - 86_400, H + 86_400, i64::MAX), Some(10.0));
    }

    #[test]
    fn cancelled_unapplied_and_lagging_events_do_not_count() {
        let m = meter(MeterSpec::sum("tokens"));
        let mut events = vec![ev(1, H + 1, 1), ev(2, H + 2, 2), ev(3, H + 3, 4), ev(4, H + 4, 8)];
        events[0].cancelled = true;
        events[1].applied = false;
        assert_eq!(aggregate(&m, &events, "cus_a", H, H + 3600, i64::MAX), Some(12.0));
        // cutoff: event 4 was received at 1004
        assert_eq!(aggregate(&m, &events, "cus_a", H, H + 3600, 1003), Some(4.0));
    }

    #[test]
    fn hourly_totals_per_customer_and_hour() {
        let meters = vec![meter(MeterSpec::sum("tokens"))];
        let mut b = ev(3, H + 20, 3);
        b.customer = Some("cus_b".into());
        let events = vec![ev(1, H + 10, 1), ev(2, H + 3610, 2), b];
        let t = hourly_totals(&meters, &events);
        let got: Vec<_> = t.iter().map(|t| (t.customer.as_str(), t.hour_start, t.value)).collect();
        assert_eq!(got, vec![("cus_a", H, 1.0), ("cus_a", H + 3600, 2.0), ("cus_b", H, 3.0)]);
    }

    #[test]
    fn values() {
        assert_eq!(parse_value("42"), Ok(42));
        assert_eq!(parse_value("-7"), Ok(-7));
        assert_eq!(parse_value("999999999999999"), Ok(999_999_999_999_999));
        assert_eq!(parse_value("0001000000000000000"), Err(true));
        assert_eq!(parse_value("1000000000000000"), Err(true));
        assert_eq!(parse_value("1.5"), Err(false));
        assert_eq!(parse_value(""), Err(false));
        assert_eq!(parse_value("abc"), Err(false));
        assert_eq!(parse_value("-"), Err(false));
    }

    #[test]
    fn meter_spec_parse() {
        assert_eq!(MeterSpec::parse("tokens:sum").map(|m| m.formula), Ok(Formula::Sum));
        let s = MeterSpec::parse("storage:last:hour").expect("parses");
        assert_eq!((s.formula, s.event_time_window), (Formula::Last, Some(TimeWindow::Hour)));
        assert!(MeterSpec::parse("x:max").is_err());
        assert!(MeterSpec::parse("x:sum:week").is_err());
        assert!(MeterSpec::parse(":sum").is_err());
    }
}

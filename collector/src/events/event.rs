//! One CloudEvent → usage records, or the reason it is refused.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tally_core::{Aggregation, JsonPath, LegacyKeys, MeterConfig, TenantId, UsageRecord};

/// The meters, indexed by the event type feeding them.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    by_type: BTreeMap<String, Vec<EventMeter>>,
}

/// An event meter with its group-by paths parsed.
#[derive(Debug, Clone)]
struct EventMeter {
    config: Arc<MeterConfig>,
    group_paths: Vec<(String, JsonPath)>,
}

impl Meters {
    pub fn new(meters: &[MeterConfig]) -> Meters {
        let mut by_type: BTreeMap<String, Vec<EventMeter>> = BTreeMap::new();
        for m in meters {
            if let Some(t) = &m.event_type {
                by_type
                    .entry(t.clone())
                    .or_default()
                    .push(EventMeter { config: Arc::new(m.clone()), group_paths: m.group_paths() });
            }
        }
        Meters { by_type }
    }

    fn for_type(&self, event_type: &str) -> &[EventMeter] {
        self.by_type.get(event_type).map_or(&[], Vec::as_slice)
    }
}

/// What becomes of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// Valid: these records go to the ledger.
    Records(Vec<UsageRecord>),
    /// Refused; the reason names the field.
    Rejected(String),
}

const MAX_ID_LEN: usize = 256;
const MAX_SOURCE_LEN: usize = 1024;
/// Longest group-by value and `unique_count` value kept (bytes).
const MAX_VALUE_TEXT_LEN: usize = 256;

/// The times an event's `time` must fall between, fixed per request.
#[derive(Debug, Clone, Copy)]
pub struct EventClock {
    pub now_ms: i64,
    /// `events.max_future`.
    pub max_future_ms: i64,
    /// `events.max_age`.
    pub max_age_ms: i64,
}

/// Checks one event and turns it into one record per meter fed by its
/// type. `pinned` is the tenant of a tenant-scoped key, if any. Everything
/// the database would refuse (NUL characters, overlong text, values whose
/// sums could overflow) is refused here, per event, so one bad event never
/// fails the commit it would have shared with others.
pub fn check_event(event: &Value, meters: &Meters, pinned: Option<&TenantId>, clock: &EventClock) -> EventOutcome {
    match records(event, meters, pinned, clock) {
        Ok(records) => EventOutcome::Records(records),
        Err(reason) => EventOutcome::Rejected(reason),
    }
}

/// Text PostgreSQL can store: no NUL character, at most `max_len` bytes.
fn check_text(field: &str, s: &str, max_len: usize) -> Result<(), String> {
    if s.len() > max_len {
        return Err(format!("{field}: longer than {max_len} bytes"));
    }
    if s.contains('\0') {
        return Err(format!("{field}: must not contain NUL (\\u0000) characters"));
    }
    Ok(())
}

fn required_str<'a>(e: &'a Map<String, Value>, field: &str, max_len: usize) -> Result<&'a str, String> {
    match e.get(field) {
        None | Some(Value::Null) => Err(format!("{field}: required")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{field}: must not be empty")),
        Some(Value::String(s)) => check_text(field, s, max_len).map(|()| s.as_str()),
        Some(_) => Err(format!("{field}: must be a string")),
    }
}

fn records(
    event: &Value,
    meters: &Meters,
    pinned: Option<&TenantId>,
    clock: &EventClock,
) -> Result<Vec<UsageRecord>, String> {
    let EventClock { now_ms, max_future_ms, max_age_ms } = *clock;
    let e = event.as_object().ok_or("event: must be a JSON object")?;
    if e.get("specversion") != Some(&Value::String("1.0".into())) {
        return Err("specversion: must be \"1.0\"".into());
    }
    let id = required_str(e, "id", MAX_ID_LEN)?;
    let source = required_str(e, "source", MAX_SOURCE_LEN)?;
    let event_type = required_str(e, "type", MAX_SOURCE_LEN)?;
    let tenant = match (e.get("subject"), pinned) {
        (None | Some(Value::Null), Some(t)) => t.clone(),
        (None | Some(Value::Null), None) => return Err("subject: required (the tenant the usage belongs to)".into()),
        (Some(Value::String(s)), pinned) => {
            let t = TenantId::parse(s).map_err(|err| format!("subject: {err}"))?;
            if let Some(p) = pinned.filter(|p| **p != t) {
                return Err(format!("subject: this key may only send usage for tenant {p}"));
            }
            t
        }
        (Some(_), _) => return Err("subject: must be a string".into()),
    };
    let time_ms = match e.get("time") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| format!("time: {s:?} is not an RFC 3339 timestamp"))?
                .timestamp_millis();
            if t > now_ms + max_future_ms {
                return Err(format!("time: more than {}s in the future (events.max_future)", max_future_ms / 1000));
            }
            if t < now_ms - max_age_ms {
                let age = if max_age_ms % 86_400_000 == 0 {
                    format!("{}d", max_age_ms / 86_400_000)
                } else {
                    humantime::format_duration(std::time::Duration::from_millis(max_age_ms as u64)).to_string()
                };
                return Err(format!(
                    "time: {s} is older than events.max_age ({age}); backfill with `tally replay` or raise the limit"
                ));
            }
            Some(t)
        }
        Some(_) => return Err("time: must be an RFC 3339 string".into()),
    };
    let empty = Value::Object(Map::new());
    let data = match e.get("data") {
        None | Some(Value::Null) => &empty,
        Some(d @ Value::Object(_)) => d,
        Some(_) => return Err("data: must be a JSON object".into()),
    };
    let fed = meters.for_type(event_type);
    if fed.is_empty() {
        return Err(format!("type: no meter is declared for event type {event_type:?}"));
    }

    // The content that must match on a retry: everything but the key,
    // numbers compared by value (`1` and `1.0` are the same content).
    let content = serde_json::json!({
        "type": event_type, "subject": tenant.as_str(), "time": time_ms, "data": data,
    });
    let mut canonical = String::new();
    tally_core::canonical::json(&mut canonical, &content);
    let content_hash = hex::encode(Sha256::digest(canonical.as_bytes()));
    // As tally ≤ 0.1 hashed it (JSON text as written): a resend of an
    // event stored by that version is still a duplicate.
    let legacy_hash = hex::encode(Sha256::digest(content.to_string().as_bytes()));
    let legacy =
        (legacy_hash != content_hash).then(|| Box::new(LegacyKeys { event_id: None, content_hash: Some(legacy_hash) }));

    fed.iter()
        .map(|EventMeter { config: meter, group_paths }| {
            let (value, distinct_key) = meter_value(meter, data)?;
            let mut groups: BTreeMap<&str, Value> = BTreeMap::new();
            for (name, path) in group_paths {
                if let Some(v) = path.get(data).and_then(group_value) {
                    if let Value::String(s) = &v {
                        check_text(&path.describe(), s, MAX_VALUE_TEXT_LEN)?;
                    }
                    groups.insert(name.as_str(), v);
                }
            }
            Ok(UsageRecord {
                tenant: tenant.clone(),
                source: source.to_owned(),
                event_id: id.to_owned(),
                meter: Arc::from(meter.name.as_str()),
                value,
                distinct_key,
                event_time_ms: time_ms.unwrap_or(now_ms),
                group_key: serde_json::to_string(&groups).unwrap_or_else(|_| "{}".into()),
                content_hash: content_hash.clone(),
                legacy: legacy.clone(),
            })
        })
        .collect()
}

/// The value an event contributes to a meter.
fn meter_value(meter: &MeterConfig, data: &Value) -> Result<(f64, Option<String>), String> {
    if meter.aggregation == Aggregation::Count {
        return Ok((1.0, None));
    }
    let Some(path) = &meter.value else {
        return Err(format!("meter {}: no value path configured", meter.name));
    };
    let field = path.describe();
    let v = path.get(data).ok_or_else(|| format!("{field}: required by meter {}", meter.name))?;
    if meter.aggregation == Aggregation::UniqueCount {
        let key = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(format!("{field}: must be a string or number")),
        };
        check_text(&field, &key, MAX_VALUE_TEXT_LEN)?;
        return Ok((1.0, Some(key)));
    }
    let n = v.as_f64().ok_or_else(|| format!("{field}: must be a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{field}: must be a finite number ≥ 0 (corrections are adjustments, not negative events)"));
    }
    let max = meter.max_value();
    if n > max {
        return Err(format!("{field}: {n} exceeds meter {}'s max_value ({max})", meter.name));
    }
    Ok((n, None))
}

/// Group-by values are kept as strings (numbers and booleans as text).
fn group_value(v: &Value) -> Option<Value> {
    match v {
        Value::String(_) => Some(v.clone()),
        Value::Number(_) | Value::Bool(_) => Some(Value::String(v.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meters() -> Meters {
        let m: Vec<MeterConfig> = serde_json::from_value(json!([
            {"name": "llm_tokens", "aggregation": "sum", "event_type": "llm.completion", "value": "$.tokens",
             "group_by": {"model": "$.model"}},
            {"name": "llm_calls", "aggregation": "count", "event_type": "llm.completion"},
            {"name": "active_users", "aggregation": "unique_count", "event_type": "login", "value": "$.user"},
        ]))
        .unwrap();
        Meters::new(&m)
    }

    fn event(extra: Value) -> Value {
        let mut e = json!({"specversion": "1.0", "id": "e1", "source": "svc", "type": "llm.completion",
                           "subject": "acme", "time": "2026-11-01T10:00:00Z", "data": {"tokens": 120, "model": "gpt"}});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    }

    const NOW: i64 = 1_794_000_000_000; // 2026-11-06T16:00:00Z
    const CLOCK: EventClock = EventClock { now_ms: NOW, max_future_ms: 300_000, max_age_ms: 35 * 86_400_000 };

    fn check(e: Value) -> EventOutcome {
        check_event(&e, &meters(), None, &CLOCK)
    }

    fn rejected(e: Value) -> String {
        match check(e) {
            EventOutcome::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn one_event_feeds_every_meter_of_its_type() {
        let EventOutcome::Records(r) = check(event(json!({}))) else { panic!() };
        assert_eq!(r.len(), 2);
        assert_eq!((&*r[0].meter, r[0].value, r[0].group_key.as_str()), ("llm_tokens", 120.0, r#"{"model":"gpt"}"#));
        assert_eq!((&*r[1].meter, r[1].value), ("llm_calls", 1.0));
        assert_eq!(r[0].event_time_ms, 1_793_527_200_000); // 2026-11-01T10:00:00Z
        assert_eq!(r[0].content_hash, r[1].content_hash);
    }

    #[test]
    fn content_hash_ignores_key_order_and_changes_with_content() {
        let hash = |e| match check(e) {
            EventOutcome::Records(r) => r[0].content_hash.clone(),
            EventOutcome::Rejected(r) => panic!("{r}"),
        };
        let a = hash(event(json!({"data": {"tokens": 120, "model": "gpt"}})));
        let b = hash(event(json!({"data": {"model": "gpt", "tokens": 120}})));
        let c = hash(event(json!({"data": {"model": "gpt", "tokens": 121}})));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_events_name_the_field() {
        assert!(rejected(event(json!({"id": null}))).starts_with("id: required"));
        assert!(rejected(event(json!({"id": 7}))).starts_with("id: must be a string"));
        assert!(rejected(event(json!({"specversion": "0.3"}))).starts_with("specversion"));
        assert!(rejected(event(json!({"subject": null}))).starts_with("subject: required"));
        assert!(rejected(event(json!({"subject": "a/b"}))).starts_with("subject:"));
        assert!(rejected(event(json!({"time": "yesterday"}))).starts_with("time:"));
        assert!(rejected(event(json!({"time": "2099-01-01T00:00:00Z"}))).contains("future"));
        assert!(rejected(event(json!({"type": "nope"}))).starts_with("type: no meter"));
        assert!(rejected(event(json!({"data": {"tokens": "12"}}))).starts_with("data.tokens: must be a number"));
        assert!(rejected(event(json!({"data": {"model": "x"}}))).starts_with("data.tokens: required"));
        assert!(rejected(event(json!({"data": {"tokens": -1}}))).contains("≥ 0"));
        assert!(rejected(event(json!({"data": [1]}))).starts_with("data: must be a JSON object"));
        assert!(rejected(json!([1])).starts_with("event: must be a JSON object"));
    }

    #[test]
    fn what_the_database_would_refuse_is_refused_per_event() {
        assert!(rejected(event(json!({"id": "a\0b"}))).starts_with("id: must not contain NUL"));
        assert!(rejected(event(json!({"source": "\0"}))).starts_with("source: must not contain NUL"));
        assert!(rejected(event(json!({"id": "x".repeat(257)}))).starts_with("id: longer than 256 bytes"));
        let r = rejected(event(json!({"data": {"tokens": 1.7e308, "model": "gpt"}})));
        assert!(r.starts_with("data.tokens: ") && r.contains("max_value (1000000000000000)"), "{r}");
        assert!(matches!(check(event(json!({"data": {"tokens": 1e15, "model": "gpt"}}))), EventOutcome::Records(_)));
        assert!(
            rejected(event(json!({"data": {"tokens": 1, "model": "a\0"}})))
                .starts_with("data.model: must not contain NUL")
        );
        let login = |user: Value| json!({"specversion": "1.0", "id": "l1", "source": "web", "type": "login", "subject": "acme", "data": {"user": user}});
        assert!(rejected(login(json!("u\0"))).starts_with("data.user: must not contain NUL"));
    }

    #[test]
    fn times_before_max_age_are_refused() {
        let r = rejected(event(json!({"time": "0001-01-01T00:00:00Z"})));
        assert!(r.starts_with("time:") && r.contains("events.max_age (35d)"), "{r}");
        assert!(rejected(event(json!({"time": "1969-12-31T23:59:59Z"}))).contains("max_age"));
        // 34 days before NOW is fine.
        assert!(matches!(check(event(json!({"time": "2026-10-03T16:00:00Z"}))), EventOutcome::Records(_)));
    }

    #[test]
    fn numbers_are_content_by_value() {
        let hash = |e| match check(e) {
            EventOutcome::Records(r) => (r[0].content_hash.clone(), r[0].legacy.clone()),
            EventOutcome::Rejected(r) => panic!("{r}"),
        };
        let (one, legacy_one) = hash(event(json!({"data": {"tokens": 1, "model": "gpt"}})));
        let (one_f, legacy_one_f) = hash(event(json!({"data": {"tokens": 1.0, "model": "gpt"}})));
        assert_eq!(one, one_f);
        // The hash tally ≤ 0.1 stored for the same text is carried along.
        assert_ne!(legacy_one_f.unwrap().content_hash.unwrap(), one);
        assert!(legacy_one.is_none_or(|l| l.content_hash.as_deref() != Some(one.as_str())));
    }

    #[test]
    fn pinned_tenant_fills_in_and_refuses_others() {
        let acme = TenantId::parse("acme").unwrap();
        let mut e = event(json!({}));
        e.as_object_mut().unwrap().remove("subject");
        assert!(matches!(check_event(&e, &meters(), Some(&acme), &CLOCK), EventOutcome::Records(_)));
        let other = event(json!({"subject": "globex"}));
        match check_event(&other, &meters(), Some(&acme), &CLOCK) {
            EventOutcome::Rejected(r) => assert!(r.contains("only send usage for tenant acme"), "{r}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn unique_count_keeps_the_value_as_distinct_key_and_time_defaults_to_now() {
        let e = json!({"specversion": "1.0", "id": "l1", "source": "web", "type": "login", "subject": "acme",
                       "data": {"user": 42}});
        let EventOutcome::Records(r) = check(e) else { panic!() };
        assert_eq!((r[0].distinct_key.as_deref(), r[0].event_time_ms), (Some("42"), NOW));
    }
}

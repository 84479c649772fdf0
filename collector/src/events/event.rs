//! One CloudEvent → usage records, or the reason it is refused.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tally_core::{Aggregation, JsonPath, MeterConfig, TenantId, UsageRecord};

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

/// Checks one event and turns it into one record per meter fed by its
/// type. `pinned` is the tenant of a tenant-scoped key, if any.
pub fn check_event(
    event: &Value,
    meters: &Meters,
    pinned: Option<&TenantId>,
    now_ms: i64,
    max_future_ms: i64,
) -> EventOutcome {
    match records(event, meters, pinned, now_ms, max_future_ms) {
        Ok(records) => EventOutcome::Records(records),
        Err(reason) => EventOutcome::Rejected(reason),
    }
}

fn required_str<'a>(e: &'a Map<String, Value>, field: &str, max_len: usize) -> Result<&'a str, String> {
    match e.get(field) {
        None | Some(Value::Null) => Err(format!("{field}: required")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{field}: must not be empty")),
        Some(Value::String(s)) if s.len() > max_len => Err(format!("{field}: longer than {max_len} bytes")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{field}: must be a string")),
    }
}

fn records(
    event: &Value,
    meters: &Meters,
    pinned: Option<&TenantId>,
    now_ms: i64,
    max_future_ms: i64,
) -> Result<Vec<UsageRecord>, String> {
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
                return Err(format!("time: more than {}s in the future", max_future_ms / 1000));
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

    // The content that must match on a retry: everything but the key.
    let content = serde_json::json!({
        "type": event_type, "subject": tenant.as_str(), "time": time_ms, "data": data,
    });
    let content_hash = hex::encode(Sha256::digest(content.to_string().as_bytes()));

    fed.iter()
        .map(|EventMeter { config: meter, group_paths }| {
            let (value, distinct_key) = meter_value(meter, data)?;
            let groups: BTreeMap<&str, Value> = group_paths
                .iter()
                .filter_map(|(name, path)| Some((name.as_str(), group_value(path.get(data)?)?)))
                .collect();
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
        return match v {
            Value::String(s) => Ok((1.0, Some(s.clone()))),
            Value::Number(n) => Ok((1.0, Some(n.to_string()))),
            _ => Err(format!("{field}: must be a string or number")),
        };
    }
    let n = v.as_f64().ok_or_else(|| format!("{field}: must be a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{field}: must be a finite number ≥ 0 (corrections are adjustments, not negative events)"));
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

    const NOW: i64 = 1_800_000_000_000;

    fn check(e: Value) -> EventOutcome {
        check_event(&e, &meters(), None, NOW, 300_000)
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
    fn pinned_tenant_fills_in_and_refuses_others() {
        let acme = TenantId::parse("acme").unwrap();
        let mut e = event(json!({}));
        e.as_object_mut().unwrap().remove("subject");
        assert!(matches!(check_event(&e, &meters(), Some(&acme), NOW, 0), EventOutcome::Records(_)));
        let other = event(json!({"subject": "globex"}));
        match check_event(&other, &meters(), Some(&acme), NOW, 0) {
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

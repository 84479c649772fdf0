//! `POST /v1/events` bodies: a CloudEvent or a batch of them, parsed and
//! shaped as the route does (JSON, an object or an array, at most
//! `events.max_batch`), each event through `check_event` with the meters of
//! fuzz/src/lib.rs, open and with a tenant-pinned key, at a fixed clock.
//!
//! What must hold, besides no panic:
//! - checking is deterministic; a refusal has a reason;
//! - accepted ⇒ one record per meter fed by the event's type, in config
//!   order, each with the event's id and source (non-empty, within 256 and
//!   1024 bytes, no NUL), its tenant (the subject, or the pinned tenant), a
//!   value in the meter's bounds (1 for `count`; `unique_count` keeps its
//!   key, within 256 bytes, no NUL), a time within
//!   [now − events.max_age, now + events.max_future] (now when none is
//!   given), a group key that is a JSON object of the meter's dimensions
//!   with text values (≤ 256 bytes, no NUL), and one 64-hex content hash;
//! - a key pinned to the event's own subject changes nothing;
//! - content is compared by value: integers written as floats, object keys
//!   in another order and the time in another RFC 3339 spelling give the
//!   same content hash (the same records, for the time).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use tally_collector::events::{EventClock, EventOutcome, Meters, check_event};
use tally_core::{Aggregation, MeterConfig, TenantId};

/// 2026-11-06T16:00:00Z, as collector/src/events/event.rs's tests.
const NOW_MS: i64 = 1_794_000_000_000;

fn meters() -> &'static Meters {
    static METERS: OnceLock<Meters> = OnceLock::new();
    METERS.get_or_init(|| Meters::new(&tally_fuzz::config().meters))
}

fn clock() -> EventClock {
    let c = &tally_fuzz::config().events;
    EventClock {
        now_ms: NOW_MS,
        max_future_ms: c.max_future.as_millis() as i64,
        max_age_ms: c.max_age.as_millis().min(i64::MAX as u128) as i64,
    }
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.contains('\0')
}

fn check_outcome(event: &Value, outcome: &EventOutcome, pinned: Option<&TenantId>, clock: &EventClock) {
    let records = match outcome {
        EventOutcome::Rejected(reason) => {
            assert!(!reason.is_empty(), "a refusal without a reason");
            return;
        }
        EventOutcome::Records(records) => records,
    };
    let Some(e) = event.as_object() else { panic!("accepted an event that is not an object: {event}") };
    let field = |name: &str| e.get(name).and_then(Value::as_str);
    let (Some(id), Some(source), Some(ty)) = (field("id"), field("source"), field("type")) else {
        panic!("accepted an event without id, source or type: {event}")
    };
    assert!(text_ok(id, 256) && text_ok(source, 1024), "accepted id {id:?} / source {source:?}");
    let fed: Vec<&MeterConfig> =
        tally_fuzz::config().meters.iter().filter(|m| m.event_type.as_deref() == Some(ty)).collect();
    assert_eq!(records.len(), fed.len(), "{} records for the {} meters of type {ty:?}", records.len(), fed.len());
    assert!(!records.is_empty(), "accepted an event no meter takes");
    for (r, m) in records.iter().zip(&fed) {
        assert_eq!(&*r.meter, m.name.as_str());
        assert_eq!((r.event_id.as_str(), r.source.as_str()), (id, source));
        match (e.get("subject"), pinned) {
            (Some(Value::String(s)), _) => assert_eq!(r.tenant.as_str(), s.as_str()),
            (_, Some(p)) => assert_eq!(&r.tenant, p),
            (subject, None) => panic!("accepted without a tenant (subject {subject:?})"),
        }
        if let Some(p) = pinned {
            assert_eq!(&r.tenant, p, "a pinned key's event filed under another tenant");
        }
        assert!(m.accepts(r.value), "value {} outside meter {}'s bounds", r.value, m.name);
        match m.aggregation {
            Aggregation::Count => assert_eq!((r.value, &r.distinct_key), (1.0, &None)),
            Aggregation::UniqueCount => {
                assert_eq!(r.value, 1.0);
                let Some(k) = &r.distinct_key else { panic!("unique_count record without its key") };
                assert!(k.len() <= 256 && !k.contains('\0'), "distinct key {k:?}");
            }
            _ => assert_eq!(r.distinct_key, None),
        }
        match e.get("time") {
            Some(Value::String(_)) => assert!(
                r.event_time_ms >= clock.now_ms - clock.max_age_ms
                    && r.event_time_ms <= clock.now_ms + clock.max_future_ms,
                "accepted time {} outside [now - max_age, now + max_future]",
                r.event_time_ms
            ),
            _ => assert_eq!(r.event_time_ms, clock.now_ms),
        }
        let groups: Map<String, Value> = match serde_json::from_str(&r.group_key) {
            Ok(g) => g,
            Err(e) => panic!("group key {:?} is not a JSON object: {e}", r.group_key),
        };
        for (dim, v) in &groups {
            assert!(m.group_by.contains_key(dim), "group key dimension {dim:?} is not meter {}'s", m.name);
            let Value::String(s) = v else { panic!("group value {v} is not text") };
            assert!(s.len() <= 256 && !s.contains('\0'), "group value {s:?}");
        }
        assert!(
            r.content_hash.len() == 64 && r.content_hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "content hash {:?}",
            r.content_hash
        );
        assert_eq!(r.content_hash, records[0].content_hash, "one event, two content hashes");
    }
}

fn content_hash(outcome: &EventOutcome) -> Option<&str> {
    match outcome {
        EventOutcome::Records(r) => r.first().map(|r| r.content_hash.as_str()),
        EventOutcome::Rejected(_) => None,
    }
}

/// `v` with every integer an f64 holds exactly written as a float.
fn ints_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => match n.as_f64() {
            Some(f) if f.abs() < 9_007_199_254_740_992.0 => Value::from(f),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(ints_as_floats).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), ints_as_floats(v))).collect()),
        _ => v.clone(),
    }
}

/// `v` with its objects' keys inserted in reverse order (a different
/// order when serde_json keeps insertion order).
fn keys_reversed(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(keys_reversed).collect()),
        Value::Object(o) => Value::Object(o.iter().rev().map(|(k, v)| (k.clone(), keys_reversed(v))).collect()),
        _ => v.clone(),
    }
}

fn with(event: &Value, key: &str, value: Value) -> Value {
    let mut e = event.clone();
    if let Some(o) = e.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
    e
}

fuzz_target!(|data: &[u8]| {
    let config = &tally_fuzz::config().events;
    if data.len() > config.max_body_bytes {
        return;
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(data) else { return };
    let events = match parsed {
        Value::Array(events) => events,
        event @ Value::Object(_) => vec![event],
        _ => return,
    };
    if events.len() > config.max_batch {
        return;
    }
    let clock = clock();
    let meters = meters();
    let acme = match TenantId::parse("acme") {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    for event in &events {
        let open = check_event(event, meters, None, &clock);
        check_outcome(event, &open, None, &clock);
        assert_eq!(check_event(event, meters, None, &clock), open, "checking the same event twice differs");
        let pinned = check_event(event, meters, Some(&acme), &clock);
        check_outcome(event, &pinned, Some(&acme), &clock);
        if let EventOutcome::Records(r) = &open {
            if r.iter().all(|r| r.tenant == acme) {
                assert_eq!(pinned, open, "a key pinned to the event's own tenant changed the outcome");
            }
        }
        let Some(hash) = content_hash(&open) else { continue };
        if let Some(data) = event.get("data") {
            let floats = check_event(&with(event, "data", ints_as_floats(data)), meters, None, &clock);
            assert_eq!(content_hash(&floats), Some(hash), "integers written as floats changed the content hash");
        }
        let reordered = check_event(&keys_reversed(event), meters, None, &clock);
        assert_eq!(content_hash(&reordered), Some(hash), "reordered keys changed the content hash");
        if let (Some(Value::String(_)), EventOutcome::Records(r)) = (event.get("time"), &open) {
            let Some(t) = chrono::DateTime::from_timestamp_millis(r[0].event_time_ms) else {
                panic!("accepted time {} is not a date", r[0].event_time_ms)
            };
            let respelled = check_event(&with(event, "time", Value::from(t.to_rfc3339())), meters, None, &clock);
            assert_eq!(respelled, open, "the same time in another RFC 3339 spelling changed the outcome");
        }
    }
});

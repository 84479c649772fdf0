//! Stripe webhooks: the signature check and the decoding of the events
//! tally acts on.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`; each `v1` is
//! HMAC-SHA256 over `"{t}.{raw body}"` keyed with the whole `whsec_…`
//! secret as bytes. Any `v1` may match (Stripe signs with the old and the
//! new secret while one is rolled); other schemes (`v0`, test-mode
//! extras) are ignored. The timestamp must be within the tolerance of now
//! either way, so a captured request cannot be replayed later.

use hmac::{KeyInit, Mac};
use serde_json::Value;
use tally_store::{BillingEffect, WebhookEvent};

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// Why a signature was refused: the message says so, `reason()` labels
/// the metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature header: {0}")]
    Malformed(&'static str),
    #[error("Stripe-Signature timestamp {t} is {age} s from now, outside the tolerance of {tolerance} s")]
    OutsideTolerance { t: i64, age: i64, tolerance: i64 },
    #[error("no v1 signature in Stripe-Signature matches the body and the webhook secret")]
    Mismatch,
}

impl SignatureError {
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing => "missing_signature",
            SignatureError::Malformed(_) => "malformed_signature",
            SignatureError::OutsideTolerance { .. } => "outside_tolerance",
            SignatureError::Mismatch => "bad_signature",
        }
    }
}

/// Checks `header` against `body` signed with `secret`, at `now_s`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    tolerance_s: i64,
    now_s: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > 4096 {
        return Err(SignatureError::Malformed("longer than 4096 bytes"));
    }
    let mut t: Option<i64> = None;
    let mut v1: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed("expected key=value pairs"))?;
        match k {
            "t" => t = Some(v.parse().map_err(|_| SignatureError::Malformed("t is not a whole number of seconds"))?),
            // A v1 that is not hex cannot match; the others may.
            "v1" => v1.extend(hex::decode(v).ok().filter(|b| b.len() == 32)),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no t= timestamp"))?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed("no v1= signature"));
    }
    let age = now_s.saturating_sub(t);
    if age.abs() > tolerance_s {
        return Err(SignatureError::OutsideTolerance { t, age, tolerance: tolerance_s });
    }
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    if v1.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// Signs `body` as Stripe does (the stand-in and tests use it).
pub fn sign(body: &[u8], secret: &[u8], t: i64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A verified event, decoded: `effect` is None for types tally does not
/// act on (acknowledged all the same).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub id: String,
    pub kind: String,
    pub created_s: i64,
    pub effect: Option<BillingEffect>,
}

impl Decoded {
    pub fn into_event(self) -> Option<WebhookEvent> {
        Some(WebhookEvent { id: self.id, kind: self.kind, created_s: self.created_s, effect: self.effect? })
    }
}

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.get(field).and_then(Value::as_str).ok_or_else(|| format!("{field}: missing or not a string"))
}

/// An id field that may be expanded into an object (`"customer": {"id": …}`).
fn id_of<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    match v.get(field)? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

fn tenant_hint(metadata: Option<&Value>, key: &str) -> Option<String> {
    let t = metadata?.get(key)?.as_str()?;
    tally_core::TenantId::parse(t).ok().map(|t| t.as_str().to_owned())
}

/// The subscription's current period: top-level `current_period_*` (API
/// versions before 2025-03-31) or its first item's (later ones).
fn period(sub: &Value) -> Option<(i64, i64)> {
    let read = |v: &Value| Some((v.get("current_period_start")?.as_i64()?, v.get("current_period_end")?.as_i64()?));
    // Seconds → ms first, then the order check: a saturated pair would
    // otherwise become an empty period (found reading for the fuzz target).
    read(sub)
        .or_else(|| read(sub.pointer("/items/data/0")?))
        .and_then(|(s, e)| Some((s.checked_mul(1000)?, e.checked_mul(1000)?)))
        .filter(|(s, e)| e > s)
}

/// Decodes a verified body. `tenant_key` is the metadata key naming the
/// tenant (`[stripe] tenant_metadata_key`).
pub fn decode(body: &[u8], tenant_key: &str) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: not a JSON event ({e})"))?;
    let id = text(&v, "id")?;
    if !id.starts_with("evt_") || id.len() > 255 || id.chars().any(char::is_control) {
        return Err("id: not a Stripe event id (evt_…)".into());
    }
    let kind = text(&v, "type")?;
    if kind.len() > 255 || kind.chars().any(char::is_control) {
        return Err("type: not an event type".into());
    }
    let created_s = v.get("created").and_then(Value::as_i64).ok_or("created: missing or not a whole number")?;
    let object = v.pointer("/data/object").ok_or("data.object: missing")?;
    let customer =
        || id_of(object, "customer").map(str::to_owned).ok_or_else(|| format!("{kind}: data.object.customer missing"));
    let effect = match kind {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed" => {
            let status = text(object, "status").map_err(|e| format!("data.object.{e}"))?;
            if status.is_empty() || status.len() > 64 || !status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                return Err("data.object.status: not a subscription status".into());
            }
            Some(BillingEffect::Subscription {
                customer: customer()?,
                subscription_id: text(object, "id").map_err(|e| format!("data.object.{e}"))?.to_owned(),
                status: status.to_owned(),
                period: period(object),
                tenant_hint: tenant_hint(object.get("metadata"), tenant_key),
            })
        }
        "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" | "invoice.payment_action_required" => {
            let outcome = match kind {
                "invoice.payment_failed" => "payment_failed",
                "invoice.payment_action_required" => "payment_action_required",
                _ => "paid",
            };
            // The subscription's metadata rides along on the invoice (in
            // `parent.subscription_details` since 2025-03-31, before in
            // `subscription_details`).
            let meta = object
                .pointer("/parent/subscription_details/metadata")
                .or_else(|| object.pointer("/subscription_details/metadata"))
                .or_else(|| object.get("metadata"));
            Some(BillingEffect::Invoice {
                customer: customer()?,
                outcome: outcome.to_owned(),
                tenant_hint: tenant_hint(meta, tenant_key),
            })
        }
        "customer.created" | "customer.updated" => Some(BillingEffect::Customer {
            customer: text(object, "id").map_err(|e| format!("data.object.{e}"))?.to_owned(),
            tenant_hint: tenant_hint(object.get("metadata"), tenant_key),
        }),
        _ => None,
    };
    if let Some(e) = &effect
        && !customer_ok(e.customer())
    {
        return Err("data.object.customer: not a Stripe customer id (cus_…)".into());
    }
    Ok(Decoded { id: id.to_owned(), kind: kind.to_owned(), created_s, effect })
}

fn customer_ok(c: &str) -> bool {
    c.len() <= 255
        && c.strip_prefix("cus_").is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";

    #[test]
    fn a_signature_verifies_and_any_v1_may_match() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, SECRET, 1000);
        assert_eq!(verify(Some(&header), body, SECRET, 300, 1100), Ok(()));
        let rotated = format!("t=1000,v1={},{}", "ab".repeat(32), header.split_once(',').unwrap().1);
        assert_eq!(verify(Some(&rotated), body, SECRET, 300, 1000), Ok(()));
    }

    #[test]
    fn forged_stale_and_malformed_signatures_are_refused() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, SECRET, 1000);
        assert_eq!(verify(Some(&header), b"{}", SECRET, 300, 1000), Err(SignatureError::Mismatch));
        assert_eq!(verify(Some(&header), body, b"whsec_other", 300, 1000), Err(SignatureError::Mismatch));
        assert!(matches!(verify(Some(&header), body, SECRET, 300, 1301), Err(SignatureError::OutsideTolerance { .. })));
        assert!(matches!(verify(Some(&header), body, SECRET, 300, 699), Err(SignatureError::OutsideTolerance { .. })));
        assert_eq!(verify(None, body, SECRET, 300, 1000), Err(SignatureError::Missing));
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", "garbage"] {
            assert!(matches!(verify(Some(bad), body, SECRET, 300, 1000), Err(SignatureError::Malformed(_))), "{bad}");
        }
        // A v1 that is not 32 bytes of hex is no signature.
        assert_eq!(
            verify(Some("t=1000,v1=zz"), body, SECRET, 300, 1000),
            Err(SignatureError::Malformed("no v1= signature"))
        );
    }

    #[test]
    fn subscription_events_decode_in_old_and_new_api_shapes() {
        let old = br#"{"id":"evt_1","type":"customer.subscription.updated","created":10,"data":{"object":{
            "id":"sub_1","customer":"cus_A","status":"past_due","metadata":{"tenant_id":"acme"},
            "current_period_start":100,"current_period_end":200}}}"#;
        let d = decode(old, "tenant_id").unwrap();
        assert_eq!(
            d.effect,
            Some(BillingEffect::Subscription {
                customer: "cus_A".into(),
                subscription_id: "sub_1".into(),
                status: "past_due".into(),
                period: Some((100_000, 200_000)),
                tenant_hint: Some("acme".into()),
            })
        );
        let new = br#"{"id":"evt_2","type":"customer.subscription.created","created":10,"data":{"object":{
            "id":"sub_1","customer":{"id":"cus_A"},"status":"trialing","metadata":{},
            "items":{"data":[{"current_period_start":100,"current_period_end":200}]}}}}"#;
        let Some(BillingEffect::Subscription { period, tenant_hint, .. }) = decode(new, "tenant_id").unwrap().effect
        else {
            panic!()
        };
        assert_eq!((period, tenant_hint), (Some((100_000, 200_000)), None));
        // Bounds that overflow as milliseconds are no period (they were an
        // empty one, start = end = i64::MAX).
        let huge = format!(
            r#"{{"id":"evt_9","type":"customer.subscription.updated","created":10,"data":{{"object":{{
            "id":"sub_1","customer":"cus_A","status":"active","current_period_start":{},"current_period_end":{}}}}}}}"#,
            i64::MAX / 1000 + 1,
            i64::MAX / 1000 + 2
        );
        let Some(BillingEffect::Subscription { period, .. }) = decode(huge.as_bytes(), "t").unwrap().effect else {
            panic!()
        };
        assert_eq!(period, None);
        let invoice = br#"{"id":"evt_3","type":"invoice.payment_failed","created":10,"data":{"object":{
            "customer":"cus_A","parent":{"subscription_details":{"metadata":{"org":"acme"}}}}}}"#;
        assert_eq!(
            decode(invoice, "org").unwrap().effect,
            Some(BillingEffect::Invoice {
                customer: "cus_A".into(),
                outcome: "payment_failed".into(),
                tenant_hint: Some("acme".into())
            })
        );
        let other = br#"{"id":"evt_4","type":"charge.refunded","created":10,"data":{"object":{}}}"#;
        assert_eq!(decode(other, "tenant_id").unwrap().effect, None);
        for bad in [
            &b"[]"[..],
            br#"{"id":"x","type":"a","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_5","type":"invoice.paid","created":1,"data":{"object":{}}}"#,
        ] {
            assert!(decode(bad, "tenant_id").is_err());
        }
    }
}

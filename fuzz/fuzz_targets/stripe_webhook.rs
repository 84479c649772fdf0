//! Stripe webhooks: `webhook::verify` (the `Stripe-Signature` check) and
//! `webhook::decode` (the events tally acts on), with `[stripe]`'s
//! tolerance and tenant metadata key, at a fixed clock.
//!
//! Input: `<Stripe-Signature value>\n<webhook secret>\n<body>`; without two
//! newlines the whole input is the body, with no header.
//!
//! What must hold, besides no panic:
//! - `verify` with any header and secret: accepted ⇒ the header's `t` is
//!   within the tolerance and one of its `v1` is the body's HMAC under the
//!   secret (as `sign` computes it);
//! - a payload signed inside the target (`sign`) always verifies, also
//!   among other `v1`/`v0` entries and with spaces after commas; it does
//!   not verify for another body, another secret, or outside the tolerance;
//! - `decode`: accepted ⇒ an `evt_` id and a type of at most 255 chars
//!   without control characters, a `cus_` customer on every effect, a
//!   lowercase status, a non-empty period (start < end), tenant hints that
//!   are valid tenant ids; the same event re-serialized decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::TenantId;
use tally_exporter::stripe::webhook::{Decoded, SignatureError, decode, sign, verify};
use tally_store::BillingEffect;

/// 2026-01-01T12:00:00Z, the time the seed events were signed at.
const NOW_S: i64 = 1_767_268_800;
const DEFAULT_SECRET: &[u8] = b"whsec_test_secret";

/// How `verify` reads the header: the last `t=`, and the `v1=` values.
fn signed_at(header: &str) -> Option<i64> {
    let mut t = None;
    for part in header.split(',') {
        if let Some(("t", v)) = part.trim().split_once('=') {
            t = v.parse::<i64>().ok();
        }
    }
    t
}

fn v1s(header: &str) -> impl Iterator<Item = &str> {
    header.split(',').filter_map(|part| match part.trim().split_once('=') {
        Some(("v1", v)) => Some(v),
        _ => None,
    })
}

/// The hex signature `sign` puts in its header.
fn signature(body: &[u8], secret: &[u8], t: i64) -> String {
    let header = sign(body, secret, t);
    match header.split_once(",v1=") {
        Some((_, sig)) => sig.to_owned(),
        None => panic!("sign wrote {header:?}"),
    }
}

fn check_decoded(d: &Decoded) {
    assert!(
        d.id.starts_with("evt_") && d.id.len() <= 255 && !d.id.chars().any(char::is_control),
        "event id {:?}",
        d.id
    );
    assert!(d.kind.len() <= 255 && !d.kind.chars().any(char::is_control), "event type {:?}", d.kind);
    assert_eq!(d.clone().into_event().is_some(), d.effect.is_some());
    let Some(effect) = &d.effect else { return };
    let customer = effect.customer();
    assert!(
        customer.len() <= 255
            && customer
                .strip_prefix("cus_")
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric())),
        "customer {customer:?}"
    );
    let hint = match effect {
        BillingEffect::Subscription { status, period, tenant_hint, .. } => {
            assert!(
                !status.is_empty() && status.len() <= 64 && status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "status {status:?}"
            );
            if let Some((start, end)) = period {
                assert!(start < end, "billing period [{start}, {end}) of {} is empty", d.id);
            }
            tenant_hint
        }
        BillingEffect::Invoice { outcome, tenant_hint, .. } => {
            assert!(matches!(outcome.as_str(), "paid" | "payment_failed" | "payment_action_required"), "{outcome:?}");
            tenant_hint
        }
        BillingEffect::Customer { tenant_hint, .. } => tenant_hint,
    };
    if let Some(t) = hint {
        assert!(TenantId::parse(t).is_ok(), "tenant hint {t:?} is not a tenant id");
    }
}

fuzz_target!(|data: &[u8]| {
    let stripe = &tally_fuzz::config().stripe;
    let tolerance = stripe.webhook_tolerance.as_secs() as i64;
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (header, secret, body) = match (parts.next(), parts.next(), parts.next()) {
        // Header values that are not visible ASCII reach `verify` as U+FFFD
        // (src/api/webhook.rs).
        (Some(h), Some(s), Some(b)) => (
            Some(
                std::str::from_utf8(h)
                    .ok()
                    .filter(|h| h.bytes().all(|c| c == b'\t' || (b' '..=b'~').contains(&c)))
                    .unwrap_or("\u{fffd}"),
            ),
            s,
            b,
        ),
        _ => (None, DEFAULT_SECRET, data),
    };

    // Any header, any secret.
    let verdict = verify(header, body, secret, tolerance, NOW_S);
    if verdict.is_ok() {
        let Some(h) = header else { panic!("verified without a header") };
        let Some(t) = signed_at(h) else { panic!("verified without a t= in {h:?}") };
        assert!(
            (i128::from(NOW_S) - i128::from(t)).abs() <= i128::from(tolerance),
            "verified at t={t}, outside the tolerance"
        );
        let sig = signature(body, secret, t);
        assert!(v1s(h).any(|v| v.eq_ignore_ascii_case(&sig)), "verified, but no v1 in {h:?} is the body's signature");
    }

    // Signed here: always verifies.
    let span = 2 * tolerance + 1;
    let t = NOW_S - tolerance + (body.len() as i64).rem_euclid(span);
    let signed = sign(body, secret, t);
    assert_eq!(verify(Some(&signed), body, secret, tolerance, NOW_S), Ok(()), "a correctly signed payload was refused");
    let sig = signature(body, secret, t);
    let rotated = format!("v0={sig}, v1={}, t={t} ,v1={sig},scheme=x", "00".repeat(32));
    assert_eq!(
        verify(Some(&rotated), body, secret, tolerance, NOW_S),
        Ok(()),
        "refused among other signatures: {rotated}"
    );
    let mut other_body = body.to_vec();
    other_body.push(b' ');
    assert_eq!(verify(Some(&signed), &other_body, secret, tolerance, NOW_S), Err(SignatureError::Mismatch));
    let mut other_secret = secret.to_vec();
    other_secret.push(b'x');
    assert_eq!(verify(Some(&signed), body, &other_secret, tolerance, NOW_S), Err(SignatureError::Mismatch));
    let stale = sign(body, secret, NOW_S - tolerance - 1);
    assert!(
        matches!(verify(Some(&stale), body, secret, tolerance, NOW_S), Err(SignatureError::OutsideTolerance { .. })),
        "a signature older than the tolerance was not refused as such"
    );

    // The event.
    match decode(body, &stripe.tenant_metadata_key) {
        Ok(d) => {
            check_decoded(&d);
            let value: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => panic!("decoded a body that is not JSON: {e}"),
            };
            let respelled = serde_json::to_vec(&value).unwrap_or_default();
            assert_eq!(
                decode(&respelled, &stripe.tenant_metadata_key),
                Ok(d),
                "re-serialized, the event decodes otherwise"
            );
        }
        Err(reason) => assert!(!reason.is_empty(), "refused without a reason"),
    }
});

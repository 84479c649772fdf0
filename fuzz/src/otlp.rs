//! The OTLP harness: a body through the receivers' decoders
//! (`decode_protobuf`, used by both the gRPC codec and the HTTP receiver,
//! and `decode_json`, the HTTP receiver's), under their limits, then what
//! `Ingest::export` does with an accepted request (item checks, partition by
//! tenant, usage from meters).
//!
//! What must hold for every body:
//! - no panic; without limits a body is never refused as too large;
//! - accepted ⇒ it holds at most the items the budget walk counted, and at
//!   most [`crate::memory_bound`] bytes of heap (protobuf: at any moment
//!   of the decode too);
//! - the limits are exact: accepted at limits equal to its own cost (and
//!   decoded the same), refused as too large one item or one byte below,
//!   and under the receivers' limits accepted exactly when within them;
//! - accepted ⇒ it re-encodes with prost into a body that the budget costs
//!   no more, that is accepted under the same limits, and whose encoding is
//!   stable (encode ∘ decode ∘ encode = encode);
//! - partitioning keeps every item once, under one route each;
//! - usage records from accepted data are in their meters' bounds.

use std::sync::OnceLock;

use prost::Message;
use serde::Serialize;
use tally_collector::{
    otlp::{
        BodyError, DecodeLimits,
        budget::BudgetError,
        budget::{self, Cost},
        decode_json, decode_protobuf,
        signal::{INVALID_ID, OtlpSignal, Route},
    },
    otlp_usage::{OtlpMeters, UsageOut},
};
use tally_core::{TenantId, otlp::common::v1::KeyValue};

use crate::{alloc, config, decode_limits, max_request_bytes, memory_bound};

/// Spans, log records or data points in a request.
fn items<S: OtlpSignal>(req: &S::Request) -> u64
where
    S::Request: Clone,
{
    S::into_resources(req.clone()).iter().map(|r| S::count_items(r)).sum()
}

fn check_counter() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| assert!(alloc::is_counting(), "the counting allocator is not the global allocator"));
}

/// One OTLP/protobuf body, as `decode_protobuf::<S>` sees it behind the
/// gRPC codec or the HTTP receiver.
pub fn protobuf<S: OtlpSignal>(data: &[u8])
where
    S::Request: Clone,
{
    check_counter();
    if data.len() > max_request_bytes() {
        return;
    }
    let walk = budget::protobuf::check(data, S::ROOT, DecodeLimits::NONE, S::NOUN);
    let (decoded, mem) = alloc::measure(|| decode_protobuf::<S>(data, DecodeLimits::NONE));
    let req = match decoded {
        Ok(req) => req,
        Err(e) => {
            assert!(!e.is_too_large(), "refused as too large without limits: {e}");
            if let Ok(req) = decode_protobuf::<S>(data, decode_limits()) {
                panic!("refused without limits ({e}) but accepted under the receivers' limits ({} bytes)", req.encoded_len());
            }
            return;
        }
    };
    let cost = match walk {
        Ok(cost) => cost,
        Err(e) => panic!("decoded a body the budget walk refuses: {e}"),
    };
    check_decoded::<S>(&req, &cost, data.len(), mem, true);
    let unlimited = req.encode_to_vec();
    check_limits(&cost, &unlimited, |limits| decode_protobuf::<S>(data, limits).map(|r| r.encode_to_vec()));
    reencode::<S>(&req, &cost, true);
    ingest::<S>(req);
}

/// One OTLP/JSON body, as the HTTP receiver's `decode_json::<S>` sees it.
pub fn json<S: OtlpSignal>(data: &[u8])
where
    S::Request: Clone + Serialize,
{
    check_counter();
    if data.len() > max_request_bytes() {
        return;
    }
    let cost = match budget::json::check(data, S::ROOT, DecodeLimits::NONE, S::NOUN) {
        Ok(cost) => cost,
        // Deliberate: nesting the walk cannot count is refused, and so is
        // the request.
        Err(e @ BudgetError::TooDeep { .. }) => {
            assert!(decode_json::<S>(data, DecodeLimits::NONE).is_err(), "{e}, yet the decoder accepted it");
            return;
        }
        Err(e) => panic!("the JSON budget walk refused a body without limits: {e}"),
    };
    let (decoded, mem) = alloc::measure(|| decode_json::<S>(data, DecodeLimits::NONE));
    let req = match decoded {
        Ok(req) => req,
        Err(e) => {
            assert!(!e.is_too_large(), "refused as too large without limits: {e}");
            return;
        }
    };
    // OTLP/JSON's transient copies (serde's buffering of flattened fields)
    // are not bounded by the estimate: only what the request holds is.
    check_decoded::<S>(&req, &cost, data.len(), mem, false);
    let unlimited = req.encode_to_vec();
    check_limits(&cost, &unlimited, |limits| decode_json::<S>(data, limits).map(|r| r.encode_to_vec()));
    // The JSON walk counts text as written (hex ids, base64, escapes), not
    // as protobuf would: only the items are compared after re-encoding.
    reencode::<S>(&req, &cost, false);
    // Written back as OTLP/JSON: must not panic (NaN and ±Infinity as
    // strings; not compared, serde's OTLP/JSON is not lossless for them).
    let _ = serde_json::to_vec(&req);
    ingest::<S>(req);
}

fn check_decoded<S: OtlpSignal>(req: &S::Request, cost: &Cost, body_len: usize, mem: alloc::Usage, peak_too: bool)
where
    S::Request: Clone,
{
    let n = items::<S>(req);
    assert!(
        n <= cost.items,
        "{n} {} decoded, but the budget walk counted {} (max_items_per_request can be bypassed)",
        S::NOUN,
        cost.items
    );
    let bound = memory_bound(cost, body_len);
    assert!(
        mem.live as u64 <= bound,
        "the decoded request holds {} heap bytes; the budget estimated {} (bound {bound}) for a {body_len}-byte body: \
         max_decoded_bytes can be bypassed",
        mem.live,
        cost.bytes
    );
    if peak_too {
        assert!(
            mem.peak as u64 <= bound,
            "decoding took {} heap bytes at its peak; the budget estimated {} (bound {bound}) for a {body_len}-byte body",
            mem.peak,
            cost.bytes
        );
    }
}

/// The limits against the walk's own count. `decode` decodes the same body
/// under the given limits and re-encodes it; `unlimited` is what decoding
/// without limits gave.
fn check_limits(cost: &Cost, unlimited: &[u8], decode: impl Fn(DecodeLimits) -> Result<Vec<u8>, BodyError>) {
    let exact = DecodeLimits { max_items: cost.items, max_decoded_bytes: cost.bytes };
    match decode(exact) {
        Ok(bytes) => assert!(bytes == unlimited, "decoded differently under limits {exact:?} than without"),
        Err(e) => panic!("refused under limits equal to its own cost {cost:?}: {e}"),
    }
    if cost.items > 0 {
        let limits = DecodeLimits { max_items: cost.items - 1, max_decoded_bytes: u64::MAX };
        match decode(limits) {
            Err(e) if e.is_too_large() => {}
            Err(e) => panic!("over max_items ({limits:?}, cost {cost:?}) but refused as: {e}"),
            Ok(_) => panic!("accepted with {} items over max_items {}", cost.items, limits.max_items),
        }
    }
    if cost.bytes > 0 {
        let limits = DecodeLimits { max_items: u64::MAX, max_decoded_bytes: cost.bytes - 1 };
        match decode(limits) {
            Err(e) if e.is_too_large() => {}
            Err(e) => panic!("over max_decoded_bytes ({limits:?}, cost {cost:?}) but refused as: {e}"),
            Ok(_) => {
                panic!("accepted at {} estimated bytes over max_decoded_bytes {}", cost.bytes, limits.max_decoded_bytes)
            }
        }
    }
    let receivers = decode_limits();
    let within = cost.items <= receivers.max_items && cost.bytes <= receivers.max_decoded_bytes;
    match decode(receivers) {
        Ok(_) => assert!(within, "accepted over the receivers' limits {receivers:?} (cost {cost:?})"),
        Err(e) => assert!(
            !within && e.is_too_large(),
            "refused under the receivers' limits {receivers:?} (cost {cost:?}, within: {within}): {e}"
        ),
    }
}

/// Accepted ⇒ re-encodable: prost's encoding of the request is a body the
/// budget costs no more (items always; bytes when `bytes_too`, i.e. when
/// `cost` is a protobuf cost), accepted under the same limits, and encoding
/// its decoding gives the same bytes.
fn reencode<S: OtlpSignal>(req: &S::Request, cost: &Cost, bytes_too: bool) {
    let encoded = req.encode_to_vec();
    let again = match budget::protobuf::check(&encoded, S::ROOT, DecodeLimits::NONE, S::NOUN) {
        Ok(c) => c,
        Err(e) => panic!("prost's encoding of an accepted request is refused by the budget walk: {e}"),
    };
    assert!(again.items <= cost.items, "re-encoded: {} items, {} before", again.items, cost.items);
    if bytes_too {
        assert!(again.bytes <= cost.bytes, "re-encoded: estimated {} bytes, {} before", again.bytes, cost.bytes);
    }
    let limits =
        DecodeLimits { max_items: cost.items, max_decoded_bytes: if bytes_too { cost.bytes } else { u64::MAX } };
    let back = match decode_protobuf::<S>(&encoded, limits) {
        Ok(back) => back,
        Err(e) => panic!("prost's encoding of an accepted request is refused under {limits:?}: {e}"),
    };
    assert!(back.encode_to_vec() == encoded, "encode(decode(encode(request))) differs from encode(request)");
}

/// The meters of [`crate::FUZZ_TOML`] that read OTLP data.
fn otlp_meters() -> &'static OtlpMeters {
    static METERS: OnceLock<OtlpMeters> = OnceLock::new();
    METERS.get_or_init(|| OtlpMeters::new(&config().meters))
}

/// What `Ingest::export` does with an accepted request, minus the queue:
/// item checks, the partition by tenant, usage from the meters.
fn ingest<S: OtlpSignal>(req: S::Request) {
    let tenant = match TenantId::parse("acme") {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let mut usage = UsageOut::default();
    for res in S::into_resources(req) {
        let n = S::count_items(&res);
        let valid = S::all_items_valid(&res);
        S::extract_usage(otlp_meters(), &tenant, &res, &mut usage);
        // Routed as the tenancy rules would: the item's tenant.id if valid.
        let mut route = |attrs: Option<&[KeyValue]>| -> Route<String> {
            let attrs = attrs.ok_or(INVALID_ID)?;
            match tally_core::attributes::str(attrs, "tenant.id") {
                Some(t) => TenantId::parse(t).map(|t| t.as_str().to_owned()).map_err(|_| "invalid_tenant"),
                None => Err("missing_tenant"),
            }
        };
        let parts = S::partition(res, &mut route);
        let total: u64 = parts.iter().map(|(_, _, k)| *k).sum();
        assert_eq!(total, n, "partitioning {n} {} gave {total}", S::NOUN);
        for (i, (route, part, k)) in parts.iter().enumerate() {
            assert_eq!(S::count_items(part), *k, "a part under {route:?} holds another count than it says");
            assert!(!parts[..i].iter().any(|(r, _, _)| r == route), "route {route:?} is split over two parts");
            if valid && *k > 0 {
                assert!(*route != Err(INVALID_ID), "all items valid, yet {k} routed as invalid ids");
            }
        }
        if !valid {
            assert!(
                parts.iter().any(|(r, _, k)| *r == Err(INVALID_ID) && *k > 0),
                "a resource with invalid items, but no item routed as invalid"
            );
        }
    }
    check_usage(&usage, &tenant);
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_usage(usage: &UsageOut, tenant: &TenantId) {
    let meter = |name: &str| match config().meters.iter().find(|m| m.name == name) {
        Some(m) => m,
        None => panic!("usage for an unknown meter {name:?}"),
    };
    for r in &usage.records {
        let m = meter(&*r.meter);
        assert!(
            m.accepts(r.value),
            "{} usage {} outside meter {}'s bounds (max {})",
            r.source,
            r.value,
            m.name,
            m.max_value()
        );
        assert_eq!(&r.tenant, tenant);
        assert!(is_hex(&r.content_hash, 64), "content hash {:?}", r.content_hash);
        assert!(!r.event_id.is_empty(), "usage record without an id");
        assert!(
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&r.group_key).is_ok(),
            "group key {:?} is not a JSON object",
            r.group_key
        );
    }
    for p in &usage.cumulative {
        let m = meter(&*p.record.meter);
        assert!(p.record.value.is_finite() && p.record.value >= 0.0, "cumulative point {}", p.record.value);
        assert_eq!(p.max_value, m.max_value());
        assert!(is_hex(&p.stream_id, 64), "stream id {:?}", p.stream_id);
        assert!(is_hex(&p.record.content_hash, 64), "content hash {:?}", p.record.content_hash);
        assert_eq!(&p.record.tenant, tenant);
    }
}

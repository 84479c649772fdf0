//! The HDR histogram decoder (`Histogram::decode`), which reads stored
//! rollup blobs back, then what is done with them: merges, sums,
//! quantiles, encoding.
//!
//! Input: an HdrHistogram V2 blob, optionally followed by a second one
//! (the first's header gives its length); the two are merged.
//!
//! What must hold, besides no panic:
//! - decoded ⇒ buckets strictly ascending, within the layout (index ≤ the
//!   bucket of `MAX_VALUE`), counts in 1..=`MAX_COUNT`, the count their
//!   saturating sum;
//! - decoded ⇒ re-encodable: `decode(encode(h)) == h`, and the encoding is
//!   canonical (`encode(decode(encode(h))) == encode(h)`);
//! - tally's encoding is read by the HdrHistogram crate as the same
//!   histogram (when its counts stay below 2^53, where that crate's totals
//!   are exact);
//! - merging is commutative, has the empty histogram as identity, equals
//!   `HistogramSum`, and its count is the saturating sum;
//! - quantiles: `None` exactly when empty, within `MAX_VALUE`,
//!   non-decreasing in q, the first bucket's top at q = 0 and (counts
//!   below 2^53) the last bucket's top at q = 1.
#![no_main]

use hdrhistogram::serialization::Deserializer;
use libfuzzer_sys::fuzz_target;
use tally_core::histogram::{Histogram, HistogramSum, MAX_COUNT, MAX_VALUE};

const HEADER_LEN: usize = 40;
/// Buckets of the layout (the bucket of `MAX_VALUE` is the last).
const BUCKETS: u16 = 4352;

/// Lowest value and width of a bucket (core/src/histogram.rs's layout:
/// lowest value 1, 2 significant digits).
fn bucket_of(index: u16) -> (u64, u64) {
    let i = u64::from(index);
    if i < 256 {
        return (i, 1);
    }
    let shift = i / 128 - 1;
    ((i % 128 + 128) << shift, 1 << shift)
}

fn top(index: u16) -> u64 {
    let (low, width) = bucket_of(index);
    low + width - 1
}

fn check(h: &Histogram) {
    let buckets = h.bucket_counts();
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "buckets not strictly ascending: {buckets:?}");
    for &(index, count) in buckets {
        assert!(index < BUCKETS, "bucket {index} beyond the layout");
        assert!(count > 0 && count <= MAX_COUNT, "bucket {index} holds {count}");
    }
    assert_eq!(h.buckets(), buckets.len());
    let sum = buckets.iter().fold(0u64, |s, &(_, c)| s.saturating_add(c).min(MAX_COUNT));
    assert_eq!(h.count(), sum, "count is not the saturating sum of the buckets");
    assert_eq!(h.is_empty(), buckets.is_empty());

    let encoded = h.encode();
    match Histogram::decode(&encoded) {
        Ok(back) => {
            assert!(back == *h, "decode(encode(h)) != h:\n  h    {buckets:?}\n  back {:?}", back.bucket_counts());
            assert!(back.encode() == encoded, "the encoding is not canonical");
        }
        Err(e) => panic!("tally cannot read its own encoding of {buckets:?}: {e}"),
    }

    let exact: u128 = buckets.iter().map(|&(_, c)| u128::from(c)).sum();
    if exact < 1 << 53 {
        let theirs: hdrhistogram::Histogram<u64> =
            match Deserializer::new().deserialize(&mut std::io::Cursor::new(&encoded)) {
                Ok(t) => t,
                Err(e) => panic!("the HdrHistogram crate cannot read tally's encoding of {buckets:?}: {e:?}"),
            };
        assert_eq!(theirs.len(), h.count(), "the HdrHistogram crate reads another total");
        for &(index, count) in buckets {
            let (low, _) = bucket_of(index);
            assert_eq!(
                theirs.count_at(low),
                count,
                "the HdrHistogram crate reads bucket {index} (value {low}) otherwise"
            );
        }
        assert_eq!(theirs.iter_recorded().count(), buckets.len(), "the HdrHistogram crate reads other buckets");
    }

    let qs = [0.0, 1e-12, 0.001, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0 - 1e-12, 1.0];
    let mut last = 0;
    for q in qs {
        match h.value_at_quantile(q) {
            None => assert!(h.is_empty(), "no quantile {q} of a non-empty histogram"),
            Some(v) => {
                assert!(!h.is_empty(), "quantile {q} of an empty histogram");
                assert!(v <= MAX_VALUE, "quantile {q} is {v}");
                assert!(v >= last, "quantile {q} ({v}) below a lower quantile's ({last})");
                last = v;
            }
        }
    }
    for q in [f64::NAN, f64::NEG_INFINITY, -1.0, 2.0, f64::INFINITY] {
        assert_eq!(h.value_at_quantile(q).is_some(), !h.is_empty());
    }
    if let (Some(&(first, _)), Some(&(highest, _))) = (buckets.first(), buckets.last()) {
        assert_eq!(h.value_at_quantile(0.0), Some(top(first)));
        // The rank of q = 1 is the count as an f64: exact below 2^53.
        if exact == u128::from(h.count()) && exact < 1 << 53 {
            assert_eq!(h.value_at_quantile(1.0), Some(top(highest)));
        }
    }
}

fn merged(a: &Histogram, b: &Histogram) -> Histogram {
    let mut m = a.clone();
    m.merge(b);
    m
}

fuzz_target!(|data: &[u8]| {
    let Ok(a) = Histogram::decode(data) else { return };
    check(&a);
    // The first blob's payload length, from its header (decode read it).
    let len = data.get(4..8).map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize);
    let rest = data.get(HEADER_LEN.saturating_add(len)..).unwrap_or(&[]);
    let b = Histogram::decode(rest).unwrap_or_default();
    check(&b);

    let ab = merged(&a, &b);
    check(&ab);
    assert!(ab == merged(&b, &a), "merging is not commutative");
    assert_eq!(ab.count(), a.count().saturating_add(b.count()).min(MAX_COUNT));
    let mut sum = HistogramSum::default();
    sum.add(&a);
    sum.add(&b);
    assert!(sum.into_histogram() == ab, "HistogramSum differs from merge");
    let empty = Histogram::new();
    assert!(merged(&a, &empty) == a && merged(&empty, &a) == a, "merging the empty histogram changed it");
    let twice = merged(&ab, &ab);
    check(&twice);
    assert_eq!(twice.count(), ab.count().saturating_mul(2).min(MAX_COUNT));
});

//! HDR latency histograms, held sparsely.
//!
//! The bucket layout is HdrHistogram's for lowest value 1 and 2 significant
//! digits: values below 256 each have their own bucket, then every power of
//! two is split into 128 equal sub-buckets, so a bucket's width is under
//! 1/128 (0.8 %) of its values. Only non-empty buckets are held — a series
//! typically fills a few dozen of the 4,352 — which keeps 100,000 series in
//! tens of megabytes where a dense HDR array would take 26 KB each.
//!
//! The serialized form is HdrHistogram's V2 encoding (uncompressed), so any
//! HdrHistogram library reads stored rollups. Merging adds bucket counts, so
//! merged windows give exactly the percentiles of recording everything into
//! one histogram.

use thiserror::Error;

/// Significant decimal digits kept (relative bucket width < 1 %).
pub const SIGNIFICANT_DIGITS: u32 = 2;
/// Largest value held; larger values are recorded as this. In µs, 12.7
/// days — far above the 1 h a latency needs; metric histograms scale their
/// values by 1,000 and use the rest of the range.
pub const MAX_VALUE: u64 = (1 << 40) - 1;

/// Largest count held in a bucket (or in total); larger sums saturate here,
/// so a hostile sender's counts cannot overflow or break the encoding.
pub const MAX_COUNT: u64 = 1 << 62;

const HALF_BITS: u32 = 7; // 128 sub-buckets per power of two above the first 256 values
const HALF: u64 = 1 << HALF_BITS;
const FIRST: u64 = 2 * HALF;
/// HdrHistogram V2 cookie (uncompressed, with the TLZE word-size flag).
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_HEADER_LEN: usize = 40;

fn index_of(value: u64) -> u16 {
    let v = value.min(MAX_VALUE);
    if v < FIRST {
        return v as u16;
    }
    let shift = 63 - v.leading_zeros() - HALF_BITS; // v >> shift is in [128, 256)
    ((u64::from(shift) + 1) * HALF + (v >> shift) - HALF) as u16
}

/// Lowest value and width of a bucket.
fn bucket_of(index: u16) -> (u64, u64) {
    let i = u64::from(index);
    if i < FIRST {
        return (i, 1);
    }
    let shift = i / HALF - 1;
    ((i % HALF + HALF) << shift, 1 << shift)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// (bucket index, count), sorted by index, counts > 0.
    buckets: Vec<(u16, u64)>,
    total: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HistogramError {
    #[error("not an HdrHistogram V2 encoding (cookie {0:#x})")]
    Cookie(u32),
    #[error("HdrHistogram encoding is truncated")]
    Truncated,
    #[error("HdrHistogram encoding has {0} significant digits or another layout; tally writes 2")]
    Layout(u32),
    #[error("HdrHistogram encoding has a bucket beyond the largest value")]
    OutOfRange,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::default()
    }

    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    pub fn record_n(&mut self, value: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.add_at(index_of(value), count);
    }

    fn add_at(&mut self, index: u16, count: u64) {
        let count = count.min(MAX_COUNT);
        self.total = add(self.total, count);
        // Recent values are usually near the last bucket touched; a binary
        // search over a few dozen entries is cheap either way.
        match self.buckets.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(at) => self.buckets[at].1 = add(self.buckets[at].1, count),
            Err(at) => self.buckets.insert(at, (index, count)),
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.clone_from(other);
            return;
        }
        // Accumulating many windows, `self` soon holds every bucket the
        // others use: add in place then, without allocating.
        let mut at = 0;
        let fits = other.buckets.iter().all(|&(index, _)| {
            while at < self.buckets.len() && self.buckets[at].0 < index {
                at += 1;
            }
            at < self.buckets.len() && self.buckets[at].0 == index
        });
        if fits {
            let mut at = 0;
            for &(index, count) in &other.buckets {
                while self.buckets[at].0 < index {
                    at += 1;
                }
                self.buckets[at].1 = add(self.buckets[at].1, count);
            }
            self.total = add(self.total, other.total);
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (self.buckets.iter().peekable(), other.buckets.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, ca)), Some(&&(ib, cb))) => {
                    if ia == ib {
                        merged.push((ia, add(ca, cb)));
                        a.next();
                        b.next();
                    } else if ia < ib {
                        merged.push((ia, ca));
                        a.next();
                    } else {
                        merged.push((ib, cb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    merged.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
        self.total = add(self.total, other.total);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Non-empty buckets held (memory is proportional to this).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The non-empty buckets as (index, count), ascending by index: the
    /// sparse form PostgreSQL's `tally_hist_sum(hist_idx, hist_cnt)` reads
    /// (migrations/postgres/0012).
    pub fn bucket_counts(&self) -> &[(u16, u64)] {
        &self.buckets
    }

    /// The value at quantile `q` (0..=1): the highest value of the bucket
    /// holding the ⌈q·n⌉-th smallest recorded value. `None` when empty.
    pub fn value_at_quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for &(index, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_of(index);
                return Some(low + width - 1);
            }
        }
        None
    }

    /// HdrHistogram V2 encoding (uncompressed): a 40-byte header, then the
    /// bucket counts as zig-zag LEB128, runs of empty buckets as negatives.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.buckets.len() * 3 + 8);
        let mut next = 0u16;
        for &(index, count) in &self.buckets {
            let gap = index - next;
            match gap {
                0 => {}
                1 => put_varint(&mut payload, 0),
                _ => put_varint(&mut payload, zigzag(-i64::from(gap))),
            }
            put_varint(&mut payload, zigzag(count as i64));
            next = index + 1;
        }
        let mut out = Vec::with_capacity(V2_HEADER_LEN + payload.len());
        out.extend_from_slice(&V2_COOKIE.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // normalizing index offset
        out.extend_from_slice(&SIGNIFICANT_DIGITS.to_be_bytes());
        out.extend_from_slice(&1u64.to_be_bytes()); // lowest discernible value
        out.extend_from_slice(&MAX_VALUE.to_be_bytes());
        out.extend_from_slice(&1f64.to_be_bytes()); // integer to double ratio
        out.extend_from_slice(&payload);
        out
    }

    /// Reads [`Histogram::encode`]'s format, or any uncompressed V2 encoding
    /// with the same layout (lowest 1, 2 significant digits).
    pub fn decode(bytes: &[u8]) -> Result<Histogram, HistogramError> {
        let word = |at: usize| -> Result<u32, HistogramError> {
            let b = bytes.get(at..at + 4).ok_or(HistogramError::Truncated)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let cookie = word(0)?;
        if cookie & !0xf0 != V2_COOKIE & !0xf0 {
            return Err(HistogramError::Cookie(cookie));
        }
        let len = word(4)? as usize;
        let digits = word(12)?;
        let lowest = bytes.get(16..24).ok_or(HistogramError::Truncated)?;
        if digits != SIGNIFICANT_DIGITS || lowest != 1u64.to_be_bytes() || word(8)? != 0 {
            return Err(HistogramError::Layout(digits));
        }
        let payload = bytes.get(V2_HEADER_LEN..V2_HEADER_LEN + len).ok_or(HistogramError::Truncated)?;
        // One entry per varint at most (each ends with a byte below 0x80).
        let varints = payload.iter().filter(|b| **b < 0x80).count();
        let mut h = Histogram { buckets: Vec::with_capacity(varints), total: 0 };
        let mut payload = payload.iter().copied();
        let mut index: u64 = 0;
        let max_index = u64::from(index_of(MAX_VALUE));
        while let Some(v) = get_varint(&mut payload)? {
            let v = unzigzag(v);
            if v < 0 {
                // Saturating: a hostile gap lands beyond the range (refused
                // below) instead of wrapping to an unsorted index.
                index = index.saturating_add(v.unsigned_abs());
                continue;
            }
            if v > 0 {
                let v = (v as u64).min(MAX_COUNT) as i64;
                if index > max_index {
                    return Err(HistogramError::OutOfRange);
                }
                h.buckets.push((index as u16, v as u64));
                h.total = add(h.total, v as u64);
            }
            index = index.saturating_add(1);
        }
        Ok(h)
    }
}

/// Sums many histograms into one: a dense array of bucket counts, so each
/// addition is a direct index per bucket (merging sparse histograms one by
/// one walks the growing result every time).
#[derive(Debug, Clone)]
pub struct HistogramSum {
    counts: Vec<u64>,
    total: u64,
}

impl Default for HistogramSum {
    fn default() -> HistogramSum {
        HistogramSum { counts: vec![0; usize::from(index_of(MAX_VALUE)) + 1], total: 0 }
    }
}

impl HistogramSum {
    pub fn add(&mut self, h: &Histogram) {
        for &(index, count) in &h.buckets {
            let c = &mut self.counts[usize::from(index)];
            *c = add(*c, count);
        }
        self.total = add(self.total, h.total);
    }

    pub fn into_histogram(self) -> Histogram {
        let buckets = self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (i as u16, *c)).collect();
        Histogram { buckets, total: self.total }
    }
}

fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_COUNT)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// HdrHistogram's LEB128 variant (see [`get_varint`]): 7 bits a byte for
/// eight bytes, then the ninth holds the last 8 bits — plain LEB128 would
/// take ten bytes for counts of 2^62 and readers would misread the rest.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    for _ in 0..8 {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// HdrHistogram's LEB128 variant: at most 9 bytes, the ninth holding 8 bits.
fn get_varint(bytes: &mut impl Iterator<Item = u8>) -> Result<Option<u64>, HistogramError> {
    let mut v = 0u64;
    for i in 0..9 {
        let Some(b) = bytes.next() else {
            return if i == 0 { Ok(None) } else { Err(HistogramError::Truncated) };
        };
        if i == 8 {
            return Ok(Some(v | (u64::from(b) << 56)));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn saturated_counts_round_trip_and_keep_later_buckets_in_place() {
        // Found by the hdr_histogram fuzz target: a count of 2^62 was
        // written as ten varint bytes, and the tenth was read as a gap.
        let mut h = Histogram::new();
        h.record_n(5, MAX_COUNT);
        h.record_n(20, 3);
        let back = Histogram::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.bucket_counts(), &[(5, MAX_COUNT), (20, 3)]);
    }

    #[test]
    fn huge_gaps_are_refused_not_wrapped() {
        let mut bytes = Histogram::new().encode();
        let mut payload = Vec::new();
        for _ in 0..3 {
            put_varint(&mut payload, zigzag(i64::MIN + 1)); // a gap of 2^63 - 1
        }
        put_varint(&mut payload, zigzag(1));
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        assert_eq!(Histogram::decode(&bytes), Err(HistogramError::OutOfRange));
        // Found by the fuzz target: a saturated index followed by a zero
        // count (no bucket) overflowed stepping to the next index.
        let mut bytes = Histogram::new().encode();
        let mut payload = Vec::new();
        for _ in 0..3 {
            put_varint(&mut payload, zigzag(i64::MIN + 1));
        }
        put_varint(&mut payload, zigzag(0));
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        assert_eq!(Histogram::decode(&bytes).map(|h| h.count()), Ok(0));
    }

    use super::*;

    #[test]
    fn layout_matches_hdr() {
        for v in [0u64, 1, 255, 256, 257, 511, 512, 1000, 123_456, 3_600_000_000, MAX_VALUE] {
            let (low, width) = bucket_of(index_of(v));
            assert!(low <= v && v < low + width, "{v} not in [{low}, {})", low + width);
            assert!(width as f64 <= (low.max(1) as f64) / 128.0 || width == 1, "{v}: width {width}");
        }
        assert_eq!(index_of(MAX_VALUE), 4351);
    }

    #[test]
    fn reads_and_is_read_by_the_hdrhistogram_crate() {
        use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
        let values = [1u64, 2, 300, 300, 5_000, 77_777, 1_000_000, 3_600_000_000];
        let mut ours = Histogram::new();
        let mut theirs = hdrhistogram::Histogram::<u64>::new_with_bounds(1, MAX_VALUE, 2).unwrap();
        for v in values {
            ours.record(v);
            theirs.record(v).unwrap();
        }
        let decoded: hdrhistogram::Histogram<u64> =
            Deserializer::new().deserialize(&mut std::io::Cursor::new(ours.encode())).unwrap();
        assert_eq!(decoded, theirs);
        let mut buf = Vec::new();
        V2Serializer::new().serialize(&theirs, &mut buf).unwrap();
        assert_eq!(Histogram::decode(&buf).unwrap(), ours);
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(ours.value_at_quantile(q), Some(theirs.value_at_quantile(q)), "q={q}");
        }
    }

    #[test]
    fn huge_counts_saturate_and_still_encode() {
        let mut h = Histogram::new();
        h.record_n(10, u64::MAX);
        h.record_n(10, 1 << 63);
        h.record_n(20, 1);
        let mut twice = h.clone();
        twice.merge(&h);
        assert_eq!(twice.count(), MAX_COUNT);
        assert_eq!(Histogram::decode(&twice.encode()).unwrap().buckets(), 2);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Histogram::decode(b"nope"), Err(HistogramError::Cookie(u32::from_be_bytes(*b"nope"))));
        let mut enc = Histogram::new().encode();
        enc[4..8].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(Histogram::decode(&enc), Err(HistogramError::Truncated));
    }

    proptest! {
        #[test]
        fn merging_equals_recording_into_one(
            a in proptest::collection::vec(0u64..5_000_000_000, 0..300),
            b in proptest::collection::vec(0u64..5_000_000_000, 0..300),
        ) {
            let (mut ha, mut hb, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
            a.iter().for_each(|&v| { ha.record(v); all.record(v) });
            b.iter().for_each(|&v| { hb.record(v); all.record(v) });
            let mut sum = HistogramSum::default();
            sum.add(&ha);
            sum.add(&hb);
            prop_assert_eq!(&sum.into_histogram(), &all);
            ha.merge(&hb);
            prop_assert_eq!(&ha, &all);
            prop_assert_eq!(Histogram::decode(&ha.encode()).unwrap(), all);
        }

        #[test]
        fn percentiles_are_within_precision_of_the_raw_values(
            mut raw in proptest::collection::vec(1u64..3_600_000_000, 1..2000),
            q in 0.01f64..1.0,
        ) {
            let mut h = Histogram::new();
            raw.iter().for_each(|&v| h.record(v));
            raw.sort_unstable();
            let exact = raw[((q * raw.len() as f64).ceil() as usize).clamp(1, raw.len()) - 1];
            let got = h.value_at_quantile(q).unwrap();
            prop_assert!(got >= exact && (got - exact) as f64 <= exact as f64 / 128.0,
                "q={} exact={} got={}", q, exact, got);
        }
    }
}

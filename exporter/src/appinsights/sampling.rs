//! Fixed-rate sampling decided by trace id, so a trace is kept or dropped
//! whole — across tally replicas, and in step with Microsoft's own SDKs.
//!
//! The score is the one every Application Insights SDK computes (the
//! classic .NET `SamplingScoreGenerator`, and the OpenTelemetry
//! `ApplicationInsightsSampler` of the Python, JS and .NET exporters): a
//! djb2-style hash (`h = h * 33 + c`, 32-bit wrapping, from 5381) over the
//! lowercase hex trace id, its absolute value over `i32::MAX`, times 100.
//! An item is kept when its score is below the percent. Using the same
//! score means a trace that passes through a service sampling with an
//! Application Insights SDK at the same rate is kept or dropped there too.
//!
//! The caller keeps what [`keep_trace`] says and sets the percent on the
//! mapper ([`super::MapperConfig::sample_rate`]) so each kept item carries
//! `sampleRate` and App Insights counts it `100 / rate` times. Items with
//! no trace id (logs outside a trace) cannot be sampled this way: they are
//! always kept and carry no `sampleRate`.

/// The sampling score of a trace id, in `[0, 100]`.
pub fn sampling_score(trace_id: &[u8]) -> f64 {
    let hex = hex::encode(trace_id);
    if hex.is_empty() {
        return 0.0;
    }
    let mut input = hex.into_bytes();
    while input.len() < 8 {
        input.extend_from_slice(&input.clone());
    }
    let mut h: i32 = 5381;
    for c in input {
        h = h.wrapping_mul(33).wrapping_add(i32::from(c));
    }
    let h = if h == i32::MIN { i32::MAX } else { h.abs() };
    f64::from(h) / f64::from(i32::MAX) * 100.0
}

/// Whether to keep the items of `trace_id` when keeping `percent` percent.
/// An empty or all-zero trace id is always kept (see the module docs).
pub fn keep_trace(trace_id: &[u8], percent: f64) -> bool {
    if percent >= 100.0 || trace_id.iter().all(|b| *b == 0) {
        return true;
    }
    percent > 0.0 && sampling_score(trace_id) < percent
}

/// `rs` with only the spans of kept traces, and how many were left out.
pub fn sample_spans(
    rs: &tally_core::otlp::trace::v1::ResourceSpans,
    percent: f64,
) -> (tally_core::otlp::trace::v1::ResourceSpans, u64) {
    let mut kept = rs.clone();
    let mut out = 0u64;
    for ss in &mut kept.scope_spans {
        let before = ss.spans.len();
        ss.spans.retain(|s| keep_trace(&s.trace_id, percent));
        out += (before - ss.spans.len()) as u64;
    }
    (kept, out)
}

/// `rl` with only the records of kept traces (records outside a trace are
/// all kept: they cannot be sampled by trace), and how many were left out.
pub fn sample_logs(
    rl: &tally_core::otlp::logs::v1::ResourceLogs,
    percent: f64,
) -> (tally_core::otlp::logs::v1::ResourceLogs, u64) {
    let mut kept = rl.clone();
    let mut out = 0u64;
    for sl in &mut kept.scope_logs {
        let before = sl.log_records.len();
        sl.log_records.retain(|r| r.trace_id.is_empty() || keep_trace(&r.trace_id, percent));
        out += (before - sl.log_records.len()) as u64;
    }
    (kept, out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn id(hex_id: &str) -> Vec<u8> {
        hex::decode(hex_id).unwrap()
    }

    /// Worked out by hand-written 32-bit arithmetic from the algorithm's
    /// description (not from any SDK's code).
    #[test]
    fn scores_are_the_sdks_scores() {
        let cases = [
            ("f5057fee4c3ef45902dd21250b729601", 53.32710307712066),
            ("d01e13be235f461f83923dd14744f3e0", 82.97981018339274),
            ("55bab91cd20b52cfd8aaa1f6d2b6c1ba", 94.53419944948247),
            ("00000000000000000000000000000001", 2.339351457701694),
        ];
        for (t, want) in cases {
            assert!((sampling_score(&id(t)) - want).abs() < 1e-9, "{t}");
        }
    }

    #[test]
    fn keeps_by_score_and_whole_traces() {
        let t = id("f5057fee4c3ef45902dd21250b729601"); // score 53.3
        assert!(keep_trace(&t, 60.0));
        assert!(!keep_trace(&t, 50.0));
        assert!(keep_trace(&t, 100.0));
        assert!(!keep_trace(&t, 0.0));
        assert!(keep_trace(&[], 1.0));
        assert!(keep_trace(&[0; 16], 1.0));
        // About the asked share over many ids.
        let kept = (0u32..10_000)
            .filter(|i| keep_trace(&[i.to_be_bytes(), [7; 4], i.to_le_bytes(), [9; 4]].concat(), 25.0))
            .count();
        assert!((2_000..3_000).contains(&kept), "{kept}");
    }
}

//! Request bodies through the bounded decompressor the OTLP/HTTP receiver
//! uses (`decompress(body, encoding, limit)`), then, at the receivers'
//! limit, through the decoders as the receiver would.
//!
//! Input: one byte, then the body. The byte's low 2 bits pick the
//! `Content-Encoding` (0 identity, 1 gzip, 2 zstd, 3 gzip), its upper 6 bits
//! the limit from `LIMITS` (index 7: `otlp.max_request_bytes`).
//!
//! What must hold:
//! - no panic; identity hands the body through untouched;
//! - gzip/zstd output never exceeds the limit, and the limit is exact: the
//!   same output at a limit of exactly its length, `TooLarge` one byte
//!   below; a refusal is `TooLarge { limit, decompressed: true }` or a
//!   decompression error, nothing else;
//! - the Rust heap a decompression takes is bounded by the limit (its
//!   output buffer may double once) and the body, not by what the body
//!   would inflate to. (zstd's own window buffer is C memory, outside this
//!   count: scripts/fuzz runs this target with -malloc_limit_mb=64, so a
//!   frame that makes the decoder allocate more than that fails too.)
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tally_collector::otlp::{BodyError, Encoding, Logs, Metrics, Traces, decode_json, decode_protobuf, decompress};

fuzz_target!(|data: &[u8]| {
    let Some((&head, body)) = data.split_first() else { return };
    let encoding = match head & 3 {
        0 => Encoding::Identity,
        2 => Encoding::Zstd,
        _ => Encoding::Gzip,
    };
    let limits = [0, 1, 4096, 65_536, 1 << 20, 100, 16, tally_fuzz::max_request_bytes()];
    let limit = limits[usize::from(head >> 2) % limits.len()];
    let input = Bytes::copy_from_slice(body);
    let (result, mem) = tally_fuzz::alloc::measure(move || decompress(input, encoding, limit));
    // Output buffer (at most twice limit + 1 once grown), the gzip header's
    // name/comment fields (from the body), decoder state and read buffers.
    let bound = 2 * (limit + 1) + 4 * body.len() + (1 << 20);
    if encoding != Encoding::Identity {
        assert!(
            mem.peak <= bound,
            "decompressing took {} heap bytes under a limit of {limit} (bound {bound})",
            mem.peak
        );
    }
    match result {
        Ok(out) if encoding == Encoding::Identity => assert!(out == body, "identity changed the body"),
        Ok(out) => {
            assert!(out.len() <= limit, "decompressed {} bytes past the limit {limit}", out.len());
            match decompress(Bytes::copy_from_slice(body), encoding, out.len()) {
                Ok(again) => assert!(again == out, "another output at a limit of exactly its length"),
                Err(e) => panic!("refused at a limit of exactly its output's length {}: {e}", out.len()),
            }
            if !out.is_empty() {
                match decompress(Bytes::copy_from_slice(body), encoding, out.len() - 1) {
                    Err(BodyError::TooLarge { limit: l, decompressed: true }) => assert_eq!(l, out.len() - 1),
                    other => panic!("one byte under its output's length {}: {other:?}", out.len()),
                }
            }
            if limit == tally_fuzz::max_request_bytes() {
                // What the receiver does next; the decoders' invariants have
                // targets of their own, here only: no panic.
                let limits = tally_fuzz::decode_limits();
                let _ = decode_protobuf::<Traces>(&out, limits);
                let _ = decode_protobuf::<Logs>(&out, limits);
                let _ = decode_protobuf::<Metrics>(&out, limits);
                let _ = decode_json::<Traces>(&out, limits);
            }
        }
        Err(BodyError::TooLarge { limit: l, decompressed }) => {
            assert!(encoding != Encoding::Identity, "identity refused as too large");
            assert!(
                l == limit && decompressed,
                "TooLarge {{ limit: {l}, decompressed: {decompressed} }} for limit {limit}"
            );
        }
        Err(BodyError::Decompress { encoding: name, .. }) => {
            assert!(encoding != Encoding::Identity, "identity failed to decompress");
            assert_eq!(name, encoding.as_str());
        }
        Err(other) => panic!("decompress can only fail as TooLarge or Decompress, not: {other}"),
    }
});

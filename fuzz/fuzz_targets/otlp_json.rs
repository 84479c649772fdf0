//! OTLP/JSON bodies through the HTTP receiver's `decode_json`, as a traces,
//! a logs and a metrics request (each refuses the others' bodies), under
//! the receivers' limits; then what ingest does with an accepted request.
//! The invariants are listed in fuzz/src/otlp.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_collector::otlp::{Logs, Metrics, Traces};

fuzz_target!(|data: &[u8]| {
    tally_fuzz::otlp::json::<Traces>(data);
    tally_fuzz::otlp::json::<Logs>(data);
    tally_fuzz::otlp::json::<Metrics>(data);
});

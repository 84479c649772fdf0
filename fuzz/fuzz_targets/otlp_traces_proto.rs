//! OTLP/protobuf `ExportTraceServiceRequest` bodies through `decode_protobuf::<Traces>`, the
//! decoder behind both the gRPC codec and the HTTP receiver, under the
//! receivers' limits; then what ingest does with an accepted request. The
//! invariants are listed in fuzz/src/otlp.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_collector::otlp::Traces;

fuzz_target!(|data: &[u8]| tally_fuzz::otlp::protobuf::<Traces>(data));

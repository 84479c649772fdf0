//! OTLP/protobuf `ExportLogsServiceRequest` bodies through `decode_protobuf::<Logs>`, the
//! decoder behind both the gRPC codec and the HTTP receiver, under the
//! receivers' limits; then what ingest does with an accepted request. The
//! invariants are listed in fuzz/src/otlp.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_collector::otlp::Logs;

fuzz_target!(|data: &[u8]| tally_fuzz::otlp::protobuf::<Logs>(data));

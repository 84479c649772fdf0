//! The OTLP transports: gRPC ([`grpc_routes`]) and HTTP ([`http_router`]),
//! sharing body limits, decoding and [`crate::Ingest`].

mod body;
pub mod budget;
mod grpc;
mod http;
pub mod rpc_status;
pub mod signal;

pub use body::{BodyError, Encoding, compress, decode_json, decode_protobuf, decompress};
pub use budget::DecodeLimits;
pub use grpc::grpc_routes;
pub use http::http_router;
pub use signal::{Logs, Metrics, OtlpSignal, Traces};

//! tally's receivers. OTLP over gRPC (:4317) and HTTP (:4318) is decoded,
//! bounded, checked, split by tenant and handed downstream over a bounded
//! channel; a full channel pushes back on the sender instead of dropping.
//!
//! - [`Ingest`] is the transport-independent core: tenant resolution, item
//!   validation, partial success, enqueueing.
//! - [`otlp::grpc_routes`] and [`otlp::http_router`] are the two transports.
//! - [`OtlpConfig`] and [`TenancyConfig`] are the `[otlp]` and `[tenancy]`
//!   config sections.

mod config;
mod ingest;
pub mod otlp;
mod pipeline;
mod tenancy;

pub use config::{OtlpConfig, TenancyConfig};
pub use ingest::{Accepted, Ingest, IngestError, RequestContext};
pub use pipeline::{Pipeline, PipelineReceiver};
pub use tenancy::TenantResolver;

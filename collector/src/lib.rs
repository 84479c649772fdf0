//! tally's receivers. OTLP over gRPC (:4317) and HTTP (:4318) is decoded,
//! bounded, checked, split by tenant and handed downstream over a bounded
//! channel; a full channel pushes back on the sender instead of dropping.
//!
//! - [`Ingest`] is the transport-independent core: tenant resolution, item
//!   validation, partial success, enqueueing.
//! - [`otlp::grpc_routes`] and [`otlp::http_router`] are the two transports.
//! - [`events`] is `POST /v1/events`, usage events into the billing ledger
//!   through [`UsageLedger`] (group commit).
//! - [`OtlpConfig`] and [`TenancyConfig`] are the `[otlp]` and `[tenancy]`
//!   config sections.

mod admission;
pub mod auth;
mod config;
pub mod events;
mod ingest;
mod ledger;
pub mod otlp;
pub mod otlp_usage;
mod pipeline;
mod tenancy;

pub use admission::{Admission, caller_key};
pub use auth::{Authenticator, Caller};
pub use config::{OtlpConfig, PipelineConfig, TenancyConfig};
pub use ingest::{Accepted, Ingest, IngestError, RequestContext};
pub use ledger::{CommitObserver, LedgerError, UsageLedger};
pub use pipeline::{Pipeline, PipelineBuilder, PipelineReceiver, Policy};
pub use tenancy::TenantResolver;

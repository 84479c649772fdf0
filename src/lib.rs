//! The `tally` daemon: configuration, wiring of the stages, the query/admin
//! API. The load generator is the `tally-loadgen` crate. The stages themselves live in the
//! `tally-collector`, `tally-aggregator`, `tally-store` and `tally-exporter`
//! crates.

pub mod api;
pub mod config;
pub mod database;
pub mod healthcheck;
pub mod keys;
pub mod lake;
pub mod observability;
pub mod replay;
pub mod serve;
pub mod server;
pub mod stripe;
pub mod tenants;

pub use config::Config;
pub use server::Server;

//! tally's integration tests: one binary, real servers on 127.0.0.1:0, the
//! real PostgreSQL on 127.0.0.1:5432 (`TEST_PG_URL`), SQLite files in temp
//! dirs, and real OpenTelemetry SDK clients (installed by `scripts/test-deps`).

// Test code: unwrapping states what is expected, and the bodies read whole
// are tally's own small answers.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod daemon;
mod private_pg;
mod receiver;
mod support;

mod e2e_alerts;
mod e2e_appinsights;
mod e2e_auth;
mod e2e_backpressure;
mod e2e_bad_input;
mod e2e_cli;
mod e2e_dashboards;
mod e2e_database_entra;
mod e2e_database_loss;
mod e2e_entitlements;
mod e2e_hostile;
mod e2e_lake;
mod e2e_metric_usage;
mod e2e_real_clients;
mod e2e_rollups;
mod e2e_self_telemetry;
mod e2e_shutdown;
mod e2e_span_usage;
mod e2e_storage;
mod e2e_stripe;
mod e2e_stripe_api;
mod e2e_tenancy;
mod e2e_usage;
mod e2e_usage_limits;

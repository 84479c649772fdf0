//! tally's outbound side, every integration on one delivery core
//! ([`delivery`]: typed call errors, one HTTP classification, one backoff):
//! the Parquet lake's upload to the object store ([`lake`]), alert
//! notifications ([`alerts`]) — the outbox written by
//! the alert evaluator, delivered to webhooks (Alertmanager body, Standard
//! Webhooks signature) and PagerDuty (Events API v2) with a retry schedule,
//! in order per receiver; Application Insights ([`appinsights`]: envelopes
//! and the OTLP mapping so far); the Stripe usage sync ([`stripe`]).

pub mod alerts;
pub mod appinsights;
pub mod delivery;
pub mod identity;
pub mod lake;
pub mod stripe;

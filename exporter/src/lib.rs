//! tally's outbound side: the Parquet lake's upload to the object store
//! ([`lake`]), and alert notifications ([`alerts`]) — the outbox written by
//! the alert evaluator, delivered to webhooks (Alertmanager body, Standard
//! Webhooks signature) and PagerDuty (Events API v2) with a retry schedule,
//! in order per receiver. Stripe and Application Insights will get modules
//! of their own.

pub mod alerts;
pub mod body;
pub mod lake;

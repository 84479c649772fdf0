//! tally's outbound side. For now: alert notifications — the outbox
//! written by the alert evaluator, delivered to webhooks (Alertmanager
//! body, Standard Webhooks signature) and PagerDuty (Events API v2) with a
//! retry schedule, in order per receiver. Stripe, Application Insights and
//! object-store upload will get folders of their own.

pub mod alerts;

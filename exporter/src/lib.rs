//! tally's outbound side: Stripe meter events, Application Insights
//! envelopes, signed alert webhooks and object-store upload.
//!
//! Empty for now: the foundation has nothing to send out yet. Each sink will
//! get a folder of its own (`stripe/`, `appinsights/`, `webhook/`), depending
//! on `tally-core` and `tally-store` only.

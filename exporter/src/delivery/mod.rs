//! The delivery core every outbound integration uses (alert receivers,
//! the lake's object store, Stripe, Application Insights): one typed error
//! per call ([`CallError`]: retriable, refused, or halt, with the server's
//! retry-after), one place that classifies HTTP answers ([`send`],
//! [`Answer::error`]), and one backoff policy ([`Backoff`]: exponential or a
//! configured schedule, jittered, never shorter than the server asked).
//!
//! What is retried, and when to give up, stays with the caller (a durable
//! outbox row, a spooled file, a sync-ledger row): the core only says what
//! an answer means and how long to wait.

mod backoff;
mod error;
mod http;

pub use backoff::Backoff;
pub use error::{CallError, ErrorKind, classify, retry_after};
pub use http::{Answer, send};

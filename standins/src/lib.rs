//! Local stand-ins for the services tally talks to but tests cannot reach:
//! **Stripe Billing meters** ([`stripe::FakeStripe`]), **Application Insights
//! ingestion** ([`appinsights::FakeIngestion`]) and **Azure managed identity**
//! ([`identity::FakeIdentity`]).
//!
//! Each binds `127.0.0.1:0` by default, exposes its URL, keeps everything it
//! was sent for inspection, and can be told to misbehave the way the real
//! service does (429s, 5xx, slow answers, TCP resets, outages). They follow
//! the services' documented behaviour; where the documentation is silent the
//! choice is written next to the code.
//!
//! This crate is test support: tally's own crates never depend on it, only
//! tally's tests (as a dev-dependency). The `tally-standins` binary runs the
//! Stripe stand-in on its own, for clients in other languages
//! (`tally-standins stripe --addr 127.0.0.1:12111 --meter tokens:sum`).
//!
//! The Stripe stand-in is checked against the official client:
//! `scripts/test-deps && cargo build -p tally-standins &&
//! tests/clients/.venv/bin/python tests/clients/stripe_standin_check.py`
//! (it starts the binary, drives faults through `/_standin/…`, and ends with
//! an "N passed, M failed" line).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tally_standins::stripe::{FakeStripe, MeterSpec, StripeConfig};
//! let stripe = FakeStripe::start(StripeConfig::default().meter(MeterSpec::sum("tokens").hourly())).await?;
//! let base = stripe.url(); // api base and meter-events base
//! # let _ = base; Ok(()) }
//! ```

pub mod appinsights;
pub mod identity;
pub mod serve;
pub mod stripe;

pub use appinsights::{Behaviour, FakeIngestion, IngestionConfig};
pub use identity::{FakeIdentity, IdentityConfig};
pub use stripe::{FakeStripe, MeterSpec, StripeConfig};

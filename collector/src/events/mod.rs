//! `POST /v1/events`: CloudEvents 1.0 usage events into the billing ledger.
//!
//! Each event is checked on its own, so one bad event does not cost the
//! others; the accepted ones are answered only after their commit.

mod config;
mod event;
mod http;

pub use config::EventsConfig;
pub use event::{EventClock, EventOutcome, Meters, check_event};
pub use http::{EventsState, events_router, read_body};

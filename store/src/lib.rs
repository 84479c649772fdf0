//! tally's one storage interface. Two backends — SQLite for the embedded
//! default, PostgreSQL for production — behind one [`Store`] type, so the rest
//! of tally cannot drift between them. This is the only crate that speaks SQL.
//!
//! Queries are written once in SQL that both engines accept (`$N`
//! placeholders, `ON CONFLICT … DO UPDATE`) and run on either pool through
//! [`on_pool!`]; where the dialects differ, the difference is spelled out
//! next to the query.

mod alerts;
mod billing;
mod error;
mod export;
mod ingest;
mod keys;
mod lake;
mod ledger;
pub mod locks;
mod rollups;
mod schema;
mod store;
mod stripe;
mod tenants;
mod usage;

pub use alerts::{Attempt, NewNotification, OutboxRow};
pub use billing::{
    Applied, BillingEffect, CreditBalance, CreditEntry, CreditKind, CustomerBilling, LimitRow, NewCredit, PeriodUsage,
    WebhookEvent,
};
pub use error::StoreError;
pub use export::MinuteUsage;
pub use ingest::IngestCount;
pub use keys::ApiKeyRow;
pub use locks::Leadership;
pub use rollups::{KeyMatch, RecentFilter, RollupFilter, RollupTable};
pub use schema::Column;
pub use store::{Backend, Store};
pub use stripe::{NewPush, Planned, PushKind, PushOutcome, PushRow, PushState, ReconRow, UsageChange, WindowKey};
pub use tenants::{MappingError, TenantRow};
pub use usage::HourlyUsage;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

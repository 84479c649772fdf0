//! Per-tenant telemetry rollups: windows in memory ([`windows`]), what each
//! item adds ([`extract`]), the stage that feeds and flushes them
//! ([`stage`]), and downsampling/retention ([`maintenance`]).

pub mod extract;
pub mod maintenance;
pub mod stage;
pub mod windows;
mod writer;

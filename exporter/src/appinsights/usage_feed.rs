//! Per-tenant usage from the ledger to Application Insights: every
//! `interval`, the replica that leads reads the usage the ledger recorded
//! in the minutes that closed since its cursor, and hands one `tally.usage`
//! item per (tenant, meter, minute) to the forwarder. The cursor is in the
//! database, so a restart or another replica goes on where it stopped; it
//! starts at the first minute after the feed is first switched on (no
//! backfill). Minutes are those in which the ledger recorded the usage
//! (`received_ms`), so a late event never changes a minute already sent.

use std::{collections::HashMap, time::Duration};

use tally_core::{MeterConfig, TenantId, now_ms};
use tally_store::{Store, locks};
use tokio_util::sync::CancellationToken;

use super::{UsageWindow, forwarder::Feed, usage_envelope};

const CURSOR: &str = "appinsights.usage";
const MINUTE: i64 = 60_000;
/// A minute is read this long after it ends (commits of requests received
/// in it land by then).
const SETTLE_MS: i64 = 10_000;

pub async fn run(
    store: Store,
    feed: Feed,
    ikey: String,
    meters: Vec<MeterConfig>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let units: HashMap<String, String> = meters.into_iter().map(|m| (m.name, m.unit)).collect();
    let mut lead = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if lead.is_none() {
            lead = match store.try_lead(locks::APPINSIGHTS_USAGE).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "Application Insights usage feed: taking the lead failed");
                    None
                }
            };
        }
        let Some(l) = lead.as_mut() else { continue };
        if !l.holds().await {
            lead = None;
            continue;
        }
        if let Err(e) = step(&store, &feed, &ikey, &units).await {
            tracing::warn!(error = %e, "Application Insights usage feed: reading the ledger failed; retried");
        }
    }
}

/// Sends the minutes closed since the cursor and moves it on.
async fn step(store: &Store, feed: &Feed, ikey: &str, units: &HashMap<String, String>) -> tally_store::Result<usize> {
    let until = (now_ms() - SETTLE_MS) / MINUTE * MINUTE;
    let Some(from) = store.export_cursor(CURSOR).await? else {
        store.advance_export_cursor(CURSOR, None, until).await?;
        return Ok(0);
    };
    if until <= from {
        return Ok(0);
    }
    let rows = store.usage_by_recorded_minute(from, until).await?;
    let envelopes: Vec<_> = rows
        .into_iter()
        .filter_map(|r| {
            let w = UsageWindow {
                tenant: TenantId::parse(&r.tenant).ok()?,
                unit: units.get(&r.meter).cloned().unwrap_or_default(),
                meter: r.meter,
                window_start_ms: r.minute_ms,
                units: r.sum,
                events: r.count.max(0) as u64,
                min: Some(r.min),
                max: Some(r.max),
                plan: None,
            };
            Some(usage_envelope(ikey, &w))
        })
        .collect();
    let n = envelopes.len();
    // The cursor moves only if no one else moved it: a replica that lost
    // the lead mid-step sends nothing twice.
    if store.advance_export_cursor(CURSOR, Some(from), until).await? {
        feed.push(envelopes).await;
    }
    Ok(n)
}

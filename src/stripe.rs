//! `tally stripe reconcile|sync|retry-failed`: the Stripe sync from the
//! command line, on the database and Stripe directly (the daemon need not
//! run; with it running they share the sync ledger).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use tally_core::now_ms;
use tally_exporter::stripe::{Stripe, plan};
use tally_store::{ReconRow, Store};

use crate::{
    Config,
    api::stripe::{push_json, recon_json},
};

#[derive(Debug, Subcommand)]
pub enum StripeCommand {
    /// Compare the ledger with what was pushed and what Stripe's meter event
    /// summaries hold, per tenant and meter: JSON on stdout; exit 0 when
    /// every drift is 0, 1 when one is not.
    Reconcile(ReconcileArgs),
    /// Show what the sync would send next (`--dry-run`; the daemon sends).
    Sync {
        #[arg(long, required = true)]
        dry_run: bool,
    },
    /// Make failed pushes pending again (after mending their cause).
    RetryFailed {
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The billing period, YYYY-MM (UTC).
    #[arg(long)]
    period: String,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Read drifted lines again after this long before calling them drift
    /// (Stripe's summaries lag fresh events), e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    recheck_after: Option<Duration>,
    /// Repair drift in windows pushed within the last 24 h (the daemon
    /// sends the repairs); older drift is only reported.
    #[arg(long)]
    repair: bool,
}

/// Runs a command; `Ok(false)`: reconciliation found drift.
pub async fn run(config: &Config, store: &Store, command: StripeCommand) -> anyhow::Result<bool> {
    let env = |name: &str| std::env::var(name).ok();
    let stripe = || async {
        Stripe::connect(&config.stripe, &config.meters, &env)
            .await
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("the Stripe sync is off: {} is not set", config.stripe.api_key_env))
    };
    match command {
        StripeCommand::RetryFailed { tenant } => {
            let n = store.retry_failed_pushes(tenant.as_deref(), now_ms()).await?;
            println!("{n} failed push(es) pending again; the daemon sends them");
            Ok(true)
        }
        StripeCommand::Sync { .. } => {
            let stripe = stripe().await?;
            let now = now_ms();
            let due = store.due_pushes(now, 1000).await?;
            let planned = stripe.planner(store.clone()).pass(now, false).await?;
            let out = json!({
                "due": due.iter().map(push_json).collect::<Vec<_>>(),
                "would_plan": planned.iter().map(push_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(true)
        }
        StripeCommand::Reconcile(args) => {
            let stripe = stripe().await?;
            let (start, _) = plan::parse_period(&args.period).map_err(anyhow::Error::msg)?;
            let reconciler = stripe.reconciler(store.clone());
            let tenant = args.tenant.as_deref();
            let mut rows = reconciler.report(start, tenant, 1, now_ms()).await.map_err(anyhow::Error::msg)?;
            if let Some(wait) = args.recheck_after.filter(|_| rows.iter().any(drifted)) {
                tokio::time::sleep(wait).await;
                let again = reconciler.report(start, tenant, 2, now_ms()).await.map_err(anyhow::Error::msg)?;
                rows = again;
            }
            let repairs = if args.repair {
                reconciler.repair(&mut rows, now_ms()).await.map_err(anyhow::Error::msg)?
            } else {
                Vec::new()
            };
            store.save_reconciliation(&rows).await?;
            let drift_lines = rows.iter().filter(|r| drifted(r)).count();
            let unread = rows.iter().filter(|r| r.stripe.is_none() && !r.customers.is_empty()).count();
            let out = json!({
                "period": args.period,
                "drift_lines": drift_lines,
                "lines": rows.iter().map(recon_json).collect::<Vec<_>>(),
                "repairs": repairs.iter().map(push_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            anyhow::ensure!(unread == 0, "{unread} line(s) could not be read from Stripe (see their notes)");
            Ok(drift_lines == 0)
        }
    }
}

fn drifted(r: &ReconRow) -> bool {
    r.drift.is_some_and(|d| d != 0.0)
}

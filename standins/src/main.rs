//! `tally-standins`: run a stand-in on its own and print its URL.
//!
//! `tally-standins stripe --addr 127.0.0.1:12111 --meter tokens:sum --meter storage:last:hour`
//! `tally-standins appinsights --addr 127.0.0.1:12112` (prints its connection
//! string; at Ctrl-C or SIGTERM, a JSON summary of what it received)

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tally_standins::{
    appinsights::{FakeIngestion, IngestionConfig},
    stripe::{FakeStripe, MeterSpec, RateLimits, StripeConfig},
};

#[derive(Parser)]
#[command(name = "tally-standins", about = "Local stand-ins for tally's tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Meter events 1,000 calls/s apart from other calls (100/s).
    Live,
    /// 25 requests/s for all calls together (test mode and sandboxes).
    Test,
    /// No rate limit.
    Unlimited,
}

#[derive(Subcommand)]
enum Command {
    /// The Stripe Billing meters stand-in (v1 meter events, meters, summaries,
    /// adjustments; v2 sessions and streams on the same port).
    Stripe {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// `event_name:formula[:hour|day]`, formula sum|count|last; repeatable.
        #[arg(long = "meter", value_parser = MeterSpec::parse)]
        meters: Vec<MeterSpec>,
        /// Accepted secret key (repeatable); none: any `sk_test_…` key.
        #[arg(long = "api-key")]
        api_keys: Vec<String>,
        #[arg(long, value_enum, default_value = "live")]
        rate_limit: Mode,
        /// How long each meter-event call stays in flight, in milliseconds.
        #[arg(long, default_value_t = 5)]
        processing_ms: u64,
        /// Delay of an injected slow answer, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        slow_ms: u64,
        /// Summaries leave out events received less than this many seconds ago.
        #[arg(long, default_value_t = 0)]
        summary_lag_secs: u64,
        /// Meter event session lifetime in seconds.
        #[arg(long, default_value_t = 900)]
        session_ttl_secs: u64,
    },
    /// The Application Insights ingestion stand-in (`/v2.1/track`), accepting everything.
    Appinsights {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
}

/// Ctrl-C or SIGTERM.
async fn stopped() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Stripe {
            addr,
            meters,
            api_keys,
            rate_limit,
            processing_ms,
            slow_ms,
            summary_lag_secs,
            session_ttl_secs,
        } => {
            let config = StripeConfig {
                addr,
                api_keys,
                meters,
                rate_limits: match rate_limit {
                    Mode::Live => RateLimits::LIVE,
                    Mode::Test => RateLimits::TEST_MODE,
                    Mode::Unlimited => RateLimits::UNLIMITED,
                },
                processing_time: Duration::from_millis(processing_ms),
                slow_delay: Duration::from_millis(slow_ms),
                summary_lag: Duration::from_secs(summary_lag_secs),
                session_ttl: Duration::from_secs(session_ttl_secs),
                ..StripeConfig::default()
            };
            let stripe = FakeStripe::start(config).await.context("starting the Stripe stand-in")?;
            for m in stripe.meters() {
                println!("meter {} {}", m.id, m.spec.event_name);
            }
            println!("{}", stripe.url());
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            stripe.shutdown().await;
        }
        Command::Appinsights { addr } => {
            let ingestion = FakeIngestion::start(IngestionConfig { addr, ..IngestionConfig::default() })
                .await
                .context("starting the ingestion stand-in")?;
            println!("{}", ingestion.connection_string());
            stopped().await?;
            let requests = ingestion.requests();
            let summary = serde_json::json!({
                "requests": requests.len(),
                "items_received": requests.iter().map(|r| r.items_received).sum::<usize>(),
                "items_accepted": requests.iter().map(|r| r.items_accepted).sum::<usize>(),
                "bytes": requests.iter().map(|r| r.bytes).sum::<usize>(),
                "gzip": requests.iter().all(|r| r.gzip),
                "duplicates": ingestion.duplicates().len(),
            });
            println!("{summary}");
            ingestion.shutdown().await;
        }
    }
    Ok(())
}

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tally::{Config, observability, server};
use tally_loadgen as loadgen;

// Decoding OTLP makes many small short-lived allocations across threads;
// mimalloc is faster at that than glibc malloc and returns freed memory to
// the OS instead of keeping it in per-thread arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// tally: one daemon for OpenTelemetry data and usage events — per-tenant
/// billing-grade usage, observability rollups, alerts.
#[derive(Parser)]
#[command(name = "tally", version, about)]
struct Cli {
    /// Config file (default: ./tally.toml if present). Defaults are
    /// embedded; TALLY_* environment variables override both.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and print it (secrets redacted).
    CheckConfig,
    /// Exit 0 when the tally of this config answers /readyz (for container
    /// health checks in images without curl).
    Healthcheck(tally::healthcheck::HealthcheckArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(tally::keys::KeysCommand),
    /// Send synthetic OTLP load and report what was acknowledged.
    Loadgen(loadgen::LoadgenArgs),
    /// Rebuild rollups and re-derive missing usage from the Parquet lake.
    Replay(tally::replay::ReplayArgs),
    /// Tenants and their Stripe customers.
    #[command(subcommand)]
    Tenants(tally::tenants::TenantsCommand),
    /// The Stripe usage sync: reconcile a period, see what is sent next.
    #[command(subcommand)]
    Stripe(tally::stripe::StripeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let load = || Config::load(cli.config.as_deref());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Loadgen(args) => loadgen::run(args).await?,
        Command::CheckConfig => {
            let config = load()?;
            // Secrets named by receivers must be set where tally will run.
            config.alert_receivers(Some(&|name| std::env::var(name).ok()))?;
            println!("{config:#?}");
            println!("config ok");
        }
        Command::Healthcheck(args) => {
            let url = match args.url {
                Some(url) => url,
                None => tally::healthcheck::readyz_url(&load()?),
            };
            if let Err(why) = tally::healthcheck::check(&url, args.timeout).await {
                eprintln!("unhealthy: {why}");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Keys(command) => tally::keys::run(&open_store(&load()?).await?, command).await?,
        Command::Tenants(command) => tally::tenants::run(&open_store(&load()?).await?, command).await?,
        Command::Stripe(command) => {
            let config = load()?;
            observability::init_logging(&config);
            let store = open_store(&config).await?;
            // 1: drift found; 2: the command failed (so scripts can tell).
            match tally::stripe::run(&config, &store, command).await {
                Ok(true) => {}
                Ok(false) => return Ok(ExitCode::from(1)),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Command::Migrate => {
            let config = load()?;
            observability::init_logging(&config);
            open_store(&config).await?;
            println!("migrations applied to {}", config.database_description());
        }
        Command::Replay(args) => {
            let config = load()?;
            observability::init_logging(&config);
            let summary = tally::replay::run(&config, &args, &|name| std::env::var(name).ok()).await?;
            println!("{summary}");
        }
        Command::Serve => serve(load()?).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the configured database and applies the migrations.
async fn open_store(config: &Config) -> anyhow::Result<tally_store::Store> {
    let store = tally::database::open(config, &|name| std::env::var(name).ok()).await?.store;
    store.migrate().await?;
    Ok(store)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    observability::init_logging(&config);
    let timeout = config.shutdown_timeout;
    let server = server::start(config).await?;
    shutdown_signal().await;
    tracing::info!(timeout = ?timeout, "signal received, shutting down");
    let result = match tokio::time::timeout(timeout, server.shutdown()).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("shutdown did not finish within {timeout:?}; exiting anyway")),
    };
    // The exporter blocks: off the runtime's worker.
    let _ = tokio::task::spawn_blocking(observability::flush_traces).await;
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

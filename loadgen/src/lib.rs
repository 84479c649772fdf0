//! `tally loadgen`: an OTLP client that sends synthetic traces, logs or
//! metrics over gRPC or HTTP, at a target rate or as fast as it can, and
//! reports items sent and acknowledged and the errors seen.
//!
//! Requests are generated and encoded (and compressed, for HTTP) once up
//! front, so the generator spends its CPU on sending, not on building
//! payloads: it shares the machine with the server it measures. They are
//! built again with current timestamps every `--restamp`, so long runs
//! measure steady state rather than the late-data path.
//!
//! Its own crate, so the daemon's library does not carry it; the `tally`
//! binary runs it as `tally loadgen`.

mod args;
mod drive;
mod generate;
pub mod transport;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use tally_collector::otlp::{self, Logs, Metrics, OtlpSignal, Traces};

pub use args::{Compression, LoadgenArgs, Protocol, SignalArg};
use drive::{EventsTarget, OtlpTarget, drive};
use generate::{Generator, build_logs, build_metrics, build_traces};
use transport::Sender;

/// Runs the load `args` describes and prints the report.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.concurrency > 0 && args.spans_per_request > 0,
        "concurrency and spans-per-request must be > 0"
    );
    anyhow::ensure!(
        args.tenants > 0 && args.services > 0 && args.routes > 0,
        "tenants, services and routes must be > 0"
    );
    match args.signal {
        SignalArg::Traces => run_signal::<Traces>(args, build_traces).await,
        SignalArg::Logs => run_signal::<Logs>(args, build_logs).await,
        SignalArg::Metrics => run_signal::<Metrics>(args, build_metrics).await,
        SignalArg::Events => {
            let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let client =
                reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(args.concurrency).build()?;
            let time = chrono::DateTime::from_timestamp_millis(run_id as i64)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let targets = (0..args.concurrency)
                .map(|w| EventsTarget {
                    client: client.clone(),
                    url: format!("{}/v1/events", args.endpoint.trim_end_matches('/')),
                    run: format!("{run_id}-{w}"),
                    time: time.clone(),
                    tenants: args.tenants,
                    per_request: args.spans_per_request,
                    event_type: args.event_type.clone(),
                })
                .collect();
            drive(args, targets).await
        }
    }
}

async fn run_signal<S: OtlpSignal>(
    args: LoadgenArgs,
    build: fn(&LoadgenArgs, &mut Generator, usize) -> S::Request,
) -> anyhow::Result<()> {
    let payloads = Arc::new(std::sync::RwLock::new(Arc::new(encode_payloads::<S>(&args, build))));
    let restamp = spawn_restamp::<S>(args.clone(), payloads.clone(), build);
    let mut targets = Vec::new();
    for _ in 0..args.concurrency {
        targets.push(OtlpTarget { sender: Sender::<S>::connect(&args).await?, payloads: payloads.clone() });
    }
    let result = drive(args, targets).await;
    restamp.abort();
    result
}

type Payloads = Arc<std::sync::RwLock<Arc<Vec<Bytes>>>>;

/// Builds `payloads` again with current timestamps every `--restamp`, off
/// the async workers (the same seed: the same series and ids, new times).
fn spawn_restamp<S: OtlpSignal>(
    args: LoadgenArgs,
    payloads: Payloads,
    build: fn(&LoadgenArgs, &mut Generator, usize) -> S::Request,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(args.restamp).await;
            let a = args.clone();
            let Ok(fresh) = tokio::task::spawn_blocking(move || encode_payloads::<S>(&a, build)).await else {
                return;
            };
            *payloads.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        }
    })
}

/// The pre-built requests, stamped with the current time.
fn encode_payloads<S: OtlpSignal>(
    args: &LoadgenArgs,
    build: fn(&LoadgenArgs, &mut Generator, usize) -> S::Request,
) -> Vec<Bytes> {
    let mut generator = Generator::new(args);
    (0..args.distinct_requests.max(1))
        .map(|i| {
            let bytes = prost::Message::encode_to_vec(&build(args, &mut generator, i));
            match (args.protocol, args.compression) {
                (Protocol::Http, Compression::Gzip) => {
                    otlp::compress(&bytes, otlp::Encoding::Gzip).unwrap_or_default().into()
                }
                _ => bytes.into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    /// Runs longer than a window plus its lateness send current times, not
    /// the times of the start.
    #[tokio::test]
    async fn requests_are_restamped() {
        let args = Cli::parse_from(["loadgen", "--restamp", "50ms", "--distinct-requests", "2"]).args;
        let first_start = |p: &Payloads| {
            let body = p.read().unwrap()[0].clone();
            let req: <Traces as OtlpSignal>::Request = prost::Message::decode(body).unwrap();
            req.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano
        };
        let payloads: Payloads =
            Arc::new(std::sync::RwLock::new(Arc::new(encode_payloads::<Traces>(&args, build_traces))));
        let before = first_start(&payloads);
        let task = spawn_restamp::<Traces>(args, payloads.clone(), build_traces);
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        assert!(first_start(&payloads) > before, "not restamped");
    }
}

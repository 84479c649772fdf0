//! `tally-bench-checks`: an open-loop load of `GET /v1/entitlements` at a
//! fixed rate over random tenants and meters, reporting latency
//! percentiles two ways: from each request's send (the server's answer
//! time plus the loopback round trip) and from its scheduled start (so a
//! stall counts against every request it delays, not only the one in
//! flight; this one also carries the client's own timer granularity,
//! about 1 ms in tokio).
//!
//!     tally-bench-checks --url http://127.0.0.1:8080 --tenants 10000 \
//!         --meter tokens --meter tasks --rate 5000 --duration 30s

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::Parser;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 10_000)]
    tenants: u32,
    /// Tenant ids are `{prefix}{n:06}`.
    #[arg(long, default_value = "t")]
    prefix: String,
    #[arg(long = "meter", required = true)]
    meters: Vec<String>,
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests in flight at most (each a keep-alive connection).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long)]
    key: Option<String>,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    service_us: Vec<u64>,
    errors: u64,
    reasons: std::collections::BTreeMap<String, u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connections));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = (args.duration.as_secs_f64() * f64::from(args.rate)) as u64;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = permits.clone().acquire_owned().await?;
        let (tenant, meter) =
            (rng.random_range(0..args.tenants), args.meters[rng.random_range(0..args.meters.len())].clone());
        let url = format!("{}/v1/entitlements?tenant={}{tenant:06}&meter={meter}", args.url, args.prefix);
        let mut req = client.get(url);
        if let Some(k) = &args.key {
            req = req.bearer_auth(k);
        }
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = match req.send().await {
                // tally's own small answer, on loopback.
                #[allow(clippy::disallowed_methods)]
                Ok(r) if r.status().is_success() => {
                    r.bytes().await.ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                }
                _ => None,
            };
            let took = scheduled.elapsed().as_micros() as u64;
            let service = sent.elapsed().as_micros() as u64;
            drop(permit);
            let mut t = tally.lock().expect("tally lock");
            t.latencies_us.push(took);
            t.service_us.push(service);
            match answer.and_then(|a| a["reason"].as_str().map(str::to_owned)) {
                Some(r) => *t.reasons.entry(r).or_default() += 1,
                None => t.errors += 1,
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut t = tally.lock().expect("tally lock");
    t.latencies_us.sort_unstable();
    t.service_us.sort_unstable();
    let pcts = |v: &[u64]| {
        let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0;
        serde_json::json!({"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "p999_ms": at(0.999),
                           "max_ms": v.last().copied().unwrap_or(0) as f64 / 1000.0})
    };
    let report = serde_json::json!({
        "requests": t.latencies_us.len(),
        "errors": t.errors,
        "rate_achieved": t.latencies_us.len() as f64 / elapsed,
        "from_send": pcts(&t.service_us),
        "from_schedule": pcts(&t.latencies_us),
        "reasons": t.reasons,
    });
    println!("{report}");
    Ok(())
}

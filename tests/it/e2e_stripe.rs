//! The Stripe sync through faults and crashes: the `tally` binary pushes a
//! day of two tenants' usage (a raw sum meter, a pre-aggregated fractional
//! one with `stripe_scale`, a `last` meter) to the Stripe stand-in answering
//! 30 % of calls with 429, 500, slow answers and connection resets, and is
//! killed with SIGKILL twice mid-sync (on PostgreSQL, the leader of two
//! replicas). Afterwards Stripe's totals equal the ledger exactly — per
//! hour for whole units, per period for the fractional meter — the
//! reconciliation reports no drift, and an event removed on Stripe's side
//! is exactly the drift it then finds, repaired on request.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tally_standins::stripe::{FakeStripe, FaultPlan, MeterSpec, StripeConfig};

use crate::{daemon::Daemon, support::*};

const HOUR: i64 = 3_600_000;
const KEY: &str = "sk_test_tally_sync";

const CONFIG: &str = r#"
[stripe]
sync_interval = "300ms"
lag = "0s"
timeout = "1s"
max_requests_per_second = 25
max_in_flight = 8

[[meters]]
name = "tokens"
aggregation = "sum"
event_type = "llm.completion"
value = "$.tokens"

[[meters]]
name = "storage_gb"
aggregation = "sum"
event_type = "storage.used"
value = "$.gb"
stripe_event_name = "storage"
stripe_scale = 1000

[[meters]]
name = "seats"
aggregation = "max"
event_type = "seats.counted"
value = "$.seats"

[[meters]]
name = "pings"
aggregation = "count"
event_type = "internal.ping"
stripe = false
"#;

const TENANTS: [(&str, &str); 2] = [("acme", "cus_Acme0001"), ("globex", "cus_Globex002")];

/// What the test sent, kept independently of tally: the truth to compare
/// Stripe with.
#[derive(Default)]
struct Sent {
    tokens: BTreeMap<(String, i64), i64>,
    /// Per tenant and period: GB sent (as whole ten-thousandths, exact).
    storage: BTreeMap<(String, i64), i64>,
    seats: BTreeMap<(String, i64), i64>,
    events: Vec<Value>,
}

impl Sent {
    fn add(&mut self, tenant: &str, kind: &str, time_ms: i64, amount: i64) {
        let id = format!("{tenant}-{kind}-{time_ms}-{}", self.events.len());
        let (ty, data) = match kind {
            "tokens" => {
                *self.tokens.entry((tenant.into(), hour_start(time_ms))).or_default() += amount;
                ("llm.completion", json!({ "tokens": amount }))
            }
            "storage" => {
                *self.storage.entry((tenant.into(), period_start(time_ms))).or_default() += amount;
                ("storage.used", json!({ "gb": amount as f64 / 10_000.0 }))
            }
            _ => {
                let max = self.seats.entry((tenant.into(), period_start(time_ms))).or_default();
                *max = (*max).max(amount);
                ("seats.counted", json!({ "seats": amount }))
            }
        };
        self.events.push(json!({
            "specversion": "1.0", "id": id, "source": "e2e-stripe", "type": ty,
            "subject": tenant, "time": rfc3339(time_ms), "data": data,
        }));
        self.events.push(json!({
            "specversion": "1.0", "id": format!("{id}-ping"), "source": "e2e-stripe", "type": "internal.ping",
            "subject": tenant, "time": rfc3339(time_ms), "data": {},
        }));
    }

    fn periods(&self) -> BTreeSet<i64> {
        self.tokens.keys().map(|(_, h)| period_start(*h)).collect()
    }
}

fn hour_start(ms: i64) -> i64 {
    ms.div_euclid(HOUR) * HOUR
}

fn period_start(ms: i64) -> i64 {
    tally_exporter::stripe::plan::period(ms).0
}

fn period_name(ms: i64) -> String {
    tally_exporter::stripe::plan::period_name(ms)
}

/// A day of hourly usage for both tenants, the last hour two hours ago.
fn a_day(sent: &mut Sent) {
    let first = hour_start(now_ms()) - 26 * HOUR;
    for h in 0..24 {
        let hour = first + h * HOUR;
        for (i, (tenant, _)) in TENANTS.iter().enumerate() {
            let seed = h * 7 + i as i64 * 13;
            for k in 0..3 {
                sent.add(tenant, "tokens", hour + 60_000 + k * 600_000, 100 + (seed * 37 + k * 11) % 900);
            }
            for k in 0..2 {
                sent.add(tenant, "storage", hour + 120_000 + k * 900_000, 1 + (seed * 53 + k * 29) % 999);
            }
            sent.add(tenant, "seats", hour + 300_000, 1 + (seed * 17) % 40);
        }
    }
}

async fn post(d: &Daemon, events: &[Value]) {
    for chunk in events.chunks(200) {
        let resp = d.http.post(d.url("/v1/events")).json(&chunk).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        let results = body["results"].as_array().unwrap_or_else(|| panic!("{body}"));
        assert!(results.iter().all(|r| r["status"] == "accepted"), "{body}");
    }
}

async fn map_tenants(d: &Daemon) {
    for (tenant, customer) in TENANTS {
        let resp = d
            .http
            .put(d.url(&format!("/v1/tenants/{tenant}")))
            .json(&json!({ "stripe_customer_id": customer }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
}

/// Stripe's totals as the test expects them from what it sent.
fn expected(sent: &Sent) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for ((tenant, hour), v) in &sent.tokens {
        out.insert(format!("{tenant} tokens hour {hour}"), *v);
    }
    for ((tenant, period), tenths) in &sent.storage {
        // GB × 1000 = MB, whole units: floor(tenths / 10).
        out.insert(format!("{tenant} storage period {period}"), tenths / 10);
    }
    for ((tenant, period), max) in &sent.seats {
        out.insert(format!("{tenant} seats period {period}"), *max);
    }
    out
}

/// What Stripe holds, in the same keys.
fn actual(stripe: &FakeStripe, sent: &Sent) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for t in stripe.hourly_totals() {
        let Some((tenant, _)) = TENANTS.iter().find(|(_, c)| *c == t.customer) else { continue };
        if t.event_name == "tokens" {
            out.insert(format!("{tenant} tokens hour {}", t.hour_start * 1000), t.value as i64);
        }
    }
    for period in sent.periods() {
        let end = tally_exporter::stripe::plan::period(period).1;
        for (tenant, customer) in TENANTS {
            for (event, name) in [("storage", "storage"), ("seats", "seats")] {
                if let Some(v) = stripe.total(event, customer, period / 1000, end / 1000) {
                    out.insert(format!("{tenant} {name} period {period}"), v as i64);
                }
            }
        }
    }
    out
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fake_stripe() -> FakeStripe {
    let config = StripeConfig {
        faults: FaultPlan {
            rate_limit: 0.08,
            server_error: 0.08,
            slow: 0.06,
            reset_before_record: 0.04,
            reset_after_record: 0.04,
        },
        fault_seed: 7,
        slow_delay: Duration::from_secs(2),
        ..StripeConfig::default()
    }
    .meter(MeterSpec::sum("tokens"))
    .meter(MeterSpec::sum("storage").hourly())
    .meter(MeterSpec::last("seats"));
    let stripe = FakeStripe::start(config).await.unwrap();
    stripe.set_customers(TENANTS.iter().map(|(_, c)| *c));
    stripe
}

fn env(stripe: &FakeStripe) -> Vec<(String, String)> {
    vec![("STRIPE_API_KEY".into(), KEY.into()), ("TALLY_STRIPE_API_BASE".into(), stripe.url())]
}

/// The replica that leads the sync now.
async fn leader(daemons: &[Daemon]) -> usize {
    let mut found = None;
    wait_for("a Stripe sync leader", Duration::from_secs(30), async || {
        let mut leaders = Vec::new();
        for (i, d) in daemons.iter().enumerate() {
            if let Ok(r) = d.http.get(d.url("/v1/stripe/sync")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["leader"] == true
            {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two replicas lead the Stripe sync: {leaders:?}");
        found = leaders.first().copied();
        found.is_some()
    })
    .await;
    found.unwrap()
}

async fn reconcile(d: &Daemon, period: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["stripe", "reconcile", "--period", period];
    args.extend_from_slice(extra);
    let (code, out, err) = d.command(&args).await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

async fn through_faults_and_kills(db: Db) {
    let stripe = fake_stripe().await;
    let test_db = TestDb::new(db).await;
    let replicas = if db == Db::Postgres { 2 } else { 1 };
    let mut daemons = Vec::new();
    for _ in 0..replicas {
        daemons.push(Daemon::start(&test_db.url, CONFIG, env(&stripe)).await);
    }
    map_tenants(&daemons[0]).await;
    let mut sent = Sent::default();
    a_day(&mut sent);
    post(&daemons[0], &sent.events).await;

    // Killed twice while it pushes (on PostgreSQL: whichever replica leads).
    for round in 0..2 {
        let at_least = 30 * (round + 1);
        wait_for("pushes to arrive", Duration::from_secs(60), async || stripe.events().len() >= at_least).await;
        let i = leader(&daemons).await;
        daemons[i].kill9().await;
        if round == 0 {
            // Late usage for hours already pushed, on the replica still up
            // (or the restarted one).
            let late_first = hour_start(now_ms()) - 26 * HOUR;
            let mut late = Sent::default();
            for (tenant, _) in TENANTS {
                late.add(tenant, "tokens", late_first + 3 * HOUR + 1_234, 777);
                late.add(tenant, "storage", late_first + 5 * HOUR + 4_321, 4_567);
                late.add(tenant, "seats", late_first + 20 * HOUR + 999, 99);
            }
            daemons[i].run().await;
            post(&daemons[i], &late.events).await;
            for (k, v) in late.tokens {
                *sent.tokens.entry(k).or_default() += v;
            }
            for (k, v) in late.storage {
                *sent.storage.entry(k).or_default() += v;
            }
            for (k, v) in late.seats {
                let m = sent.seats.entry(k).or_default();
                *m = (*m).max(v);
            }
        } else {
            daemons[i].run().await;
        }
    }

    let want = expected(&sent);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = actual(&stripe, &sent);
        if got == want {
            break;
        }
        if Instant::now() > deadline {
            let log = daemons.iter().map(Daemon::log).collect::<Vec<_>>().join("\n---\n");
            panic!("Stripe's totals never matched the ledger.\nwant {want:#?}\ngot {got:#?}\nlog:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stats = stripe.stats();
    eprintln!("stand-in: {stats:?}");
    assert!(
        stats.duplicate_identifiers > 0,
        "no resend was answered \"already exists\": the crash path was not exercised"
    );
    // Every identifier Stripe holds is one tally planned; none twice.
    let events = stripe.events();
    let ids: BTreeSet<&str> = events.iter().map(|e| e.identifier.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "an identifier was recorded twice");
    assert!(events.iter().all(|e| e.event_name != "pings"), "a stripe = false meter was pushed");
    // The last outcomes are written back within a flush.
    let mut sync = Value::Null;
    wait_for("every push confirmed", Duration::from_secs(10), async || {
        sync = daemons[0].get("/v1/stripe/sync").await;
        sync["pushes"]["pending"] == 0
    })
    .await;
    assert_eq!(sync["pushes"]["failed"], 0, "{sync}");
    assert_eq!(actual(&stripe, &sent), want, "nothing more was pushed after the totals matched");

    // The reconciliation agrees; then Stripe loses one event.
    stripe.clear_faults();
    let periods: Vec<String> = sent.periods().into_iter().map(period_name).collect();
    for p in &periods {
        let (code, report) = reconcile(&daemons[0], p, &[]).await;
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["drift_lines"], 0, "{report}");
        let lines = report["lines"].as_array().unwrap();
        assert!(lines.iter().all(|l| l["meter"] != "pings"), "{report}");
        let stored = daemons[0].get(&format!("/v1/stripe/reconciliation?period={p}")).await;
        assert_eq!(stored["drift_lines"], 0, "{stored}");
    }
    let lost = events
        .iter()
        .find(|e| e.event_name == "tokens" && e.customer.as_deref() == Some(TENANTS[0].1))
        .unwrap()
        .clone();
    assert!(stripe.remove_event(&lost.identifier));
    let period = period_name(lost.timestamp * 1000);
    let (code, report) = reconcile(&daemons[0], &period, &[]).await;
    assert_eq!(code, 1, "{report}");
    let drifted: Vec<&Value> = report["lines"].as_array().unwrap().iter().filter(|l| l["drift"] != 0.0).collect();
    assert_eq!(drifted.len(), 1, "{report}");
    assert_eq!((drifted[0]["tenant"].as_str(), drifted[0]["meter"].as_str()), (Some("acme"), Some("tokens")));
    assert_eq!(drifted[0]["drift"].as_f64(), Some(-(lost.value as f64)), "{report}");

    // Repaired (it was sent within 24 h): the daemon sends the repair.
    let (code, report) = reconcile(&daemons[0], &period, &["--repair"]).await;
    assert_eq!(code, 1, "the drift is reported on the run that repairs it: {report}");
    assert_eq!(report["repairs"].as_array().map(Vec::len), Some(1), "{report}");
    wait_for("the repair to land", Duration::from_secs(30), async || actual(&stripe, &sent) == want).await;
    let (code, report) = reconcile(&daemons[0], &period, &[]).await;
    assert_eq!(code, 0, "{report}");

    drop(daemons);
    test_db.drop_db().await;
    stripe.shutdown().await;
}

#[tokio::test]
async fn stripe_holds_the_ledger_exactly_through_faults_and_kills_on_sqlite() {
    through_faults_and_kills(Db::Sqlite).await;
}

#[tokio::test]
async fn stripe_holds_the_ledger_exactly_through_faults_and_kills_on_postgres_replicas() {
    through_faults_and_kills(Db::Postgres).await;
}

//! Telemetry rollups end to end: a real SDK client's requests, errors,
//! latency and queue depth come out of /v1/slo and /v1/gauges as sent; late
//! data merges into the stored window; too-old data is refused and counted;
//! shutdown writes open windows; the cardinality limit folds series; and
//! downsampling keeps totals and percentiles exact.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;
use tally_core::{
    Histogram, TenantId,
    rollup::{OVERFLOW, RollupKind, RollupRow, RollupValues, SeriesKey},
};
use tally_store::{RollupFilter, RollupTable, Store};

use crate::support::*;

/// Polls `path` until `done` holds for its JSON (the rollup writer runs
/// every flush interval).
async fn wait_json(s: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = s.get_json(path, None).await;
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn slo_path(tenant: &str, from_ms: i64, to_ms: i64, step: &str) -> String {
    format!("/v1/slo?tenant={tenant}&from={}&to={}&step={step}", rfc3339(from_ms), rfc3339(to_ms))
}

async fn python_send(s: &TestServer, tenant: &str, args: &[&str]) {
    let endpoint = s.grpc_url();
    let mut all = vec!["--endpoint", &endpoint, "--protocol", "grpc", "--tenant", tenant, "--service", "checkout"];
    all.extend_from_slice(args);
    otel_send(&all).await;
}

#[tokio::test]
async fn sdk_client_two_tenants_slo_and_queue_depth_come_out_as_sent() {
    let s = TestServer::start(Db::Postgres, "").await;
    // acme: 200 requests lasting 1..100 ms, every 10th failing; globex: 50
    // requests of 1..50 ms, none failing. Queue depth 5, 9, 3 for acme.
    python_send(&s, "acme", &["--slo-requests", "200", "--error-every", "10", "--queue-depths", "5,9,3"]).await;
    python_send(&s, "globex", &["--slo-requests", "50", "--slo-max-ms", "50"]).await;
    // Default 1-minute windows with 2 minutes' lateness: nothing is written
    // yet; shutdown writes the open windows, the restarted server reads them.
    let s = s.restart("").await;
    let (from, to) = (now_ms() - 3_600_000, now_ms() + 60_000);

    let acme = s.get_json(&slo_path("acme", from, to, "1h"), None).await;
    let total = &acme["total"];
    assert_eq!(total["requests"], 200, "{acme}");
    assert_eq!(total["errors"], 20);
    assert_eq!(total["error_rate"], 0.1);
    // Durations 1..100 ms twice: the 95th percentile is 95 ms, within the
    // histogram's precision (< 1 %), never below.
    let p95 = total["p95_ms"].as_f64().unwrap();
    assert!((95.0..=95.0 * 1.01).contains(&p95), "p95 {p95}");
    let p50 = total["p50_ms"].as_f64().unwrap();
    assert!((50.0..=50.5).contains(&p50), "p50 {p50}");
    let series_requests: u64 = acme["series"].as_array().unwrap().iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(series_requests, 200);

    let globex = s.get_json(&slo_path("globex", from, to, "1h"), None).await;
    assert_eq!((globex["total"]["requests"].as_u64(), globex["total"]["errors"].as_u64()), (Some(50), Some(0)));
    let p95 = globex["total"]["p95_ms"].as_f64().unwrap();
    assert!((48.0..=48.0 * 1.01).contains(&p95), "globex p95 {p95}");

    // Per operation: the route names the operation.
    let op =
        s.get_json(&format!("{}&service=checkout&operation=/checkout", slo_path("acme", from, to, "1h")), None).await;
    assert_eq!(op["total"]["requests"], 200);
    let top = s
        .get_json(&format!("/v1/slo/top?tenant=acme&from={}&to={}&by=error_rate", rfc3339(from), rfc3339(to)), None)
        .await;
    assert_eq!(top["operations"][0]["operation"], "/checkout", "{top}");
    assert_eq!(top["operations"][0]["kind"], "server");

    let gauges = s
        .get_json(
            &format!(
                "/v1/gauges?tenant=acme&name=worker.queue.depth&from={}&to={}&step=1h",
                rfc3339(from),
                rfc3339(to)
            ),
            None,
        )
        .await;
    let series = gauges["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{gauges}");
    let g = &series[0];
    assert_eq!(g["attributes"], serde_json::json!({"queue": "emails"}));
    assert_eq!((g["last"].as_f64(), g["min"].as_f64(), g["max"].as_f64()), (Some(3.0), Some(3.0), Some(9.0)));
    assert!((g["avg"].as_f64().unwrap() - 17.0 / 3.0).abs() < 1e-9);
    // Tenants see only their own gauges.
    let none = s
        .get_json(
            &format!("/v1/gauges?tenant=globex&name=worker.queue.depth&from={}&to={}", rfc3339(from), rfc3339(to)),
            None,
        )
        .await;
    assert_eq!(none["series"], serde_json::json!([]));
    s.stop().await;
}

#[tokio::test]
async fn late_data_merges_into_the_stored_window_and_too_old_is_refused() {
    let _m = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Postgres, "[rollups]\nallowed_lateness = \"0s\"").await;
    // A window ten minutes ago is closed: its data is written at the next flush.
    let window = (now_ms() - 600_000) / 60_000 * 60_000;
    let path = slo_path("late", window, window + 60_000, "60s");
    send_traces(&s, &spans_at("late", "GET /a", 10, window + 10_000, 20, false)).await;
    let v = wait_json(&s, &path, |v| v["total"]["requests"] == 10).await;
    assert_eq!(v["total"]["requests"], 10, "{v}");
    // More data for the same, already written window: merged, not dropped.
    send_traces(&s, &spans_at("late", "GET /a", 5, window + 20_000, 200, true)).await;
    let v = wait_json(&s, &path, |v| v["total"]["requests"] == 15).await;
    assert_eq!((v["total"]["requests"].as_u64(), v["total"]["errors"].as_u64()), (Some(15), Some(5)), "{v}");
    assert_eq!(v["series"].as_array().unwrap().len(), 1);
    // The merged histogram: 10 × 20 ms and 5 × 200 ms.
    let p50 = v["total"]["p50_ms"].as_f64().unwrap();
    let p99 = v["total"]["p99_ms"].as_f64().unwrap();
    assert!((20.0..20.2).contains(&p50) && (200.0..202.0).contains(&p99), "{v}");
    let rows = s
        .server
        .as_ref()
        .unwrap()
        .store
        .read_rollups(&RollupFilter {
            tenant: &TenantId::parse("late").unwrap(),
            kind: RollupKind::Span,
            service: None,
            name: Some("GET /a"),
            detail: None,
            from_ms: 0,
            to_ms: i64::MAX,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one stored row per series and window: {rows:?}");

    // Eight days old: beyond the 7-day window retention.
    let before = s.metrics().await;
    send_traces(&s, &spans_at("late", "GET /a", 3, now_ms() - 8 * 86_400_000, 20, false)).await;
    let refused = r#"tally_rollup_refused_items_total{signal="spans",reason="too_old"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&s.metrics().await, refused) - metric_value(&before, refused) < 3.0 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric_value(&s.metrics().await, refused) - metric_value(&before, refused), 3.0);
    // Refused from the rollups only: the items were accepted and counted.
    assert_eq!(s.wait_counts("late", (18, 0, 0)).await, (18, 0, 0));
    s.stop().await;
}

#[tokio::test]
async fn cardinality_limit_folds_new_series_into_the_overflow_series() {
    let _m = METRICS_LOCK.lock().await;
    let s = TestServer::start(Db::Sqlite, "[rollups]\nmax_series_per_tenant = 4\nallowed_lateness = \"0s\"").await;
    let before = s.metrics().await;
    let t = now_ms() - 120_000;
    for i in 0..10 {
        send_traces(&s, &spans_at("busy", &format!("GET /user/{i}"), 2, t, 5, false)).await;
    }
    let path = format!(
        "/v1/slo/top?tenant=busy&from={}&to={}&by=requests&limit=100",
        rfc3339(t - 60_000),
        rfc3339(t + 60_000)
    );
    let v = wait_json(&s, &path, |v| v["operations"].as_array().is_some_and(|o| o.len() == 4)).await;
    let ops = v["operations"].as_array().unwrap();
    // Four series: three operations and the service's aggregate; the
    // tenant's own aggregate is exempt.
    assert_eq!(ops.len(), 4, "3 operations and the overflow series: {v}");
    assert_eq!(ops[0]["operation"], OVERFLOW);
    assert_eq!(ops[0]["requests"], 14);
    assert_eq!(ops.iter().map(|o| o["requests"].as_u64().unwrap()).sum::<u64>(), 20);
    let folded = r#"tally_rollup_overflow_items_total{kind="span",limit="tenant"}"#;
    assert_eq!(metric_value(&s.metrics().await, folded) - metric_value(&before, folded), 14.0);
    // The tenant's SLO still counts every request.
    let slo = s.get_json(&slo_path("busy", t - 60_000, t + 60_000, "1h"), None).await;
    assert_eq!(slo["total"]["requests"], 20, "{slo}");
    s.stop().await;
}

#[tokio::test]
async fn sdk_histogram_metric_gives_count_sum_and_bucket_percentiles() {
    let s = TestServer::start(Db::Sqlite, "").await;
    python_send(&s, "hist", &["--histogram-values", "3,7,7,40,60,80,90,200"]).await;
    let s = s.restart("").await;
    let (from, to) = (now_ms() - 3_600_000, now_ms() + 60_000);
    let v = s
        .get_json(
            &format!(
                "/v1/histograms?tenant=hist&name=http.server.request.duration&from={}&to={}&step=1h",
                rfc3339(from),
                rfc3339(to)
            ),
            None,
        )
        .await;
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{v}");
    let p = &series[0];
    assert_eq!(p["attributes"], serde_json::json!({"http.route": "/checkout"}));
    assert_eq!((p["count"].as_u64(), p["sum"].as_f64()), (Some(8), Some(487.0)));
    assert_eq!((p["min"].as_f64(), p["max"].as_f64()), (Some(3.0), Some(200.0)));
    // The SDK's default buckets (…, 25, 50, 75, 100, 250, …): values count at
    // bucket midpoints, so the median (40) reads 37.5 and the max (200) 175.
    let p50 = p["p50"].as_f64().unwrap();
    let p99 = p["p99"].as_f64().unwrap();
    assert!((37.5..37.9).contains(&p50) && (175.0..176.5).contains(&p99), "{p}");
    s.stop().await;
}

#[tokio::test]
async fn hostile_names_and_missing_start_times_do_not_stop_the_rollups() {
    let s = TestServer::start(Db::Postgres, "").await;
    let mut req = spans_at("hostile", "GET /ok", 1, now_ms(), 5, false);
    let mut odd = spans_at("hostile", &"x".repeat(5000), 1, now_ms(), 5, false).resource_spans.remove(0);
    // PostgreSQL text refuses NUL; a 5,000-byte name exceeds an index row.
    odd.resource.as_mut().unwrap().attributes[1] = kv("service.name", "bad\0service");
    odd.scope_spans[0].spans[0].start_time_unix_nano = 0;
    req.resource_spans.push(odd);
    send_traces(&s, &req).await;
    let s = s.restart("").await;
    let (from, to) = (now_ms() - 3_600_000, now_ms() + 60_000);
    let v = s.get_json(&slo_path("hostile", from, to, "1h"), None).await;
    assert_eq!(v["total"]["requests"], 2, "{v}");
    // The span without a start time counts as a request of unknown (zero) duration.
    assert_eq!(v["total"]["max_ms"], 5.0, "{v}");
    let top = s
        .get_json(&format!("/v1/slo/top?tenant=hostile&from={}&to={}&by=requests", rfc3339(from), rfc3339(to)), None)
        .await;
    let names: Vec<&str> =
        top["operations"].as_array().unwrap().iter().map(|o| o["operation"].as_str().unwrap()).collect();
    assert!(names.contains(&"GET /ok") && names.iter().any(|n| n.len() == 256), "{top}");
    s.stop().await;
}

#[tokio::test]
async fn logs_are_counted_by_severity() {
    let s = TestServer::start(Db::Sqlite, "").await;
    python_send(&s, "loggy", &["--logs", "7"]).await;
    let s = s.restart("").await;
    let (from, to) = (now_ms() - 3_600_000, now_ms() + 60_000);
    let v = s
        .get_json(&format!("/v1/logs/counts?tenant=loggy&from={}&to={}&step=1h", rfc3339(from), rfc3339(to)), None)
        .await;
    assert_eq!(v["total"]["counts"], serde_json::json!({"INFO": 7}), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn queries_name_the_bad_parameter() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let many_steps = slo_path("a", now_ms() - 86_400_000, now_ms(), "1s");
    for (query, field) in [
        ("/v1/slo?tenant=a&from=yesterday", "from"),
        // past year 9999 once in UTC: no answer could echo it (found by schemathesis)
        ("/v1/slo?tenant=a&to=9999-12-31T23:59:59-23:59", "to"),
        ("/v1/slo?tenant=a&step=1ms", "step"),
        (many_steps.as_str(), "step"),
        ("/v1/slo?tenant=a b", "tenant"),
        ("/v1/gauges?tenant=a", "name"),
        ("/v1/slo/top?tenant=a&by=median", "by"),
    ] {
        let r = s.http.get(s.api_url(query)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().starts_with(field), "{query}: {body}");
    }
    // A range reaching back into hour rows is answered in whole hours.
    let day = 86_400_000;
    for (back, step) in [(day, 60), (10 * day, 3600), (100 * day, 86_400)] {
        let v = s.get_json(&slo_path("a", now_ms() - back, now_ms(), "60s"), None).await;
        assert_eq!(v["step_seconds"], step, "{back}");
    }
    s.stop().await;
}

/// Rows of one series over three hours: window rows of random durations.
fn three_hours(tenant: &TenantId, t0: i64) -> (Vec<RollupRow>, Histogram, u64, u64) {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut all = Histogram::new();
    let (mut count, mut errors) = (0, 0);
    let mut rows = Vec::new();
    for w in 0..180 {
        let mut v = RollupValues::default();
        for _ in 0..(w % 7 + 1) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let us = rng % 3_000_000 + 1;
            let failed = rng.is_multiple_of(13);
            v.add_span(us, failed);
            all.record(us);
            count += 1;
            errors += u64::from(failed);
        }
        let key = SeriesKey {
            tenant: tenant.clone(),
            kind: RollupKind::Span,
            service: "svc".into(),
            name: "op".into(),
            detail: "server".into(),
        };
        rows.push(RollupRow { key, start_ms: t0 + w * 60_000, values: v });
    }
    (rows, all, count, errors)
}

async fn downsampling_keeps_totals_and_percentiles(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&test_db.url, dir.path()).await.unwrap();
    store.migrate().await.unwrap();
    let tenant = TenantId::parse("down").unwrap();
    let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let (rows, all, count, errors) = three_hours(&tenant, t0);
    // Written in two halves, the second half twice over the same keys from
    // concurrent writers, as replicas would: rows merge, none is clobbered.
    let (a, b) = rows.split_at(90);
    store.write_rollups(RollupTable::Windows, a).await.unwrap();
    let (r1, r2) =
        tokio::join!(store.write_rollups(RollupTable::Windows, b), store.write_rollups(RollupTable::Windows, b));
    r1.unwrap();
    r2.unwrap();
    let mut expected = all.clone();
    let mut twice_b = Histogram::new();
    b.iter().for_each(|r| twice_b.merge(r.values.hist.as_ref().unwrap()));
    expected.merge(&twice_b);
    let b_count: u64 = b.iter().map(|r| r.values.count).sum();
    let b_errors: u64 = b.iter().map(|r| r.values.errors).sum();
    let (count, errors) = (count + b_count, errors + b_errors);

    let config = tally::Config::from_toml(&[]).unwrap().rollups;
    let read = || async {
        let f = RollupFilter {
            tenant: &tenant,
            kind: RollupKind::Span,
            service: None,
            name: None,
            detail: None,
            from_ms: 0,
            to_ms: i64::MAX,
        };
        let rows = store.read_rollups(&f).await.unwrap();
        let mut total = RollupValues::default();
        rows.iter().for_each(|r| total.merge(&r.values));
        (rows, total)
    };
    let check = |rows: &[RollupRow], total: &RollupValues, width: i64, n: usize| {
        assert_eq!(rows.len(), n, "rows at width {width}");
        assert!(rows.iter().all(|r| r.start_ms % width == 0));
        assert_eq!((total.count, total.errors), (count, errors));
        assert_eq!(total.hist.as_ref().unwrap(), &expected, "histograms merge exactly");
        for q in [0.5, 0.9, 0.95, 0.99] {
            assert_eq!(total.hist.as_ref().unwrap().value_at_quantile(q), expected.value_at_quantile(q));
        }
    };
    let (rows, total) = read().await;
    check(&rows, &total, 60_000, 180);

    let day = 86_400_000;
    // Not yet 7 days old: nothing moves.
    let r = tally_aggregator::maintain(&store, &config, t0 + 6 * day).await.unwrap();
    assert_eq!(r.chunks, 0);
    // Eight days on: window rows became three hour rows.
    let r = tally_aggregator::maintain(&store, &config, t0 + 8 * day).await.unwrap();
    assert_eq!((r.chunks, r.rows), (1, 180));
    let (rows, total) = read().await;
    check(&rows, &total, 3_600_000, 3);
    // Again: idempotent.
    let r = tally_aggregator::maintain(&store, &config, t0 + 8 * day).await.unwrap();
    assert_eq!(r.chunks, 0);
    // 150 days on: hour rows became one day row.
    tally_aggregator::maintain(&store, &config, t0 + 150 * day).await.unwrap();
    let (rows, total) = read().await;
    check(&rows, &total, day, 1);
    // Beyond day retention (730 days, by 365-day chunks): gone.
    tally_aggregator::maintain(&store, &config, t0 + 1200 * day).await.unwrap();
    assert!(read().await.0.is_empty());
    if db == Db::Postgres {
        let Store::Postgres(pool) = &store else { unreachable!() };
        let partitions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname IN ('rollup_windows', 'rollup_hours', 'rollup_days')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(partitions, 0, "expired partitions are dropped");
    }
    store.close().await;
    test_db.drop_db().await;
}

#[tokio::test]
async fn downsampling_keeps_totals_and_percentiles_on_postgres() {
    downsampling_keeps_totals_and_percentiles(Db::Postgres).await;
}

#[tokio::test]
async fn downsampling_keeps_totals_and_percentiles_on_sqlite() {
    downsampling_keeps_totals_and_percentiles(Db::Sqlite).await;
}

/// Benchmark (not run by the suite): `scripts/bench-slo` runs it in release.
/// 24 hours of one-minute rows for a tenant with 10 operations (and 4 other
/// tenants alike), then /v1/slo over the 24 hours at 60 s steps, tenant-wide
/// and for one operation, timed end to end over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-slo"]
async fn bench_slo_query_24h() {
    for db in [Db::Postgres, Db::Sqlite] {
        let s = TestServer::start(db, "").await;
        let store = s.server.as_ref().unwrap().store.clone();
        let end = now_ms() / 60_000 * 60_000;
        let start = end - 86_400_000;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for t in 0..5 {
            let tenant = TenantId::parse(&format!("bench-{t}")).unwrap();
            let mut rows = Vec::new();
            for w in 0..1440 {
                // The aggregator's per-service and per-tenant entry-span series.
                let mut all = RollupValues::default();
                for op in 0..10 {
                    let mut v = RollupValues::default();
                    for _ in 0..200 {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        // Log-normal like the loadgen's default (p50 40 ms, p99 800 ms),
                        // the normal deviate from a sum of 12 uniforms.
                        let z: f64 =
                            (0..12).map(|k| ((rng.rotate_left(k * 5) & 0xffff) as f64) / 65_536.0).sum::<f64>() - 6.0;
                        let us = (40_000.0 * (z * (800f64 / 40.0).ln() / 2.326).exp()) as u64;
                        v.add_span(us, rng.is_multiple_of(100));
                    }
                    let key = SeriesKey {
                        tenant: tenant.clone(),
                        kind: RollupKind::Span,
                        service: "svc".into(),
                        name: format!("GET /op{op}").into(),
                        detail: "server".into(),
                    };
                    all.merge(&v);
                    rows.push(RollupRow { key, start_ms: start + w * 60_000, values: v });
                }
                for service in ["svc", "*"] {
                    let key = SeriesKey {
                        tenant: tenant.clone(),
                        kind: RollupKind::Span,
                        service: service.into(),
                        name: "*".into(),
                        detail: "*".into(),
                    };
                    rows.push(RollupRow { key, start_ms: start + w * 60_000, values: all.clone() });
                }
            }
            for chunk in rows.chunks(5000) {
                store.write_rollups(RollupTable::Windows, chunk).await.unwrap();
            }
        }
        if let Store::Postgres(pool) = &store {
            sqlx::query("ANALYZE").execute(pool).await.unwrap();
        }
        let buckets = {
            let rows = store
                .read_rollups(&RollupFilter {
                    tenant: &TenantId::parse("bench-0").unwrap(),
                    kind: RollupKind::Span,
                    service: None,
                    name: Some("GET /op0"),
                    detail: None,
                    from_ms: start,
                    to_ms: start + 60_000,
                })
                .await
                .unwrap();
            rows[0].values.hist.as_ref().unwrap().buckets()
        };
        let f = RollupFilter {
            tenant: &TenantId::parse("bench-0").unwrap(),
            kind: RollupKind::Span,
            service: Some("*"),
            name: Some("*"),
            detail: Some("*"),
            from_ms: start,
            to_ms: end,
        };
        // The first read on a connection also plans and loads partition
        // metadata; the warm figure is what a busy server sees.
        let mut reads = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..6 {
            let t = Instant::now();
            rows = store.read_rollups(&f).await.unwrap();
            reads.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // The same rows' columns fetched without decoding them.
        let raw_ms = {
            let sql = format!(
                "SELECT start_ms, count, errors, sum, min, max, hist FROM rollup_windows WHERE tenant = 'bench-0' \
                 AND kind = 1 AND service = '*' AND name = '*' AND detail = '*' AND start_ms >= {start} AND start_ms < {end}"
            );
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                let n = match &store {
                    Store::Postgres(pool) => {
                        sqlx::query(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await.unwrap().len()
                    }
                    Store::Sqlite(pool) => {
                        sqlx::query(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await.unwrap().len()
                    }
                };
                assert_eq!(n, 1440);
                best = best.min(t.elapsed().as_secs_f64() * 1000.0);
            }
            best
        };
        println!("bench_slo {db:?} raw fetch of the same rows (no decoding): {raw_ms:.1} ms");
        let t = Instant::now();
        let total = RollupValues::merged(rows.iter().map(|r| &r.values));
        assert_eq!(total.count, 1440 * 2000);
        let merge_ms = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "bench_slo {db:?} read_rollups: {} rows, first {:.1} ms, warm {:.1} ms; merging them {merge_ms:.1} ms",
            rows.len(),
            reads[0],
            reads[1..].iter().copied().fold(f64::INFINITY, f64::min)
        );
        if let Store::Postgres(pool) = &store {
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM rollup_windows WHERE tenant = 'bench-0' AND kind = 1 \
                 AND service = '*' AND name = '*' AND detail = '*' AND start_ms >= {start} AND start_ms < {end} ORDER BY start_ms"
            )))
            .fetch_all(pool)
            .await
            .unwrap();
            println!("bench_slo plan:\n{}", plan.join("\n"));
        }
        for (label, extra, step) in
            [("tenant-wide", ""), ("one service", "&service=svc"), ("one operation", "&operation=GET%20/op3")]
                .into_iter()
                .map(|(l, e)| (l, e.to_string(), "60s"))
                .chain([("tenant-wide, one 24h step", String::new(), "24h")])
        {
            let path = format!("{}{extra}", slo_path("bench-0", start, end, step));
            let mut times = Vec::new();
            for _ in 0..30 {
                let t = Instant::now();
                let v = s.get_json(&path, None).await;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(v["series"].as_array().unwrap().len(), if step == "60s" { 1440 } else { 1 });
            }
            times.sort_by(f64::total_cmp);
            println!(
                "bench_slo {db:?} {label} (1,440 rows): median {:.1} ms, p90 {:.1} ms, min {:.1} ms ({buckets} histogram buckets per row)",
                times[15], times[27], times[0]
            );
        }
        s.stop().await;
    }
}

/// A database that stops taking rollup rows (here: the table locked by
/// another session) pauses ingestion once a closed window has waited a
/// window's width: the queue fills and receivers answer 429, instead of
/// rows piling up in memory. Once the lock goes, ingestion resumes and every
/// accepted span is in the rollups.
#[tokio::test]
async fn a_database_a_window_behind_pauses_ingestion_and_loses_nothing() {
    let _m = METRICS_LOCK.lock().await;
    let s = TestServer::start(
        Db::Postgres,
        "[rollups]\nwindow = \"1s\"\nallowed_lateness = \"0s\"\npartial_flush_interval = \"0s\"\n\
         [pipeline]\nqueue_capacity = 4\n[otlp]\nenqueue_timeout = \"10ms\"",
    )
    .await;
    let http = reqwest::Client::new();
    let url = s.http_url("/v1/traces");
    let t0 = now_ms();
    let post = |n: usize| {
        let body = encode(&spans_at("slowdb", "GET /a", n, now_ms(), 5, false));
        http.post(&url).header("content-type", "application/x-protobuf").body(body).send()
    };
    // Rows for a first window are written (its partition exists).
    assert_eq!(post(1).await.unwrap().status(), 200);
    let path = slo_path("slowdb", t0 - 60_000, t0 + 600_000, "1h");
    assert_eq!(wait_json(&s, &path, |v| v["total"]["requests"] == 1).await["total"]["requests"], 1);

    let mut lock = sqlx::PgConnection::connect(&s.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE rollup_windows IN ACCESS EXCLUSIVE MODE").execute(&mut lock).await.unwrap();

    // Until pushed back: one request of 3 spans every 50 ms.
    let mut accepted = 1u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let r = post(3).await.unwrap();
        match r.status().as_u16() {
            200 => accepted += 3,
            429 => break true,
            other => panic!("unexpected status {other}"),
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused, "never pushed back while the rollup table was locked");
    assert_eq!(metric_value(&s.metrics().await, "tally_rollup_backpressure"), 1.0);

    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    // Resumes: accepted again within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = post(3).await.unwrap();
        if r.status() == 200 {
            accepted += 3;
            break;
        }
        assert!(Instant::now() < deadline, "ingestion did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = wait_json(&s, &path, |v| v["total"]["requests"] == accepted).await;
    assert_eq!(v["total"]["requests"], accepted, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&s.metrics().await, "tally_rollup_backpressure") != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric_value(&s.metrics().await, "tally_rollup_backpressure"), 0.0);
    s.stop().await;
}

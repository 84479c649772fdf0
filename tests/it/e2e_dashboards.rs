//! The Grafana dashboards over what tally itself wrote: a real SDK client
//! sends two tenants' requests (with errors and a queue gauge), usage events
//! arrive, tally writes its rollups (with the bucket arrays of migration
//! 0013) and ledger to PostgreSQL; then every panel of every PostgreSQL
//! dashboard runs there — its SQL expanded as Grafana expands it, by
//! dashboards/check/sql_check.py — without a failure, and the tenant
//! overview's p95 panel agrees with `/v1/slo` within 1 %.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs sql_check.py on one dashboard and returns its JSON report.
async fn sql_check(dashboard: &str, db: &str, from_ms: i64, to_ms: i64, tenant: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(repo().join("dashboards/check/sql_check.py"))
        .arg(repo().join("dashboards/grafana/dashboards").join(dashboard))
        .args(["--db", db, "--from", &from_ms.to_string(), "--to", &to_ms.to_string()])
        .args(["--var", &format!("tenant={tenant}"), "--json"])
        .output()
        .await
        .expect("python3 runs dashboards/check/sql_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("sql_check.py printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

/// The first cell of the first row of the panel titled `title`.
fn panel_value(report: &Value, title: &str) -> f64 {
    let target = report["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?} in {report}"));
    assert_eq!(target["status"], "ok", "{target}");
    let cell = &target["first_row"][0];
    cell.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("panel {title:?} gave {cell}"))
}

#[tokio::test]
async fn dashboard_p95_equals_the_slo_api_on_data_tally_wrote() {
    let meters = "[[meters]]\nname = \"llm_tokens\"\naggregation = \"sum\"\nunit = \"tokens\"\n\
                  event_type = \"llm.completion\"\nvalue = \"$.tokens\"\nlimit = 1000\n";
    let s = TestServer::start(Db::Postgres, meters).await;
    let endpoint = s.grpc_url();
    for (tenant, requests, max_ms) in [("acme", "300", "250"), ("globex", "120", "40")] {
        let args = ["--endpoint", &endpoint, "--protocol", "grpc", "--tenant", tenant, "--service", "checkout"];
        let mut all = args.to_vec();
        all.extend([
            "--slo-requests",
            requests,
            "--slo-max-ms",
            max_ms,
            "--error-every",
            "7",
            "--queue-depths",
            "5,60,3",
        ]);
        otel_send(&all).await;
    }
    let events: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            serde_json::json!({"specversion": "1.0", "id": format!("dash-{i}"), "source": "test", "type": "llm.completion",
                "subject": if i % 2 == 0 { "acme" } else { "globex" }, "time": rfc3339(now_ms() - 60_000), "data": {"tokens": 100}})
        })
        .collect();
    let resp = s
        .http
        .post(s.api_url("/v1/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Shutdown writes the open windows.
    let s = s.restart("").await;
    let (from, to) = (now_ms() - 3_600_000, now_ms() + 60_000);

    let url = s.db.url.clone();
    // acme: 1..=250 ms then 1..=50 ms, so the 285th of 300 is 235 ms;
    // globex: 1..=40 ms three times, the 114th of 120 is 38 ms.
    for (tenant, want_p95_ms) in [("acme", 235.0), ("globex", 38.0)] {
        let slo = s
            .get_json(&format!("/v1/slo?tenant={tenant}&from={}&to={}&step=1h", rfc3339(from), rfc3339(to)), None)
            .await;
        let api_ms = slo["total"]["p95_ms"].as_f64().unwrap_or_else(|| panic!("{slo}"));
        // The API itself is right first (within the histogram's 1 %).
        assert!((want_p95_ms..=want_p95_ms * 1.01).contains(&api_ms), "{tenant}: /v1/slo p95 {api_ms} ms");
        let report = sql_check("tenant-overview.json", &url, from, to, tenant).await;
        let panel_ms = panel_value(&report, "p95 latency (range)") * 1000.0;
        assert!(
            (panel_ms - api_ms).abs() <= api_ms * 0.01,
            "{tenant}: dashboard p95 {panel_ms} ms, /v1/slo {api_ms} ms"
        );
    }
    // Every panel of every PostgreSQL dashboard runs on what tally wrote.
    for dashboard in ["tenant-overview.json", "service-slos.json", "alerts.json", "usage-billing.json"] {
        let report = sql_check(dashboard, &url, from, to, "acme").await;
        assert_eq!(report["failures"], 0, "{dashboard}: {report:#}");
        let ran = report["targets"].as_array().map_or(0, |t| t.iter().filter(|t| t["status"] == "ok").count());
        assert!(ran >= 3, "{dashboard}: {ran} panels ran");
    }
    s.stop().await;
}

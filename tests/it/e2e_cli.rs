//! The `tally` binary itself: config errors name the key, `serve` starts on
//! the configured addresses, answers, and exits cleanly on SIGTERM after
//! flushing.

use std::{process::Stdio, time::Duration};

use crate::{
    daemon::{free_port, tally_cmd as tally},
    support::*,
};

#[tokio::test]
async fn unknown_env_key_is_refused_by_name() {
    let out = tally().arg("check-config").env("TALLY_OTLP_GRPC_ADRESS", "x").output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpc_adress"), "{err}");

    let out = tally()
        .arg("check-config")
        .env("TALLY_DATABASE_URL", "postgres://u:hunter2@db.example.com/t")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("config ok") && !printed.contains("hunter2"), "{printed}");
}

#[tokio::test]
async fn serve_answers_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    let child = tally()
        .arg("serve")
        .env("TALLY_DATA_DIR", dir.path().join("data"))
        .env("TALLY_OTLP_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("TALLY_OTLP_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("TALLY_API_ADDR", format!("127.0.0.1:{api}"))
        .env("TALLY_LOG_FORMAT", "json")
        .env("TALLY_PIPELINE_FLUSH_INTERVAL", "1h")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if client.get(format!("http://127.0.0.1:{api}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "tally did not become ready");
    let body = encode(&traces(vec![kv("tenant.id", "cli")], 7, vec![]));
    let resp = client
        .post(format!("http://127.0.0.1:{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // `tally healthcheck` finds the API from the same configuration.
    let healthcheck = || {
        let mut cmd = tally();
        cmd.arg("healthcheck").env("TALLY_API_ADDR", format!("127.0.0.1:{api}"));
        async move { cmd.output().await.unwrap() }
    };
    let ok = healthcheck().await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    let logs = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}");
    assert!(logs.contains("\"message\":\"shutdown complete\""), "{logs}");
    let down = healthcheck().await;
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"), "{down:?}");

    // The shutdown flush wrote the 7 spans (periodic flushes were off).
    let store = tally_store::Store::open("", &dir.path().join("data")).await.unwrap();
    let counts = store.ingest_counts(Some(&tally_core::TenantId::parse("cli").unwrap())).await.unwrap();
    assert_eq!(counts.iter().map(|c| c.items).sum::<u64>(), 7);
}

#[tokio::test]
async fn keys_are_created_once_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &'static [&'static str]| {
        let mut cmd = tally();
        cmd.args(args).env("TALLY_DATA_DIR", &data);
        async move { cmd.output().await.unwrap() }
    };
    let out = run(&["keys", "create", "--tenant", "acme"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let id = tally_collector::auth::key_id(&key).expect("tly_<id>_<secret>").to_owned();
    assert!(key.len() > 50);

    let list = String::from_utf8(run(&["keys", "list"]).await.stdout).unwrap();
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("tenant") && line.contains("acme") && line.trim_end().ends_with('-'), "{line}");
    // Only the hash is stored: the secret is nowhere in the database file.
    let db = std::fs::read(data.join("tally.db")).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

    let mut revoke = tally();
    let out = revoke.args(["keys", "revoke", &id]).env("TALLY_DATA_DIR", &data).output().await.unwrap();
    assert!(out.status.success());
    let list = String::from_utf8(run(&["keys", "list"]).await.stdout).unwrap();
    assert!(!list.lines().find(|l| l.starts_with(&id)).unwrap().trim_end().ends_with('-'), "{list}");
    let mut again = tally();
    let out = again.args(["keys", "revoke", &id]).env("TALLY_DATA_DIR", &data).output().await.unwrap();
    assert!(!out.status.success());
    assert!(run(&["keys", "create"]).await.status.code() != Some(0)); // one of --tenant/--service/--admin
}

#[tokio::test]
async fn without_keys_serve_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let out = tally()
        .arg("serve")
        .env("TALLY_DATA_DIR", dir.path())
        .env("TALLY_API_ADDR", format!("0.0.0.0:{}", free_port()))
        .env("TALLY_OTLP_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("TALLY_OTLP_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no API keys exist") && err.contains("auth.open"), "{err}");
}

/// A webhook URL carrying a token is printed redacted by check-config
/// (and logged redacted: the same Debug and redaction are used there).
#[tokio::test]
async fn check_config_redacts_urls() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tally.toml");
    std::fs::write(
        &file,
        "[[receivers]]\nname = \"oncall\"\ntype = \"webhook\"\nurl = \"https://user:pw@hooks.example.com/in?token=s3cr3tT0ken\"\n",
    )
    .unwrap();
    let out = tally().args(["check-config", "--config"]).arg(&file).output().await.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("https://[redacted]@hooks.example.com/in?[redacted]"), "{printed}");
    assert!(!printed.contains("s3cr3tT0ken") && !printed.contains("pw@"), "{printed}");
}

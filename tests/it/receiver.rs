//! A real HTTP receiver of tally's notifications
//! (`tests/clients/webhook_receiver.py`): verifies Standard Webhooks
//! signatures with the `standardwebhooks` package, records each request.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::support::*;

/// The receiver process; its records survive a restart (same file).
pub struct Receiver {
    child: Option<tokio::process::Child>,
    pub port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// A port that is free now, for a receiver that is not running yet.
    pub fn reserve() -> Receiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        Receiver { child: None, port, out: dir.path().join("received.jsonl"), _dir: dir }
    }

    pub async fn start() -> Receiver {
        let mut r = Receiver::reserve();
        r.run().await;
        r
    }

    pub async fn run(&mut self) {
        let mut child = tokio::process::Command::new(client_python())
            .arg(clients_dir().join("webhook_receiver.py"))
            .args(["--port", &self.port.to_string(), "--secret", WEBHOOK_SECRET, "--out"])
            .arg(&self.out)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
        assert_eq!(first.as_deref(), Some(format!("listening {}", self.port).as_str()));
        self.child = Some(child);
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Accepted requests to `path`, waiting up to 30 s until there are `n`.
    pub async fn accepted(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all = self.records();
            for r in &all {
                assert!(r["error"].is_null() || r["status"] == 503, "receiver refused a request: {r}");
            }
            let ok: Vec<Value> =
                all.into_iter().filter(|r| r["path"] == path && r["status"].as_u64().unwrap() < 300).collect();
            if ok.len() >= n || Instant::now() > deadline {
                return ok;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

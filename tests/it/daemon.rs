//! The `tally` binary as a child process: started on a config file, killed
//! with SIGKILL, started again on the same data — for tests of what
//! survives a crash.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

/// `tally` with only the environment the test sets: a developer's TALLY_*
/// must not leak in.
pub fn tally_cmd() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TALLY_") || k.starts_with("STRIPE_") {
            cmd.env_remove(k);
        }
    }
    cmd.kill_on_drop(true);
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tally process on its own ports and data dir, its config in a file.
pub struct Daemon {
    child: Option<tokio::process::Child>,
    pub config: PathBuf,
    pub api_port: u16,
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Writes the config (`database_url`, ports and data dir prepended to
    /// `toml`) and starts tally on it; returns once `/readyz` answers.
    pub async fn start(database_url: &str, toml: &str, env: Vec<(String, String)>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let api_port = free_port();
        let config = dir.path().join("tally.toml");
        let head = format!(
            "data_dir = \"{data}\"\ndatabase_url = \"{database_url}\"\nlog_format = \"json\"\n\
             [api]\naddr = \"127.0.0.1:{api_port}\"\n\
             [otlp]\ngrpc_addr = \"127.0.0.1:{grpc}\"\nhttp_addr = \"127.0.0.1:{http}\"\n\
             [lake]\nenabled = false\n",
            data = dir.path().join("data").display(),
            grpc = free_port(),
            http = free_port(),
        );
        std::fs::write(&config, format!("{head}\n{toml}")).unwrap();
        let mut d = Daemon { child: None, config, api_port, env, dir, http: reqwest::Client::new() };
        d.run().await;
        d
    }

    pub async fn run(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("tally.log")).unwrap();
        let child = tally_cmd()
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("tally exited at start ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "tally did not get ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no flush, no goodbye.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tally.log")).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.http.get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    /// Runs a tally subcommand on this daemon's config and environment:
    /// (exit code, stdout, stderr).
    pub async fn command(&self, args: &[&str]) -> (i32, String, String) {
        let out = tally_cmd()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

//! A PostgreSQL server of a test's own, in a temporary directory, that
//! checks passwords (scram-sha-256 over TCP) — the machine's shared server
//! trusts loopback, so it cannot show that a wrong password is refused.
//! The admin signs in over the server's own Unix socket.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::daemon::free_port;

pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The newest installed server's bin directory.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin are required")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs a server binary; as root through `runuser -u postgres` (initdb and
/// postgres refuse to run as root).
fn run(bin: &Path, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(out.status.success(), "{} {args:?}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap().success();
            assert!(ok, "chown postgres {}", dir.path().display());
        }
        let bin = bin_dir();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        run(
            &bin.join("initdb"),
            &["-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-N"],
        );
        let pg = PrivatePostgres { port: free_port(), dir, bin };
        pg.start_server();
        pg
    }

    /// Starts the server again on the same port and data (after [`stop`](Self::stop)).
    pub fn start_server(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -k {} -c fsync=off -c log_connections=on",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (self.dir.path().join("data"), self.dir.path().join("log"));
        let args = ["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"];
        run(&self.bin.join("pg_ctl"), &args);
    }

    /// Stops the server at once (`-m immediate`: as a crash would).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        run(&self.bin.join("pg_ctl"), &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }

    /// Runs `sql` as the superuser over the Unix socket; returns the
    /// unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres"])
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The server's log (connections, authentication failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let bin = self.bin.join("pg_ctl");
        let _ = std::panic::catch_unwind(|| run(&bin, &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]));
    }
}

//! A running `pbxlink run` seen from outside, as the real-PBX tests watch it: its HTTP API
//! (`GET` with the answer's status and body, `/readyz` until ready), the tail of its log, and
//! the LeadSquared stand-in it posts to (waiting until what the stand-in received satisfies a
//! condition, else a panic with everything it received and the daemon's log); starting it
//! on a config that `pbxlink check-config` accepts, and a guard that kills it when dropped.
//!
//! Included with `mod daemon_watch;` by `tests/asterisk_live.rs`, and by `tests/fsrig` (with
//! `#[path]`, re-exported) for the FreeSWITCH tests;
//! cargo does not build it as a test of its own.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pbxlink::crm::leadsquared::standin::StandIn;

/// How many of the daemon's last log lines a failure shows.
const LOG_TAIL_LINES: usize = 60;

/// The daemon's HTTP API on 127.0.0.1, its log file and the stand-in it posts to.
pub struct DaemonWatch {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The `[http] token` the daemon was configured with.
    pub token: String,
    pub standin: StandIn,
    pub log: PathBuf,
}

impl DaemonWatch {
    /// Watches the daemon listening on 127.0.0.1:`port` with `[http] token = token`, logging
    /// into `log`, posting to `standin`.
    pub fn new(port: u16, token: &str, standin: &StandIn, log: PathBuf) -> DaemonWatch {
        DaemonWatch {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            token: token.to_owned(),
            standin: standin.clone(),
            log,
        }
    }

    /// `GET path_and_query`: the status and the body (empty when it could not be read).
    pub async fn get(&self, path_and_query: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Waits until `cond` holds for what the stand-in received; panics after `limit` with
    /// what it received and the daemon's log.
    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&StandIn) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = cond(&self.standin) {
                return v;
            }
            if started.elapsed() > limit {
                panic!(
                    "{what}: not within {limit:?}\nstand-in received: {:#?}\n--- pbxlink log\n{}",
                    self.standin
                        .received()
                        .iter()
                        .map(|r| (r.endpoint, r.status, r.body.clone(), r.problem.clone()))
                        .collect::<Vec<_>>(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `/readyz` answers 2xx; panics after `limit` with the daemon's log.
    pub async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz?token={}", self.base, self.token))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "pbxlink not ready within {limit:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Writes `toml` into `dir/pbxlink.toml`, has `pbxlink check-config` accept it (else panics
/// with its output and the config) and starts `pbxlink run` on it with
/// `RUST_LOG=info,pbxlink=debug`, stdout and stderr into `dir/pbxlink.log`: the daemon and
/// its log's path.
pub fn start_daemon(dir: &Path, toml: &str) -> (Child, PathBuf) {
    let config = dir.join("pbxlink.toml");
    std::fs::write(&config, toml).expect("config");
    let check = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "check-config: {}{}\n{toml}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = dir.join("pbxlink.log");
    let child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,pbxlink=debug")
        .stdout(File::create(&log).expect("log"))
        .stderr(File::options().append(true).open(&log).expect("log"))
        .spawn()
        .expect("pbxlink run");
    (child, log)
}

/// Kills the daemon when dropped (also when the test panics).
pub struct DaemonGuard(pub Option<Child>);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl DaemonGuard {
    /// SIGTERM, then waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

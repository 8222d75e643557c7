//! Shared helpers of the integration tests: a pbxlink daemon as a real subprocess, a CDR
//! writer that appends lines like Asterisk, and the local LeadSquared stand-in.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbxlink::config::Synchronous;
use pbxlink::crm::leadsquared::standin::{Expectations, StandIn};
use pbxlink::outbox::Store;
use serde_json::Value;

/// A test's world: a temp dir with the CDR file, the store and the config.
pub struct World {
    pub dir: tempfile::TempDir,
    pub cdr: PathBuf,
    pub config: PathBuf,
    pub standin: StandIn,
    /// The store's file (`[store] path`; [`World::move_store`] puts it elsewhere).
    pub store_path: PathBuf,
    /// The daemon's store, opened in this process on first use (see [`World::status`]).
    store: std::sync::OnceLock<Store>,
}

pub const URL_KEY: &str = "test-connector-key";

impl World {
    /// A stand-in and a config pointing at it, with fast retries and a short settle time.
    pub async fn new(reject_call_ids: Vec<String>) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let standin = StandIn::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Expectations {
                url_key: URL_KEY.into(),
                access_keys: Some(("ak".into(), "sk".into())),
                reject_call_ids,
            },
        )
        .await
        .expect("stand-in");
        let cdr = dir.path().join("Master.csv");
        let config = dir.path().join("pbxlink.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[store]
path = {store:?}
synchronous = "normal"
[leadsquared]
call_log_url = {url:?}
access_key = "ak"
secret_key = "sk"
default_country_code = "91"
request_timeout_ms = 2000
retry_initial_ms = 100
retry_max_ms = 1000
auth_failure_pause_ms = 1000
rate_limit_requests = 500
rate_limit_period_ms = 1000
[[virtual_numbers]]
number = "+918044556677"
tag = "sales"
[[agents]]
extension = "100"
phone = "+919876500100"
[asterisk]
cdr_csv = {cdr:?}
# Tests write the CDR file before starting the daemon and expect it read.
start_at = "beginning"
settle_ms = 300
poll_interval_ms = 100
"#,
                store = dir.path().join("pbxlink.db"),
                url = standin.call_log_url(),
                cdr = cdr,
            ),
        )
        .expect("config");
        World {
            store_path: dir.path().join("pbxlink.db"),
            dir,
            cdr,
            config,
            standin,
            store: std::sync::OnceLock::new(),
        }
    }

    /// Puts the store in `dir` (e.g. a small tmpfs) instead of the world's temp dir; call it
    /// before the first daemon start and the first [`World::store`].
    pub fn move_store(&mut self, dir: &Path) {
        assert!(self.store.get().is_none(), "the store is already open");
        let new = dir.join("pbxlink.db");
        let text = std::fs::read_to_string(&self.config).expect("config");
        let old_line = format!("path = {:?}", self.store_path);
        assert!(text.contains(&old_line), "no {old_line} in the config");
        std::fs::write(
            &self.config,
            text.replace(&old_line, &format!("path = {new:?}")),
        )
        .expect("config");
        self.store_path = new;
    }

    /// Starts `pbxlink run` with this world's config.
    pub fn start_daemon(&self) -> Daemon {
        let log = self.dir.path().join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn pbxlink");
        Daemon { child, log }
    }

    /// Appends text to the CDR file the way Asterisk does: open, append, close.
    pub fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cdr)
            .expect("open CDR file");
        f.write_all(text.as_bytes()).expect("append");
    }

    /// Runs a pbxlink subcommand with this world's config; returns (exit ok, stdout).
    pub fn pbxlink(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run pbxlink");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The store the daemon writes (`[store] path`), opened through the library's Store API
    /// in this process: SQLite in WAL mode lets it read while the daemon writes, and reading
    /// it costs a query instead of a `pbxlink status` subprocess every 50 ms.
    pub fn store(&self) -> &Store {
        self.store.get_or_init(|| {
            let path = &self.store_path;
            Store::open(path, Synchronous::Normal)
                .unwrap_or_else(|e| panic!("open the store {}: {e}", path.display()))
        })
    }

    /// What `pbxlink status --json` shows of the store (the same `StatusReport`, as JSON).
    pub fn status(&self) -> Value {
        let report = self.store().status().expect("read the store's status");
        serde_json::to_value(&report).expect("status as JSON")
    }

    /// A counter from `status`.
    pub fn counter(&self, name: &str) -> i64 {
        self.status()["counters"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c[0] == name).and_then(|c| c[1].as_i64()))
            .unwrap_or(0)
    }

    /// Polls `cond` every 50 ms until it holds; on timeout the panic shows the outbox
    /// status and what the stand-in received, so a failure explains itself.
    pub async fn wait_for(&self, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            if Instant::now() >= deadline {
                let received: Vec<(u16, Option<String>)> = self
                    .standin
                    .received()
                    .into_iter()
                    .map(|r| (r.status, r.problem))
                    .collect();
                panic!(
                    "timed out after {limit:?} waiting for {what}\nstatus: {}\nstand-in saw {} request(s): {:?}",
                    self.status(),
                    received.len(),
                    &received[received.len().saturating_sub(10)..]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Accepted call logs counted by CallSessionId.
    pub fn accepted_by_id(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for body in self.standin.accepted_call_logs() {
            let id = body["CallSessionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }
}

/// A running `pbxlink run`; killed (SIGKILL) on drop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit. A daemon still starting (on a loaded machine the
    /// binary may not have reached its signal handler yet) is given up to 30 s to say it
    /// started first, so the signal tests its shutdown, not the race with its start.
    pub fn stop(mut self) {
        let starting = Instant::now() + Duration::from_secs(30);
        while Instant::now() < starting
            && !self.log_contains("pbxlink started")
            && matches!(self.child.try_wait(), Ok(None))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "daemon exited with {status}: {}",
                    self.log_tail()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not stop on SIGTERM: {}", self.log_tail());
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One inbound call from a lead over a PJSIP trunk, answered by agent 100: one CDR row
/// (cdr_csv, 18 columns). `n` makes the channels and the uniqueid unique.
pub fn inbound_call(n: u32) -> String {
    let start = call_start();
    let t = |s: i64| {
        (start + chrono::Duration::seconds(s))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    format!(
        r#""","+9196117{n:05}","918044556677","from-trunk","""Lead {n}"" <+9196117{n:05}>","PJSIP/airtel-{n:08x}","PJSIP/100-{m:08x}","Dial","PJSIP/100,30","{s}","{a}","{e}",60,55,"ANSWERED","DOCUMENTATION","1700000000.{n}",""
"#,
        m = n + 0x100000,
        s = t(0),
        a = t(5),
        e = t(60),
    )
}

/// The CallSessionId of `inbound_call(n)`.
pub fn call_id(n: u32) -> String {
    format!("1700000000.{n}")
}

/// When every `inbound_call` starts: two minutes before the test process first asked, the
/// same for all calls, so a test knows the times the CRM must get.
pub fn call_start() -> chrono::DateTime<chrono::Utc> {
    static START: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = chrono::Utc::now() - chrono::Duration::seconds(120);
        // Whole seconds: the CDR file has no fractions.
        now - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&now)))
    })
}

/// The whole Call Log body the CRM must get for `inbound_call(n)` with [`World`]'s config:
/// every field, nothing else.
pub fn expected_call_log(n: u32) -> Value {
    let t = |s: i64| {
        (call_start() + chrono::Duration::seconds(s))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    serde_json::json!({
        "SourceNumber": format!("+9196117{n:05}"),
        "DestinationNumber": "+919876500100",
        "DisplayNumber": "+918044556677",
        "StartTime": t(0),
        "EndTime": t(60),
        "CallDuration": 55,
        "Status": "Answered",
        "Direction": "Inbound",
        "CallSessionId": call_id(n),
        "CallerName": format!("Lead {n}"),
        "Tag": "sales",
    })
}

impl World {
    /// Asserts that the CRM accepted exactly the calls `ns`, each once, each with every
    /// field [`expected_call_log`] names (`allow_twice`: calls that may have been posted
    /// twice, e.g. the one request in flight at a kill -9; both copies are checked).
    pub fn assert_delivered_exactly(&self, ns: impl IntoIterator<Item = u32>, allow_twice: usize) {
        let expected: std::collections::BTreeMap<String, Value> = ns
            .into_iter()
            .map(|n| (call_id(n), expected_call_log(n)))
            .collect();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for body in self.standin.accepted_call_logs() {
            let id = body["CallSessionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let want = expected
                .get(&id)
                .unwrap_or_else(|| panic!("the CRM got a call it should not have: {body}"));
            assert_eq!(&body, want, "call {id} reached the CRM wrong");
            *seen.entry(id).or_insert(0) += 1;
        }
        let missing: Vec<&String> = expected
            .keys()
            .filter(|id| !seen.contains_key(*id))
            .collect();
        assert!(missing.is_empty(), "never delivered: {missing:?}");
        let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.len() <= allow_twice && twice.iter().all(|(_, c)| **c == 2),
            "posted more than once (at most {allow_twice} call(s), twice, allowed): {twice:?}"
        );
    }

    /// How many Call Log requests for `inbound_call(n)` the CRM saw, whatever it answered.
    pub fn requests_for(&self, n: u32) -> usize {
        let id = call_id(n);
        self.standin
            .received()
            .iter()
            .filter(|r| r.endpoint == "call_log" && r.body["CallSessionId"] == id.as_str())
            .count()
    }
}

/// Path helper for tests that need another file next to the CDR file.
pub fn sibling(path: &Path, name: &str) -> PathBuf {
    path.with_file_name(name)
}

impl World {
    /// Starts `pbxlink run` with extra environment variables (NOTIFY_SOCKET, WATCHDOG_USEC).
    pub fn start_daemon_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        let log = self.dir.path().join("daemon-env.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn pbxlink");
        Daemon { child, log }
    }
}

impl Daemon {
    /// Sends a signal by name (`HUP`, `TERM`) to the daemon.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the daemon's log has a line containing `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(text)
    }

    /// How many log lines contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

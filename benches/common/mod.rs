//! What the benches `pipeline` and `live` share: the LeadSquared stand-in and config
//! parsing, the release daemon as a subprocess, sample statistics, /proc readings and the
//! summary printed at the end.
//!
//! Included with `mod common;`; cargo does not build `benches/common/mod.rs` as a bench.

// Each bench uses a subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbxlink::config::Config;
use pbxlink::crm::leadsquared::standin::{Expectations, StandIn};

pub const URL_KEY: &str = "bench-connector-key";

pub fn parse_config(text: &str) -> Config {
    let config = Config::parse(text).expect("bench config parses");
    let problems = config.problems();
    assert!(problems.is_empty(), "bench config invalid: {problems:?}");
    config
}

pub async fn standin() -> StandIn {
    StandIn::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Expectations {
            url_key: URL_KEY.into(),
            access_keys: Some(("ak".into(), "sk".into())),
            reject_call_ids: vec![],
        },
    )
    .await
    .expect("start the LeadSquared stand-in")
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn min_median(samples: &[f64]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2])
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Where a process's resident memory is: the totals of /proc/PID/status and, from
/// /proc/PID/smaps, the resident KiB of each mapping, grouped by what backs it (the file's
/// name, or `[heap]`, `[stack]`, `[anon]` for the rest).
#[derive(Debug, Default, Clone)]
pub struct MemMap {
    /// VmRSS, RssAnon, RssFile (KiB).
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    /// Resident KiB per backing, largest first.
    pub by_backing: Vec<(String, u64)>,
}

impl MemMap {
    /// The process's mappings now; None when it is gone.
    pub fn read(pid: u32) -> Option<MemMap> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
        let mut by: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        let mut current = String::new();
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                // A mapping's header: range perms offset dev inode [path].
                let perms = words.next().unwrap_or("");
                let path = words.nth(3).unwrap_or("");
                let name = match path {
                    "" => "[anon]".to_owned(),
                    p if p.starts_with('[') => p.to_owned(),
                    p => Path::new(p)
                        .file_name()
                        .map_or(p.to_owned(), |n| n.to_string_lossy().into_owned()),
                };
                current = format!("{name} {perms}");
            } else if first == "Rss:" {
                let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                *by.entry(current.clone()).or_default() += kib;
            }
        }
        let mut by_backing: Vec<(String, u64)> = by.into_iter().filter(|(_, k)| *k > 0).collect();
        by_backing.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        Some(MemMap {
            rss: field("VmRSS:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
            by_backing,
        })
    }

    /// One line: the totals, then the `top` largest backings.
    pub fn line(&self, top: usize) -> String {
        let parts: Vec<String> = self
            .by_backing
            .iter()
            .take(top)
            .map(|(name, kib)| format!("{name} {:.1}", mib(*kib)))
            .collect();
        format!(
            "Rss {:.1} MiB = anon {:.1} + file {:.1}; by mapping (MiB): {}",
            mib(self.rss),
            mib(self.anon),
            mib(self.file),
            parts.join(", ")
        )
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// On-CPU time of the calling thread (first field of /proc/thread-self/schedstat, ns).
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// The final summary, filled in as the figures come.
#[derive(Default)]
pub struct Summary(pub Vec<String>);

impl Summary {
    pub fn add(&mut self, line: String) {
        println!("  => {line}");
        self.0.push(line);
    }
}

/// The release daemon binary as a subprocess; SIGKILLed on drop if still running. Each
/// bench adds its own wait-until-ready.
pub struct DaemonProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl DaemonProcess {
    pub fn spawn(config_path: &Path, dir: &Path) -> DaemonProcess {
        Self::spawn_bin(Path::new(env!("CARGO_BIN_EXE_pbxlink")), config_path, dir)
    }

    /// [`DaemonProcess::spawn`] of another build of pbxlink (to compare with an older one).
    pub fn spawn_bin(bin: &Path, config_path: &Path, dir: &Path) -> DaemonProcess {
        let log = dir.join("daemon.log");
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the daemon log"))
            .spawn()
            .expect("spawn the pbxlink binary");
        DaemonProcess { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(25);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("daemon did not stop on SIGTERM; killing it");
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the daemon binds it right after).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The bench's command line: `cargo bench` passes `--bench`; other arguments select
/// sections by substring (none: every section).
pub struct Sections(Vec<String>);

impl Sections {
    pub fn from_args() -> Sections {
        Sections(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with("--"))
                .collect(),
        )
    }

    pub fn want(&self, section: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|f| section.contains(f.as_str()))
    }
}

/// A multi-threaded Tokio runtime with I/O and time.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl Summary {
    /// Prints the closing `==== SUMMARY ... ====` block.
    pub fn print(&self, bench: &str, started: Instant) {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "\n==== SUMMARY ({bench}, {cpus} CPUs, {:.0} s) ====",
            started.elapsed().as_secs_f64()
        );
        for line in &self.0 {
            println!("- {line}");
        }
    }
}

//! The real-Asterisk rig (`tests/asterisk/rig.sh`, see its README) as the test binaries
//! `tests/ami.rs`, `tests/asterisk_live.rs` and `tests/asterisk_e2e.rs` drive it: the root
//! check with its loud SKIPPED banner, running `rig.sh`, the exclusive lock on
//! [`LOCK`] (one Asterisk for all of them) and a guard that stops Asterisk on drop.
//!
//! Included with `mod rig;`; cargo does not build `tests/rig/mod.rs` as a test of its own.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../rigkit/mod.rs"]
mod rigkit;
// Each test binary uses a subset of these.
#[allow(unused_imports)]
pub use rigkit::{RigGuard, RigLock, is_root, rig, rig_ok, rig_required, tail_of};

/// Held (flock, exclusive) by a test for its whole use of the rig.
pub const LOCK: &str = "/var/tmp/pbxlink-asterisk.lock";

/// True as root. Otherwise prints a loud SKIPPED banner naming `test_file` (e.g.
/// `tests/ami.rs`) and what was not tested, and returns false: the caller returns.
///
/// With `PBXLINK_REQUIRE_RIG=1` it never returns false: not being root panics with the
/// reason, and so does a rig that `.ci/run` should have installed but is missing (no
/// Asterisk binary in [`rig_root`]); the tests would otherwise build it themselves.
pub fn root_or_skip(test_file: &str, untested: &str) -> bool {
    let required = rig_required();
    if is_root() {
        let asterisk = rig_root().join("usr/sbin/asterisk");
        if required && !asterisk.exists() {
            panic!(
                "PBXLINK_REQUIRE_RIG=1 but the rig is missing ({} does not exist): \
                 .ci/run's rig step (tests/asterisk/rig.sh install) did not install it; \
                 {untested} NOT tested against a real Asterisk",
                asterisk.display()
            );
        }
        return true;
    }
    if required {
        panic!(
            "PBXLINK_REQUIRE_RIG=1 but {test_file} is not running as root (the rig is a \
             chroot): {untested} NOT tested against a real Asterisk"
        );
    }
    rigkit::skipped(
        test_file,
        "not root (the rig is a chroot)",
        untested,
        "Asterisk",
    )
}

/// The rig's chroot (rig.sh: `PBXLINK_ASTERISK_ROOT`).
pub fn rig_root() -> PathBuf {
    PathBuf::from(
        std::env::var("PBXLINK_ASTERISK_ROOT")
            .unwrap_or_else(|_| "/var/tmp/pbxlink-asterisk-root".into()),
    )
}

/// The columns of cdr-custom's Master.csv as the rig configures it (cdr_custom.conf).
pub const CUSTOM_COLUMNS: [&str; 22] = [
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
    "linkedid",
    "sequence",
    "peeraccount",
    "recordingfile",
];

/// The PBX's time zone (rig.sh: `PBXLINK_ASTERISK_TZ`, default Asia/Kolkata): cdr-custom
/// is written in it, cdr-csv in UTC.
pub fn rig_tz() -> String {
    std::env::var("PBXLINK_ASTERISK_TZ").unwrap_or_else(|_| "Asia/Kolkata".into())
}

/// (active channels, calls processed) from `core show channels count`. Asterisk writes the
/// singular for one ("1 active channel", "1 call processed"), so the words are matched
/// without their plural `s`.
pub fn channel_counts() -> (u64, u64) {
    let out = rig_ok(&["rx", "core show channels count"]);
    let find = |what: &str| {
        out.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {what:?} in `core show channels count`: {out}"))
    };
    (find("active channel"), find(" processed"))
}

pub fn rig_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asterisk/rig.sh")
}

/// The log rig.sh failures show: Asterisk's console log (for the rig kit).
const PBX_LOG: &str = "rig-console.log";

fn pbx_log() -> PathBuf {
    rig_root().join("var/log/asterisk/rig-console.log")
}

impl RigLock {
    /// Takes the exclusive lock on [`LOCK`] (waiting for the test holding it), then waits
    /// until no process whose command line matches `busy` (a `pgrep -f` pattern: the rig
    /// tests that do not take the lock) runs. `tag` prefixes the progress messages.
    pub fn acquire(tag: &str, busy: &str) -> RigLock {
        let lock = RigLock::lock(tag);
        let started = Instant::now();
        while others_running(busy) {
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "rig busy: a process matching {busy:?} has been running for 30 minutes"
            );
            eprintln!("[{tag}] a test matching {busy:?} is using the rig; waiting");
            std::thread::sleep(Duration::from_secs(5));
        }
        lock
    }
}

/// Whether a process matching the `pgrep -f` pattern `busy` runs, other than this process
/// and its ancestors (the `cargo test --test ami --test asterisk_e2e ...` that started this
/// test matches the pattern itself).
fn others_running(busy: &str) -> bool {
    let Ok(out) = Command::new("pgrep").args(["-f", busy]).output() else {
        return false;
    };
    let mine = ancestors();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .any(|pid| !mine.contains(&pid))
}

/// This process and its ancestors, from /proc/PID/stat.
fn ancestors() -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    while let Some(&pid) = pids.last() {
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        match parent {
            Some(ppid) if ppid > 1 && !pids.contains(&ppid) => pids.push(ppid),
            _ => break,
        }
    }
    pids
}

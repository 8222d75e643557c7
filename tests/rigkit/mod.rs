//! What the real-PBX rigs share, whichever PBX: the root check, `PBXLINK_REQUIRE_RIG`,
//! running a rig script (and panicking with its output and the tail of the PBX's log when it
//! fails), stopping the PBX from a drop guard, and the exclusive flock that makes the tests
//! using one rig wait for each other.
//!
//! Included by `tests/rig/mod.rs` (Asterisk) and `tests/fsrig/mod.rs` (FreeSWITCH) with
//! `#[path = "../rigkit/mod.rs"] mod rigkit;` and re-exported there. The including module
//! names its rig: `rig_script()` (its rig.sh), `LOCK` (its lock file), `pbx_log()` and
//! `PBX_LOG` (the PBX log shown when rig.sh fails, and its name). Cargo does not build this
//! file as a test of its own.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Whether CI demands the rig (`PBXLINK_REQUIRE_RIG=1`, set by `.ci/run`): then a test that
/// would skip fails instead, so a green run means the real-PBX tests ran.
pub fn rig_required() -> bool {
    std::env::var("PBXLINK_REQUIRE_RIG").is_ok_and(|v| v == "1")
}

/// Prints the loud SKIPPED banner for `test_file` (e.g. `tests/ami.rs`), which cannot use
/// the rig for the reason `why`, naming what is `untested` against the real `pbx`; returns
/// false, for the caller's `root_or_skip` to return.
pub fn skipped(test_file: &str, why: &str, untested: &str, pbx: &str) -> bool {
    let name = Path::new(test_file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(test_file);
    let bar = "*".repeat(72);
    eprintln!(
        "\n{bar}\n\
         *** SKIPPED {test_file}: {why}.\n\
         *** {untested} NOT tested against a real {pbx}.\n\
         *** Run as root: sudo .ci/run, or cargo test --test {name} -- --nocapture\n\
         *** (PBXLINK_REQUIRE_RIG=1 turns this skip into a failure.)\n\
         {bar}\n"
    );
    false
}

/// Runs rig.sh with `args`; panics only if it cannot be run.
pub fn rig(args: &[&str]) -> Output {
    run(&super::rig_script(), args, &[])
}

/// Runs rig.sh; any failure panics with its output and the tail of the PBX's log.
pub fn rig_ok(args: &[&str]) -> String {
    rig_ok_with(args, &[])
}

/// [`rig_ok`] with extra environment for rig.sh (e.g. `PBXLINK_FREESWITCH_SQL=1`).
pub fn rig_ok_with(args: &[&str], env: &[(&str, &str)]) -> String {
    run_ok(
        &super::rig_script(),
        args,
        env,
        super::PBX_LOG,
        &super::pbx_log(),
    )
}

/// Stops the PBX (`rig.sh stop`) when dropped, also when the test panics; a failure to stop
/// is printed, never a panic.
pub struct RigGuard;

impl Drop for RigGuard {
    fn drop(&mut self) {
        let out = rig(&["stop"]);
        if !out.status.success() {
            eprintln!(
                "rig.sh stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The exclusive flock on the rig's `LOCK`; released when dropped (the file is closed).
/// Each rig adds its own `acquire`.
pub struct RigLock {
    _file: File,
}

impl RigLock {
    /// Opens (creating it) the rig's lock file and takes its exclusive flock, waiting for
    /// the test that holds it. `tag` prefixes the progress message.
    // std `File::lock` is 1.89, newer than the crate's MSRV; these tests already needed it
    // (clippy only skipped the check while the call sat inside a `#[test]` fn).
    #[allow(clippy::incompatible_msrv)]
    pub fn lock(tag: &str) -> RigLock {
        let path = super::LOCK;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        eprintln!("[{tag}] waiting for the exclusive lock on {path}");
        file.lock().unwrap_or_else(|e| panic!("lock {path}: {e}"));
        RigLock { _file: file }
    }
}

/// Runs `script` with `args` and the extra environment `env`; panics only if it cannot be run.
fn run(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(script)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running rig.sh {args:?}: {e}"))
}

/// Runs `script` like [`run`] and returns its stdout; a failure panics with its output and
/// the last 40 lines of the PBX's log `pbx_log` (named `log_name` in the message).
fn run_ok(
    script: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log_name: &str,
    pbx_log: &Path,
) -> String {
    let out = run(script, args, env);
    if !out.status.success() {
        panic!(
            "rig.sh {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- {log_name}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail_of(pbx_log, 40)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last `lines` lines of a file, or why it could not be read.
pub fn tail_of(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let all: Vec<&str> = s.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

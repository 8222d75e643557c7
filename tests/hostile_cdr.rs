//! A CDR path that points where it should not, and CDR lines that lie, against the real
//! daemon binary: a symbolic link to a file of secrets is refused (and none of it reaches the
//! log) unless `cdr_follow_symlink = true`; a FIFO neither blocks the daemon nor its SIGTERM;
//! corrupt lines are logged escaped and bounded; lines dated 0000 or 9999 are corrupt, not
//! calls; and a first start passes over the calls a file already holds (`start_at`).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{World, call_id, inbound_call};

const LIMIT: Duration = Duration::from_secs(60);

/// What a fake /etc/shadow and a pbxlink config with keys would hold.
const SECRETS: &str = "root:$6$FAKESHADOWHASH$abcdef:19000:0:99999:7:::\n\
                       secret_key = \"FAKECRMSECRETKEY\"\n\
                       token = \"FAKEHTTPTOKEN\"\n";

fn set_asterisk_key(w: &World, line: &str) {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let text = text.replace("[asterisk]\n", &format!("[asterisk]\n{line}\n"));
    std::fs::write(&w.config, text).expect("config");
}

/// The World's config with `start_at` removed: what a user's config says.
fn default_start_at(w: &World) {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let text = text.replace("start_at = \"beginning\"\n", "");
    assert!(!text.contains("start_at"));
    std::fs::write(&w.config, text).expect("config");
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok, "mkfifo failed");
}

fn log_text(log: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned()
}

/// SIGTERM, a clean exit, and the path of the daemon's log.
fn stop(daemon: common::Daemon) -> std::path::PathBuf {
    let log = daemon.log.clone();
    daemon.stop();
    log
}

/// One answered inbound call like `inbound_call(n)`, with all its times in `year`.
fn call_in_year(n: u32, year: &str) -> String {
    let line = inbound_call(n);
    let this_year = chrono::Utc::now().format("%Y-").to_string();
    // The call started 2 minutes ago; around New Year some times may be in the last year.
    let last_year = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-")
        .to_string();
    line.replace(&format!("\"{this_year}"), &format!("\"{year}-"))
        .replace(&format!("\"{last_year}"), &format!("\"{year}-"))
}

/// Runs `pbxlink import --config CONFIG FILE` and gives up after `limit`; returns
/// (exit ok, stdout + stderr) or None if it was still running.
fn import_with_timeout(w: &World, file: &Path, limit: Duration) -> Option<(bool, String)> {
    let out_path = w.dir.path().join("import.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["import", "--config"])
        .arg(&w.config)
        .arg(file)
        .stdout(std::fs::File::create(&out_path).expect("out"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pbxlink import");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut text);
            }
            return Some((status.success(), text));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Collects notify datagrams until one satisfies `done` or `limit` passes.
fn wait_notify(socket: &UnixDatagram, limit: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 4096];
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = done(&m);
            seen.push(m);
            if hit {
                return seen;
            }
        }
    }
    panic!("no matching notify message within {limit:?}: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_to_a_file_of_secrets_is_refused_and_none_of_it_is_logged() {
    let w = World::new(vec![]).await;
    let secrets = w.dir.path().join("shadow");
    std::fs::write(&secrets, SECRETS.repeat(20)).expect("secrets");
    std::os::unix::fs::symlink(&secrets, &w.cdr).expect("symlink");
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "the link refused in the log", || {
        daemon.log_contains("is a symbolic link")
    })
    .await;
    // A few more polls: the refusal is logged once, not at every poll.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let log_path = stop(daemon);
    let log = log_text(&log_path);
    for secret in [
        "FAKESHADOWHASH",
        "FAKECRMSECRETKEY",
        "FAKEHTTPTOKEN",
        "root:",
    ] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
    assert!(log.contains("cdr_follow_symlink = true"), "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("reading CDR file failed"))
            .count(),
        1,
        "the same error is logged once:\n{log}"
    );
    assert_eq!(w.counter("cdr_parse_errors"), 0);
    assert!(w.counter("cdr_read_errors") >= 2);
    assert_eq!(w.status()["pending"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdr_follow_symlink_true_follows_the_link() {
    let w = World::new(vec![]).await;
    set_asterisk_key(&w, "cdr_follow_symlink = true");
    let real = w.dir.path().join("real-Master.csv");
    std::fs::write(&real, inbound_call(1)).expect("cdr");
    std::os::unix::fs::symlink(&real, &w.cdr).expect("symlink");
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "the call behind the link delivered", || {
        w.accepted_by_id().contains_key(&call_id(1))
    })
    .await;
    stop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_at_the_path_blocks_neither_the_status_nor_sigterm() {
    let w = World::new(vec![]).await;
    mkfifo(&w.cdr);
    let sock_path = w.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).expect("bind the fake NOTIFY_SOCKET");
    let notify = sock_path.to_str().expect("utf-8 path");
    let daemon =
        w.start_daemon_with_env(&[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "2000000")]);
    let seen = wait_notify(&socket, Duration::from_secs(20), |m| m.contains("READY=1"));
    let ready = seen.last().expect("READY");
    assert!(
        ready.contains("is not a regular file (a FIFO (named pipe))"),
        "the status names the problem: {ready}"
    );
    // The watchdog keeps being fed: the reader thread is not stuck in open(2).
    wait_notify(&socket, Duration::from_secs(10), |m| {
        m.contains("WATCHDOG=1")
    });
    wait_notify(&socket, Duration::from_secs(10), |m| {
        m.contains("WATCHDOG=1")
    });
    let started = Instant::now();
    daemon.signal("TERM");
    let mut child = daemon;
    let status = loop {
        if let Ok(Some(status)) = child.child.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGTERM ignored for 10 s: {}",
            child.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    eprintln!("SIGTERM to exit with a FIFO at the CDR path: {took:?}");
    assert!(status.success(), "{status}: {}", child.log_tail());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        child.log_contains("not a regular file"),
        "{}",
        child.log_tail()
    );
}

#[test]
fn pbxlink_import_of_a_fifo_or_a_symlink_fails_at_once() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let w = rt.block_on(World::new(vec![]));
    let fifo = w.dir.path().join("old.fifo");
    mkfifo(&fifo);
    let (ok, out) = import_with_timeout(&w, &fifo, Duration::from_secs(10))
        .expect("pbxlink import of a FIFO hung");
    assert!(!ok, "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    let secrets = w.dir.path().join("shadow");
    std::fs::write(&secrets, SECRETS).expect("secrets");
    let link = w.dir.path().join("old.csv");
    std::os::unix::fs::symlink(&secrets, &link).expect("symlink");
    let (ok, out) = import_with_timeout(&w, &link, Duration::from_secs(10)).expect("no hang");
    assert!(!ok, "{out}");
    assert!(out.contains("is a symbolic link"), "{out}");
    assert!(!out.contains("FAKESHADOWHASH"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_lines_are_logged_escaped_bounded_and_with_their_offset() {
    let w = World::new(vec![]).await;
    // No colours of the log formatter's own: any ESC in the log then came from the line.
    let daemon = w.start_daemon_with_env(&[("NO_COLOR", "1")]);
    w.append(&inbound_call(1));
    let before = std::fs::metadata(&w.cdr).expect("cdr").len();
    // ESC and CR inside a line, an LF inside a quoted field (two broken lines), and a long
    // line whose end must not be shown.
    w.append("\"\x1b[2J\x1b[31mFORGED\rINFO fake entry\",\"x\"\n");
    w.append("\"half of a field\nTHE OTHER HALF\",\"x\"\n");
    w.append(&format!("{}TAILMARKER\n", "Z".repeat(200)));
    w.append(&inbound_call(2));
    w.wait_for(LIMIT, "both good calls delivered", || {
        w.accepted_by_id().len() == 2
    })
    .await;
    let log_path = stop(daemon);
    assert_eq!(w.counter("cdr_parse_errors"), 4);
    let raw = std::fs::read(&log_path).expect("log");
    assert!(!raw.contains(&0x1b), "a raw ESC reached the log");
    assert!(!raw.contains(&b'\r'), "a raw CR reached the log");
    let log = String::from_utf8_lossy(&raw);
    let corrupt: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("corrupt CDR line skipped"))
        .collect();
    assert_eq!(corrupt.len(), 4, "{log}");
    assert!(
        corrupt[0].contains("\\x1b[2J\\x1b[31mFORGED\\rINFO fake entry"),
        "{}",
        corrupt[0]
    );
    assert!(
        corrupt[0].contains(&format!("offset={before}")),
        "{}",
        corrupt[0]
    );
    assert!(
        !log.lines().any(|l| l.starts_with("INFO fake entry")),
        "{log}"
    );
    assert!(
        !log.contains("TAILMARKER"),
        "more than 64 bytes of a line logged:\n{log}"
    );
    assert!(
        corrupt[3].contains(&format!("{}…(210 bytes)", "Z".repeat(64))),
        "{}",
        corrupt[3]
    );
    for line in &corrupt {
        assert!(line.len() < 400, "{} bytes: {line}", line.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_dated_0000_or_9999_are_counted_corrupt_not_posted() {
    let w = World::new(vec![]).await;
    let daemon = w.start_daemon();
    w.append(&call_in_year(1, "0000"));
    w.append(&call_in_year(2, "9999"));
    w.append(&call_in_year(3, "1999"));
    w.append(&inbound_call(4));
    w.wait_for(LIMIT, "the good call delivered", || {
        w.accepted_by_id().contains_key(&call_id(4))
    })
    .await;
    w.wait_for(LIMIT, "three corrupt lines counted", || {
        w.counter("cdr_parse_errors") == 3
    })
    .await;
    // Give a wrongly accepted call the time to be posted.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log_path = stop(daemon);
    let accepted = w.accepted_by_id();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(w.status()["pending"], 0);
    let log = log_text(&log_path);
    assert!(log.contains("outside 2000-01-01 to"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_start_passes_over_an_existing_file_and_says_how_to_import_it() {
    let w = World::new(vec![]).await;
    default_start_at(&w);
    for n in 1..=3 {
        w.append(&inbound_call(n));
    }
    let size = std::fs::metadata(&w.cdr).expect("cdr").len();
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "the skip logged", || {
        daemon.log_contains("first start")
    })
    .await;
    w.append(&inbound_call(4));
    w.wait_for(LIMIT, "the new call delivered", || {
        w.accepted_by_id().contains_key(&call_id(4))
    })
    .await;
    // A rotation: the new file is read from its first byte.
    std::fs::rename(&w.cdr, common::sibling(&w.cdr, "Master.csv.1")).expect("rotate");
    w.append(&inbound_call(5));
    w.wait_for(LIMIT, "the rotated file's call delivered", || {
        w.accepted_by_id().contains_key(&call_id(5))
    })
    .await;
    let log_path = stop(daemon);
    assert_eq!(w.accepted_by_id().len(), 2, "{:?}", w.accepted_by_id());
    let config = std::path::absolute(&w.config).expect("absolute");
    let cdr = std::path::absolute(&w.cdr).expect("absolute");
    let command = format!(
        "pbxlink import --config {} {}",
        config.display(),
        cdr.display()
    );
    let log = log_text(&log_path);
    let skip: Vec<&str> = log.lines().filter(|l| l.contains("first start")).collect();
    assert_eq!(skip.len(), 1, "logged once:\n{log}");
    assert!(skip[0].contains(&command), "{}", skip[0]);
    assert!(
        skip[0].contains(&format!("{size} bytes (3 lines)")),
        "{}",
        skip[0]
    );

    // A restart resumes from the saved position: no second skip, nothing posted again.
    w.append(&inbound_call(6));
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "the call after the restart delivered", || {
        w.accepted_by_id().contains_key(&call_id(6))
    })
    .await;
    let log_path = stop(daemon);
    assert!(!log_text(&log_path).contains("first start"));

    // The command the log gave posts the history; what was already posted is not again.
    let old = common::sibling(&w.cdr, "Master.csv.1");
    let (ok, out) = import_with_timeout(&w, &old, LIMIT).expect("import finished");
    assert!(ok, "{out}");
    assert!(out.contains("3 new call(s) queued"), "{out}");
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "the imported history delivered", || {
        w.accepted_by_id().len() == 6
    })
    .await;
    stop(daemon);
    assert!(
        w.accepted_by_id().values().all(|&n| n == 1),
        "{:?}",
        w.accepted_by_id()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_at_end_reads_a_file_that_appears_after_the_start_whole() {
    let w = World::new(vec![]).await;
    default_start_at(&w);
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "the daemon tailing", || {
        daemon.log_contains("tailing CDR file")
    })
    .await;
    w.append(&format!("{}{}", inbound_call(1), inbound_call(2)));
    w.wait_for(LIMIT, "both calls delivered", || {
        w.accepted_by_id().len() == 2
    })
    .await;
    let log_path = stop(daemon);
    assert!(!log_text(&log_path).contains("first start"));
}

#[tokio::test(flavor = "multi_thread")]
async fn start_at_beginning_posts_what_the_file_holds() {
    let w = World::new(vec![]).await;
    let text = std::fs::read_to_string(&w.config).expect("config");
    assert!(text.contains("start_at = \"beginning\""));
    for n in 1..=3 {
        w.append(&inbound_call(n));
    }
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "all three delivered", || {
        w.accepted_by_id().len() == 3
    })
    .await;
    let log_path = stop(daemon);
    assert!(!log_text(&log_path).contains("first start"));
}

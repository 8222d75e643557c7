//! `pbxlink run` as a systemd service, without systemd: the notify protocol through a fake
//! `NOTIFY_SOCKET` (READY, WATCHDOG, STATUS, STOPPING in order) and SIGHUP reloading the
//! configuration of the running daemon.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{World, call_id, inbound_call};

const LIMIT: Duration = Duration::from_secs(60);

/// Reads every datagram that arrives until `done` says so or `limit` passes; records when
/// each arrived.
fn collect(
    socket: &UnixDatagram,
    messages: &mut Vec<String>,
    arrived: &mut Vec<Instant>,
    limit: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 4096];
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while !done(messages) {
        assert!(
            Instant::now() < deadline,
            "timed out; notify messages so far: {messages:#?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            arrived.push(Instant::now());
        }
    }
}

/// Every datagram still queued on the socket (the daemon has exited: nothing more comes).
fn drain(socket: &UnixDatagram, messages: &mut Vec<String>) {
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

fn position(messages: &[String], needle: &str) -> Option<usize> {
    messages
        .iter()
        .position(|m| m.lines().any(|l| l == needle || l.starts_with(needle)))
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_protocol_ready_watchdog_status_stopping_in_order() {
    let w = World::new(vec![]).await;
    let path = w.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the fake NOTIFY_SOCKET");
    let notify = path.to_str().expect("utf-8 path");
    // WatchdogSec=1: the daemon must ping every half second.
    let daemon =
        w.start_daemon_with_env(&[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "1000000")]);
    let mut messages = Vec::new();
    let mut arrived = Vec::new();
    collect(&socket, &mut messages, &mut arrived, LIMIT, |m| {
        m.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 5
    });
    // WatchdogSec=1 means a ping at least every second or systemd kills the service; the
    // daemon pings at half the interval. Gaps between consecutive pings:
    let pings: Vec<Instant> = messages
        .iter()
        .zip(&arrived)
        .filter(|(m, _)| m.contains("WATCHDOG=1"))
        .map(|(_, t)| *t)
        .collect();
    let gaps: Vec<Duration> = pings.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1000)),
        "a watchdog ping came later than WatchdogSec=1 allows: {gaps:?}"
    );
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        mean >= Duration::from_millis(250) && mean <= Duration::from_millis(750),
        "pings every {mean:?} on average, not every half WatchdogSec (500 ms): {gaps:?}"
    );
    // One delivered call shows up in STATUS=.
    w.append(&inbound_call(1));
    collect(&socket, &mut messages, &mut arrived, LIMIT, |m| {
        m.iter()
            .any(|m| m.contains("STATUS=outbox: 0 pending, 1 delivered, 0 dead"))
    });
    let started = Instant::now();
    daemon.signal("TERM");
    collect(&socket, &mut messages, &mut arrived, LIMIT, |m| {
        position(m, "STOPPING=1").is_some()
    });
    daemon.stop();
    // What the daemon sent between STOPPING and its exit.
    drain(&socket, &mut messages);
    assert!(started.elapsed() < Duration::from_secs(20));

    let ready = position(&messages, "READY=1").expect("READY=1");
    let watchdog = position(&messages, "WATCHDOG=1").expect("WATCHDOG=1");
    let status = position(&messages, "STATUS=outbox:").expect("STATUS=outbox: ...");
    let stopping = position(&messages, "STOPPING=1").expect("STOPPING=1");
    assert_eq!(ready, 0, "READY=1 must come first: {messages:#?}");
    assert!(
        ready < watchdog && watchdog < stopping && status < stopping,
        "{messages:#?}"
    );
    assert!(
        messages[ready].contains("STATUS=outbox:") && messages[ready].contains("CDR "),
        "READY carries the first STATUS (outbox and CDR file): {}",
        messages[ready]
    );
    assert!(
        messages[stopping + 1..]
            .iter()
            .all(|m| !m.contains("WATCHDOG=1")),
        "no watchdog ping after STOPPING: {messages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_notify_socket_nothing_is_sent_and_the_daemon_runs() {
    let w = World::new(vec![]).await;
    let daemon = w.start_daemon();
    w.append(&inbound_call(1));
    w.wait_for(LIMIT, "the call delivered", || {
        w.accepted_by_id().len() == 1
    })
    .await;
    daemon.stop();
}

fn agent_phone_of(w: &World, n: u32) -> Option<String> {
    w.standin
        .accepted_call_logs()
        .into_iter()
        .find(|b| b["CallSessionId"] == call_id(n).as_str())
        .map(|b| {
            b["DestinationNumber"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_agents_and_keeps_the_old_config_when_the_new_one_is_invalid() {
    let w = World::new(vec![]).await;
    let daemon = w.start_daemon();
    w.append(&inbound_call(1));
    w.wait_for(LIMIT, "call 1 delivered", || {
        agent_phone_of(&w, 1).is_some()
    })
    .await;
    assert_eq!(agent_phone_of(&w, 1).as_deref(), Some("+919876500100"));

    // Agent 100 gets a new phone; SIGHUP; the next call carries it.
    let original = std::fs::read_to_string(&w.config).expect("config");
    let changed = original.replace("+919876500100", "+919876500199");
    assert_ne!(original, changed);
    std::fs::write(&w.config, &changed).expect("write config");
    daemon.signal("HUP");
    w.wait_for(LIMIT, "the reload applied in the CDR reader", || {
        daemon.log_contains("agents and virtual numbers reloaded")
    })
    .await;
    w.append(&inbound_call(2));
    w.wait_for(LIMIT, "call 2 delivered", || {
        agent_phone_of(&w, 2).is_some()
    })
    .await;
    assert_eq!(
        agent_phone_of(&w, 2).as_deref(),
        Some("+919876500199"),
        "the call after SIGHUP must carry the new phone; log:\n{}",
        daemon.log_tail()
    );

    // An invalid file is refused and the running configuration stays.
    std::fs::write(
        &w.config,
        changed.replace(
            "default_country_code = \"91\"",
            "default_country_code = \"xx\"\nbogus_key = 1",
        ),
    )
    .expect("write config");
    daemon.signal("HUP");
    w.wait_for(LIMIT, "the reload refused", || {
        daemon.log_contains("configuration NOT reloaded")
    })
    .await;
    w.append(&inbound_call(3));
    w.wait_for(LIMIT, "call 3 delivered", || {
        agent_phone_of(&w, 3).is_some()
    })
    .await;
    assert_eq!(agent_phone_of(&w, 3).as_deref(), Some("+919876500199"));
    assert_eq!(daemon.log_count("agents and virtual numbers reloaded"), 1);

    // A path that cannot change live is reported as needing a restart.
    std::fs::write(
        &w.config,
        changed.replace("settle_ms = 300", "settle_ms = 400"),
    )
    .expect("write config");
    daemon.signal("HUP");
    w.wait_for(LIMIT, "restart needed reported", || {
        daemon.log_contains("restart needed")
    })
    .await;
    daemon.stop();
    let accepted = w.accepted_by_id();
    assert_eq!(accepted.len(), 3);
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
}

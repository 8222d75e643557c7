//! The AMI client against a REAL Asterisk 22 (`tests/asterisk/rig.sh`, see its README):
//! login, Ping, the QueueStatus event list, QueuePause seen in QueueStatus, an async
//! Originate and its OriginateResponse, the events of a real inbound call, and a restart of
//! Asterisk while connected (the client must log in again within 30 s).
//!
//! Needs root (the rig is a chroot). Without root it prints a loud SKIPPED message and
//! passes; as root it never skips. There is one Asterisk: the test holds an exclusive lock
//! on `/var/tmp/pbxlink-asterisk.lock` for its whole run and first waits until no
//! `asterisk_e2e` test process is running.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxlink::config::AmiSettings;
use pbxlink::pbx::asterisk::ami::{Action, AmiClient, ConnectionState, Message};
use tokio::sync::broadcast;

const LOCK: &str = "/var/tmp/pbxlink-asterisk.lock";
const T: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn rig_root() -> PathBuf {
    PathBuf::from(
        std::env::var("PBXLINK_ASTERISK_ROOT")
            .unwrap_or_else(|_| "/var/tmp/pbxlink-asterisk-root".into()),
    )
}

fn rig(args: &[&str]) -> Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asterisk/rig.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running rig.sh {args:?}: {e}"))
}

fn rig_ok(args: &[&str]) -> String {
    let out = rig(args);
    if !out.status.success() {
        let log = std::fs::read_to_string(rig_root().join("var/log/asterisk/rig-console.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "rig.sh {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- rig-console.log (end)\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops Asterisk when dropped, also when the test panics.
struct RigGuard;

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

/// Waits until no `asterisk_e2e` test process runs (it drives the same Asterisk).
fn wait_for_e2e_to_finish() {
    let started = Instant::now();
    loop {
        let busy = Command::new("pgrep")
            .args(["-f", "asterisk_e2e"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !busy {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "an asterisk_e2e process has been running for 30 minutes"
        );
        eprintln!("[ami] an asterisk_e2e test is using the rig; waiting");
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn settings() -> AmiSettings {
    AmiSettings {
        host: std::env::var("PBXLINK_AMI_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
        port: std::env::var("PBXLINK_AMI_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(5038),
        username: "pbxlink".into(),
        ..AmiSettings::default()
    }
}

#[test]
fn ami_client_against_real_asterisk() {
    if !is_root() {
        eprintln!(
            "\n************************************************************************\n\
             *** SKIPPED tests/ami.rs: not root. The AMI client was NOT tested     ***\n\
             *** against a real Asterisk. Run as root (sudo .ci/run) to test it.   ***\n\
             ************************************************************************\n"
        );
        return;
    }
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .unwrap_or_else(|e| panic!("open {LOCK}: {e}"));
    eprintln!("[ami] waiting for the exclusive lock on {LOCK}");
    lock.lock().unwrap_or_else(|e| panic!("lock {LOCK}: {e}"));
    wait_for_e2e_to_finish();
    eprintln!("[ami] rig.sh install / start");
    rig_ok(&["install"]);
    rig_ok(&["start"]);
    let _guard = RigGuard;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(scenario());
    drop(lock);
}

async fn wait_connected(client: &AmiClient, within: Duration) -> String {
    let mut state = client.state();
    let s = tokio::time::timeout(
        within,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not connected within {within:?}: {:?}",
            client.state().borrow()
        )
    })
    .expect("state");
    match &*s {
        ConnectionState::Connected { version, .. } => version.clone(),
        _ => unreachable!(),
    }
}

async fn queue_status(client: &AmiClient) -> (Message, Vec<Message>) {
    client
        .send_list(
            Action::new("QueueStatus")
                .header("Queue", "sales")
                .expect("header"),
            T,
        )
        .await
        .expect("QueueStatus")
}

fn member<'a>(items: &'a [Message], location: &str) -> &'a Message {
    items
        .iter()
        .find(|m| m.event() == Some("QueueMember") && m.get("Location") == Some(location))
        .unwrap_or_else(|| panic!("no QueueMember {location} in {items:#?}"))
}

async fn pause(client: &AmiClient, paused: bool) {
    let r = client
        .send(
            Action::new("QueuePause")
                .header("Queue", "sales")
                .and_then(|a| a.header("Interface", "Local/100@agents"))
                .and_then(|a| a.header("Paused", if paused { "true" } else { "false" }))
                .and_then(|a| a.header("Reason", "pbxlink test"))
                .expect("action"),
            T,
        )
        .await
        .expect("QueuePause");
    assert_eq!(r.response(), Some("Success"), "{r:?}");
}

/// Events until `done` says so or `within` passes.
async fn collect(
    rx: &mut broadcast::Receiver<Arc<Message>>,
    within: Duration,
    mut done: impl FnMut(&[Arc<Message>]) -> bool,
) -> Vec<Arc<Message>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(m)) => got.push(m),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("lagged {n} events"),
            Ok(Err(e)) => panic!("events: {e}"),
            Err(_) => break,
        }
    }
    got
}

async fn scenario() {
    let t0 = Instant::now();
    let client = AmiClient::spawn(settings(), "pbxlink-test-secret".into());
    let version = wait_connected(&client, Duration::from_secs(15)).await;
    eprintln!(
        "[ami] logged in, Asterisk Call Manager/{version}, in {:?}; server-side filter: {}",
        t0.elapsed(),
        client.stats().server_side_filter
    );
    let mut events = client.events();

    // Ping.
    let t = Instant::now();
    let pong = client.send(Action::new("Ping"), T).await.expect("Ping");
    eprintln!("[ami] Ping round trip {:?}", t.elapsed());
    assert_eq!(pong.response(), Some("Success"));
    assert_eq!(pong.get("Ping"), Some("Pong"));

    // QueueStatus: queue sales with its two members.
    let (resp, items) = queue_status(&client).await;
    assert_eq!(resp.get("EventList"), Some("start"), "{resp:?}");
    assert!(
        items
            .iter()
            .any(|m| m.event() == Some("QueueParams") && m.get("Queue") == Some("sales")),
        "{items:#?}"
    );
    for loc in ["Local/100@agents", "Local/101@agents"] {
        let m = member(&items, loc);
        assert_eq!(m.get("Queue"), Some("sales"));
        assert_eq!(m.get("Paused"), Some("0"), "{m:?}");
    }
    eprintln!("[ami] QueueStatus sales: {} list events", items.len());

    // QueuePause true / false, seen in QueueStatus and as QueueMemberPause events.
    pause(&client, true).await;
    let (_, items) = queue_status(&client).await;
    assert_eq!(member(&items, "Local/100@agents").get("Paused"), Some("1"));
    assert_eq!(member(&items, "Local/101@agents").get("Paused"), Some("0"));
    pause(&client, false).await;
    let (_, items) = queue_status(&client).await;
    assert_eq!(member(&items, "Local/100@agents").get("Paused"), Some("0"));
    let pauses = collect(&mut events, Duration::from_secs(5), |got| {
        got.iter()
            .filter(|m| m.event() == Some("QueueMemberPause"))
            .count()
            >= 2
    })
    .await;
    let pauses: Vec<_> = pauses
        .iter()
        .filter(|m| m.event() == Some("QueueMemberPause"))
        .map(|m| m.get("Paused").unwrap_or("?").to_owned())
        .collect();
    assert_eq!(pauses, ["1", "0"], "QueueMemberPause events");

    // Originate to an application: OriginateResponse Success.
    let t = Instant::now();
    let outcome = client
        .originate(
            Action::new("Originate")
                .header("Channel", "Local/100@agents")
                .and_then(|a| a.header("Application", "Wait"))
                .and_then(|a| a.header("Data", "1"))
                .and_then(|a| a.header("Timeout", "20000"))
                .expect("action"),
            Duration::from_secs(30),
        )
        .await
        .expect("Originate");
    eprintln!(
        "[ami] OriginateResponse after {:?}: {:?}",
        t.elapsed(),
        outcome.headers()
    );
    assert_eq!(outcome.event(), Some("OriginateResponse"));
    assert_eq!(outcome.get("Response"), Some("Success"), "{outcome:?}");
    assert!(outcome.get("Uniqueid").is_some_and(|u| !u.is_empty()));

    // A real inbound call: Newchannel, DialBegin, Hangup, all with its Linkedid.
    let mut events = client.events();
    let call =
        tokio::task::spawn_blocking(|| rig_ok(&["call-in", "918044556677", "+919611795983", "3"]));
    let got = collect(&mut events, Duration::from_secs(40), |got| {
        let Some(linked) = got
            .iter()
            .find(|m| m.event() == Some("Newchannel") && m.get("Exten") == Some("918044556677"))
            .and_then(|m| m.get("Linkedid").map(str::to_owned))
        else {
            return false;
        };
        let of = |name: &str| {
            got.iter()
                .filter(|m| m.event() == Some(name) && m.get("Linkedid") == Some(linked.as_str()))
                .count()
        };
        of("Newchannel") > 0 && of("Hangup") >= of("Newchannel") && of("DialBegin") > 0
    })
    .await;
    call.await.expect("call-in");
    let first = got
        .iter()
        .find(|m| m.event() == Some("Newchannel") && m.get("Exten") == Some("918044556677"))
        .unwrap_or_else(|| panic!("no Newchannel for the DID in {got:#?}"));
    let linked = first.get("Linkedid").expect("Linkedid").to_owned();
    let names: Vec<&str> = got
        .iter()
        .filter(|m| m.get("Linkedid") == Some(linked.as_str()))
        .filter_map(|m| m.event())
        .collect();
    eprintln!("[ami] call {linked}: {names:?}");
    for name in ["Newchannel", "DialBegin", "Hangup"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // The originated Local channel gets the lead's caller id after Newchannel; the
    // dialplan side and the agent's DialBegin carry it.
    assert!(
        got.iter()
            .filter(|m| m.get("Linkedid") == Some(linked.as_str()))
            .any(|m| m.get("CallerIDNum") == Some("+919611795983")),
        "the lead's caller id in no event of the call: {:#?}",
        got.iter()
            .map(|m| (m.event(), m.get("Channel"), m.get("CallerIDNum")))
            .collect::<Vec<_>>()
    );
    let st = client.stats();
    assert!(
        !st.events_by_type.contains_key("Cdr") || st.events_by_type.len() > 1,
        "{st:?}"
    );

    // Restart Asterisk while connected: the client logs in again within 30 s.
    let before = client.stats().logins;
    let mut state = client.state();
    tokio::task::spawn_blocking(|| rig_ok(&["stop"]))
        .await
        .expect("stop");
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .expect("disconnect seen")
    .expect("state");
    eprintln!("[ami] after rig.sh stop: {:?}", client.state().borrow());
    let down = Instant::now();
    tokio::task::spawn_blocking(|| rig_ok(&["start"]))
        .await
        .expect("start");
    let started = Instant::now();
    wait_connected(&client, Duration::from_secs(30)).await;
    eprintln!(
        "[ami] logged in again {:?} after rig.sh start returned ({:?} after the disconnect)",
        started.elapsed(),
        down.elapsed()
    );
    assert!(started.elapsed() <= Duration::from_secs(30));
    let st = client.stats();
    assert_eq!(st.logins, before + 1, "{st:?}");
    assert!(st.reconnects >= 1);
    let pong = client
        .send(Action::new("Ping"), T)
        .await
        .expect("Ping after restart");
    assert_eq!(pong.get("Ping"), Some("Pong"));
    let (_, items) = queue_status(&client).await;
    member(&items, "Local/100@agents");

    client.shutdown().await;
    let st = client.stats();
    eprintln!(
        "[ami] stats: logins {} reconnects {} connect_failures {} malformed {} events {:?}",
        st.logins, st.reconnects, st.connect_failures, st.malformed_frames, st.events_by_type
    );
    assert_eq!(st.malformed_frames, 0);
}

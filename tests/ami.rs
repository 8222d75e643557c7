//! The AMI client against a REAL Asterisk 22 (`tests/asterisk/rig.sh`, see its README):
//! login, Ping, the QueueStatus event list, QueuePause seen in QueueStatus, an async
//! Originate and its OriginateResponse, the events of a real inbound call, and a restart of
//! Asterisk while connected (the client must log in again within 30 s).
//!
//! Needs root (the rig is a chroot). Without root it prints a loud SKIPPED message and
//! passes; as root it never skips. There is one Asterisk: the test holds an exclusive lock
//! on `/var/tmp/pbxlink-asterisk.lock` for its whole run and first waits until no
//! `asterisk_e2e` test process is running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxlink::config::AmiSettings;
use pbxlink::pbx::asterisk::ami::{Action, AmiClient, ConnectionState, Message};
use tokio::sync::mpsc;

mod rig;
use rig::{RigGuard, RigLock, rig_ok, root_or_skip};

const T: Duration = Duration::from_secs(10);

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
    if !root_or_skip("tests/ami.rs", "The AMI client was") {
        return;
    }
    let _lock = RigLock::acquire("ami", "asterisk_e2e");
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

/// Events until `done` says so; panics (with the events seen) when `within` passes first,
/// so a wait that never came true fails where it waited. `what` names the wait.
async fn collect(
    rx: &mut mpsc::Receiver<Arc<Message>>,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&[Arc<Message>]) -> bool,
) -> Vec<Arc<Message>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            Ok(None) => panic!("events: the client is gone"),
            Err(_) => panic!(
                "timed out after {within:?} waiting for {what}; {} event(s) seen: {:#?}",
                got.len(),
                got.iter()
                    .map(|m| (m.event(), m.get("Channel"), m.get("Linkedid")))
                    .collect::<Vec<_>>()
            ),
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
    let pauses = collect(
        &mut events,
        Duration::from_secs(5),
        "two QueueMemberPause events",
        |got| {
            got.iter()
                .filter(|m| m.event() == Some("QueueMemberPause"))
                .count()
                >= 2
        },
    )
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
    let got = collect(
        &mut events,
        Duration::from_secs(40),
        "the call's events, every channel hung up",
        |got| {
            let Some(linked) = got
                .iter()
                .find(|m| m.event() == Some("Newchannel") && m.get("Exten") == Some("918044556677"))
                .and_then(|m| m.get("Linkedid").map(str::to_owned))
            else {
                return false;
            };
            let of = |name: &str| {
                got.iter()
                    .filter(|m| {
                        m.event() == Some(name) && m.get("Linkedid") == Some(linked.as_str())
                    })
                    .count()
            };
            of("Newchannel") > 0 && of("Hangup") >= of("Newchannel") && of("DialBegin") > 0
        },
    )
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
    // Every channel of the call hung up: each Newchannel's Uniqueid has its Hangup.
    let of_call = |name: &str| -> std::collections::BTreeSet<String> {
        got.iter()
            .filter(|m| m.event() == Some(name) && m.get("Linkedid") == Some(linked.as_str()))
            .filter_map(|m| m.get("Uniqueid").map(str::to_owned))
            .collect()
    };
    let (opened, hung_up) = (of_call("Newchannel"), of_call("Hangup"));
    assert!(
        opened.len() >= 2,
        "the call has the trunk's and the agent's channel: {opened:?}"
    );
    assert_eq!(opened, hung_up, "channels opened vs hung up");
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
    // The client's own counters saw at least the events this test received.
    let st = client.stats();
    for name in ["Newchannel", "DialBegin", "Hangup"] {
        let seen = got.iter().filter(|m| m.event() == Some(name)).count() as u64;
        let counted = st.events_by_type.get(name).copied().unwrap_or(0);
        assert!(
            counted >= seen,
            "{name}: counted {counted}, received {seen}: {st:?}"
        );
    }

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
    // The restarted Asterisk answers QueueStatus with both members, unpaused (the queue
    // config was reloaded, not the test's pause left behind).
    let (resp, items) = queue_status(&client).await;
    assert_eq!(resp.get("EventList"), Some("start"), "{resp:?}");
    for loc in ["Local/100@agents", "Local/101@agents"] {
        let m = member(&items, loc);
        assert_eq!(m.get("Queue"), Some("sales"), "{m:?}");
        assert_eq!(m.get("Paused"), Some("0"), "{m:?}");
    }

    client.shutdown().await;
    let st = client.stats();
    eprintln!(
        "[ami] stats: logins {} reconnects {} connect_failures {} malformed {} events {:?}",
        st.logins, st.reconnects, st.connect_failures, st.malformed_frames, st.events_by_type
    );
    assert_eq!(st.malformed_frames, 0);
}

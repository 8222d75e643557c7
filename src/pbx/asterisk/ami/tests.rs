//! Client tests against a mock AMI server on 127.0.0.1 (a `TcpListener` in the test that
//! speaks the protocol). Timing tests run on Tokio's paused clock: no real sleeps.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::client::{
    BACKOFF_MAX, EVENT_CAPACITY, HEALTHY_AFTER, IDLE_LIMIT, PARK_LIMIT, backoff_delay,
};
use super::*;
use crate::config::AmiSettings;

const T: Duration = Duration::from_secs(5);

fn settings(port: u16, events: &[&str]) -> AmiSettings {
    AmiSettings {
        host: "127.0.0.1".into(),
        port,
        username: "pbxlink".into(),
        login: crate::config::AmiLogin::Plain,
        events: events.iter().map(|s| (*s).to_owned()).collect(),
        ..AmiSettings::default()
    }
}

/// The mock server's listening socket.
struct Mock {
    listener: TcpListener,
    port: u16,
}

impl Mock {
    async fn new() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        Mock { listener, port }
    }

    async fn accept(&self) -> Peer {
        let (stream, _) = self.listener.accept().await.expect("accept");
        // No Nagle: a small write right after another would wait for the client's delayed
        // ACK (40 ms of real time, an age on the paused clock).
        stream.set_nodelay(true).expect("nodelay");
        Peer {
            stream,
            framer: Framer::messages_only(FrameLimits::default()),
            answer_pings: true,
        }
    }
}

/// One accepted connection, seen from the server side.
struct Peer {
    stream: TcpStream,
    framer: Framer,
    answer_pings: bool,
}

impl Peer {
    async fn write(&mut self, s: &str) {
        self.stream
            .write_all(s.as_bytes())
            .await
            .expect("mock write");
    }

    async fn banner(&mut self, version: &str) {
        self.write(&format!("Asterisk Call Manager/{version}\r\n"))
            .await;
    }

    async fn send(&mut self, pairs: &[(&str, &str)]) {
        let wire = Message::from_pairs(pairs).to_wire();
        self.write(&wire).await;
    }

    /// Replies to `to` with its ActionID after the first header.
    async fn reply(&mut self, to: &Message, pairs: &[(&str, &str)]) {
        let id = to.action_id().expect("action has an ActionID").to_owned();
        let mut all = vec![pairs[0], ("ActionID", id.as_str())];
        all.extend_from_slice(&pairs[1..]);
        self.send(&all).await;
    }

    /// The next action from the client (Pings answered and skipped); None at EOF.
    async fn recv(&mut self) -> Option<Message> {
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(frame) = self.framer.next_frame().expect("client frame") {
                let Frame::Message(m) = frame else { continue };
                if self.answer_pings && m.get("Action") == Some("Ping") {
                    self.reply(&m, &[("Response", "Success"), ("Ping", "Pong")])
                        .await;
                    continue;
                }
                return Some(m);
            }
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.framer.extend(&chunk[..n]);
        }
    }

    async fn expect(&mut self, action: &str) -> Message {
        let m = self.recv().await.expect("client closed");
        assert_eq!(m.get("Action"), Some(action), "{m:?}");
        m
    }

    /// Banner, Login accepted, Filter accepted or refused, Events: the setup actions seen.
    async fn login(&mut self, filter_ok: bool) -> Vec<Message> {
        self.banner("11.0.0").await;
        let login = self.expect("Login").await;
        self.reply(
            &login,
            &[
                ("Response", "Success"),
                ("Message", "Authentication accepted"),
            ],
        )
        .await;
        let mut seen = vec![login];
        loop {
            let m = self.recv().await.expect("client closed during setup");
            match m.get("Action") {
                Some("Filter") if filter_ok => {
                    self.reply(&m, &[("Response", "Success"), ("Message", "Filter Added")])
                        .await;
                }
                Some("Filter") => {
                    self.reply(
                        &m,
                        &[("Response", "Error"), ("Message", "Permission denied")],
                    )
                    .await;
                }
                Some("Events") => {
                    self.reply(&m, &[("Response", "Success"), ("Events", "On")])
                        .await;
                    seen.push(m);
                    return seen;
                }
                other => panic!("unexpected setup action {other:?}"),
            }
            seen.push(m);
        }
    }
}

async fn connected(client: &AmiClient) -> String {
    let mut state = client.state();
    let s = tokio::time::timeout(
        Duration::from_secs(60),
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .expect("connected in time")
    .expect("state channel");
    match &*s {
        ConnectionState::Connected { version, .. } => version.clone(),
        _ => unreachable!(),
    }
}

async fn disconnected(client: &AmiClient) -> String {
    let mut state = client.state();
    let s = tokio::time::timeout(
        Duration::from_secs(60),
        state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .expect("disconnected in time")
    .expect("state channel");
    match &*s {
        ConnectionState::Disconnected { reason, .. } => reason.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn login_plain_ping_and_client_side_filter() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(
        settings(mock.port, &["Newchannel", "QueueMemberPause", "VarSet"]),
        "s3cret".into(),
    );
    let mut peer = mock.accept().await;
    let setup = peer.login(false).await;
    let login = &setup[0];
    assert_eq!(login.get("Username"), Some("pbxlink"));
    assert_eq!(login.get("Secret"), Some("s3cret"));
    assert_eq!(login.get("Events"), Some("off"));
    assert_eq!(setup[1].get("Action"), Some("Filter"));
    let events = setup.last().expect("events action");
    assert_eq!(events.get("Action"), Some("Events"));
    // Refused Filter: a class mask covering the configured events (and OriginateResponse).
    let mask = events.get("EventMask").expect("mask");
    for class in ["call", "agent", "dialplan", "system"] {
        assert!(mask.split(',').any(|c| c == class), "{mask}");
    }
    assert_eq!(connected(&client).await, "11.0.0");

    let server = tokio::spawn(async move {
        peer.answer_pings = false;
        let ping = peer.expect("Ping").await;
        peer.reply(&ping, &[("Response", "Success"), ("Ping", "Pong")])
            .await;
        peer
    });
    let pong = client.send(Action::new("Ping"), T).await.expect("ping");
    assert_eq!(pong.get("Ping"), Some("Pong"));
    let _peer = server.await.expect("server");
    let st = client.stats();
    assert!(st.connected);
    assert_eq!((st.logins, st.reconnects), (1, 0));
    assert!(!st.server_side_filter);
}

#[tokio::test]
async fn md5_login_answers_the_challenge() {
    // The key Asterisk expects for challenge 145769581 (panoramisk_challenge-md5_ami7.txt)
    // and secret "s3cret", as computed by `md5sum`.
    assert_eq!(
        super::client::md5_key("145769581", "s3cret"),
        "c50a97454a3fc88d943bc8bb1d7d5e5d"
    );
    let mock = Mock::new().await;
    let mut s = settings(mock.port, &["Newchannel"]);
    s.login = crate::config::AmiLogin::Md5;
    let client = AmiClient::spawn(s, "s3cret".into());
    let mut peer = mock.accept().await;
    peer.banner("11.0.0").await;
    let challenge = peer.expect("Challenge").await;
    assert_eq!(challenge.get("AuthType"), Some("MD5"));
    peer.reply(
        &challenge,
        &[("Response", "Success"), ("Challenge", "145769581")],
    )
    .await;
    let login = peer.expect("Login").await;
    assert_eq!(login.get("AuthType"), Some("MD5"));
    assert_eq!(
        login.get("Secret"),
        None,
        "the secret never crosses the wire"
    );
    assert_eq!(
        login.get("Key"),
        Some(super::client::md5_key("145769581", "s3cret").as_str())
    );
    peer.reply(&login, &[("Response", "Success")]).await;
    loop {
        let m = peer.recv().await.expect("setup");
        let last = m.get("Action") == Some("Events");
        peer.reply(&m, &[("Response", if last { "Success" } else { "Error" })])
            .await;
        if last {
            break;
        }
    }
    connected(&client).await;
}

#[tokio::test]
async fn server_side_filter_when_allowed() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel", "Hangup"]), "s".into());
    let mut peer = mock.accept().await;
    let setup = peer.login(true).await;
    let filters: Vec<&str> = setup
        .iter()
        .filter(|m| m.get("Action") == Some("Filter"))
        .map(|m| {
            assert_eq!(m.get("Operation"), Some("Add"));
            m.get("Filter").expect("filter")
        })
        .collect();
    for name in [
        "Newchannel",
        "Hangup",
        "FullyBooted",
        "Shutdown",
        "OriginateResponse",
    ] {
        let f = format!("Event: {name}[[:space:]]");
        assert!(filters.contains(&f.as_str()), "{filters:?}");
    }
    assert_eq!(setup.last().and_then(|m| m.get("EventMask")), Some("on"));
    connected(&client).await;
    assert!(client.stats().server_side_filter);
}

#[tokio::test]
async fn action_id_correlation_with_interleaved_events() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel", "Hangup"]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
    let mut events = client.events();

    let server = tokio::spawn(async move {
        let a = peer.expect("CoreSettings").await;
        let b = peer.expect("QueueSummary").await;
        peer.send(&[
            ("Event", "Newchannel"),
            ("Channel", "PJSIP/1-1"),
            ("Linkedid", "1.1"),
        ])
        .await;
        // A stray response nobody waits for, then B's answer before A's.
        peer.send(&[("Response", "Success"), ("ActionID", "someone-else")])
            .await;
        peer.reply(&b, &[("Response", "Success"), ("Which", "B")])
            .await;
        peer.send(&[("Event", "RTCPSent"), ("To", "1.2.3.4:5")])
            .await;
        peer.send(&[
            ("Event", "Hangup"),
            ("Channel", "PJSIP/1-1"),
            ("Cause", "16"),
        ])
        .await;
        peer.reply(&a, &[("Response", "Success"), ("Which", "A")])
            .await;
        peer
    });
    let (ra, rb) = tokio::join!(client.send(Action::new("CoreSettings"), T), async {
        // Make sure A is written first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.send(Action::new("QueueSummary"), T).await
    });
    assert_eq!(ra.expect("A").get("Which"), Some("A"));
    assert_eq!(rb.expect("B").get("Which"), Some("B"));
    let _peer = server.await.expect("server");
    let e1 = events.recv().await.expect("event");
    let e2 = events.recv().await.expect("event");
    assert_eq!(e1.event(), Some("Newchannel"));
    assert_eq!(e2.event(), Some("Hangup"), "RTCPSent is filtered out");
    let st = client.stats();
    assert_eq!(st.events_by_type.get("RTCPSent"), Some(&1));
    assert_eq!(st.events_forwarded, 2);
}

#[tokio::test]
async fn unknown_events_pass_without_a_filter() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    let mut peer = mock.accept().await;
    let setup = peer.login(true).await;
    assert_eq!(
        setup.len(),
        2,
        "no Filter action when every event is wanted"
    );
    assert_eq!(setup[1].get("EventMask"), Some("on"));
    connected(&client).await;
    let mut events = client.events();
    peer.send(&[("Event", "SomethingNewInAsterisk99"), ("X", "")])
        .await;
    let e = tokio::time::timeout(T, events.recv())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!(e.event(), Some("SomethingNewInAsterisk99"));
    assert_eq!(e.get("X"), Some(""));
}

#[tokio::test]
async fn event_list_collects_its_events() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel"]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
    let mut events = client.events();
    let server = tokio::spawn(async move {
        let q = peer.expect("QueueStatus").await;
        assert_eq!(q.get("Queue"), Some("sales"));
        peer.reply(
            &q,
            &[
                ("Response", "Success"),
                ("EventList", "start"),
                ("Message", "Queue status will follow"),
            ],
        )
        .await;
        peer.reply(&q, &[("Event", "QueueParams"), ("Queue", "sales")])
            .await;
        peer.send(&[("Event", "Newchannel"), ("Channel", "X")])
            .await;
        for m in ["Local/100@agents", "Local/101@agents"] {
            peer.reply(
                &q,
                &[("Event", "QueueMember"), ("Queue", "sales"), ("Name", m)],
            )
            .await;
        }
        peer.reply(
            &q,
            &[
                ("Event", "QueueStatusComplete"),
                ("EventList", "Complete"),
                ("ListItems", "3"),
            ],
        )
        .await;
        peer
    });
    let (resp, items) = client
        .send_list(
            Action::new("QueueStatus").header("Queue", "sales").unwrap(),
            T,
        )
        .await
        .expect("list");
    let _peer = server.await.expect("server");
    assert_eq!(resp.get("EventList"), Some("start"));
    let names: Vec<_> = items.iter().map(|m| m.event().unwrap_or("")).collect();
    assert_eq!(names, ["QueueParams", "QueueMember", "QueueMember"]);
    assert_eq!(items[2].get("Name"), Some("Local/101@agents"));
    assert_eq!(
        events.recv().await.expect("event").event(),
        Some("Newchannel")
    );
}

#[tokio::test]
async fn originate_waits_for_its_originate_response() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel"]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
    let server = tokio::spawn(async move {
        // 1: response first, then a foreign OriginateResponse, then ours.
        let o = peer.expect("Originate").await;
        assert_eq!(o.get("Async"), Some("true"));
        assert_eq!(o.get_all("Async").count(), 1);
        assert_eq!(o.get("Channel"), Some("Local/100@agents"));
        peer.reply(
            &o,
            &[
                ("Response", "Success"),
                ("Message", "Originate successfully queued"),
            ],
        )
        .await;
        peer.send(&[
            ("Event", "OriginateResponse"),
            ("ActionID", "other-client"),
            ("Response", "Failure"),
        ])
        .await;
        peer.send(&[("Event", "Newchannel"), ("Channel", "Local/100@agents-1;1")])
            .await;
        peer.reply(
            &o,
            &[
                ("Event", "OriginateResponse"),
                ("Response", "Success"),
                ("Reason", "4"),
                ("Uniqueid", "1.2"),
            ],
        )
        .await;
        // 2: the event before the response; a failed call.
        let o = peer.expect("Originate").await;
        peer.reply(
            &o,
            &[
                ("Event", "OriginateResponse"),
                ("Response", "Failure"),
                ("Reason", "5"),
            ],
        )
        .await;
        peer.reply(&o, &[("Response", "Success")]).await;
        // 3: refused.
        let o = peer.expect("Originate").await;
        peer.reply(
            &o,
            &[("Response", "Error"), ("Message", "Permission denied")],
        )
        .await;
        peer
    });
    let action = || {
        Action::new("Originate")
            .header("Channel", "Local/100@agents")
            .and_then(|a| a.header("Application", "Wait"))
            .and_then(|a| a.header("Data", "1"))
            .and_then(|a| a.header("Async", "false"))
            .expect("action")
    };
    let ok = client.originate(action(), T).await.expect("originate 1");
    assert_eq!(ok.event(), Some("OriginateResponse"));
    assert_eq!(ok.get("Response"), Some("Success"));
    assert_eq!(ok.get("Uniqueid"), Some("1.2"));
    let failed = client.originate(action(), T).await.expect("originate 2");
    assert_eq!(failed.get("Response"), Some("Failure"));
    assert_eq!(failed.get("Reason"), Some("5"));
    match client.originate(action(), T).await {
        Err(AmiError::Rejected { action, message }) => {
            assert_eq!(action, "Originate");
            assert_eq!(message, "Permission denied");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let _peer = server.await.expect("server");
}

#[test]
fn header_injection_is_refused() {
    for (k, v) in [
        ("Channel", "Local/1\r\nAction: Hangup"),
        ("Channel", "x\ny"),
        ("Channel", "x\r"),
        ("Chan\nnel", "x"),
        ("Chan\rnel", "x"),
    ] {
        match Action::new("Originate").header(k, v) {
            Err(AmiError::HeaderInjection { key }) => assert_eq!(key, k),
            other => panic!("{k:?}={v:?}: {other:?}"),
        }
    }
    for k in ["Chan:nel", "", " "] {
        assert!(
            matches!(
                Action::new("Ping").header(k, "x"),
                Err(AmiError::InvalidKey { .. })
            ),
            "{k:?}"
        );
    }
    for k in ["ActionID", "action"] {
        assert!(matches!(
            Action::new("Ping").header(k, "x"),
            Err(AmiError::ReservedKey { .. })
        ));
    }
    assert!(matches!(
        Action::new("Ping\r\nAction: Hangup").encode("1"),
        Err(AmiError::HeaderInjection { .. })
    ));
    let wire = Action::new("Setvar")
        .header("Variable", "A")
        .and_then(|a| a.header("Value", ""))
        .and_then(|a| a.header("Variable", "B: c"))
        .expect("ok")
        .encode("id-1")
        .expect("encode");
    assert_eq!(
        String::from_utf8(wire).expect("utf8"),
        "Action: Setvar\r\nActionID: id-1\r\nVariable: A\r\nValue: \r\nVariable: B: c\r\n\r\n"
    );
}

#[tokio::test]
async fn injected_action_never_reaches_the_wire() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel"]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
    let bad = client
        .send(Action::new("Ping\r\nAction: Hangup\r\nChannel: all"), T)
        .await;
    assert!(
        matches!(bad, Err(AmiError::HeaderInjection { .. })),
        "{bad:?}"
    );
    assert_eq!(client.stats().refused_actions, 1);
    let server = tokio::spawn(async move {
        // The first thing the server sees after setup is the next, valid action.
        let m = peer.recv().await.expect("action");
        assert_eq!(m.get("Action"), Some("CoreSettings"));
        peer.reply(&m, &[("Response", "Success")]).await;
    });
    client
        .send(Action::new("CoreSettings"), T)
        .await
        .expect("valid action");
    server.await.expect("server");
}

#[tokio::test]
async fn not_connected_fails_at_once() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let client = AmiClient::spawn(settings(port, &[]), "s".into());
    let reason = disconnected(&client).await;
    assert!(reason.contains("connect to 127.0.0.1"), "{reason}");
    let started = std::time::Instant::now();
    match client
        .send(Action::new("Ping"), Duration::from_secs(30))
        .await
    {
        Err(AmiError::NotConnected { .. }) => {}
        other => panic!("expected NotConnected, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(client.stats().sent_while_down, 1);
    assert!(client.stats().connect_failures >= 1);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn wrong_secret_is_reported_and_retried_with_backoff() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "wrong".into());
    let mut accepts = Vec::new();
    for _ in 0..4 {
        let mut peer = mock.accept().await;
        accepts.push(Instant::now());
        peer.banner("11.0.0").await;
        let login = peer.expect("Login").await;
        assert_eq!(login.get("Secret"), Some("wrong"));
        peer.reply(
            &login,
            &[("Response", "Error"), ("Message", "Authentication failed")],
        )
        .await;
        let reason = disconnected(&client).await;
        assert!(reason.contains("Authentication failed"), "{reason}");
        assert!(reason.contains("pbxlink"), "{reason}");
    }
    let gaps: Vec<Duration> = accepts.windows(2).map(|w| w[1] - w[0]).collect();
    // 1 s, 2 s, 4 s before jitter (x0.5..1): growing, never immediate, never > 30 s.
    for (i, g) in gaps.iter().enumerate() {
        let nominal = Duration::from_millis(500 * (2 << i));
        assert!(
            *g >= nominal / 2 && *g <= nominal + Duration::from_millis(50),
            "{gaps:?}"
        );
    }
    let st = client.stats();
    assert_eq!(st.login_failures, 4);
    assert_eq!(st.logins, 0);
    // The secret is fixed on the server: the next attempt logs in.
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
}

#[tokio::test(start_paused = true)]
async fn half_open_socket_detected_within_30s() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel"]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(false).await;
    let last_byte = Instant::now();
    connected(&client).await;
    // The server keeps the socket open but never sends another byte (no Pong either).
    let waiting = client.send(Action::new("QueueStatus"), Duration::from_secs(120));
    let (result, second) = tokio::join!(waiting, mock.accept());
    let detected = Instant::now();
    match result {
        Err(AmiError::Disconnected { action, reason }) => {
            assert_eq!(action, "QueueStatus");
            assert!(reason.contains("half-open"), "{reason}");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let silent_for = detected - last_byte;
    assert!(
        silent_for >= IDLE_LIMIT && silent_for <= Duration::from_secs(30),
        "reconnected {silent_for:?} after the last byte"
    );
    assert_eq!(client.stats().half_open_drops, 1);
    // The half-open peer got pings meanwhile.
    drop(peer);
    let mut second = second;
    second.login(false).await;
    connected(&client).await;
    assert_eq!(
        client.stats().reconnects,
        1,
        "one reconnect after the half-open drop"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn reconnects_after_the_server_closes() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel"]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
    let server = tokio::spawn(async move {
        // Read the action, then Asterisk "restarts": the socket closes unanswered.
        peer.expect("CoreSettings").await;
        drop(peer);
    });
    match client.send(Action::new("CoreSettings"), T).await {
        Err(AmiError::Disconnected { reason, .. }) => {
            assert!(reason.contains("closed"), "{reason}");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    server.await.expect("server");
    // The new Asterisk greets with its banner; the client logs in again.
    let mut peer = mock.accept().await;
    peer.banner("11.0.1").await;
    let login = peer.expect("Login").await;
    peer.reply(&login, &[("Response", "Success")]).await;
    loop {
        let m = peer.recv().await.expect("setup");
        let last = m.get("Action") == Some("Events");
        let ok = if last { "Success" } else { "Error" };
        peer.reply(&m, &[("Response", ok)]).await;
        if last {
            break;
        }
    }
    let mut state = client.state();
    state
        .wait_for(
            |s| matches!(s, ConnectionState::Connected { version, .. } if version == "11.0.1"),
        )
        .await
        .expect("reconnected");
    let st = client.stats();
    assert_eq!((st.logins, st.reconnects), (2, 1));
    let server = tokio::spawn(async move {
        let m = peer.expect("CoreSettings").await;
        peer.reply(&m, &[("Response", "Success")]).await;
        peer
    });
    client
        .send(Action::new("CoreSettings"), T)
        .await
        .expect("works after reconnect");
    let _peer = server.await.expect("server");
}

#[test]
fn backoff_delay_is_capped_and_grows() {
    let mut rng = rand::rng();
    for failures in 0..200 {
        for _ in 0..50 {
            let d = backoff_delay(failures, &mut rng);
            assert!(d <= BACKOFF_MAX, "{failures}: {d:?}");
            assert!(d >= Duration::from_millis(250), "{failures}: {d:?}");
        }
    }
    for _ in 0..50 {
        assert!(backoff_delay(10, &mut rng) >= BACKOFF_MAX / 2);
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_never_above_30s() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    let mut accepts = Vec::new();
    for _ in 0..12 {
        // Accept and close at once: the client sees no banner.
        let peer = mock.accept().await;
        accepts.push(Instant::now());
        drop(peer);
    }
    let gaps: Vec<Duration> = accepts.windows(2).map(|w| w[1] - w[0]).collect();
    for g in &gaps {
        assert!(*g <= BACKOFF_MAX + Duration::from_millis(50), "{gaps:?}");
    }
    // The cap is reached: the last tries are 15..30 s apart.
    for g in &gaps[gaps.len() - 4..] {
        assert!(*g >= BACKOFF_MAX / 2, "{gaps:?}");
    }
    let st = client.stats();
    assert!(st.connect_failures >= 11);
    client.shutdown().await;
}

/// A server that accepts the login and then sends garbage at once, for `period`: the
/// instants (from the start) at which the client connected.
///
/// The paused clock jumps to the next timer whenever every task waits, also while bytes are
/// on their way through the loopback socket; a task that sleeps 5 ms in a loop keeps those
/// jumps short, so `period` is what the client experiences.
async fn garbage_after_login(mock: &Mock, client: &AmiClient, period: Duration) -> Vec<Duration> {
    let ticker = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let start = Instant::now();
    let mut accepted = Vec::new();
    while let Ok(mut peer) = tokio::time::timeout_at(start + period, mock.accept()).await {
        accepted.push(start.elapsed());
        peer.login(false).await;
        connected(client).await;
        peer.write("this is not AMI\r\n\r\n").await;
        // The client drops the connection (not waiting for its state: by then it may be
        // in its next attempt already).
        while peer.recv().await.is_some() {}
    }
    ticker.abort();
    accepted
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_when_every_login_is_followed_by_garbage() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    let accepted = garbage_after_login(&mock, &client, Duration::from_secs(25)).await;
    eprintln!("{} connections in 25 s: {accepted:?}", accepted.len());
    // Delays 0.5-1, 1-2, 2-4, 4-8, 8-16 s: at most 6 connections in 25 s (the backoff used
    // to restart after every login: ~33 connections in 25 s).
    assert!(
        (4..=6).contains(&accepted.len()),
        "{} connections in 25 s: {accepted:?}",
        accepted.len()
    );
    let gaps: Vec<Duration> = accepted.windows(2).map(|w| w[1] - w[0]).collect();
    for w in gaps.windows(2) {
        assert!(w[1] > w[0], "the delay grows: {gaps:?}");
    }
    assert_eq!(client.stats().malformed_frames, accepted.len() as u64);
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_starts_over_after_a_healthy_connection() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    // Grow the backoff first.
    let accepted = garbage_after_login(&mock, &client, Duration::from_secs(10)).await;
    assert!(accepted.len() >= 3, "{accepted:?}");
    // Then a connection that stays logged in for longer than HEALTHY_AFTER, answering pings.
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
    let pinger = tokio::spawn(async move {
        let until = Instant::now() + HEALTHY_AFTER + Duration::from_secs(1);
        while tokio::time::timeout_at(until, peer.recv()).await.is_ok() {}
        peer
    });
    let peer = pinger.await.expect("peer");
    drop(peer);
    let down = Instant::now();
    let _next = mock.accept().await;
    let after = down.elapsed();
    assert!(
        after <= Duration::from_millis(600),
        "reconnected {after:?} after a healthy connection ended"
    );
    client.shutdown().await;
}

#[tokio::test]
async fn malformed_or_oversized_frame_ends_that_connection_only() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &["Newchannel"]), "s".into());
    for (i, garbage) in [
        "this is not AMI\r\n\r\n".to_owned(),
        format!("Event: Newchannel\r\nX: {}\r\n\r\n", "y".repeat(70 * 1024)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut peer = mock.accept().await;
        peer.login(false).await;
        connected(&client).await;
        peer.write(&garbage).await;
        let reason = disconnected(&client).await;
        assert!(reason.contains("bad AMI frame"), "{reason}");
        assert_eq!(client.stats().malformed_frames, i as u64 + 1);
    }
    // And the client goes on.
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
}

#[tokio::test]
async fn shutdown_logs_off_and_fails_later_calls() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(false).await;
    connected(&client).await;
    client.shutdown().await;
    assert_eq!(peer.expect("Logoff").await.get("Action"), Some("Logoff"));
    assert_eq!(disconnected(&client).await, "shut down");
    assert!(matches!(
        client.send(Action::new("Ping"), T).await,
        Err(AmiError::Closed)
    ));
}

/// `n` events `Event: Newstate` numbered from `from` (header `N`), in wire form.
fn numbered_events(from: usize, n: usize) -> String {
    let mut s = String::new();
    for i in from..from + n {
        s.push_str(&format!("Event: Newstate\r\nN: {i}\r\n\r\n"));
    }
    s
}

/// Reads `n` events and checks they are numbered `from`, `from + 1`, ... (none lost, none
/// reordered).
async fn expect_numbered(events: &mut mpsc::Receiver<Arc<Message>>, from: usize, n: usize) {
    for i in from..from + n {
        let e = tokio::time::timeout(T, events.recv())
            .await
            .unwrap_or_else(|_| panic!("event {i} in time"))
            .expect("event");
        assert_eq!(e.get("N"), Some(i.to_string().as_str()));
    }
}

/// A receiver that does not read makes the reader stop reading the socket: the server's
/// writes block (TCP pushes back) instead of pbxlink buffering the stream, and no more than
/// the receiver's queue (plus the one event held) is taken. A block of a minute is not taken
/// for a half-open socket. Once the receiver reads, every event arrives, in order.
#[tokio::test(start_paused = true)]
async fn a_full_receiver_stops_the_reader_and_tcp_pushes_back() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(true).await;
    connected(&client).await;
    let mut events = client.events();

    // Write until the socket refuses more (the paused clock only moves when nothing else
    // can: the reader has stopped). More than 64 MiB taken would mean buffering.
    let mut wire = Vec::new();
    let mut next = 0usize;
    let mut written = 0usize;
    loop {
        if wire.is_empty() {
            wire = numbered_events(next, 100).into_bytes();
            next += 100;
        }
        match peer.stream.try_write(&wire) {
            Ok(n) => {
                written += n;
                wire.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let ready =
                    tokio::time::timeout(Duration::from_secs(1), peer.stream.writable()).await;
                if ready.is_err() {
                    break;
                }
            }
            Err(e) => panic!("mock write: {e}"),
        }
        assert!(
            written < 64 << 20,
            "the client took 64 MiB without reading them"
        );
    }
    let taken = client.stats();
    assert!(
        taken.events_forwarded <= EVENT_CAPACITY as u64 + 1,
        "{} events taken with a queue of {EVENT_CAPACITY}",
        taken.events_forwarded
    );
    assert!(taken.events_forwarded >= EVENT_CAPACITY as u64);
    assert!(taken.reader_waits >= 1);

    // A minute of not reading (pings unanswered: the mock reads nothing either).
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        matches!(*client.state().borrow(), ConnectionState::Connected { .. }),
        "a reader waiting for its receiver is not a half-open socket"
    );

    // The rest of what was written, then the receiver reads everything.
    let rest = tokio::spawn(async move {
        peer.stream.write_all(&wire).await.expect("mock write");
        peer
    });
    expect_numbered(&mut events, 0, next).await;
    let _peer = rest.await.expect("writer");
    assert_eq!(client.stats().events_forwarded, next as u64);
}

/// The call tracker waits for `CoreShowChannels` while it does not read its events. With
/// its queue full, the reader goes on reading while a caller waits, hands the answer over
/// and parks the events meanwhile; none is lost or reordered.
#[tokio::test(start_paused = true)]
async fn answers_reach_their_caller_while_a_receiver_is_full() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(true).await;
    connected(&client).await;
    let mut events = client.events();
    let first = EVENT_CAPACITY + 100;
    peer.write(&numbered_events(0, first)).await;
    let server = tokio::spawn(async move {
        let a = peer.expect("CoreShowChannels").await;
        peer.write(&numbered_events(first, 500)).await;
        peer.reply(
            &a,
            &[
                ("Response", "Success"),
                ("EventList", "start"),
                ("Message", "Channels will follow"),
            ],
        )
        .await;
        peer.reply(&a, &[("Event", "CoreShowChannel"), ("Channel", "PJSIP/1")])
            .await;
        peer.reply(
            &a,
            &[
                ("Event", "CoreShowChannelsComplete"),
                ("EventList", "Complete"),
            ],
        )
        .await;
        peer
    });
    let (_, channels) = client
        .send_list(Action::new("CoreShowChannels"), T)
        .await
        .expect("the answer arrives while the receiver is full");
    assert_eq!(channels.len(), 1);
    let _peer = server.await.expect("server");
    let st = client.stats();
    assert!(st.events_parked_peak >= 500, "{st:?}");
    expect_numbered(&mut events, 0, first + 500).await;
    // The list's own events are forwarded too (no filter), after the numbered ones.
    let e = events.recv().await.expect("event");
    assert_eq!(e.event(), Some("CoreShowChannel"));
}

/// Parking is bounded: past [`PARK_LIMIT`] events the reader stops even though a caller
/// waits, and the caller's timeout ends the wait; the events are all delivered once read.
#[tokio::test(start_paused = true)]
async fn parking_is_bounded() {
    let mock = Mock::new().await;
    let client = AmiClient::spawn(settings(mock.port, &[]), "s".into());
    let mut peer = mock.accept().await;
    peer.login(true).await;
    connected(&client).await;
    let mut events = client.events();
    let total = EVENT_CAPACITY + PARK_LIMIT + 2000;
    let server = tokio::spawn(async move {
        let a = peer.expect("CoreSettings").await;
        peer.write(&numbered_events(0, total)).await;
        peer.reply(&a, &[("Response", "Success")]).await;
        peer
    });
    let r = client.send(Action::new("CoreSettings"), T).await;
    assert!(matches!(r, Err(AmiError::Timeout { .. })), "{r:?}");
    let st = client.stats();
    assert!(st.events_parked_peak <= PARK_LIMIT as u64, "{st:?}");
    expect_numbered(&mut events, 0, total).await;
    let _peer = server.await.expect("server");
}

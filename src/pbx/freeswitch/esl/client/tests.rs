//! Client tests against a fake event socket on 127.0.0.1 (a `TcpListener` in the test that
//! speaks the protocol as `mod_event_socket.c` writes it). Timing tests run on Tokio's paused
//! clock. The real FreeSWITCH is in `tests/freeswitch_esl.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::*;

const T: Duration = Duration::from_secs(5);

const SUBSCRIBED: &str = "event plain BACKGROUND_JOB CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_HANGUP_COMPLETE CUSTOM callcenter::info";

const TWO_CHANNELS: &str = r#"{"row_count":2,"rows":[{"uuid":"a1b2","direction":"inbound","created_epoch":"1764640000","name":"sofia/carrier/4930555@127.0.0.1","state":"CS_EXECUTE","cid_num":"4930555","dest":"4930200","context":"public","callstate":"ACTIVE","call_uuid":null},{"uuid":"c3d4","direction":"outbound","created_epoch":1764640001,"name":"sofia/internal/phone-101@127.0.0.1","state":"CS_EXCHANGE_MEDIA","dest":"phone-101","context":"default","callstate":"ACTIVE","call_uuid":"a1b2"}]}"#;

fn settings(port: u16) -> EslSettings {
    EslSettings::new("127.0.0.1", port, "ClueCon")
}

struct Fake {
    listener: TcpListener,
    port: u16,
}

impl Fake {
    async fn new() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        Fake { listener, port }
    }

    async fn accept(&self) -> Peer {
        let (stream, _) = self.listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        Peer {
            stream,
            buf: Vec::new(),
            answer_probes: true,
        }
    }
}

/// One accepted connection, seen from FreeSWITCH's side.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
    answer_probes: bool,
}

fn url_encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A `text/event-plain` message as `switch_event_serialize` and mod_event_socket write it.
fn event_bytes(headers: &[(&str, &str)], body: Option<&str>) -> String {
    let mut inner = String::new();
    for (k, v) in headers {
        inner.push_str(&format!("{k}: {}\n", url_encode(v)));
    }
    match body {
        Some(b) => inner.push_str(&format!("Content-Length: {}\n\n{b}", b.len())),
        None => inner.push('\n'),
    }
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{inner}",
        inner.len()
    )
}

fn api_bytes(body: &str) -> String {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

fn reply_bytes(text: &str) -> String {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n")
}

impl Peer {
    async fn write(&mut self, s: &str) {
        self.stream
            .write_all(s.as_bytes())
            .await
            .expect("fake write");
    }

    async fn reply(&mut self, text: &str) {
        self.write(&reply_bytes(text)).await;
    }

    async fn api(&mut self, body: &str) {
        self.write(&api_bytes(body)).await;
    }

    async fn event(&mut self, headers: &[(&str, &str)], body: Option<&str>) {
        self.write(&event_bytes(headers, body)).await;
    }

    /// The next command from the client (its line and header lines; keepalive probes
    /// answered and skipped when `answer_probes`); None at EOF.
    async fn recv(&mut self) -> Option<String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let cmd = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                if cmd == "api version" && self.answer_probes {
                    self.api("FreeSWITCH Version 1.10.12-release~64bit (-release 64bit)\n")
                        .await;
                    continue;
                }
                return Some(cmd);
            }
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn expect(&mut self, prefix: &str) -> String {
        let cmd = self.recv().await.expect("client closed");
        assert!(cmd.starts_with(prefix), "expected {prefix:?}, got {cmd:?}");
        cmd
    }

    /// auth/request, auth, the subscription, version, show channels: returns the
    /// subscription line.
    async fn login(&mut self, channels: &str) -> String {
        self.write("Content-Type: auth/request\n\n").await;
        let auth = self.expect("auth ").await;
        assert_eq!(auth, "auth ClueCon");
        self.reply("+OK accepted").await;
        let sub = self.expect("event plain").await;
        self.reply("+OK event listener enabled plain").await;
        // `api version` is answered by recv(); the next command is the snapshot.
        let show = self.expect("api show channels").await;
        assert_eq!(show, "api show channels as json");
        self.api(channels).await;
        sub
    }
}

async fn connected(client: &EslClient) -> String {
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

async fn disconnected(client: &EslClient) -> String {
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

async fn next_notice(rx: &mut broadcast::Receiver<EslNotice>) -> EslNotice {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("a notice in time")
        .expect("notice")
}

async fn next_event(rx: &mut broadcast::Receiver<EslNotice>) -> Arc<Event> {
    loop {
        if let EslNotice::Event(e) = next_notice(rx).await {
            return e;
        }
    }
}

async fn next_resync(rx: &mut broadcast::Receiver<EslNotice>) -> Arc<Resync> {
    loop {
        if let EslNotice::Resync(r) = next_notice(rx).await {
            return r;
        }
    }
}

#[test]
fn subscription_puts_background_job_first_and_custom_subclasses_last() {
    let s = settings(8021);
    assert_eq!(
        subscription(&s).expect("subscription").command_line(),
        SUBSCRIBED
    );
    // Names given in any order, CUSTOM among them, duplicates: still one valid line.
    let s = EslSettings {
        events: vec![
            "CUSTOM".into(),
            "CHANNEL_ANSWER".into(),
            "BACKGROUND_JOB".into(),
            "channel_answer".into(),
            "ALL".into(),
        ],
        custom: vec!["callcenter::info".into(), "sofia::register".into()],
        ..settings(8021)
    };
    assert_eq!(
        subscription(&s).expect("subscription").command_line(),
        "event plain BACKGROUND_JOB CHANNEL_ANSWER CUSTOM callcenter::info sofia::register"
    );
    // A name that would end the line or add a command is refused.
    for bad in ["CHANNEL_ANSWER\n\napi shutdown", "A B", "x$y"] {
        let s = EslSettings {
            events: vec![bad.into()],
            ..settings(8021)
        };
        assert!(subscription(&s).is_err(), "{bad:?}");
    }
}

#[test]
fn channel_rows_from_show_channels_as_json() {
    let rows = parse_channels(TWO_CHANNELS).expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].uuid(), Some("a1b2"));
    assert_eq!(rows[0].call_uuid(), None, "null reads as absent");
    assert_eq!(rows[1].get("created_epoch"), Some("1764640001"));
    assert_eq!(rows[1].call_uuid(), Some("a1b2"));
    assert_eq!(parse_channels("{\"row_count\":0}\n").expect("none"), vec![]);
    assert!(parse_channels("-ERR no reply\n").is_err());
    assert!(parse_channels("<html>").is_err());
    assert!(parse_channels("{\"rows\":5}").is_err());
}

#[tokio::test]
async fn login_subscribes_relearns_calls_and_reports_events() {
    let fake = Fake::new().await;
    let (client, mut notices) = EslClient::spawn_subscribed(
        settings(fake.port),
        SupervisorSettings::new("127.0.0.1", fake.port),
    );
    let mut peer = fake.accept().await;
    assert_eq!(peer.login(TWO_CHANNELS).await, SUBSCRIBED);
    assert!(connected(&client).await.contains("1.10.12"));
    let resync = next_resync(&mut notices).await;
    assert_eq!(resync.login, 1);
    assert_eq!(resync.problem, None);
    assert_eq!(resync.channels.len(), 2);
    peer.event(
        &[
            ("Event-Name", "CHANNEL_ANSWER"),
            ("Unique-ID", "a1b2"),
            ("Caller-Caller-ID-Name", "Lead 42 & co"),
            ("variable_empty", ""),
        ],
        None,
    )
    .await;
    let e = next_event(&mut notices).await;
    assert_eq!(e.name(), "CHANNEL_ANSWER");
    assert_eq!(
        e.get("Caller-Caller-ID-Name").as_deref(),
        Some("Lead 42 & co")
    );
    assert_eq!(e.get("variable_empty").as_deref(), Some(""));
    let st = client.stats();
    assert_eq!(st.connection.logins, 1);
    assert_eq!(st.events_by_name.get("CHANNEL_ANSWER"), Some(&1));
    assert_eq!(st.resyncs, 1);
    client.shutdown().await;
    assert_eq!(peer.recv().await.as_deref(), Some("exit"));
}

#[tokio::test]
async fn real_bytes_split_across_reads_give_every_event() {
    let wire = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/freeswitch/queue_ring_all/esl.txt"
    ))
    .expect("fixture");
    // What the framer alone makes of the capture.
    let mut framer = Framer::new(FrameLimits::default());
    framer.extend(&wire);
    let mut expected = Vec::new();
    let mut answers = 0;
    while let Some(f) = framer.next_frame().expect("fixture frames") {
        match f {
            Frame::Event(e) => expected.push(e.name().into_owned()),
            Frame::CommandReply(_) | Frame::ApiResponse { .. } => answers += 1,
            _ => {}
        }
    }
    assert!(expected.len() > 20, "{expected:?}");
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut notices = client.events();
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    // The capture in chunks of 1 to 13 bytes, each its own write.
    let mut at = 0;
    let mut size = 1;
    while at < wire.len() {
        let end = (at + size).min(wire.len());
        peer.stream.write_all(&wire[at..end]).await.expect("write");
        peer.stream.flush().await.expect("flush");
        at = end;
        size = size % 13 + 1;
        if size == 1 {
            tokio::task::yield_now().await;
        }
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(next_event(&mut notices).await.name().into_owned());
    }
    assert_eq!(got, expected);
    assert_eq!(client.stats().unmatched_replies, answers);
    assert_eq!(client.stats().connection.malformed_frames, 0);
}

#[tokio::test]
async fn answers_go_to_their_callers_in_order() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    let (c1, c2, c3) = (client.clone(), client.clone(), client.clone());
    let a = tokio::spawn(async move { c1.api("status", T).await });
    let first = peer.expect("api ").await;
    let b = tokio::spawn(async move { c2.api("sofia status", T).await });
    let second = peer.expect("api ").await;
    let f = Command::filter("Unique-ID", "a1b2").expect("filter");
    let c = tokio::spawn(async move { c3.send(&f, T).await });
    peer.expect("filter ").await;
    // Answered in the order they were written, with an event in between.
    peer.api(&format!("answer to {first}")).await;
    peer.event(&[("Event-Name", "HEARTBEAT")], None).await;
    peer.api(&format!("answer to {second}")).await;
    peer.reply("+OK filter added. [Unique-ID]=[a1b2]").await;
    assert_eq!(a.await.expect("a").expect("a ok"), "answer to api status");
    assert_eq!(
        b.await.expect("b").expect("b ok"),
        "answer to api sofia status"
    );
    match c.await.expect("c").expect("c ok") {
        EslAnswer::Reply(r) => assert!(r.is_ok(), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bgapi_results_are_matched_by_job_uuid_in_any_order() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut notices = client.events();
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    let (c1, c2) = (client.clone(), client.clone());
    let one = tokio::spawn(async move { c1.bgapi("originate user/100 4930123457", T).await });
    let cmd1 = peer.expect("bgapi originate").await;
    let two = tokio::spawn(async move { c2.bgapi("uuid_kill c3d4", T).await });
    let cmd2 = peer.expect("bgapi uuid_kill").await;
    let job_of = |cmd: &str| {
        cmd.lines()
            .find_map(|l| l.strip_prefix("Job-UUID: "))
            .expect("the client names its Job-UUID")
            .to_owned()
    };
    let (job1, job2) = (job_of(&cmd1), job_of(&cmd2));
    assert_ne!(job1, job2);
    peer.reply(&format!("+OK Job-UUID: {job1}")).await;
    // The second job's event comes before its reply, and before the first job's event.
    peer.event(
        &[
            ("Event-Name", "BACKGROUND_JOB"),
            ("Job-UUID", &job2),
            ("Job-Command", "uuid_kill"),
        ],
        Some("-ERR No such channel!\n"),
    )
    .await;
    peer.reply(&format!("+OK Job-UUID: {job2}")).await;
    peer.event(
        &[
            ("Event-Name", "BACKGROUND_JOB"),
            ("Job-UUID", "someone-else"),
        ],
        Some("+OK not ours\n"),
    )
    .await;
    peer.event(
        &[
            ("Event-Name", "BACKGROUND_JOB"),
            ("Job-UUID", &job1),
            ("Job-Command", "originate"),
        ],
        Some("+OK 7f4de4bc-17d7-11dd-b7a0-db4edd065621\n"),
    )
    .await;
    let r1 = one.await.expect("one").expect("job 1");
    assert_eq!(r1.outcome(), Ok("7f4de4bc-17d7-11dd-b7a0-db4edd065621"));
    let r2 = two.await.expect("two").expect("job 2");
    assert_eq!(r2.outcome(), Err("No such channel!"));
    assert_eq!(client.stats().jobs_matched, 2);
    // Subscribers see every BACKGROUND_JOB too (the unmatched one included).
    let mut jobs = Vec::new();
    while jobs.len() < 3 {
        let e = next_event(&mut notices).await;
        jobs.push(e.get("Job-UUID").unwrap_or_default().into_owned());
    }
    assert_eq!(jobs, vec![job2, "someone-else".into(), job1]);
}

#[tokio::test]
async fn a_refused_bgapi_is_a_clear_error() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    let c = client.clone();
    let job = tokio::spawn(async move { c.bgapi("nosuchcommand", T).await });
    peer.expect("bgapi nosuchcommand").await;
    peer.reply("-ERR nosuchcommand Command not found!").await;
    match job.await.expect("join") {
        Err(EslError::CommandFailed { message, .. }) => {
            assert!(message.contains("Command not found"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unsafe_values_never_reach_the_wire() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    for bad in ["status\n\napi shutdown", "status\rexit", ""] {
        assert!(
            matches!(client.api(bad, T).await, Err(EslError::Refused(_))),
            "{bad:?}"
        );
        assert!(
            matches!(client.bgapi(bad, T).await, Err(EslError::Refused(_))),
            "{bad:?}"
        );
    }
    assert_eq!(client.stats().refused_commands, 6);
    let c = client.clone();
    let ok = tokio::spawn(async move { c.api("status", T).await });
    // The first command the server sees is the valid one.
    assert_eq!(peer.expect("api").await, "api status");
    peer.api("UP 0 years\n").await;
    assert_eq!(ok.await.expect("join").expect("status"), "UP 0 years\n");
}

#[tokio::test(start_paused = true)]
async fn wrong_password_is_reported_and_retried_with_backoff() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(EslSettings::new("127.0.0.1", fake.port, "wrong"));
    let mut accepted = Vec::new();
    for _ in 0..4 {
        let mut peer = fake.accept().await;
        accepted.push(Instant::now());
        peer.write("Content-Type: auth/request\n\n").await;
        assert_eq!(peer.expect("auth").await, "auth wrong");
        // What mod_event_socket does: -ERR invalid, a disconnect notice, close.
        peer.reply("-ERR invalid").await;
        peer.write(
            "Content-Type: text/disconnect-notice\nContent-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n",
        )
        .await;
        drop(peer);
        let reason = disconnected(&client).await;
        assert!(
            reason.contains("password") && reason.contains("-ERR invalid"),
            "{reason}"
        );
    }
    let gaps: Vec<Duration> = accepted.windows(2).map(|w| w[1] - w[0]).collect();
    // 0.5-1 s, 1-2 s, 2-4 s: growing, never immediate.
    assert!(gaps[0] >= Duration::from_millis(500), "{gaps:?}");
    for w in gaps.windows(2) {
        assert!(w[1] > w[0], "{gaps:?}");
    }
    let st = client.stats().connection;
    assert_eq!(st.login_failures, 4);
    assert_eq!(st.logins, 0);
    assert!(matches!(
        client.api("status", T).await,
        Err(EslError::NotConnected { .. })
    ));
}

#[tokio::test]
async fn rude_rejection_is_a_clear_error() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut peer = fake.accept().await;
    peer.write(
        "Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n",
    )
    .await;
    drop(peer);
    let reason = disconnected(&client).await;
    assert!(
        reason.contains("Access Denied") && reason.contains("apply-inbound-acl"),
        "{reason}"
    );
    assert_eq!(client.stats().connection.login_failures, 1);
}

#[tokio::test]
async fn disconnect_notice_ends_the_connection_then_resubscribes_and_relearns() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut notices = client.events();
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    assert_eq!(next_resync(&mut notices).await.login, 1);
    // A call waiting when the server says goodbye fails at once, with the reason.
    let c = client.clone();
    let waiting = tokio::spawn(async move { c.api("status", T).await });
    peer.expect("api status").await;
    peer.write(
        "Content-Type: text/disconnect-notice\nContent-Length: 23\n\nDisconnected, goodbye.\n",
    )
    .await;
    match waiting.await.expect("join") {
        Err(EslError::Disconnected { reason, .. }) => {
            assert!(reason.contains("Disconnected, goodbye."), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    drop(peer);
    let mut peer = fake.accept().await;
    assert_eq!(peer.login(TWO_CHANNELS).await, SUBSCRIBED, "re-subscribed");
    connected(&client).await;
    let resync = next_resync(&mut notices).await;
    assert_eq!((resync.login, resync.channels.len()), (2, 2));
    peer.event(&[("Event-Name", "CHANNEL_HANGUP_COMPLETE")], None)
        .await;
    assert_eq!(
        next_event(&mut notices).await.name(),
        "CHANNEL_HANGUP_COMPLETE"
    );
    assert_eq!(client.stats().connection.reconnects, 1);
}

#[tokio::test]
async fn a_bad_frame_ends_that_connection_only() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    for (i, garbage) in [
        "Content-Type: api/response\nContent-Length: 12x\n\n".to_owned(),
        "this is not a header\n\n".to_owned(),
        format!(
            "Content-Type: text/event-plain\nX: {}\n\n",
            "y".repeat(20 * 1024)
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut peer = fake.accept().await;
        peer.login("{\"row_count\":0}").await;
        connected(&client).await;
        peer.write(&garbage).await;
        let reason = disconnected(&client).await;
        assert!(reason.contains("bad event socket frame"), "{reason}");
        assert_eq!(client.stats().connection.malformed_frames, i as u64 + 1);
    }
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
}

#[tokio::test]
async fn a_bad_snapshot_is_reported_not_fatal() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut notices = client.events();
    let mut peer = fake.accept().await;
    peer.login("-ERR show Command not found!\n").await;
    connected(&client).await;
    let resync = next_resync(&mut notices).await;
    assert!(resync.channels.is_empty());
    assert!(
        resync
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("-ERR")),
        "{resync:?}"
    );
    assert_eq!(client.stats().resync_problems, 1);
}

#[tokio::test]
async fn a_lagging_subscriber_is_counted_not_awaited() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut slow = client.events();
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    let mut burst = String::new();
    for i in 0..EVENT_CAPACITY + 10 {
        burst.push_str(&event_bytes(
            &[("Event-Name", "CHANNEL_CREATE"), ("N", &i.to_string())],
            None,
        ));
    }
    peer.write(&burst).await;
    let c = client.clone();
    let sync = tokio::spawn(async move { c.api("status", T).await });
    peer.expect("api status").await;
    peer.api("UP\n").await;
    // Answered after the burst: every event of it was dispatched without waiting for `slow`.
    sync.await.expect("join").expect("status");
    // The Resync and EVENT_CAPACITY + 10 events: 11 notices more than the channel holds.
    assert_eq!(client.stats().events_lagged, 11);
    assert!(matches!(slow.recv().await, Err(RecvError::Lagged(11))));
    match slow.recv().await.expect("notice") {
        EslNotice::Event(e) => assert_eq!(e.get("N").as_deref(), Some("10")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_socket_detected_within_30s() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    let silent_from = Instant::now();
    // The server reads the probes but never answers them.
    peer.answer_probes = false;
    let probes = tokio::spawn(async move {
        let mut n = 0;
        while let Some(cmd) = peer.recv().await {
            if cmd == "api version" {
                n += 1;
            }
        }
        n
    });
    let reason = disconnected(&client).await;
    let silent_for = silent_from.elapsed();
    assert!(reason.contains("half-open"), "{reason}");
    assert!(
        silent_for >= Duration::from_secs(25) && silent_for <= Duration::from_secs(30),
        "{silent_for:?}"
    );
    assert_eq!(client.stats().connection.half_open_drops, 1);
    assert_eq!(probes.await.expect("join"), 2, "a probe every 10 s");
}

#[tokio::test(start_paused = true)]
async fn commands_left_unanswered_end_the_connection_while_events_flow() {
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    let since = Instant::now();
    peer.answer_probes = false;
    // Events every 5 s keep the socket busy (never idle), but no command gets an answer.
    let server = tokio::spawn(async move {
        loop {
            tokio::select! {
                cmd = peer.recv() => if cmd.is_none() { break },
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if peer.stream.write_all(event_bytes(&[("Event-Name", "HEARTBEAT")], None).as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let reason = disconnected(&client).await;
    assert!(reason.contains("unanswered"), "{reason}");
    // The first probe (10 s) is found unanswered at the keepalive 30 s after it.
    let after = since.elapsed();
    assert!(
        after >= Duration::from_secs(40) && after <= Duration::from_secs(41),
        "{after:?}"
    );
    assert_eq!(client.stats().connection.half_open_drops, 0);
    server.abort();
}

#[tokio::test]
async fn not_connected_fails_at_once_and_shutdown_closes() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let client = EslClient::spawn(settings(port));
    disconnected(&client).await;
    match client.api("status", T).await {
        Err(EslError::NotConnected { reason }) => assert!(reason.contains("connect"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(client.stats().connection.sent_while_down >= 1);
    client.shutdown().await;
    assert!(matches!(
        client.api("status", T).await,
        Err(EslError::Closed)
    ));
}

/// Measurement, not a pass/fail check: the events per second the client takes from a socket
/// to a subscriber (framing, URL-decoding on read, counting, fan-out), on the real events of
/// the `queue_ring_all` capture repeated. Run:
/// `cargo test --release --lib esl::client::tests::event_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release mode"]
async fn event_throughput() {
    let wire = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/freeswitch/queue_ring_all/esl.txt"
    ))
    .expect("fixture");
    // Only the events of the capture (its replies would have no command waiting).
    let mut framer = Framer::new(FrameLimits::default());
    framer.extend(&wire);
    let mut events = Vec::new();
    let mut at = 0;
    let mut offsets = Vec::new();
    while let Some(f) = framer.next_frame().expect("fixture frames") {
        let consumed = wire.len() - framer.buffered();
        if matches!(f, Frame::Event(_)) {
            offsets.push((at, consumed));
        }
        at = consumed;
    }
    for (from, to) in offsets {
        events.extend_from_slice(&wire[from..to]);
    }
    let per_copy = {
        let mut f = Framer::new(FrameLimits::default());
        f.extend(&events);
        let mut n = 0;
        while f.next_frame().expect("events").is_some() {
            n += 1;
        }
        n
    };
    let copies = 2000;
    let total = per_copy * copies;
    let fake = Fake::new().await;
    let client = EslClient::spawn(settings(fake.port));
    let mut rx = client.events();
    let mut peer = fake.accept().await;
    peer.login("{\"row_count\":0}").await;
    connected(&client).await;
    let counter = tokio::spawn(async move {
        let mut n = 0usize;
        let mut lagged = 0u64;
        let mut first = None;
        while n < total {
            match rx.recv().await {
                Ok(EslNotice::Event(e)) => {
                    first.get_or_insert_with(std::time::Instant::now);
                    // Read a header, as a subscriber would (decoding happens on read).
                    std::hint::black_box(e.get("Unique-ID"));
                    n += 1;
                }
                Ok(EslNotice::Resync(_)) => {}
                Err(RecvError::Lagged(k)) => {
                    lagged += k;
                    n += k as usize;
                }
                Err(RecvError::Closed) => break,
            }
        }
        (first.map(|t| t.elapsed()), lagged)
    });
    let start = std::time::Instant::now();
    for _ in 0..copies {
        peer.stream.write_all(&events).await.expect("write");
    }
    let (elapsed, lagged) = counter.await.expect("counter");
    let wall = start.elapsed();
    let mb = (events.len() * copies) as f64 / 1e6;
    eprintln!(
        "ESL client: {total} events ({mb:.1} MB, {} B/event) in {wall:?}: {:.0} events/s, {:.1} MB/s; \
         subscriber lagged by {lagged}; first-to-last {elapsed:?}",
        events.len() / per_copy,
        total as f64 / wall.as_secs_f64(),
        mb / wall.as_secs_f64()
    );
    assert_eq!(client.stats().connection.malformed_frames, 0);
}

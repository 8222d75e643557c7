//! The supervisor driving a minimal line protocol (`HELLO` greeting, `REQ <id>` / `ANS <id>`,
//! `PING` keepalive, `BYE` goodbye) against a fake server on 127.0.0.1: what every PBX client
//! gets from it without protocol code of its own. The AMI and ESL clients' own tests cover the
//! same behaviour through their protocols.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::*;

#[derive(Debug, thiserror::Error)]
enum LineError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("bad line {0:?}")]
    Bad(String),
}

#[derive(Default)]
struct Waiting {
    by_id: HashMap<String, oneshot::Sender<()>>,
}

struct Line {
    sup: Arc<Supervisor<Waiting>>,
}

#[derive(Default)]
struct LineSession {
    buf: Vec<u8>,
}

impl Protocol for Line {
    type Pending = Waiting;
    type Session = LineSession;
    type Ticket = ();
    type Error = LineError;
    const NAME: &'static str = "LINE";

    async fn connect(&mut self, link: &mut Link) -> Result<(LineSession, String), LineError> {
        let mut session = LineSession::default();
        within_step("greeting", link.setup_timeout(), async {
            while !session.buf.contains(&b'\n') {
                let bytes = link.read().await?;
                session.buf.extend_from_slice(bytes);
            }
            Ok::<_, LineError>(())
        })
        .await?;
        let end = session.buf.iter().position(|&b| b == b'\n').unwrap_or(0);
        let greeting = String::from_utf8_lossy(&session.buf[..end]).into_owned();
        session.buf.drain(..=end);
        match greeting.strip_prefix("HELLO ") {
            Some(v) => Ok((session, v.to_owned())),
            None => Err(LineError::Bad(greeting)),
        }
    }

    fn received(&mut self, session: &mut LineSession, bytes: &[u8]) -> Result<(), LineError> {
        session.buf.extend_from_slice(bytes);
        while let Some(end) = session.buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&session.buf[..end]).into_owned();
            session.buf.drain(..=end);
            if let Some(id) = line.strip_prefix("ANS ") {
                if let Some(tx) = self.sup.with_pending(|w| w.by_id.remove(id)) {
                    let _ = tx.send(());
                }
            } else if line != "PONG" {
                return Err(LineError::Bad(line));
            }
        }
        Ok(())
    }

    fn written(&mut self, _session: &mut LineSession, _ticket: ()) {}

    fn keepalive(&mut self, _session: &mut LineSession) -> Result<Option<Vec<u8>>, LineError> {
        Ok(Some(b"PING\n".to_vec()))
    }

    fn goodbye(&mut self, _session: &mut LineSession) -> Option<Vec<u8>> {
        Some(b"BYE\n".to_vec())
    }

    fn classify(error: &LineError) -> Failure {
        match error {
            LineError::Link(LinkError::HalfOpen { .. }) => Failure::HalfOpen,
            LineError::Bad(_) => Failure::MalformedFrame,
            LineError::Link(_) => Failure::Other,
        }
    }
}

fn start(port: u16) -> (Arc<Supervisor<Waiting>>, mpsc::Sender<Outgoing<()>>) {
    let sup = Supervisor::new("LINE", format!("127.0.0.1:{port}"));
    let (tx, rx) = mpsc::channel(16);
    sup.spawn(
        Line { sup: sup.clone() },
        SupervisorSettings::new("127.0.0.1", port),
        rx,
    );
    (sup, tx)
}

async fn accept(listener: &TcpListener) -> BufReader<TcpStream> {
    let (s, _) = listener.accept().await.expect("accept");
    s.set_nodelay(true).expect("nodelay");
    BufReader::new(s)
}

async fn line(peer: &mut BufReader<TcpStream>) -> Option<String> {
    let mut l = String::new();
    match peer.read_line(&mut l).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(l.trim_end().to_owned()),
    }
}

async fn state(sup: &Supervisor<Waiting>, pred: impl Fn(&ConnectionState) -> bool) {
    let mut rx = sup.state();
    tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|s| pred(s)))
        .await
        .expect("state in time")
        .expect("state channel");
}

/// Registers request `id` and queues it; returns the answer's receiver.
async fn request(
    sup: &Supervisor<Waiting>,
    tx: &mpsc::Sender<Outgoing<()>>,
    id: &str,
) -> Option<oneshot::Receiver<()>> {
    let (done, rx) = oneshot::channel();
    let (generation, ()) = sup.register(|w| {
        w.by_id.insert(id.to_owned(), done);
    })?;
    tx.send(Outgoing {
        generation,
        bytes: format!("REQ {id}\n").into_bytes(),
        ticket: (),
    })
    .await
    .expect("queue");
    Some(rx)
}

#[tokio::test]
async fn requests_of_a_lost_connection_fail_and_never_reach_the_next() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (sup, tx) = start(port);
    let mut peer = accept(&listener).await;
    peer.get_mut()
        .write_all(b"HELLO v1\n")
        .await
        .expect("hello");
    state(&sup, ConnectionState::is_connected).await;
    let answered = request(&sup, &tx, "1").await.expect("connected");
    assert_eq!(line(&mut peer).await.as_deref(), Some("REQ 1"));
    peer.get_mut().write_all(b"ANS 1\n").await.expect("answer");
    answered.await.expect("answered");
    // Registered on generation 1, queued after it ended: its waiter fails, its bytes are
    // dropped.
    let (generation, ()) = sup.register(|_| ()).expect("still connected");
    let waiting = request(&sup, &tx, "2").await.expect("connected");
    assert_eq!(line(&mut peer).await.as_deref(), Some("REQ 2"));
    drop(peer);
    state(&sup, |s| matches!(s, ConnectionState::Disconnected { .. })).await;
    assert!(
        waiting.await.is_err(),
        "the waiter of a lost connection fails"
    );
    assert!(
        request(&sup, &tx, "3").await.is_none(),
        "refused while down"
    );
    tx.send(Outgoing {
        generation,
        bytes: b"REQ stale\n".to_vec(),
        ticket: (),
    })
    .await
    .expect("queue");
    let mut peer = accept(&listener).await;
    peer.get_mut()
        .write_all(b"HELLO v2\n")
        .await
        .expect("hello");
    state(&sup, ConnectionState::is_connected).await;
    let fresh = request(&sup, &tx, "4").await.expect("connected");
    assert_eq!(
        line(&mut peer).await.as_deref(),
        Some("REQ 4"),
        "no stale bytes"
    );
    peer.get_mut().write_all(b"ANS 4\n").await.expect("answer");
    fresh.await.expect("answered");
    let st = sup.stats();
    assert_eq!((st.logins, st.reconnects, st.sent_while_down), (2, 1, 1));
    sup.shutdown().await;
    assert_eq!(line(&mut peer).await.as_deref(), Some("BYE"));
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_back_off_doubling_to_the_cap() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (sup, _tx) = start(port);
    let mut at = Vec::new();
    for _ in 0..10 {
        // A greeting that is not the protocol: a malformed login.
        let mut peer = accept(&listener).await;
        at.push(Instant::now());
        let _ = peer.get_mut().write_all(b"GO AWAY\n").await;
        while line(&mut peer).await.is_some() {}
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // 0.5-1, 1-2, 2-4, 4-8, 8-16, 16-30, then 15-30 s.
    for (i, g) in gaps.iter().enumerate() {
        let ceiling = Duration::from_millis(1000 << i.min(5)).min(Duration::from_secs(30));
        assert!(
            *g >= ceiling / 2 && *g <= ceiling + Duration::from_millis(100),
            "gap {i}: {gaps:?}"
        );
    }
    let st = sup.stats();
    assert_eq!(st.malformed_frames, 10);
    assert_eq!(st.connect_failures, 10);
    assert_eq!(st.logins, 0);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn keepalive_every_interval_and_silence_is_half_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (sup, _tx) = start(port);
    let mut peer = accept(&listener).await;
    peer.get_mut()
        .write_all(b"HELLO v1\n")
        .await
        .expect("hello");
    state(&sup, ConnectionState::is_connected).await;
    let since = Instant::now();
    let mut pings = Vec::new();
    while let Some(l) = line(&mut peer).await {
        assert_eq!(l, "PING");
        pings.push(since.elapsed());
    }
    // Pings at 10 s and 20 s, never answered: dropped at 25 s.
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert!(
        since.elapsed() >= Duration::from_secs(25),
        "{:?}",
        since.elapsed()
    );
    state(&sup, |s| matches!(s, ConnectionState::Disconnected { reason, .. } if reason.contains("half-open"))).await;
    assert_eq!(sup.stats().half_open_drops, 1);
    sup.shutdown().await;
}

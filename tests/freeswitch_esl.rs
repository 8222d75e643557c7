//! The event-socket client (`pbxlink::pbx::freeswitch::esl::EslClient`) against a REAL
//! FreeSWITCH 1.10.12 (`tests/freeswitch/rig.sh`): login and subscription, `api status`, a
//! `bgapi` job and its BACKGROUND_JOB, the events of a real SIP call placed with sipp, the calls
//! in progress re-learnt when the connection is cut during a call (through a TCP relay the test
//! controls), a FreeSWITCH restart (disconnect notice, reconnect, re-subscribe, events of the
//! next call), and a wrong password (a clear error, retried with backoff, never logged in).
//!
//! Root only (the rig is a chroot); otherwise a loud SKIPPED banner. Holds the rig's lock.
//!
//! `cargo test --release --test freeswitch_esl -- --ignored --nocapture esl_events_per_second`
//! measures the events per second the client takes from the real FreeSWITCH: 64 callers keep
//! `bgapi echo` jobs in flight, each job ending in a BACKGROUND_JOB event that is matched to its
//! caller and also reaches a subscriber (FreeSWITCH runs a thread per job: the figure is what
//! the pair sustains, not the client's ceiling, which `esl::client::tests::event_throughput`
//! measures on replayed real bytes).

mod fsrig;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxlink::pbx::connection::{ConnectionState, SupervisorSettings};
use pbxlink::pbx::freeswitch::esl::{EslClient, EslError, EslNotice, EslSettings, Event, Resync};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(10);

fn settings(port: u16, password: &str) -> EslSettings {
    EslSettings::new("127.0.0.1", port, password)
}

/// A TCP relay 127.0.0.1:<port> → the rig's event socket, whose connections the test can cut.
struct Relay {
    port: u16,
    conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                list.lock().expect("relay list").push(task);
            }
        });
        Relay {
            port,
            conns,
            _accept: accept,
        }
    }

    /// Cuts every relayed connection (both sockets closed).
    fn cut(&self) {
        for t in self.conns.lock().expect("relay list").drain(..) {
            t.abort();
        }
    }
}

async fn wait_state(
    client: &EslClient,
    what: &str,
    within: Duration,
    pred: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    let mut state = client.state();
    let s = tokio::time::timeout(within, state.wait_for(|s| pred(s)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "not {what} within {within:?}: {:?}",
                client.state().borrow()
            )
        })
        .expect("state channel");
    s.clone()
}

async fn connected(client: &EslClient, within: Duration) -> String {
    match wait_state(client, "connected", within, ConnectionState::is_connected).await {
        ConnectionState::Connected { version, .. } => version,
        other => panic!("{other:?}"),
    }
}

/// The next notice matching `pred` within `within` (lag is a failure: nothing may be lost here).
async fn wait_notice<R>(
    rx: &mut broadcast::Receiver<EslNotice>,
    what: &str,
    within: Duration,
    mut pred: impl FnMut(&EslNotice) -> Option<R>,
) -> R {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("no {what} within {within:?}"),
            Ok(Err(RecvError::Lagged(n))) => panic!("subscriber lagged by {n} waiting for {what}"),
            Ok(Err(RecvError::Closed)) => panic!("notices closed waiting for {what}"),
            Ok(Ok(n)) => {
                if let Some(r) = pred(&n) {
                    return r;
                }
            }
        }
    }
}

async fn wait_resync(rx: &mut broadcast::Receiver<EslNotice>, within: Duration) -> Arc<Resync> {
    wait_notice(rx, "Resync", within, |n| match n {
        EslNotice::Resync(r) => Some(r.clone()),
        EslNotice::Event(_) => None,
    })
    .await
}

async fn wait_event(
    rx: &mut broadcast::Receiver<EslNotice>,
    what: &str,
    within: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Arc<Event> {
    wait_notice(rx, what, within, |n| match n {
        EslNotice::Event(e) if pred(e) => Some(e.clone()),
        _ => None,
    })
    .await
}

fn named(e: &Event, name: &str) -> bool {
    e.name() == name
}

/// Events of one call into 4930100: every channel's create, answer and hangup, collected until
/// as many hangups as creates arrived.
async fn events_of_a_call(
    rx: &mut broadcast::Receiver<EslNotice>,
    sipp_port: &'static str,
) -> Vec<Arc<Event>> {
    let call = tokio::task::spawn_blocking(move || fsrig::carrier_call("4930100", 3000, sipp_port));
    let mut events = Vec::new();
    let (mut created, mut hung_up) = (0, 0);
    while created == 0 || hung_up < created {
        let e = wait_event(rx, "the call's events", Duration::from_secs(40), |e| {
            e.name().starts_with("CHANNEL_")
        })
        .await;
        match &*e.name() {
            "CHANNEL_CREATE" => created += 1,
            "CHANNEL_HANGUP_COMPLETE" => hung_up += 1,
            _ => {}
        }
        events.push(e);
    }
    let (ok, out) = call.await.expect("sipp thread");
    assert!(ok, "sipp call into 4930100 failed:\n{out}");
    events
}

fn uuids(events: &[Arc<Event>]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e.get("Unique-ID").map(|u| u.into_owned()))
        .collect()
}

/// rig.sh `args` with FreeSWITCH's core SQL on (`PBXLINK_FREESWITCH_SQL=1`): `show channels`,
/// with which the client re-learns calls in progress, needs it, as on any ordinary install.
fn rig(args: &'static [&'static str]) -> JoinHandle<String> {
    tokio::task::spawn_blocking(move || fsrig::rig_ok_with(args, SQL_ON))
}

/// The environment for rig.sh that turns FreeSWITCH's core SQL on.
const SQL_ON: &[(&str, &str)] = &[("PBXLINK_FREESWITCH_SQL", "1")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esl_client_against_real_freeswitch() {
    if !fsrig::root_or_skip(
        "tests/freeswitch_esl.rs",
        "The event-socket client (login, api, bgapi, events, re-learning, restart, wrong password)",
    ) {
        return;
    }
    let _rig =
        tokio::task::spawn_blocking(|| fsrig::install_and_start_with("freeswitch_esl", SQL_ON))
            .await
            .expect("install and start");
    let esl_port = fsrig::esl_port();
    let password = fsrig::esl_password();

    // 1. Login, subscription, the first snapshot.
    let relay = Relay::start(esl_port).await;
    let (client, mut notices) = EslClient::spawn_subscribed(
        settings(relay.port, &password),
        SupervisorSettings::new("127.0.0.1", relay.port),
    );
    let version = connected(&client, Duration::from_secs(30)).await;
    assert!(version.contains("1.10.12"), "version: {version}");
    let first = wait_resync(&mut notices, T).await;
    assert_eq!((first.login, first.problem.as_deref()), (1, None));
    eprintln!(
        "[freeswitch_esl] logged in: {version}; {} channels",
        first.channels.len()
    );

    // 2. api status: an api/response with a body.
    let status = client.api("status", T).await.expect("api status");
    assert!(
        status.contains("UP ") && status.contains("is ready"),
        "{status}"
    );

    // 3. bgapi: the result of the job, and the BACKGROUND_JOB event with its Job-UUID.
    let job = client.bgapi("status", T).await.expect("bgapi status");
    // `status` prints no +OK: its whole output is the job's result.
    assert!(job.result.contains("UP "), "{job:?}");
    assert!(job.job_uuid.starts_with("pbxlink-"), "{job:?}");
    let uuid = job.job_uuid.clone();
    let seen = wait_event(&mut notices, "BACKGROUND_JOB", T, |e| {
        named(e, "BACKGROUND_JOB") && e.get("Job-UUID").as_deref() == Some(uuid.as_str())
    })
    .await;
    assert!(seen.body_text().contains("UP "));
    let refused = client
        .bgapi("no_such_api_command", T)
        .await
        .expect("bgapi answered");
    assert!(refused.outcome().is_err(), "{refused:?}");
    assert!(matches!(
        client.api("status\n\napi fsctl shutdown", T).await,
        Err(EslError::Refused(_))
    ));

    // 4. A real call: every channel's life cycle arrives.
    let call = events_of_a_call(&mut notices, "25111").await;
    let names: BTreeSet<String> = call.iter().map(|e| e.name().into_owned()).collect();
    for n in [
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_HANGUP_COMPLETE",
    ] {
        assert!(names.contains(n), "{n} missing: {names:?}");
    }
    assert!(
        call.iter()
            .any(|e| e.get("Caller-Destination-Number").as_deref() == Some("4930100")),
        "no event names the DID"
    );
    eprintln!(
        "[freeswitch_esl] call: {} events, {} channels",
        call.len(),
        uuids(&call).len()
    );

    // 5. The connection cut during a call: the client reconnects, re-subscribes and re-learns
    //    the calls in progress from FreeSWITCH.
    let long_call = tokio::task::spawn_blocking(|| fsrig::carrier_call("4930100", 8000, "25112"));
    let answered = wait_event(
        &mut notices,
        "CHANNEL_BRIDGE of the long call",
        Duration::from_secs(30),
        |e| named(e, "CHANNEL_BRIDGE"),
    )
    .await;
    let in_call: BTreeSet<String> = [
        answered.get("Unique-ID").map(|u| u.into_owned()),
        answered.get("Other-Leg-Unique-ID").map(|u| u.into_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(!in_call.is_empty(), "{answered:?}");
    let live = client.channels(T).await.expect("show channels");
    assert!(
        in_call
            .iter()
            .all(|u| live.iter().any(|r| r.uuid() == Some(u.as_str()))),
        "{in_call:?} not in {live:?}"
    );
    relay.cut();
    wait_state(&client, "disconnected after the cut", T, |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    connected(&client, Duration::from_secs(30)).await;
    let relearnt = wait_resync(&mut notices, T).await;
    assert_eq!(relearnt.login, 2);
    for u in &in_call {
        assert!(
            relearnt
                .channels
                .iter()
                .any(|r| r.uuid() == Some(u.as_str())),
            "channel {u} of the call in progress not re-learnt: {:?}",
            relearnt.channels
        );
    }
    eprintln!(
        "[freeswitch_esl] re-learnt {} channels after the cut",
        relearnt.channels.len()
    );
    // Still subscribed: the call's hangups arrive on the new connection.
    let mut hung: BTreeSet<String> = BTreeSet::new();
    while !in_call.iter().all(|u| hung.contains(u)) {
        let e = wait_event(
            &mut notices,
            "hangups of the long call",
            Duration::from_secs(30),
            |e| named(e, "CHANNEL_HANGUP_COMPLETE"),
        )
        .await;
        hung.extend(e.get("Unique-ID").map(|u| u.into_owned()));
    }
    let (ok, out) = long_call.await.expect("sipp thread");
    assert!(ok, "long call failed:\n{out}");

    // 6. FreeSWITCH restarts: disconnect notice, reconnect, re-subscribe, events again.
    let logins_before = client.stats().connection.logins;
    let restart = rig(&["restart"]);
    let down = wait_state(
        &client,
        "disconnected by the restart",
        Duration::from_secs(30),
        |s| matches!(s, ConnectionState::Disconnected { .. }),
    )
    .await;
    let down_at = Instant::now();
    eprintln!("[freeswitch_esl] restart: {down:?}");
    let ConnectionState::Disconnected { reason, .. } = &down else {
        unreachable!()
    };
    assert!(
        reason.contains("shut down"),
        "the disconnect notice: {reason}"
    );
    connected(&client, Duration::from_secs(60)).await;
    eprintln!(
        "[freeswitch_esl] logged in again {:?} after FreeSWITCH said goodbye",
        down_at.elapsed()
    );
    restart.await.expect("restart");
    let after = wait_resync(&mut notices, T).await;
    assert!(after.login > logins_before, "{after:?}");
    assert!(
        after.channels.is_empty(),
        "a fresh FreeSWITCH has no calls: {after:?}"
    );
    let call = events_of_a_call(&mut notices, "25113").await;
    assert!(
        call.iter().any(|e| named(e, "CHANNEL_ANSWER")),
        "events after the restart"
    );
    let st = client.stats();
    eprintln!("[freeswitch_esl] stats: {st:?}");
    assert!(st.connection.reconnects >= 2, "{st:?}");
    assert_eq!(st.events_lagged, 0);
    assert_eq!(st.connection.malformed_frames, 0);
    client.shutdown().await;

    // 7. A wrong password: a clear error naming the key, retried with backoff, never logged in.
    let wrong = EslClient::spawn(settings(esl_port, "not-the-password"));
    let start = Instant::now();
    let reason = match wait_state(&wrong, "refused", T, |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await
    {
        ConnectionState::Disconnected { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    assert!(
        reason.contains("password") && reason.contains("-ERR invalid"),
        "{reason}"
    );
    while wrong.stats().connection.login_failures < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            wrong.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = start.elapsed();
    // Waits of 0.5-1 s then 1-2 s between the three tries.
    assert!(
        elapsed >= Duration::from_millis(1500),
        "3 refused logins in {elapsed:?}"
    );
    assert_eq!(wrong.stats().connection.logins, 0);
    eprintln!("[freeswitch_esl] wrong password: {reason}; 3 tries in {elapsed:?}");
    wrong.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement against the real FreeSWITCH; run in release mode"]
async fn esl_events_per_second() {
    if !fsrig::root_or_skip("tests/freeswitch_esl.rs", "The ESL events/s measurement") {
        return;
    }
    let _rig = tokio::task::spawn_blocking(|| {
        fsrig::install_and_start_with("freeswitch_esl bench", SQL_ON)
    })
    .await
    .expect("install and start");
    let port = fsrig::esl_port();
    let (client, mut notices) = EslClient::spawn_subscribed(
        settings(port, &fsrig::esl_password()),
        SupervisorSettings::new("127.0.0.1", port),
    );
    connected(&client, Duration::from_secs(30)).await;
    const JOBS: usize = 20_000;
    const IN_FLIGHT: usize = 64;
    let counter = tokio::spawn(async move {
        let mut n = 0;
        let mut lagged = 0;
        while n < JOBS {
            match notices.recv().await {
                Ok(EslNotice::Event(e)) if e.name() == "BACKGROUND_JOB" => n += 1,
                Ok(_) => {}
                Err(RecvError::Lagged(k)) => lagged += k,
                Err(RecvError::Closed) => break,
            }
        }
        (n, lagged)
    });
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (client, next) = (client.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= JOBS {
                    return worst;
                }
                let t = Instant::now();
                let job = client
                    .bgapi(&format!("echo job-{i}"), T)
                    .await
                    .expect("bgapi echo");
                assert_eq!(job.result.trim(), format!("job-{i}"));
                worst = worst.max(t.elapsed());
            }
        }));
    }
    let mut worst = Duration::ZERO;
    for w in workers {
        worst = worst.max(w.await.expect("worker"));
    }
    let (seen, lagged) = tokio::time::timeout(T, counter)
        .await
        .expect("subscriber in time")
        .expect("subscriber");
    let wall = start.elapsed();
    let st = client.stats();
    eprintln!(
        "[freeswitch_esl] {JOBS} bgapi jobs ({IN_FLIGHT} in flight) in {wall:?}: {:.0} BACKGROUND_JOB events/s \
         (+ as many command/replies); subscriber saw {seen}, lagged {lagged}; slowest job {worst:?}; \
         jobs matched {}",
        JOBS as f64 / wall.as_secs_f64(),
        st.jobs_matched
    );
    assert_eq!(st.jobs_matched, JOBS as u64);
    client.shutdown().await;
}

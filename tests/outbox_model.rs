//! Model-based test of the outbox: the real `Store` (SQLite on disk) and the real
//! `DeliveryWorker`, driven through random sequences of ingest / deliver ok / deliver fail /
//! ambiguous timeout / crash / crash after the CRM accepted / clean restart, against a model
//! of what the CRM must end up with.
//!
//! The CRM is the test: the worker's `Sender` hands each request over a channel and waits
//! for the test's answer. A crash aborts the worker wherever it is and reopens a COPY of the
//! SQLite files taken at that instant (the database and its WAL, never closed, never
//! checkpointed): what was not committed is gone, as after `kill -9` or a power cut.
//! Ingest that a crash interrupts is a transaction left open on another connection.
//!
//! Oracle, checked as the run goes and after a final drain:
//! - every committed call reaches the CRM; no call that was never committed does;
//! - once the CRM's acceptance was recorded, the call is never sent again;
//! - a call the CRM accepted more than once was accepted while its outcome could not be
//!   recorded: in flight at a crash, or an ambiguous timeout — at most once per such event;
//! - the store's counters say so: `outbox_resent_unclean_stop` is the number of crashes with a
//!   request in flight, `outbox_resent_ambiguous_timeout` the number of ambiguous timeouts,
//!   and each call sent again after a crash is listed as resent after an unclean stop.
//!
//! `cargo test --test outbox_model` runs 256 cases; the long variant (5,000 cases) is
//! `cargo test --release --test outbox_model -- --ignored`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pbxlink::config::Synchronous;
use pbxlink::outbox::store::ResentReason;
use pbxlink::outbox::{
    Backoff, DeliverySettings, DeliveryWorker, KIND_CALL_LOG, NewOutboxRow, OutboxRow, RateLimiter,
    SendOutcome, Sender, Store,
};
use proptest::prelude::*;
use tokio::sync::{Notify, mpsc, oneshot, watch};

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// Enqueue this many new calls (committed).
    Ingest(u8),
    /// Answer the next request: the CRM accepts it.
    DeliverOk,
    /// Answer the next request with a 500.
    DeliverFail,
    /// The CRM accepts the next request and stalls: the worker sees a timeout.
    AmbiguousTimeout,
    /// kill -9 now, whatever is in flight.
    Crash,
    /// The CRM accepts the next request, then the process dies before recording it.
    CrashAfterAccept,
    /// kill -9 while an ingest transaction is open: its calls were never committed.
    CrashDuringIngest(u8),
    /// A clean stop (SIGTERM) and start.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..4).prop_map(Op::Ingest),
        4 => Just(Op::DeliverOk),
        2 => Just(Op::DeliverFail),
        1 => Just(Op::AmbiguousTimeout),
        1 => Just(Op::Crash),
        1 => Just(Op::CrashAfterAccept),
        1 => (1u8..3).prop_map(Op::CrashDuringIngest),
        1 => Just(Op::Restart),
    ]
}

/// A request the worker made, waiting for the test's answer.
type Request = (OutboxRow, oneshot::Sender<SendOutcome>);

/// The worker's sender: every request goes to the test, which answers it (or never does).
struct TestCrm {
    requests: mpsc::UnboundedSender<Request>,
}

impl Sender for TestCrm {
    async fn send(&self, row: &OutboxRow) -> SendOutcome {
        let (answer, answered) = oneshot::channel();
        if self.requests.send((row.clone(), answer)).is_err() {
            return std::future::pending().await;
        }
        match answered.await {
            Ok(outcome) => outcome,
            // The test "crashed" the process: no answer ever comes.
            Err(_) => std::future::pending().await,
        }
    }
}

/// A running worker over one opened store.
struct Running {
    store: Arc<Store>,
    wake: Arc<Notify>,
    requests: mpsc::UnboundedReceiver<Request>,
    /// A request taken off the channel early (see [`settle`]), served first.
    stash: Option<Request>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), pbxlink::outbox::StoreError>>,
}

fn settings() -> DeliverySettings {
    DeliverySettings {
        kind: KIND_CALL_LOG,
        endpoint: "call_log",
        backoff: Backoff {
            initial: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        },
        pause: Duration::from_secs(1),
        idle_poll: Duration::from_secs(1),
        attempt_timeout: Duration::from_secs(2),
    }
}

fn start(path: &Path) -> Running {
    let store = Arc::new(Store::open(path, Synchronous::Normal).expect("open the store"));
    let wake = Arc::new(Notify::new());
    let (tx, requests) = mpsc::unbounded_channel();
    let worker = DeliveryWorker::new(
        store.clone(),
        TestCrm { requests: tx },
        settings(),
        Arc::new(RateLimiter::new(100_000, Duration::from_secs(1))),
        wake.clone(),
    );
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(worker.run(rx));
    Running {
        store,
        wake,
        requests,
        stash: None,
        stop,
        task,
    }
}

fn call(n: u32) -> NewOutboxRow {
    NewOutboxRow {
        kind: KIND_CALL_LOG,
        idempotency_key: format!("{KIND_CALL_LOG}:call-{n}"),
        call_id: format!("call-{n}"),
        source: "model".into(),
        body: format!("{{\"call_id\":\"call-{n}\"}}"),
        raw: String::new(),
    }
}

/// The files of a crashed process, as the disk holds them at this instant: the database
/// and its WAL (the shared-memory index is rebuilt by the next open).
fn crash_copy(from: &Path, to: &Path) {
    let with = |p: &Path, suffix: &str| PathBuf::from(format!("{}{suffix}", p.display()));
    std::fs::copy(from, to).expect("copy the database file");
    if with(from, "-wal").exists() {
        std::fs::copy(with(from, "-wal"), with(to, "-wal")).expect("copy the WAL");
    }
}

/// What the CRM got and what the test knows, per call.
#[derive(Default, Debug)]
struct Model {
    /// Calls committed to the outbox.
    committed: BTreeSet<String>,
    /// Calls whose ingest was cut by a crash before its commit.
    never_committed: BTreeSet<String>,
    /// Times the CRM accepted each call.
    accepted: BTreeMap<String, u32>,
    /// Acceptances whose outcome the worker could not record (crash after accept,
    /// ambiguous timeout), per call.
    unrecorded: BTreeMap<String, u32>,
    /// Calls whose acceptance the worker recorded: never to be sent again.
    recorded: BTreeSet<String>,
    /// Calls that were in flight at a crash.
    in_flight_at_crash: BTreeSet<String>,
    crashes_in_flight: u64,
    ambiguous: u64,
    next: u32,
}

impl Model {
    fn request(&self, row: &OutboxRow) -> Result<(), TestCaseError> {
        prop_assert!(
            !self.recorded.contains(&row.call_id),
            "{} sent again after its acceptance was recorded",
            row.call_id
        );
        prop_assert!(
            self.committed.contains(&row.call_id),
            "{} sent but never committed",
            row.call_id
        );
        Ok(())
    }

    fn accept(&mut self, id: &str) {
        *self.accepted.entry(id.to_owned()).or_default() += 1;
    }
}

/// The next request, if one comes within `wait` of (paused) time.
async fn next_request(run: &mut Running, wait: Duration) -> Option<Request> {
    if let Some(request) = run.stash.take() {
        return Some(request);
    }
    tokio::time::timeout(wait, run.requests.recv())
        .await
        .ok()
        .flatten()
}

/// A request already sent and not yet picked up, if any.
fn take_sent(run: &mut Running) -> Option<Request> {
    run.stash.take().or_else(|| run.requests.try_recv().ok())
}

/// Lets the worker record the answer just given: done when no row is in flight, or when
/// the worker already sent its next request (it records an answer before the next send).
async fn settle(run: &mut Running) {
    for _ in 0..1000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if run.stash.is_none() {
            run.stash = run.requests.try_recv().ok();
        }
        if run.stash.is_some() || run.store.status().expect("status").in_flight == 0 {
            return;
        }
    }
    panic!("the worker never recorded its answer");
}

/// Kills the worker where it is and opens a copy of the files as they are now.
async fn crash(run: Running, dir: &Path, generation: &mut u32, model: &mut Model) -> Running {
    let mut run = run;
    // A request the worker sent that the test had not picked up yet is in flight too.
    if let Some((row, _never_answered)) = take_sent(&mut run) {
        model.request(&row).expect("request before the crash");
        model.in_flight_at_crash.insert(row.call_id.clone());
        model.crashes_in_flight += 1;
    }
    run.task.abort();
    let _ = (&mut run.task).await;
    *generation += 1;
    let old = dir.join(format!("s{}.db", *generation - 1));
    let new = dir.join(format!("s{}.db", *generation));
    crash_copy(&old, &new);
    // The old process's connection is dropped now; its files are never read again.
    drop(run);
    start(&new)
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut generation = 0u32;
    let mut model = Model::default();
    let mut run = start(&dir.path().join("s0.db"));
    let wait = Duration::from_secs(5);
    for op in ops {
        match op {
            Op::Ingest(k) => {
                let rows: Vec<NewOutboxRow> = (0..k)
                    .map(|_| {
                        model.next += 1;
                        call(model.next)
                    })
                    .collect();
                run.store.enqueue(&rows, &[], &[]).expect("enqueue");
                model
                    .committed
                    .extend(rows.iter().map(|r| r.call_id.clone()));
                run.wake.notify_one();
            }
            Op::DeliverOk | Op::DeliverFail | Op::AmbiguousTimeout | Op::CrashAfterAccept => {
                let Some((row, answer)) = next_request(&mut run, wait).await else {
                    // Nothing due: the queue is empty.
                    prop_assert_eq!(run.store.status().expect("status").pending, 0);
                    continue;
                };
                model.request(&row)?;
                match op {
                    Op::DeliverOk => {
                        model.accept(&row.call_id);
                        let _ = answer.send(SendOutcome::Delivered {
                            status: 200,
                            response: "{\"Status\":\"Success\"}".into(),
                        });
                        settle(&mut run).await;
                        model.recorded.insert(row.call_id.clone());
                    }
                    Op::DeliverFail => {
                        let _ = answer.send(SendOutcome::Retry {
                            status: Some(500),
                            reason: "HTTP 500".into(),
                            retry_after: None,
                        });
                        settle(&mut run).await;
                    }
                    Op::AmbiguousTimeout => {
                        model.accept(&row.call_id);
                        *model.unrecorded.entry(row.call_id.clone()).or_default() += 1;
                        model.ambiguous += 1;
                        let _ = answer.send(SendOutcome::Retry {
                            status: None,
                            reason: format!(
                                "{}: the CRM took the request and went silent",
                                pbxlink::outbox::delivery::TIMED_OUT
                            ),
                            retry_after: None,
                        });
                        settle(&mut run).await;
                    }
                    _ => {
                        // Accepted by the CRM; the process dies before the answer arrives.
                        model.accept(&row.call_id);
                        *model.unrecorded.entry(row.call_id.clone()).or_default() += 1;
                        model.in_flight_at_crash.insert(row.call_id.clone());
                        model.crashes_in_flight += 1;
                        drop(answer);
                        run = crash(run, dir.path(), &mut generation, &mut model).await;
                    }
                }
            }
            Op::Crash => {
                // Give the worker a chance to have a request out, sometimes.
                tokio::task::yield_now().await;
                run = crash(run, dir.path(), &mut generation, &mut model).await;
            }
            Op::CrashDuringIngest(k) => {
                let path = dir.path().join(format!("s{generation}.db"));
                let conn = rusqlite::Connection::open(&path).expect("second connection");
                conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
                for _ in 0..k {
                    model.next += 1;
                    let row = call(model.next);
                    conn.execute(
                        "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, state,
                             attempts, next_attempt_at, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 'model', ?4, 'pending', 0, 0, 0, 0)",
                        rusqlite::params![row.kind, row.idempotency_key, row.call_id, row.body],
                    )
                    .expect("insert inside the open transaction");
                    model.never_committed.insert(row.call_id);
                }
                let copy_at = generation;
                run = crash(run, dir.path(), &mut generation, &mut model).await;
                prop_assert_eq!(generation, copy_at + 1);
                drop(conn);
            }
            Op::Restart => {
                let _ = run.stop.send(true);
                // A request in flight is finished first: the CRM answers it with a 503.
                if let Some((row, answer)) = take_sent(&mut run) {
                    model.request(&row)?;
                    let _ = answer.send(SendOutcome::Retry {
                        status: Some(503),
                        reason: "HTTP 503".into(),
                        retry_after: None,
                    });
                }
                loop {
                    tokio::select! {
                        req = run.requests.recv() => {
                            if let Some((row, answer)) = req {
                                model.request(&row)?;
                                let _ = answer.send(SendOutcome::Retry {
                                    status: Some(503),
                                    reason: "HTTP 503".into(),
                                    retry_after: None,
                                });
                            }
                        }
                        done = &mut run.task => {
                            done.expect("join").expect("clean stop");
                            break;
                        }
                    }
                }
                let path = dir.path().join(format!("s{generation}.db"));
                drop(run);
                run = start(&path);
            }
        }
    }
    // Final: one more crash, then the CRM healthy until nothing more comes.
    run = crash(run, dir.path(), &mut generation, &mut model).await;
    while let Some((row, answer)) = next_request(&mut run, Duration::from_secs(30)).await {
        model.request(&row)?;
        model.accept(&row.call_id);
        let _ = answer.send(SendOutcome::Delivered {
            status: 200,
            response: "{}".into(),
        });
        settle(&mut run).await;
        model.recorded.insert(row.call_id.clone());
    }
    let status = run.store.status().expect("status");
    prop_assert_eq!(status.pending, 0);
    prop_assert_eq!(status.in_flight, 0);
    for id in &model.committed {
        prop_assert!(model.accepted.contains_key(id), "{} never delivered", id);
    }
    for id in &model.never_committed {
        prop_assert!(
            !model.accepted.contains_key(id),
            "{} delivered but never committed",
            id
        );
    }
    for (id, n) in &model.accepted {
        let allowed = 1 + model.unrecorded.get(id).copied().unwrap_or(0);
        prop_assert!(
            *n <= allowed,
            "{} accepted {} times, {} allowed",
            id,
            n,
            allowed
        );
        if *n > 1 {
            prop_assert!(
                model.in_flight_at_crash.contains(id) || model.unrecorded.contains_key(id),
                "{} posted twice without a crash or timeout",
                id
            );
        }
    }
    prop_assert_eq!(
        status.resent(ResentReason::UncleanStop),
        model.crashes_in_flight
    );
    prop_assert_eq!(
        status.resent(ResentReason::AmbiguousTimeout),
        model.ambiguous
    );
    let listed: BTreeSet<String> = run
        .store
        .resent_calls(usize::MAX)
        .expect("resent calls")
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    for id in &model.in_flight_at_crash {
        prop_assert!(listed.contains(id), "{} resent but not listed", id);
    }
    Ok(())
}

fn check(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(run_case(ops))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_outbox_delivers_every_committed_call_and_reposts_only_what_a_crash_left_in_flight(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        check(ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    #[test]
    #[ignore = "long variant: cargo test --release --test outbox_model -- --ignored"]
    fn long_the_outbox_delivers_every_committed_call_and_reposts_only_what_a_crash_left_in_flight(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        check(ops)?;
    }
}

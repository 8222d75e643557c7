//! Tests of the live call-log path: a call log the store refuses is retried, not lost.

use super::*;

fn finished_call(call_id: &str) -> CallRecord {
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-07T10:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    CallRecord {
        call_id: call_id.into(),
        source: "asterisk-ami".into(),
        direction: crate::call::Direction::Inbound,
        outcome: crate::call::Outcome::NoAnswer,
        lead_number: crate::call::Number {
            raw: "+919611795983".into(),
            e164: None,
        },
        agent: None,
        agent_extension: None,
        display_number: None,
        tag: None,
        start: at,
        answer: None,
        end: at,
        talk_seconds: 0,
        caller_name: None,
        recording_url: None,
        lead_id: None,
        legs: 1,
        segments: Vec::new(),
        transfer: Default::default(),
    }
}

/// A real store made to refuse inserts into the outbox (a trigger, as a full disk or a
/// corrupt page would make SQLite refuse), and the connection that can lift it.
fn refusing_store(dir: &std::path::Path) -> (Arc<Store>, rusqlite::Connection) {
    let path = dir.join("store.db");
    let store = Arc::new(Store::open(&path, crate::config::Synchronous::Normal).expect("store"));
    let admin = rusqlite::Connection::open(&path).expect("second connection");
    admin
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )
        .expect("trigger");
    (store, admin)
}

/// Item 7 of issue 9: a call log from AMI that the store refuses was logged and lost; now it
/// waits (with a doubling pause, not a busy loop) and is stored once the store takes writes.
#[tokio::test(start_paused = true)]
async fn a_call_log_the_store_refuses_is_retried_with_backoff_until_stored() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("dir");
    let (store, admin) = refusing_store(dir.path());
    let stats = Arc::new(LiveStats::default());
    let (calls, pending) = mpsc::channel(CALL_LOG_QUEUE);
    let (_stop, shutdown) = watch::channel(false);
    let sink: Arc<dyn CallSink> = Arc::new(OutboxSink::new(store.clone(), Arc::new(Notify::new())));
    let writer = tokio::spawn(store_call_logs(sink, stats.clone(), pending, shutdown));
    calls.send(finished_call("1.1")).await.expect("queued");
    calls.send(finished_call("1.2")).await.expect("queued");
    // Ten seconds of a refusing store: attempts at 0, 0.2, 0.6, 1.4, 3.0, 6.2 s.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failures = stats.call_log_store_failures.load(Relaxed);
    assert!(
        (5..=7).contains(&failures),
        "{failures} attempts in 10 s: the pause doubles"
    );
    assert!(
        !store
            .has_key(&crate::call::sink::call_log_key("1.1"))
            .expect("read")
    );
    admin
        .execute_batch("DROP TRIGGER refuse")
        .expect("lift the refusal");
    let started = tokio::time::Instant::now();
    while stats.calls_enqueued.load(Relaxed) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(31),
            "stored within one longest pause"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ["1.1", "1.2"] {
        assert!(
            store
                .has_key(&crate::call::sink::call_log_key(id))
                .expect("read"),
            "{id}"
        );
    }
    assert_eq!(stats.call_logs_lost.load(Relaxed), 0);
    drop(calls);
    writer.await.expect("writer ends when the tracker does");
}

/// Stopping while the store still refuses: the call is tried once more, then counted lost
/// (the daemon does not hang on a store that never comes back).
#[tokio::test(start_paused = true)]
async fn stopping_while_the_store_refuses_counts_the_call_lost() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("dir");
    let (store, _admin) = refusing_store(dir.path());
    let stats = Arc::new(LiveStats::default());
    let (calls, pending) = mpsc::channel(CALL_LOG_QUEUE);
    let (stop, shutdown) = watch::channel(false);
    let sink: Arc<dyn CallSink> = Arc::new(OutboxSink::new(store, Arc::new(Notify::new())));
    let writer = tokio::spawn(store_call_logs(sink, stats.clone(), pending, shutdown));
    calls.send(finished_call("2.1")).await.expect("queued");
    while stats.call_log_store_failures.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).expect("stop");
    drop(calls);
    writer.await.expect("writer stops");
    assert_eq!(stats.call_logs_lost.load(Relaxed), 1);
    assert_eq!(stats.call_log_store_failures.load(Relaxed), 2);
}

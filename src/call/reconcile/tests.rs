//! Reconciliation on a real store with tokio's clock paused: merged once within the wait,
//! posted alone after it (counted by the missing source), held across a restart.

use std::path::Path;

use super::*;
use crate::call::sink::{FinishedCall, call_log_key};
use crate::call::{Direction, Number, Outcome};
use crate::config::Synchronous;
use crate::outbox::KIND_CALL_LOG;

const WAIT_MS: u64 = 60_000;

fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
}

/// The same call as the two sources see it: the live side knows the lead id and saw an
/// agent ring out (missed); the file knows it went to voicemail, its recording and billsec.
fn live_call(id: &str) -> CallRecord {
    CallRecord {
        call_id: id.into(),
        source: "asterisk-ami".into(),
        direction: Direction::Inbound,
        outcome: Outcome::NoAnswer,
        lead_number: Number {
            raw: "+919611795983".into(),
            e164: None,
        },
        agent: None,
        agent_extension: Some("100".into()),
        display_number: None,
        tag: Some("sales".into()),
        start: at(0),
        answer: None,
        end: at(40),
        talk_seconds: 0,
        caller_name: Some("Asha".into()),
        recording_url: None,
        lead_id: Some("lead-7".into()),
        legs: 3,
        segments: Vec::new(),
        transfer: Default::default(),
    }
}

fn file_call(id: &str) -> CallRecord {
    CallRecord {
        source: "asterisk-cdr:/var/log/asterisk/cdr-csv/Master.csv".into(),
        outcome: Outcome::Voicemail,
        agent_extension: None,
        tag: None,
        caller_name: None,
        talk_seconds: 0,
        recording_url: Some(format!("https://rec.example/{id}.wav")),
        lead_id: None,
        legs: 4,
        ..live_call(id)
    }
}

fn open(path: &Path) -> Arc<Store> {
    Arc::new(Store::open(path, Synchronous::Normal).expect("store"))
}

fn batch(call: CallRecord, staged_ids: Vec<i64>) -> CallBatch {
    CallBatch {
        calls: vec![FinishedCall {
            call,
            raw: "raw cdr line".into(),
            staged_ids,
        }],
        ..CallBatch::default()
    }
}

/// Every call log in the outbox, as stored.
fn outbox(path: &Path) -> Vec<(String, String, CallRecord)> {
    let conn = rusqlite::Connection::open(path).expect("read the store");
    let mut stmt = conn
        .prepare("SELECT idempotency_key, source, body FROM outbox WHERE kind = ?1 ORDER BY id")
        .expect("query");
    stmt.query_map([KIND_CALL_LOG], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?))
    })
    .expect("rows")
    .map(|r| {
        let (key, source, body) = r.expect("row");
        let call = serde_json::from_str(&body).expect("a call log");
        (key, source, call)
    })
    .collect()
}

/// Lets the release loop run until the paused clock reaches `ms` from now.
async fn pass(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn live_then_file_within_the_wait_is_merged_and_posted_once() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.db");
    let store = open(&path);
    let sink = Arc::new(ReconcilingSink::new(
        store.clone(),
        Arc::new(Notify::new()),
        WAIT_MS,
    ));
    let (stop, shutdown) = watch::channel(false);
    let releaser = tokio::spawn(sink.clone().run(shutdown));

    let held = sink
        .push(SourceKind::Live, batch(live_call("1.1"), Vec::new()))
        .expect("push");
    assert_eq!((held.held, held.queued), (1, 0));
    pass(30_000).await;
    assert!(
        outbox(&path).is_empty(),
        "held while the file may still come"
    );

    let staged = store
        .commit_ingest("cdr", None, &[("{}".into(), "raw".into())], &[])
        .expect("stage a row");
    let merged = sink
        .push(SourceKind::File, batch(file_call("1.1"), staged))
        .expect("push");
    assert_eq!((merged.queued, merged.merged), (1, 1));
    assert!(
        store.staged_rows("cdr").expect("staged").is_empty(),
        "consumed with the merge"
    );

    let rows = outbox(&path);
    assert_eq!(rows.len(), 1);
    let (key, source, call) = &rows[0];
    assert_eq!(key, &call_log_key("1.1"));
    assert_eq!(
        source,
        "asterisk-cdr:/var/log/asterisk/cdr-csv/Master.csv+asterisk-ami"
    );
    assert_eq!(call.outcome, Outcome::Voicemail, "the file's voicemail");
    assert_eq!(
        call.recording_url.as_deref(),
        Some("https://rec.example/1.1.wav"),
        "the file's recording"
    );
    assert_eq!(
        call.lead_id.as_deref(),
        Some("lead-7"),
        "the live side's lead id"
    );
    assert_eq!(call.legs, 4, "the file's record is the base");
    assert_eq!(
        call.agent_extension.as_deref(),
        Some("100"),
        "filled from live"
    );
    assert_eq!(call.caller_name.as_deref(), Some("Asha"));

    // Long after: nothing else is posted, the stats say merged.
    pass(120_000).await;
    assert_eq!(outbox(&path).len(), 1);
    let stats = sink.stats();
    assert_eq!(
        stats.by_result(),
        [("merged", 1), ("missing_cdr", 0), ("missing_live", 0)]
    );
    assert_eq!(stats.held.load(Ordering::Relaxed), 0);
    stop.send(true).expect("stop");
    releaser.await.expect("joins").expect("release loop");
}

#[tokio::test(start_paused = true)]
async fn file_then_live_is_merged_too() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.db");
    let sink = ReconcilingSink::new(open(&path), Arc::new(Notify::new()), WAIT_MS);
    sink.push(SourceKind::File, batch(file_call("2.1"), Vec::new()))
        .expect("push");
    pass(1_000).await;
    let out = sink
        .push(SourceKind::Live, batch(live_call("2.1"), Vec::new()))
        .expect("push");
    assert_eq!(out.merged, 1);
    let rows = outbox(&path);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2.lead_id.as_deref(), Some("lead-7"));
    assert_eq!(rows[0].2.outcome, Outcome::Voicemail);
}

#[tokio::test(start_paused = true)]
async fn a_call_one_source_never_reports_is_posted_after_the_wait_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.db");
    let sink = Arc::new(ReconcilingSink::new(
        open(&path),
        Arc::new(Notify::new()),
        WAIT_MS,
    ));
    let (stop, shutdown) = watch::channel(false);
    let releaser = tokio::spawn(sink.clone().run(shutdown));

    // AMI was cut during 3.1: only the file has it. The CDR line of 3.2 was never written.
    sink.push(SourceKind::File, batch(file_call("3.1"), Vec::new()))
        .expect("push");
    pass(10_000).await;
    sink.push(SourceKind::Live, batch(live_call("3.2"), Vec::new()))
        .expect("push");
    pass(49_000).await;
    assert!(outbox(&path).is_empty(), "59 s: both still held");
    pass(2_000).await;
    let rows = outbox(&path);
    assert_eq!(rows.len(), 1, "61 s: the file's call is posted alone");
    assert_eq!(rows[0].2.call_id, "3.1");
    assert_eq!(rows[0].2.outcome, Outcome::Voicemail);
    pass(10_000).await;
    let rows = outbox(&path);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].2.call_id, "3.2");
    assert_eq!(rows[1].1, "asterisk-ami");
    assert_eq!(
        sink.stats().by_result(),
        [("merged", 0), ("missing_cdr", 1), ("missing_live", 1)]
    );

    // The late file record of 3.2 is a duplicate: no second log.
    let late = sink
        .push(SourceKind::File, batch(file_call("3.2"), Vec::new()))
        .expect("push");
    assert_eq!((late.queued, late.duplicates), (0, 1));
    assert_eq!(outbox(&path).len(), 2);
    stop.send(true).expect("stop");
    releaser.await.expect("joins").expect("release loop");
}

#[tokio::test(start_paused = true)]
async fn holds_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.db");
    {
        let sink = ReconcilingSink::new(open(&path), Arc::new(Notify::new()), WAIT_MS);
        sink.push(SourceKind::Live, batch(live_call("4.1"), Vec::new()))
            .expect("push");
        sink.push(SourceKind::Live, batch(live_call("4.2"), Vec::new()))
            .expect("push");
        // pbxlink stops here: the sink and its store are dropped.
    }
    let store = open(&path);
    assert_eq!(store.reconcile_held().expect("held"), 2);
    let sink = Arc::new(ReconcilingSink::new(
        store,
        Arc::new(Notify::new()),
        WAIT_MS,
    ));
    // After the restart the CDR of 4.1 arrives: merged with the live record held before.
    let out = sink
        .push(SourceKind::File, batch(file_call("4.1"), Vec::new()))
        .expect("push");
    assert_eq!(out.merged, 1);
    assert_eq!(outbox(&path)[0].2.lead_id.as_deref(), Some("lead-7"));
    // 4.2's wait ends: posted from AMI alone.
    let (stop, shutdown) = watch::channel(false);
    let releaser = tokio::spawn(sink.clone().run(shutdown));
    pass(61_000).await;
    let rows = outbox(&path);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].2.call_id, "4.2");
    assert_eq!(sink.stats().missing_file.load(Ordering::Relaxed), 1);
    stop.send(true).expect("stop");
    releaser.await.expect("joins").expect("release loop");
}

#[tokio::test(start_paused = true)]
async fn the_same_source_twice_keeps_one_hold_and_skipped_rows_are_consumed() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.db");
    let store = open(&path);
    let sink = ReconcilingSink::new(store.clone(), Arc::new(Notify::new()), WAIT_MS);
    sink.push(SourceKind::File, batch(file_call("5.1"), Vec::new()))
        .expect("push");
    let again = sink
        .push(SourceKind::File, batch(file_call("5.1"), Vec::new()))
        .expect("push");
    assert_eq!(again.duplicates, 1);
    assert_eq!(store.reconcile_held().expect("held"), 1);

    // An internal call's staged rows go with the batch, its counters too.
    let staged = store
        .commit_ingest("cdr", None, &[("{}".into(), "raw".into())], &[])
        .expect("stage");
    sink.push(
        SourceKind::File,
        CallBatch {
            calls: Vec::new(),
            consumed: staged,
            counters: vec![("calls_skipped", 1)],
        },
    )
    .expect("push");
    assert!(store.staged_rows("cdr").expect("staged").is_empty());
    let status = store.status().expect("status");
    assert!(
        status
            .counters
            .iter()
            .any(|(name, n)| name == "calls_skipped" && *n == 1),
        "{:?}",
        status.counters
    );
}

/// A call 100 answered and blind-transferred to 103 at 30 s, as one source saw it.
fn transferred(call: CallRecord) -> CallRecord {
    use crate::call::{AgentSegment, SegmentArrival};
    let segments = vec![
        AgentSegment {
            extension: "100".into(),
            answered_at: at(5),
            ended_at: Some(at(30)),
            talk_seconds: 25,
            arrival: SegmentArrival::Direct,
        },
        AgentSegment {
            extension: "103".into(),
            answered_at: at(33),
            ended_at: Some(at(40)),
            talk_seconds: 7,
            arrival: SegmentArrival::BlindTransfer {
                from: "100".into(),
                at: at(30),
            },
        },
    ];
    CallRecord {
        outcome: Outcome::Answered,
        segments,
        ..call
    }
}

#[tokio::test(start_paused = true)]
async fn a_transferred_call_is_split_once_after_the_merge() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.db");
    let sink = ReconcilingSink::new(open(&path), Arc::new(Notify::new()), WAIT_MS);
    let held = sink
        .push(
            SourceKind::Live,
            batch(transferred(live_call("5.1")), Vec::new()),
        )
        .expect("push");
    assert_eq!(held.held, 1);
    let merged = sink
        .push(
            SourceKind::File,
            batch(transferred(file_call("5.1")), Vec::new()),
        )
        .expect("push");
    assert_eq!((merged.queued, merged.merged), (1, 1));
    let rows = outbox(&path);
    let keys: Vec<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, [call_log_key("5.1"), call_log_key("5.1-2")]);
    let ids: Vec<(&str, Option<&str>, u64)> = rows
        .iter()
        .map(|(_, _, c)| {
            (
                c.call_id.as_str(),
                c.agent_extension.as_deref(),
                c.talk_seconds,
            )
        })
        .collect();
    assert_eq!(ids, [("5.1", Some("100"), 25), ("5.1-2", Some("103"), 7)]);
    for (_, _, call) in &rows {
        assert_eq!(
            call.lead_id.as_deref(),
            Some("lead-7"),
            "merged before the split"
        );
        assert_eq!(
            call.recording_url.as_deref(),
            Some("https://rec.example/5.1.wav")
        );
    }
    // The same call from the file again: already queued under its first segment's key.
    let again = sink
        .push(
            SourceKind::File,
            batch(transferred(file_call("5.1")), Vec::new()),
        )
        .expect("push");
    assert_eq!(again.duplicates, 1);
    assert_eq!(outbox(&path).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_transferred_call_posted_alone_after_the_wait_is_split_too() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.db");
    let sink = ReconcilingSink::new(open(&path), Arc::new(Notify::new()), WAIT_MS);
    sink.push(
        SourceKind::Live,
        batch(transferred(live_call("6.1")), Vec::new()),
    )
    .expect("push");
    pass(WAIT_MS + 1).await;
    assert_eq!(sink.release_due().expect("release"), 1);
    let keys: Vec<String> = outbox(&path).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, [call_log_key("6.1"), call_log_key("6.1-2")]);
}

#[test]
fn the_outbox_sink_splits_a_transferred_call_and_leaves_others_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir.path().join("store.db"));
    let sink = crate::call::sink::OutboxSink::new(store.clone(), Arc::new(Notify::new()));
    let mut calls = batch(transferred(file_call("7.1")), Vec::new());
    calls
        .calls
        .extend(batch(file_call("8.1"), Vec::new()).calls);
    let out = sink.push(SourceKind::File, calls).expect("push");
    assert_eq!(out.queued, 3);
    let stored: Vec<CallRecord> = store
        .bodies("pending")
        .expect("bodies")
        .iter()
        .map(|b| serde_json::from_str(b).expect("a call log"))
        .collect();
    let ids: Vec<&str> = stored.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, ["7.1", "7.1-2", "8.1"]);
    for id in ids {
        assert!(store.has_key(&call_log_key(id)).expect("key"), "{id}");
    }
    assert_eq!(
        stored[2],
        file_call("8.1"),
        "a call not transferred is stored as it was"
    );
}

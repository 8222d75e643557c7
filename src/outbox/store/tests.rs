//! Tests of the store: each concern, the migration from older files, crash accounting.

use super::*;
use crate::config::Synchronous;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("open");
    (dir, store)
}

fn call(key: &str) -> NewOutboxRow {
    NewOutboxRow {
        kind: KIND_CALL_LOG,
        idempotency_key: format!("call_log:{key}"),
        call_id: key.into(),
        source: "test".into(),
        body: format!("{{\"id\":\"{key}\"}}"),
        raw: "raw".into(),
    }
}

#[test]
fn processes_opening_a_new_store_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Store::open(&path, Synchronous::Normal).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().expect("thread").expect("every open succeeds");
    }
}

#[test]
fn dispositions_ride_on_pending_logs_and_requeue_delivered_ones() {
    let (_d, s) = store();
    s.set_disposition("early", "Interested", Some("call back"))
        .expect("before the call");
    s.enqueue(&[call("early"), call("late")], &[], &[])
        .expect("enqueue");
    s.set_lead_id("early", "lead-1").expect("lead");
    let row = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("due");
    assert_eq!(row.call_id, "early");
    assert_eq!(row.notes.as_deref(), Some("Interested: call back"));
    assert_eq!(row.lead_id.as_deref(), Some("lead-1"));
    s.mark_delivered(row.id, "call_log", 200, "{}")
        .expect("delivered");
    let other = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("due");
    assert!(
        !s.set_disposition("late", "Pending", None)
            .expect("pending: no update")
    );
    s.mark_delivered(other.id, "call_log", 200, "{}")
        .expect("delivered");
    assert!(
        s.set_disposition("late", "Not interested", None)
            .expect("update queued")
    );
    let update = s
        .next_due(KIND_DISPOSITION_UPDATE, now_ms() + 10)
        .expect("read")
        .expect("an update");
    assert_eq!(update.notes.as_deref(), Some("Not interested"));
    assert!(
        !s.set_disposition("nobody-knows", "x", None)
            .expect("unknown call stored")
    );
}

#[test]
fn rows_and_offset_commit_together_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let offset = FileOffset {
        dev: 1,
        ino: 2,
        offset: 300,
        window_crc: 7,
        window_len: 100,
    };
    {
        let s = Store::open(&path, Synchronous::Full).expect("open");
        let ids = s
            .commit_ingest(
                "src",
                Some(&offset),
                &[("{}".into(), "a".into()), ("{}".into(), "b".into())],
                &[("cdr_parse_errors", 1)],
            )
            .expect("commit");
        assert_eq!(ids.len(), 2);
    }
    let s = Store::open(&path, Synchronous::Full).expect("reopen");
    assert_eq!(s.file_offset("src").expect("read"), Some(offset));
    assert_eq!(s.staged_rows("src").expect("read").len(), 2);
    let status = s.status().expect("status");
    assert_eq!(status.staged, 2);
    assert!(status.counters.contains(&("cdr_parse_errors".into(), 1)));
}

#[test]
fn the_same_call_is_enqueued_once() {
    let (_d, s) = store();
    let ids = s
        .commit_ingest("src", None, &[("{}".into(), "a".into())], &[])
        .expect("stage");
    let first = s.enqueue(&[call("c1")], &ids, &[]).expect("enqueue");
    assert_eq!(
        first,
        EnqueueOutcome {
            inserted: 1,
            duplicates: 0
        }
    );
    let again = s
        .enqueue(&[call("c1"), call("c2")], &[], &[])
        .expect("enqueue");
    assert_eq!(
        again,
        EnqueueOutcome {
            inserted: 1,
            duplicates: 1
        }
    );
    assert!(s.staged_rows("src").expect("read").is_empty());
    assert_eq!(s.status().expect("status").pending, 2);
}

#[test]
fn a_failed_row_goes_behind_the_others() {
    let (_d, s) = store();
    s.enqueue(&[call("a"), call("b")], &[], &[])
        .expect("enqueue");
    let now = now_ms() + 10;
    let first = s.next_due(KIND_CALL_LOG, now).expect("read").expect("due");
    assert_eq!(first.call_id, "a");
    std::thread::sleep(std::time::Duration::from_millis(2));
    s.mark_retry(first.id, "call_log", Some(500), "boom")
        .expect("retry");
    let next = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("due");
    assert_eq!(next.call_id, "b");
}

#[test]
fn dead_letters_can_be_retried_and_pruning_keeps_keys() {
    let (_d, s) = store();
    s.enqueue(&[call("a"), call("b")], &[], &[])
        .expect("enqueue");
    let a = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("due");
    s.mark_dead(a.id, "call_log", 400, "bad field")
        .expect("dead");
    assert_eq!(s.dead_letters().expect("list").len(), 1);
    assert_eq!(s.retry_dead(Some(a.id)).expect("retry"), 1);
    assert_eq!(s.status().expect("status").dead, 0);
    let row = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("due");
    s.mark_delivered(row.id, "call_log", 200, "{}")
        .expect("delivered");
    let (compacted, deleted) = s.prune(now_ms() + 1000, 0).expect("prune");
    assert_eq!((compacted, deleted), (1, 0));
    assert!(s.has_key(&row.idempotency_key).expect("lookup"));
    let (_, deleted) = s.prune(now_ms() + 1000, now_ms() + 1000).expect("prune");
    assert_eq!(deleted, 1);
}

/// A store file as pbxlink wrote it before schema 3 (migrations 1 and 2, the inserts of the
/// code of that time: TEXT bodies, raw rows, `auto_vacuum = NONE`), with pending rows, a
/// delivered one, an annotation, a staged row and an offset.
fn schema_2_file(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    for sql in &schema::MIGRATIONS[..2] {
        conn.execute_batch(sql).expect("old schema");
    }
    conn.pragma_update(None, "user_version", 2)
        .expect("version");
    for (i, id) in ["old-a", "old-b", "old-c"].iter().enumerate() {
        conn.execute(
            "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, raw, state,
                 attempts, next_attempt_at, created_at, updated_at)
             VALUES ('call_log', ?1, ?2, 'asterisk-cdr', ?3, 'raw line', 'pending', ?4, 0, ?5, ?5)",
            rusqlite::params![
                format!("call_log:{id}"),
                id,
                format!("{{\"id\":\"{id}\"}}"),
                i as i64,
                1_000 + i as i64
            ],
        )
        .expect("old pending row");
    }
    conn.execute(
        "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, raw, state, attempts,
             next_attempt_at, created_at, updated_at, delivered_at, last_status, response)
         VALUES ('call_log', 'call_log:old-done', 'old-done', 'asterisk-cdr', '{\"id\":\"old-done\"}',
             'raw', 'delivered', 1, 0, 900, 950, 950, 200, '{}')",
        [],
    )
    .expect("old delivered row");
    conn.execute(
        "INSERT INTO call_annotations (call_id, lead_id, updated_at) VALUES ('old-b', 'lead-7', 1)",
        [],
    )
    .expect("old annotation");
    conn.execute(
        "INSERT INTO staged_rows (source, row, raw, read_at) VALUES ('src', '{}', 'line', 5)",
        [],
    )
    .expect("old staged row");
    conn.execute(
        "INSERT INTO file_offsets (source, dev, ino, offset, window_crc, window_len, updated_at)
         VALUES ('src', 1, 2, 300, 7, 100, 5)",
        [],
    )
    .expect("old offset");
}

#[test]
fn a_schema_2_store_migrates_with_its_pending_rows_deliverable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    schema_2_file(&path);
    let s = Store::open(&path, Synchronous::Full).expect("migrate");
    let version: i64 = s
        .with_conn("version", |c| {
            c.query_row("PRAGMA user_version", [], |r| r.get(0))
        })
        .expect("version");
    assert_eq!(version, schema::MIGRATIONS.len() as i64);
    // The one-time VACUUM switched the old file to incremental auto-vacuum.
    let vacuum: i64 = s
        .with_conn("auto_vacuum", |c| {
            c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        })
        .expect("auto_vacuum");
    assert_eq!(vacuum, 2);
    let status = s.status().expect("status");
    assert_eq!((status.pending, status.delivered, status.staged), (3, 1, 1));
    assert_eq!(s.staged_rows("src").expect("staged").len(), 1);
    assert_eq!(
        s.file_offset("src").expect("offset").map(|o| o.offset),
        Some(300)
    );
    // A new row (compressed body) queues behind the old ones (TEXT bodies).
    s.enqueue(&[call("new")], &[], &[]).expect("enqueue");
    let mut delivered = Vec::new();
    while let Some(row) = s.next_due(KIND_CALL_LOG, now_ms() + 10).expect("next") {
        assert_eq!(row.body, format!("{{\"id\":\"{}\"}}", row.call_id));
        if row.call_id == "old-b" {
            assert_eq!(row.lead_id.as_deref(), Some("lead-7"));
            assert_eq!(row.attempts, 1);
        }
        s.mark_in_flight(row.id).expect("in flight");
        s.mark_delivered(row.id, "call_log", 200, "{}")
            .expect("delivered");
        delivered.push(row.call_id);
    }
    assert_eq!(delivered, ["old-a", "old-b", "old-c", "new"]);
    // The old delivered row (TEXT body) is requeued with a disposition like a new one.
    assert!(
        s.set_disposition("old-done", "Interested", None)
            .expect("disposition")
    );
    let update = s
        .next_due(KIND_DISPOSITION_UPDATE, now_ms() + 10)
        .expect("read")
        .expect("update");
    assert_eq!(update.body, "{\"id\":\"old-done\"}");
    assert!(s.has_key("call_log:old-done").expect("key"));
}

#[test]
fn rows_in_flight_at_a_crash_are_recovered_once_reported_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    {
        let s = Store::open(&path, Synchronous::Full).expect("open");
        s.enqueue(&[call("a"), call("b"), call("c")], &[], &[])
            .expect("enqueue");
        let a = s
            .next_due(KIND_CALL_LOG, now_ms() + 10)
            .expect("read")
            .expect("a");
        s.mark_in_flight(a.id).expect("in flight");
        s.mark_delivered(a.id, "call_log", 200, "{}")
            .expect("delivered");
        let b = s
            .next_due(KIND_CALL_LOG, now_ms() + 10)
            .expect("read")
            .expect("b");
        assert_eq!(b.call_id, "b");
        s.mark_in_flight(b.id).expect("in flight");
        assert_eq!(s.status().expect("status").in_flight, 1);
        // The process dies here: the store is dropped with b in flight.
    }
    let s = Store::open(&path, Synchronous::Full).expect("reopen");
    assert!(
        s.recover_in_flight(KIND_DISPOSITION_UPDATE)
            .expect("other kind")
            .is_empty()
    );
    let found = s.recover_in_flight(KIND_CALL_LOG).expect("recover");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].call_id.as_str(), found[0].reason),
        ("b", ResentReason::UncleanStop)
    );
    assert!(found[0].sent_at.is_some());
    assert!(
        s.recover_in_flight(KIND_CALL_LOG)
            .expect("again")
            .is_empty(),
        "recovered once"
    );
    let status = s.status().expect("status");
    assert_eq!((status.in_flight, status.pending), (0, 2));
    assert_eq!(status.resent(ResentReason::UncleanStop), 1);
    assert_eq!(status.counter("outbox_resent_unclean_stop"), 1);
    // b is sent again, first in line (it was due first).
    let again = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("b");
    assert_eq!(again.call_id, "b");
    let resent = s.resent_calls(10).expect("list");
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].call_id, "b");
}

#[test]
fn an_ambiguous_timeout_is_retried_and_marked() {
    let (_d, s) = store();
    s.enqueue(&[call("slow")], &[], &[]).expect("enqueue");
    let row = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("due");
    s.mark_in_flight(row.id).expect("in flight");
    s.mark_retry_ambiguous(row.id, "call_log", "timed out: no answer in 2 s")
        .expect("retry");
    let status = s.status().expect("status");
    assert_eq!((status.pending, status.in_flight), (1, 0));
    assert_eq!(status.resent(ResentReason::AmbiguousTimeout), 1);
    assert_eq!(status.resent(ResentReason::UncleanStop), 0);
    let resent = s.resent_calls(10).expect("list");
    assert_eq!(resent[0].reason, ResentReason::AmbiguousTimeout);
    let again = s
        .next_due(KIND_CALL_LOG, now_ms() + 10)
        .expect("read")
        .expect("retried");
    assert_eq!((again.call_id.as_str(), again.attempts), ("slow", 1));
    // A clean retry afterwards keeps the mark (the row was resent once for that reason).
    s.mark_retry(again.id, "call_log", Some(500), "boom")
        .expect("retry");
    assert_eq!(
        s.resent_calls(10).expect("list")[0].reason,
        ResentReason::AmbiguousTimeout
    );
}

#[test]
fn pruning_gives_pages_back_to_the_file_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let s = Store::open(&path, Synchronous::Normal).expect("open");
    let rows: Vec<NewOutboxRow> = (0..3000)
        .map(|i| NewOutboxRow {
            body: format!("{{\"id\":\"{i}\",\"pad\":\"{}\"}}", "x".repeat(i % 700)),
            ..call(&format!("c{i}"))
        })
        .collect();
    s.enqueue(&rows, &[], &[]).expect("enqueue");
    while let Some(row) = s.next_due(KIND_CALL_LOG, now_ms() + 10).expect("read") {
        s.mark_delivered(row.id, "call_log", 200, "{}")
            .expect("delivered");
    }
    let pages = |s: &Store| -> i64 {
        s.with_conn("pages", |c| {
            c.query_row("PRAGMA page_count", [], |r| r.get(0))
        })
        .expect("page_count")
    };
    let before = pages(&s);
    let (_, deleted) = s.prune(now_ms() + 1000, now_ms() + 1000).expect("prune");
    assert_eq!(deleted, 3000);
    let after = pages(&s);
    let free: i64 = s
        .with_conn("free", |c| {
            c.query_row("PRAGMA freelist_count", [], |r| r.get(0))
        })
        .expect("freelist");
    assert_eq!(free, 0, "every free page given back");
    assert!(after * 4 < before, "{before} pages before, {after} after");
}

#[test]
fn every_row_left_in_flight_is_recovered_and_counted_however_many() {
    let (_d, s) = store();
    let rows: Vec<NewOutboxRow> = (0..25).map(|i| call(&format!("c{i}"))).collect();
    s.enqueue(&rows, &[], &[]).expect("enqueue");
    for id in 1..=25 {
        s.mark_in_flight(id).expect("in flight");
    }
    let found = s.recover_in_flight(KIND_CALL_LOG).expect("recover");
    assert_eq!(found.len(), 25);
    assert_eq!(found[0].call_id, "c0");
    let status = s.status().expect("status");
    assert_eq!(status.resent(ResentReason::UncleanStop), 25);
    assert_eq!((status.in_flight, status.pending), (0, 25));
}

//! The SQLite store: file offsets, staged CDR rows, the outbox and its counters.
//!
//! One connection, one writer, `BEGIN IMMEDIATE` for every write, WAL, and `synchronous`
//! set explicitly. A batch of CDR rows and the file offset after it commit in one
//! transaction; a settled call's outbox row and the removal of its staged rows commit in
//! another, so a crash at any instant leaves either the old or the new state, never a gap.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::config::Synchronous;

/// Schema migrations, applied in order; `PRAGMA user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE file_offsets (
        source      TEXT PRIMARY KEY,
        dev         INTEGER NOT NULL,
        ino         INTEGER NOT NULL,
        offset      INTEGER NOT NULL,
        window_crc  INTEGER NOT NULL,
        window_len  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE staged_rows (
        id       INTEGER PRIMARY KEY,
        source   TEXT NOT NULL,
        row      TEXT NOT NULL,
        raw      TEXT NOT NULL,
        read_at  INTEGER NOT NULL
    );
    CREATE INDEX staged_rows_source ON staged_rows(source, id);
    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY,
        kind             TEXT NOT NULL,
        idempotency_key  TEXT NOT NULL UNIQUE,
        call_id          TEXT NOT NULL,
        source           TEXT NOT NULL,
        body             TEXT,
        raw              TEXT,
        state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  INTEGER NOT NULL,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        delivered_at     INTEGER,
        last_status      INTEGER,
        last_error       TEXT,
        response         TEXT
    );
    CREATE INDEX outbox_due ON outbox(kind, state, next_attempt_at, id);
    CREATE INDEX outbox_delivered ON outbox(state, delivered_at);
    CREATE TABLE counters (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL
    );
    CREATE TABLE endpoint_state (
        endpoint         TEXT PRIMARY KEY,
        last_error       TEXT,
        last_error_at    INTEGER,
        last_success_at  INTEGER,
        paused_until     INTEGER
    );
    "#,
    // 2: what the CRM told pbxlink about a call (lead id of a click to call, disposition).
    r#"
    CREATE TABLE call_annotations (
        call_id      TEXT PRIMARY KEY,
        lead_id      TEXT,
        disposition  TEXT,
        notes        TEXT,
        updated_at   INTEGER NOT NULL
    );
    "#,
];

/// Row kind for call logs.
pub const KIND_CALL_LOG: &str = "call_log";
/// Row kind for a call log posted again with a disposition given after its delivery.
pub const KIND_DISPOSITION_UPDATE: &str = "disposition_update";

fn join_notes(disposition: Option<String>, notes: Option<String>) -> Option<String> {
    match (disposition, notes) {
        (Some(d), Some(n)) if !n.is_empty() => Some(format!("{d}: {n}")),
        (Some(d), _) => Some(d),
        (None, n) => n,
    }
}

/// Errors of the store, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {action}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A stored JSON document could not be (de)serialised.
    #[error("store {path}: {action}: {source}")]
    Json {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The database was written by a newer pbxlink.
    #[error("store {path}: schema version {found} is newer than this pbxlink knows ({known})")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
}

/// Where reading of one source file stopped (mirrors the tailer's checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOffset {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// Bytes consumed.
    pub offset: u64,
    /// CRC32 of the bytes just before `offset`.
    pub window_crc: u32,
    /// How many bytes that CRC covers.
    pub window_len: u32,
}

/// A staged source record (e.g. one CDR row) waiting for its call to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRow {
    /// Row id, used to remove it once its call is enqueued.
    pub id: i64,
    /// The parsed record as JSON.
    pub row: String,
    /// The raw line.
    pub raw: String,
    /// When it was read (unix ms).
    pub read_at: i64,
}

/// A new outbox entry.
#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    /// `call_log`, later `popup`, ...
    pub kind: &'static str,
    /// Unique per delivery: a second insert with the same key is ignored.
    pub idempotency_key: String,
    /// The call id.
    pub call_id: String,
    /// The source that produced it.
    pub source: String,
    /// The call model as JSON.
    pub body: String,
    /// The raw PBX records it was built from.
    pub raw: String,
}

/// An outbox row as delivery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Kind.
    pub kind: String,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Call id.
    pub call_id: String,
    /// The call model as JSON.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was enqueued (unix ms).
    pub created_at: i64,
    /// The lead id the CRM gave for this call (click to call), if any.
    pub lead_id: Option<String>,
    /// The disposition (and notes) the agent gave, for `CallNotes`.
    pub notes: Option<String>,
}

/// A dead-lettered row, for `pbxlink dead-letter list`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// Call id.
    pub call_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// Why it died (with the response body).
    pub last_error: Option<String>,
    /// When it was enqueued (unix ms).
    pub created_at: i64,
}

/// Figures for `pbxlink status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusReport {
    /// Rows by state.
    pub pending: u64,
    /// Delivered rows still kept.
    pub delivered: u64,
    /// Dead-lettered rows.
    pub dead: u64,
    /// CDR rows waiting for their call to settle.
    pub staged: u64,
    /// Enqueue time of the oldest pending row (unix ms).
    pub oldest_pending_at: Option<i64>,
    /// Time of the last successful delivery (unix ms).
    pub last_delivery_at: Option<i64>,
    /// The last delivery error, with its time (unix ms).
    pub last_error: Option<(i64, String)>,
    /// Delivery paused until (unix ms), after 401/403/404.
    pub paused_until: Option<i64>,
    /// Named counters (parse errors, duplicates, ...).
    pub counters: Vec<(String, i64)>,
}

/// What enqueueing a batch of calls did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueOutcome {
    /// New rows.
    pub inserted: usize,
    /// Rows whose idempotency key was already there (already delivered or queued).
    pub duplicates: usize,
}

/// The store. Cheap to share behind an `Arc`; every operation takes the one connection.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// Current wall-clock time in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating if needed) the store and migrates its schema forward.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        let err = |action| {
            move |source| StoreError::Sqlite {
                path: path.to_owned(),
                action,
                source,
            }
        };
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Sqlite {
                    path: path.to_owned(),
                    action: "create the store's directory",
                    source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                })?;
            }
        }
        let mut conn = Connection::open(path).map_err(err("open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err("set busy_timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enable WAL"))?;
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(err("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enable foreign keys"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("read schema version"))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err("begin migration"))?;
            // Another process (the daemon, `pbxlink status`) may have migrated since the
            // version was read: decide again under the write lock.
            let now: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(err("read schema version"))?;
            if now > i as i64 {
                continue;
            }
            tx.execute_batch(sql).map_err(err("migrate schema"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err("record schema version"))?;
            tx.commit().map_err(err("commit migration"))?;
        }
        super::reconcile::create_tables(&conn).map_err(err("create the reconcile table"))?;
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            action,
            source,
        }
    }

    pub(super) fn with_tx<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sqlite(action))?;
        let value = f(&tx).map_err(self.sqlite(action))?;
        tx.commit().map_err(self.sqlite(action))?;
        Ok(value)
    }

    pub(super) fn with_conn<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(self.sqlite(action))
    }

    /// The saved offset of a source file.
    pub fn file_offset(&self, source: &str) -> Result<Option<FileOffset>, StoreError> {
        self.with_conn("read file offset", |c| {
            c.query_row(
                "SELECT dev, ino, offset, window_crc, window_len FROM file_offsets WHERE source = ?1",
                [source],
                |r| {
                    Ok(FileOffset {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        offset: r.get::<_, i64>(2)? as u64,
                        window_crc: r.get::<_, i64>(3)? as u32,
                        window_len: r.get::<_, i64>(4)? as u32,
                    })
                },
            )
            .optional()
        })
    }

    /// Commits parsed rows and the offset after them in ONE transaction, and adds to counters.
    /// Returns the staged rows' ids in order.
    pub fn commit_ingest(
        &self,
        source: &str,
        offset: Option<&FileOffset>,
        rows: &[(String, String)],
        counters: &[(&str, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        self.with_tx("commit rows and offset", |tx| {
            let mut ids = Vec::with_capacity(rows.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO staged_rows (source, row, raw, read_at) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (row, raw) in rows {
                    insert.execute(params![source, row, raw, now])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            if let Some(o) = offset {
                tx.execute(
                    "INSERT INTO file_offsets (source, dev, ino, offset, window_crc, window_len, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(source) DO UPDATE SET dev = ?2, ino = ?3, offset = ?4,
                         window_crc = ?5, window_len = ?6, updated_at = ?7",
                    params![
                        source,
                        o.dev as i64,
                        o.ino as i64,
                        o.offset as i64,
                        i64::from(o.window_crc),
                        i64::from(o.window_len),
                        now
                    ],
                )?;
            }
            add_counters(tx, counters)?;
            Ok(ids)
        })
    }

    /// Every staged row of a source, oldest first (to rebuild the grouping state at start).
    pub fn staged_rows(&self, source: &str) -> Result<Vec<StagedRow>, StoreError> {
        self.with_conn("read staged rows", |c| {
            let mut stmt = c.prepare(
                "SELECT id, row, raw, read_at FROM staged_rows WHERE source = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([source], |r| {
                Ok(StagedRow {
                    id: r.get(0)?,
                    row: r.get(1)?,
                    raw: r.get(2)?,
                    read_at: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Enqueues settled calls and removes the staged rows they were built from, in ONE
    /// transaction. A call whose idempotency key exists already is counted, not inserted.
    pub fn enqueue(
        &self,
        rows: &[NewOutboxRow],
        consumed_staged: &[i64],
        counters: &[(&str, i64)],
    ) -> Result<EnqueueOutcome, StoreError> {
        let now = now_ms();
        self.with_tx("enqueue calls", |tx| {
            let mut outcome = EnqueueOutcome::default();
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, raw, state,
                         attempts, next_attempt_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?7)
                     ON CONFLICT(idempotency_key) DO NOTHING",
                )?;
                for row in rows {
                    let n = insert.execute(params![
                        row.kind,
                        row.idempotency_key,
                        row.call_id,
                        row.source,
                        row.body,
                        row.raw,
                        now
                    ])?;
                    if n == 1 {
                        outcome.inserted += 1;
                    } else {
                        outcome.duplicates += 1;
                    }
                }
                let mut delete = tx.prepare_cached("DELETE FROM staged_rows WHERE id = ?1")?;
                for id in consumed_staged {
                    delete.execute([id])?;
                }
            }
            add_counters(tx, counters)?;
            if outcome.duplicates > 0 {
                add_counters(tx, &[("duplicate_calls", outcome.duplicates as i64)])?;
            }
            Ok(outcome)
        })
    }

    /// Remembers the lead id LeadSquared gave for a call it asked pbxlink to place.
    pub fn set_lead_id(&self, call_id: &str, lead_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_tx("store lead id", |tx| {
            tx.execute(
                "INSERT INTO call_annotations (call_id, lead_id, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(call_id) DO UPDATE SET lead_id = ?2, updated_at = ?3",
                params![call_id, lead_id, now],
            )?;
            Ok(())
        })
    }

    /// Stores a disposition. When the call's log was already delivered, a `disposition_update`
    /// row is queued to post it again with the notes; a pending call log simply carries them.
    /// Returns whether an update was queued.
    pub fn set_disposition(
        &self,
        call_id: &str,
        disposition: &str,
        notes: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        self.with_tx("store disposition", |tx| {
            tx.execute(
                "INSERT INTO call_annotations (call_id, disposition, notes, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(call_id) DO UPDATE SET disposition = ?2, notes = ?3, updated_at = ?4",
                params![call_id, disposition, notes, now],
            )?;
            let delivered: Option<(String, String)> = tx
                .query_row(
                    "SELECT body, source FROM outbox WHERE idempotency_key = ?1
                     AND state = 'delivered' AND body IS NOT NULL",
                    [format!("{KIND_CALL_LOG}:{call_id}")],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((body, source)) = delivered else {
                return Ok(false);
            };
            tx.execute(
                "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, raw, state,
                     attempts, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, '', 'pending', 0, ?6, ?6, ?6)
                 ON CONFLICT(idempotency_key) DO UPDATE SET state = 'pending', body = ?5,
                     next_attempt_at = ?6, updated_at = ?6",
                params![
                    KIND_DISPOSITION_UPDATE,
                    format!("{KIND_DISPOSITION_UPDATE}:{call_id}"),
                    call_id,
                    source,
                    body,
                    now
                ],
            )?;
            Ok(true)
        })
    }

    /// Checks the store can take a write (for readiness probes).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.with_tx("check the store is writable", |_| Ok(()))
    }

    /// Whether an idempotency key is already in the outbox (any state).
    pub fn has_key(&self, key: &str) -> Result<bool, StoreError> {
        self.with_conn("look up key", |c| {
            c.query_row(
                "SELECT 1 FROM outbox WHERE idempotency_key = ?1",
                [key],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }

    /// The pending row of `kind` due first, if any is due at `now` (unix ms).
    pub fn next_due(&self, kind: &str, now: i64) -> Result<Option<OutboxRow>, StoreError> {
        self.with_conn("read next due row", |c| {
            c.query_row(
                "SELECT o.id, o.kind, o.idempotency_key, o.call_id, o.body, o.attempts,
                        o.created_at, a.lead_id, a.disposition, a.notes
                 FROM outbox o LEFT JOIN call_annotations a ON a.call_id = o.call_id
                 WHERE o.kind = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2
                 ORDER BY o.next_attempt_at, o.id LIMIT 1",
                params![kind, now],
                |r| {
                    Ok(OutboxRow {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        idempotency_key: r.get(2)?,
                        call_id: r.get(3)?,
                        body: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        attempts: r.get(5)?,
                        created_at: r.get(6)?,
                        lead_id: r.get(7)?,
                        notes: join_notes(r.get(8)?, r.get(9)?),
                    })
                },
            )
            .optional()
        })
    }

    /// Marks a row delivered.
    pub fn mark_delivered(
        &self,
        id: i64,
        endpoint: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_tx("mark delivered", |tx| {
            tx.execute(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?2,
                     updated_at = ?2, last_status = ?3, last_error = NULL, response = ?4
                 WHERE id = ?1",
                params![id, now, status, response],
            )?;
            tx.execute(
                "INSERT INTO endpoint_state (endpoint, last_success_at) VALUES (?1, ?2)
                 ON CONFLICT(endpoint) DO UPDATE SET last_success_at = ?2, paused_until = NULL",
                params![endpoint, now],
            )?;
            add_counters(tx, &[("delivered", 1)])
        })
    }

    /// Records a failed attempt that will be retried; the row goes behind the rows due now,
    /// so one row the CRM keeps failing never blocks the others.
    pub fn mark_retry(
        &self,
        id: i64,
        endpoint: &str,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_tx("record failed attempt", |tx| {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, updated_at = ?2,
                     last_status = ?3, last_error = ?4
                 WHERE id = ?1",
                params![id, now, status, error],
            )?;
            record_endpoint_error(tx, endpoint, now, error, None)?;
            add_counters(tx, &[("delivery_failures", 1)])
        })
    }

    /// Moves a row to the dead letters with the CRM's answer.
    pub fn mark_dead(
        &self,
        id: i64,
        endpoint: &str,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_tx("dead-letter row", |tx| {
            tx.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, updated_at = ?2,
                     last_status = ?3, last_error = ?4
                 WHERE id = ?1",
                params![id, now, status, error],
            )?;
            record_endpoint_error(tx, endpoint, now, error, None)?;
            add_counters(tx, &[("dead_lettered", 1)])
        })
    }

    /// Records that the endpoint refused our credentials or URL; delivery pauses until `until`.
    pub fn mark_paused(
        &self,
        endpoint: &str,
        error: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_tx("record delivery pause", |tx| {
            record_endpoint_error(tx, endpoint, now, error, Some(until_ms))?;
            add_counters(tx, &[("delivery_paused", 1)])
        })
    }

    /// Adds to named counters.
    pub fn add_counters(&self, counters: &[(&str, i64)]) -> Result<(), StoreError> {
        self.with_tx("update counters", |tx| add_counters(tx, counters))
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.with_conn("list dead letters", |c| {
            let mut stmt = c.prepare(
                "SELECT id, call_id, attempts, last_status, last_error, created_at FROM outbox
                 WHERE state = 'dead' ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    call_id: r.get(1)?,
                    attempts: r.get(2)?,
                    last_status: r.get(3)?,
                    last_error: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Puts dead letters back in the queue: one by id, or all of them. Returns how many.
    pub fn retry_dead(&self, id: Option<i64>) -> Result<usize, StoreError> {
        let now = now_ms();
        self.with_tx("retry dead letters", |tx| match id {
            Some(id) => tx.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?2, updated_at = ?2
                     WHERE id = ?1 AND state = 'dead'",
                params![id, now],
            ),
            None => tx.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?1, updated_at = ?1
                     WHERE state = 'dead'",
                params![now],
            ),
        })
    }

    /// Drops the payload of rows delivered before `delivered_before` (unix ms) and forgets
    /// rows delivered before `forget_before` entirely. The key of a compacted row stays, so a
    /// re-import of an old file still finds the call delivered. Returns (compacted, deleted).
    pub fn prune(
        &self,
        delivered_before: i64,
        forget_before: i64,
    ) -> Result<(usize, usize), StoreError> {
        self.with_tx("prune delivered rows", |tx| {
            let compacted = tx.execute(
                "UPDATE outbox SET body = NULL, raw = NULL, response = NULL
                 WHERE state = 'delivered' AND delivered_at < ?1 AND body IS NOT NULL",
                [delivered_before],
            )?;
            let deleted = tx.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < ?1",
                [forget_before],
            )?;
            Ok((compacted, deleted))
        })
    }

    /// Figures for `pbxlink status` and metrics.
    pub fn status(&self) -> Result<StatusReport, StoreError> {
        self.with_conn("read status", |c| {
            let mut report = StatusReport::default();
            {
                let mut stmt = c.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                for row in rows {
                    let (state, n) = row?;
                    let n = n as u64;
                    match state.as_str() {
                        "pending" => report.pending = n,
                        "delivered" => report.delivered = n,
                        "dead" => report.dead = n,
                        _ => {}
                    }
                }
            }
            report.staged = c.query_row("SELECT COUNT(*) FROM staged_rows", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
            report.oldest_pending_at = c.query_row(
                "SELECT MIN(created_at) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            report.last_delivery_at =
                c.query_row("SELECT MAX(last_success_at) FROM endpoint_state", [], |r| {
                    r.get(0)
                })?;
            report.last_error = c
                .query_row(
                    "SELECT last_error_at, last_error FROM endpoint_state
                     WHERE last_error_at IS NOT NULL ORDER BY last_error_at DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            report.paused_until =
                c.query_row("SELECT MAX(paused_until) FROM endpoint_state", [], |r| {
                    r.get(0)
                })?;
            let mut stmt = c.prepare("SELECT name, value FROM counters ORDER BY name")?;
            report.counters = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(report)
        })
    }

    /// Every call body in the outbox with the given state, oldest first (tests and tools).
    pub fn bodies(&self, state: &str) -> Result<Vec<String>, StoreError> {
        self.with_conn("read bodies", |c| {
            let mut stmt =
                c.prepare("SELECT COALESCE(body, '') FROM outbox WHERE state = ?1 ORDER BY id")?;
            let rows = stmt.query_map([state], |r| r.get(0))?;
            rows.collect()
        })
    }
}

/// `pbxlink status` as text.
pub fn format_status(report: &StatusReport, now: chrono::DateTime<chrono::Utc>) -> String {
    use std::fmt::Write;
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| {
                let ago = (now - t).num_seconds().max(0);
                format!("{} ({ago} s ago)", t.format("%Y-%m-%d %H:%M:%S UTC"))
            })
            .unwrap_or_else(|| ms.to_string())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "outbox:      {} pending, {} delivered, {} dead",
        report.pending, report.delivered, report.dead
    );
    let _ = writeln!(
        out,
        "staged:      {} CDR row(s) waiting for their call to end",
        report.staged
    );
    let _ = writeln!(
        out,
        "oldest pending: {}",
        report
            .oldest_pending_at
            .map(|t| format!("{} s", (now.timestamp_millis() - t).max(0) / 1000))
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "last delivery:  {}",
        report
            .last_delivery_at
            .map(when)
            .unwrap_or_else(|| "never".into())
    );
    let _ = writeln!(
        out,
        "last error:     {}",
        report
            .last_error
            .as_ref()
            .map(|(t, e)| format!("{} {e}", when(*t)))
            .unwrap_or_else(|| "none".into())
    );
    if let Some(until) = report.paused_until.filter(|u| *u > now.timestamp_millis()) {
        let _ = writeln!(
            out,
            "DELIVERY PAUSED until {} (the CRM refused credentials or URL)",
            when(until)
        );
    }
    if !report.counters.is_empty() {
        let _ = writeln!(out, "counters:");
        for (name, value) in &report.counters {
            let _ = writeln!(out, "  {name:<28} {value}");
        }
    }
    out
}

fn add_counters(tx: &rusqlite::Transaction<'_>, counters: &[(&str, i64)]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + ?2",
    )?;
    for (name, n) in counters {
        if *n != 0 {
            stmt.execute(params![name, n])?;
        }
    }
    Ok(())
}

fn record_endpoint_error(
    tx: &rusqlite::Transaction<'_>,
    endpoint: &str,
    now: i64,
    error: &str,
    paused_until: Option<i64>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO endpoint_state (endpoint, last_error, last_error_at, paused_until)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(endpoint) DO UPDATE SET last_error = ?2, last_error_at = ?3,
             paused_until = COALESCE(?4, paused_until)",
        params![endpoint, error, now, paused_until],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        s.mark_dead(a.id, "call_log", Some(400), "bad field")
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
}

//! Calls held for reconciliation (`call_log_source = "both"`): a call one source finished
//! waits in its own table until the other source reports it or its wait ends, so that the
//! hold survives a restart. The rules of merging are the call model's
//! ([`crate::call::reconcile`]); this file only stores, and takes each decision in one
//! transaction with the staged rows it consumes and the outbox row it adds.

use rusqlite::{Connection, OptionalExtension, params};

use super::store::{NewOutboxRow, Store, StoreError, now_ms};
use crate::call::sink::{SourceKind, call_log_key};

/// The table, created when the store opens (idempotent).
const SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS reconcile_holds (
        call_id  TEXT PRIMARY KEY,
        side     TEXT NOT NULL CHECK (side IN ('file', 'live')),
        source   TEXT NOT NULL,
        body     TEXT NOT NULL,
        raw      TEXT NOT NULL,
        held_at  INTEGER NOT NULL,
        due_at   INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS reconcile_holds_due ON reconcile_holds(due_at);
"#;

/// Creates the reconcile table if it is missing (called by [`Store::open`]).
pub(super) fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// One call waiting for its other source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCall {
    /// The call's id.
    pub call_id: String,
    /// Which kind of source reported it.
    pub side: SourceKind,
    /// The source's name.
    pub source: String,
    /// The call as that source built it (a [`crate::call::CallRecord`] as JSON).
    pub body: String,
    /// The raw PBX records.
    pub raw: String,
    /// When it was held (unix ms on the reconciler's clock).
    pub held_at: i64,
    /// When it is posted alone if the other source has not reported it.
    pub due_at: i64,
}

/// What became of a call that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Held until the other source reports it or its wait ends.
    Held,
    /// The other source's hold was there: the merged call is in the outbox (`inserted` is
    /// false when its key was there already).
    Merged {
        /// Whether a row was added.
        inserted: bool,
    },
    /// The call's log is in the outbox already (posted alone after the wait, or this
    /// source reported it twice): nothing added.
    AlreadyQueued,
    /// The same source reported a call it had reported already; the newer record replaces
    /// the held one (the wait does not start again).
    Replaced,
    /// Too many calls are held: this one is posted at once, alone.
    PostedAtOnce {
        /// Whether a row was added.
        inserted: bool,
    },
}

/// A call arriving at the reconciler.
#[derive(Debug, Clone)]
pub struct ArrivingCall<'a> {
    /// The call as this source built it, held as is.
    pub held: HeldCall,
    /// Its outbox rows (one per call log), used when it must be posted at once.
    pub alone: &'a [NewOutboxRow],
    /// Staged rows it consumed, removed in the same transaction.
    pub staged_ids: &'a [i64],
}

fn counters(tx: &rusqlite::Transaction<'_>, counters: &[(&str, i64)]) -> rusqlite::Result<()> {
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

fn insert_outbox(tx: &rusqlite::Transaction<'_>, row: &NewOutboxRow) -> rusqlite::Result<bool> {
    let now = now_ms();
    let n = tx.execute(
        "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, raw, state,
             attempts, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?7)
         ON CONFLICT(idempotency_key) DO NOTHING",
        params![
            row.kind,
            row.idempotency_key,
            row.call_id,
            row.source,
            row.body,
            row.raw,
            now
        ],
    )?;
    Ok(n == 1)
}

/// Inserts every row of one call; true when any was added.
fn insert_all(tx: &rusqlite::Transaction<'_>, rows: &[NewOutboxRow]) -> rusqlite::Result<bool> {
    let mut inserted = false;
    for row in rows {
        inserted |= insert_outbox(tx, row)?;
    }
    Ok(inserted)
}

fn delete_staged(tx: &rusqlite::Transaction<'_>, ids: &[i64]) -> rusqlite::Result<()> {
    let mut delete = tx.prepare_cached("DELETE FROM staged_rows WHERE id = ?1")?;
    for id in ids {
        delete.execute([id])?;
    }
    Ok(())
}

fn held_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HeldCall> {
    let side: String = r.get(1)?;
    Ok(HeldCall {
        call_id: r.get(0)?,
        side: SourceKind::parse(&side).unwrap_or(SourceKind::File),
        source: r.get(2)?,
        body: r.get(3)?,
        raw: r.get(4)?,
        held_at: r.get(5)?,
        due_at: r.get(6)?,
    })
}

/// Why a merge could not be built (a held body that no longer reads).
fn merge_failure(e: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.into())
}

impl Store {
    /// Decides, in one transaction, what becomes of a call that arrived from one source:
    /// merged with the other source's hold (`merge` builds the rows from the held call),
    /// held, or dropped as already queued. `max_held` bounds the table: beyond it a call is
    /// posted at once. Counters `merged_counter` (on a merge) and `at_once_counter` are added.
    pub fn reconcile_arrive(
        &self,
        arriving: ArrivingCall<'_>,
        max_held: usize,
        merge: impl FnOnce(&HeldCall) -> Result<Vec<NewOutboxRow>, String>,
        counter_names: (&str, &str),
    ) -> Result<Arrival, StoreError> {
        let (merged_counter, at_once_counter) = counter_names;
        self.with_tx("reconcile a call", |tx| {
            let held = &arriving.held;
            delete_staged(tx, arriving.staged_ids)?;
            let queued = tx
                .query_row(
                    "SELECT 1 FROM outbox WHERE idempotency_key = ?1",
                    [call_log_key(&held.call_id)],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if queued {
                tx.execute(
                    "DELETE FROM reconcile_holds WHERE call_id = ?1",
                    [&held.call_id],
                )?;
                counters(tx, &[("duplicate_calls", 1)])?;
                return Ok(Arrival::AlreadyQueued);
            }
            let other: Option<HeldCall> = tx
                .query_row(
                    "SELECT call_id, side, source, body, raw, held_at, due_at
                     FROM reconcile_holds WHERE call_id = ?1",
                    [&held.call_id],
                    held_from_row,
                )
                .optional()?;
            match other {
                Some(other) if other.side != held.side => {
                    let rows = merge(&other).map_err(merge_failure)?;
                    let inserted = insert_all(tx, &rows)?;
                    tx.execute(
                        "DELETE FROM reconcile_holds WHERE call_id = ?1",
                        [&held.call_id],
                    )?;
                    counters(tx, &[(merged_counter, 1)])?;
                    Ok(Arrival::Merged { inserted })
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE reconcile_holds SET source = ?2, body = ?3, raw = ?4
                         WHERE call_id = ?1",
                        params![held.call_id, held.source, held.body, held.raw],
                    )?;
                    Ok(Arrival::Replaced)
                }
                None => {
                    let count: i64 =
                        tx.query_row("SELECT COUNT(*) FROM reconcile_holds", [], |r| r.get(0))?;
                    if usize::try_from(count).unwrap_or(usize::MAX) >= max_held {
                        let inserted = insert_all(tx, arriving.alone)?;
                        counters(tx, &[(at_once_counter, 1)])?;
                        return Ok(Arrival::PostedAtOnce { inserted });
                    }
                    tx.execute(
                        "INSERT INTO reconcile_holds (call_id, side, source, body, raw, held_at, due_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            held.call_id,
                            held.side.as_str(),
                            held.source,
                            held.body,
                            held.raw,
                            held.held_at,
                            held.due_at
                        ],
                    )?;
                    Ok(Arrival::Held)
                }
            }
        })
    }

    /// Held calls whose wait ended at `now`, earliest first, at most `limit`.
    pub fn reconcile_due(&self, now: i64, limit: usize) -> Result<Vec<HeldCall>, StoreError> {
        self.with_conn("read held calls", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT call_id, side, source, body, raw, held_at, due_at FROM reconcile_holds
                 WHERE due_at <= ?1 ORDER BY due_at, call_id LIMIT ?2",
            )?;
            let rows = stmt.query_map(
                params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                held_from_row,
            )?;
            rows.collect()
        })
    }

    /// Posts a held call alone (its other source never reported it): removes the hold and
    /// adds its `rows` (one per call log) in one transaction, adding `counter`. False when the hold was gone already
    /// (merged meanwhile) or the key was in the outbox.
    pub fn reconcile_release(
        &self,
        held: &HeldCall,
        rows: &[NewOutboxRow],
        counter: &str,
    ) -> Result<bool, StoreError> {
        self.with_tx("post a held call", |tx| {
            let removed = tx.execute(
                "DELETE FROM reconcile_holds WHERE call_id = ?1 AND side = ?2",
                params![held.call_id, held.side.as_str()],
            )?;
            if removed == 0 {
                return Ok(false);
            }
            let inserted = insert_all(tx, rows)?;
            counters(tx, &[(counter, 1)])?;
            Ok(inserted)
        })
    }

    /// When the next held call is due, if any is held.
    pub fn reconcile_next_due(&self) -> Result<Option<i64>, StoreError> {
        self.with_conn("read the next held call", |c| {
            c.query_row("SELECT MIN(due_at) FROM reconcile_holds", [], |r| r.get(0))
        })
    }

    /// How many calls are held.
    pub fn reconcile_held(&self) -> Result<u64, StoreError> {
        self.with_conn("count held calls", |c| {
            c.query_row("SELECT COUNT(*) FROM reconcile_holds", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
        })
    }
}

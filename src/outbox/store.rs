//! The SQLite store: file offsets, staged CDR rows, the outbox and its counters.
//!
//! One connection, one writer, `BEGIN IMMEDIATE` for every write, WAL, and `synchronous`
//! set explicitly. A batch of CDR rows and the file offset after it commit in one
//! transaction; a settled call's outbox row and the removal of its staged rows commit in
//! another, so a crash at any instant leaves either the old or the new state, never a gap.
//!
//! The store is cut by concern, each an `impl Store` block of its own:
//! - [`schema`]: the tables and their migrations;
//! - [`ingest`]: file offsets and the staged rows of calls not yet settled;
//! - [`queue`]: the outbox itself (enqueue, next due, in flight, delivered, retry, dead);
//! - [`annotations`]: what the CRM told pbxlink about a call (lead id, disposition);
//! - [`reports`]: status, dead letters, counters and pruning;
//! - [`payload`]: how a stored payload is kept (one compressed copy);
//! - [`reserve`]: space kept beside the store for the outbox's own writes on a full disk.

mod annotations;
mod ingest;
mod payload;
mod queue;
mod reports;
mod reserve;
mod schema;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{Connection, TransactionBehavior, params};

use crate::config::Synchronous;

pub use ingest::{FileOffset, StagedRow};
pub use queue::{EnqueueOutcome, NewOutboxRow, OutboxRow, ResentCall, ResentReason};
pub use reports::{
    CALL_TALLY_MAX_ROWS, CallTally, DeadLetter, DeadLetterDetail, EndpointReport, FileSourceReport,
    REPORT_TEXT_MAX, RecentCalls, StatusReport, format_status,
};
pub use reserve::reserve_path;

/// Row kind for call logs.
pub const KIND_CALL_LOG: &str = "call_log";
/// Row kind for a call log posted again with a disposition given after its delivery.
pub const KIND_DISPOSITION_UPDATE: &str = "disposition_update";

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
    /// A write failed for lack of space a moment ago (see [`Store::disk_full`]).
    #[error("store {path}: {detail}")]
    DiskFull {
        /// The database file.
        path: PathBuf,
        /// When and what failed, and what it means for ingestion and delivery.
        detail: String,
    },
}

impl StoreError {
    /// Whether SQLite refused a write because the file system holding the store is full
    /// (`SQLITE_FULL`): nothing of that transaction is stored, and trying again once space
    /// returns is safe.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            StoreError::DiskFull { .. } => true,
            StoreError::Json { .. } | StoreError::TooNew { .. } => false,
        }
    }
}

/// How long after the last write refused for lack of space the store still reports itself
/// full ([`Store::disk_full`]): the CDR reader retries a refused batch every second, so a
/// full disk keeps the report fresh and a disk with space again clears it within this time.
pub const DISK_FULL_SHOWN_FOR_MS: i64 = 10_000;

/// Below this much free space on the store's file system, `pbxlink status` calls it full.
pub const LOW_SPACE_BYTES: u64 = 1 << 20;

/// The store. Cheap to share behind an `Arc`; every operation takes the one connection.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// When a write last failed with `SQLITE_FULL` (unix ms; 0: never), and what it was.
    full_at_ms: AtomicI64,
    full_action: Mutex<&'static str>,
    /// The reserve for the outbox's own writes, when this process keeps one (the daemon:
    /// [`Store::keep_reserve`]).
    reserve: std::sync::OnceLock<reserve::Reserve>,
}

/// Current wall-clock time in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating if needed) the store and migrates its schema forward.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        let mut conn = schema::connect(path, synchronous)?;
        schema::migrate(&mut conn, path)?;
        // Tables of other outbox parts (e.g. src/outbox/reconcile.rs) are created here,
        // one line each, after the migrations.
        super::reconcile::create_tables(&conn).map_err(|source| StoreError::Sqlite {
            path: path.to_owned(),
            action: "create the reconcile table",
            source,
        })?;
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            full_at_ms: AtomicI64::new(0),
            full_action: Mutex::new(""),
            reserve: std::sync::OnceLock::new(),
        })
    }

    /// Keeps a reserve beside the store (see [`reserve`]): space that a refused write
    /// (`SQLITE_FULL`) releases so that delivery's own writes still fit while ingestion
    /// pauses, made again when space returns, before ingestion resumes. Its size is derived
    /// from the store ([`Store::reserve_bytes`]). Called once, by the daemon; other processes
    /// opening the store (`pbxlink status`, import) keep none. Returns the size.
    pub fn keep_reserve(&self) -> u64 {
        let bytes = self.reserve_bytes();
        self.reserve
            .get_or_init(|| reserve::Reserve::keep(&self.path, bytes));
        bytes
    }

    /// The reserve's size for this store: the WAL's pages up to its auto-checkpoint plus
    /// [`LOW_SPACE_BYTES`] for new pages of the database file (about 4.9 MiB by default).
    pub fn reserve_bytes(&self) -> u64 {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        reserve::derived_bytes(&conn)
    }

    /// Whether the reserve kept by this process is released (a write was refused for lack
    /// of space and it has not been made again yet): ingestion is paused meanwhile.
    pub fn reserve_released(&self) -> bool {
        self.reserve.get().is_some_and(|r| !r.armed())
    }

    /// Ingestion's writes pass while the reserve (if any) is armed. While it is released,
    /// it is made again first when space allows (at most once a second); until then the
    /// write is refused as [`StoreError::DiskFull`], without asking SQLite, so it cannot
    /// take the space delivery lives on.
    fn ingestion_may_write(&self, action: &'static str) -> Result<(), StoreError> {
        let Some(reserve) = self.reserve.get() else {
            return Ok(());
        };
        if reserve.try_remake(false) {
            return Ok(());
        }
        Err(StoreError::DiskFull {
            path: self.path.clone(),
            detail: format!(
                "DISK FULL: {action} refused while the store's reserve ({:.1} MiB) is released \
                 for delivery's own writes; ingestion resumes by itself when space returns \
                 (nothing is lost: the CDR file is read again from the last stored offset)",
                reserve.mib()
            ),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| {
            let error = StoreError::Sqlite {
                path: self.path.clone(),
                action,
                source,
            };
            if error.is_disk_full() {
                *self.full_action.lock().unwrap_or_else(|p| p.into_inner()) = action;
                self.full_at_ms.store(now_ms(), Ordering::Relaxed);
                if let Some(reserve) = self.reserve.get() {
                    reserve.release(action);
                }
            }
            error
        }
    }

    /// Why the store is full, while its reserve is released or a write failed with
    /// `SQLITE_FULL` within the last [`DISK_FULL_SHOWN_FOR_MS`]: what failed and when, and
    /// what that means. `None` when writes go through (or none was refused lately). A
    /// released reserve is tried again here too, so the report clears by itself.
    pub fn disk_full(&self) -> Option<String> {
        let reserve = self.reserve.get();
        let released = reserve.is_some_and(|r| !r.try_remake(false));
        let at = self.full_at_ms.load(Ordering::Relaxed);
        let age = now_ms().saturating_sub(at);
        if !released && (at == 0 || age > DISK_FULL_SHOWN_FOR_MS) {
            return None;
        }
        let action = *self.full_action.lock().unwrap_or_else(|p| p.into_inner());
        let refused = if at == 0 {
            "the file system of the store had no room for its reserve at the start".to_owned()
        } else {
            format!(
                "the file system of the store refused a write ({action}, {} s ago)",
                age / 1000
            )
        };
        let delivery = match reserve {
            Some(r) if released => format!(
                "delivery of what is stored goes on in the store's reserve ({:.1} MiB, \
                 released for it)",
                r.mib()
            ),
            Some(_) => "delivery goes on".to_owned(),
            None => "delivery waits for space to record what it sends".to_owned(),
        };
        Some(format!(
            "DISK FULL: {refused}; new CDR rows are not stored (ingestion resumes by itself \
             when space returns, nothing is lost: the CDR file is read again from the last \
             stored offset); {delivery}"
        ))
    }

    /// The free space of the file system holding the store, as `pbxlink status` shows it:
    /// `(line, full)`, full when less than [`LOW_SPACE_BYTES`] is left for pbxlink. A
    /// reserve file beside the store (kept by the daemon) counts as used space even while
    /// it is released: ingestion resumes only once it is made again.
    pub fn space(&self) -> Option<(String, bool)> {
        let free = reserve::free_bytes(&self.path)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let fs = rustix::fs::statvfs(dir).ok()?;
        let size = fs.f_blocks.saturating_mul(fs.f_frsize);
        let reserve = reserve::allocated(&reserve::reserve_path(&self.path))
            .map(|held| (self.reserve_bytes(), held));
        let missing = reserve.map_or(0, |(bytes, held)| bytes.saturating_sub(held));
        let full = free.saturating_sub(missing) < LOW_SPACE_BYTES;
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        let mut line = format!(
            "store file system: {:.1} MiB free of {:.1} MiB",
            mib(free),
            mib(size)
        );
        match reserve {
            Some((bytes, held)) if held >= bytes => {
                line.push_str(&format!(" (reserve of {:.1} MiB kept)", mib(bytes)));
            }
            Some((bytes, _)) => line.push_str(&format!(
                " (reserve of {:.1} MiB released for delivery's own writes)",
                mib(bytes)
            )),
            None => {}
        }
        if full {
            line.push_str(
                " -- DISK FULL: new CDR rows cannot be stored until space returns \
                 (nothing is lost; delivery of what is stored goes on while the reserve lasts)",
            );
        }
        Some((line, full))
    }

    pub(in crate::outbox) fn with_tx<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        self.ingestion_may_write(action)?;
        self.write(action, f)
    }

    /// A write of the outbox's own (in-flight and delivered marks, retries, dead letters,
    /// pruning): it passes while ingestion is paused, in the space of a released reserve.
    /// When it is the write whose refusal releases the reserve, it is tried once more at
    /// once, in the space just freed.
    pub(in crate::outbox) fn with_outbox_tx<T>(
        &self,
        action: &'static str,
        mut f: impl FnMut(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let armed = self.reserve.get().is_some_and(reserve::Reserve::armed);
        match self.write(action, &mut f) {
            Err(e) if e.is_disk_full() && armed && self.reserve_released() => self.write(action, f),
            other => other,
        }
    }

    fn write<T>(
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

    pub(in crate::outbox) fn with_conn<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(self.sqlite(action))
    }

    /// Adds to named counters.
    pub fn add_counters(&self, counters: &[(&str, i64)]) -> Result<(), StoreError> {
        self.with_tx("update counters", |tx| add_counters(tx, counters))
    }

    /// Checks the store can take a write (for readiness probes).
    /// A write refused for lack of space in the last [`DISK_FULL_SHOWN_FOR_MS`] fails it too
    /// (an empty transaction commits even on a full disk), with the reason.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if let Some(detail) = self.disk_full() {
            return Err(StoreError::DiskFull {
                path: self.path.clone(),
                detail,
            });
        }
        self.with_tx("check the store is writable", |_| Ok(()))
    }
}

/// Adds to named counters inside a transaction (zero deltas are skipped).
pub(in crate::outbox) fn add_counters(
    tx: &rusqlite::Transaction<'_>,
    counters: &[(&str, i64)],
) -> rusqlite::Result<()> {
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

/// Removes the staged rows `ids` (consumed by the calls enqueued or held in the same
/// transaction).
pub(in crate::outbox) fn delete_staged(
    tx: &rusqlite::Transaction<'_>,
    ids: &[i64],
) -> rusqlite::Result<()> {
    let mut delete = tx.prepare_cached("DELETE FROM staged_rows WHERE id = ?1")?;
    for id in ids {
        delete.execute([id])?;
    }
    Ok(())
}

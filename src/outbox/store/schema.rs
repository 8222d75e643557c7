//! The store's tables and their migrations: `PRAGMA user_version` counts the migrations that
//! have run; each runs once, in its own transaction, and never rewrites what earlier ones
//! stored, so a store written by any older pbxlink opens with its pending rows deliverable.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;
use crate::config::Synchronous;

/// Schema migrations, applied in order; `PRAGMA user_version` is how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 3: crash accounting and a smaller footprint.
    // - `in_flight_since`: set (committed) before a row's request is sent, cleared with its
    //   outcome; still set at a start means the process died with the request in flight.
    // - `resent_reason`: why a row is (or was) sent again although the CRM may have logged it
    //   (`unclean_stop`, `ambiguous_timeout`).
    // - Bodies and answers written from now on are one compressed BLOB (see payload.rs); rows
    //   written before keep their TEXT and stay readable. `raw` is no longer written.
    // - The due index covers pending rows only; delivered rows, the bulk of the table, cost
    //   nothing in it. Pruning scans instead of keeping an index of its own.
    r#"
    ALTER TABLE outbox ADD COLUMN in_flight_since INTEGER;
    ALTER TABLE outbox ADD COLUMN resent_reason TEXT;
    DROP INDEX outbox_due;
    DROP INDEX outbox_delivered;
    CREATE INDEX outbox_due ON outbox(kind, next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_in_flight ON outbox(kind, id) WHERE in_flight_since IS NOT NULL;
    "#,
];

/// The migration after which the file is switched to incremental auto-vacuum.
const VACUUM_AFTER_MIGRATION: usize = 3;

/// Opens the connection with the store's settings (busy timeout, WAL, `synchronous`,
/// incremental auto-vacuum for a new file).
pub(super) fn connect(path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
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
    let conn = Connection::open(path).map_err(err("open"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err("set busy_timeout"))?;
    // Takes effect on a file without tables (a new store); an older file is converted once,
    // by the VACUUM after migration 3.
    // Set only when not set yet: setting it writes, and a store on a full disk must still
    // open (`pbxlink status` says why ingestion stopped).
    let auto_vacuum: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .map_err(err("read auto_vacuum"))?;
    if auto_vacuum != 2 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(err("enable incremental auto-vacuum"))?;
    }
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
    Ok(conn)
}

/// Runs the migrations this file has not had yet.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = |action| {
        move |source| StoreError::Sqlite {
            path: path.to_owned(),
            action,
            source,
        }
    };
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
    // A file with tables from before migration 3 has `auto_vacuum = NONE`.
    let converts_old_file = version > 0 && version < VACUUM_AFTER_MIGRATION as i64;
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
    if converts_old_file {
        switch_to_incremental_vacuum(conn, path);
    }
    Ok(())
}

/// An older file has `auto_vacuum = NONE`: pruned pages are reused but the file never
/// shrinks. One VACUUM (after the upgrade that needs it) switches it to incremental; when
/// it cannot run (another process holds the store, the disk is full), nothing is lost: the
/// file keeps reusing its free pages, it only does not give them back.
fn switch_to_incremental_vacuum(conn: &Connection, path: &Path) {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap_or(0);
    if mode == 2 {
        return;
    }
    let started = std::time::Instant::now();
    match conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;") {
        Ok(()) => tracing::info!(
            store = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "store converted to incremental auto-vacuum (once, after the upgrade)"
        ),
        Err(e) => tracing::warn!(
            store = %path.display(),
            "could not convert the store to incremental auto-vacuum now ({e}); \
             free pages are still reused, the file just does not shrink"
        ),
    }
}

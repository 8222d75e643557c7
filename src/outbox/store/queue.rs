//! The queue: outbox rows from enqueue to delivered or dead, and the crash accounting
//! around each request. A row is marked in flight (committed) before its request is sent
//! and the mark is cleared with the outcome, so a row still marked at a start is one whose
//! request may have reached the CRM before the process died: it is sent again, reported
//! and counted as "resent after an unclean stop".

use rusqlite::{OptionalExtension, params};

use super::payload::{pack, unpack};
use super::{Store, StoreError, add_counters, delete_staged, now_ms};

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
    /// The call model as JSON (kept once, compressed).
    pub body: String,
    /// The raw PBX records it was built from. Not stored since schema 3: the call model is
    /// the one payload kept, and the PBX's own files keep the records.
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

/// What enqueueing a batch of calls did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueOutcome {
    /// New rows.
    pub inserted: usize,
    /// Rows whose idempotency key was already there (already delivered or queued).
    pub duplicates: usize,
}

/// Why a row is sent again although the CRM may already have logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResentReason {
    /// The process died (kill -9, power loss, OOM) with the row's request in flight.
    UncleanStop,
    /// The request timed out without an answer: the CRM may have committed it and stalled.
    AmbiguousTimeout,
}

impl ResentReason {
    /// Every reason, for metrics.
    pub const ALL: [ResentReason; 2] = [ResentReason::UncleanStop, ResentReason::AmbiguousTimeout];

    /// The label value (`pbxlink_outbox_resent_total{reason="unclean_stop"}`), also what the
    /// row's `resent_reason` holds.
    pub fn as_str(self) -> &'static str {
        match self {
            ResentReason::UncleanStop => "unclean_stop",
            ResentReason::AmbiguousTimeout => "ambiguous_timeout",
        }
    }

    /// The store counter (in [`super::StatusReport::counters`]) that counts rows resent
    /// for this reason; it persists across restarts.
    pub fn counter(self) -> &'static str {
        match self {
            ResentReason::UncleanStop => "outbox_resent_unclean_stop",
            ResentReason::AmbiguousTimeout => "outbox_resent_ambiguous_timeout",
        }
    }

    /// In words, for logs and `pbxlink status`.
    pub fn describe(self) -> &'static str {
        match self {
            ResentReason::UncleanStop => "resent after an unclean stop",
            ResentReason::AmbiguousTimeout => "resent after an ambiguous timeout",
        }
    }

    fn parse(text: &str) -> Option<ResentReason> {
        ResentReason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// A row found in flight at a start (or timed out without an answer), to be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResentCall {
    /// Row id.
    pub id: i64,
    /// Kind.
    pub kind: String,
    /// Call id.
    pub call_id: String,
    /// Why.
    pub reason: ResentReason,
    /// When its request was (last) sent, unix ms.
    pub sent_at: Option<i64>,
}

fn join_notes(disposition: Option<String>, notes: Option<String>) -> Option<String> {
    match (disposition, notes) {
        (Some(d), Some(n)) if !n.is_empty() => Some(format!("{d}: {n}")),
        (Some(d), _) => Some(d),
        (None, n) => n,
    }
}

/// A body the store cannot read back becomes an empty one: the CRM client refuses it as
/// unreadable and the row goes to the dead letters with that reason, instead of a row that
/// stops its worker.
pub(super) fn body_or_empty(value: rusqlite::types::ValueRef<'_>, id: i64) -> String {
    match unpack(value) {
        Ok(body) => body.unwrap_or_default(),
        Err(e) => {
            tracing::error!(row = id, "outbox row's stored body cannot be read: {e}");
            String::new()
        }
    }
}

impl Store {
    /// Enqueues settled calls and removes the staged rows they were built from, in ONE
    /// transaction. A call whose idempotency key exists already is counted, not inserted.
    pub fn enqueue(
        &self,
        rows: &[NewOutboxRow],
        consumed_staged: &[i64],
        counters: &[(&str, i64)],
    ) -> Result<EnqueueOutcome, StoreError> {
        let now = now_ms();
        // Compressed before the write lock is taken.
        let bodies: Vec<Vec<u8>> = rows.iter().map(|r| pack(&r.body)).collect();
        self.with_tx("enqueue calls", |tx| {
            let mut outcome = EnqueueOutcome::default();
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, state,
                         attempts, next_attempt_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)
                     ON CONFLICT(idempotency_key) DO NOTHING",
                )?;
                for (row, body) in rows.iter().zip(&bodies) {
                    let n = insert.execute(params![
                        row.kind,
                        row.idempotency_key,
                        row.call_id,
                        row.source,
                        body,
                        now
                    ])?;
                    if n == 1 {
                        outcome.inserted += 1;
                    } else {
                        outcome.duplicates += 1;
                    }
                }
            }
            delete_staged(tx, consumed_staged)?;
            add_counters(tx, counters)?;
            if outcome.duplicates > 0 {
                add_counters(tx, &[("duplicate_calls", outcome.duplicates as i64)])?;
            }
            Ok(outcome)
        })
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
            c.prepare_cached(
                "SELECT o.id, o.kind, o.idempotency_key, o.call_id, o.body, o.attempts,
                        o.created_at, a.lead_id, a.disposition, a.notes
                 FROM outbox o LEFT JOIN call_annotations a ON a.call_id = o.call_id
                 WHERE o.kind = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2
                 ORDER BY o.next_attempt_at, o.id LIMIT 1",
            )?
            .query_row(params![kind, now], |r| {
                let id = r.get(0)?;
                Ok(OutboxRow {
                    id,
                    kind: r.get(1)?,
                    idempotency_key: r.get(2)?,
                    call_id: r.get(3)?,
                    body: body_or_empty(r.get_ref(4)?, id),
                    attempts: r.get(5)?,
                    created_at: r.get(6)?,
                    lead_id: r.get(7)?,
                    notes: join_notes(r.get(8)?, r.get(9)?),
                })
            })
            .optional()
        })
    }

    /// Marks a row in flight, committed before its request is sent: if the process dies
    /// before the outcome is recorded, the next start finds the mark
    /// ([`Store::recover_in_flight`]).
    pub fn mark_in_flight(&self, id: i64) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_outbox_tx("mark in flight", |tx| {
            tx.prepare_cached("UPDATE outbox SET in_flight_since = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
            Ok(())
        })
    }

    /// Clears a row's in-flight mark without recording an attempt (its request got an answer
    /// that changes nothing about the row, e.g. a pause for bad credentials).
    pub fn clear_in_flight(&self, id: i64) -> Result<(), StoreError> {
        self.with_outbox_tx("clear in-flight mark", |tx| {
            tx.execute(
                "UPDATE outbox SET in_flight_since = NULL WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
    }

    /// At a start, before any request of `kind`: every row of that kind still marked in
    /// flight was being sent when the last process died. Each is cleared, marked
    /// [`ResentReason::UncleanStop`] (it stays pending and will be sent again) and counted
    /// in `outbox_resent_unclean_stop`, in one transaction. Returns them, oldest first.
    pub fn recover_in_flight(&self, kind: &str) -> Result<Vec<ResentCall>, StoreError> {
        let now = now_ms();
        self.with_outbox_tx("recover rows in flight at an unclean stop", |tx| {
            let found: Vec<ResentCall> = {
                let mut stmt = tx.prepare(
                    "SELECT id, kind, call_id, in_flight_since FROM outbox
                     WHERE kind = ?1 AND in_flight_since IS NOT NULL ORDER BY id",
                )?;
                stmt.query_map([kind], |r| {
                    Ok(ResentCall {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        call_id: r.get(2)?,
                        reason: ResentReason::UncleanStop,
                        sent_at: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?
            };
            {
                let mut clear = tx.prepare_cached(
                    "UPDATE outbox SET in_flight_since = NULL, resent_reason = ?2, updated_at = ?3
                     WHERE id = ?1",
                )?;
                for call in &found {
                    clear.execute(params![call.id, ResentReason::UncleanStop.as_str(), now])?;
                }
            }
            add_counters(
                tx,
                &[(ResentReason::UncleanStop.counter(), found.len() as i64)],
            )?;
            Ok(found)
        })
    }

    /// Calls marked resent (for either reason), oldest first, at most `limit` (tests, tools).
    pub fn resent_calls(&self, limit: usize) -> Result<Vec<ResentCall>, StoreError> {
        self.with_conn("list resent calls", |c| {
            let mut stmt = c.prepare(
                "SELECT id, kind, call_id, resent_reason, in_flight_since FROM outbox
                 WHERE resent_reason IS NOT NULL ORDER BY id LIMIT ?1",
            )?;
            let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let reason: String = r.get(3)?;
                Ok(ResentCall {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    call_id: r.get(2)?,
                    reason: ResentReason::parse(&reason).unwrap_or(ResentReason::UncleanStop),
                    sent_at: r.get(4)?,
                })
            })?;
            rows.collect()
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
        let response = pack(response);
        self.with_outbox_tx("mark delivered", |tx| {
            tx.prepare_cached(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?2,
                     updated_at = ?2, last_status = ?3, last_error = NULL, response = ?4,
                     in_flight_since = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, now, status, response])?;
            tx.prepare_cached(
                "INSERT INTO endpoint_state (endpoint, last_success_at) VALUES (?1, ?2)
                 ON CONFLICT(endpoint) DO UPDATE SET last_success_at = ?2, paused_until = NULL",
            )?
            .execute(params![endpoint, now])?;
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
        self.retry(id, endpoint, status, error, None)
    }

    /// Like [`Store::mark_retry`] for a request that timed out without an answer: the CRM
    /// may have logged the call, so the row is also marked
    /// [`ResentReason::AmbiguousTimeout`] and counted in `outbox_resent_ambiguous_timeout`.
    pub fn mark_retry_ambiguous(
        &self,
        id: i64,
        endpoint: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        self.retry(
            id,
            endpoint,
            None,
            error,
            Some(ResentReason::AmbiguousTimeout),
        )
    }

    fn retry(
        &self,
        id: i64,
        endpoint: &str,
        status: Option<u16>,
        error: &str,
        resent: Option<ResentReason>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_outbox_tx("record failed attempt", |tx| {
            tx.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, updated_at = ?2,
                     last_status = ?3, last_error = ?4, in_flight_since = NULL,
                     resent_reason = COALESCE(?5, resent_reason)
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                now,
                status,
                error,
                resent.map(ResentReason::as_str)
            ])?;
            record_endpoint_error(tx, endpoint, now, error, None)?;
            add_counters(tx, &[("delivery_failures", 1)])?;
            if let Some(reason) = resent {
                add_counters(tx, &[(reason.counter(), 1)])?;
            }
            Ok(())
        })
    }

    /// Moves a row to the dead letters with the CRM's answer: the HTTP status it refused the
    /// row with, and why.
    pub fn mark_dead(
        &self,
        id: i64,
        endpoint: &str,
        refused_with: u16,
        error: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_outbox_tx("dead-letter row", |tx| {
            tx.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, updated_at = ?2,
                     last_status = ?3, last_error = ?4, in_flight_since = NULL
                 WHERE id = ?1",
                params![id, now, refused_with, error],
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
        self.with_outbox_tx("record delivery pause", |tx| {
            record_endpoint_error(tx, endpoint, now, error, Some(until_ms))?;
            add_counters(tx, &[("delivery_paused", 1)])
        })
    }
}

fn record_endpoint_error(
    tx: &rusqlite::Transaction<'_>,
    endpoint: &str,
    now: i64,
    error: &str,
    paused_until: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO endpoint_state (endpoint, last_error, last_error_at, paused_until)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(endpoint) DO UPDATE SET last_error = ?2, last_error_at = ?3,
             paused_until = COALESCE(?4, paused_until)",
    )?
    .execute(params![endpoint, error, now, paused_until])?;
    Ok(())
}

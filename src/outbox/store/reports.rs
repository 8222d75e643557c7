//! Reports: status figures, dead letters, counters and pruning (with incremental vacuum, so
//! a store whose calls are delivered and pruned gives its pages back to the file system).

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::queue::{ResentReason, body_or_empty};
use super::{Store, StoreError, now_ms};

/// Free pages given back per incremental-vacuum step; the lock is released in between, so
/// the other writers (ingest, delivery) wait at most one step.
const VACUUM_STEP_PAGES: i64 = 2_000;

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
    /// Rows whose request is being sent now (or was, when a process died: until the next
    /// start recovers them).
    pub in_flight: u64,
    /// Enqueue time of the oldest pending row (unix ms).
    pub oldest_pending_at: Option<i64>,
    /// Time of the last successful delivery (unix ms).
    pub last_delivery_at: Option<i64>,
    /// The last delivery error, with its time (unix ms).
    pub last_error: Option<(i64, String)>,
    /// Delivery paused until (unix ms), after 401/403/404.
    pub paused_until: Option<i64>,
    /// Named counters (parse errors, duplicates, rows resent, ...), persistent.
    pub counters: Vec<(String, i64)>,
}

impl StatusReport {
    /// A named counter, 0 when it never counted.
    pub fn counter(&self, name: &str) -> i64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Rows sent again for `reason` since the store was made
    /// (`pbxlink_outbox_resent_total{reason="unclean_stop" | "ambiguous_timeout"}`).
    pub fn resent(&self, reason: ResentReason) -> u64 {
        u64::try_from(self.counter(reason.counter())).unwrap_or(0)
    }
}

impl Store {
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
    /// re-import of an old file still finds the call delivered. The pages freed go back to
    /// the file system (incremental auto-vacuum, in steps). Returns (compacted, deleted).
    pub fn prune(
        &self,
        delivered_before: i64,
        forget_before: i64,
    ) -> Result<(usize, usize), StoreError> {
        let counts = self.with_tx("prune delivered rows", |tx| {
            let compacted = tx.execute(
                "UPDATE outbox SET body = NULL, raw = NULL, response = NULL
                 WHERE state = 'delivered' AND delivered_at < ?1
                     AND (body IS NOT NULL OR raw IS NOT NULL OR response IS NOT NULL)",
                [delivered_before],
            )?;
            let deleted = tx.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < ?1",
                [forget_before],
            )?;
            Ok((compacted, deleted))
        })?;
        self.give_back_free_pages()?;
        Ok(counts)
    }

    /// Truncates the file by its free pages, a step at a time (a no-op on a file still in
    /// `auto_vacuum = NONE`). Returns the pages given back.
    pub fn give_back_free_pages(&self) -> Result<u64, StoreError> {
        let mut given = 0u64;
        loop {
            let free = self.with_conn("count free pages", |c| {
                c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
            })?;
            let incremental = self.with_conn("read auto_vacuum", |c| {
                c.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))
            })? == 2;
            if free == 0 || !incremental {
                return Ok(given);
            }
            let step = free.min(VACUUM_STEP_PAGES);
            self.with_conn("give free pages back", |c| {
                c.execute_batch(&format!("PRAGMA incremental_vacuum({step})"))
            })?;
            given += step as u64;
        }
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
            report.in_flight = c.query_row(
                "SELECT COUNT(*) FROM outbox WHERE in_flight_since IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
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
            let mut stmt = c.prepare("SELECT id, body FROM outbox WHERE state = ?1 ORDER BY id")?;
            let rows = stmt.query_map([state], |r| Ok(body_or_empty(r.get_ref(1)?, r.get(0)?)))?;
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

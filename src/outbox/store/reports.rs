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
        let counts = self.with_outbox_tx("prune delivered rows", |tx| {
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

/// Rows the status page's call tally reads at most (newest first): a day of a very busy
/// site; beyond it the tally says it is a lower bound.
pub const CALL_TALLY_MAX_ROWS: usize = 20_000;
/// Characters of a CRM answer or error the status page shows at most.
pub const REPORT_TEXT_MAX: usize = 300;

/// Calls counted by direction and outcome (as the stored call model names them:
/// `Inbound`/`Outbound`, `Answered`/`NoAnswer`/`Busy` ...) over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallTally {
    /// `(direction, status, calls)`, sorted by direction then status.
    pub counts: Vec<(String, String, u64)>,
    /// Calls in the window.
    pub total: u64,
}

/// The calls of the last hour and of the last day, for the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecentCalls {
    /// Calls enqueued within the last hour.
    pub hour: CallTally,
    /// Calls enqueued within the last day.
    pub day: CallTally,
    /// True when more rows than [`CALL_TALLY_MAX_ROWS`] fell in the day: the figures are a
    /// lower bound.
    pub truncated: bool,
}

/// A dead letter with what the CRM answered, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterDetail {
    /// Row id (what "retry" names).
    pub id: i64,
    /// `call_log` or `disposition_update`.
    pub kind: String,
    /// Call id.
    pub call_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// Why it died, at most [`REPORT_TEXT_MAX`] characters.
    pub reason: String,
    /// The CRM's answer body, at most [`REPORT_TEXT_MAX`] characters (empty: none kept).
    pub answer: String,
    /// When it died (its last update, unix ms).
    pub died_at: i64,
}

/// Where the reading of one source file stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSourceReport {
    /// The source's name in the store (the file's path or the source's name).
    pub source: String,
    /// Bytes consumed.
    pub offset: u64,
    /// When the offset was last committed (unix ms).
    pub updated_at: i64,
}

/// One CRM endpoint's delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointReport {
    /// `call_log`, `disposition_update`.
    pub endpoint: String,
    /// The last error (the reason of a pause while paused), bounded.
    pub last_error: Option<String>,
    /// When it happened (unix ms).
    pub last_error_at: Option<i64>,
    /// The last successful delivery (unix ms).
    pub last_success_at: Option<i64>,
    /// Delivery paused until (unix ms).
    pub paused_until: Option<i64>,
}

/// At most `max` characters of `text`, with "…" when cut.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

impl Store {
    /// The call logs enqueued since `now - 1 day`, counted by the `direction` and `outcome`
    /// of their stored call model, for the last hour and the last day; reads at most `max_rows` rows
    /// (newest first). A body that cannot be read counts under "unknown".
    pub fn recent_calls(&self, now: i64, max_rows: usize) -> Result<RecentCalls, StoreError> {
        const HOUR: i64 = 3_600_000;
        const DAY: i64 = 24 * HOUR;
        let rows = self.with_conn("tally recent calls", |c| {
            let mut stmt = c.prepare(
                "SELECT id, created_at, body FROM outbox
                 WHERE kind = ?1 AND created_at >= ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let limit = i64::try_from(max_rows.saturating_add(1)).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![super::KIND_CALL_LOG, now - DAY, limit], |r| {
                let id: i64 = r.get(0)?;
                Ok((r.get::<_, i64>(1)?, body_or_empty(r.get_ref(2)?, id)))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        let truncated = rows.len() > max_rows;
        let mut hour = std::collections::BTreeMap::<(String, String), u64>::new();
        let mut day = std::collections::BTreeMap::<(String, String), u64>::new();
        for (created_at, body) in rows.into_iter().take(max_rows) {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            // The stored body is the call model (`direction`, `outcome`); the CRM's
            // words (`Direction`, `Status`) are read when a body carries those instead.
            let field = |names: [&str; 2]| {
                names
                    .iter()
                    .find_map(|name| value[*name].as_str())
                    .filter(|s| !s.is_empty())
                    .map(|s| bounded(s, 40))
                    .unwrap_or_else(|| "unknown".into())
            };
            let key = (
                field(["direction", "Direction"]),
                field(["outcome", "Status"]),
            );
            if created_at >= now - HOUR {
                *hour.entry(key.clone()).or_default() += 1;
            }
            *day.entry(key).or_default() += 1;
        }
        let tally = |map: std::collections::BTreeMap<(String, String), u64>| CallTally {
            total: map.values().sum(),
            counts: map.into_iter().map(|((d, s), n)| (d, s, n)).collect(),
        };
        Ok(RecentCalls {
            hour: tally(hour),
            day: tally(day),
            truncated,
        })
    }

    /// The newest `limit` dead letters with the CRM's answer, newest first.
    pub fn dead_letter_details(&self, limit: usize) -> Result<Vec<DeadLetterDetail>, StoreError> {
        self.with_conn("list dead letters with answers", |c| {
            let mut stmt = c.prepare(
                "SELECT id, kind, call_id, attempts, last_status, last_error, response, updated_at
                 FROM outbox WHERE state = 'dead' ORDER BY id DESC LIMIT ?1",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map([limit], |r| {
                let id: i64 = r.get(0)?;
                let answer = super::payload::unpack(r.get_ref(6)?)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Ok(DeadLetterDetail {
                    id,
                    kind: r.get(1)?,
                    call_id: bounded(&r.get::<_, String>(2)?, 120),
                    attempts: r.get(3)?,
                    last_status: r.get(4)?,
                    reason: bounded(
                        &r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        REPORT_TEXT_MAX,
                    ),
                    answer: bounded(&answer, REPORT_TEXT_MAX),
                    died_at: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Where each source file's reading stands (at most `limit` sources, by name).
    pub fn file_sources(&self, limit: usize) -> Result<Vec<FileSourceReport>, StoreError> {
        self.with_conn("list file offsets", |c| {
            let mut stmt = c.prepare(
                "SELECT source, offset, updated_at FROM file_offsets ORDER BY source LIMIT ?1",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map([limit], |r| {
                Ok(FileSourceReport {
                    source: bounded(&r.get::<_, String>(0)?, 300),
                    offset: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    updated_at: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Each CRM endpoint's delivery state, by name.
    pub fn endpoint_states(&self) -> Result<Vec<EndpointReport>, StoreError> {
        self.with_conn("read endpoint states", |c| {
            let mut stmt = c.prepare(
                "SELECT endpoint, last_error, last_error_at, last_success_at, paused_until
                 FROM endpoint_state ORDER BY endpoint LIMIT 16",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(EndpointReport {
                    endpoint: bounded(&r.get::<_, String>(0)?, 60),
                    last_error: r
                        .get::<_, Option<String>>(1)?
                        .map(|e| bounded(&e, REPORT_TEXT_MAX)),
                    last_error_at: r.get(2)?,
                    last_success_at: r.get(3)?,
                    paused_until: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }
}

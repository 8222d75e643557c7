//! `call_log_source = "both"`: one call log per call from a file source and a live source.
//!
//! A call one source finished is held (in the store, so a restart keeps it) until the other
//! source reports the same call id, then the two are merged and posted once: the file's
//! record is the base (its classification, talk time from billsec, recording URL and a
//! Voicemail outcome that only the file knows), the live side gives its lead id (click to
//! call sets it on the channel; a plain cdr_csv file has no column for it) and fills what
//! the file left empty. When the other source has not reported the call after the wait
//! (`reconcile_wait_ms`), the held record is posted alone and counted by the source that was
//! missing ([`ReconcileStats`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::CallRecord;
use super::sink::{
    CallBatch, CallSink, SinkOutcome, SourceKind, call_body_in, outbox_rows, outbox_rows_in,
    stored_call_row,
};
use crate::outbox::Store;
use crate::outbox::reconcile::{Arrival, ArrivingCall, HeldCall};
use crate::outbox::store::StoreError;

/// Default `reconcile_wait_ms`.
pub const DEFAULT_WAIT_MS: u64 = 60_000;

/// At most this many calls are held; beyond, a call is posted at once, alone.
pub const MAX_HELD: usize = 50_000;

/// Held calls posted per pass of the release loop (the rest in the next pass, at once).
const RELEASE_BATCH: usize = 500;

/// The release loop looks at the table at least this often (a hold added by another
/// process, a clock that jumped).
const RELEASE_POLL: Duration = Duration::from_secs(5);

/// Store counters (shown by `pbxlink status`), one per result.
pub mod counters {
    /// Calls posted merged from both sources.
    pub const MERGED: &str = "calls_reconciled_merged";
    /// Calls posted from the live source alone: the file never had them.
    pub const MISSING_FILE: &str = "calls_reconciled_missing_cdr";
    /// Calls posted from the file alone: the live source never reported them.
    pub const MISSING_LIVE: &str = "calls_reconciled_missing_live";
    /// Calls posted at once because too many were held.
    pub const OVERFLOW: &str = "calls_reconciled_overflow";
}

/// Counters of the reconciler, for `/metrics`
/// (`pbxlink_calls_reconciled_total{result="merged|missing_cdr|missing_live"}`).
#[derive(Debug, Default)]
pub struct ReconcileStats {
    /// Calls posted merged from both sources.
    pub merged: AtomicU64,
    /// Calls posted from the live source alone (`result="missing_cdr"`).
    pub missing_file: AtomicU64,
    /// Calls posted from the file alone (`result="missing_live"`).
    pub missing_live: AtomicU64,
    /// Calls posted at once because [`MAX_HELD`] calls were held.
    pub overflow: AtomicU64,
    /// Calls held now (refreshed by every push and release pass).
    pub held: AtomicU64,
}

impl ReconcileStats {
    /// `(result label, count)` for the metric.
    pub fn by_result(&self) -> [(&'static str, u64); 3] {
        [
            ("merged", self.merged.load(Ordering::Relaxed)),
            ("missing_cdr", self.missing_file.load(Ordering::Relaxed)),
            ("missing_live", self.missing_live.load(Ordering::Relaxed)),
        ]
    }
}

/// Merges the two records of one call: the file's as the base, the live side's lead id, and
/// the live side's values where the file has none.
pub fn merge(file: CallRecord, live: CallRecord) -> CallRecord {
    let source = format!("{}+{}", file.source, live.source);
    let segments_from_live = file.segments.is_empty();
    CallRecord {
        source,
        lead_id: live.lead_id.or(file.lead_id),
        recording_url: file.recording_url.or(live.recording_url),
        agent: file.agent.or(live.agent),
        agent_extension: file.agent_extension.or(live.agent_extension),
        display_number: file.display_number.or(live.display_number),
        tag: file.tag.or(live.tag),
        answer: file.answer.or(live.answer),
        caller_name: file.caller_name.or(live.caller_name),
        // The segments and the agents they name come together from one side.
        segments: if segments_from_live {
            live.segments
        } else {
            file.segments
        },
        transfer: if segments_from_live {
            live.transfer
        } else {
            file.transfer
        },
        ..file
    }
}

/// Milliseconds of wall time, advanced by tokio's clock (so paused tests move it).
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_at_start: i64,
    started: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            wall_at_start: chrono::Utc::now().timestamp_millis(),
            started: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall_at_start.saturating_add(elapsed)
    }
}

/// The [`CallSink`] of `call_log_source = "both"`: the file source and the live source push
/// into the same one. Run [`ReconcilingSink::run`] to post the calls whose wait ended.
#[derive(Debug)]
pub struct ReconcilingSink {
    store: Arc<Store>,
    wake_delivery: Arc<Notify>,
    wait_ms: i64,
    clock: Clock,
    stats: Arc<ReconcileStats>,
    new_hold: Notify,
}

impl ReconcilingSink {
    /// Holds calls in `store` for up to `wait_ms` (`reconcile_wait_ms`).
    pub fn new(store: Arc<Store>, wake_delivery: Arc<Notify>, wait_ms: u64) -> Self {
        Self {
            store,
            wake_delivery,
            wait_ms: i64::try_from(wait_ms).unwrap_or(i64::MAX),
            clock: Clock::new(),
            stats: Arc::new(ReconcileStats::default()),
            new_hold: Notify::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ReconcileStats> {
        self.stats.clone()
    }

    fn read(&self, body: &str) -> Result<CallRecord, String> {
        serde_json::from_str(body).map_err(|e| format!("a held call does not read: {e}"))
    }

    /// Posts every held call whose wait ended; returns how many were posted. Blocking.
    pub fn release_due(&self) -> Result<usize, StoreError> {
        let mut posted = 0;
        loop {
            let due = self
                .store
                .reconcile_due(self.clock.now_ms(), RELEASE_BATCH)?;
            let n = due.len();
            for held in due {
                if self.release(&held)? {
                    posted += 1;
                }
            }
            if n < RELEASE_BATCH {
                break;
            }
        }
        self.refresh_held();
        if posted > 0 {
            self.wake_delivery.notify_one();
        }
        Ok(posted)
    }

    fn release(&self, held: &HeldCall) -> Result<bool, StoreError> {
        let (counter, stat, missing) = match held.side {
            SourceKind::Live => (
                counters::MISSING_FILE,
                &self.stats.missing_file,
                "the CDR file",
            ),
            SourceKind::File => (
                counters::MISSING_LIVE,
                &self.stats.missing_live,
                "the live events",
            ),
        };
        let rows = match self.read(&held.body) {
            Ok(call) => outbox_rows_in(&self.store, &call, held.raw.clone())?,
            Err(e) => {
                // Written by an incompatible pbxlink: posted as stored, so that delivery
                // dead-letters it where `pbxlink dead-letter list` shows it.
                tracing::error!(call_id = %crate::logtext::Escaped(&held.call_id), "{e}; posted as stored");
                vec![stored_call_row(
                    &held.call_id,
                    &held.source,
                    held.body.clone(),
                    held.raw.clone(),
                )]
            }
        };
        let posted = self.store.reconcile_release(held, &rows, counter)?;
        if posted {
            stat.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                call_id = %crate::logtext::Escaped(&held.call_id),
                waited_ms = self.clock.now_ms().saturating_sub(held.held_at),
                "{missing} never reported this call: posted from {} alone",
                held.side.as_str()
            );
        }
        Ok(posted)
    }

    fn refresh_held(&self) {
        if let Ok(n) = self.store.reconcile_held() {
            self.stats.held.store(n, Ordering::Relaxed);
        }
    }

    /// Posts held calls as their waits end, until `shutdown` turns true. Holds left at
    /// shutdown stay in the store and are posted (or merged) after the restart.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        loop {
            let sink = self.clone();
            let next = tokio::task::spawn_blocking(move || {
                sink.release_due()?;
                sink.store.reconcile_next_due()
            })
            .await
            .map_err(|e| StoreError::Sqlite {
                path: self.store.path().to_owned(),
                action: "post held calls",
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })??;
            let pause = next.map_or(RELEASE_POLL, |due| {
                let ms = due.saturating_sub(self.clock.now_ms()).max(0);
                Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(RELEASE_POLL)
            });
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.new_hold.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn arrive(
        &self,
        from: SourceKind,
        call: &CallRecord,
        raw: String,
        staged_ids: &[i64],
    ) -> Result<Arrival, StoreError> {
        let alone = outbox_rows_in(&self.store, call, raw.clone())?;
        let own_raw = raw.clone();
        let now = self.clock.now_ms();
        let held = HeldCall {
            call_id: call.call_id.clone(),
            side: from,
            source: call.source.clone(),
            body: call_body_in(&self.store, call)?,
            raw,
            held_at: now,
            due_at: now.saturating_add(self.wait_ms),
        };
        let merge = |other: &HeldCall| {
            let other_call = match self.read(&other.body) {
                Ok(other_call) => other_call,
                Err(e) => {
                    // Written by an incompatible pbxlink: this source's record alone.
                    tracing::error!(call_id = %crate::logtext::Escaped(&other.call_id), "{e}; posting the {} record alone", from.as_str());
                    return Ok(alone.clone());
                }
            };
            let (file, live, raw) = match from {
                SourceKind::File => (call.clone(), other_call, own_raw.clone()),
                SourceKind::Live => (other_call, call.clone(), other.raw.clone()),
            };
            outbox_rows(&merge(file, live), raw).map_err(|e| e.to_string())
        };
        self.store.reconcile_arrive(
            ArrivingCall {
                held,
                alone: &alone,
                staged_ids,
            },
            MAX_HELD,
            merge,
            (counters::MERGED, counters::OVERFLOW),
        )
    }
}

impl CallSink for ReconcilingSink {
    fn push(&self, from: SourceKind, batch: CallBatch) -> Result<SinkOutcome, StoreError> {
        let mut outcome = SinkOutcome::default();
        if !batch.consumed.is_empty() || batch.counters.iter().any(|(_, n)| *n != 0) {
            self.store.enqueue(&[], &batch.consumed, &batch.counters)?;
        }
        for finished in batch.calls {
            let id = crate::logtext::Escaped(&finished.call.call_id).to_string();
            match self.arrive(from, &finished.call, finished.raw, &finished.staged_ids)? {
                Arrival::Held => {
                    outcome.held += 1;
                    tracing::debug!(call_id = %id, "call from {} held until the other source reports it", from.as_str());
                }
                Arrival::Merged { inserted } => {
                    self.stats.merged.fetch_add(1, Ordering::Relaxed);
                    if inserted {
                        outcome.queued += 1;
                        outcome.merged += 1;
                    } else {
                        outcome.duplicates += 1;
                    }
                    tracing::debug!(call_id = %id, "call merged from both sources");
                }
                Arrival::AlreadyQueued | Arrival::Replaced => outcome.duplicates += 1,
                Arrival::PostedAtOnce { inserted } => {
                    self.stats.overflow.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(call_id = %id, "{MAX_HELD} calls are waiting for their other source: this one is posted at once");
                    if inserted {
                        outcome.queued += 1;
                    }
                }
            }
        }
        if outcome.held > 0 {
            self.new_hold.notify_one();
        }
        self.refresh_held();
        if outcome.queued > 0 {
            self.wake_delivery.notify_one();
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;

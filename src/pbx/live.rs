//! What every live source (AMI, the event socket) shares once its tracker has finished a
//! call: the counters of the live path ([`LiveStats`]), the bounded queue of finished calls
//! waiting for the store ([`CALL_LOG_QUEUE`]) and the task that stores them into a
//! [`CallSink`] ([`store_call_logs`]), retrying a call the store refuses. Its logs name the
//! source they got the call from (`"AMI"`, `"ESL"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::call::CallRecord;
use crate::call::sink::{CallBatch, CallSink, FinishedCall, SinkOutcome, SourceKind};
use crate::logtext::Escaped;

/// Counters of the live path.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Popups lost because the sender's queue was full.
    pub popups_overflow: AtomicU64,
    /// Calls enqueued from the live source's events.
    pub calls_enqueued: AtomicU64,
    /// Events missed by a lagging reader.
    pub events_lagged: AtomicU64,
    /// Calls expired without a hangup.
    pub calls_expired: AtomicU64,
    /// Calls forgotten because the tracker's table was full (a flood of distinct calls);
    /// refreshed at every expiry tick.
    pub calls_evicted: AtomicU64,
    /// Attempts to store a call log that the store refused (each is retried).
    pub call_log_store_failures: AtomicU64,
    /// Call logs lost because [`CALL_LOG_QUEUE`] calls were already waiting for the store,
    /// or because pbxlink stopped while the store still refused them.
    pub call_logs_lost: AtomicU64,
}

/// At most this many finished calls wait for the store (a store refusing writes for long
/// fills it; then calls are counted in [`LiveStats::call_logs_lost`]).
pub const CALL_LOG_QUEUE: usize = 10_000;

/// First wait before storing a refused call log again; doubled per failure up to
/// [`CALL_LOG_RETRY_MAX`].
pub const CALL_LOG_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Longest wait between two attempts to store a refused call log.
pub const CALL_LOG_RETRY_MAX: Duration = Duration::from_secs(30);

/// Pushes one live call into `sink` on a blocking thread (the sink writes SQLite).
async fn push_live(sink: &Arc<dyn CallSink>, call: &CallRecord) -> Result<SinkOutcome, String> {
    let sink = sink.clone();
    let call = call.clone();
    let batch = CallBatch {
        calls: vec![FinishedCall::live(call)],
        ..CallBatch::default()
    };
    match tokio::task::spawn_blocking(move || sink.push(SourceKind::Live, batch)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("store task failed: {e}")),
    }
}

/// Stores the calls a tracker finished, got from `source` (`"AMI"`, `"ESL"`: what the logs
/// name), one at a time, until the channel closes. A call the store refuses is tried again
/// after a wait that doubles up to [`CALL_LOG_RETRY_MAX`] (the calls behind it wait in the
/// bounded queue); once `shutdown` is set, a refused call is tried once more and then
/// counted lost.
pub async fn store_call_logs(
    source: &'static str,
    sink: Arc<dyn CallSink>,
    stats: Arc<LiveStats>,
    mut calls: mpsc::Receiver<CallRecord>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some(call) = calls.recv().await {
        let mut wait = CALL_LOG_RETRY_INITIAL;
        let mut failures = 0u32;
        loop {
            match push_live(&sink, &call).await {
                Ok(outcome) => {
                    if outcome.queued > 0 {
                        stats
                            .calls_enqueued
                            .fetch_add(outcome.queued as u64, Relaxed);
                    }
                    if failures > 0 {
                        tracing::info!(call_id = %Escaped(&call.call_id), failures, "call from {source} stored after the store refused it");
                    }
                    break;
                }
                Err(e) => {
                    failures += 1;
                    stats.call_log_store_failures.fetch_add(1, Relaxed);
                    if *shutdown.borrow() {
                        stats.call_logs_lost.fetch_add(1, Relaxed);
                        tracing::error!(call_id = %Escaped(&call.call_id), "pbxlink is stopping and the store still refuses a call from {source}; it is lost: {e}");
                        break;
                    }
                    tracing::error!(call_id = %Escaped(&call.call_id), failures, retry_in_ms = wait.as_millis() as u64, "cannot store a call from {source}, retrying: {e}");
                    let stopping = async {
                        if shutdown.changed().await.is_err() {
                            // No one can stop us any more: only the wait ends the pause.
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopping => {}
                    }
                    wait = (wait * 2).min(CALL_LOG_RETRY_MAX);
                }
            }
        }
    }
}

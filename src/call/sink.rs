//! The one port finished calls leave a source through.
//!
//! Every source (a CDR file through [`crate::pipeline`], a live event stream) pushes the
//! calls it finished into a [`CallSink`], the way a searcher pushes matches into ripgrep's
//! `Sink`: the producer knows nothing of where calls go. [`OutboxSink`] stores them in the
//! outbox; [`crate::call::reconcile::ReconcilingSink`] (`call_log_source = "both"`) holds a
//! call until its other source reported it too. Only [`outbox_rows`] builds the outbox rows of
//! a call's logs (splitting a transferred call), and only [`call_log_key`] says what makes two of them the same delivery.

use std::sync::Arc;

use tokio::sync::Notify;

use super::CallRecord;
use crate::outbox::store::{KIND_CALL_LOG, NewOutboxRow, Store, StoreError};

/// Which kind of source finished a call; "both" merges one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A file written after the call (Asterisk CDR, FreeSWITCH json_cdr/cdr_csv).
    File,
    /// A live event stream (Asterisk AMI, FreeSWITCH event socket).
    Live,
}

impl SourceKind {
    /// The word stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Live => "live",
        }
    }

    /// The kind a stored word names.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "file" => Some(SourceKind::File),
            "live" => Some(SourceKind::Live),
            _ => None,
        }
    }

    /// The other kind.
    pub fn other(self) -> Self {
        match self {
            SourceKind::File => SourceKind::Live,
            SourceKind::Live => SourceKind::File,
        }
    }
}

/// One finished call as a source hands it over.
#[derive(Debug, Clone)]
pub struct FinishedCall {
    /// The call log.
    pub call: CallRecord,
    /// The raw PBX records it was built from (empty for a live source).
    pub raw: String,
    /// Staged records (a file source's) it was built from: removed in the same
    /// transaction that takes the call.
    pub staged_ids: Vec<i64>,
}

impl FinishedCall {
    /// A call of a live source (no raw records, nothing staged).
    pub fn live(call: CallRecord) -> Self {
        Self {
            call,
            raw: String::new(),
            staged_ids: Vec::new(),
        }
    }
}

/// What a source pushes at once: finished calls, and the staged records of the calls it
/// does not post (internal calls), with counters committed together with them.
#[derive(Debug, Clone, Default)]
pub struct CallBatch {
    /// Calls to post.
    pub calls: Vec<FinishedCall>,
    /// Staged records consumed by calls that are not posted.
    pub consumed: Vec<i64>,
    /// Counters to add in the same transaction (e.g. calls skipped).
    pub counters: Vec<(&'static str, i64)>,
}

/// What a sink did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkOutcome {
    /// Call logs put in the outbox now (a transferred call may give several).
    pub queued: usize,
    /// Calls already in the outbox (the same call read again, or posted by the other source).
    pub duplicates: usize,
    /// Calls held until their other source reports them ("both").
    pub held: usize,
    /// Of `queued`, those merged from both sources.
    pub merged: usize,
}

/// Where sources push finished calls. Blocking (it writes SQLite): a file source calls it
/// on its own thread, a live source through `spawn_blocking`.
pub trait CallSink: Send + Sync {
    /// Takes a batch that `from` finished.
    fn push(&self, from: SourceKind, batch: CallBatch) -> Result<SinkOutcome, StoreError>;
}

/// The idempotency key of a call's log: two rows with the same key are one delivery.
pub fn call_log_key(call_id: &str) -> String {
    format!("{KIND_CALL_LOG}:{call_id}")
}

/// The outbox rows of one finished call: one per call log it gives, after the split of a
/// transferred call ([`crate::call::transfer::call_logs`]); each keyed by its own
/// `CallSessionId` (the first keeps the call's id). The only place the split happens, so it
/// happens once, after `call_log_source = "both"` merged the two sources.
pub fn outbox_rows(call: &CallRecord, raw: String) -> Result<Vec<NewOutboxRow>, serde_json::Error> {
    super::transfer::call_logs(call.clone())
        .into_iter()
        .map(|log| {
            Ok(stored_call_row(
                &log.call_id,
                &log.source,
                serde_json::to_string(&log)?,
                raw.clone(),
            ))
        })
        .collect()
}

/// The outbox row of a call log already serialised (a held call posted as it was stored);
/// the only place a call log's row is built.
pub(crate) fn stored_call_row(
    call_id: &str,
    source: &str,
    body: String,
    raw: String,
) -> NewOutboxRow {
    NewOutboxRow {
        kind: KIND_CALL_LOG,
        idempotency_key: call_log_key(call_id),
        call_id: call_id.to_owned(),
        source: source.to_owned(),
        body,
        raw,
    }
}

fn serialise_error(store: &Store, source: serde_json::Error) -> StoreError {
    StoreError::Json {
        path: store.path().to_owned(),
        action: "serialise a call",
        source,
    }
}

/// [`outbox_rows`] with the store's error for a call that cannot be serialised.
pub(crate) fn outbox_rows_in(
    store: &Store,
    call: &CallRecord,
    raw: String,
) -> Result<Vec<NewOutboxRow>, StoreError> {
    outbox_rows(call, raw).map_err(|source| serialise_error(store, source))
}

/// A call as JSON, as it is held for reconciliation (before any split).
pub(crate) fn call_body_in(store: &Store, call: &CallRecord) -> Result<String, StoreError> {
    serde_json::to_string(call).map_err(|source| serialise_error(store, source))
}

/// Stores every call in the outbox at once (`call_log_source = "cdr"` or `"ami"`, and
/// `pbxlink import`); wakes the delivery worker when a row was added.
#[derive(Debug, Clone)]
pub struct OutboxSink {
    store: Arc<Store>,
    wake_delivery: Arc<Notify>,
}

impl OutboxSink {
    /// A sink into `store` that wakes `wake_delivery`.
    pub fn new(store: Arc<Store>, wake_delivery: Arc<Notify>) -> Self {
        Self {
            store,
            wake_delivery,
        }
    }
}

impl CallSink for OutboxSink {
    fn push(&self, _from: SourceKind, batch: CallBatch) -> Result<SinkOutcome, StoreError> {
        let mut rows = Vec::with_capacity(batch.calls.len());
        let mut consumed = batch.consumed;
        for finished in batch.calls {
            consumed.extend_from_slice(&finished.staged_ids);
            rows.extend(outbox_rows_in(&self.store, &finished.call, finished.raw)?);
        }
        if rows.is_empty() && consumed.is_empty() && batch.counters.is_empty() {
            return Ok(SinkOutcome::default());
        }
        let outcome = self.store.enqueue(&rows, &consumed, &batch.counters)?;
        if outcome.inserted > 0 {
            self.wake_delivery.notify_one();
        }
        Ok(SinkOutcome {
            queued: outcome.inserted,
            duplicates: outcome.duplicates,
            held: 0,
            merged: 0,
        })
    }
}

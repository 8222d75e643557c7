//! The CDR-file pipeline, the same for every PBX: tail a file, parse each line, stage the
//! rows together with the file offset in one transaction, group rows into calls, and
//! enqueue each settled call in the outbox.
//!
//! A PBX plugs in a [`LineParser`] (its CDR format) and a [`CallAssembler`] (its grouping
//! and classification rules).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::outbox::store::{FileOffset, KIND_CALL_LOG, NewOutboxRow, Store, StoreError, now_ms};
use crate::pbx::{AssembledCall, CallAssembler};
use crate::tail::{ChangeWaiter, Checkpoint, FileTailer, TailEvent, TailOptions};

/// Parses one line of a PBX's CDR file.
pub trait LineParser: Send {
    /// The parsed record; staged in SQLite as JSON.
    type Record: Serialize + DeserializeOwned + Send;
    /// Why a line was rejected.
    type Error: std::fmt::Display;
    /// Parses a line (no newline). `Ok(None)` for lines that carry no record (a header).
    fn parse(&self, line: &[u8]) -> Result<Option<Self::Record>, Self::Error>;
}

impl LineParser for crate::pbx::asterisk::cdr::CdrParser {
    type Record = crate::pbx::asterisk::cdr::CdrRow;
    type Error = crate::pbx::asterisk::cdr::CdrError;

    fn parse(&self, line: &[u8]) -> Result<Option<Self::Record>, Self::Error> {
        crate::pbx::asterisk::cdr::CdrParser::parse(self, line)
    }
}

/// Counter names shared by the pipeline, `status` and metrics.
pub mod counters {
    /// CDR lines that could not be parsed.
    pub const PARSE_ERRORS: &str = "cdr_parse_errors";
    /// CDR rows staged.
    pub const ROWS_READ: &str = "cdr_rows_read";
    /// Calls enqueued.
    pub const CALLS_ENQUEUED: &str = "calls_enqueued";
    /// Calls not posted (internal calls).
    pub const CALLS_SKIPPED: &str = "calls_skipped";
    /// Rotations followed.
    pub const ROTATIONS: &str = "cdr_file_rotations";
    /// Truncations (restart from 0).
    pub const TRUNCATIONS: &str = "cdr_file_truncations";
    /// Lines dropped for being too long.
    pub const OVERSIZED_LINES: &str = "cdr_oversized_lines";
    /// NUL bytes skipped.
    pub const NUL_BYTES: &str = "cdr_nul_bytes_skipped";
    /// Errors reading the file.
    pub const READ_ERRORS: &str = "cdr_read_errors";
}

/// A change applied to a running source's assembler between two reads (config reload).
pub type SourceUpdate<A> = Box<dyn FnOnce(&mut A) + Send>;

/// A CDR file feeding the outbox.
pub struct FileSource<P: LineParser, A: CallAssembler<Record = P::Record>> {
    name: String,
    path: PathBuf,
    store: Arc<Store>,
    parser: P,
    assembler: A,
    wake_delivery: Arc<Notify>,
    tail_options: TailOptions,
    updates: Option<std::sync::mpsc::Receiver<SourceUpdate<A>>>,
    heartbeat: Option<Arc<AtomicI64>>,
}

impl<P, A> FileSource<P, A>
where
    P: LineParser,
    A: CallAssembler<Record = P::Record>,
{
    /// A source named `name` (the key of its offset and staged rows) reading `path`.
    pub fn new(
        name: String,
        path: PathBuf,
        store: Arc<Store>,
        parser: P,
        assembler: A,
        wake_delivery: Arc<Notify>,
    ) -> Self {
        Self {
            name,
            path,
            store,
            parser,
            assembler,
            wake_delivery,
            tail_options: TailOptions::default(),
            updates: None,
            heartbeat: None,
        }
    }

    /// Updates sent here are applied by [`FileSource::run`] at the top of every loop.
    pub fn with_updates(mut self, updates: std::sync::mpsc::Receiver<SourceUpdate<A>>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// [`FileSource::run`] stores the time (unix ms) here at the top of every loop, so a
    /// watchdog can tell a live reader from a stuck one.
    pub fn with_heartbeat(mut self, heartbeat: Arc<AtomicI64>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Reloads the rows staged before a restart into the assembler.
    pub fn restore(&mut self) -> Result<usize, StoreError> {
        let staged = self.store.staged_rows(&self.name)?;
        let mut restored = 0;
        for s in staged {
            match serde_json::from_str::<P::Record>(&s.row) {
                Ok(record) => {
                    self.assembler.add(s.id, record, s.raw, s.read_at);
                    restored += 1;
                }
                Err(e) => {
                    // Written by an older, incompatible pbxlink: drop it, loudly.
                    tracing::error!(source = %self.name, staged_id = s.id, "staged row unreadable, dropped: {e}");
                    self.store
                        .enqueue(&[], &[s.id], &[(counters::PARSE_ERRORS, 1)])?;
                }
            }
        }
        Ok(restored)
    }

    /// Tails the file until `stop` is set, checking every `poll` (file events wake it sooner).
    /// Blocking: run it on its own thread.
    pub fn run(mut self, poll: Duration, stop: Arc<AtomicBool>) -> Result<(), StoreError> {
        let restored = self.restore()?;
        let saved = self.store.file_offset(&self.name)?;
        tracing::info!(
            source = %self.name,
            path = %self.path.display(),
            offset = saved.map(|o| o.offset),
            restored_rows = restored,
            "tailing CDR file"
        );
        let mut tailer = FileTailer::new(
            self.path.clone(),
            saved.map(to_checkpoint),
            self.tail_options,
        );
        let mut waiter = ChangeWaiter::new(&self.path);
        while !stop.load(Ordering::Relaxed) {
            if let Some(heartbeat) = &self.heartbeat {
                heartbeat.store(now_ms(), Ordering::Relaxed);
            }
            if let Some(updates) = &self.updates {
                while let Ok(update) = updates.try_recv() {
                    update(&mut self.assembler);
                }
            }
            loop {
                match tailer.poll() {
                    Ok(Some(batch)) => {
                        let checkpoint = from_checkpoint(&batch.checkpoint);
                        let counters = event_counters(&self.name, &batch.events);
                        if let Err(e) = self.ingest(&batch.lines, Some(&checkpoint), &counters) {
                            // Nothing of this batch is stored: read it again from the saved offset.
                            tracing::error!(source = %self.name, "cannot store CDR rows, retrying: {e}");
                            std::thread::sleep(Duration::from_secs(1));
                            let saved = self.store.file_offset(&self.name)?;
                            tailer = FileTailer::new(
                                self.path.clone(),
                                saved.map(to_checkpoint),
                                self.tail_options,
                            );
                            break;
                        }
                        // A long backlog (first start, catching up after an outage) must
                        // not hold its settled calls back until the file's end.
                        self.flush_settled(now_ms())?;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(source = %self.name, path = %self.path.display(), "reading CDR file failed: {e}");
                        self.store.add_counters(&[(counters::READ_ERRORS, 1)])?;
                        break;
                    }
                }
            }
            self.flush_settled(now_ms())?;
            waiter.wait(poll);
        }
        Ok(())
    }

    /// Parses lines, stages the rows with `offset` in one transaction, and feeds the assembler.
    pub fn ingest(
        &mut self,
        lines: &[Vec<u8>],
        offset: Option<&FileOffset>,
        extra_counters: &[(&'static str, i64)],
    ) -> Result<(), StoreError> {
        let mut records = Vec::with_capacity(lines.len());
        let mut staged = Vec::with_capacity(lines.len());
        let mut errors = 0i64;
        for line in lines {
            match self.parser.parse(line) {
                Ok(Some(record)) => {
                    let json =
                        serde_json::to_string(&record).map_err(|source| StoreError::Json {
                            path: self.store.path().to_owned(),
                            action: "serialise a CDR row",
                            source,
                        })?;
                    staged.push((json, String::from_utf8_lossy(line).into_owned()));
                    records.push(record);
                }
                Ok(None) => {}
                Err(e) => {
                    errors += 1;
                    tracing::warn!(
                        source = %self.name,
                        line = %String::from_utf8_lossy(&line[..line.len().min(300)]),
                        "corrupt CDR line skipped: {e}"
                    );
                }
            }
        }
        let mut counters: Vec<(&str, i64)> = vec![
            (counters::PARSE_ERRORS, errors),
            (counters::ROWS_READ, records.len() as i64),
        ];
        counters.extend_from_slice(extra_counters);
        let ids = self
            .store
            .commit_ingest(&self.name, offset, &staged, &counters)?;
        let now = now_ms();
        for ((id, record), (_, raw)) in ids.into_iter().zip(records).zip(staged) {
            self.assembler.add(id, record, raw, now);
        }
        Ok(())
    }

    /// Enqueues every call that has settled by `now`.
    pub fn flush_settled(&mut self, now: i64) -> Result<usize, StoreError> {
        let calls = self.assembler.take_settled(now);
        self.enqueue(calls)
    }

    /// Enqueues every call held, settled or not (end of an import).
    pub fn flush_all(&mut self) -> Result<usize, StoreError> {
        let calls = self.assembler.take_all();
        self.enqueue(calls)
    }

    fn enqueue(&mut self, calls: Vec<AssembledCall>) -> Result<usize, StoreError> {
        if calls.is_empty() {
            return Ok(0);
        }
        let mut rows = Vec::new();
        let mut consumed = Vec::new();
        let mut skipped = 0i64;
        for assembled in calls {
            consumed.extend_from_slice(&assembled.staged_ids);
            match assembled.call {
                Some(call) => {
                    let body = serde_json::to_string(&call).map_err(|source| StoreError::Json {
                        path: self.store.path().to_owned(),
                        action: "serialise a call",
                        source,
                    })?;
                    tracing::debug!(source = %self.name, call_id = %call.call_id, direction = ?call.direction, outcome = ?call.outcome, legs = call.legs, "call assembled");
                    rows.push(NewOutboxRow {
                        kind: KIND_CALL_LOG,
                        idempotency_key: format!("{KIND_CALL_LOG}:{}", call.call_id),
                        call_id: call.call_id,
                        source: self.name.clone(),
                        body,
                        raw: assembled.raw,
                    });
                }
                None => {
                    skipped += 1;
                    tracing::debug!(source = %self.name, "call not posted: {}", assembled.skipped.unwrap_or_default());
                }
            }
        }
        let outcome =
            self.store
                .enqueue(&rows, &consumed, &[(counters::CALLS_SKIPPED, skipped)])?;
        self.store
            .add_counters(&[(counters::CALLS_ENQUEUED, outcome.inserted as i64)])?;
        if outcome.duplicates > 0 {
            tracing::info!(source = %self.name, duplicates = outcome.duplicates, "calls already in the outbox were not queued again");
        }
        if outcome.inserted > 0 {
            self.wake_delivery.notify_one();
        }
        Ok(outcome.inserted)
    }

    /// Feeds a whole file once (backfill), without touching the tailing offset.
    pub fn import_file(&mut self, path: &Path) -> std::io::Result<Result<usize, StoreError>> {
        let data = std::fs::read(path)?;
        let mut queued = 0;
        for chunk in data
            .split(|&b| b == b'\n')
            .collect::<Vec<_>>()
            .chunks(5_000)
        {
            let lines: Vec<Vec<u8>> = chunk
                .iter()
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.iter().all(|&b| b == 0 || b == b' '))
                .map(|l| l.iter().copied().filter(|&b| b != 0).collect())
                .collect();
            if let Err(e) = self.ingest(&lines, None, &[]) {
                return Ok(Err(e));
            }
            match self.flush_settled(i64::MIN) {
                Ok(n) => queued += n,
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(self.flush_all().map(|n| n + queued))
    }
}

fn to_checkpoint(o: FileOffset) -> Checkpoint {
    Checkpoint {
        dev: o.dev,
        ino: o.ino,
        offset: o.offset,
        window_crc: o.window_crc,
        window_len: o.window_len,
    }
}

fn from_checkpoint(c: &Checkpoint) -> FileOffset {
    FileOffset {
        dev: c.dev,
        ino: c.ino,
        offset: c.offset,
        window_crc: c.window_crc,
        window_len: c.window_len,
    }
}

fn event_counters(source: &str, events: &[TailEvent]) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for event in events {
        let counter = match event {
            TailEvent::Rotated { .. } | TailEvent::ResumedRotated { .. } => {
                tracing::info!(source, "CDR file rotated: {event:?}");
                counters::ROTATIONS
            }
            TailEvent::Truncated { .. } | TailEvent::ChecksumMismatch { .. } => {
                tracing::warn!(
                    source,
                    "CDR file truncated or replaced, reading it again from the start (duplicates are absorbed): {event:?}"
                );
                counters::TRUNCATIONS
            }
            TailEvent::LineTooLong { .. } => {
                tracing::warn!(source, "CDR line too long, skipped: {event:?}");
                counters::OVERSIZED_LINES
            }
            TailEvent::NulBytesSkipped { bytes, .. } => {
                tracing::warn!(source, bytes, "NUL bytes in the CDR file skipped");
                out.push((counters::NUL_BYTES, *bytes as i64));
                continue;
            }
            other => {
                tracing::info!(source, "CDR file: {other:?}");
                continue;
            }
        };
        out.push((counter, 1));
    }
    out
}

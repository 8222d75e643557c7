//! The CDR-file pipeline, the same for every PBX: tail a file, parse each line, stage the
//! rows together with the file offset in one transaction, group rows into calls, and
//! enqueue each settled call in the outbox.
//!
//! A PBX plugs in a [`LineParser`] (its CDR format) and a [`CallAssembler`] (its grouping;
//! the call rules are the shared [`crate::call::rules`]). Settled calls leave through a
//! [`CallSink`] (the outbox, or the reconciler of `call_log_source = "both"`).
//!
//! The file must be a regular file (a symbolic link only with `follow_symlink`); with no
//! saved position, a file that already exists is started at its end unless
//! [`StartAt::Beginning`] (see [`FileSource::with_file_rules`]). A corrupt line is counted
//! and logged with its offset and an escaped excerpt of at most
//! [`EXCERPT_BYTES`](crate::logtext::EXCERPT_BYTES) bytes, never whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::call::sink::{CallBatch, CallSink, FinishedCall, OutboxSink, SourceKind};
use crate::import::{ImportProgress, ProgressUnit};
use crate::logtext::{EXCERPT_BYTES, Escaped, excerpt};
use crate::outbox::store::{FileOffset, Store, StoreError, now_ms};
use crate::pbx::{AssembledCall, CallAssembler};
use crate::tail::{Batch, ChangeWaiter, Checkpoint, FileTailer, StartAt, TailEvent, TailOptions};

/// The staged-row id of a record `pbxlink import` did not stage (row ids start at 1).
const UNSTAGED: i64 = 0;

/// How the rows of a read are kept until their call is enqueued.
#[derive(Clone, Copy)]
enum Staging<'a> {
    /// Staged in the store, with the file offset after them (the tailing daemon).
    Staged(Option<&'a FileOffset>),
    /// Held in memory only (`pbxlink import`: the file is read again after a crash).
    Unstaged,
}

/// The ids of rows that were staged (an import's are not).
fn staged_only(mut ids: Vec<i64>) -> Vec<i64> {
    ids.retain(|&id| id != UNSTAGED);
    ids
}

/// Corrupt lines of one batch logged one by one; the rest are summed up in one line.
const CORRUPT_LINES_LOGGED_PER_BATCH: usize = 10;

/// Parses one line of a PBX's CDR file.
pub trait LineParser: Send {
    /// The parsed record; staged in SQLite as JSON.
    type Record: Serialize + DeserializeOwned + Send;
    /// Why a line was rejected.
    type Error: std::fmt::Display;
    /// Parses a line (no newline) read at `now` (one clock reading per batch of lines; a
    /// record dated too far from it is an error). `Ok(None)` for lines that carry no record
    /// (a header).
    fn parse(&self, line: &[u8], now: DateTime<Utc>) -> Result<Option<Self::Record>, Self::Error>;
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

    /// The counters every file source keeps, labelled with its `source` on `/metrics`.
    pub const FILE_SOURCE: [&str; 9] = [
        PARSE_ERRORS,
        ROWS_READ,
        CALLS_ENQUEUED,
        CALLS_SKIPPED,
        ROTATIONS,
        TRUNCATIONS,
        OVERSIZED_LINES,
        NUL_BYTES,
        READ_ERRORS,
    ];
}

/// A change applied to a running source's assembler between two reads (config reload).
pub type SourceUpdate<A> = Box<dyn FnOnce(&mut A) + Send>;

/// A blocking reader of the files a PBX writes, as the daemon runs it on a thread of its own
/// ([`crate::pbx::parts::PbxParts::add_file_reader`]): a tailed CDR file, or a watched
/// directory of per-call files.
pub trait FileReader: Send + 'static {
    /// Takes what the daemon hands every reader: the heartbeat its watchdog reads (stored at
    /// the top of every loop), the configuration file the `pbxlink import` hint names, and the
    /// sink settled calls go to instead of the outbox (`call_log_source = "both"`).
    fn attach(
        self,
        heartbeat: Arc<AtomicI64>,
        config_path: Option<&Path>,
        sink: Option<Arc<dyn CallSink>>,
    ) -> Self;

    /// Reads until `stop` is set.
    fn read_until(self, stop: Arc<AtomicBool>) -> Result<(), StoreError>;
}

/// A CDR file tailed by a [`FileSource`], checked every `poll` (file events wake it sooner).
pub struct Tailed<P: LineParser, A: CallAssembler<Record = P::Record>> {
    /// The pipeline reading the file.
    pub source: FileSource<P, A>,
    /// How often the file is checked when no file event arrives.
    pub poll: Duration,
}

impl<P, A> FileReader for Tailed<P, A>
where
    P: LineParser + 'static,
    A: CallAssembler<Record = P::Record> + Send + 'static,
{
    fn attach(
        self,
        heartbeat: Arc<AtomicI64>,
        config_path: Option<&Path>,
        sink: Option<Arc<dyn CallSink>>,
    ) -> Self {
        let mut source = self
            .source
            .with_heartbeat(heartbeat)
            .with_config_path(config_path);
        if let Some(sink) = sink {
            source = source.with_sink(sink);
        }
        Self {
            source,
            poll: self.poll,
        }
    }

    fn read_until(self, stop: Arc<AtomicBool>) -> Result<(), StoreError> {
        self.source.run(self.poll, stop)
    }
}

/// A CDR file feeding the outbox.
pub struct FileSource<P: LineParser, A: CallAssembler<Record = P::Record>> {
    name: String,
    path: PathBuf,
    store: Arc<Store>,
    parser: P,
    assembler: A,
    sink: Arc<dyn CallSink>,
    tail_options: TailOptions,
    updates: Option<std::sync::mpsc::Receiver<SourceUpdate<A>>>,
    heartbeat: Option<Arc<AtomicI64>>,
    /// A symbolic link at the path is followed (else refused).
    follow_symlink: bool,
    /// Where a file that exists at the first start (no saved position) is started.
    start_at: StartAt,
    /// The daemon's configuration file, for the `pbxlink import` command a skip log names.
    config_path: Option<PathBuf>,
    /// Where `pbxlink import` counts what it read and queued (None when tailing).
    progress: Option<Arc<ImportProgress>>,
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
            parser,
            assembler,
            sink: Arc::new(OutboxSink::new(store.clone(), wake_delivery)),
            store,
            tail_options: TailOptions::default(),
            updates: None,
            heartbeat: None,
            follow_symlink: false,
            start_at: StartAt::Beginning,
            config_path: None,
            progress: None,
        }
    }

    /// Whether a symbolic link at the path is followed (default: refused), and where reading
    /// starts in a file that already exists when no position was ever saved (default:
    /// [`StartAt::Beginning`]; the configuration's default is [`StartAt::End`]).
    pub fn with_file_rules(mut self, follow_symlink: bool, start_at: StartAt) -> Self {
        self.follow_symlink = follow_symlink;
        self.start_at = start_at;
        self
    }

    /// The configuration file the daemon runs with, named in the `pbxlink import` command
    /// logged when a first start passes over an existing file.
    pub fn with_config_path(mut self, path: Option<&Path>) -> Self {
        self.config_path =
            path.map(|path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
        self
    }

    /// Counts the rows, corrupt lines and calls of every read from now on into `progress`
    /// (`pbxlink import`'s progress bar and summary); [`FileSource::import_file`] also
    /// reports how far into the file it is.
    pub fn set_progress(&mut self, progress: Option<Arc<ImportProgress>>) {
        self.progress = progress;
    }

    /// Where this source counts for `pbxlink import`, if anywhere.
    pub fn progress(&self) -> Option<&Arc<ImportProgress>> {
        self.progress.as_ref()
    }

    fn tailer(&self, saved: Option<Checkpoint>) -> FileTailer {
        FileTailer::new(self.path.clone(), saved, self.tail_options)
            .follow_symlinks(self.follow_symlink)
            .start_at(self.start_at)
    }

    /// Settled calls go to `sink` instead of straight into the outbox (`call_log_source =
    /// "both"`: the reconciler).
    pub fn with_sink(mut self, sink: Arc<dyn CallSink>) -> Self {
        self.sink = sink;
        self
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
        let mut tailer = self.tailer(saved.map(to_checkpoint));
        // Where a first start passed over the existing file, until the store has an offset:
        // a tailer made again after a failed commit must not pass over more.
        let mut skipped_to: Option<Checkpoint> = None;
        // The last read error and how many times in a row it happened: logged once, not
        // at every poll.
        let mut failing: Option<(String, u64)> = None;
        // The last error storing a batch, and how many batches it refused in a row.
        let mut refused: Option<(String, u64)> = None;
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
                let polled = tailer.poll();
                if polled.is_ok() {
                    if let Some((error, times)) = failing.take() {
                        tracing::info!(source = %self.name, path = %Escaped(&self.path.to_string_lossy()), failed_reads = times, "CDR file readable again (it failed with: {error})");
                    }
                }
                match polled {
                    Ok(Some(batch)) => {
                        if batch
                            .events
                            .iter()
                            .any(|e| matches!(e, TailEvent::SkippedExisting { .. }))
                        {
                            skipped_to = Some(batch.checkpoint);
                        }
                        if let Err(e) = self.ingest_batch(&batch) {
                            // Nothing of this batch is stored: read it again from the saved
                            // offset (a full disk: every second until space returns). Logged
                            // when the error starts or changes, not at every retry.
                            let text = e.to_string();
                            if refused.as_ref().is_none_or(|(last, _)| *last != text) {
                                tracing::error!(source = %self.name, disk_full = e.is_disk_full(), "cannot store CDR rows, retrying every second (logged again only when the error changes): {text}");
                                refused = Some((text, 0));
                            }
                            if let Some((_, times)) = &mut refused {
                                *times += 1;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                            let saved = self.store.file_offset(&self.name)?;
                            tailer = self.tailer(saved.map(to_checkpoint).or(skipped_to));
                            break;
                        }
                        if let Some((error, times)) = refused.take() {
                            tracing::info!(source = %self.name, refused_batches = times, "CDR rows stored again (they were refused with: {error})");
                        }
                        // A long backlog (first start, catching up after an outage) must
                        // not hold its settled calls back until the file's end.
                        self.flush_settled_or_wait()?;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let text = e.to_string();
                        match &mut failing {
                            Some((last, times)) if *last == text => *times += 1,
                            _ => {
                                tracing::error!(source = %self.name, path = %Escaped(&self.path.to_string_lossy()), "reading CDR file failed (logged again only when the error changes): {text}");
                                failing = Some((text, 1));
                            }
                        }
                        match self.store.add_counters(&[(counters::READ_ERRORS, 1)]) {
                            Err(e) if !e.is_disk_full() => return Err(e),
                            _ => {}
                        }
                        break;
                    }
                }
            }
            self.flush_settled_or_wait()?;
            waiter.wait(poll);
        }
        Ok(())
    }

    /// Stages one batch of the tailer with its checkpoint (see [`FileSource::ingest`]),
    /// counting and logging its events.
    pub fn ingest_batch(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let checkpoint = from_checkpoint(&batch.checkpoint);
        let counters = self.event_counters(&batch.events);
        self.ingest_lines(
            &batch.lines,
            &batch.offsets,
            Staging::Staged(Some(&checkpoint)),
            &counters,
        )
    }

    /// Parses lines, stages the rows with `offset` in one transaction, and feeds the assembler.
    pub fn ingest(
        &mut self,
        lines: &[Vec<u8>],
        offset: Option<&FileOffset>,
        extra_counters: &[(&'static str, i64)],
    ) -> Result<(), StoreError> {
        self.ingest_lines(lines, &[], Staging::Staged(offset), extra_counters)
    }

    /// [`FileSource::ingest`], with the file offset of each line for the logs (`line_offsets`
    /// may be empty when they are not known).
    fn ingest_lines(
        &mut self,
        lines: &[Vec<u8>],
        line_offsets: &[u64],
        staging: Staging<'_>,
        extra_counters: &[(&'static str, i64)],
    ) -> Result<(), StoreError> {
        let mut records = Vec::with_capacity(lines.len());
        let mut staged = Vec::with_capacity(lines.len());
        let mut errors = 0i64;
        let mut unlogged: Option<(u64, Option<u64>, Option<u64>)> = None;
        let now = Utc::now();
        for (i, line) in lines.iter().enumerate() {
            match self.parser.parse(line, now) {
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
                    let at = line_offsets.get(i).copied();
                    if errors as usize <= CORRUPT_LINES_LOGGED_PER_BATCH {
                        tracing::warn!(
                            source = %self.name,
                            offset = at,
                            bytes = line.len(),
                            line = %excerpt(line, EXCERPT_BYTES),
                            "corrupt CDR line skipped: {e}"
                        );
                    } else {
                        let (n, first, last) = unlogged.get_or_insert((0, at, at));
                        *n += 1;
                        *last = at;
                        if first.is_none() {
                            *first = at;
                        }
                    }
                }
            }
        }
        if let Some((n, first, last)) = unlogged {
            tracing::warn!(
                source = %self.name,
                first_offset = first,
                last_offset = last,
                "{n} more corrupt CDR line(s) in the same read skipped (counted in {})",
                counters::PARSE_ERRORS
            );
        }
        let mut counters: Vec<(&str, i64)> = vec![
            (counters::PARSE_ERRORS, errors),
            (counters::ROWS_READ, records.len() as i64),
        ];
        counters.extend_from_slice(extra_counters);
        let ids = match staging {
            Staging::Staged(offset) => self
                .store
                .commit_ingest(&self.name, offset, &staged, &counters)?,
            Staging::Unstaged => {
                self.store.add_counters(&counters)?;
                vec![UNSTAGED; staged.len()]
            }
        };
        if let Some(progress) = &self.progress {
            progress.add_lines(records.len() as u64, errors as u64);
        }
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

    /// [`FileSource::flush_settled`] for the tailing loop: a store refusing the write for
    /// lack of space is no failure of the reader. The calls' rows stay staged (nothing of
    /// the transaction is stored), so the assembler is rebuilt from them as at a start,
    /// and the next loop tries again.
    fn flush_settled_or_wait(&mut self) -> Result<(), StoreError> {
        match self.flush_settled(now_ms()) {
            Ok(_) => Ok(()),
            Err(e) if e.is_disk_full() => {
                drop(self.assembler.take_all());
                self.restore()?;
                Ok(())
            }
            Err(e) => Err(e),
        }
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
        let mut batch = CallBatch::default();
        let mut skipped = 0i64;
        for assembled in calls {
            match assembled.call {
                Some(call) => {
                    tracing::debug!(source = %self.name, call_id = %Escaped(&call.call_id), direction = ?call.direction, outcome = ?call.outcome, legs = call.legs, "call assembled");
                    batch.calls.push(FinishedCall {
                        call,
                        raw: assembled.raw,
                        staged_ids: staged_only(assembled.staged_ids),
                    });
                }
                None => {
                    skipped += 1;
                    batch.consumed.extend(
                        assembled
                            .staged_ids
                            .into_iter()
                            .filter(|&id| id != UNSTAGED),
                    );
                    tracing::debug!(source = %self.name, "call not posted: {}", Escaped(&assembled.skipped.unwrap_or_default()));
                }
            }
        }
        batch.counters.push((counters::CALLS_SKIPPED, skipped));
        let outcome = self.sink.push(SourceKind::File, batch)?;
        if let Some(progress) = &self.progress {
            progress.add_calls(
                outcome.queued as u64,
                outcome.duplicates as u64,
                skipped as u64,
            );
        }
        self.store
            .add_counters(&[(counters::CALLS_ENQUEUED, outcome.queued as i64)])?;
        if outcome.duplicates > 0 {
            tracing::info!(source = %self.name, duplicates = outcome.duplicates, "calls already in the outbox were not queued again");
        }
        Ok(outcome.queued)
    }

    /// Feeds a whole file once (backfill) from its first byte to its current end, without
    /// touching the tailing offset. Read in bounded batches by the same tailer (so the same
    /// rules: a regular file only, a symbolic link only with `follow_symlink`, never
    /// blocking on a FIFO).
    pub fn import_file(&mut self, path: &Path) -> std::io::Result<Result<usize, StoreError>> {
        let mut tailer = FileTailer::new(path.to_owned(), None, self.tail_options)
            .follow_symlinks(self.follow_symlink);
        if let Some(progress) = &self.progress {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            progress.start_input(ProgressUnit::Bytes, size);
        }
        let mut queued = 0;
        while let Some(batch) = tailer.poll()? {
            let counters = self.event_counters(&batch.events);
            if let Some(progress) = &self.progress {
                // A line too long to be a record is one more corrupt line.
                let too_long = batch
                    .events
                    .iter()
                    .filter(|e| matches!(e, TailEvent::LineTooLong { .. }))
                    .count();
                progress.add_lines(0, too_long as u64);
            }
            let read_to = batch.checkpoint.offset;
            // Lines of blanks (a crash's filler) carry nothing.
            let (lines, offsets): (Vec<Vec<u8>>, Vec<u64>) = batch
                .lines
                .into_iter()
                .zip(batch.offsets)
                .filter(|(line, _)| !line.iter().all(|&b| b == b' '))
                .unzip();
            // Not staged: the file itself is what a crashed import is run again on (the
            // calls it queued are skipped then), and staging would write and delete every
            // row once more.
            if let Err(e) = self.ingest_lines(&lines, &offsets, Staging::Unstaged, &counters) {
                return Ok(Err(e));
            }
            if let Some(progress) = &self.progress {
                progress.set_position(read_to);
            }
            match self.flush_settled(i64::MIN) {
                Ok(n) => queued += n,
                Err(e) => return Ok(Err(e)),
            }
        }
        if tailer.checkpoint().is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file", Escaped(&path.to_string_lossy())),
            ));
        }
        Ok(self.flush_all().map(|n| n + queued))
    }

    /// Counters for a batch's events; logs each event once.
    fn event_counters(&self, events: &[TailEvent]) -> Vec<(&'static str, i64)> {
        let source = self.name.as_str();
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
                TailEvent::SkippedExisting { bytes, lines, .. } => {
                    let lines = lines.map_or_else(|| "uncounted".to_owned(), |n| n.to_string());
                    tracing::warn!(
                        source,
                        bytes,
                        lines = %lines,
                        "first start: the CDR file already held {bytes} bytes ({lines} lines) of calls; they are history and are NOT posted (start_at = \"end\"; start_at = \"beginning\" reads a new file whole). To post them to the CRM, run: {}",
                        self.import_command()
                    );
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

    /// The exact `pbxlink import` command that posts this file's calls.
    fn import_command(&self) -> String {
        import_command(self.config_path.as_deref(), &self.path)
    }
}

/// The exact `pbxlink import` command that posts the calls of `target` (a CDR file or a
/// json_cdr directory) with the daemon's config file, escaped for a log line.
pub(crate) fn import_command(config_path: Option<&Path>, target: &Path) -> String {
    let config = config_path.map_or_else(
        || "/etc/pbxlink/pbxlink.toml".to_owned(),
        |p| shell_word(&p.to_string_lossy()),
    );
    let target = std::path::absolute(target).unwrap_or_else(|_| target.to_path_buf());
    let command = format!(
        "pbxlink import --config {config} {}",
        shell_word(&target.to_string_lossy())
    );
    Escaped(&command).to_string()
}

/// `word` as one word for a POSIX shell: as it is when it holds only safe characters, else
/// in single quotes.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
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

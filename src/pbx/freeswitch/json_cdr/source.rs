//! mod_json_cdr's directory as a call-log source: every new file is one leg.
//!
//! The directory is scanned every `poll_ms` (and its subdirectories one level down, where
//! json_cdr's `rotate` puts dated folders). A file is taken once: after its leg is staged
//! the store remembers it by name and identity (device, inode, size) as a
//! [`FileOffset`] under the key `<source>#file:<name>`; files are left in place. A file that
//! is not a regular file, larger than `max_json_file_bytes`, or not a json_cdr leg is
//! counted, logged (bounded, escaped) and remembered, never read again unless it changes;
//! one still being written (cut-short JSON, modified in the last seconds) is tried again at
//! the next scan.
//!
//! First start (no saved state): with `start_at = "end"` (the default) the files already
//! there are history: they are not posted, one log line says how many and names the
//! `pbxlink import` command that posts them; the store keeps the newest modification time
//! among them (key `<source>#history`), so after a restart files that old are still
//! history. `start_at = "beginning"` takes them all.
//!
//! Legs go through the same [`FileSource`] staging and outbox as every CDR file: staged in
//! one transaction, grouped by [`FsAssembler`], each settled call enqueued once.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::Notify;

use super::parse::{JsonCdrError, parse_json_cdr};
use crate::call::TimeWindow;
use crate::logtext::{EXCERPT_BYTES, Escaped, excerpt};
use crate::outbox::store::{FileOffset, Store, StoreError, now_ms};
use crate::pbx::freeswitch::assemble::FsAssembler;
use crate::pbx::freeswitch::cdr::{FsCdrSettings, FsLeg};
use crate::pipeline::{FileReader, FileSource, LineParser, counters};
use crate::tail::StartAt;

/// Counter names of the json_cdr source (besides the pipeline's `cdr_rows_read`,
/// `cdr_parse_errors`, `cdr_read_errors`).
pub mod json_counters {
    /// Files whose leg was staged.
    pub const FILES_READ: &str = "json_cdr_files_read";
    /// Files passed over at the first start (history).
    pub const FILES_HISTORY: &str = "json_cdr_files_history";
    /// Files larger than `max_json_file_bytes`.
    pub const FILES_TOO_LARGE: &str = "json_cdr_files_too_large";
    /// Entries that are not regular files (symbolic links, FIFOs, ...).
    pub const NOT_REGULAR: &str = "json_cdr_entries_not_regular";
}

/// Files handled in one scan before settled calls are flushed (a backlog does not hold
/// calls back, and a scan never runs unbounded).
pub const FILES_PER_SCAN: usize = 500;

/// A file modified this recently that does not parse is tried again (still being written).
pub const YOUNG_MS: i64 = 10_000;

/// Names remembered in memory at most (beyond it, each scan asks the store).
pub const MAX_REMEMBERED: usize = 500_000;

/// The staged form of a leg: its JSON, parsed back (the file itself is not staged).
#[derive(Debug, Clone, Copy, Default)]
pub struct StagedLegParser;

impl LineParser for StagedLegParser {
    type Record = FsLeg;
    type Error = serde_json::Error;

    fn parse(&self, line: &[u8], _now: DateTime<Utc>) -> Result<Option<FsLeg>, Self::Error> {
        serde_json::from_slice(line).map(Some)
    }
}

/// A file's identity: what the store remembers of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
}

/// What one scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Files whose leg was staged.
    pub staged: usize,
    /// Files that were not a leg (counted and logged).
    pub rejected: usize,
    /// Files passed over as history.
    pub history: usize,
    /// Files left for the next scan (still being written, or beyond [`FILES_PER_SCAN`]).
    pub deferred: usize,
}

/// The json_cdr directory source; see the module documentation.
pub struct JsonCdrDirSource {
    name: String,
    dir: PathBuf,
    store: Arc<Store>,
    pipeline: FileSource<StagedLegParser, FsAssembler>,
    time_zone: Tz,
    start_at: StartAt,
    max_file_bytes: u64,
    poll: Duration,
    config_path: Option<PathBuf>,
    remembered: HashMap<String, Identity>,
    history_cutoff_ns: Option<u64>,
    warned_full: bool,
    heartbeat: Option<Arc<AtomicI64>>,
}

impl JsonCdrDirSource {
    /// A source named `name` (its staged legs, counters and remembered files are keyed by
    /// it) reading `settings.json_cdr_dir` into `assembler`.
    pub fn new(
        name: String,
        settings: &FsCdrSettings,
        store: Arc<Store>,
        assembler: FsAssembler,
        wake_delivery: Arc<Notify>,
    ) -> Self {
        let pipeline = FileSource::new(
            name.clone(),
            settings.json_cdr_dir.clone(),
            store.clone(),
            StagedLegParser,
            assembler,
            wake_delivery,
        );
        Self {
            name,
            dir: settings.json_cdr_dir.clone(),
            store,
            pipeline,
            time_zone: settings.cdr_time_zone,
            start_at: settings.start_at,
            max_file_bytes: settings.max_json_file_bytes,
            poll: Duration::from_millis(settings.poll_ms.max(10)),
            config_path: None,
            remembered: HashMap::new(),
            history_cutoff_ns: None,
            warned_full: false,
            heartbeat: None,
        }
    }

    /// The configuration file the daemon runs with, named in the `pbxlink import` hint.
    pub fn with_config_path(mut self, path: Option<&Path>) -> Self {
        self.config_path =
            path.map(|path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
        self
    }

    /// [`JsonCdrDirSource::run`] stores the time (unix ms) here before every scan, so a
    /// watchdog can tell a live reader from a stuck one.
    pub fn with_heartbeat(mut self, heartbeat: Arc<AtomicI64>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Pushes finished calls into `sink` (the reconciler of `call_log_source = "both"`)
    /// instead of straight into the outbox.
    pub fn with_sink(mut self, sink: Arc<dyn crate::call::sink::CallSink>) -> Self {
        self.pipeline = self.pipeline.with_sink(sink);
        self
    }

    /// The staging pipeline (to restore staged legs, flush, or count pending legs).
    pub fn pipeline(&mut self) -> &mut FileSource<StagedLegParser, FsAssembler> {
        &mut self.pipeline
    }

    fn file_key(&self, rel: &str) -> String {
        format!("{}#file:{rel}", self.name)
    }

    fn history_key(&self) -> String {
        format!("{}#history", self.name)
    }

    /// Scans until `stop` is set. Blocking: run it on its own thread (the daemon does, as a
    /// [`FileReader`]).
    pub fn run(mut self, stop: Arc<AtomicBool>) -> Result<(), StoreError> {
        let restored = self.pipeline.restore()?;
        tracing::info!(source = %self.name, dir = %Escaped(&self.dir.to_string_lossy()), restored_legs = restored, "watching json_cdr directory");
        let mut failing: Option<String> = None;
        while !stop.load(Ordering::Relaxed) {
            if let Some(heartbeat) = &self.heartbeat {
                heartbeat.store(now_ms(), Ordering::Relaxed);
            }
            match self.scan_once() {
                Ok(report) => {
                    if let Some(error) = failing.take() {
                        tracing::info!(source = %self.name, "json_cdr directory readable again (it failed with: {error})");
                    }
                    if report.deferred > 0 && report.staged + report.rejected > 0 {
                        continue;
                    }
                }
                Err(ScanError::Store(e)) => return Err(e),
                Err(ScanError::Dir(e)) => {
                    let text = e.to_string();
                    if failing.as_deref() != Some(text.as_str()) {
                        tracing::error!(source = %self.name, dir = %Escaped(&self.dir.to_string_lossy()), "reading the json_cdr directory failed (logged again only when the error changes): {text}");
                        failing = Some(text);
                    }
                    self.store.add_counters(&[(counters::READ_ERRORS, 1)])?;
                }
            }
            std::thread::sleep(self.poll);
        }
        Ok(())
    }

    /// One scan: stages the legs of new files, then enqueues the calls settled by now.
    pub fn scan_once(&mut self) -> Result<ScanReport, ScanError> {
        let entries = list_dir(&self.dir).map_err(ScanError::Dir)?;
        if self.history_cutoff_ns.is_none() {
            self.load_or_set_history(&entries)?;
        }
        let cutoff = self.history_cutoff_ns.unwrap_or(0);
        let now = Utc::now();
        let mut report = ScanReport::default();
        let mut handled = 0usize;
        let mut listed = std::collections::HashSet::with_capacity(entries.len());
        for entry in &entries {
            listed.insert(entry.rel.as_str());
            if self.remembered.contains_key(&entry.rel) {
                continue;
            }
            if handled >= FILES_PER_SCAN {
                report.deferred += 1;
                continue;
            }
            let Some(meta) = entry.meta.as_ref() else {
                tracing::warn!(source = %self.name, entry = %Escaped(&entry.rel), "json_cdr directory entry is not a regular file (a symbolic link, a FIFO ...), not read");
                self.store
                    .add_counters(&[(json_counters::NOT_REGULAR, 1)])?;
                let none = Identity {
                    dev: 0,
                    ino: 0,
                    size: 0,
                };
                self.remember(&entry.rel, none);
                continue;
            };
            let identity = Identity {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
            };
            if let Some(saved) = self.store.file_offset(&self.file_key(&entry.rel))? {
                if saved.dev == identity.dev
                    && saved.ino == identity.ino
                    && saved.offset == identity.size
                {
                    self.remember(&entry.rel, identity);
                    continue;
                }
            } else if mtime_ns(meta) <= cutoff {
                self.remember(&entry.rel, identity);
                continue;
            }
            handled += 1;
            match self.take_file(entry, meta, identity, now)? {
                Taken::Staged => report.staged += 1,
                Taken::Rejected => report.rejected += 1,
                Taken::Later => report.deferred += 1,
            }
        }
        // Files removed from the directory (a cleanup) are forgotten in memory.
        if self.remembered.len() > listed.len() {
            self.remembered
                .retain(|name, _| listed.contains(name.as_str()));
        }
        self.pipeline.flush_settled(now_ms())?;
        Ok(report)
    }

    fn remember(&mut self, rel: &str, identity: Identity) {
        if self.remembered.len() < MAX_REMEMBERED {
            self.remembered.insert(rel.to_owned(), identity);
        } else if !self.warned_full {
            self.warned_full = true;
            tracing::warn!(source = %self.name, limit = MAX_REMEMBERED, "the json_cdr directory holds more files than are remembered in memory; each scan asks the store about the rest (archive or delete old json_cdr files)");
        }
    }

    fn load_or_set_history(&mut self, entries: &[Entry]) -> Result<(), ScanError> {
        if let Some(saved) = self.store.file_offset(&self.history_key())? {
            self.history_cutoff_ns = Some(saved.offset);
            return Ok(());
        }
        let cutoff = match self.start_at {
            StartAt::Beginning => 0,
            StartAt::End => entries
                .iter()
                .filter_map(|e| e.meta.as_ref())
                .map(mtime_ns)
                .max()
                .unwrap_or(0),
        };
        let history = match self.start_at {
            StartAt::Beginning => 0,
            StartAt::End => entries.iter().filter(|e| e.meta.is_some()).count(),
        };
        let dir_meta = std::fs::metadata(&self.dir).map_err(ScanError::Dir)?;
        let marker = FileOffset {
            dev: dir_meta.dev(),
            ino: dir_meta.ino(),
            offset: cutoff,
            window_crc: 0,
            window_len: 0,
        };
        self.store.commit_ingest(
            &self.history_key(),
            Some(&marker),
            &[],
            &[(json_counters::FILES_HISTORY, history as i64)],
        )?;
        if history > 0 {
            tracing::warn!(
                source = %self.name,
                files = history,
                "first start: the json_cdr directory already held {history} leg file(s); they are history and are NOT posted (start_at = \"end\"; start_at = \"beginning\" takes them). To post them to the CRM, run: {}",
                self.import_command()
            );
        }
        self.history_cutoff_ns = Some(cutoff);
        Ok(())
    }

    /// The `pbxlink import` command that posts the directory's files.
    pub fn import_command(&self) -> String {
        crate::pipeline::import_command(self.config_path.as_deref(), &self.dir)
    }

    fn take_file(
        &mut self,
        entry: &Entry,
        meta: &std::fs::Metadata,
        identity: Identity,
        now: DateTime<Utc>,
    ) -> Result<Taken, StoreError> {
        let shown_name = Escaped(&entry.rel).to_string();
        if identity.size > self.max_file_bytes {
            tracing::warn!(source = %self.name, file = %shown_name, bytes = identity.size, limit = self.max_file_bytes, "json_cdr file larger than max_json_file_bytes, skipped");
            self.store
                .add_counters(&[(json_counters::FILES_TOO_LARGE, 1)])?;
            self.mark(&entry.rel, identity, 0)?;
            return Ok(Taken::Rejected);
        }
        let bytes = match read_bounded(&entry.path, self.max_file_bytes) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Taken::Later),
            Err(e) => {
                tracing::warn!(source = %self.name, file = %shown_name, "reading a json_cdr file failed, trying again at the next scan: {e}");
                self.store.add_counters(&[(counters::READ_ERRORS, 1)])?;
                return Ok(Taken::Later);
            }
        };
        let crc = crc32fast::hash(&bytes);
        match parse_json_cdr(&bytes, self.time_zone, TimeWindow::at(now)) {
            Ok(mut leg) => {
                leg.origin = Some(entry.rel.clone());
                let json = serde_json::to_vec(&leg).map_err(|source| StoreError::Json {
                    path: self.store.path().to_owned(),
                    action: "serialise a json_cdr leg",
                    source,
                })?;
                self.pipeline
                    .ingest(&[json], None, &[(json_counters::FILES_READ, 1)])?;
                self.mark(&entry.rel, identity, crc)?;
                Ok(Taken::Staged)
            }
            Err(e) => {
                let young = now_ms().saturating_sub(mtime_ns(meta) as i64 / 1_000_000) < YOUNG_MS;
                if young && matches!(&e, JsonCdrError::Json(j) if j.is_eof()) {
                    return Ok(Taken::Later);
                }
                tracing::warn!(source = %self.name, file = %shown_name, bytes = bytes.len(), start = %excerpt(&bytes, EXCERPT_BYTES), "json_cdr file is not a leg, skipped: {e}");
                self.store.add_counters(&[(counters::PARSE_ERRORS, 1)])?;
                self.mark(&entry.rel, identity, crc)?;
                Ok(Taken::Rejected)
            }
        }
    }

    fn mark(&mut self, rel: &str, identity: Identity, crc: u32) -> Result<(), StoreError> {
        let offset = FileOffset {
            dev: identity.dev,
            ino: identity.ino,
            offset: identity.size,
            window_crc: crc,
            window_len: 0,
        };
        self.store
            .commit_ingest(&self.file_key(rel), Some(&offset), &[], &[])?;
        self.remember(rel, identity);
        Ok(())
    }

    /// `pbxlink import` counts files, legs, files that are no leg and calls into `progress`.
    pub fn set_progress(&mut self, progress: Option<Arc<crate::import::ImportProgress>>) {
        self.pipeline.set_progress(progress);
    }

    /// Reads json_cdr files once (backfill): `path` is a file or a directory (with its
    /// subdirectories one level down), taken whatever the store remembers, and every call
    /// is enqueued at the end. Returns the calls queued.
    pub fn import(&mut self, path: &Path) -> Result<usize, ScanError> {
        let entries = if std::fs::metadata(path).map_err(ScanError::Dir)?.is_dir() {
            list_dir(path).map_err(ScanError::Dir)?
        } else {
            vec![entry_for(path, path.to_string_lossy().into_owned())]
        };
        if let Some(progress) = self.pipeline.progress() {
            progress.start_input(crate::import::ProgressUnit::Files, entries.len() as u64);
        }
        let now = Utc::now();
        let mut queued = 0;
        for (i, entry) in entries.iter().enumerate() {
            let Some(meta) = entry.meta.as_ref() else {
                continue;
            };
            let identity = Identity {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
            };
            let taken = self.take_file(entry, meta, identity, now)?;
            if let Some(progress) = self.pipeline.progress() {
                // A file that is no leg (or too large) is the directory's corrupt line.
                progress.add_lines(0, u64::from(matches!(taken, Taken::Rejected)));
                progress.set_position(i as u64 + 1);
            }
            if i % FILES_PER_SCAN == FILES_PER_SCAN - 1 {
                queued += self.pipeline.flush_settled(i64::MIN)?;
            }
        }
        queued += self.pipeline.flush_all()?;
        Ok(queued)
    }
}

/// What became of one file.
enum Taken {
    Staged,
    Rejected,
    Later,
}

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The directory could not be read (the next scan tries again).
    #[error("json_cdr directory: {0}")]
    Dir(std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One directory entry: its name relative to the directory, and its metadata when it is a
/// regular file (`None` for anything else, which is counted once).
struct Entry {
    rel: String,
    path: PathBuf,
    meta: Option<std::fs::Metadata>,
}

fn entry_for(path: &Path, rel: String) -> Entry {
    let meta = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file());
    Entry {
        rel,
        path: path.to_owned(),
        meta,
    }
}

/// The `.json` files of `dir` and of its subdirectories one level down, by name.
fn list_dir(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let Ok(kind) = item.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let Ok(sub) = std::fs::read_dir(item.path()) else {
                continue;
            };
            for inner in sub.flatten() {
                let inner_name = inner.file_name().to_string_lossy().into_owned();
                if inner_name.ends_with(".json") {
                    out.push(entry_for(&inner.path(), format!("{name}/{inner_name}")));
                }
            }
        } else if name.ends_with(".json") {
            out.push(entry_for(&item.path(), name));
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    let secs = u64::try_from(meta.mtime()).unwrap_or(0);
    let nanos = u64::try_from(meta.mtime_nsec()).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// At most `max` bytes of the file (a file grown past it since it was listed is cut, and
/// then fails to parse).
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl FileReader for JsonCdrDirSource {
    fn attach(
        self,
        heartbeat: Arc<AtomicI64>,
        config_path: Option<&Path>,
        sink: Option<Arc<dyn crate::call::sink::CallSink>>,
    ) -> Self {
        let reader = self.with_heartbeat(heartbeat).with_config_path(config_path);
        match sink {
            Some(sink) => reader.with_sink(sink),
            None => reader,
        }
    }

    fn read_until(self, stop: Arc<AtomicBool>) -> Result<(), StoreError> {
        self.run(stop)
    }
}

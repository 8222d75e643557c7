//! Model-based test of the CDR file tailer (`pbxlink::tail::FileTailer`), the way Vector tests
//! its file source: proptest generates sequences of operations on a real file in a temp
//! directory (write a line, write part of a line, rotate by rename and create, copytruncate,
//! truncate, delete, recreate, restart the tailer from its last committed checkpoint, crash
//! before committing a batch, poll one batch, read everything), runs them against the real
//! tailer, and checks it against a model of what was written.
//!
//! Oracle, after every read (a drain until the tailer is idle) and at the end: every complete
//! line written so far was emitted exactly once, in the order written, except lines the
//! tailer documents it may lose (module docs of `src/tail`, "Known limits"): lines not yet
//! read when their file was truncated in place (truncate, copytruncate), or when it was
//! deleted while the tailer did not hold it open (or held it, and was restarted before it
//! finished it). Those may be lost, or emitted once (late, out of order, when the tailer
//! finds them in a copytruncate copy it takes for a rotated generation), never twice; how
//! many were lost is counted and printed. A line never reaches a batch before its `"\n"` is
//! written, and no line is ever emitted that was not written.
//!
//! The writer of the model never writes to a file after it was rotated away, so the tailer
//! leaves rotated files as soon as they are read to their end (`leave_after(ZERO)`; the wait
//! for late writers is tested in src/tail/tests.rs and by the rotation storms of
//! tests/tail_faults.rs).
//!
//! The default run has 256 cases; `model_long` (ignored; run with
//! `cargo test --test tail_model -- --ignored --nocapture`) runs 5,000, or
//! `PBXLINK_TAIL_MODEL_CASES`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pbxlink::tail::{Checkpoint, FileId, FileTailer, TailOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// Write a complete line of `n` filler bytes (or finish the line being written).
    Line(usize),
    /// Write up to `n` bytes of a line, without its `"\n"`.
    Partial(usize),
    /// Rename the file to `Master.csv.rN` and create an empty `Master.csv` (logrotate `create`).
    Rotate,
    /// Copy the file to `Master.csv.cN`, then truncate it (logrotate `copytruncate`).
    CopyTruncate,
    /// Truncate the file to 0 bytes.
    Truncate,
    /// Delete the file.
    Delete,
    /// Create an empty file at the path if there is none.
    Recreate,
    /// Drop the tailer and start a new one from the last committed checkpoint.
    Restart,
    /// Poll one batch, do not commit it, then restart.
    Crash,
    /// Poll one batch and commit it.
    Poll,
    /// Poll until the tailer is idle, committing every batch; then check the oracle.
    Read,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..60).prop_map(Op::Line),
        2 => (1usize..40).prop_map(Op::Partial),
        2 => Just(Op::Rotate),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        1 => Just(Op::Recreate),
        2 => Just(Op::Restart),
        1 => Just(Op::Crash),
        2 => Just(Op::Poll),
        3 => Just(Op::Read),
    ]
}

/// Small limits so that batches split lines often and the window is short.
const OPTS: TailOptions = TailOptions {
    max_line_bytes: 100,
    max_batch_bytes: 128,
};

fn file_id(path: &Path) -> Option<FileId> {
    fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

fn mtime_ns(path: &Path) -> Option<i128> {
    fs::metadata(path)
        .ok()
        .map(|m| i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()))
}

/// Totals over all cases, printed at the end.
static LINES: AtomicU64 = AtomicU64::new(0);
static MAY_LOSE: AtomicU64 = AtomicU64::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);
static OPS: AtomicU64 = AtomicU64::new(0);

struct Model {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    path: PathBuf,
    tailer: FileTailer,
    /// The last committed checkpoint (what a restart resumes from).
    saved: Option<Checkpoint>,
    committed: Vec<String>,
    committed_set: HashSet<String>,
    /// Complete lines, in the order written.
    expected: Vec<String>,
    /// Lines the tailer is allowed to lose (see the module docs).
    may_lose: HashSet<String>,
    /// The line being written: its text (without "\n") and how many bytes are written.
    partial: Option<(String, usize)>,
    /// Complete lines per file, to know what a truncation or deletion takes away.
    files: HashMap<FileId, Vec<String>>,
    /// Deleted files the tailer was reading when they were deleted (it keeps them open).
    deleted_open: Vec<FileId>,
    /// Deleted files whose lines can no longer be read once the tailer lets go of them.
    deleted: HashSet<FileId>,
    seq: usize,
    names: usize,
    /// Counter for the keys of files whose inode number was reused.
    reused: u64,
    /// The tailer was restarted from a checkpoint in a deleted file and has not polled yet:
    /// it will start with whatever file is at the path at its first poll.
    lost_start: bool,
    /// The model's key of the file the committed checkpoint is in (its FileId, unless the
    /// inode number has been reused since).
    saved_key: Option<FileId>,
}

impl Model {
    fn new() -> Model {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Master.csv");
        Model {
            dir: dir.path().to_owned(),
            tailer: FileTailer::new(path.clone(), None, OPTS).leave_after(Duration::ZERO),
            path,
            _dir: dir,
            saved: None,
            committed: Vec::new(),
            committed_set: HashSet::new(),
            expected: Vec::new(),
            may_lose: HashSet::new(),
            partial: None,
            files: HashMap::new(),
            deleted_open: Vec::new(),
            deleted: HashSet::new(),
            seq: 0,
            names: 0,
            reused: 0,
            lost_start: false,
            saved_key: None,
        }
    }

    /// Appends like Asterisk's cdr_csv: open (creating), append, close.
    fn append(&mut self, bytes: &[u8]) {
        let existed = self.path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .expect("open for append");
        f.write_all(bytes).expect("append");
        if !existed {
            self.fresh_file();
        }
    }

    /// A new file was created at the path. Its inode number may be that of a deleted file:
    /// what the model knows of that one is moved out of the way.
    fn fresh_file(&mut self) {
        let id = file_id(&self.path).expect("the file just created");
        self.reused += 1;
        let gone = FileId {
            dev: u64::MAX,
            ino: self.reused,
        };
        if let Some(lines) = self.files.remove(&id) {
            self.files.insert(gone, lines);
        }
        if self.deleted.remove(&id) {
            self.deleted.insert(gone);
        }
        for d in &mut self.deleted_open {
            if *d == id {
                *d = gone;
            }
        }
        if self.saved_key == Some(id) {
            self.saved_key = Some(gone);
        }
    }

    fn new_line(&mut self, filler: usize) -> String {
        self.seq += 1;
        format!("L{:05},{}", self.seq, "x".repeat(filler))
    }

    fn line_done(&mut self, text: String) {
        let id = file_id(&self.path).expect("the file just written");
        self.files.entry(id).or_default().push(text.clone());
        self.expected.push(text);
    }

    fn write_line(&mut self, filler: usize) {
        if let Some((text, written)) = self.partial.take() {
            let rest = format!("{}\n", &text[written..]);
            self.append(rest.as_bytes());
            self.line_done(text);
            return;
        }
        let text = self.new_line(filler);
        self.append(format!("{text}\n").as_bytes());
        self.line_done(text);
    }

    fn write_partial(&mut self, n: usize) {
        let (text, written) = match self.partial.take() {
            Some(p) => p,
            None => (self.new_line(n), 0),
        };
        // Never the whole text: the line stays partial.
        let upto = (written + n).min(text.len() - 1);
        if upto > written {
            let piece = text.as_bytes()[written..upto].to_vec();
            self.append(&piece);
        }
        self.partial = Some((text, upto.max(written)));
    }

    /// Operations that change files wait for the line being written (a writer never splits
    /// a line across files).
    fn finish_partial(&mut self) {
        if self.partial.is_some() {
            self.write_line(0);
        }
    }

    /// Waits until the file system's clock has moved past the last change of the file, so
    /// that a file created next is strictly newer (the tailer orders generations it catches
    /// up on by modification time; see src/tail/generations.rs).
    fn wait_tick(&self) {
        let Some(last) = mtime_ns(&self.path) else {
            return;
        };
        let tick = self.dir.join("tick");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            fs::write(&tick, b"t").expect("tick file");
            if mtime_ns(&tick).is_some_and(|t| t > last) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the file system clock did not move"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The lines of `id` not committed yet may be lost from now on.
    fn may_lose_rest_of(&mut self, id: FileId) {
        for line in self.files.get(&id).into_iter().flatten() {
            if !self.committed_set.contains(line) {
                self.may_lose.insert(line.clone());
            }
        }
    }

    fn rotate(&mut self) {
        self.finish_partial();
        self.wait_tick();
        if self.lost_start {
            // Rotated away before a tailer that lost its file looked (documented).
            if let Some(id) = file_id(&self.path) {
                self.may_lose_rest_of(id);
            }
        }
        if self.path.exists() {
            self.names += 1;
            let to = self.dir.join(format!("Master.csv.r{}", self.names));
            fs::rename(&self.path, to).expect("rename");
        }
        File::create(&self.path).expect("create");
        self.fresh_file();
    }

    fn copytruncate(&mut self) {
        self.finish_partial();
        let Some(id) = file_id(&self.path) else {
            return;
        };
        self.names += 1;
        fs::copy(
            &self.path,
            self.dir.join(format!("Master.csv.c{}", self.names)),
        )
        .expect("copy");
        self.truncate_file(id);
    }

    fn truncate(&mut self) {
        self.finish_partial();
        if let Some(id) = file_id(&self.path) {
            self.truncate_file(id);
        }
    }

    fn truncate_file(&mut self, id: FileId) {
        self.may_lose_rest_of(id);
        self.files.remove(&id);
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
    }

    fn delete(&mut self) {
        self.finish_partial();
        let Some(id) = file_id(&self.path) else {
            return;
        };
        if self.tailer.checkpoint().map(|c| c.file_id()) == Some(id) {
            self.deleted_open.push(id);
        } else {
            self.may_lose_rest_of(id);
            if self.tailer.checkpoint().is_none() && self.saved_key == Some(id) {
                // A restarted tailer that has not looked yet loses its saved file.
                self.lost_start = true;
            }
        }
        self.deleted.insert(id);
        fs::remove_file(&self.path).expect("delete");
    }

    fn recreate(&mut self) {
        if !self.path.exists() {
            self.wait_tick();
            File::create(&self.path).expect("create");
            self.fresh_file();
        }
    }

    fn restart(&mut self) {
        // Deleted files the old tailer held open are gone with it.
        for id in std::mem::take(&mut self.deleted_open) {
            self.may_lose_rest_of(id);
        }
        // If the committed checkpoint names a deleted file, the new tailer cannot find it and
        // starts at the file at the path: what was between is lost.
        if self.saved_key.is_some_and(|k| self.deleted.contains(&k)) {
            let at_path = file_id(&self.path);
            let ids: Vec<FileId> = self
                .files
                .keys()
                .copied()
                .filter(|id| Some(*id) != at_path)
                .collect();
            for id in ids {
                self.may_lose_rest_of(id);
            }
            self.lost_start = true;
        }
        self.tailer =
            FileTailer::new(self.path.clone(), self.saved, OPTS).leave_after(Duration::ZERO);
    }

    fn commit(&mut self, batch: pbxlink::tail::Batch) {
        for line in batch.lines {
            let text = String::from_utf8(line).expect("the tailer emitted bytes never written");
            assert!(
                !self.committed_set.contains(&text),
                "line emitted twice: {text}"
            );
            self.committed_set.insert(text.clone());
            self.committed.push(text);
        }
        if self.saved != Some(batch.checkpoint) {
            self.saved_key = Some(batch.checkpoint.file_id());
        }
        self.saved = Some(batch.checkpoint);
    }

    fn poll(&mut self) -> bool {
        self.lost_start = false;
        match self.tailer.poll().expect("poll") {
            Some(b) => {
                self.commit(b);
                true
            }
            None => false,
        }
    }

    fn read(&mut self) {
        // Three idle polls in a row get past the extra poll a rotation waits for.
        let mut idle = 0;
        for _ in 0..100_000 {
            if self.poll() {
                idle = 0;
            } else {
                idle += 1;
                if idle == 3 {
                    self.check();
                    return;
                }
            }
        }
        panic!("the tailer never went idle");
    }

    /// The oracle (see the module docs).
    fn check(&self) {
        let position: HashMap<&str, usize> = self
            .expected
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let mut last = None;
        for line in &self.committed {
            let Some(&at) = position.get(line.as_str()) else {
                panic!("emitted a line that is not a complete written line: {line:?}");
            };
            if self.may_lose.contains(line) {
                // Recovered from a copytruncate copy read as a rotated generation: late.
                continue;
            }
            assert!(
                last.is_none_or(|l| at > l),
                "out of order: {line} after {:?}",
                last.map(|l: usize| &self.expected[l])
            );
            last = Some(at);
        }
        let missing: Vec<&String> = self
            .expected
            .iter()
            .filter(|l| !self.committed_set.contains(*l) && !self.may_lose.contains(*l))
            .collect();
        assert!(
            missing.is_empty(),
            "complete lines written before the read were never emitted: {missing:?}"
        );
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Line(n) => self.write_line(n),
            Op::Partial(n) => self.write_partial(n),
            Op::Rotate => self.rotate(),
            Op::CopyTruncate => self.copytruncate(),
            Op::Truncate => self.truncate(),
            Op::Delete => self.delete(),
            Op::Recreate => self.recreate(),
            Op::Restart => self.restart(),
            Op::Crash => {
                self.lost_start = false;
                let _uncommitted = self.tailer.poll().expect("poll");
                self.restart();
            }
            Op::Poll => {
                self.poll();
            }
            Op::Read => self.read(),
        }
    }
}

fn run_case(ops: &[Op]) {
    let mut m = Model::new();
    // A tailer that never had a file has no checkpoint: it starts with whatever file is at
    // the path. Like a daemon's first run, it reads a first file once before anything else.
    m.write_line(3);
    m.read();
    for op in ops {
        m.apply(op);
    }
    m.finish_partial();
    m.read();
    // And once more after a restart: nothing is emitted again.
    let before = m.committed.len();
    m.restart();
    m.read();
    assert_eq!(m.committed.len(), before, "a restart emitted lines again");

    let lost = m
        .expected
        .iter()
        .filter(|l| !m.committed_set.contains(*l))
        .count();
    LINES.fetch_add(m.expected.len() as u64, Ordering::Relaxed);
    MAY_LOSE.fetch_add(m.may_lose.len() as u64, Ordering::Relaxed);
    LOST.fetch_add(lost as u64, Ordering::Relaxed);
    OPS.fetch_add(ops.len() as u64, Ordering::Relaxed);
}

fn run_model(cases: u32) {
    let start = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..80), |ops| {
        run_case(&ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "tail model: {cases} cases, {} operations, {} complete lines written, {} of them in a \
         documented loss window (truncation/deletion before they were read), {} lost; {:.1} s",
        OPS.load(Ordering::Relaxed),
        LINES.load(Ordering::Relaxed),
        MAY_LOSE.load(Ordering::Relaxed),
        LOST.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn model() {
    run_model(256);
}

/// The long variant: `cargo test --test tail_model -- --ignored --nocapture`.
#[test]
#[ignore = "long variant (5,000 cases), run by hand or by .ci/run's long step"]
fn model_long() {
    let cases = std::env::var("PBXLINK_TAIL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    run_model(cases);
}

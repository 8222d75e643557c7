//! Tests of the tailer on real files in temporary directories.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn opts() -> TailOptions {
    TailOptions::default()
}

/// A tailer that leaves a rotated file as soon as it is read to its end (the wait for late
/// writers, `leave_after`, has a test of its own).
fn new_tailer(path: PathBuf, saved: Option<Checkpoint>, opts: TailOptions) -> FileTailer {
    FileTailer::new(path, saved, opts).leave_after(Duration::ZERO)
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn id(path: &Path) -> FileId {
    let m = fs::metadata(path).unwrap();
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Polls until nothing has come for three calls in a row (which gets past the extra poll a
/// rotation waits for), checking every checkpoint against the file it names.
fn drain(t: &mut FileTailer) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut idle = 0;
    for _ in 0..10_000 {
        match t.poll().unwrap() {
            Some(b) => {
                idle = 0;
                out.push(b);
            }
            None => {
                idle += 1;
                if idle == 3 {
                    return out;
                }
            }
        }
    }
    panic!("tailer never went idle");
}

fn text(batches: &[Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.lines.iter())
        .map(|l| String::from_utf8(l.clone()).unwrap())
        .collect()
}

fn lines_of(batch: &Batch) -> Vec<String> {
    text(std::slice::from_ref(batch))
}

fn events(batches: &[Batch]) -> Vec<TailEvent> {
    batches.iter().flat_map(|b| b.events.clone()).collect()
}

fn last_cp(batches: &[Batch]) -> Checkpoint {
    batches.last().expect("no batch").checkpoint
}

/// Checks that `cp` describes the bytes of `path` (which must be the file it names).
fn assert_cp_matches(path: &Path, cp: &Checkpoint) {
    let bytes = fs::read(path).unwrap();
    assert_eq!(id(path), cp.file_id(), "checkpoint names another file");
    let off = cp.offset as usize;
    assert!(off <= bytes.len());
    let wl = off.min(WINDOW_MAX);
    assert_eq!(cp.window_len as usize, wl);
    assert_eq!(cp.window_crc, crc32fast::hash(&bytes[off - wl..off]));
    assert!(off == 0 || bytes[off - 1] == b'\n' || bytes[off - 1] == 0);
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix}{i},some,cdr,fields"))
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    append(path, s.as_bytes());
}

#[test]
fn missing_file_returns_none_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let mut t = new_tailer(path.clone(), None, opts());
    assert!(t.poll().unwrap().is_none());
    assert!(t.poll().unwrap().is_none());
    assert_eq!(t.checkpoint(), None);
    append(&path, b"a\n");
    let b = t.poll().unwrap().unwrap();
    assert_eq!(lines_of(&b), ["a"]);
    assert_cp_matches(&path, &b.checkpoint);
    assert!(b.events.is_empty());
}

#[test]
fn append_lines_across_polls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    append(&path, b"one\ntwo\r\n");
    let mut t = new_tailer(path.clone(), None, opts());
    let b = t.poll().unwrap().unwrap();
    assert_eq!(lines_of(&b), ["one", "two"]);
    assert_eq!(b.checkpoint.offset, 9);
    assert_cp_matches(&path, &b.checkpoint);
    assert!(t.poll().unwrap().is_none());

    append(&path, b"\n\nthree\n");
    let b = t.poll().unwrap().unwrap();
    assert_eq!(lines_of(&b), ["three"], "empty lines are dropped");
    assert_cp_matches(&path, &b.checkpoint);
    assert!(t.poll().unwrap().is_none());
    assert_eq!(t.path(), path.as_path());
}

#[test]
fn partial_line_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    append(&path, b"first\nsec");
    let mut t = new_tailer(path.clone(), None, opts());
    let b = t.poll().unwrap().unwrap();
    assert_eq!(lines_of(&b), ["first"]);
    assert_eq!(
        b.checkpoint.offset, 6,
        "offset stays at the start of the partial line"
    );
    assert!(t.poll().unwrap().is_none());
    drop(t);

    // Restart with the committed checkpoint, then the writer finishes the line.
    let mut t = new_tailer(path.clone(), Some(b.checkpoint), opts());
    assert!(t.poll().unwrap().is_none());
    append(&path, b"ond\nthird\n");
    let got = drain(&mut t);
    assert_eq!(text(&got), ["second", "third"]);
    assert!(events(&got).is_empty());
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn partial_line_completed_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let mut t = new_tailer(path.clone(), None, opts());
    for piece in [&b"ab"[..], b"c", b",d", b"\r", b"\n"] {
        append(&path, piece);
        let got = drain(&mut t);
        if piece == b"\n" {
            assert_eq!(text(&got), ["abc,d"]);
        } else {
            assert!(got.is_empty(), "no line before its newline");
        }
    }
}

#[test]
fn rename_create_rotation_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let rotated = dir.path().join("Master.csv.1");
    write_lines(&path, &numbered("old", 0..3));
    let mut t = new_tailer(path.clone(), None, opts());
    assert_eq!(text(&drain(&mut t)), numbered("old", 0..3));

    // A writer (FreeSWITCH style) keeps the old file open across the rename.
    let mut old_handle = OpenOptions::new().append(true).open(&path).unwrap();
    writeln!(old_handle, "old3,some,cdr,fields").unwrap();
    fs::rename(&path, &rotated).unwrap();
    write_lines(&path, &numbered("new", 0..2));
    for l in numbered("old", 4..6) {
        writeln!(old_handle, "{l}").unwrap();
    }
    // The first poll after the rotation still reads the old file only.
    let b = t.poll().unwrap().unwrap();
    assert_eq!(b.checkpoint.file_id(), id(&rotated));
    write_lines(&path, &numbered("new", 2..4));

    let mut got = vec![b];
    got.extend(drain(&mut t));
    let old_id = id(&rotated);
    let new_id = id(&path);
    let mut old_lines = Vec::new();
    let mut new_lines = Vec::new();
    let mut switched = false;
    for b in &got {
        let lines = lines_of(b);
        if b.checkpoint.file_id() == old_id {
            assert!(!switched, "no batch of the old file after the switch");
            old_lines.extend(lines);
        } else {
            assert_eq!(b.checkpoint.file_id(), new_id);
            if !switched {
                assert!(b.events.contains(&TailEvent::Rotated {
                    from: old_id,
                    to: new_id
                }));
            }
            switched = true;
            new_lines.extend(lines);
        }
    }
    assert_eq!(old_lines, numbered("old", 3..6));
    assert_eq!(new_lines, numbered("new", 0..4));
    assert_cp_matches(&path, &last_cp(&got));

    // Later writes to the new file keep coming, from the right offset.
    write_lines(&path, &numbered("new", 4..5));
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("new", 4..5));
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn rotation_to_empty_file_yields_zero_line_batch_with_new_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..2));
    let mut t = new_tailer(path.clone(), None, opts());
    drain(&mut t);
    fs::rename(&path, dir.path().join("Master.csv.1")).unwrap();
    File::create(&path).unwrap();
    let got = drain(&mut t);
    assert_eq!(got.len(), 1);
    assert!(got[0].lines.is_empty());
    assert_eq!(got[0].checkpoint.file_id(), id(&path));
    assert_eq!(got[0].checkpoint.offset, 0);
    assert!(matches!(got[0].events[..], [TailEvent::Rotated { .. }]));
}

#[test]
fn rotation_while_stopped_finishes_renamed_file_found_by_inode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let rotated = dir.path().join("Master.csv.1");
    write_lines(&path, &numbered("old", 0..3));
    let mut t = new_tailer(path.clone(), None, opts());
    let cp = last_cp(&drain(&mut t));
    drop(t);

    // While stopped: more lines, rotation, lines in the new file.
    write_lines(&path, &numbered("old", 3..5));
    fs::rename(&path, &rotated).unwrap();
    write_lines(&path, &numbered("new", 0..2));

    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let got = drain(&mut t);
    let ev = events(&got);
    assert!(ev.contains(&TailEvent::ResumedRotated {
        path: rotated.clone(),
        file: cp.file_id(),
        offset: cp.offset
    }));
    assert!(ev.contains(&TailEvent::Rotated {
        from: id(&rotated),
        to: id(&path)
    }));
    let mut expected = numbered("old", 3..5);
    expected.extend(numbered("new", 0..2));
    assert_eq!(text(&got), expected);
    for b in &got {
        let expect_file = if b.lines.iter().any(|l| l.starts_with(b"old")) {
            id(&rotated)
        } else {
            b.checkpoint.file_id()
        };
        assert_eq!(b.checkpoint.file_id(), expect_file);
    }
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn rotation_while_stopped_with_old_file_gone_starts_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("old", 0..3));
    let mut t = new_tailer(path.clone(), None, opts());
    let cp = last_cp(&drain(&mut t));
    drop(t);
    // Keep the old inode alive (open) so it cannot be reused for the new file.
    let _keep = File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    write_lines(&path, &numbered("new", 0..2));

    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("new", 0..2));
    assert_eq!(
        events(&got),
        vec![TailEvent::RotatedFileNotFound { saved: cp }]
    );
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn missing_path_and_lost_file_at_startup_reports_once_then_waits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("old", 0..3));
    let mut t = new_tailer(path.clone(), None, opts());
    let cp = last_cp(&drain(&mut t));
    drop(t);
    let _keep = File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();

    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let b = t.poll().unwrap().unwrap();
    assert_eq!(b.checkpoint, cp);
    assert_eq!(b.events, vec![TailEvent::RotatedFileNotFound { saved: cp }]);
    assert!(drain(&mut t).is_empty());
    write_lines(&path, &numbered("new", 0..1));
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("new", 0..1));
    assert!(events(&got).is_empty());
}

#[test]
fn rotated_while_stopped_without_new_file_yet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let rotated = dir.path().join("Master.csv.1");
    write_lines(&path, &numbered("old", 0..2));
    let mut t = new_tailer(path.clone(), None, opts());
    let cp = last_cp(&drain(&mut t));
    drop(t);
    write_lines(&path, &numbered("old", 2..3));
    fs::rename(&path, &rotated).unwrap();

    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("old", 2..3));
    assert_eq!(last_cp(&got).file_id(), id(&rotated));
    write_lines(&path, &numbered("new", 0..1));
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("new", 0..1));
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn truncation_while_stopped_restarts_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..5));
    let mut t = new_tailer(path.clone(), None, opts());
    let cp = last_cp(&drain(&mut t));
    drop(t);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    write_lines(&path, &numbered("b", 0..2));

    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("b", 0..2));
    let size = fs::metadata(&path).unwrap().len();
    assert_eq!(
        events(&got),
        vec![TailEvent::Truncated {
            file: cp.file_id(),
            offset: cp.offset,
            size
        }]
    );
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn copytruncate_regrown_while_stopped_is_caught_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..5));
    let mut t = new_tailer(path.clone(), None, opts());
    let cp = last_cp(&drain(&mut t));
    drop(t);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    write_lines(&path, &numbered("bb", 0..10));
    assert!(fs::metadata(&path).unwrap().len() > cp.offset);

    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("bb", 0..10));
    assert_eq!(
        events(&got),
        vec![TailEvent::ChecksumMismatch {
            file: cp.file_id(),
            offset: cp.offset
        }]
    );
}

#[test]
fn copytruncate_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..5));
    let mut t = new_tailer(path.clone(), None, opts());
    assert_eq!(text(&drain(&mut t)), numbered("a", 0..5));
    let file = id(&path);

    // Truncated, and written again but still shorter than the offset.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    write_lines(&path, &numbered("b", 0..1));
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("b", 0..1));
    assert!(matches!(events(&got)[..], [TailEvent::Truncated { .. }]));
    assert_cp_matches(&path, &last_cp(&got));
    let offset = last_cp(&got).offset;

    // Truncated, and written again past the offset before the next poll.
    f.set_len(0).unwrap();
    write_lines(&path, &numbered("cc", 0..4));
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("cc", 0..4));
    assert_eq!(
        events(&got),
        vec![TailEvent::ChecksumMismatch { file, offset }]
    );
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn truncation_below_a_pending_partial_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    append(&path, b"a1\nb2-partial");
    let mut t = new_tailer(path.clone(), None, opts());
    assert_eq!(text(&drain(&mut t)), ["a1"]);
    // Truncated and rewritten to a size between the offset and the end of the partial line.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    append(&path, b"zz\nyy\n");
    let got = drain(&mut t);
    assert_eq!(text(&got), ["zz", "yy"]);
    assert!(matches!(
        events(&got)[..],
        [TailEvent::ChecksumMismatch { .. }]
    ));
}

#[test]
fn deletion_then_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..2));
    let mut t = new_tailer(path.clone(), None, opts());
    drain(&mut t);
    let old = id(&path);

    let mut handle = OpenOptions::new().append(true).open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    writeln!(handle, "a2,some,cdr,fields").unwrap();
    let got = drain(&mut t);
    assert_eq!(
        text(&got),
        numbered("a", 2..3),
        "open handle read to its end"
    );
    assert_eq!(events(&got), vec![TailEvent::Deleted { file: old }]);
    assert!(got.iter().all(|b| b.checkpoint.file_id() == old));
    assert!(drain(&mut t).is_empty(), "Deleted is reported once");

    write_lines(&path, &numbered("b", 0..2));
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("b", 0..2));
    assert_eq!(
        events(&got),
        vec![TailEvent::Rotated {
            from: old,
            to: id(&path)
        }]
    );
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn nul_run_between_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let mut data = b"one\n".to_vec();
    data.extend(vec![0u8; 10_000]); // A hole left by a crash, bigger than a line may be.
    data.extend(b"two\n\0\0\0\nth\0ree\n");
    append(&path, &data);
    let mut t = new_tailer(path.clone(), None, opts());
    let got = drain(&mut t);
    assert_eq!(text(&got), ["one", "two", "three"]);
    let file = id(&path);
    assert_eq!(
        events(&got),
        vec![TailEvent::NulBytesSkipped {
            file,
            bytes: 10_004,
            lines_dropped: 1
        }]
    );
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn nul_hole_at_end_of_file_then_more_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    append(&path, b"one\n");
    // The file is extended by a hole (as after a crash), with no line after it yet.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(4 + 200_000).unwrap();
    let mut t = new_tailer(path.clone(), None, opts());
    let got = drain(&mut t);
    assert_eq!(text(&got), ["one"]);
    assert_eq!(last_cp(&got).offset, 200_004, "the hole is consumed");
    append(&path, b"two\n");
    let got = drain(&mut t);
    assert_eq!(text(&got), ["two"]);
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn oversized_line_between_good_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let small = TailOptions {
        max_line_bytes: 100,
        max_batch_bytes: 256,
    };
    let mut data = b"good1\n".to_vec();
    data.extend(vec![b'x'; 5000]);
    data.extend(b"\ngood2\n");
    data.extend(vec![b'y'; 150]);
    data.extend(b"\ngood3\n");
    append(&path, &data);
    let mut t = new_tailer(path.clone(), None, small);
    let got = drain(&mut t);
    assert_eq!(text(&got), ["good1", "good2", "good3"]);
    let file = id(&path);
    let too_long: Vec<_> = events(&got)
        .into_iter()
        .filter(|e| matches!(e, TailEvent::LineTooLong { .. }))
        .collect();
    assert_eq!(
        too_long,
        vec![
            TailEvent::LineTooLong {
                file,
                offset: 6,
                len: 5000
            },
            TailEvent::LineTooLong {
                file,
                offset: 5013,
                len: 150
            }
        ]
    );
    assert_cp_matches(&path, &last_cp(&got));
    assert!(t.buffer_len() <= WINDOW_MAX + 256, "memory stays bounded");
}

#[test]
fn oversized_line_arriving_in_pieces_and_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let small = TailOptions {
        max_line_bytes: 10,
        max_batch_bytes: 64,
    };
    append(&path, b"ok\n0123456789abcdef");
    let mut t = new_tailer(path.clone(), None, small);
    let got = drain(&mut t);
    assert_eq!(text(&got), ["ok"]);
    let cp = last_cp(&got);
    assert_eq!(cp.offset, 3);
    append(&path, &[b'z'; 300]);
    assert!(drain(&mut t).is_empty());
    drop(t);

    // Restart in the middle of the long line: it is skipped again, reported once more.
    let mut t = new_tailer(path.clone(), Some(cp), small);
    append(&path, b"\nafter\n");
    let got = drain(&mut t);
    assert_eq!(text(&got), ["after"]);
    assert_eq!(
        events(&got),
        vec![TailEvent::LineTooLong {
            file: id(&path),
            offset: 3,
            len: 316
        }]
    );
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn batches_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let lines = numbered("row", 0..2000);
    write_lines(&path, &lines);
    let o = TailOptions {
        max_line_bytes: 100,
        max_batch_bytes: 4096,
    };
    let mut t = new_tailer(path.clone(), None, o);
    let got = drain(&mut t);
    assert!(got.len() > 10);
    for b in &got {
        let bytes: usize = b.lines.iter().map(|l| l.len() + 1).sum();
        assert!(bytes <= 4096);
    }
    assert_eq!(text(&got), lines);
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn bad_saved_checkpoint_restarts_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..3));
    let file = id(&path);
    let cp = Checkpoint {
        dev: file.dev,
        ino: file.ino,
        offset: 10,
        window_crc: 0,
        window_len: 9000,
    };
    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let got = drain(&mut t);
    assert_eq!(text(&got), numbered("a", 0..3));
    assert_eq!(
        events(&got),
        vec![TailEvent::ChecksumMismatch { file, offset: 10 }]
    );
}

/// A tiny deterministic generator, so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes lines in random pieces, rotates now and then (while running or while stopped),
/// and crashes the reader at random points, sometimes before the last batch is committed.
/// What was committed must be exactly what was written, in order.
#[test]
fn checkpoint_resume_exactness() {
    for seed in 1..=20u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Master.csv");
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let o = TailOptions {
            max_line_bytes: 200,
            max_batch_bytes: 300,
        };
        // Without any checkpoint a tailer starts with whatever file is at the path, so one
        // batch is committed first, as on a daemon's first run.
        let mut written: Vec<String> = vec![format!("s{seed}-first")];
        write_lines(&path, &written);
        let mut t = new_tailer(path.clone(), None, o);
        let first = drain(&mut t);
        let mut committed: Vec<String> = text(&first);
        let mut saved: Option<Checkpoint> = Some(last_cp(&first));
        let mut pending: Vec<u8> = Vec::new(); // Bytes of the line being written.
        let mut generation = 0;
        for step in 0..400 {
            match rng.below(10) {
                0..=4 => {
                    // Write a line, possibly in two pieces across steps.
                    if pending.is_empty() {
                        let line =
                            format!("s{seed}-l{step}-{}", "x".repeat(rng.below(60) as usize));
                        written.push(line.clone());
                        pending = format!("{line}\n").into_bytes();
                    }
                    let cut = if rng.below(3) == 0 {
                        1 + rng.below(pending.len() as u64) as usize
                    } else {
                        pending.len()
                    };
                    let piece: Vec<u8> = pending.drain(..cut).collect();
                    append(&path, &piece);
                }
                5 if pending.is_empty() => {
                    // Rename + create rotation (only between lines, as logrotate and cdr_csv
                    // never split a line across files).
                    generation += 1;
                    let rotated = dir.path().join(format!("Master.csv.{generation}"));
                    if path.exists() {
                        fs::rename(&path, &rotated).unwrap();
                    }
                    File::create(&path).unwrap();
                    // Several rotations between reads would skip generations (documented);
                    // read once so each rotation is seen.
                    let got = drain(&mut t);
                    for b in got {
                        committed.extend(lines_of(&b));
                        saved = Some(b.checkpoint);
                    }
                }
                6 | 7 => {
                    // Poll and commit one batch, or crash before committing it.
                    if let Some(b) = t.poll().unwrap() {
                        if rng.below(4) == 0 {
                            t = new_tailer(path.clone(), saved, o);
                        } else {
                            committed.extend(lines_of(&b));
                            saved = Some(b.checkpoint);
                        }
                    }
                }
                _ => {
                    // Restart from the committed checkpoint.
                    t = new_tailer(path.clone(), saved, o);
                }
            }
        }
        if !pending.is_empty() {
            append(&path, &pending);
        }
        // Final restart and drain.
        t = new_tailer(path.clone(), saved, o);
        for b in drain(&mut t) {
            committed.extend(lines_of(&b));
        }
        assert_eq!(committed, written, "seed {seed}");
    }
}

#[test]
fn window_covers_bytes_from_several_batches() {
    // Lines shorter than the window: the window is built from the kept tail plus new bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let mut t = new_tailer(path.clone(), None, opts());
    for i in 0..300 {
        write_lines(&path, &numbered(&format!("w{i}-"), 0..1));
        let b = t.poll().unwrap().unwrap();
        assert_cp_matches(&path, &b.checkpoint);
    }
    // And a write-in-place inside the window is noticed once the file grows.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let size = f.metadata().unwrap().len();
    f.write_all_at(b"Z", size - 100).unwrap();
    append(&path, b"next\n");
    let got = drain(&mut t);
    assert!(matches!(
        events(&got)[..],
        [TailEvent::ChecksumMismatch { .. }]
    ));
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A directory at the path cannot be read as a file.
    let path = dir.path().join("Master.csv");
    fs::create_dir(&path).unwrap();
    let mut t = new_tailer(path.clone(), None, opts());
    let err = t.poll().unwrap_err();
    assert!(
        err.to_string().contains("Master.csv"),
        "error without path: {err}"
    );
}

#[test]
fn change_waiter_wakes_on_changes_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let mut w = ChangeWaiter::new(&path);
    // Linux has inotify; a waiter that fell back to polling here is a bug, not a skip.
    assert!(
        w.is_watching(),
        "the waiter did not set up its inotify watch"
    );
    assert!(!w.wait(Duration::from_millis(10)));
    append(&path, b"a\n");
    append(&path, b"b\n");
    assert!(w.wait(Duration::from_secs(10)));
    // A rotation wakes it too (the file's own watch would have been lost).
    fs::rename(&path, dir.path().join("Master.csv.1")).unwrap();
    assert!(w.wait(Duration::from_secs(10)));
    File::create(&path).unwrap();
    assert!(w.wait(Duration::from_secs(10)));
}

#[test]
fn change_waiter_without_directory_falls_back_then_watches() {
    let dir = tempfile::tempdir().unwrap();
    let sub: PathBuf = dir.path().join("cdr-csv");
    let path = sub.join("Master.csv");
    let mut w = ChangeWaiter::with_retry(&path, Duration::ZERO);
    assert!(!w.is_watching());
    assert!(!w.wait(Duration::from_millis(10)));
    fs::create_dir(&sub).unwrap();
    assert!(!w.wait(Duration::from_millis(10)));
    assert!(
        w.is_watching(),
        "the waiter did not start watching once the directory existed"
    );
    append(&path, b"a\n");
    assert!(w.wait(Duration::from_secs(10)));
}

// Regressions found by the model test (tests/tail_model.rs).

#[test]
fn truncated_and_rewritten_to_the_very_size_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    append(&path, b"L1,aa\nL2,bb\n");
    let mut t = new_tailer(path.clone(), None, opts());
    assert_eq!(text(&drain(&mut t)), ["L1,aa", "L2,bb"]);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    append(&path, b"L3,cc\nL4,dd\n"); // The same 12 bytes long.
    let got = drain(&mut t);
    assert_eq!(text(&got), ["L3,cc", "L4,dd"]);
    assert!(matches!(
        events(&got)[..],
        [TailEvent::ChecksumMismatch { .. }]
    ));
}

#[test]
fn partial_line_truncated_and_rewritten_to_the_size_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    append(&path, b"partial-line-");
    let mut t = new_tailer(path.clone(), None, opts());
    assert!(drain(&mut t).is_empty());
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    append(&path, b"a,complete\n\n\n"); // As long as the partial line was.
    assert_eq!(text(&drain(&mut t)), ["a,complete"]);
}

#[test]
fn two_rotations_between_polls_read_the_middle_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..2));
    let mut t = new_tailer(path.clone(), None, opts());
    assert_eq!(text(&drain(&mut t)), numbered("a", 0..2));
    fs::rename(&path, dir.path().join("Master.csv.1")).unwrap();
    write_lines(&path, &numbered("b", 0..2));
    fs::rename(&path, dir.path().join("Master.csv.2")).unwrap();
    write_lines(&path, &numbered("c", 0..2));
    // A compressed older generation and a copy of a file already read are not generations.
    fs::write(dir.path().join("Master.csv.3.gz"), b"\x1f\x8bgzip").unwrap();
    fs::copy(
        dir.path().join("Master.csv.1"),
        dir.path().join("Master.csv.bak"),
    )
    .unwrap();
    let got = drain(&mut t);
    let mut expected = numbered("b", 0..2);
    expected.extend(numbered("c", 0..2));
    assert_eq!(text(&got), expected);
    assert_cp_matches(&path, &last_cp(&got));
}

#[test]
fn truncated_then_renamed_while_stopped_is_read_again_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..5));
    let mut t = new_tailer(path.clone(), None, opts());
    let cp = last_cp(&drain(&mut t));
    drop(t);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    write_lines(&path, &numbered("b", 0..1));
    fs::rename(&path, dir.path().join("Master.csv.1")).unwrap();
    write_lines(&path, &numbered("c", 0..1));
    let mut t = new_tailer(path.clone(), Some(cp), opts());
    let got = drain(&mut t);
    let mut expected = numbered("b", 0..1);
    expected.extend(numbered("c", 0..1));
    assert_eq!(text(&got), expected);
}

#[test]
fn a_rotated_file_is_left_only_once_unchanged_for_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    let rotated = dir.path().join("Master.csv.1");
    write_lines(&path, &numbered("old", 0..1));
    let quiet = Duration::from_millis(300);
    let mut t = FileTailer::new(path.clone(), None, opts()).leave_after(quiet);
    assert_eq!(text(&drain(&mut t)), numbered("old", 0..1));
    // A writer opened the file just before the rotation, and is held up.
    let mut late = OpenOptions::new().append(true).open(&path).unwrap();
    fs::rename(&path, &rotated).unwrap();
    write_lines(&path, &numbered("new", 0..1));
    assert!(
        drain(&mut t).is_empty(),
        "the renamed file was left at once"
    );
    writeln!(late, "old1,some,cdr,fields").unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "got only {got:?}");
        got.extend(text(&drain(&mut t)));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut expected = numbered("old", 1..2);
    expected.extend(numbered("new", 0..1));
    assert_eq!(got, expected);
}

#[test]
fn a_burst_of_rotations_within_one_clock_tick_is_read_whole() {
    // Ten rotations in well under a millisecond: the generations share the file system's
    // timestamp tick with the file being left, and the default wait for late writers applies.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Master.csv");
    write_lines(&path, &numbered("a", 0..5));
    let mut t = FileTailer::new(path.clone(), None, opts());
    assert_eq!(text(&drain(&mut t)), numbered("a", 0..5));
    let mut expected = Vec::new();
    for g in 0..10 {
        let lines = numbered(&format!("g{g}-"), 0..30);
        write_lines(&path, &lines);
        expected.extend(lines);
        fs::rename(&path, dir.path().join(format!("Master.csv.{g}"))).unwrap();
        File::create(&path).unwrap();
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < expected.len() && std::time::Instant::now() < deadline {
        got.extend(text(&drain(&mut t)));
        std::thread::sleep(Duration::from_millis(50));
    }
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "every line once (order within a tick is not known)"
    );
}

//! Tests of what the tailer agrees to open (regular files only, symbolic links on request,
//! never blocking) and of where it starts in a file it meets for the first time.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

/// A tailer that leaves a rotated file as soon as it is read to its end.
fn new_tailer(
    path: std::path::PathBuf,
    saved: Option<Checkpoint>,
    opts: TailOptions,
) -> FileTailer {
    FileTailer::new(path, saved, opts).leave_after(Duration::ZERO)
}

/// Polls until the tailer has nothing more; returns every batch.
fn drain(t: &mut FileTailer) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut idle = 0;
    for _ in 0..1000 {
        match t.poll().expect("poll") {
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

fn lines(batches: &[Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| &b.lines)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

fn events(batches: &[Batch]) -> Vec<TailEvent> {
    batches.iter().flat_map(|b| b.events.clone()).collect()
}

fn file_id(path: &Path) -> FileId {
    let m = fs::metadata(path).expect("stat");
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
}

#[test]
fn a_symbolic_link_is_refused_unless_following_is_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("shadow");
    fs::write(&secrets, "root:$6$SECRETHASH:19000:0:99999:7:::\n").expect("write");
    let path = dir.path().join("Master.csv");
    std::os::unix::fs::symlink(&secrets, &path).expect("symlink");

    let mut t = new_tailer(path.clone(), None, TailOptions::default());
    let err = t.poll().expect_err("a symbolic link must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(text.contains("is a symbolic link"), "{text}");
    assert!(text.contains("cdr_follow_symlink = true"), "{text}");
    assert!(!text.contains("SECRETHASH"), "{text}");
    // Refused again on every poll, and nothing was read.
    assert!(t.poll().is_err());
    assert_eq!(t.checkpoint(), None);

    let mut t = new_tailer(path.clone(), None, TailOptions::default()).follow_symlinks(true);
    let got = drain(&mut t);
    assert_eq!(lines(&got), ["root:$6$SECRETHASH:19000:0:99999:7:::"]);
}

#[test]
fn a_link_that_replaces_the_file_later_is_refused_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    append(&path, b"one\n");
    let mut t = new_tailer(path.clone(), None, TailOptions::default());
    assert_eq!(lines(&drain(&mut t)), ["one"]);
    let secrets = dir.path().join("secrets.toml");
    fs::write(&secrets, "secret_key = \"SECRETKEY\"\n").expect("write");
    fs::rename(&path, dir.path().join("Master.csv.1")).expect("rotate");
    std::os::unix::fs::symlink(&secrets, &path).expect("symlink");
    // The rotation is seen, then moving to the "new file" is refused.
    let mut refused = None;
    for _ in 0..5 {
        match t.poll() {
            Ok(Some(b)) => assert!(b.lines.is_empty(), "{:?}", lines(&[b])),
            Ok(None) => {}
            Err(e) => refused = Some(e.to_string()),
        }
    }
    let refused = refused.expect("the link is refused");
    assert!(refused.contains("symbolic link"), "{refused}");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    mkfifo(&path);
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let mut t = new_tailer(p, None, TailOptions::default());
        let _ = tx.send(t.poll().map(|b| b.is_some()).map_err(|e| e.to_string()));
    });
    let got = rx.recv_timeout(Duration::from_secs(5));
    if got.is_err() {
        // Unblock the reader stuck in open(2) so the test process can end.
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
    }
    let got = got.expect("opening a FIFO blocked the tailer");
    let err = got.expect_err("a FIFO must be refused");
    assert!(
        err.contains("is not a regular file (a FIFO (named pipe))"),
        "{err}"
    );
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    fs::create_dir(&path).expect("mkdir");
    let err = new_tailer(path, None, TailOptions::default())
        .poll()
        .expect_err("a directory is not a CDR file");
    assert!(err.to_string().contains("a directory"), "{err}");
    let err = open_regular(dir.path(), false).expect_err("a directory");
    assert!(matches!(err, OpenError::NotRegular { .. }), "{err}");
}

#[test]
fn start_at_end_passes_over_what_an_existing_file_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    // Three complete old lines and one being written.
    append(&path, b"old1\nold2\r\nold3\npart");
    let mut t = new_tailer(path.clone(), None, TailOptions::default()).start_at(StartAt::End);
    let first = t.poll().expect("poll").expect("the skip is reported");
    assert!(first.lines.is_empty());
    assert_eq!(
        first.events,
        [TailEvent::SkippedExisting {
            file: file_id(&path),
            bytes: 16,
            lines: Some(3),
        }]
    );
    assert_eq!(first.checkpoint.offset, 16);
    assert_eq!(first.checkpoint.window_len, 16);
    assert_eq!(
        first.checkpoint.window_crc,
        crc32fast::hash(b"old1\nold2\r\nold3\n")
    );
    // The line being written is new: it is read once complete, with what follows.
    append(&path, b"ial\nnew\n");
    let got = drain(&mut t);
    assert_eq!(lines(&got), ["partial", "new"]);
    assert_eq!(
        got.iter()
            .flat_map(|b| b.offsets.clone())
            .collect::<Vec<_>>(),
        [16, 24]
    );
    // A restart from the committed checkpoint goes on from there, skipping nothing.
    let cp = got.last().expect("a batch").checkpoint;
    append(&path, b"after\n");
    let mut t = new_tailer(path, Some(cp), TailOptions::default()).start_at(StartAt::End);
    let got = drain(&mut t);
    assert_eq!(lines(&got), ["after"]);
    assert!(events(&got).is_empty(), "{:?}", events(&got));
}

#[test]
fn start_at_end_reads_a_file_that_appears_later_or_after_a_rotation_from_its_first_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    let mut t = new_tailer(path.clone(), None, TailOptions::default()).start_at(StartAt::End);
    assert_eq!(t.poll().expect("poll"), None, "nothing there yet");
    // Asterisk creates the file with its first CDR.
    append(&path, b"first\nsecond\n");
    let got = drain(&mut t);
    assert_eq!(lines(&got), ["first", "second"]);
    assert!(events(&got).is_empty(), "{:?}", events(&got));
    // Rotation: the new file is read whole.
    fs::rename(&path, dir.path().join("Master.csv.1")).expect("rotate");
    append(&path, b"rotated1\nrotated2\n");
    let got = drain(&mut t);
    assert_eq!(lines(&got), ["rotated1", "rotated2"]);
    assert!(
        !events(&got)
            .iter()
            .any(|e| matches!(e, TailEvent::SkippedExisting { .. })),
        "{:?}",
        events(&got)
    );
}

#[test]
fn start_at_end_of_an_empty_file_or_a_single_partial_line_skips_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    append(&path, b"");
    let mut t = new_tailer(path.clone(), None, TailOptions::default()).start_at(StartAt::End);
    assert_eq!(t.poll().expect("poll"), None);
    append(&path, b"only");
    assert_eq!(t.poll().expect("poll"), None);
    append(&path, b"\n");
    assert_eq!(lines(&drain(&mut t)), ["only"]);
}

#[test]
fn start_at_beginning_reads_the_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    append(&path, b"old1\nold2\n");
    let mut t = new_tailer(path, None, TailOptions::default()).start_at(StartAt::Beginning);
    let got = drain(&mut t);
    assert_eq!(lines(&got), ["old1", "old2"]);
    assert_eq!(got[0].offsets, [0, 5]);
}

#[test]
fn a_big_file_is_passed_over_without_counting_its_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Master.csv");
    let line = vec![b'x'; 1023];
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    let mut block = Vec::new();
    for _ in 0..1024 {
        block.extend_from_slice(&line);
        block.push(b'\n');
    }
    for _ in 0..33 {
        f.write_all(&block).expect("write");
    }
    drop(f);
    let size = fs::metadata(&path).expect("stat").len();
    let mut t = new_tailer(path.clone(), None, TailOptions::default()).start_at(StartAt::End);
    let first = t.poll().expect("poll").expect("the skip");
    assert_eq!(
        first.events,
        [TailEvent::SkippedExisting {
            file: file_id(&path),
            bytes: size,
            lines: None,
        }]
    );
}

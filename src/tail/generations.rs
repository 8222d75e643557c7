//! Generations of the tailed file that came and went between two polls: when the path is
//! rotated more than once before the tailer looks, the files in between are found in the
//! directory (by name prefix) and read in order before the file at the path.
//!
//! A file in the directory is such a generation if it was not modified before the file being
//! left was last written (a generation rotated away after it is written later; a copytruncate
//! copy of it made before its last write, or an older generation, is not; within one tick of
//! the file system's clock this cannot be told), and if it is not known: known files are those
//! that were in the directory when the tailer started (older generations, already read by a
//! previous run), every file this tailer has read, and copies of them (a copytruncate copy
//! starts with the same first line as the file it copies). Files are recognised by
//! `(dev, ino, first-line checksum)`, so an inode number reused for a new file does not hide
//! it, and by the first-line checksum alone for copies. Compressed files (`.gz`, `.xz`, ... or
//! their magic bytes) are never generations. Generations are read oldest first by
//! modification time, then inode number.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::FileId;

/// Largest number of directory entries looked at in one scan.
const SCAN_ENTRIES_MAX: usize = 10_000;
/// Largest number of generations queued by one scan (the oldest are kept).
pub(super) const QUEUE_MAX: usize = 64;
/// Largest number of files (and of first lines) remembered as known.
const KNOWN_MAX: usize = 16_384;
/// Bytes read from the start of a file for its first-line checksum.
const HEAD_BYTES: usize = 4096;

/// Name endings of compressed files, which are never generations to read.
const COMPRESSED_SUFFIXES: [&str; 7] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z"];

/// What the first bytes of a file say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head {
    /// No complete first line yet (and less than [`HEAD_BYTES`] bytes).
    Empty,
    /// Starts like a compressed file.
    Compressed,
    /// CRC-32 of the first line with its `"\n"` (or of the first [`HEAD_BYTES`] bytes).
    Line(u32),
}

/// Reads the start of `file` and tells what it is.
pub(super) fn head_of(file: &File) -> io::Result<Head> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; HEAD_BYTES];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let data = &buf[..n];
    const MAGIC: [&[u8]; 6] = [
        &[0x1f, 0x8b],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        &[0x28, 0xb5, 0x2f, 0xfd],
        &[0x04, 0x22, 0x4d, 0x18],
        b"PK\x03\x04",
    ];
    if MAGIC.iter().any(|m| data.starts_with(m)) {
        return Ok(Head::Compressed);
    }
    Ok(match data.iter().position(|&b| b == b'\n') {
        Some(i) => Head::Line(crc32fast::hash(&data[..=i])),
        None if n == HEAD_BYTES => Head::Line(crc32fast::hash(data)),
        None => Head::Empty,
    })
}

/// A generation found in the directory, opened (so that it can still be read if it is
/// deleted before its turn).
pub(super) struct Generation {
    pub file: File,
    pub id: FileId,
}

/// Files that are not generations to catch up (see the module docs). Bounded.
#[derive(Default)]
pub(super) struct Known {
    files: HashSet<(u64, u64, u32)>,
    files_order: VecDeque<(u64, u64, u32)>,
    heads: HashSet<u32>,
    heads_order: VecDeque<u32>,
}

impl Known {
    /// Remembers a file with this first line.
    pub fn add_file(&mut self, id: FileId, head: u32) {
        let key = (id.dev, id.ino, head);
        if self.files.insert(key) {
            self.files_order.push_back(key);
            if self.files_order.len() > KNOWN_MAX {
                if let Some(old) = self.files_order.pop_front() {
                    self.files.remove(&old);
                }
            }
        }
    }

    /// Remembers the first line of a file that was read: a copy of it is not a generation.
    pub fn add_read_head(&mut self, head: u32) {
        if self.heads.insert(head) {
            self.heads_order.push_back(head);
            if self.heads_order.len() > KNOWN_MAX {
                if let Some(old) = self.heads_order.pop_front() {
                    self.heads.remove(&old);
                }
            }
        }
    }

    fn is_known(&self, id: FileId, head: u32) -> bool {
        self.heads.contains(&head) || self.files.contains(&(id.dev, id.ino, head))
    }

    /// Remembers every file in `path`'s directory that is named like a generation and was
    /// last modified at or before `until` (nanoseconds since the epoch; None = all).
    pub fn add_directory(&mut self, path: &Path, until: Option<i128>) -> io::Result<()> {
        for entry in entries(path)? {
            if until.is_none_or(|t| entry.mtime <= t) {
                self.add_file(entry.id, entry.head);
            }
        }
        Ok(())
    }

    /// The generations in `path`'s directory modified at or after `since` (ns since the epoch:
    /// the last change of the file being left) that are not known and not in `skip`, oldest
    /// first, at most [`QUEUE_MAX`]. The entry named like the path itself is never one.
    pub fn generations(
        &self,
        path: &Path,
        skip: &[FileId],
        since: i128,
    ) -> io::Result<VecDeque<Generation>> {
        let mut found: Vec<Entry> = entries(path)?
            .into_iter()
            .filter(|e| e.mtime >= since && !skip.contains(&e.id) && !self.is_known(e.id, e.head))
            .collect();
        found.sort_by_key(|e| (e.mtime, e.id.ino));
        let mut out = VecDeque::new();
        for e in found {
            if out.len() == QUEUE_MAX {
                break;
            }
            // Opened again (the scan keeps no file open): it must still be the same file.
            if let Ok(Some((file, meta))) = super::open::open_regular(&e.path, false) {
                if meta.dev() == e.id.dev && meta.ino() == e.id.ino {
                    out.push_back(Generation { file, id: e.id });
                }
            }
        }
        Ok(out)
    }
}

/// A file of the directory named like a generation of the tailed file.
struct Entry {
    id: FileId,
    path: PathBuf,
    head: u32,
    /// Modification time, nanoseconds since the epoch.
    mtime: i128,
}

/// Regular files in `path`'s directory whose name starts with `path`'s name (but is not
/// that name), not compressed and with at least one complete line.
fn entries(path: &Path) -> io::Result<Vec<Entry>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let base = path.file_name().unwrap_or(OsStr::new("")).as_bytes();
    // A directory that cannot be listed (missing, or no read permission while the file
    // itself is readable) has no generations to catch up: the file at the path is still read.
    let Ok(listing) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in listing.take(SCAN_ENTRIES_MAX) {
        // An entry that vanishes or cannot be read is not a generation we can read.
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.as_bytes();
        if name == base || !name.starts_with(base) {
            continue;
        }
        if COMPRESSED_SUFFIXES
            .iter()
            .any(|s| name.ends_with(s.as_bytes()))
        {
            continue;
        }
        let candidate = entry.path();
        let Ok(Some((file, meta))) = super::open::open_regular(&candidate, false) else {
            continue;
        };
        if meta.ino() != entry.ino() {
            continue; // Replaced while we looked.
        }
        let Ok(Head::Line(head)) = head_of(&file) else {
            continue;
        };
        out.push(Entry {
            id: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            mtime: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            path: candidate,
            head,
        });
    }
    Ok(out)
}

/// Modification time of an open file, nanoseconds since the epoch.
pub(super) fn mtime_of(file: &File) -> io::Result<i128> {
    let meta = file.metadata()?;
    Ok(i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()))
}

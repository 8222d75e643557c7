//! Tails an append-only log file (a CDR file) the way log shippers do, without losing or
//! duplicating a line across crashes, restarts and log rotation.
//!
//! # Model
//!
//! [`FileTailer::poll`] hands out [`Batch`]es: complete lines (their `"\n"` has arrived) from
//! exactly ONE file, plus the [`Checkpoint`] that names that file and the offset just past the
//! last byte consumed. The caller stores the parsed rows of a batch and its checkpoint in one
//! transaction, in the order the batches were returned, and hands the last committed checkpoint
//! back to [`FileTailer::new`] on restart. Because the checkpoint never runs ahead of the lines
//! that were handed out with it, a crash at any point loses nothing and duplicates nothing.
//!
//! A file is identified by `(dev, ino)`, and a checkpoint also carries the CRC-32 of up to
//! [`WINDOW_MAX`] bytes just before its offset, so that a file that was truncated (copytruncate)
//! and written again past the old offset is recognised and re-read from the start.
//!
//! Rotation is handled both while running (rename + create: the still-open handle of the old file
//! is read to its end first, then reading moves to offset 0 of the new file) and while stopped
//! (the saved file is looked up by inode in the same directory, e.g. `Master.csv.1`, and finished
//! before the new file is started; if it was truncated before it was renamed, it is read again
//! from its start). Generations that were rotated away before the tailer saw them at the path
//! (several rotations between two polls, a rotation storm, several rotations while stopped, or
//! the path missing meanwhile) are found in the directory and read, oldest first, before the
//! file at the path (`generations.rs`: files named `<name>*`, not older than the file being
//! left, not compressed, not a file or a copy of a file already read). A file that was rotated
//! away (or deleted) is left once it has been unchanged for [`LEAVE_AFTER`], so that a writer
//! that opened it just before the rename still lands its row in it and is read.
//!
//! Only a regular file is read: the path is opened with `O_NONBLOCK` (a FIFO cannot block the
//! caller) and `O_NOFOLLOW` (a symbolic link is refused unless
//! [`FileTailer::follow_symlinks`]), and the opened descriptor is checked with `fstat` before a
//! byte is read ([`open_regular`]).
//!
//! With no saved checkpoint, [`FileTailer::start_at`] with [`StartAt::End`] starts a file that is
//! at the path on the first poll after its last complete line ([`TailEvent::SkippedExisting`]);
//! a file that appears later, and every file after a rotation, is read from offset 0.
//!
//! [`ChangeWaiter`] wakes the caller's poll loop when the file's directory changes; the poll loop
//! stays the source of truth, so lost notifications cost latency, never data.
//!
//! # Caller loop
//!
//! ```no_run
//! # use pbxlink::tail::{ChangeWaiter, FileTailer, TailOptions};
//! # use std::time::Duration;
//! # fn commit(_: &pbxlink::tail::Batch) {}
//! # fn run() -> std::io::Result<()> {
//! let path = std::path::PathBuf::from("/var/log/asterisk/cdr-csv/Master.csv");
//! let mut tailer = FileTailer::new(path.clone(), None, TailOptions::default());
//! let mut waiter = ChangeWaiter::new(&path);
//! loop {
//!     while let Some(batch) = tailer.poll()? {
//!         commit(&batch); // rows + batch.checkpoint in ONE transaction, even when `lines` is empty
//!     }
//!     waiter.wait(Duration::from_secs(1));
//! }
//! # }
//! ```
//!
//! # Known limits
//!
//! Each of these is a window in which lines can be lost; `tests/tail_model.rs` counts the lines
//! written into them and checks that nothing outside them is ever lost, doubled or reordered.
//!
//! - copytruncate: lines written to the file after the tailer's last read of it and before the
//!   truncation are only in the copy. The live file is read again from 0 (`Truncated` or
//!   `ChecksumMismatch`); the copy is not read (it is older than the file being read). The loss
//!   is bounded by what was written since the last poll (at most one poll interval of calls).
//!   A plain truncation (`truncate -s 0`) loses the same window.
//! - A file deleted before the tailer read it to its end loses what was not read: while the
//!   tailer holds the file open (it was being read), nothing is lost unless the tailer is
//!   stopped before it finishes it; a file deleted before the tailer opened it is lost whole
//!   (also a rotated generation deleted before it was caught up, e.g. `rotate 1` storms).
//! - If the saved file is gone at startup (`RotatedFileNotFound`), what was written to it after
//!   the saved offset and to generations rotated away while stopped is lost: reading starts at
//!   offset 0 of the file at the path.
//! - Generations are ordered by modification time: two generations written within one tick of
//!   the file system's clock (a few ms) may be read in the wrong order. After a restart, a
//!   generation last written in the same tick as the saved file is taken for an older one and
//!   not caught up.
//! - A writer that appends to a renamed file more than [`LEAVE_AFTER`] after its previous write
//!   (once the tailer moved on) is not followed.

mod generations;
mod lines;
mod open;
mod tailer;
mod waiter;

#[cfg(test)]
mod open_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use open::{OpenError, open_regular};
pub use tailer::{FileTailer, LEAVE_AFTER};
pub use waiter::ChangeWaiter;

/// Where reading starts in a file that is already at the path, with content, when it is
/// followed for the first time (no saved checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// After its last complete line: what it held is history, not new calls.
    End,
    /// At its first byte: the whole file is read.
    Beginning,
}

/// Largest number of bytes before a checkpoint's offset covered by its checksum.
pub const WINDOW_MAX: usize = 4096;

/// Identity of a file on disk: device and inode numbers, as in `stat(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Device number (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
}

/// Where reading stopped in one file: everything before `offset` has been handed out as
/// complete lines (or deliberately skipped: NUL bytes, empty or oversized lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Device number of the file.
    pub dev: u64,
    /// Inode number of the file.
    pub ino: u64,
    /// Byte offset of the first byte not yet consumed; always at the start of a line.
    pub offset: u64,
    /// CRC-32 (crc32fast, IEEE) of the `window_len` bytes immediately before `offset`.
    pub window_crc: u32,
    /// Number of bytes covered by `window_crc`: `min(offset, WINDOW_MAX)`.
    pub window_len: u32,
}

impl Checkpoint {
    /// The identity of the file this checkpoint points into.
    pub fn file_id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }
}

/// Limits applied while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailOptions {
    /// A line longer than this (without its `"\r\n"`) is skipped and reported with
    /// [`TailEvent::LineTooLong`]; it is never buffered whole. Default 64 KiB.
    pub max_line_bytes: usize,
    /// Upper bound on the bytes read for one batch (raised to `max_line_bytes + 2` if smaller),
    /// so a large backlog is handed out in pieces. Default 1 MiB.
    pub max_batch_bytes: usize,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            max_line_bytes: 64 * 1024,
            max_batch_bytes: 1024 * 1024,
        }
    }
}

/// One read's worth: complete lines from ONE file and the checkpoint to commit with them.
///
/// Commit every batch, in order, including those with no lines: a batch without lines carries
/// events and may move the checkpoint to another file (after a rotation) or back to offset 0
/// (after a truncation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Complete lines, without `"\n"` (nor a `"\r"` before it), NUL bytes removed, never empty.
    pub lines: Vec<Vec<u8>>,
    /// The file offset of each line's first byte (`offsets[i]` is where `lines[i]` starts).
    pub offsets: Vec<u64>,
    /// Position just after the last line (or skipped bytes) of this batch, in the file the lines
    /// were read from.
    pub checkpoint: Checkpoint,
    /// What happened while producing this batch, for logs and counters; events that concern a
    /// switch of file come in the first batch of the new file.
    pub events: Vec<TailEvent>,
}

/// Something the caller should log or count. None of them needs action beyond committing the
/// batch that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailEvent {
    /// The path now names another file (rename + create rotation, or recreation after a
    /// deletion). The old file was read to its end; reading continues at offset 0 of `to`.
    Rotated {
        /// The file that was being read.
        from: FileId,
        /// The file now at the path.
        to: FileId,
    },
    /// The path disappeared while `file` was open. The open handle keeps being read; reading
    /// moves to the new file once the path reappears.
    Deleted {
        /// The file that was being read.
        file: FileId,
    },
    /// The file became shorter than the read offset (truncated, e.g. copytruncate): reading
    /// restarts at offset 0 of the same file.
    Truncated {
        /// The truncated file.
        file: FileId,
        /// The offset reading had reached.
        offset: u64,
        /// The size found.
        size: u64,
    },
    /// The bytes before the read offset are not the ones that were read (truncated and written
    /// again past the offset, or another file reusing the inode): reading restarts at offset 0.
    ChecksumMismatch {
        /// The file whose content changed.
        file: FileId,
        /// The offset reading had reached.
        offset: u64,
    },
    /// At startup the path named another file; the saved file was found in the same directory
    /// under another name (e.g. `Master.csv.1`) and is finished from the saved offset before the
    /// file at the path is started at offset 0.
    ResumedRotated {
        /// Where the saved file was found.
        path: PathBuf,
        /// Its identity (the saved one).
        file: FileId,
        /// The offset reading resumes at: the saved one, or 0 if the file was truncated while
        /// stopped (a `Truncated` or `ChecksumMismatch` event comes with it).
        offset: u64,
    },
    /// At startup the path named another file (or nothing) and the saved file could not be
    /// found (or no longer matched the checkpoint): anything written to it after the saved
    /// offset is lost to this tailer. Reading starts at offset 0 of the file at the path.
    RotatedFileNotFound {
        /// The checkpoint given to [`FileTailer::new`].
        saved: Checkpoint,
    },
    /// The first look at the path, with no saved checkpoint, found a file that already held
    /// `bytes` bytes of complete lines, and [`StartAt::End`] was asked for: they were passed
    /// over and reading starts after them.
    SkippedExisting {
        /// The file.
        file: FileId,
        /// Bytes passed over (the checkpoint's offset).
        bytes: u64,
        /// Lines passed over, when the file was small enough to count them.
        lines: Option<u64>,
    },
    /// A line longer than [`TailOptions::max_line_bytes`] was skipped.
    LineTooLong {
        /// The file it was in.
        file: FileId,
        /// Offset of its first byte.
        offset: u64,
        /// Its length in bytes, without the `"\n"`.
        len: u64,
    },
    /// NUL bytes (holes left by a crash) were removed from this batch's data.
    NulBytesSkipped {
        /// The file they were in.
        file: FileId,
        /// How many NUL bytes were removed.
        bytes: u64,
        /// How many lines were dropped because nothing but NUL bytes was in them.
        lines_dropped: u64,
    },
    /// Reading moved to another file while the old one ended with bytes not followed by
    /// `"\n"`; they are abandoned.
    UnterminatedTail {
        /// The file being left.
        file: FileId,
        /// Offset of the first abandoned byte.
        offset: u64,
        /// Number of abandoned bytes.
        len: u64,
    },
}

//! [`FileTailer`]: reading one path across rotations.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::generations::{Generation, Head, Known, head_of, mtime_of};
use super::lines::{push_window, split_lines};
use super::open::{metadata_at, open_regular};
use super::{Batch, Checkpoint, FileId, StartAt, TailEvent, TailOptions, WINDOW_MAX};

/// Lines passed over at a first start are counted only up to this many bytes (reading more
/// would delay the first start for a count nobody needs exactly).
const COUNT_SKIPPED_LINES_MAX: u64 = 32 * 1024 * 1024;

/// How long a file that was rotated away must have been left unchanged before reading moves
/// on from it (see [`FileTailer::leave_after`]).
pub const LEAVE_AFTER: Duration = Duration::from_millis(500);

/// Adds the path (and what was being done) to an I/O error, keeping its kind.
fn ctx(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn id_of(meta: &fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Opens `path` for reading without blocking; `Ok(None)` if it does not exist. Anything but
/// a regular file is refused, and so is a symbolic link unless `follow_symlink`.
fn open_existing(path: &Path, follow_symlink: bool) -> io::Result<Option<(File, FileId)>> {
    Ok(open_regular(path, follow_symlink)?.map(|(file, meta)| (file, id_of(&meta))))
}

/// Identity of what is at `path` now (the link itself unless `follow_symlink`); `Ok(None)`
/// if there is nothing.
fn identity_at(path: &Path, follow_symlink: bool) -> io::Result<Option<FileId>> {
    metadata_at(path, follow_symlink)
        .map(|m| m.as_ref().map(id_of))
        .map_err(|e| ctx(path, "stat of", e))
}

/// Where reading starts in a file that already holds `size` bytes when it is first seen
/// with no saved position: just after its last complete line. Returns the offset and the
/// number of lines before it (when counting them is cheap).
fn end_of_last_line(file: &File, size: u64, max_line: usize) -> io::Result<(u64, Option<u64>)> {
    // The last "\n" is within the last line's length (plus its "\r\n") of the end, or the
    // partial last line is too long to be read anyway.
    let look = size.min(max_line as u64 + 2);
    let mut tail = vec![0; look as usize];
    let n = read_full_at(file, &mut tail, size - look)?;
    let offset = match tail[..n].iter().rposition(|&b| b == b'\n') {
        Some(i) => size - look + i as u64 + 1,
        // Only one line, still being written: it is read once complete.
        None if look == size => 0,
        None => size,
    };
    if offset > COUNT_SKIPPED_LINES_MAX {
        return Ok((offset, None));
    }
    let mut lines = 0u64;
    let mut buf = vec![0; 1024 * 1024];
    let mut at = 0u64;
    while at < offset {
        let want = (offset - at).min(buf.len() as u64) as usize;
        let n = read_full_at(file, &mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        at += n as u64;
    }
    Ok((offset, Some(lines)))
}

/// Reads from `at` until `buf` is full or the end of the file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], mut at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                at += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads the `len` bytes before `offset`; `Ok(None)` if the file is too short.
fn read_window(file: &File, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
    if len as u64 > offset {
        return Ok(None);
    }
    let mut w = vec![0; len];
    let n = read_full_at(file, &mut w, offset - len as u64)?;
    Ok((n == len).then_some(w))
}

/// Why a file does not match a checkpoint.
enum Mismatch {
    /// The file is shorter than the checkpoint's offset.
    Short(u64),
    /// The bytes before the offset have another checksum (or the checkpoint is malformed).
    Checksum,
}

/// Checks that `file` still holds what `cp` describes; returns the window bytes if it does.
fn verify(file: &File, path: &Path, cp: &Checkpoint) -> io::Result<Result<Vec<u8>, Mismatch>> {
    let size = file.metadata().map_err(|e| ctx(path, "stat of", e))?.len();
    if size < cp.offset {
        return Ok(Err(Mismatch::Short(size)));
    }
    let len = cp.window_len as usize;
    if len > WINDOW_MAX || len as u64 != cp.offset.min(WINDOW_MAX as u64) {
        return Ok(Err(Mismatch::Checksum));
    }
    let window = read_window(file, cp.offset, len).map_err(|e| ctx(path, "reading", e))?;
    Ok(match window {
        Some(w) if crc32fast::hash(&w) == cp.window_crc => Ok(w),
        Some(_) => Err(Mismatch::Checksum),
        None => Err(Mismatch::Short(size)),
    })
}

/// Looks in `path`'s directory for another name of the file `id`.
fn find_by_id(path: &Path, id: FileId) -> io::Result<Option<(PathBuf, File)>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ctx(dir, "listing", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| ctx(dir, "listing", e))?;
        if entry.ino() != id.ino {
            continue;
        }
        let candidate = entry.path();
        // The entry may vanish or be unreadable; then it is not a file we can finish. The
        // entry itself must be the file: a link has an inode of its own.
        if let Ok(Some((file, found))) = open_existing(&candidate, false) {
            if found == id {
                return Ok(Some((candidate, file)));
            }
        }
    }
    Ok(None)
}

/// The file currently being read.
struct Current {
    file: File,
    id: FileId,
    /// Start of the first byte not consumed yet; always at the start of a line.
    offset: u64,
    /// The last (up to WINDOW_MAX) bytes before `offset`.
    window: Vec<u8>,
    /// End of the bytes already looked at (>= offset); nothing is new until the file grows
    /// past it.
    seen_end: u64,
    /// Inside a line too long to keep, starting at `offset`: the last bytes of it seen so far
    /// (up to WINDOW_MAX) to rebuild the window once it ends. The scan resumes at `seen_end`.
    skipping: Option<Vec<u8>>,
    /// The path names another file (or nothing): move on once this one is at its end.
    rotation_seen: bool,
    /// A `Deleted` event was reported for this file.
    deleted_reported: bool,
    /// Checksum of its first line, once it has been read (see `generations`).
    head: Option<u32>,
    /// Size and mtime (ns) when it was first seen at its end and unchanged since, and when.
    unchanged: Option<(u64, i128, Instant)>,
}

impl Current {
    fn new(file: File, id: FileId, offset: u64, window: Vec<u8>) -> Self {
        Current {
            file,
            id,
            offset,
            window,
            seen_end: offset,
            skipping: None,
            rotation_seen: false,
            deleted_reported: false,
            head: None,
            unchanged: None,
        }
    }

    /// Whether nothing was written to the file for `quiet`: its modification time is that
    /// old, or (clock stepped, or written just now) its size and modification time have not
    /// changed over `quiet` of polls.
    fn quiet_for(&mut self, quiet: Duration) -> io::Result<bool> {
        if quiet.is_zero() {
            return Ok(true);
        }
        let meta = self.file.metadata()?;
        let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let age = now - mtime;
        if age >= quiet.as_nanos() as i128 && age < 86_400 * 1_000_000_000 {
            return Ok(true);
        }
        let same = self
            .unchanged
            .is_some_and(|(size, m, _)| size == meta.len() && m == mtime);
        if !same {
            self.unchanged = Some((meta.len(), mtime, Instant::now()));
        }
        Ok(self
            .unchanged
            .is_some_and(|(_, _, since)| since.elapsed() >= quiet))
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            dev: self.id.dev,
            ino: self.id.ino,
            offset: self.offset,
            window_crc: crc32fast::hash(&self.window),
            window_len: self.window.len() as u32,
        }
    }

    fn restart(&mut self) {
        self.head = None;
        self.offset = 0;
        self.seen_end = 0;
        self.window.clear();
        self.skipping = None;
    }

    /// The bytes before the offset are not what was read there: the file was rewritten
    /// under us. Says so and starts the file again from its first byte.
    fn changed_under_us(&mut self, events: &mut Vec<TailEvent>) {
        events.push(TailEvent::ChecksumMismatch {
            file: self.id,
            offset: self.offset,
        });
        self.restart();
    }

    /// [`Self::read`] into the lines and offsets of a new batch.
    fn read_batch(
        &mut self,
        path: &Path,
        buf: &mut Vec<u8>,
        opts: &TailOptions,
        events: &mut Vec<TailEvent>,
    ) -> (Vec<Vec<u8>>, Vec<u64>, io::Result<bool>) {
        let (mut lines, mut offsets) = (Vec::new(), Vec::new());
        let at_eof = self.read(path, buf, opts, &mut lines, &mut offsets, events);
        (lines, offsets, at_eof)
    }

    /// Reads what is new into `lines`; returns true if the end of the file was reached.
    /// State only changes after successful reads, so an error can be retried.
    fn read(
        &mut self,
        path: &Path,
        buf: &mut Vec<u8>,
        opts: &TailOptions,
        lines: &mut Vec<Vec<u8>>,
        offsets: &mut Vec<u64>,
        events: &mut Vec<TailEvent>,
    ) -> io::Result<bool> {
        let data_cap = opts.max_batch_bytes.max(opts.max_line_bytes + 2);
        if buf.len() != WINDOW_MAX + data_cap {
            *buf = vec![0; WINDOW_MAX + data_cap];
        }
        let rd = |e| ctx(path, "reading", e);
        // A truncation or mismatch restarts at 0, after which neither can happen again barring
        // a concurrent truncation; bound the retries anyway.
        for _ in 0..4 {
            let size = self.file.metadata().map_err(rd)?.len();
            if size < self.offset {
                events.push(TailEvent::Truncated {
                    file: self.id,
                    offset: self.offset,
                    size,
                });
                self.restart();
                continue;
            }
            if size < self.seen_end {
                // Bytes after the offset vanished: look again, verifying the window.
                self.seen_end = self.offset;
                self.skipping = None;
            }
            if size == self.seen_end {
                // Nothing new by size, but a file truncated and written again to exactly
                // this size holds other lines: the window tells.
                let wl = self.window.len();
                if wl > 0 {
                    let now = read_window(&self.file, self.offset, wl).map_err(rd)?;
                    if now.as_deref() != Some(&self.window[..]) {
                        self.changed_under_us(events);
                        continue;
                    }
                }
                // Likewise the partial line after the offset: if it now holds a "\n", it was
                // written again; read it.
                if self.seen_end > self.offset && self.skipping.is_none() {
                    let len = (self.seen_end - self.offset) as usize;
                    let now = read_window(&self.file, self.seen_end, len).map_err(rd)?;
                    if now.is_none_or(|p| p.contains(&b'\n')) {
                        self.seen_end = self.offset;
                        continue;
                    }
                }
                return Ok(true);
            }

            if let Some(tail) = self.skipping.as_mut() {
                let wl = self.window.len();
                match read_window(&self.file, self.offset, wl).map_err(rd)? {
                    Some(w) if w == self.window => {}
                    _ => {
                        self.changed_under_us(events);
                        continue;
                    }
                }
                // Scan for the end of the oversized line, keeping only its last bytes.
                loop {
                    let data = &mut buf[..data_cap];
                    let n = read_full_at(&self.file, data, self.seen_end).map_err(rd)?;
                    let data = &data[..n];
                    if let Some(i) = data.iter().position(|&b| b == b'\n') {
                        push_window(tail, &data[..=i]);
                        let end = self.seen_end + i as u64;
                        events.push(TailEvent::LineTooLong {
                            file: self.id,
                            offset: self.offset,
                            len: end - self.offset,
                        });
                        push_window(&mut self.window, tail);
                        self.offset = end + 1;
                        self.seen_end = self.offset;
                        self.skipping = None;
                        break;
                    }
                    push_window(tail, data);
                    self.seen_end += n as u64;
                    if n < data_cap {
                        return Ok(true);
                    }
                }
                continue; // Read the lines after it.
            }

            // Read the window again along with the new bytes, in one call, to notice a file
            // that was truncated and written again past the offset.
            let wl = self.window.len();
            let start = self.offset - wl as u64;
            let n = read_full_at(&self.file, &mut buf[..wl + data_cap], start).map_err(rd)?;
            if n < wl {
                events.push(TailEvent::Truncated {
                    file: self.id,
                    offset: self.offset,
                    size: start + n as u64,
                });
                self.restart();
                continue;
            }
            if buf[..wl] != self.window[..] {
                self.changed_under_us(events);
                continue;
            }
            let data = &buf[wl..n];
            let first = lines.len();
            let split = split_lines(data, opts.max_line_bytes, lines, offsets);
            for at in &mut offsets[first..] {
                *at += self.offset;
            }
            for &(at, len) in &split.too_long {
                events.push(TailEvent::LineTooLong {
                    file: self.id,
                    offset: self.offset + at as u64,
                    len: len as u64,
                });
            }
            if split.nul_bytes > 0 || split.nul_lines > 0 {
                events.push(TailEvent::NulBytesSkipped {
                    file: self.id,
                    bytes: split.nul_bytes,
                    lines_dropped: split.nul_lines,
                });
            }
            push_window(&mut self.window, &data[..split.consumed]);
            self.seen_end = self.offset + data.len() as u64;
            self.offset += split.consumed as u64;
            if split.oversized_partial {
                let mut tail = Vec::new();
                push_window(&mut tail, &data[split.consumed..]);
                self.skipping = Some(tail);
                if lines.is_empty() {
                    continue; // Nothing to hand out yet: find the end of that line now.
                }
            }
            return Ok(n < wl + data_cap);
        }
        Ok(false)
    }
}

/// Follows one path: reads complete lines as they are appended, across rotations, truncations,
/// deletions and restarts (see the [module docs](super)).
pub struct FileTailer {
    path: PathBuf,
    opts: TailOptions,
    /// The checkpoint given at startup, until it has been resolved to a file.
    saved: Option<Checkpoint>,
    current: Option<Current>,
    /// Events to deliver with the next batch (kept when a poll fails half-way).
    pending: Vec<TailEvent>,
    /// Read buffer, allocated on first read and reused.
    buf: Vec<u8>,
    /// Whether a symbolic link at the path is followed (else refused).
    follow_symlink: bool,
    /// Where a file found at the very first look, with no saved position, is started.
    start_at: StartAt,
    /// The path has not been looked at yet (a file there now "already existed").
    first_look: bool,
    /// Generations rotated away before they were seen at the path, to read (oldest first)
    /// before the file at the path.
    queue: VecDeque<Generation>,
    /// Files that are not such generations (see `generations`).
    known: Known,
    /// The files already in the directory at startup are still to be remembered as known:
    /// those modified at or before this time (ns since the epoch; None = all).
    pending_snapshot: Option<Option<i128>>,
    /// How long a rotated-away file must be unchanged before it is left.
    leave_after: Duration,
}

impl FileTailer {
    /// Creates a tailer for `path`. `saved` is the last committed checkpoint (None = never
    /// read: start at offset 0 of whatever file is at `path`, unless
    /// [`start_at`](Self::start_at) says otherwise). Nothing is opened until the first
    /// [`poll`](Self::poll). A symbolic link at the path is refused (see
    /// [`follow_symlinks`](Self::follow_symlinks)), and so is anything but a regular file.
    pub fn new(path: PathBuf, saved: Option<Checkpoint>, opts: TailOptions) -> Self {
        FileTailer {
            path,
            opts,
            saved,
            current: None,
            pending: Vec::new(),
            buf: Vec::new(),
            follow_symlink: false,
            start_at: StartAt::Beginning,
            first_look: true,
            queue: VecDeque::new(),
            known: Known::default(),
            pending_snapshot: Some(None),
            leave_after: LEAVE_AFTER,
        }
    }

    /// How long a file that was rotated away (or deleted) must have been left unchanged, once
    /// read to its end, before reading moves on to the next file; default [`LEAVE_AFTER`].
    /// cdr_csv opens the file, writes a row and closes it: a writer that opened the file just
    /// before the rename and was held up before its write still lands its row in the old
    /// file, and is read.
    pub fn leave_after(mut self, quiet: Duration) -> Self {
        self.leave_after = quiet;
        self
    }

    /// Follows a symbolic link at the path (the file it points to must still be a regular
    /// file) instead of refusing it.
    pub fn follow_symlinks(mut self, follow: bool) -> Self {
        self.follow_symlink = follow;
        self
    }

    /// With no saved checkpoint, where to start in a file that is at the path on the first
    /// poll: [`StartAt::End`] passes over what it holds (reported with
    /// [`TailEvent::SkippedExisting`]). A file that appears later, or after a rotation, is
    /// always read from its first byte.
    pub fn start_at(mut self, start_at: StartAt) -> Self {
        self.start_at = start_at;
        self
    }

    /// The path being followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where reading stands now in the file being read, or None if no file has been opened.
    /// This is ahead of what the caller committed if batches are still uncommitted.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.current.as_ref().map(Current::checkpoint)
    }

    /// Size of the read buffer, to check that memory stays bounded.
    #[cfg(test)]
    pub(super) fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// Reads what is available now, without waiting for data. Returns `Ok(None)` when there
    /// is nothing new and no event to report (including while the path does not exist), and
    /// otherwise one [`Batch`] of at most about `max_batch_bytes`: call again until it returns
    /// `Ok(None)` to drain a backlog.
    ///
    /// After the path was seen to name a new file, the old file is read to its end on at least
    /// one more call before reading moves to the new file, so a writer that opened the old file
    /// just before the rename is not cut off.
    ///
    /// # Errors
    ///
    /// I/O errors from opening, `stat`ing or reading the file or listing its directory, with
    /// the path in the message. Nothing is lost or skipped: the next call retries from the same
    /// place, and events already produced are delivered then.
    pub fn poll(&mut self) -> io::Result<Option<Batch>> {
        let mut events = std::mem::take(&mut self.pending);
        let res = self.poll_inner(&mut events);
        if res.is_err() {
            self.pending = events;
        }
        res
    }

    fn poll_inner(&mut self, events: &mut Vec<TailEvent>) -> io::Result<Option<Batch>> {
        let mut lost = None;
        if self.current.is_none() {
            lost = self.open_first(events)?;
        }
        if let Some(until) = self.pending_snapshot {
            self.known.add_directory(&self.path, until)?;
            self.pending_snapshot = None;
        }
        let Some(cur) = self.current.as_mut() else {
            // Nothing to read. A startup event is reported against the saved checkpoint, which
            // is harmless to commit again.
            return Ok(match lost {
                Some(checkpoint) if !events.is_empty() => Some(Batch {
                    lines: Vec::new(),
                    offsets: Vec::new(),
                    checkpoint,
                    events: std::mem::take(events),
                }),
                _ => None,
            });
        };

        // Look at the path BEFORE reading, so that once a new file is seen there, everything
        // written to the old one up to that moment is read before moving on.
        let at_path = identity_at(&self.path, self.follow_symlink)?;
        let (lines, offsets, at_eof) =
            cur.read_batch(&self.path, &mut self.buf, &self.opts, events);
        let at_eof = at_eof?;
        note_head(cur, &mut self.known);
        if !lines.is_empty() || !at_eof {
            return Ok(Some(Batch {
                lines,
                offsets,
                checkpoint: cur.checkpoint(),
                events: std::mem::take(events),
            }));
        }
        match at_path {
            Some(id) if id == cur.id => {
                cur.rotation_seen = false;
                cur.deleted_reported = false;
            }
            Some(_) if cur.rotation_seen => {
                if cur
                    .quiet_for(self.leave_after)
                    .map_err(|e| ctx(&self.path, "stat of", e))?
                {
                    return self.switch(events);
                }
            }
            Some(_) => cur.rotation_seen = true,
            None if !cur.deleted_reported => {
                cur.deleted_reported = true;
                events.push(TailEvent::Deleted { file: cur.id });
            }
            // The path is missing and this file is finished: generations rotated away before
            // the path went missing are read meanwhile.
            None => {
                let quiet = cur
                    .quiet_for(self.leave_after)
                    .map_err(|e| ctx(&self.path, "stat of", e))?;
                if quiet {
                    if let Some(batch) = self.switch(events)? {
                        return Ok(Some(batch));
                    }
                }
            }
        }
        let Some(cur) = self.current.as_ref() else {
            return Ok(None);
        };
        Ok((!events.is_empty()).then(|| Batch {
            lines: Vec::new(),
            offsets: Vec::new(),
            checkpoint: cur.checkpoint(),
            events: std::mem::take(events),
        }))
    }

    /// Moves from the current (finished) file to the next one at offset 0, and reads from it:
    /// the oldest generation rotated away before it was seen at the path, if any (see
    /// `generations`), else the file at the path.
    fn switch(&mut self, events: &mut Vec<TailEvent>) -> io::Result<Option<Batch>> {
        let Some(old) = self.current.as_ref() else {
            return Ok(None);
        };
        if self.queue.is_empty() {
            // The file being left is known from now on (a later scan must not take it for a
            // generation), and so is everything already queued or read.
            if let Head::Line(head) =
                head_of(&old.file).map_err(|e| ctx(&self.path, "reading", e))?
            {
                self.known.add_file(old.id, head);
                self.known.add_read_head(head);
            }
            let since = mtime_of(&old.file).map_err(|e| ctx(&self.path, "stat of", e))?;
            // The file at the path is opened BEFORE the directory is listed: a generation
            // that was at the path until just now is then in the listing under its new name.
            let at_path = open_existing(&self.path, self.follow_symlink)?;
            let mut skip = vec![old.id];
            skip.extend(at_path.as_ref().map(|(_, id)| *id));
            self.queue = self.known.generations(&self.path, &skip, since)?;
            if self.queue.is_empty() {
                return match at_path {
                    Some((file, id)) => self.switch_to(file, id, false, events),
                    None => Ok(None), // Gone again; look next time.
                };
            }
        }
        match self.queue.pop_front() {
            Some(g) => self.switch_to(g.file, g.id, true, events),
            None => Ok(None),
        }
    }

    /// Leaves the current file for `file` (a generation caught up on, or the file at the
    /// path), at offset 0, and reads from it.
    fn switch_to(
        &mut self,
        file: File,
        id: FileId,
        caught_up: bool,
        events: &mut Vec<TailEvent>,
    ) -> io::Result<Option<Batch>> {
        let Some(old) = self.current.take() else {
            return Ok(None);
        };
        if old.seen_end > old.offset {
            events.push(TailEvent::UnterminatedTail {
                file: old.id,
                offset: old.offset,
                len: old.seen_end - old.offset,
            });
        }
        events.push(TailEvent::Rotated {
            from: old.id,
            to: id,
        });
        let mut cur = Current::new(file, id, 0, Vec::new());
        if caught_up {
            // Not at the path: leave it for the next file as soon as it is read to its end.
            cur.rotation_seen = true;
            cur.deleted_reported = true;
        }
        let (lines, offsets, read) = cur.read_batch(&self.path, &mut self.buf, &self.opts, events);
        let checkpoint = cur.checkpoint();
        note_head(&mut cur, &mut self.known);
        self.current = Some(cur);
        read?;
        Ok(Some(Batch {
            lines,
            offsets,
            checkpoint,
            events: std::mem::take(events),
        }))
    }

    /// Opens the first file: where the saved checkpoint points if it can be found, else the
    /// file at the path at offset 0. Leaves `current` empty if there is nothing to open yet,
    /// and then returns the saved checkpoint if it was just found to be lost.
    fn open_first(&mut self, events: &mut Vec<TailEvent>) -> io::Result<Option<Checkpoint>> {
        let at_path = open_existing(&self.path, self.follow_symlink)?;
        let first_look = std::mem::replace(&mut self.first_look, false);
        let Some(saved) = self.saved else {
            if first_look {
                if let Some((file, id)) = at_path {
                    self.current = Some(if self.start_at == StartAt::End {
                        self.skip_existing(file, id, events)?
                    } else {
                        Current::new(file, id, 0, Vec::new())
                    });
                }
                return Ok(None);
            }
            // Nothing was at the path at the last look: files that were created and rotated
            // away since then come first (also while the path is missing).
            let skip: Vec<FileId> = at_path.iter().map(|(_, id)| *id).collect();
            self.queue = self.known.generations(&self.path, &skip, i128::MIN)?;
            self.current = match (self.queue.pop_front(), at_path) {
                (Some(g), _) => {
                    let mut cur = Current::new(g.file, g.id, 0, Vec::new());
                    cur.rotation_seen = true;
                    cur.deleted_reported = true;
                    Some(cur)
                }
                (None, Some((file, id))) => Some(Current::new(file, id, 0, Vec::new())),
                (None, None) => None,
            };
            return Ok(None);
        };

        if let Some((file, id)) = at_path {
            if id == saved.file_id() {
                let cur = match verify(&file, &self.path, &saved)? {
                    Ok(window) => Current::new(file, id, saved.offset, window),
                    Err(Mismatch::Short(size)) => {
                        events.push(TailEvent::Truncated {
                            file: id,
                            offset: saved.offset,
                            size,
                        });
                        Current::new(file, id, 0, Vec::new())
                    }
                    Err(Mismatch::Checksum) => {
                        events.push(TailEvent::ChecksumMismatch {
                            file: id,
                            offset: saved.offset,
                        });
                        Current::new(file, id, 0, Vec::new())
                    }
                };
                self.current = Some(cur);
                self.saved = None;
                return Ok(None);
            }
            // Rotated while stopped: finish the saved file first if it is still around.
            if self.resume_rotated(&saved, events)? {
                return Ok(None);
            }
            events.push(TailEvent::RotatedFileNotFound { saved });
            self.current = Some(Current::new(file, id, 0, Vec::new()));
            self.saved = None;
            return Ok(None);
        }

        // Nothing at the path: the saved file may have been renamed without a new one yet.
        if self.resume_rotated(&saved, events)? {
            return Ok(None);
        }
        // Lost. Reading will start at 0 of whatever file appears at the path.
        events.push(TailEvent::RotatedFileNotFound { saved });
        self.saved = None;
        Ok(Some(saved))
    }

    /// Starts `file`, which was at the path before anything was read, after its last
    /// complete line.
    fn skip_existing(
        &self,
        file: File,
        id: FileId,
        events: &mut Vec<TailEvent>,
    ) -> io::Result<Current> {
        let rd = |e| ctx(&self.path, "reading", e);
        let size = file
            .metadata()
            .map_err(|e| ctx(&self.path, "stat of", e))?
            .len();
        let (offset, lines) =
            end_of_last_line(&file, size, self.opts.max_line_bytes).map_err(rd)?;
        if offset == 0 {
            return Ok(Current::new(file, id, 0, Vec::new()));
        }
        let len = offset.min(WINDOW_MAX as u64) as usize;
        let window = read_window(&file, offset, len)
            .map_err(rd)?
            .ok_or_else(|| ctx(&self.path, "reading", io::ErrorKind::UnexpectedEof.into()))?;
        events.push(TailEvent::SkippedExisting {
            file: id,
            bytes: offset,
            lines,
        });
        Ok(Current::new(file, id, offset, window))
    }

    /// Looks for the saved file under another name and, if it still matches the checkpoint,
    /// makes it the current file, to be left for the path once finished.
    fn resume_rotated(
        &mut self,
        saved: &Checkpoint,
        events: &mut Vec<TailEvent>,
    ) -> io::Result<bool> {
        let Some((found, file)) = find_by_id(&self.path, saved.file_id())? else {
            return Ok(false);
        };
        let (offset, window) = match verify(&file, &found, saved)? {
            Ok(window) => (saved.offset, window),
            // Truncated (copytruncate) and then renamed while stopped: it is still the saved
            // file, read again from its start; unless the inode now belongs to a file not
            // named like a generation.
            Err(mismatch) => {
                let base = self.path.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
                let named_like = found
                    .file_name()
                    .is_some_and(|n| n.as_bytes().starts_with(base));
                if !named_like {
                    return Ok(false);
                }
                events.push(match mismatch {
                    Mismatch::Short(size) => TailEvent::Truncated {
                        file: saved.file_id(),
                        offset: saved.offset,
                        size,
                    },
                    Mismatch::Checksum => TailEvent::ChecksumMismatch {
                        file: saved.file_id(),
                        offset: saved.offset,
                    },
                });
                (0, Vec::new())
            }
        };
        // Files modified after the saved one are generations rotated while stopped.
        self.pending_snapshot = Some(Some(
            mtime_of(&file).map_err(|e| ctx(&found, "stat of", e))?,
        ));
        events.push(TailEvent::ResumedRotated {
            path: found,
            file: saved.file_id(),
            offset,
        });
        let mut cur = Current::new(file, saved.file_id(), offset, window);
        // Its path already names another file (or none): no need to report that again.
        cur.rotation_seen = true;
        cur.deleted_reported = true;
        self.current = Some(cur);
        self.saved = None;
        Ok(true)
    }
}

/// Remembers the first line of `cur` once it has been read, so that a copy of the file is
/// not taken for a generation to catch up on. Called after lines were read (and the offset
/// moved): a read error here must not fail the poll, or those lines would be lost; the first
/// line is then looked at again by the next poll.
fn note_head(cur: &mut Current, known: &mut Known) {
    if cur.head.is_some() || cur.offset == 0 {
        return;
    }
    if let Ok(Head::Line(head)) = head_of(&cur.file) {
        cur.head = Some(head);
        known.add_read_head(head);
        known.add_file(cur.id, head);
    }
}

//! [`ChangeWaiter`]: wake the poll loop when the tailed file's directory changes.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// How long to wait before trying again to set up a watch that failed.
const RETRY_WATCH: Duration = Duration::from_secs(30);

/// What the notify callback tells the waiter (through a channel of one: a wake-up pending
/// is as good as a thousand, so a burst of file events costs no memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Something happened to the file (or its rotated siblings), or notify lost track.
    Changed,
    /// The watched directory itself went away: the watch must be set up again.
    WatchLost,
}

/// Wakes the reader when the watched file's directory changes; the caller's poll loop (<= 1 s)
/// stays the source of truth, so missed or overflowed notify events cost latency, never data.
///
/// The watch is on the PARENT DIRECTORY (a watch on the file itself stops seeing anything once
/// the file is rotated away) and only wakes for entries whose name starts with the file's name
/// (`Master.csv`, `Master.csv.1`, ...). If the watch cannot be set up (inotify limits, directory
/// missing), a warning is logged, [`wait`](Self::wait) degrades to sleeping for its timeout, and
/// the watch is tried again every 30 s.
pub struct ChangeWaiter {
    dir: PathBuf,
    name: OsString,
    tx: SyncSender<()>,
    rx: Receiver<()>,
    /// Set by the callback when the watched directory went away.
    lost: Arc<AtomicBool>,
    /// Times the kernel dropped events (inotify queue overflow), counted by the callback.
    overflows: Arc<AtomicU64>,
    /// `overflows` when it was last logged.
    overflows_logged: u64,
    watcher: Option<RecommendedWatcher>,
    /// When to try again to set up the watch, if it is missing.
    retry_at: Instant,
    retry_every: Duration,
}

impl ChangeWaiter {
    /// Starts watching the directory of `path`. Never fails: without a watch, waiting is plain
    /// sleeping until the watch can be set up.
    pub fn new(path: &Path) -> Self {
        Self::with_retry(path, RETRY_WATCH)
    }

    /// Like [`new`](Self::new) with another interval between attempts to set up the watch.
    pub(crate) fn with_retry(path: &Path, retry_every: Duration) -> Self {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let (tx, rx) = mpsc::sync_channel(1);
        let mut waiter = ChangeWaiter {
            dir,
            name,
            tx,
            rx,
            lost: Arc::new(AtomicBool::new(false)),
            overflows: Arc::new(AtomicU64::new(0)),
            overflows_logged: 0,
            watcher: None,
            retry_at: Instant::now(),
            retry_every,
        };
        waiter.try_watch();
        waiter
    }

    /// True if the directory is being watched (false = pure polling for now).
    pub fn is_watching(&self) -> bool {
        self.watcher.is_some()
    }

    fn try_watch(&mut self) {
        let tx = self.tx.clone();
        let dir = self.dir.clone();
        let name = self.name.clone();
        let lost = Arc::clone(&self.lost);
        let overflows = Arc::clone(&self.overflows);
        let handler = move |res: notify::Result<Event>| {
            let wake = match res {
                Ok(ev) => {
                    if ev.need_rescan() {
                        overflows.fetch_add(1, Ordering::Relaxed);
                    }
                    classify(&ev, &dir, &name)
                }
                // Errors (e.g. a lost queue) mean events may have been missed: poll now.
                Err(_) => {
                    overflows.fetch_add(1, Ordering::Relaxed);
                    Some(Wake::Changed)
                }
            };
            if wake == Some(Wake::WatchLost) {
                lost.store(true, Ordering::Relaxed);
            }
            if wake.is_some() {
                // Full: a wake-up is already pending. Disconnected: the waiter is gone.
                let _ = tx.try_send(());
            }
        };
        let result = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(&self.dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match result {
            Ok(w) => {
                tracing::debug!(dir = %self.dir.display(), "watching for changes");
                self.watcher = Some(w);
            }
            Err(e) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    "cannot watch directory, polling only; will retry in {:?}",
                    self.retry_every
                );
                self.watcher = None;
                self.retry_at = Instant::now() + self.retry_every;
            }
        }
    }

    /// Waits up to `timeout` for a change; returns true if woken by an event. A burst of events
    /// wakes it once: everything queued at wake-up is drained.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        if self.watcher.is_none() && Instant::now() >= self.retry_at {
            self.try_watch();
        }
        match self.rx.recv_timeout(timeout) {
            Ok(()) => {}
            // The sender half lives in `self`, so the channel never disconnects.
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
        }
        let overflows = self.overflows.load(Ordering::Relaxed);
        if overflows != self.overflows_logged {
            tracing::warn!(
                dir = %self.dir.display(),
                times = overflows - self.overflows_logged,
                "file change notifications were lost (inotify queue overflow); the poll loop \
                 reads the file regardless"
            );
            self.overflows_logged = overflows;
        }
        if self.lost.swap(false, Ordering::Relaxed) {
            tracing::warn!(dir = %self.dir.display(), "watched directory went away, polling only");
            self.watcher = None;
            self.retry_at = Instant::now();
        }
        true
    }
}

/// Whether an event in `dir` is worth waking for.
fn classify(ev: &Event, dir: &Path, name: &OsString) -> Option<Wake> {
    if ev.need_rescan() || ev.paths.is_empty() {
        return Some(Wake::Changed);
    }
    let mut wake = None;
    for p in &ev.paths {
        if p == dir {
            if matches!(ev.kind, EventKind::Remove(_)) {
                return Some(Wake::WatchLost);
            }
            wake = Some(Wake::Changed);
        } else if p
            .file_name()
            .is_some_and(|f| f.as_bytes().starts_with(name.as_bytes()))
        {
            wake = Some(Wake::Changed);
        }
    }
    wake
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind};

    fn ev(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_the_file_and_its_rotations_wake() {
        let dir = Path::new("/cdr");
        let name = OsString::from("Master.csv");
        let modify = EventKind::Modify(ModifyKind::Any);
        let c = |e: &Event| classify(e, dir, &name);
        assert_eq!(c(&ev(modify, "/cdr/Master.csv")), Some(Wake::Changed));
        assert_eq!(
            c(&ev(
                EventKind::Create(CreateKind::File),
                "/cdr/Master.csv.1"
            )),
            Some(Wake::Changed)
        );
        assert_eq!(c(&ev(modify, "/cdr/acct42.csv")), None);
        assert_eq!(c(&Event::new(modify)), Some(Wake::Changed));
        assert_eq!(
            c(&ev(EventKind::Remove(RemoveKind::Folder), "/cdr")),
            Some(Wake::WatchLost)
        );
    }
}

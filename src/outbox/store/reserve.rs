//! Space kept in reserve for the outbox's own writes, so that delivery of what is stored goes
//! on while the store's file system is full.
//!
//! The daemon keeps a file beside the store (`<store>.reserve`) with real blocks allocated
//! (`fallocate`, not a sparse file). Its size is derived from the store: one WAL's worth of
//! pages up to the auto-checkpoint (`page_size × wal_autocheckpoint`, where the WAL resets)
//! plus [`super::LOW_SPACE_BYTES`] for new pages of the database file.
//!
//! - **Release:** the first write SQLite refuses with `SQLITE_FULL` truncates the file to
//!   zero length, which gives its blocks back to the file system. From then on ingestion
//!   (staging CDR rows, offsets, enqueueing calls) is refused by the store itself, without
//!   asking SQLite, so it cannot eat the freed space; the outbox's own small writes (in-flight
//!   marks, delivered marks, retries, dead letters, pruning) go on in it.
//! - **Re-make:** while released, at most once a second (when ingestion retries, or a status
//!   line or `/readyz` asks), the store looks at the free space; once the reserve and
//!   [`super::LOW_SPACE_BYTES`] more fit, the file is allocated again, and only then is
//!   ingestion let through.
//! - **Crash while full:** the zero-length file stays, so a start finds the reserve released
//!   and keeps ingestion paused until it can be re-made; a missing file means no reserve
//!   was ever kept there (`pbxlink status` then judges the free space as before).
//!
//! What a reserve cannot do: another process filling the file system again after the
//! release takes the freed space; then delivery waits for space too (and loses nothing).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use super::{LOW_SPACE_BYTES, now_ms};

/// The reserve's file beside the store: `<store file name>.reserve`.
pub fn reserve_path(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".reserve");
    store.with_file_name(name)
}

/// The reserve's size for a store: the WAL's pages up to the auto-checkpoint plus
/// [`LOW_SPACE_BYTES`] for new pages of the database file, within 2–64 MiB.
pub(super) fn derived_bytes(conn: &Connection) -> u64 {
    let page_size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap_or(4096);
    let checkpoint_pages: i64 = conn
        .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
        .unwrap_or(1000);
    let wal = u64::try_from(page_size.saturating_mul(checkpoint_pages)).unwrap_or(0);
    wal.saturating_add(LOW_SPACE_BYTES).clamp(2 << 20, 64 << 20)
}

/// Bytes really allocated to `path` (blocks, not length); `None` when it does not exist.
pub(super) fn allocated(path: &Path) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.blocks().saturating_mul(512).min(m.len()))
}

/// Free bytes (for unprivileged users) of the file system holding `path`.
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fs = rustix::fs::statvfs(dir).ok()?;
    Some(fs.f_bavail.saturating_mul(fs.f_frsize))
}

/// How often a released reserve is tried again at most.
const RETRY_EVERY_MS: i64 = 1_000;

/// The reserve kept by the daemon for one store.
#[derive(Debug)]
pub(super) struct Reserve {
    path: PathBuf,
    bytes: u64,
    state: Mutex<ReserveState>,
}

#[derive(Debug)]
struct ReserveState {
    /// Whether the file holds its blocks (ingestion may write).
    armed: bool,
    /// When a released reserve was last tried again (unix ms).
    tried_at_ms: i64,
    /// When it was released (unix ms; 0 while armed).
    released_at_ms: i64,
}

impl Reserve {
    /// Keeps a reserve of `bytes` for the store at `store`: makes the file when it is
    /// missing or short and the space is there; otherwise it starts released (a crash while
    /// the disk was full, or a store started on a full disk).
    pub(super) fn keep(store: &Path, bytes: u64) -> Reserve {
        let reserve = Reserve {
            path: reserve_path(store),
            bytes,
            state: Mutex::new(ReserveState {
                armed: false,
                tried_at_ms: 0,
                released_at_ms: now_ms(),
            }),
        };
        let held = allocated(&reserve.path).unwrap_or(0);
        if held >= bytes {
            reserve.lock().armed = true;
            reserve.lock().released_at_ms = 0;
        } else if reserve.try_remake(true) {
            tracing::info!(
                reserve = %reserve.path.display(),
                mib = reserve.mib(),
                "store reserve kept: space for delivery's own writes if the disk fills up"
            );
        } else {
            tracing::error!(
                reserve = %reserve.path.display(),
                mib = reserve.mib(),
                "DISK FULL at start: no room for the store's reserve; ingestion waits until \
                 there is, delivery of what is stored goes on while space lasts"
            );
        }
        reserve
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReserveState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn mib(&self) -> f64 {
        self.bytes as f64 / f64::from(1u32 << 20)
    }

    /// Whether the reserve holds its blocks.
    pub(super) fn armed(&self) -> bool {
        self.lock().armed
    }

    /// Gives the reserve's blocks back to the file system (SQLite refused a write for lack
    /// of space). Returns whether this call released it.
    pub(super) fn release(&self, action: &str) -> bool {
        let mut s = self.lock();
        if !s.armed {
            return false;
        }
        s.armed = false;
        s.released_at_ms = now_ms();
        s.tried_at_ms = s.released_at_ms;
        let result = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path);
        match result {
            Ok(_) => tracing::error!(
                reserve = %self.path.display(),
                mib = self.mib(),
                "DISK FULL: the store refused a write ({action}); its reserve is released for \
                 delivery's own writes; ingestion pauses until space returns (nothing is lost, \
                 the CDR file is read again from the last stored offset)"
            ),
            Err(e) => tracing::error!(
                reserve = %self.path.display(),
                "DISK FULL: the store refused a write ({action}) and its reserve could not be \
                 released: {e}"
            ),
        }
        true
    }

    /// While released: makes the reserve again when it and [`LOW_SPACE_BYTES`] more fit
    /// (tried at most once a second unless `now`). Returns whether it is armed.
    pub(super) fn try_remake(&self, now: bool) -> bool {
        let mut s = self.lock();
        if s.armed {
            return true;
        }
        let at = now_ms();
        if !now && at.saturating_sub(s.tried_at_ms) < RETRY_EVERY_MS {
            return false;
        }
        s.tried_at_ms = at;
        let held = allocated(&self.path).unwrap_or(0);
        let missing = self.bytes.saturating_sub(held);
        let free = free_bytes(&self.path).unwrap_or(0);
        if free < missing.saturating_add(LOW_SPACE_BYTES) {
            return false;
        }
        match self.allocate() {
            Ok(()) => {
                if s.released_at_ms != 0 && !now {
                    tracing::info!(
                        reserve = %self.path.display(),
                        mib = self.mib(),
                        released_for_s = at.saturating_sub(s.released_at_ms) / 1000,
                        "space returned: the store's reserve is made again; ingestion resumes"
                    );
                }
                s.armed = true;
                s.released_at_ms = 0;
                true
            }
            Err(e) => {
                tracing::debug!(reserve = %self.path.display(), "reserve not made yet: {e}");
                // Whatever was allocated goes back: a half reserve helps nobody.
                let _ = OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&self.path);
                false
            }
        }
    }

    /// Allocates the file's blocks (`fallocate`; zeros written where it is not supported).
    fn allocate(&self) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
                file.set_len(0)?;
                let zeros = vec![0u8; 1 << 16];
                let mut left = self.bytes;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    file.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
        file.sync_all()
    }
}

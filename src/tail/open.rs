//! Opening the file to tail safely: it must be a regular file, opening never blocks, and a
//! symbolic link as the last component of the path is followed only when allowed.
//!
//! A CDR path that names a FIFO would block a plain `open(2)` until a writer appears (the
//! daemon's main loop and SIGTERM with it); one that is a symbolic link to `/etc/shadow` or
//! to pbxlink's own configuration would pour that file into the log as "corrupt lines". So
//! the file is opened with `O_NONBLOCK | O_NOFOLLOW` (no `O_NOFOLLOW` when following links is
//! allowed) and the opened descriptor is `fstat`ed: anything but a regular file is refused
//! before a byte of it is read.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::logtext::Escaped;

/// Why the file at a path is not read.
#[derive(Debug)]
pub enum OpenError {
    /// The path is a symbolic link and following links is off.
    Symlink {
        /// The path that was opened.
        path: PathBuf,
        /// Where the link points, when it could be read.
        target: Option<PathBuf>,
    },
    /// The path names something other than a regular file (a FIFO, a device, a directory).
    NotRegular {
        /// The path that was opened.
        path: PathBuf,
        /// What it is, e.g. `a FIFO (named pipe)`.
        kind: &'static str,
    },
    /// `open(2)` or `fstat(2)` failed.
    Io {
        /// The path that was opened.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl OpenError {
    /// Why, without the path: for a status line that names the path already.
    pub fn reason(&self) -> String {
        match self {
            OpenError::Symlink { target, .. } => format!(
                "is a symbolic link{}, refused: only a regular file is read there (point the path \
                 at the file itself, or set cdr_follow_symlink = true to follow links)",
                target
                    .as_ref()
                    .map(|t| format!(" to {}", Escaped(&t.to_string_lossy())))
                    .unwrap_or_default()
            ),
            OpenError::NotRegular { kind, .. } => {
                format!("is not a regular file ({kind}), refused")
            }
            OpenError::Io { action, source, .. } => format!("{action}: {source}"),
        }
    }
}

impl OpenError {
    /// The path that was opened.
    pub fn path(&self) -> &Path {
        match self {
            OpenError::Symlink { path, .. }
            | OpenError::NotRegular { path, .. }
            | OpenError::Io { path, .. } => path,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            Escaped(&self.path().to_string_lossy()),
            self.reason()
        )
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        let kind = match &e {
            OpenError::Io { source, .. } => source.kind(),
            OpenError::Symlink { .. } | OpenError::NotRegular { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Opens `path` for reading without blocking; `Ok(None)` if nothing is there. Refuses a
/// symbolic link as the last component unless `follow_symlink`, and anything that is not a
/// regular file once opened. Returns the file and its metadata (from `fstat`).
pub fn open_regular(
    path: &Path,
    follow_symlink: bool,
) -> Result<Option<(File, Metadata)>, OpenError> {
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlink {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if !follow_symlink && e.raw_os_error() == Some(libc::ELOOP) => {
            // ELOOP is also "too many levels of links" in the directories: tell them apart.
            return Err(match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => OpenError::Symlink {
                    path: path.to_owned(),
                    target: fs::read_link(path).ok(),
                },
                _ => OpenError::Io {
                    path: path.to_owned(),
                    action: "opening",
                    source: e,
                },
            });
        }
        Err(source) => {
            return Err(OpenError::Io {
                path: path.to_owned(),
                action: "opening",
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| OpenError::Io {
        path: path.to_owned(),
        action: "stat of",
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular {
            path: path.to_owned(),
            kind: kind_of(&meta),
        });
    }
    Ok(Some((file, meta)))
}

/// The metadata of what is at `path` now (the link itself unless `follow_symlink`);
/// `Ok(None)` if nothing is there.
pub fn metadata_at(path: &Path, follow_symlink: bool) -> io::Result<Option<Metadata>> {
    let meta = if follow_symlink {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    match meta {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

//! The site's link-signing key: read from `[recordings] key_file`, or created there (32
//! random bytes, hex, mode 0600) on first start. Creation writes a temporary file in the
//! same directory and links it into place without replacing anything, so two processes
//! starting at once (the daemon and an import) end up with the same key.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::sign::MIN_KEY_BYTES;

/// Why the key could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading the existing file failed.
    #[error("[recordings] key_file {path}: cannot read: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Creating the file failed.
    #[error("[recordings] key_file {path}: cannot create: {source}")]
    Create {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds too little key material.
    #[error(
        "[recordings] key_file {path}: holds {len} bytes, at least {MIN_KEY_BYTES} are needed (delete it to have a new one made)"
    )]
    Short {
        /// The key file.
        path: PathBuf,
        /// The bytes it holds (surrounding whitespace removed).
        len: usize,
    },
}

/// The key in `path`, created first when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Vec<u8>, KeyError> {
    match read(path) {
        Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create(path)?;
            read(path)
        }
        other => other,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let key = bytes.trim_ascii().to_vec();
    if key.len() < MIN_KEY_BYTES {
        return Err(KeyError::Short {
            path: path.to_owned(),
            len: key.len(),
        });
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "[recordings] key_file {} is readable by others (mode {:o}): anyone who reads it can sign recording links; chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(key)
}

fn create(path: &Path) -> Result<(), KeyError> {
    let err = |source| KeyError::Create {
        path: path.to_owned(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(err)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // NamedTempFile is created with mode 0600.
    let mut temp = tempfile::NamedTempFile::new_in(parent).map_err(err)?;
    temp.write_all(format!("{hex}\n").as_bytes()).map_err(err)?;
    temp.as_file().sync_all().map_err(err)?;
    match temp.persist_noclobber(path) {
        Ok(_) => {
            tracing::info!(
                "[recordings] created the link-signing key {}",
                path.display()
            );
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_created_0600_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/recordings.key");
        let first = load_or_create(&path).expect("created");
        assert_eq!(first.len(), 64, "32 bytes as hex");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).expect("read back"), first);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(
            load_or_create(&other.path().join("k")).expect("created"),
            first,
            "each site gets its own key"
        );
    }

    #[test]
    fn a_given_key_is_used_and_a_short_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        std::fs::write(&path, "  a-site-chosen-secret-of-at-least-32-bytes\n").expect("write");
        assert_eq!(
            load_or_create(&path).expect("read"),
            b"a-site-chosen-secret-of-at-least-32-bytes"
        );
        std::fs::write(&path, "short\n").expect("write");
        let err = load_or_create(&path).expect_err("short");
        assert!(err.to_string().contains("5 bytes"), "{err}");
    }
}

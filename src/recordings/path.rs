//! Which files a link may name, and opening one without leaving `[recordings] dir`.
//!
//! A link names a plain relative path: only normal components, no `..`, no root, no control
//! characters. It is opened one component at a time from the directory with `openat` and
//! `O_NOFOLLOW`, so a symbolic link anywhere below the directory (or one swapped in while the
//! file is opened) is refused by the kernel rather than followed; the last component is
//! opened non-blocking (a FIFO does not hang the request) and must `fstat` as a regular
//! file. The configured directory itself may be a symbolic link: the administrator chose it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::sign::Refusal;

/// Components of a path at most (a recording sits a few directories deep).
pub const MAX_DEPTH: usize = 16;

/// The name a link carries for `file` as the PBX wrote it: relative to `dir`, or an
/// absolute path under `dir`. None when the file is outside `dir` or not a plain path.
pub fn relative_name(dir: &Path, file: &str) -> Option<String> {
    let path = Path::new(file);
    let relative = if path.is_absolute() {
        path.strip_prefix(dir).ok()?
    } else {
        path
    };
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let name = parts.join("/");
    check_relative(&name).ok()?;
    Some(name)
}

/// Checks a relative name as a link carries it: `/`-separated normal components.
fn check_relative(name: &str) -> Result<Vec<&str>, Refusal> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(Refusal::OutsideDir);
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_DEPTH
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(Refusal::OutsideDir);
    }
    Ok(parts)
}

fn refusal(errno: Errno) -> Refusal {
    match errno {
        Errno::LOOP => Refusal::Symlink,
        // O_DIRECTORY on a symlink to a directory, or on a file, gives ENOTDIR.
        Errno::NOTDIR => Refusal::Symlink,
        Errno::NOENT => Refusal::NotFound,
        _ => Refusal::Unreadable,
    }
}

/// Opens the regular file `name` (relative, as [`relative_name`] gives it) under `dir`.
/// Blocking: call it from a blocking task.
pub fn open_under(dir: &Path, name: &str) -> Result<File, Refusal> {
    let parts = check_relative(name)?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(Refusal::OutsideDir);
    };
    let mut current: OwnedFd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT => Refusal::NotFound,
        _ => Refusal::Unreadable,
    })?;
    for part in dirs {
        current = rustix::fs::openat(
            &current,
            *part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(refusal)?;
    }
    let fd = rustix::fs::openat(
        &current,
        *last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(refusal)?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|_| Refusal::Unreadable)?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_are_relative_to_the_directory() {
        let dir = Path::new("/var/spool/asterisk/monitor");
        assert_eq!(
            relative_name(dir, "/var/spool/asterisk/monitor/2026/12/02/a.wav").as_deref(),
            Some("2026/12/02/a.wav")
        );
        assert_eq!(relative_name(dir, "a.wav").as_deref(), Some("a.wav"));
        assert_eq!(
            relative_name(dir, "./x/./a.wav").as_deref(),
            Some("x/a.wav")
        );
        for outside in [
            "/var/spool/asterisk/monitorx/a.wav",
            "/etc/shadow",
            "../a.wav",
            "x/../../a.wav",
            "x/../a.wav",
            "/var/spool/asterisk/monitor/../a.wav",
            "/var/spool/asterisk/monitor",
            "",
            "a\nb.wav",
        ] {
            assert_eq!(relative_name(dir, outside), None, "{outside:?}");
        }
    }

    #[test]
    fn a_regular_file_under_the_directory_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("2026/12")).expect("mkdir");
        std::fs::write(dir.path().join("2026/12/a.wav"), b"RIFF").expect("write");
        let file = open_under(dir.path(), "2026/12/a.wav").expect("opens");
        assert_eq!(file.metadata().expect("fstat").len(), 4);
    }

    #[test]
    fn traversal_and_absolute_names_are_refused_before_any_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "", "./a", "a/."] {
            assert_eq!(
                open_under(dir.path(), bad).err(),
                Some(Refusal::OutsideDir),
                "{bad:?}"
            );
        }
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(
            open_under(dir.path(), &deep).err(),
            Some(Refusal::OutsideDir)
        );
    }

    #[test]
    fn symlinks_anywhere_in_the_path_are_refused() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret.wav"), b"secret").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        symlink(
            outside.path().join("secret.wav"),
            dir.path().join("link.wav"),
        )
        .expect("ln");
        symlink(outside.path(), dir.path().join("sub")).expect("ln");
        std::fs::write(dir.path().join("real.wav"), b"x").expect("write");
        symlink("real.wav", dir.path().join("inner.wav")).expect("ln");
        assert_eq!(
            open_under(dir.path(), "link.wav").err(),
            Some(Refusal::Symlink)
        );
        assert_eq!(
            open_under(dir.path(), "sub/secret.wav").err(),
            Some(Refusal::Symlink)
        );
        // Even a link that stays inside the directory: the link names the real file.
        assert_eq!(
            open_under(dir.path(), "inner.wav").err(),
            Some(Refusal::Symlink)
        );
    }

    #[test]
    fn directories_fifos_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        assert_eq!(open_under(dir.path(), "d").err(), Some(Refusal::NotRegular));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo.wav"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        // Non-blocking open: refused at once instead of waiting for a writer.
        assert_eq!(
            open_under(dir.path(), "fifo.wav").err(),
            Some(Refusal::NotRegular)
        );
        assert_eq!(
            open_under(dir.path(), "late.wav").err(),
            Some(Refusal::NotFound)
        );
        assert_eq!(
            open_under(&dir.path().join("gone"), "a.wav").err(),
            Some(Refusal::NotFound)
        );
        // A file used as a directory.
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        assert!(open_under(dir.path(), "f/a.wav").is_err());
    }
}

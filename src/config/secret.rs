//! Secrets written inline or read from a `*_file` key (its first line), so the main file can
//! stay world-readable.

use std::path::{Path, PathBuf};

use super::ConfigProblem;

/// The first line of `path`, trimmed; an unreadable or empty file is an error saying which.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret)
}

/// A secret that may be written inline (`key`) or in a file (`key_file`), never both: the
/// inline value, else the file's first line, else None.
pub(crate) fn inline_or_file(
    key: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, ConfigProblem> {
    match (inline, file) {
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(file)) => read_secret_file(file)
            .map(Some)
            .map_err(|message| ConfigProblem::new(format!("{key}_file"), message)),
        (Some(_), Some(_)) => {
            let name = key.rsplit('.').next().unwrap_or(key);
            Err(ConfigProblem::new(
                key,
                format!("set either {name} or {name}_file, not both"),
            ))
        }
        (None, None) => Ok(None),
    }
}

/// Like [`inline_or_file`], but one of the two is required.
pub(crate) fn required_inline_or_file(
    key: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<String, ConfigProblem> {
    inline_or_file(key, inline, file)?.ok_or_else(|| {
        let name = key.rsplit('.').next().unwrap_or(key);
        ConfigProblem::new(key, format!("is required (or {name}_file)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_file_both_and_neither_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "  s3cret \nsecond line\n").expect("write");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let key = "asterisk.ami.secret";
        assert_eq!(
            inline_or_file(key, &Some("x".into()), &None),
            Ok(Some("x".into()))
        );
        assert_eq!(
            inline_or_file(key, &None, &Some(file.clone())),
            Ok(Some("s3cret".into()))
        );
        assert_eq!(inline_or_file(key, &None, &None), Ok(None));
        let both = inline_or_file(key, &Some("x".into()), &Some(file)).expect_err("both");
        assert_eq!(both.key, key);
        assert_eq!(both.message, "set either secret or secret_file, not both");
        let bad = inline_or_file(key, &None, &Some(empty)).expect_err("empty file");
        assert_eq!(bad.key, "asterisk.ami.secret_file");
        assert!(bad.message.ends_with("is empty"), "{bad}");
        let missing = required_inline_or_file(key, &None, &None).expect_err("required");
        assert_eq!(
            missing.to_string(),
            "asterisk.ami.secret: is required (or secret_file)"
        );
    }
}

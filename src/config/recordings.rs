//! `[recordings]`: signed, expiring links to the PBX's recordings, served by pbxlink's own
//! `[http]` listener so LeadSquared can play them; its checks and how a reload treats it
//! (every key needs a restart: the signing key and the served directory are read at start).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Problems;
use super::reload::{KeyChanges, ReloadKeys};
use super::store::StoreConfig;

/// The name of the signing key file in the state directory when `key_file` is not set.
pub const DEFAULT_KEY_FILE_NAME: &str = "recordings.key";

/// Longest link lifetime accepted, in days (ten years).
pub const MAX_LINK_TTL_DAYS: u32 = 3650;

/// `[recordings]`: where the PBX writes recordings and how LeadSquared reaches pbxlink.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingsConfig {
    /// The directory the PBX records into (Asterisk's `/var/spool/asterisk/monitor`,
    /// FreeSWITCH's record path). Only regular files under it are ever served.
    pub dir: PathBuf,
    /// How LeadSquared (and the agents' browsers) reach this pbxlink's `[http]` listener,
    /// e.g. `https://pbx.example.com:8478`; links are `{public_url}/recordings/{signed}`.
    pub public_url: String,
    /// A link is valid this many days after the call started.
    pub link_ttl_days: u32,
    /// The HMAC key links are signed with; created (mode 0600) on first start when missing.
    /// Default: `recordings.key` beside the store (`[store] path`).
    pub key_file: Option<PathBuf>,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            public_url: String::new(),
            link_ttl_days: 90,
            key_file: None,
        }
    }
}

impl RecordingsConfig {
    /// The key file: `key_file`, else `recordings.key` in the directory of the store.
    pub fn key_path(&self, store: &StoreConfig) -> PathBuf {
        match &self.key_file {
            Some(path) => path.clone(),
            None => store
                .path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(DEFAULT_KEY_FILE_NAME),
        }
    }

    /// `public_url` without a trailing slash, so `{base}/recordings/...` has one slash.
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// Every problem of `[recordings]`; `http_configured` says whether an `[http]` table
    /// exists to serve the links.
    pub(crate) fn check(&self, http_configured: bool, problems: &mut Problems) {
        if self.dir.as_os_str().is_empty() {
            problems.add(
                "recordings.dir",
                "must be set (the directory the PBX records into)",
            );
        } else if !self.dir.is_absolute() {
            problems.add("recordings.dir", "must be an absolute path");
        }
        match url::Url::parse(&self.public_url) {
            Err(e) => problems.add(
                "recordings.public_url",
                format!("must be an http(s) URL such as https://pbx.example.com:8478 ({e})"),
            ),
            Ok(url) => {
                if !matches!(url.scheme(), "http" | "https") {
                    problems.add(
                        "recordings.public_url",
                        "must start with http:// or https://",
                    );
                }
                if url.query().is_some() || url.fragment().is_some() {
                    problems.add(
                        "recordings.public_url",
                        "must not have a query or fragment (links are appended to it)",
                    );
                }
            }
        }
        if self.link_ttl_days == 0 || self.link_ttl_days > MAX_LINK_TTL_DAYS {
            problems.add(
                "recordings.link_ttl_days",
                format!("must be between 1 and {MAX_LINK_TTL_DAYS}"),
            );
        }
        if !http_configured {
            problems.add(
                "recordings",
                "needs an [http] table: the links are served by pbxlink's HTTP listener",
            );
        }
    }
}

/// The directory served and the key are read once at start: every key needs a restart.
impl ReloadKeys for RecordingsConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let RecordingsConfig {
            dir,
            public_url,
            link_ttl_days,
            key_file,
        } = self;
        changes.restart("recordings.dir", dir, &new.dir);
        changes.restart("recordings.public_url", public_url, &new.public_url);
        changes.restart(
            "recordings.link_ttl_days",
            link_ttl_days,
            &new.link_ttl_days,
        );
        changes.restart("recordings.key_file", key_file, &new.key_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::MINIMAL;

    fn with(table: &str) -> Config {
        Config::parse(&format!("{MINIMAL}[http]\n{table}")).expect("parses")
    }

    #[test]
    fn defaults_ttl_90_days_and_key_beside_the_store() {
        let c = with(
            "[recordings]\ndir = \"/var/spool/asterisk/monitor\"\npublic_url = \"https://pbx.example.com:8478/\"\n",
        );
        assert_eq!(c.problems(), vec![]);
        let r = c.recordings.expect("[recordings]");
        assert_eq!(r.link_ttl_days, 90);
        assert_eq!(r.key_path(&c.store), PathBuf::from("/tmp/recordings.key"));
        assert_eq!(r.base_url(), "https://pbx.example.com:8478");
    }

    #[test]
    fn every_bad_key_is_named() {
        let c = Config::parse(&format!(
            "{MINIMAL}[recordings]\ndir = \"monitor\"\npublic_url = \"ftp://x/?a=1\"\nlink_ttl_days = 0\n"
        ))
        .expect("parses");
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "recordings.dir",
                "recordings.public_url",
                "recordings.public_url",
                "recordings.link_ttl_days",
                "recordings",
            ]
        );
        let c = with("[recordings]\n");
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["recordings.dir", "recordings.public_url"]);
    }

    #[test]
    fn an_explicit_key_file_is_used() {
        let c = with(
            "[recordings]\ndir = \"/m\"\npublic_url = \"http://127.0.0.1:8478\"\nkey_file = \"/etc/pbxlink/rec.key\"\n",
        );
        let r = c.recordings.expect("[recordings]");
        assert_eq!(r.key_path(&c.store), PathBuf::from("/etc/pbxlink/rec.key"));
    }

    #[test]
    fn the_examples_commented_recordings_block_is_valid() {
        let example = include_str!("../../examples/pbxlink.toml");
        let start = example
            .find("# [recordings]\n")
            .expect("a [recordings] block");
        let block: String = example[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[')
                    || l.split_once(" = ")
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = with(&block);
        assert_eq!(c.problems(), vec![], "{block}");
        let r = c.recordings.expect("[recordings]");
        assert_eq!(r.dir, PathBuf::from("/var/spool/asterisk/monitor"));
        assert_eq!(
            r.key_file,
            Some(PathBuf::from("/var/lib/pbxlink/recordings.key"))
        );
    }
}

//! Recording links LeadSquared can play: `ResourceURL = {public_url}/recordings/{signed}`.
//!
//! Recordings sit on the PBX host, where LeadSquared cannot reach them. With
//! `[recordings]` set, a call whose CDR or events name a recording file gets an
//! HMAC-signed, expiring link naming that one file ([`sign`]); `GET /recordings/{signed}`
//! on pbxlink's `[http]` listener (`crate::http::recordings`) verifies it and serves the file
//! from `[recordings] dir` ([`path`]). The key is the site's own ([`key`]).
//!
//! - **Expiry** counts from the call's start: a link is valid `link_ttl_days` after the
//!   call, so the same call always gets the same link (a re-import, or the CDR and the live
//!   events describing one call, give identical call logs). A call older than that (an
//!   import of old history) gets no link: it would already be dead.
//! - **Late recordings**: the link names the file, not its contents; the file is opened when
//!   the link is fetched. A recording MixMonitor finishes after the call log was posted plays
//!   as soon as it is there; a file still missing at fetch time is a 404, and the same link
//!   works once it appears.
//! - **Precedence**: a recording named by URL (`http(s)://`) is used as is; else a site's own
//!   `recording_url_template` wins (it is the more specific, per-PBX setting, and keeps
//!   working for sites serving recordings from their own web server); else the signed link.
//!   [`resource_url`] is that rule, PBX-neutral.

pub mod key;
pub mod path;
pub mod sign;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
pub use sign::{Refusal, SignedFile, Signer};

/// Why `[recordings]` could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum RecordingsError {
    /// The key file could not be read or created.
    #[error(transparent)]
    Key(#[from] key::KeyError),
    /// The key is too short.
    #[error("[recordings] key_file {path}: {source}")]
    ShortKey {
        /// The key file.
        path: PathBuf,
        /// The length problem.
        source: sign::ShortKey,
    },
}

/// Makes and checks the signed links of one site. Cheap to clone (the key is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingLinks {
    signer: Arc<Signer>,
    dir: PathBuf,
    base_url: String,
    ttl_secs: i64,
}

impl RecordingLinks {
    /// Links for `[recordings]`, with its key read (or created) from the key file; None
    /// when the configuration has no `[recordings]` table.
    pub fn from_config(config: &Config) -> Result<Option<RecordingLinks>, RecordingsError> {
        let Some(rec) = &config.recordings else {
            return Ok(None);
        };
        let path = rec.key_path(&config.store);
        let key = key::load_or_create(&path)?;
        let signer = Signer::new(key).map_err(|source| RecordingsError::ShortKey {
            path: path.clone(),
            source,
        })?;
        if !rec.dir.is_dir() {
            tracing::warn!(
                "[recordings] dir {} is not a directory (yet): links are made, and are 404 until the files are there",
                rec.dir.display()
            );
        }
        Ok(Some(RecordingLinks::new(
            signer,
            rec.dir.clone(),
            rec.base_url().to_owned(),
            rec.link_ttl_days,
        )))
    }

    /// Links signed by `signer` for files under `dir`, reached at `base_url` (no trailing
    /// slash), valid `ttl_days` after the call.
    pub fn new(signer: Signer, dir: PathBuf, base_url: String, ttl_days: u32) -> RecordingLinks {
        RecordingLinks {
            signer: Arc::new(signer),
            dir,
            base_url,
            ttl_secs: i64::from(ttl_days) * 86_400,
        }
    }

    /// The directory recordings are served from.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The signed URL of `file` (as the PBX wrote it: relative to `dir`, or an absolute
    /// path under it) for a call that started at `call_time`. None when the file is outside
    /// `dir` or the link would already have expired.
    pub fn link(&self, file: &str, call_time: DateTime<Utc>) -> Option<String> {
        self.link_at(file, call_time, Utc::now())
    }

    /// [`RecordingLinks::link`] as of `now`.
    pub fn link_at(
        &self,
        file: &str,
        call_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let Some(name) = path::relative_name(&self.dir, file) else {
            tracing::warn!(
                file = %crate::logtext::Escaped(&crate::logtext::excerpt(file.as_bytes(), 200)),
                dir = %self.dir.display(),
                "the PBX names a recording outside [recordings] dir: no ResourceURL for it"
            );
            return None;
        };
        let expires = call_time.timestamp().saturating_add(self.ttl_secs);
        if expires <= now.timestamp() {
            tracing::debug!(%name, "the call is older than link_ttl_days: no recording link");
            return None;
        }
        let name = self.dated(name, call_time);
        Some(format!(
            "{}/recordings/{}",
            self.base_url,
            self.signer.sign(&name, expires)
        ))
    }

    /// FreePBX's layout: `recordingfile` holds only the file name, the file sits in
    /// `dir/YYYY/MM/DD/`. A bare name that is not in `dir` itself but is in the dated
    /// directory of the call's day (or the day before or after: the PBX writes its local
    /// date) names that file. Otherwise the name is kept: the file may appear later.
    fn dated(&self, name: String, call_time: DateTime<Utc>) -> String {
        if name.contains('/') || self.dir.join(&name).symlink_metadata().is_ok() {
            return name;
        }
        let day = call_time.date_naive();
        [Some(day), day.pred_opt(), day.succ_opt()]
            .into_iter()
            .flatten()
            .map(|d| format!("{}/{name}", d.format("%Y/%m/%d")))
            .find(|candidate| {
                self.dir
                    .join(candidate)
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_file())
            })
            .unwrap_or(name)
    }

    /// The file a signed link names, if it verifies at `now`.
    pub fn verify(&self, signed: &str, now: DateTime<Utc>) -> Result<SignedFile, Refusal> {
        self.signer.verify(signed, now.timestamp())
    }

    /// Opens the regular file a verified link names, without leaving `dir`. Blocking.
    pub fn open(&self, named: &SignedFile) -> Result<std::fs::File, Refusal> {
        path::open_under(&self.dir, &named.file)
    }
}

/// The ResourceURL of a recording: `file` itself when it is a URL; else the site's template
/// expanded by `expand_template` (the PBX's rules know its placeholders) when one is set;
/// else the signed link when `[recordings]` is set; else none.
pub fn resource_url(
    file: &str,
    call_time: DateTime<Utc>,
    template: Option<&str>,
    expand_template: impl FnOnce(&str) -> String,
    links: Option<&RecordingLinks>,
) -> Option<String> {
    if file.is_empty() {
        return None;
    }
    if file.starts_with("http://") || file.starts_with("https://") {
        return Some(file.to_owned());
    }
    if let Some(template) = template {
        return Some(expand_template(template));
    }
    links?.link(file, call_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn links() -> RecordingLinks {
        RecordingLinks::new(
            Signer::new(vec![3; 32]).expect("key"),
            PathBuf::from("/var/spool/asterisk/monitor"),
            "https://pbx.example.com:8478".into(),
            90,
        )
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().expect("time")
    }

    #[test]
    fn a_link_names_the_file_and_expires_ttl_after_the_call() {
        let l = links();
        let call = at(1_764_633_600);
        let url = l
            .link_at(
                "/var/spool/asterisk/monitor/2025/12/02/in-1.wav",
                call,
                call,
            )
            .expect("a link");
        let signed = url
            .strip_prefix("https://pbx.example.com:8478/recordings/")
            .expect("prefix");
        let named = l.verify(signed, call).expect("verifies");
        assert_eq!(named.file, "2025/12/02/in-1.wav");
        assert_eq!(named.expires, call.timestamp() + 90 * 86_400);
        let day_89 = at(call.timestamp() + 89 * 86_400);
        let day_90 = at(call.timestamp() + 90 * 86_400);
        assert!(l.verify(signed, day_89).is_ok());
        assert_eq!(l.verify(signed, day_90), Err(Refusal::Expired));
        // The same call gets the same link whenever it is assembled within its lifetime.
        assert_eq!(
            l.link_at("2025/12/02/in-1.wav", call, day_89).as_deref(),
            Some(url.as_str())
        );
        // Imported after its lifetime: no dead link.
        assert_eq!(l.link_at("2025/12/02/in-1.wav", call, day_90), None);
    }

    #[test]
    fn a_bare_file_name_is_found_in_freepbx_dated_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = RecordingLinks::new(
            Signer::new(vec![3; 32]).expect("key"),
            dir.path().to_owned(),
            "http://x".into(),
            90,
        );
        // 2025-12-01 23:30 UTC is already 2025-12-02 in Asia/Kolkata, where the PBX dated it.
        let call = Utc
            .with_ymd_and_hms(2025, 12, 1, 23, 30, 0)
            .single()
            .expect("time");
        std::fs::create_dir_all(dir.path().join("2025/12/02")).expect("mkdir");
        std::fs::write(dir.path().join("2025/12/02/in-1.wav"), b"x").expect("write");
        let named = |file: &str| {
            let url = l.link_at(file, call, call).expect("link");
            let signed = url.strip_prefix("http://x/recordings/").expect("prefix");
            l.verify(signed, call).expect("verifies").file
        };
        assert_eq!(named("in-1.wav"), "2025/12/02/in-1.wav");
        // In dir itself: kept; not there yet anywhere: kept (served once it appears).
        std::fs::write(dir.path().join("top.wav"), b"x").expect("write");
        assert_eq!(named("top.wav"), "top.wav");
        assert_eq!(named("late.wav"), "late.wav");
        // Not looked up beyond a day either side.
        std::fs::create_dir_all(dir.path().join("2025/11/28")).expect("mkdir");
        std::fs::write(dir.path().join("2025/11/28/old.wav"), b"x").expect("write");
        assert_eq!(named("old.wav"), "old.wav");
    }

    #[test]
    fn files_outside_the_directory_get_no_link() {
        let l = links();
        let now = at(1_764_633_600);
        assert_eq!(l.link_at("/etc/shadow", now, now), None);
        assert_eq!(l.link_at("../x.wav", now, now), None);
        assert_eq!(l.link_at("/var/spool/asterisk/monitor", now, now), None);
    }

    #[test]
    fn a_url_is_kept_the_template_wins_then_the_signed_link() {
        let l = links();
        let now = Utc::now();
        let expand = |t: &str| t.replace("{file}", "a.wav");
        assert_eq!(
            resource_url("https://x/a.wav", now, Some("t"), expand, Some(&l)).as_deref(),
            Some("https://x/a.wav")
        );
        assert_eq!(
            resource_url("a.wav", now, Some("https://web/{file}"), expand, Some(&l)).as_deref(),
            Some("https://web/a.wav")
        );
        let signed = resource_url("a.wav", now, None, expand, Some(&l)).expect("signed");
        assert!(signed.starts_with("https://pbx.example.com:8478/recordings/"));
        assert_eq!(resource_url("a.wav", now, None, expand, None), None);
        assert_eq!(resource_url("", now, None, expand, Some(&l)), None);
    }
}

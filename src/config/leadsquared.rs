//! `[leadsquared]` and `[leadsquared.status]`: the CRM endpoints, credentials and payload
//! formats, their checks and how a reload treats them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::reload::{KeyChanges, ReloadKeys};
use super::secret::read_secret_file;
use super::{ConfigProblem, Problems, TimeZone};
use crate::phone::{NumberFormat, PhoneNormalizer};

/// Environment variable that supplies `[leadsquared] access_key` when the file does not.
pub const ENV_ACCESS_KEY: &str = "PBXLINK_LEADSQUARED_ACCESS_KEY";
/// Environment variable that supplies `[leadsquared] secret_key` when the file does not.
pub const ENV_SECRET_KEY: &str = "PBXLINK_LEADSQUARED_SECRET_KEY";

/// `[leadsquared]`: the CRM endpoints, credentials and payload formats.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LeadSquaredConfig {
    /// The Call Log API URL copied from the connector's configure screen.
    pub call_log_url: String,
    /// The Agent Popup API URL.
    pub agent_popup_url: String,
    /// The Call Route API URL.
    pub call_route_url: String,
    /// Access key, sent as the `x-LSQ-AccessKey` header when set.
    pub access_key: Option<String>,
    /// File holding the access key (first line).
    pub access_key_file: Option<PathBuf>,
    /// Secret key, sent as the `x-LSQ-SecretKey` header when set.
    pub secret_key: Option<String>,
    /// File holding the secret key (first line).
    pub secret_key_file: Option<PathBuf>,
    /// IANA time zone the CRM expects StartTime/EndTime in (parsed at load: `zone()`).
    pub time_zone: TimeZone,
    /// How phone numbers are written in payloads.
    pub number_format: NumberFormat,
    /// Country calling code used for numbers written without one (e.g. "91").
    pub default_country_code: String,
    /// Timeout for one HTTP request.
    pub request_timeout_ms: u64,
    /// Client-side rate limit: at most `rate_limit_requests` per `rate_limit_period_ms`.
    pub rate_limit_requests: u32,
    /// The period of the client-side rate limit.
    pub rate_limit_period_ms: u64,
    /// First retry delay after a failure; doubles per consecutive failure (equal jitter: random in the upper half).
    pub retry_initial_ms: u64,
    /// Cap of the retry delay.
    pub retry_max_ms: u64,
    /// How long delivery pauses after 401/403/404 before trying again (nothing is dropped).
    pub auth_failure_pause_ms: u64,
    /// Send `CallDuration` as a JSON number (default) or as a string.
    pub call_duration_as_string: bool,
    /// The `Status` word sent for each call outcome.
    pub status: StatusNames,
    /// An agent popup not delivered within this time is dropped (counted, logged).
    pub popup_ttl_ms: u64,
    /// The LeadSquared API host of the account's region (single sign-on, lead lookup).
    pub api_host: String,
    /// The LeadSquared web app host the sign-on redirect opens.
    pub app_host: String,
    /// Where `/sso` redirects: `{app_host}`, `{key}` (URL-encoded) and `{lead_id}` are
    /// replaced.
    pub sso_redirect: String,
    /// The `password` parameter of `GetSingleSignOnKey`, when the account needs one.
    pub sso_password: Option<String>,
    /// File holding `sso_password` (first line).
    pub sso_password_file: Option<PathBuf>,
    /// Look the caller up with `RetrieveLeadByPhoneNumber` and add `LeadId` to the popup
    /// when exactly one lead matches (off by default: it costs a request per popup).
    pub lead_lookup: bool,
    /// The lead lookup's deadline; the popup goes out without `LeadId` after it.
    pub lead_lookup_timeout_ms: u64,
}

impl Default for LeadSquaredConfig {
    fn default() -> Self {
        Self {
            call_log_url: String::new(),
            agent_popup_url: String::new(),
            call_route_url: String::new(),
            access_key: None,
            access_key_file: None,
            secret_key: None,
            secret_key_file: None,
            time_zone: TimeZone::default(),
            number_format: NumberFormat::E164,
            default_country_code: String::new(),
            request_timeout_ms: 10_000,
            rate_limit_requests: 25,
            rate_limit_period_ms: 5_000,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
            auth_failure_pause_ms: 300_000,
            call_duration_as_string: false,
            status: StatusNames::default(),
            popup_ttl_ms: 30_000,
            api_host: "https://api.leadsquared.com".into(),
            app_host: "https://run.leadsquared.com".into(),
            sso_redirect: "{app_host}/SingleSignOn/LeadDetails?key={key}".into(),
            sso_password: None,
            sso_password_file: None,
            lead_lookup: false,
            lead_lookup_timeout_ms: 1_000,
        }
    }
}

/// `[leadsquared.status]`: the `Status` value sent for each outcome of a call.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusNames {
    /// An agent (inbound) or the lead (outbound) answered.
    pub answered: String,
    /// Rang, nobody answered (also a call only the IVR or queue answered).
    pub no_answer: String,
    /// The called side was busy.
    pub busy: String,
    /// The call failed (channel unavailable, bad number).
    pub failed: String,
    /// The network was congested.
    pub congestion: String,
    /// The caller reached voicemail.
    pub voicemail: String,
}

impl Default for StatusNames {
    fn default() -> Self {
        Self {
            answered: "Answered".into(),
            no_answer: "Missed".into(),
            busy: "Missed".into(),
            failed: "Missed".into(),
            congestion: "Missed".into(),
            voicemail: "Voicemail".into(),
        }
    }
}

/// Credentials resolved from the file, a `*_file` key or the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The access key, if any source supplied one.
    pub access_key: Option<String>,
    /// The secret key, if any source supplied one.
    pub secret_key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key.as_ref().map(|_| "<set>"))
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl LeadSquaredConfig {
    /// The HTTP request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The phone normaliser for the default country.
    pub fn phone_normalizer(&self) -> Result<PhoneNormalizer, crate::phone::PhoneError> {
        PhoneNormalizer::new(&self.default_country_code)
    }

    /// Resolves the CRM credentials: inline value, else `*_file`, else the environment.
    pub fn credentials(&self) -> Result<Credentials, ConfigProblem> {
        let resolve = |key: &str,
                       inline: &Option<String>,
                       file: &Option<PathBuf>,
                       env: &str|
         -> Result<Option<String>, ConfigProblem> {
            if let Some(v) = inline {
                return Ok(Some(v.clone()));
            }
            if let Some(f) = file {
                return read_secret_file(f)
                    .map(Some)
                    .map_err(|message| ConfigProblem::new(format!("{key}_file"), message));
            }
            Ok(std::env::var(env).ok().filter(|v| !v.is_empty()))
        };
        Ok(Credentials {
            access_key: resolve(
                "leadsquared.access_key",
                &self.access_key,
                &self.access_key_file,
                ENV_ACCESS_KEY,
            )?,
            secret_key: resolve(
                "leadsquared.secret_key",
                &self.secret_key,
                &self.secret_key_file,
                ENV_SECRET_KEY,
            )?,
        })
    }

    /// The single sign-on password: inline, from `sso_password_file`, or none.
    pub fn sso_password(&self) -> Result<Option<String>, ConfigProblem> {
        match (&self.sso_password, &self.sso_password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => read_secret_file(f)
                .map(Some)
                .map_err(|message| ConfigProblem::new("leadsquared.sso_password_file", message)),
            (None, None) => Ok(None),
        }
    }

    /// Every problem of `[leadsquared]`.
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.call_log_url.is_empty() {
            problems.add("leadsquared.call_log_url", "is required");
        }
        for (key, url) in [
            ("leadsquared.call_log_url", &self.call_log_url),
            ("leadsquared.agent_popup_url", &self.agent_popup_url),
            ("leadsquared.call_route_url", &self.call_route_url),
            ("leadsquared.api_host", &self.api_host),
            ("leadsquared.app_host", &self.app_host),
        ] {
            if !url.is_empty() {
                if let Err(e) = check_http_url(url) {
                    problems.add(key, e);
                }
            }
        }
        if !self.sso_redirect.contains("{key}") {
            problems.add(
                "leadsquared.sso_redirect",
                "must contain {key} (the sign-on key)",
            );
        }
        if self.sso_password.is_some() && self.sso_password_file.is_some() {
            problems.add(
                "leadsquared.sso_password",
                "set sso_password or sso_password_file, not both",
            );
        }
        self.time_zone.check("leadsquared.time_zone", problems);
        if let Err(e) = self.phone_normalizer() {
            problems.add("leadsquared.default_country_code", e.to_string());
        }
        if self.request_timeout_ms == 0 {
            problems.add("leadsquared.request_timeout_ms", "must be above 0");
        }
        if self.rate_limit_requests == 0 || self.rate_limit_period_ms == 0 {
            problems.add(
                "leadsquared.rate_limit_requests",
                "rate_limit_requests and rate_limit_period_ms must be above 0",
            );
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            problems.add(
                "leadsquared.retry_max_ms",
                "retry_initial_ms must be above 0 and retry_max_ms at least retry_initial_ms",
            );
        }
        for (key, inline, file) in [
            (
                "leadsquared.access_key",
                &self.access_key,
                &self.access_key_file,
            ),
            (
                "leadsquared.secret_key",
                &self.secret_key,
                &self.secret_key_file,
            ),
        ] {
            if inline.is_some() && file.is_some() {
                problems.add(key, "set either the key or the *_file key, not both");
            }
            if let Some(file) = file {
                if let Err(e) = read_secret_file(file) {
                    problems.add(format!("{key}_file"), e);
                }
            }
        }
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        Ok(u) => Err(format!("scheme {:?} is not http or https", u.scheme())),
        Err(e) => Err(format!("not a URL: {e}")),
    }
}

/// Live: what the delivery client rebuilds on reload (the Call Log URL, keys, timeout and
/// payload format). The rate limit, retry policy, popup sender and lead API are built once.
impl ReloadKeys for LeadSquaredConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let LeadSquaredConfig {
            call_log_url,
            agent_popup_url,
            call_route_url,
            access_key,
            access_key_file,
            secret_key,
            secret_key_file,
            time_zone,
            number_format,
            default_country_code,
            request_timeout_ms,
            rate_limit_requests,
            rate_limit_period_ms,
            retry_initial_ms,
            retry_max_ms,
            auth_failure_pause_ms,
            call_duration_as_string,
            status,
            popup_ttl_ms,
            api_host,
            app_host,
            sso_redirect,
            sso_password,
            sso_password_file,
            lead_lookup,
            lead_lookup_timeout_ms,
        } = self;
        let n = new;
        changes.live("leadsquared.call_log_url", call_log_url, &n.call_log_url);
        changes.restart(
            "leadsquared.agent_popup_url",
            agent_popup_url,
            &n.agent_popup_url,
        );
        changes.restart(
            "leadsquared.call_route_url",
            call_route_url,
            &n.call_route_url,
        );
        changes.live("leadsquared.access_key", access_key, &n.access_key);
        changes.live(
            "leadsquared.access_key_file",
            access_key_file,
            &n.access_key_file,
        );
        changes.live("leadsquared.secret_key", secret_key, &n.secret_key);
        changes.live(
            "leadsquared.secret_key_file",
            secret_key_file,
            &n.secret_key_file,
        );
        changes.live("leadsquared.time_zone", time_zone, &n.time_zone);
        changes.live("leadsquared.number_format", number_format, &n.number_format);
        changes.live(
            "leadsquared.default_country_code",
            default_country_code,
            &n.default_country_code,
        );
        changes.live(
            "leadsquared.request_timeout_ms",
            request_timeout_ms,
            &n.request_timeout_ms,
        );
        changes.restart(
            "leadsquared.rate_limit_requests",
            rate_limit_requests,
            &n.rate_limit_requests,
        );
        changes.restart(
            "leadsquared.rate_limit_period_ms",
            rate_limit_period_ms,
            &n.rate_limit_period_ms,
        );
        changes.restart(
            "leadsquared.retry_initial_ms",
            retry_initial_ms,
            &n.retry_initial_ms,
        );
        changes.restart("leadsquared.retry_max_ms", retry_max_ms, &n.retry_max_ms);
        changes.restart(
            "leadsquared.auth_failure_pause_ms",
            auth_failure_pause_ms,
            &n.auth_failure_pause_ms,
        );
        changes.live(
            "leadsquared.call_duration_as_string",
            call_duration_as_string,
            &n.call_duration_as_string,
        );
        changes.live("leadsquared.status", status, &n.status);
        changes.restart("leadsquared.popup_ttl_ms", popup_ttl_ms, &n.popup_ttl_ms);
        changes.restart("leadsquared.api_host", api_host, &n.api_host);
        changes.restart("leadsquared.app_host", app_host, &n.app_host);
        changes.restart("leadsquared.sso_redirect", sso_redirect, &n.sso_redirect);
        changes.restart("leadsquared.sso_password", sso_password, &n.sso_password);
        changes.restart(
            "leadsquared.sso_password_file",
            sso_password_file,
            &n.sso_password_file,
        );
        changes.restart("leadsquared.lead_lookup", lead_lookup, &n.lead_lookup);
        changes.restart(
            "leadsquared.lead_lookup_timeout_ms",
            lead_lookup_timeout_ms,
            &n.lead_lookup_timeout_ms,
        );
    }
}

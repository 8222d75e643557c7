//! The TOML configuration: its schema, defaults, secret resolution and validation.
//!
//! Every table denies unknown keys, so a typo is an error that names the key instead of a
//! setting silently ignored. Secrets can be written inline, read from a `*_file` key (so the
//! main file can be world-readable) or taken from an environment variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::phone::{NumberFormat, PhoneNormalizer};
pub use crate::tail::StartAt;

/// Environment variable that supplies `[leadsquared] access_key` when the file does not.
pub const ENV_ACCESS_KEY: &str = "PBXLINK_LEADSQUARED_ACCESS_KEY";
/// Environment variable that supplies `[leadsquared] secret_key` when the file does not.
pub const ENV_SECRET_KEY: &str = "PBXLINK_LEADSQUARED_SECRET_KEY";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The SQLite store.
    #[serde(default)]
    pub store: StoreConfig,
    /// The LeadSquared side.
    #[serde(default)]
    pub leadsquared: LeadSquaredConfig,
    /// The virtual numbers (DIDs) the company owns.
    #[serde(default)]
    pub virtual_numbers: Vec<VirtualNumber>,
    /// The agents: their PBX extension and their identity in LeadSquared.
    #[serde(default)]
    pub agents: Vec<Agent>,
    /// The Asterisk side; absent when no Asterisk is connected.
    pub asterisk: Option<AsteriskConfig>,
    /// The HTTP API LeadSquared and the dialplan call; absent: no HTTP server.
    pub http: Option<HttpConfig>,
}

/// `[http]`: the API for click to call, disposition, call routing, health and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// Every endpoint but `/healthz` needs it (query `token=` or `Authorization: Bearer`).
    pub token: Option<String>,
    /// File holding the token (first line).
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain, for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key, for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Only these networks may call (CIDR); empty: any.
    pub allow_from: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests per second allowed from one address (bursts of the same size).
    pub requests_per_second: u32,
    /// The word click to call answers when the PBX accepted the call.
    pub response_keyword: String,
    /// The same click to call repeated within this time does not ring twice.
    pub click_to_call_dedupe_ms: u64,
    /// `/route` answers within this time whatever the CRM does.
    pub route_timeout_ms: u64,
    /// What `/route` answers when the CRM does not name a known agent in time.
    pub route_fallback: String,
    /// How long a `/route` answer is cached per caller.
    pub route_cache_ms: u64,
    /// Parameter names of click to call and disposition.
    pub params: ParamNames,
    /// Open connections at most (also kept below the open-file limit, with room left for
    /// CRM and PBX connections); beyond it a new connection is closed at accept.
    pub max_connections: usize,
    /// A client must send a request's headers (and the TLS handshake) within this time.
    pub header_read_timeout_ms: u64,
    /// A connection with nothing moving either way and no request in flight is closed.
    pub idle_timeout_ms: u64,
    /// Failed token checks one address may make per minute; then 429 until the minute ends.
    pub auth_failures_per_minute: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8478)),
            token: None,
            token_file: None,
            tls_cert: None,
            tls_key: None,
            allow_from: Vec::new(),
            max_body_bytes: 16 * 1024,
            requests_per_second: 20,
            response_keyword: "OK".into(),
            click_to_call_dedupe_ms: 5_000,
            route_timeout_ms: 1_500,
            route_fallback: String::new(),
            route_cache_ms: 60_000,
            params: ParamNames::default(),
            max_connections: 256,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            auth_failures_per_minute: 10,
        }
    }
}

impl HttpConfig {
    /// The token: inline, else from `token_file`; None when neither is set.
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigProblem> {
        match (&self.token, &self.token_file) {
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(f)) => read_secret_file(f)
                .map(Some)
                .map_err(|message| ConfigProblem {
                    key: "http.token_file".into(),
                    message,
                }),
            (Some(_), Some(_)) => Err(ConfigProblem {
                key: "http.token".into(),
                message: "set either token or token_file, not both".into(),
            }),
            (None, None) => Ok(None),
        }
    }
}

/// `[http.params]`: the names LeadSquared's mail-merge fields arrive under.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ParamNames {
    /// The virtual number to show the lead.
    pub virtual_number: String,
    /// The lead's id.
    pub lead_id: String,
    /// The lead's number without country code.
    pub customer_number: String,
    /// The lead's number with country code (preferred).
    pub phone_with_country_code: String,
    /// The agent's phone.
    pub agent_number: String,
    /// The agent's name.
    pub agent_name: String,
    /// The agent's e-mail.
    pub agent_email: String,
    /// Disposition: the call's id.
    pub call_session_id: String,
    /// Disposition: the value picked.
    pub disposition_value: String,
    /// Disposition: free-text notes.
    pub notes: String,
}

impl Default for ParamNames {
    fn default() -> Self {
        Self {
            virtual_number: "virtualNumber".into(),
            lead_id: "leadId".into(),
            customer_number: "customerNumber".into(),
            phone_with_country_code: "PhoneNumberWithCountryCode".into(),
            agent_number: "agentNumber".into(),
            agent_name: "agentName".into(),
            agent_email: "agentEmail".into(),
            call_session_id: "callSessionId".into(),
            disposition_value: "dispositionValue".into(),
            notes: "notes".into(),
        }
    }
}

/// `[store]`: where the outbox lives and how long delivered rows are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite database file.
    pub path: PathBuf,
    /// SQLite `synchronous` pragma: `full` survives power loss, `normal` survives process crashes.
    pub synchronous: Synchronous,
    /// Delivered rows are pruned after this many days.
    pub delivered_retention_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/pbxlink/pbxlink.db"),
            synchronous: Synchronous::Full,
            delivered_retention_days: 30,
        }
    }
}

/// SQLite durability level, set explicitly on every connection.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is fsynced: nothing committed is lost, even on power loss.
    Full,
    /// WAL commits are fsynced at checkpoints: a process crash loses nothing, a power cut may.
    Normal,
}

/// `[leadsquared]`: the CRM endpoints, credentials and payload formats.
#[derive(Debug, Clone, Deserialize)]
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
    /// IANA time zone the CRM expects StartTime/EndTime in.
    pub time_zone: String,
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
    /// First retry delay after a failure; doubles per consecutive failure (full jitter).
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
            time_zone: "UTC".into(),
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

/// `[[virtual_numbers]]`: a DID the company owns, and the tag LeadSquared files its calls under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualNumber {
    /// The number, in any form the normaliser understands.
    pub number: String,
    /// Sent as `Tag` with calls on this number.
    #[serde(default)]
    pub tag: Option<String>,
}

/// `[[agents]]`: one agent's PBX extension and LeadSquared identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The agent's extension on the PBX (e.g. "100").
    pub extension: String,
    /// The agent's phone number as LeadSquared knows the user.
    #[serde(default)]
    pub phone: Option<String>,
    /// The agent's LeadSquared login e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// LeadSquared user id, sent as `UserId`.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent's queue member interface (for unpausing after a disposition);
    /// default: the originate agent channel, e.g. `PJSIP/100`.
    #[serde(default)]
    pub queue_interface: Option<String>,
}

/// `[asterisk]`: where and how Asterisk writes its CDRs, and how calls are classified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsteriskConfig {
    /// Path of the CDR file to tail (cdr_csv `Master.csv` or a cdr_custom file).
    pub cdr_csv: Option<PathBuf>,
    /// `csv` (cdr_csv, columns detected by count) or `custom` (cdr_custom with `cdr_columns`).
    pub cdr_format: CdrFormat,
    /// For `cdr_format = "custom"`: the name of every column, in order.
    pub cdr_columns: Vec<String>,
    /// The zone Asterisk wrote the times in: "UTC" with `usegmtime=yes`, else an IANA zone.
    pub cdr_time_zone: String,
    /// Whether `cdr_csv` may be a symbolic link (followed; the file it names must still be a
    /// regular file). Off by default: a link there is refused with an error.
    pub cdr_follow_symlink: bool,
    /// With no saved position (the first start), where reading starts in a CDR file that
    /// already exists: `end` (default: its calls are history, backfill them with
    /// `pbxlink import`) or `beginning`. A file that appears later, or after a rotation, is
    /// always read from its first byte.
    pub start_at: StartAt,
    /// How long after a call's last CDR row to wait before deciding the call is complete.
    pub settle_ms: u64,
    /// Rows of a call whose first channel's row never arrives are posted after this long.
    pub max_call_secs: u64,
    /// How often the CDR file is polled (file-change notifications wake it sooner).
    pub poll_interval_ms: u64,
    /// Dialplan contexts that receive calls from outside (the DID contexts).
    pub inbound_contexts: Vec<String>,
    /// Dialplan contexts agents place outside calls from.
    pub outbound_contexts: Vec<String>,
    /// Number shown as DisplayNumber for outbound calls when the CDR does not say.
    pub outbound_display_number: Option<String>,
    /// Prefix agents dial before an outside number (e.g. "9"); stripped from the lead's number.
    pub outbound_dial_prefix: String,
    /// Applications that mean the caller reached voicemail.
    pub voicemail_apps: Vec<String>,
    /// URL of a recording, built from the CDR's `recordingfile` column:
    /// `{file}`, `{uniqueid}`, `{linkedid}`, `{year}`, `{month}`, `{day}` are replaced.
    pub recording_url_template: Option<String>,
    /// `[asterisk.ami]`: the Manager Interface connection, for the live features.
    pub ami: Option<AmiSettings>,
    /// Where call logs come from: the CDR file (`cdr`), AMI events (`ami`) or both
    /// (the call's id keeps one delivery per call).
    pub call_log_source: CallLogSource,
    /// `[asterisk.originate]`: how click to call places calls.
    pub originate: OriginateConfig,
    /// After a disposition: `unpause` the agent's queue member, or `none`.
    pub free_agent: FreeAgent,
}

/// Where call logs come from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CallLogSource {
    /// The CDR file (`cdr_csv`).
    Cdr,
    /// Live AMI events.
    Ami,
    /// Both; one delivery per call.
    Both,
}

/// What a disposition does on the PBX.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FreeAgent {
    /// `QueuePause` with `Paused: false` on the agent's queue interface.
    Unpause,
    /// Nothing.
    None,
}

/// `[asterisk.originate]`: click to call rings the agent first, then dials the lead.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OriginateConfig {
    /// The agent's channel; `{extension}` is replaced, e.g. `PJSIP/{extension}`.
    pub agent_channel: String,
    /// The context the lead's number is dialled in.
    pub context: String,
    /// Prepended to the lead's number.
    pub dial_prefix: String,
    /// How the lead's number is written after the prefix: `e164_digits` (the default,
    /// `919611795983`, which an ordinary `exten => _X.` matches), `e164` (`+919611795983`)
    /// or `national` (`9611795983`).
    pub number_format: DialFormat,
    /// How long the agent's phone rings.
    pub timeout_ms: u64,
}

impl Default for OriginateConfig {
    fn default() -> Self {
        Self {
            agent_channel: "PJSIP/{extension}".into(),
            context: "from-internal".into(),
            dial_prefix: String::new(),
            number_format: DialFormat::E164Digits,
            timeout_ms: 30_000,
        }
    }
}

/// How the lead's number is dialled.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DialFormat {
    /// `+919611795983`
    E164,
    /// `919611795983`
    E164Digits,
    /// `9611795983`
    National,
}

impl DialFormat {
    /// The name the config file uses for it.
    pub fn name(self) -> &'static str {
        match self {
            DialFormat::E164 => "e164",
            DialFormat::E164Digits => "e164_digits",
            DialFormat::National => "national",
        }
    }
}

/// `[asterisk.ami]`: how to reach the Asterisk Manager Interface.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AmiSettings {
    /// Host of the AMI.
    pub host: String,
    /// TCP port of the AMI.
    pub port: u16,
    /// manager.conf user.
    pub username: String,
    /// Its secret (or `secret_file`).
    pub secret: Option<String>,
    /// File holding the secret (first line).
    pub secret_file: Option<PathBuf>,
    /// How to log in: `md5` (the default: `Challenge`, then the secret never crosses the
    /// wire) or `plain`.
    pub login: AmiLogin,
    /// Server-side event filter: only these events are sent to pbxlink.
    pub events: Vec<String>,
}

/// `[asterisk.ami] login`: how pbxlink proves the manager user's secret.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AmiLogin {
    /// `Action: Challenge` then `Login` with `Key: md5(challenge + secret)`.
    #[default]
    Md5,
    /// `Login` with `Secret:` in clear text.
    Plain,
}

impl Default for AmiSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5038,
            username: String::new(),
            secret: None,
            secret_file: None,
            login: AmiLogin::Md5,
            events: [
                "Newchannel",
                "Newstate",
                "DialBegin",
                "DialEnd",
                "BridgeEnter",
                "BridgeLeave",
                "Hangup",
                "QueueCallerJoin",
                "AgentCalled",
                "AgentConnect",
                "AgentComplete",
                "AgentRingNoAnswer",
                "QueueMemberPause",
                "VarSet",
                "OriginateResponse",
                "FullyBooted",
                "Shutdown",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl AmiSettings {
    /// The secret: inline, else from `secret_file`.
    pub fn resolve_secret(&self) -> Result<String, ConfigProblem> {
        match (&self.secret, &self.secret_file) {
            (Some(s), None) => Ok(s.clone()),
            (None, Some(f)) => read_secret_file(f).map_err(|message| ConfigProblem {
                key: "asterisk.ami.secret_file".into(),
                message,
            }),
            (Some(_), Some(_)) => Err(ConfigProblem {
                key: "asterisk.ami.secret".into(),
                message: "set either secret or secret_file, not both".into(),
            }),
            (None, None) => Err(ConfigProblem {
                key: "asterisk.ami.secret".into(),
                message: "is required (or secret_file)".into(),
            }),
        }
    }
}

impl Default for AsteriskConfig {
    fn default() -> Self {
        Self {
            cdr_csv: None,
            cdr_format: CdrFormat::Csv,
            cdr_columns: Vec::new(),
            cdr_time_zone: "UTC".into(),
            cdr_follow_symlink: false,
            start_at: StartAt::End,
            settle_ms: 5_000,
            max_call_secs: 14_400,
            poll_interval_ms: 500,
            inbound_contexts: vec![
                "from-trunk".into(),
                "from-pstn".into(),
                "from-external".into(),
                "from-did-direct".into(),
                "ext-did".into(),
            ],
            outbound_contexts: vec!["from-internal".into()],
            outbound_display_number: None,
            outbound_dial_prefix: String::new(),
            voicemail_apps: vec!["VoiceMail".into()],
            recording_url_template: None,
            ami: None,
            call_log_source: CallLogSource::Cdr,
            originate: OriginateConfig::default(),
            free_agent: FreeAgent::Unpause,
        }
    }
}

/// Which writer produced the CDR file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CdrFormat {
    /// cdr_csv's fixed layout (16, 18, 19 or 21 columns, detected by count).
    Csv,
    /// cdr_custom with the columns named in `cdr_columns`.
    Custom,
}

/// One problem found in a configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `leadsquared.call_log_url` or `agents[2].phone`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (the message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, naming the key and line.
        message: String,
    },
    /// The file parsed but has invalid values.
    #[error("{} problem(s) in {path}:\n  {}", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
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

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Parses TOML text without validating values.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Every problem with the values, each with its key. Empty means valid.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problems_ami = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                message,
            })
        };
        let ls = &self.leadsquared;
        if ls.call_log_url.is_empty() {
            problem("leadsquared.call_log_url", "is required".into());
        }
        for (key, url) in [
            ("leadsquared.call_log_url", &ls.call_log_url),
            ("leadsquared.agent_popup_url", &ls.agent_popup_url),
            ("leadsquared.call_route_url", &ls.call_route_url),
            ("leadsquared.api_host", &ls.api_host),
            ("leadsquared.app_host", &ls.app_host),
        ] {
            if !url.is_empty() {
                if let Err(e) = check_http_url(url) {
                    problem(key, e);
                }
            }
        }
        if !ls.sso_redirect.contains("{key}") {
            problem(
                "leadsquared.sso_redirect",
                "must contain {key} (the sign-on key)".into(),
            );
        }
        if ls.sso_password.is_some() && ls.sso_password_file.is_some() {
            problem(
                "leadsquared.sso_password",
                "set sso_password or sso_password_file, not both".into(),
            );
        }
        if ls.time_zone.parse::<chrono_tz::Tz>().is_err() {
            problem(
                "leadsquared.time_zone",
                format!("unknown IANA time zone {:?}", ls.time_zone),
            );
        }
        let normalizer = match PhoneNormalizer::new(&ls.default_country_code) {
            Ok(n) => Some(n),
            Err(e) => {
                problem("leadsquared.default_country_code", e.to_string());
                None
            }
        };
        if ls.request_timeout_ms == 0 {
            problem("leadsquared.request_timeout_ms", "must be above 0".into());
        }
        if ls.rate_limit_requests == 0 || ls.rate_limit_period_ms == 0 {
            problem(
                "leadsquared.rate_limit_requests",
                "rate_limit_requests and rate_limit_period_ms must be above 0".into(),
            );
        }
        if ls.retry_initial_ms == 0 || ls.retry_max_ms < ls.retry_initial_ms {
            problem(
                "leadsquared.retry_max_ms",
                "retry_initial_ms must be above 0 and retry_max_ms at least retry_initial_ms"
                    .into(),
            );
        }
        for (key, inline, file) in [
            (
                "leadsquared.access_key",
                &ls.access_key,
                &ls.access_key_file,
            ),
            (
                "leadsquared.secret_key",
                &ls.secret_key,
                &ls.secret_key_file,
            ),
        ] {
            if inline.is_some() && file.is_some() {
                problem(key, "set either the key or the *_file key, not both".into());
            }
            if let Some(file) = file {
                if let Err(e) = read_secret_file(file) {
                    problem(&format!("{key}_file"), e);
                }
            }
        }

        for (i, vn) in self.virtual_numbers.iter().enumerate() {
            if let Some(n) = &normalizer {
                if n.normalize(&vn.number).is_none() {
                    problem(
                        &format!("virtual_numbers[{i}].number"),
                        format!("{:?} is not a valid phone number", vn.number),
                    );
                }
            }
        }
        let mut extensions = std::collections::HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            if agent.extension.trim().is_empty() {
                problem(&format!("agents[{i}].extension"), "is required".into());
            } else if !extensions.insert(agent.extension.as_str()) {
                problem(
                    &format!("agents[{i}].extension"),
                    format!("extension {:?} is listed twice", agent.extension),
                );
            }
            if let (Some(phone), Some(n)) = (&agent.phone, &normalizer) {
                if n.normalize(phone).is_none() {
                    problem(
                        &format!("agents[{i}].phone"),
                        format!("{phone:?} is not a valid phone number"),
                    );
                }
            }
        }

        match &self.asterisk {
            None => problem(
                "asterisk",
                "no PBX configured: add an [asterisk] table with cdr_csv".into(),
            ),
            Some(ast) => {
                if ast.cdr_csv.is_none() && ast.call_log_source != CallLogSource::Ami {
                    problem("asterisk.cdr_csv", "is required".into());
                }
                if ast.cdr_time_zone.parse::<chrono_tz::Tz>().is_err() {
                    problem(
                        "asterisk.cdr_time_zone",
                        format!("unknown IANA time zone {:?}", ast.cdr_time_zone),
                    );
                }
                match ast.cdr_format {
                    CdrFormat::Custom => {
                        if let Err(e) =
                            crate::pbx::asterisk::cdr::ColumnLayout::from_names(&ast.cdr_columns)
                        {
                            problem("asterisk.cdr_columns", e.to_string());
                        }
                    }
                    CdrFormat::Csv => {
                        if !ast.cdr_columns.is_empty() {
                            problem(
                                "asterisk.cdr_columns",
                                "only used with cdr_format = \"custom\"".into(),
                            );
                        }
                    }
                }
                if ast.poll_interval_ms == 0 || ast.poll_interval_ms > 1_000 {
                    problem(
                        "asterisk.poll_interval_ms",
                        "must be between 1 and 1000".into(),
                    );
                }
                if let Some(ami) = &ast.ami {
                    if ami.username.is_empty() {
                        problem("asterisk.ami.username", "is required".into());
                    }
                    if let Err(p) = ami.resolve_secret() {
                        problems_ami.push(p);
                    }
                }
                if let (Some(number), Some(n)) = (&ast.outbound_display_number, &normalizer) {
                    if n.normalize(number).is_none() {
                        problem(
                            "asterisk.outbound_display_number",
                            format!("{number:?} is not a valid phone number"),
                        );
                    }
                }
            }
        }
        if let Some(http) = &self.http {
            if let Err(p) = http.resolve_token() {
                problems_ami.push(p);
            }
            if http.tls_cert.is_some() != http.tls_key.is_some() {
                problems_ami.push(ConfigProblem {
                    key: "http.tls_cert".into(),
                    message: "tls_cert and tls_key go together".into(),
                });
            }
            for (i, net) in http.allow_from.iter().enumerate() {
                if crate::http::auth::parse_cidr(net).is_none() {
                    problems_ami.push(ConfigProblem {
                        key: format!("http.allow_from[{i}]"),
                        message: format!("{net:?} is not an address or CIDR network"),
                    });
                }
            }
            if http.response_keyword.is_empty() {
                problems_ami.push(ConfigProblem {
                    key: "http.response_keyword".into(),
                    message: "must not be empty".into(),
                });
            }
            for (key, value) in [
                ("http.max_connections", http.max_connections as u64),
                ("http.header_read_timeout_ms", http.header_read_timeout_ms),
                ("http.idle_timeout_ms", http.idle_timeout_ms),
                (
                    "http.auth_failures_per_minute",
                    u64::from(http.auth_failures_per_minute),
                ),
            ] {
                if value == 0 {
                    problems_ami.push(ConfigProblem {
                        key: key.into(),
                        message: "must be at least 1".into(),
                    });
                }
            }
        }
        if let Some(ast) = &self.asterisk {
            if ast.call_log_source != CallLogSource::Cdr && ast.ami.is_none() {
                problems_ami.push(ConfigProblem {
                    key: "asterisk.call_log_source".into(),
                    message: "\"ami\" and \"both\" need an [asterisk.ami] table".into(),
                });
            }
            if !ast.originate.agent_channel.contains("{extension}") {
                problems_ami.push(ConfigProblem {
                    key: "asterisk.originate.agent_channel".into(),
                    message: "must contain {extension}".into(),
                });
            }
        }
        problems.extend(problems_ami);
        problems
    }

    /// The single sign-on password: inline, from `sso_password_file`, or none.
    pub fn sso_password(&self) -> Result<Option<String>, ConfigProblem> {
        let ls = &self.leadsquared;
        match (&ls.sso_password, &ls.sso_password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => read_secret_file(f)
                .map(Some)
                .map_err(|message| ConfigProblem {
                    key: "leadsquared.sso_password_file".into(),
                    message,
                }),
            (None, None) => Ok(None),
        }
    }

    /// Resolves the CRM credentials: inline value, else `*_file`, else the environment.
    pub fn credentials(&self) -> Result<Credentials, ConfigProblem> {
        let ls = &self.leadsquared;
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
                    .map_err(|message| ConfigProblem {
                        key: format!("{key}_file"),
                        message,
                    });
            }
            Ok(std::env::var(env).ok().filter(|v| !v.is_empty()))
        };
        Ok(Credentials {
            access_key: resolve(
                "leadsquared.access_key",
                &ls.access_key,
                &ls.access_key_file,
                ENV_ACCESS_KEY,
            )?,
            secret_key: resolve(
                "leadsquared.secret_key",
                &ls.secret_key,
                &ls.secret_key_file,
                ENV_SECRET_KEY,
            )?,
        })
    }

    /// The phone normaliser for this configuration's default country.
    pub fn phone_normalizer(&self) -> Result<PhoneNormalizer, crate::phone::PhoneError> {
        PhoneNormalizer::new(&self.leadsquared.default_country_code)
    }
}

impl LeadSquaredConfig {
    /// The HTTP request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        Ok(u) => Err(format!("scheme {:?} is not http or https", u.scheme())),
        Err(e) => Err(format!("not a URL: {e}")),
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[store]
path = "/tmp/x.db"
[leadsquared]
call_log_url = "https://telephony.leadsquared.com/1/api/Telephony/LogCallComplete/abc"
default_country_code = "91"
[asterisk]
cdr_csv = "/var/log/asterisk/cdr-csv/Master.csv"
"#;

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let c = Config::parse(MINIMAL).expect("parses");
        assert_eq!(c.problems(), vec![]);
        assert_eq!(c.leadsquared.time_zone, "UTC");
        assert_eq!(c.leadsquared.number_format, NumberFormat::E164);
        assert_eq!(c.asterisk.as_ref().map(|a| a.settle_ms), Some(5_000));
    }

    #[test]
    fn cdr_file_keys_default_to_refusing_links_and_starting_at_the_end() {
        let c = Config::parse(MINIMAL).expect("parses");
        let ast = c.asterisk.expect("[asterisk]");
        assert!(!ast.cdr_follow_symlink);
        assert_eq!(ast.start_at, StartAt::End);
        let text = MINIMAL.replace(
            "[asterisk]",
            "[asterisk]\ncdr_follow_symlink = true\nstart_at = \"beginning\"",
        );
        let ast = Config::parse(&text)
            .expect("parses")
            .asterisk
            .expect("[asterisk]");
        assert!(ast.cdr_follow_symlink);
        assert_eq!(ast.start_at, StartAt::Beginning);
        let text = MINIMAL.replace("[asterisk]", "[asterisk]\nstart_at = \"middle\"");
        let err = Config::parse(&text).expect_err("not a start position");
        assert!(err.contains("middle") && err.contains("beginning"), "{err}");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = Config::parse(include_str!("../../examples/pbxlink.toml")).expect("parses");
        assert_eq!(c.problems(), vec![]);
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = MINIMAL.replace("[store]", "[store]\npathh = 1");
        let err = Config::parse(&text).expect_err("unknown key");
        assert!(err.contains("pathh"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
[leadsquared]
call_log_url = "ftp://x"
time_zone = "Mars/Olympus"
default_country_code = "999"
[[agents]]
extension = "100"
[[agents]]
extension = "100"
[asterisk]
cdr_format = "custom"
cdr_columns = ["src"]
"#;
        let c = Config::parse(text).expect("parses");
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        for key in [
            "leadsquared.call_log_url",
            "leadsquared.time_zone",
            "leadsquared.default_country_code",
            "agents[1].extension",
            "asterisk.cdr_csv",
            "asterisk.cdr_columns",
        ] {
            assert!(keys.contains(&key.to_string()), "{key} missing in {keys:?}");
        }
    }

    #[test]
    fn secrets_come_from_file_when_not_inline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").expect("write");
        let text = format!(
            "{MINIMAL}\n",
            MINIMAL = MINIMAL.replace(
                "default_country_code = \"91\"",
                &format!(
                    "default_country_code = \"91\"\naccess_key = \"ak\"\nsecret_key_file = {:?}",
                    file
                )
            )
        );
        let c = Config::parse(&text).expect("parses");
        assert_eq!(c.problems(), vec![]);
        let creds = c.credentials().expect("resolves");
        assert_eq!(creds.access_key.as_deref(), Some("ak"));
        assert_eq!(creds.secret_key.as_deref(), Some("s3cret"));
        assert!(!format!("{creds:?}").contains("s3cret"));
    }
}

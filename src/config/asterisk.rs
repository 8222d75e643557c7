//! `[asterisk]`, `[asterisk.ami]` and `[asterisk.originate]`: where and how Asterisk writes
//! its CDRs, how calls are classified, the Manager Interface connection and click to call;
//! their checks and how a reload treats them (every key needs a restart).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::parsed::{CdrColumns, ColumnRules, TimeZone};
use super::reload::{KeyChanges, ReloadKeys};
use super::secret::required_inline_or_file;
use super::{ConfigProblem, DialFormat, Problems, StartAt};
use crate::call::TransferLogs;
use crate::phone::PhoneNormalizer;

/// What a cdr_custom column list (`[asterisk] cdr_columns`) must hold: the CDR variables
/// every call log needs. The Asterisk CDR parser's layout relies on it.
pub const ASTERISK_CDR_COLUMNS: ColumnRules = ColumnRules {
    required: &[
        &["src"],
        &["dst"],
        &["start"],
        &["end"],
        &["disposition"],
        &["channel"],
    ],
    lowercase: true,
    variable_syntax: false,
};

/// `[asterisk]`: where and how Asterisk writes its CDRs, and how calls are classified.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AsteriskConfig {
    /// Path of the CDR file to tail (cdr_csv `Master.csv` or a cdr_custom file).
    pub cdr_csv: Option<PathBuf>,
    /// `csv` (cdr_csv, columns detected by count) or `custom` (cdr_custom with `cdr_columns`).
    pub cdr_format: CdrFormat,
    /// For `cdr_format = "custom"`: the name of every column, in order (checked at load;
    /// `names()` gives them normalised).
    #[serde(deserialize_with = "asterisk_columns")]
    pub cdr_columns: CdrColumns,
    /// The zone Asterisk wrote the times in: "UTC" with `usegmtime=yes`, else an IANA zone
    /// (parsed at load: `zone()`).
    pub cdr_time_zone: TimeZone,
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
    /// How many call logs a transferred call gives: `per_agent` (one per agent who talked to
    /// the lead) or `single` (one, the last agent, the chain in `CallNotes`).
    pub transfer_logs: TransferLogs,
    /// With `call_log_source = "both"`: how long a call seen live waits for its CDR record
    /// before it is posted from the live side alone.
    pub reconcile_wait_ms: u64,
    /// `[asterisk.originate]`: how click to call places calls.
    pub originate: OriginateConfig,
    /// After a disposition: `unpause` the agent's queue member, or `none`.
    pub free_agent: FreeAgent,
}

fn asterisk_columns<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CdrColumns, D::Error> {
    Vec::<String>::deserialize(deserializer)
        .map(|names| CdrColumns::new(names, &ASTERISK_CDR_COLUMNS))
}

impl Default for AsteriskConfig {
    fn default() -> Self {
        Self {
            cdr_csv: None,
            cdr_format: CdrFormat::Csv,
            cdr_columns: CdrColumns::new(Vec::new(), &ASTERISK_CDR_COLUMNS),
            cdr_time_zone: TimeZone::default(),
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
            transfer_logs: TransferLogs::PerAgent,
            reconcile_wait_ms: 60_000,
            originate: OriginateConfig::default(),
            free_agent: FreeAgent::Unpause,
        }
    }
}

impl AsteriskConfig {
    /// With `call_log_source = "both"`: how long a live call waits for its CDR record.
    pub fn reconcile_wait(&self) -> Duration {
        Duration::from_millis(self.reconcile_wait_ms)
    }

    /// The cdr_custom column names, normalised, when `cdr_format = "custom"`; None for
    /// cdr_csv (its layout is told by the column count).
    pub fn custom_columns(&self) -> Option<&[String]> {
        match self.cdr_format {
            CdrFormat::Custom => Some(self.cdr_columns.names()),
            CdrFormat::Csv => None,
        }
    }

    /// Every problem of `[asterisk]` and its sub-tables.
    pub(crate) fn check(&self, normalizer: Option<&PhoneNormalizer>, problems: &mut Problems) {
        if self.cdr_csv.is_none() && self.call_log_source != CallLogSource::Ami {
            problems.add("asterisk.cdr_csv", "is required");
        }
        self.cdr_time_zone.check("asterisk.cdr_time_zone", problems);
        match self.cdr_format {
            CdrFormat::Custom => self.cdr_columns.check("asterisk.cdr_columns", problems),
            CdrFormat::Csv => {
                if !self.cdr_columns.is_empty() {
                    problems.add(
                        "asterisk.cdr_columns",
                        "only used with cdr_format = \"custom\"",
                    );
                }
            }
        }
        if self.poll_interval_ms == 0 || self.poll_interval_ms > 1_000 {
            problems.add("asterisk.poll_interval_ms", "must be between 1 and 1000");
        }
        if let Some(ami) = &self.ami {
            if ami.username.is_empty() {
                problems.add("asterisk.ami.username", "is required");
            }
            problems.check(ami.resolve_secret());
        }
        if let (Some(number), Some(n)) = (&self.outbound_display_number, normalizer) {
            if n.normalize(number).is_none() {
                problems.add(
                    "asterisk.outbound_display_number",
                    format!("{number:?} is not a valid phone number"),
                );
            }
        }
        if self.call_log_source != CallLogSource::Cdr && self.ami.is_none() {
            problems.add(
                "asterisk.call_log_source",
                "\"ami\" and \"both\" need an [asterisk.ami] table",
            );
        }
        if !self.originate.agent_channel.contains("{extension}") {
            problems.add(
                "asterisk.originate.agent_channel",
                "must contain {extension}",
            );
        }
    }
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

/// Which writer produced the CDR file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CdrFormat {
    /// cdr_csv's fixed layout (16, 18, 19 or 21 columns, detected by count).
    Csv,
    /// cdr_custom with the columns named in `cdr_columns`.
    Custom,
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
        required_inline_or_file("asterisk.ami.secret", &self.secret, &self.secret_file)
    }
}

/// The CDR reader, the AMI connection and the click-to-call settings are built once at
/// start: every key needs a restart.
impl ReloadKeys for AsteriskConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let AsteriskConfig {
            cdr_csv,
            cdr_format,
            cdr_columns,
            cdr_time_zone,
            cdr_follow_symlink,
            start_at,
            settle_ms,
            max_call_secs,
            poll_interval_ms,
            inbound_contexts,
            outbound_contexts,
            outbound_display_number,
            outbound_dial_prefix,
            voicemail_apps,
            recording_url_template,
            ami,
            call_log_source,
            transfer_logs,
            reconcile_wait_ms,
            originate,
            free_agent,
        } = self;
        let n = new;
        changes.restart("asterisk.cdr_csv", cdr_csv, &n.cdr_csv);
        changes.restart("asterisk.cdr_format", cdr_format, &n.cdr_format);
        changes.restart("asterisk.cdr_columns", cdr_columns, &n.cdr_columns);
        changes.restart("asterisk.cdr_time_zone", cdr_time_zone, &n.cdr_time_zone);
        changes.restart(
            "asterisk.cdr_follow_symlink",
            cdr_follow_symlink,
            &n.cdr_follow_symlink,
        );
        changes.restart("asterisk.start_at", start_at, &n.start_at);
        changes.restart("asterisk.settle_ms", settle_ms, &n.settle_ms);
        changes.restart("asterisk.max_call_secs", max_call_secs, &n.max_call_secs);
        changes.restart(
            "asterisk.poll_interval_ms",
            poll_interval_ms,
            &n.poll_interval_ms,
        );
        changes.restart(
            "asterisk.inbound_contexts",
            inbound_contexts,
            &n.inbound_contexts,
        );
        changes.restart(
            "asterisk.outbound_contexts",
            outbound_contexts,
            &n.outbound_contexts,
        );
        changes.restart(
            "asterisk.outbound_display_number",
            outbound_display_number,
            &n.outbound_display_number,
        );
        changes.restart(
            "asterisk.outbound_dial_prefix",
            outbound_dial_prefix,
            &n.outbound_dial_prefix,
        );
        changes.restart("asterisk.voicemail_apps", voicemail_apps, &n.voicemail_apps);
        changes.restart(
            "asterisk.recording_url_template",
            recording_url_template,
            &n.recording_url_template,
        );
        changes.optional("asterisk.ami", ami, &n.ami);
        changes.restart(
            "asterisk.call_log_source",
            call_log_source,
            &n.call_log_source,
        );
        changes.restart("asterisk.transfer_logs", transfer_logs, &n.transfer_logs);
        changes.restart(
            "asterisk.reconcile_wait_ms",
            reconcile_wait_ms,
            &n.reconcile_wait_ms,
        );
        originate.compare(&n.originate, changes);
        changes.restart("asterisk.free_agent", free_agent, &n.free_agent);
    }
}

/// The AMI client is spawned once at start.
impl ReloadKeys for AmiSettings {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let AmiSettings {
            host,
            port,
            username,
            secret,
            secret_file,
            login,
            events,
        } = self;
        let n = new;
        changes.restart("asterisk.ami.host", host, &n.host);
        changes.restart("asterisk.ami.port", port, &n.port);
        changes.restart("asterisk.ami.username", username, &n.username);
        changes.restart("asterisk.ami.secret", secret, &n.secret);
        changes.restart("asterisk.ami.secret_file", secret_file, &n.secret_file);
        changes.restart("asterisk.ami.login", login, &n.login);
        changes.restart("asterisk.ami.events", events, &n.events);
    }
}

/// The click-to-call control is built once at start.
impl ReloadKeys for OriginateConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let OriginateConfig {
            agent_channel,
            context,
            dial_prefix,
            number_format,
            timeout_ms,
        } = self;
        let n = new;
        changes.restart(
            "asterisk.originate.agent_channel",
            agent_channel,
            &n.agent_channel,
        );
        changes.restart("asterisk.originate.context", context, &n.context);
        changes.restart(
            "asterisk.originate.dial_prefix",
            dial_prefix,
            &n.dial_prefix,
        );
        changes.restart(
            "asterisk.originate.number_format",
            number_format,
            &n.number_format,
        );
        changes.restart("asterisk.originate.timeout_ms", timeout_ms, &n.timeout_ms);
    }
}

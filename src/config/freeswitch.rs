//! `[freeswitch]`, `[freeswitch.esl]` and `[freeswitch.originate]`: where FreeSWITCH's call
//! logs come from (mod_json_cdr files, a mod_cdr_csv file, the event socket or both), how
//! calls are classified, the event-socket connection and click to call; their checks and
//! how a reload treats them (every key needs a restart).
//!
//! These are config types only: the FreeSWITCH modules take plain settings structs of their
//! own, which the wiring fills from these.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::parsed::{CdrColumns, ColumnRules, TimeZone};
use super::reload::{KeyChanges, ReloadKeys};
use super::secret::required_inline_or_file;
use super::{ConfigProblem, DialFormat, Problems, StartAt};
use crate::call::TransferLogs;
use crate::pbx::freeswitch::cdr::templates;

/// What a mod_cdr_csv column list (a stock template's or `cdr_columns`) must hold: the
/// channel variables every call log needs (a time as a stamp or an epoch).
pub const FREESWITCH_CDR_COLUMNS: ColumnRules = ColumnRules {
    required: &[
        &["uuid"],
        &["caller_id_number"],
        &["destination_number"],
        &["context"],
        &["start_stamp", "start_epoch", "start_uepoch"],
        &["end_stamp", "end_epoch", "end_uepoch"],
        &["hangup_cause"],
    ],
    lowercase: false,
    variable_syntax: true,
};

/// `[freeswitch]`: FreeSWITCH's call-log sources and how its calls are classified.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FreeSwitchConfig {
    /// Where call logs come from: `json_cdr`, `cdr_csv`, `esl` or `both` (the event socket
    /// and the file source whose key is set).
    pub call_log_source: FreeSwitchCallLogSource,
    /// How many call logs a transferred call gives: `per_agent` (one per agent who talked to
    /// the lead) or `single` (one, the last agent, the chain in `CallNotes`).
    pub transfer_logs: TransferLogs,
    /// mod_json_cdr's `log-dir` (one file per leg).
    pub json_cdr_dir: Option<PathBuf>,
    /// mod_cdr_csv's file (`.../cdr-csv/Master.csv`).
    pub cdr_csv: Option<PathBuf>,
    /// A template of mod_cdr_csv's stock `cdr_csv.conf.xml` (default `example`, the stock
    /// `default-template`); or name the columns with `cdr_columns` instead.
    pub cdr_template: Option<CdrCsvTemplate>,
    /// The `${variables}` of your own template, in order (checked at load).
    #[serde(deserialize_with = "freeswitch_columns")]
    pub cdr_columns: CdrColumns,
    /// The zone of `*_stamp` values (parsed at load: `zone()`); `*_epoch`/`*_uepoch` are
    /// used whenever present.
    pub cdr_time_zone: TimeZone,
    /// Where carrier calls arrive (stock FreeSWITCH: `public`).
    pub inbound_contexts: Vec<String>,
    /// Where agents dial out; calls in other contexts are skipped and counted.
    pub outbound_contexts: Vec<String>,
    /// After a disposition: set the mod_callcenter agent `available` (status Available,
    /// state Waiting), or `none`.
    pub free_agent: FreeSwitchFreeAgent,
    /// With `call_log_source = "both"`: how long a call seen live waits for its file record.
    pub reconcile_wait_ms: u64,
    /// URL of a recording, for sites that serve recordings from their own web server (wins
    /// over `[recordings]`): `{file}` (the leg's `record_path`/`record_name`, the template's
    /// recording column), `{uniqueid}` (the recording leg's uuid), `{linkedid}` (the call's
    /// id), `{year}`, `{month}`, `{day}` are replaced. Unset: `[asterisk]`'s, when set.
    pub recording_url_template: Option<String>,
    /// With no saved position (the first start), where reading starts in a file source that
    /// already exists (the cdr_csv file, the json_cdr directory's files): `end` or `beginning`.
    pub start_at: StartAt,
    /// `[freeswitch.esl]`: the event socket, for live calls, popups and actions.
    pub esl: Option<EslConfig>,
    /// `[freeswitch.originate]`: how click to call places calls.
    pub originate: FreeSwitchOriginateConfig,
}

fn freeswitch_columns<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CdrColumns, D::Error> {
    Vec::<String>::deserialize(deserializer)
        .map(|names| CdrColumns::new(names, &FREESWITCH_CDR_COLUMNS))
}

impl Default for FreeSwitchConfig {
    fn default() -> Self {
        Self {
            call_log_source: FreeSwitchCallLogSource::JsonCdr,
            transfer_logs: TransferLogs::PerAgent,
            json_cdr_dir: None,
            cdr_csv: None,
            cdr_template: None,
            cdr_columns: CdrColumns::new(Vec::new(), &FREESWITCH_CDR_COLUMNS),
            cdr_time_zone: TimeZone::default(),
            inbound_contexts: vec!["public".into()],
            outbound_contexts: vec!["default".into()],
            free_agent: FreeSwitchFreeAgent::Available,
            reconcile_wait_ms: 60_000,
            recording_url_template: None,
            start_at: StartAt::End,
            esl: None,
            originate: FreeSwitchOriginateConfig::default(),
        }
    }
}

/// `[freeswitch] call_log_source`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FreeSwitchCallLogSource {
    /// mod_json_cdr's files in `json_cdr_dir`.
    JsonCdr,
    /// mod_cdr_csv's `cdr_csv` file.
    CdrCsv,
    /// CHANNEL_HANGUP_COMPLETE over the event socket.
    Esl,
    /// The event socket and the file source that is configured, reconciled.
    Both,
}

/// `[freeswitch] free_agent`: what a disposition does on FreeSWITCH.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FreeSwitchFreeAgent {
    /// `callcenter_config agent set status <agent> Available` (and state Waiting).
    Available,
    /// Nothing.
    None,
}

/// `[freeswitch] cdr_template`: a CSV template of mod_cdr_csv's stock `cdr_csv.conf.xml`
/// (FreeSWITCH 1.10.12; `sql` writes SQL and `opencdrrate` lacks the caller, so neither is
/// offered), or pbxlink's recommended `pbxlink` template.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CdrCsvTemplate {
    /// The stock `default-template`.
    Example,
    /// `example` plus the SIP user agent, client code, RTP stats and `sofia_record_file`.
    Snom,
    /// `example` plus the SIP user agent and `sip_p_rtp_stat`.
    Linksys,
    /// Asterisk's Master.csv layout in FreeSWITCH variables.
    Asterisk,
    /// pbxlink's recommended template (docs/freeswitch-cdr.md): every leg's uuid, the legs
    /// it is bridged to or was originated by, mod_callcenter's member session, epochs and
    /// the recording. Write it into `cdr_csv.conf.xml` as `<template name="pbxlink">`.
    Pbxlink,
}

impl CdrCsvTemplate {
    /// Every template `cdr_template` accepts.
    pub const ALL: [CdrCsvTemplate; 5] = [
        CdrCsvTemplate::Example,
        CdrCsvTemplate::Snom,
        CdrCsvTemplate::Linksys,
        CdrCsvTemplate::Asterisk,
        CdrCsvTemplate::Pbxlink,
    ];

    /// The name the config file (and cdr_csv.conf.xml) uses for it.
    pub fn name(self) -> &'static str {
        match self {
            CdrCsvTemplate::Example => "example",
            CdrCsvTemplate::Snom => "snom",
            CdrCsvTemplate::Linksys => "linksys",
            CdrCsvTemplate::Asterisk => "asterisk",
            CdrCsvTemplate::Pbxlink => "pbxlink",
        }
    }

    /// The template's `${variables}`, in the order it writes them: read from the template's
    /// text (`crate::pbx::freeswitch::cdr::templates`), so the two cannot drift apart.
    pub fn columns(self) -> Vec<String> {
        templates::layout(self.name())
            .map(|layout| layout.columns)
            .unwrap_or_default()
    }
}

/// The file source `call_log_source` selects, with what reading it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeSwitchFileSource {
    /// mod_json_cdr's directory.
    JsonCdr {
        /// `json_cdr_dir`.
        dir: PathBuf,
    },
    /// mod_cdr_csv's file.
    CdrCsv {
        /// `cdr_csv`.
        path: PathBuf,
        /// The columns of its template, in order.
        columns: Vec<String>,
    },
}

impl FreeSwitchConfig {
    /// With `call_log_source = "both"`: how long a live call waits for its file record.
    pub fn reconcile_wait(&self) -> Duration {
        Duration::from_millis(self.reconcile_wait_ms)
    }

    /// Whether call logs come from the event socket (`esl` or `both`).
    pub fn logs_from_esl(&self) -> bool {
        matches!(
            self.call_log_source,
            FreeSwitchCallLogSource::Esl | FreeSwitchCallLogSource::Both
        )
    }

    /// The mod_cdr_csv columns in order: `cdr_columns` when set, else the template's
    /// (`example` when neither is set).
    pub fn cdr_column_names(&self) -> Vec<String> {
        if self.cdr_columns.is_empty() {
            self.cdr_template
                .unwrap_or(CdrCsvTemplate::Example)
                .columns()
        } else {
            self.cdr_columns.names().to_vec()
        }
    }

    /// The file source `call_log_source` selects (None for `esl`). For `both` it is the one
    /// whose key is set; the check refuses `both` with neither or both keys set. Keys of a
    /// file source that is not selected are allowed and unused.
    pub fn file_source(&self) -> Option<FreeSwitchFileSource> {
        let json = || {
            self.json_cdr_dir
                .clone()
                .map(|dir| FreeSwitchFileSource::JsonCdr { dir })
        };
        let csv = || {
            self.cdr_csv
                .clone()
                .map(|path| FreeSwitchFileSource::CdrCsv {
                    path,
                    columns: self.cdr_column_names(),
                })
        };
        match self.call_log_source {
            FreeSwitchCallLogSource::JsonCdr => json(),
            FreeSwitchCallLogSource::CdrCsv => csv(),
            FreeSwitchCallLogSource::Esl => None,
            FreeSwitchCallLogSource::Both => match (json(), csv()) {
                (Some(json), None) => Some(json),
                (None, Some(csv)) => Some(csv),
                _ => None,
            },
        }
    }

    /// Every problem of `[freeswitch]` and its sub-tables.
    pub(crate) fn check(&self, problems: &mut Problems) {
        use FreeSwitchCallLogSource as Source;
        match self.call_log_source {
            Source::JsonCdr => {
                if self.json_cdr_dir.is_none() {
                    problems.add(
                        "freeswitch.json_cdr_dir",
                        "is required with call_log_source = \"json_cdr\"",
                    );
                }
            }
            Source::CdrCsv => {
                if self.cdr_csv.is_none() {
                    problems.add(
                        "freeswitch.cdr_csv",
                        "is required with call_log_source = \"cdr_csv\"",
                    );
                }
            }
            Source::Esl => {}
            Source::Both => match (&self.json_cdr_dir, &self.cdr_csv) {
                (Some(_), None) | (None, Some(_)) => {}
                (None, None) => {
                    problems.add(
                        "freeswitch.call_log_source",
                        "\"both\" is the event socket and a file source: set json_cdr_dir or cdr_csv",
                    );
                }
                (Some(_), Some(_)) => {
                    problems.add(
                        "freeswitch.call_log_source",
                        "\"both\" takes one file source: set json_cdr_dir or cdr_csv, not both",
                    );
                }
            },
        }
        if self.logs_from_esl() && self.esl.is_none() {
            problems.add(
                "freeswitch.call_log_source",
                "\"esl\" and \"both\" need a [freeswitch.esl] table",
            );
        }
        if !self.cdr_columns.is_empty() {
            if self.cdr_template.is_some() {
                problems.add(
                    "freeswitch.cdr_template",
                    "set cdr_template or cdr_columns, not both",
                );
            }
            // Checked whether or not the file is read, like every other key.
            self.cdr_columns.check("freeswitch.cdr_columns", problems);
        }
        self.cdr_time_zone
            .check("freeswitch.cdr_time_zone", problems);
        for (key, contexts) in [
            ("freeswitch.inbound_contexts", &self.inbound_contexts),
            ("freeswitch.outbound_contexts", &self.outbound_contexts),
        ] {
            if let Some(i) = contexts.iter().position(|c| c.trim().is_empty()) {
                problems.add(format!("{key}[{i}]"), "must not be empty");
            }
        }
        if let Some(esl) = &self.esl {
            esl.check(problems);
        }
        self.originate.check(problems);
    }
}

/// `[freeswitch.esl]`: how to reach FreeSWITCH's event socket (mod_event_socket, inbound).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EslConfig {
    /// Host of the event socket.
    pub host: String,
    /// TCP port of the event socket.
    pub port: u16,
    /// event_socket.conf.xml's password (or `password_file`).
    pub password: Option<String>,
    /// File holding the password (first line).
    pub password_file: Option<PathBuf>,
}

impl Default for EslConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8021,
            password: None,
            password_file: None,
        }
    }
}

impl EslConfig {
    /// The password: inline, else from `password_file`.
    pub fn resolve_password(&self) -> Result<String, ConfigProblem> {
        required_inline_or_file(
            "freeswitch.esl.password",
            &self.password,
            &self.password_file,
        )
    }

    fn check(&self, problems: &mut Problems) {
        if self.host.trim().is_empty() {
            problems.add("freeswitch.esl.host", "is required");
        }
        if self.port == 0 {
            problems.add("freeswitch.esl.port", "must be above 0");
        }
        problems.check(self.resolve_password());
    }
}

/// `[freeswitch.originate]`: click to call rings the agent, then dials the lead.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FreeSwitchOriginateConfig {
    /// How the agent is rung; `{extension}` is replaced, e.g. `user/{extension}`.
    pub agent_endpoint: String,
    /// The dialplan context the lead's number is dialled in.
    pub context: String,
    /// The dialplan (`XML`).
    pub dialplan: String,
    /// How the lead's number is written: `e164_digits` (default), `e164` or `national`.
    pub number_format: DialFormat,
    /// How long the agent's phone rings.
    pub timeout_ms: u64,
}

impl Default for FreeSwitchOriginateConfig {
    fn default() -> Self {
        Self {
            agent_endpoint: "user/{extension}".into(),
            context: "default".into(),
            dialplan: "XML".into(),
            number_format: DialFormat::E164Digits,
            timeout_ms: 30_000,
        }
    }
}

impl FreeSwitchOriginateConfig {
    /// How long the agent's phone rings.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    fn check(&self, problems: &mut Problems) {
        if !self.agent_endpoint.contains("{extension}") {
            problems.add(
                "freeswitch.originate.agent_endpoint",
                "must contain {extension}",
            );
        }
        for (key, value) in [
            ("freeswitch.originate.context", &self.context),
            ("freeswitch.originate.dialplan", &self.dialplan),
        ] {
            if value.trim().is_empty() {
                problems.add(key, "must not be empty");
            }
        }
        if self.timeout_ms == 0 {
            problems.add("freeswitch.originate.timeout_ms", "must be above 0");
        }
    }
}

/// The FreeSWITCH sources, event socket and click-to-call control are built once at start:
/// every key needs a restart.
impl ReloadKeys for FreeSwitchConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let FreeSwitchConfig {
            call_log_source,
            transfer_logs,
            json_cdr_dir,
            cdr_csv,
            cdr_template,
            cdr_columns,
            cdr_time_zone,
            inbound_contexts,
            outbound_contexts,
            free_agent,
            reconcile_wait_ms,
            recording_url_template,
            start_at,
            esl,
            originate,
        } = self;
        let n = new;
        changes.restart(
            "freeswitch.call_log_source",
            call_log_source,
            &n.call_log_source,
        );
        changes.restart("freeswitch.transfer_logs", transfer_logs, &n.transfer_logs);
        changes.restart("freeswitch.json_cdr_dir", json_cdr_dir, &n.json_cdr_dir);
        changes.restart("freeswitch.cdr_csv", cdr_csv, &n.cdr_csv);
        changes.restart("freeswitch.cdr_template", cdr_template, &n.cdr_template);
        changes.restart("freeswitch.cdr_columns", cdr_columns, &n.cdr_columns);
        changes.restart("freeswitch.cdr_time_zone", cdr_time_zone, &n.cdr_time_zone);
        changes.restart(
            "freeswitch.inbound_contexts",
            inbound_contexts,
            &n.inbound_contexts,
        );
        changes.restart(
            "freeswitch.outbound_contexts",
            outbound_contexts,
            &n.outbound_contexts,
        );
        changes.restart("freeswitch.free_agent", free_agent, &n.free_agent);
        changes.restart(
            "freeswitch.reconcile_wait_ms",
            reconcile_wait_ms,
            &n.reconcile_wait_ms,
        );
        changes.restart(
            "freeswitch.recording_url_template",
            recording_url_template,
            &n.recording_url_template,
        );
        changes.restart("freeswitch.start_at", start_at, &n.start_at);
        changes.optional("freeswitch.esl", esl, &n.esl);
        originate.compare(&n.originate, changes);
    }
}

/// The event-socket client is spawned once at start.
impl ReloadKeys for EslConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let EslConfig {
            host,
            port,
            password,
            password_file,
        } = self;
        let n = new;
        changes.restart("freeswitch.esl.host", host, &n.host);
        changes.restart("freeswitch.esl.port", port, &n.port);
        changes.restart("freeswitch.esl.password", password, &n.password);
        changes.restart(
            "freeswitch.esl.password_file",
            password_file,
            &n.password_file,
        );
    }
}

/// The click-to-call control is built once at start.
impl ReloadKeys for FreeSwitchOriginateConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let FreeSwitchOriginateConfig {
            agent_endpoint,
            context,
            dialplan,
            number_format,
            timeout_ms,
        } = self;
        let n = new;
        changes.restart(
            "freeswitch.originate.agent_endpoint",
            agent_endpoint,
            &n.agent_endpoint,
        );
        changes.restart("freeswitch.originate.context", context, &n.context);
        changes.restart("freeswitch.originate.dialplan", dialplan, &n.dialplan);
        changes.restart(
            "freeswitch.originate.number_format",
            number_format,
            &n.number_format,
        );
        changes.restart("freeswitch.originate.timeout_ms", timeout_ms, &n.timeout_ms);
    }
}

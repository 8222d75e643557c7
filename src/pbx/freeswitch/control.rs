//! The actions pbxlink takes on FreeSWITCH, as the exact event-socket commands to send and
//! the readers of FreeSWITCH's answers. Pure: the wiring sends the [`Command`]s over the ESL
//! client and hands the answers back here.
//!
//! - Click to call ([`click_to_call`]): `bgapi originate {origination_uuid=<call id>,
//!   origination_caller_id_number=<virtual number>,pbxlink_lead_id=<id>,
//!   pbxlink_lead_number=<lead as LeadSquared sent it>,originate_timeout=<s>}<agent endpoint>
//!   <lead> <dialplan> <context>`. FreeSWITCH rings the agent (`user/{extension}` by default);
//!   once the agent answers, it sends that leg to `<lead>` in `<dialplan> <context>`, whose
//!   dialplan dials the lead. The call's id is chosen by pbxlink (`origination_uuid`), so the
//!   call log ([`crate::pbx::freeswitch::tracker`], json_cdr, cdr_csv) carries it, with the
//!   lead id and the lead's number as `variable_pbxlink_lead_id` /
//!   `variable_pbxlink_lead_number`. The answer comes in two steps: the `command/reply`
//!   (`+OK Job-UUID: …`, at once: [`bgapi_accepted`]) and the BACKGROUND_JOB event carrying
//!   the job's result ([`originate_result`]): `+OK <uuid>` once the agent answered, or
//!   `-ERR <cause>` (`USER_NOT_REGISTERED` at once, `NO_ANSWER` after `originate_timeout`).
//! - Disposition ([`free_agent_commands`]): `api callcenter_config agent set status <agent>
//!   'Available'` and `api callcenter_config agent set state <agent> 'Waiting'`, unless
//!   `free_agent = "none"`; each answered by an `api/response` read with [`api_result`]. The
//!   agent is the `[[agents]] callcenter_agent`, by default the extension
//!   ([`callcenter_agent_name`]).
//!
//! Every value is checked before it goes into a command: the extension, the lead's number,
//! the caller id, the ids and the agent name must be plain tokens (letters, digits and a few
//! signs, see [`check_token`]); the builders of [`crate::pbx::freeswitch::esl::command`] then
//! refuse anything that could end the line, an argument or a `{var=value}` (CR, LF, blanks,
//! quotes, `,` `{` `}` ...). A refused value sends nothing and names the value.

use std::fmt;

use crate::pbx::PbxError;
use crate::pbx::freeswitch::esl::{
    BackgroundJob, CallcenterAgentCommand, Command, CommandError, Originate, Reply,
};
use crate::phone::E164;

/// How the lead's number is written in the originate (the extension the dialplan matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsNumberFormat {
    /// `+4930123457`
    E164,
    /// `4930123457` (country code and national number, no `+`; the default, which an
    /// ordinary `^(\d+)$` condition matches).
    #[default]
    E164Digits,
    /// `30123457`
    National,
}

impl FsNumberFormat {
    /// The config name (`e164`, `e164_digits`, `national`).
    pub fn name(self) -> &'static str {
        match self {
            FsNumberFormat::E164 => "e164",
            FsNumberFormat::E164Digits => "e164_digits",
            FsNumberFormat::National => "national",
        }
    }

    /// `number` written this way.
    pub fn format(self, number: &E164) -> String {
        match self {
            FsNumberFormat::E164 => number.to_e164(),
            FsNumberFormat::E164Digits => number.to_e164_digits(),
            FsNumberFormat::National => number.national.clone(),
        }
    }
}

/// `[freeswitch.originate]`: how click to call rings the agent and dials the lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOriginateSettings {
    /// The agent's endpoint; `{extension}` is replaced (`user/{extension}`).
    pub agent_endpoint: String,
    /// The context the lead's number is dialled in.
    pub context: String,
    /// The dialplan (`XML`).
    pub dialplan: String,
    /// How the lead's number is written.
    pub number_format: FsNumberFormat,
    /// How long the agent's phone rings (`originate_timeout`, whole seconds, rounded up).
    pub timeout_ms: u64,
}

impl Default for FsOriginateSettings {
    fn default() -> Self {
        Self {
            agent_endpoint: "user/{extension}".into(),
            context: "default".into(),
            dialplan: "XML".into(),
            number_format: FsNumberFormat::E164Digits,
            timeout_ms: 30_000,
        }
    }
}

/// What a disposition does on FreeSWITCH (`[freeswitch] free_agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FreeAgent {
    /// mod_callcenter agent status `Available` and state `Waiting`.
    #[default]
    Available,
    /// Nothing.
    None,
}

/// One click to call, as the HTTP API asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsClickToCall {
    /// The id the call will have (`origination_uuid`: the agent leg's uuid, so the call
    /// log's `CallSessionId`); [`new_uuid`] makes one.
    pub call_id: String,
    /// The agent's extension.
    pub agent_extension: String,
    /// The lead's number.
    pub lead: E164,
    /// The lead's number exactly as LeadSquared sent it (`PhoneNumberWithCountryCode`),
    /// carried to the call log as its lead number; `None` to use `lead` in E.164.
    pub lead_as_sent: Option<String>,
    /// The caller id (the virtual number) the agent's phone shows and the dialplan may
    /// present to the lead.
    pub caller_id: String,
    /// The LeadSquared lead id, when LeadSquared sent one.
    pub lead_id: Option<String>,
}

/// A click to call ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginatePlan {
    /// `bgapi originate …` with its `Job-UUID` header.
    pub command: Command,
    /// The `Job-UUID` the BACKGROUND_JOB event will carry.
    pub job_uuid: String,
    /// The call's id (the agent leg's uuid).
    pub call_id: String,
}

/// Why an action was not sent. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A value that is not a plain token.
    #[error(
        "refused to send to FreeSWITCH: {what} {value:?} holds {found:?} (only letters, digits \
         and {allowed} are sent)"
    )]
    NotAToken {
        /// What the value is.
        what: &'static str,
        /// The value (at most 80 characters, escaped).
        value: String,
        /// The first character refused.
        found: char,
        /// The signs allowed besides letters and digits.
        allowed: &'static str,
    },
    /// An empty or overlong value.
    #[error("refused to send to FreeSWITCH: {what} is {problem}")]
    BadLength {
        /// What the value is.
        what: &'static str,
        /// `empty` or `N bytes long (at most M)`.
        problem: String,
    },
    /// `[freeswitch.originate] agent_endpoint` without `{extension}`.
    #[error(
        "[freeswitch.originate] agent_endpoint {0:?} has no {{extension}}: every click to call \
         would ring the same phone (write e.g. \"user/{{extension}}\")"
    )]
    EndpointTemplate(String),
    /// The command builders refused a value.
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<ControlError> for PbxError {
    fn from(e: ControlError) -> Self {
        PbxError::Unsafe(e.to_string())
    }
}

/// FreeSWITCH said no: its reason word (`USER_NOT_REGISTERED`, `NO_ANSWER`,
/// `Agent not found!` ...) and what it means for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRefusal {
    /// What was asked (`click to call`, `freeing agent 100`).
    pub action: String,
    /// FreeSWITCH's reason as it wrote it after `-ERR` (bounded, escaped), or its whole
    /// answer when it is not `-ERR …`.
    pub reason: String,
}

impl FsRefusal {
    fn new(action: impl Into<String>, reason: &str) -> Self {
        Self {
            action: action.into(),
            reason: crate::logtext::excerpt(reason.trim().as_bytes(), 200),
        }
    }

    /// What the reason means, for the causes click to call meets.
    pub fn meaning(&self) -> Option<&'static str> {
        Some(match self.reason.split_whitespace().next()? {
            "USER_NOT_REGISTERED" => "the agent's phone is not registered with FreeSWITCH",
            "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" => {
                "the agent's phone did not answer in time ([freeswitch.originate] timeout_ms)"
            }
            "USER_BUSY" => "the agent's phone is busy",
            "CALL_REJECTED" => "the agent's phone rejected the call",
            "SUBSCRIBER_ABSENT" | "UNALLOCATED_NUMBER" | "NO_ROUTE_DESTINATION" => {
                "FreeSWITCH has no such user or endpoint ([freeswitch.originate] agent_endpoint)"
            }
            "ORIGINATOR_CANCEL" => "the call was cancelled before the agent answered",
            "DESTINATION_OUT_OF_ORDER"
            | "NORMAL_TEMPORARY_FAILURE"
            | "RECOVERY_ON_TIMER_EXPIRE" => "the agent's phone could not be reached",
            "Agent" => "mod_callcenter has no such agent ([[agents]] callcenter_agent)",
            _ => return None,
        })
    }
}

impl fmt::Display for FsRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FreeSWITCH refused {}: {}", self.action, self.reason)?;
        if let Some(m) = self.meaning() {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

impl std::error::Error for FsRefusal {}

impl From<FsRefusal> for PbxError {
    fn from(e: FsRefusal) -> Self {
        PbxError::Refused(e.to_string())
    }
}

/// Signs allowed in an extension, a callcenter agent name and a uuid besides letters and
/// digits: none of them is syntax in a FreeSWITCH argument, a dial string or a `{var}` block
/// (`@` names a domain in `user/100@domain` and a callcenter agent `100@default`).
pub const TOKEN_SIGNS: &str = "+ * # . _ - @";

/// Longest value put into a command.
pub const MAX_TOKEN_BYTES: usize = 128;

/// Refuses `value` unless it is a plain token: ASCII letters and digits and
/// [`TOKEN_SIGNS`], not empty, at most [`MAX_TOKEN_BYTES`].
pub fn check_token(what: &'static str, value: &str) -> Result<(), ControlError> {
    if value.is_empty() {
        return Err(ControlError::BadLength {
            what,
            problem: "empty".into(),
        });
    }
    if value.len() > MAX_TOKEN_BYTES {
        return Err(ControlError::BadLength {
            what,
            problem: format!("{} bytes long (at most {MAX_TOKEN_BYTES})", value.len()),
        });
    }
    let bad = value.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '-' | '@'))
    });
    match bad {
        Some(found) => Err(ControlError::NotAToken {
            what,
            value: crate::logtext::excerpt(value.as_bytes(), 80),
            found,
            allowed: TOKEN_SIGNS,
        }),
        None => Ok(()),
    }
}

/// A fresh random (version 4) uuid, for `origination_uuid` and `Job-UUID`.
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The agent's endpoint: the template with `{extension}` replaced.
pub fn agent_endpoint(
    settings: &FsOriginateSettings,
    extension: &str,
) -> Result<String, ControlError> {
    if !settings.agent_endpoint.contains("{extension}") {
        return Err(ControlError::EndpointTemplate(crate::logtext::excerpt(
            settings.agent_endpoint.as_bytes(),
            80,
        )));
    }
    check_token("agent extension", extension)?;
    Ok(settings.agent_endpoint.replace("{extension}", extension))
}

/// The `bgapi originate` of a click to call (see the module docs), with `job_uuid` as its
/// `Job-UUID`.
pub fn click_to_call(
    settings: &FsOriginateSettings,
    request: &FsClickToCall,
    job_uuid: &str,
) -> Result<OriginatePlan, ControlError> {
    check_token("call id", &request.call_id)?;
    check_token("Job-UUID", job_uuid)?;
    check_token("caller id (virtual number)", &request.caller_id)?;
    let endpoint = agent_endpoint(settings, &request.agent_extension)?;
    let dial = settings.number_format.format(&request.lead);
    check_token("the lead's number", &dial)?;
    let lead_as_sent = request
        .lead_as_sent
        .clone()
        .unwrap_or_else(|| request.lead.to_e164());
    check_token("the lead's number as LeadSquared sent it", &lead_as_sent)?;
    let timeout_s = settings.timeout_ms.div_ceil(1000).max(1);
    let mut originate = Originate::new(&endpoint, &dial)?
        .variable("origination_uuid", &request.call_id)?
        .variable("origination_caller_id_number", &request.caller_id)?;
    if let Some(id) = &request.lead_id {
        check_token("lead id", id)?;
        originate = originate.variable("pbxlink_lead_id", id)?;
    }
    let originate = originate
        .variable("pbxlink_lead_number", &lead_as_sent)?
        .variable("originate_timeout", &timeout_s.to_string())?
        .dialplan(&settings.dialplan)?
        .context(&settings.context)?;
    Ok(OriginatePlan {
        command: originate.bgapi(Some(job_uuid))?,
        job_uuid: job_uuid.to_owned(),
        call_id: request.call_id.clone(),
    })
}

/// Reads the `command/reply` to a `bgapi`: the job's uuid when FreeSWITCH took the job
/// (`+OK Job-UUID: <uuid>`), its refusal otherwise (`-ERR …`).
pub fn bgapi_accepted(reply: &Reply, action: &str) -> Result<String, FsRefusal> {
    if !reply.is_ok() {
        let text = reply.text();
        let reason = reply.error().unwrap_or_else(|| text.into_owned());
        return Err(FsRefusal::new(action, &reason));
    }
    let uuid = reply.job_uuid().map(|u| u.into_owned()).or_else(|| {
        reply
            .text()
            .strip_prefix("+OK Job-UUID:")
            .map(|u| u.trim().to_owned())
    });
    uuid.filter(|u| !u.is_empty())
        .ok_or_else(|| FsRefusal::new(action, "+OK without a Job-UUID"))
}

/// Reads the BACKGROUND_JOB of a click to call's originate: the agent leg's uuid once the
/// agent answered (`+OK <uuid>`), FreeSWITCH's cause otherwise (`-ERR USER_NOT_REGISTERED`).
pub fn originate_result(job: &BackgroundJob) -> Result<String, FsRefusal> {
    match job.outcome() {
        Ok(uuid) if !uuid.is_empty() => Ok(uuid.to_owned()),
        Ok(_) => Err(FsRefusal::new(
            "click to call",
            "+OK without the call's uuid",
        )),
        Err("") => Err(FsRefusal::new("click to call", "an empty answer")),
        Err(reason) => Err(FsRefusal::new("click to call", reason)),
    }
}

/// The mod_callcenter agent name of an agent: its `[[agents]] callcenter_agent`, by default
/// its extension.
pub fn callcenter_agent_name<'a>(extension: &'a str, configured: Option<&'a str>) -> &'a str {
    configured.filter(|c| !c.is_empty()).unwrap_or(extension)
}

/// The `api` commands a disposition sends to free `agent` (none for [`FreeAgent::None`]):
/// status `Available`, then state `Waiting`.
pub fn free_agent_commands(
    free_agent: FreeAgent,
    agent: &str,
) -> Result<Vec<Command>, ControlError> {
    match free_agent {
        FreeAgent::None => Ok(Vec::new()),
        FreeAgent::Available => {
            check_token("callcenter agent", agent)?;
            Ok(vec![
                CallcenterAgentCommand::set_status(agent, "Available")?.api()?,
                CallcenterAgentCommand::set_state(agent, "Waiting")?.api()?,
            ])
        }
    }
}

/// `api callcenter_config agent get status <agent>` (answers e.g. `Available`).
pub fn agent_status_query(agent: &str) -> Result<Command, ControlError> {
    check_token("callcenter agent", agent)?;
    Ok(Command::api(&format!(
        "callcenter_config agent get status {agent}"
    ))?)
}

/// Reads an `api/response` body: `Ok(text)` unless it is `-ERR …` (`-ERR Agent not
/// found!`), which is FreeSWITCH's refusal of `action`.
pub fn api_result(body: &[u8], action: &str) -> Result<String, FsRefusal> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.strip_prefix("-ERR") {
        Some(reason) => Err(FsRefusal::new(action, reason)),
        None if text.starts_with("-USAGE") => Err(FsRefusal::new(action, text)),
        None => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests;

//! Click to call and dispositions on Asterisk: the HTTP API's neutral [`PbxControl`]
//! requests mapped to AMI actions. Click to call is an `Originate` of the agent's channel
//! (`[asterisk.originate] agent_channel`, `PJSIP/{extension}`) into `context` at the lead's
//! number (`dial_prefix` + `number_format`), the lead id set as the channel variables
//! `LEADID` and `CDR(leadid)`; freeing an agent after a disposition is a `QueuePause` with
//! `Paused: false` on the agent's queue interface (`[[agents]] queue_interface`, else the
//! agent channel). Every value is checked or escaped for the part of Asterisk that reads it.

use std::time::Duration;

use super::ami::{Action, AmiClient, AmiError, ConnectionState};
use crate::call::AgentInfo;
use crate::config::{DialFormat, FreeAgent, OriginateConfig};
use crate::pbx::{AgentRelease, OriginateRequest, PbxControl, PbxError, PbxFuture};

/// The channel variables the lead id is set as: the dialplan reads `LEADID`, the CDR
/// carries `CDR(leadid)` (a cdr_custom column), so the call log finds the lead.
pub const LEAD_ID_VARIABLES: [&str; 2] = ["LEADID", "CDR(leadid)"];

/// The channel variables the lead's number (as LeadSquared sent it) is set as; the tracker
/// reads `LEADNUMBER`, a cdr_custom column `CDR(leadnumber)`.
pub const LEAD_NUMBER_VARIABLES: [&str; 2] = ["LEADNUMBER", "CDR(leadnumber)"];

/// How long an AMI action may take before the HTTP caller gets an error.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// [`PbxControl`] for Asterisk, over AMI.
#[derive(Debug, Clone)]
pub struct AsteriskControl {
    ami: AmiClient,
    originate: OriginateConfig,
    free_agent: FreeAgent,
}

impl AsteriskControl {
    /// Control over `ami`, placing calls as `[asterisk.originate]` says and freeing agents
    /// after a disposition as `[asterisk] free_agent` says.
    pub fn new(ami: AmiClient, originate: OriginateConfig, free_agent: FreeAgent) -> Self {
        Self {
            ami,
            originate,
            free_agent,
        }
    }
}

/// The extension dialled for the lead: `dial_prefix`, then the number as `number_format`
/// writes it.
pub fn lead_dial(originate: &OriginateConfig, request: &OriginateRequest) -> String {
    let number = &request.lead_number;
    let written = match originate.number_format {
        DialFormat::E164 => number.to_e164(),
        DialFormat::E164Digits => number.to_e164_digits(),
        DialFormat::National => number.national.clone(),
    };
    format!("{}{written}", originate.dial_prefix)
}

/// The queue member interface freed after a disposition: the agent's `queue_interface`,
/// else its originate channel (`PJSIP/{extension}`).
pub fn queue_interface(originate: &OriginateConfig, agent: &AgentInfo) -> String {
    agent.queue_interface.clone().unwrap_or_else(|| {
        originate
            .agent_channel
            .replace("{extension}", &agent.extension)
    })
}

/// The `QueuePause` that puts `interface` back into service.
pub fn unpause_action(interface: &str) -> Result<Action, PbxError> {
    Action::new("QueuePause")
        .header("Interface", interface)
        .and_then(|a| a.header("Paused", "false"))
        .and_then(|a| a.header("Reason", "pbxlink: call disposed"))
        .map_err(pbx_error)
}

/// A fresh Originate `ChannelId`: Asterisk takes it as the agent channel's uniqueid, so it
/// becomes the call's Linkedid, which the call log carries.
pub fn new_channel_id() -> String {
    let now = chrono::Utc::now();
    format!(
        "pbxlink-{}.{:06}",
        now.timestamp(),
        rand::random::<u32>() % 1_000_000
    )
}

fn pbx_error(e: AmiError) -> PbxError {
    match e {
        AmiError::HeaderInjection { key } => {
            PbxError::Unsafe(format!("line break or NUL in {key}"))
        }
        AmiError::InvalidKey { key } | AmiError::ReservedKey { key } => PbxError::Unsafe(key),
        e @ (AmiError::LineTooLong { .. }
        | AmiError::TooManyHeaders { .. }
        | AmiError::InvalidVariable { .. }) => PbxError::Unsafe(e.to_string()),
        AmiError::NotConnected { .. } | AmiError::Disconnected { .. } => PbxError::NotConnected,
        AmiError::Timeout { .. } => PbxError::Timeout,
        AmiError::Rejected { message, .. } => PbxError::Refused(message),
        other => PbxError::Refused(other.to_string()),
    }
}

/// Refuses `value` (the `what` of an Originate) unless it is one dialplan token: ASCII
/// letters, digits and `+ * # . _ -`. Anything else is read specially by some part of
/// Asterisk that gets it: `/` splits a channel into technology and resource (and PJSIP's
/// resource again), `@` names a context (`Local/100@agents`), `,` and `|` separate
/// arguments, `&` separates the channels of a `Dial` string that the dialplan may build
/// from `${EXTEN}`, quotes, brackets and `<`/`>` are caller-id and argument syntax, `$`,
/// `{`, `}` are expression syntax, and blanks and control characters end or change a value.
pub fn check_dial_token(what: &str, value: &str) -> Result<(), PbxError> {
    let bad = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '-')));
    match bad {
        _ if value.is_empty() => Err(PbxError::Unsafe(format!("{what} is empty"))),
        _ if value.len() > 80 => Err(PbxError::Unsafe(format!(
            "{what} is {} bytes long (at most 80)",
            value.len()
        ))),
        Some(c) => Err(PbxError::Unsafe(format!(
            "{what} {:?} holds {c:?}, which Asterisk would read as syntax (only letters, digits and + * # . _ - are sent)",
            crate::logtext::excerpt(value.as_bytes(), 80)
        ))),
        None => Ok(()),
    }
}

/// Why Asterisk refused an Originate, with what was tried and the keys that change it.
pub fn originate_refused(
    asterisk_said: &str,
    channel: &str,
    exten: &str,
    originate: &OriginateConfig,
) -> String {
    format!(
        "Asterisk refused to originate: {said} Tried extension {exten:?} in context {context:?} \
         (agent channel {channel:?}). The extension is the lead's number written as \
         [asterisk.originate] number_format = \"{format}\" after dial_prefix = {prefix:?}; \
         the context is [asterisk.originate] context. Change those keys (e.g. number_format = \
         \"e164_digits\", which an `exten => _X.` pattern matches) or the dialplan so that \
         the context has that extension.",
        said = crate::logtext::excerpt(asterisk_said.trim().as_bytes(), 200),
        context = originate.context,
        format = originate.number_format.name(),
        prefix = originate.dial_prefix,
    )
}

impl AsteriskControl {
    /// Sends `action`; `Response: Error` and AMI failures become [`PbxError`]s.
    async fn perform(&self, action: Action) -> Result<(), PbxError> {
        let response = self
            .ami
            .send(action, ACTION_TIMEOUT)
            .await
            .map_err(pbx_error)?;
        if response.is_error() {
            return Err(PbxError::Refused(
                response
                    .get("Message")
                    .unwrap_or("Asterisk answered Error")
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// The Originate for `request` as `[asterisk.originate]` says, every value checked or
/// escaped for the part of Asterisk that reads it.
pub fn originate_action(
    originate: &OriginateConfig,
    request: &OriginateRequest,
) -> Result<Action, PbxError> {
    let extension = &request.agent.extension;
    let dial = lead_dial(originate, request);
    let caller_id = request.caller_id.to_e164();
    check_dial_token("agent extension", extension)?;
    check_dial_token(
        "the number to dial (dial_prefix + the lead's number)",
        &dial,
    )?;
    check_dial_token("[asterisk.originate] context", &originate.context)?;
    check_dial_token("caller id", &caller_id)?;
    check_dial_token("call id", &request.call_id)?;
    let channel = originate.agent_channel.replace("{extension}", extension);
    let mut action = Action::new("Originate")
        .header("Channel", channel)
        .and_then(|a| a.header("Context", originate.context.as_str()))
        .and_then(|a| a.header("Exten", dial))
        .and_then(|a| a.header("Priority", "1"))
        .and_then(|a| a.header("CallerID", format!("<{caller_id}>")))
        .and_then(|a| a.header("Timeout", originate.timeout_ms.to_string()))
        .and_then(|a| a.header("ChannelId", request.call_id.as_str()))
        .and_then(|a| a.header("Async", "true"))
        .map_err(pbx_error)?;
    if let Some(lead_id) = &request.lead_id {
        for name in LEAD_ID_VARIABLES {
            // One `Variable:` header per variable, the value escaped for Asterisk's
            // argument splitter: a ',' in a lead id cannot set another variable.
            action = action.variable(name, lead_id).map_err(pbx_error)?;
        }
    }
    // The lead's number as LeadSquared sent it: the call log keeps it instead of re-reading
    // the dialled digits (`LEADNUMBER` in AMI events, `CDR(leadnumber)` for cdr_custom).
    let lead_number = request.lead_number.to_e164();
    for name in LEAD_NUMBER_VARIABLES {
        action = action.variable(name, &lead_number).map_err(pbx_error)?;
    }
    Ok(action)
}

impl AsteriskControl {
    async fn place(&self, request: OriginateRequest) -> Result<(), PbxError> {
        let action = originate_action(&self.originate, &request)?;
        let channel = action.get("Channel").unwrap_or_default().to_owned();
        let exten = action.get("Exten").unwrap_or_default().to_owned();
        // Async: Asterisk answers once the call is queued; the agent's phone rings next.
        match self.perform(action).await {
            Err(PbxError::Refused(said)) => {
                let why = originate_refused(&said, &channel, &exten, &self.originate);
                tracing::warn!(call_id = %request.call_id, "{why}");
                Err(PbxError::Refused(why))
            }
            other => other,
        }
    }

    async fn unpause(&self, agent: Option<&AgentInfo>) -> AgentRelease {
        match (self.free_agent, agent) {
            (FreeAgent::None, _) => AgentRelease::NotConfigured,
            (FreeAgent::Unpause, None) => {
                AgentRelease::NotDone("no known agent to unpause".to_owned())
            }
            (FreeAgent::Unpause, Some(agent)) => {
                let interface = queue_interface(&self.originate, agent);
                let result = match unpause_action(&interface) {
                    Ok(action) => self.perform(action).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => AgentRelease::Done(format!("{interface} unpaused")),
                    Err(e) => {
                        let shown = crate::logtext::Escaped(&interface);
                        tracing::error!(interface = %shown, "unpausing the agent failed: {e}");
                        AgentRelease::NotDone(format!("unpausing {interface} failed: {e}"))
                    }
                }
            }
        }
    }
}

impl PbxControl for AsteriskControl {
    fn new_call_id(&self) -> String {
        new_channel_id()
    }

    fn originate(&self, request: OriginateRequest) -> PbxFuture<'_, Result<(), PbxError>> {
        Box::pin(self.place(request))
    }

    fn free_agent<'a>(&'a self, agent: Option<&'a AgentInfo>) -> PbxFuture<'a, AgentRelease> {
        Box::pin(self.unpause(agent))
    }

    fn is_connected(&self) -> bool {
        matches!(
            *self.ami.state().borrow(),
            ConnectionState::Connected { .. }
        )
    }
}

#[cfg(test)]
mod tests;

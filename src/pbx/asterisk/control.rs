//! Click to call and dispositions on Asterisk: the HTTP API's [`PbxControl`] carried out
//! with AMI actions (Originate, QueuePause), every value checked or escaped for the part of
//! Asterisk that reads it.

use std::time::Duration;

use super::ami::{Action, AmiClient, AmiError, ConnectionState};
use crate::config::OriginateConfig;
use crate::pbx::{OriginateRequest, PbxControl, PbxError};

/// How long an AMI action may take before the HTTP caller gets an error.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// [`PbxControl`] for Asterisk, over AMI.
#[derive(Debug, Clone)]
pub struct AsteriskControl {
    ami: AmiClient,
    originate: OriginateConfig,
}

impl AsteriskControl {
    /// Control over `ami`, placing calls as `[asterisk.originate]` says.
    pub fn new(ami: AmiClient, originate: OriginateConfig) -> Self {
        Self { ami, originate }
    }
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
    check_dial_token("agent extension", &request.agent_extension)?;
    check_dial_token(
        "the number to dial (dial_prefix + the lead's number)",
        &request.lead_dial,
    )?;
    check_dial_token("[asterisk.originate] context", &originate.context)?;
    check_dial_token("caller id", &request.caller_id)?;
    check_dial_token("call id", &request.call_id)?;
    let channel = originate
        .agent_channel
        .replace("{extension}", &request.agent_extension);
    let mut action = Action::new("Originate")
        .header("Channel", channel)
        .and_then(|a| a.header("Context", originate.context.as_str()))
        .and_then(|a| a.header("Exten", request.lead_dial.as_str()))
        .and_then(|a| a.header("Priority", "1"))
        .and_then(|a| a.header("CallerID", format!("<{}>", request.caller_id)))
        .and_then(|a| a.header("Timeout", originate.timeout_ms.to_string()))
        .and_then(|a| a.header("ChannelId", request.call_id.as_str()))
        .and_then(|a| a.header("Async", "true"))
        .map_err(pbx_error)?;
    for (name, value) in &request.variables {
        // One `Variable:` header per variable, the value escaped for Asterisk's
        // argument splitter: a ',' in a lead id cannot set another variable.
        action = action.variable(name, value).map_err(pbx_error)?;
    }
    Ok(action)
}

impl PbxControl for AsteriskControl {
    async fn originate(&self, request: OriginateRequest) -> Result<(), PbxError> {
        let action = originate_action(&self.originate, &request)?;
        let channel = action.get("Channel").unwrap_or_default().to_owned();
        // Async: Asterisk answers once the call is queued; the agent's phone rings next.
        match self.perform(action).await {
            Err(PbxError::Refused(said)) => {
                let why = originate_refused(&said, &channel, &request.lead_dial, &self.originate);
                tracing::warn!(call_id = %request.call_id, "{why}");
                Err(PbxError::Refused(why))
            }
            other => other,
        }
    }

    async fn free_agent(&self, interface: String) -> Result<(), PbxError> {
        let action = Action::new("QueuePause")
            .header("Interface", interface)
            .and_then(|a| a.header("Paused", "false"))
            .and_then(|a| a.header("Reason", "pbxlink: call disposed"))
            .map_err(pbx_error)?;
        self.perform(action).await
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

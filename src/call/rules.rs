//! The one set of call rules: what a PBX source extracted ([`CallFacts`], [`RingingFacts`])
//! becomes the call log ([`CallRecord`]) and the agent popup ([`PopupRequest`]) here, and
//! nowhere else. Every PBX source (Asterisk CDR rows, Asterisk AMI events, FreeSWITCH)
//! only extracts facts; direction, outcome, display number, tag, outbound display number,
//! dial-prefix stripping, voicemail and the recording URL are decided by [`CallRules`].
//!
//! # Direction
//! - **Outbound**: party A is an agent (its channel's extension, else its caller id number,
//!   is a configured agent extension) and the call reached an outside number: the lead number
//!   hint (click to call), else the dialled number after the dial prefix when it is an outside
//!   number, else the outside number the call dialled on another leg, else the dialled number
//!   when party A's context is an outbound context and the number is neither an extension nor
//!   a virtual number. An agent calling an agent is internal and not posted.
//! - **Inbound**: otherwise, when the caller is an outside number, a context of the call is an
//!   inbound context, or a DID candidate is a virtual number.
//!
//! # Outcome
//! Answered when an agent answered (inbound) or the outside party did (outbound); else
//! Voicemail when an inbound call ran a voicemail application; else the dial attempts tell:
//! Busy (every attempt busy), Missed (an attempt rang out or was cancelled), Congestion (every
//! attempt congested), Failed (every attempt failed or congested). A call that dialled
//! nobody (an IVR, a caller who hung up first) keeps its own leg's Failed/Congestion and is
//! Missed otherwise.
//!
//! # Numbers
//! - Inbound DisplayNumber: the first DID candidate that is a virtual number, as the PBX wrote
//!   it, with its tag; else the first configured virtual number; else the dialled number.
//! - Outbound DisplayNumber: the first caller id shown on the call that is a virtual number;
//!   else `outbound_display_number`; else the first configured virtual number. Its tag is the
//!   virtual number's.
//!
//! # Recording URL
//! A recording written as a URL (`http://`, `https://`) is used as is; otherwise the template
//! replaces `{file}`, `{uniqueid}` (the recording channel's id, else the call id),
//! `{linkedid}` (the call id), `{year}`, `{month}`, `{day}` (the call's start, UTC).

use super::{
    CallFacts, CallRecord, DialResult, Direction, Directory, Number, Outcome, PopupRequest,
    RingingFacts, TransferInfo, TransferLogs,
};

/// The classification settings shared by every source of one PBX (`[asterisk]` today,
/// `[freeswitch]` next), passed as a plain struct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRules {
    /// Contexts that receive outside calls.
    pub inbound_contexts: Vec<String>,
    /// Contexts agents dial out from.
    pub outbound_contexts: Vec<String>,
    /// Applications that mean voicemail (compared without regard to ASCII case).
    pub voicemail_apps: Vec<String>,
    /// DisplayNumber of an outbound call when no virtual number shows on it.
    pub outbound_display_number: Option<String>,
    /// Prefix agents dial before outside numbers; stripped from the lead's number.
    pub outbound_dial_prefix: String,
    /// Recording URL template (see the module documentation).
    pub recording_url_template: Option<String>,
    /// Signed links to recordings pbxlink serves itself (`[recordings]`), used when no
    /// template is set.
    pub recordings: Option<crate::recordings::RecordingLinks>,
    /// How many call logs a transferred call gives (`transfer_logs`).
    pub transfer_logs: TransferLogs,
}

/// Why a finished call is not posted to the CRM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// An agent called an extension or another internal number.
    #[error("internal call from extension {extension} to {dialled:?}")]
    Internal {
        /// The calling agent's extension.
        extension: String,
        /// What was dialled.
        dialled: String,
    },
    /// Nothing marks the call as coming from outside, and no agent placed it.
    #[error("neither inbound nor outbound: {caller:?} called {dialled:?} in context {context:?}")]
    Neither {
        /// Party A's caller id number.
        caller: String,
        /// What party A dialled.
        dialled: String,
        /// Party A's context.
        context: String,
    },
}

impl CallRules {
    /// The call log of one finished call, or why it is not posted.
    pub fn record(
        &self,
        directory: &Directory,
        facts: &CallFacts,
    ) -> Result<CallRecord, SkipReason> {
        match calling_agent(
            directory,
            facts.caller_extension.as_deref(),
            &facts.caller_number,
        ) {
            Some(agent) => self.outbound(directory, facts, agent),
            None => self.inbound(directory, facts),
        }
    }

    /// The popup for an agent now ringing, or `None` when the call is not an inbound call
    /// from outside or the ringing extension is not a configured agent.
    pub fn popup(&self, directory: &Directory, ringing: &RingingFacts) -> Option<PopupRequest> {
        if !directory.is_agent_extension(&ringing.agent_extension)
            || ringing.caller_number.trim().is_empty()
            || calling_agent(
                directory,
                ringing.caller_extension.as_deref(),
                &ringing.caller_number,
            )
            .is_some()
        {
            return None;
        }
        let inbound = self.is_inbound(
            directory,
            &ringing.caller_number,
            std::slice::from_ref(&ringing.context),
            &ringing.did_candidates,
        );
        if !inbound {
            return None;
        }
        let (display_number, tag) =
            inbound_display(directory, &ringing.did_candidates, &ringing.dialled);
        Some(PopupRequest {
            call_id: ringing.call_id.clone(),
            lead_number: directory.number(&ringing.caller_number),
            agent_extension: ringing.agent_extension.clone(),
            agent: directory.agent(&ringing.agent_extension).cloned(),
            display_number,
            tag,
            event_at_ms: ringing.event_at_ms,
        })
    }

    /// `number` without the outbound dial prefix (unchanged when it does not start with it).
    pub fn strip_dial_prefix<'a>(&self, number: &'a str) -> &'a str {
        if self.outbound_dial_prefix.is_empty() {
            return number;
        }
        number
            .strip_prefix(self.outbound_dial_prefix.as_str())
            .unwrap_or(number)
    }

    fn is_inbound(
        &self,
        directory: &Directory,
        caller: &str,
        contexts: &[String],
        did_candidates: &[String],
    ) -> bool {
        directory.is_external(caller)
            || contexts.iter().any(|c| self.inbound_contexts.contains(c))
            || did_candidates
                .iter()
                .any(|d| directory.virtual_number(d).is_some())
    }

    /// The outside number an agent's call reached, if it reached one.
    fn outside_number(&self, directory: &Directory, facts: &CallFacts) -> Option<String> {
        if let Some(hint) = facts.lead_number_hint.as_deref().map(str::trim) {
            if !hint.is_empty() {
                return Some(hint.to_owned());
            }
        }
        let dialled = self.strip_dial_prefix(&facts.dialled);
        if directory.is_external(dialled) {
            return Some(dialled.to_owned());
        }
        if let Some(outside) = facts
            .dialled_outside
            .as_deref()
            .map(|d| self.strip_dial_prefix(d))
            .filter(|d| directory.is_external(d))
        {
            return Some(outside.to_owned());
        }
        let outbound_context = facts
            .contexts
            .first()
            .is_some_and(|c| self.outbound_contexts.contains(c));
        (outbound_context
            && !dialled.is_empty()
            && !directory.is_agent_extension(dialled)
            && directory.virtual_number(dialled).is_none())
        .then(|| dialled.to_owned())
    }

    fn outbound(
        &self,
        directory: &Directory,
        facts: &CallFacts,
        agent: &str,
    ) -> Result<CallRecord, SkipReason> {
        let Some(lead) = self.outside_number(directory, facts) else {
            return Err(SkipReason::Internal {
                extension: agent.to_owned(),
                dialled: facts.dialled.clone(),
            });
        };
        let answered = facts.outside_answered;
        let outcome = match answered {
            Some(_) => Outcome::Answered,
            None => missed_outcome(facts),
        };
        let display = facts
            .shown_caller_ids
            .iter()
            .find_map(|n| directory.virtual_number(n))
            .map(|v| v.number.to_e164())
            .or_else(|| self.outbound_display_number.clone())
            .or_else(|| directory.first_virtual_number().map(|v| v.number.to_e164()));
        let tag = display
            .as_deref()
            .and_then(|d| directory.virtual_number(d))
            .and_then(|v| v.tag.clone());
        Ok(CallRecord {
            call_id: facts.call_id.clone(),
            source: facts.source.clone(),
            direction: Direction::Outbound,
            outcome,
            lead_number: directory.number(&lead),
            agent: directory.agent(agent).cloned(),
            agent_extension: Some(agent.to_owned()),
            display_number: display.map(|d| directory.number(&d)),
            tag,
            start: facts.start,
            answer: answered.map(|(at, _)| at),
            end: facts.end,
            talk_seconds: answered.map_or(0, |(_, secs)| secs),
            caller_name: None,
            recording_url: self.recording_url(facts),
            lead_id: facts.lead_id.clone(),
            legs: facts.legs,
            segments: facts.answered.clone(),
            transfer: self.transfer_info(directory, facts),
        })
    }

    fn inbound(&self, directory: &Directory, facts: &CallFacts) -> Result<CallRecord, SkipReason> {
        if !self.is_inbound(
            directory,
            &facts.caller_number,
            &facts.contexts,
            &facts.did_candidates,
        ) {
            return Err(SkipReason::Neither {
                caller: facts.caller_number.clone(),
                dialled: facts.dialled.clone(),
                context: facts.contexts.first().cloned().unwrap_or_default(),
            });
        }
        let answered = facts.answered.first();
        let voicemail = facts.applications.iter().any(|app| {
            self.voicemail_apps
                .iter()
                .any(|v| v.eq_ignore_ascii_case(app))
        });
        let outcome = match (answered, voicemail) {
            (Some(_), _) => Outcome::Answered,
            (None, true) => Outcome::Voicemail,
            (None, false) => missed_outcome(facts),
        };
        let agent_extension = answered.map(|s| s.extension.clone()).or_else(|| {
            facts
                .rung_agents
                .iter()
                .find(|e| directory.is_agent_extension(e))
                .cloned()
        });
        let (display_number, tag) =
            inbound_display(directory, &facts.did_candidates, &facts.dialled);
        let lead = facts
            .lead_number_hint
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(&facts.caller_number);
        Ok(CallRecord {
            call_id: facts.call_id.clone(),
            source: facts.source.clone(),
            direction: Direction::Inbound,
            outcome,
            lead_number: directory.number(lead),
            agent: agent_extension
                .as_deref()
                .and_then(|e| directory.agent(e))
                .cloned(),
            agent_extension,
            display_number,
            tag,
            start: facts.start,
            answer: answered.map(|s| s.answered_at),
            end: facts.end,
            talk_seconds: answered.map_or(0, |s| s.talk_seconds),
            caller_name: facts
                .caller_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty() && *n != "<unknown>")
                .map(str::to_owned),
            recording_url: self.recording_url(facts),
            lead_id: facts.lead_id.clone(),
            legs: facts.legs,
            segments: facts.answered.clone(),
            transfer: self.transfer_info(directory, facts),
        })
    }

    /// The `transfer_logs` setting and the agents of the call's segments, for the split
    /// into call logs ([`crate::call::transfer`]).
    fn transfer_info(&self, directory: &Directory, facts: &CallFacts) -> TransferInfo {
        let mut agents: Vec<super::AgentInfo> = Vec::new();
        for segment in &facts.answered {
            if let Some(agent) = directory.agent(&segment.extension) {
                if !agents.iter().any(|a| a.extension == agent.extension) {
                    agents.push(agent.clone());
                }
            }
        }
        TransferInfo {
            logs: self.transfer_logs,
            agents,
            segment: None,
        }
    }

    /// The recording's URL, when the call has a recording and it can be addressed.
    pub fn recording_url(&self, facts: &CallFacts) -> Option<String> {
        let recording = facts.recording.as_ref()?;
        let file = recording.file.as_str();
        let start = facts.start;
        let expand = |template: &str| {
            template
                .replace("{file}", file)
                .replace(
                    "{uniqueid}",
                    recording.channel_id.as_deref().unwrap_or(&facts.call_id),
                )
                .replace("{linkedid}", &facts.call_id)
                .replace("{year}", &start.format("%Y").to_string())
                .replace("{month}", &start.format("%m").to_string())
                .replace("{day}", &start.format("%d").to_string())
        };
        crate::recordings::resource_url(
            file,
            start,
            self.recording_url_template.as_deref(),
            expand,
            self.recordings.as_ref(),
        )
    }
}

/// The agent who placed a call: party A's extension when it is an agent's, else its caller
/// id number when that is an agent extension.
fn calling_agent<'a>(
    directory: &Directory,
    extension: Option<&'a str>,
    number: &'a str,
) -> Option<&'a str> {
    extension
        .filter(|e| directory.is_agent_extension(e))
        .or_else(|| directory.is_agent_extension(number).then_some(number))
}

/// DisplayNumber and tag of an inbound call (see the module documentation).
fn inbound_display(
    directory: &Directory,
    did_candidates: &[String],
    dialled: &str,
) -> (Option<Number>, Option<String>) {
    let did = did_candidates
        .iter()
        .filter(|d| !d.is_empty())
        .find_map(|d| directory.virtual_number(d).map(|v| (d, v)));
    match did {
        Some((raw, v)) => (Some(directory.number(raw)), v.tag.clone()),
        None => match directory.first_virtual_number() {
            Some(v) => (Some(directory.number(&v.number.to_e164())), v.tag.clone()),
            None => (Some(directory.number(dialled)), None),
        },
    }
}

/// The outcome of a call nobody answered, from its dial attempts.
fn missed_outcome(facts: &CallFacts) -> Outcome {
    let attempts = &facts.attempts;
    if attempts.is_empty() {
        return match facts.own_result {
            Some(DialResult::Failed) => Outcome::Failed,
            Some(DialResult::Congestion) => Outcome::Congestion,
            _ => Outcome::NoAnswer,
        };
    }
    let all = |f: fn(&DialResult) -> bool| attempts.iter().all(f);
    if all(|d| *d == DialResult::Busy) {
        Outcome::Busy
    } else if attempts.contains(&DialResult::NoAnswer) || attempts.contains(&DialResult::Answered) {
        Outcome::NoAnswer
    } else if all(|d| *d == DialResult::Congestion) {
        Outcome::Congestion
    } else if all(|d| matches!(d, DialResult::Failed | DialResult::Congestion)) {
        Outcome::Failed
    } else {
        Outcome::NoAnswer
    }
}

#[cfg(test)]
mod tests;

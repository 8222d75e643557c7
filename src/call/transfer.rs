//! Transferred calls: how one reconciled [`CallRecord`] with several agent segments becomes
//! the call logs the CRM is told about, and what their `CallNotes` say.
//!
//! A PBX source only extracts the segments (one [`AgentSegment`] per agent who talked to the
//! lead, each with its [`SegmentArrival`]); the split happens once, in the sink stage
//! ([`crate::call::sink::outbox_rows`]), after `call_log_source = "both"` merged the two
//! sources' records, so that both sources and every PBX give the same logs.
//!
//! - `transfer_logs = "per_agent"` (the default): one log per segment. Segment `i` gets
//!   `CallSessionId = segment_call_id(call_id, i)` (the first keeps the call's id), its own
//!   agent, talk time, start (the call's start for the first segment, the transfer for the
//!   others) and end, and the call's direction, status, lead, DID, tag and recording.
//! - `transfer_logs = "single"`: one log with the last agent, the talk time from the first
//!   answer to the end of the call, and the whole chain in `CallNotes`.
//!
//! A call with one segment (or none: a missed call) is never changed, so a call that was not
//! transferred gives exactly the log it gave before transfers were told apart. Only inbound
//! calls are split: the segments of an outbound call are the lead's, not agents'.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AgentInfo, AgentSegment, CallRecord, Direction, SegmentArrival, segment_call_id};

/// `transfer_logs` of `[asterisk]` and `[freeswitch]`: how many call logs a transferred call
/// gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferLogs {
    /// One call log per agent who talked to the lead.
    #[default]
    PerAgent,
    /// One call log for the whole call: the last agent, the chain in `CallNotes`.
    Single,
}

impl TransferLogs {
    /// The word of the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferLogs::PerAgent => "per_agent",
            TransferLogs::Single => "single",
        }
    }
}

/// What the split needs besides the segments, carried on the [`CallRecord`] from the rules
/// (which know the configuration and the agent table) to the sink (which knows neither).
/// Absent in records written before transfers were told apart: then the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// The `transfer_logs` setting of the PBX that finished the call.
    #[serde(default)]
    pub logs: TransferLogs,
    /// The agent table's entries for the extensions of the call's segments (those that are
    /// configured agents), so that each segment's log names its agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentInfo>,
    /// Which segment (0-based) this log is, once split; `None` for the call as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<usize>,
}

/// Whether `call` is split or folded at all: an inbound call with two or more segments that
/// was not split already.
fn is_transferred(call: &CallRecord) -> bool {
    call.direction == Direction::Inbound
        && call.segments.len() > 1
        && call.transfer.segment.is_none()
}

/// The call logs of one finished call (see the module documentation): the call itself when
/// it was not transferred, else one per segment or one for the whole call.
pub fn call_logs(call: CallRecord) -> Vec<CallRecord> {
    if !is_transferred(&call) {
        return vec![call];
    }
    match call.transfer.logs {
        TransferLogs::PerAgent => (0..call.segments.len())
            .map(|i| segment_log(&call, i))
            .collect(),
        TransferLogs::Single => vec![single_log(call)],
    }
}

fn agent_of(call: &CallRecord, extension: &str) -> Option<AgentInfo> {
    call.transfer
        .agents
        .iter()
        .find(|a| a.extension == extension)
        .cloned()
}

/// When the lead was handed to this agent, for a transferred segment.
fn handed_over_at(arrival: &SegmentArrival) -> Option<DateTime<Utc>> {
    match arrival {
        SegmentArrival::BlindTransfer { at, .. } | SegmentArrival::AttendedTransfer { at, .. } => {
            Some(*at)
        }
        SegmentArrival::Direct | SegmentArrival::Forwarded { .. } => None,
    }
}

/// The log of segment `i` of a transferred call.
fn segment_log(call: &CallRecord, i: usize) -> CallRecord {
    let segment = &call.segments[i];
    let start = if i == 0 {
        call.start
    } else {
        handed_over_at(&segment.arrival)
            .map_or(segment.answered_at, |at| at.min(segment.answered_at))
    };
    let end = segment.ended_at.unwrap_or(call.end).max(start);
    CallRecord {
        call_id: segment_call_id(&call.call_id, i),
        agent: agent_of(call, &segment.extension),
        agent_extension: Some(segment.extension.clone()),
        start,
        answer: Some(segment.answered_at),
        end,
        talk_seconds: segment.talk_seconds,
        transfer: TransferInfo {
            logs: call.transfer.logs,
            agents: call.transfer.agents.clone(),
            segment: Some(i),
        },
        ..call.clone()
    }
}

/// The one log of a transferred call in `single` mode.
fn single_log(call: CallRecord) -> CallRecord {
    let (Some(first), Some(last)) = (call.segments.first(), call.segments.last()) else {
        return call;
    };
    let answered_at = first.answered_at;
    let talk_seconds = u64::try_from((call.end - answered_at).num_seconds()).unwrap_or(0);
    CallRecord {
        agent: agent_of(&call, &last.extension),
        agent_extension: Some(last.extension.clone()),
        answer: Some(answered_at),
        talk_seconds,
        ..call
    }
}

/// The `CallNotes` text a call log's segments give, with times written by `time` (the
/// payload's zone): "transferred to 103 at 12:03:10 (1 of 2)", "from 100 by attended
/// transfer at 12:03:10 (2 of 2)", "forwarded from 100", or for `single` mode the chain
/// "100 → 103 (blind transfer at 12:03:10)". `None` for a call with nothing to say.
pub fn note(call: &CallRecord, time: impl Fn(DateTime<Utc>) -> String) -> Option<String> {
    let segments = &call.segments;
    match call.transfer.segment {
        Some(i) => {
            let segment = segments.get(i)?;
            let mut parts = Vec::new();
            if let Some(from) = arrival_note(&segment.arrival, &time) {
                parts.push(from);
            }
            if let Some(next) = segments.get(i + 1) {
                let at = handed_over_at(&next.arrival)
                    .or(segment.ended_at)
                    .unwrap_or(next.answered_at);
                parts.push(format!("transferred to {} at {}", next.extension, time(at)));
            }
            let mut text = parts.join(", ");
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&format!("({} of {})", i + 1, segments.len()));
            Some(text)
        }
        None if segments.len() > 1 && call.direction == Direction::Inbound => {
            Some(chain_note(segments, &time))
        }
        None => match segments.as_slice() {
            [only] => forwarded_note(&only.arrival),
            _ => None,
        },
    }
}

fn forwarded_note(arrival: &SegmentArrival) -> Option<String> {
    match arrival {
        SegmentArrival::Forwarded { from } if !from.is_empty() => {
            Some(format!("forwarded from {from}"))
        }
        _ => None,
    }
}

/// How this agent came to have the lead, as a note part.
fn arrival_note(
    arrival: &SegmentArrival,
    time: &impl Fn(DateTime<Utc>) -> String,
) -> Option<String> {
    let (kind, from, at) = match arrival {
        SegmentArrival::Direct => return None,
        SegmentArrival::Forwarded { .. } => return forwarded_note(arrival),
        SegmentArrival::BlindTransfer { from, at } => ("blind", from, at),
        SegmentArrival::AttendedTransfer { from, at } => ("attended", from, at),
    };
    Some(if from.is_empty() {
        format!("by {kind} transfer at {}", time(*at))
    } else {
        format!("from {from} by {kind} transfer at {}", time(*at))
    })
}

/// The chain of a `single` log: "100 → 103 (blind transfer at 12:03:10) → 104 (...)".
fn chain_note(segments: &[AgentSegment], time: &impl Fn(DateTime<Utc>) -> String) -> String {
    let mut text = String::new();
    for (i, segment) in segments.iter().enumerate() {
        if i == 0 {
            if let Some(forwarded) = forwarded_note(&segment.arrival) {
                text.push_str(&forwarded);
                text.push_str(": ");
            }
            text.push_str(&segment.extension);
            continue;
        }
        text.push_str(" → ");
        text.push_str(&segment.extension);
        let at = handed_over_at(&segment.arrival)
            .or(segments[i - 1].ended_at)
            .unwrap_or(segment.answered_at);
        let kind = match segment.arrival {
            SegmentArrival::AttendedTransfer { .. } => "attended transfer",
            SegmentArrival::BlindTransfer { .. } => "blind transfer",
            SegmentArrival::Direct | SegmentArrival::Forwarded { .. } => "transfer",
        };
        text.push_str(&format!(" ({kind} at {})", time(at)));
    }
    text
}

#[cfg(test)]
mod tests;

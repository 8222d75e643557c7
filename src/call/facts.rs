//! What a PBX source knows about one finished call, before any call rule is applied.
//!
//! Each PBX only *extracts* these facts from its own records (Asterisk CDR rows or AMI
//! events, FreeSWITCH json_cdr legs, cdr_csv rows or ESL events); the one set of rules in
//! [`crate::call::rules`] turns them into the [`crate::call::CallRecord`] the CRM is told
//! about: direction, outcome, display number, tag, outbound display number, dial-prefix
//! stripping, voicemail and recording URL are decided there, never in a PBX module.
//!
//! Numbers and names are kept as the PBX wrote them; the rules normalise them with the
//! [`crate::call::Directory`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How one dial attempt (one leg towards an agent or an outside number) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DialResult {
    /// The called party answered.
    Answered,
    /// It rang and nobody answered (also cancelled: the caller hung up, another agent won).
    NoAnswer,
    /// The called party was busy.
    Busy,
    /// The call could not be placed (unregistered phone, unreachable).
    Failed,
    /// The network was congested.
    Congestion,
}

/// How an agent came to have the lead on the line (for `CallNotes` and the transfer rules).
///
/// A PBX source fills it in from what it knows: Asterisk CDR rows and AMI `BlindTransfer` /
/// `AttendedTransfer` events, FreeSWITCH `transfer_history`, `xfer_uuids` and mod_callcenter
/// events. `from` is the extension of the agent who had the lead before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SegmentArrival {
    /// The call reached this agent directly (the first agent who answered; ring-all and
    /// queue ring legs of agents who did not answer are not segments at all).
    #[default]
    Direct,
    /// Follow-me or call forwarding before anyone answered: `from` rang first, this agent
    /// answered. Not a transfer: the call still has one segment.
    Forwarded {
        /// The extension the call was meant for.
        from: String,
    },
    /// `from` sent the lead here without talking to this agent first.
    BlindTransfer {
        /// The agent who transferred the lead.
        from: String,
        /// When the transfer happened (`from`'s part of the call ended).
        at: DateTime<Utc>,
    },
    /// `from` talked to this agent first (a consultation call), then handed the lead over.
    AttendedTransfer {
        /// The agent who transferred the lead.
        from: String,
        /// When the lead was handed over.
        at: DateTime<Utc>,
    },
}

/// One agent who answered the call, and that agent's part of it.
///
/// A call that was not transferred has at most one; a transferred call has one per agent
/// who talked to the lead, in the order they answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSegment {
    /// The agent's extension as the PBX showed it (`100` of `PJSIP/100-0000000a`, the
    /// user of `user/100`, a mod_callcenter agent mapped back to its extension).
    pub extension: String,
    /// When this agent answered.
    pub answered_at: DateTime<Utc>,
    /// When this agent's part ended (hangup or transfer away), when known.
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds this agent talked with the lead (billsec of the agent's leg; not hold, not a
    /// consultation call).
    pub talk_seconds: u64,
    /// How this agent came to have the lead (absent in records written before transfers
    /// were told apart: then [`SegmentArrival::Direct`]).
    #[serde(default)]
    pub arrival: SegmentArrival,
}

/// The `CallSessionId` of segment `index` (0-based) of call `call_id`: the first segment
/// keeps the call's own id (which its popups already carried), later ones get `-2`, `-3` ...
/// Stable across restarts because it depends only on the call id and the segment's place.
pub fn segment_call_id(call_id: &str, index: usize) -> String {
    if index == 0 {
        call_id.to_owned()
    } else {
        format!("{call_id}-{}", index + 1)
    }
}

/// Where the PBX wrote the call's recording, and the values a recording URL template may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRef {
    /// The file (name or path) as the PBX wrote it, or a URL (`http(s)://`) used as is.
    pub file: String,
    /// The PBX's id of the channel that recorded (Asterisk uniqueid, FreeSWITCH leg uuid);
    /// `{uniqueid}` in the template. The call id when not known.
    pub channel_id: Option<String>,
}

/// Everything one PBX source extracted about one finished call. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFacts {
    /// The PBX's id of the whole call (Asterisk linkedid, FreeSWITCH call uuid of the leg
    /// that started it); becomes `CallSessionId`.
    pub call_id: String,
    /// Which PBX source produced it, e.g. `asterisk-cdr`, `freeswitch-esl`.
    pub source: String,
    /// When the call started (party A's leg created).
    pub start: DateTime<Utc>,
    /// When its last leg ended.
    pub end: DateTime<Utc>,
    /// Party A's caller id number (the lead for inbound, the agent for outbound).
    pub caller_number: String,
    /// Party A's caller id name, when the PBX knew one.
    pub caller_name: Option<String>,
    /// The extension or user that party A's channel belongs to (`PJSIP/100-…` → `100`,
    /// FreeSWITCH `sofia/internal/100@…` / `user_name` → `100`); the rules decide whether it
    /// is an agent. `None` for a trunk or when unknown.
    pub caller_extension: Option<String>,
    /// What party A dialled (Asterisk `dst`/`Exten`, FreeSWITCH `destination_number`), before
    /// any dial prefix is stripped.
    pub dialled: String,
    /// The outside number an agent's call reached when it is not `dialled` (a click-to-call
    /// call starts on the agent's phone and reaches the lead through a dial string).
    pub dialled_outside: Option<String>,
    /// The dialplan contexts the call ran in, party A's first.
    pub contexts: Vec<String>,
    /// Numbers that may be the virtual number the call came in on, most reliable first
    /// (Asterisk `CDR(did)`, then `dst` of each row; FreeSWITCH `destination_number` of the
    /// carrier leg). The first that is a configured virtual number wins.
    pub did_candidates: Vec<String>,
    /// Caller ids shown on the outbound legs of the call, in order (the first configured
    /// virtual number among them is the outbound call's DisplayNumber).
    pub shown_caller_ids: Vec<String>,
    /// Agents who answered, in the order they answered.
    pub answered: Vec<AgentSegment>,
    /// Agent extensions that were rung, in order, whether they answered or not.
    pub rung_agents: Vec<String>,
    /// Outbound: when the outside party (the lead) answered, and the talk seconds of that leg.
    pub outside_answered: Option<(DateTime<Utc>, u64)>,
    /// How each dial attempt of the call ended, in order.
    pub attempts: Vec<DialResult>,
    /// How party A's own leg ended, for a call that dialled nobody (an IVR, a caller who hung
    /// up first): `Failed`/`Congestion` are kept, anything else reads as not answered.
    pub own_result: Option<DialResult>,
    /// Dialplan applications the call ran (Asterisk `lastapp` of each row, FreeSWITCH
    /// `last_app`), for the voicemail rule.
    pub applications: Vec<String>,
    /// The recording, when the PBX wrote one.
    pub recording: Option<RecordingRef>,
    /// The LeadSquared lead id the call carries (click to call sets it).
    pub lead_id: Option<String>,
    /// The lead's number as LeadSquared sent it (click to call), which wins over a re-parse
    /// of the dialled digits.
    pub lead_number_hint: Option<String>,
    /// How many PBX records (CDR rows, legs, channels) the facts were built from.
    pub legs: u32,
}

impl CallFacts {
    /// Facts with only the id, source and times set; a PBX fills in the rest.
    pub fn new(
        call_id: impl Into<String>,
        source: impl Into<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Self {
        Self {
            call_id: call_id.into(),
            source: source.into(),
            start,
            end,
            caller_number: String::new(),
            caller_name: None,
            caller_extension: None,
            dialled: String::new(),
            dialled_outside: None,
            contexts: Vec::new(),
            did_candidates: Vec::new(),
            shown_caller_ids: Vec::new(),
            answered: Vec::new(),
            rung_agents: Vec::new(),
            outside_answered: None,
            attempts: Vec::new(),
            own_result: None,
            applications: Vec::new(),
            recording: None,
            lead_id: None,
            lead_number_hint: None,
            legs: 0,
        }
    }
}

/// What a live source (a PBX event stream) saw of an inbound call ringing an agent, before
/// the rules decide whether it pops and with which display number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingingFacts {
    /// The call's id (the same one its call log will carry).
    pub call_id: String,
    /// The caller's number as the PBX wrote it.
    pub caller_number: String,
    /// Party A's extension, when the call started on a phone rather than a trunk.
    pub caller_extension: Option<String>,
    /// What the caller dialled.
    pub dialled: String,
    /// The context party A is in.
    pub context: String,
    /// Numbers that may be the DID, most reliable first.
    pub did_candidates: Vec<String>,
    /// The extension of the agent now ringing.
    pub agent_extension: String,
    /// When the event arrived, on [`crate::call::monotonic_ms`]'s clock (the popup's TTL).
    pub event_at_ms: i64,
}

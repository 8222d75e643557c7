//! The PBX-neutral call model: one finished call, as the CRM will be told about it.
//!
//! Every PBX source (Asterisk CDR rows, Asterisk AMI events, FreeSWITCH CDRs or events)
//! builds [`CallRecord`]s with the help of the shared [`Directory`]; everything after that
//! (outbox, payloads, delivery) knows nothing of the PBX.

mod clock;
mod directory;
pub mod facts;
mod popup;
pub mod reconcile;
pub mod rules;
pub mod sink;
pub mod transfer;

pub use clock::{TimeWindow, monotonic_ms};
pub use directory::{AgentInfo, Directory, VirtualNumberInfo};
pub use facts::{
    AgentSegment, CallFacts, DialResult, RecordingRef, RingingFacts, SegmentArrival,
    segment_call_id,
};
pub use popup::PopupRequest;
pub use rules::{CallRules, SkipReason};
pub use transfer::{TransferInfo, TransferLogs};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::phone::E164;

/// Which way a call went, seen from the company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// A lead called one of the company's virtual numbers.
    Inbound,
    /// An agent called a lead.
    Outbound,
}

impl Direction {
    /// The word LeadSquared uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "Inbound",
            Direction::Outbound => "Outbound",
        }
    }
}

/// How a call ended, before it is mapped to the CRM's `Status` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// An agent (inbound) or the lead (outbound) answered.
    Answered,
    /// It rang and nobody answered; also a call that only an IVR or queue answered.
    NoAnswer,
    /// The called side was busy.
    Busy,
    /// The call could not be placed.
    Failed,
    /// The network was congested.
    Congestion,
    /// The caller was sent to voicemail.
    Voicemail,
}

/// A number as the PBX wrote it, and its E.164 form when it is a real phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Number {
    /// Exactly what the PBX wrote (kept for audits and for numbers that are not E.164).
    pub raw: String,
    /// The normalised form, when the raw text is a valid phone number.
    pub e164: Option<E164>,
}

/// One finished call, ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The PBX's id of the whole call (Asterisk linkedid, FreeSWITCH call UUID); `CallSessionId`.
    pub call_id: String,
    /// Which PBX source produced it, e.g. `asterisk-cdr`.
    pub source: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// How it ended.
    pub outcome: Outcome,
    /// The lead's number (caller for inbound, callee for outbound).
    pub lead_number: Number,
    /// The agent who answered (inbound) or placed (outbound) the call, when known.
    pub agent: Option<AgentInfo>,
    /// The agent's extension as the PBX showed it, even when it is not in the agent table.
    pub agent_extension: Option<String>,
    /// The virtual number the call came in on or was shown as.
    pub display_number: Option<Number>,
    /// The tag of that virtual number.
    pub tag: Option<String>,
    /// When the call started.
    pub start: DateTime<Utc>,
    /// When the agent (inbound) or lead (outbound) answered.
    pub answer: Option<DateTime<Utc>>,
    /// When the call ended.
    pub end: DateTime<Utc>,
    /// Seconds of conversation (0 when not answered).
    pub talk_seconds: u64,
    /// The caller's name as the caller id showed it.
    pub caller_name: Option<String>,
    /// The recording's URL.
    pub recording_url: Option<String>,
    /// The LeadSquared lead id, when the call was placed from the CRM.
    pub lead_id: Option<String>,
    /// How many PBX records (CDR rows) were merged into this call.
    pub legs: u32,
    /// Each agent who answered, in order, with that agent's talk time (one for a call that
    /// was not transferred; empty when no agent answered or the source could not tell).
    /// Absent in outbox rows written before it existed.
    #[serde(default)]
    pub segments: Vec<AgentSegment>,
    /// What splitting a transferred call into call logs needs, and which segment this log
    /// is once split ([`transfer`]). Absent in outbox rows written before it existed.
    #[serde(default)]
    pub transfer: TransferInfo,
}

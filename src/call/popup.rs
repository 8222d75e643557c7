//! An agent popup to send now: an inbound call has started ringing an agent.

use crate::call::{AgentInfo, Number};

/// An agent popup to send now, built by the call rules from a live source's
/// [`crate::call::RingingFacts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopupRequest {
    /// The call's id, later the call log's CallSessionId.
    pub call_id: String,
    /// The caller.
    pub lead_number: Number,
    /// The ringing agent's extension.
    pub agent_extension: String,
    /// The agent, when configured.
    pub agent: Option<AgentInfo>,
    /// The virtual number the call came in on.
    pub display_number: Option<Number>,
    /// Its tag.
    pub tag: Option<String>,
    /// When the event arrived (ms on [`crate::call::monotonic_ms`]'s clock), for the popup's TTL.
    pub event_at_ms: i64,
}

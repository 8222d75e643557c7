//! PBX sources. Each PBX turns its own records (CDR lines, events) into the shared
//! [`crate::call::CallRecord`] through a [`CallAssembler`]; the pipeline that stores and
//! delivers them is the same for every PBX.

pub mod asterisk;
pub mod connection;
pub mod freeswitch;
pub mod read_buffer;

use crate::call::CallRecord;

/// A settled call and the staged records it was built from.
#[derive(Debug, Clone)]
pub struct AssembledCall {
    /// The call, or None when its records describe a call the CRM is not told about
    /// (an internal call between extensions).
    pub call: Option<CallRecord>,
    /// Why the call was skipped, when it was.
    pub skipped: Option<String>,
    /// Staged row ids consumed.
    pub staged_ids: Vec<i64>,
    /// The raw lines, joined by newlines.
    pub raw: String,
}

/// Groups a PBX's parsed records into calls and decides when a call is complete.
pub trait CallAssembler: Send {
    /// The parsed record type (e.g. an Asterisk CDR row).
    type Record;

    /// Adds a record that is staged in the store under `staged_id`, read at `read_at_ms`.
    fn add(&mut self, staged_id: i64, record: Self::Record, raw: String, read_at_ms: i64);

    /// Calls whose last record is older than the settle time at `now_ms`.
    fn take_settled(&mut self, now_ms: i64) -> Vec<AssembledCall>;

    /// Every call now, settled or not (shutdown of a one-shot import).
    fn take_all(&mut self) -> Vec<AssembledCall>;

    /// Records held, waiting to settle.
    fn pending_records(&self) -> usize;
}

/// A call click to call asks the PBX to place: ring the agent, then dial the lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateRequest {
    /// The id the call will have (Asterisk: the agent channel's uniqueid, so the Linkedid).
    pub call_id: String,
    /// The agent's extension.
    pub agent_extension: String,
    /// The number to dial for the lead, as the dialplan expects it.
    pub lead_dial: String,
    /// The caller id the lead sees (the virtual number).
    pub caller_id: String,
    /// Channel variables to set (e.g. the LeadSquared lead id).
    pub variables: Vec<(String, String)>,
}

/// Why the PBX did not do what was asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PbxError {
    /// No connection to the PBX right now.
    #[error("PBX not connected")]
    NotConnected,
    /// The PBX refused or failed the request.
    #[error("the PBX refused: {0}")]
    Refused(String),
    /// A value could not be sent safely (e.g. a line break in it).
    #[error("unsafe value: {0}")]
    Unsafe(String),
    /// No answer in time.
    #[error("the PBX did not answer in time")]
    Timeout,
}

/// What the HTTP API asks of a PBX, whichever it is.
pub trait PbxControl: Send + Sync + 'static {
    /// Places a click-to-call call; returns once the PBX accepted it.
    fn originate(
        &self,
        request: OriginateRequest,
    ) -> impl std::future::Future<Output = Result<(), PbxError>> + Send;

    /// Frees an agent after a disposition (e.g. unpauses the queue member `interface`).
    fn free_agent(
        &self,
        interface: String,
    ) -> impl std::future::Future<Output = Result<(), PbxError>> + Send;

    /// Whether the PBX connection is up.
    fn is_connected(&self) -> bool;
}

/// No PBX control configured (e.g. `[http]` for `/route` only): every action answers
/// [`PbxError::NotConnected`].
impl<P: PbxControl> PbxControl for Option<P> {
    async fn originate(&self, request: OriginateRequest) -> Result<(), PbxError> {
        match self {
            Some(pbx) => pbx.originate(request).await,
            None => Err(PbxError::NotConnected),
        }
    }

    async fn free_agent(&self, interface: String) -> Result<(), PbxError> {
        match self {
            Some(pbx) => pbx.free_agent(interface).await,
            None => Err(PbxError::NotConnected),
        }
    }

    fn is_connected(&self) -> bool {
        self.as_ref().is_some_and(PbxControl::is_connected)
    }
}

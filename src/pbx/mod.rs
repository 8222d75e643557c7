//! PBX sources. Each PBX turns its own records (CDR lines, events) into the shared
//! [`crate::call::CallRecord`] through a [`CallAssembler`]; the pipeline that stores and
//! delivers them is the same for every PBX. What the HTTP API asks of a PBX is the
//! object-safe [`PbxControl`], in neutral terms each PBX maps to its own actions.
//!
//! [`build_parts`] and [`import_source`] are the only places outside a PBX's own folder that
//! name a PBX: they pick the configured one and hand the daemon its [`parts::PbxParts`].
//!
//! A PBX plugs in with one function of its own, `fn build(&PbxContext, &mut PbxParts)`
//! (Asterisk: `asterisk::wiring::build`), called from [`build_parts`] when its section is
//! configured. It pushes its file readers ([`parts::FileSourceRun`]: a blocking `run(stop)`
//! and a heartbeat), its async tasks ([`parts::PbxTask`]: a name and a future that ends at
//! the context's shutdown), sets `sends_popups` when a task pushes into the context's popup
//! queue, sets `control` to its [`PbxControl`] (mapping [`OriginateRequest`] and the agent
//! to its own actions), registers its figures with the context's
//! [`crate::metrics::Metrics`] (and labels the store counters its file readers keep), and
//! adds its `STATUS=` parts, reload hooks and shutdown futures.

pub mod asterisk;
pub mod connection;
pub mod framing;
pub mod freeswitch;
pub mod grouping;
pub mod live;
pub mod parts;
pub mod read_buffer;

use std::future::Future;
use std::pin::Pin;

use crate::call::{AgentInfo, CallRecord};
use crate::phone::E164;

/// Builds the configured PBX's parts for the daemon (file sources, live tasks, control,
/// metrics, status, reload hooks). A second PBX adds its branch here and nowhere else.
pub fn build_parts(ctx: &parts::PbxContext<'_>) -> anyhow::Result<parts::PbxParts> {
    let mut parts = parts::PbxParts::default();
    if ctx.config.asterisk.is_some() {
        asterisk::wiring::build(ctx, &mut parts)?;
    }
    if ctx.config.freeswitch.is_some() {
        freeswitch::wiring::build(ctx, &mut parts)?;
    }
    Ok(parts)
}

/// The one-shot importer of the configured PBX's call records (`pbxlink import`); its
/// offsets and staged rows are kept under `name`.
pub fn import_source(
    config: &crate::config::Config,
    store: std::sync::Arc<crate::outbox::Store>,
    wake_delivery: std::sync::Arc<tokio::sync::Notify>,
    name: String,
) -> anyhow::Result<Box<dyn parts::FileImport>> {
    // FreeSWITCH takes json_cdr files and, without `[asterisk]`, CSV files; Asterisk's error
    // names the key to set when neither is configured.
    if config.freeswitch.is_none() {
        return asterisk::wiring::import_source(config, store, wake_delivery, name);
    }
    let asterisk = match config.asterisk {
        Some(_) => Some(asterisk::wiring::import_source(
            config,
            store.clone(),
            wake_delivery.clone(),
            name.clone(),
        )?),
        None => None,
    };
    freeswitch::wiring::import_source(config, store, wake_delivery, name, asterisk)
}

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

impl AssembledCall {
    /// The call `classified` made of the records `staged_ids` (`Err`: why it is skipped).
    pub fn new(classified: Result<CallRecord, String>, staged_ids: Vec<i64>, raw: String) -> Self {
        let (call, skipped) = match classified {
            Ok(call) => (Some(call), None),
            Err(reason) => (None, Some(reason)),
        };
        Self {
            call,
            skipped,
            staged_ids,
            raw,
        }
    }
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

/// A boxed future a [`PbxControl`] answers with: the trait stays object-safe, so the daemon
/// and the HTTP API hold an `Arc<dyn PbxControl>` whichever PBX is configured.
pub type PbxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A call click to call asks the PBX to place (ring the agent, then dial the lead), in the
/// CRM's terms: each PBX maps it to its own actions and dial strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateRequest {
    /// The id the call will have ([`PbxControl::new_call_id`]); the lead id is stored under it
    /// before the PBX is asked, so the call's log finds it.
    pub call_id: String,
    /// The agent to ring, as `[[agents]]` configures them.
    pub agent: AgentInfo,
    /// The lead's number as LeadSquared sent it, normalised (the PBX writes it the way its
    /// dialplan expects).
    pub lead_number: E164,
    /// The LeadSquared lead id, when the request carried one (the PBX attaches it to the call).
    pub lead_id: Option<String>,
    /// The caller id the lead sees (a virtual number).
    pub caller_id: E164,
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

/// What freeing an agent after a disposition came to, in words the answer to the CRM
/// carries (`stored; PJSIP/100 unpaused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRelease {
    /// The configuration leaves agents as they are after a disposition.
    NotConfigured,
    /// Done: what was done (`PJSIP/100 unpaused`).
    Done(String),
    /// Not done: what was tried and why not (`unpausing PJSIP/100 failed: ...`), already logged.
    NotDone(String),
}

/// What the HTTP API asks of a PBX, whichever it is. Object-safe: the futures are boxed.
pub trait PbxControl: Send + Sync + 'static {
    /// A fresh id for a call [`PbxControl::originate`] will place, in the form the PBX takes
    /// as the call's own id (so the call's log carries it).
    fn new_call_id(&self) -> String;

    /// Places a click-to-call call; returns once the PBX accepted it.
    fn originate(&self, request: OriginateRequest) -> PbxFuture<'_, Result<(), PbxError>>;

    /// Frees `agent` after a disposition (`None`: the request named no configured agent), as
    /// the PBX's configuration says (e.g. unpauses the agent's queue member).
    fn free_agent<'a>(&'a self, agent: Option<&'a AgentInfo>) -> PbxFuture<'a, AgentRelease>;

    /// Whether the PBX connection is up.
    fn is_connected(&self) -> bool;
}

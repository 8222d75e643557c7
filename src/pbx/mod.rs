//! PBX sources. Each PBX turns its own records (CDR lines, events) into the shared
//! [`crate::call::CallRecord`] through a [`CallAssembler`]; the pipeline that stores and
//! delivers them is the same for every PBX.

pub mod asterisk;

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

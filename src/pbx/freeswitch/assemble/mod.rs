//! Groups FreeSWITCH legs (json_cdr files or cdr_csv rows) into calls and extracts each
//! call's [`CallFacts`]; the shared rules ([`crate::call`]) decide the rest.
//!
//! # Grouping
//! FreeSWITCH writes one record per leg. Legs are joined by every id that names another
//! leg: `bleg_uuid` / `bridge_uuid` / `signal_bond` / `last_bridge_to` (the bridged leg),
//! `originating_leg_uuid` / `originator` (the leg that placed this one), `call_uuid`, and
//! mod_callcenter's `cc_member_session_uuid`: mod_callcenter originates each agent's leg as
//! a call of its own, so that variable is the only link from an agent's leg (also a losing
//! agent's, ended `LOSE_RACE`) to the caller's. Two legs with the same SIP Call-ID at
//! overlapping times are the two ends of one SIP dialog (FreeSWITCH calling itself) and are
//! joined too; the received end is a *mirror*, no party of the call.
//!
//! # Party A and settling
//! Party A's leg (the **root**) is the earliest leg nobody originated that is not an agent
//! leg of mod_callcenter and not a mirror. A call is complete when it holds its root and
//! no leg of it has arrived for the settle time, or the legs read since ended long after it
//! (a backlog). FreeSWITCH writes a losing agent's leg the moment it loses, long before the
//! caller's; without the root rule that leg would be a call of its own. A group that never
//! gets its root is dropped (counted as skipped) after `max_call_secs`: it is never posted
//! as a call.
//!
//! A leg read twice (the same uuid: a file read again after a crash, a rotated file read
//! from the start) counts once.

mod facts;
pub mod segments;

use std::collections::HashMap;

pub use facts::{LegRole, call_facts, is_mirror, role, root_leg};

use crate::call::{CallFacts, CallRecord};
use crate::pbx::freeswitch::cdr::FsLeg;
use crate::pbx::grouping::{self, KeyedUnionFind, Settling};
use crate::pbx::{AssembledCall, CallAssembler};

/// Turns a call's facts into the call log the CRM is told about, or says why it is not
/// posted: the shared rules (`crate::call::rules`), given by the daemon.
pub type Classifier = Box<dyn Fn(&CallFacts) -> Result<CallRecord, String> + Send>;

/// How long the assembler waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleTimes {
    /// A call with its root is complete after this long without a new leg.
    pub settle_ms: u64,
    /// A group without its root is dropped after this long without a new leg.
    pub max_call_secs: u64,
}

/// A leg waiting for its call to settle.
#[derive(Debug, Clone)]
struct Pending {
    staged_ids: Vec<i64>,
    leg: FsLeg,
    raw: String,
    read_at_ms: i64,
}

/// The legs of one call, taken out of the assembler, and its facts.
#[derive(Debug, Clone)]
pub struct AssembledFacts {
    /// The call's facts, or why its legs make no call.
    pub facts: Result<CallFacts, String>,
    /// Staged row ids consumed.
    pub staged_ids: Vec<i64>,
    /// The raw records, joined by newlines.
    pub raw: String,
}

/// Groups FreeSWITCH legs into calls; see the module documentation.
pub struct FsAssembler {
    source: String,
    classify: Classifier,
    settling: Settling,
    pending: Vec<Pending>,
    by_uuid: HashMap<String, usize>,
}

impl std::fmt::Debug for FsAssembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsAssembler")
            .field("source", &self.source)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl FsAssembler {
    /// An assembler for the source `source` (e.g. `freeswitch-json_cdr`), classifying each
    /// call with `classify`.
    pub fn new(source: String, times: SettleTimes, classify: Classifier) -> Self {
        Self {
            source,
            classify,
            settling: Settling::new(times.settle_ms, times.max_call_secs),
            pending: Vec::new(),
            by_uuid: HashMap::new(),
        }
    }

    /// Replaces the classifier (a configuration reload).
    pub fn set_classifier(&mut self, classify: Classifier) {
        self.classify = classify;
    }

    /// Adds a leg staged under `staged_id`, read at `read_at_ms`.
    pub fn add_leg(&mut self, staged_id: i64, leg: FsLeg, raw: String, read_at_ms: i64) {
        self.settling.saw_end(leg.end.timestamp_millis());
        if let Some(&i) = self.by_uuid.get(&leg.uuid) {
            let p = &mut self.pending[i];
            p.staged_ids.push(staged_id);
            p.read_at_ms = p.read_at_ms.max(read_at_ms);
            tracing::debug!(source = %self.source, uuid = %crate::logtext::Escaped(&leg.uuid), "leg read again, counted once");
            return;
        }
        self.by_uuid.insert(leg.uuid.clone(), self.pending.len());
        self.pending.push(Pending {
            staged_ids: vec![staged_id],
            leg,
            raw,
            read_at_ms,
        });
    }

    /// Groups of pending legs (indices into `pending`), in order of their first leg.
    fn groups(&self) -> Vec<Vec<usize>> {
        let mut uf = KeyedUnionFind::default();
        let mut node_of = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            let leg = &p.leg;
            let a = uf.node(&leg.uuid);
            let links = leg
                .bridged_to
                .iter()
                .chain(&leg.originator)
                .chain(&leg.call_uuid)
                .chain(&leg.cc_member_session_uuid);
            for other in links {
                let b = uf.node(other);
                uf.union(a, b);
            }
            node_of.push(a);
        }
        // The two ends of one SIP dialog.
        let mut by_call_id: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in self.pending.iter().enumerate() {
            if let Some(id) = p.leg.sip_call_id.as_deref() {
                by_call_id.entry(id).or_default().push(i);
            }
        }
        for same in by_call_id.values() {
            for (k, &i) in same.iter().enumerate() {
                for &j in &same[k + 1..] {
                    if facts::overlaps(&self.pending[i].leg, &self.pending[j].leg) {
                        uf.union(node_of[i], node_of[j]);
                    }
                }
            }
        }
        uf.groups(node_of)
    }

    fn take_groups(&mut self, keep: impl Fn(&[&Pending]) -> bool) -> Vec<AssembledFacts> {
        let (out, taken) = grouping::take(&self.pending, self.groups(), keep, |members| {
            self.assemble(members)
        });
        grouping::remove_taken(&mut self.pending, taken);
        self.by_uuid = self
            .pending
            .iter()
            .enumerate()
            .map(|(i, p)| (p.leg.uuid.clone(), i))
            .collect();
        out
    }

    fn assemble(&self, members: &[&Pending]) -> AssembledFacts {
        let mut members = members.to_vec();
        members.sort_by(|a, b| (a.leg.start, &a.leg.uuid).cmp(&(b.leg.start, &b.leg.uuid)));
        let staged_ids = members
            .iter()
            .flat_map(|p| p.staged_ids.iter().copied())
            .collect();
        let raw = members
            .iter()
            .map(|p| p.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let legs: Vec<&FsLeg> = members.iter().map(|p| &p.leg).collect();
        AssembledFacts {
            facts: call_facts(&self.source, &legs),
            staged_ids,
            raw,
        }
    }

    /// The facts of every call settled at `now_ms` (see the module documentation).
    pub fn take_settled_facts(&mut self, now_ms: i64) -> Vec<AssembledFacts> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let settling = self.settling;
        self.take_groups(|members| {
            let legs: Vec<&FsLeg> = members.iter().map(|p| &p.leg).collect();
            settling.waits(
                now_ms,
                members.iter().map(|p| p.read_at_ms).max(),
                root_leg(&legs).is_some(),
                legs.iter().map(|l| l.end.timestamp_millis()).max(),
            )
        })
    }

    /// The facts of every call held, settled or not.
    pub fn take_all_facts(&mut self) -> Vec<AssembledFacts> {
        self.take_groups(|_| false)
    }

    fn classified(&self, calls: Vec<AssembledFacts>) -> Vec<AssembledCall> {
        calls
            .into_iter()
            .map(|a| {
                let classified = a.facts.and_then(|f| (self.classify)(&f));
                AssembledCall::new(classified, a.staged_ids, a.raw)
            })
            .collect()
    }
}

impl CallAssembler for FsAssembler {
    type Record = FsLeg;

    fn add(&mut self, staged_id: i64, record: FsLeg, raw: String, read_at_ms: i64) {
        self.add_leg(staged_id, record, raw, read_at_ms);
    }

    fn take_settled(&mut self, now_ms: i64) -> Vec<AssembledCall> {
        let calls = self.take_settled_facts(now_ms);
        self.classified(calls)
    }

    fn take_all(&mut self) -> Vec<AssembledCall> {
        let calls = self.take_all_facts();
        self.classified(calls)
    }

    fn pending_records(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod transfer_fixtures;

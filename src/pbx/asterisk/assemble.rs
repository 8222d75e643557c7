//! Groups Asterisk CDR rows into calls and turns each call into a [`CallRecord`].
//!
//! # Grouping
//! One call writes several rows (queue members rung in ring-all, Local channel halves,
//! transfers, follow-me). Rows that carry a `linkedid` are grouped by it. Rows without one
//! (the plain 18-column cdr_csv layout) are grouped by the channels they share: a row joins
//! its `channel` and `dstchannel`, and the two halves `;1`/`;2` of a Local channel count as
//! one channel, so the connected rows form the call.
//!
//! A call is complete when it holds its **root row** and no row of it has arrived for the
//! settle time (or the file has moved on to rows that ended long after it: a backlog).
//! The root row is party A's own row: its `uniqueid` equals the `linkedid`, or (without
//! linkedid) its channel is not the far half (`;2`) of a Local channel. Asterisk writes the
//! root's rows when the call ends, but writes the row of a ring-all queue member the moment
//! that member is cancelled, seconds or minutes earlier; without the root rule that early
//! row would be posted as a call of its own. A group that never gets its root is released
//! after `max_call_secs`.
//!
//! # Facts
//! The root row is party A: its `src`, `dst`, channel and context. Which agents answered is
//! Asterisk's to tell: a row whose `dstchannel` is set and whose disposition is ANSWERED
//! means party B answered; the PBX answering (an IVR, or a queue's `Answer()`) leaves
//! `dstchannel` empty, so a call only the IVR or queue answered has no answering agent.
//! Through Local channels the agent is the deepest answered channel: `Local/100@ctx;1`
//! answered because `;2` dialled `PJSIP/100`, which is the agent. The agent's own row gives
//! the talk time (billsec): a queue's row counts from the queue's answer, so its billsec
//! includes the wait in the queue. A transferred call has one segment per agent who talked
//! to the lead, and a forwarded one notes who it was meant for (see [`transfers`]).
//! Direction, outcome, numbers, voicemail and the recording
//! URL are then decided by the shared [`crate::call::rules`].

use super::cdr::{CdrRow, Disposition};
use crate::call::{
    AgentSegment, CallFacts, CallRecord, CallRules, DialResult, Directory, RecordingRef,
};
use crate::pbx::grouping::{self, KeyedUnionFind, Settling};

mod transfers;
use crate::pbx::{AssembledCall, CallAssembler};

/// A staged row waiting for its call to settle.
#[derive(Debug, Clone)]
struct Pending {
    staged_id: i64,
    row: CdrRow,
    raw: String,
    read_at_ms: i64,
}

/// Groups Asterisk CDR rows into calls; see the module documentation for the rules.
#[derive(Debug)]
pub struct AsteriskAssembler {
    source: String,
    directory: Directory,
    rules: CallRules,
    settling: Settling,
    pending: Vec<Pending>,
}

impl AsteriskAssembler {
    /// An assembler for one CDR source.
    pub fn new(
        source: String,
        directory: Directory,
        rules: CallRules,
        settle_ms: u64,
        max_call_secs: u64,
    ) -> Self {
        Self {
            source,
            directory,
            rules,
            settling: Settling::new(settle_ms, max_call_secs),
            pending: Vec::new(),
        }
    }

    /// Replaces the agent table and virtual numbers (config reload).
    pub fn set_directory(&mut self, directory: Directory) {
        self.directory = directory;
    }

    /// Splits pending rows into groups (indices into `pending`), oldest group first.
    fn groups(&self) -> Vec<Vec<usize>> {
        let mut uf = KeyedUnionFind::default();
        let mut row_node = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            let row = &p.row;
            let node = match &row.linkedid {
                Some(linkedid) => uf.node(&format!("L:{linkedid}")),
                None => {
                    let a = uf.node(&channel_key(&row.channel));
                    if !row.dstchannel.is_empty() {
                        let b = uf.node(&channel_key(&row.dstchannel));
                        uf.union(a, b);
                    }
                    a
                }
            };
            row_node.push(node);
        }
        uf.groups(row_node)
    }

    fn take_groups(&mut self, keep: impl Fn(&[&Pending]) -> bool) -> Vec<AssembledCall> {
        let (calls, taken) = grouping::take(&self.pending, self.groups(), keep, |members| {
            self.assemble(members)
        });
        grouping::remove_taken(&mut self.pending, taken);
        calls
    }

    fn assemble(&self, members: &[&Pending]) -> AssembledCall {
        let mut rows: Vec<&Pending> = members.to_vec();
        rows.sort_by_key(|p| (p.row.start, p.row.sequence, p.staged_id));
        let staged_ids = rows.iter().map(|p| p.staged_id).collect();
        let raw = rows
            .iter()
            .map(|p| p.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let cdr_rows: Vec<&CdrRow> = rows.iter().map(|p| &p.row).collect();
        let classified = classify(&self.source, &self.directory, &self.rules, &cdr_rows);
        AssembledCall::new(classified, staged_ids, raw)
    }
}

impl CallAssembler for AsteriskAssembler {
    type Record = CdrRow;

    fn add(&mut self, staged_id: i64, row: CdrRow, raw: String, read_at_ms: i64) {
        self.settling.saw_end(row.end.timestamp_millis());
        self.pending.push(Pending {
            staged_id,
            row,
            raw,
            read_at_ms,
        });
    }

    fn take_settled(&mut self, now_ms: i64) -> Vec<AssembledCall> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let settling = self.settling;
        self.take_groups(|members| {
            settling.waits(
                now_ms,
                members.iter().map(|p| p.read_at_ms).max(),
                members.iter().any(|p| is_root(&p.row)),
                members.iter().map(|p| p.row.end.timestamp_millis()).max(),
            )
        })
    }

    fn take_all(&mut self) -> Vec<AssembledCall> {
        self.take_groups(|_| false)
    }

    fn pending_records(&self) -> usize {
        self.pending.len()
    }
}

/// A channel's identity for grouping: the two halves of a Local channel are one.
fn channel_key(channel: &str) -> String {
    let base = channel
        .strip_suffix(";1")
        .or_else(|| channel.strip_suffix(";2"))
        .unwrap_or(channel);
    format!("C:{base}")
}

fn is_local(channel: &str) -> bool {
    channel.starts_with("Local/")
}

/// The far half of a Local channel: the side that runs the dialled extension.
fn is_local_far_half(channel: &str) -> bool {
    is_local(channel) && channel.ends_with(";2")
}

/// Party A's own row: the channel the call started on. With both ids it is the row whose
/// uniqueid is the linkedid (an attended transfer's consultation row, written before the
/// rest of the call, is not).
fn is_root(row: &CdrRow) -> bool {
    match (&row.linkedid, &row.uniqueid) {
        (Some(linkedid), Some(uniqueid)) => linkedid == uniqueid,
        _ => !is_local_far_half(&row.channel),
    }
}

/// The row the call is classified by: the root row nobody dialled, earliest first,
/// preferring one that dialled somebody.
fn root_row<'a>(rows: &[&'a CdrRow]) -> Option<&'a CdrRow> {
    let dialled: std::collections::HashSet<String> = rows
        .iter()
        .filter(|r| !r.dstchannel.is_empty())
        .map(|r| channel_key(&r.dstchannel))
        .collect();
    let undialled = |r: &CdrRow| !dialled.contains(&channel_key(&r.channel));
    let earliest = |keep: &dyn Fn(&CdrRow) -> bool| {
        rows.iter()
            .copied()
            .filter(|r| keep(r))
            .min_by_key(|r| (r.start, r.dstchannel.is_empty()))
    };
    earliest(&|r| is_root(r) && undialled(r))
        .or_else(|| earliest(&undialled))
        .or_else(|| earliest(&|_| true))
}

/// The extension or peer a channel belongs to: `PJSIP/100-0000000a` → `100`,
/// `Local/100@agents-00000001;2` → `100`, `SIP/trunk-00000001` → `trunk`.
pub fn channel_extension(channel: &str) -> Option<&str> {
    let (_, resource) = channel.split_once('/')?;
    let resource = if is_local(channel) {
        resource.split('@').next()?
    } else {
        match resource.rfind('-') {
            Some(i) => &resource[..i],
            None => resource,
        }
    };
    (!resource.is_empty()).then_some(resource)
}

/// Turns the rows of one call into a [`CallRecord`] with the shared [`CallRules`], or says
/// why it is not posted.
pub fn classify(
    source: &str,
    directory: &Directory,
    rules: &CallRules,
    rows: &[&CdrRow],
) -> Result<CallRecord, String> {
    let facts = call_facts(source, directory, rows).ok_or("a call with no rows")?;
    rules
        .record(directory, &facts)
        .map_err(|reason| reason.to_string())
}

/// What the rows of one call say, for the shared rules: party A is the root row, the
/// answering agents are the deepest answered channels (through Local channels), the talk
/// time is the agent's own row's billsec.
pub fn call_facts(source: &str, directory: &Directory, rows: &[&CdrRow]) -> Option<CallFacts> {
    let first = root_row(rows)?;
    let call_id = rows
        .iter()
        .find_map(|r| r.linkedid.clone())
        .or_else(|| first.uniqueid.clone())
        .unwrap_or_else(|| synthetic_call_id(first));
    let start = rows.iter().map(|r| r.start).min().unwrap_or(first.start);
    let end = rows.iter().map(|r| r.end).max().unwrap_or(first.end);
    let mut facts = CallFacts::new(call_id, source, start, end);
    facts.caller_number = transfers::lead_number(rows, first).to_owned();
    facts.caller_name = first.caller_name().map(str::to_owned);
    facts.caller_extension = channel_extension(&first.channel).map(str::to_owned);
    facts.dialled = first.dst.clone();
    facts.contexts = std::iter::once(&first.dcontext)
        .chain(rows.iter().map(|r| &r.dcontext))
        .fold(Vec::new(), |mut all, c| {
            if !all.contains(c) {
                all.push(c.clone());
            }
            all
        });
    facts.did_candidates = rows
        .iter()
        .filter_map(|r| r.extra.get("did").filter(|d| !d.is_empty()).cloned())
        .chain(rows.iter().map(|r| r.dst.clone()))
        .collect();
    facts.shown_caller_ids = rows
        .iter()
        .filter_map(|r| r.clid_number().map(str::to_owned))
        .chain(rows.iter().map(|r| r.src.clone()))
        .collect();
    facts.answered = transfers::transferred_segments(directory, rows, first)
        .unwrap_or_else(|| answered_segments(directory, rows));
    if let Some(segment) = facts.answered.first_mut() {
        if let Some(from) = transfers::forwarded_from(directory, rows, first, segment) {
            segment.arrival = crate::call::SegmentArrival::Forwarded { from };
        }
    }
    let dialled_rows = || rows.iter().filter(|r| !r.dstchannel.is_empty());
    facts.rung_agents = dialled_rows()
        .filter_map(|r| channel_extension(&r.dstchannel).map(str::to_owned))
        .collect();
    // The earliest leg whose party B answered: for an agent's call, the outside number.
    facts.outside_answered = dialled_rows()
        .filter(|r| r.disposition == Disposition::Answered)
        .min_by_key(|r| r.answer)
        .map(|r| (r.answer.unwrap_or(r.start), r.billsec));
    facts.attempts = dialled_rows().map(|r| dial_result(r.disposition)).collect();
    facts.own_result = rows.first().map(|r| dial_result(r.disposition));
    facts.applications = rows.iter().map(|r| r.lastapp.clone()).collect();
    facts.recording = rows
        .iter()
        .find_map(|r| r.recordingfile.clone())
        .map(|file| RecordingRef {
            file,
            channel_id: first.uniqueid.clone(),
        });
    facts.lead_id = rows.iter().find_map(|r| r.leadid.clone());
    facts.lead_number_hint = rows.iter().find_map(|r| {
        r.extra
            .get("leadnumber")
            .filter(|n| !n.trim().is_empty())
            .cloned()
    });
    facts.legs = rows.len() as u32;
    Some(facts)
}

fn dial_result(disposition: Disposition) -> DialResult {
    match disposition {
        Disposition::Answered => DialResult::Answered,
        Disposition::NoAnswer => DialResult::NoAnswer,
        Disposition::Busy => DialResult::Busy,
        Disposition::Failed => DialResult::Failed,
        Disposition::Congestion => DialResult::Congestion,
    }
}

/// The agents who answered, earliest first, each with the row that shows its talk time.
///
/// Each answered leg is followed to its deepest channel. Configured agents on real channels
/// count first; failing those, configured agents that are Local channels answered by
/// dialplan; failing those, the first real channel that answered (an extension that is not
/// in the agent table). The first segment is the call's answering agent.
fn answered_segments(directory: &Directory, rows: &[&CdrRow]) -> Vec<AgentSegment> {
    let mut answered: Vec<&CdrRow> = rows
        .iter()
        .copied()
        .filter(|r| r.disposition == Disposition::Answered && !r.dstchannel.is_empty())
        .collect();
    answered.sort_by_key(|r| r.answer);
    let leaves: Vec<(&str, &CdrRow)> = answered.iter().map(|r| deepest_answered(rows, r)).collect();
    let pick = |want_local: bool, want_agent: bool| -> Vec<AgentSegment> {
        let mut segments: Vec<AgentSegment> = Vec::new();
        for &(channel, row) in &leaves {
            let Some(ext) = channel_extension(channel) else {
                continue;
            };
            let fits = is_local(channel) == want_local
                && (!want_agent || directory.is_agent_extension(ext));
            if !fits || segments.iter().any(|s| s.extension == ext) {
                continue;
            }
            segments.push(AgentSegment {
                extension: ext.to_owned(),
                answered_at: row.answer.unwrap_or(row.start),
                ended_at: Some(row.end),
                talk_seconds: row.billsec,
                arrival: crate::call::SegmentArrival::Direct,
            });
            if !want_agent {
                break;
            }
        }
        segments
    };
    [(false, true), (true, true), (false, false)]
        .into_iter()
        .map(|(local, agent)| pick(local, agent))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// From a row whose party B answered, follows Local channels (`;1` dialled, `;2` runs the
/// extension) to the channel that really answered, and the row that times it.
fn deepest_answered<'a>(rows: &[&'a CdrRow], start: &'a CdrRow) -> (&'a str, &'a CdrRow) {
    let mut current = start;
    for _ in 0..8 {
        let b = current.dstchannel.as_str();
        let Some(near) = b.strip_suffix(";1").filter(|_| is_local(b)) else {
            return (b, current);
        };
        let far = format!("{near};2");
        let Some(next) = rows
            .iter()
            .copied()
            .filter(|r| r.channel == far && r.disposition == Disposition::Answered)
            .min_by_key(|r| r.dstchannel.is_empty())
        else {
            return (b, current);
        };
        if next.dstchannel.is_empty() {
            // The Local channel's extension answered by itself (dialplan Answer()).
            return (b, next);
        }
        current = next;
    }
    (current.dstchannel.as_str(), current)
}

fn synthetic_call_id(row: &CdrRow) -> String {
    let mut hasher = crc32fast::Hasher::new();
    for part in [&row.channel, &row.src, &row.dst, &row.dstchannel] {
        hasher.update(part.as_bytes());
        hasher.update(b"\x1f");
    }
    format!("cdr-{}-{:08x}", row.start.timestamp(), hasher.finalize())
}

#[cfg(test)]
mod tests;

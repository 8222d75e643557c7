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
//! # Classification
//! The root row also decides the direction and the numbers:
//! - **Outbound**: party A's channel (or `src`) is an agent extension and the dialled number
//!   is an outside number (or the context is an outbound context and the dialled number is not
//!   an extension). An agent calling an agent is internal and not posted.
//! - **Inbound**: otherwise, when the caller is an outside number, the context is an inbound
//!   context, or the dialled number is a virtual number.
//! - **Answered** (inbound): a row whose `dstchannel` is set and whose disposition is ANSWERED
//!   means party B (an agent) answered. The PBX answering (an IVR, or a queue's `Answer()`)
//!   leaves `dstchannel` empty, so a call only the IVR or queue answered is **Missed**.
//!   Through Local channels the agent is the deepest answered channel: `Local/100@ctx;1`
//!   answered because `;2` dialled `PJSIP/100`, which is the agent. The agent's own row gives
//!   the talk time (billsec): a queue's row counts from the queue's answer, so its billsec
//!   includes the wait in the queue.
//! - **Voicemail**: nobody answered and a row ran a voicemail application.
//! - Otherwise the dial attempts tell Missed (NO ANSWER), Busy (every attempt busy), Failed
//!   or Congestion.

use std::collections::HashMap;

use super::cdr::{CdrRow, Disposition};
use crate::call::{CallRecord, Direction, Directory, Outcome};
use crate::pbx::{AssembledCall, CallAssembler};

/// The classification settings of `[asterisk]`.
#[derive(Debug, Clone)]
pub struct ClassifyRules {
    /// Contexts that receive outside calls.
    pub inbound_contexts: Vec<String>,
    /// Contexts agents dial out from.
    pub outbound_contexts: Vec<String>,
    /// Applications that mean voicemail.
    pub voicemail_apps: Vec<String>,
    /// DisplayNumber for outbound calls when the CDR does not show one.
    pub outbound_display_number: Option<String>,
    /// Prefix agents dial before outside numbers.
    pub outbound_dial_prefix: String,
    /// Recording URL template.
    pub recording_url_template: Option<String>,
    /// Signed links to recordings (`[recordings]`), used when no template is set.
    pub recordings: Option<crate::recordings::RecordingLinks>,
}

impl ClassifyRules {
    /// From `[asterisk]`.
    pub fn from_config(c: &crate::config::AsteriskConfig) -> Self {
        Self {
            inbound_contexts: c.inbound_contexts.clone(),
            outbound_contexts: c.outbound_contexts.clone(),
            voicemail_apps: c.voicemail_apps.clone(),
            outbound_display_number: c.outbound_display_number.clone(),
            outbound_dial_prefix: c.outbound_dial_prefix.clone(),
            recording_url_template: c.recording_url_template.clone(),
            recordings: None,
        }
    }
}

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
    rules: ClassifyRules,
    settle_ms: i64,
    /// A group whose rows all ended this long before the newest row seen is complete
    /// whatever its read time (bounds memory while a backlog is read).
    watermark_lag_ms: i64,
    /// A group without its root row is released after this long without new rows.
    max_call_ms: i64,
    pending: Vec<Pending>,
    newest_end_ms: i64,
}

impl AsteriskAssembler {
    /// An assembler for one CDR source.
    pub fn new(
        source: String,
        directory: Directory,
        rules: ClassifyRules,
        settle_ms: u64,
        max_call_secs: u64,
    ) -> Self {
        let settle_ms = i64::try_from(settle_ms).unwrap_or(i64::MAX);
        Self {
            source,
            directory,
            rules,
            settle_ms,
            watermark_lag_ms: settle_ms.max(60_000),
            max_call_ms: i64::try_from(max_call_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            pending: Vec::new(),
            newest_end_ms: i64::MIN,
        }
    }

    /// Replaces the agent table and virtual numbers (config reload).
    pub fn set_directory(&mut self, directory: Directory) {
        self.directory = directory;
    }

    /// Splits pending rows into groups (indices into `pending`), oldest group first.
    fn groups(&self) -> Vec<Vec<usize>> {
        let mut uf = UnionFind::default();
        let mut row_node = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            let row = &p.row;
            let node = match &row.linkedid {
                Some(linkedid) => uf.node(format!("L:{linkedid}")),
                None => {
                    let a = uf.node(channel_key(&row.channel));
                    if !row.dstchannel.is_empty() {
                        let b = uf.node(channel_key(&row.dstchannel));
                        uf.union(a, b);
                    }
                    a
                }
            };
            row_node.push(node);
        }
        let mut by_root: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut order = Vec::new();
        for (i, node) in row_node.into_iter().enumerate() {
            let root = uf.find(node);
            by_root
                .entry(root)
                .or_insert_with(|| {
                    order.push(root);
                    Vec::new()
                })
                .push(i);
        }
        order
            .into_iter()
            .filter_map(|root| by_root.remove(&root))
            .collect()
    }

    fn take_groups(&mut self, keep: impl Fn(&[&Pending]) -> bool) -> Vec<AssembledCall> {
        let groups = self.groups();
        let mut taken = vec![false; self.pending.len()];
        let mut calls = Vec::new();
        for group in groups {
            let members: Vec<&Pending> = group.iter().map(|&i| &self.pending[i]).collect();
            if keep(&members) {
                continue;
            }
            for &i in &group {
                taken[i] = true;
            }
            calls.push(self.assemble(&members));
        }
        let mut i = 0;
        self.pending.retain(|_| {
            let keep = !taken[i];
            i += 1;
            keep
        });
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
        let (call, skipped) = match classify(&self.source, &self.directory, &self.rules, &cdr_rows)
        {
            Ok(call) => (Some(call), None),
            Err(reason) => (None, Some(reason)),
        };
        AssembledCall {
            call,
            skipped,
            staged_ids,
            raw,
        }
    }
}

impl CallAssembler for AsteriskAssembler {
    type Record = CdrRow;

    fn add(&mut self, staged_id: i64, row: CdrRow, raw: String, read_at_ms: i64) {
        self.newest_end_ms = self.newest_end_ms.max(row.end.timestamp_millis());
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
        let settle = self.settle_ms;
        let newest_end = self.newest_end_ms;
        let lag = self.watermark_lag_ms;
        let max_call = self.max_call_ms;
        self.take_groups(|members| {
            let last_read = members.iter().map(|p| p.read_at_ms).max().unwrap_or(now_ms);
            let quiet_for = now_ms.saturating_sub(last_read);
            if !members.iter().any(|p| is_root(&p.row)) {
                return quiet_for < max_call;
            }
            let last_end = members
                .iter()
                .map(|p| p.row.end.timestamp_millis())
                .max()
                .unwrap_or(newest_end);
            let overtaken = newest_end.saturating_sub(last_end) >= lag;
            !(quiet_for >= settle || overtaken)
        })
    }

    fn take_all(&mut self) -> Vec<AssembledCall> {
        self.take_groups(|_| false)
    }

    fn pending_records(&self) -> usize {
        self.pending.len()
    }
}

#[derive(Default)]
struct UnionFind {
    ids: HashMap<String, usize>,
    parent: Vec<usize>,
}

impl UnionFind {
    fn node(&mut self, key: String) -> usize {
        let next = self.parent.len();
        let id = *self.ids.entry(key).or_insert(next);
        if id == next {
            self.parent.push(next);
        }
        id
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb.max(ra)] = rb.min(ra);
        }
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

/// Party A's own row: the channel the call started on.
fn is_root(row: &CdrRow) -> bool {
    match (&row.linkedid, &row.uniqueid) {
        (Some(linkedid), Some(uniqueid)) if linkedid == uniqueid => true,
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

/// Turns the rows of one call into a [`CallRecord`], or says why it is not posted.
pub fn classify(
    source: &str,
    directory: &Directory,
    rules: &ClassifyRules,
    rows: &[&CdrRow],
) -> Result<CallRecord, String> {
    let first = root_row(rows).ok_or("a call with no rows")?;
    let call_id = rows
        .iter()
        .find_map(|r| r.linkedid.clone())
        .or_else(|| first.uniqueid.clone())
        .unwrap_or_else(|| synthetic_call_id(first));
    let start = rows.iter().map(|r| r.start).min().unwrap_or(first.start);
    let end = rows.iter().map(|r| r.end).max().unwrap_or(first.end);
    let lead_id = rows.iter().find_map(|r| r.leadid.clone());
    let recording_url = rows
        .iter()
        .find_map(|r| r.recordingfile.as_deref())
        .and_then(|file| recording_url(rules, file, first, &call_id));

    let caller_ext = channel_extension(&first.channel)
        .filter(|e| directory.is_agent_extension(e))
        .or_else(|| {
            directory
                .is_agent_extension(&first.src)
                .then_some(first.src.as_str())
        });
    let dialled = strip_prefix(&first.dst, &rules.outbound_dial_prefix);

    if let Some(agent_ext) = caller_ext {
        let external = directory.is_external(dialled)
            || (rules.outbound_contexts.contains(&first.dcontext)
                && !directory.is_agent_extension(dialled)
                && directory.virtual_number(dialled).is_none());
        if !external {
            return Err(format!(
                "internal call from extension {agent_ext} to {:?}",
                first.dst
            ));
        }
        let answered = rows
            .iter()
            .filter(|r| r.disposition == Disposition::Answered && !r.dstchannel.is_empty())
            .min_by_key(|r| r.answer);
        let outcome = match answered {
            Some(_) => Outcome::Answered,
            None => missed_outcome(rows),
        };
        let display = rows
            .iter()
            .filter_map(|r| r.clid_number())
            .chain(rows.iter().map(|r| r.src.as_str()))
            .find_map(|n| directory.virtual_number(n))
            .map(|v| v.number.to_e164())
            .or_else(|| rules.outbound_display_number.clone())
            .or_else(|| directory.first_virtual_number().map(|v| v.number.to_e164()));
        let tag = display
            .as_deref()
            .and_then(|d| directory.virtual_number(d))
            .and_then(|v| v.tag.clone());
        return Ok(CallRecord {
            call_id,
            source: source.to_owned(),
            direction: Direction::Outbound,
            outcome,
            lead_number: directory.number(dialled),
            agent: directory.agent(agent_ext).cloned(),
            agent_extension: Some(agent_ext.to_owned()),
            display_number: display.map(|d| directory.number(&d)),
            tag,
            start,
            answer: answered.and_then(|r| r.answer),
            end,
            talk_seconds: answered.map_or(0, |r| r.billsec),
            caller_name: None,
            recording_url,
            lead_id,
            legs: rows.len() as u32,
        });
    }

    let inbound = directory.is_external(&first.src)
        || rows
            .iter()
            .any(|r| rules.inbound_contexts.contains(&r.dcontext))
        || rows
            .iter()
            .any(|r| directory.virtual_number(&r.dst).is_some());
    if !inbound {
        return Err(format!(
            "neither inbound nor outbound: {:?} called {:?} in context {:?}",
            first.src, first.dst, first.dcontext
        ));
    }

    let answered = answering_agent(directory, rows);
    let voicemail = rows.iter().any(|r| {
        rules
            .voicemail_apps
            .iter()
            .any(|app| app.eq_ignore_ascii_case(&r.lastapp))
    });
    let outcome = match (&answered, voicemail) {
        (Some(_), _) => Outcome::Answered,
        (None, true) => Outcome::Voicemail,
        (None, false) => missed_outcome(rows),
    };
    let rung_agent = answered.as_ref().map(|(ext, _)| ext.clone()).or_else(|| {
        rows.iter()
            .filter(|r| !r.dstchannel.is_empty())
            .filter_map(|r| channel_extension(&r.dstchannel))
            .find(|e| directory.is_agent_extension(e))
            .map(str::to_owned)
    });
    let did = rows
        .iter()
        .find_map(|r| r.extra.get("did").filter(|d| !d.is_empty()))
        .and_then(|d| directory.virtual_number(d).map(|v| (d.clone(), v)))
        .or_else(|| {
            rows.iter()
                .find_map(|r| directory.virtual_number(&r.dst).map(|v| (r.dst.clone(), v)))
        });
    let (display, tag) = match did {
        Some((raw, v)) => (Some(directory.number(&raw)), v.tag.clone()),
        None => match directory.first_virtual_number() {
            Some(v) => (Some(directory.number(&v.number.to_e164())), v.tag.clone()),
            None => (Some(directory.number(&first.dst)), None),
        },
    };
    Ok(CallRecord {
        call_id,
        source: source.to_owned(),
        direction: Direction::Inbound,
        outcome,
        lead_number: directory.number(&first.src),
        agent: rung_agent
            .as_deref()
            .and_then(|e| directory.agent(e))
            .cloned(),
        agent_extension: rung_agent,
        display_number: display,
        tag,
        start,
        answer: answered.as_ref().and_then(|(_, r)| r.answer),
        end,
        talk_seconds: answered.as_ref().map_or(0, |(_, r)| r.billsec),
        caller_name: first.caller_name().map(str::to_owned),
        recording_url,
        lead_id,
        legs: rows.len() as u32,
    })
}

/// The extension of the agent who answered, and the row that shows the agent's talk time.
fn answering_agent<'a>(directory: &Directory, rows: &[&'a CdrRow]) -> Option<(String, &'a CdrRow)> {
    let mut answered: Vec<&CdrRow> = rows
        .iter()
        .copied()
        .filter(|r| r.disposition == Disposition::Answered && !r.dstchannel.is_empty())
        .collect();
    answered.sort_by_key(|r| r.answer);
    // Follow each answered leg to its deepest channel, then prefer a configured agent on a
    // real channel, then a configured agent that is a Local channel answered by dialplan,
    // then any real channel that answered.
    let leaves: Vec<(&str, &CdrRow)> = answered.iter().map(|r| deepest_answered(rows, r)).collect();
    let pick = |want_local: bool, want_agent: bool| {
        leaves.iter().find_map(|&(channel, row)| {
            let ext = channel_extension(channel)?;
            let fits = is_local(channel) == want_local
                && (!want_agent || directory.is_agent_extension(ext));
            fits.then(|| (ext.to_owned(), row))
        })
    };
    pick(false, true)
        .or_else(|| pick(true, true))
        .or_else(|| pick(false, false))
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

fn missed_outcome(rows: &[&CdrRow]) -> Outcome {
    let attempts: Vec<Disposition> = rows
        .iter()
        .filter(|r| !r.dstchannel.is_empty())
        .map(|r| r.disposition)
        .collect();
    if attempts.is_empty() {
        // Nobody was dialled: an IVR, or a caller who hung up first.
        return match rows.first().map(|r| r.disposition) {
            Some(Disposition::Failed) => Outcome::Failed,
            Some(Disposition::Congestion) => Outcome::Congestion,
            _ => Outcome::NoAnswer,
        };
    }
    if attempts.iter().all(|d| *d == Disposition::Busy) {
        Outcome::Busy
    } else if attempts.contains(&Disposition::NoAnswer) || attempts.contains(&Disposition::Answered)
    {
        Outcome::NoAnswer
    } else if attempts.iter().all(|d| *d == Disposition::Congestion) {
        Outcome::Congestion
    } else if attempts
        .iter()
        .all(|d| matches!(d, Disposition::Failed | Disposition::Congestion))
    {
        Outcome::Failed
    } else {
        Outcome::NoAnswer
    }
}

fn strip_prefix<'a>(number: &'a str, prefix: &str) -> &'a str {
    if prefix.is_empty() {
        return number;
    }
    number.strip_prefix(prefix).unwrap_or(number)
}

fn synthetic_call_id(row: &CdrRow) -> String {
    let mut hasher = crc32fast::Hasher::new();
    for part in [&row.channel, &row.src, &row.dst, &row.dstchannel] {
        hasher.update(part.as_bytes());
        hasher.update(b"\x1f");
    }
    format!("cdr-{}-{:08x}", row.start.timestamp(), hasher.finalize())
}

fn recording_url(
    rules: &ClassifyRules,
    file: &str,
    first: &CdrRow,
    call_id: &str,
) -> Option<String> {
    let start = first.start;
    let expand = |template: &str| {
        template
            .replace("{file}", file)
            .replace("{uniqueid}", first.uniqueid.as_deref().unwrap_or(call_id))
            .replace("{linkedid}", call_id)
            .replace("{year}", &start.format("%Y").to_string())
            .replace("{month}", &start.format("%m").to_string())
            .replace("{day}", &start.format("%d").to_string())
    };
    crate::recordings::resource_url(
        file,
        start,
        rules.recording_url_template.as_deref(),
        expand,
        rules.recordings.as_ref(),
    )
}

#[cfg(test)]
mod tests;

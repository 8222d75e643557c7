//! Follows live calls from AMI events, keyed by `Linkedid` (one id for the whole call).
//!
//! It turns events into two things: an agent popup when an inbound call from outside starts
//! ringing an agent (`DialBegin` towards an agent's channel, or `AgentCalled` for a queue
//! member; every ringing agent of a ring-all queue, once each), and, when the last channel of
//! a call hangs up, the finished [`CallRecord`] (used when `call_log_source = "ami"`).
//! The `CallSessionId` of both is the Linkedid, the same id the CDR path uses, so with
//! `call_log_source = "both"` the reconciler ([`crate::call::reconcile`]) merges the two
//! records of a call into one call log.
//!
//! The tracker only *extracts* what the events say ([`crate::call::RingingFacts`] when an
//! agent rings, [`crate::call::CallFacts`] at the last hangup); whether a call pops, its
//! direction, outcome and numbers are decided by the shared [`crate::call::rules`], the same
//! rules the CDR assembler applies.
//!
//! The tracker is bounded: calls silent for longer than the maximum call length are
//! expired, and beyond `max_calls` the least recently active are dropped, in O(1) each (a
//! queue in order of activity, not a scan of the table), with one warning line per
//! [`EVICTION_LOG_INTERVAL_MS`] that counts them. After an AMI reconnect it is cleared and
//! rebuilt from `CoreShowChannel` events.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};

use super::assemble::channel_extension;
use crate::call::{
    AgentSegment, CallFacts, CallRecord, CallRules, DialResult, Directory, RecordingRef,
    RingingFacts,
};

/// Read access to one AMI event's headers (first value of a repeated key, like Asterisk).
pub trait EventFields {
    /// The value of `key`, if present.
    fn field(&self, key: &str) -> Option<&str>;
}

impl EventFields for HashMap<String, String> {
    fn field(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

pub use crate::call::PopupRequest;

/// What handling an event produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerOutput {
    /// Post an agent popup.
    Popup(Box<PopupRequest>),
    /// A call ended; `None` for calls the CRM is not told about (internal calls).
    Ended(Option<Box<CallRecord>>),
}

/// Limits and rules of the tracker.
#[derive(Debug, Clone)]
pub struct TrackerSettings {
    /// The call rules (the same the CDR assembler applies).
    pub rules: CallRules,
    /// At most this many calls are followed at once.
    pub max_calls: usize,
    /// A call silent for this long is dropped.
    pub max_call_ms: i64,
}

#[derive(Debug, Clone)]
struct Root {
    channel: String,
    caller_num: String,
    caller_name: String,
    exten: String,
    context: String,
}

/// The channel variable (and CDR column) click to call sets to the lead's number as
/// LeadSquared sent it; it wins over the dialled digits.
pub const LEAD_NUMBER_VARIABLE: &str = "LEADNUMBER";

/// Distinct dialplan applications remembered per call (for the voicemail rule).
pub const MAX_APPLICATIONS: usize = 32;

/// At most one "call table full" warning per this many ms (a flood of new calls is
/// summarised: how many were forgotten since the last line).
pub const EVICTION_LOG_INTERVAL_MS: i64 = 10_000;

#[derive(Debug, Clone)]
struct Call {
    started_at: DateTime<Utc>,
    last_event_ms: i64,
    /// Stamp of the call's latest entry in [`CallTracker::activity`].
    stamp: u64,
    root: Option<Root>,
    /// Uniqueid → hung up yet.
    channels: HashMap<String, bool>,
    popped: HashSet<String>,
    /// Agent extensions rung, in order, once each.
    rung_agents: Vec<String>,
    /// Agents who answered, in order.
    answered: Vec<Answered>,
    dial_statuses: Vec<String>,
    /// The recording MixMonitor announced (`MIXMONITOR_FILENAME`).
    recording: Option<RecordingRef>,
    /// Dialplan applications the call ran (`Newexten`), once each, at most
    /// [`MAX_APPLICATIONS`].
    applications: Vec<String>,
    lead_id: Option<String>,
    /// The lead's number as LeadSquared sent it (click to call sets [`LEAD_NUMBER_VARIABLE`]).
    lead_number_hint: Option<String>,
    /// The first outside number the call dialled (outbound calls that start on an agent's
    /// channel, like click to call, reach the lead through `Dial`).
    dialled: Option<String>,
    /// When an outside number (the lead of an outbound call) answered.
    outside_answered: Option<DateTime<Utc>>,
}

/// One agent who answered: when, on which channel, and when that channel hung up.
#[derive(Debug, Clone)]
struct Answered {
    extension: String,
    uniqueid: Option<String>,
    at: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
}

impl Call {
    /// Notes that agent `extension` answered on channel `uniqueid` (once per agent leg).
    fn agent_answered(&mut self, extension: String, uniqueid: Option<&str>, at: DateTime<Utc>) {
        let again = self
            .answered
            .iter()
            .any(|a| a.extension == extension && a.ended.is_none());
        if !again {
            self.answered.push(Answered {
                extension,
                uniqueid: uniqueid.map(str::to_owned),
                at,
                ended: None,
            });
        }
    }
}

/// How a `DialStatus` reads as a dial result.
fn dial_result(status: &str) -> DialResult {
    match status {
        "ANSWER" => DialResult::Answered,
        "BUSY" => DialResult::Busy,
        "CONGESTION" => DialResult::Congestion,
        "CHANUNAVAIL" | "INVALIDARGS" | "DONTCALL" | "TORTURE" => DialResult::Failed,
        _ => DialResult::NoAnswer,
    }
}

/// Whole seconds from `from` to `to`, 0 when negative.
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_seconds()).unwrap_or(0)
}

/// The number a `Dial` string calls: `PJSIP/+919611795983@trunk` → `+919611795983`,
/// `Local/919611795983@pstn` → `919611795983`, `trunk/0961...` → `0961...`.
fn dial_target(dial_string: &str) -> &str {
    let after_tech = dial_string.rsplit('/').next().unwrap_or(dial_string);
    let after_tech = after_tech.strip_prefix("sip:").unwrap_or(after_tech);
    after_tech
        .split(['@', ',', '&'])
        .next()
        .unwrap_or(after_tech)
}

/// A caller id value, unless Asterisk's placeholder for none.
fn known_caller(value: Option<&str>) -> Option<&str> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "<unknown>")
}

/// The live call table. See the module documentation.
#[derive(Debug)]
pub struct CallTracker {
    directory: Directory,
    settings: TrackerSettings,
    calls: HashMap<String, Call>,
    /// (Linkedid, stamp) in order of activity, least recent first. An entry whose stamp is
    /// not its call's current one (or whose call is gone) is stale and skipped; the queue is
    /// compacted when stale entries outnumber the calls.
    activity: VecDeque<(String, u64)>,
    next_stamp: u64,
    evictions: Evictions,
    source: String,
}

/// Calls forgotten because the table was full, and the warning lines that said so.
#[derive(Debug, Default)]
struct Evictions {
    total: u64,
    since_line: u64,
    last_line_ms: Option<i64>,
    lines: u64,
    last_call: String,
}

impl Evictions {
    /// Logs the evictions not reported yet, when the last line is old enough (or `force`).
    fn report(&mut self, now_ms: i64, max_calls: usize, force: bool) {
        let due = self
            .last_line_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= EVICTION_LOG_INTERVAL_MS);
        if self.since_line == 0 || !(due || force) {
            return;
        }
        tracing::warn!(
            forgotten = self.since_line,
            forgotten_total = self.total,
            last_forgotten = %crate::logtext::Escaped(&self.last_call),
            "call table full ({max_calls} calls): forgot the least recently active calls \
             (at most one such line per {}s)",
            EVICTION_LOG_INTERVAL_MS / 1000
        );
        self.lines += 1;
        self.since_line = 0;
        self.last_line_ms = Some(now_ms);
    }
}

impl CallTracker {
    /// An empty tracker.
    pub fn new(directory: Directory, settings: TrackerSettings) -> Self {
        Self {
            directory,
            settings,
            calls: HashMap::new(),
            activity: VecDeque::new(),
            next_stamp: 0,
            evictions: Evictions::default(),
            source: "asterisk-ami".into(),
        }
    }

    /// Replaces the agent table and virtual numbers (config reload).
    pub fn set_directory(&mut self, directory: Directory) {
        self.directory = directory;
    }

    /// Calls followed now.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is followed.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Forgets every call (the AMI connection was lost: events were missed).
    pub fn clear(&mut self) {
        self.calls.clear();
        self.activity.clear();
    }

    /// Calls forgotten so far because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.total
    }

    /// Warning lines logged so far about a full table (each summarises many evictions).
    pub fn eviction_warnings(&self) -> u64 {
        self.evictions.lines
    }

    /// Records activity of `linkedid` at `now_ms`: it becomes the most recently active.
    fn bump(&mut self, linkedid: &str, now_ms: i64) {
        let Some(call) = self.calls.get_mut(linkedid) else {
            return;
        };
        self.next_stamp += 1;
        call.stamp = self.next_stamp;
        call.last_event_ms = now_ms;
        self.activity
            .push_back((linkedid.to_owned(), self.next_stamp));
        if self.activity.len() > 2 * self.calls.len() + 1024 {
            let calls = &self.calls;
            self.activity
                .retain(|(id, stamp)| calls.get(id).is_some_and(|c| c.stamp == *stamp));
        }
    }

    /// Removes and returns the least recently active call's id (stale entries skipped).
    fn pop_least_recent(&mut self, silent_since: Option<i64>) -> Option<String> {
        while let Some((id, stamp)) = self.activity.front() {
            match self.calls.get(id) {
                Some(c) if c.stamp == *stamp => {
                    if silent_since.is_some_and(|limit| c.last_event_ms > limit) {
                        return None;
                    }
                    let (id, _) = self.activity.pop_front()?;
                    self.calls.remove(&id);
                    return Some(id);
                }
                _ => {
                    self.activity.pop_front();
                }
            }
        }
        None
    }

    /// Handles one event that arrived at `now_ms` (monotonic ms) and `wall` time.
    pub fn handle(
        &mut self,
        event: &impl EventFields,
        now_ms: i64,
        wall: DateTime<Utc>,
    ) -> Vec<TrackerOutput> {
        let Some(name) = event.field("Event") else {
            return Vec::new();
        };
        let Some(linkedid) = event.field("Linkedid").filter(|l| !l.is_empty()) else {
            return Vec::new();
        };
        // Asterisk sets a channel's caller id after Newchannel (originated and Local
        // channels start as "<unknown>"): the root channel's later events carry it.
        if event.field("Uniqueid") == Some(linkedid) {
            if let (Some(num), Some(root)) = (
                known_caller(event.field("CallerIDNum")),
                self.calls.get_mut(linkedid).and_then(|c| c.root.as_mut()),
            ) {
                if root.caller_num != num {
                    root.caller_num = num.to_owned();
                    if let Some(name) = known_caller(event.field("CallerIDName")) {
                        root.caller_name = name.to_owned();
                    }
                }
            }
        }
        let mut out = Vec::new();
        match name {
            "Newchannel" | "CoreShowChannel" => {
                self.touch(linkedid, now_ms, wall);
                self.add_channel(linkedid, event);
            }
            "DialBegin" | "AgentCalled" => {
                self.touch(linkedid, now_ms, wall);
                let target = event.field("DialString").map(dial_target);
                if let Some(number) = target.filter(|n| self.directory.is_external(n)) {
                    if let Some(call) = self.calls.get_mut(linkedid) {
                        call.dialled.get_or_insert_with(|| number.to_owned());
                    }
                }
                if let Some(popup) = self.ringing(linkedid, event, now_ms) {
                    out.push(TrackerOutput::Popup(Box::new(popup)));
                }
            }
            "DialEnd" => {
                self.touch(linkedid, now_ms, wall);
                let status = event.field("DialStatus").unwrap_or_default().to_owned();
                let dest = event.field("DestChannel").unwrap_or_default();
                let dest_id = event.field("DestUniqueid");
                let agent = self.agent_of(dest);
                if let Some(call) = self.calls.get_mut(linkedid) {
                    if status == "ANSWER" {
                        match agent {
                            Some(ext) => call.agent_answered(ext, dest_id, wall),
                            None => {
                                call.outside_answered.get_or_insert(wall);
                            }
                        }
                    }
                    call.dial_statuses.push(status);
                }
            }
            "AgentConnect" => {
                self.touch(linkedid, now_ms, wall);
                let dest = event.field("DestChannel").or(event.field("Interface"));
                let agent = dest.and_then(|d| self.agent_of(d));
                let dest_id = event.field("DestUniqueid");
                if let (Some(call), Some(ext)) = (self.calls.get_mut(linkedid), agent) {
                    call.agent_answered(ext, dest_id, wall);
                }
            }
            "VarSet" => {
                let variable = event.field("Variable").unwrap_or_default();
                let value = event
                    .field("Value")
                    .map(str::to_owned)
                    .filter(|v| !v.is_empty());
                if let Some(call) = self.calls.get_mut(linkedid) {
                    if variable.eq_ignore_ascii_case("LEADID") {
                        call.lead_id = value;
                    } else if variable.eq_ignore_ascii_case(LEAD_NUMBER_VARIABLE) {
                        call.lead_number_hint = value;
                    } else if variable.eq_ignore_ascii_case("MIXMONITOR_FILENAME") {
                        if let Some(file) = value {
                            call.recording = Some(RecordingRef {
                                file,
                                channel_id: event.field("Uniqueid").map(str::to_owned),
                            });
                        }
                    }
                }
            }
            "Hangup" => {
                let uniqueid = event.field("Uniqueid").unwrap_or_default();
                self.bump(linkedid, now_ms);
                if let Some(call) = self.calls.get_mut(linkedid) {
                    if let Some(hung_up) = call.channels.get_mut(uniqueid) {
                        *hung_up = true;
                    }
                    for agent in &mut call.answered {
                        if agent.uniqueid.as_deref() == Some(uniqueid) {
                            agent.ended.get_or_insert(wall);
                        }
                    }
                    if call.channels.values().all(|hung_up| *hung_up) {
                        if let Some(call) = self.calls.remove(linkedid) {
                            out.push(TrackerOutput::Ended(
                                self.record(linkedid, &call, wall).map(Box::new),
                            ));
                        }
                    }
                }
            }
            "Newexten" => {
                self.bump(linkedid, now_ms);
                let app = event.field("Application").unwrap_or_default();
                if let Some(call) = self.calls.get_mut(linkedid) {
                    let known = call.applications.iter().any(|a| a == app);
                    if !app.is_empty() && !known && call.applications.len() < MAX_APPLICATIONS {
                        call.applications.push(app.to_owned());
                    }
                }
            }
            _ => self.bump(linkedid, now_ms),
        }
        out
    }

    /// Drops calls silent for longer than the maximum call length; returns how many. Also
    /// logs the evictions a full table made since its last warning line.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let limit = now_ms.saturating_sub(self.settings.max_call_ms);
        let mut n = 0;
        // Silent for `max_call_ms` or more: last event at or before `limit`.
        while self.pop_least_recent(Some(limit)).is_some() {
            n += 1;
        }
        self.evictions.report(now_ms, self.settings.max_calls, true);
        n
    }

    fn touch(&mut self, linkedid: &str, now_ms: i64, wall: DateTime<Utc>) {
        if !self.calls.contains_key(linkedid) && self.calls.len() >= self.settings.max_calls {
            if let Some(oldest) = self.pop_least_recent(None) {
                let ev = &mut self.evictions;
                ev.total += 1;
                ev.since_line += 1;
                ev.last_call = oldest;
                ev.report(now_ms, self.settings.max_calls, false);
            }
        }
        self.calls
            .entry(linkedid.to_owned())
            .or_insert_with(|| Call {
                started_at: wall,
                last_event_ms: now_ms,
                stamp: 0,
                root: None,
                channels: HashMap::new(),
                popped: HashSet::new(),
                rung_agents: Vec::new(),
                answered: Vec::new(),
                dial_statuses: Vec::new(),
                recording: None,
                applications: Vec::new(),
                lead_id: None,
                lead_number_hint: None,
                dialled: None,
                outside_answered: None,
            });
        self.bump(linkedid, now_ms);
    }

    fn add_channel(&mut self, linkedid: &str, event: &impl EventFields) {
        let text = |k: &str| known_caller(event.field(k)).unwrap_or_default().to_owned();
        let Some(uniqueid) = event.field("Uniqueid") else {
            return;
        };
        let channel = event.field("Channel").unwrap_or_default();
        let Some(call) = self.calls.get_mut(linkedid) else {
            return;
        };
        call.channels.entry(uniqueid.to_owned()).or_insert(false);
        if uniqueid == linkedid && call.root.is_none() {
            let field = |k: &str| event.field(k).unwrap_or_default().to_owned();
            call.root = Some(Root {
                channel: channel.to_owned(),
                caller_num: text("CallerIDNum"),
                caller_name: text("CallerIDName"),
                exten: field("Exten"),
                context: field("Context"),
            });
        }
    }

    /// The agent extension a channel belongs to, if it is a configured agent's.
    fn agent_of(&self, channel: &str) -> Option<String> {
        channel_extension(channel)
            .filter(|e| self.directory.is_agent_extension(e))
            .map(str::to_owned)
    }

    /// Facts of an agent now ringing; the shared rules decide whether it pops.
    fn ringing(
        &mut self,
        linkedid: &str,
        event: &impl EventFields,
        now_ms: i64,
    ) -> Option<PopupRequest> {
        let dest = event
            .field("DestChannel")
            .or_else(|| event.field("Interface"))
            .unwrap_or_default();
        let ext = self.agent_of(dest).or_else(|| {
            event
                .field("MemberName")
                .filter(|m| self.directory.is_agent_extension(m))
                .map(str::to_owned)
        })?;
        let call = self.calls.get_mut(linkedid)?;
        if !call.rung_agents.contains(&ext) {
            call.rung_agents.push(ext.clone());
        }
        let root = call.root.as_ref()?;
        // Still unknown: the dialling channel's caller id is the caller's.
        let caller = known_caller(Some(&root.caller_num))
            .or_else(|| known_caller(event.field("CallerIDNum")))?;
        let facts = RingingFacts {
            call_id: linkedid.to_owned(),
            caller_number: caller.to_owned(),
            caller_extension: channel_extension(&root.channel).map(str::to_owned),
            dialled: root.exten.clone(),
            context: root.context.clone(),
            did_candidates: vec![root.exten.clone()],
            agent_extension: ext.clone(),
            event_at_ms: now_ms,
        };
        let popup = self.settings.rules.popup(&self.directory, &facts)?;
        call.popped.insert(ext).then_some(popup)
    }

    /// What the events of a finished call said, for the shared rules.
    fn facts(&self, linkedid: &str, call: &Call, end: DateTime<Utc>) -> Option<CallFacts> {
        let root = call.root.as_ref()?;
        let mut facts = CallFacts::new(linkedid, self.source.as_str(), call.started_at, end);
        facts.caller_number = root.caller_num.clone();
        facts.caller_name = Some(root.caller_name.clone()).filter(|n| !n.is_empty());
        facts.caller_extension = channel_extension(&root.channel).map(str::to_owned);
        facts.dialled = root.exten.clone();
        facts.dialled_outside = call.dialled.clone();
        facts.contexts = vec![root.context.clone()];
        facts.did_candidates = vec![root.exten.clone()];
        facts.shown_caller_ids = vec![root.caller_num.clone()];
        facts.answered = call
            .answered
            .iter()
            .map(|a| {
                let ended = a.ended.unwrap_or(end);
                AgentSegment {
                    extension: a.extension.clone(),
                    answered_at: a.at,
                    ended_at: Some(ended),
                    talk_seconds: seconds_between(a.at, ended),
                    arrival: crate::call::SegmentArrival::Direct,
                }
            })
            .collect();
        facts.rung_agents = call.rung_agents.clone();
        // The outside party answered; a dial answered by somebody else than an agent of
        // ours counts from the first agent's answer, else from the start.
        facts.outside_answered = call
            .outside_answered
            .or_else(|| {
                call.dial_statuses
                    .iter()
                    .any(|s| s == "ANSWER")
                    .then(|| call.answered.first().map_or(call.started_at, |a| a.at))
            })
            .map(|at| (at, seconds_between(at, end)));
        facts.attempts = call.dial_statuses.iter().map(|s| dial_result(s)).collect();
        facts.applications = call.applications.clone();
        facts.recording = call.recording.clone();
        facts.lead_id = call.lead_id.clone();
        facts.lead_number_hint = call.lead_number_hint.clone();
        facts.legs = call.channels.len() as u32;
        Some(facts)
    }

    fn record(&self, linkedid: &str, call: &Call, end: DateTime<Utc>) -> Option<CallRecord> {
        let facts = self.facts(linkedid, call, end)?;
        match self.settings.rules.record(&self.directory, &facts) {
            Ok(record) => Some(record),
            Err(reason) => {
                tracing::debug!(call_id = %crate::logtext::Escaped(linkedid), "call not posted: {reason}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;

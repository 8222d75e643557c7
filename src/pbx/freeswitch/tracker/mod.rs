//! Follows live FreeSWITCH calls from event-socket events and says what it saw: an agent
//! being rung by a call ([`RingingFacts`], once per agent and call) and, when the call is
//! over, the call's [`CallFacts`]. Facts only: whether a ringing pops, the direction, the
//! outcome and the display number are decided by the shared rules ([`crate::call::rules`]),
//! never here and never from FreeSWITCH's `Call-Direction` (which only says whether
//! FreeSWITCH received or placed a leg).
//!
//! # Which legs make one call
//! A call is keyed by the uuid of the leg that started it (its `call_id`, the popup's and the
//! call log's `CallSessionId`). A leg joins the call named by, in this order:
//! `variable_cc_member_session_uuid` (every agent leg mod_callcenter originates is a call of
//! its own for FreeSWITCH; the losers of a ring-all race end `LOSE_RACE`; all belong to the
//! member's call), `variable_originating_leg_uuid` (a bridge's B leg), and, when already
//! followed, `Other-Leg-Unique-ID` / `Channel-Call-UUID`. A CHANNEL_BRIDGE between legs of two
//! followed calls (a transfer) makes them one call, the older absorbing the newer, and so does
//! a later event naming a member session or originating leg in another call. The CUSTOM
//! `callcenter::info` events name the member's call with `CC-Member-Session-UUID`:
//! `agent-offering` rings an agent, `bridge-agent-start` says who answered.
//!
//! A leg FreeSWITCH *receives* whose SIP Call-ID is that of a leg it *placed* is FreeSWITCH
//! calling itself (a gateway or phone pointing back at it, as the test rig's agent phones do):
//! it is folded into the placed leg's call as a [`leg::LegRole::Loop`] leg and never reported
//! as a call of its own. A placed leg only learns its Call-ID after its INVITE went out, so a
//! finished call made of one received leg is held for [`FsTrackerSettings::loop_linger_ms`]
//! before it is reported.
//!
//! # When a call ends
//! When every leg of it (loop legs aside) has had its CHANNEL_HANGUP_COMPLETE. Events about a
//! finished call that arrive later (`bridge-agent-end`, `member-queue-end`, a loop leg's
//! hangup) are recognised by a bounded memory of finished ids and ignored.
//!
//! # Bounds
//! At most [`FsTrackerSettings::max_calls`] calls; beyond that the least recently active call
//! is forgotten in O(1) (a queue in order of activity), with one summarising warning per
//! [`EVICTION_LOG_INTERVAL_MS`]; calls silent for [`FsTrackerSettings::max_call_ms`] expire
//! in [`FsCallTracker::tick`]; at most [`MAX_LEGS_PER_CALL`] legs and
//! [`MAX_RUNG_PER_CALL`] rung agents per call; every kept value clipped to
//! [`leg::MAX_VALUE_CHARS`]. After a reconnect, [`FsCallTracker::relearn`] takes the parsed
//! `show channels as json` answer: calls still up are kept or learnt, calls that ended while
//! disconnected are forgotten (counted, one warning). A FreeSWITCH run with `-nosql` has no
//! `show channels` (`-ERR SQL disabled, no data available!`): then the wiring asks
//! `uuid_exists <uuid>` for each of [`FsCallTracker::legs_up`] and passes the live ones to
//! [`FsCallTracker::keep_legs_up`] (calls that started while disconnected are then learnt from
//! their next events, which name their call; their earlier ringing is not popped).

mod facts;
pub mod leg;

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};

use crate::call::{CallFacts, RingingFacts};
use crate::logtext::Escaped;
use crate::pbx::freeswitch::esl::Event;
use leg::{Leg, LegRole, micros, text};

/// At most one "call table full" warning per this many ms.
pub const EVICTION_LOG_INTERVAL_MS: i64 = 10_000;

/// Legs kept per call; later ones are ignored (counted).
pub const MAX_LEGS_PER_CALL: usize = 64;

/// Rung agents kept per call.
pub const MAX_RUNG_PER_CALL: usize = 64;

/// Ids a call keeps besides its own key and its legs' uuids (parents named before seen).
const MAX_PLACEHOLDER_IDS: usize = 4;

/// The `source` of the facts this tracker produces.
pub const SOURCE: &str = "freeswitch-esl";

/// Limits of the tracker, and how mod_callcenter agent names map to extensions.
#[derive(Debug, Clone)]
pub struct FsTrackerSettings {
    /// At most this many calls are followed at once.
    pub max_calls: usize,
    /// A call silent for this long is dropped.
    pub max_call_ms: i64,
    /// How long a finished call made of one received leg waits for a placed leg with its SIP
    /// Call-ID (which would make it a loop, not a call).
    pub loop_linger_ms: i64,
    /// mod_callcenter agent name → extension (`[[agents]] callcenter_agent`); an agent not in
    /// it is taken to be named by its extension.
    pub callcenter_agents: HashMap<String, String>,
}

impl Default for FsTrackerSettings {
    fn default() -> Self {
        Self {
            max_calls: 10_000,
            max_call_ms: 4 * 3600 * 1000,
            loop_linger_ms: 2_000,
            callcenter_agents: HashMap::new(),
        }
    }
}

/// What handling an event (or the passing of time) produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsTrackerOutput {
    /// An agent is being rung by a call.
    Ringing(RingingFacts),
    /// A call ended.
    Ended(Box<CallFacts>),
}

/// Counters of what the tracker did with its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsTrackerStats {
    /// Calls forgotten because the table was full.
    pub evicted: u64,
    /// Warning lines about a full table (each summarises many evictions).
    pub eviction_warnings: u64,
    /// Calls dropped after `max_call_ms` of silence.
    pub expired: u64,
    /// Events without the ids the tracker needs, or about calls already finished.
    pub ignored_events: u64,
    /// Legs ignored because their call had [`MAX_LEGS_PER_CALL`].
    pub legs_dropped: u64,
    /// Received legs recognised as FreeSWITCH calling itself.
    pub loops_folded: u64,
    /// Calls that ended while the event socket was down (found by [`FsCallTracker::relearn`]).
    pub lost_while_disconnected: u64,
}

/// What [`FsCallTracker::relearn`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelearnReport {
    /// Channel rows read.
    pub rows: usize,
    /// Rows that were legs the tracker did not know.
    pub new_legs: usize,
    /// Calls forgotten because none of their legs is up any more.
    pub lost_calls: usize,
}

#[derive(Debug, Clone)]
struct Rung {
    extension: String,
    /// Agent segments answered before this ringing (0 for the call's first agents; a
    /// transfer target rings for the next segment): the popup carries
    /// `segment_call_id(call_id, segment)`.
    segment: usize,
    popped: bool,
}

#[derive(Debug, Clone)]
struct Call {
    legs: Vec<Leg>,
    /// Every id the index maps to this call (leg uuids and parent ids not seen as legs yet).
    ids: Vec<String>,
    rung: Vec<Rung>,
    /// mod_callcenter `bridge-agent-start`: (extension, answered µs, agent leg uuid).
    cc_answered: Vec<(String, Option<i64>, String)>,
    first_event_us: i64,
    last_event_us: i64,
    last_event_ms: i64,
    stamp: u64,
    lingering: bool,
    next_order: u32,
}

impl Call {
    fn new(now_ms: i64, event_us: i64) -> Self {
        Self {
            legs: Vec::new(),
            ids: Vec::new(),
            rung: Vec::new(),
            cc_answered: Vec::new(),
            first_event_us: event_us,
            last_event_us: event_us,
            last_event_ms: now_ms,
            stamp: 0,
            lingering: false,
            next_order: 0,
        }
    }

    fn leg_mut(&mut self, uuid: &str) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| l.uuid == uuid)
    }

    fn leg(&self, uuid: &str) -> Option<&Leg> {
        self.legs.iter().find(|l| l.uuid == uuid)
    }
}

/// A bounded set of ids, oldest forgotten first.
#[derive(Debug)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Recent {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, id: String) {
        if self.set.contains(&id) {
            return;
        }
        while self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }
}

/// Calls forgotten because the table was full, and the warning lines that said so.
#[derive(Debug, Default)]
struct Evictions {
    since_line: u64,
    last_line_ms: Option<i64>,
    last_call: String,
}

/// The live FreeSWITCH call table. See the module documentation.
#[derive(Debug)]
pub struct FsCallTracker {
    settings: FsTrackerSettings,
    calls: HashMap<String, Call>,
    /// Leg uuid (or a parent id) → key of its call.
    index: HashMap<String, String>,
    /// SIP Call-ID → uuid of the leg that carries it.
    sip_index: HashMap<String, String>,
    /// (call key, stamp) in order of activity, least recent first; stale entries skipped.
    activity: VecDeque<(String, u64)>,
    next_stamp: u64,
    /// (call key, due ms) of finished one-leg calls waiting for a loop match.
    lingering: VecDeque<(String, i64)>,
    finished: Recent,
    evictions: Evictions,
    stats: FsTrackerStats,
    /// Latest event time seen (µs), the fallback for an event without a timestamp.
    last_event_us: i64,
}

impl FsCallTracker {
    /// An empty tracker.
    pub fn new(settings: FsTrackerSettings) -> Self {
        let cap = settings.max_calls.saturating_mul(8).max(1024);
        Self {
            settings,
            calls: HashMap::new(),
            index: HashMap::new(),
            sip_index: HashMap::new(),
            activity: VecDeque::new(),
            next_stamp: 0,
            lingering: VecDeque::new(),
            finished: Recent::new(cap),
            evictions: Evictions::default(),
            stats: FsTrackerStats::default(),
            last_event_us: 0,
        }
    }

    /// Replaces the mod_callcenter agent → extension map (config reload).
    pub fn set_callcenter_agents(&mut self, agents: HashMap<String, String>) {
        self.settings.callcenter_agents = agents;
    }

    /// Calls followed now (finished calls waiting for a loop match included).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is followed.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Legs followed now, over all calls.
    pub fn legs(&self) -> usize {
        self.calls.values().map(|c| c.legs.len()).sum()
    }

    /// Entries of the internal indexes (bounded by the table; for tests and metrics).
    pub fn index_entries(&self) -> usize {
        self.index.len() + self.sip_index.len() + self.activity.len() + self.lingering.len()
    }

    /// What the tracker counted so far.
    pub fn stats(&self) -> FsTrackerStats {
        self.stats
    }

    /// Forgets every call (and the memory of finished ones).
    pub fn clear(&mut self) {
        self.calls.clear();
        self.index.clear();
        self.sip_index.clear();
        self.activity.clear();
        self.lingering.clear();
        self.finished.clear();
    }

    /// Handles one event that arrived at `now_ms` (on [`crate::call::monotonic_ms`]'s clock).
    /// Only channel events (`CHANNEL_*`) and CUSTOM `callcenter::info` are looked at.
    pub fn handle(&mut self, event: &Event, now_ms: i64) -> Vec<FsTrackerOutput> {
        let mut out = Vec::new();
        self.release_lingering(now_ms, &mut out);
        let event_us = micros(event, "Event-Date-Timestamp").unwrap_or(self.last_event_us);
        self.last_event_us = self.last_event_us.max(event_us);
        let name = event.name();
        if name.eq_ignore_ascii_case("CUSTOM") {
            let callcenter = event
                .subclass()
                .is_some_and(|s| s.eq_ignore_ascii_case("callcenter::info"));
            if callcenter {
                self.callcenter(event, event_us, now_ms, &mut out);
            }
        } else if name.len() > 8 && name[..8].eq_ignore_ascii_case("CHANNEL_") {
            let hangup = name.eq_ignore_ascii_case("CHANNEL_HANGUP_COMPLETE");
            let bridge = name.eq_ignore_ascii_case("CHANNEL_BRIDGE");
            self.channel(event, event_us, now_ms, hangup, bridge, &mut out);
        }
        out
    }

    /// Releases finished calls whose loop wait is over, drops calls silent for longer than
    /// `max_call_ms`, and logs evictions not reported yet. Call it every second or so.
    pub fn tick(&mut self, now_ms: i64) -> Vec<FsTrackerOutput> {
        let mut out = Vec::new();
        self.release_lingering(now_ms, &mut out);
        let limit = now_ms.saturating_sub(self.settings.max_call_ms);
        let mut expired = 0u64;
        let mut last = String::new();
        while let Some(key) = self.pop_least_recent(Some(limit)) {
            expired += 1;
            last = key;
        }
        if expired > 0 {
            self.stats.expired += expired;
            tracing::warn!(
                expired,
                last_expired = %Escaped(&last),
                "FreeSWITCH calls silent for {}s dropped without a call log (their hangup was \
                 never seen)",
                self.settings.max_call_ms / 1000
            );
        }
        self.report_evictions(now_ms, true);
        out
    }

    /// Re-learns the calls in progress from the parsed answer to `api show channels as json`
    /// (`{"row_count":N,"rows":[{"uuid":..,"call_uuid":..,"direction":..,...}]}`) after a
    /// reconnect. Legs the tracker follows that are not in the answer hung up while it was
    /// disconnected; a call left with none is forgotten (its CDR file source, if configured,
    /// still has it). `now_ms`/`wall` are now.
    pub fn relearn(
        &mut self,
        channels: &serde_json::Value,
        now_ms: i64,
        wall: DateTime<Utc>,
    ) -> RelearnReport {
        let now_us = wall.timestamp_micros();
        let mut report = RelearnReport::default();
        let rows: Vec<&serde_json::Map<String, serde_json::Value>> = channels
            .get("rows")
            .and_then(|r| r.as_array())
            .map(|a| a.iter().filter_map(|r| r.as_object()).collect())
            .unwrap_or_default();
        let limit = self.settings.max_calls.saturating_mul(MAX_LEGS_PER_CALL);
        let mut present: HashSet<String> = HashSet::new();
        for row in rows.into_iter().take(limit) {
            report.rows += 1;
            let field = |k: &str| row.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let uuid = leg::clip(field("uuid"));
            if uuid.is_empty() {
                continue;
            }
            present.insert(uuid.clone());
            if self.index.contains_key(&uuid) {
                if let Some(key) = self.index.get(&uuid).cloned() {
                    if let Some(l) = self.calls.get_mut(&key).and_then(|c| c.leg_mut(&uuid)) {
                        l.absorb_row(row, now_us);
                    }
                }
                continue;
            }
            let call_uuid = leg::clip(field("call_uuid"));
            let parent = if call_uuid.is_empty() || call_uuid == uuid {
                None
            } else {
                Some(call_uuid)
            };
            let Some(key) = self.key_for_new_leg(&uuid, parent, now_ms, now_us) else {
                continue;
            };
            report.new_legs += 1;
            if let Some(l) = self.calls.get_mut(&key).and_then(|c| c.leg_mut(&uuid)) {
                l.absorb_row(row, now_us);
                let agent = (l.is_placed() && key != uuid).then(|| l.dialed_user.clone());
                if let Some(ext) = agent.filter(|e| !e.is_empty()) {
                    // It rang before pbxlink was back: too late for a popup.
                    self.ring(&key, &ext, true);
                }
            }
        }
        report.lost_calls = self.keep_legs_up(&present, wall);
        report
    }

    /// The uuids of the legs followed and not hung up (to ask FreeSWITCH `uuid_exists <uuid>`
    /// after a reconnect when `show channels` is not available: FreeSWITCH run with `-nosql`
    /// answers it `-ERR SQL disabled, no data available!`).
    pub fn legs_up(&self) -> Vec<String> {
        self.calls
            .values()
            .flat_map(|c| c.legs.iter())
            .filter(|l| !l.hung_up)
            .map(|l| l.uuid.clone())
            .collect()
    }

    /// After a reconnect: the legs in `up` are still up; every other followed leg hung up
    /// while the event socket was down, and a call left with no leg up is forgotten (counted,
    /// one warning). Returns how many calls were forgotten.
    pub fn keep_legs_up(&mut self, up: &HashSet<String>, wall: DateTime<Utc>) -> usize {
        let now_us = wall.timestamp_micros();
        let keys: Vec<String> = self.calls.keys().cloned().collect();
        let mut lost = 0;
        for key in keys {
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            let mut any_up = false;
            for l in &mut call.legs {
                if up.contains(&l.uuid) {
                    any_up = true;
                } else if !l.hung_up {
                    l.hung_up = true;
                    l.ended_us.get_or_insert(now_us);
                }
            }
            if !any_up {
                self.remove_call(&key);
                lost += 1;
            }
        }
        if lost > 0 {
            self.stats.lost_while_disconnected += lost as u64;
            tracing::warn!(
                lost,
                "FreeSWITCH calls ended while the event socket was down: no call log from ESL \
                 for them (a json_cdr/cdr_csv source would have them)"
            );
        }
        lost
    }

    // ---- events ---------------------------------------------------------------------

    fn channel(
        &mut self,
        event: &Event,
        event_us: i64,
        now_ms: i64,
        hangup: bool,
        bridge: bool,
        out: &mut Vec<FsTrackerOutput>,
    ) {
        let uuid = text(event, "Unique-ID");
        if uuid.is_empty() {
            self.stats.ignored_events += 1;
            return;
        }
        let key = match self.index.get(&uuid) {
            Some(k) => k.clone(),
            None => {
                let sip = text(event, "variable_sip_call_id");
                if self.finished.contains(&uuid)
                    || (!sip.is_empty() && self.finished.contains(&sip_key(&sip)))
                {
                    self.stats.ignored_events += 1;
                    return;
                }
                let parent = self.parent_for_new_leg(event, &uuid);
                match self.key_for_new_leg(&uuid, parent, now_ms, event_us) {
                    Some(k) => k,
                    None => return,
                }
            }
        };
        self.touch(&key, now_ms, event_us);
        if !self.add_leg(&key, &uuid) {
            return;
        }
        let Some(l) = self.calls.get_mut(&key).and_then(|c| c.leg_mut(&uuid)) else {
            return;
        };
        let had_sip = !l.sip_call_id.is_empty();
        l.absorb(event, event_us, hangup);
        let sip = (!had_sip && !l.sip_call_id.is_empty()).then(|| l.sip_call_id.clone());
        // A later event may name the call this leg belongs to (a re-learnt agent leg).
        if key == uuid {
            if let Some(parent) = self.named_parent(event, &uuid) {
                if let Some(pkey) = self.index.get(&parent).cloned().filter(|p| *p != key) {
                    self.merge(&key, &pkey, None);
                }
            }
        }
        if bridge {
            self.bridge(event, &uuid);
        }
        if let Some(sip) = sip {
            self.link_sip(&uuid, &sip);
        }
        let Some(key) = self.index.get(&uuid).cloned() else {
            return;
        };
        let agent = self
            .calls
            .get(&key)
            .and_then(|c| c.leg(&uuid))
            .and_then(|l| {
                (l.is_placed() && l.uuid != key && l.role == LegRole::Member)
                    .then(|| self.agent_extension(l))
                    .flatten()
            });
        // A leg rings until it answers; its hangup is no ringing (a ring-all loser's
        // LOSE_RACE comes after the winner answered).
        let ringing = !hangup
            && self
                .calls
                .get(&key)
                .and_then(|c| c.leg(&uuid))
                .is_some_and(|l| l.answered_us.is_none());
        if let (Some(ext), true) = (agent, ringing) {
            self.ring(&key, &ext, false);
        }
        self.emit_rings(&key, now_ms, out);
        if hangup {
            self.check_end(&key, now_ms, out);
        }
    }

    fn callcenter(
        &mut self,
        event: &Event,
        event_us: i64,
        now_ms: i64,
        out: &mut Vec<FsTrackerOutput>,
    ) {
        let member = text(event, "CC-Member-Session-UUID");
        if member.is_empty() {
            // agent-state-change, members-count ...: not about one call.
            return;
        }
        let key = match self.index.get(&member) {
            Some(k) => k.clone(),
            None => {
                if self.finished.contains(&member) {
                    self.stats.ignored_events += 1;
                    return;
                }
                match self.new_call(&member, now_ms, event_us) {
                    Some(k) => k,
                    None => return,
                }
            }
        };
        self.touch(&key, now_ms, event_us);
        let action = text(event, "CC-Action");
        let agent = text(event, "CC-Agent");
        let ext = (!agent.is_empty()).then(|| self.agent_name_to_extension(&agent));
        match action.as_str() {
            "agent-offering" => {
                if let Some(ext) = ext {
                    self.ring(&key, &ext, false);
                }
            }
            "bridge-agent-start" => {
                let agent_uuid = text(event, "CC-Agent-UUID");
                if !agent_uuid.is_empty() {
                    if let Some(akey) = self.index.get(&agent_uuid).cloned() {
                        if akey != key {
                            self.merge(&akey, &key, None);
                        }
                    }
                }
                let answered =
                    micros(event, "CC-Agent-Answered-Time").map(|s| s.saturating_mul(1_000_000));
                if let (Some(ext), Some(call)) = (ext, self.calls.get_mut(&key)) {
                    if call.cc_answered.len() < MAX_RUNG_PER_CALL
                        && !call.cc_answered.iter().any(|(e, _, _)| *e == ext)
                    {
                        call.cc_answered.push((ext, answered, agent_uuid));
                    }
                }
            }
            _ => {}
        }
        self.emit_rings(&key, now_ms, out);
    }

    /// The call a leg not seen before names (not yet resolved to a key).
    fn parent_for_new_leg(&self, event: &Event, uuid: &str) -> Option<String> {
        if let Some(p) = self.named_parent(event, uuid) {
            return Some(p);
        }
        // A leg whose other leg (or call uuid) is followed already joins that call.
        ["Other-Leg-Unique-ID", "Channel-Call-UUID"]
            .iter()
            .map(|h| text(event, h))
            .find(|v| !v.is_empty() && v != uuid && self.index.contains_key(v))
    }

    /// `variable_cc_member_session_uuid` or `variable_originating_leg_uuid`, when not the leg.
    fn named_parent(&self, event: &Event, uuid: &str) -> Option<String> {
        [
            "variable_cc_member_session_uuid",
            "variable_originating_leg_uuid",
        ]
        .iter()
        .map(|h| text(event, h))
        .find(|v| !v.is_empty() && v != uuid)
    }

    /// Adds leg `uuid` to the call `parent` names (created when unknown) or to a new call of
    /// its own; returns the call's key, `None` when the call is full.
    fn key_for_new_leg(
        &mut self,
        uuid: &str,
        parent: Option<String>,
        now_ms: i64,
        event_us: i64,
    ) -> Option<String> {
        let key = match parent {
            Some(p) => match self.index.get(&p) {
                Some(k) => k.clone(),
                None if self.finished.contains(&p) => {
                    self.stats.ignored_events += 1;
                    return None;
                }
                None => self.new_call(&p, now_ms, event_us)?,
            },
            None => self.new_call(uuid, now_ms, event_us)?,
        };
        self.add_leg(&key, uuid).then_some(key)
    }

    /// Makes sure call `key` has a leg `uuid` (a parent id the call was created for becomes
    /// a leg when its own events come); false when the call is full or gone.
    fn add_leg(&mut self, key: &str, uuid: &str) -> bool {
        let Some(call) = self.calls.get_mut(key) else {
            return false;
        };
        if call.leg(uuid).is_some() {
            return true;
        }
        if call.legs.len() >= MAX_LEGS_PER_CALL {
            self.stats.legs_dropped += 1;
            if self.index.get(uuid).is_some_and(|k| k == key) && uuid != key {
                self.index.remove(uuid);
                call.ids.retain(|i| i != uuid);
            }
            return false;
        }
        let order = call.next_order;
        call.next_order += 1;
        call.legs.push(Leg::new(uuid, order));
        if !call.ids.iter().any(|i| i == uuid) {
            call.ids.push(uuid.to_owned());
        }
        self.index.insert(uuid.to_owned(), key.to_owned());
        true
    }

    /// A new, empty call keyed `key` (evicting the least recently active one when full).
    fn new_call(&mut self, key: &str, now_ms: i64, event_us: i64) -> Option<String> {
        if self.settings.max_calls == 0 {
            return None;
        }
        if self.calls.len() >= self.settings.max_calls {
            if let Some(oldest) = self.pop_least_recent(None) {
                self.stats.evicted += 1;
                self.evictions.since_line += 1;
                self.evictions.last_call = oldest;
                self.report_evictions(now_ms, false);
            }
        }
        let key = leg::clip(key);
        let mut call = Call::new(now_ms, event_us);
        call.ids.push(key.clone());
        self.calls.insert(key.clone(), call);
        self.index.insert(key.clone(), key.clone());
        self.bump(&key, now_ms);
        Some(key)
    }

    fn touch(&mut self, key: &str, now_ms: i64, event_us: i64) {
        if let Some(call) = self.calls.get_mut(key) {
            call.last_event_us = call.last_event_us.max(event_us);
            call.first_event_us = call.first_event_us.min(event_us);
        }
        self.bump(key, now_ms);
    }

    /// Records activity of `key` at `now_ms`: it becomes the most recently active.
    fn bump(&mut self, key: &str, now_ms: i64) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        self.next_stamp += 1;
        call.stamp = self.next_stamp;
        call.last_event_ms = now_ms;
        self.activity.push_back((key.to_owned(), self.next_stamp));
        if self.activity.len() > 2 * self.calls.len() + 1024 {
            let calls = &self.calls;
            self.activity
                .retain(|(id, stamp)| calls.get(id).is_some_and(|c| c.stamp == *stamp));
        }
    }

    /// Removes the least recently active call (silent since `silent_since`, when given).
    fn pop_least_recent(&mut self, silent_since: Option<i64>) -> Option<String> {
        while let Some((key, stamp)) = self.activity.front() {
            match self.calls.get(key) {
                Some(c) if c.stamp == *stamp => {
                    if silent_since.is_some_and(|limit| c.last_event_ms > limit) {
                        return None;
                    }
                    let (key, _) = self.activity.pop_front()?;
                    self.remove_call(&key);
                    return Some(key);
                }
                _ => {
                    self.activity.pop_front();
                }
            }
        }
        None
    }

    fn report_evictions(&mut self, now_ms: i64, force: bool) {
        let ev = &mut self.evictions;
        let due = ev
            .last_line_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= EVICTION_LOG_INTERVAL_MS);
        if ev.since_line == 0 || !(due || force) {
            return;
        }
        tracing::warn!(
            forgotten = ev.since_line,
            forgotten_total = self.stats.evicted,
            last_forgotten = %Escaped(&ev.last_call),
            "FreeSWITCH call table full ({} calls): forgot the least recently active calls \
             (at most one such line per {}s)",
            self.settings.max_calls,
            EVICTION_LOG_INTERVAL_MS / 1000
        );
        self.stats.eviction_warnings += 1;
        ev.since_line = 0;
        ev.last_line_ms = Some(now_ms);
    }

    /// Removes a call and its index entries; remembers its ids as finished.
    fn remove_call(&mut self, key: &str) -> Option<Call> {
        let call = self.calls.remove(key)?;
        for id in &call.ids {
            if self.index.get(id).is_some_and(|k| k == key) {
                self.index.remove(id);
            }
            self.finished.insert(id.clone());
        }
        for l in &call.legs {
            if !l.sip_call_id.is_empty() {
                if self.sip_index.get(&l.sip_call_id) == Some(&l.uuid) {
                    self.sip_index.remove(&l.sip_call_id);
                }
                self.finished.insert(sip_key(&l.sip_call_id));
            }
        }
        Some(call)
    }

    /// Moves every leg of call `from` into call `into`; `loop_leg` marks the leg that is
    /// FreeSWITCH calling itself (then the whole call `from` is that loop's doing).
    fn merge(&mut self, from: &str, into: &str, loop_leg: Option<&str>) {
        if from == into || !self.calls.contains_key(into) {
            return;
        }
        let Some(mut moved) = self.calls.remove(from) else {
            return;
        };
        if loop_leg.is_some() {
            self.stats.loops_folded += 1;
            for l in &mut moved.legs {
                l.role = LegRole::Loop;
            }
        }
        for id in &moved.ids {
            self.index.insert(id.clone(), into.to_owned());
        }
        let Some(target) = self.calls.get_mut(into) else {
            return;
        };
        for mut l in moved.legs {
            if target.legs.len() >= MAX_LEGS_PER_CALL {
                self.stats.legs_dropped += 1;
                self.index.remove(&l.uuid);
                if self.sip_index.get(&l.sip_call_id) == Some(&l.uuid) {
                    self.sip_index.remove(&l.sip_call_id);
                }
                self.finished.insert(l.uuid);
                continue;
            }
            l.seen_order = target.next_order;
            target.next_order += 1;
            target.legs.push(l);
        }
        // Keep the call's own key, its legs and a few ids named before their legs were seen.
        for id in moved.ids {
            if target.ids.contains(&id) || self.index.get(&id).is_none_or(|k| k != into) {
                continue;
            }
            let is_leg = target.legs.iter().any(|l| l.uuid == id);
            if !is_leg && target.ids.len() >= target.legs.len() + MAX_PLACEHOLDER_IDS {
                self.index.remove(&id);
                self.finished.insert(id);
                continue;
            }
            target.ids.push(id);
        }
        for r in moved.rung {
            if target.rung.len() < MAX_RUNG_PER_CALL
                && !target
                    .rung
                    .iter()
                    .any(|t| t.extension == r.extension && t.segment == r.segment)
                && loop_leg.is_none()
            {
                target.rung.push(r);
            }
        }
        if loop_leg.is_none() {
            target.cc_answered.extend(moved.cc_answered);
            target.cc_answered.truncate(MAX_RUNG_PER_CALL);
        }
        target.first_event_us = target.first_event_us.min(moved.first_event_us);
        target.last_event_us = target.last_event_us.max(moved.last_event_us);
        target.lingering = false;
    }

    /// CHANNEL_BRIDGE between legs of two followed calls: the older call absorbs the newer.
    fn bridge(&mut self, event: &Event, uuid: &str) {
        let a = text(event, "Bridge-A-Unique-ID");
        let b = text(event, "Bridge-B-Unique-ID");
        let other = text(event, "Other-Leg-Unique-ID");
        let (x, y) = if !a.is_empty() && !b.is_empty() {
            (a, b)
        } else {
            (uuid.to_owned(), other)
        };
        let (Some(kx), Some(ky)) = (self.index.get(&x).cloned(), self.index.get(&y).cloned())
        else {
            return;
        };
        if kx == ky {
            return;
        }
        let is_loop = |k: &str, u: &str| {
            self.calls
                .get(k)
                .and_then(|c| c.leg(u))
                .is_some_and(|l| l.role == LegRole::Loop)
        };
        if is_loop(&kx, &x) || is_loop(&ky, &y) {
            return;
        }
        let first = |k: &str| self.calls.get(k).map_or(i64::MAX, |c| c.first_event_us);
        let (from, into) = if first(&kx) <= first(&ky) {
            (ky, kx)
        } else {
            (kx, ky)
        };
        self.merge(&from, &into, None);
    }

    /// Leg `uuid` now has SIP Call-ID `sip`: if a leg of another call has it too and one of
    /// them was received while the other was placed, the received one is a loop.
    fn link_sip(&mut self, uuid: &str, sip: &str) {
        let Some(other) = self.sip_index.get(sip).cloned() else {
            self.sip_index.insert(sip.to_owned(), uuid.to_owned());
            return;
        };
        if other == uuid {
            return;
        }
        let (Some(k1), Some(k2)) = (
            self.index.get(uuid).cloned(),
            self.index.get(&other).cloned(),
        ) else {
            self.sip_index.insert(sip.to_owned(), uuid.to_owned());
            return;
        };
        let placed = |k: &str, u: &str| {
            self.calls
                .get(k)
                .and_then(|c| c.leg(u))
                .map(|l| (l.is_placed(), *k == l.uuid))
        };
        let (Some((p1, root1)), Some((p2, root2))) = (placed(&k1, uuid), placed(&k2, &other))
        else {
            return;
        };
        if k1 == k2 || p1 == p2 {
            return;
        }
        // The received leg must be its call's first leg: FreeSWITCH answering its own INVITE.
        let (loop_key, loop_uuid, into) = if p1 {
            (k2, other, k1)
        } else {
            (k1, uuid.to_owned(), k2)
        };
        let loop_is_root = if p1 { root2 } else { root1 };
        if !loop_is_root {
            return;
        }
        self.sip_index.insert(sip.to_owned(), loop_uuid.clone());
        self.merge(&loop_key, &into, Some(&loop_uuid));
    }

    fn agent_name_to_extension(&self, name: &str) -> String {
        self.settings
            .callcenter_agents
            .get(name)
            .cloned()
            .unwrap_or_else(|| leg::clip(name))
    }

    /// The agent extension a placed leg rings: the `user/` endpoint's user, else its
    /// mod_callcenter agent mapped to an extension.
    fn agent_extension(&self, l: &Leg) -> Option<String> {
        if !l.dialed_user.is_empty() {
            return Some(l.dialed_user.clone());
        }
        (!l.cc_agent.is_empty()).then(|| self.agent_name_to_extension(&l.cc_agent))
    }

    fn ring(&mut self, key: &str, extension: &str, popped: bool) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        // Agent legs that answered before this ringing: each is a segment before it.
        let segment = call
            .legs
            .iter()
            .filter(|l| {
                l.role == LegRole::Member
                    && l.uuid != key
                    && l.is_placed()
                    && l.answered_us.is_some()
                    && self.agent_extension(l).is_some()
            })
            .count()
            .max(call.cc_answered.len());
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call
            .rung
            .iter()
            .any(|r| r.extension == extension && r.segment == segment)
        {
            return;
        }
        if call.rung.len() >= MAX_RUNG_PER_CALL {
            return;
        }
        call.rung.push(Rung {
            extension: extension.to_owned(),
            segment,
            popped,
        });
    }

    /// Ringing facts for the agents rung and not reported yet, once the call's first leg is
    /// known (a reordered agent leg or offering may come first).
    fn emit_rings(&mut self, key: &str, now_ms: i64, out: &mut Vec<FsTrackerOutput>) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.rung.iter().all(|r| r.popped) {
            return;
        }
        let Some(root) = call.leg(key).filter(|l| !l.context.is_empty() || l.hung_up) else {
            return;
        };
        let base = facts::ringing_base(key, root);
        for r in call.rung.iter_mut().filter(|r| !r.popped) {
            r.popped = true;
            let mut ringing = base.clone();
            ringing.call_id = crate::call::segment_call_id(key, r.segment);
            ringing.agent_extension = r.extension.clone();
            ringing.event_at_ms = now_ms;
            out.push(FsTrackerOutput::Ringing(ringing));
        }
    }

    fn check_end(&mut self, key: &str, now_ms: i64, out: &mut Vec<FsTrackerOutput>) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let mut members = call.legs.iter().filter(|l| l.role == LegRole::Member);
        let mut count = 0;
        if !members.all(|l| {
            count += 1;
            l.hung_up
        }) || count == 0
        {
            return;
        }
        let single_received = count == 1
            && call.legs.len() == 1
            && !call.legs[0].is_placed()
            && !call.legs[0].sip_call_id.is_empty();
        if single_received && !call.lingering && self.settings.loop_linger_ms > 0 {
            call.lingering = true;
            let due = now_ms.saturating_add(self.settings.loop_linger_ms);
            self.lingering.push_back((key.to_owned(), due));
            if self.lingering.len() > 2 * self.calls.len() + 1024 {
                let calls = &self.calls;
                self.lingering
                    .retain(|(k, _)| calls.get(k).is_some_and(|c| c.lingering));
            }
            return;
        }
        self.finish(key, out);
    }

    fn release_lingering(&mut self, now_ms: i64, out: &mut Vec<FsTrackerOutput>) {
        while let Some((key, due)) = self.lingering.front() {
            if *due > now_ms {
                break;
            }
            let key = key.clone();
            self.lingering.pop_front();
            let still = self.calls.get(&key).is_some_and(|c| c.lingering);
            if !still {
                continue;
            }
            let ended = self.calls.get(&key).is_some_and(|c| {
                c.legs
                    .iter()
                    .filter(|l| l.role == LegRole::Member)
                    .all(|l| l.hung_up)
            });
            if ended {
                self.finish(&key, out);
            } else if let Some(c) = self.calls.get_mut(&key) {
                c.lingering = false;
            }
        }
    }

    fn finish(&mut self, key: &str, out: &mut Vec<FsTrackerOutput>) {
        let Some(call) = self.remove_call(key) else {
            return;
        };
        if let Some(f) = facts::call_facts(key, &call, self) {
            out.push(FsTrackerOutput::Ended(Box::new(f)));
        }
    }
}

/// The key under which a finished SIP Call-ID is remembered (apart from leg uuids).
fn sip_key(sip: &str) -> String {
    format!("sip:{sip}")
}

#[cfg(test)]
mod tests;

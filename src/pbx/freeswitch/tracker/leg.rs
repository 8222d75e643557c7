//! One channel (leg) of a FreeSWITCH call, as the tracker learns it from events: what each
//! event says about the leg is folded into a [`Leg`], first-seen values for what a leg was
//! (caller id, first destination, context, creation time), latest values for what it became
//! (answer time, hangup cause, billsec, last application).
//!
//! Which headers mean what (FreeSWITCH 1.10, `switch_channel_event_set_data` and the
//! `variable_*` of the channel; checked against the rig's captures in
//! `tests/fixtures/freeswitch`):
//! - `Call-Direction`: `outbound` for a leg FreeSWITCH *placed* (a bridge's B leg, an
//!   `originate`, a mod_callcenter agent leg), `inbound` for a leg it *received*. Only used to
//!   tell the two kinds of leg apart, never as the business direction.
//! - `Caller-Orig-Caller-ID-Number`: the caller id the leg started with (it stays put when a
//!   bridge swaps `Caller-Caller-ID-Number` with the callee's, as the A leg of an `originate`
//!   shows); `Caller-Caller-ID-Number` as first seen is what a placed leg presented.
//! - `Caller-Destination-Number`: first seen, what was dialled; latest, where an `originate`'s
//!   A leg was sent after it answered (`<lead> XML default`).
//! - Times: `Caller-Channel-Created-Time` / `-Answered-Time` (µs, `0` = not yet),
//!   `variable_start_uepoch` / `answer_uepoch` / `end_uepoch` on CHANNEL_HANGUP_COMPLETE,
//!   `Event-Date-Timestamp` (µs) of the event as the fallback.
//! - `variable_dialed_user`: the user a `user/<ext>` endpoint rang (set on that placed leg);
//!   `variable_cc_agent`: the mod_callcenter agent a callcenter leg rings.
//! - `variable_sip_call_id`: the SIP Call-ID (a placed leg learns it after its INVITE went out,
//!   so first on a later event).

use crate::pbx::freeswitch::esl::Event;

/// Bridge partners kept per leg.
pub const MAX_BRIDGED: usize = 8;

/// Values taken from events are kept to this many characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// What a leg is to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    /// An ordinary leg of the call.
    Member,
    /// FreeSWITCH receiving a SIP call it placed itself (same SIP Call-ID as one of the
    /// call's placed legs): the far end of that placed leg, not a party of its own.
    Loop,
}

/// One leg, as far as events have told.
#[derive(Debug, Clone)]
pub struct Leg {
    /// `Unique-ID`.
    pub uuid: String,
    /// FreeSWITCH placed it (`Call-Direction: outbound`); `None` until an event says.
    pub placed: Option<bool>,
    /// Order in which the tracker first saw the legs of its call.
    pub seen_order: u32,
    /// See [`LegRole`].
    pub role: LegRole,
    /// Caller id number as first seen.
    pub cid_first: String,
    /// `Caller-Orig-Caller-ID-Number` as first seen.
    pub cid_orig: String,
    /// Caller id name the leg started with.
    pub cid_name: String,
    /// `Caller-Destination-Number` as first seen.
    pub dest_first: String,
    /// `Caller-Destination-Number` as last seen.
    pub dest_last: String,
    /// `Caller-Context` as first seen.
    pub context: String,
    /// `variable_sip_to_user`, `variable_sip_req_user` (other spellings of the DID).
    pub sip_to_user: String,
    /// See above.
    pub sip_req_user: String,
    /// `variable_user_name` (a directory user that registered/authenticated) or the user part
    /// of `sofia/<profile>/<user>@host`.
    pub user: String,
    /// The user a `user/` endpoint rang, or the mod_callcenter agent's name.
    pub dialed_user: String,
    /// `variable_cc_agent`.
    pub cc_agent: String,
    /// `variable_originating_leg_uuid` as first seen: the leg that placed this one (the
    /// lead's leg for a bridge, the transferring agent's leg for an `att_xfer`
    /// consultation).
    pub originator: String,
    /// Legs this one was bridged with (CHANNEL_BRIDGE's `Bridge-A/B-Unique-ID`, and
    /// `variable_bridge_uuid` / `last_bridge_to` / `signal_bond`), at most
    /// [`MAX_BRIDGED`].
    pub bridged: Vec<String>,
    /// `variable_sip_call_id`.
    pub sip_call_id: String,
    /// Creation time (µs since the epoch).
    pub created_us: Option<i64>,
    /// `created_us` came from the leg's own µs timestamp (not a fallback or a row's seconds).
    pub created_exact: bool,
    /// Answer time (µs).
    pub answered_us: Option<i64>,
    /// End time (µs), set by CHANNEL_HANGUP_COMPLETE.
    pub ended_us: Option<i64>,
    /// CHANNEL_HANGUP_COMPLETE seen (or the leg vanished while disconnected).
    pub hung_up: bool,
    /// `Hangup-Cause` (the first one; FreeSWITCH may repeat the header).
    pub cause: String,
    /// `variable_billsec`.
    pub billsec: Option<u64>,
    /// `variable_last_app`.
    pub last_app: String,
    /// `variable_record_path`, `variable_record_name`.
    pub record_path: String,
    /// See above.
    pub record_name: String,
    /// `variable_pbxlink_lead_id` (click to call sets it).
    pub lead_id: String,
    /// `variable_pbxlink_lead_number` (click to call sets it: the lead's number as
    /// LeadSquared sent it).
    pub lead_number: String,
    /// Re-learnt from `show channels` after a reconnect (its early events were missed).
    pub relearnt: bool,
}

/// A value of `event`, decoded, clipped; empty when absent.
pub fn text(event: &Event, name: &str) -> String {
    event.get(name).map(|v| clip(&v)).unwrap_or_default()
}

/// A µs timestamp header; `None` when absent, not a number or `0`.
pub fn micros(event: &Event, name: &str) -> Option<i64> {
    event
        .get(name)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|v| *v > 0)
}

/// At most [`MAX_VALUE_CHARS`] characters of `value`.
pub fn clip(value: &str) -> String {
    match value.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => value[..cut].to_owned(),
        None => value.to_owned(),
    }
}

/// `sofia/internal/100@10.0.0.1:5060` → `100`; `None` for other names.
pub fn channel_user(name: &str) -> Option<&str> {
    let mut parts = name.splitn(3, '/');
    let (tech, _profile, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if !tech.eq_ignore_ascii_case("sofia") {
        return None;
    }
    let user = rest.split('@').next()?;
    (!user.is_empty() && !rest.starts_with("gateway/")).then_some(user)
}

fn set_first(slot: &mut String, value: String) {
    if slot.is_empty() && !value.is_empty() {
        *slot = value;
    }
}

fn set_latest(slot: &mut String, value: String) {
    if !value.is_empty() {
        *slot = value;
    }
}

impl Leg {
    /// A leg known only by its id.
    pub fn new(uuid: &str, seen_order: u32) -> Self {
        Self {
            uuid: clip(uuid),
            placed: None,
            seen_order,
            role: LegRole::Member,
            cid_first: String::new(),
            cid_orig: String::new(),
            cid_name: String::new(),
            dest_first: String::new(),
            dest_last: String::new(),
            context: String::new(),
            sip_to_user: String::new(),
            sip_req_user: String::new(),
            user: String::new(),
            dialed_user: String::new(),
            cc_agent: String::new(),
            originator: String::new(),
            bridged: Vec::new(),
            sip_call_id: String::new(),
            created_us: None,
            created_exact: false,
            answered_us: None,
            ended_us: None,
            hung_up: false,
            cause: String::new(),
            billsec: None,
            last_app: String::new(),
            record_path: String::new(),
            record_name: String::new(),
            lead_id: String::new(),
            lead_number: String::new(),
            relearnt: false,
        }
    }

    /// Folds what a channel event says about this leg into it. `event_us` is the event's
    /// time; `hangup_complete` marks CHANNEL_HANGUP_COMPLETE.
    pub fn absorb(&mut self, event: &Event, event_us: i64, hangup_complete: bool) {
        let direction = event
            .get("Call-Direction")
            .or_else(|| event.get("variable_direction"));
        if let Some(d) = direction {
            if self.placed.is_none() && !d.is_empty() {
                self.placed = Some(d.eq_ignore_ascii_case("outbound"));
            }
        }
        set_first(&mut self.cid_first, text(event, "Caller-Caller-ID-Number"));
        set_first(
            &mut self.cid_orig,
            text(event, "Caller-Orig-Caller-ID-Number"),
        );
        let name = text(event, "Caller-Orig-Caller-ID-Name");
        let name = if name.is_empty() {
            text(event, "Caller-Caller-ID-Name")
        } else {
            name
        };
        set_first(&mut self.cid_name, name);
        let dest = text(event, "Caller-Destination-Number");
        set_first(&mut self.dest_first, dest.clone());
        set_latest(&mut self.dest_last, dest);
        set_first(&mut self.context, text(event, "Caller-Context"));
        set_first(&mut self.sip_to_user, text(event, "variable_sip_to_user"));
        set_first(&mut self.sip_req_user, text(event, "variable_sip_req_user"));
        let user = text(event, "variable_user_name");
        let user = if user.is_empty() {
            event
                .get("Channel-Name")
                .and_then(|n| channel_user(&n).map(clip))
                .unwrap_or_default()
        } else {
            user
        };
        set_first(&mut self.user, user);
        set_first(&mut self.dialed_user, text(event, "variable_dialed_user"));
        set_first(&mut self.cc_agent, text(event, "variable_cc_agent"));
        set_first(&mut self.sip_call_id, text(event, "variable_sip_call_id"));
        let originator = text(event, "variable_originating_leg_uuid");
        if originator != self.uuid {
            set_first(&mut self.originator, originator);
        }
        let bridge_event = event.name().eq_ignore_ascii_case("CHANNEL_BRIDGE");
        let partners: &[&str] = if bridge_event {
            &[
                "Bridge-A-Unique-ID",
                "Bridge-B-Unique-ID",
                "Other-Leg-Unique-ID",
            ]
        } else {
            &[
                "variable_bridge_uuid",
                "variable_last_bridge_to",
                "variable_signal_bond",
            ]
        };
        for name in partners {
            let other = text(event, name);
            if !other.is_empty()
                && other != self.uuid
                && !self.bridged.contains(&other)
                && self.bridged.len() < MAX_BRIDGED
            {
                self.bridged.push(other);
            }
        }
        if !self.created_exact {
            let exact = micros(event, "Caller-Channel-Created-Time")
                .or_else(|| micros(event, "variable_start_uepoch"));
            if exact.is_some() {
                self.created_us = exact;
                self.created_exact = true;
            }
        }
        if let Some(a) = micros(event, "variable_answer_uepoch")
            .or_else(|| micros(event, "Caller-Channel-Answered-Time"))
        {
            self.answered_us = Some(a);
        } else if event.name().eq_ignore_ascii_case("CHANNEL_ANSWER") && self.answered_us.is_none()
        {
            self.answered_us = Some(event_us);
        }
        set_latest(&mut self.last_app, text(event, "variable_last_app"));
        set_latest(&mut self.record_path, text(event, "variable_record_path"));
        set_latest(&mut self.record_name, text(event, "variable_record_name"));
        set_latest(&mut self.lead_id, text(event, "variable_pbxlink_lead_id"));
        set_latest(
            &mut self.lead_number,
            text(event, "variable_pbxlink_lead_number"),
        );
        if hangup_complete {
            self.hung_up = true;
            set_latest(&mut self.cause, text(event, "Hangup-Cause"));
            if let Some(b) = event
                .get("variable_billsec")
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                self.billsec = Some(b);
            }
            self.ended_us = micros(event, "variable_end_uepoch")
                .or_else(|| micros(event, "Caller-Channel-Hangup-Time"))
                .or(Some(event_us));
            if self.created_us.is_none() {
                self.created_us = Some(event_us);
            }
        }
        if self.created_us.is_none() {
            self.created_us = Some(event_us);
        }
    }

    /// The leg's view in a `show channels as json` row (after a reconnect).
    pub fn absorb_row(&mut self, row: &serde_json::Map<String, serde_json::Value>, now_us: i64) {
        let field = |k: &str| -> String {
            match row.get(k) {
                Some(serde_json::Value::String(s)) => clip(s),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => String::new(),
            }
        };
        self.relearnt = true;
        let direction = field("direction");
        if self.placed.is_none() && !direction.is_empty() {
            self.placed = Some(direction.eq_ignore_ascii_case("outbound"));
        }
        let initial_cid = field("initial_cid_num");
        set_first(&mut self.cid_orig, initial_cid.clone());
        set_first(&mut self.cid_first, initial_cid);
        set_first(&mut self.cid_first, field("cid_num"));
        set_first(&mut self.cid_name, field("initial_cid_name"));
        let initial_dest = field("initial_dest");
        set_first(&mut self.dest_first, initial_dest.clone());
        set_latest(&mut self.dest_last, initial_dest);
        set_latest(&mut self.dest_last, field("dest"));
        set_first(&mut self.context, field("initial_context"));
        set_first(&mut self.context, field("context"));
        let name = field("name");
        if let Some(user) = channel_user(&name) {
            set_first(&mut self.user, user.to_owned());
        }
        if self.placed == Some(true) {
            // A `user/<ext>` leg's presence id is `<ext>@<domain>`.
            let presence = field("presence_id");
            if let Some(user) = presence.split('@').next().filter(|u| !u.is_empty()) {
                set_first(&mut self.dialed_user, user.to_owned());
            }
        }
        if self.created_us.is_none() {
            self.created_us = field("created_epoch")
                .parse::<i64>()
                .ok()
                .filter(|s| *s > 0)
                .map(|s| s.saturating_mul(1_000_000))
                .or(Some(now_us));
        }
        let state = field("callstate");
        if self.answered_us.is_none() && matches!(state.as_str(), "ACTIVE" | "HELD") {
            // When it answered was missed; its CHANNEL_HANGUP_COMPLETE will say.
            self.answered_us = Some(now_us);
        }
    }

    /// Whether FreeSWITCH placed this leg (unknown counts as received).
    pub fn is_placed(&self) -> bool {
        self.placed == Some(true)
    }
}

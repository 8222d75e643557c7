//! Turns a finished call's legs into [`CallFacts`], and a call's first leg into the common
//! part of its [`RingingFacts`]. Facts only (see [`crate::call::facts`]).
//!
//! Party A is the call's first leg (the one whose uuid keys the call): the carrier's leg of an
//! inbound call, the agent's phone dialling out, or the agent leg an `originate` placed for
//! click to call. The other legs are the dial attempts: placed legs to a user or a
//! mod_callcenter agent are agent legs, other placed legs reach an outside number; loop legs
//! (FreeSWITCH calling itself) are left out of everything.

use chrono::{DateTime, Utc};

use super::leg::{Leg, LegRole};
use super::{Call, FsCallTracker, SOURCE};
use crate::call::{AgentSegment, CallFacts, DialResult, RecordingRef, RingingFacts};
use crate::pbx::freeswitch::assemble::segments::{AgentLeg, agent_segments};

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn push_unique(list: &mut Vec<String>, value: &str) {
    if !value.is_empty() && !list.iter().any(|v| v == value) {
        list.push(value.to_owned());
    }
}

/// Party A's caller id number: the one its leg started with.
fn caller_number(root: &Leg) -> &str {
    if root.cid_orig.is_empty() {
        &root.cid_first
    } else {
        &root.cid_orig
    }
}

/// What party A dialled: the first destination of a received leg; for a leg FreeSWITCH
/// placed (`originate`), where it was sent once it answered.
fn dialled(root: &Leg) -> &str {
    if root.is_placed() {
        &root.dest_last
    } else {
        &root.dest_first
    }
}

/// Party A's extension: the user an `originate`'s `user/<ext>` rang, or the received leg's
/// directory user (`user_name`, else the user of `sofia/<profile>/<user>@…`).
fn caller_extension(root: &Leg, tracker: &FsCallTracker) -> Option<String> {
    if root.is_placed() {
        tracker.agent_extension(root)
    } else {
        (!root.user.is_empty()).then(|| root.user.clone())
    }
}

fn did_candidates(root: &Leg) -> Vec<String> {
    let mut out = Vec::new();
    push_unique(&mut out, dialled(root));
    if !root.is_placed() {
        push_unique(&mut out, &root.sip_to_user);
        push_unique(&mut out, &root.sip_req_user);
    }
    out
}

/// How a dial attempt ended, from whether it answered and its `Hangup-Cause`.
pub fn dial_result(l: &Leg) -> DialResult {
    if l.answered_us.is_some() {
        return DialResult::Answered;
    }
    match l.cause.as_str() {
        "USER_BUSY" => DialResult::Busy,
        "NORMAL_CIRCUIT_CONGESTION" | "SWITCH_CONGESTION" | "NETWORK_OUT_OF_ORDER" => {
            DialResult::Congestion
        }
        "USER_NOT_REGISTERED"
        | "UNALLOCATED_NUMBER"
        | "NO_ROUTE_DESTINATION"
        | "NO_ROUTE_TRANSIT_NET"
        | "SUBSCRIBER_ABSENT"
        | "DESTINATION_OUT_OF_ORDER"
        | "INVALID_NUMBER_FORMAT"
        | "INCOMPATIBLE_DESTINATION"
        | "CHAN_NOT_IMPLEMENTED"
        | "FACILITY_NOT_SUBSCRIBED"
        | "NORMAL_TEMPORARY_FAILURE"
        | "CALL_REJECTED"
        | "MANDATORY_IE_MISSING"
        | "NUMBER_CHANGED"
        | "EXCHANGE_ROUTING_ERROR" => DialResult::Failed,
        _ => DialResult::NoAnswer,
    }
}

/// The common part of every ringing of call `key` (the agent and time are filled in per
/// ringing).
pub fn ringing_base(key: &str, root: &Leg) -> RingingFacts {
    RingingFacts {
        call_id: key.to_owned(),
        caller_number: caller_number(root).to_owned(),
        caller_extension: (!root.is_placed() && !root.user.is_empty()).then(|| root.user.clone()),
        dialled: dialled(root).to_owned(),
        context: root.context.clone(),
        did_candidates: did_candidates(root),
        agent_extension: String::new(),
        event_at_ms: 0,
    }
}

/// The facts of finished call `key`; `None` when no leg of it was seen (only events naming it).
pub fn call_facts(key: &str, call: &Call, tracker: &FsCallTracker) -> Option<CallFacts> {
    let mut legs: Vec<&Leg> = call
        .legs
        .iter()
        .filter(|l| l.role == LegRole::Member)
        .collect();
    legs.sort_by_key(|l| {
        (
            l.uuid != key,
            l.created_us.unwrap_or(i64::MAX),
            l.seen_order,
        )
    });
    let root = *legs.first()?;
    let start = root
        .created_us
        .or_else(|| legs.iter().filter_map(|l| l.created_us).min())
        .unwrap_or(call.first_event_us);
    let end_us = legs
        .iter()
        .filter_map(|l| l.ended_us)
        .max()
        .unwrap_or(call.last_event_us)
        .max(start);
    let mut f = CallFacts::new(key, SOURCE, time(start), time(end_us));
    f.caller_number = caller_number(root).to_owned();
    f.caller_name = Some(root.cid_name.clone()).filter(|n| !n.is_empty());
    f.caller_extension = caller_extension(root, tracker);
    f.dialled = dialled(root).to_owned();
    f.did_candidates = did_candidates(root);
    f.own_result = Some(dial_result(root));
    f.legs = legs.len() as u32;
    for l in &legs {
        push_unique(&mut f.contexts, &l.context);
        if !l.last_app.is_empty() {
            f.applications.push(l.last_app.clone());
        }
        if f.recording.is_none() && (!l.record_path.is_empty() || !l.record_name.is_empty()) {
            let file = match (l.record_path.as_str(), l.record_name.as_str()) {
                (p, "") => p.to_owned(),
                ("", n) => n.to_owned(),
                // FusionPBX: record_path is the folder, record_name the file.
                (p, n) if p.ends_with(n) => p.to_owned(),
                (p, n) => format!("{}/{n}", p.trim_end_matches('/')),
            };
            f.recording = Some(RecordingRef {
                file,
                channel_id: Some(l.uuid.clone()),
            });
        }
        if f.lead_id.is_none() && !l.lead_id.is_empty() {
            f.lead_id = Some(l.lead_id.clone());
        }
        if f.lead_number_hint.is_none() && !l.lead_number.is_empty() {
            f.lead_number_hint = Some(l.lead_number.clone());
        }
        if l.is_placed() {
            push_unique(&mut f.shown_caller_ids, &l.cid_first);
        }
    }
    for r in &call.rung {
        push_unique(&mut f.rung_agents, &r.extension);
    }
    // The dial attempts: every placed leg after party A's.
    let mut agent_legs: Vec<AgentLeg> = Vec::new();
    for l in legs.iter().skip(1).filter(|l| l.is_placed()) {
        f.attempts.push(dial_result(l));
        match tracker.agent_extension(l) {
            Some(ext) => {
                push_unique(&mut f.rung_agents, &ext);
                agent_legs.push(AgentLeg {
                    uuid: l.uuid.clone(),
                    extension: ext,
                    originator: Some(l.originator.clone()).filter(|o| !o.is_empty()),
                    start: time(l.created_us.unwrap_or(start)),
                    answer: l.answered_us.map(time),
                    end: l.ended_us.map(time),
                    billsec: l.billsec,
                    callcenter: !l.cc_agent.is_empty(),
                    bridged_to_lead: l.bridged.contains(&root.uuid)
                        || root.bridged.contains(&l.uuid),
                });
            }
            None => {
                if f.outside_answered.is_none() {
                    if let Some(a) = l.answered_us {
                        f.outside_answered = Some((time(a), l.billsec.unwrap_or(0)));
                    }
                }
                let dest = if l.dest_first.is_empty() {
                    &l.dest_last
                } else {
                    &l.dest_first
                };
                if f.dialled_outside.is_none() && !dest.is_empty() && *dest != f.dialled {
                    f.dialled_outside = Some(dest.clone());
                }
            }
        }
    }
    f.answered = agent_segments(&agent_legs);
    // mod_callcenter said an agent answered whose leg was never seen.
    for (ext, answered, _) in &call.cc_answered {
        if let (Some(a), false) = (answered, f.answered.iter().any(|s| s.extension == *ext)) {
            f.answered.push(AgentSegment {
                extension: ext.clone(),
                answered_at: time(*a),
                ended_at: None,
                talk_seconds: u64::try_from((end_us - *a) / 1_000_000).unwrap_or(0),
                arrival: crate::call::SegmentArrival::Direct,
            });
            push_unique(&mut f.rung_agents, ext);
        }
    }
    f.answered.sort_by_key(|s| s.answered_at);
    Some(f)
}

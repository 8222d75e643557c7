//! The facts of one call from its legs (see [`super`] for how legs are grouped).

use super::segments::{AgentLeg, agent_segments};
use crate::call::{CallFacts, DialResult, RecordingRef};
use crate::pbx::freeswitch::cdr::leg::{FsLeg, LegDirection, push_unique};

/// What a leg is in its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    /// Party A: the leg the call started on (a carrier's or a phone's call, an originate).
    Root,
    /// A leg towards an agent: a bridge to `user/<ext>` (it has `dialed_user`), or
    /// mod_callcenter's leg to an agent.
    Agent,
    /// Any other leg FreeSWITCH placed (towards an outside number, a gateway).
    Outside,
    /// The far end of a leg FreeSWITCH placed to itself (the same SIP Call-ID received
    /// back): a test rig's or a loop's phone, not a party of the call.
    Mirror,
    /// A leg that is neither (a second leg FreeSWITCH received in the same group).
    Other,
}

/// Whether `leg` is the far end of a leg of `legs` that FreeSWITCH placed: the same SIP
/// Call-ID, received (inbound) while the other was placed (outbound), at overlapping times.
pub fn is_mirror(leg: &FsLeg, legs: &[&FsLeg]) -> bool {
    let Some(call_id) = leg.sip_call_id.as_deref() else {
        return false;
    };
    leg.direction == Some(LegDirection::Inbound)
        && legs.iter().any(|other| {
            other.uuid != leg.uuid
                && other.direction == Some(LegDirection::Outbound)
                && other.sip_call_id.as_deref() == Some(call_id)
                && overlaps(leg, other)
        })
}

/// Whether two legs' lifetimes overlap.
pub fn overlaps(a: &FsLeg, b: &FsLeg) -> bool {
    a.start <= b.end && b.start <= a.end
}

/// Whether `leg` can be party A: nobody originated it, it is not mod_callcenter's agent
/// leg, and it is not a mirror.
pub fn can_be_root(leg: &FsLeg, legs: &[&FsLeg]) -> bool {
    leg.originator.is_none() && !leg.is_callcenter_agent_leg() && !is_mirror(leg, legs)
}

/// Party A's leg: the earliest leg that can be root (a leg FreeSWITCH received first when
/// two start together).
pub fn root_leg<'a>(legs: &[&'a FsLeg]) -> Option<&'a FsLeg> {
    legs.iter()
        .copied()
        .filter(|l| can_be_root(l, legs))
        .min_by_key(|l| (l.start, l.direction != Some(LegDirection::Inbound), &l.uuid))
}

/// The role of each leg, `root` being party A's.
pub fn role(leg: &FsLeg, root: &FsLeg, legs: &[&FsLeg]) -> LegRole {
    if leg.uuid == root.uuid {
        LegRole::Root
    } else if is_mirror(leg, legs) {
        LegRole::Mirror
    } else if leg.is_callcenter_agent_leg()
        || (leg.originator.is_some() && leg.dialed_user.is_some())
    {
        LegRole::Agent
    } else if leg.originator.is_some() || leg.direction == Some(LegDirection::Outbound) {
        LegRole::Outside
    } else {
        LegRole::Other
    }
}

/// The caller's number as party A's received leg arrived (`ani`), when FreeSWITCH has
/// since written another leg's destination into its caller id (`uuid_bridge` of an
/// attended transfer writes the agent's phone into the lead's profile); else `None`.
fn caller_id_overwritten<'a>(root: &'a FsLeg, legs: &[&FsLeg]) -> Option<&'a str> {
    let ani = root.ani.as_deref().filter(|a| !a.is_empty())?;
    let cid = root.caller_id_number.as_deref()?;
    let overwritten = root.direction == Some(LegDirection::Inbound)
        && ani != cid
        && legs
            .iter()
            .any(|l| l.uuid != root.uuid && l.destinations.iter().any(|d| d == cid));
    overwritten.then_some(ani)
}

/// Whether party A's leg was placed by FreeSWITCH itself (an API originate, click to
/// call): its first caller profile is the originate's, and the leg rings its own user.
fn root_was_originated(root: &FsLeg) -> bool {
    root.direction == Some(LegDirection::Outbound) && root.originator.is_none()
}

/// The agent extension a leg reached: the directory user of the dial string, else the
/// mod_callcenter agent name. A leg that itself placed a leg to the same user (the
/// transferring agent's leg of an `att_xfer`, whose `dialed_user` FreeSWITCH overwrites with
/// the target's) is named by its `presence_id` instead.
fn agent_extension(leg: &FsLeg, legs: &[&FsLeg]) -> Option<String> {
    let dialed = leg.dialed_user.as_deref();
    let overwritten = dialed.is_some()
        && legs.iter().any(|other| {
            other.uuid != leg.uuid
                && other.originator.as_deref() == Some(leg.uuid.as_str())
                && other.dialed_user.as_deref() == dialed
        });
    if overwritten {
        let presence_user = leg
            .presence_id
            .as_deref()
            .and_then(|p| p.split('@').next())
            .filter(|u| !u.is_empty());
        if let Some(user) = presence_user {
            return Some(user.to_owned());
        }
    }
    leg.dialed_user.clone().or_else(|| leg.cc_agent.clone())
}

/// The facts of the call made of `legs` (one group), or why it has none.
pub fn call_facts(source: &str, legs: &[&FsLeg]) -> Result<CallFacts, String> {
    let root = root_leg(legs).ok_or_else(|| {
        format!(
            "{} leg(s) without party A's leg (first: {})",
            legs.len(),
            legs.first().map_or("-", |l| l.uuid.as_str())
        )
    })?;
    let mut ordered: Vec<&FsLeg> = legs.to_vec();
    ordered.sort_by(|a, b| (a.start, &a.uuid).cmp(&(b.start, &b.uuid)));
    let roles: Vec<(LegRole, &FsLeg)> = ordered.iter().map(|l| (role(l, root, legs), *l)).collect();
    let parties = || roles.iter().filter(|(r, _)| *r != LegRole::Mirror);

    let start = parties().map(|(_, l)| l.start).min().unwrap_or(root.start);
    let end = parties().map(|(_, l)| l.end).max().unwrap_or(root.end);
    let mut facts = CallFacts::new(root.uuid.clone(), source, start, end);
    facts.legs = u32::try_from(legs.len()).unwrap_or(u32::MAX);

    let originated = root_was_originated(root);
    facts.caller_number = root.caller_id_number.clone().unwrap_or_default();
    facts.caller_name = root.caller_id_name.clone();
    if let Some(ani) = caller_id_overwritten(root, legs) {
        // The lead's caller id now names an agent's phone: the number it arrived with
        // counts, and the name (the phone's) is not the lead's.
        facts.caller_number = ani.to_owned();
        facts.caller_name = None;
    }
    facts.caller_extension = root.user_name.clone().or_else(|| {
        if originated {
            root.dialed_user.clone()
        } else {
            root.sip_from_user.clone()
        }
    });
    facts.dialled = root
        .dialplan_destination
        .clone()
        .or_else(|| {
            if originated {
                root.destinations.last().cloned()
            } else {
                root.destinations.first().cloned()
            }
        })
        .unwrap_or_default();

    for c in &root.contexts {
        push_unique(&mut facts.contexts, c);
    }
    for (r, leg) in parties() {
        if *r == LegRole::Other {
            for c in &leg.contexts {
                push_unique(&mut facts.contexts, c);
            }
        }
    }

    if let Some(did) = &root.did {
        push_unique(&mut facts.did_candidates, did);
    }
    // An originated leg's first profile is the originate's own (the agent's phone), not a
    // number anybody dialled.
    // (A cdr_csv row has only the current profile's destination.)
    let skip = usize::from(originated && root.destinations.len() > 1);
    let dialled_numbers = &root.destinations[skip..];
    if let Some(first) = dialled_numbers.first() {
        push_unique(&mut facts.did_candidates, first);
    }
    if root.direction != Some(LegDirection::Outbound) {
        for v in [&root.sip_req_user, &root.sip_to_user]
            .into_iter()
            .flatten()
        {
            push_unique(&mut facts.did_candidates, v);
        }
    }
    for d in dialled_numbers {
        push_unique(&mut facts.did_candidates, d);
    }

    if originated {
        if let Some(cid) = &root.origination_caller_id_number {
            push_unique(&mut facts.shown_caller_ids, cid);
        }
    }
    for (r, leg) in parties() {
        if matches!(r, LegRole::Agent | LegRole::Outside) {
            if let Some(cid) = &leg.caller_id_number {
                push_unique(&mut facts.shown_caller_ids, cid);
            }
        }
    }

    let mut agent_legs: Vec<AgentLeg> = Vec::new();
    for (r, leg) in parties() {
        match r {
            LegRole::Agent => {
                let Some(ext) = agent_extension(leg, legs) else {
                    continue;
                };
                push_unique(&mut facts.rung_agents, &ext);
                facts.attempts.push(leg.dial_result());
                agent_legs.push(AgentLeg {
                    uuid: leg.uuid.clone(),
                    extension: ext,
                    originator: leg.originator.clone(),
                    start: leg.start,
                    answer: leg.answer,
                    end: Some(leg.end),
                    billsec: Some(leg.billsec),
                    callcenter: leg.is_callcenter_agent_leg(),
                    bridged_to_lead: leg.bridged_to.contains(&root.uuid)
                        || root.bridged_to.contains(&leg.uuid),
                });
            }
            LegRole::Outside => {
                facts.attempts.push(leg.dial_result());
                if facts.dialled_outside.is_none() {
                    if let Some(d) = leg.destinations.last().filter(|d| **d != facts.dialled) {
                        facts.dialled_outside = Some(d.clone());
                    }
                }
                if let (None, Some(at)) = (facts.outside_answered, leg.answer) {
                    facts.outside_answered = Some((at, leg.billsec));
                }
            }
            LegRole::Root | LegRole::Mirror | LegRole::Other => {}
        }
    }
    facts.answered = agent_segments(&agent_legs);
    if facts.attempts.is_empty() {
        facts.own_result = Some(own_result(root));
    }

    for app in &root.applications {
        push_unique(&mut facts.applications, app);
    }
    for (_, leg) in parties() {
        for app in &leg.applications {
            push_unique(&mut facts.applications, app);
        }
    }

    let with_recording = std::iter::once(root)
        .chain(parties().map(|(_, l)| *l))
        .find(|l| l.recording.is_some());
    facts.recording = with_recording.and_then(|l| {
        Some(RecordingRef {
            file: l.recording.clone()?,
            channel_id: Some(l.uuid.clone()),
        })
    });
    let first_of = |f: fn(&FsLeg) -> Option<&String>| {
        std::iter::once(root)
            .chain(parties().map(|(_, l)| *l))
            .find_map(f)
            .cloned()
    };
    facts.lead_id = first_of(|l| l.lead_id.as_ref());
    facts.lead_number_hint = first_of(|l| l.lead_number.as_ref());
    Ok(facts)
}

/// How party A's own leg ended, for a call that dialled nobody.
fn own_result(root: &FsLeg) -> DialResult {
    root.dial_result()
}

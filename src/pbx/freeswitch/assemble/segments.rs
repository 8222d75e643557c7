//! Which agents talked to the lead, and how each came to have it: the
//! [`AgentSegment`]s of a FreeSWITCH call, from its agent legs. One rule set for the three
//! sources (json_cdr, cdr_csv and the event socket), which each describe their agent legs
//! as [`AgentLeg`]s.
//!
//! What FreeSWITCH 1.10 leaves behind (checked on the rig, `tests/fixtures/freeswitch/
//! transfer_*`):
//! - **Blind transfer** (`uuid_transfer <agent> -bleg <ext>`, the `transfer` application):
//!   the lead's leg survives and goes back into the dialplan, which places a new agent leg
//!   from the lead's leg (`originating_leg_uuid` = the lead); the transferring agent's leg
//!   ends first (`NORMAL_CLEARING` on the rig, `BLIND_TRANSFER` when FreeSWITCH hangs it
//!   up itself), and the lead's `transfer_history` gets `<epoch>:<uuid>:bl_xfer:<ext>/…`.
//!   So: an answered agent leg that was not placed by another agent, after an earlier
//!   segment, took the lead over from that segment's agent when that agent's leg ended.
//! - **Attended transfer** (`att_xfer`): the agent's own leg places the consultation leg
//!   (its `originating_leg_uuid` is the *agent's* leg); when the agent hangs up, FreeSWITCH
//!   `uuid_bridge`s the consultation leg to the lead (`bleg_uuid` / `bridge_uuid` /
//!   `last_bridge_to` of the target's leg name the lead, `xfer_uuids` / `transfer_history`
//!   `uuid_br` record it). The agent's talk with the lead ended when the consultation
//!   started (then the lead was on hold); the target's began at the hand-over. A
//!   consultation leg that was never bridged to the lead (cancelled, or the lead hung up
//!   first) is no segment.
//! - **Follow-me / forward on no answer**: agent legs that rang and ended unanswered
//!   before the answering leg was placed; the call still has one segment, `Forwarded` from
//!   the first agent rung. Legs rung at the same time (ring-all, a queue's ring legs ending
//!   `LOSE_RACE` / `ORIGINATOR_CANCEL`) are no forward.
//! - A transfer target who does not answer leaves an unanswered agent leg: no segment.

use chrono::{DateTime, Utc};

use crate::call::{AgentSegment, SegmentArrival};

/// One leg towards an agent, as a source knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLeg {
    /// The leg's uuid.
    pub uuid: String,
    /// The agent's extension.
    pub extension: String,
    /// The leg that placed it (`originating_leg_uuid`), when known.
    pub originator: Option<String>,
    /// When the leg was created (started ringing).
    pub start: DateTime<Utc>,
    /// When it answered.
    pub answer: Option<DateTime<Utc>>,
    /// When it ended.
    pub end: Option<DateTime<Utc>>,
    /// Seconds from answer to hangup, when the source wrote them.
    pub billsec: Option<u64>,
    /// mod_callcenter placed it (a queue's ring leg).
    pub callcenter: bool,
    /// It was bridged to the lead's leg (`bleg_uuid`, `bridge_uuid`, `last_bridge_to`,
    /// `signal_bond`, a CHANNEL_BRIDGE with it), as far as the source knows.
    pub bridged_to_lead: bool,
}

/// Whole seconds from `a` to `b` (0 when `b` is not later).
fn seconds(a: DateTime<Utc>, b: DateTime<Utc>) -> u64 {
    u64::try_from((b - a).num_milliseconds().max(0) / 1000).unwrap_or(0)
}

/// A consultation leg takes the lead over only when it was bridged to the lead, or (a
/// source that does not say) it outlived the transferring agent's leg by this long.
const OUTLIVED_MS: i64 = 1000;

/// A leg that ended at most this long after the answering leg was placed still counts as
/// having rung before it (sequential ringing places the next leg as the last one ends).
const FORWARD_SLACK_MS: i64 = 500;

/// The agent segments of a call whose agent legs are `legs` (any order), in the order the
/// agents got the lead. See the module documentation for the rules.
pub fn agent_segments(legs: &[AgentLeg]) -> Vec<AgentSegment> {
    let mut answered: Vec<&AgentLeg> = legs.iter().filter(|l| l.answer.is_some()).collect();
    answered.sort_by_key(|l| (l.answer, l.start));
    let by_uuid = |uuid: &str| answered.iter().copied().find(|l| l.uuid == uuid);

    // (leg, segment) in order of taking the lead.
    let mut out: Vec<(&AgentLeg, AgentSegment)> = Vec::new();
    for leg in &answered {
        let Some(answer) = leg.answer else {
            continue;
        };
        let end = leg.end;
        let consulted_by = leg
            .originator
            .as_deref()
            .and_then(by_uuid)
            .filter(|p| p.uuid != leg.uuid);
        if let Some(from) = consulted_by {
            let Some(handover) = from.end else {
                continue;
            };
            let outlived = end.is_some_and(|e| (e - handover).num_milliseconds() > OUTLIVED_MS);
            if !(leg.bridged_to_lead || outlived) {
                continue; // a consultation call only
            }
            let at = handover.max(answer);
            // The transferring agent talked to the lead until the consultation started.
            if let Some((_, seg)) = out.iter_mut().rev().find(|(l, _)| l.uuid == from.uuid) {
                if let Some(from_answer) = from.answer {
                    seg.talk_seconds = seg.talk_seconds.min(seconds(from_answer, leg.start));
                }
            }
            out.push((
                leg,
                AgentSegment {
                    extension: leg.extension.clone(),
                    answered_at: at,
                    ended_at: end,
                    talk_seconds: end.map_or(0, |e| seconds(at, e)),
                    arrival: SegmentArrival::AttendedTransfer {
                        from: from.extension.clone(),
                        at,
                    },
                },
            ));
            continue;
        }
        let talk = leg
            .billsec
            .unwrap_or_else(|| end.map_or(0, |e| seconds(answer, e)));
        let arrival = match out.last() {
            Some((_, prev)) => SegmentArrival::BlindTransfer {
                from: prev.extension.clone(),
                at: prev.ended_at.unwrap_or(leg.start),
            },
            None => forwarded_from(legs, leg).map_or(SegmentArrival::Direct, |from| {
                SegmentArrival::Forwarded { from }
            }),
        };
        out.push((
            leg,
            AgentSegment {
                extension: leg.extension.clone(),
                answered_at: answer,
                ended_at: end,
                talk_seconds: talk,
                arrival,
            },
        ));
    }
    out.into_iter().map(|(_, s)| s).collect()
}

/// The extension the call rang first when `first` answered only after other agents' legs
/// rang out one after another (follow-me, forward on no answer); `None` for ring-all and
/// queue ring legs (rung alongside) and when nobody rang before.
fn forwarded_from(legs: &[AgentLeg], first: &AgentLeg) -> Option<String> {
    let mut before: Vec<&AgentLeg> = legs
        .iter()
        .filter(|l| {
            l.answer.is_none()
                && !l.callcenter
                && l.uuid != first.uuid
                && l.extension != first.extension
                && l.start < first.start
                && l.end
                    .is_some_and(|e| (e - first.start).num_milliseconds() <= FORWARD_SLACK_MS)
        })
        .collect();
    before.sort_by_key(|l| l.start);
    before.first().map(|l| l.extension.clone())
}

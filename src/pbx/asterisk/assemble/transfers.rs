//! Transfers and forwarding in a call's CDR rows: which agents talked to the lead, in
//! order, and how each got the lead ([`SegmentArrival`]).
//!
//! The lead's own channel (party A's: a SIP trunk channel, or the far half of the Local
//! channel that party A's root row runs) writes one row per party it was bridged with:
//! before a transfer the agent who answered, after it the transfer target (a blind
//! transfer rewrites the rows' `dst`/`dcontext` to the target's), or the `Local/…@transfer`
//! channel of an attended transfer. Each answered row of the lead's channel that reaches a
//! configured agent (followed through Local channels) is one segment, timed by that row and
//! the agent's own row together: the lead's talk with that agent, not the wait in a queue
//! and not the agent's consultation call.
//!
//! - A row of the previous agent's channel that dialled somebody itself is the
//!   consultation call of an **attended** transfer: the lead was handed over when it ended,
//!   and the new agent's talk with the lead counts from there.
//! - Otherwise the lead went on without the agents talking first: a **blind** transfer at
//!   the end of the previous agent's row.
//! - A row of the lead's channel that `Dial`ed another agent and gave up before the
//!   answering agent's row started (follow-me, forwarding on no answer) makes the first
//!   segment **forwarded** from that agent. Ring legs of a queue (`Queue` rows) and of a
//!   ring-all `Dial` ring at the same time and are neither.

use super::{CdrRow, Disposition, channel_extension, deepest_answered, is_local};
use crate::call::{AgentSegment, Directory, SegmentArrival};
use crate::pbx::asterisk::tracker::seconds_between as seconds;

/// The channels that carry the lead: party A's, and the other half when it is a Local
/// channel (the rig's and a Local-originated call's trunk side).
fn lead_channels(root: &CdrRow) -> Vec<String> {
    let mut channels = vec![root.channel.clone()];
    if is_local(&root.channel) {
        if let Some(near) = root.channel.strip_suffix(";1") {
            channels.push(format!("{near};2"));
        }
    }
    channels
}

/// The lead's number: party A's `src`, or, when an attended transfer cleared it there (the
/// connected line moved), the `src` of the lead's other channel rows.
pub(super) fn lead_number<'a>(rows: &[&'a CdrRow], root: &'a CdrRow) -> &'a str {
    if !root.src.is_empty() {
        return &root.src;
    }
    let lead = lead_channels(root);
    rows.iter()
        .filter(|r| lead.contains(&r.channel) && !r.src.is_empty())
        .min_by_key(|r| (r.start, r.sequence))
        .map_or(root.src.as_str(), |r| r.src.as_str())
}

/// The rows of the lead's channel that dialled somebody, in order.
fn lead_legs<'a>(rows: &[&'a CdrRow], root: &CdrRow) -> Vec<&'a CdrRow> {
    let lead = lead_channels(root);
    let mut legs: Vec<&CdrRow> = rows
        .iter()
        .copied()
        .filter(|r| !r.dstchannel.is_empty() && lead.contains(&r.channel))
        .collect();
    legs.sort_by_key(|r| (r.start, r.sequence));
    legs
}

/// The segments of a transferred call (two or more agents talked to the lead), or `None`
/// when the lead talked to one agent at most (the caller keeps its own segments then).
pub(super) fn transferred_segments(
    directory: &Directory,
    rows: &[&CdrRow],
    root: &CdrRow,
) -> Option<Vec<AgentSegment>> {
    // (agent, the lead's row with that agent, the agent's own row that times it)
    let mut talked: Vec<(String, &CdrRow, &CdrRow)> = Vec::new();
    for leg in lead_legs(rows, root)
        .into_iter()
        .filter(|r| r.disposition == Disposition::Answered)
    {
        let (channel, own) = deepest_answered(rows, leg);
        let Some(ext) = channel_extension(channel).filter(|e| directory.is_agent_extension(e))
        else {
            continue;
        };
        if talked.last().is_some_and(|(last, _, _)| last == ext) {
            continue;
        }
        talked.push((ext.to_owned(), leg, own));
    }
    if talked.len() < 2 {
        return None;
    }
    let mut segments: Vec<AgentSegment> = Vec::with_capacity(talked.len());
    for (i, (ext, leg, own)) in talked.iter().enumerate() {
        // Both rows bound the talk: the lead's row also counts a queue's wait, the agent's
        // own row also counts the agent's consultation call.
        let answer_of = |r: &CdrRow| r.answer.unwrap_or(r.start);
        let mut answered_at = answer_of(leg).max(answer_of(own));
        let ended_at = leg.end.min(own.end).max(answered_at);
        let mut talk_seconds = leg.billsec.min(own.billsec);
        let arrival = match i.checked_sub(1).map(|p| &talked[p]) {
            None => SegmentArrival::Direct,
            Some((from, previous, _)) => {
                // The previous agent's own channel dialling somebody: the consultation.
                let consultation = rows
                    .iter()
                    .copied()
                    .filter(|r| r.channel == previous.dstchannel && !r.dstchannel.is_empty())
                    .max_by_key(|r| r.end);
                match consultation {
                    Some(c) => {
                        let at = c.end;
                        if at > answered_at {
                            answered_at = at;
                            talk_seconds = talk_seconds.min(seconds(at, ended_at));
                        }
                        SegmentArrival::AttendedTransfer {
                            from: from.clone(),
                            at,
                        }
                    }
                    None => SegmentArrival::BlindTransfer {
                        from: from.clone(),
                        at: previous.end,
                    },
                }
            }
        };
        segments.push(AgentSegment {
            extension: ext.clone(),
            answered_at,
            ended_at: Some(ended_at),
            talk_seconds,
            arrival,
        });
    }
    Some(segments)
}

/// The agent a call was forwarded from before `first` answered (follow-me, forwarding on
/// no answer): a `Dial` row of the lead's channel towards another agent that gave up
/// before the answering agent's row started.
pub(super) fn forwarded_from(
    directory: &Directory,
    rows: &[&CdrRow],
    root: &CdrRow,
    first: &AgentSegment,
) -> Option<String> {
    let legs = lead_legs(rows, root);
    let answered_leg_start = legs
        .iter()
        .filter(|r| r.disposition == Disposition::Answered)
        .find(|r| channel_extension(deepest_answered(rows, r).0) == Some(first.extension.as_str()))
        .map(|r| r.start)?;
    legs.iter()
        .filter(|r| r.disposition != Disposition::Answered && r.lastapp == "Dial")
        .filter(|r| r.end <= answered_leg_start)
        .filter_map(|r| channel_extension(&r.dstchannel))
        .find(|ext| *ext != first.extension && directory.is_agent_extension(ext))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;

//! The split of a transferred call into call logs, and the notes they carry: each mode on
//! hand-built records, and properties over any chain of segments.

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::call::{Number, Outcome};

fn at(secs: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 7, 12, 0, 0)
        .single()
        .expect("time")
        + chrono::Duration::seconds(i64::from(secs))
}

fn hms(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

fn agent(extension: &str, user: &str) -> AgentInfo {
    AgentInfo {
        extension: extension.into(),
        phone: None,
        user_id: Some(user.into()),
        email: None,
        name: None,
        queue_interface: None,
    }
}

fn segment(extension: &str, answered: u32, ended: u32, arrival: SegmentArrival) -> AgentSegment {
    AgentSegment {
        extension: extension.into(),
        answered_at: at(answered),
        ended_at: Some(at(ended)),
        talk_seconds: u64::from(ended - answered),
        arrival,
    }
}

/// An inbound call answered by 100 at 12:00:05; the caller hangs up at 12:03:40.
fn call(segments: Vec<AgentSegment>, logs: TransferLogs) -> CallRecord {
    CallRecord {
        call_id: "1772884800.7".into(),
        source: "asterisk-cdr".into(),
        direction: Direction::Inbound,
        outcome: Outcome::Answered,
        lead_number: Number {
            raw: "+919611795983".into(),
            e164: None,
        },
        agent: Some(agent("100", "u-100")),
        agent_extension: Some("100".into()),
        display_number: Some(Number {
            raw: "918044556677".into(),
            e164: None,
        }),
        tag: Some("sales".into()),
        start: at(0),
        answer: Some(at(5)),
        end: at(220),
        talk_seconds: 185,
        caller_name: Some("Asha".into()),
        recording_url: Some("https://rec.example/1772884800.7.wav".into()),
        lead_id: None,
        legs: 2,
        segments,
        transfer: TransferInfo {
            logs,
            agents: vec![agent("100", "u-100"), agent("103", "u-103")],
            segment: None,
        },
    }
}

fn blind() -> Vec<AgentSegment> {
    vec![
        segment("100", 5, 190, SegmentArrival::Direct),
        segment(
            "103",
            196,
            220,
            SegmentArrival::BlindTransfer {
                from: "100".into(),
                at: at(190),
            },
        ),
    ]
}

#[test]
fn a_call_that_was_not_transferred_is_left_as_it_is() {
    for logs in [TransferLogs::PerAgent, TransferLogs::Single] {
        let one = call(vec![segment("100", 5, 220, SegmentArrival::Direct)], logs);
        assert_eq!(call_logs(one.clone()), vec![one.clone()]);
        assert_eq!(note(&one, hms), None);
        let missed = CallRecord {
            outcome: Outcome::NoAnswer,
            agent: None,
            answer: None,
            talk_seconds: 0,
            ..call(Vec::new(), logs)
        };
        assert_eq!(call_logs(missed.clone()), vec![missed.clone()]);
        assert_eq!(note(&missed, hms), None);
    }
}

#[test]
fn per_agent_gives_one_log_per_segment_with_its_own_agent_time_and_id() {
    let logs = call_logs(call(blind(), TransferLogs::PerAgent));
    assert_eq!(logs.len(), 2);
    let (first, second) = (&logs[0], &logs[1]);
    assert_eq!(first.call_id, "1772884800.7");
    assert_eq!(second.call_id, "1772884800.7-2");
    assert_eq!(first.agent_extension.as_deref(), Some("100"));
    assert_eq!(second.agent_extension.as_deref(), Some("103"));
    assert_eq!(
        second.agent.as_ref().and_then(|a| a.user_id.as_deref()),
        Some("u-103")
    );
    assert_eq!(
        (first.start, first.answer, first.end),
        (at(0), Some(at(5)), at(190))
    );
    assert_eq!(
        (second.start, second.answer, second.end),
        (at(190), Some(at(196)), at(220))
    );
    assert_eq!((first.talk_seconds, second.talk_seconds), (185, 24));
    for log in &logs {
        assert_eq!(log.direction, Direction::Inbound);
        assert_eq!(log.outcome, Outcome::Answered);
        assert_eq!(log.lead_number.raw, "+919611795983");
        assert_eq!(
            log.display_number.as_ref().map(|n| n.raw.as_str()),
            Some("918044556677")
        );
        assert_eq!(log.tag.as_deref(), Some("sales"));
        assert_eq!(
            log.recording_url.as_deref(),
            Some("https://rec.example/1772884800.7.wav")
        );
        assert_eq!(log.caller_name.as_deref(), Some("Asha"));
    }
    assert_eq!(
        note(first, hms).as_deref(),
        Some("transferred to 103 at 12:03:10 (1 of 2)")
    );
    assert_eq!(
        note(second, hms).as_deref(),
        Some("from 100 by blind transfer at 12:03:10 (2 of 2)")
    );
}

#[test]
fn an_attended_transfer_notes_the_handover_and_starts_the_target_log_there() {
    // 103 answered the consultation call at 12:02:50 and got the lead at 12:03:10.
    let segments = vec![
        segment("100", 5, 190, SegmentArrival::Direct),
        segment(
            "103",
            190,
            220,
            SegmentArrival::AttendedTransfer {
                from: "100".into(),
                at: at(190),
            },
        ),
    ];
    let logs = call_logs(call(segments, TransferLogs::PerAgent));
    assert_eq!(logs[1].start, at(190));
    assert_eq!(logs[1].talk_seconds, 30);
    assert_eq!(
        note(&logs[0], hms).as_deref(),
        Some("transferred to 103 at 12:03:10 (1 of 2)")
    );
    assert_eq!(
        note(&logs[1], hms).as_deref(),
        Some("from 100 by attended transfer at 12:03:10 (2 of 2)")
    );
}

#[test]
fn a_middle_segment_says_where_it_came_from_and_where_it_went() {
    let mut segments = blind();
    segments[1].ended_at = Some(at(200));
    segments.push(segment(
        "104",
        205,
        220,
        SegmentArrival::AttendedTransfer {
            from: "103".into(),
            at: at(200),
        },
    ));
    let logs = call_logs(call(segments, TransferLogs::PerAgent));
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[2].call_id, "1772884800.7-3");
    // 104 is not in the agent table: its log names the extension only.
    assert_eq!(logs[2].agent, None);
    assert_eq!(logs[2].agent_extension.as_deref(), Some("104"));
    assert_eq!(
        note(&logs[1], hms).as_deref(),
        Some("from 100 by blind transfer at 12:03:10, transferred to 104 at 12:03:20 (2 of 3)")
    );
}

#[test]
fn single_gives_one_log_with_the_last_agent_and_the_chain() {
    let logs = call_logs(call(blind(), TransferLogs::Single));
    assert_eq!(logs.len(), 1);
    let log = &logs[0];
    assert_eq!(log.call_id, "1772884800.7");
    assert_eq!(log.agent_extension.as_deref(), Some("103"));
    assert_eq!(
        log.agent.as_ref().and_then(|a| a.user_id.as_deref()),
        Some("u-103")
    );
    assert_eq!(
        (log.start, log.answer, log.end),
        (at(0), Some(at(5)), at(220))
    );
    assert_eq!(log.talk_seconds, 215);
    assert_eq!(
        note(log, hms).as_deref(),
        Some("100 → 103 (blind transfer at 12:03:10)")
    );
}

#[test]
fn forwarding_before_the_answer_is_one_log_noted_forwarded() {
    let forwarded = call(
        vec![segment(
            "103",
            12,
            220,
            SegmentArrival::Forwarded { from: "100".into() },
        )],
        TransferLogs::PerAgent,
    );
    assert_eq!(call_logs(forwarded.clone()), vec![forwarded.clone()]);
    assert_eq!(note(&forwarded, hms).as_deref(), Some("forwarded from 100"));
}

#[test]
fn an_outbound_call_is_not_split() {
    let outbound = CallRecord {
        direction: Direction::Outbound,
        ..call(blind(), TransferLogs::PerAgent)
    };
    assert_eq!(call_logs(outbound.clone()), vec![outbound.clone()]);
    assert_eq!(note(&outbound, hms), None);
}

#[test]
fn a_record_written_before_transfers_reads_with_the_defaults() {
    let mut value = serde_json::to_value(call(blind(), TransferLogs::PerAgent)).expect("json");
    let object = value.as_object_mut().expect("object");
    object.remove("transfer");
    for segment in object["segments"].as_array_mut().expect("segments") {
        segment.as_object_mut().expect("segment").remove("arrival");
    }
    let old: CallRecord = serde_json::from_value(value).expect("reads");
    assert_eq!(old.transfer, TransferInfo::default());
    assert_eq!(call_logs(old).len(), 2);
}

fn arrival() -> impl Strategy<Value = u8> {
    0u8..4
}

proptest! {
    /// Any chain of segments: per-agent gives one log per segment with unique ids (the
    /// first the call's own), the segments' talk times and agents in order, and splitting a
    /// split log again changes nothing; single gives one log with the call's id.
    #[test]
    fn any_chain_splits_into_one_log_per_segment(
        chain in prop::collection::vec((1u32..600, 0u32..900, arrival()), 1..6),
    ) {
        let mut segments = Vec::new();
        let mut clock = 5u32;
        for (i, (wait, talk, kind)) in chain.iter().enumerate() {
            let answered = clock + wait;
            let ended = answered + talk;
            let from = if i == 0 { "100".to_owned() } else { format!("{}", 99 + i) };
            let arrival = match (i, kind) {
                (0, 1) => SegmentArrival::Forwarded { from },
                (0, _) | (_, 0) => SegmentArrival::Direct,
                (_, 1 | 2) => SegmentArrival::BlindTransfer { from, at: at(clock) },
                _ => SegmentArrival::AttendedTransfer { from, at: at(clock) },
            };
            segments.push(segment(&format!("{}", 100 + i), answered, ended, arrival));
            clock = ended;
        }
        let n = segments.len();
        let whole = CallRecord { end: at(clock), ..call(segments.clone(), TransferLogs::PerAgent) };
        let logs = call_logs(whole.clone());
        prop_assert_eq!(logs.len(), n);
        if n == 1 {
            prop_assert_eq!(&logs[0], &whole);
        }
        let mut ids: Vec<&str> = logs.iter().map(|l| l.call_id.as_str()).collect();
        prop_assert_eq!(ids[0], whole.call_id.as_str());
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), n);
        for (i, log) in logs.iter().enumerate().filter(|_| n > 1) {
            prop_assert_eq!(log.talk_seconds, segments[i].talk_seconds);
            prop_assert_eq!(log.agent_extension.as_deref(), Some(segments[i].extension.as_str()));
            prop_assert!(log.start <= log.end);
            prop_assert_eq!(call_logs(log.clone()), vec![log.clone()]);
            let text = note(log, hms).unwrap_or_default();
            let of = format!("({} of {n})", i + 1);
            prop_assert!(text.ends_with(&of), "{}", text);
        }
        let single = call_logs(CallRecord {
            transfer: TransferInfo { logs: TransferLogs::Single, ..whole.transfer.clone() },
            ..whole.clone()
        });
        prop_assert_eq!(single.len(), 1);
        prop_assert_eq!(&single[0].call_id, &whole.call_id);
        if n > 1 {
            prop_assert_eq!(
                single[0].agent_extension.as_deref(),
                Some(segments[n - 1].extension.as_str())
            );
        }
        prop_assert_eq!(call_logs(single[0].clone()), single.clone());
    }
}

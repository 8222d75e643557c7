use std::path::PathBuf;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::transfer_fixtures::{TRANSFER_SCENARIOS, transfer_segments};
use super::*;
use crate::call::TimeWindow;
use crate::call::{AgentSegment, DialResult, RecordingRef};
use crate::pbx::freeswitch::cdr::{CsvLayout, FsCsvParser, templates};
use crate::pbx::freeswitch::json_cdr::parse_json_cdr;

fn fixture_dir(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freeswitch")
        .join(scenario)
}

fn window() -> TimeWindow {
    TimeWindow::at(Utc::now())
}

/// The legs of a scenario's json_cdr files, in file-name order.
fn json_legs(scenario: &str) -> Vec<FsLeg> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir(scenario).join("json_cdr"))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).expect("fixture file");
            parse_json_cdr(&bytes, chrono_tz::Tz::UTC, window()).expect("fixture leg parses")
        })
        .collect()
}

/// The legs of a scenario's Master.csv (the rig's template), in file order.
fn csv_legs(scenario: &str) -> Vec<FsLeg> {
    let text = std::fs::read(fixture_dir(scenario).join("Master.csv")).expect("Master.csv");
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let parser = FsCsvParser::new(csv_layout_for(first), chrono_tz::Tz::UTC);
    text.split(|&b| b == b'\n')
        .filter_map(|line| parser.parse_within(line, window()).expect("row parses"))
        .collect()
}

fn assembler() -> FsAssembler {
    FsAssembler::new(
        "freeswitch-test".into(),
        SettleTimes {
            settle_ms: 3000,
            max_call_secs: 3600,
        },
        Box::new(|f: &CallFacts| Err(format!("facts of {}", f.call_id))),
    )
}

/// Every call the legs make, fed in the given order and taken at once.
fn calls_of(legs: Vec<FsLeg>) -> Vec<AssembledFacts> {
    let mut a = assembler();
    for (i, leg) in legs.into_iter().enumerate() {
        a.add_leg(i as i64 + 1, leg, format!("leg {i}"), 0);
    }
    a.take_all_facts()
}

fn only_call(legs: Vec<FsLeg>) -> CallFacts {
    let calls = calls_of(legs);
    assert_eq!(calls.len(), 1, "one call: {calls:#?}");
    calls
        .into_iter()
        .next()
        .and_then(|c| c.facts.ok())
        .expect("facts")
}

fn us(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).expect("time")
}

fn segment(extension: &str, answered_us: i64, ended_us: i64, talk: u64) -> AgentSegment {
    AgentSegment {
        extension: extension.into(),
        answered_at: us(answered_us),
        ended_at: Some(us(ended_us)),
        talk_seconds: talk,
        arrival: crate::call::SegmentArrival::Direct,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const SOURCE: &str = "freeswitch-test";

/// The carrier calls DID 4930100, bridged to user/100; agent 100 answers after 2.5 s, the
/// lead hangs up after 3 s; recorded. Three legs: the carrier's (root), the bridge's leg to
/// the agent's phone, and that phone's own leg (the rig's FreeSWITCH calling itself).
#[test]
fn answered_inbound_json_cdr_facts() {
    let f = only_call(json_legs("answered_inbound"));
    let mut want = CallFacts::new(
        "bcc77915-8cf9-4441-8633-7c068ba183cd",
        SOURCE,
        us(1796167706618728),
        us(1796167712178743),
    );
    want.caller_number = "sipp".into();
    want.caller_name = Some("sipp".into());
    want.caller_extension = Some("sipp".into());
    want.dialled = "4930100".into();
    want.contexts = strings(&["public"]);
    want.did_candidates = strings(&["4930100"]);
    want.shown_caller_ids = strings(&["sipp"]);
    want.answered = vec![segment("100", 1796167709138752, 1796167712178743, 3)];
    want.rung_agents = strings(&["100"]);
    want.attempts = vec![DialResult::Answered];
    want.applications = strings(&["export", "set", "record_session", "bridge"]);
    want.recording = Some(RecordingRef {
        file:
            "/usr/local/freeswitch/recordings/2026-12-01/bcc77915-8cf9-4441-8633-7c068ba183cd.wav"
                .into(),
        channel_id: Some("bcc77915-8cf9-4441-8633-7c068ba183cd".into()),
    });
    want.legs = 3;
    assert_eq!(f, want);
}

/// DID 4930103 → user/103, whose phone rings and never answers; the bridge gives up after 6 s.
#[test]
fn missed_inbound_json_cdr_facts() {
    let f = only_call(json_legs("missed_inbound"));
    let mut want = CallFacts::new(
        "bbb59a11-4c31-4f09-a1c1-e5ebcfe13e5b",
        SOURCE,
        us(1796167712998727),
        us(1796167718018709),
    );
    want.caller_number = "sipp".into();
    want.caller_name = Some("sipp".into());
    want.caller_extension = Some("sipp".into());
    want.dialled = "4930103".into();
    want.contexts = strings(&["public"]);
    want.did_candidates = strings(&["4930103"]);
    want.shown_caller_ids = strings(&["sipp"]);
    want.rung_agents = strings(&["103"]);
    want.attempts = vec![DialResult::NoAnswer];
    want.applications = strings(&["export", "set", "bridge"]);
    want.legs = 3;
    assert_eq!(f, want);
}

/// DID 4930102 → user/102, whose phone answers 486 Busy Here.
#[test]
fn busy_agent_json_cdr_facts() {
    let f = only_call(json_legs("busy_agent"));
    let mut want = CallFacts::new(
        "9953d44e-bc40-47c2-958b-fe1f85193372",
        SOURCE,
        us(1796167718858738),
        us(1796167718878732),
    );
    want.caller_number = "sipp".into();
    want.caller_name = Some("sipp".into());
    want.caller_extension = Some("sipp".into());
    want.dialled = "4930102".into();
    want.contexts = strings(&["public"]);
    want.did_candidates = strings(&["4930102"]);
    want.shown_caller_ids = strings(&["sipp"]);
    want.rung_agents = strings(&["102"]);
    want.attempts = vec![DialResult::Busy];
    want.applications = strings(&["export", "set", "bridge"]);
    want.legs = 3;
    assert_eq!(f, want);
}

/// DID 4930200 → ring-all queue sales@default: mod_callcenter originates a leg to each of
/// agents 100 and 101 (calls of their own, linked only by cc_member_session_uuid); 101
/// answers after 1 s, 100's leg ends LOSE_RACE. One call, both agents rung, 101 answered.
#[test]
fn queue_ring_all_json_cdr_facts() {
    let f = only_call(json_legs("queue_ring_all"));
    let mut want = CallFacts::new(
        "d718501f-df0f-4c3f-8c32-22faf9acf617",
        SOURCE,
        us(1796167719698745),
        us(1796167725738715),
    );
    want.caller_number = "sipp".into();
    want.caller_name = Some("sipp".into());
    want.caller_extension = Some("sipp".into());
    want.dialled = "4930200".into();
    want.contexts = strings(&["public"]);
    want.did_candidates = strings(&["4930200"]);
    want.shown_caller_ids = strings(&["sipp"]);
    want.answered = vec![segment("101", 1796167720738702, 1796167725738715, 5)];
    // Both legs start at the same microsecond; ties go by uuid.
    want.rung_agents = strings(&["101", "100"]);
    want.attempts = vec![DialResult::Answered, DialResult::NoAnswer];
    want.applications = strings(&["export", "answer", "set", "record_session", "callcenter"]);
    want.recording = Some(RecordingRef {
        file:
            "/usr/local/freeswitch/recordings/2026-12-01/d718501f-df0f-4c3f-8c32-22faf9acf617.wav"
                .into(),
        channel_id: Some("d718501f-df0f-4c3f-8c32-22faf9acf617".into()),
    });
    want.legs = 5;
    assert_eq!(f, want);
}

/// An agent's phone (context default) dials 4930123457 out through the carrier.
#[test]
fn agent_outbound_json_cdr_facts() {
    let f = only_call(json_legs("agent_outbound"));
    let mut want = CallFacts::new(
        "3e2f54d6-b0e9-44de-9f3c-d66f290d3ef7",
        SOURCE,
        us(1796167727078741),
        us(1796167730138742),
    );
    want.caller_number = "sipp".into();
    want.caller_name = Some("sipp".into());
    want.caller_extension = Some("sipp".into());
    want.dialled = "4930123457".into();
    want.contexts = strings(&["default"]);
    want.did_candidates = strings(&["4930123457"]);
    want.shown_caller_ids = strings(&["sipp"]);
    want.outside_answered = Some((us(1796167727098734), 3));
    want.attempts = vec![DialResult::Answered];
    want.applications = strings(&["export", "set", "bridge"]);
    want.legs = 2;
    assert_eq!(f, want);
}

/// `originate {origination_caller_id_number=4930100,pbxlink_lead_id=lead-42,...}user/101
/// 4930123457 XML default`: the agent's leg (placed by FreeSWITCH, first profile the
/// originate's) is party A; after agent 101 answers, the dialplan dials the lead.
#[test]
fn click_to_call_json_cdr_facts() {
    let f = only_call(json_legs("click_to_call"));
    let mut want = CallFacts::new(
        "817776ba-8a78-4708-9119-01d48cc2c216",
        SOURCE,
        us(1796167730638753),
        us(1796167735718772),
    );
    want.caller_number = "4930100".into();
    want.caller_name = Some("Lead 42".into());
    want.caller_extension = Some("101".into());
    want.dialled = "4930123457".into();
    want.contexts = strings(&["default"]);
    want.did_candidates = strings(&["4930123457"]);
    want.shown_caller_ids = strings(&["4930100", "101"]);
    want.outside_answered = Some((us(1796167731678741), 4));
    want.attempts = vec![DialResult::Answered];
    want.applications = strings(&["export", "set", "bridge"]);
    want.lead_id = Some("lead-42".into());
    want.legs = 3;
    assert_eq!(f, want);
}

/// The layout of a fixture Master.csv: the rig's 25 columns, or the recommended template
/// once the fixtures are captured again with it.
fn csv_layout_for(first_row: &[u8]) -> CsvLayout {
    let fields = crate::pbx::freeswitch::cdr::csv::split_fields(first_row).len();
    if fields == templates::RIG_COLUMNS.len() {
        let columns: Vec<String> = templates::RIG_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .collect();
        CsvLayout::new(None, Some(&columns)).expect("rig layout")
    } else {
        let layout = CsvLayout::new(Some("pbxlink"), None).expect("pbxlink layout");
        if fields + 1 == layout.columns.len() {
            // The transfer captures: the template before its last column (`ani`).
            let mut columns = layout.columns.clone();
            columns.pop();
            return CsvLayout::new(None, Some(&columns)).expect("transfer capture layout");
        }
        layout
    }
}

/// Every fixture's Master.csv rows group into the same call, with the same id, times,
/// attempts, recording and lead id as its json_cdr files. (The rig's 25-column template has
/// no SIP Call-ID, so each agent phone's own leg stays a group of its own, and no
/// dialed_user, so a bridged agent leg is not known as an agent's; the recommended
/// template has both.)
#[test]
fn cdr_csv_fixtures_group_like_json_cdr() {
    for scenario in [
        "answered_inbound",
        "missed_inbound",
        "busy_agent",
        "queue_ring_all",
        "agent_outbound",
        "click_to_call",
    ] {
        let json = only_call(json_legs(scenario));
        let calls = calls_of(csv_legs(scenario));
        let csv: Vec<CallFacts> = calls.into_iter().filter_map(|c| c.facts.ok()).collect();
        let main = csv
            .iter()
            .find(|f| f.call_id == json.call_id)
            .unwrap_or_else(|| panic!("{scenario}: no csv call {}: {csv:#?}", json.call_id));
        assert_eq!(main.start, json.start, "{scenario}");
        assert_eq!(main.end, json.end, "{scenario}");
        assert_eq!(main.dialled, json.dialled, "{scenario}");
        assert_eq!(main.contexts, json.contexts, "{scenario}");
        assert_eq!(main.attempts, json.attempts, "{scenario}");
        assert_eq!(main.recording, json.recording, "{scenario}");
        assert_eq!(main.lead_id, json.lead_id, "{scenario}");
        // The other groups are the agent phones' own legs, one leg each.
        for other in csv.iter().filter(|f| f.call_id != json.call_id) {
            assert_eq!(other.legs, 1, "{scenario}: {other:#?}");
            assert!(
                other.dialled.starts_with("phone-"),
                "{scenario}: {other:#?}"
            );
        }
    }
}

/// mod_callcenter's agent legs carry cc_agent in the rig's template: the queue call's
/// agents are known from Master.csv too.
#[test]
fn queue_ring_all_cdr_csv_knows_both_agents() {
    let csv: Vec<CallFacts> = calls_of(csv_legs("queue_ring_all"))
        .into_iter()
        .filter_map(|c| c.facts.ok())
        .collect();
    let f = csv
        .iter()
        .find(|f| f.call_id == "d718501f-df0f-4c3f-8c32-22faf9acf617")
        .expect("queue call");
    assert_eq!(f.rung_agents, strings(&["101", "100"]));
    assert_eq!(
        f.answered,
        vec![segment("101", 1796167720738702, 1796167725738715, 5)]
    );
    assert_eq!(f.legs, 3);
}

/// The order legs arrive in changes nothing: every rotation and the reverse of every
/// scenario's legs give the same facts.
#[test]
fn facts_do_not_depend_on_arrival_order() {
    for scenario in [
        "answered_inbound",
        "missed_inbound",
        "busy_agent",
        "queue_ring_all",
        "agent_outbound",
        "click_to_call",
    ] {
        let legs = json_legs(scenario);
        let want = only_call(legs.clone());
        for shift in 0..legs.len() {
            let mut l = legs.clone();
            l.rotate_left(shift);
            assert_eq!(only_call(l.clone()), want, "{scenario} rotated {shift}");
            l.reverse();
            assert_eq!(only_call(l), want, "{scenario} rotated {shift}, reversed");
        }
    }
}

/// A losing agent's leg is written the moment it loses, seconds before the caller's: it is
/// held (never released as a call of its own) until the member's leg arrives, then the
/// call settles once quiet.
#[test]
fn losing_agent_leg_waits_for_the_members_leg() {
    let legs = json_legs("queue_ring_all");
    let (lose, rest): (Vec<FsLeg>, Vec<FsLeg>) = legs
        .into_iter()
        .partition(|l| l.hangup_cause.as_deref() == Some("LOSE_RACE"));
    assert_eq!(lose.len(), 1);
    let mut a = assembler();
    a.add_leg(1, lose[0].clone(), "lose".into(), 1_000);
    // Long past the settle time, well before max_call_secs: still held.
    assert!(a.take_settled_facts(1_000 + 600_000).is_empty());
    assert_eq!(a.pending_records(), 1);
    for (i, leg) in rest.into_iter().enumerate() {
        a.add_leg(i as i64 + 2, leg, "leg".into(), 700_000);
    }
    assert!(
        a.take_settled_facts(700_000 + 2_999).is_empty(),
        "not yet quiet"
    );
    let calls = a.take_settled_facts(700_000 + 3_000);
    assert_eq!(calls.len(), 1);
    let f = calls[0].facts.as_ref().expect("facts");
    assert_eq!(f.call_id, "d718501f-df0f-4c3f-8c32-22faf9acf617");
    assert_eq!(f.legs, 5);
    assert_eq!(calls[0].staged_ids.len(), 5);
    assert_eq!(a.pending_records(), 0);
}

/// Legs whose party A never arrives (its file was history, or lost) are dropped after
/// max_call_secs with a reason, never posted as a call.
#[test]
fn orphan_agent_legs_are_dropped_not_posted() {
    let legs: Vec<FsLeg> = json_legs("queue_ring_all")
        .into_iter()
        .filter(|l| l.is_callcenter_agent_leg())
        .collect();
    assert_eq!(legs.len(), 2);
    let mut a = assembler();
    for (i, leg) in legs.into_iter().enumerate() {
        a.add_leg(i as i64 + 1, leg, "agent".into(), 0);
    }
    assert!(a.take_settled_facts(3_600_000 - 1).is_empty());
    let calls = a.take_settled(3_600_000);
    assert_eq!(calls.len(), 1);
    assert!(calls[0].call.is_none());
    let reason = calls[0].skipped.as_deref().unwrap_or_default();
    assert!(reason.contains("without party A"), "{reason}");
    assert_eq!(calls[0].staged_ids, vec![1, 2]);
}

/// A leg read twice (a file read again after a crash) counts once; both staged rows are
/// consumed with the call.
#[test]
fn a_leg_read_twice_counts_once() {
    let legs = json_legs("answered_inbound");
    let mut a = assembler();
    for (i, leg) in legs.iter().enumerate() {
        a.add_leg(i as i64 + 1, leg.clone(), "leg".into(), 0);
    }
    a.add_leg(9, legs[0].clone(), "again".into(), 0);
    assert_eq!(a.pending_records(), 3);
    let calls = a.take_all_facts();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].facts.as_ref().map(|f| f.legs).ok(), Some(3));
    let mut ids = calls[0].staged_ids.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 9]);
}

/// Two calls read together (a backlog) stay two calls; the older one settles once the legs
/// read after it ended a minute later, whatever the read time.
#[test]
fn calls_read_together_stay_apart_and_a_backlog_settles() {
    let mut legs = json_legs("answered_inbound");
    legs.extend(json_legs("agent_outbound"));
    let mut a = assembler();
    for (i, leg) in legs.into_iter().enumerate() {
        a.add_leg(i as i64 + 1, leg, "leg".into(), 0);
    }
    let ids: Vec<String> = a
        .take_all_facts()
        .into_iter()
        .filter_map(|c| c.facts.ok().map(|f| f.call_id))
        .collect();
    assert_eq!(
        ids,
        strings(&[
            "bcc77915-8cf9-4441-8633-7c068ba183cd",
            "3e2f54d6-b0e9-44de-9f3c-d66f290d3ef7"
        ])
    );

    // answered_inbound ended at 23:28:32.198715; a leg that ended 60 s later overtakes it.
    let mut a = assembler();
    for (i, leg) in json_legs("answered_inbound").into_iter().enumerate() {
        a.add_leg(i as i64 + 1, leg, "leg".into(), 0);
    }
    let mut late = json_legs("agent_outbound").remove(0);
    late.end = us(1796167712198715 + 60_000_000);
    a.add_leg(10, late, "late".into(), 0);
    let settled = a.take_settled_facts(1);
    assert_eq!(settled.len(), 1);
    assert_eq!(
        settled[0].facts.as_ref().map(|f| f.call_id.clone()).ok(),
        Some("bcc77915-8cf9-4441-8633-7c068ba183cd".to_string())
    );
}

/// The assembler hands every call's facts to the classifier it was given (the shared
/// rules) and passes its answer on.
#[test]
fn classifier_decides_what_is_posted() {
    let mut a = FsAssembler::new(
        SOURCE.into(),
        SettleTimes {
            settle_ms: 0,
            max_call_secs: 1,
        },
        Box::new(|f: &CallFacts| {
            if f.rung_agents.is_empty() {
                Err("no agent".into())
            } else {
                Err(format!("agents {:?}", f.rung_agents))
            }
        }),
    );
    for (i, leg) in json_legs("queue_ring_all").into_iter().enumerate() {
        a.add_leg(i as i64, leg, "leg".into(), 0);
    }
    let calls = a.take_all();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].skipped.as_deref(),
        Some(r#"agents ["101", "100"]"#)
    );
}

proptest! {
    /// Whatever order the legs of all six scenarios arrive in (FreeSWITCH writes a call's
    /// legs within the settle time of each other), and whenever the takes happen, every
    /// staged row is consumed exactly once and the same six calls come out.
    #[test]
    fn every_leg_is_consumed_once_whatever_the_order(
        order in proptest::sample::subsequence((0..19usize).collect::<Vec<_>>(), 19).prop_shuffle(),
        reads in proptest::collection::vec(0i64..3_000, 19),
        takes in proptest::collection::vec(0i64..20_000, 0..4),
    ) {
        let all: Vec<FsLeg> = [
            "answered_inbound",
            "missed_inbound",
            "busy_agent",
            "queue_ring_all",
            "agent_outbound",
            "click_to_call",
        ]
        .iter()
        .flat_map(|s| json_legs(s))
        .collect();
        prop_assert_eq!(all.len(), 19);
        let mut a = assembler();
        let mut out = Vec::new();
        let mut takes = takes;
        takes.sort_unstable();
        let mut next_take = takes.into_iter().peekable();
        let mut reads_sorted: Vec<(i64, usize)> = order.iter().map(|&i| (reads[i], i)).collect();
        reads_sorted.sort_unstable();
        for (read_at, i) in reads_sorted {
            while let Some(t) = next_take.next_if(|t| *t <= read_at) {
                out.extend(a.take_settled_facts(t));
            }
            a.add_leg(i as i64, all[i].clone(), String::new(), read_at);
        }
        out.extend(a.take_all_facts());
        let mut ids: Vec<i64> = out.iter().flat_map(|c| c.staged_ids.iter().copied()).collect();
        ids.sort_unstable();
        prop_assert_eq!(ids, (0..19).collect::<Vec<i64>>());
        let mut calls: Vec<String> = out
            .iter()
            .filter_map(|c| c.facts.as_ref().ok().map(|f| f.call_id.clone()))
            .collect();
        calls.sort();
        prop_assert_eq!(calls.len(), out.len(), "no orphan group: {:?}", out);
        prop_assert_eq!(
            calls,
            strings(&[
                "3e2f54d6-b0e9-44de-9f3c-d66f290d3ef7",
                "817776ba-8a78-4708-9119-01d48cc2c216",
                "9953d44e-bc40-47c2-958b-fe1f85193372",
                "bbb59a11-4c31-4f09-a1c1-e5ebcfe13e5b",
                "bcc77915-8cf9-4441-8633-7c068ba183cd",
                "d718501f-df0f-4c3f-8c32-22faf9acf617",
            ])
        );
    }
}

/// The rig's transfer calls (real json_cdr files): one segment per agent who talked to the
/// lead, with its arrival, its own times and talk time; none for the consultation call, the
/// target who did not answer or the queue's losing ring leg.
#[test]
fn transfer_fixtures_json_cdr_segments() {
    for scenario in TRANSFER_SCENARIOS {
        let (call_id, want) = transfer_segments(scenario);
        let f = only_call(json_legs(scenario));
        assert_eq!(f.call_id, call_id, "{scenario}");
        assert_eq!(f.answered, want, "{scenario}: json_cdr segments");
        // After att_xfer FreeSWITCH writes agent 100's phone into the lead's caller id.
        assert_eq!(f.caller_number, "+4915112345678", "{scenario}");
    }
}

/// The same calls from the rig's Master.csv rows (the recommended `pbxlink` template): the
/// same segments as from json_cdr.
#[test]
fn transfer_fixtures_cdr_csv_segments() {
    for scenario in TRANSFER_SCENARIOS {
        let (call_id, want) = transfer_segments(scenario);
        let f = only_call(csv_legs(scenario));
        assert_eq!(f.call_id, call_id, "{scenario}");
        assert_eq!(f.answered, want, "{scenario}: cdr_csv segments");
    }
}

/// The segments do not depend on the order the legs are read in.
#[test]
fn transfer_segments_do_not_depend_on_leg_order() {
    for scenario in TRANSFER_SCENARIOS {
        let (_, want) = transfer_segments(scenario);
        let mut legs = csv_legs(scenario);
        legs.reverse();
        assert_eq!(only_call(legs).answered, want, "{scenario} reversed");
    }
}

/// A consultation call that never got the lead (the agent cancelled it and went back to
/// the lead) is no segment, and the agent keeps its talk time.
#[test]
fn a_cancelled_consultation_is_no_segment() {
    let mut legs = csv_legs("transfer_attended");
    let target = "e6c603b0-5e46-4f29-88db-0f1b8fca61ec";
    let agent = "2c05043c-8a02-44db-bb97-a5a332a8534e";
    let lead_end = legs
        .iter()
        .find(|l| l.uuid == "141a705b-d76a-4224-ab4a-ea3599915903")
        .map(|l| l.end)
        .expect("lead");
    for l in &mut legs {
        if l.uuid == target {
            // Hung up during the consultation, never bridged to the lead.
            l.bridged_to.clear();
            l.end = us(1796184356000000);
        }
        if l.uuid == agent {
            l.end = lead_end;
            l.billsec = 14;
        }
    }
    let f = only_call(legs);
    assert_eq!(f.answered.len(), 1, "{:#?}", f.answered);
    assert_eq!(f.answered[0].extension, "100");
    assert_eq!(f.answered[0].talk_seconds, 14);
}

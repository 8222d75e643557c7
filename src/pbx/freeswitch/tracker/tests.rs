use super::*;
use crate::call::{AgentSegment, DialResult, RecordingRef};
use crate::pbx::freeswitch::esl::{Frame, FrameLimits, Framer, Headers};
use proptest::prelude::*;

/// Every event of a scenario's real capture, framed by the real framer.
fn fixture_events(scenario: &str) -> Vec<Event> {
    let path = format!(
        "{}/tests/fixtures/freeswitch/{scenario}/esl.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut framer = Framer::new(FrameLimits::default());
    framer.extend(&bytes);
    let mut events = Vec::new();
    while let Some(frame) = framer.next_frame().expect("the capture frames") {
        if let Frame::Event(e) = frame {
            events.push(e);
        }
    }
    assert_eq!(framer.buffered(), 0, "{scenario}: bytes left over");
    events
}

/// The event's own time in ms (the capture's clock stands in for the monotonic one).
fn event_ms(e: &Event) -> Option<i64> {
    micros(e, "Event-Date-Timestamp").map(|us| us / 1000)
}

#[derive(Debug, Default)]
struct Seen {
    ringing: Vec<RingingFacts>,
    ended: Vec<CallFacts>,
}

impl Seen {
    fn take(&mut self, out: Vec<FsTrackerOutput>) {
        for o in out {
            match o {
                FsTrackerOutput::Ringing(r) => self.ringing.push(r),
                FsTrackerOutput::Ended(f) => self.ended.push(*f),
            }
        }
    }
}

/// Feeds `events` in order at their own times, then lets every wait run out.
fn feed(tracker: &mut FsCallTracker, events: &[Event]) -> Seen {
    let mut seen = Seen::default();
    let mut now = 0;
    for e in events {
        now = event_ms(e).unwrap_or(now).max(now);
        seen.take(tracker.handle(e, now));
    }
    seen.take(tracker.tick(now + 60_000));
    seen
}

fn run(scenario: &str) -> (Seen, FsCallTracker) {
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let seen = feed(&mut tracker, &fixture_events(scenario));
    (seen, tracker)
}

fn t(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

fn facts(call_id: &str, start: i64, end: i64) -> CallFacts {
    let mut f = CallFacts::new(call_id, SOURCE, t(start), t(end));
    f.caller_number = "sipp".into();
    f.caller_name = Some("sipp".into());
    // The carrier's leg is `sofia/carrier/sipp@…`: its user, which the rules find is no agent.
    f.caller_extension = Some("sipp".into());
    f.contexts = vec!["public".into()];
    f.shown_caller_ids = vec!["sipp".into()];
    f
}

fn only_call(seen: &Seen) -> &CallFacts {
    assert_eq!(seen.ended.len(), 1, "one call log: {:#?}", seen.ended);
    &seen.ended[0]
}

#[test]
fn answered_inbound_facts() {
    let (seen, tracker) = run("answered_inbound");
    let mut want = facts(
        "bcc77915-8cf9-4441-8633-7c068ba183cd",
        1_796_167_706_618_728,
        1_796_167_712_178_743,
    );
    want.dialled = "4930100".into();
    want.did_candidates = vec!["4930100".into()];
    want.answered = vec![AgentSegment {
        extension: "100".into(),
        answered_at: t(1_796_167_709_138_752),
        ended_at: Some(t(1_796_167_712_178_743)),
        talk_seconds: 3,
        arrival: crate::call::SegmentArrival::Direct,
    }];
    want.rung_agents = vec!["100".into()];
    want.attempts = vec![DialResult::Answered];
    want.own_result = Some(DialResult::Answered);
    want.applications = vec!["bridge".into()];
    want.recording = Some(RecordingRef {
        file:
            "/usr/local/freeswitch/recordings/2026-12-01/bcc77915-8cf9-4441-8633-7c068ba183cd.wav"
                .into(),
        channel_id: Some("bcc77915-8cf9-4441-8633-7c068ba183cd".into()),
    });
    // The carrier's leg and the bridge's B leg; the agent "phone"'s own leg (FreeSWITCH
    // calling itself, same SIP Call-ID as the B leg) is not a party.
    want.legs = 2;
    assert_eq!(only_call(&seen), &want);
    assert_eq!(seen.ringing.len(), 1);
    let r = &seen.ringing[0];
    assert_eq!(r.call_id, want.call_id);
    assert_eq!(r.agent_extension, "100");
    assert_eq!(r.caller_number, "sipp");
    assert_eq!(r.caller_extension.as_deref(), Some("sipp"));
    assert_eq!(r.dialled, "4930100");
    assert_eq!(r.context, "public");
    assert_eq!(r.did_candidates, vec!["4930100".to_owned()]);
    // Rung when the B leg was created (event time of that CHANNEL_CREATE).
    assert_eq!(r.event_at_ms, 1_796_167_706_618);
    assert_eq!(tracker.len(), 0);
    assert_eq!(tracker.stats().loops_folded, 1);
}

#[test]
fn missed_inbound_facts() {
    let (seen, tracker) = run("missed_inbound");
    let mut want = facts(
        "bbb59a11-4c31-4f09-a1c1-e5ebcfe13e5b",
        1_796_167_712_998_727,
        1_796_167_718_018_709,
    );
    want.dialled = "4930103".into();
    want.did_candidates = vec!["4930103".into()];
    want.rung_agents = vec!["103".into()];
    want.attempts = vec![DialResult::NoAnswer];
    want.own_result = Some(DialResult::NoAnswer);
    want.applications = vec!["bridge".into()];
    want.legs = 2;
    assert_eq!(only_call(&seen), &want);
    let rung: Vec<_> = seen
        .ringing
        .iter()
        .map(|r| (r.call_id.as_str(), r.agent_extension.as_str()))
        .collect();
    assert_eq!(rung, vec![(want.call_id.as_str(), "103")]);
    assert_eq!(tracker.len(), 0);
}

#[test]
fn busy_agent_facts() {
    // The phone's own leg hangs up (486) before the B leg's hangup shows their common SIP
    // Call-ID: the wait for a loop match is what keeps it from being a call log.
    let (seen, tracker) = run("busy_agent");
    let mut want = facts(
        "9953d44e-bc40-47c2-958b-fe1f85193372",
        1_796_167_718_858_738,
        1_796_167_718_878_732,
    );
    want.dialled = "4930102".into();
    want.did_candidates = vec!["4930102".into()];
    want.rung_agents = vec!["102".into()];
    want.attempts = vec![DialResult::Busy];
    want.own_result = Some(DialResult::Busy);
    want.applications = vec!["bridge".into()];
    want.legs = 2;
    assert_eq!(only_call(&seen), &want);
    assert_eq!(seen.ringing.len(), 1);
    assert_eq!(seen.ringing[0].agent_extension, "102");
    assert_eq!(tracker.len(), 0);
    assert_eq!(tracker.stats().loops_folded, 1);
}

#[test]
fn busy_loop_leg_is_a_call_without_the_wait() {
    // Shows what the wait is for: without it the phone's leg is reported as a call.
    let mut tracker = FsCallTracker::new(FsTrackerSettings {
        loop_linger_ms: 0,
        ..FsTrackerSettings::default()
    });
    let seen = feed(&mut tracker, &fixture_events("busy_agent"));
    assert_eq!(seen.ended.len(), 2);
    assert_eq!(seen.ended[0].dialled, "phone-102");
}

#[test]
fn queue_ring_all_facts_and_both_popups() {
    let (seen, tracker) = run("queue_ring_all");
    let member = "d718501f-df0f-4c3f-8c32-22faf9acf617";
    let mut want = facts(member, 1_796_167_719_698_745, 1_796_167_725_738_715);
    want.dialled = "4930200".into();
    want.did_candidates = vec!["4930200".into()];
    // mod_callcenter originates the agents' legs in the queue's domain context.
    want.contexts = vec!["public".into(), "default".into()];
    want.answered = vec![AgentSegment {
        extension: "101".into(),
        answered_at: t(1_796_167_720_738_702),
        ended_at: Some(t(1_796_167_725_738_715)),
        talk_seconds: 5,
        arrival: crate::call::SegmentArrival::Direct,
    }];
    want.rung_agents = vec!["100".into(), "101".into()];
    // Agent 100's leg (created first) lost the race; 101's answered.
    want.attempts = vec![DialResult::NoAnswer, DialResult::Answered];
    // The queue answered the caller itself (`answer` before `callcenter`).
    want.own_result = Some(DialResult::Answered);
    want.applications = vec!["callcenter".into()];
    want.recording = Some(RecordingRef {
        file: format!("/usr/local/freeswitch/recordings/2026-12-01/{member}.wav"),
        channel_id: Some(member.into()),
    });
    want.legs = 3;
    assert_eq!(only_call(&seen), &want);
    let rung: Vec<_> = seen
        .ringing
        .iter()
        .map(|r| (r.call_id.as_str(), r.agent_extension.as_str()))
        .collect();
    assert_eq!(rung, vec![(member, "100"), (member, "101")]);
    for r in &seen.ringing {
        assert_eq!(r.caller_number, "sipp");
        assert_eq!(r.dialled, "4930200");
        assert_eq!(r.context, "public");
        // Both popped on their agent-offering event.
        assert_eq!(r.event_at_ms, 1_796_167_719_718);
    }
    // No log of its own for the LOSE_RACE leg (nor the winner's, nor the two phone loops).
    let lost = "7fdff1e8";
    assert!(seen.ended.iter().all(|f| !f.call_id.starts_with(lost)));
    assert_eq!(tracker.stats().loops_folded, 2);
    // bridge-agent-end, member-queue-end and a phone's hangup came after the end: ignored,
    // no call left behind.
    assert_eq!(tracker.len(), 0);
    assert!(tracker.stats().ignored_events >= 3, "{:?}", tracker.stats());
}

#[test]
fn callcenter_agent_names_map_to_extensions() {
    let mut tracker = FsCallTracker::new(FsTrackerSettings {
        callcenter_agents: [("100".to_owned(), "2100".to_owned())].into(),
        ..FsTrackerSettings::default()
    });
    let seen = feed(&mut tracker, &fixture_events("queue_ring_all"));
    let rung: Vec<_> = seen
        .ringing
        .iter()
        .map(|r| r.agent_extension.as_str())
        .collect();
    // 100 by its callcenter name first (agent-offering), then 101; the `user/100` leg's
    // dialed_user 100 is a user, not a callcenter name, so it rings "100" too.
    assert_eq!(rung, vec!["2100", "101", "100"]);
    assert_eq!(
        only_call(&seen).rung_agents,
        vec!["2100".to_owned(), "101".into(), "100".into()]
    );
}

#[test]
fn agent_outbound_facts() {
    let (seen, tracker) = run("agent_outbound");
    let mut want = facts(
        "3e2f54d6-b0e9-44de-9f3c-d66f290d3ef7",
        1_796_167_727_078_741,
        1_796_167_730_138_742,
    );
    want.contexts = vec!["default".into()];
    want.dialled = "4930123457".into();
    want.did_candidates = vec!["4930123457".into()];
    want.outside_answered = Some((t(1_796_167_727_098_734), 3));
    want.attempts = vec![DialResult::Answered];
    want.own_result = Some(DialResult::Answered);
    want.applications = vec!["bridge".into()];
    want.legs = 2;
    assert_eq!(only_call(&seen), &want);
    // Nobody's phone rang but the lead's.
    assert!(seen.ringing.is_empty());
    assert_eq!(tracker.len(), 0);
}

#[test]
fn click_to_call_facts() {
    let (seen, tracker) = run("click_to_call");
    let a_leg = "817776ba-8a78-4708-9119-01d48cc2c216";
    let mut want = CallFacts::new(
        a_leg,
        SOURCE,
        t(1_796_167_730_638_753),
        t(1_796_167_735_718_772),
    );
    // Party A is the agent leg the originate placed: caller id = origination_caller_id_*.
    want.caller_number = "4930100".into();
    want.caller_name = Some("Lead 42".into());
    want.caller_extension = Some("101".into());
    // Where the A leg was sent once the agent answered (`4930123457 XML default`).
    want.dialled = "4930123457".into();
    want.did_candidates = vec!["4930123457".into()];
    want.contexts = vec!["default".into()];
    // The agent's phone saw 4930100; the lead's leg showed user 101's effective caller id.
    want.shown_caller_ids = vec!["4930100".into(), "101".into()];
    want.outside_answered = Some((t(1_796_167_731_678_741), 4));
    want.attempts = vec![DialResult::Answered];
    want.own_result = Some(DialResult::Answered);
    want.applications = vec!["bridge".into()];
    want.lead_id = Some("lead-42".into());
    want.legs = 2;
    assert_eq!(only_call(&seen), &want);
    // The originate ringing the agent is party A, not an agent rung by a call.
    assert!(seen.ringing.is_empty());
    assert_eq!(tracker.len(), 0);
}

#[test]
fn session_and_shutdown_captures_make_no_calls() {
    for s in ["session_start", "shutdown"] {
        let (seen, tracker) = run(s);
        assert!(seen.ended.is_empty() && seen.ringing.is_empty(), "{s}");
        assert!(tracker.is_empty());
    }
}

const SCENARIOS: [&str; 6] = [
    "answered_inbound",
    "missed_inbound",
    "busy_agent",
    "queue_ring_all",
    "agent_outbound",
    "click_to_call",
];

/// (call id, agent) of each ringing, and the facts of each call.
type Outcome = (Vec<(String, String)>, Vec<CallFacts>);

fn outcome(seen: Seen) -> Outcome {
    let mut rung: Vec<_> = seen
        .ringing
        .into_iter()
        .map(|r| (r.call_id, r.agent_extension))
        .collect();
    rung.sort();
    let mut ended = seen.ended;
    ended.sort_by(|a, b| a.call_id.cmp(&b.call_id));
    (rung, ended)
}

#[test]
fn all_captures_through_one_tracker_give_the_same_facts() {
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let mut all = Vec::new();
    let mut want_rung = Vec::new();
    let mut want_ended = Vec::new();
    for s in SCENARIOS {
        let events = fixture_events(s);
        let (r, e) = outcome(run(s).0);
        want_rung.extend(r);
        want_ended.extend(e);
        all.extend(events);
    }
    want_rung.sort();
    want_ended.sort_by(|a, b| a.call_id.cmp(&b.call_id));
    let (rung, ended) = outcome(feed(&mut tracker, &all));
    assert_eq!(rung, want_rung);
    assert_eq!(ended, want_ended);
    assert_eq!(ended.len(), SCENARIOS.len());
    // Replaying the same events (a duplicate delivery) reports nothing again.
    let again = feed(&mut tracker, &all);
    assert!(again.ended.is_empty() && again.ringing.is_empty());
    assert!(tracker.is_empty());
}

#[test]
fn bytes_split_across_reads_give_the_same_facts() {
    for s in SCENARIOS {
        let path = format!(
            "{}/tests/fixtures/freeswitch/{s}/esl.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(path).unwrap();
        let want = outcome(run(s).0);
        for chunk in [1, 7, 100, 1500, 4096] {
            let mut framer = Framer::new(FrameLimits::default());
            let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
            let mut seen = Seen::default();
            let mut now = 0;
            for piece in bytes.chunks(chunk) {
                framer.extend(piece);
                while let Some(frame) = framer.next_frame().unwrap() {
                    if let Frame::Event(e) = frame {
                        now = event_ms(&e).unwrap_or(now).max(now);
                        seen.take(tracker.handle(&e, now));
                    }
                }
            }
            seen.take(tracker.tick(now + 60_000));
            assert_eq!(outcome(seen), want, "{s} in chunks of {chunk}");
        }
    }
}

#[test]
fn neighbouring_events_swapped_give_the_same_facts() {
    // FreeSWITCH queues events per thread: two events close in time may come either way
    // round. Every pair of neighbours of every capture swapped, one pair at a time.
    for s in SCENARIOS {
        let events = fixture_events(s);
        let want = outcome(run(s).0);
        for i in 0..events.len() - 1 {
            let mut swapped = events.clone();
            swapped.swap(i, i + 1);
            let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
            let (rung, mut ended) = outcome(feed(&mut tracker, &swapped));
            let mut want = want.clone();
            // Two ringings swapped are rung in the other order, and two legs created in the
            // same microsecond keep their order of arrival: compare those as sets.
            for f in ended.iter_mut().chain(want.1.iter_mut()) {
                f.rung_agents.sort();
                f.attempts.sort_by_key(|a| format!("{a:?}"));
            }
            assert_eq!((rung, ended), want, "{s}: events {i} and {} swapped", i + 1);
            assert!(tracker.is_empty(), "{s}: swap {i}: calls left");
        }
    }
}

#[test]
fn hangups_in_reverse_order_give_the_same_facts() {
    for s in SCENARIOS {
        let events = fixture_events(s);
        let want = outcome(run(s).0);
        let is_hangup = |e: &Event| e.name() == "CHANNEL_HANGUP_COMPLETE";
        let first = events.iter().position(is_hangup).unwrap();
        let mut reordered: Vec<Event> = events[..first].to_vec();
        let mut tail: Vec<Event> = events[first..].to_vec();
        let mut hangups: Vec<Event> = tail.iter().filter(|e| is_hangup(e)).cloned().collect();
        hangups.reverse();
        tail.retain(|e| !is_hangup(e));
        reordered.extend(hangups);
        reordered.extend(tail);
        let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
        assert_eq!(outcome(feed(&mut tracker, &reordered)), want, "{s}");
    }
}

fn row(pairs: &[(&str, &str)]) -> serde_json::Value {
    serde_json::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect(),
    )
}

/// `show channels as json` while answered_inbound's agent talks (the rows FreeSWITCH's
/// `channels` table has for the three legs; columns as in switch_core_sqldb.c).
fn answered_inbound_channels() -> serde_json::Value {
    let root = "bcc77915-8cf9-4441-8633-7c068ba183cd";
    serde_json::json!({
        "row_count": 3,
        "rows": [
            row(&[("uuid", root), ("direction", "inbound"), ("created_epoch", "1796167706"),
                  ("name", "sofia/carrier/sipp@127.0.0.1:25101"), ("state", "CS_EXCHANGE_MEDIA"),
                  ("cid_name", "sipp"), ("cid_num", "sipp"), ("dest", "4930100"),
                  ("application", "bridge"), ("context", "public"), ("callstate", "ACTIVE"),
                  ("call_uuid", root), ("presence_id", ""), ("initial_cid_num", "sipp"),
                  ("initial_cid_name", "sipp"), ("initial_dest", "4930100"),
                  ("initial_context", "public")]),
            row(&[("uuid", "439e62da-17c8-4cbe-afab-bfd8e368fc3a"), ("direction", "outbound"),
                  ("created_epoch", "1796167706"), ("name", "sofia/internal/phone-100@127.0.0.1:25080"),
                  ("cid_num", "sipp"), ("dest", "phone-100"), ("context", "public"),
                  ("callstate", "ACTIVE"), ("call_uuid", root), ("presence_id", "100@127.0.0.1"),
                  ("initial_cid_num", "sipp"), ("initial_dest", "phone-100"),
                  ("initial_context", "public")]),
            row(&[("uuid", "e1a1196e-0000-0000-0000-000000000000"), ("direction", "inbound"),
                  ("created_epoch", "1796167706"), ("name", "sofia/carrier/sipp@127.0.0.1"),
                  ("cid_num", "sipp"), ("dest", "phone-100"), ("context", "public"),
                  ("callstate", "ACTIVE"), ("call_uuid", "e1a1196e-0000-0000-0000-000000000000")]),
        ]
    })
}

#[test]
fn relearn_keeps_calls_still_up_and_their_facts() {
    let events = fixture_events("answered_inbound");
    let want = outcome(run("answered_inbound").0);
    // Disconnected after the answer (event 6), reconnected before the bridge.
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let mut seen = feed(&mut tracker, &events[..6]);
    let report = tracker.relearn(&answered_inbound_channels(), 0, t(1_796_167_710_000_000));
    assert_eq!(report.rows, 3);
    assert_eq!(report.lost_calls, 0);
    let rest = feed(&mut tracker, &events[6..]);
    seen.ringing.extend(rest.ringing);
    seen.ended.extend(rest.ended);
    assert_eq!(outcome(seen), want);
}

#[test]
fn relearn_after_a_restart_learns_the_call_without_a_late_popup() {
    // pbxlink started (or lost its table) while the call was up: it learns the legs from
    // `show channels`, and the rest of the call from its events.
    let events = fixture_events("answered_inbound");
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let report = tracker.relearn(&answered_inbound_channels(), 0, t(1_796_167_710_000_000));
    assert_eq!((report.rows, report.new_legs), (3, 3));
    let seen = feed(&mut tracker, &events[6..]);
    assert!(seen.ringing.is_empty(), "it rang before: no popup now");
    let f = only_call(&seen);
    assert_eq!(f.call_id, "bcc77915-8cf9-4441-8633-7c068ba183cd");
    assert_eq!(f.dialled, "4930100");
    assert_eq!(f.caller_number, "sipp");
    assert_eq!(f.rung_agents, vec!["100".to_owned()]);
    assert_eq!(f.answered.len(), 1);
    assert_eq!(f.answered[0].extension, "100");
    assert_eq!(f.answered[0].answered_at, t(1_796_167_709_138_752));
    assert_eq!(f.answered[0].talk_seconds, 3);
    assert_eq!(f.start, t(1_796_167_706_618_728));
    assert_eq!(f.legs, 2);
    assert!(tracker.is_empty());
}

#[test]
fn relearn_forgets_calls_that_ended_while_disconnected() {
    let events = fixture_events("answered_inbound");
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    feed(&mut tracker, &events[..6]);
    assert_eq!(tracker.len(), 1);
    let report = tracker.relearn(
        &serde_json::json!({"row_count": 0}),
        0,
        t(1_796_167_720_000_000),
    );
    assert_eq!(report.lost_calls, 1);
    assert_eq!(tracker.stats().lost_while_disconnected, 1);
    assert!(tracker.is_empty());
    // Their late events (a replay) make no call either.
    let seen = feed(&mut tracker, &events[6..]);
    assert!(seen.ended.is_empty());
}

/// An event from header pairs (values as decoded).
fn event(pairs: &[(&str, &str)]) -> Event {
    Event {
        headers: Headers::from_pairs(pairs),
        body: None,
    }
}

#[test]
fn a_flood_of_calls_stays_bounded_and_is_summarised() {
    let mut tracker = FsCallTracker::new(FsTrackerSettings {
        max_calls: 100,
        ..FsTrackerSettings::default()
    });
    for i in 0..10_000 {
        let uuid = format!("flood-{i}");
        let b = format!("flood-{i}-b");
        tracker.handle(
            &event(&[
                ("Event-Name", "CHANNEL_CREATE"),
                ("Unique-ID", &uuid),
                ("Call-Direction", "inbound"),
                ("Caller-Context", "public"),
            ]),
            i,
        );
        tracker.handle(
            &event(&[
                ("Event-Name", "CHANNEL_CREATE"),
                ("Unique-ID", &b),
                ("Call-Direction", "outbound"),
                ("variable_originating_leg_uuid", &uuid),
                ("variable_dialed_user", "100"),
            ]),
            i,
        );
        assert!(tracker.len() <= 100);
    }
    let stats = tracker.stats();
    assert_eq!(stats.evicted, 9_900);
    // One line at the first eviction, then at most one per 10 s of the 10 s flood.
    assert!(stats.eviction_warnings <= 2, "{stats:?}");
    assert!(tracker.legs() <= 200);
    assert!(tracker.index_entries() <= 100 * 3 + 2 * 100 + 1025);
    // Silent calls expire.
    tracker.tick(10_000 + FsTrackerSettings::default().max_call_ms);
    assert!(tracker.is_empty());
    assert_eq!(tracker.stats().expired, 100);
}

#[test]
fn events_without_ids_are_counted_and_ignored() {
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    assert!(
        tracker
            .handle(&event(&[("Event-Name", "CHANNEL_CREATE")]), 0)
            .is_empty()
    );
    assert!(
        tracker
            .handle(&event(&[("Event-Name", "HEARTBEAT")]), 0)
            .is_empty()
    );
    let cc = event(&[
        ("Event-Name", "CUSTOM"),
        ("Event-Subclass", "callcenter::info"),
        ("CC-Action", "agent-state-change"),
        ("CC-Agent", "100"),
    ]);
    assert!(tracker.handle(&cc, 0).is_empty());
    assert!(tracker.is_empty());
    assert_eq!(tracker.stats().ignored_events, 1);
}

#[test]
fn a_call_with_more_legs_than_the_bound_keeps_the_first_ones() {
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let root = event(&[
        ("Event-Name", "CHANNEL_CREATE"),
        ("Unique-ID", "root"),
        ("Call-Direction", "inbound"),
        ("Caller-Context", "public"),
        ("Caller-Destination-Number", "4930200"),
    ]);
    tracker.handle(&root, 0);
    let mut rung = 0;
    for i in 0..200 {
        let out = tracker.handle(
            &event(&[
                ("Event-Name", "CHANNEL_CREATE"),
                ("Unique-ID", &format!("leg-{i}")),
                ("Call-Direction", "outbound"),
                ("variable_originating_leg_uuid", "root"),
                ("variable_dialed_user", &format!("{}", 1000 + i)),
            ]),
            1,
        );
        rung += out.len();
    }
    assert_eq!(tracker.legs(), MAX_LEGS_PER_CALL);
    assert_eq!(rung, MAX_LEGS_PER_CALL - 1);
    assert_eq!(
        tracker.stats().legs_dropped,
        200 - (MAX_LEGS_PER_CALL as u64 - 1)
    );
}

fn arb_event() -> impl Strategy<Value = Event> {
    let id = || prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g", "h", "", "a-b"]);
    let name = prop::sample::select(vec![
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_HANGUP_COMPLETE",
        "CHANNEL_PROGRESS",
        "CUSTOM",
        "BACKGROUND_JOB",
    ]);
    let action = prop::sample::select(vec![
        "agent-offering",
        "bridge-agent-start",
        "member-queue-end",
        "bridge-agent-fail",
    ]);
    let direction = prop::sample::select(vec!["inbound", "outbound", ""]);
    let sip = prop::sample::select(vec!["s1", "s2", "s3", ""]);
    let num = prop::sample::select(vec!["0", "1", "-5", "x", "99999999999999999999", ""]);
    let seq = prop::collection::vec((id(), id(), id(), id()), 1);
    (
        name,
        action,
        direction,
        sip,
        num,
        seq,
        "\\PC{0,12}",
        prop::bool::ANY,
    )
        .prop_map(|(name, action, dir, sip, num, ids, text, cc)| {
            let (uuid, parent, other, member) = ids[0];
            let mut pairs: Vec<(String, String)> = vec![
                ("Event-Name".into(), name.into()),
                ("Unique-ID".into(), uuid.into()),
                ("Call-Direction".into(), dir.into()),
                ("variable_sip_call_id".into(), sip.into()),
                ("Other-Leg-Unique-ID".into(), other.into()),
                ("Bridge-A-Unique-ID".into(), uuid.into()),
                ("Bridge-B-Unique-ID".into(), other.into()),
                ("variable_originating_leg_uuid".into(), parent.into()),
                ("Caller-Channel-Answered-Time".into(), num.into()),
                ("Event-Date-Timestamp".into(), num.into()),
                ("variable_billsec".into(), num.into()),
                ("Caller-Destination-Number".into(), text.clone()),
                ("Caller-Context".into(), text.clone()),
                ("variable_dialed_user".into(), text),
                ("Event-Subclass".into(), "callcenter::info".into()),
                ("CC-Action".into(), action.into()),
                ("CC-Agent".into(), other.into()),
                ("CC-Agent-UUID".into(), parent.into()),
                ("CC-Member-Session-UUID".into(), member.into()),
            ];
            if cc {
                pairs.push(("variable_cc_member_session_uuid".into(), member.into()));
            }
            event(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            )
        })
}

/// Every index entry points at a followed call.
fn assert_consistent(tracker: &FsCallTracker) {
    for key in tracker.index.values() {
        assert!(
            tracker.calls.contains_key(key),
            "index → missing call {key}"
        );
    }
    for (sip, leg) in &tracker.sip_index {
        let key = tracker.index.get(leg);
        assert!(
            key.and_then(|k| tracker.calls.get(k))
                .is_some_and(|c| c.leg(leg).is_some()),
            "sip {sip} → leg {leg} not followed"
        );
    }
    for (key, call) in &tracker.calls {
        assert!(call.legs.len() <= MAX_LEGS_PER_CALL);
        assert!(call.rung.len() <= MAX_RUNG_PER_CALL);
        assert!(
            call.ids.len() <= call.legs.len() + MAX_PLACEHOLDER_IDS + 1,
            "{key}"
        );
        for l in &call.legs {
            assert_eq!(
                tracker.index.get(&l.uuid),
                Some(key),
                "leg {} not indexed",
                l.uuid
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_events_never_panic_and_stay_bounded(
        events in prop::collection::vec(arb_event(), 0..120),
        steps in prop::collection::vec(0i64..3_000, 120),
    ) {
        let max_calls = 3;
        let mut tracker = FsCallTracker::new(FsTrackerSettings {
            max_calls,
            max_call_ms: 10_000,
            ..FsTrackerSettings::default()
        });
        let mut now = 0;
        for (e, step) in events.iter().zip(&steps) {
            now += step;
            for o in tracker.handle(e, now) {
                if let FsTrackerOutput::Ended(f) = o {
                    prop_assert!(!f.call_id.is_empty());
                }
            }
            prop_assert!(tracker.len() <= max_calls);
            prop_assert!(tracker.legs() <= max_calls * MAX_LEGS_PER_CALL);
            assert_consistent(&tracker);
        }
        tracker.tick(now + 20_000);
        prop_assert!(tracker.is_empty());
        prop_assert!(tracker.index_entries() <= 2 * max_calls + 1024 + 3 * max_calls);
    }
}

#[test]
fn click_to_call_variables_become_lead_facts() {
    // What control::click_to_call sets on the agent leg comes back on its events.
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let a = [
        ("Unique-ID", "c2c-a"),
        ("Call-Direction", "outbound"),
        ("Caller-Orig-Caller-ID-Number", "4930100"),
        ("Caller-Destination-Number", "4930123457"),
        ("Caller-Context", "default"),
        ("variable_dialed_user", "101"),
        ("variable_pbxlink_lead_id", "lead-42"),
        ("variable_pbxlink_lead_number", "+49-30123457"),
    ];
    let with = |name: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("Event-Name", name)];
        pairs.extend_from_slice(&a);
        pairs.extend_from_slice(extra);
        event(&pairs)
    };
    tracker.handle(&with("CHANNEL_CREATE", &[]), 0);
    let out = tracker.handle(
        &with("CHANNEL_HANGUP_COMPLETE", &[("Hangup-Cause", "NO_ANSWER")]),
        5,
    );
    let [FsTrackerOutput::Ended(f)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(f.lead_id.as_deref(), Some("lead-42"));
    assert_eq!(f.lead_number_hint.as_deref(), Some("+49-30123457"));
    assert_eq!(f.caller_extension.as_deref(), Some("101"));
    assert_eq!(f.own_result, Some(DialResult::NoAnswer));
    assert!(f.attempts.is_empty());
}

#[test]
fn keep_legs_up_is_the_relearn_without_show_channels() {
    // FreeSWITCH run with -nosql has no `show channels`: the wiring asks `uuid_exists` for
    // each of `legs_up()` and hands the live ones back.
    let events = fixture_events("answered_inbound");
    let want = outcome(run("answered_inbound").0);
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let mut seen = feed(&mut tracker, &events[..6]);
    let mut up: Vec<String> = tracker.legs_up();
    up.sort();
    // The carrier's leg, the B leg and the phone's own (loop) leg.
    assert_eq!(
        up,
        vec![
            "439e62da-17c8-4cbe-afab-bfd8e368fc3a".to_owned(),
            "bcc77915-8cf9-4441-8633-7c068ba183cd".into(),
            "e1a1196e-b91d-4086-af7d-92140750bd06".into(),
        ]
    );
    let alive: HashSet<String> = up.into_iter().collect();
    assert_eq!(tracker.keep_legs_up(&alive, t(1_796_167_710_000_000)), 0);
    let rest = feed(&mut tracker, &events[6..]);
    seen.ringing.extend(rest.ringing);
    seen.ended.extend(rest.ended);
    assert_eq!(outcome(seen), want);
    // Nothing up any more: the call is forgotten, counted.
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    feed(&mut tracker, &events[..6]);
    assert_eq!(
        tracker.keep_legs_up(&HashSet::new(), t(1_796_167_720_000_000)),
        1
    );
    assert!(tracker.is_empty());
    assert_eq!(tracker.stats().lost_while_disconnected, 1);
}

/// The rig's transfer calls from their real event-socket captures: the same agent segments
/// as json_cdr and cdr_csv give, and each agent's popup once per segment it rings for, the
/// transfer target's carrying the next segment's id (`<call id>-2`).
#[test]
fn transfer_captures_give_segments_and_segment_popups() {
    use crate::pbx::freeswitch::assemble::transfer_fixtures::{
        TRANSFER_SCENARIOS, transfer_segments,
    };
    for scenario in TRANSFER_SCENARIOS {
        let (call_id, want) = transfer_segments(scenario);
        let (seen, _) = run(scenario);
        let f = only_call(&seen);
        assert_eq!(f.call_id, call_id, "{scenario}");
        assert_eq!(f.answered, want, "{scenario}: ESL segments");
        let second = format!("{call_id}-2");
        let mut want_popups: Vec<(&str, &str)> = match scenario {
            "transfer_blind" | "transfer_attended" => vec![("100", call_id), ("101", &second)],
            "transfer_no_answer" => vec![("100", call_id), ("103", &second)],
            "transfer_follow_me" => vec![("103", call_id), ("101", call_id)],
            _ => vec![("100", call_id), ("101", call_id), ("100", &second)],
        };
        want_popups.sort();
        let mut popups: Vec<(&str, &str)> = seen
            .ringing
            .iter()
            .map(|r| (r.agent_extension.as_str(), r.call_id.as_str()))
            .collect();
        popups.sort();
        assert_eq!(popups, want_popups, "{scenario}: ringing");
    }
}

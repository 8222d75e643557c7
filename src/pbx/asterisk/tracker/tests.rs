//! Tracker tests on real AMI captures (tests/fixtures/ami_sweeney-*, MIT): FreePBX over
//! PJSIP. Caller 1986 plays the outside lead (its context is made an inbound context).

use super::*;
use crate::config::Config;

fn events(text: &str) -> Vec<HashMap<String, String>> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            block
                .lines()
                .filter_map(|l| {
                    l.split_once(": ")
                        .or_else(|| l.strip_suffix(':').map(|k| (k, "")))
                })
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .fold(HashMap::new(), |mut m, (k, v)| {
                    m.entry(k).or_insert(v);
                    m
                })
        })
        .collect()
}

fn tracker() -> CallTracker {
    let mut text = String::from(
        "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n\
         [[virtual_numbers]]\nnumber = \"+918044556677\"\ntag = \"sales\"\n",
    );
    for (ext, phone) in [
        ("11", "+919876500011"),
        ("12", "+919876500012"),
        ("21", "+919876500021"),
        ("41", ""),
        ("42", ""),
        ("51", ""),
    ] {
        text.push_str(&format!("[[agents]]\nextension = \"{ext}\"\n"));
        if !phone.is_empty() {
            text.push_str(&format!("phone = \"{phone}\"\n"));
        }
    }
    text.push_str("[asterisk]\ncdr_csv = \"/x\"\n");
    let config = Config::parse(&text).expect("config");
    CallTracker::new(
        Directory::from_config(&config).expect("directory"),
        TrackerSettings {
            inbound_contexts: vec!["from-internal".into()],
            max_calls: 100,
            max_call_ms: 3_600_000,
        },
    )
}

fn run(tracker: &mut CallTracker, fixture: &str) -> Vec<TrackerOutput> {
    let wall = chrono::Utc::now();
    events(fixture)
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            tracker.handle(
                e,
                i as i64 * 100,
                wall + chrono::Duration::milliseconds(i as i64 * 100),
            )
        })
        .collect()
}

fn popups(out: &[TrackerOutput]) -> Vec<&PopupRequest> {
    out.iter()
        .filter_map(|o| match o {
            TrackerOutput::Popup(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn ended(out: &[TrackerOutput]) -> Vec<&Option<CallRecord>> {
    out.iter()
        .filter_map(|o| match o {
            TrackerOutput::Ended(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn ring_all_pops_every_ringing_agent_once() {
    let mut t = tracker();
    let out = run(
        &mut t,
        include_str!(
            "../../../../tests/fixtures/ami_sweeney-asterisk-mqtt_unanswered-huntgroup.txt"
        ),
    );
    let mut agents: Vec<&str> = popups(&out)
        .iter()
        .map(|p| p.agent_extension.as_str())
        .collect();
    agents.sort();
    assert_eq!(agents, ["11", "12", "21", "41", "42", "51"]);
    let p = popups(&out)[0];
    assert_eq!(p.call_id, "1770888635.49");
    assert_eq!(p.lead_number.raw, "1986");
    let call = ended(&out);
    assert_eq!(call.len(), 1);
    let call = call[0].as_ref().expect("an inbound call");
    assert_eq!(call.outcome, Outcome::NoAnswer);
    assert_eq!(call.call_id, "1770888635.49");
    assert!(
        t.is_empty(),
        "the call is forgotten once every channel hung up"
    );
}

#[test]
fn answered_call_names_the_agent_and_talk_time() {
    let mut t = tracker();
    let out = run(
        &mut t,
        include_str!("../../../../tests/fixtures/ami_sweeney-asterisk-mqtt_answered-outbound.txt"),
    );
    let p = popups(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].agent_extension, "21");
    assert_eq!(
        p[0].agent
            .as_ref()
            .and_then(|a| a.phone.as_ref())
            .map(|e| e.to_e164())
            .as_deref(),
        Some("+919876500021")
    );
    let call = ended(&out)[0].as_ref().expect("call");
    assert_eq!(call.direction, Direction::Inbound);
    assert_eq!(call.outcome, Outcome::Answered);
    assert_eq!(call.agent_extension.as_deref(), Some("21"));
    assert!(call.answer.is_some());
}

#[test]
fn cancelled_call_is_missed_and_internal_call_is_not_posted() {
    let mut t = tracker();
    let out = run(
        &mut t,
        include_str!("../../../../tests/fixtures/ami_sweeney-asterisk-mqtt_unanswered-cancel.txt"),
    );
    assert_eq!(popups(&out).len(), 1);
    assert_eq!(
        ended(&out)[0].as_ref().map(|c| c.outcome),
        Some(Outcome::NoAnswer)
    );

    let out = run(
        &mut t,
        include_str!("../../../../tests/fixtures/ami_sweeney-asterisk-mqtt_answered-internal.txt"),
    );
    assert!(
        popups(&out).is_empty(),
        "agent 21 calling out is not an inbound call"
    );
    assert_eq!(ended(&out), vec![&None]);
}

#[test]
fn the_table_is_bounded_and_silent_calls_expire() {
    let mut t = tracker();
    let wall = chrono::Utc::now();
    for i in 0..250 {
        let mut e = HashMap::new();
        e.insert("Event".to_string(), "Newchannel".to_string());
        e.insert("Linkedid".to_string(), format!("{i}.0"));
        e.insert("Uniqueid".to_string(), format!("{i}.0"));
        e.insert("Channel".to_string(), format!("PJSIP/trunk-{i:08x}"));
        t.handle(&e, i, wall);
    }
    assert_eq!(t.len(), 100);
    assert_eq!(t.expire(3_600_000 + 199), 50);
    assert_eq!(t.len(), 50);
}

#[test]
fn malformed_events_are_ignored() {
    let mut t = tracker();
    let wall = chrono::Utc::now();
    let mut e = HashMap::new();
    e.insert("Event".to_string(), "Hangup".to_string());
    assert!(t.handle(&e, 0, wall).is_empty());
    e.insert("Linkedid".to_string(), "nope".to_string());
    assert!(t.handle(&e, 0, wall).is_empty());
    assert!(t.handle(&HashMap::new(), 0, wall).is_empty());
}

/// As a real Asterisk 22 sends them for `Originate Local/DID@from-trunk` with a caller id:
/// the root channel starts as `<unknown>` and gets the lead's number in a later event.
#[test]
fn caller_id_set_after_newchannel_reaches_the_popup() {
    let mut t = tracker();
    let stream = "Event: Newchannel\nChannel: Local/918044556677@from-trunk-00000001;1\n\
        CallerIDNum: <unknown>\nCallerIDName: <unknown>\nContext: from-trunk\n\
        Exten: 918044556677\nUniqueid: 1795554025.0\nLinkedid: 1795554025.0\n\n\
        Event: NewCallerid\nChannel: Local/918044556677@from-trunk-00000001;1\n\
        CallerIDNum: +919611795983\nCallerIDName: <unknown>\nContext: from-trunk\n\
        Exten: 918044556677\nUniqueid: 1795554025.0\nLinkedid: 1795554025.0\n\n\
        Event: Newchannel\nChannel: PJSIP/11-00000002\nCallerIDNum: 11\n\
        Context: from-internal\nExten: 11\nUniqueid: 1795554025.2\nLinkedid: 1795554025.0\n\n\
        Event: DialBegin\nChannel: Local/918044556677@from-trunk-00000001;2\n\
        CallerIDNum: +919611795983\nDestChannel: PJSIP/11-00000002\n\
        Uniqueid: 1795554025.1\nLinkedid: 1795554025.0\n\n";
    let out = run(&mut t, stream);
    let p = popups(&out);
    assert_eq!(p.len(), 1, "{out:?}");
    assert_eq!(p[0].lead_number.raw, "+919611795983");
    assert_eq!(p[0].agent_extension, "11");
    assert_eq!(p[0].call_id, "1795554025.0");
}

/// When no event of the root channel carried the caller id yet, the dialling channel's does.
#[test]
fn unknown_root_caller_falls_back_to_the_dialling_channel() {
    let mut t = tracker();
    let stream = "Event: Newchannel\nChannel: Local/918044556677@from-trunk-00000001;1\n\
        CallerIDNum: <unknown>\nContext: from-trunk\nExten: 918044556677\n\
        Uniqueid: 9.0\nLinkedid: 9.0\n\n\
        Event: DialBegin\nChannel: Local/918044556677@from-trunk-00000001;2\n\
        CallerIDNum: 09611795983\nDestChannel: PJSIP/12-00000003\nUniqueid: 9.1\nLinkedid: 9.0\n\n";
    let out = run(&mut t, stream);
    let p = popups(&out);
    assert_eq!(p.len(), 1, "{out:?}");
    assert_eq!(
        p[0].lead_number.e164.as_ref().map(|n| n.to_e164()),
        Some("+919611795983".to_owned())
    );
}

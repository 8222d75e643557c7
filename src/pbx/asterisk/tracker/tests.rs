//! Tracker tests on real AMI captures (tests/fixtures/ami_sweeney-*, MIT): FreePBX over
//! PJSIP. Caller 1986 plays the outside lead (its context is made an inbound context).

use super::*;
use crate::call::{Direction, Outcome};
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
            rules: CallRules {
                inbound_contexts: vec!["from-internal".into()],
                ..CallRules::default()
            },
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
            TrackerOutput::Popup(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn ended(out: &[TrackerOutput]) -> Vec<Option<&CallRecord>> {
    out.iter()
        .filter_map(|o| match o {
            TrackerOutput::Ended(c) => Some(c.as_deref()),
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
    let call = call[0].expect("an inbound call");
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
    let call = ended(&out)[0].expect("call");
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
    assert_eq!(ended(&out)[0].map(|c| c.outcome), Some(Outcome::NoAnswer));

    let out = run(
        &mut t,
        include_str!("../../../../tests/fixtures/ami_sweeney-asterisk-mqtt_answered-internal.txt"),
    );
    assert!(
        popups(&out).is_empty(),
        "agent 21 calling out is not an inbound call"
    );
    assert_eq!(ended(&out), vec![None]);
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

fn newchannel(i: usize) -> HashMap<String, String> {
    HashMap::from([
        ("Event".to_owned(), "Newchannel".to_owned()),
        ("Linkedid".to_owned(), format!("{i}.0")),
        ("Uniqueid".to_owned(), format!("{i}.0")),
        ("Channel".to_owned(), format!("PJSIP/trunk-{i:08x}")),
    ])
}

#[test]
fn a_full_table_forgets_the_least_recently_active_call() {
    let mut t = tracker();
    let wall = chrono::Utc::now();
    for i in 0..100 {
        t.handle(&newchannel(i), i as i64, wall);
    }
    // Call 0 is the oldest but still active; call 1 is now the least recently active.
    let mut event = newchannel(0);
    event.insert("Event".into(), "NewState".into());
    t.handle(&event, 200, wall);
    t.handle(&newchannel(100), 201, wall);
    assert_eq!(t.len(), 100);
    assert!(t.calls.contains_key("0.0"), "the active call is kept");
    assert!(
        !t.calls.contains_key("1.0"),
        "the least recently active one goes"
    );
    assert_eq!(t.evictions(), 1);
    // A hangup is activity too; then the next oldest (2.0) goes.
    let mut hangup = newchannel(3);
    hangup.insert("Event".into(), "Hangup".into());
    hangup.insert("Uniqueid".into(), "other".into());
    t.handle(&hangup, 202, wall);
    t.handle(&newchannel(101), 203, wall);
    assert!(t.calls.contains_key("3.0") && !t.calls.contains_key("2.0"));
}

/// 200,000 distinct calls through a table of 10,000: each eviction is O(1) (this took a
/// scan of the whole table per new call before) and the warnings are summarised, one line
/// per 10 s of events (1 ms apart: the flood spans 200 s), not one per forgotten call.
#[test]
fn a_flood_of_distinct_calls_is_cheap_and_logs_a_summary() {
    let mut t = tracker();
    t.settings.max_calls = 10_000;
    let wall = chrono::Utc::now();
    let started = std::time::Instant::now();
    for i in 0..200_000 {
        t.handle(&newchannel(i), i as i64, wall);
    }
    eprintln!(
        "flood: 200000 Newchannel in {:?}, {} evicted, {} warning lines",
        started.elapsed(),
        t.evictions(),
        t.eviction_warnings()
    );
    assert_eq!(t.len(), 10_000);
    assert_eq!(t.evictions(), 190_000);
    assert!(
        (1..=21).contains(&t.eviction_warnings()),
        "{} warning lines",
        t.eviction_warnings()
    );
    // The queue of activity stays bounded too.
    assert!(
        t.activity.len() <= 2 * t.len() + 1024,
        "{}",
        t.activity.len()
    );
    // The evictions since the last line are reported by the next expiry pass.
    let lines = t.eviction_warnings();
    assert_eq!(t.expire(200_000), 0);
    assert!(t.eviction_warnings() <= lines + 1);
    // Expiry pops the silent calls from the front of the queue.
    assert_eq!(t.expire(3_600_000 + 194_999), 5_000);
    assert_eq!(t.len(), 5_000);
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

/// The tracker applies the same rules as the CDR path: before issue 9 it ignored the dial
/// prefix, `outbound_display_number`, the voicemail applications and the recording.
#[test]
fn the_tracker_applies_the_shared_rules_prefix_display_voicemail_recording() {
    let mut t = tracker();
    t.settings.rules = CallRules {
        inbound_contexts: vec!["from-trunk".into()],
        outbound_contexts: vec!["from-internal".into()],
        voicemail_apps: vec!["VoiceMail".into()],
        outbound_display_number: Some("+918000000000".into()),
        outbound_dial_prefix: "9".into(),
        recording_url_template: Some("https://rec.example/{file}?u={uniqueid}".into()),
        recordings: None,
        transfer_logs: Default::default(),
    };
    let outbound = "Event: Newchannel\nChannel: PJSIP/11-00000001\nCallerIDNum: 11\n\
        Context: from-internal\nExten: 909611795983\nUniqueid: 7.0\nLinkedid: 7.0\n\n\
        Event: VarSet\nChannel: PJSIP/11-00000001\nVariable: MIXMONITOR_FILENAME\n\
        Value: out-7.0.wav\nUniqueid: 7.0\nLinkedid: 7.0\n\n\
        Event: Newchannel\nChannel: PJSIP/trunk-00000002\nCallerIDNum: 11\n\
        Context: from-internal\nExten: s\nUniqueid: 7.1\nLinkedid: 7.0\n\n\
        Event: DialBegin\nChannel: PJSIP/11-00000001\nDestChannel: PJSIP/trunk-00000002\n\
        DialString: trunk/909611795983\nUniqueid: 7.0\nDestUniqueid: 7.1\nLinkedid: 7.0\n\n\
        Event: DialEnd\nChannel: PJSIP/11-00000001\nDestChannel: PJSIP/trunk-00000002\n\
        DialStatus: ANSWER\nUniqueid: 7.0\nDestUniqueid: 7.1\nLinkedid: 7.0\n\n\
        Event: Hangup\nChannel: PJSIP/trunk-00000002\nUniqueid: 7.1\nLinkedid: 7.0\n\n\
        Event: Hangup\nChannel: PJSIP/11-00000001\nUniqueid: 7.0\nLinkedid: 7.0\n\n";
    let out = run(&mut t, outbound);
    let call = ended(&out)[0].cloned().expect("an outbound call");
    assert_eq!(call.direction, Direction::Outbound);
    assert_eq!(call.outcome, Outcome::Answered);
    assert_eq!(
        call.lead_number.raw, "09611795983",
        "the dial prefix is stripped"
    );
    assert_eq!(
        call.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("+918000000000")
    );
    assert_eq!(
        call.recording_url.as_deref(),
        Some("https://rec.example/out-7.0.wav?u=7.0")
    );
    assert_eq!(call.agent_extension.as_deref(), Some("11"));

    let voicemail = "Event: Newchannel\nChannel: PJSIP/airtel-00000003\n\
        CallerIDNum: +919611795983\nContext: from-trunk\nExten: 918044556677\n\
        Uniqueid: 8.0\nLinkedid: 8.0\n\n\
        Event: Newchannel\nChannel: PJSIP/12-00000004\nCallerIDNum: 12\nContext: agents\n\
        Exten: 12\nUniqueid: 8.1\nLinkedid: 8.0\n\n\
        Event: DialBegin\nChannel: PJSIP/airtel-00000003\nDestChannel: PJSIP/12-00000004\n\
        DialString: 12\nUniqueid: 8.0\nDestUniqueid: 8.1\nLinkedid: 8.0\n\n\
        Event: DialEnd\nChannel: PJSIP/airtel-00000003\nDestChannel: PJSIP/12-00000004\n\
        DialStatus: NOANSWER\nUniqueid: 8.0\nDestUniqueid: 8.1\nLinkedid: 8.0\n\n\
        Event: Hangup\nChannel: PJSIP/12-00000004\nUniqueid: 8.1\nLinkedid: 8.0\n\n\
        Event: Newexten\nChannel: PJSIP/airtel-00000003\nApplication: VoiceMail\n\
        AppData: 12@default\nUniqueid: 8.0\nLinkedid: 8.0\n\n\
        Event: Hangup\nChannel: PJSIP/airtel-00000003\nUniqueid: 8.0\nLinkedid: 8.0\n\n";
    let out = run(&mut t, voicemail);
    assert_eq!(popups(&out).len(), 1);
    let call = ended(&out)[0].cloned().expect("an inbound call");
    assert_eq!(call.direction, Direction::Inbound);
    assert_eq!(call.outcome, Outcome::Voicemail);
    assert_eq!(call.agent_extension.as_deref(), Some("12"));
    assert_eq!(call.tag.as_deref(), Some("sales"));
}

/// Click to call names the lead's number as LeadSquared sent it (`LEADNUMBER`): it wins
/// over the digits the dialplan dialled.
#[test]
fn the_lead_number_click_to_call_set_wins() {
    let mut t = tracker();
    let stream = "Event: Newchannel\nChannel: PJSIP/11-00000001\nCallerIDNum: 11\n\
        Context: from-internal\nExten: 919611795983\nUniqueid: 9.0\nLinkedid: 9.0\n\n\
        Event: VarSet\nChannel: PJSIP/11-00000001\nVariable: LEADNUMBER\n\
        Value: +91 96117 95983\nUniqueid: 9.0\nLinkedid: 9.0\n\n\
        Event: VarSet\nChannel: PJSIP/11-00000001\nVariable: LEADID\n\
        Value: lead-42\nUniqueid: 9.0\nLinkedid: 9.0\n\n\
        Event: Hangup\nChannel: PJSIP/11-00000001\nUniqueid: 9.0\nLinkedid: 9.0\n\n";
    let out = run(&mut t, stream);
    let call = ended(&out)[0].cloned().expect("an outbound call");
    assert_eq!(call.direction, Direction::Outbound);
    assert_eq!(call.lead_number.raw, "+91 96117 95983");
    assert_eq!(call.lead_id.as_deref(), Some("lead-42"));
    assert_eq!(call.outcome, Outcome::NoAnswer);
}

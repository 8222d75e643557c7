//! Tests of the shared call rules on hand-built facts: each rule once, as every PBX source
//! (the CDR assembler, the AMI tracker, FreeSWITCH) gets it.

use chrono::TimeZone;

use super::*;
use crate::call::{AgentSegment, RecordingRef};
use crate::config::Config;

fn directory() -> Directory {
    let config = Config::parse(
        r#"
[leadsquared]
call_log_url = "https://x.invalid/k"
default_country_code = "91"
[[virtual_numbers]]
number = "918044556677"
tag = "sales"
[[virtual_numbers]]
number = "918044556601"
tag = "support"
[[agents]]
extension = "100"
phone = "+919876500100"
[[agents]]
extension = "101"
[asterisk]
cdr_csv = "/x"
"#,
    )
    .expect("config");
    Directory::from_config(&config).expect("directory")
}

fn rules() -> CallRules {
    CallRules {
        inbound_contexts: vec!["from-trunk".into()],
        outbound_contexts: vec!["from-internal".into()],
        voicemail_apps: vec!["VoiceMail".into()],
        outbound_display_number: None,
        outbound_dial_prefix: String::new(),
        recording_url_template: None,
        recordings: None,
        transfer_logs: crate::call::TransferLogs::PerAgent,
    }
}

fn at(secs: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 3, 7, 10, 0, secs)
        .single()
        .expect("time")
}

fn inbound() -> CallFacts {
    let mut f = CallFacts::new("1.1", "test", at(0), at(50));
    f.caller_number = "+919611795983".into();
    f.caller_name = Some("Asha".into());
    f.dialled = "918044556601".into();
    f.contexts = vec!["from-trunk".into()];
    f.did_candidates = vec!["918044556601".into()];
    f.rung_agents = vec!["100".into()];
    f.attempts = vec![DialResult::NoAnswer];
    f.legs = 2;
    f
}

fn outbound() -> CallFacts {
    let mut f = CallFacts::new("2.1", "test", at(0), at(40));
    f.caller_number = "100".into();
    f.caller_extension = Some("100".into());
    f.dialled = "09611795983".into();
    f.contexts = vec!["from-internal".into()];
    f.attempts = vec![DialResult::Answered];
    f.outside_answered = Some((at(10), 30));
    f
}

fn e164(n: &Option<Number>) -> Option<String> {
    n.as_ref()
        .and_then(|n| n.e164.as_ref())
        .map(|e| e.to_e164())
}

#[test]
fn inbound_answered_names_the_first_agent_and_keeps_every_segment() {
    let mut f = inbound();
    f.answered = vec![
        AgentSegment {
            extension: "101".into(),
            answered_at: at(5),
            ended_at: Some(at(20)),
            talk_seconds: 15,
            arrival: crate::call::SegmentArrival::Direct,
        },
        AgentSegment {
            extension: "100".into(),
            answered_at: at(20),
            ended_at: Some(at(50)),
            talk_seconds: 30,
            arrival: crate::call::SegmentArrival::Direct,
        },
    ];
    let call = rules().record(&directory(), &f).expect("posted");
    assert_eq!(call.direction, Direction::Inbound);
    assert_eq!(call.outcome, Outcome::Answered);
    assert_eq!(call.agent_extension.as_deref(), Some("101"));
    assert_eq!(call.answer, Some(at(5)));
    assert_eq!(call.talk_seconds, 15);
    assert_eq!(call.segments.len(), 2);
    assert_eq!(call.segments[1].extension, "100");
    assert_eq!(call.caller_name.as_deref(), Some("Asha"));
    assert_eq!(
        call.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("918044556601")
    );
    assert_eq!(call.tag.as_deref(), Some("support"));
    assert_eq!(call.legs, 2);
}

#[test]
fn inbound_missed_names_the_rung_agent_and_voicemail_wins_over_missed() {
    let d = directory();
    let mut f = inbound();
    f.rung_agents = vec!["trunk".into(), "100".into()];
    let call = rules().record(&d, &f).expect("posted");
    assert_eq!(call.outcome, Outcome::NoAnswer);
    assert_eq!(call.agent_extension.as_deref(), Some("100"));
    assert_eq!(call.answer, None);
    assert_eq!(call.talk_seconds, 0);

    f.applications = vec!["Dial".into(), "voicemail".into()];
    assert_eq!(
        rules().record(&d, &f).map(|c| c.outcome),
        Ok(Outcome::Voicemail)
    );
    // Voicemail is an inbound rule only when nobody answered.
    f.answered = vec![AgentSegment {
        extension: "100".into(),
        answered_at: at(3),
        ended_at: None,
        talk_seconds: 9,
        arrival: crate::call::SegmentArrival::Direct,
    }];
    assert_eq!(
        rules().record(&d, &f).map(|c| c.outcome),
        Ok(Outcome::Answered)
    );
}

#[test]
fn dial_attempts_decide_the_outcome_of_an_unanswered_call() {
    let d = directory();
    let cases: [(&[DialResult], Option<DialResult>, Outcome); 7] = [
        (&[DialResult::Busy, DialResult::Busy], None, Outcome::Busy),
        (
            &[DialResult::Busy, DialResult::NoAnswer],
            None,
            Outcome::NoAnswer,
        ),
        (&[DialResult::Congestion], None, Outcome::Congestion),
        (
            &[DialResult::Failed, DialResult::Congestion],
            None,
            Outcome::Failed,
        ),
        (&[], Some(DialResult::Failed), Outcome::Failed),
        (&[], Some(DialResult::Congestion), Outcome::Congestion),
        (&[], Some(DialResult::Answered), Outcome::NoAnswer),
    ];
    for (attempts, own, want) in cases {
        let mut f = inbound();
        f.attempts = attempts.to_vec();
        f.own_result = own;
        assert_eq!(
            rules().record(&d, &f).map(|c| c.outcome),
            Ok(want),
            "{attempts:?} {own:?}"
        );
    }
}

#[test]
fn inbound_display_number_falls_back_to_the_first_virtual_number_then_the_dialled_one() {
    let d = directory();
    let mut f = inbound();
    f.did_candidates = vec![String::new(), "5555".into(), "+918044556677".into()];
    let call = rules().record(&d, &f).expect("posted");
    assert_eq!(
        call.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("+918044556677"),
        "the first candidate that is a virtual number, as written"
    );
    assert_eq!(call.tag.as_deref(), Some("sales"));

    f.did_candidates = vec!["5555".into()];
    let call = rules().record(&d, &f).expect("posted");
    assert_eq!(e164(&call.display_number).as_deref(), Some("+918044556677"));

    let bare = Directory::from_config(
        &Config::parse(
            "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n\
             [asterisk]\ncdr_csv = \"/x\"\n",
        )
        .expect("config"),
    )
    .expect("directory");
    let call = rules().record(&bare, &f).expect("posted");
    assert_eq!(
        call.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("918044556601")
    );
    assert_eq!(call.tag, None);
}

#[test]
fn outbound_strips_the_dial_prefix_and_uses_the_outbound_display_number() {
    let d = directory();
    let mut r = rules();
    r.outbound_dial_prefix = "9".into();
    r.outbound_display_number = Some("+918000000000".into());
    let mut f = outbound();
    f.dialled = "909611795983".into();
    let call = r.record(&d, &f).expect("posted");
    assert_eq!(call.direction, Direction::Outbound);
    assert_eq!(call.outcome, Outcome::Answered);
    assert_eq!(call.lead_number.raw, "09611795983");
    assert_eq!(
        e164(&Some(call.lead_number.clone())).as_deref(),
        Some("+919611795983")
    );
    assert_eq!(
        call.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("+918000000000")
    );
    assert_eq!(call.tag, None);
    assert_eq!(call.answer, Some(at(10)));
    assert_eq!(call.talk_seconds, 30);
    assert_eq!(call.agent_extension.as_deref(), Some("100"));
    assert_eq!(
        call.agent
            .as_ref()
            .and_then(|a| a.phone.as_ref())
            .map(|p| p.to_e164())
            .as_deref(),
        Some("+919876500100")
    );
    assert_eq!(call.caller_name, None);

    // A virtual number shown as the caller id wins, with its tag.
    f.shown_caller_ids = vec!["100".into(), "918044556677".into()];
    let call = r.record(&d, &f).expect("posted");
    assert_eq!(
        call.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("+918044556677")
    );
    assert_eq!(call.tag.as_deref(), Some("sales"));

    // Without either, the first virtual number.
    let call = rules().record(&d, &outbound()).expect("posted");
    assert_eq!(
        call.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("+918044556677")
    );
}

#[test]
fn outbound_lead_comes_from_the_hint_then_the_dial_then_the_outbound_context() {
    let d = directory();
    // A click to call starts on the agent's phone ("s"); the lead is reached on a dial.
    let mut f = outbound();
    f.dialled = "s".into();
    f.contexts = vec!["agents".into()];
    f.dialled_outside = Some("+919611795983".into());
    assert_eq!(
        rules().record(&d, &f).map(|c| c.lead_number.raw),
        Ok("+919611795983".to_owned())
    );
    // The number LeadSquared sent wins over a re-parse of the digits.
    f.lead_number_hint = Some("+919611700000".into());
    assert_eq!(
        rules().record(&d, &f).map(|c| c.lead_number.raw),
        Ok("+919611700000".to_owned())
    );
    // Not a phone number, but dialled from an outbound context: still the lead.
    let mut f = outbound();
    f.dialled = "1800-SHORT".into();
    assert_eq!(
        rules().record(&d, &f).map(|c| c.lead_number.raw),
        Ok("1800-SHORT".to_owned())
    );
    // From another context that is an internal call.
    f.contexts = vec!["agents".into()];
    assert!(matches!(
        rules().record(&d, &f),
        Err(SkipReason::Internal { .. })
    ));
}

#[test]
fn an_agent_calling_an_agent_is_internal_a_virtual_number_is_dialled_out() {
    let d = directory();
    let mut f = outbound();
    f.dialled = "101".into();
    let why = rules().record(&d, &f).expect_err("internal");
    assert!(why.to_string().contains("internal call from extension 100"));
    // An agent found by caller id number alone (a Local channel).
    f.caller_extension = Some("918044556677@from-internal".into());
    assert!(matches!(
        rules().record(&d, &f),
        Err(SkipReason::Internal { .. })
    ));
    f.dialled = "918044556601".into();
    f.contexts = vec!["from-internal".into()];
    // A virtual number is an outside number to the normaliser: it is dialled out.
    assert_eq!(
        rules().record(&d, &f).map(|c| c.direction),
        Ok(Direction::Outbound)
    );
}

#[test]
fn a_call_that_is_neither_inbound_nor_outbound_is_skipped() {
    let mut f = inbound();
    f.caller_number = "5555".into();
    f.contexts = vec!["lab".into()];
    f.did_candidates = vec!["42".into()];
    f.dialled = "42".into();
    let why = rules().record(&directory(), &f).expect_err("skipped");
    assert_eq!(
        why,
        SkipReason::Neither {
            caller: "5555".into(),
            dialled: "42".into(),
            context: "lab".into()
        }
    );
}

#[test]
fn recording_url_template_and_urls_as_written() {
    let d = directory();
    let mut r = rules();
    let mut f = inbound();
    f.recording = Some(RecordingRef {
        file: "in-1.1.wav".into(),
        channel_id: Some("1.2".into()),
    });
    assert_eq!(
        r.record(&d, &f).map(|c| c.recording_url),
        Ok(None),
        "no template"
    );
    r.recording_url_template =
        Some("https://rec.example/{year}/{month}/{day}/{file}?u={uniqueid}&l={linkedid}".into());
    assert_eq!(
        r.record(&d, &f).map(|c| c.recording_url),
        Ok(Some(
            "https://rec.example/2026/03/07/in-1.1.wav?u=1.2&l=1.1".into()
        ))
    );
    f.recording = Some(RecordingRef {
        file: "x.wav".into(),
        channel_id: None,
    });
    assert_eq!(
        r.record(&d, &f).map(|c| c.recording_url),
        Ok(Some(
            "https://rec.example/2026/03/07/x.wav?u=1.1&l=1.1".into()
        ))
    );
    f.recording = Some(RecordingRef {
        file: "https://store.example/a.mp3".into(),
        channel_id: None,
    });
    assert_eq!(
        rules().record(&d, &f).map(|c| c.recording_url),
        Ok(Some("https://store.example/a.mp3".into()))
    );
}

fn ringing() -> RingingFacts {
    RingingFacts {
        call_id: "3.1".into(),
        caller_number: "09611795983".into(),
        caller_extension: None,
        dialled: "918044556677".into(),
        context: "from-trunk".into(),
        did_candidates: vec!["918044556677".into()],
        agent_extension: "100".into(),
        event_at_ms: 77,
    }
}

#[test]
fn an_inbound_call_ringing_an_agent_pops_with_its_display_number() {
    let d = directory();
    let popup = rules().popup(&d, &ringing()).expect("a popup");
    assert_eq!(popup.call_id, "3.1");
    assert_eq!(
        e164(&Some(popup.lead_number.clone())).as_deref(),
        Some("+919611795983")
    );
    assert_eq!(popup.agent_extension, "100");
    assert!(popup.agent.is_some());
    assert_eq!(
        popup.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("918044556677")
    );
    assert_eq!(popup.tag.as_deref(), Some("sales"));
    assert_eq!(popup.event_at_ms, 77);
}

#[test]
fn no_popup_for_an_agent_caller_an_unknown_agent_or_an_internal_caller() {
    let d = directory();
    let mut r = ringing();
    r.caller_extension = Some("101".into());
    assert_eq!(
        rules().popup(&d, &r),
        None,
        "an agent calling is not a lead"
    );
    let mut r = ringing();
    r.agent_extension = "999".into();
    assert_eq!(rules().popup(&d, &r), None, "not a configured agent");
    let mut r = ringing();
    r.caller_number = "5555".into();
    r.context = "lab".into();
    r.did_candidates = vec!["42".into()];
    assert_eq!(
        rules().popup(&d, &r),
        None,
        "nothing says it came from outside"
    );
    r.context = "from-trunk".into();
    assert!(
        rules().popup(&d, &r).is_some(),
        "an inbound context says so"
    );
    r.caller_number = " ".into();
    assert_eq!(rules().popup(&d, &r), None, "no caller to show");
}

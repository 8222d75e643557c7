//! Segments of transferred, forwarded and queue calls, from the rows a real Asterisk 22
//! wrote for them (tests/fixtures/asterisk_transfers/*: the rig of tests/asterisk, the
//! scenarios of tests/asterisk_transfers.rs), in both CDR layouts.

use chrono::{DateTime, TimeZone, Utc};

use super::super::{AsteriskAssembler, call_facts};
use crate::call::{AgentSegment, CallFacts, Directory, SegmentArrival};
use crate::config::Config;
use crate::pbx::CallAssembler;
use crate::pbx::asterisk::cdr::{CdrParser, ColumnLayout};

fn directory() -> Directory {
    let config = Config::parse(
        r#"
[leadsquared]
call_log_url = "https://x.invalid/LogCallComplete/k"
default_country_code = "91"
[[virtual_numbers]]
number = "918044556610"
[[agents]]
extension = "110"
[[agents]]
extension = "111"
[[agents]]
extension = "112"
[asterisk]
cdr_csv = "/x"
"#,
    )
    .expect("config");
    Directory::from_config(&config).expect("directory")
}

fn fixture(scenario: &str, file: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/asterisk_transfers/{scenario}/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The call's facts from cdr_custom (linkedid, local time) and from cdr_csv (18 columns,
/// UTC, grouped by channels); both must say the same about the segments.
fn facts(scenario: &str) -> CallFacts {
    let names: Vec<String> = "accountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,disposition,amaflags,uniqueid,userfield,linkedid,sequence,peeraccount,recordingfile"
        .split(',')
        .map(str::to_owned)
        .collect();
    let custom = CdrParser::new(
        Some(ColumnLayout::from_names(&names).expect("layout")),
        chrono_tz::Asia::Kolkata,
    );
    let csv = CdrParser::new(None, chrono_tz::UTC);
    let mut all = Vec::new();
    for (parser, file) in [(&custom, "cdr-custom.csv"), (&csv, "cdr-csv.csv")] {
        let mut asm = AsteriskAssembler::new(
            "test".into(),
            directory(),
            crate::call::CallRules::default(),
            5_000,
            14_400,
        );
        let text = fixture(scenario, file);
        for (i, line) in text.lines().enumerate() {
            let row = parser
                .parse(line.as_bytes())
                .expect("valid line")
                .expect("a row");
            asm.add(i as i64, row, line.to_owned(), 0);
        }
        let mut calls = asm.take_all();
        assert_eq!(calls.len(), 1, "{scenario}/{file}: one call");
        let call = calls.remove(0);
        let rows: Vec<_> = call
            .raw
            .lines()
            .map(|l| parser.parse(l.as_bytes()).expect("line").expect("row"))
            .collect();
        let refs: Vec<_> = rows.iter().collect();
        all.push(call_facts("test", &directory(), &refs).expect("facts"));
    }
    let csv_facts = all.pop().expect("csv");
    let custom_facts = all.pop().expect("custom");
    assert_eq!(
        custom_facts.answered, csv_facts.answered,
        "{scenario}: both layouts give the same segments"
    );
    custom_facts
}

/// A time of the rig's calls (2026-12-02, Asia/Kolkata).
fn ist(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Kolkata
        .with_ymd_and_hms(2026, 12, 2, h, m, s)
        .single()
        .expect("time")
        .with_timezone(&Utc)
}

fn segment(
    extension: &str,
    answered: DateTime<Utc>,
    ended: DateTime<Utc>,
    talk: u64,
    arrival: SegmentArrival,
) -> AgentSegment {
    AgentSegment {
        extension: extension.into(),
        answered_at: answered,
        ended_at: Some(ended),
        talk_seconds: talk,
        arrival,
    }
}

#[test]
fn blind_transfer_gives_a_segment_per_agent_timed_by_the_lead_rows() {
    let f = facts("blind");
    assert_eq!(f.call_id, "1796185644.0");
    assert_eq!(
        f.answered,
        [
            segment(
                "110",
                ist(9, 57, 25),
                ist(9, 57, 28),
                3,
                SegmentArrival::Direct
            ),
            segment(
                "111",
                ist(9, 57, 30),
                ist(9, 57, 36),
                6,
                SegmentArrival::BlindTransfer {
                    from: "110".into(),
                    at: ist(9, 57, 28)
                }
            ),
        ]
    );
    // The transfer rewrote dst/dcontext of the lead's rows; party A's own row keeps the DID.
    assert!(f.did_candidates.contains(&"918044556610".to_owned()));
}

#[test]
fn attended_transfer_leaves_out_the_consultation_and_counts_from_the_handover() {
    let f = facts("attended");
    // The transfer cleared party A's src; the lead's channel rows still name the lead.
    assert_eq!(f.caller_number, "+919611795983");
    assert_eq!(
        f.answered,
        [
            segment(
                "110",
                ist(9, 58, 18),
                ist(9, 58, 21),
                3,
                SegmentArrival::Direct
            ),
            segment(
                "111",
                ist(9, 58, 25),
                ist(9, 58, 29),
                4,
                SegmentArrival::AttendedTransfer {
                    from: "110".into(),
                    at: ist(9, 58, 25)
                }
            ),
        ]
    );
}

#[test]
fn a_transfer_target_who_does_not_answer_is_no_segment() {
    let f = facts("noanswer");
    assert_eq!(
        f.answered,
        [segment(
            "110",
            ist(9, 59, 8),
            ist(9, 59, 11),
            3,
            SegmentArrival::Direct
        )]
    );
    assert!(f.rung_agents.contains(&"112".to_owned()));
}

#[test]
fn follow_me_is_one_segment_forwarded_from_the_first_phone() {
    let f = facts("followme");
    assert_eq!(
        f.answered,
        [segment(
            "111",
            ist(9, 59, 27),
            ist(9, 59, 33),
            6,
            SegmentArrival::Forwarded { from: "112".into() }
        )]
    );
}

#[test]
fn a_queue_call_transferred_by_its_agent_has_no_segment_for_the_ring_leg() {
    let f = facts("queue");
    let got: Vec<(&str, u64, &SegmentArrival)> = f
        .answered
        .iter()
        .map(|s| (s.extension.as_str(), s.talk_seconds, &s.arrival))
        .collect();
    assert_eq!(got.len(), 2, "{:#?}", f.answered);
    assert_eq!(got[0].0, "110");
    assert_eq!(got[0].2, &SegmentArrival::Direct);
    assert_eq!(got[1].0, "111");
    assert!(matches!(
        got[1].2,
        SegmentArrival::BlindTransfer { from, .. } if from == "110"
    ));
    // 110's own row: the queue's row also counts the wait in the queue.
    assert_eq!(f.answered[0].talk_seconds, 3);
    assert_eq!(f.answered[1].talk_seconds, 6);
}

//! Tests of grouping and classification on rows a real Asterisk 22 wrote
//! (tests/fixtures/asterisk22_*.csv) and on PJSIP-trunk shaped rows.

use super::*;
use crate::call::{Direction, Outcome};
use crate::config::Config;
use crate::pbx::asterisk::cdr::{CdrParser, ColumnLayout};
use std::collections::HashMap;

const CSV: &str = include_str!("../../../../tests/fixtures/asterisk22_cdr_csv.csv");
const CUSTOM: &str = include_str!("../../../../tests/fixtures/asterisk22_cdr_custom.csv");

fn config() -> Config {
    Config::parse(
        r#"
[leadsquared]
call_log_url = "https://x.invalid/LogCallComplete/k"
default_country_code = "91"
[[virtual_numbers]]
number = "918044556677"
tag = "sales"
[[virtual_numbers]]
number = "918044556601"
[[virtual_numbers]]
number = "918044556602"
[[virtual_numbers]]
number = "918044556603"
[[virtual_numbers]]
number = "918044556604"
[[virtual_numbers]]
number = "918044556605"
[[agents]]
extension = "100"
phone = "+919876500100"
[[agents]]
extension = "101"
phone = "+919876500101"
[[agents]]
extension = "102"
[[agents]]
extension = "103"
[asterisk]
cdr_csv = "/x"
"#,
    )
    .expect("config")
}

fn assembler() -> AsteriskAssembler {
    let c = config();
    let ast = c.asterisk.clone().expect("asterisk");
    AsteriskAssembler::new(
        "test".into(),
        Directory::from_config(&c).expect("directory"),
        crate::pbx::asterisk::call_rules(&ast),
        5_000,
        14_400,
    )
}

fn custom_parser() -> CdrParser {
    let names: Vec<String> = "accountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,disposition,amaflags,uniqueid,userfield,linkedid,sequence,peeraccount,recordingfile"
        .split(',')
        .map(str::to_owned)
        .collect();
    CdrParser::new(
        Some(ColumnLayout::from_names(&names).expect("layout")),
        chrono_tz::Asia::Kolkata,
    )
}

/// Feeds every line with read time `read_at(i)` and returns the calls settled at `now`.
fn feed(
    asm: &mut AsteriskAssembler,
    parser: &CdrParser,
    text: &str,
    read_at: impl Fn(usize) -> i64,
) {
    for (i, line) in text.lines().enumerate() {
        let row = parser
            .parse(line.as_bytes())
            .expect("valid line")
            .expect("a row");
        asm.add(i as i64, row, line.to_owned(), read_at(i));
    }
}

fn by_id(calls: Vec<AssembledCall>) -> HashMap<String, CallRecord> {
    calls
        .into_iter()
        .filter_map(|c| c.call)
        .map(|c| (c.call_id.clone(), c))
        .collect()
}

fn check_real_calls(calls: &HashMap<String, CallRecord>) {
    assert_eq!(calls.len(), 9, "{:#?}", calls.keys());
    let get = |id: &str| calls.get(id).unwrap_or_else(|| panic!("call {id} missing"));

    let direct = get("1795548569.0");
    assert_eq!(direct.direction, Direction::Inbound);
    assert_eq!(direct.outcome, Outcome::Answered);
    assert_eq!(direct.agent_extension.as_deref(), Some("100"));
    assert_eq!(direct.talk_seconds, 5);
    assert_eq!(
        direct
            .lead_number
            .e164
            .as_ref()
            .map(|e| e.to_e164())
            .as_deref(),
        Some("+919611795983")
    );
    assert_eq!(direct.tag.as_deref(), Some("sales"));
    assert_eq!(direct.start.to_string(), "2026-11-24 19:29:29 UTC");

    let missed = get("1795548579.4");
    assert_eq!(missed.direction, Direction::Inbound);
    assert_eq!(missed.outcome, Outcome::NoAnswer);
    assert_eq!(missed.agent_extension.as_deref(), Some("102"));
    assert_eq!(missed.talk_seconds, 0);
    assert_eq!(
        missed.display_number.as_ref().map(|n| n.raw.as_str()),
        Some("918044556601")
    );

    let busy = get("1795548590.8");
    assert_eq!(busy.outcome, Outcome::Busy);

    let queue = get("1795548595.12");
    assert_eq!(queue.outcome, Outcome::Answered);
    assert_eq!(queue.agent_extension.as_deref(), Some("100"));
    // The agent's own leg, not the queue's billsec that includes the wait.
    assert_eq!(queue.talk_seconds, 5);
    assert_eq!(queue.legs, 5);

    let queue_missed = get("1795548616.24");
    assert_eq!(
        queue_missed.outcome,
        Outcome::NoAnswer,
        "the queue's Answer() is not an agent"
    );

    let ivr = get("1795548631.28");
    assert_eq!(
        ivr.outcome,
        Outcome::NoAnswer,
        "the IVR answering is not an agent"
    );
    assert_eq!(ivr.agent_extension, None);

    let out = get("1795548640.30");
    assert_eq!(out.direction, Direction::Outbound);
    assert_eq!(out.outcome, Outcome::Answered);
    assert_eq!(out.agent_extension.as_deref(), Some("100"));
    assert_eq!(out.talk_seconds, 6);
    assert_eq!(
        out.lead_number
            .e164
            .as_ref()
            .map(|e| e.to_e164())
            .as_deref(),
        Some("+919611795983")
    );

    let out_busy = get("1795548652.34");
    assert_eq!(
        (out_busy.direction, out_busy.outcome),
        (Direction::Outbound, Outcome::Busy)
    );
    let out_missed = get("1795548657.38");
    assert_eq!(
        (out_missed.direction, out_missed.outcome),
        (Direction::Outbound, Outcome::NoAnswer)
    );
}

#[test]
fn real_cdr_csv_rows_make_one_call_each() {
    let mut asm = assembler();
    feed(&mut asm, &CdrParser::new(None, chrono_tz::UTC), CSV, |_| 0);
    check_real_calls(&by_id(asm.take_all()));
    assert_eq!(asm.pending_records(), 0);
}

#[test]
fn real_cdr_custom_rows_with_linkedid_and_local_time_make_the_same_calls() {
    let mut asm = assembler();
    feed(&mut asm, &custom_parser(), CUSTOM, |_| 0);
    let calls = by_id(asm.take_all());
    // The custom file holds the first four calls.
    assert_eq!(calls.len(), 3, "{:#?}", calls.keys());
    let direct = &calls["1795548569.0"];
    assert_eq!(direct.start.to_string(), "2026-11-24 19:29:29 UTC");
    assert_eq!(direct.talk_seconds, 5);
    assert_eq!(
        calls["1795548595.12"].agent_extension.as_deref(),
        Some("100")
    );
    assert_eq!(calls["1795548595.12"].talk_seconds, 5);
}

#[test]
fn an_early_queue_member_row_waits_for_its_call() {
    // Asterisk wrote the cancelled member's row (line 12) seconds before the rest of the
    // queue call; read it alone and let the settle time pass.
    let lines: Vec<&str> = CSV.lines().collect();
    let parser = CdrParser::new(None, chrono_tz::UTC);
    let mut asm = assembler();
    feed(&mut asm, &parser, lines[11], |_| 1_000);
    assert!(
        asm.take_settled(60_000).is_empty(),
        "a lone member row is not a call"
    );
    feed(&mut asm, &parser, &lines[12..16].join("\n"), |_| 61_000);
    assert!(asm.take_settled(62_000).is_empty(), "not settled yet");
    let calls = asm.take_settled(66_000);
    assert_eq!(calls.len(), 1);
    let call = calls[0].call.as_ref().expect("a call");
    assert_eq!(call.legs, 5);
    assert_eq!(call.outcome, Outcome::Answered);
    assert_eq!(asm.pending_records(), 0);
}

#[test]
fn rootless_rows_are_released_after_max_call_secs() {
    let lines: Vec<&str> = CSV.lines().collect();
    let mut asm = assembler();
    feed(
        &mut asm,
        &CdrParser::new(None, chrono_tz::UTC),
        lines[11],
        |_| 0,
    );
    assert!(asm.take_settled(14_399_000).is_empty());
    assert_eq!(asm.take_settled(14_400_000).len(), 1);
}

#[test]
fn settle_time_holds_then_releases() {
    let mut asm = assembler();
    let lines: Vec<&str> = CSV.lines().collect();
    feed(
        &mut asm,
        &CdrParser::new(None, chrono_tz::UTC),
        &lines[0..3].join("\n"),
        |_| 10_000,
    );
    assert!(asm.take_settled(14_999).is_empty());
    assert_eq!(asm.take_settled(15_000).len(), 1);
}

/// One PJSIP-trunk row: `[src, dst, dcontext, channel, dstchannel, lastapp, disposition, uniqueid]`.
fn pjsip(f: [&str; 8], billsec: u32) -> String {
    let [src, dst, ctx, chan, dstchan, app, disp, uid] = f;
    let answer = if billsec > 0 {
        "\"2026-01-01 10:00:05\""
    } else {
        ""
    };
    format!(
        r#""","{src}","{dst}","{ctx}","""x"" <{src}>","{chan}","{dstchan}","{app}","","2026-01-01 10:00:00",{answer},"2026-01-01 10:01:00",60,{billsec},"{disp}","DOCUMENTATION","{uid}","""#
    )
}

#[test]
fn pjsip_trunk_queue_call_and_internal_call() {
    let rows = [
        pjsip(
            [
                "+919611795983",
                "918044556677",
                "from-trunk",
                "PJSIP/airtel-00000001",
                "PJSIP/100-00000002",
                "Queue",
                "NO ANSWER",
                "1.1",
            ],
            0,
        ),
        pjsip(
            [
                "+919611795983",
                "918044556677",
                "from-trunk",
                "PJSIP/airtel-00000001",
                "PJSIP/101-00000003",
                "Queue",
                "ANSWERED",
                "1.1",
            ],
            55,
        ),
        pjsip(
            [
                "100",
                "101",
                "from-internal",
                "PJSIP/100-00000009",
                "PJSIP/101-0000000a",
                "Dial",
                "ANSWERED",
                "1.9",
            ],
            55,
        ),
    ]
    .join("\n");
    let mut asm = assembler();
    feed(
        &mut asm,
        &CdrParser::new(None, chrono_tz::UTC),
        &rows,
        |_| 0,
    );
    let calls = asm.take_all();
    assert_eq!(calls.len(), 2);
    let queue = calls[0].call.as_ref().expect("call");
    assert_eq!(queue.agent_extension.as_deref(), Some("101"));
    assert_eq!(
        queue
            .agent
            .as_ref()
            .and_then(|a| a.phone.as_ref())
            .map(|p| p.to_e164())
            .as_deref(),
        Some("+919876500101")
    );
    assert_eq!(queue.talk_seconds, 55);
    assert!(calls[1].call.is_none(), "agent to agent is internal");
    assert!(
        calls[1]
            .skipped
            .as_deref()
            .unwrap_or("")
            .contains("internal")
    );
}

#[test]
fn channel_extensions() {
    assert_eq!(channel_extension("PJSIP/100-0000000a"), Some("100"));
    assert_eq!(channel_extension("SIP/my-trunk-00000001"), Some("my-trunk"));
    assert_eq!(
        channel_extension("Local/100@agents-00000001;2"),
        Some("100")
    );
    assert_eq!(channel_extension("DAHDI/1-1"), Some("1"));
    assert_eq!(channel_extension(""), None);
}

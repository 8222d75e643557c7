use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::*;
use crate::call::{AgentSegment, DialResult, RecordingRef};
use crate::pbx::asterisk::cdr::TimeWindow;
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
    let columns: Vec<String> = templates::RIG_COLUMNS.iter().map(|c| c.to_string()).collect();
    let parser = FsCsvParser::new(
        CsvLayout::new(None, Some(&columns)).expect("rig layout"),
        chrono_tz::Tz::UTC,
    );
    let text = std::fs::read(fixture_dir(scenario).join("Master.csv")).expect("Master.csv");
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
    calls.into_iter().next().and_then(|c| c.facts.ok()).expect("facts")
}

fn us(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).expect("time")
}

#[test]
fn dump() {
    for s in ["answered_inbound", "missed_inbound", "busy_agent", "queue_ring_all", "agent_outbound", "click_to_call"] {
        println!("=== {s}");
        for c in calls_of(json_legs(s)) {
            println!("{:#?}", c.facts);
        }
        println!("--- csv");
        for c in calls_of(csv_legs(s)) {
            println!("{:#?}", c.facts);
        }
    }
}

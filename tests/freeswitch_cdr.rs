//! FreeSWITCH call logs from CDR files, end to end through pbxlink's own pipeline:
//!
//! - mod_cdr_csv's `Master.csv` tailed by the shared [`FileSource`] with the FreeSWITCH
//!   parser and assembler, across FreeSWITCH's own rotation (`Master.csv` renamed to
//!   `Master.csv.<date>` on HUP, a new file opened): every call once.
//! - The real FreeSWITCH rig (root only, else a loud SKIPPED banner): real SIP calls, then
//!   the json_cdr files and the Master.csv rows (the recommended `pbxlink` template) that
//!   FreeSWITCH wrote are read by pbxlink's parsers and grouped into calls: both give the
//!   same facts.

mod fsrig;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use chrono_tz::Tz;
use pbxlink::call::TimeWindow;
use pbxlink::call::{CallFacts, CallRecord, Direction, Number, Outcome};
use pbxlink::config::Synchronous;
use pbxlink::outbox::store::Store;
use pbxlink::pbx::freeswitch::assemble::{FsAssembler, SettleTimes};
use pbxlink::pbx::freeswitch::cdr::{CsvLayout, FsCdrSettings, FsCsvParser, FsLeg, templates};
use pbxlink::pbx::freeswitch::json_cdr::{JsonCdrDirSource, parse_json_cdr};
use pbxlink::pipeline::{FileSource, counters};
use pbxlink::tail::StartAt;
use tokio::sync::Notify;

/// Until the shared rules are merged in, a call log that carries the facts checked here
/// (the call id and the number of legs); the daemon passes `crate::call::rules`.
fn record_of(f: &CallFacts) -> Result<CallRecord, String> {
    Ok(CallRecord {
        call_id: f.call_id.clone(),
        source: f.source.clone(),
        direction: Direction::Inbound,
        outcome: Outcome::NoAnswer,
        lead_number: Number {
            raw: f.caller_number.clone(),
            e164: None,
        },
        agent: None,
        agent_extension: f.answered.first().map(|s| s.extension.clone()),
        display_number: None,
        tag: None,
        start: f.start,
        answer: None,
        end: f.end,
        talk_seconds: 0,
        caller_name: None,
        recording_url: None,
        lead_id: f.lead_id.clone(),
        legs: f.legs,
        segments: Vec::new(),
        transfer: Default::default(),
    })
}

fn fixture(scenario: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freeswitch")
        .join(scenario)
        .join(file)
}

fn rig_columns_parser() -> FsCsvParser {
    let columns: Vec<String> = templates::RIG_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .collect();
    FsCsvParser::new(
        CsvLayout::new(None, Some(&columns)).expect("layout"),
        Tz::UTC,
    )
}

fn assembler(settle_ms: u64) -> FsAssembler {
    FsAssembler::new(
        "freeswitch-cdr_csv".into(),
        SettleTimes {
            settle_ms,
            max_call_secs: 3600,
        },
        Box::new(record_of),
    )
}

fn pending_calls(store: &Store) -> Vec<(String, u64)> {
    let mut calls: Vec<(String, u64)> = store
        .bodies("pending")
        .expect("bodies")
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).expect("body");
            (
                v["call_id"].as_str().unwrap_or_default().to_owned(),
                v["legs"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    calls.sort();
    calls
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(bytes).expect("append");
}

/// The rig's Master.csv rows of the queue call and of an outbound call, tailed by the
/// shared pipeline while FreeSWITCH rotates the file between them (HUP: rename to
/// Master.csv.<date>, new Master.csv): each call is enqueued once with all its legs, the
/// rotation is counted, a corrupt line between them is counted and skipped.
#[test]
fn master_csv_through_the_pipeline_across_rotation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = tmp.path().join("Master.csv");
    let store =
        Arc::new(Store::open(&tmp.path().join("outbox.db"), Synchronous::Normal).expect("store"));
    let source = FileSource::new(
        "freeswitch-cdr_csv".into(),
        csv.clone(),
        store.clone(),
        rig_columns_parser(),
        assembler(200),
        Arc::new(Notify::new()),
    )
    .with_file_rules(false, StartAt::Beginning);
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || source.run(Duration::from_millis(20), stop))
    };

    let queue = std::fs::read(fixture("queue_ring_all", "Master.csv")).expect("fixture");
    let rows: Vec<&[u8]> = queue.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(rows.len(), 5);
    // The losing agent's leg, the agent phones' own legs and the winning agent's leg...
    for row in &rows[..3] {
        append(&csv, row);
    }
    append(&csv, b"\"cut short by a crash\",\"x\n");
    std::thread::sleep(Duration::from_millis(300));
    // ...then FreeSWITCH rotates; the member's leg and the rest go to the new file.
    std::fs::rename(&csv, tmp.path().join("Master.csv.2026-12-01-23-28-45")).expect("rotate");
    for row in &rows[3..] {
        append(&csv, row);
    }
    append(
        &csv,
        &std::fs::read(fixture("agent_outbound", "Master.csv")).expect("fixture"),
    );

    let want = vec![
        ("3e2f54d6-b0e9-44de-9f3c-d66f290d3ef7".to_string(), 2),
        ("8a856137-e836-418d-9939-e2f518371246".to_string(), 1),
        ("8ccc6aa4-d24a-4e2e-befb-0705180c6691".to_string(), 1),
        ("d718501f-df0f-4c3f-8c32-22faf9acf617".to_string(), 3),
    ];
    let started = Instant::now();
    while pending_calls(&store) != want && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    runner.join().expect("runner").expect("source ran");
    assert_eq!(pending_calls(&store), want);
    let status = store.status().expect("status");
    let counter = |name: &str| {
        status
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    };
    assert_eq!(counter(counters::ROTATIONS), 1);
    assert_eq!(counter(counters::PARSE_ERRORS), 1);
    assert_eq!(counter(counters::ROWS_READ), 7);
    assert_eq!(status.staged, 0);
}

// ----- the real FreeSWITCH -----

/// Every Master.csv row, the rotated files' (`Master.csv.<date>`) first.
fn csv_lines() -> Vec<Vec<u8>> {
    let master = fsrig::cdr_csv();
    let dir = master.parent().expect("cdr-csv dir").to_owned();
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    rotated.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("Master.csv."))
    });
    rotated.sort();
    rotated.push(master);
    rotated
        .iter()
        .flat_map(|p| {
            std::fs::read(p)
                .unwrap_or_default()
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn carrier_call(did: &str, hold_ms: u32, port: &str) {
    let (ok, out) = fsrig::carrier_call(did, hold_ms, port);
    assert!(ok, "sipp call to {did} failed:\n{out}");
}

/// Waits until FreeSWITCH has written every leg of the calls placed: as many Master.csv
/// rows (legs ab) as json_cdr files, and nothing new for a second.
fn wait_for_cdrs() -> (Vec<PathBuf>, Vec<Vec<u8>>) {
    let started = Instant::now();
    let mut last = (0, 0);
    let mut stable_since = Instant::now();
    loop {
        let files = fsrig::json_files().len();
        let rows = csv_lines().len();
        if (files, rows) != last {
            last = (files, rows);
            stable_since = Instant::now();
        } else if files > 0 && files == rows && stable_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "json_cdr files {files}, Master.csv rows {rows} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (fsrig::json_files().into_iter().collect(), csv_lines())
}

fn facts_of(legs: Vec<FsLeg>) -> Vec<CallFacts> {
    let mut a = assembler(0);
    for (i, leg) in legs.into_iter().enumerate() {
        a.add_leg(i as i64, leg, String::new(), 0);
    }
    let mut facts: Vec<CallFacts> = a
        .take_all_facts()
        .into_iter()
        .map(|c| c.facts.expect("every group has party A"))
        .collect();
    facts.sort_by(|a, b| a.call_id.cmp(&b.call_id));
    facts
}

/// What both formats carry (json_cdr has more: every application run, every caller
/// profile; the CSV row only the current profile and last_app).
fn comparable(f: &CallFacts) -> CallFacts {
    let mut f = f.clone();
    f.applications.clear();
    f.source.clear();
    f
}

fn open_store(dir: &Path, name: &str) -> Arc<Store> {
    Arc::new(Store::open(&dir.join(name), Synchronous::Normal).expect("store"))
}

fn counter(store: &Store, name: &str) -> i64 {
    store
        .status()
        .expect("status")
        .counters
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| v)
}

/// Real calls on the real FreeSWITCH while pbxlink's two file sources run on what it writes:
/// a DID answered by agent 100 (recorded); then `cdr_csv rotate` (Master.csv renamed to
/// Master.csv.<date>); then a ring-all queue call where 101 answers and 100 loses the race.
/// The json_cdr directory source and the Master.csv tailer (recommended `pbxlink` template)
/// each queue exactly the two calls, once each, with every leg; and the files read by the
/// parsers give the same facts whichever format.
#[test]
fn real_freeswitch_json_cdr_and_cdr_csv_give_the_same_calls() {
    if !fsrig::root_or_skip(
        "tests/freeswitch_cdr.rs",
        "json_cdr files and Master.csv rows of real FreeSWITCH calls read into calls",
    ) {
        return;
    }
    let _rig = fsrig::install_and_start("freeswitch_cdr");

    let tmp = tempfile::tempdir().expect("tmp");
    let csv_store = open_store(tmp.path(), "csv.db");
    let json_store = open_store(tmp.path(), "json.db");
    let stop = Arc::new(AtomicBool::new(false));
    let csv_runner = {
        let source = FileSource::new(
            "freeswitch-cdr_csv".into(),
            fsrig::cdr_csv(),
            csv_store.clone(),
            FsCsvParser::new(
                CsvLayout::new(Some("pbxlink"), None).expect("layout"),
                Tz::UTC,
            ),
            assembler(1000),
            Arc::new(Notify::new()),
        )
        .with_file_rules(false, StartAt::Beginning);
        let stop = stop.clone();
        std::thread::spawn(move || source.run(Duration::from_millis(100), stop))
    };
    let json_runner = {
        let settings = FsCdrSettings {
            json_cdr_dir: fsrig::json_cdr_dir(),
            start_at: StartAt::Beginning,
            poll_ms: 100,
            ..FsCdrSettings::default()
        };
        let source = JsonCdrDirSource::new(
            "freeswitch-json_cdr".into(),
            &settings,
            json_store.clone(),
            FsAssembler::new(
                "freeswitch-json_cdr".into(),
                SettleTimes {
                    settle_ms: 1000,
                    max_call_secs: 3600,
                },
                Box::new(record_of),
            ),
            Arc::new(Notify::new()),
        );
        let stop = stop.clone();
        std::thread::spawn(move || source.run(stop))
    };

    carrier_call("4930100", 3000, "25111");
    let _ = wait_for_cdrs();
    let rotated = fsrig::rig_ok(&["cli", "cdr_csv rotate"]);
    eprintln!("[freeswitch_cdr] cdr_csv rotate: {}", rotated.trim());
    carrier_call("4930200", 3000, "25112");
    let (files, rows) = wait_for_cdrs();

    // What the two sources queued, while they ran.
    let started = Instant::now();
    while (pending_calls(&csv_store).len() < 2 || pending_calls(&json_store).len() < 2)
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing more arrives: one log per call.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    csv_runner
        .join()
        .expect("csv runner")
        .expect("csv source ran");
    json_runner
        .join()
        .expect("json runner")
        .expect("json source ran");

    let window = TimeWindow::at(Utc::now());
    let json_legs: Vec<FsLeg> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).expect("json_cdr file");
            parse_json_cdr(&bytes, Tz::UTC, window)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .collect();
    let csv_parser = FsCsvParser::new(
        CsvLayout::new(Some("pbxlink"), None).expect("layout"),
        Tz::UTC,
    );
    let csv_legs: Vec<FsLeg> = rows
        .iter()
        .map(|r| {
            csv_parser
                .parse_within(r, window)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(r)))
                .expect("a leg")
        })
        .collect();
    let from_json = facts_of(json_legs);
    let from_csv = facts_of(csv_legs);
    eprintln!("[freeswitch_cdr] json_cdr calls: {from_json:#?}");
    assert_eq!(from_json.len(), 2, "two calls: {from_json:#?}");
    assert_eq!(
        from_json.iter().map(comparable).collect::<Vec<_>>(),
        from_csv.iter().map(comparable).collect::<Vec<_>>(),
        "json_cdr and cdr_csv (pbxlink template) disagree"
    );

    let direct = from_json
        .iter()
        .find(|f| f.dialled == "4930100")
        .expect("the DID call");
    assert_eq!(direct.rung_agents, vec!["100".to_string()]);
    assert_eq!(direct.answered.len(), 1);
    assert_eq!(direct.answered[0].extension, "100");
    assert!(direct.recording.is_some());
    assert_eq!(direct.contexts, vec!["public".to_string()]);
    assert_eq!(direct.legs, 3);

    let queue = from_json
        .iter()
        .find(|f| f.dialled == "4930200")
        .expect("the queue call");
    let rung: BTreeSet<&str> = queue.rung_agents.iter().map(String::as_str).collect();
    assert_eq!(rung, BTreeSet::from(["100", "101"]));
    assert_eq!(queue.answered.len(), 1);
    assert_eq!(queue.answered[0].extension, "101");
    assert_eq!(queue.legs, 5);
    assert!(queue.recording.is_some());

    let want: Vec<(String, u64)> = from_json
        .iter()
        .map(|f| (f.call_id.clone(), u64::from(f.legs)))
        .collect();
    assert_eq!(pending_calls(&json_store), want, "json_cdr source");
    assert_eq!(pending_calls(&csv_store), want, "cdr_csv source");
    assert_eq!(
        counter(&csv_store, counters::ROTATIONS),
        1,
        "the rotation was followed"
    );
    assert_eq!(counter(&csv_store, counters::PARSE_ERRORS), 0);
    assert_eq!(counter(&json_store, counters::PARSE_ERRORS), 0);
    assert_eq!(counter(&json_store, "json_cdr_files_read"), 8);
}

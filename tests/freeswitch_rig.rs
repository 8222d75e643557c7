//! The real FreeSWITCH 1.10.12 rig (`tests/freeswitch/rig.sh`): starts it, subscribes to events
//! over a raw event-socket connection, places real SIP calls with sipp (and one `bgapi
//! originate`), and checks what FreeSWITCH wrote: ESL events, json_cdr files (one per leg) and
//! Master.csv rows. With `PBXLINK_FS_WRITE_FIXTURES=1` it also saves each scenario's raw ESL
//! bytes and CDR files into `tests/fixtures/freeswitch/<scenario>/`.
//!
//! Root only (the rig is a chroot); otherwise a loud SKIPPED banner.

mod fsrig;

use fsrig::{Esl, EslMessage};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one scenario left behind.
struct Capture {
    esl: Vec<u8>,
    events: Vec<EslMessage>,
    json_files: Vec<PathBuf>,
    csv_rows: Vec<String>,
    /// cdr-csv/example.csv: the stock "example" template, for legs with accountcode=example.
    example_rows: Vec<String>,
}

fn csv_lines() -> Vec<String> {
    lines_of(&fsrig::cdr_csv())
}

fn example_lines() -> Vec<String> {
    lines_of(&fsrig::cdr_csv().with_file_name("example.csv"))
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn event_name(m: &EslMessage) -> Option<String> {
    m.event_header("Event-Name")
}

fn hangups(events: &[EslMessage]) -> usize {
    events
        .iter()
        .filter(|m| event_name(m).as_deref() == Some("CHANNEL_HANGUP_COMPLETE"))
        .count()
}

/// Runs `place`, then waits until every channel created since has hung up (and its CDRs are
/// written); returns what arrived.
fn scenario(esl: &Esl, name: &str, place: impl FnOnce()) -> Capture {
    let mark = esl.len();
    let files_before = fsrig::json_files();
    let rows_before = csv_lines().len();
    let example_before = example_lines().len();
    eprintln!("[freeswitch_rig] scenario {name}");
    place();
    let start = Instant::now();
    loop {
        let events = esl.messages_since(mark);
        let created = events
            .iter()
            .filter(|m| event_name(m).as_deref() == Some("CHANNEL_CREATE"))
            .count();
        let done = created > 0 && hangups(&events) >= created;
        if done && fsrig::json_files().len() >= files_before.len() + created {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name}: {created} channels created, {} hung up after 60 s",
            hangups(&events)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let esl_bytes = esl.bytes_since(mark);
    let capture = Capture {
        events: fsrig::split_messages(&esl_bytes),
        esl: esl_bytes,
        json_files: fsrig::json_files()
            .difference(&files_before)
            .cloned()
            .collect(),
        csv_rows: csv_lines()[rows_before..].to_vec(),
        example_rows: example_lines()[example_before..].to_vec(),
    };
    eprintln!(
        "[freeswitch_rig] {name}: {} ESL messages, {} hangups, {} json_cdr files, {} Master.csv rows",
        capture.events.len(),
        hangups(&capture.events),
        capture.json_files.len(),
        capture.csv_rows.len()
    );
    if std::env::var_os("PBXLINK_FS_WRITE_FIXTURES").is_some() {
        save_fixture(name, &capture);
    }
    capture
}

/// Saves raw ESL bytes (no CDRs) as `tests/fixtures/freeswitch/<name>/esl.txt`.
fn save_raw(name: &str, esl: &[u8]) {
    if std::env::var_os("PBXLINK_FS_WRITE_FIXTURES").is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freeswitch")
        .join(name);
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    std::fs::write(dir.join("esl.txt"), esl).expect("write esl fixture");
}

fn save_fixture(name: &str, c: &Capture) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freeswitch")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("json_cdr")).expect("create fixture dir");
    std::fs::write(dir.join("esl.txt"), &c.esl).expect("write esl fixture");
    let mut rows = c.csv_rows.join("\n");
    rows.push('\n');
    std::fs::write(dir.join("Master.csv"), rows).expect("write csv fixture");
    let mut rows = c.example_rows.join("\n");
    rows.push('\n');
    std::fs::write(dir.join("example.csv"), rows).expect("write example.csv fixture");
    for f in &c.json_files {
        let to = dir.join("json_cdr").join(f.file_name().expect("file name"));
        std::fs::copy(f, to).expect("copy json_cdr fixture");
    }
}

fn cc_actions(events: &[EslMessage]) -> Vec<String> {
    events
        .iter()
        .filter(|m| m.event_header("Event-Subclass").as_deref() == Some("callcenter::info"))
        .filter_map(|m| m.event_header("CC-Action"))
        .collect()
}

fn json_of(c: &Capture) -> Vec<serde_json::Value> {
    c.json_files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read json_cdr file");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .collect()
}

#[test]
fn real_freeswitch_calls_write_esl_events_json_cdr_and_cdr_csv() {
    if !fsrig::root_or_skip(
        "tests/freeswitch_rig.rs",
        "FreeSWITCH ESL events, json_cdr and cdr_csv output",
    ) {
        return;
    }
    let _rig = fsrig::install_and_start("freeswitch_rig");

    let esl = Esl::connect(fsrig::esl_port(), &fsrig::esl_password());
    let mark = esl.len();
    esl.send(fsrig::SUBSCRIBE);
    let reply = esl.wait_for(mark, Duration::from_secs(5), |m| {
        m.header("Content-Type") == Some("command/reply")
    });
    assert_eq!(
        reply.header("Reply-Text"),
        Some("+OK event listener enabled plain")
    );
    // an api command: an api/response with a body
    let mark = esl.len();
    esl.send("api status");
    let status = esl.wait_for(mark, Duration::from_secs(5), |m| {
        m.header("Content-Type") == Some("api/response")
    });
    assert!(status.body.contains("UP "), "api status: {:?}", status.body);
    save_raw("session_start", &esl.bytes_since(0));

    // 1. carrier -> DID 4930100 -> agent 100 answers; the lead hangs up after 3 s.
    let c = scenario(&esl, "answered_inbound", || {
        let (ok, out) = fsrig::carrier_call("4930100", 3000, "25101");
        assert!(ok, "sipp answered call failed:\n{out}");
    });
    assert!(c.json_files.len() >= 2, "json_cdr: one file per leg");
    assert!(c.csv_rows.len() >= 2, "Master.csv rows for both legs");
    assert!(
        c.csv_rows
            .iter()
            .any(|r| r.contains("\"4930100\"") && r.contains("NORMAL_CLEARING"))
    );
    assert!(
        c.events
            .iter()
            .any(|m| event_name(m).as_deref() == Some("CHANNEL_ANSWER"))
    );
    let legs = json_of(&c);
    assert!(legs.iter().any(|j| j["variables"]["uuid"].is_string()));
    assert!(
        c.events
            .iter()
            .any(|m| event_name(m).as_deref() == Some("CHANNEL_BRIDGE")),
        "no CHANNEL_BRIDGE for the answered call"
    );
    assert!(
        c.example_rows.len() >= 2,
        "example.csv (stock template) rows: {:#?}",
        c.example_rows
    );
    // the recording: its path is in the CDRs and the file exists in the chroot
    let recording = c
        .csv_rows
        .iter()
        .find_map(|r| {
            r.split("\",\"")
                .find(|f| f.ends_with(".wav"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no record_path in Master.csv: {:#?}", c.csv_rows));
    let on_host = fsrig::rig_root().join(recording.trim_start_matches('/'));
    assert!(on_host.exists(), "recording {} missing", on_host.display());

    // 2. carrier -> DID 4930103 -> agent 103 rings and never answers (call_timeout 6 s).
    let c = scenario(&esl, "missed_inbound", || {
        let _ = fsrig::carrier_call("4930103", 1000, "25102");
    });
    assert!(!c.csv_rows.is_empty());
    assert!(
        c.csv_rows.iter().any(|r| r.contains("NO_ANSWER")),
        "missed: {:#?}",
        c.csv_rows
    );
    assert!(
        !c.events
            .iter()
            .any(|m| event_name(m).as_deref() == Some("CHANNEL_ANSWER")
                && m.event_header("Caller-Destination-Number").as_deref() == Some("4930103"))
    );

    // 3. carrier -> DID 4930102 -> agent 102's phone answers 486 Busy Here.
    let c = scenario(&esl, "busy_agent", || {
        let _ = fsrig::carrier_call("4930102", 1000, "25103");
    });
    assert!(
        c.csv_rows.iter().any(|r| r.contains("USER_BUSY")),
        "busy: {:#?}",
        c.csv_rows
    );

    // 4. carrier -> DID 4930200 -> ring-all queue sales@default: agents 100 and 101 ring, 101 answers.
    let c = scenario(&esl, "queue_ring_all", || {
        let (ok, out) = fsrig::carrier_call("4930200", 6000, "25104");
        assert!(ok, "sipp queue call failed:\n{out}");
    });
    let actions = cc_actions(&c.events);
    assert_eq!(
        actions.iter().filter(|a| *a == "agent-offering").count(),
        2,
        "both agents offered: {actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "bridge-agent-start"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "member-queue-end"),
        "{actions:?}"
    );
    assert!(
        c.csv_rows.iter().any(|r| r.contains("LOSE_RACE")),
        "{:#?}",
        c.csv_rows
    );
    assert!(
        c.csv_rows
            .iter()
            .filter(|r| r.contains("\"sales@default\""))
            .count()
            >= 2,
        "cc_queue on the agents' legs: {:#?}",
        c.csv_rows
    );

    // 5. agent dials out: a phone on the internal profile calls 4930123457 -> carrier UAS (sipp).
    let uas = std::thread::spawn(|| fsrig::carrier_uas(2, 120));
    std::thread::sleep(Duration::from_millis(500));
    let c = scenario(&esl, "agent_outbound", || {
        let (ok, out) = fsrig::sipp(
            &[
                "-sn",
                "uac",
                "-s",
                "4930123457",
                "127.0.0.1:25060",
                "-i",
                "127.0.0.1",
                "-p",
                "25105",
                "-m",
                "1",
                "-l",
                "1",
                "-d",
                "3000",
                "-timeout",
                "40s",
                "-nostdin",
            ],
            45,
        );
        assert!(ok, "sipp outbound call failed:\n{out}");
    });
    assert!(
        c.csv_rows
            .iter()
            .any(|r| r.contains("\"default\"") && r.contains("\"4930123457\""))
    );
    assert!(c.json_files.len() >= 2);

    // 6. click to call: bgapi originate rings agent 101, then dials the lead in `default`.
    let c = scenario(&esl, "click_to_call", || {
        let mark = esl.len();
        esl.send(
            "bgapi originate {origination_caller_id_number=4930100,origination_caller_id_name='Lead 42',pbxlink_lead_id=lead-42,accountcode=example}user/101 4930123457 XML default",
        );
        let job = esl.wait_for(mark, Duration::from_secs(5), |m| {
            m.header("Content-Type") == Some("command/reply") && m.header("Job-UUID").is_some()
        });
        let job_uuid = job.header("Job-UUID").expect("Job-UUID").to_string();
        let done = esl.wait_for(mark, Duration::from_secs(30), |m| {
            event_name(m).as_deref() == Some("BACKGROUND_JOB")
                && m.event_header("Job-UUID").as_deref() == Some(job_uuid.as_str())
        });
        let result = done
            .body
            .split("\n\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        assert!(result.starts_with("+OK "), "originate: {result}");
        let agent_leg = result.trim_start_matches("+OK ").trim().to_string();
        std::thread::sleep(Duration::from_secs(4));
        esl.send(&format!("bgapi uuid_kill {agent_leg}"));
    });
    assert!(
        c.events
            .iter()
            .any(|m| event_name(m).as_deref() == Some("BACKGROUND_JOB"))
    );
    assert!(
        c.csv_rows.iter().any(|r| r.contains("\"lead-42\"")),
        "{:#?}",
        c.csv_rows
    );
    let (uas_ok, uas_out) = uas.join().expect("sipp uas thread");
    assert!(uas_ok, "carrier UAS did not see 2 calls:\n{uas_out}");

    // FreeSWITCH shutting down: the event socket says goodbye with a disconnect notice
    let mark = esl.len();
    fsrig::rig_ok(&["stop"]);
    esl.wait_for(mark, Duration::from_secs(20), |m| {
        m.header("Content-Type") == Some("text/disconnect-notice")
    });
    save_raw("shutdown", &esl.bytes_since(mark));
}

//! `pbxlink demo` as a newcomer runs it: the real binary, no PBX, no network, no root. It
//! must end with every call log and every popup accepted by the stand-in.
//!
//! - Asterisk (the default): every call log and both popups of the ring-all queue call.
//! - FreeSWITCH (`--pbx freeswitch`): the payloads the demo prints as the stand-in accepted
//!   them are read back and checked field by field: the answered, missed, outbound, queue
//!   and click-to-call calls' logs (the click-to-call one with its LeadId), the four popups
//!   carrying the ids their call logs carry, and the disposition posted as CallNotes after
//!   the simulated mod_callcenter agent was set Available.

use std::process::Command;

use serde_json::{Value, json};

fn demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .arg("demo")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running pbxlink demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("answered HTTP"),
        "the stand-in refused a request:\n{stdout}"
    );
    stdout
}

#[test]
fn demo_delivers_every_call_log_and_popup() {
    let stdout = demo(&[]);
    assert!(
        stdout.contains("demo complete: 7 call logs went CDR file → SQLite outbox → LeadSquared stand-in; 2 agent popups"),
        "{stdout}"
    );
    for n in 1..=7 {
        assert!(
            stdout.contains(&format!("accepted call log {n}/7")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("accepted agent popup 2/2"), "{stdout}");
    // The transferred call: one log per agent, the second keyed by the call's id plus -2.
    assert!(
        stdout.contains("transferred to 101 at ")
            && stdout.contains("from 100 by blind transfer at "),
        "{stdout}"
    );
}

/// The JSON bodies printed after each line starting with `prefix`, in order.
fn printed(stdout: &str, prefix: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = stdout;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at..];
        let body_at = after.find('\n').map_or(after.len(), |n| n + 1);
        let mut stream = serde_json::Deserializer::from_str(&after[body_at..]).into_iter::<Value>();
        let value = stream
            .next()
            .unwrap_or_else(|| panic!("no JSON after {prefix:?}"))
            .unwrap_or_else(|e| panic!("bad JSON after {prefix:?}: {e}\n{stdout}"));
        out.push(value);
        rest = &after[body_at + stream.byte_offset()..];
    }
    out
}

/// `log` without the fields that change each run (ids, times).
fn stable(log: &Value) -> Value {
    let mut v = log.clone();
    let map = v.as_object_mut().expect("an object");
    for key in ["CallSessionId", "StartTime", "EndTime"] {
        assert!(map.remove(key).is_some(), "{key} missing: {log}");
    }
    v
}

fn time(log: &Value, field: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(
        log[field].as_str().unwrap_or_default(),
        "%Y-%m-%d %H:%M:%S",
    )
    .unwrap_or_else(|e| panic!("{field}: {e}: {log}"))
}

#[test]
fn freeswitch_demo_delivers_the_calls_of_its_story() {
    let stdout = demo(&["--pbx", "freeswitch"]);
    assert!(
        stdout.contains(
            "demo complete: 5 call logs went json_cdr files → SQLite outbox → LeadSquared stand-in; \
             4 agent popups went ESL → LeadSquared stand-in"
        ),
        "{stdout}"
    );
    let logs = printed(&stdout, "LeadSquared stand-in accepted call log ");
    let popups = printed(&stdout, "LeadSquared stand-in accepted agent popup ");
    let dispositions = printed(&stdout, "LeadSquared stand-in accepted disposition ");
    assert_eq!(logs.len(), 5, "{stdout}");
    assert_eq!(popups.len(), 4, "{stdout}");
    assert_eq!(dispositions.len(), 1, "{stdout}");

    let by_source = |n: &str| {
        logs.iter()
            .find(|l| l["SourceNumber"] == n)
            .unwrap_or_else(|| panic!("no call log from {n}: {logs:#?}"))
    };
    // (caller, caller name, agent or lead called, agent's UserId, direction, status, talk s):
    // 1. answered by agent 100 after 4 s; 2. rang agent 101 for 20 s; 3. agent 101 dialled a
    // lead; 4. the ring-all queue, one log for the agent who answered; 5. click to call,
    // agent 100 → the lead LeadSquared sent.
    #[rustfmt::skip]
    let cases = [
        ("+919611795983", Some("Priya Sharma"), "+919876500100", "a1b2c3d4-0100", "Inbound", "Answered", 91),
        ("+919845012345", None, "+919876500101", "a1b2c3d4-0101", "Inbound", "Missed", 0),
        ("+919876500101", None, "+919845011111", "a1b2c3d4-0101", "Outbound", "Answered", 180),
        ("+14155552671", Some("Dana"), "+919876500101", "a1b2c3d4-0101", "Inbound", "Answered", 58),
        ("+919876500100", None, "+919845022222", "a1b2c3d4-0100", "Outbound", "Answered", 64),
    ];
    for (source, name, destination, user, direction, status, talk) in cases {
        let mut want = json!({
            "SourceNumber": source, "DestinationNumber": destination, "UserId": user,
            "Direction": direction, "Status": status, "CallDuration": talk,
            "DisplayNumber": "+918044556677", "Tag": "Sales hotline",
        });
        if let Some(name) = name {
            want["CallerName"] = json!(name);
        }
        if source == "+919876500100" {
            want["LeadId"] = json!("lead-4711");
        }
        assert_eq!(
            stable(by_source(source)),
            want,
            "the call log of the call from {source}"
        );
    }
    let (answered, missed, queue, c2c) = (
        by_source("+919611795983"),
        by_source("+919845012345"),
        by_source("+14155552671"),
        by_source("+919876500100"),
    );
    assert_eq!(
        (time(answered, "EndTime") - time(answered, "StartTime")).num_seconds(),
        95
    );
    assert!(
        stdout.contains("originate {origination_uuid=")
            && stdout.contains("pbxlink_lead_id=lead-4711")
            && stdout.contains("}user/100 919845022222 XML default"),
        "the originate as FreeSWITCH received it:\n{stdout}"
    );

    // Popups: agent 100 and 101 for the direct calls, both agents for the queue call, each
    // with the id the call's log carries.
    let rung: Vec<(String, String)> = popups
        .iter()
        .map(|p| {
            (
                p["CallSessionId"].as_str().unwrap_or_default().to_owned(),
                p["DestinationNumber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let id = |log: &Value| log["CallSessionId"].as_str().unwrap_or_default().to_owned();
    let mut want = vec![
        (id(answered), "+919876500100".to_owned()),
        (id(missed), "+919876500101".to_owned()),
        (id(queue), "+919876500100".to_owned()),
        (id(queue), "+919876500101".to_owned()),
    ];
    let mut got = rung.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{popups:#?}");
    for p in &popups {
        assert_eq!(p["DisplayNumber"], "+918044556677", "{p}");
    }

    // The disposition: CallNotes on the click-to-call call's log, agent 100 freed.
    let d = &dispositions[0];
    assert_eq!(d["CallSessionId"], c2c["CallSessionId"], "{d}");
    assert_eq!(d["CallNotes"], "Interested", "{d}");
    assert_eq!(d["LeadId"], "lead-4711", "{d}");
    assert!(
        stdout.contains("callcenter_config agent set status 100 'Available' → mod_callcenter agent 100 is Available (Waiting)"),
        "{stdout}"
    );
}

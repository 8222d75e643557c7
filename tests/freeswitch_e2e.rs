//! FreeSWITCH end to end: the real `pbxlink run` binary with `[freeswitch]` and
//! `[freeswitch.esl]`, the LeadSquared stand-in for the CRM, real calls placed on the real
//! FreeSWITCH 1.10.12 rig (`tests/freeswitch/rig.sh`) with sipp as the carrier.
//!
//! For each call-log source (`json_cdr`, `cdr_csv` with the rig's `pbxlink` template, `esl`,
//! `both` = esl + json_cdr reconciled) a fresh daemon and store:
//! - an answered inbound call (DID 4930100 → agent 100) and a missed one (DID 4930103 →
//!   agent 103, who never answers) reach the stand-in as exactly one call log each, checked
//!   field by field;
//! - with `json_cdr` also: a ring-all queue call (DID 4930200, agents 100 and 101) pops both
//!   agents once each with the call log's `CallSessionId`; click to call over HTTP gives an
//!   Outbound call log carrying the `LeadId`; a disposition makes the mod_callcenter agent
//!   `Available` (read back with `callcenter_config agent get status`); click to call to a
//!   user FreeSWITCH's directory lacks is a 502 naming `SUBSCRIBER_ABSENT`;
//! - with `esl` also: FreeSWITCH restarts, pbxlink logs in again, the next call pops and is
//!   logged;
//! - `/metrics` shows where the logs came from (`pbxlink_esl_calls_logged_total`,
//!   `pbxlink_calls_reconciled_total{result="merged"}`).
//!
//! Root only (the rig is a chroot); otherwise a loud SKIPPED banner. Holds the rig lock
//! (`/var/tmp/pbxlink-freeswitch.lock`) for its whole run.

mod fsrig;

use std::path::Path;
use std::time::{Duration, Instant};

use fsrig::{LEAD, Run, TOKEN, lead_call, logs_where, new_standin, time_of};
use pbxlink::crm::leadsquared::standin::StandIn;
use serde_json::{Value, json};

const AGENT_100: &str = "+4915100000100";
const AGENT_101: &str = "+4915100000101";
const AGENT_103: &str = "+4915100000103";
const DIRECT_DID: &str = "4930100";
const MISSED_DID: &str = "4930103";
const QUEUE_DID: &str = "4930200";

/// The virtual numbers and agents of these tests' configuration.
fn directory() -> String {
    format!(
        "[[virtual_numbers]]\nnumber = \"+{DIRECT_DID}\"\ntag = \"direct\"\n\n\
         [[virtual_numbers]]\nnumber = \"+{MISSED_DID}\"\ntag = \"support\"\n\n\
         [[virtual_numbers]]\nnumber = \"+{QUEUE_DID}\"\ntag = \"sales\"\n\n\
         [[agents]]\nextension = \"100\"\nphone = \"{AGENT_100}\"\nuser_id = \"u-100\"\n\n\
         [[agents]]\nextension = \"101\"\nphone = \"{AGENT_101}\"\nuser_id = \"u-101\"\n\n\
         [[agents]]\nextension = \"103\"\nphone = \"{AGENT_103}\"\nuser_id = \"u-103\"\n\n\
         [[agents]]\nextension = \"109\"\nphone = \"+4915100000109\"\n\n"
    )
}

/// The popups of calls to `did`.
fn popups_of(st: &StandIn, did: &str) -> Vec<Value> {
    st.accepted_popups()
        .into_iter()
        .filter(|p| p["DisplayNumber"] == format!("+{did}"))
        .collect()
}

/// The times of `log` lie within `placed ..= over` and it lasted `length` seconds (± 2).
fn check_times(
    log: &Value,
    placed: chrono::DateTime<chrono::Utc>,
    length: std::ops::RangeInclusive<i64>,
) {
    let over = chrono::Utc::now();
    let (start, end) = (time_of(log, "StartTime"), time_of(log, "EndTime"));
    let slack = chrono::Duration::seconds(2);
    assert!(
        start >= placed - slack && end <= over + slack && start <= end,
        "StartTime/EndTime outside {placed} .. {over}: {log}"
    );
    let secs = (end - start).num_seconds();
    assert!(
        length.contains(&secs),
        "the call lasted {secs} s, not {length:?}: {log}"
    );
}

/// Places the answered and the missed inbound call and checks their logs field by field;
/// returns their ids.
async fn answered_and_missed(run: &Run, scenario: &Path, source: &str) -> Vec<String> {
    // Answered: DID 4930100 → agent 100 (answers after 2.5 s), the lead hangs up 3 s later.
    let placed = chrono::Utc::now();
    let (ok, out) = lead_call(scenario, DIRECT_DID, 3000, "25111").await;
    assert!(ok, "sipp answered call failed:\n{out}");
    let log = run
        .wait_for(Duration::from_secs(40), "the answered call's log", |st| {
            logs_where(st, |l| l["DisplayNumber"] == format!("+{DIRECT_DID}"))
                .into_iter()
                .next()
        })
        .await;
    eprintln!("[fs_e2e] {source}: answered call log {log}");
    check_times(&log, placed, 4..=8);
    let talk = log["CallDuration"].as_i64().unwrap_or(-1);
    assert!((2..=5).contains(&talk), "talk {talk} s: {log}");
    let answered_id = log["CallSessionId"].as_str().expect("id").to_owned();
    let mut want = json!({
        "SourceNumber": LEAD,
        "DestinationNumber": AGENT_100,
        "DisplayNumber": format!("+{DIRECT_DID}"),
        "StartTime": log["StartTime"],
        "EndTime": log["EndTime"],
        "CallDuration": talk,
        "Status": "Answered",
        "Direction": "Inbound",
        "CallSessionId": answered_id,
        "Tag": "direct",
        "UserId": "u-100",
        "CallerName": LEAD,
    });
    if log.get("ResourceURL").is_some() {
        want["ResourceURL"] = log["ResourceURL"].clone();
        let url = log["ResourceURL"].as_str().unwrap_or_default();
        assert!(url.ends_with(".wav"), "{log}");
    }
    assert_eq!(
        log, want,
        "{source}: the answered call's log, field by field"
    );

    // Missed: DID 4930103 → agent 103, whose phone rings and never answers.
    let placed = chrono::Utc::now();
    let _ = lead_call(scenario, MISSED_DID, 1000, "25112").await;
    let log = run
        .wait_for(Duration::from_secs(60), "the missed call's log", |st| {
            logs_where(st, |l| l["DisplayNumber"] == format!("+{MISSED_DID}"))
                .into_iter()
                .next()
        })
        .await;
    eprintln!("[fs_e2e] {source}: missed call log {log}");
    check_times(&log, placed, 0..=45);
    let missed_id = log["CallSessionId"].as_str().expect("id").to_owned();
    let mut want = json!({
        "SourceNumber": LEAD,
        "DestinationNumber": AGENT_103,
        "DisplayNumber": format!("+{MISSED_DID}"),
        "StartTime": log["StartTime"],
        "EndTime": log["EndTime"],
        "CallDuration": 0,
        "Status": "Missed",
        "Direction": "Inbound",
        "CallSessionId": missed_id,
        "Tag": "support",
        "UserId": "u-103",
        "CallerName": LEAD,
    });
    for optional in ["ResourceURL"] {
        if log.get(optional).is_some() {
            want[optional] = log[optional].clone();
        }
    }
    assert_eq!(log, want, "{source}: the missed call's log, field by field");
    // Agent 100 popped once, with the id the call log carries.
    let popups = popups_of(&run.standin, DIRECT_DID);
    assert_eq!(popups.len(), 1, "{source}: {popups:#?}");
    assert_eq!(
        popups[0]["CallSessionId"],
        answered_id.as_str(),
        "{popups:#?}"
    );
    assert_eq!(popups[0]["DestinationNumber"], AGENT_100, "{popups:#?}");
    vec![answered_id, missed_id]
}

/// Waits past the settle time, then: exactly one log per call, and no other log.
async fn exactly_once(run: &Run, ids: &[String], source: &str) {
    tokio::time::sleep(Duration::from_secs(8)).await;
    let logs: Vec<Value> = run
        .standin
        .accepted_call_logs()
        .into_iter()
        .filter(|l| l.get("CallNotes").is_none())
        .collect();
    for id in ids {
        let n = logs
            .iter()
            .filter(|l| l["CallSessionId"] == id.as_str())
            .count();
        assert_eq!(n, 1, "{source}: call {id} posted {n} times: {logs:#?}");
    }
    assert_eq!(
        logs.len(),
        ids.len(),
        "{source}: a call log for a call that was not placed: {logs:#?}\n{}",
        run.log_tail()
    );
}

/// FreeSWITCH restarts: pbxlink logs in again, and the next call pops and is logged.
async fn after_restart(run: &Run, scenario: &Path) -> String {
    fsrig::rig_ok(&["restart"]);
    let started = Instant::now();
    loop {
        let (_, metrics) = run.get(&format!("/metrics?token={TOKEN}")).await;
        if metrics
            .lines()
            .any(|l| l == "pbxlink_esl_reconnects_total 1")
            && metrics.lines().any(|l| l == "pbxlink_esl_connected 1")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no ESL reconnect after the restart\n{metrics}\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("[fs_e2e] esl: FreeSWITCH restarted, pbxlink logged in again");
    let (ok, out) = lead_call(scenario, DIRECT_DID, 2000, "25114").await;
    assert!(ok, "sipp call after the restart failed:\n{out}");
    let popup = run
        .wait_for(Duration::from_secs(20), "a popup after the restart", |st| {
            popups_of(st, DIRECT_DID).get(1).cloned()
        })
        .await;
    assert_eq!(popup["DestinationNumber"], AGENT_100, "{popup}");
    let id = popup["CallSessionId"].as_str().expect("id").to_owned();
    let log = run
        .wait_for(
            Duration::from_secs(40),
            "the call log after the restart",
            |st| {
                logs_where(st, |l| l["CallSessionId"] == id.as_str())
                    .into_iter()
                    .next()
            },
        )
        .await;
    assert_eq!(log["Status"], "Answered", "{log}");
    assert_eq!(log["DestinationNumber"], AGENT_100, "{log}");
    eprintln!("[fs_e2e] esl: after the restart: popup and call log {log}");
    id
}

/// `/metrics` holds each of `lines`.
async fn metrics_show(run: &Run, lines: &[String]) {
    let (status, metrics) = run.get(&format!("/metrics?token={TOKEN}")).await;
    assert_eq!(status, 200);
    for line in lines {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from\n{metrics}"
        );
    }
}

fn agent_status(agent: &str) -> String {
    fsrig::rig_ok(&[
        "cli",
        &format!("callcenter_config agent get status {agent}"),
    ])
    .trim()
    .to_owned()
}

#[test]
fn real_freeswitch_calls_reach_the_crm_once_from_json_cdr_cdr_csv_and_esl() {
    if !fsrig::root_or_skip(
        "tests/freeswitch_e2e.rs",
        "FreeSWITCH call logs, popups, click to call and dispositions through `pbxlink run`",
    ) {
        return;
    }
    let _rig = fsrig::install_and_start("freeswitch_e2e");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario());
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lead = fsrig::lead_scenario(tmp.path(), LEAD);

    // 1. json_cdr: answered, missed, the ring-all queue, click to call, disposition.
    let standin = new_standin().await;
    let mut run = Run::start("json_cdr", &standin, &directory()).await;
    let mut ids = answered_and_missed(&run, &lead, "json_cdr").await;
    queue_call(&run, &lead, &mut ids).await;
    click_to_call_and_disposition(&run, &mut ids).await;
    exactly_once(&run, &ids, "json_cdr").await;
    metrics_show(
        &run,
        &[
            "pbxlink_esl_connected 1".to_owned(),
            "pbxlink_esl_calls_logged_total 0".to_owned(),
            "pbxlink_popups_total{outcome=\"sent\"} 4".to_owned(),
        ],
    )
    .await;
    run.daemon.stop();

    // 2. cdr_csv (the rig's pbxlink template), 3. esl and 4. both (esl + json_cdr,
    // reconciled): answered and missed.
    for source in ["cdr_csv", "esl", "both"] {
        let standin = new_standin().await;
        let mut run = Run::start(source, &standin, &directory()).await;
        let mut ids = answered_and_missed(&run, &lead, source).await;
        if source == "esl" {
            ids.push(after_restart(&run, &lead).await);
        }
        exactly_once(&run, &ids, source).await;
        // The logs came from the source named: the ESL tracker's figure says which.
        let expect = match source {
            "esl" => "pbxlink_esl_calls_logged_total 3",
            "both" => "pbxlink_calls_reconciled_total{result=\"merged\"} 2",
            _ => "pbxlink_esl_calls_logged_total 0",
        };
        metrics_show(
            &run,
            &["pbxlink_esl_connected 1".to_owned(), expect.to_owned()],
        )
        .await;
        run.daemon.stop();
    }
}

/// A ring-all queue call: agents 100 and 101 pop once each with the call's id, 101 answers.
async fn queue_call(run: &Run, scenario: &Path, ids: &mut Vec<String>) {
    let (ok, out) = lead_call(scenario, QUEUE_DID, 6000, "25113").await;
    assert!(ok, "sipp queue call failed:\n{out}");
    let popups = run
        .wait_for(
            Duration::from_secs(20),
            "two popups for the queue call",
            |st| {
                let p = popups_of(st, QUEUE_DID);
                (p.len() >= 2).then_some(p)
            },
        )
        .await;
    let call_id = popups[0]["CallSessionId"].as_str().expect("id").to_owned();
    let mut rung: Vec<&str> = popups
        .iter()
        .map(|p| p["DestinationNumber"].as_str().unwrap_or_default())
        .collect();
    rung.sort_unstable();
    assert_eq!(rung, [AGENT_100, AGENT_101], "{popups:#?}");
    for p in &popups {
        assert_eq!(p["CallSessionId"], call_id.as_str(), "{popups:#?}");
        assert_eq!(p["SourceNumber"], LEAD, "{p}");
        assert_eq!(p["DisplayNumber"], format!("+{QUEUE_DID}"), "{p}");
    }
    let log = run
        .wait_for(Duration::from_secs(40), "the queue call's log", |st| {
            logs_where(st, |l| l["CallSessionId"] == call_id.as_str())
                .into_iter()
                .next()
        })
        .await;
    eprintln!("[fs_e2e] json_cdr: queue popups for {rung:?}, log {log}");
    assert_eq!(log["Direction"], "Inbound", "{log}");
    assert_eq!(log["Status"], "Answered", "{log}");
    assert_eq!(log["SourceNumber"], LEAD, "{log}");
    assert_eq!(log["DestinationNumber"], AGENT_101, "{log}");
    assert_eq!(log["Tag"], "sales", "{log}");
    let mine = run
        .standin
        .accepted_popups()
        .into_iter()
        .filter(|p| p["CallSessionId"] == call_id.as_str())
        .count();
    assert_eq!(mine, 2, "one popup per agent");
    ids.push(call_id);
}

/// Click to call over HTTP (agent 101, then the lead through the carrier's UAS); then a
/// disposition frees agent 100, put On Break first.
async fn click_to_call_and_disposition(run: &Run, ids: &mut Vec<String>) {
    let uas = tokio::task::spawn_blocking(|| fsrig::carrier_uas(1, 60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Agent 109 is configured in pbxlink but FreeSWITCH's directory has no user 109: a 502
    // with FreeSWITCH's cause, at once.
    let (status, body) = run
        .get(&format!(
            "/click-to-call?token={TOKEN}&agentNumber=%2B4915100000109&PhoneNumberWithCountryCode=%2B4930123457\
             &leadId=lead-41&virtualNumber={DIRECT_DID}"
        ))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("SUBSCRIBER_ABSENT"), "{body}");
    eprintln!("[fs_e2e] json_cdr: click to call to an unknown user: 502 {body}");
    let lead_out = "+4930123457";
    let (status, body) = run
        .get(&format!(
            "/click-to-call?token={TOKEN}&agentNumber=%2B4915100000101&PhoneNumberWithCountryCode=%2B4930123457\
             &leadId=lead-42&virtualNumber={DIRECT_DID}"
        ))
        .await;
    assert_eq!(
        (status, body.trim()),
        (200, "OK"),
        "click to call answered\n{}",
        run.log_tail()
    );
    // The carrier's UAS never hangs up: the call is ended after 4 s of talk.
    tokio::time::sleep(Duration::from_secs(4)).await;
    fsrig::rig_ok(&["cli", "hupall NORMAL_CLEARING"]);
    let out = run
        .wait_for(
            Duration::from_secs(60),
            "the click-to-call call log",
            |st| {
                logs_where(st, |l| l["Direction"] == "Outbound")
                    .into_iter()
                    .next()
            },
        )
        .await;
    eprintln!("[fs_e2e] json_cdr: click to call log {out}");
    assert_eq!(out["LeadId"], "lead-42", "{out}");
    assert_eq!(out["DestinationNumber"], lead_out, "{out}");
    assert_eq!(out["SourceNumber"], AGENT_101, "{out}");
    assert_eq!(out["UserId"], "u-101", "{out}");
    let out_id = out["CallSessionId"].as_str().expect("id").to_owned();
    let (uas_ok, uas_out) = uas.await.expect("uas task");
    assert!(
        uas_ok,
        "the carrier UAS did not get the lead's call:\n{uas_out}"
    );
    ids.push(out_id.clone());

    // Disposition: agent 100 On Break → Available.
    fsrig::rig_ok(&["cli", "callcenter_config agent set status 100 'On Break'"]);
    assert_eq!(agent_status("100"), "On Break");
    let (status, body) = run
        .get(&format!(
            "/disposition?token={TOKEN}&callSessionId={out_id}&dispositionValue=Interested&agentNumber=%2B4915100000100"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Available"), "{body}");
    assert_eq!(agent_status("100"), "Available", "after the disposition");
    run.wait_for(Duration::from_secs(20), "the disposition update", |st| {
        logs_where(st, |l| {
            l["CallSessionId"] == out_id.as_str() && l["CallNotes"] == "Interested"
        })
        .into_iter()
        .next()
    })
    .await;
    eprintln!("[fs_e2e] json_cdr: disposition: agent 100 Available, CallNotes posted");
}

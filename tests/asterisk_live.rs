//! The live features against a REAL Asterisk 22 (`tests/asterisk/rig.sh`): the real
//! `pbxlink run` binary with `[asterisk.ami]` and `[http]`, the LeadSquared stand-in for the
//! CRM, real calls placed in Asterisk.
//!
//! 1. An inbound call into the ring-all queue `sales` (agents 100 and 101) pops both agents
//!    (two popups, each agent's number, the call's id), agent 100 answers: ONE call log,
//!    agent 100, with the popup's CallSessionId.
//! 2. Click to call over HTTP makes Asterisk ring agent 100 and then the lead: an Outbound
//!    call log with the LeadId given.
//! 3. A disposition for that call unpauses agent 100's paused queue member (checked with
//!    `QueueStatus`) and posts the disposition as CallNotes.
//! 4. `/route` answers the owner's extension from the stand-in, and the fallback within the
//!    deadline while the CRM stalls.
//! 5. Asterisk restarts: pbxlink logs in again and the next call still pops.
//!
//! `call_log_source = "ami"`: every call log here is built from AMI events (the CDR path has
//! its own real-Asterisk test, tests/asterisk_e2e.rs); both paths key a call by its
//! Linkedid, so with `"both"` a call is still posted once.
//!
//! Needs root (the rig is a chroot); without root it prints a loud SKIPPED message. It holds
//! `/var/tmp/pbxlink-asterisk.lock` for its whole run (one Asterisk for all such tests).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pbxlink::crm::leadsquared::standin::{Behaviour, Expectations, StandIn};
use serde_json::{Value, json};

mod daemon_watch;
mod rig;
use daemon_watch::DaemonWatch;
use rig::{CUSTOM_COLUMNS, RigGuard, RigLock, rig_ok, rig_root, rig_tz, root_or_skip};

const TOKEN: &str = "live-test-token";
const LEAD: &str = "+919611795983";
const AGENT_100: &str = "+919876500100";
const AGENT_101: &str = "+919876500101";
const QUEUE_DID: &str = "918044556603";
const DIRECT_DID: &str = "918044556677";

/// Stops Asterisk (and the daemon) when dropped, also when the test panics.
struct Guard {
    daemon: Option<Child>,
    /// Dropped after `drop` has killed the daemon: stops Asterisk.
    _rig: RigGuard,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn live_asterisk_popups_click_to_call_disposition_route_restart() {
    if !root_or_skip("tests/asterisk_live.rs", "The live features were") {
        return;
    }
    let _lock = RigLock::acquire("live", "asterisk_e2e|tests/ami");
    rig_ok(&["install"]);
    rig_ok(&["start"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario());
}

fn popups_of(st: &StandIn, call_id: Option<&str>) -> Vec<Value> {
    st.accepted_popups()
        .into_iter()
        .filter(|p| call_id.is_none_or(|id| p["CallSessionId"] == id))
        .collect()
}

fn logs_of(st: &StandIn, call_id: &str) -> Vec<Value> {
    st.accepted_call_logs()
        .into_iter()
        .filter(|l| l["CallSessionId"] == call_id)
        .collect()
}

/// Every field of the queue call's log (ring-all, agent 100 answers after about a second,
/// the lead hangs up 8 s after the call started); times within when the test placed it and
/// when the log arrived; no other field.
fn check_queue_call_log(
    log: &Value,
    call_id: &str,
    placed: chrono::DateTime<chrono::Utc>,
    over: chrono::DateTime<chrono::Utc>,
) {
    let time = |field: &str| {
        let text = log[field].as_str().unwrap_or_default();
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("{field} {text:?}: {e}: {log}"))
            .and_utc()
    };
    let (start, end) = (time("StartTime"), time("EndTime"));
    let slack = chrono::Duration::seconds(1);
    assert!(
        start >= placed - slack && end <= over + slack && start <= end,
        "StartTime/EndTime (UTC) outside {placed} .. {over}: {log}"
    );
    let length = (end - start).num_seconds();
    let talk = log["CallDuration"]
        .as_i64()
        .unwrap_or_else(|| panic!("CallDuration is not a number: {log}"));
    assert!(
        (5..=9).contains(&length) && talk >= 4 && talk <= length,
        "the 8 s call lasted {length} s with {talk} s talk: {log}"
    );
    let want = json!({
        "SourceNumber": LEAD,
        "DestinationNumber": AGENT_100,
        "DisplayNumber": format!("+{QUEUE_DID}"),
        "StartTime": log["StartTime"],
        "EndTime": log["EndTime"],
        "CallDuration": talk,
        "Status": "Answered",
        "Direction": "Inbound",
        "CallSessionId": call_id,
        "Tag": "sales",
        "UserId": "u-100",
    });
    assert_eq!(log, &want, "the queue call's call log, field by field");
}

fn member_paused(interface: &str) -> Option<bool> {
    let out = rig_ok(&["ami", "QueueStatus", "Queue: sales"]);
    let mut current: Option<String> = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(loc) = line.strip_prefix("Location: ") {
            current = Some(loc.to_owned());
        }
        if let (Some(loc), Some(p)) = (&current, line.strip_prefix("Paused: ")) {
            if loc == interface {
                return Some(p == "1");
            }
        }
    }
    None
}

async fn scenario() {
    let standin = StandIn::start(
        "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
        Expectations {
            url_key: "live-key".into(),
            access_keys: Some(("ak".into(), "sk".into())),
            reject_call_ids: vec![],
        },
    )
    .await
    .expect("stand-in");
    standin.set_route_owner(LEAD, json!({"EmailAddress": "asha@example.com"}));
    let dir = tempfile::Builder::new()
        .prefix("pbxlink-live-")
        .tempdir()
        .expect("tempdir");
    let port = free_port();
    let cdr = rig_root().join("var/log/asterisk/cdr-custom/Master.csv");
    let mut toml = String::new();
    let _ = write!(
        toml,
        "[store]\npath = {db:?}\n\n\
         [leadsquared]\ncall_log_url = {cl:?}\nagent_popup_url = {pop:?}\ncall_route_url = {route:?}\n\
         access_key = \"ak\"\nsecret_key = \"sk\"\ndefault_country_code = \"91\"\n\n\
         [[virtual_numbers]]\nnumber = \"{QUEUE_DID}\"\ntag = \"sales\"\n\n\
         [[virtual_numbers]]\nnumber = \"{DIRECT_DID}\"\ntag = \"direct\"\n\n\
         [[agents]]\nextension = \"100\"\nphone = \"{AGENT_100}\"\nemail = \"ravi@example.com\"\nuser_id = \"u-100\"\n\n\
         [[agents]]\nextension = \"101\"\nphone = \"{AGENT_101}\"\nemail = \"asha@example.com\"\nuser_id = \"u-101\"\n\n\
         [[agents]]\nextension = \"102\"\nphone = \"+919876500102\"\n\n\
         [asterisk]\ncdr_csv = {cdr:?}\ncdr_format = \"custom\"\ncdr_columns = [{cols}]\n\
         cdr_time_zone = {tz:?}\nsettle_ms = 2000\npoll_interval_ms = 200\ncall_log_source = \"ami\"\n\n\
         [asterisk.ami]\nusername = \"pbxlink\"\nsecret = \"pbxlink-test-secret\"\n\n\
         [asterisk.originate]\nagent_channel = \"Local/{{extension}}@agents\"\ncontext = \"from-internal\"\n\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\nroute_fallback = \"600\"\n",
        db = dir.path().join("pbxlink.db"),
        cl = standin.call_log_url(),
        pop = standin.agent_popup_url(),
        route = standin.call_route_url(),
        cols = CUSTOM_COLUMNS.map(|c| format!("{c:?}")).join(", "),
        tz = rig_tz(),
    );
    let (child, log) = daemon_watch::start_daemon(dir.path(), &toml);
    let mut guard = Guard {
        daemon: Some(child),
        _rig: RigGuard,
    };
    let live = DaemonWatch::new(port, TOKEN, &standin, log);
    live.wait_ready(Duration::from_secs(20)).await;
    eprintln!("[live] pbxlink ready (AMI logged in, store writable)");

    // 1. Ring-all queue: both agents pop, agent 100 answers, one call log.
    let placed = chrono::Utc::now();
    rig_ok(&["call-in", QUEUE_DID, LEAD, "8"]);
    let popups = live
        .wait_for(
            Duration::from_secs(20),
            "two popups for the queue call",
            |st| {
                let p = popups_of(st, None);
                (p.len() >= 2).then_some(p)
            },
        )
        .await;
    let call_id = popups[0]["CallSessionId"]
        .as_str()
        .expect("CallSessionId")
        .to_owned();
    let mut rung: Vec<&str> = popups
        .iter()
        .map(|p| p["DestinationNumber"].as_str().unwrap_or_default())
        .collect();
    rung.sort_unstable();
    assert_eq!(rung, [AGENT_100, AGENT_101], "{popups:#?}");
    for p in &popups {
        assert_eq!(p["CallSessionId"], call_id.as_str(), "{popups:#?}");
        assert_eq!(p["SourceNumber"], LEAD, "{p}");
        assert_eq!(p["DisplayNumber"], "+918044556603", "{p}");
        assert_eq!(p["Tag"], "sales", "{p}");
    }
    eprintln!("[live] queue call {call_id}: popups for {rung:?}");
    let logs = live
        .wait_for(Duration::from_secs(40), "the queue call's call log", |st| {
            let l = logs_of(st, &call_id);
            (!l.is_empty()).then_some(l)
        })
        .await;
    let log = &logs[0];
    let over = chrono::Utc::now();
    eprintln!("[live] queue call log: {log}");
    check_queue_call_log(log, &call_id, placed, over);
    assert_eq!(
        popups_of(&standin, Some(&call_id)).len(),
        2,
        "one popup per agent"
    );

    // 2. Click to call: agent 100 first, then the lead, with the lead id.
    rig_ok(&[
        "ami",
        "QueuePause",
        "Queue: sales",
        "Interface: Local/100@agents",
        "Paused: true",
        "Reason: wrap-up",
    ]);
    assert_eq!(
        member_paused("Local/100@agents"),
        Some(true),
        "paused first"
    );
    let lead_out = "+919611795984";
    let (status, body) = live
        .get(&format!(
            "/click-to-call?token={TOKEN}&agentNumber=%2B919876500100&PhoneNumberWithCountryCode=%2B919611795984\
             &leadId=lead-42&virtualNumber={DIRECT_DID}"
        ))
        .await;
    assert_eq!((status, body.trim()), (200, "OK"), "click to call answered");
    let out = live
        .wait_for(
            Duration::from_secs(40),
            "the click-to-call call log",
            |st| {
                st.accepted_call_logs()
                    .into_iter()
                    .find(|l| l["Direction"] == "Outbound" && l["DestinationNumber"] == lead_out)
            },
        )
        .await;
    assert_eq!(out["LeadId"], "lead-42", "{out}");
    assert_eq!(out["SourceNumber"], AGENT_100, "{out}");
    assert_eq!(out["DisplayNumber"], "+918044556677", "{out}");
    assert_eq!(out["Status"], "Answered", "{out}");
    let out_id = out["CallSessionId"].as_str().expect("id").to_owned();
    eprintln!("[live] click to call {out_id}: {out}");

    // 3. Disposition: unpauses agent 100 and posts the notes.
    let (status, body) = live
        .get(&format!(
            "/disposition?token={TOKEN}&callSessionId={out_id}&dispositionValue=Interested&agentNumber=%2B919876500100"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("unpaused"), "{body}");
    assert_eq!(
        member_paused("Local/100@agents"),
        Some(false),
        "QueueStatus after the disposition"
    );
    live.wait_for(Duration::from_secs(20), "the disposition update", |st| {
        st.accepted_call_logs()
            .into_iter()
            .find(|l| l["CallSessionId"] == out_id.as_str() && l["CallNotes"] == "Interested")
    })
    .await;
    eprintln!("[live] disposition: member unpaused, CallNotes posted");

    // 4. /route: the owner's extension; the fallback in time while the CRM stalls.
    let (status, body) = live
        .get(&format!(
            "/route?token={TOKEN}&caller=%2B919611795983&did={QUEUE_DID}"
        ))
        .await;
    assert_eq!((status, body.as_str()), (200, "101"));
    standin.set_behaviour(Behaviour::Stall(Duration::from_secs(5)));
    let started = Instant::now();
    let (status, body) = live
        .get(&format!(
            "/route?token={TOKEN}&caller=09611700000&did={QUEUE_DID}"
        ))
        .await;
    let took = started.elapsed();
    standin.set_behaviour(Behaviour::Healthy);
    assert_eq!((status, body.as_str()), (200, "600"));
    assert!(
        took < Duration::from_millis(2500),
        "fallback after {took:?}"
    );
    eprintln!("[live] /route: owner 101; fallback after {took:?} while the CRM stalled");

    // 5. Asterisk restarts; the next call still pops.
    rig_ok(&["stop"]);
    rig_ok(&["start"]);
    live.wait_ready(Duration::from_secs(40)).await;
    let before = popups_of(&standin, None).len();
    rig_ok(&["call-in", DIRECT_DID, "+919611795985", "3"]);
    let popup = live
        .wait_for(Duration::from_secs(20), "a popup after the restart", |st| {
            let p = popups_of(st, None);
            (p.len() > before).then(|| p[before].clone())
        })
        .await;
    assert_eq!(popup["DestinationNumber"], AGENT_100, "{popup}");
    assert_eq!(popup["SourceNumber"], "+919611795985", "{popup}");
    // This call is the marker: once its call log arrived, every call before it has been
    // settled and flushed, so a duplicate of the queue call would be here by now.
    let marker_id = popup["CallSessionId"].as_str().expect("id").to_owned();
    live.wait_for(
        Duration::from_secs(40),
        "the marker call's call log",
        |st| (!logs_of(st, &marker_id).is_empty()).then_some(()),
    )
    .await;
    assert_eq!(
        logs_of(&standin, &call_id).len(),
        1,
        "one call log per call (the queue call, checked after the marker call's log)"
    );

    let (status, metrics) = live.get(&format!("/metrics?token={TOKEN}")).await;
    assert_eq!(status, 200);
    for line in [
        "pbxlink_ami_connected 1",
        "pbxlink_popups_total{outcome=\"sent\"} 3",
        "pbxlink_ami_reconnects_total 1",
        "pbxlink_http_requests_total{result=\"call_placed\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from\n{metrics}"
        );
    }
    // call_log_source = "ami": the queue call and the click to call came from AMI events.
    let from_ami: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pbxlink_ami_calls_logged_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    eprintln!("[live] calls logged from AMI events: {from_ami}");
    assert!(
        from_ami >= 2,
        "the call logs did not come from AMI events\n{metrics}"
    );
    let (status, _) = live.get("/metrics").await;
    assert_eq!(status, 401, "/metrics needs the token");
    // `pbxlink status` shows the same figures.
    let out = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["status", "--config"])
        .arg(dir.path().join("pbxlink.toml"))
        .output()
        .expect("pbxlink status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "  pbxlink_ami_connected 1",
        "  pbxlink_popups_total{outcome=\"sent\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    if let Some(mut child) = guard.daemon.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    // Stopped (its outbox drained on SIGTERM): still one call log per call.
    for id in [&call_id, &marker_id] {
        assert_eq!(logs_of(&standin, id).len(), 1, "call {id} posted once");
    }
    eprintln!("[live] all live scenarios passed");
}

//! Transfers against a REAL Asterisk 22 (`tests/asterisk/rig.sh`): three real `pbxlink run`
//! daemons on the same calls, one per `call_log_source` (`cdr`, `ami`, `both`), each posting
//! to its own LeadSquared stand-in; the calls are placed in Asterisk and transferred with
//! AMI actions (the rig's agents are Local channels, see tests/asterisk/README.md):
//!
//! 1. blind: DID 918044556610 → agent 110 answers; `BlindTransfer` to 111, who answers.
//! 2. attended: the same; `Atxfer` to 111, 111 answers the consultation, then 110 hangs up.
//! 3. no answer: `BlindTransfer` to 112, who never answers (the lead is dropped).
//! 4. follow-me: DID 918044556611 rings 112 for 4 s, then 111 answers.
//! 5. queue: DID 918044556612, ring-all queue 110 + 112, 110 answers and blind-transfers
//!    to 111.
//!
//! Every call log each stand-in received is checked field by field: one log per agent who
//! talked to the lead (`CallSessionId` `{linkedid}` then `{linkedid}-2`), that agent's number
//! and talk time, the call's DID, direction and status, and `CallNotes` naming the transfer
//! at the time the next log starts; none for the consultation, the target who did not
//! answer or the queue's ring leg. The transfer target's popup carries its log's id.
//!
//! Needs root (the rig is a chroot); without root it prints a loud SKIPPED message. Holds
//! `/var/tmp/pbxlink-asterisk.lock` for its whole run.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pbxlink::crm::leadsquared::standin::{Expectations, StandIn};
use serde_json::Value;

mod rig;
use rig::{
    CUSTOM_COLUMNS, RigGuard, RigLock, channel_counts, rig_ok, rig_root, rig_tz, root_or_skip,
};

const LEAD: &str = "+919611795983";
const TRANSFER_DID: &str = "918044556610";
const FOLLOW_ME_DID: &str = "918044556611";
const QUEUE_DID: &str = "918044556612";
const SOURCES: [&str; 3] = ["cdr", "ami", "both"];
/// Talk times of the two sources may differ by this much (whole-second CDR vs. events).
const SLACK_SECS: i64 = 1;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One daemon and the stand-in it posts to.
struct Daemon {
    source: &'static str,
    standin: StandIn,
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    async fn start(source: &'static str, dir: &Path) -> Daemon {
        let standin = StandIn::start(
            "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
            Expectations {
                url_key: format!("xfer-{source}"),
                access_keys: None,
                reject_call_ids: vec![],
            },
        )
        .await
        .expect("stand-in");
        let dir = dir.join(source);
        std::fs::create_dir_all(&dir).expect("dir");
        let port = free_port();
        let mut toml = String::new();
        let _ = write!(
            toml,
            "[store]\npath = {db:?}\n\n\
             [leadsquared]\ncall_log_url = {cl:?}\nagent_popup_url = {pop:?}\n\
             default_country_code = \"91\"\ntime_zone = \"Asia/Kolkata\"\n\n",
            db = dir.join("pbxlink.db"),
            cl = standin.call_log_url(),
            pop = standin.agent_popup_url(),
        );
        for did in [TRANSFER_DID, FOLLOW_ME_DID, QUEUE_DID] {
            let _ = write!(
                toml,
                "[[virtual_numbers]]\nnumber = \"{did}\"\ntag = \"t{did}\"\n\n"
            );
        }
        for ext in ["110", "111", "112"] {
            let _ = write!(
                toml,
                "[[agents]]\nextension = \"{ext}\"\nphone = \"+919876500{ext}\"\nuser_id = \"u-{ext}\"\n\n"
            );
        }
        let _ = write!(
            toml,
            "[asterisk]\ncdr_csv = {cdr:?}\ncdr_format = \"custom\"\ncdr_columns = [{cols}]\n\
             cdr_time_zone = {tz:?}\nsettle_ms = 2000\npoll_interval_ms = 200\n\
             call_log_source = \"{source}\"\nreconcile_wait_ms = 20000\n\n\
             [asterisk.ami]\nusername = \"pbxlink\"\nsecret = \"pbxlink-test-secret\"\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"xfer-token\"\n",
            cdr = rig_root().join("var/log/asterisk/cdr-custom/Master.csv"),
            cols = CUSTOM_COLUMNS.map(|c| format!("{c:?}")).join(", "),
            tz = rig_tz(),
        );
        let config = dir.join("pbxlink.toml");
        std::fs::write(&config, &toml).expect("config");
        let log = dir.join("pbxlink.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,pbxlink=debug")
            .stdout(File::create(&log).expect("log"))
            .stderr(File::options().append(true).open(&log).expect("log"))
            .spawn()
            .expect("pbxlink run");
        Daemon {
            source,
            standin,
            child,
            log,
            port,
        }
    }

    async fn wait_ready(&self, limit: Duration) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let url = format!("http://127.0.0.1:{}/readyz?token=xfer-token", self.port);
            if let Ok(r) = http.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "pbxlink ({}) not ready within {limit:?}\n{}",
                self.source,
                rig::tail_of(&self.log, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs_of(&self, call_id: &str) -> Vec<Value> {
        self.standin
            .accepted_call_logs()
            .into_iter()
            .filter(|l| {
                l["CallSessionId"]
                    .as_str()
                    .is_some_and(|id| id == call_id || id.starts_with(&format!("{call_id}-")))
            })
            .collect()
    }
}

/// The bridged `;1` half of agent `ext`'s Local channel (the one in the lead's bridge).
async fn bridged_agent_channel(ext: &str) -> String {
    let prefix = format!("Local/{ext}@agents-");
    let started = Instant::now();
    loop {
        let out = rig_ok(&["rx", "core show channels concise"]);
        let found = out.lines().find_map(|line| {
            let fields: Vec<&str> = line.split('!').collect();
            let channel = fields.first()?;
            let bridged = fields.get(12).is_some_and(|b| !b.is_empty());
            (channel.starts_with(&prefix) && channel.ends_with(";1") && bridged)
                .then(|| (*channel).to_owned())
        });
        if let Some(channel) = found {
            return channel;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "agent {ext} not bridged within 15 s:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn calls_over(limit: Duration) {
    let started = Instant::now();
    while channel_counts().0 > 0 {
        assert!(started.elapsed() < limit, "calls still up after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ami(args: &[&str]) {
    let mut all = vec!["ami"];
    all.extend_from_slice(args);
    let reply = rig_ok(&all);
    assert!(reply.contains("Response: Success"), "{args:?}: {reply}");
}

/// The linkedid of the newest call in cdr-custom (party A's row: uniqueid = linkedid).
fn newest_call_id() -> String {
    let text = std::fs::read_to_string(rig_root().join("var/log/asterisk/cdr-custom/Master.csv"))
        .unwrap_or_default();
    // ... "uniqueid","userfield","linkedid",sequence,"peeraccount","recordingfile"
    text.lines()
        .filter_map(|l| Some(l.split(',').rev().nth(3)?.trim_matches('"').to_owned()))
        .max_by(|a, b| {
            let n = |s: &str| s.parse::<f64>().unwrap_or(0.0);
            n(a).total_cmp(&n(b))
        })
        .expect("a CDR row")
}

/// What one scenario must give at every stand-in: (agent extension, talk seconds, notes
/// start) per log, in order.
struct Expected {
    name: &'static str,
    did: &'static str,
    logs: Vec<(&'static str, i64, Option<&'static str>)>,
}

fn text<'a>(log: &'a Value, key: &str) -> &'a str {
    log[key].as_str().unwrap_or_default()
}

/// Checks every field of the logs one stand-in received for one call.
fn check(daemon: &Daemon, call_id: &str, want: &Expected) -> Result<(), String> {
    let mut logs = daemon.logs_of(call_id);
    logs.sort_by_key(|l| text(l, "CallSessionId").to_owned());
    let src = daemon.source;
    if logs.len() != want.logs.len() {
        return Err(format!(
            "{}: {src}: {} logs, want {}: {logs:#?}",
            want.name,
            logs.len(),
            want.logs.len()
        ));
    }
    let n = logs.len();
    for (i, (log, (ext, talk, notes))) in logs.iter().zip(&want.logs).enumerate() {
        let fail = |what: String| {
            Err(format!(
                "{} {src} log {}: {what}\n{log:#}",
                want.name,
                i + 1
            ))
        };
        let id = if i == 0 {
            call_id.to_owned()
        } else {
            format!("{call_id}-{}", i + 1)
        };
        if text(log, "CallSessionId") != id {
            return fail(format!("CallSessionId, want {id}"));
        }
        for (key, value) in [
            ("SourceNumber", LEAD.to_owned()),
            ("DestinationNumber", format!("+919876500{ext}")),
            ("DisplayNumber", format!("+{}", want.did)),
            ("Direction", "Inbound".to_owned()),
            ("Status", "Answered".to_owned()),
            ("UserId", format!("u-{ext}")),
            ("Tag", format!("t{}", want.did)),
        ] {
            if text(log, key) != value {
                return fail(format!("{key}, want {value}"));
            }
        }
        let duration = log["CallDuration"].as_i64().unwrap_or(-1);
        if (duration - talk).abs() > SLACK_SECS {
            return fail(format!("CallDuration, want {talk} ± {SLACK_SECS}"));
        }
        let (start, end) = (text(log, "StartTime"), text(log, "EndTime"));
        if start.len() != 19 || end < start {
            return fail("StartTime/EndTime".into());
        }
        let got_notes = log.get("CallNotes").and_then(Value::as_str);
        match (notes, got_notes) {
            (None, None) => {}
            (Some(want_notes), Some(got)) if got.starts_with(want_notes) => {
                if n > 1 && !got.ends_with(&format!("({} of {n})", i + 1)) {
                    return fail("CallNotes' (i of n)".into());
                }
                // The transfer's time is when the next log starts (the handover).
                if let Some(next) = logs.get(i + 1) {
                    let at = &text(next, "StartTime")[11..];
                    if !got.contains(&format!(" at {at} ")) {
                        return fail(format!("CallNotes' time, want {at}"));
                    }
                }
                if i > 0 {
                    let at = &start[11..];
                    if !got.contains(&format!(" at {at}")) {
                        return fail(format!("CallNotes' time, want this log's start {at}"));
                    }
                }
            }
            _ => return fail(format!("CallNotes, want {notes:?}")),
        }
        let keys: Vec<&String> = log
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        let allowed = [
            "SourceNumber",
            "DestinationNumber",
            "DisplayNumber",
            "StartTime",
            "EndTime",
            "CallDuration",
            "Status",
            "Direction",
            "CallSessionId",
            "CallNotes",
            "UserId",
            "Tag",
        ];
        if let Some(extra) = keys.iter().find(|k| !allowed.contains(&k.as_str())) {
            return fail(format!("unexpected field {extra}"));
        }
    }
    Ok(())
}

#[test]
fn transfers_give_one_call_log_per_agent_from_cdr_ami_and_both() {
    if !root_or_skip("tests/asterisk_transfers.rs", "Transfers were") {
        return;
    }
    let _lock = RigLock::acquire("transfers", "asterisk_e2e|tests/ami");
    rig_ok(&["install"]);
    rig_ok(&["start"]);
    let _rig = RigGuard;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenarios());
}

async fn scenarios() {
    let dir = tempfile::Builder::new()
        .prefix("pbxlink-transfers-")
        .tempdir()
        .expect("tempdir");
    let mut daemons = Vec::new();
    for source in SOURCES {
        daemons.push(Daemon::start(source, dir.path()).await);
    }
    for d in &daemons {
        d.wait_ready(Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut placed: Vec<(String, Expected)> = Vec::new();
    // 1. Blind.
    rig_ok(&["call-in", TRANSFER_DID, LEAD, "40"]);
    let agent = bridged_agent_channel("110").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ami(&[
        "BlindTransfer",
        &format!("Channel: {agent}"),
        "Exten: 111",
        "Context: transfer",
    ]);
    calls_over(Duration::from_secs(30)).await;
    placed.push((
        newest_call_id(),
        Expected {
            name: "blind",
            did: TRANSFER_DID,
            logs: vec![
                ("110", 3, Some("transferred to 111 at ")),
                ("111", 6, Some("from 110 by blind transfer at ")),
            ],
        },
    ));
    // 2. Attended: Atxfer, 111 answers the consultation, then 110 hangs up.
    rig_ok(&["call-in", TRANSFER_DID, LEAD, "40"]);
    let agent = bridged_agent_channel("110").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ami(&[
        "Atxfer",
        &format!("Channel: {agent}"),
        "Exten: 111",
        "Context: transfer",
    ]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    ami(&["Hangup", &format!("Channel: {agent}")]);
    calls_over(Duration::from_secs(30)).await;
    placed.push((
        newest_call_id(),
        Expected {
            name: "attended",
            did: TRANSFER_DID,
            logs: vec![
                ("110", 3, Some("transferred to 111 at ")),
                ("111", 3, Some("from 110 by attended transfer at ")),
            ],
        },
    ));
    // 3. The target never answers.
    rig_ok(&["call-in", TRANSFER_DID, LEAD, "40"]);
    let agent = bridged_agent_channel("110").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ami(&[
        "BlindTransfer",
        &format!("Channel: {agent}"),
        "Exten: 112",
        "Context: transfer",
    ]);
    calls_over(Duration::from_secs(30)).await;
    placed.push((
        newest_call_id(),
        Expected {
            name: "no answer",
            did: TRANSFER_DID,
            logs: vec![("110", 3, None)],
        },
    ));
    // 4. Follow-me.
    rig_ok(&["call-in", FOLLOW_ME_DID, LEAD, "40"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    calls_over(Duration::from_secs(30)).await;
    placed.push((
        newest_call_id(),
        Expected {
            name: "follow-me",
            did: FOLLOW_ME_DID,
            logs: vec![("111", 6, Some("forwarded from 112"))],
        },
    ));
    // 5. Queue, transferred by the agent who took it.
    rig_ok(&["call-in", QUEUE_DID, LEAD, "40"]);
    let agent = bridged_agent_channel("110").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ami(&[
        "BlindTransfer",
        &format!("Channel: {agent}"),
        "Exten: 111",
        "Context: transfer",
    ]);
    calls_over(Duration::from_secs(30)).await;
    placed.push((
        newest_call_id(),
        Expected {
            name: "queue",
            did: QUEUE_DID,
            logs: vec![
                ("110", 3, Some("transferred to 111 at ")),
                ("111", 6, Some("from 110 by blind transfer at ")),
            ],
        },
    ));

    // Every stand-in gets every log (the CDR settles, "both" merges or waits).
    let started = Instant::now();
    let mut problems;
    loop {
        problems = Vec::new();
        for d in &daemons {
            for (id, want) in &placed {
                if let Err(p) = check(d, id, want) {
                    problems.push(p);
                }
            }
        }
        if problems.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for d in &daemons {
        for (id, want) in &placed {
            let logs = d.logs_of(id);
            let row: Vec<String> = logs
                .iter()
                .map(|l| {
                    format!(
                        "{} {} {}s {:?}",
                        text(l, "CallSessionId"),
                        text(l, "DestinationNumber"),
                        l["CallDuration"],
                        l.get("CallNotes").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect();
            eprintln!(
                "[transfers] {:<4} {:<10} {}",
                d.source,
                want.name,
                row.join(" | ")
            );
        }
    }
    if !problems.is_empty() {
        let logs: Vec<String> = daemons
            .iter()
            .map(|d| format!("--- {} log\n{}", d.source, rig::tail_of(&d.log, 30)))
            .collect();
        panic!(
            "{}\n{}\n--- cdr-custom\n{}",
            problems.join("\n"),
            logs.join("\n"),
            rig_ok(&["cdr"])
        );
    }
    // The transfer target's popup carries its log's id (live sources pop).
    for d in daemons.iter().filter(|d| d.source != "cdr") {
        let (blind_id, _) = &placed[0];
        let popped: Vec<(String, String)> = d
            .standin
            .accepted_popups()
            .iter()
            .filter(|p| text(p, "CallSessionId").starts_with(blind_id.as_str()))
            .map(|p| {
                (
                    text(p, "DestinationNumber").to_owned(),
                    text(p, "CallSessionId").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            popped,
            [
                ("+919876500110".to_owned(), blind_id.clone()),
                ("+919876500111".to_owned(), format!("{blind_id}-2")),
            ],
            "{}: popups of the blind transfer",
            d.source
        );
    }
}

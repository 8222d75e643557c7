//! `pbxlink demo`: the real pipeline (the same code as `run`) against a built-in PBX
//! simulator and a local LeadSquared stand-in that prints each call log and popup it accepts.
//! Needs no PBX, no network and no root.
//!
//! - `--pbx asterisk` (the default): the simulator appends realistic `Master.csv` lines and
//!   speaks AMI (the ring-all queue call rings two agents: two agent popups). The story is
//!   [`simulate_calls`] in this file.
//! - `--pbx freeswitch`: an event-socket simulator ([`crate::simulation::esl`]) and a
//!   mod_json_cdr writer ([`crate::simulation::json_cdr`]); the story, with click to call and
//!   a disposition over the daemon's HTTP API, is in [`freeswitch`].
//!
//! Both stories share [`Stage`]: the stand-in, the banner, the daemon, the loop that prints
//! what the stand-in accepts until every expected request arrived, and the closing status.
//! A story is a list of calls placed one after the other; adding a call adds its expected
//! requests to the story's [`Expected`].

mod freeswitch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::config::Config;
use crate::crm::leadsquared::standin::{Expectations, StandIn};
use crate::daemon::Daemon;
use crate::simulation::ami::AmiSimulator;

/// Which PBX the demo simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoPbx {
    /// Asterisk: `Master.csv` and AMI.
    #[default]
    Asterisk,
    /// FreeSWITCH: mod_json_cdr files and the event socket.
    FreeSwitch,
}

/// What a story makes the stand-in accept; the demo ends when all of it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expected {
    /// Call logs (one per call posted).
    pub call_logs: usize,
    /// Agent popups.
    pub popups: usize,
    /// Call-log updates carrying a disposition (`CallNotes`).
    pub dispositions: usize,
}

/// The Asterisk story: 7 call logs (answered, missed, outbound, the queue call, the IVR-only
/// call, and the blind-transferred call's two, one per agent; the internal call is not
/// posted), the 2 popups of the ring-all queue call.
const ASTERISK_EXPECTED: Expected = Expected {
    call_logs: 7,
    popups: 2,
    dispositions: 0,
};

/// Runs the demo: about 15 seconds with the default settle time of 1 s.
pub async fn run(pbx: DemoPbx, settle_secs: u64) -> anyhow::Result<()> {
    match pbx {
        DemoPbx::Asterisk => run_asterisk(settle_secs).await,
        DemoPbx::FreeSwitch => freeswitch::run().await,
    }
}

async fn run_asterisk(settle_secs: u64) -> anyhow::Result<()> {
    let stage = Stage::new().await?;
    let cdr = stage.dir().join("Master.csv");
    let ami = AmiSimulator::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("starting the AMI simulator")?;
    let config = demo_config(&stage, &cdr, ami.addr(), settle_secs)?;
    let tally = stage
        .play(
            &config,
            &[
                ("PBX simulator writes", cdr.display().to_string()),
                ("PBX simulator AMI", ami.addr().to_string()),
            ],
            ASTERISK_EXPECTED,
            Duration::from_secs(60 + settle_secs * 6),
            simulate_calls(cdr.clone(), ami.clone()),
        )
        .await?;
    println!(
        "\ndemo complete: {} call logs went CDR file → SQLite outbox → LeadSquared stand-in; \
         {} agent popups went AMI → LeadSquared stand-in while the queue call rang.",
        tally.call_logs, tally.popups
    );
    Ok(())
}

/// What the stand-in accepted during a demo.
#[derive(Debug, Default)]
pub struct Tally {
    /// Call logs accepted.
    pub call_logs: usize,
    /// Popups accepted.
    pub popups: usize,
    /// Disposition updates accepted.
    pub dispositions: usize,
    /// The `CallSessionId`s of the call logs accepted: a later log with one of them is the
    /// disposition update of that call (a transferred call's logs carry `CallNotes` too).
    logged_ids: std::collections::HashSet<String>,
}

impl Tally {
    fn reached(&self, want: Expected) -> bool {
        self.call_logs >= want.call_logs
            && self.popups >= want.popups
            && self.dispositions >= want.dispositions
    }
}

/// What every demo shares: a temporary directory, the LeadSquared stand-in, and the run of
/// the real daemon while a story plays.
pub struct Stage {
    dir: tempfile::TempDir,
    /// The local LeadSquared stand-in (its keys: `demo-connector-key`, `demo-access-key` /
    /// `demo-secret-key`).
    pub standin: StandIn,
}

impl Stage {
    /// A fresh directory and a stand-in on a free loopback port.
    pub async fn new() -> anyhow::Result<Stage> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let standin = StandIn::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Expectations {
                url_key: "demo-connector-key".into(),
                access_keys: Some(("demo-access-key".into(), "demo-secret-key".into())),
                reject_call_ids: Vec::new(),
            },
        )
        .await
        .context("starting the local LeadSquared stand-in")?;
        Ok(Stage { dir, standin })
    }

    /// The demo's temporary directory (the outbox, the simulated PBX's files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `[store]` and `[leadsquared]` tables every demo config starts with.
    pub fn base_config(&self, default_country_code: &str) -> String {
        format!(
            r#"
[store]
path = {store:?}
synchronous = "normal"

[leadsquared]
call_log_url = {call_log_url:?}
agent_popup_url = {popup_url:?}
access_key = "demo-access-key"
secret_key = "demo-secret-key"
default_country_code = "{default_country_code}"
time_zone = "Asia/Kolkata"
"#,
            store = self.dir().join("pbxlink.db"),
            call_log_url = self.standin.call_log_url(),
            popup_url = self.standin.agent_popup_url(),
        )
    }

    /// Prints the banner, starts the daemon, plays `story` while printing every request the
    /// stand-in answers, until `expected` arrived (or `limit` passed), stops the daemon and
    /// prints the outbox status. Fails when the story failed or something did not arrive.
    pub async fn play(
        &self,
        config: &Config,
        banner: &[(&str, String)],
        expected: Expected,
        limit: Duration,
        story: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> anyhow::Result<Tally> {
        println!("pbxlink demo");
        for (what, value) in banner {
            println!("  {what:<26}{value}");
        }
        println!("  {:<26}{}", "outbox (SQLite)", config.store.path.display());
        println!(
            "  {:<26}{}",
            "LeadSquared stand-in",
            self.standin.call_log_url()
        );
        println!();

        let mut events = self.standin.subscribe();
        let daemon = Daemon::start(config).await?;
        let mut story = tokio::spawn(story);
        let mut told = None;
        let mut tally = Tally::default();
        let deadline = tokio::time::Instant::now() + limit;
        while !tally.reached(expected) {
            tokio::select! {
                event = events.recv() => {
                    let Ok(received) = event else { break };
                    print_received(&received, &mut tally, expected);
                }
                ended = &mut story, if told.is_none() => {
                    let failed = !matches!(ended, Ok(Ok(())));
                    told = Some(ended);
                    if failed {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let ended = match told {
            Some(ended) => ended,
            None => story.await,
        };
        ended.context("the PBX simulator failed")??;
        let store = daemon.store();
        daemon.stop(Duration::from_secs(5)).await;
        let status = tokio::task::spawn_blocking(move || store.status())
            .await
            .context("the store task failed")??;
        print!(
            "{}",
            crate::outbox::store::format_status(&status, Utc::now())
        );
        if !tally.reached(expected) {
            anyhow::bail!(
                "only {} of {} call logs, {} of {} popups and {} of {} dispositions arrived",
                tally.call_logs,
                expected.call_logs,
                tally.popups,
                expected.popups,
                tally.dispositions,
                expected.dispositions
            );
        }
        Ok(tally)
    }
}

/// Prints one request the stand-in answered, counting what it accepted.
fn print_received(
    received: &crate::crm::leadsquared::standin::Received,
    tally: &mut Tally,
    expected: Expected,
) {
    let field = |name: &str| received.body[name].as_str().unwrap_or("?").to_owned();
    let pretty = |body: &Value| serde_json::to_string_pretty(body).unwrap_or_default();
    if received.status != 200 {
        println!(
            "LeadSquared stand-in answered HTTP {}: {}",
            received.status,
            received.problem.clone().unwrap_or_default()
        );
    } else if received.endpoint == "agent_popup" {
        tally.popups += 1;
        println!(
            "LeadSquared stand-in accepted agent popup {}/{} (agent {}):",
            tally.popups,
            expected.popups,
            field("DestinationNumber"),
        );
        println!("{}\n", pretty(&received.body));
    } else if tally.logged_ids.contains(&field("CallSessionId")) {
        tally.dispositions += 1;
        println!(
            "LeadSquared stand-in accepted disposition {}/{} (call {}):",
            tally.dispositions,
            expected.dispositions,
            field("CallSessionId"),
        );
        println!("{}\n", pretty(&received.body));
    } else {
        tally.call_logs += 1;
        tally.logged_ids.insert(field("CallSessionId"));
        println!(
            "LeadSquared stand-in accepted call log {}/{} ({} {}):",
            tally.call_logs,
            expected.call_logs,
            field("Direction"),
            field("Status"),
        );
        println!("{}\n", pretty(&received.body));
    }
}

/// The agents and the virtual number of both demos' small call centre.
const DIRECTORY: &str = r#"
[[virtual_numbers]]
number = "+918044556677"
tag = "Sales hotline"

[[agents]]
extension = "100"
phone = "+919876500100"
email = "asha@example.com"
name = "Asha"
user_id = "a1b2c3d4-0100"

[[agents]]
extension = "101"
phone = "+919876500101"
email = "ravi@example.com"
name = "Ravi"
user_id = "a1b2c3d4-0101"
"#;

/// The stage's base tables, [`DIRECTORY`] and `pbx_tables`, parsed and checked.
fn stage_config(stage: &Stage, pbx_tables: &str) -> anyhow::Result<Config> {
    let text = format!("{}{DIRECTORY}{pbx_tables}", stage.base_config("91"));
    let config = Config::parse(&text).map_err(|e| anyhow::anyhow!(e))?;
    let problems = config.problems();
    anyhow::ensure!(problems.is_empty(), "demo config: {problems:?}");
    Ok(config)
}

fn demo_config(
    stage: &Stage,
    cdr: &Path,
    ami: SocketAddr,
    settle_secs: u64,
) -> anyhow::Result<Config> {
    stage_config(
        stage,
        &format!(
            r#"
[asterisk]
cdr_csv = {cdr:?}
cdr_time_zone = "UTC"
settle_ms = {settle_ms}
poll_interval_ms = 200

[asterisk.ami]
host = "{ami_host}"
port = {ami_port}
username = "pbxlink"
secret = "demo-ami-secret"
"#,
            ami_host = ami.ip(),
            ami_port = ami.port(),
            settle_ms = settle_secs * 1000,
        ),
    )
}

/// One cdr_csv row with `loguniqueid` and `loguserfield` (18 columns), as Asterisk writes it.
struct Row<'a> {
    src: &'a str,
    dst: &'a str,
    dcontext: &'a str,
    clid: &'a str,
    channel: &'a str,
    dstchannel: &'a str,
    lastapp: &'a str,
    lastdata: &'a str,
    start: DateTime<Utc>,
    answer: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    disposition: &'a str,
    uniqueid: &'a str,
}

impl Row<'_> {
    fn line(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let t = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        let duration = (self.end - self.start).num_seconds();
        let billsec = self.answer.map_or(0, |a| (self.end - a).num_seconds());
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{duration},{billsec},{},{},{},{}\n",
            q(""),
            q(self.src),
            q(self.dst),
            q(self.dcontext),
            q(self.clid),
            q(self.channel),
            q(self.dstchannel),
            q(self.lastapp),
            q(self.lastdata),
            q(&t(self.start)),
            self.answer.map(|a| q(&t(a))).unwrap_or_default(),
            q(&t(self.end)),
            q(self.disposition),
            q("DOCUMENTATION"),
            q(self.uniqueid),
            q(""),
        )
    }
}

async fn append(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    // Like Asterisk: open, append, close, for every record.
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes()).await?;
    Ok(())
}

/// Writes the calls of a small call centre, as Asterisk would, a few seconds apart.
async fn simulate_calls(path: PathBuf, ami: AmiSimulator) -> anyhow::Result<()> {
    // The daemon logs in to the AMI simulator before the first call rings.
    let login_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ami.clients() == 0 && tokio::time::Instant::now() < login_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = |secs: i64| chrono::Duration::seconds(secs);
    let base = Utc::now() - s(120);
    let uid = |n: u32| format!("{}.{n}", base.timestamp());
    let pause = || tokio::time::sleep(Duration::from_millis(700));

    println!(
        "PBX simulator: inbound call from +91 96117 95983 on the sales line, agent 100 answers"
    );
    let (a, b) = (uid(1), uid(2));
    let t0 = base;
    append(
        &path,
        &[
            Row {
                src: "+919611795983",
                dst: "918044556677",
                dcontext: "from-trunk",
                clid: "\"Priya Sharma\" <+919611795983>",
                channel: "PJSIP/airtel-00000001",
                dstchannel: "PJSIP/100-00000002",
                lastapp: "Dial",
                lastdata: "PJSIP/100,30",
                start: t0,
                answer: Some(t0 + s(4)),
                end: t0 + s(95),
                disposition: "ANSWERED",
                uniqueid: &a,
            },
            Row {
                src: "100",
                dst: "s",
                dcontext: "from-internal",
                clid: "\"Asha\" <100>",
                channel: "PJSIP/100-00000002",
                dstchannel: "",
                lastapp: "AppDial",
                lastdata: "(Outgoing Line)",
                start: t0,
                answer: Some(t0 + s(4)),
                end: t0 + s(95),
                disposition: "ANSWERED",
                uniqueid: &b,
            },
        ]
        .map(|r| r.line())
        .concat(),
    )
    .await?;
    pause().await;

    println!(
        "PBX simulator: inbound call from 09845012345 rings agent 101 for 20 s, nobody answers"
    );
    let t1 = base + s(10);
    append(
        &path,
        &Row {
            src: "09845012345",
            dst: "918044556677",
            dcontext: "from-trunk",
            clid: "\"\" <09845012345>",
            channel: "PJSIP/airtel-00000003",
            dstchannel: "PJSIP/101-00000004",
            lastapp: "Dial",
            lastdata: "PJSIP/101,20",
            start: t1,
            answer: None,
            end: t1 + s(20),
            disposition: "NO ANSWER",
            uniqueid: &uid(3),
        }
        .line(),
    )
    .await?;
    pause().await;

    println!(
        "PBX simulator: a corrupt line lands in the CDR file (it is logged, counted and skipped)"
    );
    append(&path, "\"\",\"garbage\",\"no closing quote,\n").await?;
    pause().await;

    println!("PBX simulator: agent 101 calls 98450 11111, the lead answers");
    let t2 = base + s(30);
    append(
        &path,
        &Row {
            src: "101",
            dst: "9845011111",
            dcontext: "from-internal",
            clid: "\"Ravi\" <101>",
            channel: "PJSIP/101-00000005",
            dstchannel: "PJSIP/airtel-00000006",
            lastapp: "Dial",
            lastdata: "PJSIP/9845011111@airtel,60",
            start: t2,
            answer: Some(t2 + s(7)),
            end: t2 + s(187),
            disposition: "ANSWERED",
            uniqueid: &uid(5),
        }
        .line(),
    )
    .await?;
    pause().await;

    println!(
        "PBX simulator: inbound call into the ring-all queue: agents 100 and 101 ring, 101 answers (3 CDR rows)"
    );
    let t3 = base + s(60);
    let q = uid(7);
    // What AMI shows while it rings: the caller's channel, then both queue members called.
    let caller = "PJSIP/airtel-00000007";
    ami.emit(&[
        ("Event", "Newchannel"),
        ("Channel", caller),
        ("CallerIDNum", "+14155552671"),
        ("CallerIDName", "Dana"),
        ("Context", "from-trunk"),
        ("Exten", "918044556677"),
        ("Uniqueid", &q),
        ("Linkedid", &q),
    ]);
    for (member, dest) in [("100", "PJSIP/100-00000008"), ("101", "PJSIP/101-00000009")] {
        ami.emit(&[
            ("Event", "AgentCalled"),
            ("Channel", caller),
            ("CallerIDNum", "+14155552671"),
            ("Queue", "sales"),
            ("Interface", &format!("PJSIP/{member}")),
            ("MemberName", member),
            ("DestChannel", dest),
            ("Uniqueid", &q),
            ("Linkedid", &q),
        ]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ami.emit(&[
        ("Event", "Hangup"),
        ("Channel", caller),
        ("Uniqueid", &q),
        ("Linkedid", &q),
    ]);
    append(
        &path,
        &[
            Row {
                src: "+14155552671",
                dst: "918044556677",
                dcontext: "from-trunk",
                clid: "\"Dana\" <+14155552671>",
                channel: "PJSIP/airtel-00000007",
                dstchannel: "PJSIP/100-00000008",
                lastapp: "Queue",
                lastdata: "sales,r,,,30",
                start: t3,
                answer: Some(t3),
                end: t3 + s(12),
                disposition: "NO ANSWER",
                uniqueid: &q,
            },
            Row {
                src: "+14155552671",
                dst: "918044556677",
                dcontext: "from-trunk",
                clid: "\"Dana\" <+14155552671>",
                channel: "PJSIP/airtel-00000007",
                dstchannel: "PJSIP/101-00000009",
                lastapp: "Queue",
                lastdata: "sales,r,,,30",
                start: t3,
                answer: Some(t3 + s(12)),
                end: t3 + s(70),
                disposition: "ANSWERED",
                uniqueid: &q,
            },
            Row {
                src: "+14155552671",
                dst: "918044556677",
                dcontext: "from-trunk",
                clid: "\"Dana\" <+14155552671>",
                channel: "PJSIP/airtel-00000007",
                dstchannel: "",
                lastapp: "Hangup",
                lastdata: "",
                start: t3 + s(70),
                answer: Some(t3 + s(70)),
                end: t3 + s(70),
                disposition: "ANSWERED",
                uniqueid: &q,
            },
        ]
        .map(|r| r.line())
        .concat(),
    )
    .await?;
    pause().await;

    println!(
        "PBX simulator: inbound call answered only by the IVR, caller hangs up (Missed: no agent answered)"
    );
    let t4 = base + s(80);
    append(
        &path,
        &Row {
            src: "+919611700000",
            dst: "918044556677",
            dcontext: "from-trunk",
            clid: "\"\" <+919611700000>",
            channel: "PJSIP/airtel-0000000a",
            dstchannel: "",
            lastapp: "BackGround",
            lastdata: "main-menu",
            start: t4,
            answer: Some(t4),
            end: t4 + s(9),
            disposition: "ANSWERED",
            uniqueid: &uid(10),
        }
        .line(),
    )
    .await?;

    println!(
        "PBX simulator: agent 100 answers a call and blind-transfers it to agent 101 (two call logs, one per agent)"
    );
    let t6 = base + s(85);
    let transferred = |dstchannel: &'static str, start: i64, answer: i64, end: i64| Row {
        src: "+919611712345",
        // A blind transfer rewrites both rows' dst/dcontext to the target's.
        dst: "101",
        dcontext: "transfer",
        clid: "\"Meera\" <+919611712345>",
        channel: "PJSIP/airtel-0000000d",
        dstchannel,
        lastapp: "Dial",
        lastdata: "PJSIP/100,30,tT",
        start: t6 + s(start),
        answer: Some(t6 + s(answer)),
        end: t6 + s(end),
        disposition: "ANSWERED",
        uniqueid: "",
    };
    let first = Row {
        uniqueid: &uid(13),
        ..transferred("PJSIP/100-0000000e", 0, 3, 20)
    };
    let second = Row {
        uniqueid: &uid(13),
        ..transferred("PJSIP/101-0000000f", 20, 24, 64)
    };
    append(&path, &[first.line(), second.line()].concat()).await?;
    pause().await;

    println!("PBX simulator: agent 100 calls agent 101 (internal: not posted)\n");
    let t5 = base + s(90);
    append(
        &path,
        &Row {
            src: "100",
            dst: "101",
            dcontext: "from-internal",
            clid: "\"Asha\" <100>",
            channel: "PJSIP/100-0000000b",
            dstchannel: "PJSIP/101-0000000c",
            lastapp: "Dial",
            lastdata: "PJSIP/101,30",
            start: t5,
            answer: Some(t5 + s(2)),
            end: t5 + s(30),
            disposition: "ANSWERED",
            uniqueid: &uid(11),
        }
        .line(),
    )
    .await?;
    Ok(())
}

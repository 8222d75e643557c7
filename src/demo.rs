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

/// The story's CDR rows, one a line: `src|dst|dcontext|clid|channel|dstchannel|lastapp|lastdata|
/// start|answer|end|disposition|uid`, times in seconds after the story's base (answer empty when
/// nobody answered), `uid` the number in the row's `uniqueid`. Written as Asterisk's cdr_csv with
/// `loguniqueid` and `loguserfield` (18 columns).
fn cdr_rows(base: DateTime<Utc>, rows: &[&str]) -> anyhow::Result<String> {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let at = |secs: &str| -> anyhow::Result<DateTime<Utc>> {
        let secs: i64 = secs
            .parse()
            .with_context(|| format!("story time {secs:?}"))?;
        Ok(base + chrono::Duration::seconds(secs))
    };
    let t = |t: DateTime<Utc>| q(&t.format("%Y-%m-%d %H:%M:%S").to_string());
    let mut text = String::new();
    for row in rows {
        let f: Vec<&str> = row.split('|').collect();
        let [
            src,
            dst,
            dcontext,
            clid,
            channel,
            dstchannel,
            app,
            data,
            start,
            answer,
            end,
            disposition,
            uid,
        ] = f[..]
        else {
            anyhow::bail!("story row has {} fields, not 13: {row}", f.len());
        };
        let (start, end) = (at(start)?, at(end)?);
        let answer = if answer.is_empty() {
            None
        } else {
            Some(at(answer)?)
        };
        let duration = (end - start).num_seconds();
        let billsec = answer.map_or(0, |a| (end - a).num_seconds());
        let parties = [src, dst, dcontext, clid, channel, dstchannel, app, data].map(q);
        let uniqueid = format!("{}.{uid}", base.timestamp());
        text += &format!(
            "{},{},{},{},{},{duration},{billsec},{},{},{},{}\n",
            q(""),
            parties.join(","),
            t(start),
            answer.map(t).unwrap_or_default(),
            t(end),
            q(disposition),
            q("DOCUMENTATION"),
            q(&uniqueid),
            q(""),
        );
    }
    Ok(text)
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

    let scene = |rows: &[&str]| cdr_rows(base, rows);
    println!(
        "PBX simulator: inbound call from +91 96117 95983 on the sales line, agent 100 answers"
    );
    append(&path, &scene(&[
        "+919611795983|918044556677|from-trunk|\"Priya Sharma\" <+919611795983>|PJSIP/airtel-00000001|PJSIP/100-00000002|Dial|PJSIP/100,30|0|4|95|ANSWERED|1",
        "100|s|from-internal|\"Asha\" <100>|PJSIP/100-00000002||AppDial|(Outgoing Line)|0|4|95|ANSWERED|2",
    ])?)
    .await?;
    pause().await;

    println!(
        "PBX simulator: inbound call from 09845012345 rings agent 101 for 20 s, nobody answers"
    );
    append(&path, &scene(&[
        "09845012345|918044556677|from-trunk|\"\" <09845012345>|PJSIP/airtel-00000003|PJSIP/101-00000004|Dial|PJSIP/101,20|10||30|NO ANSWER|3",
    ])?)
    .await?;
    pause().await;

    println!(
        "PBX simulator: a corrupt line lands in the CDR file (it is logged, counted and skipped)"
    );
    append(&path, "\"\",\"garbage\",\"no closing quote,\n").await?;
    pause().await;

    println!("PBX simulator: agent 101 calls 98450 11111, the lead answers");
    append(&path, &scene(&[
        "101|9845011111|from-internal|\"Ravi\" <101>|PJSIP/101-00000005|PJSIP/airtel-00000006|Dial|PJSIP/9845011111@airtel,60|30|37|217|ANSWERED|5",
    ])?)
    .await?;
    pause().await;

    println!(
        "PBX simulator: inbound call into the ring-all queue: agents 100 and 101 ring, 101 answers (3 CDR rows)"
    );
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
    append(&path, &scene(&[
        "+14155552671|918044556677|from-trunk|\"Dana\" <+14155552671>|PJSIP/airtel-00000007|PJSIP/100-00000008|Queue|sales,r,,,30|60|60|72|NO ANSWER|7",
        "+14155552671|918044556677|from-trunk|\"Dana\" <+14155552671>|PJSIP/airtel-00000007|PJSIP/101-00000009|Queue|sales,r,,,30|60|72|130|ANSWERED|7",
        "+14155552671|918044556677|from-trunk|\"Dana\" <+14155552671>|PJSIP/airtel-00000007||Hangup||130|130|130|ANSWERED|7",
    ])?)
    .await?;
    pause().await;

    println!(
        "PBX simulator: inbound call answered only by the IVR, caller hangs up (Missed: no agent answered)"
    );
    append(&path, &scene(&[
        "+919611700000|918044556677|from-trunk|\"\" <+919611700000>|PJSIP/airtel-0000000a||BackGround|main-menu|80|80|89|ANSWERED|10",
    ])?)
    .await?;

    println!(
        "PBX simulator: agent 100 answers a call and blind-transfers it to agent 101 (two call logs, one per agent)"
    );
    // A blind transfer rewrites both rows' dst/dcontext to the target's.
    append(&path, &scene(&[
        "+919611712345|101|transfer|\"Meera\" <+919611712345>|PJSIP/airtel-0000000d|PJSIP/100-0000000e|Dial|PJSIP/100,30,tT|85|88|105|ANSWERED|13",
        "+919611712345|101|transfer|\"Meera\" <+919611712345>|PJSIP/airtel-0000000d|PJSIP/101-0000000f|Dial|PJSIP/100,30,tT|105|109|149|ANSWERED|13",
    ])?)
    .await?;
    pause().await;

    println!("PBX simulator: agent 100 calls agent 101 (internal: not posted)\n");
    append(&path, &scene(&[
        "100|101|from-internal|\"Asha\" <100>|PJSIP/100-0000000b|PJSIP/101-0000000c|Dial|PJSIP/101,30|90|92|120|ANSWERED|11",
    ])?)
    .await?;
    Ok(())
}

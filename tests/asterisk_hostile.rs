//! Hostile values against a REAL Asterisk 22 (`tests/asterisk/rig.sh`): the real
//! `pbxlink run` binary, click to call over its HTTP API, and what Asterisk itself then holds
//! on the live channel (AMI `Status` with `Variables: LEADID`, through the rig's own AMI
//! account) and writes in its CDR (accountcode, src, dst).
//!
//! 1. A lead id made to inject channel variables,
//!    `L1,CALLERID(num)=+18005551234,CDR(accountcode)=evil`, and one full of the characters
//!    Asterisk's argument parser treats specially (`"`, `\`, `(`, `[`...): each click to call
//!    rings, `LEADID` on the channel is the whole string, the caller id is the virtual
//!    number, the CDR's accountcode is empty and its src is not the injected number.
//! 2. `[asterisk.originate]` pointing at a context without the lead's extension: the HTTP
//!    answer (and the log) name the extension tried, the context and the keys that change it.
//! 3. The default `number_format` (`e164_digits`) dials `919611795984` (the CDR's dst),
//!    which the rig's `from-internal` `_X.` matches.
//!
//! Needs root (the rig is a chroot); without root it prints a loud SKIPPED message. It holds
//! `/var/tmp/pbxlink-asterisk.lock` for its whole run (one Asterisk for all such tests).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pbxlink::crm::leadsquared::standin::{Expectations, StandIn};

mod rig;
use rig::{CUSTOM_COLUMNS, RigGuard, RigLock, rig_ok, rig_root, rig_tz, root_or_skip};

const TOKEN: &str = "hostile-test-token";
const AGENT_100: &str = "+919876500100";
const DIRECT_DID: &str = "918044556677";
const INJECTING_LEAD_ID: &str = "L1,CALLERID(num)=+18005551234,CDR(accountcode)=evil";
const SYNTAX_LEAD_ID: &str = r#"q"u\o(t)e[s],a=b;c|d${X}"#;

/// Kills the daemon when dropped, also when the test panics.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log_tail(&self) -> String {
        rig::tail_of(&self.log, 40)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn hostile_lead_ids_and_a_refused_originate_on_a_real_asterisk() {
    if !root_or_skip(
        "tests/asterisk_hostile.rs",
        "AMI variable injection and the refused-originate message were",
    ) {
        return;
    }
    let _lock = RigLock::acquire("hostile", "asterisk_e2e|tests/ami");
    rig_ok(&["install"]);
    rig_ok(&["start"]);
    let _rig = RigGuard;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario());
}

/// Starts `pbxlink run` with `originate` as its `[asterisk.originate]` section.
async fn start_daemon(
    dir: &Path,
    name: &str,
    standin: &StandIn,
    originate: &str,
) -> (Daemon, String) {
    let port = free_port();
    let cdr = rig_root().join("var/log/asterisk/cdr-custom/Master.csv");
    let mut toml = String::new();
    let _ = write!(
        toml,
        "[store]\npath = {db:?}\n\n\
         [leadsquared]\ncall_log_url = {cl:?}\naccess_key = \"ak\"\nsecret_key = \"sk\"\n\
         default_country_code = \"91\"\n\n\
         [[virtual_numbers]]\nnumber = \"{DIRECT_DID}\"\ntag = \"direct\"\n\n\
         [[agents]]\nextension = \"100\"\nphone = \"{AGENT_100}\"\n\n\
         [asterisk]\ncdr_csv = {cdr:?}\ncdr_format = \"custom\"\ncdr_columns = [{cols}]\n\
         cdr_time_zone = {tz:?}\nsettle_ms = 2000\npoll_interval_ms = 200\ncall_log_source = \"ami\"\n\n\
         [asterisk.ami]\nusername = \"pbxlink\"\nsecret = \"pbxlink-test-secret\"\n\n\
         [asterisk.originate]\nagent_channel = \"Local/{{extension}}@agents\"\n{originate}\n\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n",
        db = dir.join(format!("{name}.db")),
        cl = standin.call_log_url(),
        cols = CUSTOM_COLUMNS.map(|c| format!("{c:?}")).join(", "),
        tz = rig_tz(),
    );
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, &toml).expect("config");
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,pbxlink=debug")
        .stdout(File::create(&log).expect("log"))
        .stderr(File::options().append(true).open(&log).expect("log"))
        .spawn()
        .expect("pbxlink run");
    let daemon = Daemon { child, log };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = http
            .get(format!("{base}/readyz?token={TOKEN}"))
            .send()
            .await
        {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "pbxlink ({name}) not ready\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (daemon, base)
}

async fn click_to_call(base: &str, lead: &str, lead_id: &str) -> (u16, String) {
    let url = format!(
        "{base}/click-to-call?token={TOKEN}&agentNumber={agent}&PhoneNumberWithCountryCode={lead}\
         &leadId={id}&virtualNumber={DIRECT_DID}",
        agent = percent_encode(AGENT_100),
        lead = percent_encode(lead),
        id = percent_encode(lead_id),
    );
    let response = reqwest::get(&url).await.expect("click to call");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// What Asterisk holds on the agent side of each click to call in progress: the
/// `Local/100@agents-…;1` channels, the originated ones, which carry the Originate's
/// variables. One AMI `Status` (through the rig's own account) lists them all with the
/// variable `LEADID`: (LEADID, caller id number, account code, extension, uniqueid).
fn originated_channels() -> Vec<(String, String, String, String, String)> {
    let out = rig_ok(&["ami", "Status", "Variables: LEADID"]);
    let mut found = Vec::new();
    let mut current: Vec<(&str, &str)> = Vec::new();
    let mut flush = |fields: &mut Vec<(&str, &str)>| {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_default()
        };
        let channel = get("Channel");
        if get("Event") == "Status"
            && channel.starts_with("Local/100@agents-")
            && channel.ends_with(";1")
        {
            let lead_id = fields
                .iter()
                .find_map(|(k, v)| {
                    (*k == "Variable")
                        .then(|| v.strip_prefix("LEADID="))
                        .flatten()
                })
                .unwrap_or_default()
                .to_owned();
            found.push((
                lead_id,
                get("CallerIDNum"),
                get("AccountCode"),
                get("Exten"),
                get("Uniqueid"),
            ));
        }
        fields.clear();
    };
    for line in out.lines() {
        let line = line.trim_end();
        let Some((k, v)) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
        else {
            flush(&mut current);
            continue;
        };
        if k == "Event" || k == "Response" {
            flush(&mut current);
        }
        current.push((k.trim(), v));
    }
    flush(&mut current);
    found
}

/// The cdr-custom rows whose linkedid is one of the originated channels' uniqueids.
fn cdr_rows() -> Vec<Vec<String>> {
    let path = rig_root().join("var/log/asterisk/cdr-custom/Master.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|line| {
            csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes())
                .records()
                .next()
                .and_then(Result::ok)
                .map(|r| r.iter().map(str::to_owned).collect())
                .unwrap_or_default()
        })
        .collect()
}

fn column(row: &[String], name: &str) -> String {
    let i = CUSTOM_COLUMNS
        .iter()
        .position(|c| *c == name)
        .expect("column");
    row.get(i).cloned().unwrap_or_default()
}

async fn scenario() {
    let standin = StandIn::start(
        "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
        Expectations {
            url_key: "hostile-key".into(),
            access_keys: Some(("ak".into(), "sk".into())),
            reject_call_ids: vec![],
        },
    )
    .await
    .expect("stand-in");
    let dir = tempfile::Builder::new()
        .prefix("pbxlink-hostile-")
        .tempdir()
        .expect("tempdir");

    // 2. A context without the lead's extension: the answer says what was tried and which
    // keys change it.
    {
        let (daemon, base) = start_daemon(
            dir.path(),
            "refused",
            &standin,
            "context = \"agents\"\nnumber_format = \"e164\"",
        )
        .await;
        let (status, body) = click_to_call(&base, "+919611795983", "L0").await;
        eprintln!("[hostile] refused originate: {status} {body}");
        assert_eq!(status, 502, "{body}\n{}", daemon.log_tail());
        for part in [
            "Extension does not exist",
            "extension \"+919611795983\" in context \"agents\"",
            "[asterisk.originate] number_format = \"e164\"",
            "dial_prefix = \"\"",
            "[asterisk.originate] context",
        ] {
            assert!(body.contains(part), "{part:?} missing from {body}");
        }
        let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
        assert!(
            log.lines().any(|l| l
                .contains("extension \\\"+919611795983\\\" in context \\\"agents\\\"")
                || l.contains("extension \"+919611795983\" in context \"agents\"")),
            "the log names the extension and context:\n{}",
            daemon.log_tail()
        );
    }

    // 1 and 3. The default number format; two hostile lead ids at once.
    let (daemon, base) = start_daemon(
        dir.path(),
        "hostile",
        &standin,
        "context = \"from-internal\"",
    )
    .await;
    let calls = [
        ("+919611795984", INJECTING_LEAD_ID),
        ("+919611795985", SYNTAX_LEAD_ID),
    ];
    for (lead, id) in calls {
        let (status, body) = click_to_call(&base, lead, id).await;
        assert_eq!(
            (status, body.trim()),
            (200, "OK"),
            "click to call {lead}\n{}",
            daemon.log_tail()
        );
    }
    // While the calls are up: what Asterisk set on each originated channel.
    let started = Instant::now();
    // Uniqueid → (LEADID, caller id number, account code), as Asterisk holds them.
    let mut seen: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    while seen.len() < calls.len() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the originated channels did not show up: {seen:?}\n{}",
            daemon.log_tail()
        );
        for (lead_id, caller, account, exten, uniqueid) in originated_channels() {
            eprintln!(
                "[hostile] {uniqueid}: LEADID={lead_id:?} CALLERID(num)={caller:?} \
                 accountcode={account:?} EXTEN={exten:?}"
            );
            seen.insert(uniqueid, (lead_id, caller, account));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lead_ids: BTreeSet<&str> = seen.values().map(|s| s.0.as_str()).collect();
    assert_eq!(
        lead_ids,
        BTreeSet::from([INJECTING_LEAD_ID, SYNTAX_LEAD_ID]),
        "LEADID is the whole lead id: {seen:#?}"
    );
    for (lead_id, caller, account) in seen.values() {
        assert_eq!(caller, "+918044556677", "caller id of {lead_id}: {seen:#?}");
        assert_eq!(account, "", "accountcode of {lead_id}: {seen:#?}");
    }
    // The CDR Asterisk writes for these calls: no injected accountcode or caller id.
    let started = Instant::now();
    let rows = loop {
        let rows: Vec<Vec<String>> = cdr_rows()
            .into_iter()
            .filter(|r| seen.contains_key(&column(r, "linkedid")))
            .collect();
        let linked: BTreeSet<String> = rows.iter().map(|r| column(r, "linkedid")).collect();
        if linked.len() == calls.len() {
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no CDR for the calls {seen:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for row in &rows {
        eprintln!(
            "[hostile] CDR: accountcode={:?} src={:?} dst={:?} linkedid={:?}",
            column(row, "accountcode"),
            column(row, "src"),
            column(row, "dst"),
            column(row, "linkedid")
        );
        assert_eq!(column(row, "accountcode"), "", "{row:?}");
        assert!(!column(row, "src").contains("18005551234"), "{row:?}");
        assert!(!column(row, "clid").contains("18005551234"), "{row:?}");
        // e164_digits, which `_X.` matches: no '+' in the number dialled.
        let dst = column(row, "dst");
        assert!(
            dst == "100" || (dst.starts_with("91961179598") && dst.len() == 12),
            "{row:?}"
        );
    }
    drop(daemon);
    eprintln!("[hostile] all hostile-value scenarios passed");
}

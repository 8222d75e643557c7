//! End to end against a REAL Asterisk 22 (`tests/asterisk/rig.sh`, see its README):
//! real calls -> Asterisk's CDR files -> `pbxlink run` (subprocess) -> SQLite outbox ->
//! the in-process LeadSquared stand-in.
//!
//! Needs root (the rig is a chroot). Without root it prints a loud SKIPPED message and
//! passes; as root it never skips: a rig that cannot be installed or started fails it.
//!
//! One test function (there is one Asterisk), three phases:
//! 1. every scenario of the rig at once, seen by two daemons: one tails cdr-csv (UTC), the
//!    other cdr-custom (PBX local time, IST by default, with linkedid); both must post the
//!    same call logs, in UTC.
//! 2. rotation while Asterisk writes: `mv Master.csv Master.csv.1`, including a queue call
//!    whose early member row lands in the old file and the rest in the new one.
//! 3. SIGKILL of the daemon while calls are in progress, restart, nothing lost or doubled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use pbxlink::config::Synchronous;
use pbxlink::crm::leadsquared::standin::{Expectations, StandIn};
use pbxlink::outbox::Store;
use serde_json::Value;

mod rig;
use rig::{
    CUSTOM_COLUMNS, RigGuard, channel_counts, rig_ok, rig_root, rig_tz, root_or_skip, tail_of,
};

const LEAD: &str = "+919611795983";
const LEAD_LOCAL: &str = "09611795983";
const AGENTS: [(&str, &str, &str); 4] = [
    ("100", "+919876500100", "u100"),
    ("101", "+919876500101", "u101"),
    ("102", "+919876500102", "u102"),
    ("103", "+919876500103", "u103"),
];
const DIDS: [(&str, &str); 7] = [
    ("918044556677", "sales"),
    ("918044556601", "missed-direct"),
    ("918044556602", "busy-direct"),
    ("918044556603", "queue-sales"),
    ("918044556604", "queue-support"),
    ("918044556605", "ivr"),
    ("918044556606", "queue-sales-b"),
];

// ---------------------------------------------------------------------------------------
// The rig
// ---------------------------------------------------------------------------------------

fn csv_path() -> PathBuf {
    rig_root().join("var/log/asterisk/cdr-csv/Master.csv")
}

fn custom_path() -> PathBuf {
    rig_root().join("var/log/asterisk/cdr-custom/Master.csv")
}

/// Places one call (`call-in DID CALLERID` or `call-out EXT NUMBER`) and waits until
/// Asterisk has created its channel (Originate is asynchronous).
fn place(args: &[&str]) {
    let (_, before) = channel_counts();
    let reply = rig_ok(args);
    assert!(
        reply.contains("Response: Success"),
        "rig.sh {args:?}: {reply}"
    );
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        channel_counts().1 > before
    });
    assert!(ok, "rig.sh {args:?}: no channel created within 10 s");
}

/// Waits until Asterisk has no channel left (every call placed so far has ended).
fn wait_calls_over(timeout: Duration) {
    let ok = wait_until(timeout, Duration::from_millis(200), || {
        channel_counts().0 == 0
    });
    assert!(
        ok,
        "calls still up after {timeout:?}:\n{}",
        rig_ok(&["rx", "core show channels"])
    );
}

fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------------------
// CDR rows (to know what Asterisk wrote: the root rows give the expected CallSessionIds)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Row {
    dst: String,
    channel: String,
    start: String,
    end: String,
    uniqueid: String,
    linkedid: Option<String>,
}

fn read_rows(path: &Path) -> Vec<Row> {
    let Ok(data) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data.as_slice());
    reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: bad CSV: {e}", path.display()));
            let f = |i: usize| r.get(i).unwrap_or("").to_string();
            Row {
                dst: f(2),
                channel: f(5),
                start: f(9),
                end: f(11),
                uniqueid: f(16),
                linkedid: (r.len() > 18).then(|| f(18)),
            }
        })
        .collect()
}

/// Party A's own row: the `;1` half of the originated `Local/X@from-trunk` /
/// `Local/X@from-internal` channel. Its uniqueid is the call's linkedid.
fn is_root_row(row: &Row) -> bool {
    row.channel.ends_with(";1")
        && (row.channel.contains("@from-trunk-") || row.channel.contains("@from-internal-"))
}

fn roots(rows: &[Row]) -> Vec<Row> {
    rows.iter().filter(|r| is_root_row(r)).cloned().collect()
}

fn cdr_dump() -> String {
    let mut s = String::new();
    let dir = rig_root().join("var/log/asterisk");
    for sub in ["cdr-csv", "cdr-custom"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let _ = writeln!(
                s,
                "== {}\n{}",
                f.display(),
                std::fs::read_to_string(&f).unwrap_or_default()
            );
        }
    }
    s
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|d| d.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

struct Daemon {
    name: &'static str,
    /// The daemon's store, opened by the test too (created before the daemon starts), to
    /// poll its state: `pbxlink status` loads the whole config, ~1-3 s in a debug build.
    store: Store,
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    fn new(name: &'static str, standin: &StandIn, cdr: &Path, custom: bool) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pbxlink-e2e-{name}-"))
            .tempdir()
            .expect("tempdir");
        let mut toml = String::new();
        let _ = write!(
            toml,
            "[store]\npath = {:?}\n\n[leadsquared]\ncall_log_url = {:?}\naccess_key = \"ak\"\n\
             secret_key = \"sk\"\ndefault_country_code = \"91\"\ntime_zone = \"UTC\"\n\n",
            dir.path().join("pbxlink.db"),
            standin.call_log_url()
        );
        for (number, tag) in DIDS {
            let _ = write!(
                toml,
                "[[virtual_numbers]]\nnumber = \"{number}\"\ntag = \"{tag}\"\n\n"
            );
        }
        for (ext, phone, user) in AGENTS {
            let _ = write!(
                toml,
                "[[agents]]\nextension = \"{ext}\"\nphone = \"{phone}\"\nuser_id = \"{user}\"\n\n"
            );
        }
        let _ = write!(toml, "[asterisk]\ncdr_csv = {cdr:?}\n");
        if custom {
            let cols: Vec<String> = CUSTOM_COLUMNS.iter().map(|c| format!("{c:?}")).collect();
            let _ = write!(
                toml,
                "cdr_format = \"custom\"\ncdr_columns = [{}]\ncdr_time_zone = {:?}\n",
                cols.join(", "),
                rig_tz()
            );
        } else {
            toml.push_str("cdr_time_zone = \"UTC\"\n");
        }
        // The rig's CDR file holds earlier runs' calls; this test reads it whole, as before.
        toml.push_str("settle_ms = 2000\npoll_interval_ms = 200\nstart_at = \"beginning\"\n");
        let config = dir.path().join("pbxlink.toml");
        std::fs::write(&config, toml).expect("writing the config");
        let store = Store::open(&dir.path().join("pbxlink.db"), Synchronous::Full)
            .expect("creating the store");
        let mut daemon = Daemon {
            name,
            store,
            dir,
            config,
            child: None,
            starts: 0,
        };
        daemon.start();
        daemon
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("pbxlink.log")
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{}: already running", self.name);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawning pbxlink run");
        self.child = Some(child);
    }

    /// Panics (with the log) if the daemon has exited.
    fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "daemon {} exited ({status}):\n{}",
                    self.name,
                    tail_of(&self.log_path(), 60)
                );
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "daemon {} exited with {status} on SIGTERM:\n{}",
                        self.name,
                        tail_of(&self.log_path(), 40)
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "daemon {} did not stop within 10 s of SIGTERM:\n{}",
                        self.name,
                        tail_of(&self.log_path(), 40)
                    );
                }
            }
        }
    }

    /// The store's status report, read in-process (fast, for polling).
    fn state(&self) -> Value {
        let report = self.store.status().expect("reading the store's status");
        serde_json::to_value(report).expect("status as JSON")
    }

    /// `pbxlink status --json`.
    fn status(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .arg("status")
            .arg("--config")
            .arg(&self.config)
            .arg("--json")
            .output()
            .expect("running pbxlink status");
        assert!(
            out.status.success(),
            "pbxlink status ({}) failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "pbxlink status --json ({}) is not JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn counter(status: &Value, name: &str) -> i64 {
    match &status["counters"] {
        Value::Array(pairs) => pairs
            .iter()
            .find(|p| p[0] == name)
            .and_then(|p| p[1].as_i64())
            .unwrap_or(0),
        Value::Object(map) => map.get(name).and_then(Value::as_i64).unwrap_or(0),
        _ => 0,
    }
}

fn num(status: &Value, field: &str) -> u64 {
    status[field]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no number {field:?}: {status}"))
}

/// Everything needed to understand a failure.
fn diagnostics(daemons: &[&Daemon], standins: &[&StandIn]) -> String {
    let mut s = String::new();
    for (d, st) in daemons.iter().zip(standins) {
        let _ = writeln!(
            s,
            "\n===== daemon {} (started {} time(s)), status: {}",
            d.name,
            d.starts,
            serde_json::to_string(&d.state()).unwrap_or_default()
        );
        let _ = writeln!(s, "--- stand-in received:");
        for r in st.received() {
            let _ = writeln!(
                s,
                "{} {} {:?} {}",
                r.endpoint,
                r.status,
                r.problem,
                serde_json::to_string(&r.body).unwrap_or_default()
            );
        }
        let _ = writeln!(s, "--- daemon log (tail):\n{}", tail_of(&d.log_path(), 40));
    }
    let _ = writeln!(s, "\n===== CDR files\n{}", cdr_dump());
    s
}

/// Waits until the daemon has read every line of `files`, has no staged row and nothing
/// pending, and the stand-in has `calls` accepted call logs. Then every call it will ever
/// post has been posted: a late duplicate would show up in the counts.
fn wait_drained(d: &mut Daemon, st: &StandIn, files: &[PathBuf], calls: usize) {
    let lines: usize = files.iter().map(|f| line_count(f)).sum();
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        d.assert_alive();
        if st.accepted_call_logs().len() < calls {
            return false;
        }
        last = d.state();
        counter(&last, "cdr_rows_read") as usize >= lines
            && num(&last, "staged") == 0
            && num(&last, "pending") == 0
    });
    assert!(
        ok,
        "daemon {}: expected {calls} call logs and {lines} CDR rows read, drained; got {} call \
         logs, status {last}{}",
        d.name,
        st.accepted_call_logs().len(),
        diagnostics(&[d], &[st])
    );
}

async fn standin() -> StandIn {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    StandIn::start(
        addr,
        Expectations {
            url_key: "e2e-key".into(),
            access_keys: Some(("ak".into(), "sk".into())),
            reject_call_ids: vec![],
        },
    )
    .await
    .expect("starting the LeadSquared stand-in")
}

/// Accepted call logs by CallSessionId; panics on a duplicate or on any refused request.
fn by_session(d: &Daemon, st: &StandIn) -> BTreeMap<String, Value> {
    let refused: Vec<_> = st
        .received()
        .into_iter()
        .filter(|r| r.status != 200)
        .collect();
    assert!(
        refused.is_empty(),
        "daemon {}: the stand-in refused {} request(s): {refused:#?}{}",
        d.name,
        refused.len(),
        diagnostics(&[d], &[st])
    );
    let mut map = BTreeMap::new();
    for log in st.accepted_call_logs() {
        let id = log["CallSessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no CallSessionId: {log}"))
            .to_string();
        if let Some(first) = map.insert(id.clone(), log.clone()) {
            panic!(
                "daemon {}: CallSessionId {id} posted twice:\n{first}\n{log}{}",
                d.name,
                diagnostics(&[d], &[st])
            );
        }
    }
    map
}

/// A cdr-custom time (the PBX's local time) in UTC, as cdr-csv writes it.
fn utc_of_local(local: &str) -> String {
    use chrono::TimeZone;
    let tz: chrono_tz::Tz = rig_tz().parse().expect("PBXLINK_ASTERISK_TZ");
    let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("bad CDR time {local:?}: {e}"));
    tz.from_local_datetime(&t)
        .earliest()
        .unwrap_or_else(|| panic!("{local} does not exist in {tz}"))
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Expected call logs
// ---------------------------------------------------------------------------------------

struct Expect {
    /// What the scenario is, for messages.
    what: &'static str,
    /// `call-in DID CALLERID` or `call-out EXT NUMBER`.
    place: [&'static str; 3],
    direction: &'static str,
    status: &'static str,
    source: &'static str,
    destination: &'static str,
    display: &'static str,
    /// Talk time, +-1 s (exactly 0 for a call nobody answered).
    duration: i64,
    tag: &'static str,
    /// None: must be absent.
    user_id: Option<&'static str>,
}

fn scenarios() -> Vec<Expect> {
    // Outbound calls show no DID in the CDR and no outbound_display_number is configured:
    // DisplayNumber falls back to the first [[virtual_numbers]] entry (and its tag).
    const FIRST_DID: &str = "+918044556677";
    vec![
        Expect {
            what: "inbound direct, agent 100 answers",
            place: ["call-in", "918044556677", LEAD],
            direction: "Inbound",
            status: "Answered",
            source: LEAD,
            destination: "+919876500100",
            display: "+918044556677",
            duration: 5,
            tag: "sales",
            user_id: Some("u100"),
        },
        Expect {
            what: "inbound direct, agent 102 never answers (lead calls from 0XXXXXXXXXX)",
            place: ["call-in", "918044556601", LEAD_LOCAL],
            direction: "Inbound",
            status: "Missed",
            source: LEAD,
            destination: "+919876500102",
            display: "+918044556601",
            duration: 0,
            tag: "missed-direct",
            user_id: Some("u102"),
        },
        Expect {
            what: "inbound direct, agent 103 busy",
            place: ["call-in", "918044556602", LEAD],
            direction: "Inbound",
            status: "Missed",
            source: LEAD,
            destination: "+919876500103",
            display: "+918044556602",
            duration: 0,
            tag: "busy-direct",
            user_id: Some("u103"),
        },
        Expect {
            what: "queue sales ring-all, 100 answers, 101 cancelled",
            place: ["call-in", "918044556603", LEAD],
            direction: "Inbound",
            status: "Answered",
            source: LEAD,
            destination: "+919876500100",
            display: "+918044556603",
            duration: 5,
            tag: "queue-sales",
            user_id: Some("u100"),
        },
        Expect {
            what: "queue support, nobody answers (the queue's Answer() is not an agent)",
            place: ["call-in", "918044556604", LEAD],
            direction: "Inbound",
            status: "Missed",
            source: LEAD,
            destination: "+919876500102",
            display: "+918044556604",
            duration: 0,
            tag: "queue-support",
            user_id: Some("u102"),
        },
        Expect {
            what: "IVR only (no agent: the DID stands in for the destination)",
            place: ["call-in", "918044556605", LEAD],
            direction: "Inbound",
            status: "Missed",
            source: LEAD,
            destination: "+918044556605",
            display: "+918044556605",
            duration: 0,
            tag: "ivr",
            user_id: None,
        },
        Expect {
            what: "queue sales-b ring-all, 101 answers, 102 cancelled",
            place: ["call-in", "918044556606", LEAD],
            direction: "Inbound",
            status: "Answered",
            source: LEAD,
            destination: "+919876500101",
            display: "+918044556606",
            duration: 4,
            tag: "queue-sales-b",
            user_id: Some("u101"),
        },
        Expect {
            what: "outbound, agent 100 -> lead answers",
            place: ["call-out", "100", LEAD_LOCAL],
            direction: "Outbound",
            status: "Answered",
            source: "+919876500100",
            destination: LEAD,
            display: FIRST_DID,
            duration: 6,
            tag: "sales",
            user_id: Some("u100"),
        },
        Expect {
            what: "outbound, agent 101 -> busy",
            place: ["call-out", "101", "09611790000"],
            direction: "Outbound",
            status: "Missed",
            source: "+919876500101",
            destination: "+919611790000",
            display: FIRST_DID,
            duration: 0,
            tag: "sales",
            user_id: Some("u101"),
        },
        Expect {
            what: "outbound, agent 100 -> no answer",
            place: ["call-out", "100", "+919611791111"],
            direction: "Outbound",
            status: "Missed",
            source: "+919876500100",
            destination: "+919611791111",
            display: FIRST_DID,
            duration: 0,
            tag: "sales",
            user_id: Some("u100"),
        },
    ]
}

/// Checks one call log against its scenario; returns the problems.
fn check_fields(e: &Expect, log: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut eq = |field: &str, want: &str| {
        if log[field].as_str() != Some(want) {
            problems.push(format!("{field}: want {want:?}, got {}", log[field]));
        }
    };
    eq("Direction", e.direction);
    eq("Status", e.status);
    eq("SourceNumber", e.source);
    eq("DestinationNumber", e.destination);
    eq("DisplayNumber", e.display);
    eq("Tag", e.tag);
    match e.user_id {
        Some(u) => eq("UserId", u),
        None if !log["UserId"].is_null() => {
            problems.push(format!("UserId: want none, got {}", log["UserId"]))
        }
        None => {}
    }
    let duration = log["CallDuration"]
        .as_i64()
        .or_else(|| log["CallDuration"].as_str().and_then(|s| s.parse().ok()));
    match duration {
        Some(d) if (d - e.duration).abs() <= 1 => {}
        _ => problems.push(format!(
            "CallDuration: want {} (+-1), got {}",
            e.duration, log["CallDuration"]
        )),
    }
    if e.duration == 0 && duration != Some(0) {
        problems.push(format!(
            "CallDuration: a missed call must have 0, got {}",
            log["CallDuration"]
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_asterisk_22_end_to_end() {
    if !root_or_skip("tests/asterisk_e2e.rs", "The CDR path (end to end) was") {
        return;
    }
    let t0 = Instant::now();
    eprintln!("[e2e] rig.sh install");
    rig_ok(&["install"]);
    let _rig = RigGuard;

    eprintln!("[e2e] rig.sh start");
    rig_ok(&["start"]);
    all_scenarios_two_formats().await;
    eprintln!("[e2e] phase 1 done after {:?}", t0.elapsed());

    eprintln!("[e2e] rig.sh start (fresh Asterisk, empty CDR files)");
    rig_ok(&["start"]);
    rotation_then_crash().await;
    eprintln!("[e2e] all phases done after {:?}", t0.elapsed());
}

/// Phase 1: every scenario, two daemons (cdr-csv UTC / cdr-custom IST) must agree.
async fn all_scenarios_two_formats() {
    let st_csv = standin().await;
    let st_custom = standin().await;
    // Started before Asterisk writes anything: the CDR files do not exist yet.
    let mut d_csv = Daemon::new("csv", &st_csv, &csv_path(), false);
    let mut d_custom = Daemon::new("custom", &st_custom, &custom_path(), true);

    let expected = scenarios();
    eprintln!("[e2e] placing {} calls at once", expected.len());
    for e in &expected {
        place(&e.place);
    }
    wait_calls_over(Duration::from_secs(60));
    eprintln!("[e2e] calls over, waiting for delivery");
    wait_drained(&mut d_csv, &st_csv, &[csv_path()], expected.len());
    wait_drained(&mut d_custom, &st_custom, &[custom_path()], expected.len());

    let csv_logs = by_session(&d_csv, &st_csv);
    let custom_logs = by_session(&d_custom, &st_custom);
    let diag = || diagnostics(&[&d_csv, &d_custom], &[&st_csv, &st_custom]);

    // The root rows of each file, by the number dialled (unique per scenario).
    let csv_roots: HashMap<String, Row> = roots(&read_rows(&csv_path()))
        .into_iter()
        .map(|r| (r.dst.clone(), r))
        .collect();
    let custom_roots: HashMap<String, Row> = roots(&read_rows(&custom_path()))
        .into_iter()
        .map(|r| (r.dst.clone(), r))
        .collect();
    assert_eq!(
        csv_roots.len(),
        expected.len(),
        "root rows in cdr-csv: {:?}",
        csv_roots.keys()
    );

    for log in csv_logs.values() {
        eprintln!("[e2e] csv call log: {log}");
    }
    let mut problems = Vec::new();
    for e in &expected {
        let dialled = e.place[if e.place[0] == "call-in" { 1 } else { 2 }];
        let root = &csv_roots[dialled];
        let croot = custom_roots
            .get(dialled)
            .unwrap_or_else(|| panic!("no root row for {dialled} in cdr-custom{}", diag()));
        // Same call in both files; linkedid = uniqueid of the root; custom times are IST.
        assert_eq!(root.uniqueid, croot.uniqueid, "{}", e.what);
        assert_eq!(croot.linkedid.as_deref(), Some(croot.uniqueid.as_str()));
        if rig_tz() == "Asia/Kolkata" {
            assert_ne!(
                root.start, croot.start,
                "cdr-custom must be in IST, not UTC"
            );
        }
        assert_eq!(utc_of_local(&croot.start), root.start, "{}", e.what);

        let id = &root.uniqueid;
        for (name, logs) in [("csv", &csv_logs), ("custom", &custom_logs)] {
            let Some(log) = logs.get(id) else {
                problems.push(format!(
                    "{name}: {} ({id}): no call log with this CallSessionId",
                    e.what
                ));
                continue;
            };
            for p in check_call(e, log, root) {
                problems.push(format!("{name}: {} ({id}): {p}\n    {log}", e.what));
            }
        }
        if let (Some(a), Some(b)) = (csv_logs.get(id), custom_logs.get(id)) {
            if a != b {
                problems.push(format!(
                    "{} ({id}): the two daemons disagree:\n    csv:    {a}\n    custom: {b}",
                    e.what
                ));
            }
        }
    }
    let want_ids: BTreeSet<&String> = csv_roots.values().map(|r| &r.uniqueid).collect();
    for (name, logs) in [("csv", &csv_logs), ("custom", &custom_logs)] {
        let got: BTreeSet<&String> = logs.keys().collect();
        if got != want_ids {
            problems.push(format!(
                "{name}: CallSessionIds {got:?}, want exactly {want_ids:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n{}",
        problems.len(),
        problems.join("\n"),
        diag()
    );

    for (d, st) in [(&d_csv, &st_csv), (&d_custom, &st_custom)] {
        let status = d.status();
        let ok = num(&status, "pending") == 0
            && num(&status, "dead") == 0
            && counter(&status, "calls_enqueued") == expected.len() as i64;
        assert!(
            ok,
            "daemon {}: want 0 pending, 0 dead, calls_enqueued {}; status {status}{}",
            d.name,
            expected.len(),
            diagnostics(&[d], &[st])
        );
    }
    d_csv.stop();
    d_custom.stop();
}

/// Phase 2 and 3: rotation while Asterisk writes, then SIGKILL and restart.
async fn rotation_then_crash() {
    let st = standin().await;
    let mut d = Daemon::new("rotation", &st, &csv_path(), false);
    let rotated = csv_path().with_extension("csv.1");
    let files = || vec![rotated.clone(), csv_path()];

    // A) two calls into Master.csv, delivered.
    eprintln!("[e2e] rotation: 2 calls before the rename");
    place(&["call-in", "918044556677", LEAD]);
    place(&["call-out", "101", "09611790000"]);
    wait_calls_over(Duration::from_secs(30));
    wait_drained(&mut d, &st, &[csv_path()], 2);

    // B) a ring-all queue call: Asterisk writes the cancelled member's (101) row when 100
    //    answers, ~1 s in, and the rest ~5 s later. Rename right after that first row, so
    //    the call's rows straddle the two files.
    eprintln!("[e2e] rotation: queue call, rename after its first row");
    let size_before = std::fs::metadata(csv_path()).map(|m| m.len()).unwrap_or(0);
    place(&["call-in", "918044556603", LEAD]);
    let grew = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
        std::fs::metadata(csv_path()).map(|m| m.len()).unwrap_or(0) > size_before
    });
    assert!(grew, "the queue member's early row never came");
    std::fs::rename(csv_path(), &rotated).expect("mv Master.csv Master.csv.1");
    eprintln!("[e2e] rotation: renamed; more calls into the new Master.csv");
    place(&["call-in", "918044556605", LEAD]);
    place(&["call-out", "100", LEAD_LOCAL]);
    place(&["call-in", "918044556602", LEAD]);
    wait_calls_over(Duration::from_secs(30));
    place(&["call-in", "918044556677", LEAD]);
    wait_calls_over(Duration::from_secs(30));
    wait_drained(&mut d, &st, &files(), 7);

    let old_rows = read_rows(&rotated);
    let new_rows = read_rows(&csv_path());
    let queue_root = new_rows
        .iter()
        .find(|r| is_root_row(r) && r.dst == "918044556603")
        .unwrap_or_else(|| {
            panic!(
                "the queue call's root row is not in the new Master.csv{}",
                diagnostics(&[&d], &[&st])
            )
        });
    assert!(
        old_rows
            .iter()
            .any(|r| r.channel.starts_with("Local/101@agents-") && r.start >= queue_root.start),
        "the queue call did not straddle the rename (no member row in Master.csv.1){}",
        diagnostics(&[&d], &[&st])
    );
    let logs = by_session(&d, &st);
    let queue_log = logs
        .get(&queue_root.uniqueid)
        .unwrap_or_else(|| panic!("queue call {} not delivered", queue_root.uniqueid));
    let queue_expect = scenarios()
        .into_iter()
        .find(|e| e.place[1] == "918044556603")
        .expect("queue scenario");
    let problems = check_call(&queue_expect, queue_log, queue_root);
    assert!(
        problems.is_empty(),
        "queue call straddling the rename: {problems:?}\n{queue_log}{}",
        diagnostics(&[&d], &[&st])
    );
    check_exactly_once(&d, &st, &files());
    check_every_call(&d, &st, &files());
    let status = d.status();
    assert!(
        counter(&status, "cdr_file_rotations") >= 1 && counter(&status, "calls_enqueued") == 7,
        "after the rename: want a rotation followed and 7 calls enqueued; status {status}{}",
        diagnostics(&[&d], &[&st])
    );

    // C) SIGKILL while calls are in progress and rows of a finished call are staged.
    eprintln!("[e2e] crash: SIGKILL while calls are in progress");
    assert_eq!(num(&d.state(), "staged"), 0);
    place(&["call-in", "918044556601", LEAD_LOCAL]);
    place(&["call-in", "918044556677", LEAD]);
    place(&["call-out", "101", "09611790000"]);
    let staged = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        num(&d.state(), "staged") > 0
    });
    assert!(
        staged,
        "the busy call's rows were never staged{}",
        diagnostics(&[&d], &[&st])
    );
    d.kill9();
    let (active, _) = channel_counts();
    eprintln!("[e2e] crash: killed with {active} channel(s) up; restarting");
    assert!(active > 0, "the calls ended before the kill");
    d.start();
    place(&["call-out", "100", LEAD]);
    wait_calls_over(Duration::from_secs(30));
    wait_drained(&mut d, &st, &files(), 11);
    check_exactly_once(&d, &st, &files());
    check_every_call(&d, &st, &files());
    let status = d.status();
    eprintln!("[e2e] after crash and restart: {status}");
    let lines: usize = files().iter().map(|f| line_count(f)).sum();
    assert!(
        num(&status, "pending") == 0
            && num(&status, "dead") == 0
            && counter(&status, "calls_enqueued") == 11
            && counter(&status, "cdr_rows_read") as usize == lines,
        "after the restart: want 0 pending, 0 dead, 11 calls enqueued, {lines} CDR rows read \
         (each once); status {status}{}",
        diagnostics(&[&d], &[&st])
    );
    d.stop();
}

/// The fields every call log carries; `UserId` too when the scenario names one.
const CALL_LOG_FIELDS: [&str; 10] = [
    "SourceNumber",
    "DestinationNumber",
    "DisplayNumber",
    "StartTime",
    "EndTime",
    "CallDuration",
    "Status",
    "Direction",
    "CallSessionId",
    "Tag",
];

/// Every field of a call log against its scenario and its root CDR row (UTC times, the
/// root's uniqueid), and no field beyond those.
fn check_call(e: &Expect, log: &Value, root: &Row) -> Vec<String> {
    let mut problems = check_fields(e, log);
    for (field, want) in [
        ("StartTime", &root.start),
        ("EndTime", &root.end),
        ("CallSessionId", &root.uniqueid),
    ] {
        if log[field].as_str() != Some(want.as_str()) {
            problems.push(format!(
                "{field}: want {want:?} (the root row), got {}",
                log[field]
            ));
        }
    }
    let allowed: BTreeSet<&str> = CALL_LOG_FIELDS
        .into_iter()
        .chain(e.user_id.map(|_| "UserId"))
        .collect();
    let fields: BTreeSet<&str> = log
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if fields != allowed {
        problems.push(format!("fields {fields:?}, want exactly {allowed:?}"));
    }
    problems
}

/// The scenario a root CDR row belongs to: inbound by the DID dialled, outbound by the
/// number dialled (local or E.164 spelling).
fn scenario_of(root: &Row) -> Option<Expect> {
    scenarios().into_iter().find(|e| match e.place[0] {
        "call-in" => e.place[1] == root.dst,
        _ => {
            root.channel.contains("@from-internal-")
                && (e.place[2] == root.dst || e.destination == root.dst)
        }
    })
}

/// Every call in the CDR files (by its root row) delivered once with every field right.
fn check_every_call(d: &Daemon, st: &StandIn, files: &[PathBuf]) {
    let logs = by_session(d, st);
    let mut problems = Vec::new();
    for root in files.iter().flat_map(|f| roots(&read_rows(f))) {
        let Some(e) = scenario_of(&root) else {
            problems.push(format!("no scenario for the root row {root:?}"));
            continue;
        };
        match logs.get(&root.uniqueid) {
            None => problems.push(format!("{} ({}): not delivered", e.what, root.uniqueid)),
            Some(log) => {
                for p in check_call(&e, log, &root) {
                    problems.push(format!("{} ({}): {p}\n    {log}", e.what, root.uniqueid));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "daemon {}: {} problem(s):\n{}{}",
        d.name,
        problems.len(),
        problems.join("\n"),
        diagnostics(&[d], &[st])
    );
}

/// Every call in the CDR files (by its root row) delivered exactly once, nothing else.
fn check_exactly_once(d: &Daemon, st: &StandIn, files: &[PathBuf]) {
    let logs = by_session(d, st);
    let want: BTreeSet<String> = files
        .iter()
        .flat_map(|f| roots(&read_rows(f)))
        .map(|r| r.uniqueid)
        .collect();
    let got: BTreeSet<String> = logs.keys().cloned().collect();
    assert_eq!(
        got,
        want,
        "daemon {}: delivered CallSessionIds vs the calls in the CDR files{}",
        d.name,
        diagnostics(&[d], &[st])
    );
}

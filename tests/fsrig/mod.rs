//! The real-FreeSWITCH rig (`tests/freeswitch/rig.sh`, see its README) as test binaries drive
//! it: the root check with its loud SKIPPED banner, running `rig.sh`, the exclusive lock on
//! [`LOCK`] (one FreeSWITCH for all tests), a guard that stops FreeSWITCH on drop, a raw
//! event-socket (ESL) client that records every byte it reads, and sipp; and for the tests
//! through `pbxlink run`: the daemon against the CRM stand-in ([`Run`]), the lead's sipp
//! scenario and carrier call, and call-log look-ups.
//!
//! Included with `mod fsrig;`; cargo does not build `tests/fsrig/mod.rs` as a test of its own.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pbxlink::crm::leadsquared::standin::{Expectations, StandIn};
use serde_json::Value;

/// Held (flock, exclusive) by a test for its whole use of the FreeSWITCH rig.
pub const LOCK: &str = "/var/tmp/pbxlink-freeswitch.lock";

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// True when `PBXLINK_REQUIRE_RIG=1`: a missing rig or a non-root run is then a failure, not a skip.
pub fn rig_required() -> bool {
    std::env::var("PBXLINK_REQUIRE_RIG").as_deref() == Ok("1")
}

/// Where rig.sh looks for the three source tarballs (`PBXLINK_FREESWITCH_SOURCES`).
pub fn sources_dir() -> PathBuf {
    std::env::var_os("PBXLINK_FREESWITCH_SOURCES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/freeswitch"))
}

/// True when the rig can run here: root, and either FreeSWITCH is installed in the chroot or the
/// source tarballs are there to build it. Otherwise prints a loud SKIPPED banner and returns false
/// (the caller returns), or panics when [`rig_required`].
pub fn root_or_skip(test_file: &str, untested: &str) -> bool {
    let why = if !is_root() {
        Some("not root (the FreeSWITCH rig is a chroot)".to_string())
    } else if !rig_root()
        .join("usr/local/freeswitch/bin/freeswitch")
        .exists()
        && !sources_dir().join("freeswitch-1.10.12.tar.xz").exists()
    {
        Some(format!(
            "no FreeSWITCH in {} and no sources in {} (tests/freeswitch/README.md)",
            rig_root().display(),
            sources_dir().display()
        ))
    } else {
        None
    };
    let Some(why) = why else {
        return true;
    };
    if rig_required() {
        panic!("PBXLINK_REQUIRE_RIG=1 but {test_file} cannot use the FreeSWITCH rig: {why}");
    }
    let bar = "*".repeat(72);
    eprintln!(
        "\n{bar}\n\
         *** SKIPPED {test_file}: {why}.\n\
         *** {untested} NOT tested against a real FreeSWITCH.\n\
         *** Run as root: sudo .ci/run, or cargo test --test freeswitch_rig -- --nocapture\n\
         *** (PBXLINK_REQUIRE_RIG=1 turns this skip into a failure.)\n\
         {bar}\n"
    );
    false
}

/// The rig's chroot (rig.sh: `PBXLINK_FREESWITCH_ROOT`).
pub fn rig_root() -> PathBuf {
    PathBuf::from(
        std::env::var("PBXLINK_FREESWITCH_ROOT")
            .unwrap_or_else(|_| "/var/tmp/pbxlink-freeswitch-root".into()),
    )
}

/// mod_json_cdr's log-dir on the host.
pub fn json_cdr_dir() -> PathBuf {
    rig_root().join("usr/local/freeswitch/log/json_cdr")
}

/// mod_cdr_csv's Master.csv on the host (template "pbxlink", legs ab).
pub fn cdr_csv() -> PathBuf {
    rig_root().join("usr/local/freeswitch/log/cdr-csv/Master.csv")
}

pub fn esl_port() -> u16 {
    std::env::var("PBXLINK_ESL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8021)
}

pub fn esl_password() -> String {
    std::env::var("PBXLINK_ESL_PASSWORD").unwrap_or_else(|_| "ClueCon".into())
}

pub fn rig_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/freeswitch/rig.sh")
}

/// Runs rig.sh with `args`; panics only if it cannot be run.
pub fn rig(args: &[&str]) -> Output {
    Command::new(rig_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running rig.sh {args:?}: {e}"))
}

/// The last `lines` lines of a file, or why it could not be read.
pub fn tail_of(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let all: Vec<&str> = s.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Runs rig.sh; any failure panics with its output and the tail of freeswitch.log.
pub fn rig_ok(args: &[&str]) -> String {
    let out = rig(args);
    if !out.status.success() {
        panic!(
            "rig.sh {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- freeswitch.log\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail_of(
                &rig_root().join("usr/local/freeswitch/log/freeswitch.log"),
                40
            )
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops FreeSWITCH when dropped, also when the test panics.
pub struct RigGuard;

impl Drop for RigGuard {
    fn drop(&mut self) {
        let out = rig(&["stop"]);
        if !out.status.success() {
            eprintln!(
                "rig.sh stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The exclusive flock on [`LOCK`]; released when dropped (the file is closed).
pub struct RigLock {
    _file: File,
}

impl RigLock {
    #[allow(clippy::incompatible_msrv)]
    pub fn acquire(tag: &str) -> RigLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .unwrap_or_else(|e| panic!("open {LOCK}: {e}"));
        eprintln!("[{tag}] waiting for the exclusive lock on {LOCK}");
        file.lock().unwrap_or_else(|e| panic!("lock {LOCK}: {e}"));
        RigLock { _file: file }
    }
}

/// One event-socket message: its outer headers and its body (an event's own headers and body
/// for `text/event-plain`), values URL-decoded.
#[derive(Debug, Clone)]
pub struct EslMessage {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl EslMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// For `text/event-plain`: the event's headers (the body up to its first blank line).
    pub fn event(&self) -> Vec<(String, String)> {
        let head = self.body.split("\n\n").next().unwrap_or("");
        parse_headers(head)
    }

    pub fn event_header(&self, name: &str) -> Option<String> {
        self.event()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_headers(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), url_decode(v)))
        .collect()
}

/// Splits `buf` into whole ESL messages (headers, blank line, Content-Length body); the
/// incomplete tail is left out.
pub fn split_messages(buf: &[u8]) -> Vec<EslMessage> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(end) = find(&buf[pos..], b"\n\n") {
        let head = String::from_utf8_lossy(&buf[pos..pos + end]).into_owned();
        let headers = parse_headers(&head);
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "Content-Length")
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let body_start = pos + end + 2;
        if body_start + len > buf.len() {
            break;
        }
        let body = String::from_utf8_lossy(&buf[body_start..body_start + len]).into_owned();
        out.push(EslMessage { headers, body });
        pos = body_start + len;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An authenticated event-socket connection whose reader thread records every byte.
pub struct Esl {
    stream: TcpStream,
    pub raw: Arc<Mutex<Vec<u8>>>,
}

impl Esl {
    /// Connects to 127.0.0.1:port, answers `auth/request`, waits for `+OK accepted`.
    pub fn connect(port: u16, password: &str) -> Esl {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect ESL 127.0.0.1:{port}: {e}"));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let mut reader = stream.try_clone().expect("clone ESL stream");
        let sink = Arc::clone(&raw);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .expect("ESL buffer lock")
                        .extend_from_slice(&chunk[..n]),
                }
            }
        });
        let esl = Esl { stream, raw };
        esl.wait_for(0, Duration::from_secs(10), |m| {
            m.header("Content-Type") == Some("auth/request")
        });
        let mark = esl.len();
        esl.send(&format!("auth {password}"));
        let reply = esl.wait_for(mark, Duration::from_secs(10), |m| {
            m.header("Content-Type") == Some("command/reply")
        });
        assert_eq!(
            reply.header("Reply-Text"),
            Some("+OK accepted"),
            "ESL auth: {reply:?}"
        );
        esl
    }

    /// Bytes read so far (a mark for [`Esl::messages_since`]).
    pub fn len(&self) -> usize {
        self.raw.lock().expect("ESL buffer lock").len()
    }

    pub fn bytes_since(&self, mark: usize) -> Vec<u8> {
        self.raw.lock().expect("ESL buffer lock")[mark..].to_vec()
    }

    pub fn messages_since(&self, mark: usize) -> Vec<EslMessage> {
        split_messages(&self.bytes_since(mark))
    }

    /// Sends one command (the blank line that ends it is added).
    pub fn send(&self, cmd: &str) {
        (&self.stream)
            .write_all(format!("{cmd}\n\n").as_bytes())
            .unwrap_or_else(|e| panic!("ESL send {cmd:?}: {e}"));
    }

    /// Waits until a whole message after `mark` satisfies `pred`; panics after `timeout`.
    pub fn wait_for(
        &self,
        mark: usize,
        timeout: Duration,
        pred: impl Fn(&EslMessage) -> bool,
    ) -> EslMessage {
        let start = Instant::now();
        loop {
            if let Some(m) = self.messages_since(mark).into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                start.elapsed() < timeout,
                "no matching ESL message within {timeout:?}; got:\n{}",
                String::from_utf8_lossy(&self.bytes_since(mark))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs sipp (Debian's sip-tester) with `args` and a hard timeout; returns whether it exited 0
/// and its output.
pub fn sipp(args: &[&str], timeout_s: u32) -> (bool, String) {
    let out = Command::new("timeout")
        .arg(timeout_s.to_string())
        .arg("sipp")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running sipp {args:?}: {e} (apt-get install sip-tester)"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---- `pbxlink run` against the CRM stand-in (moved here from tests/freeswitch_e2e.rs so that
// tests/freeswitch_transfers.rs uses the same daemon, carrier call and log helpers).

pub const TOKEN: &str = "fs-e2e-token";
/// The carrier's caller: the lead.
pub const LEAD: &str = "+4915112345678";

/// The rig's `pbxlink` mod_cdr_csv template, column by column (tests/freeswitch/conf).
pub const PBXLINK_COLUMNS: [&str; 38] = [
    "uuid",
    "bleg_uuid",
    "originating_leg_uuid",
    "cc_member_session_uuid",
    "direction",
    "context",
    "caller_id_name",
    "caller_id_number",
    "destination_number",
    "start_epoch",
    "answer_epoch",
    "end_epoch",
    "start_uepoch",
    "answer_uepoch",
    "end_uepoch",
    "duration",
    "billsec",
    "hangup_cause",
    "sip_hangup_disposition",
    "cc_queue",
    "cc_agent",
    "pbxlink_lead_id",
    "record_path",
    "record_name",
    "accountcode",
    "call_uuid",
    "sip_call_id",
    "cc_side",
    "user_name",
    "sip_from_user",
    "dialed_user",
    "sip_req_user",
    "origination_caller_id_number",
    "last_app",
    "pbxlink_lead_number",
    "pbxlink_did",
    "presence_id",
    "ani",
];

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the daemon when dropped (also when the test panics).
pub struct DaemonGuard(pub Option<Child>);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl DaemonGuard {
    /// SIGTERM, then waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// One daemon run against the stand-in.
pub struct Run {
    pub http: reqwest::Client,
    pub base: String,
    pub standin: StandIn,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
    pub daemon: DaemonGuard,
}

impl Run {
    /// Starts `pbxlink run` with call-log source `source` against `standin`; `directory` is
    /// the `[[virtual_numbers]]` / `[[agents]]` part of the configuration.
    pub async fn start(source: &str, standin: &StandIn, directory: &str) -> Run {
        let dir = tempfile::Builder::new()
            .prefix("pbxlink-fs-run-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut toml = String::new();
        let _ = write!(
            toml,
            "[store]\npath = {db:?}\n\n\
             [leadsquared]\ncall_log_url = {cl:?}\nagent_popup_url = {pop:?}\ncall_route_url = {route:?}\n\
             access_key = \"ak\"\nsecret_key = \"sk\"\ndefault_country_code = \"49\"\n\n\
             {directory}\
             [freeswitch]\ncall_log_source = \"{source}\"\njson_cdr_dir = {json:?}\n{csv_line}\
             cdr_columns = [{cols}]\n\n\
             [freeswitch.esl]\nhost = \"127.0.0.1\"\nport = {esl_port}\npassword = {esl_password:?}\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\nroute_fallback = \"600\"\n",
            db = dir.path().join("pbxlink.db"),
            cl = standin.call_log_url(),
            pop = standin.agent_popup_url(),
            route = standin.call_route_url(),
            json = json_cdr_dir(),
            // "both" reads the one file source whose key is set: json_cdr here.
            csv_line = if source == "both" {
                String::new()
            } else {
                format!("cdr_csv = {:?}\n", cdr_csv())
            },
            cols = PBXLINK_COLUMNS.map(|c| format!("{c:?}")).join(", "),
            esl_port = esl_port(),
            esl_password = esl_password(),
        );
        let config = dir.path().join("pbxlink.toml");
        std::fs::write(&config, &toml).expect("config");
        let check = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .expect("check-config");
        assert!(
            check.status.success(),
            "check-config: {}{}\n{toml}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.path().join("pbxlink.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,pbxlink=debug")
            .stdout(File::create(&log).expect("log"))
            .stderr(File::options().append(true).open(&log).expect("log"))
            .spawn()
            .expect("pbxlink run");
        let run = Run {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            standin: standin.clone(),
            log,
            _dir: dir,
            daemon: DaemonGuard(Some(child)),
        };
        run.wait_ready(Duration::from_secs(20)).await;
        eprintln!("[fsrig] {source}: pbxlink ready (ESL logged in)");
        run
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&StandIn) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = cond(&self.standin) {
                return v;
            }
            if started.elapsed() > limit {
                panic!(
                    "{what}: not within {limit:?}\nstand-in received: {:#?}\n--- pbxlink log\n{}",
                    self.standin
                        .received()
                        .iter()
                        .map(|r| (r.endpoint, r.status, r.body.clone(), r.problem.clone()))
                        .collect::<Vec<_>>(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz?token={TOKEN}", self.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "pbxlink not ready within {limit:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// sipp's own `uac` scenario with the lead's number as the caller (sipp calls itself
/// `sipp`, which is no phone number).
pub fn lead_scenario(dir: &Path) -> PathBuf {
    let out = Command::new("sipp")
        .args(["-sd", "uac"])
        .output()
        .expect("sipp -sd uac (apt-get install sip-tester)");
    let text = String::from_utf8_lossy(&out.stdout)
        .replace(
            "From: sipp <sip:sipp@",
            &format!("From: {LEAD} <sip:{LEAD}@"),
        )
        .replace("Contact: sip:sipp@", &format!("Contact: sip:{LEAD}@"));
    assert!(text.contains(LEAD), "sipp's uac scenario: {text}");
    let path = dir.join("lead-uac.xml");
    std::fs::write(&path, text).expect("scenario");
    path
}

/// The lead calls `did` from the carrier and hangs up `hold_ms` after the answer (or when
/// FreeSWITCH gives up).
pub async fn carrier_call(scenario: &Path, did: &str, hold_ms: u32, port: &str) -> (bool, String) {
    let (scenario, did, port) = (
        scenario.to_string_lossy().into_owned(),
        did.to_owned(),
        port.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let hold = hold_ms.to_string();
        sipp(
            &[
                "-sf",
                &scenario,
                "-s",
                &did,
                "127.0.0.1:25080",
                "-i",
                "127.0.0.1",
                "-p",
                &port,
                "-m",
                "1",
                "-l",
                "1",
                "-d",
                &hold,
                "-timeout",
                "40s",
                "-nostdin",
            ],
            45,
        )
    })
    .await
    .expect("sipp task")
}

pub fn logs_where(st: &StandIn, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    st.accepted_call_logs()
        .into_iter()
        .filter(|l| pred(l))
        .collect()
}

/// A time field of a call log, as UTC.
pub fn time_of(log: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    let text = log[field].as_str().unwrap_or_default();
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("{field} {text:?}: {e}: {log}"))
        .and_utc()
}

pub async fn new_standin() -> StandIn {
    StandIn::start(
        "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
        Expectations {
            url_key: "fs-key".into(),
            access_keys: Some(("ak".into(), "sk".into())),
            reject_call_ids: vec![],
        },
    )
    .await
    .expect("stand-in")
}

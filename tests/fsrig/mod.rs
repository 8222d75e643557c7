//! The real-FreeSWITCH rig (`tests/freeswitch/rig.sh`, see its README) as test binaries drive
//! it: the root check with its loud SKIPPED banner, running `rig.sh`, the exclusive lock on
//! [`LOCK`] (one FreeSWITCH for all tests), a guard that stops FreeSWITCH on drop (the
//! PBX-neutral parts come from `tests/rigkit`), [`install_and_start`] for a test's prologue,
//! the files FreeSWITCH writes, a raw event-socket (ESL) client that records every byte it
//! reads, and sipp: carrier calls into a DID ([`carrier_call`], [`carrier_call_from`] with
//! the lead's number from [`lead_scenario`], [`lead_call`] from async code) and the carrier's
//! answering side ([`carrier_uas`]). For the tests through `pbxlink run`
//! (`freeswitch_e2e`, `freeswitch_transfers`): [`Run`], the daemon on the rig against the
//! LeadSquared stand-in ([`new_standin`]), watched through `tests/daemon_watch`, and
//! call-log look-ups ([`logs_where`], [`time_of`]).
//!
//! Included with `mod fsrig;`; cargo does not build `tests/fsrig/mod.rs` as a test of its own.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../rigkit/mod.rs"]
mod rigkit;
// Each test binary uses a subset of these.
#[allow(unused_imports)]
pub use rigkit::{RigGuard, RigLock, is_root, rig, rig_ok, rig_ok_with, rig_required, tail_of};

#[path = "../daemon_watch/mod.rs"]
mod daemon_watch;
// Each test binary uses a subset of these.
#[allow(unused_imports)]
pub use daemon_watch::{DaemonGuard, DaemonWatch, start_daemon};

use pbxlink::crm::leadsquared::standin::{Expectations, StandIn};
use pbxlink::pbx::freeswitch::cdr::{CsvLayout, templates};
use serde_json::Value;

/// Held (flock, exclusive) by a test for its whole use of the FreeSWITCH rig.
pub const LOCK: &str = "/var/tmp/pbxlink-freeswitch.lock";

/// The events the rig tests subscribe to on a raw connection. Every word after `CUSTOM` is
/// taken as a subclass: BACKGROUND_JOB must come before it.
pub const SUBSCRIBE: &str = "event plain BACKGROUND_JOB CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_HANGUP_COMPLETE CUSTOM callcenter::info";

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
    rigkit::skipped(test_file, &why, untested, "FreeSWITCH")
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

/// The log rig.sh failures show: freeswitch.log (for the rig kit).
const PBX_LOG: &str = "freeswitch.log";

fn pbx_log() -> PathBuf {
    rig_root().join("usr/local/freeswitch/log/freeswitch.log")
}

impl RigLock {
    /// Takes the exclusive lock on [`LOCK`], waiting for the test holding it.
    pub fn acquire(tag: &str) -> RigLock {
        RigLock::lock(tag)
    }
}

/// A test's hold on the running rig: when dropped, FreeSWITCH is stopped first, then the
/// lock is released.
pub struct Started {
    _guard: RigGuard,
    _lock: RigLock,
}

/// What every rig test does after [`root_or_skip`]: takes the lock (`tag` names the test in
/// the progress messages), installs the rig if needed and starts FreeSWITCH, with the extra
/// environment `env` for rig.sh. FreeSWITCH is stopped also when the start fails.
pub fn install_and_start_with(tag: &str, env: &[(&str, &str)]) -> Started {
    let lock = RigLock::acquire(tag);
    rig_ok_with(&["install"], env);
    let guard = RigGuard;
    rig_ok_with(&["start"], env);
    Started {
        _guard: guard,
        _lock: lock,
    }
}

/// [`install_and_start_with`] without extra environment.
pub fn install_and_start(tag: &str) -> Started {
    install_and_start_with(tag, &[])
}

/// The json_cdr files FreeSWITCH has written so far.
pub fn json_files() -> BTreeSet<PathBuf> {
    std::fs::read_dir(json_cdr_dir())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
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

/// The carrier's port on the rig: calls from "the PSTN" into a DID arrive here.
const CARRIER: &str = "127.0.0.1:25080";

/// A carrier call into DID `did` with sipp's own `uac` scenario from local port `port`,
/// hung up `hold_ms` after the answer (or when FreeSWITCH gives up); whether sipp exited 0
/// and its output.
pub fn carrier_call(did: &str, hold_ms: u32, port: &str) -> (bool, String) {
    carrier_sipp(&["-sn", "uac"], did, hold_ms, port)
}

/// [`carrier_call`] with the scenario file `scenario` (e.g. [`lead_scenario`]'s).
pub fn carrier_call_from(scenario: &Path, did: &str, hold_ms: u32, port: &str) -> (bool, String) {
    let scenario = scenario.to_string_lossy();
    carrier_sipp(&["-sf", &scenario], did, hold_ms, port)
}

fn carrier_sipp(scenario: &[&str], did: &str, hold_ms: u32, port: &str) -> (bool, String) {
    let hold = hold_ms.to_string();
    let mut args = scenario.to_vec();
    args.extend([
        "-s",
        did,
        CARRIER,
        "-i",
        "127.0.0.1",
        "-p",
        port,
        "-m",
        "1",
        "-l",
        "1",
        "-d",
        &hold,
        "-timeout",
        "40s",
        "-nostdin",
    ]);
    sipp(&args, 45)
}

/// sipp's own `uac` scenario with `lead` as the caller's number (sipp calls itself `sipp`,
/// which is no phone number), written into `dir`; for [`carrier_call_from`].
pub fn lead_scenario(dir: &Path, lead: &str) -> PathBuf {
    let out = Command::new("sipp")
        .args(["-sd", "uac"])
        .output()
        .expect("sipp -sd uac (apt-get install sip-tester)");
    let text = String::from_utf8_lossy(&out.stdout)
        .replace(
            "From: sipp <sip:sipp@",
            &format!("From: {lead} <sip:{lead}@"),
        )
        .replace("Contact: sip:sipp@", &format!("Contact: sip:{lead}@"));
    assert!(text.contains(lead), "sipp's uac scenario: {text}");
    let path = dir.join("lead-uac.xml");
    std::fs::write(&path, text).expect("scenario");
    path
}

/// The carrier's answering side for calls FreeSWITCH places to the PSTN (the lead of a
/// click to call): sipp's `uas` on 127.0.0.1:25099 for `calls` calls, for at most
/// `timeout_s` seconds; whether sipp exited 0 and its output.
pub fn carrier_uas(calls: u32, timeout_s: u32) -> (bool, String) {
    let (calls, timeout) = (calls.to_string(), format!("{timeout_s}s"));
    sipp(
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            "25099",
            "-m",
            &calls,
            "-timeout",
            &timeout,
            "-nostdin",
        ],
        timeout_s + 5,
    )
}

/// [`carrier_call_from`] from async code (on a blocking thread): the lead calls `did` from
/// the carrier with `scenario` and hangs up `hold_ms` after the answer (or when FreeSWITCH
/// gives up).
pub async fn lead_call(scenario: &Path, did: &str, hold_ms: u32, port: &str) -> (bool, String) {
    let (scenario, did, port) = (scenario.to_owned(), did.to_owned(), port.to_owned());
    tokio::task::spawn_blocking(move || carrier_call_from(&scenario, &did, hold_ms, &port))
        .await
        .expect("sipp task")
}

// ---- `pbxlink run` on the rig against the CRM stand-in.

/// The `[http] token` of every [`Run`].
pub const TOKEN: &str = "fs-e2e-token";
/// The carrier's caller: the lead (for [`lead_scenario`]).
pub const LEAD: &str = "+4915112345678";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One `pbxlink run` on the rig against the stand-in: watched through [`DaemonWatch`]
/// (deref), killed when dropped; `daemon.stop()` ends it with SIGTERM.
pub struct Run {
    watch: DaemonWatch,
    _dir: tempfile::TempDir,
    pub daemon: DaemonGuard,
}

impl std::ops::Deref for Run {
    type Target = DaemonWatch;

    fn deref(&self) -> &DaemonWatch {
        &self.watch
    }
}

impl Run {
    /// Starts `pbxlink run` with call-log source `source` (`json_cdr`, `cdr_csv` with the
    /// rig's `pbxlink` template, `esl` or `both`) against `standin`, and waits until it is
    /// ready; `directory` is the `[[virtual_numbers]]` / `[[agents]]` part of the
    /// configuration.
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
            // The rig's `pbxlink` mod_cdr_csv template (tests/freeswitch/conf, kept equal to
            // `templates::PBXLINK` by a unit test), column by column.
            cols = CsvLayout::from_template_text(templates::PBXLINK)
                .columns
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            esl_port = esl_port(),
            esl_password = esl_password(),
        );
        let (child, log) = start_daemon(dir.path(), &toml);
        let run = Run {
            watch: DaemonWatch::new(port, TOKEN, standin, log),
            _dir: dir,
            daemon: DaemonGuard(Some(child)),
        };
        run.wait_ready(Duration::from_secs(20)).await;
        eprintln!("[fsrig] {source}: pbxlink ready (ESL logged in)");
        run
    }
}

/// A LeadSquared stand-in on 127.0.0.1 expecting the keys every [`Run`] is configured with.
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

/// The call logs the stand-in accepted that satisfy `pred`.
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

//! The figures of pbxlink's live (AMI) path: agent popup latency, AMI events/s on one core,
//! and daemon memory when 2,000 calls ring at once.
//!
//! `cargo bench --bench live`. Plain timing (std::time::Instant, and SystemTime across the
//! bench and the daemon process), no criterion. Asterisk is a mock AMI server written here:
//! a TcpListener speaking the manager protocol (banner, MD5 `Challenge`, `Login`, `Filter`,
//! `Events`, `Ping`, `CoreShowChannels` with its `CoreShowChannelsComplete`), sending the
//! events of inbound calls shaped like the real captures in tests/fixtures (Asterisk 22
//! header sets). The CRM is the local LeadSquared stand-in. Nothing leaves the machine.
//!
//! 1. Popup latency: the release binary `pbxlink run` with `[asterisk.ami]` on the mock;
//!    one inbound call every 20 ms (10 in progress); from the mock's write of each
//!    `DialBegin` to the Agent Popup request arriving at the stand-in.
//! 2. AMI events/s on one core: `Framer` + `CallTracker::handle` on one thread over a
//!    512,000-event stream; then mock server -> `AmiClient` -> `events()` -> tracker on a
//!    current_thread runtime.
//! 3. RSS of `pbxlink run`, idle and right after 2,000 calls start ringing at once.
//!
//! 4. Footprint and speed of the release binary, before and after in one run (`footprint`;
//!    `blast` runs only its first part): the 300,000-event AMI blast through `pbxlink run`
//!    side by side with panoramisk on the same stream, RSS idle and through the blast, a
//!    200,000-call `pbxlink import` (time, peak RSS), a 2,000-call ringing burst and
//!    10^6 pending rows, each with the RSS 10 s after; store bytes per call. See
//!    `footprint.rs` for the environment it needs (panoramisk's venv, the old binary).
//!
//! Filter arguments select sections by substring: `popup-latency`, `ami-stream`,
//! `ami-client`, `rss`, `footprint`, `blast` (e.g. `cargo bench --bench live -- ami`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pbxlink::call::Directory;
use pbxlink::config::{AmiLogin, AmiSettings, Config};
use pbxlink::crm::leadsquared::standin::StandIn;
use pbxlink::pbx::asterisk::ami::{AmiClient, ConnectionState, Frame, FrameLimits, Framer};
use pbxlink::pbx::asterisk::live::monotonic_ms;
use pbxlink::pbx::asterisk::tracker::{CallTracker, TrackerOutput, TrackerSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

mod common;
#[path = "live/footprint.rs"]
mod footprint;
use common::{
    DaemonProcess, Summary, mib, min_median, parse_config, percentile, rss_kib, standin, thread_cpu,
};

const AMI_USER: &str = "pbxlink";
const AMI_SECRET: &str = "bench-ami-secret";
const HTTP_TOKEN: &str = "bench-http-token";
/// The virtual number (DID) the inbound calls come in on.
const DID: &str = "918044556677";
/// Agents configured: extensions 100 .. 100 + AGENTS, each with a phone.
const AGENTS: u32 = 2000;
/// Popups measured per latency case.
const POPUP_CALLS: u32 = 500;
/// One call starts ringing every PACE.
const PACE: Duration = Duration::from_millis(20);
/// A call hangs up IN_FLIGHT calls after it rang (10 calls in progress at 20 ms).
const IN_FLIGHT: u32 = 10;
/// `[leadsquared] rate_limit_requests` per `rate_limit_period_ms` of the daemon runs.
const RATE_REQUESTS: u32 = 100_000;
const RATE_PERIOD_MS: u64 = 1000;
/// Calls of one block of the event stream; a block is repeated BLOCK_REPEATS times.
const BLOCK_CALLS: u32 = 2000;
const BLOCK_REPEATS: usize = 16;
/// Calls in progress at once (interleaved event by event) in the stream.
const CONCURRENT: u32 = 20;
/// Runs of each stream measurement.
const STREAM_RUNS: usize = 3;
/// The AMI client's read size (client.rs READ_CHUNK).
const CHUNK: usize = 16 * 1024;
/// Calls ringing at once in the RSS run.
const BURST_CALLS: u32 = 2000;
/// Events of one simulated call (see `SimCall::event`).
const EVENTS_PER_CALL: usize = 16;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// "p50 .. ms, p90 .., p99 .., max .. (min .., n = ..)" of sorted latencies in ms.
fn spread(lat: &[f64]) -> String {
    if lat.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (min {:.2} ms, n = {})",
        percentile(lat, 50.0),
        percentile(lat, 90.0),
        percentile(lat, 99.0),
        lat[lat.len() - 1],
        lat[0],
        lat.len()
    )
}

/// Open file descriptors of a process (sockets included).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -(e.duration().as_secs_f64() * 1e3),
    }
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

struct DaemonParams<'a> {
    dir: &'a Path,
    call_log_url: &'a str,
    popup_url: &'a str,
    ami_port: u16,
    http_port: u16,
    /// `[asterisk] call_log_source`: "cdr" (popups only from AMI) or "ami".
    source: &'a str,
}

fn agent_phone(ext: u32) -> String {
    format!("+919876{:06}", 500_000 + ext)
}

/// A live config as in tests/asterisk_live.rs: AMI (MD5 login) on the mock, the stand-in's
/// URLs, AGENTS agents, one virtual number, the HTTP API for /metrics.
fn daemon_config(p: &DaemonParams) -> String {
    let mut agents = String::new();
    for ext in 100..100 + AGENTS {
        let _ = write!(
            agents,
            "[[agents]]\nextension = \"{ext}\"\nphone = \"{}\"\n",
            agent_phone(ext)
        );
    }
    format!(
        r#"
[store]
path = {store:?}
synchronous = "full"
[leadsquared]
call_log_url = {call_log_url:?}
agent_popup_url = {popup_url:?}
access_key = "ak"
secret_key = "sk"
default_country_code = "91"
request_timeout_ms = 5000
retry_initial_ms = 100
retry_max_ms = 1000
rate_limit_requests = {RATE_REQUESTS}
rate_limit_period_ms = {RATE_PERIOD_MS}
[[virtual_numbers]]
number = "+{DID}"
tag = "sales"
{agents}
[asterisk]
cdr_csv = {cdr:?}
call_log_source = "{source}"
settle_ms = 0
[asterisk.ami]
host = "127.0.0.1"
port = {ami_port}
username = "{AMI_USER}"
secret = "{AMI_SECRET}"
[http]
listen = "127.0.0.1:{http_port}"
token = "{HTTP_TOKEN}"
"#,
        store = p.dir.join("pbxlink.db"),
        call_log_url = p.call_log_url,
        popup_url = p.popup_url,
        cdr = p.dir.join("Master.csv"),
        source = p.source,
        ami_port = p.ami_port,
        http_port = p.http_port,
    )
}

/// A tracker as LiveAsterisk builds it from `config`.
fn tracker_for(config: &Config) -> CallTracker {
    let ast = config.asterisk.clone().unwrap_or_default();
    CallTracker::new(
        Directory::from_config(config).expect("directory of the bench config"),
        TrackerSettings {
            rules: pbxlink::pbx::asterisk::call_rules(&ast),
            max_calls: 10_000,
            max_call_ms: i64::try_from(ast.max_call_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        },
    )
}

// ---------------------------------------------------------------------------------------
// Simulated calls: the AMI events of one inbound call over a trunk, answered by an agent
// ---------------------------------------------------------------------------------------

/// One channel's header set, as Asterisk 22 (AMI 11) writes it in every channel event.
struct Chan {
    name: String,
    state: u8,
    cid_num: String,
    cid_name: String,
    conn_num: String,
    conn_name: String,
    context: &'static str,
    exten: String,
    priority: u32,
    uniqueid: String,
    linkedid: String,
}

fn state_desc(state: u8) -> &'static str {
    match state {
        0 => "Down",
        4 => "Ring",
        5 => "Ringing",
        6 => "Up",
        _ => "Unknown",
    }
}

/// Writes `chan`'s headers with `prefix` (`""` or `"Dest"`).
fn push_chan(out: &mut String, prefix: &str, c: &Chan) {
    let p = prefix;
    let _ = write!(
        out,
        "{p}Channel: {}\r\n{p}ChannelState: {}\r\n{p}ChannelStateDesc: {}\r\n\
         {p}CallerIDNum: {}\r\n{p}CallerIDName: {}\r\n{p}ConnectedLineNum: {}\r\n\
         {p}ConnectedLineName: {}\r\n{p}Language: en\r\n{p}AccountCode: \r\n{p}Context: {}\r\n\
         {p}Exten: {}\r\n{p}Priority: {}\r\n{p}Uniqueid: {}\r\n{p}Linkedid: {}\r\n",
        c.name,
        c.state,
        state_desc(c.state),
        c.cid_num,
        c.cid_name,
        c.conn_num,
        c.conn_name,
        c.context,
        c.exten,
        c.priority,
        c.uniqueid,
        c.linkedid,
    );
}

fn open_event(out: &mut String, name: &str) {
    let _ = write!(out, "Event: {name}\r\nPrivilege: call,all\r\n");
}

/// An inbound call `n` from a lead over the `airtel` trunk to the DID, ringing agent `ext`.
struct SimCall {
    n: u32,
    ext: u32,
}

impl SimCall {
    fn linkedid(&self) -> String {
        format!("1700000000.{}", u64::from(self.n) * 2)
    }

    fn lead(&self) -> String {
        format!("+9196117{:05}", self.n % 100_000)
    }

    /// The trunk (root) channel: Uniqueid == Linkedid.
    fn root(&self, state: u8, context: &'static str, priority: u32) -> Chan {
        let (conn_num, conn_name) = if state == 4 && context == "from-trunk" {
            ("<unknown>".to_owned(), "<unknown>".to_owned())
        } else {
            (self.ext.to_string(), format!("Agent {}", self.ext))
        };
        Chan {
            name: format!("PJSIP/airtel-{:08x}", self.n),
            state,
            cid_num: self.lead(),
            cid_name: format!("Lead {}", self.n),
            conn_num,
            conn_name,
            context,
            exten: DID.to_owned(),
            priority,
            uniqueid: self.linkedid(),
            linkedid: self.linkedid(),
        }
    }

    /// The agent's channel `PJSIP/<ext>-<n>`.
    fn agent(&self, state: u8) -> Chan {
        Chan {
            name: format!("PJSIP/{}-{:08x}", self.ext, self.n),
            state,
            cid_num: self.ext.to_string(),
            cid_name: format!("Agent {}", self.ext),
            conn_num: self.lead(),
            conn_name: format!("Lead {}", self.n),
            context: "from-internal",
            exten: if state == 0 {
                "s".into()
            } else {
                self.ext.to_string()
            },
            priority: 1,
            uniqueid: format!("1700000000.{}", u64::from(self.n) * 2 + 1),
            linkedid: self.linkedid(),
        }
    }

    fn bridge(&self, out: &mut String, channels: u32) {
        let _ = write!(
            out,
            "BridgeUniqueid: {:08x}-f923-4a56-b1ae-ac35b3f2a76a\r\nBridgeType: basic\r\n\
             BridgeTechnology: simple_bridge\r\nBridgeCreator: <unknown>\r\n\
             BridgeName: <unknown>\r\nBridgeNumChannels: {channels}\r\n\
             BridgeVideoSourceMode: none\r\n",
            self.n
        );
    }

    /// Event number `i` (0..EVENTS_PER_CALL) of the call, in the order Asterisk sends them
    /// through a server-side filter of the default `[asterisk.ami] events`:
    /// 0 Newchannel (trunk), 1-2 VarSet, 3 Newchannel (agent), 4 DialBegin, 5 Newstate
    /// Ringing, 6 DialEnd ANSWER, 7-8 Newstate Up, 9-10 BridgeEnter, 11-12 BridgeLeave,
    /// 13 VarSet DIALSTATUS, 14-15 Hangup (agent, then trunk: the call ends).
    fn event(&self, i: usize, out: &mut String) {
        match i {
            0 => {
                open_event(out, "Newchannel");
                push_chan(out, "", &self.root(4, "from-trunk", 1));
            }
            1 | 2 | 13 => {
                open_event(out, "VarSet");
                let (context, priority) = if i == 13 {
                    ("ext-did", 2)
                } else {
                    ("from-trunk", 1)
                };
                push_chan(out, "", &self.root(4, context, priority));
                let (var, value) = match i {
                    1 => ("__FROM_DID", DID),
                    2 => ("__TRUNK", "airtel"),
                    _ => ("DIALSTATUS", "ANSWER"),
                };
                let _ = write!(out, "Variable: {var}\r\nValue: {value}\r\n");
            }
            3 => {
                open_event(out, "Newchannel");
                push_chan(out, "", &self.agent(0));
            }
            4 | 6 => {
                open_event(out, if i == 4 { "DialBegin" } else { "DialEnd" });
                push_chan(out, "", &self.root(4, "ext-did", 2));
                push_chan(out, "Dest", &self.agent(if i == 4 { 0 } else { 6 }));
                if i == 4 {
                    let _ = write!(out, "DialString: {}\r\n", self.ext);
                } else {
                    out.push_str("DialStatus: ANSWER\r\n");
                }
            }
            5 | 7 => {
                open_event(out, "Newstate");
                push_chan(out, "", &self.agent(if i == 5 { 5 } else { 6 }));
            }
            8 => {
                open_event(out, "Newstate");
                push_chan(out, "", &self.root(6, "ext-did", 2));
            }
            9..=12 => {
                open_event(
                    out,
                    if i <= 10 {
                        "BridgeEnter"
                    } else {
                        "BridgeLeave"
                    },
                );
                let channels = match i {
                    9 | 12 => 1,
                    10 => 2,
                    _ => 1,
                };
                self.bridge(out, channels);
                let agent_side = i == 9 || i == 11;
                let chan = if agent_side {
                    self.agent(6)
                } else {
                    self.root(6, "ext-did", 2)
                };
                push_chan(out, "", &chan);
            }
            _ => {
                open_event(out, "Hangup");
                let chan = if i == 14 {
                    self.agent(6)
                } else {
                    self.root(6, "ext-did", 2)
                };
                push_chan(out, "", &chan);
                out.push_str("Cause: 16\r\nCause-txt: Normal Clearing\r\n");
            }
        }
        out.push_str("\r\n");
    }

    fn events(&self, range: std::ops::RangeInclusive<usize>, out: &mut String) {
        for i in range {
            self.event(i, out);
        }
    }

    /// The caller arrives (trunk Newchannel and its VarSets).
    fn start(&self, out: &mut String) {
        self.events(0..=2, out);
    }

    /// Asterisk dials the agent: the agent's Newchannel, then DialBegin (the popup).
    fn ring(&self, out: &mut String) {
        self.events(3..=4, out);
    }

    /// Ringing, answer, bridge, hangups.
    fn finish(&self, out: &mut String) {
        self.events(5..=EVENTS_PER_CALL - 1, out);
    }
}

/// One block of the event stream: BLOCK_CALLS calls, CONCURRENT at a time interleaved
/// event by event (every call of the block ends within it). Returns the bytes and events.
fn stream_block() -> (Vec<u8>, usize) {
    let mut text = String::with_capacity(BLOCK_CALLS as usize * EVENTS_PER_CALL * 700);
    let mut events = 0;
    for window in (0..BLOCK_CALLS).step_by(CONCURRENT as usize) {
        let calls: Vec<SimCall> = (window..(window + CONCURRENT).min(BLOCK_CALLS))
            .map(|n| SimCall {
                n,
                ext: 100 + n % AGENTS,
            })
            .collect();
        for i in 0..EVENTS_PER_CALL {
            for call in &calls {
                call.event(i, &mut text);
                events += 1;
            }
        }
    }
    (text.into_bytes(), events)
}

/// The four real AMI captures of tests/fixtures, with CRLF line ends as on the wire.
fn captures() -> (Vec<u8>, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut text = String::new();
    for name in [
        "ami_sweeney-asterisk-mqtt_answered-internal.txt",
        "ami_sweeney-asterisk-mqtt_answered-outbound.txt",
        "ami_sweeney-asterisk-mqtt_unanswered-cancel.txt",
        "ami_sweeney-asterisk-mqtt_unanswered-huntgroup.txt",
    ] {
        let raw = std::fs::read_to_string(dir.join(name)).expect("read an AMI capture");
        for line in raw.lines() {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
    }
    let bytes = text.into_bytes();
    let events = run_stream(&bytes, 1, None).events;
    (bytes, events)
}

// ---------------------------------------------------------------------------------------
// The mock Asterisk
// ---------------------------------------------------------------------------------------

type SharedWriter = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

/// A mock AMI server: answers the client's actions and lets the bench write events.
/// Every write holds the connection's write lock, so replies and events never interleave
/// inside a message.
struct MockAmi {
    addr: SocketAddr,
    writer: SharedWriter,
    /// `Events` actions answered (the client's setup is done after each).
    logins: watch::Receiver<u32>,
    /// `CoreShowChannels` answered (the daemon's tracker rebuilt its table after each).
    rebuilds: watch::Receiver<u32>,
    /// `Login` actions answered (a client that turns events on in its login, as
    /// panoramisk does, is ready after it).
    plain_logins: watch::Receiver<u32>,
}

impl MockAmi {
    async fn start() -> MockAmi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock AMI server");
        let addr = listener.local_addr().expect("mock AMI address");
        let writer: SharedWriter = Arc::new(tokio::sync::Mutex::new(None));
        let (logins_tx, logins) = watch::channel(0u32);
        let (rebuilds_tx, rebuilds) = watch::channel(0u32);
        let (plain_tx, plain_logins) = watch::channel(0u32);
        let counters = Arc::new((logins_tx, rebuilds_tx, plain_tx));
        let slot = writer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (rd, mut wr) = stream.into_split();
                if wr
                    .write_all(b"Asterisk Call Manager/11.0.0\r\n")
                    .await
                    .is_err()
                {
                    continue;
                }
                *slot.lock().await = Some(wr);
                tokio::spawn(serve_actions(rd, slot.clone(), counters.clone()));
            }
        });
        MockAmi {
            addr,
            writer,
            logins,
            rebuilds,
            plain_logins,
        }
    }

    /// Writes `bytes` in one go; returns the time just before the write.
    async fn send(&self, bytes: &[u8]) -> SystemTime {
        let mut slot = self.writer.lock().await;
        let w = slot.as_mut().expect("pbxlink is connected to the mock AMI");
        let at = SystemTime::now();
        w.write_all(bytes).await.expect("write events to pbxlink");
        at
    }
}

/// Reads the client's actions and answers each (`Response: Success` + its ActionID).
async fn serve_actions(
    mut rd: OwnedReadHalf,
    writer: SharedWriter,
    counters: Arc<(watch::Sender<u32>, watch::Sender<u32>, watch::Sender<u32>)>,
) {
    let mut framer = Framer::messages_only(FrameLimits::default());
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.extend(&buf[..n]);
        loop {
            let action = match framer.next_frame() {
                Ok(Some(Frame::Message(m))) => m,
                Ok(Some(Frame::Banner { .. })) => continue,
                Ok(None) => break,
                Err(_) => return,
            };
            let id = action.action_id().unwrap_or_default();
            let name = action
                .get("Action")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let reply = match name.as_str() {
                "challenge" => {
                    format!("Response: Success\r\nActionID: {id}\r\nChallenge: 12345\r\n\r\n")
                }
                "login" => format!(
                    "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
                ),
                "ping" => format!(
                    "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1700000000.000000\r\n\r\n"
                ),
                "coreshowchannels" => format!(
                    "Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\
                     Message: Channels will follow\r\n\r\n\
                     Event: CoreShowChannelsComplete\r\nActionID: {id}\r\n\
                     EventList: Complete\r\nListItems: 0\r\n\r\n"
                ),
                "logoff" => format!(
                    "Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks for all the fish.\r\n\r\n"
                ),
                _ => format!("Response: Success\r\nActionID: {id}\r\nMessage: OK\r\n\r\n"),
            };
            {
                let mut slot = writer.lock().await;
                let Some(w) = slot.as_mut() else { return };
                if w.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            match name.as_str() {
                "events" => counters.0.send_modify(|n| *n += 1),
                "coreshowchannels" => counters.1.send_modify(|n| *n += 1),
                "login" => counters.2.send_modify(|n| *n += 1),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The daemon binary
// ---------------------------------------------------------------------------------------

impl DaemonProcess {
    /// Waits until the daemon logged in to the mock (its `Events` action answered), then
    /// 500 ms for the tracker to start (and rebuild its table if it saw the login: see
    /// `rebuilt_at_start`).
    async fn wait_ready(&mut self, mock: &MockAmi) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while *mock.logins.borrow() == 0 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daemon exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not log in to the mock AMI:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `GET /metrics` of the daemon listening on `http_port`.
async fn scrape_metrics(http_port: u16) -> String {
    let url = format!("http://127.0.0.1:{http_port}/metrics");
    match reqwest::Client::new()
        .get(url)
        .bearer_auth(HTTP_TOKEN)
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("# scrape failed: {e}"),
    }
}

/// A value of the metrics text (`name{labels} value`), 0 when absent.
fn metric(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

/// The daemon's own popup and AMI counters, for the report.
fn daemon_counters(text: &str) -> String {
    format!(
        "daemon /metrics: popups sent {}, dropped {}, retried {}, queue overflow {}, AMI reader waits {}, popup_latency_max_ms (event -> request leaving) {}",
        metric(text, "pbxlink_popups_total{outcome=\"sent\"}"),
        metric(text, "pbxlink_popups_total{outcome=\"dropped\"}"),
        metric(text, "pbxlink_popups_total{outcome=\"retried\"}"),
        metric(text, "pbxlink_popups_overflow_total"),
        metric(text, "pbxlink_ami_reader_waits_total"),
        metric(text, "pbxlink_popup_latency_max_ms"),
    )
}

/// Counts accepted popups at the stand-in as they arrive (lagged ones count: the stand-in
/// only lags when it is busy accepting).
fn count_popups(stand: &StandIn) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut events = stand.subscribe();
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(r) if r.status == 200 && r.endpoint == "agent_popup" => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    counter.fetch_add(n as usize, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    (accepted, task)
}

/// First arrival of each accepted popup at the stand-in, by CallSessionId.
fn popup_arrivals(stand: &StandIn) -> HashMap<String, SystemTime> {
    let mut at = HashMap::new();
    for r in stand.received() {
        if r.endpoint == "agent_popup" && r.status == 200 {
            let id = r.body["CallSessionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            at.entry(id).or_insert(r.at);
        }
    }
    at
}

fn accepted_call_logs(stand: &StandIn) -> usize {
    stand
        .received()
        .iter()
        .filter(|r| r.endpoint == "call_log" && r.status == 200)
        .count()
}

/// A fresh daemon on a fresh mock and stand-in.
struct Rig {
    stand: StandIn,
    mock: MockAmi,
    daemon: DaemonProcess,
    http_port: u16,
    _dir: tempfile::TempDir,
}

async fn rig(source: &str) -> Rig {
    rig_with(Path::new(env!("CARGO_BIN_EXE_pbxlink")), source).await
}

/// [`rig`] running the daemon binary `bin` (this build's, or an older one to compare).
async fn rig_with(bin: &Path, source: &str) -> Rig {
    let stand = standin().await;
    let mock = MockAmi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Master.csv"), "").expect("create the CDR file");
    let http_port = free_port();
    let text = daemon_config(&DaemonParams {
        dir: dir.path(),
        call_log_url: &stand.call_log_url(),
        popup_url: &stand.agent_popup_url(),
        ami_port: mock.addr.port(),
        http_port,
        source,
    });
    parse_config(&text);
    let config_path = dir.path().join("pbxlink.toml");
    std::fs::write(&config_path, text).expect("write config");
    let mut daemon = DaemonProcess::spawn_bin(bin, &config_path, dir.path());
    daemon.wait_ready(&mock).await;
    Rig {
        stand,
        mock,
        daemon,
        http_port,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------------------
// 1. Popup latency
// ---------------------------------------------------------------------------------------

struct LatencyCase {
    label: &'static str,
    source: &'static str,
    /// The hangups of the call IN_FLIGHT calls back go in the same write as, and just
    /// before, the DialBegin (else 10 ms after it).
    hangups_before_ring: bool,
}

fn sim(n: u32) -> SimCall {
    SimCall {
        n,
        ext: 100 + n % AGENTS,
    }
}

async fn latency_run(case: &LatencyCase, summary: &mut Summary) {
    let r = rig(case.source).await;
    let (accepted, counting) = count_popups(&r.stand);
    let calls = POPUP_CALLS;
    let mut sent: HashMap<String, SystemTime> = HashMap::new();
    let mut text = String::new();
    sim(0).start(&mut text);
    r.mock.send(text.as_bytes()).await;
    let base = tokio::time::Instant::now() + PACE;
    for k in 0..calls {
        let t0 = base + PACE * k;
        tokio::time::sleep_until(t0).await;
        text.clear();
        if case.hangups_before_ring && k >= IN_FLIGHT {
            sim(k - IN_FLIGHT).finish(&mut text);
        }
        sim(k).ring(&mut text);
        let at = r.mock.send(text.as_bytes()).await;
        sent.insert(sim(k).linkedid(), at);
        tokio::time::sleep_until(t0 + PACE / 2).await;
        text.clear();
        if k + 1 < calls {
            sim(k + 1).start(&mut text);
        }
        if !case.hangups_before_ring && k >= IN_FLIGHT {
            sim(k - IN_FLIGHT).finish(&mut text);
        }
        if !text.is_empty() {
            r.mock.send(text.as_bytes()).await;
        }
    }
    text.clear();
    for k in calls.saturating_sub(IN_FLIGHT)..calls {
        sim(k).finish(&mut text);
    }
    r.mock.send(text.as_bytes()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while accepted.load(Ordering::Relaxed) < calls as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Call logs from AMI (source = "ami") go through the outbox; give them a moment.
    if case.source == "ami" {
        let deadline = Instant::now() + Duration::from_secs(15);
        while accepted_call_logs(&r.stand) < calls as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let metrics = scrape_metrics(r.http_port).await;
    let log = r.daemon.log_text();
    let arrivals = popup_arrivals(&r.stand);
    let call_logs = accepted_call_logs(&r.stand);
    counting.abort();
    r.daemon.stop();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| arrivals.get(id).map(|a| ms_between(*at, *a)))
        .collect();
    lat.sort_by(f64::total_cmp);
    let lost = sent.len() - lat.len();
    println!(
        "  {}: {} DialBegins sent, {} popups arrived, {lost} lost; {}",
        case.label,
        sent.len(),
        lat.len(),
        spread(&lat)
    );
    println!("    {}", daemon_counters(&metrics));
    println!(
        "    CoreShowChannels (the tracker's table rebuild) asked by the daemon after its login: {} time(s)",
        *r.mock.rebuilds.borrow()
    );
    if case.source == "ami" {
        println!("    call logs from AMI events accepted by the stand-in: {call_logs} of {calls}");
    }
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"));
    for w in warnings.take(5) {
        println!("    daemon log: {w}");
    }
    summary.add(format!(
        "Popup latency (DialBegin written by the mock AMI -> Agent Popup request at the stand-in), {}: {}; dropped {lost}",
        case.label,
        spread(&lat)
    ));
}

async fn bench_popup_latency(summary: &mut Summary) {
    println!(
        "\n== 1. Popup latency: DialBegin written by the mock AMI -> Agent Popup request at the stand-in (release binary `pbxlink run`, MD5 login, {POPUP_CALLS} inbound calls one every {} ms, {IN_FLIGHT} in progress, {AGENTS} agents, rate limit {RATE_REQUESTS} requests / {RATE_PERIOD_MS} ms so it never throttles, stand-in healthy, default log level info) ==",
        PACE.as_millis()
    );
    let cases = [
        LatencyCase {
            label: "call_log_source = cdr (AMI only pops)",
            source: "cdr",
            hangups_before_ring: false,
        },
        LatencyCase {
            label: "call_log_source = ami (hangups enqueue call logs, 10 ms before the next DialBegin)",
            source: "ami",
            hangups_before_ring: false,
        },
        LatencyCase {
            label: "call_log_source = ami, a call's hangups in the same write just before the DialBegin",
            source: "ami",
            hangups_before_ring: true,
        },
    ];
    for case in &cases {
        latency_run(case, summary).await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. AMI events/s
// ---------------------------------------------------------------------------------------

/// A config for the tracker benches (ports are not used).
fn offline_config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = daemon_config(&DaemonParams {
        dir: dir.path(),
        call_log_url: "http://127.0.0.1:9/1/api/Telephony/LogCallComplete/x",
        popup_url: "http://127.0.0.1:9/1/api/Telephony/AgentPopup/x",
        ami_port: 5038,
        http_port: 8478,
        source: "ami",
    });
    (parse_config(&text), dir)
}

struct StreamCounts {
    events: usize,
    popups: usize,
    ended: usize,
}

/// Feeds `block` `repeats` times through a framer in CHUNK reads; with a tracker, each
/// event also goes through `CallTracker::handle` with the clocks LiveAsterisk reads.
fn run_stream(block: &[u8], repeats: usize, tracker: Option<&mut CallTracker>) -> StreamCounts {
    let mut framer = Framer::messages_only(FrameLimits::default());
    let mut counts = StreamCounts {
        events: 0,
        popups: 0,
        ended: 0,
    };
    let mut tracker = tracker;
    for _ in 0..repeats {
        for chunk in block.chunks(CHUNK) {
            framer.extend(chunk);
            while let Some(frame) = framer.next_frame().expect("valid AMI stream") {
                let Frame::Message(m) = frame else { continue };
                counts.events += 1;
                if let Some(t) = tracker.as_deref_mut() {
                    for out in t.handle(&m, monotonic_ms(), chrono::Utc::now()) {
                        match out {
                            TrackerOutput::Popup(_) => counts.popups += 1,
                            TrackerOutput::Ended(_) => counts.ended += 1,
                        }
                    }
                }
            }
        }
    }
    counts
}

fn bench_ami_stream(summary: &mut Summary) {
    println!("\n== 2a. AMI events/s on one thread: Framer (16 KiB reads) + CallTracker::handle ==");
    let (config, _dir) = offline_config();
    let (block, block_events) = stream_block();
    let total = block_events * BLOCK_REPEATS;
    println!(
        "  stream: {BLOCK_CALLS} inbound answered calls x {EVENTS_PER_CALL} events ({CONCURRENT} calls interleaved), {:.1} MiB, {} B/event; repeated {BLOCK_REPEATS}x = {total} events, {:.0} MiB",
        block.len() as f64 / 1048576.0,
        block.len() / block_events,
        (block.len() * BLOCK_REPEATS) as f64 / 1048576.0
    );
    let (caps, cap_events) = captures();
    let cap_repeats = 500_000usize.div_ceil(cap_events);
    println!(
        "  real captures (tests/fixtures, 4 FreePBX calls, CRLF): {cap_events} events, {} B/event; repeated {cap_repeats}x = {} events",
        caps.len() / cap_events,
        cap_events * cap_repeats
    );
    // (label, stream, repeats, with the tracker, synthetic)
    type Case<'a> = (&'a str, &'a [u8], usize, bool, bool);
    let cases: [Case; 3] = [
        (
            "Framer only, synthetic stream",
            &block,
            BLOCK_REPEATS,
            false,
            true,
        ),
        (
            "Framer + CallTracker::handle, synthetic stream",
            &block,
            BLOCK_REPEATS,
            true,
            true,
        ),
        (
            "Framer + CallTracker::handle, real captures",
            &caps,
            cap_repeats,
            true,
            false,
        ),
    ];
    for (label, bytes, repeats, with_tracker, synthetic) in cases {
        let mut secs = Vec::new();
        let mut last = None;
        for _ in 0..STREAM_RUNS {
            let mut tracker = tracker_for(&config);
            let t = Instant::now();
            let counts = run_stream(bytes, repeats, with_tracker.then_some(&mut tracker));
            secs.push(t.elapsed().as_secs_f64());
            last = Some(counts);
        }
        let counts = last.expect("at least one run");
        let (min, med) = min_median(&secs);
        if synthetic {
            assert_eq!(counts.events, total, "every event framed");
            if with_tracker {
                let calls = BLOCK_CALLS as usize * BLOCK_REPEATS;
                assert_eq!(counts.popups, calls, "one popup per call");
                assert_eq!(counts.ended, calls, "every call ended");
            }
        }
        println!(
            "  {label}: {} events in {med:.3} s median ({min:.3} s best) of {STREAM_RUNS} runs; popups {}, calls ended {}",
            counts.events, counts.popups, counts.ended
        );
        summary.add(format!(
            "AMI events/s, {label}, 1 thread: {:.0} events/s median ({:.0} best), {} events",
            counts.events as f64 / med,
            counts.events as f64 / min,
            counts.events
        ));
    }
}

/// Cuts `block` at event boundaries into pieces of at most `events` events each.
fn pieces(block: &[u8], events: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut count, mut i) = (0, 0, 0);
    while let Some(p) = block[i..].windows(4).position(|w| w == b"\r\n\r\n") {
        i += p + 4;
        count += 1;
        if count == events {
            out.push(&block[start..i]);
            start = i;
            count = 0;
        }
    }
    if start < block.len() {
        out.push(&block[start..]);
    }
    out
}

/// How the mock writes the stream to the client.
#[derive(Clone, Copy)]
enum Flow {
    /// As fast as the socket takes it.
    Firehose,
    /// At most this many events written and not yet taken by the consumer (below the
    /// client's broadcast capacity, EVENT_CAPACITY = 4096), like a PBX whose event rate
    /// the consumer keeps up with.
    Window(u64),
}

struct ClientRun {
    received: u64,
    lagged: u64,
    /// From the mock's first write to the last event taken by the consumer.
    wall: Duration,
    /// On-CPU time of the client's thread over the run.
    cpu: Duration,
    popups: usize,
}

/// Progress of the consumer, for the mock's flow control.
#[derive(Default)]
struct Taken {
    events: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

/// One run: AmiClient and the consumer on a current_thread runtime of their own thread;
/// the mock writes the stream (PIECE_EVENTS events per write) from the bench's runtime.
async fn client_run(
    mock: &MockAmi,
    pieces: &[&[u8]],
    piece_events: u64,
    total: u64,
    with_tracker: bool,
    flow: Flow,
) -> ClientRun {
    let settings = AmiSettings {
        host: "127.0.0.1".into(),
        port: mock.addr.port(),
        username: AMI_USER.into(),
        secret: Some(AMI_SECRET.into()),
        login: AmiLogin::Md5,
        ..AmiSettings::default()
    };
    let (config, _dir) = offline_config();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let logins_before = *mock.logins.borrow();
    let taken = Arc::new(Taken::default());
    let progress = taken.clone();
    let consumer = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("current_thread runtime");
        runtime.block_on(async move {
            let client = AmiClient::spawn(settings, AMI_SECRET.into());
            let mut events = client.events();
            let mut state = client.state();
            tokio::time::timeout(
                Duration::from_secs(20),
                state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
            )
            .await
            .expect("AmiClient logs in to the mock within 20 s")
            .expect("AmiClient state");
            let _ = ready_tx.send(());
            let mut tracker = tracker_for(&config);
            let (mut received, lagged, mut popups) = (0u64, 0u64, 0usize);
            let mut last = Instant::now();
            let cpu0 = thread_cpu();
            while received + lagged < total {
                match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                    Ok(Some(m)) => {
                        received += 1;
                        last = Instant::now();
                        if with_tracker {
                            let out = tracker.handle(&*m, monotonic_ms(), chrono::Utc::now());
                            popups += out
                                .iter()
                                .filter(|o| matches!(o, TrackerOutput::Popup(_)))
                                .count();
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
                if (received + lagged) % 128 == 0 {
                    progress.events.store(received + lagged, Ordering::Relaxed);
                    progress.notify.notify_one();
                }
            }
            progress.events.store(received + lagged, Ordering::Relaxed);
            progress.notify.notify_one();
            let cpu = thread_cpu() - cpu0;
            client.shutdown().await;
            (received, lagged, last, cpu, popups)
        })
    });
    tokio::time::timeout(Duration::from_secs(25), ready_rx)
        .await
        .expect("AmiClient connected")
        .expect("consumer thread alive");
    // The client is live once its `Events` action was answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while *mock.logins.borrow() <= logins_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = {
        let mut slot = mock.writer.lock().await;
        let w = slot
            .as_mut()
            .expect("the AmiClient is connected to the mock");
        let started = Instant::now();
        let mut written = 0u64;
        for _ in 0..BLOCK_REPEATS {
            for piece in pieces {
                if let Flow::Window(window) = flow {
                    while written.saturating_sub(taken.events.load(Ordering::Relaxed)) > window {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(5), taken.notify.notified())
                                .await;
                    }
                }
                w.write_all(piece)
                    .await
                    .expect("write events to the client");
                written += piece_events;
            }
        }
        started
    };
    let (received, lagged, last, cpu, popups) =
        tokio::task::spawn_blocking(move || consumer.join().expect("consumer thread"))
            .await
            .expect("join task");
    ClientRun {
        received,
        lagged,
        wall: last.saturating_duration_since(started),
        cpu,
        popups,
    }
}

/// Events per write of the mock in 2b.
const PIECE_EVENTS: u64 = 256;

async fn bench_ami_client(summary: &mut Summary) {
    println!(
        "\n== 2b. AMI events/s end to end: mock server -> TCP -> AmiClient (MD5 login, default event filter) -> events() -> consumer, both on one current_thread runtime (one thread) =="
    );
    let (block, block_events) = stream_block();
    let total = (block_events * BLOCK_REPEATS) as u64;
    let cut = pieces(&block, PIECE_EVENTS as usize);
    println!(
        "  stream: the synthetic stream of 2a, {total} events, {:.0} MiB, written by the mock from the bench's runtime (other core) in writes of {PIECE_EVENTS} events",
        (block.len() * BLOCK_REPEATS) as f64 / 1048576.0
    );
    let cases = [
        (
            "flow-controlled (<= 2048 events in flight), events() counted only",
            false,
            Flow::Window(2048),
        ),
        (
            "flow-controlled (<= 2048 events in flight), events() + CallTracker::handle (LiveAsterisk's loop)",
            true,
            Flow::Window(2048),
        ),
        (
            "firehose (as fast as TCP takes it), events() + CallTracker::handle",
            true,
            Flow::Firehose,
        ),
    ];
    for (label, with_tracker, flow) in cases {
        let mut rates = Vec::new();
        let mut cpu_rates = Vec::new();
        let mut runs = Vec::new();
        for _ in 0..STREAM_RUNS {
            let mock = MockAmi::start().await;
            let run = client_run(&mock, &cut, PIECE_EVENTS, total, with_tracker, flow).await;
            // Events the client read and dispatched (taken or overwritten) per second.
            let handled = (run.received + run.lagged) as f64;
            rates.push(handled / run.wall.as_secs_f64());
            cpu_rates.push(handled / run.cpu.as_secs_f64().max(1e-9));
            runs.push(run);
        }
        let (min, med) = min_median(&rates);
        let (_, cpu_med) = min_median(&cpu_rates);
        let lagged: Vec<u64> = runs.iter().map(|r| r.lagged).collect();
        for (i, run) in runs.iter().enumerate() {
            println!(
                "  {label}, run {}: {} taken by the consumer, {} lagged (overwritten before the consumer read them), {:.3} s wall, {:.3} s on-CPU of the client thread, popups {}",
                i + 1,
                run.received,
                run.lagged,
                run.wall.as_secs_f64(),
                run.cpu.as_secs_f64(),
                run.popups
            );
        }
        summary.add(format!(
            "AMI events/s end to end (mock -> TCP -> AmiClient -> {label}, current_thread): {med:.0} events/s median ({min:.0} worst, {STREAM_RUNS} runs of {total}), {cpu_med:.0} per CPU-second of the thread; events lost to broadcast lag per run: {lagged:?}"
        ));
    }
}

// ---------------------------------------------------------------------------------------
// 3. RSS
// ---------------------------------------------------------------------------------------

async fn bench_rss(summary: &mut Summary) {
    println!(
        "\n== 3. RSS of the release binary `pbxlink run` (call_log_source = cdr, {AGENTS} agents, rate limit {RATE_REQUESTS}/{RATE_PERIOD_MS} ms, stand-in healthy) =="
    );
    let r = rig("cdr").await;
    let pid = r.daemon.pid();
    let (accepted, counting) = count_popups(&r.stand);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss, idle_hwm) = rss_kib(pid).expect("read /proc/PID/status");
    println!(
        "  idle (logged in to the mock AMI, 3 s): VmRSS {:.1} MiB, VmHWM {:.1} MiB, {} open fds",
        mib(idle_rss),
        mib(idle_hwm),
        open_fds(pid)
    );

    let peak = Arc::new(Mutex::new(0u64));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let peak = peak.clone();
        let stop = stop_sampling.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (*p).max(rss);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The callers arrive over 200 ms (trunk Newchannel + VarSets), then every call starts
    // ringing its agent in one write: 2 x BURST_CALLS events (agent Newchannel, DialBegin).
    let calls: Vec<SimCall> = (0..BURST_CALLS).map(sim).collect();
    for batch in calls.chunks(100) {
        let mut text = String::new();
        for c in batch {
            c.start(&mut text);
        }
        r.mock.send(text.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ring = String::new();
    for c in &calls {
        c.ring(&mut ring);
    }
    let burst_at = r.mock.send(ring.as_bytes()).await;
    let burst_started = Instant::now();
    let deadline = burst_started + Duration::from_secs(30);
    while accepted.load(Ordering::Relaxed) < BURST_CALLS as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let popped_in = burst_started.elapsed();
    let (after_rss, after_hwm) = rss_kib(pid).expect("read /proc/PID/status");
    let burst_fds = open_fds(pid);
    let metrics = scrape_metrics(r.http_port).await;

    // They are answered and hang up over 2 s: 100 calls (1,100 events) every 100 ms.
    // (In one 22,000-event write, or 100 calls every 10 ms = 110k events/s, the tracker
    // falls more than the AMI client's broadcast capacity of 4,096 events behind and
    // misses some: `AMI events lagged` in the output.)
    for batch in calls.chunks(100) {
        let mut text = String::new();
        for c in batch {
            c.finish(&mut text);
        }
        r.mock.send(text.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics_end = scrape_metrics(r.http_port).await;
    stop_sampling.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler thread");
    let peak_rss = *peak.lock().unwrap_or_else(|e| e.into_inner());
    let (end_rss, end_hwm) = rss_kib(pid).expect("read /proc/PID/status");
    let arrivals = popup_arrivals(&r.stand);
    let log = r.daemon.log_text();
    counting.abort();
    r.daemon.stop();

    let mut lat: Vec<f64> = calls
        .iter()
        .filter_map(|c| {
            arrivals
                .get(&c.linkedid())
                .map(|a| ms_between(burst_at, *a))
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let lost = BURST_CALLS as usize - lat.len();
    println!(
        "  burst: {BURST_CALLS} calls start ringing in one {:.1} MiB write ({} events); {} popups arrived in {:.2} s, {lost} lost; from the write: {}",
        ring.len() as f64 / 1048576.0,
        BURST_CALLS * 2,
        lat.len(),
        popped_in.as_secs_f64(),
        spread(&lat)
    );
    println!("    after the burst: {}", daemon_counters(&metrics));
    println!(
        "    after the hangups: AMI reader waits {}, popups sent {}",
        metric(&metrics_end, "pbxlink_ami_reader_waits_total"),
        metric(&metrics_end, "pbxlink_popups_total{outcome=\"sent\"}")
    );
    for w in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(5)
    {
        println!("    daemon log: {w}");
    }
    println!(
        "  right after the last popup: VmRSS {:.1} MiB, VmHWM {:.1} MiB, {burst_fds} open fds (the popup sender's connections to the CRM); peak VmRSS sampled every 20 ms {:.1} MiB; 2 s after all {BURST_CALLS} calls hung up (over 2 s): VmRSS {:.1} MiB (VmHWM {:.1} MiB)",
        mib(after_rss),
        mib(after_hwm),
        mib(peak_rss),
        mib(end_rss),
        mib(end_hwm)
    );
    summary.add(format!(
        "RSS idle (pbxlink run, AMI logged in, {AGENTS} agents, 3 s): VmRSS {:.1} MiB (VmHWM {:.1} MiB)",
        mib(idle_rss),
        mib(idle_hwm)
    ));
    summary.add(format!(
        "RSS after a burst of {BURST_CALLS} calls ringing at once: VmRSS {:.1} MiB right after the last popup (VmHWM {:.1} MiB), {:.1} MiB 2 s after they hung up; {} of {BURST_CALLS} popups in {:.2} s ({lost} lost), burst popup latency {}",
        mib(after_rss),
        mib(after_hwm.max(peak_rss)),
        mib(end_rss),
        lat.len(),
        popped_in.as_secs_f64(),
        spread(&lat)
    ));
}

// ---------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; filter arguments select sections by substring:
    // popup-latency, ami-stream, ami-client, rss (e.g. `-- ami`).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |s: &str| filters.is_empty() || filters.iter().any(|f| s.contains(f.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("pbxlink live (AMI) benchmark ({cpus} CPUs, release profile)");
    let mut summary = Summary::default();
    if want("popup-latency") {
        runtime.block_on(bench_popup_latency(&mut summary));
    }
    if want("ami-stream") {
        bench_ami_stream(&mut summary);
    }
    if want("ami-client") {
        runtime.block_on(bench_ami_client(&mut summary));
    }
    if want("rss") {
        runtime.block_on(bench_rss(&mut summary));
    }
    if want("footprint") || want("blast") {
        runtime.block_on(footprint::bench(&mut summary, want("footprint")));
    }
    println!(
        "\n==== SUMMARY (pbxlink live benchmark, {cpus} CPUs, {:.0} s) ====",
        started.elapsed().as_secs_f64()
    );
    for line in &summary.0 {
        println!("- {line}");
    }
}

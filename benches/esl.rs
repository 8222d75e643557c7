//! ESL events/s through the real daemon: the release binary `pbxlink run` with
//! `[freeswitch.esl]` (its event-socket client, the FreeSWITCH call tracker, the rules, the
//! outbox with `call_log_source = "esl"`, the popup sender) against an event socket blasting
//! a real FreeSWITCH 1.10.12 event stream, and its peak RSS meanwhile.
//!
//! `cargo bench --bench esl`. The stream is the five call captures of our rig
//! (`tests/fixtures/freeswitch/{answered_inbound,missed_inbound,busy_agent,queue_ring_all,
//! agent_outbound}/esl.txt`: every `text/event-plain` message as FreeSWITCH wrote it, 57
//! events, 5 calls; the caller id `sipp` of the rig's SIP tester replaced by a lead's
//! number) repeated with fresh ids: in each repeat every uuid (Unique-ID,
//! Other-Leg, cc_member_session_uuid, FreeSWITCH's SIP Call-IDs ...) gets a new last group
//! and every sipp Call-ID new digits, in place (same length, so every `Content-Length`
//! stays right). The server is the event-socket simulator of `pbxlink demo`
//! ([`pbxlink::simulation::esl`]: real `auth/request`, `command/reply`, `api/response`
//! framing) writing the stream with TCP backpressure. The CRM is the local stand-in.
//!
//! 1. Sustained: the stream in repeats, at most `WINDOW` repeats ahead of the calls the
//!    daemon has stored (`pbxlink_esl_calls_logged_total`), so it never falls further behind
//!    than its event queue holds; events/s = events / time until the last call is stored.
//! 2. Blast: the whole stream written at once as fast as the daemon reads it; events/s =
//!    events / time until the daemon counted them all (`pbxlink_esl_received_events_total`),
//!    and what that cost (events lagged, calls stored).
//! 3. With `PBXLINK_FS_RIG=1` (root, the rig built by `tests/freeswitch/rig.sh`): the same
//!    daemon against the real FreeSWITCH, 64 `bgapi echo` jobs in flight on a second
//!    connection, each ending in a BACKGROUND_JOB event the daemon receives too.
//!
//! Filter arguments select sections by substring: `sustained`, `blast`, `rig`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pbxlink::pbx::freeswitch::esl::{Frame, FrameLimits, Framer};
use pbxlink::simulation::esl::{EslEvent, EslSimulator};

mod common;
use common::{
    DaemonProcess, Sections, Summary, bench_runtime, free_loopback_port, mib, parse_config,
    rss_kib, standin,
};

const ESL_PASSWORD: &str = "ClueCon";
const HTTP_TOKEN: &str = "bench-http-token";
const SCENARIOS: [&str; 5] = [
    "answered_inbound",
    "missed_inbound",
    "busy_agent",
    "queue_ring_all",
    "agent_outbound",
];
/// Repeats of the five calls in the sustained run (57 events each).
const SUSTAINED_REPEATS: u32 = 2000;
/// Repeats in the blast run.
const BLAST_REPEATS: u32 = 1000;
/// Repeats in flight at most in the sustained run (57 events each; the daemon's event
/// queue holds 8,192).
const WINDOW: u32 = 40;
/// Repeats written before measuring (they tell how many calls a repeat stores).
const WARMUP_REPEATS: u32 = 20;
/// Bytes per write to the simulator's connection queue.
const WRITE_CHUNK: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------

/// One capture's events as FreeSWITCH wrote them, and where its ids are.
struct Capture {
    bytes: Vec<u8>,
    events: usize,
    /// Start of each uuid's last group (12 hex digits).
    uuid_tails: Vec<usize>,
    /// Start of each sipp Call-ID's digits (`1-<5 digits>%40...`).
    sipp_digits: Vec<usize>,
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// The rig's callers are sipp (`sipp` is their caller id, which no CRM takes for a phone
/// number): the event with `sipp` replaced by a lead's number in every value, written again
/// as FreeSWITCH writes it ([`EslEvent::to_wire`] reproduces the captured bytes exactly,
/// `src/simulation/esl/tests.rs`), so that popups and call logs are accepted downstream.
fn with_lead_number(event: &pbxlink::pbx::freeswitch::esl::Event) -> EslEvent {
    let mut out = EslEvent {
        headers: Vec::new(),
        body: event
            .body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    };
    for (name, value) in event.headers.iter() {
        if out.body.is_some() && name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.push(&name, value.replace("sipp", LEAD));
    }
    out
}

/// The lead's number put in place of `sipp`.
const LEAD: &str = "+4915112345678";

fn load_capture(scenario: &str) -> Capture {
    let path = format!(
        "{}/tests/fixtures/freeswitch/{scenario}/esl.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut framer = Framer::new(FrameLimits::default());
    framer.extend(&raw);
    let (mut bytes, mut events) = (Vec::new(), 0);
    while let Some(frame) = framer.next_frame().expect("the capture frames") {
        if let Frame::Event(event) = frame {
            bytes.extend_from_slice(&with_lead_number(&event).to_wire());
            events += 1;
        }
    }
    let mut uuid_tails = Vec::new();
    let mut i = 0;
    while i + 36 <= bytes.len() {
        if is_uuid(&bytes[i..i + 36]) {
            uuid_tails.push(i + 24);
            i += 36;
        } else {
            i += 1;
        }
    }
    let mut sipp_digits = Vec::new();
    let needle = b"1-";
    for i in 0..bytes.len().saturating_sub(10) {
        let at = &bytes[i..];
        if at.starts_with(needle)
            && at[2..7].iter().all(u8::is_ascii_digit)
            && at[7..].starts_with(b"%40127.0.0.1")
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
        {
            sipp_digits.push(i + 2);
        }
    }
    Capture {
        bytes,
        events,
        uuid_tails,
        sipp_digits,
    }
}

/// The five captures; repeat `k` of them with fresh ids.
struct Stream {
    captures: Vec<Capture>,
}

impl Stream {
    fn load() -> Stream {
        Stream {
            captures: SCENARIOS.iter().map(|s| load_capture(s)).collect(),
        }
    }

    fn events_per_repeat(&self) -> usize {
        self.captures.iter().map(|c| c.events).sum()
    }

    fn bytes_per_repeat(&self) -> usize {
        self.captures.iter().map(|c| c.bytes.len()).sum()
    }

    /// Appends repeat `k` (k < 20,000) to `out`.
    fn repeat(&self, k: u32, out: &mut Vec<u8>) {
        for (s, c) in self.captures.iter().enumerate() {
            let start = out.len();
            out.extend_from_slice(&c.bytes);
            let tail = format!("{s:04x}{k:08x}");
            for &at in &c.uuid_tails {
                out[start + at..start + at + 12].copy_from_slice(tail.as_bytes());
            }
            let digits = format!("{:05}", (k as usize * SCENARIOS.len() + s) % 100_000);
            for &at in &c.sipp_digits {
                out[start + at..start + at + 5].copy_from_slice(digits.as_bytes());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// The rig's directory (agents 100-103, the DIDs the captures dial), events from `esl_port`.
fn daemon_config(
    dir: &Path,
    call_log_url: &str,
    popup_url: &str,
    esl_port: u16,
    password: &str,
    http_port: u16,
) -> String {
    let mut agents = String::new();
    for ext in 100..=103 {
        let _ = write!(
            agents,
            "[[agents]]\nextension = \"{ext}\"\nphone = \"+4915100000{ext}\"\n\n"
        );
    }
    format!(
        r#"
[store]
path = {store:?}
synchronous = "normal"

[leadsquared]
call_log_url = {call_log_url:?}
agent_popup_url = {popup_url:?}
access_key = "ak"
secret_key = "sk"
default_country_code = "49"
rate_limit_requests = 100000
rate_limit_period_ms = 1000

[[virtual_numbers]]
number = "+4930100"
tag = "direct"

[[virtual_numbers]]
number = "+4930102"
tag = "busy"

[[virtual_numbers]]
number = "+4930103"
tag = "support"

[[virtual_numbers]]
number = "+4930200"
tag = "sales"

{agents}
[freeswitch]
call_log_source = "esl"

[freeswitch.esl]
host = "127.0.0.1"
port = {esl_port}
password = "{password}"

[http]
listen = "127.0.0.1:{http_port}"
token = "{HTTP_TOKEN}"
"#,
        store = dir.join("pbxlink.db"),
    )
}

/// `GET /metrics` of the daemon.
async fn scrape(http: &reqwest::Client, port: u16) -> String {
    match http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(HTTP_TOKEN)
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("# scrape failed: {e}"),
    }
}

/// The sum of the values of every sample whose name (labels included) starts with `prefix`.
fn sum_of(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const RECEIVED: &str = "pbxlink_esl_received_events_total";
const LOGGED: &str = "pbxlink_esl_calls_logged_total ";
const LAGGED: &str = "pbxlink_esl_events_lagged_total ";
const LOST: &str = "pbxlink_esl_call_logs_lost_total ";

/// The daemon's ESL counters, for the report.
fn counters(text: &str) -> String {
    format!(
        "received {}, lagged {}, calls logged {}, call logs lost {}, popups sent {}, popup queue overflow {}",
        sum_of(text, RECEIVED),
        sum_of(text, LAGGED),
        sum_of(text, LOGGED),
        sum_of(text, LOST),
        sum_of(text, "pbxlink_popups_total{outcome=\"sent\"}"),
        sum_of(text, "pbxlink_esl_popups_overflow_total"),
    )
}

/// VmRSS peak of `pid`, sampled every 20 ms until stopped.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakRss {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// A daemon subscribed to a fresh simulator.
struct Rig {
    sim: EslSimulator,
    daemon: DaemonProcess,
    http: reqwest::Client,
    http_port: u16,
    _stand: pbxlink::crm::leadsquared::standin::StandIn,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let stand = standin().await;
        let sim = EslSimulator::start("127.0.0.1:0".parse().expect("addr"), ESL_PASSWORD)
            .await
            .expect("start the event-socket simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let http_port = free_loopback_port();
        let daemon = spawn_daemon(
            dir.path(),
            &stand,
            sim.addr().port(),
            ESL_PASSWORD,
            http_port,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while sim.subscribers() == 0 {
            assert!(
                Instant::now() < deadline,
                "the daemon did not subscribe:\n{}",
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Rig {
            sim,
            daemon,
            http: reqwest::Client::new(),
            http_port,
            _stand: stand,
            _dir: dir,
        }
    }

    async fn metrics(&self) -> String {
        scrape(&self.http, self.http_port).await
    }

    async fn send(&self, bytes: Vec<u8>) {
        self.sim.send_raw(Arc::new(bytes)).await;
    }

    /// Waits until `key`'s sum reaches `want` (or `limit` passes); the last scrape.
    async fn wait_for(&self, key: &str, want: u64, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.metrics().await;
            if sum_of(&m, key) >= want || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.daemon
            .log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(5)
            .map(str::to_owned)
            .collect()
    }
}

fn spawn_daemon(
    dir: &Path,
    stand: &pbxlink::crm::leadsquared::standin::StandIn,
    esl_port: u16,
    password: &str,
    http_port: u16,
) -> DaemonProcess {
    let text = daemon_config(
        dir,
        &stand.call_log_url(),
        &stand.agent_popup_url(),
        esl_port,
        password,
        http_port,
    );
    parse_config(&text);
    let path = dir.join("pbxlink.toml");
    std::fs::write(&path, text).expect("write the config");
    DaemonProcess::spawn(&path, dir)
}

/// Sends repeats `from..to` in chunks of about [`WRITE_CHUNK`].
async fn send_repeats(rig: &Rig, stream: &Stream, from: u32, to: u32) {
    let per_chunk = (WRITE_CHUNK / stream.bytes_per_repeat()).max(1) as u32;
    let mut k = from;
    while k < to {
        let end = (k + per_chunk).min(to);
        let mut buf = Vec::with_capacity(stream.bytes_per_repeat() * (end - k) as usize);
        for r in k..end {
            stream.repeat(r, &mut buf);
        }
        rig.send(buf).await;
        k = end;
    }
}

/// Warm-up: how many calls one repeat stores (some captured calls are not posted).
async fn calls_per_repeat(rig: &Rig, stream: &Stream) -> u64 {
    send_repeats(rig, stream, 0, WARMUP_REPEATS).await;
    let events = stream.events_per_repeat() as u64 * u64::from(WARMUP_REPEATS);
    rig.wait_for(RECEIVED, events, Duration::from_secs(30))
        .await;
    // Finished one-leg calls wait 2 s for a loop match before they are reported.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = sum_of(&rig.metrics().await, LOGGED);
        if now == last {
            return now / u64::from(WARMUP_REPEATS);
        }
        last = now;
    }
}

async fn bench_sustained(stream: &Stream, summary: &mut Summary) {
    let per_repeat_events = stream.events_per_repeat();
    println!(
        "\n== 1. Sustained: {SUSTAINED_REPEATS} repeats x {per_repeat_events} real FreeSWITCH events ({:.2} MiB a repeat, 5 calls) into `pbxlink run`, at most {WINDOW} repeats ahead of the calls it stored ==",
        stream.bytes_per_repeat() as f64 / 1048576.0
    );
    let rig = Rig::start().await;
    let pid = rig.daemon.pid();
    let (idle, _) = rss_kib(pid).expect("read /proc/PID/status");
    let per_repeat_calls = calls_per_repeat(&rig, stream).await;
    assert!(
        per_repeat_calls > 0,
        "no call stored:\n{}",
        rig.daemon.log_text()
    );
    let base_logged = sum_of(&rig.metrics().await, LOGGED);
    println!(
        "  idle VmRSS {:.1} MiB; warm-up: {WARMUP_REPEATS} repeats, {per_repeat_calls} calls stored per repeat",
        mib(idle)
    );
    let peak = PeakRss::start(pid);
    let started = Instant::now();
    let first = WARMUP_REPEATS;
    let last = WARMUP_REPEATS + SUSTAINED_REPEATS;
    let mut sent = first;
    while sent < last {
        let m = rig.metrics().await;
        let done = (sum_of(&m, LOGGED) - base_logged) / per_repeat_calls;
        let ahead = u64::from(sent - first).saturating_sub(done);
        if ahead >= u64::from(WINDOW) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let n = (u64::from(WINDOW) - ahead).min(u64::from(last - sent)) as u32;
        send_repeats(&rig, stream, sent, sent + n).await;
        sent += n;
    }
    let want = base_logged + per_repeat_calls * u64::from(SUSTAINED_REPEATS);
    let m = rig.wait_for(LOGGED, want, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let peak_rss = peak.finish();
    let (end_rss, hwm) = rss_kib(pid).expect("read /proc/PID/status");
    let events = per_repeat_events as u64 * u64::from(SUSTAINED_REPEATS);
    let logged = sum_of(&m, LOGGED) - base_logged;
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "  {events} events, {logged} of {} calls stored in {:.2} s: {rate:.0} events/s, {:.0} calls/s; {}",
        per_repeat_calls * u64::from(SUSTAINED_REPEATS),
        elapsed.as_secs_f64(),
        logged as f64 / elapsed.as_secs_f64(),
        counters(&m)
    );
    println!(
        "  VmRSS peak (sampled every 20 ms) {:.1} MiB, at the end {:.1} MiB (VmHWM {:.1} MiB)",
        mib(peak_rss),
        mib(end_rss),
        mib(hwm)
    );
    for w in rig.warnings() {
        println!("    daemon log: {w}");
    }
    rig.daemon.stop();
    summary.add(format!(
        "ESL sustained through `pbxlink run` (real FreeSWITCH 1.10.12 call events, fresh ids, call_log_source = esl, every call stored in the outbox): {rate:.0} events/s ({events} events, {logged} calls in {:.2} s); peak VmRSS {:.1} MiB (idle {:.1} MiB)",
        elapsed.as_secs_f64(),
        mib(peak_rss),
        mib(idle)
    ));
}

async fn bench_blast(stream: &Stream, summary: &mut Summary) {
    let per_repeat_events = stream.events_per_repeat();
    let events = per_repeat_events as u64 * u64::from(BLAST_REPEATS);
    println!(
        "\n== 2. Blast: {BLAST_REPEATS} repeats ({events} events, {:.0} MiB) written as fast as `pbxlink run` reads them ==",
        (stream.bytes_per_repeat() * BLAST_REPEATS as usize) as f64 / 1048576.0
    );
    let rig = Rig::start().await;
    let pid = rig.daemon.pid();
    let peak = PeakRss::start(pid);
    let started = Instant::now();
    send_repeats(&rig, stream, 0, BLAST_REPEATS).await;
    let written = started.elapsed();
    let m = rig
        .wait_for(RECEIVED, events, Duration::from_secs(120))
        .await;
    let read = started.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = rig.metrics().await;
    let peak_rss = peak.finish();
    let rate = sum_of(&m, RECEIVED) as f64 / read.as_secs_f64();
    println!(
        "  written in {:.2} s; all read in {:.2} s: {rate:.0} events/s; 4 s later: {}",
        written.as_secs_f64(),
        read.as_secs_f64(),
        counters(&after)
    );
    println!(
        "  VmRSS peak (sampled every 20 ms) {:.1} MiB",
        mib(peak_rss)
    );
    for w in rig.warnings() {
        println!("    daemon log: {w}");
    }
    rig.daemon.stop();
    summary.add(format!(
        "ESL blast into `pbxlink run`: {rate:.0} events/s read ({events} events in {:.2} s); then {}; peak VmRSS {:.1} MiB",
        read.as_secs_f64(),
        counters(&after),
        mib(peak_rss)
    ));
}

// ---------------------------------------------------------------------------------------
// 3. The real FreeSWITCH rig
// ---------------------------------------------------------------------------------------

/// The lock every user of the FreeSWITCH rig holds (tests/fsrig `LOCK`).
const RIG_LOCK: &str = "/var/tmp/pbxlink-freeswitch.lock";

fn rig_sh(args: &[&str]) -> bool {
    let script = format!("{}/tests/freeswitch/rig.sh", env!("CARGO_MANIFEST_DIR"));
    std::process::Command::new(&script)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

// `File::lock` (1.89), as tests/fsrig uses it; the benches are built by the CI toolchain.
#[allow(clippy::incompatible_msrv)]
async fn bench_real_rig(summary: &mut Summary) {
    use pbxlink::pbx::connection::SupervisorSettings;
    use pbxlink::pbx::freeswitch::esl::{EslClient, EslSettings};
    const JOBS: u64 = 20_000;
    const IN_FLIGHT: usize = 64;
    println!(
        "\n== 3. The real FreeSWITCH rig: `pbxlink run` subscribed, {IN_FLIGHT} `bgapi echo` jobs in flight on a second connection, {JOBS} BACKGROUND_JOB events =="
    );
    // The rig's settings and its lock, as tests/fsrig has them.
    let port: u16 = std::env::var("PBXLINK_ESL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8021);
    let password = std::env::var("PBXLINK_ESL_PASSWORD").unwrap_or_else(|_| "ClueCon".into());
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(RIG_LOCK)
        .and_then(|f| {
            println!("  waiting for the exclusive lock on {RIG_LOCK}");
            f.lock().map(|()| f)
        });
    let Ok(_lock) = lock else {
        println!("  SKIPPED: cannot lock {RIG_LOCK}");
        return;
    };
    if !rig_sh(&["install"]) || !rig_sh(&["start"]) {
        println!(
            "  SKIPPED: tests/freeswitch/rig.sh install/start failed (root and the FreeSWITCH sources needed)"
        );
        return;
    }
    let stand = standin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_loopback_port();
    let daemon = spawn_daemon(dir.path(), &stand, port, &password, http_port);
    let http = reqwest::Client::new();
    let key = "pbxlink_esl_received_events_total{event=\"BACKGROUND_JOB\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while sum_of(&scrape(&http, http_port).await, "pbxlink_esl_connected 1") == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = sum_of(&scrape(&http, http_port).await, key);
    let (client, _notices) = EslClient::spawn_subscribed(
        EslSettings::new("127.0.0.1", port, &password),
        SupervisorSettings::new("127.0.0.1", port),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.state().borrow().is_connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = PeakRss::start(daemon.pid());
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (client, next) = (client.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= JOBS {
                    return;
                }
                let _ = client
                    .bgapi(&format!("echo job-{i}"), Duration::from_secs(10))
                    .await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut m = scrape(&http, http_port).await;
    while sum_of(&m, key) < base + JOBS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        m = scrape(&http, http_port).await;
    }
    let elapsed = started.elapsed();
    let peak_rss = peak.finish();
    let got = sum_of(&m, key) - base;
    let rate = got as f64 / elapsed.as_secs_f64();
    println!(
        "  the daemon received {got} of {JOBS} BACKGROUND_JOB events in {:.2} s: {rate:.0} events/s; peak VmRSS {:.1} MiB; {}",
        elapsed.as_secs_f64(),
        mib(peak_rss),
        counters(&m)
    );
    client.shutdown().await;
    daemon.stop();
    let _ = rig_sh(&["stop"]);
    summary.add(format!(
        "Real FreeSWITCH 1.10.12 rig -> `pbxlink run`: {rate:.0} BACKGROUND_JOB events/s ({got} of {JOBS}, {IN_FLIGHT} bgapi echo jobs in flight; FreeSWITCH runs a thread per job, so this is what the pair sustains); peak VmRSS {:.1} MiB",
        mib(peak_rss)
    ));
}

fn main() {
    let sections = Sections::from_args();
    let runtime = bench_runtime();
    let started = Instant::now();
    println!(
        "pbxlink ESL benchmark ({} CPUs, release profile)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let stream = Stream::load();
    let mut summary = Summary::default();
    if sections.want("sustained") {
        runtime.block_on(bench_sustained(&stream, &mut summary));
    }
    if sections.want("blast") {
        runtime.block_on(bench_blast(&stream, &mut summary));
    }
    if sections.want("rig") && std::env::var("PBXLINK_FS_RIG").is_ok_and(|v| v == "1") {
        runtime.block_on(bench_real_rig(&mut summary));
    }
    summary.print("pbxlink ESL benchmark", started);
}

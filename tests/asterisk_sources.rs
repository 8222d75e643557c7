//! The two call-log sources against a REAL Asterisk 22 (`tests/asterisk/rig.sh`): the CDR
//! file source and the AMI live source, run in this process exactly as the daemon builds
//! them (`pbxlink::pbx::asterisk::cdr_source`, `LiveAsterisk`), each pushing into a
//! [`CallSink`] over a real store; real calls placed in Asterisk.
//!
//! 1. `same_calls_through_cdr_and_ami_give_the_same_call_log`: one set of calls seen by both
//!    sources at once, each into its own store (what `call_log_source = "cdr"` and `"ami"`
//!    post): the same call logs field by field, except what only one source can know:
//!    `source` (the name of the source that built it) and `legs` (CDR rows vs. channels);
//!    times are compared to within [`TIME_SLACK_SECS`] (the CDR writes whole seconds,
//!    events carry their arrival time).
//! 2. `both_sources_reconcile`: `call_log_source = "both"` with the reconciler: a call
//!    recorded (its CDR names the recording) is posted ONCE, merged, with the recording
//!    URL; a call whose CDR line is never written (the file pbxlink reads is a copy of
//!    Asterisk's without that call's lines) is posted from AMI after the wait; a call during
//!    which the AMI connection is cut (a TCP relay between pbxlink and Asterisk is closed)
//!    is posted from the CDR after the wait. The counters say which source was missing.
//!
//! These are the components the daemon wires for `"both"` (`pbx::parts::PbxParts::add_reconciler`,
//! config key `reconcile_wait_ms`). Needs root (the rig is a chroot); without
//! root it prints a loud SKIPPED message. Holds `/var/tmp/pbxlink-asterisk.lock`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pbxlink::call::CallRecord;
use pbxlink::call::reconcile::ReconcilingSink;
use pbxlink::call::sink::{CallSink, OutboxSink};
use pbxlink::config::Config;
use pbxlink::outbox::Store;
use pbxlink::pbx::asterisk::ami::{AmiClient, ConnectionState};
use pbxlink::pbx::asterisk::cdr::CdrRow;
use pbxlink::pbx::asterisk::live::{LiveAsterisk, LiveStats};
use tokio::sync::{Notify, watch};

mod rig;
use rig::{
    CUSTOM_COLUMNS, RigGuard, RigLock, channel_counts, rig_ok, rig_root, rig_tz, root_or_skip,
};

const LEAD: &str = "+919611795983";
/// Times of the two sources may differ by this much (whole-second CDR vs. event arrival).
const TIME_SLACK_SECS: i64 = 2;
const RECONCILE_WAIT_MS: u64 = 15_000;

fn rig_cdr() -> PathBuf {
    rig_root().join("var/log/asterisk/cdr-custom/Master.csv")
}

fn config_text(db: &Path, cdr: &Path, ami_port: u16) -> String {
    let mut toml = String::new();
    let _ = write!(
        toml,
        "[store]\npath = {db:?}\n\n\
         [leadsquared]\ncall_log_url = \"http://127.0.0.1:9/LogCallComplete/k\"\n\
         default_country_code = \"91\"\n\n"
    );
    for (number, tag) in [
        ("918044556677", "sales"),
        ("918044556601", "missed-direct"),
        ("918044556602", "busy-direct"),
        ("918044556603", "queue-sales"),
        ("918044556605", "ivr"),
    ] {
        let _ = write!(
            toml,
            "[[virtual_numbers]]\nnumber = \"{number}\"\ntag = \"{tag}\"\n\n"
        );
    }
    for ext in ["100", "101", "102", "103"] {
        let _ = write!(
            toml,
            "[[agents]]\nextension = \"{ext}\"\nphone = \"+919876500{ext}\"\nuser_id = \"u{ext}\"\n\n"
        );
    }
    let _ = write!(
        toml,
        "[asterisk]\ncdr_csv = {cdr:?}\ncdr_format = \"custom\"\ncdr_columns = [{cols}]\n\
         cdr_time_zone = {tz:?}\nsettle_ms = 2000\npoll_interval_ms = 200\n\
         recording_url_template = \"https://recordings.example/{{year}}/{{month}}/{{file}}\"\n\n\
         [asterisk.ami]\nport = {ami_port}\nusername = \"pbxlink\"\nsecret = \"pbxlink-test-secret\"\n",
        cols = CUSTOM_COLUMNS.map(|c| format!("{c:?}")).join(", "),
        tz = rig_tz(),
    );
    toml
}

/// The file source on its thread and the live source on the runtime, as the daemon runs
/// them.
struct Sources {
    stop_file: Arc<AtomicBool>,
    file: Option<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    live: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Kept: a closed config channel would end the tracker's reload branch.
    _config: watch::Sender<Arc<Config>>,
    ami: AmiClient,
}

impl Sources {
    fn start(
        config: &Config,
        file_store: Arc<Store>,
        file_sink: Arc<dyn CallSink>,
        live_store: Arc<Store>,
        live_sink: Arc<dyn CallSink>,
    ) -> Sources {
        let source =
            pbxlink::pbx::asterisk::cdr_source(config, file_store, Arc::new(Notify::new()), None)
                .expect("CDR source")
                .with_sink(file_sink);
        let stop_file = Arc::new(AtomicBool::new(false));
        let stop = stop_file.clone();
        let file = std::thread::spawn(move || {
            source
                .run(Duration::from_millis(200), stop)
                .expect("CDR source runs");
        });
        let settings = config
            .asterisk
            .as_ref()
            .and_then(|a| a.ami.clone())
            .expect("[asterisk.ami]");
        let secret = settings.resolve_secret().expect("secret");
        let ami = AmiClient::spawn(settings, secret);
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let live = LiveAsterisk {
            ami: ami.clone(),
            store: live_store,
            enqueue_call_logs: true,
            wake_delivery: Arc::new(Notify::new()),
            call_sink: Some(live_sink),
            popups: None,
            config_updates: config_rx,
            stats: Arc::new(LiveStats::default()),
        };
        let live = tokio::spawn(live.run(shutdown_rx));
        Sources {
            stop_file,
            file: Some(file),
            shutdown,
            live: Some(live),
            _config: config_tx,
            ami,
        }
    }

    async fn connected(&self, limit: Duration) {
        let mut state = self.ami.state();
        let started = Instant::now();
        while !matches!(
            *state.borrow_and_update(),
            ConnectionState::Connected { .. }
        ) {
            assert!(
                started.elapsed() < limit,
                "AMI not connected within {limit:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), state.changed()).await;
        }
        // The tracker learns the calls in progress after login; give it the moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    async fn stop(mut self) {
        self.stop_file.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        if let Some(live) = self.live.take() {
            live.await.expect("live task").expect("live source");
        }
        if let Some(file) = self.file.take() {
            tokio::task::spawn_blocking(move || file.join())
                .await
                .expect("join")
                .expect("file source thread");
        }
    }
}

fn open_store(path: &Path) -> Arc<Store> {
    Arc::new(Store::open(path, pbxlink::config::Synchronous::Normal).expect("store"))
}

/// Every call log in a store's outbox: call id → (source, call). Read through the store,
/// which keeps each payload compressed.
fn call_logs(db: &Path) -> BTreeMap<String, (String, CallRecord)> {
    let store = open_store(db);
    let mut logs = BTreeMap::new();
    for state in ["pending", "delivered", "dead"] {
        for body in store.bodies(state).expect("read the store") {
            // Other kinds of rows (disposition updates) are not call records.
            if let Ok(call) = serde_json::from_str::<CallRecord>(&body) {
                logs.insert(call.call_id.clone(), (call.source.clone(), call));
            }
        }
    }
    logs
}

/// Places a call with rig.sh (`call-in`, `call-out` or a raw `ami Originate`) and waits
/// until Asterisk created its channel.
async fn place(args: &[&str]) {
    let (_, before) = channel_counts();
    let reply = rig_ok(args);
    assert!(
        reply.contains("Response: Success"),
        "rig.sh {args:?}: {reply}"
    );
    let started = Instant::now();
    while channel_counts().1 <= before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rig.sh {args:?}: no channel within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn calls_over(limit: Duration) {
    let started = Instant::now();
    while channel_counts().0 > 0 {
        assert!(
            started.elapsed() < limit,
            "calls still up after {limit:?}:\n{}",
            rig_ok(&["rx", "core show channels"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The rows Asterisk wrote so far, parsed as pbxlink parses them, with their raw lines.
fn rig_rows(config: &Config) -> Vec<(CdrRow, String)> {
    let parser =
        pbxlink::pbx::asterisk::cdr_parser(config.asterisk.as_ref().expect("ast")).expect("parser");
    std::fs::read_to_string(rig_cdr())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let row = parser.parse(line.as_bytes()).ok().flatten()?;
            Some((row, line.to_owned()))
        })
        .collect()
}

/// The call ids (linkedids) Asterisk wrote CDRs for.
fn rig_call_ids(config: &Config) -> Vec<String> {
    let mut ids: Vec<String> = rig_rows(config)
        .into_iter()
        .filter_map(|(row, _)| row.linkedid)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn near(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> bool {
    (a - b).num_seconds().abs() <= TIME_SLACK_SECS
}

/// Field-by-field differences between the CDR's and AMI's log of one call, leaving out
/// the fields only one source can know (`source`, `legs`).
fn differences(cdr: &CallRecord, ami: &CallRecord) -> Vec<String> {
    let mut out = Vec::new();
    let mut same = |field: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{field}: cdr {a} / ami {b}"));
        }
    };
    same("call_id", cdr.call_id.clone(), ami.call_id.clone());
    same(
        "direction",
        format!("{:?}", cdr.direction),
        format!("{:?}", ami.direction),
    );
    same(
        "outcome",
        format!("{:?}", cdr.outcome),
        format!("{:?}", ami.outcome),
    );
    same(
        "lead_number",
        format!("{:?}", cdr.lead_number),
        format!("{:?}", ami.lead_number),
    );
    same(
        "agent",
        format!("{:?}", cdr.agent),
        format!("{:?}", ami.agent),
    );
    same(
        "agent_extension",
        format!("{:?}", cdr.agent_extension),
        format!("{:?}", ami.agent_extension),
    );
    same(
        "display_number",
        format!("{:?}", cdr.display_number),
        format!("{:?}", ami.display_number),
    );
    same("tag", format!("{:?}", cdr.tag), format!("{:?}", ami.tag));
    same(
        "caller_name",
        format!("{:?}", cdr.caller_name),
        format!("{:?}", ami.caller_name),
    );
    same(
        "recording_url",
        format!("{:?}", cdr.recording_url),
        format!("{:?}", ami.recording_url),
    );
    same(
        "lead_id",
        format!("{:?}", cdr.lead_id),
        format!("{:?}", ami.lead_id),
    );
    same(
        "answered",
        format!("{}", cdr.answer.is_some()),
        format!("{}", ami.answer.is_some()),
    );
    same(
        "segments (agents)",
        format!(
            "{:?}",
            cdr.segments
                .iter()
                .map(|s| &s.extension)
                .collect::<Vec<_>>()
        ),
        format!(
            "{:?}",
            ami.segments
                .iter()
                .map(|s| &s.extension)
                .collect::<Vec<_>>()
        ),
    );
    if !near(cdr.start, ami.start) {
        out.push(format!("start: cdr {} / ami {}", cdr.start, ami.start));
    }
    if !near(cdr.end, ami.end) {
        out.push(format!("end: cdr {} / ami {}", cdr.end, ami.end));
    }
    if let (Some(a), Some(b)) = (cdr.answer, ami.answer) {
        if !near(a, b) {
            out.push(format!("answer: cdr {a} / ami {b}"));
        }
    }
    if cdr.talk_seconds.abs_diff(ami.talk_seconds) > TIME_SLACK_SECS as u64 {
        out.push(format!(
            "talk_seconds: cdr {} / ami {}",
            cdr.talk_seconds, ami.talk_seconds
        ));
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn same_calls_through_cdr_and_ami_give_the_same_call_log() {
    if !root_or_skip(
        "tests/asterisk_sources.rs",
        "The CDR and AMI sources giving the same call logs were",
    ) {
        return;
    }
    let _lock = RigLock::acquire("sources", "asterisk_e2e|asterisk_live|tests/ami");
    rig_ok(&["install"]);
    rig_ok(&["start"]);
    let _rig = RigGuard;
    runtime().block_on(same_calls());
}

async fn same_calls() {
    let dir = tempfile::Builder::new()
        .prefix("pbxlink-sources-")
        .tempdir()
        .expect("tempdir");
    let (cdr_db, ami_db) = (dir.path().join("cdr.db"), dir.path().join("ami.db"));
    let config = Config::parse(&config_text(&cdr_db, &rig_cdr(), 5038)).expect("config");
    let cdr_store = open_store(&cdr_db);
    let ami_store = open_store(&ami_db);
    let sources = Sources::start(
        &config,
        cdr_store.clone(),
        Arc::new(OutboxSink::new(cdr_store, Arc::new(Notify::new()))),
        ami_store.clone(),
        Arc::new(OutboxSink::new(ami_store, Arc::new(Notify::new()))),
    );
    sources.connected(Duration::from_secs(20)).await;

    let calls: [&[&str]; 7] = [
        &["call-in", "918044556677", LEAD, "20"],
        &["call-in", "918044556601", "09611795983", "20"],
        &["call-in", "918044556602", LEAD, "20"],
        &["call-in", "918044556603", LEAD, "20"],
        &["call-in", "918044556605", LEAD, "20"],
        &["call-out", "100", LEAD, "20"],
        &["call-out", "101", "+919611790000", "20"],
    ];
    for call in calls {
        place(call).await;
        calls_over(Duration::from_secs(60)).await;
    }
    let expected = rig_call_ids(&config);
    assert_eq!(expected.len(), calls.len(), "one linkedid per call placed");
    let (cdr, ami) = wait_for(
        Duration::from_secs(30),
        "both sources logged every call",
        || {
            let cdr = call_logs(&cdr_db);
            let ami = call_logs(&ami_db);
            (cdr.len() == calls.len() && ami.len() == calls.len()).then_some((cdr, ami))
        },
    )
    .await;
    sources.stop().await;

    let mut report = String::new();
    for id in &expected {
        let (Some((_, c)), Some((_, a))) = (cdr.get(id), ami.get(id)) else {
            let _ = writeln!(
                report,
                "{id}: cdr {:?} / ami {:?}",
                cdr.get(id),
                ami.get(id)
            );
            continue;
        };
        for d in differences(c, a) {
            let _ = writeln!(report, "{id} ({:?} {:?}): {d}", c.direction, c.outcome);
        }
        eprintln!(
            "[sources] {id}: {:?} {:?} agent {:?} talk {} s (cdr) / {} s (ami), legs {} / {}",
            c.direction,
            c.outcome,
            c.agent_extension,
            c.talk_seconds,
            a.talk_seconds,
            c.legs,
            a.legs
        );
    }
    assert!(
        report.is_empty(),
        "the CDR and AMI call logs differ:\n{report}"
    );
    // The set of calls covers each outcome the rig can produce.
    let outcomes: std::collections::BTreeSet<String> = cdr
        .values()
        .map(|(_, c)| format!("{:?}/{:?}", c.direction, c.outcome))
        .collect();
    for want in [
        "Inbound/Answered",
        "Inbound/NoAnswer",
        "Inbound/Busy",
        "Outbound/Answered",
        "Outbound/Busy",
    ] {
        assert!(outcomes.contains(want), "{want} missing from {outcomes:?}");
    }
}

/// A TCP relay from a local port to Asterisk's AMI that the test can cut.
struct Relay {
    port: u16,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay port");
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let held = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap_or_else(|p| p.into_inner()).push(task);
            }
        });
        Relay {
            port,
            tasks,
            accept,
        }
    }

    /// Closes the listener and every relayed connection: the AMI connection is lost and
    /// cannot be made again.
    fn cut(&self) {
        self.accept.abort();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// The lead of the call whose CDR lines pbxlink never gets.
const UNWRITTEN_LEAD: &str = "+919611700002";

/// Appends to the file pbxlink reads the lines Asterisk wrote since the last call, less
/// those of the call of [`UNWRITTEN_LEAD`].
struct Copier {
    to: PathBuf,
    written: usize,
}

impl Copier {
    fn sync(&mut self, config: &Config) {
        // Asterisk writes a call's rows as its channels go; let the last ones land.
        std::thread::sleep(Duration::from_secs(1));
        let rows = rig_rows(config);
        let unwritten: Vec<String> = rows
            .iter()
            .filter(|(row, _)| row.src == UNWRITTEN_LEAD || row.clid.contains(UNWRITTEN_LEAD))
            .filter_map(|(row, _)| row.linkedid.clone())
            .collect();
        let kept: Vec<&String> = rows
            .iter()
            .filter(|(row, _)| !row.linkedid.as_ref().is_some_and(|l| unwritten.contains(l)))
            .map(|(_, line)| line)
            .collect();
        let mut text = String::new();
        for line in &kept[self.written.min(kept.len())..] {
            text.push_str(line);
            text.push('\n');
        }
        self.written = kept.len();
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.to)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append to the copy");
    }
}

#[test]
fn both_sources_reconcile() {
    if !root_or_skip(
        "tests/asterisk_sources.rs",
        "call_log_source = \"both\" reconciling was",
    ) {
        return;
    }
    let _lock = RigLock::acquire("sources", "asterisk_e2e|asterisk_live|tests/ami");
    rig_ok(&["install"]);
    rig_ok(&["start"]);
    let _rig = RigGuard;
    runtime().block_on(both());
}

async fn both() {
    let dir = tempfile::Builder::new()
        .prefix("pbxlink-both-")
        .tempdir()
        .expect("tempdir");
    let db = dir.path().join("pbxlink.db");
    // pbxlink reads a copy of Asterisk's file that this test writes: a call's lines can be
    // left out, as if Asterisk never wrote them.
    let copy = dir.path().join("Master.csv");
    std::fs::write(&copy, "").expect("the copy");
    let mut copier = Copier {
        to: copy.clone(),
        written: 0,
    };
    let relay = Relay::start(5038).await;
    let config = Config::parse(&config_text(&db, &copy, relay.port)).expect("config");
    let store = open_store(&db);
    let sink = Arc::new(ReconcilingSink::new(
        store.clone(),
        Arc::new(Notify::new()),
        RECONCILE_WAIT_MS,
    ));
    let (stop_release, release_rx) = watch::channel(false);
    let releaser = tokio::spawn(sink.clone().run(release_rx));
    let sources = Sources::start(
        &config,
        store.clone(),
        sink.clone(),
        store.clone(),
        sink.clone(),
    );
    sources.connected(Duration::from_secs(20)).await;

    // 1. Recorded: the dialplan's MixMonitor would name the file in CDR(recordingfile).
    place(&[
        "ami",
        "Originate",
        "Channel: Local/918044556677@from-trunk",
        "CallerID: <+919611795983>",
        "Application: Wait",
        "Data: 20",
        "Timeout: 45000",
        "Async: true",
        "Variable: CDR(recordingfile)=in-recorded.wav",
    ])
    .await;
    calls_over(Duration::from_secs(60)).await;
    copier.sync(&config);
    // 2. Its CDR lines will never reach pbxlink.
    place(&["call-in", "918044556601", UNWRITTEN_LEAD, "20"]).await;
    calls_over(Duration::from_secs(60)).await;
    copier.sync(&config);
    // 3. AMI is cut while the call is up and stays down.
    place(&["call-in", "918044556677", "+919611700003", "20"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.cut();
    calls_over(Duration::from_secs(60)).await;

    copier.sync(&config);
    let ids = rig_call_ids(&config);
    assert_eq!(ids.len(), 3, "three calls: {ids:?}");

    let logs = wait_for(
        Duration::from_millis(RECONCILE_WAIT_MS) + Duration::from_secs(30),
        "three call logs",
        || {
            let logs = call_logs(&db);
            (logs.len() == 3).then_some(logs)
        },
    )
    .await;
    // Nothing else comes after the waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(call_logs(&db).len(), 3);
    sources.stop().await;
    let _ = stop_release.send(true);
    releaser.await.expect("joins").expect("release loop");

    let of_lead = |lead: &str| {
        logs.values()
            .find(|(_, c)| {
                c.lead_number.e164.as_ref().map(|e| e.to_e164()).as_deref() == Some(lead)
            })
            .unwrap_or_else(|| panic!("no call log for {lead}: {logs:#?}"))
    };
    let (source, recorded) = of_lead(LEAD);
    assert!(
        source.ends_with("+asterisk-ami"),
        "merged from both: {source}"
    );
    let year = recorded.start.format("%Y").to_string();
    let month = recorded.start.format("%m").to_string();
    assert_eq!(
        recorded.recording_url.as_deref(),
        Some(format!("https://recordings.example/{year}/{month}/in-recorded.wav").as_str()),
        "the CDR's recording, once"
    );
    assert_eq!(recorded.agent_extension.as_deref(), Some("100"));

    let (source, from_ami) = of_lead(UNWRITTEN_LEAD);
    assert_eq!(
        source, "asterisk-ami",
        "its CDR never came: logged from AMI"
    );
    assert_eq!(from_ami.agent_extension.as_deref(), Some("102"));

    let (source, from_cdr) = of_lead("+919611700003");
    assert!(
        source.starts_with("asterisk-cdr:"),
        "AMI was cut during it: logged from the CDR ({source})"
    );
    assert_eq!(from_cdr.agent_extension.as_deref(), Some("100"));

    assert_eq!(
        sink.stats().by_result(),
        [("merged", 1), ("missing_cdr", 1), ("missing_live", 1)]
    );
    assert_eq!(store.reconcile_held().expect("held"), 0);
}

//! Section 4 of the live bench: footprint and speed of the release binary, each figure for
//! every build given, in one run, so that "before" and "after" see the same machine load.
//!
//! Builds: this bench's own `pbxlink` ("after") and, when `PBXLINK_BEFORE_BIN` names
//! another build's binary (e.g. main built into target/before), that one first ("before").
//! panoramisk runs from the Python of `PANORAMISK_PYTHON` (default
//! `target/bench-venv/bin/python`, made with `python3 -m venv target/bench-venv &&
//! target/bench-venv/bin/pip install panoramisk`); without it that column is skipped.
//!
//! Per build and run ([`RUNS`] runs; medians and ranges printed):
//! - AMI blast: `pbxlink run` (call_log_source = cdr, 2,000 agents) logged in to the mock
//!   AMI; the mock writes [`BLAST_EVENTS`] events of the four real Asterisk captures of
//!   tests/fixtures in one go, then one more call ringing an agent (the sentinel). Timed
//!   from the write to the sentinel's popup arriving at the stand-in: the tracker has then
//!   handled every event before it. CPU time of the daemon from /proc/PID/stat. panoramisk
//!   gets the same bytes from a fresh mock; timed from the write to its N-th event.
//! - RSS idle (3 s after login), peak through the blast (sampled every 5 ms) and 10 s after.
//! - A 2,000-call ringing burst in the same daemon (as section 3), peak and 10 s after the
//!   calls hung up.
//! - `pbxlink import` of a [`IMPORT_CALLS`]-call Master.csv (one answered inbound call every
//!   3 s, i.e. a week of calls): wall time, peak RSS of the import process, store bytes per
//!   pending call.
//! - [`PENDING_ROWS`] pending rows (imported, CRM rate limit 25 per 5 s): the daemon's RSS
//!   peak over its first 10 s and at 10 s (one run per build: the import takes a while).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;

use super::*;
use common::MemMap;

/// Events of the blast (the captures repeated; rounded up to whole captures).
const BLAST_EVENTS: usize = 300_000;
/// Calls of the import measurement.
const IMPORT_CALLS: u32 = 200_000;
/// Pending rows of the idle-with-backlog measurement.
const PENDING_ROWS: u32 = 1_000_000;
/// Runs of each measurement per build.
const RUNS: usize = 3;
/// How long after a peak the RSS is read again.
const AFTER: Duration = Duration::from_secs(10);

/// One pbxlink binary to measure.
struct Build {
    label: &'static str,
    bin: PathBuf,
}

fn builds() -> Vec<Build> {
    let mut v = Vec::new();
    if let Some(before) = std::env::var_os("PBXLINK_BEFORE_BIN") {
        let bin = PathBuf::from(before);
        assert!(
            bin.exists(),
            "PBXLINK_BEFORE_BIN={} does not exist",
            bin.display()
        );
        v.push(Build {
            label: "before",
            bin,
        });
    }
    v.push(Build {
        label: "after",
        bin: PathBuf::from(env!("CARGO_BIN_EXE_pbxlink")),
    });
    v
}

fn panoramisk_python() -> Option<PathBuf> {
    let python = std::env::var_os("PANORAMISK_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv/bin/python"),
        PathBuf::from,
    );
    let ok = Command::new(&python)
        .args(["-c", "import panoramisk"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

/// User + system CPU seconds of a process so far (/proc/PID/stat, in clock ticks).
fn process_cpu(pid: u32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold blanks).
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Samples a process's VmRSS every 5 ms on a thread of its own; keeps the highest.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match rss_kib(pid) {
                    Some((rss, _)) => {
                        p.fetch_max(rss, Ordering::Relaxed);
                    }
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        PeakRss {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest VmRSS seen so far, KiB.
    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak()
    }
}

/// Median, lowest and highest of samples.
fn med_range(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

/// "median (min–max)" with `digits` decimals.
fn mr(samples: &[f64], digits: usize) -> String {
    let (med, min, max) = med_range(samples);
    format!("{med:.digits$} ({min:.digits$}–{max:.digits$})")
}

/// The blast: the captures repeated to at least BLAST_EVENTS events, then the sentinel
/// call's arrival and ring. Returns the bytes, the events in them and the sentinel.
fn blast_stream() -> (Vec<u8>, usize, SimCall) {
    let (caps, cap_events) = captures();
    let repeats = BLAST_EVENTS.div_ceil(cap_events);
    let mut bytes = Vec::with_capacity(caps.len() * repeats + 8192);
    for _ in 0..repeats {
        bytes.extend_from_slice(&caps);
    }
    let sentinel = sim(AGENTS + 77);
    let mut tail = String::new();
    sentinel.start(&mut tail);
    sentinel.ring(&mut tail);
    bytes.extend_from_slice(tail.as_bytes());
    // start = 3 events, ring = 2.
    (bytes, cap_events * repeats + 5, sentinel)
}

/// What one daemon run measured.
#[derive(Default, Clone)]
struct DaemonRun {
    idle_kib: u64,
    blast_secs: f64,
    blast_cpu: f64,
    blast_peak_kib: u64,
    blast_after_kib: u64,
    reader_waits: u64,
    burst_peak_kib: u64,
    burst_after_kib: u64,
    burst_popups: usize,
    /// Where the idle and the after-burst RSS are (file-backed vs anonymous, per mapping).
    idle_map: MemMap,
    burst_after_map: MemMap,
}

/// Waits until the stand-in accepted a popup for `call_id`; false after `limit`.
async fn popup_arrives(stand: &StandIn, call_id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut seen = stand.subscribe();
    let found = |r: &pbxlink::crm::leadsquared::standin::Received| {
        r.endpoint == "agent_popup" && r.status == 200 && r.body["CallSessionId"] == call_id
    };
    if stand.received().iter().any(found) {
        return true;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, seen.recv()).await {
            Ok(Ok(r)) if found(&r) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(_))) => {
                if stand.received().iter().any(found) {
                    return true;
                }
            }
            Ok(Err(RecvError::Closed)) | Err(_) => return false,
        }
    }
}

async fn daemon_run(bin: &Path, blast: &[u8], sentinel: &SimCall) -> DaemonRun {
    let r = rig_with(bin, "cdr").await;
    let pid = r.daemon.pid();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut run = DaemonRun {
        idle_kib: rss_kib(pid).map_or(0, |(rss, _)| rss),
        idle_map: MemMap::read(pid).unwrap_or_default(),
        ..DaemonRun::default()
    };

    // The blast.
    let sampler = PeakRss::start(pid);
    let cpu0 = process_cpu(pid);
    let t0 = Instant::now();
    r.mock.send(blast).await;
    let arrived = popup_arrives(&r.stand, &sentinel.linkedid(), Duration::from_secs(180)).await;
    run.blast_secs = t0.elapsed().as_secs_f64();
    run.blast_cpu = process_cpu(pid) - cpu0;
    assert!(
        arrived,
        "the sentinel's popup never arrived:\n{}",
        r.daemon.log_text()
    );
    run.blast_peak_kib = sampler.peak();
    tokio::time::sleep(AFTER).await;
    run.blast_after_kib = rss_kib(pid).map_or(0, |(rss, _)| rss);
    let metrics = scrape_metrics(r.http_port).await;
    run.reader_waits = metric(&metrics, "pbxlink_ami_reader_waits_total");
    sampler.finish();

    // The ringing burst, as in section 3.
    let (accepted, counting) = count_popups(&r.stand);
    let before = accepted.load(Ordering::Relaxed);
    let sampler = PeakRss::start(pid);
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
    r.mock.send(ring.as_bytes()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.load(Ordering::Relaxed) - before < BURST_CALLS as usize
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.burst_popups = accepted.load(Ordering::Relaxed) - before;
    for batch in calls.chunks(100) {
        let mut text = String::new();
        for c in batch {
            c.finish(&mut text);
        }
        r.mock.send(text.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.burst_peak_kib = sampler.finish();
    tokio::time::sleep(AFTER).await;
    run.burst_after_kib = rss_kib(pid).map_or(0, |(rss, _)| rss);
    run.burst_after_map = MemMap::read(pid).unwrap_or_default();
    counting.abort();
    r.daemon.stop();
    run
}

/// What panoramisk measured on one blast.
struct PanoramiskRun {
    secs: f64,
    cpu: f64,
}

async fn panoramisk_run(python: &Path, blast: &[u8], events: usize) -> PanoramiskRun {
    let mock = MockAmi::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/panoramisk_blast.py");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(mock.addr.port().to_string())
        .arg(events.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start panoramisk");
    let pid = child.id();
    let stdout = child.stdout.take().expect("panoramisk's stdout");
    let (tx, rx) = std::sync::mpsc::channel::<(String, Instant)>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    let next_line = |rx: &std::sync::mpsc::Receiver<(String, Instant)>, limit: u64| {
        rx.recv_timeout(Duration::from_secs(limit))
            .expect("a line from panoramisk")
    };
    let (line, _) = tokio::task::block_in_place(|| next_line(&rx, 30));
    assert_eq!(line, "connected", "panoramisk did not log in");
    assert!(
        *mock.plain_logins.borrow() > 0,
        "panoramisk's Login never reached the mock"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = process_cpu(pid);
    let t0 = Instant::now();
    mock.send(blast).await;
    let (line, done_at) = tokio::task::block_in_place(|| next_line(&rx, 300));
    let cpu = process_cpu(pid) - cpu0;
    assert!(line.starts_with("done"), "panoramisk said {line:?}");
    let _ = child.wait();
    let _ = reader.join();
    PanoramiskRun {
        secs: (done_at - t0).as_secs_f64(),
        cpu,
    }
}

/// One answered inbound call per line (the shape of benches/pipeline.rs), call `n` of
/// `count` starting 3 s after the previous one, the last one 2 minutes ago.
fn write_master_csv(path: &Path, count: u32) -> u64 {
    use std::io::Write as _;
    let newest = chrono::Utc::now() - chrono::Duration::seconds(120);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create Master.csv"));
    let mut bytes = 0u64;
    for n in 0..count {
        let start = newest - chrono::Duration::seconds(i64::from(count - n) * 3);
        let t = |s: i64| {
            (start + chrono::Duration::seconds(s))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        let phone = n % 100_000;
        let line = format!(
            "\"\",\"+9196117{phone:05}\",\"{DID}\",\"from-trunk\",\"\"\"Lead {n}\"\" <+9196117{phone:05}>\",\"PJSIP/airtel-{n:08x}\",\"PJSIP/100-{m:08x}\",\"Dial\",\"PJSIP/100,30\",\"{s}\",\"{a}\",\"{e}\",60,55,\"ANSWERED\",\"DOCUMENTATION\",\"1700000000.{n}\",\"\"\n",
            m = n + 0x100000,
            s = t(0),
            a = t(5),
            e = t(60),
        );
        bytes += line.len() as u64;
        out.write_all(line.as_bytes()).expect("write Master.csv");
    }
    out.flush().expect("flush Master.csv");
    bytes
}

/// A daemon config in `dir` (its store and Master.csv there), CRM at the stand-in with the
/// default rate limit (25 per 5 s), AMI at `ami_port`.
fn store_config(dir: &Path, stand: &StandIn, ami_port: u16, http_port: u16) -> PathBuf {
    let text = daemon_config(&DaemonParams {
        dir,
        call_log_url: &stand.call_log_url(),
        popup_url: &stand.agent_popup_url(),
        ami_port,
        http_port,
        source: "cdr",
    })
    .replace(
        &format!("rate_limit_requests = {RATE_REQUESTS}\nrate_limit_period_ms = {RATE_PERIOD_MS}"),
        "rate_limit_requests = 25\nrate_limit_period_ms = 5000",
    );
    parse_config(&text);
    std::fs::write(dir.join("Master.csv"), "").expect("create the CDR file");
    let path = dir.join("pbxlink.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// What one `pbxlink import` measured.
struct ImportRun {
    secs: f64,
    peak_kib: u64,
    store_bytes: u64,
}

fn store_bytes(dir: &Path) -> u64 {
    ["pbxlink.db", "pbxlink.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn import(bin: &Path, config: &Path, csv: &Path, dir: &Path) -> ImportRun {
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args(["import", "--config"])
        .arg(config)
        .arg(csv)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pbxlink import");
    let sampler = PeakRss::start(child.id());
    let status = child.wait().expect("wait for pbxlink import");
    let secs = t0.elapsed().as_secs_f64();
    let peak_kib = sampler.finish();
    assert!(status.success(), "pbxlink import failed: {status}");
    ImportRun {
        secs,
        peak_kib,
        store_bytes: store_bytes(dir),
    }
}

/// A fresh store, one import of `csv`.
async fn import_run(bin: &Path, csv: &Path) -> ImportRun {
    let stand = standin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = store_config(dir.path(), &stand, free_port(), free_port());
    let bin = bin.to_owned();
    let csv = csv.to_owned();
    let d = dir.path().to_owned();
    tokio::task::spawn_blocking(move || import(&bin, &config, &csv, &d))
        .await
        .expect("import thread")
}

/// What the daemon's RSS did with PENDING_ROWS pending rows.
struct PendingRun {
    import: ImportRun,
    peak_kib: u64,
    after_kib: u64,
}

async fn pending_run(bin: &Path, csv: &Path) -> PendingRun {
    let stand = standin().await;
    let mock = MockAmi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = store_config(dir.path(), &stand, mock.addr.port(), free_port());
    let imported = {
        let (bin, config, csv, d) = (
            bin.to_owned(),
            config.clone(),
            csv.to_owned(),
            dir.path().to_owned(),
        );
        tokio::task::spawn_blocking(move || import(&bin, &config, &csv, &d))
            .await
            .expect("import thread")
    };
    let mut daemon = DaemonProcess::spawn_bin(bin, &config, dir.path());
    let sampler = PeakRss::start(daemon.pid());
    daemon.wait_ready(&mock).await;
    tokio::time::sleep(AFTER).await;
    let after_kib = rss_kib(daemon.pid()).map_or(0, |(rss, _)| rss);
    let peak_kib = sampler.finish();
    daemon.stop();
    PendingRun {
        import: imported,
        peak_kib,
        after_kib,
    }
}

fn kib_mib(v: &[u64]) -> Vec<f64> {
    v.iter().map(|&k| mib(k)).collect()
}

pub(super) async fn bench(summary: &mut Summary, everything: bool) {
    println!(
        "\n== 4. Footprint and speed (release `pbxlink`, {RUNS} runs per build; figures: median (min–max)) =="
    );
    let builds = builds();
    for b in &builds {
        println!("  build {:<6} {}", b.label, b.bin.display());
    }
    let python = panoramisk_python();
    if python.is_none() {
        println!(
            "  panoramisk: not installed (python3 -m venv target/bench-venv && target/bench-venv/bin/pip install panoramisk): its column is skipped"
        );
    }
    let (blast, events, sentinel) = blast_stream();
    println!(
        "  blast: {events} events ({:.1} MiB, the 4 captures of tests/fixtures repeated, then a call ringing agent {}) in one write",
        blast.len() as f64 / 1048576.0,
        sentinel.ext
    );

    // The daemon runs and panoramisk runs interleave: before, after, panoramisk, x RUNS.
    let mut daemon_runs: Vec<Vec<DaemonRun>> = vec![Vec::new(); builds.len()];
    let mut pano: Vec<PanoramiskRun> = Vec::new();
    for run in 0..RUNS {
        for (i, b) in builds.iter().enumerate() {
            let d = daemon_run(&b.bin, &blast, &sentinel).await;
            println!(
                "  run {} {:<6}: idle {:.1} MiB; blast {:.3} s = {:.0} events/s, {:.2} CPU-s, peak {:.1} MiB, {:.1} MiB 10 s after, {} reader waits; burst {} popups, peak {:.1} MiB, {:.1} MiB 10 s after",
                run + 1,
                b.label,
                mib(d.idle_kib),
                d.blast_secs,
                events as f64 / d.blast_secs,
                d.blast_cpu,
                mib(d.blast_peak_kib),
                mib(d.blast_after_kib),
                d.reader_waits,
                d.burst_popups,
                mib(d.burst_peak_kib),
                mib(d.burst_after_kib),
            );
            println!("      idle:             {}", d.idle_map.line(8));
            println!("      10 s after burst: {}", d.burst_after_map.line(8));
            daemon_runs[i].push(d);
        }
        if let Some(python) = &python {
            let p = panoramisk_run(python, &blast, events).await;
            println!(
                "  run {} panoramisk: {:.3} s = {:.0} events/s, {:.2} CPU-s",
                run + 1,
                p.secs,
                events as f64 / p.secs,
                p.cpu
            );
            pano.push(p);
        }
    }
    let ev = events as f64;
    for (b, runs) in builds.iter().zip(&daemon_runs) {
        let rate: Vec<f64> = runs.iter().map(|r| ev / r.blast_secs).collect();
        let per_cpu: Vec<f64> = runs.iter().map(|r| ev / r.blast_cpu.max(0.01)).collect();
        summary.add(format!(
            "AMI blast ({events} events through `pbxlink run` + tracker, {}): {} events/s, {} events per CPU-second",
            b.label,
            mr(&rate, 0),
            mr(&per_cpu, 0)
        ));
        if !pano.is_empty() {
            // Ratios run by run (the same machine load), then their median and range.
            let ratio: Vec<f64> = runs
                .iter()
                .zip(&pano)
                .map(|(r, p)| p.secs / r.blast_secs)
                .collect();
            let cpu_ratio: Vec<f64> = runs
                .iter()
                .zip(&pano)
                .map(|(r, p)| p.cpu / r.blast_cpu.max(0.01))
                .collect();
            summary.add(format!(
                "AMI blast pbxlink ({}) / panoramisk: {}x events/s, {}x per CPU-second",
                b.label,
                mr(&ratio, 1),
                mr(&cpu_ratio, 1)
            ));
        }
        let f = |g: fn(&DaemonRun) -> u64| kib_mib(&runs.iter().map(g).collect::<Vec<_>>());
        summary.add(format!(
            "RSS ({}) MiB: idle anon {} + file {}; 10 s after the burst anon {} + file {}",
            b.label,
            mr(&f(|r| r.idle_map.anon), 1),
            mr(&f(|r| r.idle_map.file), 1),
            mr(&f(|r| r.burst_after_map.anon), 1),
            mr(&f(|r| r.burst_after_map.file), 1),
        ));
        summary.add(format!(
            "RSS ({}) MiB: idle {}; AMI blast peak {}, 10 s after {}; {BURST_CALLS}-call ringing burst peak {}, 10 s after {} (popups {:?})",
            b.label,
            mr(&f(|r| r.idle_kib), 1),
            mr(&f(|r| r.blast_peak_kib), 1),
            mr(&f(|r| r.blast_after_kib), 1),
            mr(&f(|r| r.burst_peak_kib), 1),
            mr(&f(|r| r.burst_after_kib), 1),
            runs.iter().map(|r| r.burst_popups).collect::<Vec<_>>(),
        ));
    }
    if !pano.is_empty() {
        let rate: Vec<f64> = pano.iter().map(|p| ev / p.secs).collect();
        let per_cpu: Vec<f64> = pano.iter().map(|p| ev / p.cpu.max(0.01)).collect();
        summary.add(format!(
            "AMI blast panoramisk: {} events/s, {} events per CPU-second",
            mr(&rate, 0),
            mr(&per_cpu, 0)
        ));
    }
    if !everything {
        return;
    }

    // Import and pending rows.
    let data = tempfile::tempdir().expect("tempdir");
    let csv = data.path().join("Master.csv");
    let bytes = write_master_csv(&csv, IMPORT_CALLS);
    println!(
        "  import: {IMPORT_CALLS} calls, {:.1} MiB Master.csv",
        bytes as f64 / 1048576.0
    );
    let mut imports: Vec<Vec<ImportRun>> = (0..builds.len()).map(|_| Vec::new()).collect();
    for run in 0..RUNS {
        for (i, b) in builds.iter().enumerate() {
            let r = import_run(&b.bin, &csv).await;
            println!(
                "  run {} {:<6}: import {:.2} s = {:.0} calls/s, peak RSS {:.1} MiB, store {:.0} B/call",
                run + 1,
                b.label,
                r.secs,
                f64::from(IMPORT_CALLS) / r.secs,
                mib(r.peak_kib),
                r.store_bytes as f64 / f64::from(IMPORT_CALLS)
            );
            imports[i].push(r);
        }
    }
    for (b, runs) in builds.iter().zip(&imports) {
        let secs: Vec<f64> = runs.iter().map(|r| r.secs).collect();
        let rate: Vec<f64> = secs.iter().map(|s| f64::from(IMPORT_CALLS) / s).collect();
        let peak = kib_mib(&runs.iter().map(|r| r.peak_kib).collect::<Vec<_>>());
        let per_call: Vec<f64> = runs
            .iter()
            .map(|r| r.store_bytes as f64 / f64::from(IMPORT_CALLS))
            .collect();
        summary.add(format!(
            "`pbxlink import` of {IMPORT_CALLS} calls ({}): {} s = {} calls/s committed, peak RSS {} MiB, store {} B per pending call",
            b.label,
            mr(&secs, 2),
            mr(&rate, 0),
            mr(&peak, 1),
            mr(&per_call, 0)
        ));
    }
    drop(data);

    let data = tempfile::tempdir().expect("tempdir");
    let csv = data.path().join("Master.csv");
    let bytes = write_master_csv(&csv, PENDING_ROWS);
    println!(
        "  pending: {PENDING_ROWS} calls imported ({:.0} MiB Master.csv), then `pbxlink run` with them pending (CRM rate limit 25 per 5 s); one run per build",
        bytes as f64 / 1048576.0
    );
    for b in &builds {
        let p = pending_run(&b.bin, &csv).await;
        summary.add(format!(
            "{PENDING_ROWS} pending rows ({}): import {:.1} s ({:.0} calls/s, peak RSS {:.1} MiB, store {:.0} B/call); daemon RSS peak over its first 10 s {:.1} MiB, {:.1} MiB at 10 s",
            b.label,
            p.import.secs,
            f64::from(PENDING_ROWS) / p.import.secs,
            mib(p.import.peak_kib),
            p.import.store_bytes as f64 / f64::from(PENDING_ROWS),
            mib(p.peak_kib),
            mib(p.after_kib)
        ));
    }
}

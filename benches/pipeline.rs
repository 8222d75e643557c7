//! The figures pbxlink reports: ingest rate, append-to-POST latency and daemon memory.
//!
//! `cargo bench --bench pipeline`. Plain timing (std::time::Instant), repeated runs, min and
//! median; no criterion. Everything runs against temp dirs and the local LeadSquared
//! stand-in; nothing leaves the machine.
//!
//! 1. Ingest: CDR lines/s from a raw line to a committed outbox row, through
//!    `FileSource::ingest` + `flush_settled` with the tailer's own batches, for both
//!    `synchronous` modes; then the whole tailing path in an in-process `Daemon` with
//!    delivery blocked (stand-in answering 503).
//! 2. Latency from a line appended to Master.csv to its POST arriving at the stand-in, through
//!    the real daemon binary.
//! 3. RSS of the real daemon binary, idle and while 50,000 calls flow through it.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use pbxlink::crm::leadsquared::standin::Behaviour;
use pbxlink::outbox::Store;
use pbxlink::outbox::store::{FileOffset, now_ms};
use pbxlink::tail::{Batch, FileTailer, TailOptions};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

mod common;
use common::{
    DaemonProcess, Summary, mib, min_median, parse_config, percentile, rss_kib, standin, thread_cpu,
};

/// Lines of the ingest measurements (1 CDR row per call).
const INGEST_LINES: u32 = 100_000;
/// Repeated runs of each in-process ingest measurement.
const INGEST_RUNS: usize = 3;
/// Repeated runs of the CPU stage measurements (no SQLite).
const STAGE_RUNS: usize = 2;
/// Calls of the latency run with settle_ms = 0.
const LATENCY_CALLS: u32 = 200;
/// Calls of the latency runs with the default settle time / the default rate limit.
const LATENCY_CALLS_SHORT: u32 = 30;
/// Calls appended for the RSS-under-load run.
const LOAD_CALLS: u32 = 50_000;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One inbound call from a lead over a PJSIP trunk, answered by agent 100: one cdr_csv row
/// (18 columns), the shape of `inbound_call(n)` in tests/common/mod.rs. `n` makes the
/// channels and the uniqueid unique; the call started at `start`.
fn inbound_call(n: u32, start: DateTime<Utc>) -> String {
    let t = |s: i64| {
        (start + chrono::Duration::seconds(s))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let phone = n % 100_000;
    format!(
        r#""","+9196117{phone:05}","918044556677","from-trunk","""Lead {n}"" <+9196117{phone:05}>","PJSIP/airtel-{n:08x}","PJSIP/100-{m:08x}","Dial","PJSIP/100,30","{s}","{a}","{e}",60,55,"ANSWERED","DOCUMENTATION","1700000000.{n}",""
"#,
        m = n + 0x100000,
        s = t(0),
        a = t(5),
        e = t(60),
    )
}

fn call_id(n: u32) -> String {
    format!("1700000000.{n}")
}

/// Writes `count` calls starting at `first` into one file (a backlog), in one write.
fn write_backlog(path: &Path, first: u32, count: u32) -> u64 {
    let start = Utc::now() - chrono::Duration::seconds(120);
    let mut text = String::with_capacity(count as usize * 300);
    for n in first..first + count {
        text.push_str(&inbound_call(n, start));
    }
    std::fs::write(path, &text).expect("write the CDR backlog");
    text.len() as u64
}

/// Appends like Asterisk does: open, append, close.
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the CDR file for append");
    f.write_all(text.as_bytes())
        .expect("append to the CDR file");
}

struct Params<'a> {
    dir: &'a Path,
    url: &'a str,
    synchronous: &'a str,
    settle_ms: u64,
    rate_requests: u32,
    rate_period_ms: u64,
    retry_initial_ms: u64,
    retry_max_ms: u64,
}

/// A config as in tests/common/mod.rs; poll_interval_ms stays at its default (500).
fn config_text(p: &Params) -> String {
    format!(
        r#"
[store]
path = {store:?}
synchronous = "{sync}"
[leadsquared]
call_log_url = {url:?}
access_key = "ak"
secret_key = "sk"
default_country_code = "91"
request_timeout_ms = 2000
retry_initial_ms = {ri}
retry_max_ms = {rm}
auth_failure_pause_ms = 1000
rate_limit_requests = {rr}
rate_limit_period_ms = {rp}
[[virtual_numbers]]
number = "+918044556677"
tag = "sales"
[[agents]]
extension = "100"
phone = "+919876500100"
[asterisk]
cdr_csv = {cdr:?}
# The backlog is written before the daemon starts and must be read.
start_at = "beginning"
settle_ms = {settle}
"#,
        store = p.dir.join("pbxlink.db"),
        sync = p.synchronous,
        url = p.url,
        ri = p.retry_initial_ms,
        rm = p.retry_max_ms,
        rr = p.rate_requests,
        rp = p.rate_period_ms,
        cdr = p.dir.join("Master.csv"),
        settle = p.settle_ms,
    )
}

fn rate(n: u32, secs: f64) -> f64 {
    f64::from(n) / secs
}

impl DaemonProcess {
    /// Waits until the CDR reader has started (its "tailing CDR file" log line).
    fn wait_tailing(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("tailing CDR file") {
                // The change waiter is set up just after that line.
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daemon exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "daemon did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Ingest
// ---------------------------------------------------------------------------------------

/// The tailer's batches of a file, read to its end.
fn tailer_batches(path: &Path) -> Vec<Batch> {
    let mut tailer = FileTailer::new(path.to_owned(), None, TailOptions::default());
    let mut batches = Vec::new();
    while let Some(batch) = tailer.poll().expect("read the CDR file") {
        batches.push(batch);
    }
    batches
}

fn offset_of(batch: &Batch) -> FileOffset {
    let c = &batch.checkpoint;
    FileOffset {
        dev: c.dev,
        ino: c.ino,
        offset: c.offset,
        window_crc: c.window_crc,
        window_len: c.window_len,
    }
}

struct IngestRun {
    total: f64,
    ingest: f64,
    flush: f64,
    /// On-CPU seconds of this thread during ingest / flush.
    ingest_cpu: f64,
    flush_cpu: f64,
}

/// One run: a fresh store; each tailer batch is ingested (parse + stage with its offset in
/// one transaction) and then the settled calls are grouped and enqueued, as the daemon's
/// reader loop does with settle_ms = 0.
fn ingest_run(sync: &str, cdr: &Path, batches: &[Batch]) -> IngestRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = parse_config(&config_text(&Params {
        dir: dir.path(),
        url: "http://127.0.0.1:9/1/api/Telephony/LogCallComplete/x",
        synchronous: sync,
        settle_ms: 0,
        rate_requests: 25,
        rate_period_ms: 5000,
        retry_initial_ms: 1000,
        retry_max_ms: 30_000,
    }));
    let mut config = config;
    if let Some(ast) = config.asterisk.as_mut() {
        ast.cdr_csv = Some(cdr.to_owned());
    }
    let store =
        Arc::new(Store::open(&config.store.path, config.store.synchronous).expect("open store"));
    let mut source = pbxlink::pbx::asterisk::cdr_source(
        &config,
        store.clone(),
        Arc::new(Notify::new()),
        Some("bench".into()),
    )
    .expect("build the CDR source");
    let (mut ingest, mut flush) = (Duration::ZERO, Duration::ZERO);
    let (mut ingest_cpu, mut flush_cpu) = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    for batch in batches {
        let (t, c) = (Instant::now(), thread_cpu());
        source
            .ingest(&batch.lines, Some(&offset_of(batch)), &[])
            .expect("ingest a batch");
        let (t2, c2) = (Instant::now(), thread_cpu());
        source
            .flush_settled(now_ms())
            .expect("enqueue settled calls");
        ingest += t2 - t;
        flush += t2.elapsed();
        ingest_cpu += c2 - c;
        flush_cpu += thread_cpu() - c2;
    }
    let total = started.elapsed().as_secs_f64();
    let status = store.status().expect("status");
    assert_eq!(
        status.pending,
        u64::from(INGEST_LINES),
        "not every line became an outbox row"
    );
    assert_eq!(status.staged, 0, "staged rows left behind");
    IngestRun {
        total,
        ingest: ingest.as_secs_f64(),
        flush: flush.as_secs_f64(),
        ingest_cpu: ingest_cpu.as_secs_f64(),
        flush_cpu: flush_cpu.as_secs_f64(),
    }
}

fn bench_ingest_in_process(summary: &mut Summary, stages: bool, source: bool) {
    println!(
        "\n== 1a. Ingest rate: raw CDR line -> committed outbox row (in-process FileSource) =="
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cdr = dir.path().join("Master.csv");
    let bytes = write_backlog(&cdr, 1, INGEST_LINES);
    println!(
        "  input: {INGEST_LINES} cdr_csv lines (1 row = 1 inbound answered call), {:.1} MiB, {} B/line",
        bytes as f64 / 1048576.0,
        bytes / u64::from(INGEST_LINES)
    );

    // Stages without SQLite, to show where the time goes.
    let mut read = Vec::new();
    let mut batches = Vec::new();
    for _ in 0..INGEST_RUNS {
        let t = Instant::now();
        batches = tailer_batches(&cdr);
        read.push(t.elapsed().as_secs_f64());
    }
    let n_lines: usize = batches.iter().map(|b| b.lines.len()).sum();
    assert_eq!(n_lines, INGEST_LINES as usize);
    println!(
        "  tailer batches: {} batches, {:.0} lines/batch (max_batch_bytes = 1 MiB)",
        batches.len(),
        n_lines as f64 / batches.len() as f64
    );
    if stages {
        bench_stages(&batches, &read);
    }
    if !source {
        return;
    }
    for sync in ["full", "normal"] {
        let mut runs = Vec::new();
        for _ in 0..INGEST_RUNS {
            runs.push(ingest_run(sync, &cdr, &batches));
        }
        let totals: Vec<f64> = runs.iter().map(|r| r.total).collect();
        let (min, med) = min_median(&totals);
        let m = runs
            .iter()
            .find(|r| r.total == med)
            .expect("the median run");
        println!(
            "  synchronous = {sync:<6}: {INGEST_RUNS} runs, total min {min:.2} s, median {med:.2} s; median run: ingest (parse + stage + offset, 1 tx/batch) {:.2} s wall / {:.2} s CPU, flush (group + classify + enqueue, 1 tx/batch) {:.2} s wall / {:.2} s CPU",
            m.ingest, m.ingest_cpu, m.flush, m.flush_cpu,
        );
        summary.add(format!(
            "Ingest (FileSource, tailer batches of ~{:.0} lines, settle 0), synchronous={sync}: {:.0} lines/s median ({:.0} best) over {INGEST_RUNS} runs of {INGEST_LINES} lines",
            n_lines as f64 / batches.len() as f64,
            rate(INGEST_LINES, med),
            rate(INGEST_LINES, min),
        ));
    }
}

/// The CPU stages of ingest without SQLite, to show where the time goes.
fn bench_stages(batches: &[Batch], read: &[f64]) {
    let ast = pbxlink::config::AsteriskConfig::default();
    let parser = pbxlink::pbx::asterisk::cdr_parser(&ast).expect("parser");
    let lines: Vec<&Vec<u8>> = batches.iter().flat_map(|b| &b.lines).collect();
    let (mut parse, mut json, mut csv_split) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..STAGE_RUNS {
        let t = Instant::now();
        let rows: Vec<_> = lines
            .iter()
            .map(|l| parser.parse(l).expect("parse").expect("a row"))
            .collect();
        parse.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut len = 0usize;
        for (row, l) in rows.iter().zip(&lines) {
            len += serde_json::to_string(row).expect("json").len();
            len += String::from_utf8_lossy(l).into_owned().len();
        }
        assert!(len > 0);
        json.push(t.elapsed().as_secs_f64());
        // The same lines split by ONE reused csv reader, for comparison with the parser,
        // which builds a csv reader (and its DFA) per line.
        let t = Instant::now();
        let mut all = Vec::with_capacity(lines.len() * 270);
        for l in &lines {
            all.extend_from_slice(l);
            all.push(b'\n');
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(all.as_slice());
        let mut record = csv::ByteRecord::new();
        let mut fields = 0usize;
        while reader.read_byte_record(&mut record).expect("csv") {
            fields += record.len();
        }
        assert_eq!(fields, lines.len() * 18);
        csv_split.push(t.elapsed().as_secs_f64());
    }
    let one_build = {
        let t = Instant::now();
        for _ in 0..10_000 {
            let r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(&b""[..]);
            std::hint::black_box(r);
        }
        t.elapsed().as_secs_f64() / 10_000.0
    };
    // Phone normalisation, which classify runs several times per call.
    let normalizer = pbxlink::phone::PhoneNormalizer::new("91").expect("normalizer");
    let numbers: Vec<String> = (0..10_000u32)
        .map(|n| format!("+9196117{:05}", n % 100_000))
        .collect();
    let mut normalize = Vec::new();
    for _ in 0..STAGE_RUNS {
        let t = Instant::now();
        let ok = numbers
            .iter()
            .filter(|n| normalizer.normalize(n).is_some())
            .count();
        assert_eq!(ok, numbers.len());
        normalize.push(t.elapsed().as_secs_f64() / numbers.len() as f64);
    }
    for (what, samples) in [
        ("tailer read (FileTailer::poll to EOF)", read),
        ("CdrParser::parse", &parse[..]),
        (
            "row to JSON + raw line copy (rest of ingest's CPU)",
            &json[..],
        ),
        (
            "csv split with one reused reader (reference)",
            &csv_split[..],
        ),
    ] {
        let (min, med) = min_median(samples);
        println!(
            "  {what:<52} min {:>7.1} ms  median {:>7.1} ms  = {:>9.0} lines/s (median)",
            min * 1e3,
            med * 1e3,
            rate(INGEST_LINES, med)
        );
    }
    println!(
        "  one csv::ReaderBuilder::build(), as CdrParser::parse does per line: {:.1} us",
        one_build * 1e6
    );
    println!(
        "  PhoneNormalizer::normalize(\"+9196117nnnnn\") (phonenumber parse + validate): {:.1} us per number (median of {STAGE_RUNS} x 10,000)",
        min_median(&normalize).1 * 1e6
    );
}

async fn bench_ingest_daemon(summary: &mut Summary) {
    println!(
        "\n== 1b. Tailing path end-to-end: in-process Daemon reads a {INGEST_LINES}-line backlog (delivery blocked: stand-in answers 503) =="
    );
    for sync in ["full", "normal"] {
        let stand = standin().await;
        stand.set_behaviour(Behaviour::Fail(503));
        let dir = tempfile::tempdir().expect("tempdir");
        let cdr = dir.path().join("Master.csv");
        write_backlog(&cdr, 1, INGEST_LINES);
        let config = parse_config(&config_text(&Params {
            dir: dir.path(),
            url: &stand.call_log_url(),
            synchronous: sync,
            settle_ms: 0,
            rate_requests: 25,
            rate_period_ms: 5000,
            retry_initial_ms: 5000,
            retry_max_ms: 60_000,
        }));
        let started = Instant::now();
        let daemon = pbxlink::daemon::Daemon::start(&config)
            .await
            .expect("start the daemon");
        let store = daemon.store();
        let mut staged_at = None;
        let deadline = started + Duration::from_secs(120);
        let done = loop {
            let s = tokio::task::block_in_place(|| store.status()).expect("status");
            let rows_read = s
                .counters
                .iter()
                .find(|(n, _)| n == "cdr_rows_read")
                .map_or(0, |c| c.1);
            if staged_at.is_none() && rows_read >= i64::from(INGEST_LINES) {
                staged_at = Some(started.elapsed());
            }
            if s.pending + s.delivered + s.dead >= u64::from(INGEST_LINES) {
                break started.elapsed();
            }
            assert!(Instant::now() < deadline, "backlog not queued: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        daemon.stop(Duration::from_secs(20)).await;
        let secs = done.as_secs_f64();
        println!(
            "  synchronous = {sync:<6}: all {INGEST_LINES} rows staged after {:.2} s, all queued after {:.2} s (status polled every 20 ms)",
            staged_at.unwrap_or(done).as_secs_f64(),
            secs
        );
        summary.add(format!(
            "Tailing path (Daemon, backlog file -> outbox), synchronous={sync}: {:.0} lines/s ({INGEST_LINES} lines in {secs:.2} s, 1 run)",
            rate(INGEST_LINES, secs)
        ));
    }
}

// ---------------------------------------------------------------------------------------
// 2. Latency
// ---------------------------------------------------------------------------------------

struct LatencyCase<'a> {
    label: &'a str,
    calls: u32,
    settle_ms: u64,
    rate_requests: u32,
    rate_period_ms: u64,
}

/// Appends `calls` calls 20-50 ms apart to the real daemon's CDR file; returns the
/// latencies (ms) from just after each append to its POST arriving at the stand-in.
async fn latency_run(case: &LatencyCase<'_>) -> Vec<f64> {
    let stand = standin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cdr = dir.path().join("Master.csv");
    std::fs::write(&cdr, "").expect("create the CDR file");
    let config_path = dir.path().join("pbxlink.toml");
    std::fs::write(
        &config_path,
        config_text(&Params {
            dir: dir.path(),
            url: &stand.call_log_url(),
            synchronous: "full",
            settle_ms: case.settle_ms,
            rate_requests: case.rate_requests,
            rate_period_ms: case.rate_period_ms,
            retry_initial_ms: 100,
            retry_max_ms: 1000,
        }),
    )
    .expect("write config");
    let mut daemon = DaemonProcess::spawn(&config_path, dir.path());
    daemon.wait_tailing();

    let mut events = stand.subscribe();
    let calls = case.calls;
    let arrivals = tokio::spawn(async move {
        let mut at: HashMap<String, SystemTime> = HashMap::new();
        while at.len() < calls as usize {
            match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                Ok(Ok(r)) if r.status == 200 => {
                    let id = r.body["CallSessionId"].as_str().unwrap_or("").to_owned();
                    at.entry(id).or_insert(r.at);
                }
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Lagged(n))) => panic!("stand-in events lagged by {n}"),
                Ok(Err(RecvError::Closed)) | Err(_) => break,
            }
        }
        at
    });
    let cdr_w = cdr.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut written = HashMap::new();
        for n in 1..=calls {
            let line = inbound_call(n, Utc::now() - chrono::Duration::seconds(120));
            append(&cdr_w, &line);
            written.insert(call_id(n), SystemTime::now());
            // 20..50 ms apart, deterministic spread.
            std::thread::sleep(Duration::from_millis(20 + u64::from(n * 7 % 31)));
        }
        written
    })
    .await
    .expect("writer thread");
    let arrived = arrivals.await.expect("arrivals task");
    daemon.stop();
    assert_eq!(
        arrived.len(),
        calls as usize,
        "not every call arrived at the stand-in"
    );
    let mut lat: Vec<f64> = written
        .iter()
        .map(|(id, w)| {
            let a = arrived.get(id).expect("arrival of a written call");
            match a.duration_since(*w) {
                Ok(d) => d.as_secs_f64() * 1e3,
                Err(e) => -(e.duration().as_secs_f64() * 1e3),
            }
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

async fn bench_latency(summary: &mut Summary) {
    println!(
        "\n== 2. Latency: line appended to Master.csv -> POST arrives at the stand-in (release binary `pbxlink run`, synchronous = full, poll_interval_ms = 500 default, calls 20-50 ms apart) =="
    );
    let cases = [
        LatencyCase {
            label: "settle_ms = 0, rate limit 1000/1000 ms",
            calls: LATENCY_CALLS,
            settle_ms: 0,
            rate_requests: 1000,
            rate_period_ms: 1000,
        },
        LatencyCase {
            label: "settle_ms = 5000 (default), rate limit 1000/1000 ms",
            calls: LATENCY_CALLS_SHORT,
            settle_ms: 5000,
            rate_requests: 1000,
            rate_period_ms: 1000,
        },
        LatencyCase {
            label: "settle_ms = 0, rate limit 25/5000 ms (default)",
            calls: LATENCY_CALLS_SHORT,
            settle_ms: 0,
            rate_requests: 25,
            rate_period_ms: 5000,
        },
    ];
    for case in &cases {
        let lat = latency_run(case).await;
        let line = format!(
            "Latency append->POST, {}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (min {:.1} ms, n = {})",
            case.label,
            percentile(&lat, 50.0),
            percentile(&lat, 90.0),
            percentile(&lat, 99.0),
            lat[lat.len() - 1],
            lat[0],
            lat.len()
        );
        summary.add(line);
    }
}

// ---------------------------------------------------------------------------------------
// 3. RSS
// ---------------------------------------------------------------------------------------

async fn bench_rss(summary: &mut Summary) {
    println!(
        "\n== 3. RSS of the release binary `pbxlink run` (synchronous = full, settle_ms = 0, rate limit 1,000,000/1000 ms i.e. unthrottled, stand-in healthy) =="
    );
    let stand = standin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cdr = dir.path().join("Master.csv");
    std::fs::write(&cdr, "").expect("create the CDR file");
    let config_path = dir.path().join("pbxlink.toml");
    std::fs::write(
        &config_path,
        config_text(&Params {
            dir: dir.path(),
            url: &stand.call_log_url(),
            synchronous: "full",
            settle_ms: 0,
            rate_requests: 1_000_000,
            rate_period_ms: 1000,
            retry_initial_ms: 100,
            retry_max_ms: 1000,
        }),
    )
    .expect("write config");

    // Count accepted POSTs without cloning the stand-in's whole history.
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut events = stand.subscribe();
    let counter = accepted.clone();
    let counting = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(r) if r.status == 200 => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                // The stand-in is always healthy here: every request it saw was accepted.
                Err(RecvError::Lagged(n)) => {
                    counter.fetch_add(n as usize, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            }
        }
    });

    let mut daemon = DaemonProcess::spawn(&config_path, dir.path());
    daemon.wait_tailing();
    let pid = daemon.pid();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss, idle_hwm) = rss_kib(pid).expect("read /proc/PID/status");
    println!(
        "  idle (3 s after start, empty CDR file): VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        mib(idle_rss),
        mib(idle_hwm)
    );

    let peak = Arc::new(Mutex::new((0u64, 0u64)));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let peak = peak.clone();
        let stop = stop_sampling.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, hwm)) = rss_kib(pid) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    p.0 = p.0.max(rss);
                    p.1 = p.1.max(hwm);
                    samples.push(rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };

    let started = Instant::now();
    let cdr_w = cdr.clone();
    let writer = std::thread::spawn(move || {
        let start = Utc::now() - chrono::Duration::seconds(120);
        for n in 1..=LOAD_CALLS {
            append(&cdr_w, &inbound_call(n, start));
        }
        started.elapsed()
    });
    let deadline = started + Duration::from_secs(240);
    let mut last_report = Instant::now();
    while accepted.load(Ordering::Relaxed) < LOAD_CALLS as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {LOAD_CALLS} delivered",
            accepted.load(Ordering::Relaxed)
        );
        if last_report.elapsed() >= Duration::from_secs(10) {
            println!(
                "  ... {:.0} s: {} delivered",
                started.elapsed().as_secs_f64(),
                accepted.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered_in = started.elapsed();
    let written_in = writer.join().expect("writer thread");
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler thread");
    let (peak_rss, _) = *peak.lock().unwrap_or_else(|e| e.into_inner());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after_rss, after_hwm) = rss_kib(pid).expect("read /proc/PID/status");
    daemon.stop();
    counting.abort();
    println!(
        "  load: {LOAD_CALLS} calls appended one by one (open/append/close) in {:.2} s; all delivered after {:.2} s = {:.0} calls/s end to end",
        written_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        rate(LOAD_CALLS, delivered_in.as_secs_f64())
    );
    println!(
        "  VmRSS sampled every 100 ms ({} samples): peak {:.1} MiB; VmHWM at the end {:.1} MiB; 2 s after the last delivery VmRSS {:.1} MiB",
        samples.len(),
        mib(peak_rss),
        mib(after_hwm),
        mib(after_rss)
    );
    summary.add(format!(
        "RSS idle (daemon, empty file, 3 s): VmRSS {:.1} MiB (VmHWM {:.1} MiB)",
        mib(idle_rss),
        mib(idle_hwm)
    ));
    summary.add(format!(
        "RSS under load ({LOAD_CALLS} calls appended as fast as possible, unthrottled delivery): peak VmRSS {:.1} MiB, VmHWM {:.1} MiB, {:.1} MiB after; all delivered in {:.1} s ({:.0} calls/s)",
        mib(peak_rss),
        mib(after_hwm),
        mib(after_rss),
        delivered_in.as_secs_f64(),
        rate(LOAD_CALLS, delivered_in.as_secs_f64())
    ));
}

// ---------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; filter arguments select sections by substring:
    // ingest-stages, ingest-source, ingest-daemon, latency, rss (e.g. `-- ingest latency`).
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
    println!(
        "pbxlink pipeline benchmark ({} CPUs, release profile)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut summary = Summary::default();
    if want("ingest-stages") || want("ingest-source") {
        bench_ingest_in_process(&mut summary, want("ingest-stages"), want("ingest-source"));
    }
    if want("ingest-daemon") {
        runtime.block_on(bench_ingest_daemon(&mut summary));
    }
    if want("latency") {
        runtime.block_on(bench_latency(&mut summary));
    }
    if want("rss") {
        runtime.block_on(bench_rss(&mut summary));
    }
    println!(
        "\n==== SUMMARY (pbxlink pipeline benchmark, {} CPUs, {:.0} s) ====",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    for line in &summary.0 {
        println!("- {line}");
    }
}

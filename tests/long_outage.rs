//! Test 4 of issue 11, the long outage, against the real `pbxlink run` and the CRM stand-in
//! (src/simulation/crm_standin.rs) with the configured limit of 25 requests per 5 s:
//!
//! 1. calls queued while the CRM is down: a generated CDR file brought in with
//!    `pbxlink import`, and a daemon that meanwhile only gets 503s;
//! 2. the CRM comes back and the daemon restarts with every call pending: the time from the
//!    start to the first request at the stand-in, and the daemon's RSS through the drain;
//! 3. the drain holds the configured rate: over the measured window the stand-in gets the
//!    window's share of 25 per 5 s within 2 %, and no 5 s window holds more than 25;
//! 4. every call the stand-in got, field by field, once; (short variant) every call of the
//!    backlog delivered once once the limit is lifted.
//!
//! Short variant (in the suite): 20,000 calls, the drain measured over 30 s (150 ± 5 %).
//! Long variant: 10^6 calls, 5 minutes (1,500 ± 30), restart to first delivery ≤ 1 s:
//! `cargo test --release --test long_outage -- --ignored --nocapture`. Figures are printed;
//! the only timing asserted in the short variant is the rate the stand-in sees.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use common::{World, call_start};
use pbxlink::crm::leadsquared::standin::Behaviour;
use serde_json::Value;

/// The configured limit: 25 requests per 5 s.
const LIMIT_REQUESTS: u32 = 25;
const LIMIT_PERIOD: Duration = Duration::from_secs(5);

/// One answered inbound call of the backlog (cdr_csv, 18 columns); `n` up to 10^8 makes the
/// lead's number, the channels and the uniqueid unique.
fn backlog_call(n: u32) -> String {
    let t = |s: i64| {
        (call_start() + chrono::Duration::seconds(s))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    format!(
        r#""","+9190{n:08}","918044556677","from-trunk","""Lead {n}"" <+9190{n:08}>","PJSIP/airtel-{n:08x}","PJSIP/100-{m:08x}","Dial","PJSIP/100,30","{s}","{a}","{e}",60,55,"ANSWERED","DOCUMENTATION","1700000000.{n}",""
"#,
        m = n + 0x1000_0000,
        s = t(0),
        a = t(5),
        e = t(60),
    )
}

/// The whole Call Log body the CRM must get for `backlog_call(n)`: every field, nothing else.
fn expected(n: u32) -> Value {
    let t = |s: i64| {
        (call_start() + chrono::Duration::seconds(s))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    serde_json::json!({
        "SourceNumber": format!("+9190{n:08}"),
        "DestinationNumber": "+919876500100",
        "DisplayNumber": "+918044556677",
        "StartTime": t(0),
        "EndTime": t(60),
        "CallDuration": 55,
        "Status": "Answered",
        "Direction": "Inbound",
        "CallSessionId": format!("1700000000.{n}"),
        "CallerName": format!("Lead {n}"),
        "Tag": "sales",
    })
}

/// Every call log the stand-in accepted, checked field by field against `expected`;
/// returns how often each call number came.
fn accepted_checked(w: &World, calls: u32) -> HashMap<u32, u32> {
    let mut seen = HashMap::new();
    for body in w.standin.accepted_call_logs() {
        let n: u32 = body["CallSessionId"]
            .as_str()
            .and_then(|id| id.strip_prefix("1700000000."))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the CRM got a call nobody made: {body}"));
        assert!((1..=calls).contains(&n), "call {n} is not in the backlog");
        assert_eq!(body, expected(n), "call {n} reached the CRM wrong");
        *seen.entry(n).or_insert(0) += 1;
    }
    let twice: Vec<(&u32, &u32)> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
    seen
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn set_limit(w: &World, requests: u32, period_ms: u64) {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("rate_limit_requests =") {
            out.push_str(&format!("rate_limit_requests = {requests}\n"));
        } else if line.starts_with("rate_limit_period_ms =") {
            out.push_str(&format!("rate_limit_period_ms = {period_ms}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&w.config, out).expect("config");
}

/// How often the daemon's VmRSS is sampled.
const RSS_SAMPLE: Duration = Duration::from_millis(200);

/// What a long outage run measured.
struct Figures {
    first_delivery: Duration,
    in_window: usize,
    rss_kib: Vec<u64>,
}

/// `tolerance`: how far from the configured rate the drain may be (0.02: 2 %).
async fn long_outage(calls: u32, drain: Duration, deliver_all: bool, tolerance: f64) -> Figures {
    let w = World::new(vec![]).await;
    set_limit(&w, LIMIT_REQUESTS, LIMIT_PERIOD.as_millis() as u64);

    // 1. The CRM is down; the backlog is queued (import of a generated CDR file) while a
    //    daemon gets nothing but 503s.
    w.standin.set_behaviour(Behaviour::Fail(503));
    let backlog = common::sibling(&w.cdr, "backlog.csv");
    let t = Instant::now();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&backlog).expect("backlog"));
        for n in 1..=calls {
            f.write_all(backlog_call(n).as_bytes()).expect("write");
        }
        f.flush().expect("flush");
    }
    let generated = t.elapsed();
    let daemon = w.start_daemon();
    let t = Instant::now();
    let (ok, out) = w.pbxlink(&["import", backlog.to_str().expect("path")]);
    let imported = t.elapsed();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{calls} new call(s) queued")),
        "{out}"
    );
    w.wait_for(Duration::from_secs(60), "a few 503s", || {
        w.standin.received().len() >= 2
    })
    .await;
    daemon.stop();
    assert!(w.standin.accepted_call_logs().is_empty());
    let queued = w.status();
    assert_eq!(queued["pending"], calls, "{queued}");
    let store_bytes = std::fs::metadata(&w.store_path)
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "[long outage] {calls} calls: CDR file written in {generated:.1?}, imported in \
         {imported:.1?} while the CRM was down; store {:.1} MB",
        store_bytes as f64 / 1e6
    );

    // 2. The CRM is back; restart with the whole backlog pending.
    w.standin.set_behaviour(Behaviour::Healthy);
    let before = w.standin.received().len();
    let mut events = w.standin.subscribe();
    let started = SystemTime::now();
    let daemon = w.start_daemon();
    let pid = daemon.child.id();
    let first = loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("a request within 60 s of the restart")
            .expect("stand-in events");
        if event.status == 200 {
            break event;
        }
    };
    let first_delivery = first.at.duration_since(started).unwrap_or_default();
    eprintln!(
        "[long outage] restart with {calls} pending: first delivery {first_delivery:?} after the start"
    );

    // 3. The drain; the daemon's VmRSS sampled every 200 ms.
    let mut rss = Vec::new();
    let until = Instant::now() + drain + Duration::from_secs(2);
    while Instant::now() < until {
        rss.push(rss_kib(pid));
        tokio::time::sleep(RSS_SAMPLE).await;
    }
    let received = w.standin.received();
    let times: Vec<SystemTime> = received[before..]
        .iter()
        .filter(|r| r.endpoint == "call_log")
        .map(|r| r.at)
        .collect();
    let in_window = times
        .iter()
        .filter(|at| at.duration_since(first.at).is_ok_and(|since| since < drain))
        .count();
    let want = drain.as_secs_f64() * f64::from(LIMIT_REQUESTS) / LIMIT_PERIOD.as_secs_f64();
    eprintln!(
        "[long outage] drain: {in_window} requests in the first {drain:?} (configured {want:.0}, \
         {:+.2} %); RSS min {} max {} KiB over {} samples",
        (in_window as f64 - want) / want * 100.0,
        rss.iter().min().unwrap_or(&0),
        rss.iter().max().unwrap_or(&0),
        rss.len()
    );
    assert!(
        (in_window as f64 - want).abs() <= want * tolerance,
        "the drain sent {in_window} requests in {drain:?}, not {want:.0} ± {} %",
        tolerance * 100.0
    );
    for w26 in times.windows(LIMIT_REQUESTS as usize + 1) {
        let span = w26[LIMIT_REQUESTS as usize]
            .duration_since(w26[0])
            .unwrap_or_default();
        // The stand-in stamps a request when it has read it: allow its scheduling jitter.
        assert!(
            span + Duration::from_millis(50) >= LIMIT_PERIOD,
            "{} requests within {span:?}",
            LIMIT_REQUESTS + 1
        );
    }
    daemon.stop();
    // Stopped cleanly (nothing in flight): every call is delivered or still pending.
    let seen = accepted_checked(&w, calls);
    let status = w.status();
    let delivered = status["delivered"].as_u64().unwrap_or(0);
    assert_eq!(
        delivered + status["pending"].as_u64().unwrap_or(0),
        u64::from(calls),
        "calls lost from the store: {status}"
    );
    assert_eq!(seen.len() as u64, delivered, "{status}");

    // 4. Every call once: the limit lifted, the rest of the backlog delivered.
    if deliver_all {
        set_limit(&w, 1_000_000, 1_000);
        let daemon = w.start_daemon();
        let pid = daemon.child.id();
        let t = Instant::now();
        // The stand-in takes a few thousand requests a second: allow 1 ms a call, 15 min at least.
        let limit = Duration::from_secs(900).max(Duration::from_millis(u64::from(calls)));
        while w.status()["pending"] != 0 {
            assert!(
                t.elapsed() < limit,
                "the backlog not delivered in {limit:?}"
            );
            rss.push(rss_kib(pid));
            tokio::time::sleep(RSS_SAMPLE).await;
        }
        daemon.stop();
        let seen = accepted_checked(&w, calls);
        let missing: Vec<u32> = (1..=calls)
            .filter(|n| !seen.contains_key(n))
            .take(10)
            .collect();
        assert!(missing.is_empty(), "never delivered: {missing:?}...");
        eprintln!(
            "[long outage] the rest of the {calls} calls delivered in {:.1?} without the limit; \
             each once, every field right; RSS min {} max {} KiB over {} samples (both drains)",
            t.elapsed(),
            rss.iter().min().unwrap_or(&0),
            rss.iter().max().unwrap_or(&0),
            rss.len()
        );
    }
    Figures {
        first_delivery,
        in_window,
        rss_kib: rss,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_outage_drains_at_the_configured_rate_and_delivers_every_call_once() {
    // 5 % here: over 30 s one late request is 0.7 %, and the suite runs tests side by side
    // on two cores; the long variant holds 2 % over 5 minutes.
    let f = long_outage(20_000, Duration::from_secs(30), true, 0.05).await;
    assert!(f.in_window > 0 && !f.rss_kib.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long variant (10^6 calls, 5 minutes): cargo test --release --test long_outage -- --ignored --nocapture"]
async fn long_a_million_calls_queued_then_five_minutes_of_drain() {
    // PBXLINK_OUTAGE_CALLS: a smaller backlog on a slow machine (the import is most of the
    // run's time); the drain is 5 minutes whatever the backlog.
    let calls = std::env::var("PBXLINK_OUTAGE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // The rate phase is 5 minutes at 25 per 5 s; then the limit is lifted and the rest of the
    // backlog (days at 25 per 5 s) is drained and checked: every call once, every field.
    let f = long_outage(calls, Duration::from_secs(300), true, 0.02).await;
    assert!(
        f.first_delivery <= Duration::from_secs(1),
        "first delivery {:?} after the restart with {calls} pending",
        f.first_delivery
    );
    let (first, max) = (f.rss_kib[0], f.rss_kib.iter().copied().max().unwrap_or(0));
    assert!(
        max <= first + first / 4 + 4096,
        "RSS grew through the drain: {first} KiB at the start, {max} KiB at most"
    );
    assert!(
        max <= 64 * 1024,
        "peak RSS {max} KiB with {calls} pending, over 64 MiB"
    );
}

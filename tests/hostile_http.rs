//! Hostile HTTP clients against the real daemon binary (issue 8, finding 3): a flood of idle
//! connections, a slowloris that never finishes its headers, and 10,000 wrong tokens from
//! one address. The daemon runs as a subprocess with the soft open-file limit at 1024, as
//! a unit without `LimitNOFILE=` would give it.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, World, call_id, inbound_call};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "t0ken";

/// A free loopback port (bound, then released for the daemon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Adds `[http]` (with `extra` keys) to the world's config and starts the daemon with a soft
/// open-file limit of 1024; returns the daemon and the API's address once `/healthz` answers.
async fn start(w: &World, extra: &str) -> (Daemon, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = std::fs::read_to_string(&w.config).expect("config");
    config.push_str(&format!(
        "[http]\nlisten = \"{addr}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 100000\n{extra}\n"
    ));
    std::fs::write(&w.config, config).expect("config");
    let log = w.dir.path().join("daemon-hostile.log");
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 1024 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["run", "--config"])
        .arg(&w.config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn pbxlink");
    let daemon = Daemon { child, log };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await {
            if r.status().is_success() {
                return (daemon, addr);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the API never answered: {}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Descriptors the process holds now.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The soft and hard "Max open files" of a process.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let mut fields = line.split_whitespace().skip(3);
    (
        fields.next().unwrap_or_default().to_owned(),
        fields.next().unwrap_or_default().to_owned(),
    )
}

/// Whether the server has closed `stream` (EOF or reset is waiting to be read).
fn closed_by_server(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_neither_exhaust_the_fds_nor_stall_healthz_or_delivery() {
    // The test process itself holds 1,100 sockets.
    pbxlink::http::server::raise_open_file_limit();
    let w = World::new(vec![]).await;
    let (daemon, addr) = start(&w, "").await;
    let pid = daemon.child.id();
    let fds_before = fds(pid);
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        match TcpStream::connect(addr).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {}: {e}", idle.len()),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_flooded = fds(pid);
    // /healthz answers (each try has a 1 s budget), with the 1,100 still connected.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let started = Instant::now();
    let mut attempts = 0;
    let answered = loop {
        attempts += 1;
        match client.get(format!("http://{addr}/healthz")).send().await {
            Ok(r) if r.status().is_success() => break Some(started.elapsed()),
            _ if started.elapsed() > Duration::from_secs(5) => break None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    // A call written now reaches the CRM: the CRM client finds descriptors.
    w.append(&inbound_call(1));
    let deadline = Instant::now() + Duration::from_secs(8);
    while !w.accepted_by_id().contains_key(&call_id(1)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = w.accepted_by_id().contains_key(&call_id(1));
    let refused = idle.iter().filter(|s| closed_by_server(s)).count();
    let (soft, hard) = open_file_limits(pid);
    eprintln!(
        "figures: fds before {fds_before}, with 1,100 idle connections {fds_flooded}; \
         /healthz answered after {answered:?} ({attempts} attempt(s)); \
         {refused} of 1,100 closed by the server; call delivered: {delivered}; \
         open-file limit soft {soft} hard {hard}"
    );
    assert!(
        answered.is_some_and(|d| d < Duration::from_secs(2)),
        "/healthz did not answer within 2 s: {answered:?}\n{}",
        daemon.log_tail()
    );
    assert!(
        fds_flooded < fds_before + 256 + 16,
        "the daemon holds {fds_flooded} descriptors (before: {fds_before})"
    );
    assert!(
        refused >= 1_100 - 256,
        "only {refused} of the 1,100 idle connections were closed"
    );
    assert!(
        delivered,
        "the call never reached the CRM while the API was flooded"
    );
    assert_eq!(soft, hard, "the daemon raises its soft open-file limit");
    assert!(
        daemon.log_count("HTTP connections at the cap") <= 3,
        "refusals are summarised: {}",
        daemon.log_tail()
    );
    // /metrics counts what became of them.
    let metrics = client
        .get(format!("http://{addr}/metrics?token={TOKEN}"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics body");
    let count = |outcome: &str| -> u64 {
        let prefix = format!("pbxlink_http_connections_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{metrics}"))
    };
    assert!(
        count("shed_quiet") + count("refused_at_cap") >= 1_100 - 256,
        "/metrics: {metrics}"
    );
    assert!(count("accepted") >= 256, "/metrics: {metrics}");
    drop(idle);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_that_never_finishes_its_headers_is_closed() {
    let w = World::new(vec![]).await;
    let (daemon, addr) = start(&w, "header_read_timeout_ms = 500").await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (_read, mut write) = stream.into_split();
    write
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: pbxlink\r\n")
        .await
        .expect("request line");
    let started = Instant::now();
    let mut closed_after = None;
    // One header line every 100 ms, never the blank line that ends them; for at most 5 s.
    while started.elapsed() < Duration::from_secs(5) {
        if write.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("figures: slowloris closed after {closed_after:?}");
    let closed_after = closed_after.expect("the slowloris kept its connection for 5 s");
    assert!(
        closed_after >= Duration::from_millis(400) && closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_wrong_tokens_are_throttled_and_summarised() {
    let w = World::new(vec![]).await;
    let (daemon, addr) = start(&w, "").await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..500 {
                let r = client
                    .get(format!("http://{addr}/readyz?token=guess"))
                    .send()
                    .await
                    .expect("request");
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.expect("task"));
    }
    let took = started.elapsed();
    let unauthorised = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    // The same address with the right token waits for its window too; another does not.
    let right = client
        .get(format!("http://{addr}/readyz?token={TOKEN}"))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16();
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("client")
        .get(format!("http://{addr}/metrics?token={TOKEN}"))
        .send()
        .await
        .expect("request from 127.0.0.2")
        .status()
        .as_u16();
    // Give the log a moment to be written.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let token_lines = daemon.log_count("token");
    eprintln!(
        "figures: 10,000 wrong tokens in {took:?}: {unauthorised} answered 401, {throttled} 429; \
         {token_lines} log line(s) about tokens"
    );
    assert_eq!(unauthorised, 10, "the default is 10 failures a minute");
    assert_eq!(throttled, 10_000 - 10);
    assert_eq!(right, 429, "a throttled address is not checked");
    assert_eq!(elsewhere, 200);
    assert!(
        token_lines <= 3,
        "{token_lines} log lines for 10,000 wrong tokens:\n{}",
        daemon.log_tail()
    );
    daemon.stop();
}

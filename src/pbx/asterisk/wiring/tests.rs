//! What `[asterisk]` contributes to the daemon, built against the AMI simulator: which
//! readers, tasks and control each `call_log_source` gives, their status parts, their
//! figures on `/metrics` (the CDR counters labelled with their source) and the AMI logoff.

use std::net::SocketAddr;

use tokio::sync::{Notify, watch};

use super::*;
use crate::config::Synchronous;
use crate::metrics::Metrics;
use crate::pbx::asterisk::ami::simulator::AmiSimulator;
use crate::pbx::connection::ConnectionStats;

struct Built {
    parts: PbxParts,
    metrics: Metrics,
    _dir: tempfile::TempDir,
    _shutdown: watch::Sender<bool>,
}

fn build_for(asterisk: &str) -> Built {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n\
         [[agents]]\nextension = \"100\"\n\
         [asterisk]\ncdr_csv = {cdr:?}\n{asterisk}\n",
        cdr = dir.path().join("Master.csv"),
    );
    let config = Config::parse(&text).expect("config");
    let store =
        Arc::new(Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("store"));
    store
        .add_counters(&[(counters::PARSE_ERRORS, 2), ("duplicate_calls", 1)])
        .expect("counters");
    let metrics = Metrics::new(Some(store.clone()));
    let (config_tx, config_updates) = watch::channel(Arc::new(config.clone()));
    drop(config_tx);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut parts = PbxParts::default();
    let (popups, _) = tokio::sync::mpsc::channel(1);
    build(
        &PbxContext {
            config: &config,
            config_path: None,
            store,
            wake_delivery: Arc::new(Notify::new()),
            popups: Some(popups),
            config_updates,
            shutdown,
            metrics: &metrics,
        },
        &mut parts,
    )
    .expect("parts");
    Built {
        parts,
        metrics,
        _dir: dir,
        _shutdown: shutdown_tx,
    }
}

fn ami_section(ami: SocketAddr) -> String {
    format!(
        "[asterisk.ami]\nhost = \"{}\"\nport = {}\nusername = \"pbxlink\"\nsecret = \"s\"\n",
        ami.ip(),
        ami.port()
    )
}

fn status(parts: &PbxParts) -> Vec<String> {
    parts.status.iter().map(|part| part()).collect()
}

#[tokio::test]
async fn both_sources_give_the_cdr_reader_the_tracker_and_the_control() {
    let ami = AmiSimulator::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator");
    let built = build_for(&format!(
        "call_log_source = \"both\"\n{}",
        ami_section(ami.addr())
    ));
    let parts = built.parts;
    let readers: Vec<&str> = parts
        .file_sources
        .iter()
        .map(|s| s.thread_name.as_str())
        .collect();
    assert_eq!(readers, ["asterisk-cdr"]);
    let tasks: Vec<&str> = parts.tasks.iter().map(|t| t.name).collect();
    assert_eq!(tasks, ["call reconciler", "AMI call tracker"]);
    assert!(parts.sends_popups);
    assert_eq!(
        parts.reloads.len(),
        1,
        "agents reload into the CDR assembler"
    );
    let control = parts.control.clone().expect("a control over AMI");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !control.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never logged in to the simulator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = status(&parts);
    assert_eq!(line.len(), 2, "{line:?}");
    assert!(
        line[0].starts_with("CDR ") && line[0].ends_with("Master.csv: not there yet"),
        "{line:?}"
    );
    assert_eq!(line[1], "AMI connected");
    let text = built.metrics.render().await;
    for expected in [
        "pbxlink_ami_connected 1",
        "pbxlink_ami_logins_total 1",
        "pbxlink_ami_calls_logged_total 0",
        "pbxlink_popups_overflow_total 0",
        "pbxlink_events_total{name=\"cdr_parse_errors\",source=\"asterisk-cdr\"} 2",
        "pbxlink_events_total{name=\"duplicate_calls\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "{expected:?} missing from\n{text}"
        );
    }
    // Shutdown logs off: the connection goes down and stays down.
    for stop in parts.stops {
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("AMI shut down in time");
    }
    assert!(!control.is_connected());
    assert_eq!(parts.status[1](), "AMI DISCONNECTED");
}

#[tokio::test]
async fn ami_only_reads_no_file_and_cdr_only_has_no_control() {
    let ami = AmiSimulator::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator");
    let built = build_for(&format!(
        "call_log_source = \"ami\"\n{}",
        ami_section(ami.addr())
    ));
    assert!(built.parts.file_sources.is_empty());
    assert!(built.parts.reloads.is_empty());
    assert_eq!(built.parts.tasks.len(), 1);
    assert!(built.parts.control.is_some());
    let text = built.metrics.render().await;
    assert!(
        text.lines()
            .any(|l| l == "pbxlink_events_total{name=\"cdr_parse_errors\"} 2"),
        "no CDR reader: nobody claims the counter\n{text}"
    );
    for stop in built.parts.stops {
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("AMI shut down in time");
    }

    let built = build_for("");
    let parts = &built.parts;
    assert_eq!(parts.file_sources.len(), 1);
    assert!(parts.tasks.is_empty());
    assert!(parts.control.is_none(), "no AMI: nothing to act through");
    assert!(!parts.sends_popups);
    assert!(parts.stops.is_empty());
    assert_eq!(status(parts).len(), 1);
}

#[test]
fn ami_figures_keep_their_names() {
    let mut ami = AmiStats {
        connection: ConnectionStats {
            connected: true,
            reconnects: 2,
            ..ConnectionStats::default()
        },
        ..AmiStats::default()
    };
    ami.events_by_type.insert("DialBegin".into(), 9);
    let mut scrape = Scrape::default();
    write_ami_stats(&mut scrape, &ami);
    let live = LiveStats::default();
    live.calls_enqueued.store(4, Relaxed);
    LiveMetrics(Arc::new(live)).write(&mut scrape);
    let text = scrape.encode();
    for line in [
        "pbxlink_ami_connected 1",
        "pbxlink_ami_reconnects_total 2",
        "pbxlink_ami_half_open_drops_total 0",
        "pbxlink_ami_received_events_total{event=\"DialBegin\"} 9",
        "pbxlink_ami_calls_logged_total 4",
        "pbxlink_ami_calls_evicted_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from\n{text}"
        );
    }
}

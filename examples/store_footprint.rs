//! Store footprint: bytes of the SQLite file per call, pending and delivered.
//!
//! `cargo run --release --example store_footprint [CALLS]` (default 200,000). A CDR file of
//! CALLS one-row inbound calls (the shape of `inbound_call` in tests/common/mod.rs) goes
//! through the real pipeline (tailer batches → `FileSource::ingest` → `flush_settled`) into a
//! fresh store; the file (database plus WAL, checkpointed) is measured with every call
//! pending, again with every call delivered (the stand-in's answer stored as the response),
//! then after pruning drops the delivered payloads, and after it forgets the rows (the file
//! must give the pages back). Figures only; nothing is asserted.
//! `PBXLINK_FOOTPRINT_DIR=dir` keeps the CDR file and the store there.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use pbxlink::outbox::store::{FileOffset, now_ms};
use pbxlink::outbox::{KIND_CALL_LOG, Store};
use pbxlink::tail::{FileTailer, TailOptions};
use tokio::sync::Notify;

/// One inbound call answered by agent 100: one cdr_csv row (18 columns).
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

fn config_text(dir: &Path) -> String {
    format!(
        r#"
[store]
path = {store:?}
synchronous = "normal"
[leadsquared]
call_log_url = "http://127.0.0.1:9/1/api/Telephony/LogCallComplete/x"
access_key = "ak"
secret_key = "sk"
default_country_code = "91"
[[virtual_numbers]]
number = "+918044556677"
tag = "sales"
[[agents]]
extension = "100"
phone = "+919876500100"
[asterisk]
cdr_csv = {cdr:?}
start_at = "beginning"
settle_ms = 0
"#,
        store = dir.join("pbxlink.db"),
        cdr = dir.join("Master.csv"),
    )
}

/// Bytes of the database file and its WAL after a checkpoint that empties the WAL.
fn store_bytes(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).expect("open the store to measure it");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    ));
    size(path) + size(&wal)
}

fn report(what: &str, bytes: u64, calls: u32) {
    println!(
        "{what:<44} {:>8.1} MiB  {:>6.0} bytes/call",
        bytes as f64 / 1_048_576.0,
        bytes as f64 / f64::from(calls)
    );
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    // PBXLINK_FOOTPRINT_DIR keeps the files there for a look with sqlite3.
    let kept = std::env::var_os("PBXLINK_FOOTPRINT_DIR").map(std::path::PathBuf::from);
    let temp = tempfile::tempdir().expect("tempdir");
    let dir_path = kept.unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir_path).expect("the footprint directory");
    let cdr = dir_path.join("Master.csv");
    {
        let start = Utc::now() - chrono::Duration::seconds(120);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&cdr).expect("CDR file"));
        for n in 1..=calls {
            f.write_all(inbound_call(n, start).as_bytes())
                .expect("write CDR");
        }
        f.flush().expect("flush CDR");
    }
    let cdr_bytes = std::fs::metadata(&cdr).map(|m| m.len()).unwrap_or(0);
    println!(
        "{calls} calls, CDR file {:.1} MiB ({} bytes/call)",
        cdr_bytes as f64 / 1_048_576.0,
        cdr_bytes / u64::from(calls.max(1))
    );
    let config = pbxlink::config::Config::parse(&config_text(&dir_path)).expect("config");
    let store =
        Arc::new(Store::open(&config.store.path, config.store.synchronous).expect("open store"));
    let mut source = pbxlink::pbx::asterisk::cdr_source(
        &config,
        store.clone(),
        Arc::new(Notify::new()),
        Some("footprint".into()),
    )
    .expect("CDR source");

    let started = Instant::now();
    let mut tailer = FileTailer::new(cdr.clone(), None, TailOptions::default());
    while let Some(batch) = tailer.poll().expect("read the CDR file") {
        let c = &batch.checkpoint;
        let offset = FileOffset {
            dev: c.dev,
            ino: c.ino,
            offset: c.offset,
            window_crc: c.window_crc,
            window_len: c.window_len,
        };
        source
            .ingest(&batch.lines, Some(&offset), &[])
            .expect("ingest");
        source.flush_settled(now_ms()).expect("enqueue");
    }
    let status = store.status().expect("status");
    assert_eq!(status.pending, u64::from(calls), "every call pending");
    println!("ingested in {:.1} s", started.elapsed().as_secs_f64());
    report("all pending", store_bytes(&config.store.path), calls);

    // Deliver every row as the worker does: next due, then delivered with the CRM's answer.
    let started = Instant::now();
    let response =
        r#"{"Status":"Success","Message":{"Id":"1876a2b3c4d5e6f7","Message":"Call log saved"}}"#;
    while let Some(row) = store
        .next_due(KIND_CALL_LOG, now_ms() + 1)
        .expect("next due")
    {
        store
            .mark_delivered(row.id, "call_log", 200, response)
            .expect("mark delivered");
    }
    println!("delivered in {:.1} s", started.elapsed().as_secs_f64());
    report(
        "all delivered (payload kept for retention)",
        store_bytes(&config.store.path),
        calls,
    );
    let (compacted, _) = store.prune(now_ms() + 1, 0).expect("prune");
    report(
        &format!("after prune ({compacted} payloads dropped)"),
        store_bytes(&config.store.path),
        calls,
    );
    let (_, deleted) = store.prune(now_ms() + 1, now_ms() + 1).expect("prune");
    report(
        &format!("after prune ({deleted} rows forgotten)"),
        store_bytes(&config.store.path),
        calls,
    );
}

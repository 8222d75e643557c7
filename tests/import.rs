//! `pbxlink import` as an admin runs it (issue 12): the real binary on files with known
//! contents, stderr not a terminal (a pipe), so progress comes as plain lines; the summary
//! on stdout must give exactly the file's figures: calls new, already delivered or queued,
//! skipped (internal), corrupt lines, and the delivery time at the configured rate limit.
//! Asterisk's Master.csv, and FreeSWITCH's json_cdr directory and cdr_csv file (the rig's
//! captured calls).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{World, inbound_call};

/// What `pbxlink import` printed: (exit ok, stdout, stderr).
fn import(config: &Path, files: &[&Path]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["import", "--progress-every", "1", "--config"])
        .arg(config)
        .args(files)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pbxlink import");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An internal call: agent 100 dials extension 101 (not posted).
fn internal_call(n: u32) -> String {
    let start = common::call_start();
    let t = |s: i64| {
        (start + chrono::Duration::seconds(s))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    format!(
        r#""","100","101","from-internal","""Agent 100"" <100>","PJSIP/100-{n:08x}","PJSIP/101-{n:08x}","Dial","PJSIP/101,30","{s}","{a}","{e}",30,25,"ANSWERED","DOCUMENTATION","1700000000.{n}",""
"#,
        s = t(0),
        a = t(5),
        e = t(30),
    )
}

/// The world's config at a rate limit of 25 call logs per 5 s (5 per second), with agent
/// 101 beside 100.
fn slow_crm(w: &World) {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let text = text.replace(
        "phone = \"+919876500100\"\n",
        "phone = \"+919876500100\"\n[[agents]]\nextension = \"101\"\nphone = \"+919876500101\"\n",
    );
    assert!(text.contains("extension = \"101\""), "{text}");
    let text = text.replace(
        "rate_limit_requests = 500\nrate_limit_period_ms = 1000\n",
        "rate_limit_requests = 25\nrate_limit_period_ms = 5000\n",
    );
    assert!(text.contains("rate_limit_requests = 25\n"), "{text}");
    std::fs::write(&w.config, text).expect("config");
}

/// The progress lines of stderr for `file`, each checked to be one.
fn progress_lines<'a>(stderr: &'a str, file: &Path) -> Vec<&'a str> {
    let prefix = format!("import {}: ", file.display());
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
    for line in &lines {
        assert!(
            line.contains(" rows (") && line.contains(" rows/s), ") && line.contains(" calls; "),
            "not a progress line: {line}"
        );
    }
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn asterisk_import_reports_progress_and_sums_up_new_known_internal_and_corrupt() {
    let w = World::new(vec![]).await;
    slow_crm(&w);
    // Calls 1..=40 were imported before (queued, not delivered: no daemon runs).
    let first = common::sibling(&w.cdr, "Master.csv.2");
    std::fs::write(&first, (1..=40).map(inbound_call).collect::<String>()).expect("write");
    let (ok, out, err) = import(&w.config, &[&first]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("40 new call(s) queued"), "{out}");

    // The history: 2,000 calls (the first 40 known), 5 internal calls, 4 corrupt lines.
    let history = common::sibling(&w.cdr, "Master.csv.1");
    let mut text = String::new();
    for n in 1..=2000 {
        text.push_str(&inbound_call(n));
        match n {
            500 => text.push_str("this is not a CDR row\n"),
            900 => text.push_str("\"\",\"+919611700001\",\"918044556677\"\n"),
            1200 => text.push_str(
                &inbound_call(99_999)
                    .replace(&common::call_start().format("%Y").to_string(), "1970"),
            ),
            1500 => text.push_str("\u{1}\u{2}garbage\u{7f},,,,\n"),
            _ => {}
        }
        if n % 400 == 0 {
            text.push_str(&internal_call(50_000 + n));
        }
    }
    std::fs::write(&history, &text).expect("write");
    let (ok, out, err) = import(&w.config, &[&history]);
    assert!(ok, "{out}{err}");

    // stderr is a pipe: plain lines, the last one at 100% with the file's whole figures.
    let lines = progress_lines(&err, &history);
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no progress line:\n{err}"));
    let size = text.len();
    assert!(
        last.starts_with(&format!("import {}: 100% (", history.display())),
        "{last}"
    );
    assert!(last.contains(" 2005 rows ("), "{last}");
    assert!(last.contains(", 4 corrupt, 2005 calls; done in "), "{last}");
    assert!(last.contains(" kB of "), "{last}");
    assert!(size > 500_000);
    // Every line before it is one of the reading or the queueing stage.
    for line in &lines[..lines.len() - 1] {
        assert!(
            line.contains("; ETA ") || line.ends_with("; read; queueing the calls"),
            "{line}"
        );
    }
    assert!(
        !err.contains('\r'),
        "no bar when stderr is not a terminal: {err}"
    );

    // The per-file line and the summary.
    assert!(
        out.contains(&format!(
            "{}: 1960 new call(s) queued, 40 already delivered or queued, 5 skipped, 4 corrupt line(s)",
            history.display()
        )),
        "{out}"
    );
    for line in [
        "2005 rows read, 2005 calls\n",
        "  new, queued for the CRM:              1960\n",
        "  already delivered or queued:          40\n",
        "  skipped (internal etc., not posted):  5\n",
        "  corrupt lines (skipped, logged):      4\n",
        // 2,000 pending (40 from the first import) at 5 per second: 400 s.
        "delivery: 2000 call log(s) pending in the outbox; at the CRM rate limit of 25 per 5s (5.0/s) that takes about 6m 40s.",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    // The store agrees.
    assert_eq!(w.status()["pending"], 2000, "{}", w.status());
}

fn fixture(call: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freeswitch")
        .join(call)
}

/// A FreeSWITCH-only config (json_cdr; cdr_csv with the rig's template columns) with the
/// rig's agents.
fn freeswitch_config(dir: &Path) -> PathBuf {
    let columns: Vec<String> = pbxlink::pbx::freeswitch::cdr::templates::RIG_COLUMNS
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    let config = dir.join("pbxlink.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[store]
path = {store:?}
[leadsquared]
call_log_url = "http://127.0.0.1:9/call"
access_key = "ak"
secret_key = "sk"
default_country_code = "49"
rate_limit_requests = 10
rate_limit_period_ms = 1000
[[agents]]
extension = "100"
phone = "+4915100000100"
[[agents]]
extension = "101"
phone = "+4915100000101"
[freeswitch]
call_log_source = "json_cdr"
json_cdr_dir = {json:?}
cdr_csv = {csv:?}
cdr_columns = [{columns}]
"#,
            store = dir.join("pbxlink.db"),
            json = dir.join("json_cdr"),
            csv = dir.join("Master.csv"),
            columns = columns.join(", "),
        ),
    )
    .expect("config");
    config
}

#[test]
fn freeswitch_json_cdr_directory_and_cdr_csv_imports_report_progress_and_sum_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = freeswitch_config(dir.path());
    // Three real calls of the rig (3 legs each) and a file that is no leg.
    let json = dir.path().join("history");
    std::fs::create_dir(&json).expect("mkdir");
    let mut legs = 0;
    for call in ["answered_inbound", "missed_inbound", "busy_agent"] {
        for entry in std::fs::read_dir(fixture(call).join("json_cdr")).expect("fixture") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), json.join(entry.file_name())).expect("copy");
            legs += 1;
        }
    }
    assert_eq!(legs, 9);
    // (Not cut short: a young file cut short is taken for one still being written.)
    std::fs::write(json.join("broken.cdr.json"), b"not json {").expect("write");
    let (ok, out, err) = import(&config, &[&json]);
    assert!(ok, "{out}{err}");
    let lines = progress_lines(&err, &json);
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no progress line:\n{err}"));
    assert!(
        last.starts_with(&format!(
            "import {}: 100% (10 of 10 files), 9 rows (",
            json.display()
        )),
        "{last}"
    );
    assert!(last.contains(", 1 corrupt, 3 calls; done in "), "{last}");
    for line in [
        "9 rows read, 3 calls\n",
        "  new, queued for the CRM:              3\n",
        "  already delivered or queued:          0\n",
        "  corrupt lines (skipped, logged):      1\n",
        "delivery: 3 call log(s) pending in the outbox; at the CRM rate limit of 10 per 1s (10.0/s) that takes about 0s.",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }

    // Again: every call already queued. And the rig's Master.csv of an agent phone dialling
    // out (two legs, one call): captured with the rig's 25 columns, which lack who placed
    // the call (user_name), so the rules cannot tell it is an agent's: not posted.
    let csv = fixture("agent_outbound").join("Master.csv");
    let rows = std::fs::read_to_string(&csv)
        .expect("fixture")
        .lines()
        .count() as u64;
    let (ok, out, err) = import(&config, &[&json, &csv]);
    assert!(ok, "{out}{err}");
    let last = progress_lines(&err, &csv);
    let last = last
        .last()
        .unwrap_or_else(|| panic!("no progress line:\n{err}"));
    assert!(last.contains(&format!(" {rows} rows (")), "{last}");
    assert!(
        out.contains(&format!(
            "{}: 0 new call(s) queued, 3 already delivered or queued, 0 skipped, 1 corrupt line(s)",
            json.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{}: 0 new call(s) queued, 0 already delivered or queued, 1 skipped, 0 corrupt line(s)",
            csv.display()
        )),
        "{out}"
    );
    assert_eq!(rows, 2);
    assert!(out.contains("11 rows read, 4 calls\n"), "{out}");
    assert!(
        out.contains("  skipped (internal etc., not posted):  1\n"),
        "{out}"
    );
    assert!(out.contains("delivery: 3 call log(s) pending"), "{out}");
}

//! The one-line `STATUS=` shown by `systemctl status pbxlink`.

use std::path::Path;

use crate::logtext::Escaped;
use crate::outbox::store::StatusReport;

/// `outbox: 3 pending, 120 delivered, 0 dead; last delivery 4 s ago`.
pub fn outbox_line(report: &StatusReport, now_ms: i64) -> String {
    let mut line = format!(
        "outbox: {} pending, {} delivered, {} dead",
        report.pending, report.delivered, report.dead
    );
    match report.last_delivery_at {
        Some(at) => line.push_str(&format!(
            "; last delivery {} ago",
            ago((now_ms - at).max(0) / 1000)
        )),
        None => line.push_str("; nothing delivered yet"),
    }
    if report.paused_until.is_some_and(|until| until > now_ms) {
        line.push_str("; PAUSED (CRM refused the keys or URL)");
    }
    line
}

/// `CDR /var/log/asterisk/cdr-csv/Master.csv: readable` (or why not): the PBX side of a
/// CDR source is the file it writes. Opened the way the reader opens it (never blocking, a
/// regular file only, a symbolic link only with `follow_symlink`), so a FIFO or a refused
/// link shows here instead of stalling the main loop.
pub fn cdr_line(path: &Path, follow_symlink: bool) -> String {
    let shown = Escaped(&path.to_string_lossy()).to_string();
    match crate::tail::open_regular(path, follow_symlink) {
        Ok(Some(_)) => format!("CDR {shown}: readable"),
        Ok(None) => format!("CDR {shown}: not there yet"),
        Err(e) => format!("CDR {shown}: {}", e.reason()),
    }
}

/// `tasks alive`, or what is wrong with the daemon's tasks (`TASK DOWN: call_log delivery
/// panicked: ...`).
pub fn tasks_line(problems: &[String]) -> String {
    if problems.is_empty() {
        "tasks alive".to_owned()
    } else {
        format!("TASK DOWN: {}", problems.join("; "))
    }
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_like_the_example() {
        let report = StatusReport {
            pending: 3,
            delivered: 120,
            dead: 0,
            last_delivery_at: Some(1_000_000),
            ..StatusReport::default()
        };
        assert_eq!(
            outbox_line(&report, 1_004_500),
            "outbox: 3 pending, 120 delivered, 0 dead; last delivery 4 s ago"
        );
    }

    #[test]
    fn the_cdr_line_says_why_the_file_is_not_read_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Master.csv");
        assert!(cdr_line(&path, false).ends_with(": not there yet"));
        let fifo = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(fifo.success());
        // Would block in open(2) without O_NONBLOCK: no writer ever comes.
        let line = cdr_line(&path, false);
        assert!(
            line.ends_with(": is not a regular file (a FIFO (named pipe)), refused"),
            "{line}"
        );
        std::fs::remove_file(&path).expect("rm");
        let target = dir.path().join("pbxlink.toml");
        std::fs::write(&target, "secret_key = \"x\"\n").expect("write");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let line = cdr_line(&path, false);
        assert!(line.contains("is a symbolic link to"), "{line}");
        assert!(line.contains("cdr_follow_symlink = true"), "{line}");
        assert!(cdr_line(&path, true).ends_with(": readable"));
    }
}

//! The one-line `STATUS=` shown by `systemctl status pbxlink`.

use std::path::Path;

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
/// CDR source is the file it writes.
pub fn cdr_line(path: &Path) -> String {
    match std::fs::File::open(path) {
        Ok(_) => format!("CDR {}: readable", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("CDR {}: not there yet", path.display())
        }
        Err(e) => format!("CDR {}: {e}", path.display()),
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
}

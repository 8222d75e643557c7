//! What the status page shows, gathered in one pass: the store's figures (read on the
//! blocking pool), the PBX's status parts, the components' figures from the metrics
//! registry, the popup sender's last popups, and the daemon's own facts. Every list is
//! bounded; every text that came from outside is bounded here and escaped by the template.

use std::collections::BTreeMap;

use chrono::DateTime;

use crate::crm::leadsquared::popup::RecentPopup;
use crate::outbox::store::{
    CALL_TALLY_MAX_ROWS, CallTally, DeadLetterDetail, EndpointReport, FileSourceReport,
    RecentCalls, StatusReport,
};

/// Dead letters listed at most (the total is shown beside them).
pub const DEAD_LETTERS_SHOWN: usize = 50;
/// File sources listed at most.
pub const FILE_SOURCES_SHOWN: usize = 20;
/// Metric series shown per section at most.
const SERIES_SHOWN: usize = 40;

/// The store's part of the page, read in one blocking call.
#[derive(Debug, Clone, Default)]
pub struct StoreFigures {
    /// Outbox figures (`pbxlink status`).
    pub report: StatusReport,
    /// Each CRM endpoint's state.
    pub endpoints: Vec<EndpointReport>,
    /// Calls of the last hour and day.
    pub calls: RecentCalls,
    /// The newest dead letters.
    pub dead: Vec<DeadLetterDetail>,
    /// The file sources' offsets.
    pub sources: Vec<FileSourceReport>,
}

impl StoreFigures {
    /// Reads everything the page needs from `store` (blocking: run it on the blocking pool).
    pub fn read(
        store: &crate::outbox::Store,
        now_ms: i64,
    ) -> Result<StoreFigures, crate::outbox::StoreError> {
        Ok(StoreFigures {
            report: store.status()?,
            endpoints: store.endpoint_states()?,
            calls: store.recent_calls(now_ms, CALL_TALLY_MAX_ROWS)?,
            dead: store.dead_letter_details(DEAD_LETTERS_SHOWN)?,
            sources: store.file_sources(FILE_SOURCES_SHOWN)?,
        })
    }
}

/// What the daemon knows besides the store.
#[derive(Debug, Clone, Default)]
pub struct DaemonFacts {
    /// pbxlink's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The configuration file (empty: not known).
    pub config_path: String,
    /// Keys changed by a reload that need a restart.
    pub restart_needed: Vec<String>,
    /// The PBX's status parts (`AMI connected`, `CDR ...: readable`).
    pub pbx_parts: Vec<String>,
    /// The metrics exposition, read now.
    pub metrics_text: String,
    /// The last popups, newest first (None: the daemon sends no popups).
    pub popups: Option<Vec<RecentPopup>>,
    /// `[leadsquared] rate_limit_requests` per `rate_limit_period_ms`.
    pub rate_limit: (u32, u64),
    /// The store couldn't be read: why.
    pub store_error: Option<String>,
}

/// One row of a two-column table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// What it is.
    pub label: String,
    /// Its value.
    pub value: String,
    /// A stable id for tests and links (`outbox-pending`).
    pub id: String,
    /// Whether it needs attention (shown in red).
    pub alarm: bool,
}

impl Figure {
    fn new(id: &str, label: impl Into<String>, value: impl Into<String>) -> Figure {
        Figure {
            id: id.into(),
            label: label.into(),
            value: value.into(),
            alarm: false,
        }
    }

    fn alarm(mut self, alarm: bool) -> Figure {
        self.alarm = alarm;
        self
    }
}

/// A row of the calls table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    /// `Inbound`, `Outbound`.
    pub direction: String,
    /// `Answered`, `NoAnswer`, `Busy` ... (the call model's outcome).
    pub status: String,
    /// Calls in the last hour.
    pub hour: u64,
    /// Calls in the last day.
    pub day: u64,
}

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRow {
    /// Row id.
    pub id: i64,
    /// Kind.
    pub kind: String,
    /// Call id.
    pub call_id: String,
    /// Attempts.
    pub attempts: u32,
    /// HTTP status, or "-".
    pub status: String,
    /// Why it died.
    pub reason: String,
    /// What the CRM said (its message, when its answer was JSON).
    pub answer: String,
    /// When it died.
    pub died: String,
}

/// A popup as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopupRow {
    /// When.
    pub at: String,
    /// Call id.
    pub call_id: String,
    /// Agent extension.
    pub agent: String,
    /// Latency, or "-".
    pub latency: String,
    /// Sent or dropped.
    pub outcome: String,
}

/// A file source as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    /// The file (or source name).
    pub file: String,
    /// Bytes read.
    pub offset: u64,
    /// When the offset last moved.
    pub last_read: String,
}

/// Everything the page shows, as text.
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    /// Version, uptime, config path, time now.
    pub daemon: Vec<Figure>,
    /// Keys that need a restart after a reload.
    pub restart_needed: Vec<String>,
    /// The PBX connections and files.
    pub pbx: Vec<Figure>,
    /// The CRM's state.
    pub crm: Vec<Figure>,
    /// Calls by direction and status.
    pub calls: Vec<CallRow>,
    /// Calls in the last hour / day.
    pub calls_total: (u64, u64),
    /// The tally is a lower bound.
    pub calls_truncated: bool,
    /// The outbox figures.
    pub outbox: Vec<Figure>,
    /// Dead letters listed.
    pub dead: Vec<DeadRow>,
    /// Dead letters in all.
    pub dead_total: u64,
    /// Popups (None: no popups configured).
    pub popups: Option<Vec<PopupRow>>,
    /// Popup counters.
    pub popup_figures: Vec<Figure>,
    /// File sources.
    pub sources: Vec<SourceRow>,
    /// The store couldn't be read.
    pub store_error: Option<String>,
}

fn utc(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `"2026-12-02 04:01:02 UTC (12 s ago)"`.
fn when(ms: i64, now_ms: i64) -> String {
    format!(
        "{} ({} ago)",
        utc(ms),
        duration((now_ms - ms).max(0) / 1000)
    )
}

/// `"3 d 4 h"`, `"5 min 2 s"`, `"12 s"`.
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s} s")
    }
}

/// One series of the exposition: `name{labels}` (the `pbxlink_` prefix and `_total` suffix
/// dropped) and its value.
fn series(text: &str, prefixes: &[&str]) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(name, value)| {
            let short = name.strip_prefix("pbxlink_")?;
            prefixes
                .iter()
                .any(|p| short.starts_with(p))
                .then(|| (short.replacen("_total", "", 1), value.to_owned()))
        })
        .take(SERIES_SHOWN)
        .collect()
}

/// What the CRM said in a dead letter's reason: the `ExceptionMessage` or `Message` of the
/// JSON answer quoted in it, else the answer kept, else "-".
fn crm_message(reason: &str, answer: &str) -> String {
    let from_json = |text: &str| -> Option<String> {
        let start = text.find('{')?;
        let value: serde_json::Value = serde_json::from_str(&text[start..]).ok()?;
        ["ExceptionMessage", "Message"]
            .iter()
            .find_map(|k| value[k].as_str().map(str::to_owned))
    };
    from_json(answer)
        .or_else(|| from_json(reason))
        .or_else(|| (!answer.is_empty()).then(|| answer.to_owned()))
        .unwrap_or_else(|| "-".into())
}

fn rows(calls: &RecentCalls) -> Vec<CallRow> {
    let mut by_key: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let add = |tally: &CallTally, by_key: &mut BTreeMap<_, (u64, u64)>, hour: bool| {
        for (d, s, n) in &tally.counts {
            let entry = by_key.entry((d.clone(), s.clone())).or_default();
            if hour {
                entry.0 += n;
            } else {
                entry.1 += n;
            }
        }
    };
    add(&calls.hour, &mut by_key, true);
    add(&calls.day, &mut by_key, false);
    by_key
        .into_iter()
        .map(|((direction, status), (hour, day))| CallRow {
            direction,
            status,
            hour,
            day,
        })
        .collect()
}

impl StatusView {
    /// The page's content from the store's figures and the daemon's facts, at `now_ms`.
    pub fn build(store: &StoreFigures, facts: &DaemonFacts, now_ms: i64) -> StatusView {
        let r = &store.report;
        let mut daemon = vec![
            Figure::new("version", "Version", format!("pbxlink {}", facts.version)),
            Figure::new("uptime", "Up for", duration(facts.uptime_secs as i64)),
            Figure::new(
                "config-path",
                "Configuration",
                if facts.config_path.is_empty() {
                    "-".to_owned()
                } else {
                    facts.config_path.clone()
                },
            ),
            Figure::new("now", "Page time", utc(now_ms)),
        ];
        if !facts.restart_needed.is_empty() {
            daemon.push(
                Figure::new(
                    "restart-needed",
                    "Restart needed for",
                    facts.restart_needed.join(", "),
                )
                .alarm(true),
            );
        }

        let mut pbx: Vec<Figure> = facts
            .pbx_parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let down = part.contains("DISCONNECTED")
                    || part.contains("missing")
                    || part.contains("unreadable");
                Figure::new(&format!("pbx-{i}"), "Status", part.clone()).alarm(down)
            })
            .collect();
        for (i, (name, value)) in series(&facts.metrics_text, &["ami_", "esl_"])
            .into_iter()
            .enumerate()
        {
            let alarm = name.ends_with("_connected") && value == "0";
            pbx.push(Figure::new(&format!("pbx-metric-{i}"), name, value).alarm(alarm));
        }

        let paused = r.paused_until.filter(|t| *t > now_ms);
        let state = match (paused, r.last_delivery_at, &r.last_error) {
            (Some(_), _, _) => "PAUSED",
            (None, Some(ok), Some((err, _))) if *err > ok => "failing (retrying)",
            (None, Some(_), _) => "up",
            (None, None, Some(_)) => "failing (retrying)",
            (None, None, None) => "no delivery yet",
        };
        let mut crm = vec![
            Figure::new("crm-state", "State", state)
                .alarm(state != "up" && state != "no delivery yet"),
            Figure::new(
                "crm-last-delivery",
                "Last delivery",
                r.last_delivery_at
                    .map(|t| when(t, now_ms))
                    .unwrap_or_else(|| "never".into()),
            ),
            Figure::new(
                "crm-last-error",
                "Last error",
                r.last_error
                    .as_ref()
                    .map(|(t, e)| {
                        format!(
                            "{}: {}",
                            when(*t, now_ms),
                            crate::logtext::excerpt(e.as_bytes(), 300)
                        )
                    })
                    .unwrap_or_else(|| "none".into()),
            ),
        ];
        if let Some(until) = paused {
            let why = store
                .endpoints
                .iter()
                .filter(|e| e.paused_until.is_some_and(|p| p > now_ms))
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.endpoint,
                        e.last_error.as_deref().unwrap_or("(no reason kept)")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            crm.push(
                Figure::new(
                    "crm-paused",
                    "Paused",
                    format!(
                        "until {} (the CRM refused the credentials or URL): {why}",
                        utc(until)
                    ),
                )
                .alarm(true),
            );
        }
        let (requests, period_ms) = facts.rate_limit;
        let answers = series(&facts.metrics_text, &["crm_responses"]);
        let throttled: u64 = answers
            .iter()
            .filter(|(name, _)| name.contains("status=\"429\""))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum();
        crm.push(
            Figure::new(
                "crm-rate-limit",
                "Rate limit",
                format!(
                    "{requests} requests per {} ms; answered 429 (rate limited) {throttled} time(s) since start",
                    period_ms
                ),
            )
            .alarm(throttled > 0),
        );
        for (i, (name, value)) in answers.into_iter().enumerate() {
            crm.push(Figure::new(&format!("crm-answers-{i}"), name, value));
        }

        let oldest = r
            .oldest_pending_at
            .map(|t| duration((now_ms - t).max(0) / 1000))
            .unwrap_or_else(|| "-".into());
        let outbox = vec![
            Figure::new("outbox-pending", "Pending", r.pending.to_string()),
            Figure::new("outbox-oldest", "Oldest pending", oldest)
                .alarm(r.oldest_pending_at.is_some_and(|t| now_ms - t > 600_000)),
            Figure::new("outbox-in-flight", "In flight", r.in_flight.to_string()),
            Figure::new("outbox-dead", "Dead", r.dead.to_string()).alarm(r.dead > 0),
            Figure::new(
                "outbox-delivered",
                "Delivered (kept)",
                r.delivered.to_string(),
            ),
            Figure::new("outbox-staged", "CDR rows waiting", r.staged.to_string()),
        ];

        let dead = store
            .dead
            .iter()
            .map(|d| DeadRow {
                id: d.id,
                kind: d.kind.clone(),
                call_id: d.call_id.clone(),
                attempts: d.attempts,
                status: d
                    .last_status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                reason: d.reason.clone(),
                answer: crm_message(&d.reason, &d.answer),
                died: when(d.died_at, now_ms),
            })
            .collect();

        let popups = facts.popups.as_ref().map(|list| {
            list.iter()
                .map(|p| PopupRow {
                    at: when(p.at_ms, now_ms),
                    call_id: p.call_id.clone(),
                    agent: p.agent.clone(),
                    latency: p
                        .latency_ms
                        .map(|l| format!("{l} ms"))
                        .unwrap_or_else(|| "-".into()),
                    outcome: p.outcome.to_owned(),
                })
                .collect()
        });
        let popup_figures = series(&facts.metrics_text, &["popup", "lead_lookup"])
            .into_iter()
            .enumerate()
            .map(|(i, (name, value))| Figure::new(&format!("popup-metric-{i}"), name, value))
            .collect();

        let sources = store
            .sources
            .iter()
            .map(|s| SourceRow {
                file: s.source.clone(),
                offset: s.offset,
                last_read: when(s.updated_at, now_ms),
            })
            .collect();

        StatusView {
            daemon,
            restart_needed: facts.restart_needed.clone(),
            pbx,
            crm,
            calls: rows(&store.calls),
            calls_total: (store.calls.hour.total, store.calls.day.total),
            calls_truncated: store.calls.truncated,
            outbox,
            dead,
            dead_total: r.dead,
            popups,
            popup_figures,
            sources,
            store_error: facts.store_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(62), "1 min 2 s");
        assert_eq!(duration(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(duration(2 * 86_400 + 3600), "2 d 1 h");
        assert_eq!(duration(-5), "0 s");
    }

    #[test]
    fn the_crm_message_is_taken_from_its_json_answer() {
        let reason =
            r#"HTTP 400: {"Status":"Error","ExceptionMessage":"Lead could not be created"}"#;
        assert_eq!(crm_message(reason, ""), "Lead could not be created");
        assert_eq!(crm_message("timeout", ""), "-");
        assert_eq!(crm_message("x", "plain answer"), "plain answer");
    }

    #[test]
    fn series_are_picked_by_prefix_and_shortened() {
        let text = "# HELP x\npbxlink_ami_connected 1\npbxlink_ami_received_events_total{event=\"x\"} 3\npbxlink_other 2\n";
        assert_eq!(
            series(text, &["ami_"]),
            vec![
                ("ami_connected".to_owned(), "1".to_owned()),
                (
                    "ami_received_events{event=\"x\"}".to_owned(),
                    "3".to_owned()
                )
            ]
        );
    }
}

//! Builds an [`FsLeg`] from a leg's channel variables, the names being those of FreeSWITCH
//! (`uuid`, `start_uepoch`, `hangup_cause` ...). json_cdr's `variables` object and a
//! cdr_csv template's `${...}` columns are both such a set of variables.
//!
//! Times: `*_uepoch` (microseconds), then `*_epoch` (seconds), then `*_stamp`
//! (`YYYY-MM-DD HH:MM:SS` in the configured `cdr_time_zone`). A `0` epoch or an empty
//! stamp is "never" (an unanswered leg's answer time).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::leg::{FsLeg, LegDirection, push_unique};
use crate::call::TimeWindow;
use crate::logtext::{EXCERPT_BYTES, excerpt};

/// Why a leg's variables do not make a leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegError {
    /// No `uuid`.
    #[error("no uuid")]
    NoUuid,
    /// A time the leg must have is missing.
    #[error("no {0} time (none of {0}_uepoch, {0}_epoch, {0}_stamp)")]
    NoTime(&'static str),
    /// A value that must be a number is not.
    #[error("{field} is not a number: \"{value}\"")]
    NotANumber {
        /// The variable.
        field: &'static str,
        /// Its value, escaped and bounded.
        value: String,
    },
    /// A stamp that is not `YYYY-MM-DD HH:MM:SS`, or does not exist in the time zone.
    #[error("{field} is not a time in {zone}: \"{value}\"")]
    BadStamp {
        /// The variable.
        field: &'static str,
        /// The configured zone.
        zone: Tz,
        /// Its value, escaped and bounded.
        value: String,
    },
    /// A time before 2000 or more than a day past the clock.
    #[error("{field} {time} is outside {earliest} .. {latest}")]
    OutOfWindow {
        /// The variable.
        field: &'static str,
        /// The time.
        time: DateTime<Utc>,
        /// The first time accepted.
        earliest: DateTime<Utc>,
        /// The last time accepted.
        latest: DateTime<Utc>,
    },
    /// The leg ends before it starts.
    #[error("end {end} is before start {start}")]
    EndsBeforeStart {
        /// Start.
        start: DateTime<Utc>,
        /// End.
        end: DateTime<Utc>,
    },
}

/// A value as an error shows it.
fn shown(value: &str) -> String {
    excerpt(value.as_bytes(), EXCERPT_BYTES)
}

/// Start, answer and end times from elsewhere in the record (json_cdr's `callflow.times`),
/// used when no variable has them.
pub type FallbackTimes = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// Reads a leg's variables: `get(name)` is the value of the variable `name`, already
/// URL-decoded, `None` when absent. Empty values count as absent.
pub struct VarReader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    time_zone: Tz,
    window: TimeWindow,
}

impl<'a> VarReader<'a> {
    /// A reader over `get`, reading stamps in `time_zone`, accepting times in `window`.
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>, time_zone: Tz, window: TimeWindow) -> Self {
        Self {
            get,
            time_zone,
            window,
        }
    }

    /// The value of `name`, trimmed, `None` when absent or empty.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.get)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn seconds(&self, field: &'static str) -> Result<u64, LegError> {
        match self.text(field) {
            None => Ok(0),
            Some(v) => v.parse::<u64>().map_err(|_| LegError::NotANumber {
                field,
                value: shown(&v),
            }),
        }
    }

    /// The time `<base>_uepoch`, `<base>_epoch` or `<base>_stamp`, `None` when none is set
    /// (or it is 0).
    pub fn time(&self, base: &'static str) -> Result<Option<DateTime<Utc>>, LegError> {
        let (uepoch, epoch, stamp) = match base {
            "start" => ("start_uepoch", "start_epoch", "start_stamp"),
            "answer" => ("answer_uepoch", "answer_epoch", "answer_stamp"),
            _ => ("end_uepoch", "end_epoch", "end_stamp"),
        };
        if let Some(v) = self.text(uepoch) {
            let micros = v.parse::<i64>().map_err(|_| LegError::NotANumber {
                field: uepoch,
                value: shown(&v),
            })?;
            if micros > 0 {
                return self.checked(uepoch, DateTime::<Utc>::from_timestamp_micros(micros));
            }
            if self.text(epoch).is_none() && self.text(stamp).is_none() {
                return Ok(None);
            }
        }
        if let Some(v) = self.text(epoch) {
            let secs = v.parse::<i64>().map_err(|_| LegError::NotANumber {
                field: epoch,
                value: shown(&v),
            })?;
            if secs > 0 {
                return self.checked(epoch, DateTime::<Utc>::from_timestamp(secs, 0));
            }
            return Ok(None);
        }
        match self.text(stamp) {
            None => Ok(None),
            Some(v) => {
                let bad = || LegError::BadStamp {
                    field: stamp,
                    zone: self.time_zone,
                    value: shown(&v),
                };
                let naive =
                    NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S").map_err(|_| bad())?;
                // In a DST fall-back hour a local time happens twice; FreeSWITCH does not
                // say which: the earlier is taken (epochs avoid the question).
                let local = self
                    .time_zone
                    .from_local_datetime(&naive)
                    .earliest()
                    .ok_or_else(bad)?;
                self.checked(stamp, Some(local.with_timezone(&Utc)))
            }
        }
    }

    fn checked(
        &self,
        field: &'static str,
        time: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, LegError> {
        let time = time.ok_or(LegError::NotANumber {
            field,
            value: "out of range".into(),
        })?;
        if !self.window.contains(time) {
            return Err(LegError::OutOfWindow {
                field,
                time,
                earliest: self.window.earliest(),
                latest: self.window.latest(),
            });
        }
        Ok(Some(time))
    }

    /// The leg these variables describe. `start`/`end` fall back to `fallback_times` (json_cdr
    /// `callflow.times`) when no variable has them.
    pub fn leg(&self, fallback_times: FallbackTimes) -> Result<FsLeg, LegError> {
        let uuid = self.text("uuid").ok_or(LegError::NoUuid)?;
        let start = self
            .time("start")?
            .or(fallback_times.0)
            .ok_or(LegError::NoTime("start"))?;
        let answer = match self.time("answer")? {
            Some(t) => Some(t),
            None if self.text("answer_uepoch").is_none()
                && self.text("answer_epoch").is_none()
                && self.text("answer_stamp").is_none() =>
            {
                fallback_times.1
            }
            None => None,
        };
        let end = self
            .time("end")?
            .or(fallback_times.2)
            .ok_or(LegError::NoTime("end"))?;
        if end < start {
            return Err(LegError::EndsBeforeStart { start, end });
        }
        let mut leg = FsLeg::new(uuid, start, end);
        leg.answer = answer;
        leg.call_uuid = self.text("call_uuid");
        for name in ["bleg_uuid", "bridge_uuid", "signal_bond", "last_bridge_to"] {
            if let Some(v) = self.text(name) {
                if v != leg.uuid {
                    push_unique(&mut leg.bridged_to, &v);
                }
            }
        }
        leg.originator = self
            .text("originating_leg_uuid")
            .or_else(|| self.text("originator"))
            .filter(|o| *o != leg.uuid);
        leg.cc_member_session_uuid = self.text("cc_member_session_uuid");
        leg.cc_side = self.text("cc_side");
        leg.cc_agent = self.text("cc_agent");
        leg.cc_queue = self.text("cc_queue");
        leg.sip_call_id = self.text("sip_call_id");
        leg.direction = self
            .text("direction")
            .as_deref()
            .and_then(LegDirection::parse);
        if let Some(context) = self.text("context") {
            leg.contexts.push(context);
        }
        if let Some(destination) = self.text("destination_number") {
            leg.destinations.push(destination);
        }
        leg.caller_id_number = self.text("caller_id_number");
        leg.caller_id_name = self.text("caller_id_name");
        leg.ani = self.text("ani");
        leg.user_name = self.text("user_name");
        leg.sip_from_user = self.text("sip_from_user");
        leg.dialed_user = self.text("dialed_user");
        leg.presence_id = self.text("presence_id");
        leg.sip_req_user = self.text("sip_req_user");
        leg.sip_to_user = self.text("sip_to_user");
        leg.origination_caller_id_number = self.text("origination_caller_id_number");
        leg.billsec = self.seconds("billsec")?;
        leg.duration = self.seconds("duration")?;
        leg.hangup_cause = self.text("hangup_cause");
        if let Some(app) = self.text("last_app") {
            leg.applications.push(app);
        }
        leg.recording = recording(
            self.text("record_path"),
            self.text("record_name"),
            ["recording_file", "sofia_record_file"]
                .iter()
                .find_map(|n| self.text(n)),
        );
        leg.lead_id = self.text("pbxlink_lead_id");
        leg.lead_number = self.text("pbxlink_lead_number");
        leg.did = self.text("pbxlink_did");
        Ok(leg)
    }
}

/// The recording file from `record_path` and `record_name`: a path that already ends with
/// the name (or no name) is the file; a directory path and a bare name are joined
/// (FusionPBX sets the two apart); else `other` (a template's own column).
pub fn recording(
    record_path: Option<String>,
    record_name: Option<String>,
    other: Option<String>,
) -> Option<String> {
    match (record_path, record_name) {
        (Some(path), Some(name)) => {
            if path.ends_with(&name) || name.contains('/') {
                Some(if name.contains('/') { name } else { path })
            } else {
                Some(format!("{}/{}", path.trim_end_matches('/'), name))
            }
        }
        (Some(path), None) => Some(path),
        (None, Some(name)) => Some(name),
        (None, None) => other,
    }
}

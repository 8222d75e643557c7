//! Renders a [`CallRecord`] as LeadSquared's Call Log JSON (shared/leadsquared-api.md).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::call::{CallRecord, Direction, Number, Outcome};
use crate::config::{LeadSquaredConfig, StatusNames};
use crate::phone::NumberFormat;

/// What the payload needs from the configuration, resolved once.
#[derive(Debug, Clone)]
pub struct PayloadFormat {
    /// Zone of StartTime/EndTime.
    pub time_zone: Tz,
    /// How numbers are written.
    pub number_format: NumberFormat,
    /// Status words.
    pub status: StatusNames,
    /// CallDuration as a string instead of a number.
    pub duration_as_string: bool,
}

impl PayloadFormat {
    /// From `[leadsquared]`; the time zone was validated with the config.
    pub fn from_config(config: &LeadSquaredConfig) -> Self {
        Self {
            time_zone: config.time_zone.parse().unwrap_or(chrono_tz::UTC),
            number_format: config.number_format,
            status: config.status.clone(),
            duration_as_string: config.call_duration_as_string,
        }
    }

    fn number(&self, number: &Number) -> String {
        match &number.e164 {
            Some(e) => e.format(self.number_format),
            None => number.raw.clone(),
        }
    }

    fn time(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.time_zone)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    /// A time of day in the payload's zone, for `CallNotes`.
    fn time_of_day(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.time_zone)
            .format("%H:%M:%S")
            .to_string()
    }

    /// `CallNotes`: what happened to the call (a transfer, a forwarding:
    /// [`crate::call::transfer::note`]) and the agent's disposition and notes, both when
    /// both are known.
    fn call_notes(&self, call: &CallRecord, notes: Option<&str>) -> Option<String> {
        let what_happened = crate::call::transfer::note(call, |t| self.time_of_day(t));
        let notes = notes.filter(|n| !n.is_empty());
        match (what_happened, notes) {
            (Some(happened), Some(notes)) => Some(format!("{happened}; {notes}")),
            (Some(happened), None) => Some(happened),
            (None, notes) => notes.map(str::to_owned),
        }
    }

    fn status(&self, outcome: Outcome) -> &str {
        let s = &self.status;
        match outcome {
            Outcome::Answered => &s.answered,
            Outcome::NoAnswer => &s.no_answer,
            Outcome::Busy => &s.busy,
            Outcome::Failed => &s.failed,
            Outcome::Congestion => &s.congestion,
            Outcome::Voicemail => &s.voicemail,
        }
    }

    /// The Agent Popup body for an inbound call ringing an agent.
    pub fn popup(&self, popup: &crate::call::PopupRequest) -> Value {
        let agent = popup
            .agent
            .as_ref()
            .and_then(|a| a.phone.as_ref())
            .map(|p| p.format(self.number_format))
            .unwrap_or_else(|| popup.agent_extension.clone());
        let mut body = Map::new();
        body.insert(
            "SourceNumber".into(),
            json!(self.number(&popup.lead_number)),
        );
        body.insert("DestinationNumber".into(), json!(agent));
        body.insert(
            "DisplayNumber".into(),
            json!(
                popup
                    .display_number
                    .as_ref()
                    .map(|n| self.number(n))
                    .unwrap_or_default()
            ),
        );
        body.insert("Direction".into(), json!("Inbound"));
        body.insert("CallSessionId".into(), json!(popup.call_id));
        if let Some(user) = popup.agent.as_ref().and_then(|a| a.user_id.as_ref()) {
            body.insert("UserId".into(), json!(user));
        }
        if let Some(tag) = &popup.tag {
            body.insert("Tag".into(), json!(tag));
        }
        Value::Object(body)
    }

    /// The Call Log body. `notes` (the disposition, when known) goes into `CallNotes` after
    /// what the call's segments say (a transfer, a forwarding).
    pub fn call_log(&self, call: &CallRecord, notes: Option<&str>) -> Value {
        let agent_number = match &call.agent {
            Some(agent) => agent
                .phone
                .as_ref()
                .map(|p| p.format(self.number_format))
                .unwrap_or_else(|| agent.extension.clone()),
            None => call.agent_extension.clone().unwrap_or_default(),
        };
        let display = call
            .display_number
            .as_ref()
            .map(|n| self.number(n))
            .unwrap_or_default();
        let lead = self.number(&call.lead_number);
        // A missed inbound call reached no agent: the number it was dialled on stands in.
        let agent_or_display = if agent_number.is_empty() {
            display.clone()
        } else {
            agent_number
        };
        let (source, destination) = match call.direction {
            Direction::Inbound => (lead, agent_or_display),
            Direction::Outbound => (agent_or_display, lead),
        };
        let duration = if self.duration_as_string {
            json!(call.talk_seconds.to_string())
        } else {
            json!(call.talk_seconds)
        };
        let mut body = Map::new();
        body.insert("SourceNumber".into(), json!(source));
        body.insert("DestinationNumber".into(), json!(destination));
        body.insert("DisplayNumber".into(), json!(display));
        body.insert("StartTime".into(), json!(self.time(call.start)));
        body.insert("EndTime".into(), json!(self.time(call.end)));
        body.insert("CallDuration".into(), duration);
        body.insert("Status".into(), json!(self.status(call.outcome)));
        body.insert("Direction".into(), json!(call.direction.as_str()));
        body.insert("CallSessionId".into(), json!(call.call_id));
        let optional = [
            ("CallNotes", self.call_notes(call, notes)),
            ("ResourceURL", call.recording_url.clone()),
            (
                "CallerName",
                call.caller_name
                    .clone()
                    .filter(|_| call.direction == Direction::Inbound),
            ),
            ("LeadId", call.lead_id.clone()),
            (
                "UserId",
                call.agent.as_ref().and_then(|a| a.user_id.clone()),
            ),
            ("Tag", call.tag.clone()),
        ];
        for (key, value) in optional {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                body.insert(key.into(), json!(v));
            }
        }
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::AgentInfo;
    use crate::phone::PhoneNormalizer;
    use chrono::TimeZone;

    fn record() -> CallRecord {
        let n = PhoneNormalizer::new("91").expect("India");
        CallRecord {
            call_id: "1700000000.1".into(),
            source: "asterisk-cdr".into(),
            direction: Direction::Inbound,
            outcome: Outcome::Answered,
            lead_number: Number {
                raw: "09611795983".into(),
                e164: n.normalize("09611795983"),
            },
            agent: Some(AgentInfo {
                extension: "100".into(),
                phone: n.normalize("9876543210"),
                user_id: Some("u-1".into()),
                email: None,
                name: None,
                queue_interface: None,
            }),
            agent_extension: Some("100".into()),
            display_number: Some(Number {
                raw: "918044556677".into(),
                e164: n.normalize("918044556677"),
            }),
            tag: Some("sales".into()),
            start: Utc
                .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .expect("time"),
            answer: None,
            end: Utc
                .with_ymd_and_hms(2026, 1, 2, 3, 6, 5)
                .single()
                .expect("time"),
            talk_seconds: 100,
            caller_name: Some("Asha".into()),
            recording_url: None,
            lead_id: None,
            legs: 2,
            segments: Vec::new(),
            transfer: Default::default(),
        }
    }

    fn format(tz: Tz, nf: NumberFormat) -> PayloadFormat {
        PayloadFormat {
            time_zone: tz,
            number_format: nf,
            status: StatusNames::default(),
            duration_as_string: false,
        }
    }

    #[test]
    fn inbound_answered_payload() {
        let v = format(chrono_tz::UTC, NumberFormat::E164).call_log(&record(), None);
        assert_eq!(
            v,
            json!({
                "SourceNumber": "+919611795983",
                "DestinationNumber": "+919876543210",
                "DisplayNumber": "+918044556677",
                "StartTime": "2026-01-02 03:04:05",
                "EndTime": "2026-01-02 03:06:05",
                "CallDuration": 100,
                "Status": "Answered",
                "Direction": "Inbound",
                "CallSessionId": "1700000000.1",
                "CallerName": "Asha",
                "UserId": "u-1",
                "Tag": "sales"
            })
        );
    }

    #[test]
    fn outbound_swaps_parties_and_formats_follow_config() {
        let mut call = record();
        call.direction = Direction::Outbound;
        call.outcome = Outcome::Busy;
        let v = format(chrono_tz::Asia::Kolkata, NumberFormat::E164UrlencodedPlus)
            .call_log(&call, Some("Interested"));
        assert_eq!(v["SourceNumber"], "%2b919876543210");
        assert_eq!(v["DestinationNumber"], "%2b919611795983");
        assert_eq!(v["StartTime"], "2026-01-02 08:34:05");
        assert_eq!(v["Status"], "Missed");
        assert_eq!(v["CallNotes"], "Interested");
        assert!(v.get("CallerName").is_none());
    }

    #[test]
    fn missed_inbound_without_agent_uses_the_display_number() {
        let mut call = record();
        call.agent = None;
        call.agent_extension = None;
        call.outcome = Outcome::NoAnswer;
        call.talk_seconds = 0;
        let mut f = format(chrono_tz::UTC, NumberFormat::National);
        f.duration_as_string = true;
        let v = f.call_log(&call, None);
        assert_eq!(v["DestinationNumber"], "8044556677");
        assert_eq!(v["CallDuration"], "0");
        assert!(v.get("UserId").is_none());
    }

    #[test]
    fn call_notes_say_what_happened_then_the_disposition() {
        use crate::call::{AgentSegment, SegmentArrival, TransferInfo};
        let at = |h, m, sec| {
            Utc.with_ymd_and_hms(2026, 1, 2, h, m, sec)
                .single()
                .expect("time")
        };
        let mut call = record();
        call.segments = vec![
            AgentSegment {
                extension: "100".into(),
                answered_at: at(6, 30, 0),
                ended_at: Some(at(6, 33, 10)),
                talk_seconds: 190,
                arrival: SegmentArrival::Direct,
            },
            AgentSegment {
                extension: "103".into(),
                answered_at: at(6, 33, 15),
                ended_at: Some(at(6, 36, 0)),
                talk_seconds: 165,
                arrival: SegmentArrival::AttendedTransfer {
                    from: "100".into(),
                    at: at(6, 33, 10),
                },
            },
        ];
        call.transfer = TransferInfo {
            segment: Some(1),
            ..TransferInfo::default()
        };
        let kolkata = format(chrono_tz::Asia::Kolkata, NumberFormat::E164);
        let v = kolkata.call_log(&call, None);
        assert_eq!(
            v["CallNotes"],
            "from 100 by attended transfer at 12:03:10 (2 of 2)"
        );
        let v = kolkata.call_log(&call, Some("Interested: call back"));
        assert_eq!(
            v["CallNotes"],
            "from 100 by attended transfer at 12:03:10 (2 of 2); Interested: call back"
        );
        call.transfer.segment = Some(0);
        let v = kolkata.call_log(&call, Some(""));
        assert_eq!(v["CallNotes"], "transferred to 103 at 12:03:10 (1 of 2)");
    }
}

//! One FreeSWITCH channel (a leg) as the simulators play it: who, where, when, how it ended
//! and its channel variables. The event-socket simulator turns it into the events FreeSWITCH
//! 1.10 fires for a leg ([`SimLeg::event`]: CHANNEL_CREATE, CHANNEL_ANSWER, CHANNEL_BRIDGE,
//! CHANNEL_HANGUP_COMPLETE, with the header set of the real captures in
//! `tests/fixtures/freeswitch`), and the json_cdr writer into the document mod_json_cdr
//! writes when the leg ends ([`crate::simulation::json_cdr`]). One description, two outputs:
//! the live view and the CDR file of a leg always agree, as they do on a real FreeSWITCH.

use chrono::{DateTime, Utc};

use super::esl::{EslEvent, core_headers};

/// A leg. `placed` legs are the ones FreeSWITCH placed itself (`Call-Direction: outbound`:
/// a bridge's B leg, an originate's leg); the others it received (`inbound`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimLeg {
    /// `Unique-ID`.
    pub uuid: String,
    /// FreeSWITCH placed the leg (else it received it).
    pub placed: bool,
    /// `Channel-Name` (`sofia/external/+4915...@203.0.113.7`).
    pub channel_name: String,
    /// The sofia profile (`external`, `internal`).
    pub profile: String,
    /// `Caller-Context`.
    pub context: String,
    /// `Caller-Destination-Number`.
    pub destination: String,
    /// `Caller-Caller-ID-Name`.
    pub caller_id_name: String,
    /// `Caller-Caller-ID-Number`.
    pub caller_id_number: String,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// When the channel was created.
    pub created: DateTime<Utc>,
    /// When it was answered (never: `None`).
    pub answered: Option<DateTime<Utc>>,
    /// When it was bridged to another leg.
    pub bridged: Option<DateTime<Utc>>,
    /// When it hung up.
    pub ended: DateTime<Utc>,
    /// `Hangup-Cause` (`NORMAL_CLEARING`, `NO_ANSWER`, `LOSE_RACE` ...).
    pub hangup_cause: String,
    /// The leg it is bridged to.
    pub other_leg: Option<String>,
    /// mod_json_cdr calls it a B leg (it has an originator: `<uuid>.cdr.json`, else
    /// `a_<uuid>.cdr.json`).
    pub b_leg: bool,
    /// Further channel variables, in the order they were set (`dialed_user`,
    /// `originating_leg_uuid`, `cc_member_session_uuid`, `record_path`, `pbxlink_lead_id` ...).
    pub variables: Vec<(String, String)>,
    /// The dialplan applications the leg ran (name, data); its last one is `last_app`.
    pub applications: Vec<(String, String)>,
}

impl SimLeg {
    /// A leg with the given identity; times all `at`, not answered, `NORMAL_CLEARING`.
    pub fn new(uuid: &str, placed: bool, at: DateTime<Utc>) -> Self {
        Self {
            uuid: uuid.to_owned(),
            placed,
            channel_name: String::new(),
            profile: "internal".into(),
            context: "default".into(),
            destination: String::new(),
            caller_id_name: String::new(),
            caller_id_number: String::new(),
            sip_call_id: String::new(),
            created: at,
            answered: None,
            bridged: None,
            ended: at,
            hangup_cause: "NORMAL_CLEARING".into(),
            other_leg: None,
            b_leg: false,
            variables: Vec::new(),
            applications: Vec::new(),
        }
    }

    /// Sets (or replaces) a channel variable.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.variables.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.variables.push((name.to_owned(), value)),
        }
        self
    }

    /// A channel variable.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `inbound` / `outbound`, as FreeSWITCH says it.
    pub fn direction(&self) -> &'static str {
        if self.placed { "outbound" } else { "inbound" }
    }

    /// Whole seconds from `from` to `to`.
    fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        (to - from).num_seconds().max(0)
    }

    /// Seconds from answer to hangup (0 if never answered).
    pub fn billsec(&self) -> i64 {
        self.answered.map_or(0, |a| Self::secs(a, self.ended))
    }

    /// The leg's times as channel variables (`start_uepoch`, `answer_epoch`, `billsec` ...),
    /// as FreeSWITCH sets them when the leg is hung up.
    pub fn time_variables(&self) -> Vec<(String, String)> {
        let us = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_micros());
        let stamp = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let mut both = |name: &str, t: Option<DateTime<Utc>>| {
            if t.is_some() {
                out.push((format!("{name}_stamp"), stamp(t)));
            }
            out.push((format!("{name}_epoch"), (us(t) / 1_000_000).to_string()));
            out.push((format!("{name}_uepoch"), us(t).to_string()));
        };
        both("start", Some(self.created));
        both("answer", self.answered);
        both("bridge", self.bridged);
        both("end", Some(self.ended));
        let duration = Self::secs(self.created, self.ended);
        let billsec = self.billsec();
        let wait = self.answered.map_or(0, |a| Self::secs(self.created, a));
        let mut push = |k: &str, v: String| out.push((k.to_owned(), v));
        push("duration", duration.to_string());
        push("billsec", billsec.to_string());
        push("progresssec", "0".into());
        push("answersec", wait.to_string());
        push("waitsec", wait.to_string());
        push(
            "mduration",
            (self.ended - self.created).num_milliseconds().to_string(),
        );
        push(
            "billmsec",
            self.answered
                .map_or(0, |a| (self.ended - a).num_milliseconds())
                .to_string(),
        );
        push(
            "uduration",
            (self.ended - self.created)
                .num_microseconds()
                .unwrap_or(0)
                .to_string(),
        );
        out
    }

    /// Every channel variable the leg has when it hangs up: its identity, its own ones, the
    /// applications' traces, the hangup and the times.
    pub fn all_variables(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![
            ("direction".into(), self.direction().into()),
            ("uuid".into(), self.uuid.clone()),
            ("session_id".into(), "1".into()),
            ("sip_call_id".into(), self.sip_call_id.clone()),
            ("channel_name".into(), self.channel_name.clone()),
            ("sofia_profile_name".into(), self.profile.clone()),
            ("call_uuid".into(), self.uuid.clone()),
        ];
        v.extend(self.variables.iter().cloned());
        if let Some((app, data)) = self.applications.last() {
            v.push(("current_application".into(), app.clone()));
            v.push(("current_application_data".into(), data.clone()));
        }
        if let Some(other) = &self.other_leg {
            v.push(("bridge_uuid".into(), other.clone()));
            v.push(("signal_bond".into(), other.clone()));
            v.push(("last_bridge_to".into(), other.clone()));
        }
        let q850 = match self.hangup_cause.as_str() {
            "NORMAL_CLEARING" => "16",
            "USER_BUSY" => "17",
            "NO_ANSWER" => "19",
            "ORIGINATOR_CANCEL" => "487",
            "LOSE_RACE" => "502",
            _ => "0",
        };
        v.push(("hangup_cause".into(), self.hangup_cause.clone()));
        v.push(("hangup_cause_q850".into(), q850.into()));
        v.push((
            "endpoint_disposition".into(),
            if self.answered.is_some() {
                "ANSWER"
            } else {
                "EARLY MEDIA"
            }
            .into(),
        ));
        v.extend(self.time_variables());
        if let Some((app, data)) = self.applications.last() {
            v.push(("last_app".into(), app.clone()));
            v.push(("last_arg".into(), data.clone()));
        }
        v.push((
            "caller_id".into(),
            format!("\"{}\" <{}>", self.caller_id_name, self.caller_id_number),
        ));
        v
    }

    /// The event `name` (`CHANNEL_CREATE`, `CHANNEL_ANSWER`, `CHANNEL_BRIDGE`,
    /// `CHANNEL_HANGUP_COMPLETE`) for this leg, fired at `at` with `sequence`.
    pub fn event(&self, name: &str, at: DateTime<Utc>, sequence: u64) -> EslEvent {
        let calling = match name {
            "CHANNEL_CREATE" => (
                "switch_core_state_machine.c",
                "switch_core_session_run",
                626,
            ),
            "CHANNEL_ANSWER" => (
                "switch_channel.c",
                "switch_channel_perform_mark_answered",
                3846,
            ),
            "CHANNEL_BRIDGE" => (
                "switch_ivr_bridge.c",
                "switch_ivr_multi_threaded_bridge",
                1771,
            ),
            _ => (
                "switch_core_state_machine.c",
                "switch_core_session_reporting_state",
                955,
            ),
        };
        let mut e = core_headers(name, at, calling, sequence);
        let hangup = name == "CHANNEL_HANGUP_COMPLETE";
        let answered = self.answered.filter(|a| *a <= at);
        let (state, call_state, number, answer_state) = match name {
            "CHANNEL_CREATE" => ("CS_INIT", "DOWN", "2", "ringing"),
            _ if hangup => ("CS_REPORTING", "HANGUP", "11", "hangup"),
            _ => ("CS_EXECUTE", "ACTIVE", "4", "answered"),
        };
        e.push("Channel-State", state);
        e.push("Channel-Call-State", call_state);
        e.push("Channel-State-Number", number);
        e.push("Channel-Name", self.channel_name.clone());
        e.push("Unique-ID", self.uuid.clone());
        e.push("Call-Direction", self.direction());
        e.push("Presence-Call-Direction", self.direction());
        e.push(
            "Channel-HIT-Dialplan",
            if self.placed { "false" } else { "true" },
        );
        e.push("Channel-Call-UUID", self.uuid.clone());
        e.push("Answer-State", answer_state);
        if hangup {
            e.push("Hangup-Cause", self.hangup_cause.clone());
        }
        for (k, v) in [
            ("Channel-Read-Codec-Name", "PCMA"),
            ("Channel-Read-Codec-Rate", "8000"),
            ("Channel-Write-Codec-Name", "PCMA"),
            ("Channel-Write-Codec-Rate", "8000"),
        ] {
            e.push(k, v);
        }
        let us = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_micros()).to_string();
        e.push("Caller-Direction", self.direction());
        e.push("Caller-Logical-Direction", self.direction());
        e.push("Caller-Username", self.caller_id_number.clone());
        e.push("Caller-Dialplan", "XML");
        e.push("Caller-Caller-ID-Name", self.caller_id_name.clone());
        e.push("Caller-Caller-ID-Number", self.caller_id_number.clone());
        e.push("Caller-Orig-Caller-ID-Name", self.caller_id_name.clone());
        e.push(
            "Caller-Orig-Caller-ID-Number",
            self.caller_id_number.clone(),
        );
        e.push("Caller-Network-Addr", "127.0.0.1");
        e.push("Caller-ANI", self.caller_id_number.clone());
        e.push("Caller-Destination-Number", self.destination.clone());
        e.push("Caller-Unique-ID", self.uuid.clone());
        e.push("Caller-Source", "mod_sofia");
        e.push("Caller-Context", self.context.clone());
        e.push("Caller-Channel-Name", self.channel_name.clone());
        e.push("Caller-Profile-Index", "1");
        e.push("Caller-Profile-Created-Time", us(Some(self.created)));
        e.push("Caller-Channel-Created-Time", us(Some(self.created)));
        e.push("Caller-Channel-Answered-Time", us(answered));
        e.push("Caller-Channel-Progress-Time", "0");
        e.push("Caller-Channel-Progress-Media-Time", "0");
        e.push(
            "Caller-Channel-Hangup-Time",
            us(hangup.then_some(self.ended)),
        );
        e.push("Caller-Channel-Transfer-Time", "0");
        e.push("Caller-Channel-Resurrect-Time", "0");
        e.push(
            "Caller-Channel-Bridged-Time",
            us(self.bridged.filter(|b| *b <= at)),
        );
        e.push("Caller-Channel-Last-Hold", "0");
        e.push("Caller-Channel-Hold-Accum", "0");
        e.push("Caller-Screen-Bit", "true");
        e.push("Caller-Privacy-Hide-Name", "false");
        e.push("Caller-Privacy-Hide-Number", "false");
        let other = self
            .other_leg
            .as_ref()
            .filter(|_| name == "CHANNEL_BRIDGE" || hangup);
        if let Some(other) = other {
            e.push(
                "Other-Type",
                if self.b_leg {
                    "originator"
                } else {
                    "originatee"
                },
            );
            e.push(
                "Other-Leg-Direction",
                if self.placed { "inbound" } else { "outbound" },
            );
            e.push("Other-Leg-Unique-ID", other.clone());
        }
        if name == "CHANNEL_BRIDGE" {
            if let Some(other) = &self.other_leg {
                e.push("Bridge-A-Unique-ID", self.uuid.clone());
                e.push("Bridge-B-Unique-ID", other.clone());
            }
        }
        let variables = if hangup {
            self.all_variables()
        } else {
            let mut v: Vec<(String, String)> = vec![
                ("direction".into(), self.direction().into()),
                ("uuid".into(), self.uuid.clone()),
                ("call_uuid".into(), self.uuid.clone()),
                ("session_id".into(), "1".into()),
                ("channel_name".into(), self.channel_name.clone()),
                ("sip_call_id".into(), self.sip_call_id.clone()),
                ("sofia_profile_name".into(), self.profile.clone()),
            ];
            v.extend(self.variables.iter().cloned());
            v
        };
        for (k, v) in variables {
            e.push(&format!("variable_{k}"), v);
        }
        e
    }
}

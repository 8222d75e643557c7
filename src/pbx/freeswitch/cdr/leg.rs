//! One FreeSWITCH leg (channel) as a CDR file recorded it, whatever the file format.
//!
//! mod_json_cdr writes one document per leg, mod_cdr_csv one row per leg (with `legs = ab`);
//! both are read into the same [`FsLeg`], which is what is staged in the store and what the
//! assembler groups into calls. Every text is kept as FreeSWITCH wrote it (URL-decoded); an
//! absent or empty value is `None`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::DialResult;

/// FreeSWITCH's own view of a leg (`direction` variable): a leg it received (`inbound`) or
/// a leg it placed (`outbound`). This is NOT the business direction of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegDirection {
    /// FreeSWITCH received this leg (a phone or a carrier called it).
    Inbound,
    /// FreeSWITCH placed this leg (a bridge, an originate, mod_callcenter calling an agent).
    Outbound,
}

impl LegDirection {
    /// `inbound` / `outbound` as FreeSWITCH writes them (any case).
    pub fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("inbound") {
            Some(Self::Inbound)
        } else if text.eq_ignore_ascii_case("outbound") {
            Some(Self::Outbound)
        } else {
            None
        }
    }
}

/// One leg of a FreeSWITCH call. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsLeg {
    /// The leg's own id (`uuid`).
    pub uuid: String,
    /// The call's uuid as FreeSWITCH keeps it (`call_uuid`), when written.
    #[serde(default)]
    pub call_uuid: Option<String>,
    /// The other leg of a bridge (`bleg_uuid`, `bridge_uuid`, `signal_bond`, `last_bridge_to`),
    /// every distinct one that was written.
    #[serde(default)]
    pub bridged_to: Vec<String>,
    /// The leg that originated this one (`originating_leg_uuid`, `originator`): set on the
    /// legs FreeSWITCH places for a bridge.
    #[serde(default)]
    pub originator: Option<String>,
    /// mod_callcenter: the member's (caller's) session uuid, set on every agent leg the
    /// queue originated.
    #[serde(default)]
    pub cc_member_session_uuid: Option<String>,
    /// mod_callcenter: `member` on the caller's leg, `agent` on an agent's leg.
    #[serde(default)]
    pub cc_side: Option<String>,
    /// mod_callcenter: the agent name (`cc_agent`).
    #[serde(default)]
    pub cc_agent: Option<String>,
    /// mod_callcenter: the queue (`cc_queue`).
    #[serde(default)]
    pub cc_queue: Option<String>,
    /// The SIP Call-ID (`sip_call_id`): two legs of one FreeSWITCH with the same Call-ID are
    /// the two ends of one SIP dialog (FreeSWITCH calling itself).
    #[serde(default)]
    pub sip_call_id: Option<String>,
    /// FreeSWITCH's own direction of the leg.
    #[serde(default)]
    pub direction: Option<LegDirection>,
    /// Contexts of the leg's caller profiles, oldest first.
    #[serde(default)]
    pub contexts: Vec<String>,
    /// Destination numbers of the leg's caller profiles, oldest first.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// The destination of the first profile that ran a dialplan extension, when known
    /// (json_cdr); an originated leg's first profile is the originate's own, not dialled.
    #[serde(default)]
    pub dialplan_destination: Option<String>,
    /// Caller id number of the leg's first caller profile.
    #[serde(default)]
    pub caller_id_number: Option<String>,
    /// `ani` of the leg's first caller profile: the caller's number as the leg arrived, which
    /// stays put when FreeSWITCH rewrites the caller id of a transferred lead's leg
    /// (`uuid_bridge` after `att_xfer` writes the agent's phone into it).
    #[serde(default)]
    pub ani: Option<String>,
    /// Caller id name of the leg's first caller profile.
    #[serde(default)]
    pub caller_id_name: Option<String>,
    /// The authenticated directory user of the leg (`user_name`).
    #[serde(default)]
    pub user_name: Option<String>,
    /// The user part of the SIP From (`sip_from_user`).
    #[serde(default)]
    pub sip_from_user: Option<String>,
    /// The directory user a `user/<name>` dial string reached (`dialed_user`).
    #[serde(default)]
    pub dialed_user: Option<String>,
    /// `presence_id` (`<user>@<domain>`): on a leg a `user/<ext>` endpoint placed, the user
    /// it rang, which stays put when the leg itself later dials another user (`att_xfer`
    /// overwrites the transferring agent's `dialed_user` with the target's).
    #[serde(default)]
    pub presence_id: Option<String>,
    /// The user part of the SIP request URI (`sip_req_user`).
    #[serde(default)]
    pub sip_req_user: Option<String>,
    /// The user part of the SIP To (`sip_to_user`).
    #[serde(default)]
    pub sip_to_user: Option<String>,
    /// `origination_caller_id_number`: the caller id an originate or a bridge asked for.
    #[serde(default)]
    pub origination_caller_id_number: Option<String>,
    /// When the leg was created.
    pub start: DateTime<Utc>,
    /// When it was answered.
    #[serde(default)]
    pub answer: Option<DateTime<Utc>>,
    /// When it hung up.
    pub end: DateTime<Utc>,
    /// Seconds from answer to hangup (`billsec`).
    #[serde(default)]
    pub billsec: u64,
    /// Seconds from creation to hangup (`duration`).
    #[serde(default)]
    pub duration: u64,
    /// `hangup_cause`, e.g. `NORMAL_CLEARING`, `LOSE_RACE`.
    #[serde(default)]
    pub hangup_cause: Option<String>,
    /// The applications the leg ran, in order, without repeats (json_cdr `app_log`, then
    /// `last_app`; cdr_csv `last_app`).
    #[serde(default)]
    pub applications: Vec<String>,
    /// The recording this leg wrote (`record_path` / `record_name`, or a template column).
    #[serde(default)]
    pub recording: Option<String>,
    /// `pbxlink_lead_id` (set by click to call).
    #[serde(default)]
    pub lead_id: Option<String>,
    /// `pbxlink_lead_number`: the lead's number as LeadSquared sent it (click to call).
    #[serde(default)]
    pub lead_number: Option<String>,
    /// `pbxlink_did`: a DID the dialplan exported, when it did.
    #[serde(default)]
    pub did: Option<String>,
    /// The json_cdr file or cdr_csv file the leg came from, for logs.
    #[serde(default)]
    pub origin: Option<String>,
}

impl FsLeg {
    /// A leg with only its id and times; the parsers fill in the rest.
    pub fn new(uuid: impl Into<String>, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            uuid: uuid.into(),
            call_uuid: None,
            bridged_to: Vec::new(),
            originator: None,
            cc_member_session_uuid: None,
            cc_side: None,
            cc_agent: None,
            cc_queue: None,
            sip_call_id: None,
            direction: None,
            contexts: Vec::new(),
            destinations: Vec::new(),
            dialplan_destination: None,
            caller_id_number: None,
            ani: None,
            caller_id_name: None,
            user_name: None,
            sip_from_user: None,
            dialed_user: None,
            presence_id: None,
            sip_req_user: None,
            sip_to_user: None,
            origination_caller_id_number: None,
            start,
            answer: None,
            end,
            billsec: 0,
            duration: 0,
            hangup_cause: None,
            applications: Vec::new(),
            recording: None,
            lead_id: None,
            lead_number: None,
            did: None,
            origin: None,
        }
    }

    /// Whether mod_callcenter originated this leg towards an agent.
    pub fn is_callcenter_agent_leg(&self) -> bool {
        match self.cc_side.as_deref() {
            Some(side) => side.eq_ignore_ascii_case("agent"),
            None => self
                .cc_member_session_uuid
                .as_deref()
                .is_some_and(|member| member != self.uuid),
        }
    }

    /// The leg's last (current) context.
    pub fn context(&self) -> Option<&str> {
        self.contexts.last().map(String::as_str)
    }

    /// How this leg ended, as a dial attempt: answered when it has an answer time, else its
    /// hangup cause (see [`dial_result`]).
    pub fn dial_result(&self) -> DialResult {
        if self.answer.is_some() {
            return DialResult::Answered;
        }
        dial_result(self.hangup_cause.as_deref().unwrap_or(""))
    }
}

/// Adds `value` to `list` unless it is empty or already there.
pub(crate) fn push_unique(list: &mut Vec<String>, value: &str) {
    if !value.is_empty() && !list.iter().any(|v| v == value) {
        list.push(value.to_owned());
    }
}

/// What a hangup cause of an unanswered leg says about the attempt (FreeSWITCH cause names,
/// switch_channel.c / Q.850):
/// - `USER_BUSY`, `CALL_REJECTED` (a phone's Decline) → [`DialResult::Busy`];
/// - `NORMAL_CIRCUIT_CONGESTION`, `SWITCH_CONGESTION`, `NETWORK_OUT_OF_ORDER`,
///   `NORMAL_TEMPORARY_FAILURE`, `REQUESTED_CHAN_UNAVAIL`, `SERVICE_UNAVAILABLE`,
///   `RECOVERY_ON_TIMER_EXPIRE` → [`DialResult::Congestion`];
/// - `USER_NOT_REGISTERED`, `UNALLOCATED_NUMBER`, `NO_ROUTE_DESTINATION`, `NO_ROUTE_TRANSIT_NET`,
///   `SUBSCRIBER_ABSENT`, `INVALID_NUMBER_FORMAT`, `DESTINATION_OUT_OF_ORDER`,
///   `INCOMPATIBLE_DESTINATION`, `FACILITY_REJECTED`, `FACILITY_NOT_SUBSCRIBED`,
///   `BEARERCAPABILITY_NOTAVAIL`, `CHAN_NOT_IMPLEMENTED`, `NUMBER_CHANGED`,
///   `EXCHANGE_ROUTING_ERROR`, `MANDATORY_IE_MISSING`, `INVALID_GATEWAY`, `GATEWAY_DOWN`
///   → [`DialResult::Failed`];
/// - anything else (`NO_ANSWER`, `NO_USER_RESPONSE`, `ORIGINATOR_CANCEL`, `LOSE_RACE`,
///   `ALLOTTED_TIMEOUT`, `PICKED_OFF`, `NORMAL_CLEARING` without an answer, unknown names)
///   → [`DialResult::NoAnswer`].
pub fn dial_result(hangup_cause: &str) -> DialResult {
    const BUSY: &[&str] = &["USER_BUSY", "CALL_REJECTED"];
    const CONGESTION: &[&str] = &[
        "NORMAL_CIRCUIT_CONGESTION",
        "SWITCH_CONGESTION",
        "NETWORK_OUT_OF_ORDER",
        "NORMAL_TEMPORARY_FAILURE",
        "REQUESTED_CHAN_UNAVAIL",
        "SERVICE_UNAVAILABLE",
        "RECOVERY_ON_TIMER_EXPIRE",
    ];
    const FAILED: &[&str] = &[
        "USER_NOT_REGISTERED",
        "UNALLOCATED_NUMBER",
        "NO_ROUTE_DESTINATION",
        "NO_ROUTE_TRANSIT_NET",
        "SUBSCRIBER_ABSENT",
        "INVALID_NUMBER_FORMAT",
        "DESTINATION_OUT_OF_ORDER",
        "INCOMPATIBLE_DESTINATION",
        "FACILITY_REJECTED",
        "FACILITY_NOT_SUBSCRIBED",
        "BEARERCAPABILITY_NOTAVAIL",
        "CHAN_NOT_IMPLEMENTED",
        "NUMBER_CHANGED",
        "EXCHANGE_ROUTING_ERROR",
        "MANDATORY_IE_MISSING",
        "INVALID_GATEWAY",
        "GATEWAY_DOWN",
    ];
    let cause = hangup_cause.trim();
    let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(cause));
    if is(BUSY) {
        DialResult::Busy
    } else if is(CONGESTION) {
        DialResult::Congestion
    } else if is(FAILED) {
        DialResult::Failed
    } else {
        DialResult::NoAnswer
    }
}

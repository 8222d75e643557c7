//! mod_cdr_csv's stock templates (FreeSWITCH 1.10.12 `conf/vanilla/autoload_configs/
//! cdr_csv.conf.xml`, and the `default` template compiled into mod_cdr_csv.c), and
//! pbxlink's recommended template, by name.

use super::csv::CsvLayout;

/// The template pbxlink recommends (`cdr_template = "pbxlink"`): every leg with its uuid,
/// the legs it is bridged to or was originated by, mod_callcenter's member session, exact
/// epochs, who placed it, what it ran and the recording. Write it into `cdr_csv.conf.xml`
/// as `<template name="pbxlink">…</template>` with `legs` = `ab` (see
/// docs/freeswitch-cdr.md).
pub const PBXLINK: &str = r#""${uuid}","${bleg_uuid}","${originating_leg_uuid}","${cc_member_session_uuid}","${direction}","${context}","${caller_id_name}","${caller_id_number}","${destination_number}","${start_epoch}","${answer_epoch}","${end_epoch}","${start_uepoch}","${answer_uepoch}","${end_uepoch}","${duration}","${billsec}","${hangup_cause}","${sip_hangup_disposition}","${cc_queue}","${cc_agent}","${pbxlink_lead_id}","${record_path}","${record_name}","${accountcode}","${call_uuid}","${sip_call_id}","${cc_side}","${user_name}","${sip_from_user}","${dialed_user}","${sip_req_user}","${origination_caller_id_number}","${last_app}","${pbxlink_lead_number}","${pbxlink_did}","${presence_id}","${ani}""#;

/// The columns of the test rig's `pbxlink` template (tests/freeswitch/conf/freeswitch.xml),
/// in which `tests/fixtures/freeswitch/*/Master.csv` were captured: the first 25 columns of
/// [`PBXLINK`].
pub const RIG_COLUMNS: &[&str] = &[
    "uuid",
    "bleg_uuid",
    "originating_leg_uuid",
    "cc_member_session_uuid",
    "direction",
    "context",
    "caller_id_name",
    "caller_id_number",
    "destination_number",
    "start_epoch",
    "answer_epoch",
    "end_epoch",
    "start_uepoch",
    "answer_uepoch",
    "end_uepoch",
    "duration",
    "billsec",
    "hangup_cause",
    "sip_hangup_disposition",
    "cc_queue",
    "cc_agent",
    "pbxlink_lead_id",
    "record_path",
    "record_name",
    "accountcode",
];

/// The stock templates, as FreeSWITCH ships them.
const STOCK: &[(&str, &str)] = &[
    (
        "default",
        r#""${caller_id_name}","${caller_id_number}","${destination_number}","${context}","${start_stamp}","${answer_stamp}","${end_stamp}","${duration}","${billsec}","${hangup_cause}","${uuid}","${bleg_uuid}", "${accountcode}""#,
    ),
    (
        "sql",
        r#"INSERT INTO cdr VALUES ("${caller_id_name}","${caller_id_number}","${destination_number}","${context}","${start_stamp}","${answer_stamp}","${end_stamp}","${duration}","${billsec}","${hangup_cause}","${uuid}","${bleg_uuid}", "${accountcode}");"#,
    ),
    (
        "example",
        r#""${caller_id_name}","${caller_id_number}","${destination_number}","${context}","${start_stamp}","${answer_stamp}","${end_stamp}","${duration}","${billsec}","${hangup_cause}","${uuid}","${bleg_uuid}","${accountcode}","${read_codec}","${write_codec}""#,
    ),
    (
        "snom",
        r#""${caller_id_name}","${caller_id_number}","${destination_number}","${context}","${start_stamp}","${answer_stamp}","${end_stamp}","${duration}","${billsec}","${hangup_cause}","${uuid}","${bleg_uuid}", "${accountcode}","${read_codec}","${write_codec}","${sip_user_agent}","${call_clientcode}","${sip_rtp_rxstat}","${sip_rtp_txstat}","${sofia_record_file}""#,
    ),
    (
        "linksys",
        r#""${caller_id_name}","${caller_id_number}","${destination_number}","${context}","${start_stamp}","${answer_stamp}","${end_stamp}","${duration}","${billsec}","${hangup_cause}","${uuid}","${bleg_uuid}","${accountcode}","${read_codec}","${write_codec}","${sip_user_agent}","${sip_p_rtp_stat}""#,
    ),
    (
        "asterisk",
        r#""${accountcode}","${caller_id_number}","${destination_number}","${context}","${caller_id}","${channel_name}","${bridge_channel}","${last_app}","${last_arg}","${start_stamp}","${answer_stamp}","${end_stamp}","${duration}","${billsec}","${hangup_cause}","${amaflags}","${uuid}","${userfield}""#,
    ),
    (
        "opencdrrate",
        r#""${uuid}","${signal_bond}","${direction}","${ani}","${destination_number}","${answer_stamp}","${end_stamp}","${billsec}","${accountcode}","${userfield}","${network_addr}","${regex('${original_caller_id_name}'|^.)}","${sip_gateway_name}""#,
    ),
];

/// The template names [`layout`] knows.
pub const NAMES: &[&str] = &[
    "example",
    "default",
    "sql",
    "snom",
    "linksys",
    "asterisk",
    "opencdrrate",
    "pbxlink",
];

/// The text of the template called `name`.
pub fn text(name: &str) -> Option<&'static str> {
    if name == "pbxlink" {
        return Some(PBXLINK);
    }
    STOCK.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The layout of the template called `name`.
pub fn layout(name: &str) -> Option<CsvLayout> {
    text(name).map(CsvLayout::from_template_text)
}

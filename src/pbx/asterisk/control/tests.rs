//! How Asterisk carries out the neutral click-to-call and disposition requests: the
//! Originate (agent channel, lead's number as `number_format` writes it, the lead id as
//! `LEADID`/`CDR(leadid)`), every value escaped or refused for the part of Asterisk that reads
//! it, the refusal that names the extension, context and keys, and the queue interface a
//! disposition unpauses.

use super::*;
use crate::phone::E164;

fn agent(extension: &str) -> AgentInfo {
    AgentInfo {
        extension: extension.into(),
        phone: None,
        user_id: None,
        email: None,
        name: None,
        queue_interface: None,
    }
}

fn request(lead_id: &str) -> OriginateRequest {
    OriginateRequest {
        call_id: "pbxlink-1795554073.000042".into(),
        agent: agent("100"),
        lead_number: E164 {
            country_code: 91,
            national: "9611795983".into(),
        },
        lead_id: Some(lead_id.into()),
        caller_id: E164 {
            country_code: 91,
            national: "8044556677".into(),
        },
    }
}

#[test]
fn a_hostile_lead_id_goes_escaped_one_variable_per_header() {
    let lead = "L1,CALLERID(num)=+18005551234,CDR(accountcode)=evil";
    let action = originate_action(&OriginateConfig::default(), &request(lead)).expect("built");
    let wire = String::from_utf8(action.encode("7").expect("encodes")).expect("utf-8");
    assert_eq!(
        wire,
        "Action: Originate\r\nActionID: 7\r\nChannel: PJSIP/100\r\nContext: from-internal\r\n\
         Exten: 919611795983\r\nPriority: 1\r\nCallerID: <+918044556677>\r\nTimeout: 30000\r\n\
         ChannelId: pbxlink-1795554073.000042\r\nAsync: true\r\n\
         Variable: LEADID=L1\\,CALLERID\\(num\\)=+18005551234\\,CDR\\(accountcode\\)=evil\r\n\
         Variable: CDR(leadid)=L1\\,CALLERID\\(num\\)=+18005551234\\,CDR\\(accountcode\\)=evil\r\n\
         Variable: LEADNUMBER=+919611795983\r\nVariable: CDR(leadnumber)=+919611795983\r\n\r\n"
    );
}

#[test]
fn values_asterisk_reads_as_syntax_are_refused() {
    type Change = fn(&mut OriginateRequest, &mut OriginateConfig);
    let cases: [(&str, Change); 9] = [
        ("agent extension", |r, _| {
            r.agent.extension = "100/sip:evil@x".into()
        }),
        ("agent extension", |r, _| {
            r.agent.extension = "100@other".into()
        }),
        ("agent extension", |r, _| {
            r.agent.extension = "100&PJSIP/200".into()
        }),
        ("number to dial", |_, c| c.dial_prefix = "9,".into()),
        ("number to dial", |r, _| {
            r.lead_number.national = "9611795983&PJSIP/evil".into()
        }),
        ("number to dial", |_, c| c.dial_prefix = "9 ".into()),
        ("context", |_, c| c.context = "from-internal,evil".into()),
        ("caller id", |r, _| r.caller_id.national = "1\" <1>".into()),
        ("number to dial", |r, _| {
            r.lead_number.national = "9".repeat(81)
        }),
    ];
    for (what, change) in cases {
        let (mut r, mut c) = (request("L1"), OriginateConfig::default());
        change(&mut r, &mut c);
        match originate_action(&c, &r) {
            Err(PbxError::Unsafe(why)) => assert!(why.contains(what), "{what}: {why}"),
            other => panic!("{what}: expected Unsafe, got {other:?}"),
        }
    }
    // A lead id Asterisk could not read in one line is refused, not cut.
    match originate_action(
        &OriginateConfig::default(),
        &request(&"x".repeat(12 * 1024)),
    ) {
        Err(PbxError::Unsafe(why)) => assert!(why.contains("bytes"), "{why}"),
        other => panic!("expected Unsafe, got {other:?}"),
    }
    match originate_action(&OriginateConfig::default(), &request("L1\0x")) {
        Err(PbxError::Unsafe(why)) => assert!(why.contains("NUL"), "{why}"),
        other => panic!("expected Unsafe, got {other:?}"),
    }
}

#[test]
fn the_lead_is_dialled_as_number_format_after_dial_prefix() {
    let r = request("L1");
    for (format, prefix, dialled) in [
        (DialFormat::E164Digits, "", "919611795983"),
        (DialFormat::E164, "", "+919611795983"),
        (DialFormat::National, "0", "09611795983"),
    ] {
        let originate = OriginateConfig {
            number_format: format,
            dial_prefix: prefix.into(),
            ..OriginateConfig::default()
        };
        assert_eq!(lead_dial(&originate, &r), dialled);
        let action = originate_action(&originate, &r).expect("built");
        assert_eq!(action.get("Exten"), Some(dialled));
    }
}

#[test]
fn no_lead_id_sets_only_the_lead_number() {
    let mut r = request("L1");
    r.lead_id = None;
    let action = originate_action(&OriginateConfig::default(), &r).expect("built");
    let variables: Vec<&str> = action
        .headers()
        .iter()
        .filter(|(k, _)| k == "Variable")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        variables,
        ["LEADNUMBER=+919611795983", "CDR(leadnumber)=+919611795983"]
    );
    assert!(
        action
            .headers()
            .iter()
            .all(|(k, v)| k != "Variable" || !v.contains("LEADID")),
        "{:?}",
        action.headers()
    );
}

#[test]
fn a_disposition_unpauses_the_queue_interface_or_the_agent_channel() {
    let originate = OriginateConfig {
        agent_channel: "SIP/{extension}".into(),
        ..OriginateConfig::default()
    };
    assert_eq!(queue_interface(&originate, &agent("100")), "SIP/100");
    let member = AgentInfo {
        queue_interface: Some("Local/101@agents/n".into()),
        ..agent("101")
    };
    assert_eq!(queue_interface(&originate, &member), "Local/101@agents/n");
    let wire = unpause_action("Local/101@agents/n")
        .expect("built")
        .encode("9")
        .expect("encodes");
    assert_eq!(
        String::from_utf8(wire).expect("utf-8"),
        "Action: QueuePause\r\nActionID: 9\r\nInterface: Local/101@agents/n\r\n\
         Paused: false\r\nReason: pbxlink: call disposed\r\n\r\n"
    );
    assert!(matches!(
        unpause_action("PJSIP/100\r\nAction: Originate"),
        Err(PbxError::Unsafe(_))
    ));
}

#[test]
fn channel_ids_are_dialplan_tokens() {
    let id = new_channel_id();
    assert!(id.starts_with("pbxlink-"), "{id}");
    check_dial_token("call id", &id).expect("a call id Asterisk reads as one token");
}

#[test]
fn a_refused_originate_names_the_extension_context_and_keys() {
    let originate = OriginateConfig {
        number_format: DialFormat::E164,
        dial_prefix: "9".into(),
        ..OriginateConfig::default()
    };
    let why = originate_refused(
        "Extension does not exist.",
        "PJSIP/100",
        "9+919611795983",
        &originate,
    );
    for part in [
        "Extension does not exist.",
        "extension \"9+919611795983\" in context \"from-internal\"",
        "[asterisk.originate] number_format = \"e164\"",
        "dial_prefix = \"9\"",
        "[asterisk.originate] context",
        "e164_digits",
        "PJSIP/100",
    ] {
        assert!(why.contains(part), "{part:?} missing from {why}");
    }
    // What Asterisk said is bounded and escaped before it reaches the answer and the log.
    let why = originate_refused(&"\x1b[31mx".repeat(500), "PJSIP/100", "1", &originate);
    assert!(!why.contains('\x1b'), "{why}");
    assert!(why.len() < 1500, "{} bytes", why.len());
}

#[test]
fn the_default_number_format_is_digits_without_plus() {
    assert_eq!(
        OriginateConfig::default().number_format,
        DialFormat::E164Digits
    );
    let config: crate::config::OriginateConfig = toml::from_str("").expect("empty section");
    assert_eq!(config.number_format.name(), "e164_digits");
}

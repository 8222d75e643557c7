//! The Originate that click to call sends: every value escaped or refused for the part of
//! Asterisk that reads it, and the refusal that names the extension, context and keys.

use super::*;
use crate::config::DialFormat;

fn request(lead_id: &str) -> OriginateRequest {
    OriginateRequest {
        call_id: "pbxlink-1795554073.000042".into(),
        agent_extension: "100".into(),
        lead_dial: "919611795983".into(),
        caller_id: "+918044556677".into(),
        variables: vec![
            ("LEADID".into(), lead_id.into()),
            ("CDR(leadid)".into(), lead_id.into()),
        ],
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
         Variable: CDR(leadid)=L1\\,CALLERID\\(num\\)=+18005551234\\,CDR\\(accountcode\\)=evil\r\n\r\n"
    );
}

#[test]
fn values_asterisk_reads_as_syntax_are_refused() {
    type Change = fn(&mut OriginateRequest, &mut OriginateConfig);
    let cases: [(&str, Change); 9] = [
        ("agent extension", |r, _| {
            r.agent_extension = "100/sip:evil@x".into()
        }),
        ("agent extension", |r, _| {
            r.agent_extension = "100@other".into()
        }),
        ("agent extension", |r, _| {
            r.agent_extension = "100&PJSIP/200".into()
        }),
        ("number to dial", |r, _| r.lead_dial = "9196,1".into()),
        ("number to dial", |r, _| {
            r.lead_dial = "919611795983&PJSIP/evil".into()
        }),
        ("number to dial", |r, _| r.lead_dial = "9196 1".into()),
        ("context", |_, c| c.context = "from-internal,evil".into()),
        ("caller id", |r, _| r.caller_id = "\"x\" <1>".into()),
        ("number to dial", |r, _| r.lead_dial = "9".repeat(81)),
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

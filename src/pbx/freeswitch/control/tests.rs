use super::*;
use crate::pbx::freeswitch::esl::{Event, Frame, FrameLimits, Framer, Headers};

fn request() -> FsClickToCall {
    FsClickToCall {
        call_id: "0b6e3c1a-5d2f-4c8e-9a71-3f0d2e4b5c6d".into(),
        agent_extension: "101".into(),
        lead: E164 {
            country_code: 49,
            national: "30123457".into(),
        },
        lead_as_sent: Some("+49-30123457".into()),
        caller_id: "4930100".into(),
        lead_id: Some("lead-42".into()),
    }
}

const JOB: &str = "d67c648f-f071-47e5-ab5c-0001b2f46226";

fn wire(plan: &OriginatePlan) -> String {
    String::from_utf8(plan.command.to_wire()).unwrap()
}

#[test]
fn click_to_call_is_the_exact_bgapi_originate() {
    let plan = click_to_call(&FsOriginateSettings::default(), &request(), JOB).unwrap();
    assert_eq!(
        wire(&plan),
        "bgapi originate {origination_uuid=0b6e3c1a-5d2f-4c8e-9a71-3f0d2e4b5c6d,\
         origination_caller_id_number=4930100,pbxlink_lead_id=lead-42,\
         pbxlink_lead_number=+49-30123457,originate_timeout=30}user/101 4930123457 XML default\n\
         Job-UUID: d67c648f-f071-47e5-ab5c-0001b2f46226\n\n"
    );
    assert_eq!(plan.job_uuid, JOB);
    assert_eq!(plan.call_id, "0b6e3c1a-5d2f-4c8e-9a71-3f0d2e4b5c6d");
}

#[test]
fn settings_shape_the_originate() {
    let settings = FsOriginateSettings {
        agent_endpoint: "sofia/internal/{extension}@pbx.example.com".into(),
        context: "outbound".into(),
        dialplan: "XML".into(),
        number_format: FsNumberFormat::E164,
        timeout_ms: 20_001,
    };
    let mut r = request();
    r.lead_id = None;
    r.lead_as_sent = None;
    let plan = click_to_call(&settings, &r, JOB).unwrap();
    assert_eq!(
        plan.command.command_line(),
        "bgapi originate {origination_uuid=0b6e3c1a-5d2f-4c8e-9a71-3f0d2e4b5c6d,\
         origination_caller_id_number=4930100,pbxlink_lead_number=+4930123457,\
         originate_timeout=21}sofia/internal/101@pbx.example.com +4930123457 XML outbound"
    );
    let national = FsOriginateSettings {
        number_format: FsNumberFormat::National,
        timeout_ms: 0,
        ..FsOriginateSettings::default()
    };
    let line = click_to_call(&national, &r, JOB).unwrap();
    assert!(
        line.command
            .command_line()
            .ends_with("originate_timeout=1}user/101 30123457 XML default"),
        "{}",
        line.command.command_line()
    );
    assert_eq!(FsNumberFormat::default().name(), "e164_digits");
}

fn refused(r: Result<OriginatePlan, ControlError>) -> ControlError {
    match r {
        Ok(p) => panic!("sent {:?}", p.command.command_line()),
        Err(e) => e,
    }
}

#[test]
fn every_value_that_could_break_out_is_refused() {
    let settings = FsOriginateSettings::default();
    let breakers = [
        "\r", "\n", " ", "\t", ",", "{", "}", "'", "\"", "\\", "$", "^", "|", "/", "&", ":", "=",
        "<", ">", "[", "]", "(", ")", ";", "\0",
    ];
    for b in breakers {
        let bad = format!("10{b}1");
        let cases: Vec<(&str, FsClickToCall, &str)> = vec![
            (
                "agent extension",
                FsClickToCall {
                    agent_extension: bad.clone(),
                    ..request()
                },
                JOB,
            ),
            (
                "call id",
                FsClickToCall {
                    call_id: bad.clone(),
                    ..request()
                },
                JOB,
            ),
            (
                "caller id",
                FsClickToCall {
                    caller_id: bad.clone(),
                    ..request()
                },
                JOB,
            ),
            (
                "lead id",
                FsClickToCall {
                    lead_id: Some(bad.clone()),
                    ..request()
                },
                JOB,
            ),
            (
                "LeadSquared",
                FsClickToCall {
                    lead_as_sent: Some(bad.clone()),
                    ..request()
                },
                JOB,
            ),
            ("Job-UUID", request(), bad.as_str()),
        ];
        for (what, r, job) in cases {
            let e = refused(click_to_call(&settings, &r, job));
            let text = e.to_string();
            assert!(text.contains(what), "{b:?} in {what}: {text}");
            assert!(
                matches!(e, ControlError::NotAToken { .. }),
                "{b:?} in {what}: {e:?}"
            );
        }
        // The lead's national number is digits by construction, but is checked anyway.
        let lead = FsClickToCall {
            lead: E164 {
                country_code: 49,
                national: bad.clone(),
            },
            ..request()
        };
        assert!(
            click_to_call(&settings, &lead, JOB).is_err(),
            "{b:?} in the lead"
        );
    }
    // Settings: refused by the command builders (a blank, a quote, a line break).
    for b in ["\n", "\r", " ", "'", "\"", "$", "\\"] {
        let context = FsOriginateSettings {
            context: format!("def{b}ault"),
            ..FsOriginateSettings::default()
        };
        assert!(matches!(
            refused(click_to_call(&context, &request(), JOB)),
            ControlError::Command(CommandError::Unsafe { .. })
        ));
        let dialplan = FsOriginateSettings {
            dialplan: format!("X{b}ML"),
            ..FsOriginateSettings::default()
        };
        assert!(click_to_call(&dialplan, &request(), JOB).is_err(), "{b:?}");
    }
    for endpoint in [
        "user/{extension} &park()",
        "user/{extension},user/999",
        "{x=y}user/{extension}",
    ] {
        let s = FsOriginateSettings {
            agent_endpoint: endpoint.into(),
            ..FsOriginateSettings::default()
        };
        assert!(
            matches!(
                refused(click_to_call(&s, &request(), JOB)),
                ControlError::Command(_)
            ),
            "{endpoint}"
        );
    }
    let no_placeholder = FsOriginateSettings {
        agent_endpoint: "user/100".into(),
        ..FsOriginateSettings::default()
    };
    let e = refused(click_to_call(&no_placeholder, &request(), JOB));
    assert!(matches!(e, ControlError::EndpointTemplate(_)));
    assert!(e.to_string().contains("{extension}"), "{e}");
    // Empty and overlong values.
    let empty = FsClickToCall {
        caller_id: String::new(),
        ..request()
    };
    assert!(matches!(
        refused(click_to_call(&settings, &empty, JOB)),
        ControlError::BadLength { .. }
    ));
    let long = FsClickToCall {
        lead_id: Some("x".repeat(MAX_TOKEN_BYTES + 1)),
        ..request()
    };
    assert!(matches!(
        refused(click_to_call(&settings, &long, JOB)),
        ControlError::BadLength { .. }
    ));
    // The refusal reaches the HTTP layer as an unsafe value (a 400, not a 502).
    assert!(matches!(PbxError::from(e), PbxError::Unsafe(_)));
}

#[test]
fn undef_as_a_value_is_refused() {
    // FreeSWITCH reads an argument spelled `undef` as missing.
    let r = FsClickToCall {
        agent_extension: "undef".into(),
        ..request()
    };
    let s = FsOriginateSettings {
        agent_endpoint: "{extension}".into(),
        ..FsOriginateSettings::default()
    };
    assert!(matches!(
        refused(click_to_call(&s, &r, JOB)),
        ControlError::Command(CommandError::Reserved { .. })
    ));
}

/// The command/reply and BACKGROUND_JOB events of the real click_to_call capture.
fn click_to_call_capture() -> (Vec<Reply>, Vec<BackgroundJob>) {
    let path = format!(
        "{}/tests/fixtures/freeswitch/click_to_call/esl.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut framer = Framer::new(FrameLimits::default());
    framer.extend(&std::fs::read(path).unwrap());
    let (mut replies, mut jobs) = (Vec::new(), Vec::new());
    while let Some(frame) = framer.next_frame().unwrap() {
        match frame {
            Frame::CommandReply(r) => replies.push(r),
            Frame::Event(e) => jobs.extend(e.background_job()),
            _ => {}
        }
    }
    (replies, jobs)
}

#[test]
fn the_real_originate_answers_read_as_accepted() {
    let (replies, jobs) = click_to_call_capture();
    assert_eq!(bgapi_accepted(&replies[0], "click to call").unwrap(), JOB);
    let job = jobs.iter().find(|j| j.job_uuid == JOB).unwrap();
    assert_eq!(job.command, "originate");
    assert_eq!(
        originate_result(job).unwrap(),
        "817776ba-8a78-4708-9119-01d48cc2c216"
    );
}

fn job(result: &str) -> BackgroundJob {
    let e = Event {
        headers: Headers::from_pairs(&[
            ("Event-Name", "BACKGROUND_JOB"),
            ("Job-UUID", JOB),
            ("Job-Command", "originate"),
        ]),
        body: Some(result.as_bytes().to_vec()),
    };
    e.background_job().unwrap()
}

#[test]
fn refusals_name_freeswitch_s_reason() {
    let e = originate_result(&job("-ERR USER_NOT_REGISTERED\n")).unwrap_err();
    assert_eq!(e.reason, "USER_NOT_REGISTERED");
    assert_eq!(
        e.to_string(),
        "FreeSWITCH refused click to call: USER_NOT_REGISTERED (the agent's phone is not \
         registered with FreeSWITCH)"
    );
    let e = originate_result(&job("-ERR NO_ANSWER\n")).unwrap_err();
    assert!(e.to_string().contains("NO_ANSWER"), "{e}");
    assert!(e.to_string().contains("timeout_ms"), "{e}");
    let e = originate_result(&job("-ERR SOMETHING_NEW\n")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "FreeSWITCH refused click to call: SOMETHING_NEW"
    );
    // Not +OK/-ERR at all, or empty: a refusal with the whole answer, bounded and escaped.
    let e = originate_result(&job("Module not loaded\r\n\x1b[31m")).unwrap_err();
    assert!(e.reason.starts_with("Module not loaded"), "{e:?}");
    assert!(
        !e.reason.contains('\x1b') && !e.reason.contains('\n'),
        "{e:?}"
    );
    assert!(originate_result(&job("")).is_err());
    assert!(originate_result(&job("+OK\n")).is_err());
    let long = format!("-ERR {}", "X".repeat(10_000));
    assert!(originate_result(&job(&long)).unwrap_err().reason.len() < 300);
    // It reaches the HTTP layer as a refusal (a 502).
    let e = originate_result(&job("-ERR USER_BUSY\n")).unwrap_err();
    assert!(matches!(PbxError::from(e), PbxError::Refused(m) if m.contains("USER_BUSY")));
    // The bgapi itself refused.
    let reply = Reply {
        headers: Headers::from_pairs(&[
            ("Content-Type", "command/reply"),
            ("Reply-Text", "-ERR command not found"),
        ]),
    };
    let e = bgapi_accepted(&reply, "click to call").unwrap_err();
    assert_eq!(e.reason, "command not found");
    let no_uuid = Reply {
        headers: Headers::from_pairs(&[("Reply-Text", "+OK")]),
    };
    assert!(bgapi_accepted(&no_uuid, "click to call").is_err());
}

#[test]
fn disposition_frees_the_callcenter_agent() {
    let cmds = free_agent_commands(FreeAgent::Available, "100@default").unwrap();
    let wire: Vec<String> = cmds
        .iter()
        .map(|c| String::from_utf8(c.to_wire()).unwrap())
        .collect();
    assert_eq!(
        wire,
        vec![
            "api callcenter_config agent set status 100@default 'Available'\n\n",
            "api callcenter_config agent set state 100@default 'Waiting'\n\n",
        ]
    );
    assert!(
        free_agent_commands(FreeAgent::None, "100")
            .unwrap()
            .is_empty()
    );
    // free_agent = "none" sends nothing, whatever the name.
    assert!(
        free_agent_commands(FreeAgent::None, "a b\n")
            .unwrap()
            .is_empty()
    );
    for b in ["\n", "\r", " ", "'", "\"", "\\", "$", ",", "{", "/"] {
        let agent = format!("10{b}0");
        assert!(
            free_agent_commands(FreeAgent::Available, &agent).is_err(),
            "{b:?}"
        );
        assert!(agent_status_query(&agent).is_err(), "{b:?}");
    }
    assert!(free_agent_commands(FreeAgent::Available, "").is_err());
    assert_eq!(
        agent_status_query("100").unwrap().to_wire(),
        b"api callcenter_config agent get status 100\n\n"
    );
    assert_eq!(callcenter_agent_name("100", None), "100");
    assert_eq!(callcenter_agent_name("100", Some("")), "100");
    assert_eq!(
        callcenter_agent_name("100", Some("100@default")),
        "100@default"
    );
}

#[test]
fn callcenter_answers_are_read() {
    assert_eq!(api_result(b"+OK\n", "freeing agent 100").unwrap(), "+OK");
    assert_eq!(api_result(b"Available", "status").unwrap(), "Available");
    let e = api_result(b"-ERR Agent not found!\n", "freeing agent 100").unwrap_err();
    assert_eq!(
        e.to_string(),
        "FreeSWITCH refused freeing agent 100: Agent not found! (mod_callcenter has no such \
         agent ([[agents]] callcenter_agent))"
    );
    assert!(api_result(b"-USAGE: callcenter_config ...", "x").is_err());
}

#[test]
fn new_uuids_are_version_4_and_usable_everywhere() {
    let a = new_uuid();
    let b = new_uuid();
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4");
    assert!(check_token("uuid", &a).is_ok());
    assert!(Command::bgapi("status", Some(&a)).is_ok());
}

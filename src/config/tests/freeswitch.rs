//! The `[freeswitch]` tables and `[[agents]] callcenter_agent`: defaults as issue 10 gives
//! them, every bad key named, the file source `call_log_source` selects.

use std::path::PathBuf;
use std::time::Duration;

use super::{LEADSQUARED_ONLY, MINIMAL, problem_keys};
use crate::config::*;

/// The `[freeswitch]` block of issue 10, verbatim (with the comments).
pub(super) const ISSUE_10_FREESWITCH: &str = r#"
[freeswitch]
call_log_source = "json_cdr"   # "json_cdr" | "cdr_csv" | "esl" | "both" (esl + the configured file source)
json_cdr_dir = "/var/log/freeswitch/json_cdr"      # mod_json_cdr's log-dir (one file per leg)
cdr_csv = "/var/log/freeswitch/cdr-csv/Master.csv" # mod_cdr_csv
cdr_template = "example"       # a template name of mod_cdr_csv's stock cdr_csv.conf.xml, or:
# cdr_columns = ["caller_id_name", "caller_id_number", ...]  # the ${variables} of your template, in order
cdr_time_zone = "UTC"          # zone of *_stamp values; *_uepoch/*_epoch are used whenever present
inbound_contexts = ["public"]  # where carrier calls arrive (stock FreeSWITCH)
outbound_contexts = ["default"]# where agents dial out; calls in other contexts are skipped and counted
free_agent = "available"       # after a disposition: mod_callcenter agent status Available (+ state Waiting), or "none"

[freeswitch.esl]
host = "127.0.0.1"
port = 8021
password = "ClueCon"           # or password_file

[freeswitch.originate]
agent_endpoint = "user/{extension}"  # how click to call rings the agent
context = "default"                  # where the lead's number is dialled
dialplan = "XML"
number_format = "e164_digits"
timeout_ms = 30000
"#;

fn freeswitch(extra: &str) -> Config {
    Config::parse(&format!("{LEADSQUARED_ONLY}{extra}")).expect("parses")
}

#[test]
fn the_freeswitch_block_of_the_issue_loads_as_written() {
    let c = freeswitch(ISSUE_10_FREESWITCH);
    assert_eq!(c.problems(), vec![], "a [freeswitch] table alone is a PBX");
    let fs = c.freeswitch.expect("[freeswitch]");
    assert_eq!(fs.call_log_source, FreeSwitchCallLogSource::JsonCdr);
    assert_eq!(
        fs.file_source(),
        Some(FreeSwitchFileSource::JsonCdr {
            dir: "/var/log/freeswitch/json_cdr".into()
        }),
        "cdr_csv is set but not selected: allowed and unused"
    );
    assert!(!fs.logs_from_esl());
    assert_eq!(fs.cdr_template, Some(CdrCsvTemplate::Example));
    assert_eq!(fs.cdr_time_zone.zone(), Some(chrono_tz::UTC));
    assert_eq!(fs.inbound_contexts, ["public"]);
    assert_eq!(fs.outbound_contexts, ["default"]);
    assert_eq!(fs.free_agent, FreeSwitchFreeAgent::Available);
    let esl = fs.esl.expect("[freeswitch.esl]");
    assert_eq!((esl.host.as_str(), esl.port), ("127.0.0.1", 8021));
    assert_eq!(esl.resolve_password(), Ok("ClueCon".into()));
    assert_eq!(fs.originate, FreeSwitchOriginateConfig::default());
}

#[test]
fn freeswitch_defaults_are_the_issue_texts() {
    let c = freeswitch("[freeswitch]\njson_cdr_dir = \"/j\"\n");
    assert_eq!(c.problems(), vec![]);
    let fs = c.freeswitch.expect("[freeswitch]");
    assert_eq!(fs.call_log_source, FreeSwitchCallLogSource::JsonCdr);
    assert_eq!(fs.cdr_template, None);
    assert_eq!(fs.cdr_time_zone, "UTC");
    assert_eq!(fs.inbound_contexts, ["public"]);
    assert_eq!(fs.outbound_contexts, ["default"]);
    assert_eq!(fs.free_agent, FreeSwitchFreeAgent::Available);
    assert_eq!(fs.reconcile_wait_ms, 60_000);
    assert_eq!(fs.start_at, StartAt::End);
    assert!(fs.esl.is_none());
    let o = &fs.originate;
    assert_eq!(o.agent_endpoint, "user/{extension}");
    assert_eq!(o.context, "default");
    assert_eq!(o.dialplan, "XML");
    assert_eq!(o.number_format, DialFormat::E164Digits);
    assert_eq!(o.timeout(), Duration::from_secs(30));
    assert_eq!(
        fs.cdr_column_names(),
        CdrCsvTemplate::Example.columns(),
        "no template and no columns: the stock default-template"
    );
    let esl = EslConfig::default();
    assert_eq!((esl.host.as_str(), esl.port), ("127.0.0.1", 8021));
}

#[test]
fn asterisk_and_freeswitch_may_both_be_present() {
    let c = Config::parse(&format!("{MINIMAL}{ISSUE_10_FREESWITCH}")).expect("parses");
    assert_eq!(c.problems(), vec![]);
    assert!(c.asterisk.is_some() && c.freeswitch.is_some());
}

#[test]
fn no_pbx_at_all_is_named() {
    let c = Config::parse(LEADSQUARED_ONLY).expect("parses");
    assert_eq!(problem_keys(&c), ["asterisk"]);
    assert!(c.problems()[0].message.contains("[freeswitch]"));
}

#[test]
fn each_call_log_source_selects_its_file_source_and_ignores_the_others() {
    let both_files = "json_cdr_dir = \"/j\"\ncdr_csv = \"/c.csv\"\n";
    let esl = "[freeswitch.esl]\npassword = \"p\"\n";
    let c = freeswitch(&format!(
        "[freeswitch]\ncall_log_source = \"cdr_csv\"\n{both_files}cdr_columns = [\"uuid\", \"caller_id_number\", \"destination_number\", \"context\", \"start_epoch\", \"end_uepoch\", \"hangup_cause\"]\n"
    ));
    assert_eq!(c.problems(), vec![]);
    let Some(FreeSwitchFileSource::CdrCsv { path, columns }) =
        c.freeswitch.expect("fs").file_source()
    else {
        panic!("cdr_csv selected");
    };
    assert_eq!(path, PathBuf::from("/c.csv"));
    assert_eq!(columns[4], "start_epoch");

    let c = freeswitch(&format!(
        "[freeswitch]\ncall_log_source = \"esl\"\n{both_files}{esl}"
    ));
    assert_eq!(c.problems(), vec![]);
    let fs = c.freeswitch.expect("fs");
    assert!(fs.logs_from_esl());
    assert_eq!(fs.file_source(), None);

    let c = freeswitch(&format!(
        "[freeswitch]\ncall_log_source = \"both\"\ncdr_csv = \"/c.csv\"\ncdr_template = \"snom\"\n{esl}"
    ));
    assert_eq!(c.problems(), vec![]);
    let fs = c.freeswitch.expect("fs");
    assert!(fs.logs_from_esl());
    assert_eq!(
        fs.file_source(),
        Some(FreeSwitchFileSource::CdrCsv {
            path: "/c.csv".into(),
            columns: CdrCsvTemplate::Snom.columns(),
        })
    );
}

#[test]
fn every_bad_freeswitch_key_is_named() {
    let cases: [(&str, &[&str]); 9] = [
        ("[freeswitch]\n", &["freeswitch.json_cdr_dir"]),
        (
            "[freeswitch]\ncall_log_source = \"cdr_csv\"\n",
            &["freeswitch.cdr_csv"],
        ),
        (
            "[freeswitch]\ncall_log_source = \"esl\"\n",
            &["freeswitch.call_log_source"],
        ),
        (
            "[freeswitch]\ncall_log_source = \"both\"\n[freeswitch.esl]\npassword = \"p\"\n",
            &["freeswitch.call_log_source"],
        ),
        (
            "[freeswitch]\ncall_log_source = \"both\"\njson_cdr_dir = \"/j\"\ncdr_csv = \"/c\"\n[freeswitch.esl]\npassword = \"p\"\n",
            &["freeswitch.call_log_source"],
        ),
        (
            "[freeswitch]\njson_cdr_dir = \"/j\"\ncdr_time_zone = \"Mars/Olympus\"\n\
             cdr_template = \"example\"\ncdr_columns = [\"uuid\", \"uuid\"]\n\
             inbound_contexts = [\"public\", \"\"]\n",
            &[
                "freeswitch.cdr_template",
                "freeswitch.cdr_columns",
                "freeswitch.cdr_time_zone",
                "freeswitch.inbound_contexts[1]",
            ],
        ),
        (
            "[freeswitch]\njson_cdr_dir = \"/j\"\ncdr_columns = [\"uuid\", \"caller_id_number\"]\n",
            &["freeswitch.cdr_columns"],
        ),
        (
            "[freeswitch]\ncall_log_source = \"esl\"\n[freeswitch.esl]\nhost = \"\"\nport = 0\n",
            &[
                "freeswitch.esl.host",
                "freeswitch.esl.port",
                "freeswitch.esl.password",
            ],
        ),
        (
            "[freeswitch]\njson_cdr_dir = \"/j\"\n[freeswitch.originate]\nagent_endpoint = \"user/100\"\n\
             context = \" \"\ndialplan = \"\"\ntimeout_ms = 0\n",
            &[
                "freeswitch.originate.agent_endpoint",
                "freeswitch.originate.context",
                "freeswitch.originate.dialplan",
                "freeswitch.originate.timeout_ms",
            ],
        ),
    ];
    for (text, expected) in cases {
        let keys = problem_keys(&freeswitch(text));
        assert_eq!(keys, expected, "{text}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("esl_password");
    std::fs::write(&file, "ClueCon\n").expect("write");
    let c = freeswitch(&format!(
        "[freeswitch]\ncall_log_source = \"esl\"\n[freeswitch.esl]\npassword_file = {file:?}\n"
    ));
    assert_eq!(c.problems(), vec![]);
    let esl = c.freeswitch.and_then(|f| f.esl).expect("esl");
    assert_eq!(esl.resolve_password(), Ok("ClueCon".into()));
    let c = freeswitch(&format!(
        "[freeswitch]\ncall_log_source = \"esl\"\n[freeswitch.esl]\npassword = \"x\"\npassword_file = {file:?}\n"
    ));
    assert_eq!(problem_keys(&c), ["freeswitch.esl.password"]);
}

#[test]
fn unknown_or_misspelt_freeswitch_keys_and_values_are_errors_naming_them() {
    for (text, named) in [
        ("[freeswitch]\njson_cdr_dirr = \"/j\"\n", "json_cdr_dirr"),
        ("[freeswitch.esl]\npasword = \"p\"\n", "pasword"),
        ("[freeswitch.originate]\ndial_plan = \"XML\"\n", "dial_plan"),
        ("[freeswitch]\ncall_log_source = \"cdr\"\n", "cdr"),
        ("[freeswitch]\ncdr_template = \"sql\"\n", "sql"),
        ("[freeswitch]\nfree_agent = \"unpause\"\n", "unpause"),
        (
            "[[agents]]\nextension = \"1\"\ncallcenter_agnt = \"x\"\n",
            "callcenter_agnt",
        ),
    ] {
        let err = Config::parse(&format!("{LEADSQUARED_ONLY}{text}")).expect_err(text);
        assert!(err.contains(named), "{text}: {err}");
    }
}

#[test]
fn every_stock_cdr_csv_template_carries_what_a_call_log_needs() {
    for template in CdrCsvTemplate::ALL {
        let checked = CdrColumns::new(template.columns(), &FREESWITCH_CDR_COLUMNS);
        assert_eq!(checked.error(), None, "{}", template.name());
        let text = format!(
            "[freeswitch]\ncall_log_source = \"cdr_csv\"\ncdr_csv = \"/c\"\ncdr_template = {:?}\n",
            template.name()
        );
        assert_eq!(freeswitch(&text).problems(), vec![], "{}", template.name());
    }
    let c = freeswitch(
        "[freeswitch]\ncall_log_source = \"cdr_csv\"\ncdr_csv = \"/c\"\n\
         cdr_columns = [\"${uuid}\", \"caller_id_number\", \"destination_number\", \"context\", \
         \"start_uepoch\", \"end_epoch\", \"hangup_cause\", \"cc_member_session_uuid\"]\n",
    );
    assert_eq!(c.problems(), vec![]);
    assert_eq!(
        c.freeswitch.expect("fs").cdr_column_names()[0],
        "uuid",
        "${{uuid}} as the template writes it"
    );
}

#[test]
fn the_recommended_pbxlink_template_is_accepted_with_the_columns_of_its_text() {
    let c = freeswitch(
        "[freeswitch]\ncall_log_source = \"cdr_csv\"\ncdr_csv = \"/c\"\ncdr_template = \"pbxlink\"\n",
    );
    assert_eq!(c.problems(), vec![]);
    let fs = c.freeswitch.expect("fs");
    assert_eq!(fs.cdr_template, Some(CdrCsvTemplate::Pbxlink));
    // The columns the config hands the reader are those of the template text that
    // docs/freeswitch-cdr.md tells users to paste into cdr_csv.conf.xml.
    let documented = crate::pbx::freeswitch::cdr::templates::layout("pbxlink")
        .expect("the pbxlink template")
        .columns;
    assert_eq!(fs.cdr_column_names(), documented);
    let docs = include_str!("../../../docs/freeswitch-cdr.md");
    assert!(docs.contains("cdr_template = \"pbxlink\""));
    assert!(docs.contains(crate::pbx::freeswitch::cdr::templates::PBXLINK));
}

#[test]
fn the_callcenter_agent_defaults_to_the_extension() {
    let text = format!(
        "{MINIMAL}[[agents]]\nextension = \"100\"\n[[agents]]\nextension = \"101\"\ncallcenter_agent = \"101@default\"\n"
    );
    let c = Config::parse(&text).expect("parses");
    assert_eq!(c.problems(), vec![]);
    assert_eq!(c.agents[0].callcenter_agent_name(), "100");
    assert_eq!(c.agents[1].callcenter_agent_name(), "101@default");
    let clash = format!(
        "{MINIMAL}[[agents]]\nextension = \"100\"\n[[agents]]\nextension = \"101\"\ncallcenter_agent = \"100\"\n\
         [[agents]]\nextension = \"102\"\ncallcenter_agent = \" \"\n\
         [[agents]]\nextension = \"103\"\ncallcenter_agent = \"103 Available\\r\\n\"\n"
    );
    let c = Config::parse(&clash).expect("parses");
    assert_eq!(
        problem_keys(&c),
        [
            "agents[1].callcenter_agent",
            "agents[2].callcenter_agent",
            "agents[3].callcenter_agent"
        ]
    );
    let twice =
        format!("{MINIMAL}[[agents]]\nextension = \"100\"\n[[agents]]\nextension = \"100\"\n");
    assert_eq!(
        problem_keys(&Config::parse(&twice).expect("parses")),
        ["agents[1].extension"],
        "a repeated extension is reported once, not again as its default callcenter_agent"
    );
}

//! The configuration as a whole: every example in the repository loads as before, every bad
//! key is named, and every key is classified for reload.

use super::*;
use std::path::PathBuf;
use std::time::Duration;

use crate::phone::NumberFormat;

const MINIMAL: &str = r#"
[store]
path = "/tmp/x.db"
[leadsquared]
call_log_url = "https://telephony.leadsquared.com/1/api/Telephony/LogCallComplete/abc"
default_country_code = "91"
[asterisk]
cdr_csv = "/var/log/asterisk/cdr-csv/Master.csv"
"#;

#[test]
fn minimal_config_is_valid_with_defaults() {
    let c = Config::parse(MINIMAL).expect("parses");
    assert_eq!(c.problems(), vec![]);
    assert_eq!(c.leadsquared.time_zone, "UTC");
    assert_eq!(c.leadsquared.number_format, NumberFormat::E164);
    assert_eq!(c.asterisk.as_ref().map(|a| a.settle_ms), Some(5_000));
}

#[test]
fn cdr_file_keys_default_to_refusing_links_and_starting_at_the_end() {
    let c = Config::parse(MINIMAL).expect("parses");
    let ast = c.asterisk.expect("[asterisk]");
    assert!(!ast.cdr_follow_symlink);
    assert_eq!(ast.start_at, StartAt::End);
    let text = MINIMAL.replace(
        "[asterisk]",
        "[asterisk]\ncdr_follow_symlink = true\nstart_at = \"beginning\"",
    );
    let ast = Config::parse(&text)
        .expect("parses")
        .asterisk
        .expect("[asterisk]");
    assert!(ast.cdr_follow_symlink);
    assert_eq!(ast.start_at, StartAt::Beginning);
    let text = MINIMAL.replace("[asterisk]", "[asterisk]\nstart_at = \"middle\"");
    let err = Config::parse(&text).expect_err("not a start position");
    assert!(err.contains("middle") && err.contains("beginning"), "{err}");
}

#[test]
fn the_shipped_example_is_valid() {
    let c = Config::parse(include_str!("../../examples/pbxlink.toml")).expect("parses");
    assert_eq!(c.problems(), vec![]);
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let text = MINIMAL.replace("[store]", "[store]\npathh = 1");
    let err = Config::parse(&text).expect_err("unknown key");
    assert!(err.contains("pathh"), "{err}");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[leadsquared]
call_log_url = "ftp://x"
time_zone = "Mars/Olympus"
default_country_code = "999"
[[agents]]
extension = "100"
[[agents]]
extension = "100"
[asterisk]
cdr_format = "custom"
cdr_columns = ["src"]
"#;
    let c = Config::parse(text).expect("parses");
    let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
    for key in [
        "leadsquared.call_log_url",
        "leadsquared.time_zone",
        "leadsquared.default_country_code",
        "agents[1].extension",
        "asterisk.cdr_csv",
        "asterisk.cdr_columns",
    ] {
        assert!(keys.contains(&key.to_string()), "{key} missing in {keys:?}");
    }
}

#[test]
fn secrets_come_from_file_when_not_inline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    std::fs::write(&file, "s3cret\n").expect("write");
    let text = format!(
        "{MINIMAL}\n",
        MINIMAL = MINIMAL.replace(
            "default_country_code = \"91\"",
            &format!(
                "default_country_code = \"91\"\naccess_key = \"ak\"\nsecret_key_file = {:?}",
                file
            )
        )
    );
    let c = Config::parse(&text).expect("parses");
    assert_eq!(c.problems(), vec![]);
    let creds = c.credentials().expect("resolves");
    assert_eq!(creds.access_key.as_deref(), Some("ak"));
    assert_eq!(creds.secret_key.as_deref(), Some("s3cret"));
    assert!(!format!("{creds:?}").contains("s3cret"));
}

// ---- every configuration that loaded before the split loads to the same values ----

/// Lines of keys added since the goldens were written, at their defaults.
const NEW_KEY_LINES: [&str; 3] = [
    "freeswitch: None,",
    "reconcile_wait_ms: 60000,",
    "callcenter_agent: None,",
];

/// What the code makes of `text`, in the goldens' format.
fn dump(text: &str) -> String {
    let mut out = String::new();
    match Config::parse(text) {
        Ok(c) => {
            out.push_str(&format!("{c:#?}\n--\n"));
            for p in c.problems() {
                out.push_str(&format!("{}: {}\n", p.key, p.message));
            }
        }
        Err(e) => out.push_str(&format!("parse error: {e}\n")),
    }
    out
}

/// (Debug lines without the new keys, problems as a sorted list without `*_file` keys).
fn comparable(dump: &str) -> (Vec<String>, Vec<String>) {
    let (debug, problems) = dump.split_once("\n--\n").unwrap_or((dump, ""));
    let debug = debug
        .lines()
        .filter(|l| !NEW_KEY_LINES.contains(&l.trim()))
        .map(String::from)
        .collect();
    let mut problems: Vec<String> = problems
        .lines()
        .filter(|l| {
            !l.split_once(": ")
                .is_some_and(|(key, _)| key.ends_with("_file"))
        })
        .map(String::from)
        .collect();
    problems.sort();
    (debug, problems)
}

/// Every configuration of the repository with the golden the old code wrote for it.
fn examples() -> Vec<(String, String, &'static str)> {
    macro_rules! fixture {
        ($name:literal) => {
            (
                $name.to_string(),
                include_str!(concat!("../../tests/fixtures/config/", $name, ".toml")).to_string(),
                include_str!(concat!("../../tests/fixtures/config/", $name, ".golden")),
            )
        };
    }
    let mut cases = vec![
        fixture!("tests_common"),
        fixture!("asterisk_live"),
        fixture!("asterisk_e2e_custom"),
        fixture!("demo"),
        fixture!("http_allow_from"),
        fixture!("bad_values"),
        (
            "examples/pbxlink.toml".into(),
            include_str!("../../examples/pbxlink.toml").into(),
            include_str!("../../tests/fixtures/config/examples_pbxlink.golden"),
        ),
        (
            "packaging/pbxlink.toml".into(),
            include_str!("../../packaging/pbxlink.toml").into(),
            include_str!("../../tests/fixtures/config/packaging_pbxlink.golden"),
        ),
    ];
    let readme_goldens = [
        include_str!("../../tests/fixtures/config/readme_block_0.golden"),
        include_str!("../../tests/fixtures/config/readme_block_1.golden"),
    ];
    let blocks: Vec<&str> = include_str!("../../README.md")
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(b))
        .collect();
    assert_eq!(
        blocks.len(),
        readme_goldens.len(),
        "README.md's toml blocks changed: add a golden for the new one"
    );
    for (i, (block, golden)) in blocks.iter().zip(readme_goldens).enumerate() {
        let mut text = String::from(
            "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n",
        );
        if !block.contains("[asterisk") {
            text.push_str("[asterisk]\ncdr_csv = \"/x\"\n");
        }
        text.push_str(block);
        cases.push((format!("README.md toml block {i}"), text, golden));
    }
    cases
}

#[test]
fn every_example_configuration_loads_to_the_same_values_as_before() {
    for (name, text, golden) in examples() {
        let (debug, problems) = comparable(&dump(&text));
        let (old_debug, old_problems) = comparable(golden);
        assert!(
            debug == old_debug,
            "{name}: parsed differently than before:\n{}",
            debug
                .iter()
                .zip(&old_debug)
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("now {a}\nwas {b}"))
                .chain(std::iter::once(format!(
                    "({} lines now, {} before)",
                    debug.len(),
                    old_debug.len()
                )))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(problems, old_problems, "{name}: problems changed");
    }
}

#[test]
fn the_parsed_values_are_typed_at_load() {
    let c = Config::parse(include_str!(
        "../../tests/fixtures/config/asterisk_live.toml"
    ))
    .expect("parses");
    let ast = c.asterisk.as_ref().expect("[asterisk]");
    assert_eq!(ast.cdr_time_zone.zone(), Some(chrono_tz::Asia::Kolkata));
    assert_eq!(c.leadsquared.time_zone.zone(), Some(chrono_tz::UTC));
    let columns = ast.custom_columns().expect("custom");
    assert_eq!(columns.len(), 22);
    assert_eq!(columns[1], "src");
    let c = Config::parse(include_str!(
        "../../tests/fixtures/config/http_allow_from.toml"
    ))
    .expect("parses");
    let http = c.http.expect("[http]");
    let networks: Vec<String> = http
        .allow_from
        .networks()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        networks,
        ["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/8"]
    );
    let csv = Config::parse(MINIMAL).expect("parses");
    assert_eq!(csv.asterisk.expect("[asterisk]").custom_columns(), None);
}

// ---- ConfigProblem is an error type ----

#[test]
fn a_config_problem_is_an_error_that_converts_with_question_mark() {
    fn needs_token(http: &HttpConfig) -> anyhow::Result<Option<String>> {
        Ok(http.resolve_token()?)
    }
    let http = HttpConfig {
        token: Some("t".into()),
        token_file: Some("/nonexistent/token".into()),
        ..HttpConfig::default()
    };
    let err = needs_token(&http).expect_err("both set");
    assert_eq!(
        err.to_string(),
        "http.token: set either token or token_file, not both"
    );
    let problem = err.downcast::<ConfigProblem>().expect("a ConfigProblem");
    assert_eq!(problem.key, "http.token");
    let as_error: &dyn std::error::Error = &problem;
    assert!(as_error.source().is_none());
}

// ---- the new keys ----

#[test]
fn reconcile_wait_defaults_to_a_minute_and_can_be_set() {
    let ast = Config::parse(MINIMAL)
        .expect("parses")
        .asterisk
        .expect("[asterisk]");
    assert_eq!(ast.reconcile_wait_ms, 60_000);
    assert_eq!(ast.reconcile_wait(), Duration::from_secs(60));
    let text = MINIMAL.replace("[asterisk]", "[asterisk]\nreconcile_wait_ms = 5000");
    let ast = Config::parse(&text)
        .expect("parses")
        .asterisk
        .expect("[asterisk]");
    assert_eq!(ast.reconcile_wait_ms, 5_000);
}

/// The `[freeswitch]` block of issue 10, verbatim (with the comments).
const ISSUE_10_FREESWITCH: &str = r#"
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

const LEADSQUARED_ONLY: &str = r#"
[leadsquared]
call_log_url = "https://telephony.leadsquared.com/1/api/Telephony/LogCallComplete/abc"
default_country_code = "91"
"#;

fn freeswitch(extra: &str) -> Config {
    Config::parse(&format!("{LEADSQUARED_ONLY}{extra}")).expect("parses")
}

fn problem_keys(c: &Config) -> Vec<String> {
    c.problems().into_iter().map(|p| p.key).collect()
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
            columns: CdrCsvTemplate::Snom
                .columns()
                .into_iter()
                .map(String::from)
                .collect(),
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
    for template in [
        CdrCsvTemplate::Example,
        CdrCsvTemplate::Snom,
        CdrCsvTemplate::Linksys,
        CdrCsvTemplate::Asterisk,
    ] {
        let columns = template.columns().into_iter().map(String::from).collect();
        let checked = CdrColumns::new(columns, &FREESWITCH_CDR_COLUMNS);
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
         [[agents]]\nextension = \"102\"\ncallcenter_agent = \" \"\n"
    );
    let c = Config::parse(&clash).expect("parses");
    assert_eq!(
        problem_keys(&c),
        ["agents[1].callcenter_agent", "agents[2].callcenter_agent"]
    );
    let twice =
        format!("{MINIMAL}[[agents]]\nextension = \"100\"\n[[agents]]\nextension = \"100\"\n");
    assert_eq!(
        problem_keys(&Config::parse(&twice).expect("parses")),
        ["agents[1].extension"],
        "a repeated extension is reported once, not again as its default callcenter_agent"
    );
}

// ---- reload: every key is classified ----

/// The keys serde accepts in the table at `path` (`""`: the top level), read from the
/// error naming an unknown key.
fn serde_keys(path: &str) -> Vec<String> {
    let text = if path.is_empty() {
        "__unknown__ = 1\n".to_string()
    } else {
        format!("[{path}]\n__unknown__ = 1\n")
    };
    let err = Config::parse(&text).expect_err("unknown key");
    let expected = err
        .split_once("expected")
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no key list in {err}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// A configuration with every optional table present.
fn full() -> Config {
    Config::parse(&format!(
        "{MINIMAL}[asterisk.ami]\nusername = \"u\"\n{ISSUE_10_FREESWITCH}[http]\n"
    ))
    .expect("parses")
}

#[test]
fn every_key_of_every_table_is_classified_live_or_restart() {
    let mut changes = reload::KeyChanges::default();
    let config = full();
    reload::ReloadKeys::compare(&config, &config, &mut changes);
    let compared: Vec<&str> = changes.all().iter().map(|k| k.key).collect();
    let mut unique = compared.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        compared.len(),
        "a key is compared twice: {compared:?}"
    );
    assert!(changes.all().iter().all(|k| !k.changed));
    let tables = [
        "",
        "store",
        "leadsquared",
        "asterisk",
        "asterisk.ami",
        "asterisk.originate",
        "freeswitch",
        "freeswitch.esl",
        "freeswitch.originate",
        "http",
    ];
    for table in tables {
        let keys = serde_keys(table);
        assert!(!keys.is_empty(), "{table}");
        for key in keys {
            let full_key = if table.is_empty() {
                key.clone()
            } else {
                format!("{table}.{key}")
            };
            let nested = format!("{full_key}.");
            assert!(
                compared
                    .iter()
                    .any(|k| *k == full_key || k.starts_with(&nested)),
                "{full_key} is accepted in the file but neither live nor restart; compared: {compared:?}"
            );
        }
    }
    let live = [
        "leadsquared.call_log_url",
        "leadsquared.access_key",
        "leadsquared.access_key_file",
        "leadsquared.secret_key",
        "leadsquared.secret_key_file",
        "leadsquared.time_zone",
        "leadsquared.number_format",
        "leadsquared.default_country_code",
        "leadsquared.request_timeout_ms",
        "leadsquared.call_duration_as_string",
        "leadsquared.status",
        "virtual_numbers",
        "agents",
    ];
    let classified_live: Vec<&str> = changes
        .all()
        .iter()
        .filter(|k| k.apply == reload::Apply::Live)
        .map(|k| k.key)
        .collect();
    assert_eq!(classified_live, live, "what a reload applies live");
}

#[test]
fn the_examples_commented_freeswitch_block_names_real_keys() {
    let example = include_str!("../../examples/pbxlink.toml");
    let start = example
        .find("# [freeswitch]\n")
        .expect("a [freeswitch] block");
    let end = start
        + example[start..]
            .find("\n\n")
            .expect("the block ends with a blank line");
    let mut block = String::new();
    for line in example[start..end].lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let is_setting = rest.starts_with('[')
            || rest.starts_with("  ")
            || rest
                .split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if is_setting {
            block.push_str(rest);
            block.push('\n');
        }
    }
    let text = example.replacen("# [freeswitch]\n", &block, 1);
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{block}"));
    let fs = c.freeswitch.as_ref().expect("[freeswitch]");
    assert_eq!(fs.cdr_columns.len(), 13);
    assert!(fs.esl.is_some());
    let keys: Vec<String> = problem_keys(&c)
        .into_iter()
        .filter(|k| k != "freeswitch.esl.password_file")
        .collect();
    assert_eq!(
        keys,
        ["freeswitch.cdr_template"],
        "the example shows both ways of naming columns (and a password file, which this \
         machine may lack)"
    );
}

//! The configuration as a whole: every example in the repository loads as before
//! ([`examples`]), every bad key is named, the FreeSWITCH keys ([`freeswitch`]), and every key
//! is classified for reload ([`reload`]).

mod examples;
mod freeswitch;
mod reload;

use std::time::Duration;

use super::*;
use crate::phone::NumberFormat;

pub(super) const MINIMAL: &str = r#"
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
    let c = Config::parse(include_str!("../../../examples/pbxlink.toml")).expect("parses");
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

/// The `[leadsquared]` table alone (no PBX).
pub(super) const LEADSQUARED_ONLY: &str = r#"
[leadsquared]
call_log_url = "https://telephony.leadsquared.com/1/api/Telephony/LogCallComplete/abc"
default_country_code = "91"
"#;

/// The keys of every problem of `c`.
pub(super) fn problem_keys(c: &Config) -> Vec<String> {
    c.problems().into_iter().map(|p| p.key).collect()
}

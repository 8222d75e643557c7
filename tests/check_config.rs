//! `pbxlink check-config` as a user runs it on a configuration with FreeSWITCH tables: the
//! real binary names every bad key (each on its own line) and passes a good file, with an
//! `[asterisk]` and a `[freeswitch]` table side by side.

use std::process::Command;

const LEADSQUARED: &str = r#"
[leadsquared]
call_log_url = "https://telephony.leadsquared.com/1/api/Telephony/LogCallComplete/abc"
default_country_code = "91"
"#;

/// Runs `pbxlink check-config` on `text`: (passed, stdout and stderr).
fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pbxlink.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("running pbxlink check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn asterisk_and_freeswitch_side_by_side_pass() {
    let (ok, out) = check_config(&format!(
        "{LEADSQUARED}\
         [asterisk]\ncdr_csv = \"/var/log/asterisk/cdr-csv/Master.csv\"\nreconcile_wait_ms = 30000\n\
         [freeswitch]\ncall_log_source = \"both\"\njson_cdr_dir = \"/var/log/freeswitch/json_cdr\"\n\
         [freeswitch.esl]\npassword = \"ClueCon\"\n\
         [freeswitch.originate]\nagent_endpoint = \"user/{{extension}}\"\n\
         [[agents]]\nextension = \"100\"\ncallcenter_agent = \"100@default\"\n"
    ));
    assert!(ok, "{out}");
    assert!(out.contains(": OK"), "{out}");
}

#[test]
fn every_bad_freeswitch_key_is_named_on_its_own_line() {
    let (ok, out) = check_config(&format!(
        "{LEADSQUARED}\
         [freeswitch]\ncall_log_source = \"esl\"\ncdr_time_zone = \"Mars/Olympus\"\n\
         cdr_columns = [\"uuid\"]\noutbound_contexts = [\"\"]\n\
         [freeswitch.esl]\nport = 0\n\
         [freeswitch.originate]\nagent_endpoint = \"user/100\"\ntimeout_ms = 0\n\
         [[agents]]\nextension = \"100\"\ncallcenter_agent = \"\"\n"
    ));
    assert!(!ok, "{out}");
    for key in [
        "freeswitch.cdr_time_zone",
        "freeswitch.cdr_columns",
        "freeswitch.outbound_contexts[0]",
        "freeswitch.esl.port",
        "freeswitch.esl.password",
        "freeswitch.originate.agent_endpoint",
        "freeswitch.originate.timeout_ms",
        "agents[0].callcenter_agent",
    ] {
        assert!(
            out.lines().any(|l| l.contains(&format!(": {key}: "))),
            "{key} not named in:\n{out}"
        );
    }
}

#[test]
fn a_misspelt_freeswitch_key_is_named() {
    let (ok, out) = check_config(&format!(
        "{LEADSQUARED}[freeswitch]\njson_cdr_dir = \"/j\"\n[freeswitch.esl]\npasswd = \"x\"\n"
    ));
    assert!(!ok, "{out}");
    assert!(out.contains("passwd"), "{out}");
}

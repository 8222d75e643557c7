//! Reload: every key serde accepts is compared, as live or restart, exactly once.

use super::MINIMAL;
use super::freeswitch::ISSUE_10_FREESWITCH;
use crate::config::Config;
use crate::config::reload::{Apply, KeyChanges, ReloadKeys};

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
        "{MINIMAL}[asterisk.ami]\nusername = \"u\"\n{ISSUE_10_FREESWITCH}[http]\n[recordings]\n"
    ))
    .expect("parses")
}

#[test]
fn every_key_of_every_table_is_classified_live_or_restart() {
    let mut changes = KeyChanges::default();
    let config = full();
    ReloadKeys::compare(&config, &config, &mut changes);
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
        "recordings",
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
        .filter(|k| k.apply == Apply::Live)
        .map(|k| k.key)
        .collect();
    assert_eq!(classified_live, live, "what a reload applies live");
}

#[test]
fn transfer_logs_reads_in_both_pbx_tables_and_a_change_needs_a_restart() {
    use crate::call::TransferLogs;
    let old = full();
    assert_eq!(
        old.asterisk.as_ref().map(|a| a.transfer_logs),
        Some(TransferLogs::PerAgent),
        "the default"
    );
    let text = format!(
        "{MINIMAL}[asterisk.ami]\nusername = \"u\"\n{ISSUE_10_FREESWITCH}[http]\n[recordings]\n"
    )
    .replacen(
        "[asterisk]\n",
        "[asterisk]\ntransfer_logs = \"single\"\n",
        1,
    )
    .replacen(
        "[freeswitch]\n",
        "[freeswitch]\ntransfer_logs = \"single\"\n",
        1,
    );
    let new = Config::parse(&text).expect("parses");
    assert_eq!(
        new.asterisk.as_ref().map(|a| a.transfer_logs),
        Some(TransferLogs::Single)
    );
    assert_eq!(
        new.freeswitch.as_ref().map(|f| f.transfer_logs),
        Some(TransferLogs::Single)
    );
    let mut changes = KeyChanges::default();
    ReloadKeys::compare(&old, &new, &mut changes);
    assert_eq!(
        changes.changed(Apply::Restart),
        ["asterisk.transfer_logs", "freeswitch.transfer_logs"]
    );
    let bad = MINIMAL.replacen("[asterisk]\n", "[asterisk]\ntransfer_logs = \"each\"\n", 1);
    let err = Config::parse(&bad).expect_err("an unknown mode");
    assert!(err.contains("per_agent"), "{err}");
}

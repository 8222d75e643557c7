//! What a configuration reload (SIGHUP) applies live and what needs a restart.
//!
//! Live: the agents and virtual numbers (the CDR source's directory, used for calls
//! assembled from then on; the AMI call tracker's; the HTTP API's) and the delivery client's
//! Call Log URL, keys, timeout and payload format (the next request uses them). Everything
//! else is read once at start. Each section of the configuration classifies its own keys
//! (`crate::config::reload::ReloadKeys`, beside its types), typed, so a key is always one or
//! the other.

use crate::config::Config;
use crate::config::reload::{Apply, KeyChanges, ReloadKeys};

/// The keys that changed between a running configuration and a new one, by when they take
/// effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Changed keys the running daemon applies.
    pub live: Vec<&'static str>,
    /// Changed keys that only take effect after a restart.
    pub restart: Vec<&'static str>,
}

/// Compares every key of `old` with `new`.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut changes = KeyChanges::default();
    old.compare(new, &mut changes);
    ReloadPlan {
        live: changes.changed(Apply::Live),
        restart: changes.changed(Apply::Restart),
    }
}

/// The keys that changed between `old` and `new` but only take effect after a restart.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    plan(old, new).restart
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).expect("config")
    }

    #[test]
    fn agents_and_url_are_live_paths_are_not() {
        let old = parse(
            r#"
[leadsquared]
call_log_url = "http://a/x"
[[agents]]
extension = "100"
phone = "+919876500100"
[asterisk]
cdr_csv = "/var/log/asterisk/cdr-csv/Master.csv"
"#,
        );
        let live = parse(
            r#"
[leadsquared]
call_log_url = "http://b/y"
[[agents]]
extension = "100"
phone = "+919876500199"
[asterisk]
cdr_csv = "/var/log/asterisk/cdr-csv/Master.csv"
"#,
        );
        assert!(restart_needed(&old, &live).is_empty());
        let moved = parse(
            r#"
[store]
path = "/tmp/other.db"
[leadsquared]
call_log_url = "http://a/x"
[asterisk]
cdr_csv = "/tmp/Master.csv"
"#,
        );
        assert_eq!(
            restart_needed(&old, &moved),
            vec!["store.path", "asterisk.cdr_csv"]
        );
    }

    const BASE: &str = r#"
[leadsquared]
call_log_url = "http://a/x"
default_country_code = "91"
[[agents]]
extension = "100"
phone = "+919876500100"
[asterisk]
cdr_csv = "/var/log/asterisk/cdr-csv/Master.csv"
"#;

    fn changed(from: &str, to: &str) -> ReloadPlan {
        let old = parse(BASE);
        let text = BASE.replacen(from, to, 1);
        assert_ne!(text, BASE, "{from:?} is not in the base config");
        plan(&old, &parse(&text))
    }

    #[test]
    fn the_payload_format_and_keys_are_live() {
        let p = changed(
            "default_country_code = \"91\"",
            "default_country_code = \"91\"\ntime_zone = \"Asia/Kolkata\"\nnumber_format = \"national\"\naccess_key = \"k\"",
        );
        assert_eq!(
            p.live,
            vec![
                "leadsquared.access_key",
                "leadsquared.time_zone",
                "leadsquared.number_format"
            ]
        );
        assert!(p.restart.is_empty(), "{p:?}");
    }

    #[test]
    fn an_agents_callcenter_name_is_live() {
        let p = changed(
            "phone = \"+919876500100\"",
            "phone = \"+919876500100\"\ncallcenter_agent = \"100@default\"",
        );
        assert_eq!(p.live, vec!["agents"]);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn the_new_pbx_keys_need_a_restart() {
        let p = changed(
            "[asterisk]",
            "[asterisk]\nreconcile_wait_ms = 1000\ncdr_time_zone = \"Asia/Kolkata\"",
        );
        assert_eq!(
            p.restart,
            vec!["asterisk.cdr_time_zone", "asterisk.reconcile_wait_ms"]
        );
        let fs = "[freeswitch]\njson_cdr_dir = \"/j\"\n[freeswitch.esl]\npassword = \"p\"\n";
        let p = changed("[asterisk]", &format!("{fs}[asterisk]"));
        assert_eq!(
            p.restart,
            vec!["freeswitch"],
            "a [freeswitch] table appearing"
        );
        let old = parse(&format!("{BASE}{fs}"));
        let new = parse(
            &format!("{BASE}{fs}").replace("password = \"p\"", "port = 8022\npassword = \"p\""),
        );
        assert_eq!(restart_needed(&old, &new), vec!["freeswitch.esl.port"]);
        let new = parse(&format!(
            "{BASE}{fs}[freeswitch.originate]\ncontext = \"agents\"\n"
        ));
        assert_eq!(
            restart_needed(&old, &new),
            vec!["freeswitch.originate.context"]
        );
    }

    #[test]
    fn http_and_ami_keys_need_a_restart_one_by_one() {
        let old = parse(&format!("{BASE}[asterisk.ami]\nusername = \"u\"\n[http]\n"));
        let new = parse(&format!(
            "{BASE}[asterisk.ami]\nusername = \"v\"\n[http]\nallow_from = [\"10.0.0.0/8\"]\n[http.params]\nlead_id = \"LeadId\"\n"
        ));
        assert_eq!(
            restart_needed(&old, &new),
            vec!["asterisk.ami.username", "http.allow_from", "http.params"]
        );
        let gone = parse(BASE);
        assert_eq!(restart_needed(&old, &gone), vec!["asterisk.ami", "http"]);
        assert!(plan(&old, &old) == ReloadPlan::default());
    }
}

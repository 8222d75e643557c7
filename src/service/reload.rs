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
}

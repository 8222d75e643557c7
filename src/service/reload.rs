//! What a configuration reload (SIGHUP) applies live and what needs a restart.
//!
//! Live: the agents and virtual numbers (the CDR source's directory, used for calls
//! assembled from then on; the AMI call tracker's; the HTTP API's) and the delivery client's
//! Call Log URL, keys, timeout and payload format (the next request uses them). Everything
//! else is read once at start.

use crate::config::Config;

/// The keys that changed between `old` and `new` but only take effect after a restart.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, a: String, b: String| {
        if a != b {
            keys.push(key);
        }
    };
    check(
        "store.path",
        old.store.path.display().to_string(),
        new.store.path.display().to_string(),
    );
    check(
        "store.synchronous",
        format!("{:?}", old.store.synchronous),
        format!("{:?}", new.store.synchronous),
    );
    check(
        "store.delivered_retention_days",
        old.store.delivered_retention_days.to_string(),
        new.store.delivered_retention_days.to_string(),
    );
    let (o, n) = (&old.leadsquared, &new.leadsquared);
    check(
        "leadsquared.rate_limit_*",
        format!("{} {}", o.rate_limit_requests, o.rate_limit_period_ms),
        format!("{} {}", n.rate_limit_requests, n.rate_limit_period_ms),
    );
    check(
        "leadsquared.retry_*",
        format!("{} {}", o.retry_initial_ms, o.retry_max_ms),
        format!("{} {}", n.retry_initial_ms, n.retry_max_ms),
    );
    check(
        "leadsquared.auth_failure_pause_ms",
        o.auth_failure_pause_ms.to_string(),
        n.auth_failure_pause_ms.to_string(),
    );
    check(
        "leadsquared.agent_popup_url",
        o.agent_popup_url.clone(),
        n.agent_popup_url.clone(),
    );
    check(
        "leadsquared.call_route_url",
        o.call_route_url.clone(),
        n.call_route_url.clone(),
    );
    check(
        "leadsquared popup_ttl_ms, api_host, app_host, sso_*, lead_lookup*",
        format!(
            "{} {} {} {} {:?} {:?} {} {}",
            o.popup_ttl_ms,
            o.api_host,
            o.app_host,
            o.sso_redirect,
            o.sso_password,
            o.sso_password_file,
            o.lead_lookup,
            o.lead_lookup_timeout_ms
        ),
        format!(
            "{} {} {} {} {:?} {:?} {} {}",
            n.popup_ttl_ms,
            n.api_host,
            n.app_host,
            n.sso_redirect,
            n.sso_password,
            n.sso_password_file,
            n.lead_lookup,
            n.lead_lookup_timeout_ms
        ),
    );
    check("http", format!("{:?}", old.http), format!("{:?}", new.http));
    match (&old.asterisk, &new.asterisk) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => keys.push("asterisk"),
        (Some(o), Some(n)) => {
            check(
                "asterisk.cdr_csv",
                format!("{:?}", o.cdr_csv),
                format!("{:?}", n.cdr_csv),
            );
            check(
                "asterisk.cdr_format/cdr_columns",
                format!("{:?} {:?}", o.cdr_format, o.cdr_columns),
                format!("{:?} {:?}", n.cdr_format, n.cdr_columns),
            );
            check(
                "asterisk.cdr_time_zone",
                o.cdr_time_zone.clone(),
                n.cdr_time_zone.clone(),
            );
            check(
                "asterisk.cdr_follow_symlink/start_at",
                format!("{} {:?}", o.cdr_follow_symlink, o.start_at),
                format!("{} {:?}", n.cdr_follow_symlink, n.start_at),
            );
            check(
                "asterisk.settle_ms/max_call_secs/poll_interval_ms",
                format!("{} {} {}", o.settle_ms, o.max_call_secs, o.poll_interval_ms),
                format!("{} {} {}", n.settle_ms, n.max_call_secs, n.poll_interval_ms),
            );
            check(
                "asterisk classification (contexts, prefixes, voicemail_apps, recording_url_template)",
                format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?}",
                    o.inbound_contexts,
                    o.outbound_contexts,
                    o.outbound_display_number,
                    o.outbound_dial_prefix,
                    o.voicemail_apps,
                    o.recording_url_template
                ),
                format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?}",
                    n.inbound_contexts,
                    n.outbound_contexts,
                    n.outbound_display_number,
                    n.outbound_dial_prefix,
                    n.voicemail_apps,
                    n.recording_url_template
                ),
            );
            check(
                "asterisk.ami",
                format!("{:?}", o.ami),
                format!("{:?}", n.ami),
            );
            check(
                "asterisk.originate, free_agent, call_log_source",
                format!(
                    "{:?} {:?} {:?}",
                    o.originate, o.free_agent, o.call_log_source
                ),
                format!(
                    "{:?} {:?} {:?}",
                    n.originate, n.free_agent, n.call_log_source
                ),
            );
        }
    }
    keys
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

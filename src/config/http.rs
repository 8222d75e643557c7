//! `[http]` and `[http.params]`: the API for click to call, disposition, call routing,
//! health and metrics; its checks and how a reload treats it (every key needs a restart).

use std::path::PathBuf;

use serde::Deserialize;

use super::parsed::NetworkList;
use super::reload::{KeyChanges, ReloadKeys};
use super::secret::inline_or_file;
use super::{ConfigProblem, Problems};

/// `[http]`: the API for click to call, disposition, call routing, health and metrics.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// Every endpoint but `/healthz` needs it (query `token=` or `Authorization: Bearer`).
    pub token: Option<String>,
    /// File holding the token (first line).
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain, for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key, for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Only these networks may call (CIDR, parsed at load: `networks()`); empty: any.
    pub allow_from: NetworkList,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests per second allowed from one address (bursts of the same size).
    pub requests_per_second: u32,
    /// The word click to call answers when the PBX accepted the call.
    pub response_keyword: String,
    /// The same click to call repeated within this time does not ring twice.
    pub click_to_call_dedupe_ms: u64,
    /// `/route` answers within this time whatever the CRM does.
    pub route_timeout_ms: u64,
    /// What `/route` answers when the CRM does not name a known agent in time.
    pub route_fallback: String,
    /// How long a `/route` answer is cached per caller.
    pub route_cache_ms: u64,
    /// Parameter names of click to call and disposition.
    pub params: ParamNames,
    /// Open connections at most (also kept below the open-file limit, with room left for
    /// CRM and PBX connections); beyond it a new connection is closed at accept.
    pub max_connections: usize,
    /// A client must send a request's headers (and the TLS handshake) within this time.
    pub header_read_timeout_ms: u64,
    /// A connection with nothing moving either way and no request in flight is closed.
    pub idle_timeout_ms: u64,
    /// Failed token checks one address may make per minute; then 429 until the minute ends.
    pub auth_failures_per_minute: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8478)),
            token: None,
            token_file: None,
            tls_cert: None,
            tls_key: None,
            allow_from: NetworkList::default(),
            max_body_bytes: 16 * 1024,
            requests_per_second: 20,
            response_keyword: "OK".into(),
            click_to_call_dedupe_ms: 5_000,
            route_timeout_ms: 1_500,
            route_fallback: String::new(),
            route_cache_ms: 60_000,
            params: ParamNames::default(),
            max_connections: 256,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            auth_failures_per_minute: 10,
        }
    }
}

impl HttpConfig {
    /// The token: inline, else from `token_file`; None when neither is set.
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigProblem> {
        inline_or_file("http.token", &self.token, &self.token_file)
    }

    /// Every problem of `[http]`.
    pub(crate) fn check(&self, problems: &mut Problems) {
        problems.check(self.resolve_token());
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.add("http.tls_cert", "tls_cert and tls_key go together");
        }
        self.allow_from.check("http.allow_from", problems);
        if self.response_keyword.is_empty() {
            problems.add("http.response_keyword", "must not be empty");
        }
        for (key, value) in [
            ("http.max_connections", self.max_connections as u64),
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
            ("http.idle_timeout_ms", self.idle_timeout_ms),
            (
                "http.auth_failures_per_minute",
                u64::from(self.auth_failures_per_minute),
            ),
        ] {
            if value == 0 {
                problems.add(key, "must be at least 1");
            }
        }
    }
}

/// `[http.params]`: the names LeadSquared's mail-merge fields arrive under.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ParamNames {
    /// The virtual number to show the lead.
    pub virtual_number: String,
    /// The lead's id.
    pub lead_id: String,
    /// The lead's number without country code.
    pub customer_number: String,
    /// The lead's number with country code (preferred).
    pub phone_with_country_code: String,
    /// The agent's phone.
    pub agent_number: String,
    /// The agent's name.
    pub agent_name: String,
    /// The agent's e-mail.
    pub agent_email: String,
    /// Disposition: the call's id.
    pub call_session_id: String,
    /// Disposition: the value picked.
    pub disposition_value: String,
    /// Disposition: free-text notes.
    pub notes: String,
}

impl Default for ParamNames {
    fn default() -> Self {
        Self {
            virtual_number: "virtualNumber".into(),
            lead_id: "leadId".into(),
            customer_number: "customerNumber".into(),
            phone_with_country_code: "PhoneNumberWithCountryCode".into(),
            agent_number: "agentNumber".into(),
            agent_name: "agentName".into(),
            agent_email: "agentEmail".into(),
            call_session_id: "callSessionId".into(),
            disposition_value: "dispositionValue".into(),
            notes: "notes".into(),
        }
    }
}

/// The HTTP server, its guards and its state are built once at start: every key needs a
/// restart (`[http.params]` is compared whole).
impl ReloadKeys for HttpConfig {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let HttpConfig {
            listen,
            token,
            token_file,
            tls_cert,
            tls_key,
            allow_from,
            max_body_bytes,
            requests_per_second,
            response_keyword,
            click_to_call_dedupe_ms,
            route_timeout_ms,
            route_fallback,
            route_cache_ms,
            params,
            max_connections,
            header_read_timeout_ms,
            idle_timeout_ms,
            auth_failures_per_minute,
        } = self;
        let n = new;
        changes.restart("http.listen", listen, &n.listen);
        changes.restart("http.token", token, &n.token);
        changes.restart("http.token_file", token_file, &n.token_file);
        changes.restart("http.tls_cert", tls_cert, &n.tls_cert);
        changes.restart("http.tls_key", tls_key, &n.tls_key);
        changes.restart("http.allow_from", allow_from, &n.allow_from);
        changes.restart("http.max_body_bytes", max_body_bytes, &n.max_body_bytes);
        changes.restart(
            "http.requests_per_second",
            requests_per_second,
            &n.requests_per_second,
        );
        changes.restart(
            "http.response_keyword",
            response_keyword,
            &n.response_keyword,
        );
        changes.restart(
            "http.click_to_call_dedupe_ms",
            click_to_call_dedupe_ms,
            &n.click_to_call_dedupe_ms,
        );
        changes.restart(
            "http.route_timeout_ms",
            route_timeout_ms,
            &n.route_timeout_ms,
        );
        changes.restart("http.route_fallback", route_fallback, &n.route_fallback);
        changes.restart("http.route_cache_ms", route_cache_ms, &n.route_cache_ms);
        changes.restart("http.params", params, &n.params);
        changes.restart("http.max_connections", max_connections, &n.max_connections);
        changes.restart(
            "http.header_read_timeout_ms",
            header_read_timeout_ms,
            &n.header_read_timeout_ms,
        );
        changes.restart("http.idle_timeout_ms", idle_timeout_ms, &n.idle_timeout_ms);
        changes.restart(
            "http.auth_failures_per_minute",
            auth_failures_per_minute,
            &n.auth_failures_per_minute,
        );
    }
}

//! The HTTP client for LeadSquared's telephony endpoints and the classification of answers.
//!
//! Every client that talks to the CRM ([`crm_http_client`]) follows no redirect, so the keys
//! and the payload only ever reach the configured hosts; a 3xx pauses delivery like a 404.
//! Every answer's body is read with a bound and a deadline ([`read_bounded`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use tokio::time::Instant;

use super::payload::PayloadFormat;
use crate::call::CallRecord;
use crate::config::{Config, Credentials};
use crate::outbox::delivery::parse_retry_after;
use crate::outbox::{OutboxRow, SendOutcome, Sender};

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// reqwest could not build its client (TLS roots, ...).
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// Posts call logs to the configured Call Log URL.
///
/// Clones share their settings: [`LeadSquaredClient::reload`] (SIGHUP) swaps the URL,
/// credentials and payload format for every clone; a request in flight keeps the old ones.
#[derive(Debug, Clone)]
pub struct LeadSquaredClient {
    endpoint: Arc<RwLock<Arc<Endpoint>>>,
}

/// The settings one request is made with.
#[derive(Debug)]
struct Endpoint {
    http: reqwest::Client,
    /// Bounds the whole exchange, body included.
    timeout: Duration,
    call_log_url: String,
    agent_popup_url: String,
    credentials: Credentials,
    format: PayloadFormat,
}

/// Longest response body kept in logs and dead letters.
const MAX_BODY_KEPT: usize = 2_000;

/// The most bytes of a CRM answer's body read; the rest is never read (the connection is
/// dropped). LeadSquared's answers are a few hundred bytes.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// How an answer's body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to its end, within the bound.
    Complete,
    /// Longer than [`MAX_RESPONSE_BODY`]: cut there, the rest not read.
    TooLong,
    /// The connection failed while the body was read.
    Cut(String),
    /// No more bytes came before the deadline.
    Stalled,
}

/// The body of an answer, read with a bound and a deadline.
#[derive(Debug, Clone)]
pub struct BoundedBody {
    /// The bytes read (at most [`MAX_RESPONSE_BODY`]), invalid UTF-8 replaced.
    pub text: String,
    /// Whether the body was read whole.
    pub end: BodyEnd,
}

/// Reads at most `limit` bytes of `response`'s body, chunk by chunk, and gives up at
/// `deadline`, so neither a 1 GiB body nor a body that stalls can hold a worker or its memory.
pub async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> BoundedBody {
    let mut bytes = Vec::new();
    let end = loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => break BodyEnd::Stalled,
            Ok(Err(e)) => break BodyEnd::Cut(transport_error(&e)),
            Ok(Ok(None)) => break BodyEnd::Complete,
            Ok(Ok(Some(chunk))) => {
                let room = limit.saturating_sub(bytes.len());
                if chunk.len() > room {
                    bytes.extend_from_slice(&chunk[..room]);
                    break BodyEnd::TooLong;
                }
                bytes.extend_from_slice(&chunk);
            }
        }
    };
    BoundedBody {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        end,
    }
}

/// A reqwest client for a CRM endpoint: no redirect followed (a 3xx comes back as it is),
/// `timeout` for the whole exchange.
pub fn crm_http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("pbxlink/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Where a 3xx answer points, escaped and bounded for a log line.
pub fn redirect_target(headers: &HeaderMap) -> String {
    headers.get(LOCATION).map_or_else(
        || "(no Location header)".to_owned(),
        |v| crate::logtext::excerpt(v.as_bytes(), 200),
    )
}

impl LeadSquaredClient {
    /// A client for the configuration's endpoints.
    pub fn new(config: &Config, credentials: Credentials) -> Result<Self, ClientError> {
        Ok(Self {
            endpoint: Arc::new(RwLock::new(Arc::new(Endpoint::new(config, credentials)?))),
        })
    }

    /// Applies a new configuration's URL, credentials, timeout and payload format to this
    /// client and its clones; the next request uses them.
    pub fn reload(&self, config: &Config, credentials: Credentials) -> Result<(), ClientError> {
        let endpoint = Arc::new(Endpoint::new(config, credentials)?);
        *self.endpoint.write().unwrap_or_else(|e| e.into_inner()) = endpoint;
        Ok(())
    }

    fn current(&self) -> Arc<Endpoint> {
        self.endpoint
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The payload format in use.
    pub fn format(&self) -> PayloadFormat {
        self.current().format.clone()
    }
}

impl Endpoint {
    fn new(config: &Config, credentials: Credentials) -> Result<Self, ClientError> {
        let timeout = config.leadsquared.request_timeout();
        Ok(Self {
            http: crm_http_client(timeout)?,
            timeout,
            call_log_url: config.leadsquared.call_log_url.clone(),
            agent_popup_url: config.leadsquared.agent_popup_url.clone(),
            credentials,
            format: PayloadFormat::from_config(&config.leadsquared),
        })
    }

    async fn post_json(&self, url: &str, body: &serde_json::Value) -> SendOutcome {
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.credentials.access_key {
            request = request.header("x-LSQ-AccessKey", key);
        }
        if let Some(key) = &self.credentials.secret_key {
            request = request.header("x-LSQ-SecretKey", key);
        }
        let deadline = Instant::now() + self.timeout;
        match request.send().await {
            Ok(mut response) => {
                let status = response.status();
                let headers = response.headers().clone();
                let body = read_bounded(&mut response, MAX_RESPONSE_BODY, deadline).await;
                classify_answer(status, &headers, &body)
            }
            Err(e) => SendOutcome::Retry {
                status: None,
                reason: transport_error(&e),
                retry_after: None,
            },
        }
    }
}

impl Sender for LeadSquaredClient {
    async fn send(&self, row: &OutboxRow) -> SendOutcome {
        let call: CallRecord = match serde_json::from_str(&row.body) {
            Ok(call) => call,
            Err(e) => {
                return SendOutcome::Reject {
                    status: 0,
                    reason: format!("stored call cannot be read: {e}"),
                };
            }
        };
        // A lead id from click to call fills in what the PBX records did not carry.
        let call = match (&call.lead_id, &row.lead_id) {
            (None, Some(lead_id)) => CallRecord {
                lead_id: Some(lead_id.clone()),
                ..call
            },
            _ => call,
        };
        let endpoint = self.current();
        let body = endpoint.format.call_log(&call, row.notes.as_deref());
        endpoint.post_json(&endpoint.call_log_url, &body).await
    }
}

impl LeadSquaredClient {
    /// Posts an Agent Popup body to `[leadsquared] agent_popup_url`.
    pub async fn send_popup(&self, body: &serde_json::Value) -> SendOutcome {
        let endpoint = self.current();
        if endpoint.agent_popup_url.is_empty() {
            return SendOutcome::Reject {
                status: 0,
                reason: "[leadsquared] agent_popup_url is not set".into(),
            };
        }
        endpoint.post_json(&endpoint.agent_popup_url, body).await
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // reqwest's Display omits the cause chain; the cause says e.g. "Connection refused".
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What an answer whose body was read whole means for the row that was sent.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> SendOutcome {
    classify_answer(
        status,
        headers,
        &BoundedBody {
            text: body.to_owned(),
            end: BodyEnd::Complete,
        },
    )
}

/// What an answer from LeadSquared means for the row that was sent.
///
/// A 2xx means the CRM accepted the row, whatever happened to the body after the status
/// line: a body longer than [`MAX_RESPONSE_BODY`], cut by the connection or stalled past the
/// deadline still counts as delivered (posting again would log the call twice); the log says
/// how the body ended. A 2xx whose complete body says `"Status":"Error"` is a refusal (dead
/// letter). A 200 whose complete body is not JSON at all is no LeadSquared answer (every
/// documented answer is JSON): something else answers at the configured URL (a proxy, a login
/// page), so delivery pauses like on a 404 and the row stays pending; an empty 204 is accepted.
/// A 3xx is never followed: delivery pauses naming the `Location`.
pub fn classify_answer(status: StatusCode, headers: &HeaderMap, body: &BoundedBody) -> SendOutcome {
    let code = status.as_u16();
    let body_kept = crate::logtext::excerpt(body.text.as_bytes(), MAX_BODY_KEPT);
    if status.is_success() {
        if body.end != BodyEnd::Complete {
            let how = match &body.end {
                BodyEnd::TooLong => format!("body longer than {MAX_RESPONSE_BODY} bytes, cut"),
                BodyEnd::Cut(e) => format!("body cut: {e}"),
                BodyEnd::Stalled => "body stalled past the request timeout".to_owned(),
                BodyEnd::Complete => String::new(),
            };
            tracing::warn!(
                status = code,
                "CRM accepted (HTTP {code}) but its answer was not read whole ({how}); \
                 counted as delivered, not posted again"
            );
            return SendOutcome::Delivered {
                status: code,
                response: format!("[{how}] {body_kept}"),
            };
        }
        let json = serde_json::from_str::<serde_json::Value>(&body.text).ok();
        if json.is_none() && code != 204 {
            return SendOutcome::Pause {
                status: code,
                reason: format!(
                    "HTTP {code} whose body is not JSON: not LeadSquared's API answering at the \
                     configured URL (a proxy or web page?); check the URL: {}",
                    crate::logtext::excerpt(body.text.as_bytes(), 200)
                ),
            };
        }
        // LeadSquared answers some failures with 200 and `"Status":"Error"`.
        let says_error = json
            .as_ref()
            .and_then(|v| v.get("Status").and_then(|s| s.as_str()))
            .is_some_and(|s| s.eq_ignore_ascii_case("error"));
        return if says_error {
            SendOutcome::Reject {
                status: code,
                reason: format!("HTTP {code} with an error body: {body_kept}"),
            }
        } else {
            SendOutcome::Delivered {
                status: code,
                response: body_kept,
            }
        };
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    match code {
        408 | 429 | 500..=599 => SendOutcome::Retry {
            status: Some(code),
            reason: format!("HTTP {code}: {body_kept}"),
            retry_after,
        },
        401 | 403 | 404 => SendOutcome::Pause {
            status: code,
            reason: format!("HTTP {code}: {body_kept}"),
        },
        300..=399 => SendOutcome::Pause {
            status: code,
            reason: format!(
                "HTTP {code} redirect to {} not followed (pbxlink never follows redirects, \
                 so the keys go nowhere else); set the CRM's final URL",
                redirect_target(headers)
            ),
        },
        _ => SendOutcome::Reject {
            status: code,
            reason: format!("HTTP {code}: {body_kept}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, v.parse().expect("header"));
        h
    }

    #[test]
    fn success_and_error_bodies() {
        let ok = classify(
            StatusCode::OK,
            &HeaderMap::new(),
            r#"{"Status":"Success","Message":{"Id":"x"}}"#,
        );
        assert!(matches!(ok, SendOutcome::Delivered { status: 200, .. }));
        let err = classify(
            StatusCode::OK,
            &HeaderMap::new(),
            r#"{"Status":"Error","ExceptionMessage":"Invalid Number"}"#,
        );
        assert!(
            matches!(err, SendOutcome::Reject { status: 200, ref reason } if reason.contains("Invalid Number"))
        );
    }

    #[test]
    fn transient_failures_retry_with_retry_after() {
        let r = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &with_retry_after("12"),
            "slow down",
        );
        assert_eq!(
            r,
            SendOutcome::Retry {
                status: Some(429),
                reason: "HTTP 429: slow down".into(),
                retry_after: Some(Duration::from_secs(12)),
            }
        );
        for code in [408u16, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(code).expect("code");
            assert!(matches!(
                classify(s, &HeaderMap::new(), ""),
                SendOutcome::Retry { .. }
            ));
        }
    }

    #[test]
    fn auth_pauses_and_bad_requests_are_rejected() {
        for code in [401u16, 403, 404] {
            let s = StatusCode::from_u16(code).expect("code");
            assert!(matches!(
                classify(s, &HeaderMap::new(), ""),
                SendOutcome::Pause { .. }
            ));
        }
        for code in [400u16, 413, 422] {
            let s = StatusCode::from_u16(code).expect("code");
            assert!(matches!(
                classify(s, &HeaderMap::new(), ""),
                SendOutcome::Reject { .. }
            ));
        }
    }

    #[test]
    fn huge_bodies_are_truncated() {
        let body = "é".repeat(5_000);
        match classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), &body) {
            SendOutcome::Reject { reason, .. } => assert!(reason.len() < 2_100),
            other => panic!("{other:?}"),
        }
    }
}

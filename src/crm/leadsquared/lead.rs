//! LeadSquared's v2 API for agent tools: the single sign-on key (`GetSingleSignOnKey`) behind
//! `/sso`, and the lead lookup by phone (`RetrieveLeadByPhoneNumber`) that adds `LeadId` to a
//! popup. Both authenticate with `accessKey`/`secretKey` query parameters, as the v2 API does.
//!
//! No redirect is followed (the keys are in the query string: they must reach `api_host` and
//! nothing else), and an answer is read up to
//! [`MAX_RESPONSE_BODY`](super::client::MAX_RESPONSE_BODY) within the timeout; a longer, cut or
//! stalled answer is an error ([`LeadApiError::Body`]).

use std::time::Duration;

use serde_json::Value;

use super::client::{BodyEnd, MAX_RESPONSE_BODY, crm_http_client, read_bounded, redirect_target};
use crate::config::{Config, Credentials};

/// Why a v2 API call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum LeadApiError {
    /// The configuration lacks what the call needs.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// No HTTP answer (timeout, connection refused, TLS).
    #[error("{what}: request failed: {source}")]
    Transport {
        /// Which call.
        what: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not a success.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// Which call.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A 3xx: never followed.
    #[error("{what}: HTTP {status} redirect to {location} not followed; check api_host")]
    Redirect {
        /// Which call.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The `Location`, escaped and bounded.
        location: String,
    },
    /// A success whose body could not be read whole (too long, cut, stalled).
    #[error("{what}: answer not read whole: {end:?}")]
    Body {
        /// Which call.
        what: &'static str,
        /// How the body ended.
        end: BodyEnd,
    },
    /// A success whose body is not what the API documents.
    #[error("{what}: unexpected answer: {body}")]
    Shape {
        /// Which call.
        what: &'static str,
        /// The start of the body.
        body: String,
    },
}

/// A client for the v2 API of one account.
#[derive(Debug, Clone)]
pub struct LeadApi {
    http: reqwest::Client,
    timeout: Duration,
    api_host: String,
    app_host: String,
    redirect: String,
    credentials: Credentials,
    sso_password: Option<String>,
}

fn clip(text: &str) -> String {
    crate::logtext::excerpt(text.as_bytes(), 200)
}

impl LeadApi {
    /// The client for `[leadsquared]`; `timeout` bounds each request.
    pub fn new(config: &Config, timeout: Duration) -> anyhow::Result<Self> {
        let ls = &config.leadsquared;
        Ok(Self {
            http: crm_http_client(timeout)?,
            timeout,
            api_host: ls.api_host.trim_end_matches('/').to_owned(),
            app_host: ls.app_host.trim_end_matches('/').to_owned(),
            redirect: ls.sso_redirect.clone(),
            credentials: config.credentials()?,
            sso_password: config.sso_password()?,
        })
    }

    fn url(&self, path: &str, params: &[(&str, &str)]) -> Result<reqwest::Url, LeadApiError> {
        let (Some(access), Some(secret)) =
            (&self.credentials.access_key, &self.credentials.secret_key)
        else {
            return Err(LeadApiError::NotConfigured(
                "[leadsquared] access_key and secret_key are needed for the v2 API",
            ));
        };
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.api_host))
            .map_err(|_| LeadApiError::NotConfigured("[leadsquared] api_host is not a URL"))?;
        url.query_pairs_mut()
            .append_pair("accessKey", access)
            .append_pair("secretKey", secret)
            .extend_pairs(params);
        Ok(url)
    }

    async fn get_json(&self, what: &'static str, url: reqwest::Url) -> Result<Value, LeadApiError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut response =
            self.http
                .get(url)
                .send()
                .await
                .map_err(|source| LeadApiError::Transport {
                    what,
                    // The URL carries the keys: keep it out of logs.
                    source: source.without_url(),
                })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(LeadApiError::Redirect {
                what,
                status: status.as_u16(),
                location: redirect_target(response.headers()),
            });
        }
        let body = read_bounded(&mut response, MAX_RESPONSE_BODY, deadline).await;
        let text = body.text;
        if !status.is_success() {
            return Err(LeadApiError::Status {
                what,
                status: status.as_u16(),
                body: clip(&text),
            });
        }
        if body.end != BodyEnd::Complete {
            return Err(LeadApiError::Body {
                what,
                end: body.end,
            });
        }
        serde_json::from_str(&text).map_err(|_| LeadApiError::Shape {
            what,
            body: clip(&text),
        })
    }

    /// Asks for a sign-on key for the user `email`.
    pub async fn sign_on_key(&self, email: &str) -> Result<String, LeadApiError> {
        const WHAT: &str = "GetSingleSignOnKey";
        let mut params = vec![("userName", email)];
        if let Some(p) = &self.sso_password {
            params.push(("password", p));
        }
        let url = self.url("/v2/Telephony.svc/GetSingleSignOnKey", &params)?;
        let answer = self.get_json(WHAT, url).await?;
        // Documented as a JSON string; some accounts wrap it in an object.
        let key = match &answer {
            Value::String(k) => Some(k.clone()),
            Value::Object(map) => ["Key", "SSOKey", "Message"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str).map(str::to_owned)),
            _ => None,
        };
        key.filter(|k| !k.trim().is_empty())
            .ok_or_else(|| LeadApiError::Shape {
                what: WHAT,
                body: clip(&answer.to_string()),
            })
    }

    /// Where the browser goes with a sign-on key (and the lead, when known).
    pub fn redirect_url(&self, key: &str, lead_id: Option<&str>) -> String {
        let enc =
            |v: &str| -> String { url::form_urlencoded::byte_serialize(v.as_bytes()).collect() };
        self.redirect
            .replace("{app_host}", &self.app_host)
            .replace("{key}", &enc(key))
            .replace("{lead_id}", &enc(lead_id.unwrap_or_default()))
    }

    /// The id (`ProspectID`) of the one lead with this phone number; None when no lead or
    /// several match.
    pub async fn lead_by_phone(&self, e164: &str) -> Result<Option<String>, LeadApiError> {
        const WHAT: &str = "RetrieveLeadByPhoneNumber";
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        let url = self.url(
            "/v2/LeadManagement.svc/RetrieveLeadByPhoneNumber",
            &[("phone", &digits)],
        )?;
        let answer = self.get_json(WHAT, url).await?;
        let Value::Array(leads) = &answer else {
            return Err(LeadApiError::Shape {
                what: WHAT,
                body: clip(&answer.to_string()),
            });
        };
        if leads.len() != 1 {
            return Ok(None);
        }
        Ok(leads[0]
            .get("ProspectID")
            .and_then(Value::as_str)
            .map(str::to_owned))
    }
}

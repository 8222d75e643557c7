//! Asks LeadSquared's Call Route API who owns a caller, and maps the answer to an agent.
//!
//! The answer's shape is not fully documented; the fields seen in the wild are searched
//! anywhere in the JSON: a user id (`TelephonyAgentId`, `UserId`, `OwnerId`, `AgentId`), an
//! e-mail (`EmailAddress`, `Email`, `AgentEmail`, `OwnerEmail`) or a phone
//! (`AgentNumber`, `PhoneNumber`, `Mobile`, `Phone`).
//!
//! No redirect is followed and the answer is read up to
//! [`MAX_RESPONSE_BODY`](super::client::MAX_RESPONSE_BODY) within the timeout: a longer, cut
//! or stalled answer is an error, and the dialplan gets the fallback.

use std::time::Duration;

use serde_json::Value;

use super::client::{BodyEnd, MAX_RESPONSE_BODY, crm_http_client, read_bounded, redirect_target};
use crate::call::{AgentInfo, Directory};
use crate::config::Credentials;

/// The identities a Call Route answer names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteAnswer {
    /// User ids found.
    pub user_ids: Vec<String>,
    /// E-mails found.
    pub emails: Vec<String>,
    /// Phone numbers found.
    pub phones: Vec<String>,
}

const ID_FIELDS: &[&str] = &["TelephonyAgentId", "UserId", "OwnerId", "AgentId"];
const EMAIL_FIELDS: &[&str] = &["EmailAddress", "Email", "AgentEmail", "OwnerEmail"];
const PHONE_FIELDS: &[&str] = &[
    "AgentNumber",
    "PhoneNumber",
    "Mobile",
    "Phone",
    "AgentPhone",
];

impl RouteAnswer {
    /// Collects the known fields anywhere in the JSON answer.
    pub fn from_json(value: &Value) -> RouteAnswer {
        let mut answer = RouteAnswer::default();
        answer.walk(value, 0);
        answer
    }

    fn walk(&mut self, value: &Value, depth: usize) {
        if depth > 8 {
            return;
        }
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let text = match v {
                        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    };
                    if let Some(text) = text {
                        let k = k.as_str();
                        if ID_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                            self.user_ids.push(text);
                        } else if EMAIL_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                            self.emails.push(text);
                        } else if PHONE_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                            self.phones.push(text);
                        }
                    }
                    self.walk(v, depth + 1);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.walk(v, depth + 1)),
            _ => {}
        }
    }

    /// The configured agent the answer names: by user id, then e-mail, then phone.
    pub fn agent<'a>(&self, directory: &'a Directory) -> Option<&'a AgentInfo> {
        self.user_ids
            .iter()
            .find_map(|id| directory.agent_by_user_id(id))
            .or_else(|| self.emails.iter().find_map(|e| directory.agent_by_email(e)))
            .or_else(|| self.phones.iter().find_map(|p| directory.agent_by_phone(p)))
    }
}

/// Client of the Call Route API.
#[derive(Debug, Clone)]
pub struct RouteClient {
    http: reqwest::Client,
    timeout: Duration,
    url: String,
    credentials: Credentials,
}

impl RouteClient {
    /// A client for `call_route_url`, answering within `timeout`.
    pub fn new(
        url: String,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: crm_http_client(timeout)?,
            timeout,
            url,
            credentials,
        })
    }

    /// Asks who owns `caller` (E.164 digits or as the PBX gave it).
    pub async fn lookup(&self, caller: &str) -> Result<RouteAnswer, String> {
        let mut url =
            reqwest::Url::parse(&self.url).map_err(|e| format!("bad call_route_url: {e}"))?;
        url.query_pairs_mut()
            .append_pair("caller_id", caller)
            .append_pair("agentInfo", "true");
        let mut request = self.http.get(url);
        if let Some(k) = &self.credentials.access_key {
            request = request.header("x-LSQ-AccessKey", k);
        }
        if let Some(k) = &self.credentials.secret_key {
            request = request.header("x-LSQ-SecretKey", k);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("call route request failed: {e}"))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!(
                "call route answered HTTP {status}, a redirect to {} (not followed; set the final URL)",
                redirect_target(response.headers())
            ));
        }
        let body = read_bounded(&mut response, MAX_RESPONSE_BODY, deadline).await;
        let shown = || crate::logtext::excerpt(body.text.as_bytes(), 200);
        if !status.is_success() {
            return Err(format!("call route answered HTTP {status}: {}", shown()));
        }
        if body.end != BodyEnd::Complete {
            return Err(format!(
                "call route answer not read whole ({:?}): {}",
                body.end,
                shown()
            ));
        }
        let value: Value = serde_json::from_str(&body.text)
            .map_err(|e| format!("call route answer is not JSON: {e}"))?;
        Ok(RouteAnswer::from_json(&value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_identities_anywhere_in_the_answer() {
        let answer = RouteAnswer::from_json(&json!({
            "Status": "Success",
            "Message": {"Agents": [{"TelephonyAgentId": "u-7", "EmailAddress": "asha@example.com"}],
                        "Owner": {"Mobile": 919876500100u64}}
        }));
        assert_eq!(answer.user_ids, ["u-7"]);
        assert_eq!(answer.emails, ["asha@example.com"]);
        assert_eq!(answer.phones, ["919876500100"]);
        assert_eq!(RouteAnswer::from_json(&json!([])), RouteAnswer::default());
    }
}

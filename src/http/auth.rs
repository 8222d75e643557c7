//! Who may call the HTTP API: an address allow-list and a shared token compared in
//! constant time. A request that fails either gets 401/403 and nothing happens.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

/// A network from `allow_from`: `10.0.0.0/8`, `192.168.1.7` or `::1`.
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The access rules of the API.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    token: Option<String>,
    allow_from: Vec<IpNet>,
}

impl AccessPolicy {
    /// Rules from the token (None: no token needed) and the allowed networks (empty: any).
    pub fn new(token: Option<String>, allow_from: &[String]) -> Self {
        Self {
            token,
            allow_from: allow_from.iter().filter_map(|n| parse_cidr(n)).collect(),
        }
    }

    /// Whether `ip` may call at all.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allow_from.is_empty() || self.allow_from.iter().any(|n| n.contains(&ip))
    }

    /// Whether the request carries the token (`token=` in the query or `Authorization: Bearer`).
    pub fn authorised(&self, query: Option<&str>, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let from_header = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let from_query = query.and_then(|q| {
            query_pairs(q)
                .into_iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v)
        });
        [from_header.map(str::to_owned), from_query]
            .into_iter()
            .flatten()
            .any(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// Decodes `a=1&b=2` pairs (percent and `+` decoding), as browsers and LeadSquared send them.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Middleware: 403 outside `allow_from`, 401 without the token (except `/healthz`).
pub async fn guard(
    State(policy): State<std::sync::Arc<AccessPolicy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !policy.allows(peer.ip()) {
        tracing::warn!(peer = %peer, path = request.uri().path(), "HTTP request from an address outside allow_from");
        return (StatusCode::FORBIDDEN, "address not allowed\n").into_response();
    }
    if request.uri().path() != "/healthz" {
        let authorization = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !policy.authorised(request.uri().query(), authorization) {
            tracing::warn!(peer = %peer, path = request.uri().path(), "HTTP request without a valid token");
            return (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_single_addresses() {
        let p = AccessPolicy::new(None, &["10.0.0.0/8".into(), "192.168.1.7".into()]);
        assert!(p.allows("10.1.2.3".parse().expect("ip")));
        assert!(p.allows("192.168.1.7".parse().expect("ip")));
        assert!(p.allows("::ffff:10.9.9.9".parse().expect("ip")));
        assert!(!p.allows("192.168.1.8".parse().expect("ip")));
        assert!(AccessPolicy::new(None, &[]).allows("8.8.8.8".parse().expect("ip")));
        assert!(parse_cidr("nonsense").is_none());
    }

    #[test]
    fn token_from_query_or_bearer_header() {
        let p = AccessPolicy::new(Some("s3cr3t".into()), &[]);
        assert!(p.authorised(Some("a=1&token=s3cr3t"), None));
        assert!(p.authorised(None, Some("Bearer s3cr3t")));
        assert!(!p.authorised(Some("token=s3cr3"), None));
        assert!(!p.authorised(Some("token=s3cr3tX"), None));
        assert!(!p.authorised(None, Some("Basic s3cr3t")));
        assert!(!p.authorised(None, None));
        assert!(
            p.authorised(Some("token=s3cr%33t"), None),
            "percent-decoded"
        );
        assert!(AccessPolicy::new(None, &[]).authorised(None, None));
    }
}

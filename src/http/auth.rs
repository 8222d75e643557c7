//! Who may call the HTTP API: an address allow-list and a shared token compared in
//! constant time. A request that fails either gets 401/403 and nothing happens; an address
//! that keeps guessing the token is answered 429 without a check until its minute is over
//! ([`FailureThrottle`]), and logged once per window rather than once per guess.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::logtext::Escaped;

/// A network from `allow_from`: `10.0.0.0/8`, `192.168.1.7` or `::1`.
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The access rules of the API.
#[derive(Debug)]
pub struct AccessPolicy {
    token: Option<String>,
    allow_from: Vec<IpNet>,
    failures: FailureThrottle,
}

impl AccessPolicy {
    /// Rules from the token (None: no token needed) and the allowed networks (empty: any),
    /// with the default throttle of failed token checks (10 a minute per address).
    pub fn new(token: Option<String>, allow_from: &[String]) -> Self {
        Self {
            token,
            allow_from: allow_from.iter().filter_map(|n| parse_cidr(n)).collect(),
            failures: FailureThrottle::new(10, Duration::from_secs(60)),
        }
    }

    /// Throttles failed token checks with `failures` instead of the default.
    pub fn with_failure_throttle(mut self, failures: FailureThrottle) -> Self {
        self.failures = failures;
        self
    }

    /// The throttle of failed token checks (its counters).
    pub fn failures(&self) -> &FailureThrottle {
        &self.failures
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

/// Where failed token checks are counted: an IPv4 address, or the /64 network of an IPv6
/// address (one host can hold a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a peer address (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => Source(IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(v6) & !((1u128 << 64) - 1),
                ))),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// What a failed token check should put in the log: one line when a source starts failing
/// and one when it reaches the limit, nothing for the failures in between or the 429s after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureNote {
    /// The first failure of a window; `throttled_before` requests were answered 429 in the
    /// source's previous window.
    First {
        /// 429s in the previous window.
        throttled_before: u64,
    },
    /// This failure reached the limit: the source is answered 429 until the window ends.
    LimitReached,
    /// Counted, nothing to log.
    Quiet,
}

/// Sources tracked at most; when full, expired windows go first, then an arbitrary one.
const MAX_TRACKED_SOURCES: usize = 4096;

/// Failed token checks per [`Source`]: after `limit` failures within `window` (from the
/// first), the source is answered 429 without a check until the window ends. Bounded: at
/// most [`MAX_TRACKED_SOURCES`] sources are remembered.
#[derive(Debug)]
pub struct FailureThrottle {
    limit: u32,
    window: Duration,
    sources: Mutex<HashMap<Source, FailureWindow>>,
    /// Failed token checks (answered 401).
    pub failed: AtomicU64,
    /// Requests answered 429 without a check.
    pub throttled: AtomicU64,
}

#[derive(Debug)]
struct FailureWindow {
    started: Instant,
    failures: u32,
    throttled: u64,
}

impl FailureThrottle {
    /// At most `limit` (at least 1) failures per `window` from one source.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
            sources: Mutex::new(HashMap::new()),
            failed: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// Whether `source` is to be answered 429 without a check at `now` (counted when so).
    pub fn throttled(&self, source: Source, now: Instant) -> bool {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get_mut(&source) {
            Some(w) if now < w.started + self.window && w.failures >= self.limit => {
                w.throttled += 1;
                self.throttled.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Counts a failed check from `source` at `now`; says what to log.
    pub fn failed(&self, source: Source, now: Instant) -> FailureNote {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !sources.contains_key(&source) && sources.len() >= MAX_TRACKED_SOURCES {
            let window = self.window;
            sources.retain(|_, w| now < w.started + window);
            if sources.len() >= MAX_TRACKED_SOURCES {
                if let Some(any) = sources.keys().next().copied() {
                    sources.remove(&any);
                }
            }
        }
        let w = sources.entry(source).or_insert(FailureWindow {
            started: now,
            failures: 0,
            throttled: 0,
        });
        let mut throttled_before = 0;
        if now >= w.started + self.window {
            throttled_before = w.throttled;
            *w = FailureWindow {
                started: now,
                failures: 0,
                throttled: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures == 1 {
            FailureNote::First { throttled_before }
        } else if w.failures == self.limit {
            FailureNote::LimitReached
        } else {
            FailureNote::Quiet
        }
    }

    /// The window failures are counted in.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The failures a source may make per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// Middleware: 403 outside `allow_from`, 401 without the token (except `/healthz`), 429
/// without a check for a source over its failure limit.
pub async fn guard(
    State(policy): State<std::sync::Arc<AccessPolicy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !policy.allows(peer.ip()) {
        tracing::warn!(peer = %peer, path = %Escaped(request.uri().path()), "HTTP request from an address outside allow_from");
        return (StatusCode::FORBIDDEN, "address not allowed\n").into_response();
    }
    if request.uri().path() != "/healthz" {
        let source = Source::of(peer.ip());
        let now = Instant::now();
        if policy.failures.throttled(source, now) {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed token checks from this address; try again later\n",
            )
                .into_response();
        }
        let authorization = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !policy.authorised(request.uri().query(), authorization) {
            let path = Escaped(request.uri().path());
            match policy.failures.failed(source, now) {
                FailureNote::First {
                    throttled_before: 0,
                } => {
                    tracing::warn!(peer = %peer, %path, "HTTP request without a valid token")
                }
                FailureNote::First { throttled_before } => tracing::warn!(
                    peer = %peer,
                    %path,
                    "HTTP request without a valid token; {throttled_before} request(s) from {source} were answered 429 in its previous window"
                ),
                FailureNote::LimitReached => tracing::warn!(
                    peer = %peer,
                    "{} failed token checks from {source} within {:?}: answering 429 without a check until the window ends",
                    policy.failures.limit,
                    policy.failures.window
                ),
                FailureNote::Quiet => {}
            }
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

    #[test]
    fn a_guessing_source_is_throttled_and_logged_twice_per_window() {
        let throttle = FailureThrottle::new(3, Duration::from_secs(60));
        let eve = Source::of("192.0.2.7".parse().expect("ip"));
        let t0 = Instant::now();
        assert!(!throttle.throttled(eve, t0));
        assert_eq!(
            throttle.failed(eve, t0),
            FailureNote::First {
                throttled_before: 0
            }
        );
        assert_eq!(throttle.failed(eve, t0), FailureNote::Quiet);
        assert!(
            !throttle.throttled(eve, t0),
            "under the limit: still checked"
        );
        assert_eq!(throttle.failed(eve, t0), FailureNote::LimitReached);
        let later = t0 + Duration::from_secs(59);
        for _ in 0..1000 {
            assert!(throttle.throttled(eve, later));
        }
        let other = Source::of("192.0.2.8".parse().expect("ip"));
        assert!(
            !throttle.throttled(other, later),
            "other sources unaffected"
        );
        // The window ends: checked again; the first failure reports the 429s before it.
        let next = t0 + Duration::from_secs(60);
        assert!(!throttle.throttled(eve, next));
        assert_eq!(
            throttle.failed(eve, next),
            FailureNote::First {
                throttled_before: 1000
            }
        );
        assert_eq!(throttle.failed.load(Ordering::Relaxed), 4);
        assert_eq!(throttle.throttled.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn ipv6_counts_per_64_and_the_table_is_bounded() {
        let a = Source::of("2001:db8:1:2::1".parse().expect("ip"));
        let b = Source::of("2001:db8:1:2:ffff::9".parse().expect("ip"));
        let c = Source::of("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            Source::of("::ffff:10.1.2.3".parse().expect("ip")),
            Source::of("10.1.2.3".parse().expect("ip"))
        );
        let throttle = FailureThrottle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 500) {
            throttle.failed(Source::of(IpAddr::from(i.to_be_bytes())), now);
        }
        let tracked = throttle.sources.lock().expect("lock").len();
        assert_eq!(tracked, MAX_TRACKED_SOURCES);
    }
}

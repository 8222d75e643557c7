//! The status page's login session: a signed, expiring cookie value and a CSRF token bound
//! to it.
//!
//! The cookie never carries the API token. Its value is `{expires}.{nonce}.{mac}`: the
//! expiry (unix seconds), 16 random bytes, and an HMAC-SHA256 of both under a key drawn at
//! random when the daemon starts (a restart logs everyone out). The CSRF token of a session
//! is another HMAC under the same key, of the session's nonce: a form posted from another
//! site has neither the cookie's nonce nor the key, so it cannot name the right token, and a
//! token lifted from one session is worth nothing in another.

use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "pbxlink_session";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Cookie values longer than this are not looked at.
const MAX_COOKIE_VALUE: usize = 160;

type HmacSha256 = Hmac<Sha256>;

/// A session a valid cookie names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// When it ends (unix seconds).
    pub expires_at: i64,
    /// Its random part (base64url), which its CSRF token is derived from.
    nonce: String,
}

/// The key sessions and CSRF tokens are signed with.
pub struct SessionKeys {
    key: [u8; 32],
    ttl: Duration,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// A fresh random key; sessions last `ttl`.
    pub fn random(ttl: Duration) -> SessionKeys {
        SessionKeys {
            key: rand::random(),
            ttl,
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, domain: &str, parts: &[&str]) -> Vec<u8> {
        // new_from_slice accepts a key of any length: the error branch cannot happen.
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return Vec::new();
        };
        mac.update(domain.as_bytes());
        for part in parts {
            mac.update(&[0]);
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session starting at `now` (unix seconds): its cookie value and the session.
    pub fn issue(&self, now: i64) -> (String, Session) {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let expires_at = now.saturating_add(ttl);
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let expires = expires_at.to_string();
        let mac = URL_SAFE_NO_PAD.encode(self.mac("session", &[&expires, &nonce]));
        (
            format!("{expires}.{nonce}.{mac}"),
            Session { expires_at, nonce },
        )
    }

    /// The session a cookie value names, if its signature holds and it has not expired at
    /// `now` (unix seconds).
    pub fn verify(&self, value: &str, now: i64) -> Option<Session> {
        if value.len() > MAX_COOKIE_VALUE {
            return None;
        }
        let mut parts = value.split('.');
        let (expires, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.mac("session", &[expires, nonce]);
        if !bool::from(given.ct_eq(&expected)) {
            return None;
        }
        let expires_at: i64 = expires.parse().ok()?;
        (now < expires_at).then(|| Session {
            expires_at,
            nonce: nonce.to_owned(),
        })
    }

    /// The CSRF token of `session`, for the page's forms.
    pub fn csrf_token(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("csrf", &[&session.nonce]))
    }

    /// Whether `given` is `session`'s CSRF token (constant time).
    pub fn csrf_ok(&self, session: &Session, given: &str) -> bool {
        let expected = self.csrf_token(session);
        given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
    }
}

/// The `Set-Cookie` value that stores a session: HttpOnly, SameSite=Strict, for the whole
/// site, for `ttl`; `Secure` when the page is served over HTTPS.
pub fn set_cookie(value: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", Duration::ZERO, secure)
}

/// The value of the session cookie in a request's `Cookie` headers, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

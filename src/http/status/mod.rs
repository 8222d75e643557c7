//! `GET /` and `/status`: the status page for the people who look after pbxlink, on the
//! `[http]` listener, behind the API's token.
//!
//! - A browser logs in once with the token (a form, `POST /login`) and gets a session cookie
//!   (HttpOnly, SameSite=Strict, Secure over HTTPS: `[http] tls_cert`, or a proxy saying
//!   `X-Forwarded-Proto: https`) that is signed and expires ([`session`]); the token itself
//!   never goes into the cookie. `?token=` or `Authorization: Bearer` work too: the first
//!   starts a session and redirects to `/status`, so the token leaves the address bar.
//! - The page is server-rendered ([askama] templates beside this file), refreshes itself
//!   every [`REFRESH_SECS`] (meta refresh, no JavaScript) and has a refresh link; it reads
//!   on a phone (one column below 700 px).
//! - "Retry" on a dead letter is a POST carrying the session's CSRF token; without the
//!   session cookie or with another token it changes nothing (401/403).
//! - The same address rules as the API: `allow_from`, the per-address request rate, and the
//!   throttle of failed token checks (its own, with the same limit).
//! - What it shows is gathered by [`view`]; the store's part runs on the blocking pool.

pub mod session;
pub mod view;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{Quota, RateLimiter};
use serde::Deserialize;

use super::auth::{AccessPolicy, FailureNote, FailureThrottle, Source, query_pairs};
use crate::config::Config;
use crate::crm::leadsquared::popup::PopupStats;
use crate::logtext::{Escaped, excerpt};
use crate::metrics::Metrics;
use crate::outbox::Store;
use crate::pbx::parts::StatusPart;
use session::{Session, SessionKeys};
use view::{DaemonFacts, StatusView, StoreFigures};

/// The page reloads itself this often.
pub const REFRESH_SECS: u32 = 5;
/// The largest form body accepted (login, retry, logout).
const MAX_FORM_BYTES: usize = 4096;
/// The longest token a login form may carry.
const MAX_TOKEN_LEN: usize = 1024;
/// How long the page waits for the store (a store locked by another process).
const STORE_WAIT: Duration = Duration::from_secs(5);

const CSS: &str = "\
:root{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1c2733;background:#f4f6f8}\
body{margin:0 auto;max-width:1200px;padding:12px}\
header{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:8px}\
h1{font-size:1.4rem;margin:4px 0}h2{font-size:1.05rem;margin:0 0 8px}\
section{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:10px 12px;margin:10px 0}\
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:0 12px}\
@media (max-width:700px){.grid{grid-template-columns:1fr}}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eef1f4;vertical-align:top;overflow-wrap:anywhere}\
th{font-weight:600;color:#4a5866;width:38%}table.wide th{width:auto}\
td.call,td.n{white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600}\
.scroll{overflow-x:auto}.alarm{color:#b00020;font-weight:600}.note{color:#4a5866}\
code{background:#eef1f4;padding:0 3px;border-radius:3px}\
button{white-space:nowrap;font:inherit;padding:4px 10px;border:1px solid #8796a5;border-radius:4px;background:#fff;cursor:pointer}\
form.inline{display:inline}a{color:#0b5cad}footer{color:#4a5866;font-size:.85rem;margin:10px 0}\
main.login{max-width:360px;margin:10vh auto;background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:16px}\
main.login input{width:100%;box-sizing:border-box;font:inherit;padding:6px;margin:6px 0 12px}";

#[derive(Template)]
#[template(path = "status.html")]
struct StatusTemplate<'a> {
    css: &'a str,
    refresh_secs: u32,
    csrf: &'a str,
    flash: Option<String>,
    view: &'a StatusView,
    version: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate<'a> {
    css: &'a str,
    problem: Option<&'a str>,
}
/// The status page: where its figures come from, and its sessions.
pub struct StatusPage {
    store: Arc<Store>,
    metrics: Option<Arc<Metrics>>,
    pbx_status: Arc<Vec<StatusPart>>,
    popups: Option<Arc<PopupStats>>,
    config_path: Option<PathBuf>,
    started: Instant,
    /// The configuration the daemon started with: a reload's restart-needed keys are the
    /// ones that differ from it.
    started_config: Config,
    restart_needed: Mutex<Vec<&'static str>>,
    policy: AccessPolicy,
    limiter: super::KeyedLimiter,
    sessions: SessionKeys,
    https: bool,
}

impl StatusPage {
    /// Why a request from `peer` for `path` is refused before any handler: an address
    /// outside `allow_from`, over the per-address rate, or throttled after failed token checks.
    fn refusal(&self, peer: SocketAddr, path: &str) -> Option<Response> {
        if !self.policy.allows(peer.ip()) {
            tracing::warn!(peer = %peer, path = %Escaped(path), "status page request from an address outside allow_from");
            return Some((StatusCode::FORBIDDEN, "address not allowed\n").into_response());
        }
        if let Some(refused) = super::over_rate(&self.limiter, peer.ip()) {
            return Some(refused);
        }
        let throttled = self
            .policy
            .failures()
            .throttled(Source::of(peer.ip()), tokio::time::Instant::now());
        throttled.then(|| {
            let why = "too many failed token checks from this address; try again later\n";
            (StatusCode::TOO_MANY_REQUESTS, why).into_response()
        })
    }

    /// The page for `config` (its `[http]` token and address rules) reading `store`.
    pub fn new(config: &Config, store: Arc<Store>) -> anyhow::Result<StatusPage> {
        let http = config.http.clone().unwrap_or_default();
        let per_second =
            NonZeroU32::new(http.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(StatusPage {
            store,
            metrics: None,
            pbx_status: Arc::default(),
            popups: None,
            config_path: None,
            started: Instant::now(),
            started_config: config.clone(),
            restart_needed: Mutex::default(),
            policy: AccessPolicy::new(http.resolve_token()?, &http.allow_from)
                .with_failure_throttle(FailureThrottle::new(
                    http.auth_failures_per_minute,
                    Duration::from_secs(60),
                )),
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            sessions: SessionKeys::random(session::SESSION_TTL),
            https: http.tls_cert.is_some(),
        })
    }

    /// Names the configuration file on the page.
    pub fn with_config_path(mut self, path: Option<&Path>) -> Self {
        self.config_path = path.map(Path::to_owned);
        self
    }

    /// Shows the components' figures (PBX connections, CRM answers, popups) from `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Shows the PBX's parts of the `STATUS=` line.
    pub fn with_pbx_status(mut self, parts: Arc<Vec<StatusPart>>) -> Self {
        self.pbx_status = parts;
        self
    }

    /// Lists the popup sender's last popups.
    pub fn with_popups(mut self, popups: Arc<PopupStats>) -> Self {
        self.popups = Some(popups);
        self
    }

    /// A reload applied `new`: the keys that differ from the started configuration and
    /// need a restart are shown from now on.
    pub fn config_reloaded(&self, new: &Config) {
        let keys = crate::service::reload::restart_needed(&self.started_config, new);
        *self
            .restart_needed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// The routes `/`, `/status`, `/login`, `/logout` and `/status/retry`, with their own
    /// guards: merge them outside the API's token guard.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(show))
            .route("/status", get(show))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/status/retry", post(retry))
            .with_state(self.clone())
            .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
            .layer(middleware::from_fn_with_state(self, gate))
    }

    fn secure(&self, headers: &HeaderMap) -> bool {
        self.https
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }

    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        session::cookie_value(headers)
            .and_then(|value| self.sessions.verify(&value, chrono::Utc::now().timestamp()))
    }

    fn start_session(&self, headers: &HeaderMap) -> (HeaderValue, Session) {
        let (value, session) = self.sessions.issue(chrono::Utc::now().timestamp());
        let cookie = session::set_cookie(&value, self.sessions.ttl(), self.secure(headers));
        // The value is base64url and digits: always a valid header value.
        let cookie =
            HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""));
        (cookie, session)
    }

    /// Counts and logs a failed token check the way the API's guard does.
    fn failed_check(&self, peer: SocketAddr, what: &str) {
        let source = Source::of(peer.ip());
        let failures = self.policy.failures();
        match failures.failed(source, tokio::time::Instant::now()) {
            FailureNote::First { throttled_before } => tracing::warn!(
                peer = %peer,
                "status page: {what}; {throttled_before} request(s) from {source} were answered 429 in its previous window"
            ),
            FailureNote::LimitReached => tracing::warn!(
                peer = %peer,
                "status page: {} failed token checks from {source} within {:?}: answering 429 until the window ends",
                failures.limit(),
                failures.window()
            ),
            FailureNote::Quiet => {}
        }
    }

    fn token_ok(&self, given: &str) -> bool {
        // The policy compares a bearer value in constant time (and says yes when no token
        // is configured).
        given.len() <= MAX_TOKEN_LEN
            && self
                .policy
                .authorised(None, Some(&format!("Bearer {given}")))
    }

    async fn facts(&self) -> DaemonFacts {
        let metrics_text = match &self.metrics {
            Some(m) => m.render().await,
            None => String::new(),
        };
        DaemonFacts {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_path: self
                .config_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            restart_needed: self
                .restart_needed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            pbx_parts: self.pbx_status.iter().map(|part| part()).collect(),
            metrics_text,
            popups: self.popups.as_ref().map(|p| p.recent()),
            rate_limit: (
                self.started_config.leadsquared.rate_limit_requests,
                self.started_config.leadsquared.rate_limit_period_ms,
            ),
            store_error: None,
        }
    }

    /// The page's content, read now.
    pub async fn view(&self) -> StatusView {
        let now = crate::outbox::store::now_ms();
        let mut facts = self.facts().await;
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || StoreFigures::read(&store, now));
        let figures = match tokio::time::timeout(STORE_WAIT, read).await {
            Ok(Ok(Ok(figures))) => figures,
            Ok(Ok(Err(e))) => {
                facts.store_error = Some(e.to_string());
                StoreFigures::default()
            }
            Ok(Err(e)) => {
                facts.store_error = Some(format!("the store task failed: {e}"));
                StoreFigures::default()
            }
            Err(_) => {
                facts.store_error = Some(format!(
                    "no answer within {STORE_WAIT:?} (locked by another process?)"
                ));
                StoreFigures::default()
            }
        };
        StatusView::build(&figures, &facts, now)
    }

    async fn render_page(&self, session: &Session, flash: Option<String>) -> Response {
        let view = self.view().await;
        let csrf = self.sessions.csrf_token(session);
        let page = StatusTemplate {
            css: CSS,
            refresh_secs: REFRESH_SECS,
            csrf: &csrf,
            flash,
            view: &view,
            version: env!("CARGO_PKG_VERSION"),
        };
        html(StatusCode::OK, page.render())
    }
}

/// The login form, answered `status` (401: not logged in).
fn login_page(status: StatusCode, problem: Option<&str>) -> Response {
    html(status, LoginTemplate { css: CSS, problem }.render())
}

fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    match rendered {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("status page: rendering failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered\n",
            )
                .into_response()
        }
    }
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// Address rules, the per-address rate, the failed-check throttle; security headers on
/// every answer. The peer address is the one axum's connect info puts in the request's
/// extensions; a request without one is refused.
async fn gate(State(page): State<Arc<StatusPage>>, request: Request, next: Next) -> Response {
    let refused = match super::peer_of(&request) {
        Some(peer) => page.refusal(peer, request.uri().path()),
        None => Some(super::no_peer()),
    };
    let mut response = match refused {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `GET /`, `/status`: the page with a session; else a session from `?token=` (then a
/// redirect without it), a bearer token or no token configured; else the login form.
async fn show(
    State(page): State<Arc<StatusPage>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let query = uri.query().map(query_pairs).unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let flash = match (param("retried"), param("not_dead")) {
        (Some(id), _) => id.parse::<i64>().ok().map(|id| {
            format!("Dead letter {id} is queued again; it goes out with the next delivery.")
        }),
        (None, Some(id)) => id
            .parse::<i64>()
            .ok()
            .map(|id| format!("Row {id} was not a dead letter (any more): nothing changed.")),
        _ => None,
    };
    if let Some(session) = page.session(&headers) {
        return page.render_page(&session, flash).await;
    }
    if let Some(token) = param("token") {
        if page.token_ok(token) {
            let (cookie, _) = page.start_session(&headers);
            tracing::info!(peer = %peer, "status page: logged in with ?token=");
            let mut response = see_other("/status");
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            return response;
        }
        page.failed_check(peer, "wrong ?token=");
        return login_page(StatusCode::UNAUTHORIZED, Some("Wrong token."));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if page.policy.authorised(None, bearer) {
        let (cookie, session) = page.start_session(&headers);
        let mut response = page.render_page(&session, flash).await;
        response.headers_mut().insert(header::SET_COOKIE, cookie);
        return response;
    }
    if bearer.is_some() {
        page.failed_check(peer, "wrong bearer token");
    }
    login_page(StatusCode::UNAUTHORIZED, None)
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /login`: the token in, a session cookie out.
async fn login(
    State(page): State<Arc<StatusPage>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !page.token_ok(form.token.trim()) {
        page.failed_check(peer, "wrong token in the login form");
        return login_page(StatusCode::UNAUTHORIZED, Some("Wrong token."));
    }
    let (cookie, _) = page.start_session(&headers);
    tracing::info!(peer = %peer, "status page: logged in");
    let mut response = see_other("/status");
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// The fields of a form posted from the page.
#[derive(Debug, Deserialize)]
struct PageForm {
    csrf: String,
    #[serde(default)]
    id: Option<String>,
}

/// The answer refusing a posted form, unless it comes with a session and that session's
/// CSRF token (then None).
fn refusal(
    page: &StatusPage,
    headers: &HeaderMap,
    form: &PageForm,
    peer: SocketAddr,
) -> Option<Response> {
    let Some(session) = page.session(headers) else {
        return Some(login_page(
            StatusCode::UNAUTHORIZED,
            Some("Your session ended: log in again."),
        ));
    };
    if !page.sessions.csrf_ok(&session, &form.csrf) {
        tracing::warn!(peer = %peer, "status page: a form with a missing or wrong CSRF token refused");
        return Some(
            (
                StatusCode::FORBIDDEN,
                "the form's token does not match your session: reload the page and try again\n",
            )
                .into_response(),
        );
    }
    None
}

/// A form posted from the page with a session and that session's CSRF token. Any other
/// post is answered by [`refusal`] and reaches no handler.
struct PagePost {
    form: PageForm,
    headers: HeaderMap,
    peer: SocketAddr,
}

impl FromRequest<Arc<StatusPage>> for PagePost {
    type Rejection = Response;

    async fn from_request(request: Request, page: &Arc<StatusPage>) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let Some(&ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "no peer address\n").into_response());
        };
        let headers = parts.headers.clone();
        let Form(form) = Form::<PageForm>::from_request(Request::from_parts(parts, body), page)
            .await
            .map_err(IntoResponse::into_response)?;
        match refusal(page, &headers, &form, peer) {
            Some(refused) => Err(refused),
            None => Ok(Self {
                form,
                headers,
                peer,
            }),
        }
    }
}

/// `POST /status/retry` (`id`, `csrf`): puts one dead letter back in the queue.
async fn retry(State(page): State<Arc<StatusPage>>, post: PagePost) -> Response {
    let PagePost { form, peer, .. } = post;
    let Some(id) = form
        .id
        .as_deref()
        .and_then(|id| id.trim().parse::<i64>().ok())
    else {
        let given = excerpt(form.id.unwrap_or_default().as_bytes(), 40);
        tracing::warn!(peer = %peer, id = %Escaped(&given), "status page: retry with an id that is not a number");
        return (StatusCode::BAD_REQUEST, "id must be a row number\n").into_response();
    };
    let store = page.store.clone();
    match tokio::task::spawn_blocking(move || store.retry_dead(Some(id))).await {
        Ok(Ok(1)) => {
            tracing::info!(peer = %peer, row = id, "status page: dead letter queued again");
            see_other(&format!("/status?retried={id}"))
        }
        Ok(Ok(_)) => see_other(&format!("/status?not_dead={id}")),
        Ok(Err(e)) => {
            tracing::error!(row = id, "status page: retrying a dead letter failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the store refused: {e}\n"),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the store task failed: {e}\n"),
        )
            .into_response(),
    }
}

/// `POST /logout` (`csrf`): ends the session in this browser.
async fn logout(State(page): State<Arc<StatusPage>>, post: PagePost) -> Response {
    let mut response = see_other("/");
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie(page.secure(&post.headers))) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

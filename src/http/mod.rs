//! The HTTP API LeadSquared and the dialplan call: click to call, disposition, call
//! routing, health, readiness.
//!
//! Every endpoint but `/healthz` needs the token; requests are bounded in size and rate per
//! address, parameters in length, connections in number and time ([`server`]), failed token
//! checks per address; a malformed or hostile request gets a 4xx with a one-line reason and
//! changes nothing. Handlers talk to the PBX only through [`PbxControl`], so any PBX fits.

pub mod auth;
pub mod expiring;
pub mod params;
pub mod recordings;
pub mod server;
pub mod status;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use governor::{Quota, RateLimiter};

use crate::call::{AgentInfo, Directory};
use crate::config::{Config, HttpConfig};
use crate::crm::leadsquared::lead::LeadApi;
use crate::crm::leadsquared::route::RouteClient;
use crate::logtext::Escaped;
use crate::metrics::Metrics;
use crate::outbox::Store;
use crate::pbx::{AgentRelease, OriginateRequest, PbxControl, PbxError};
use auth::{AccessPolicy, FailureThrottle};
use expiring::ExpiringMap;
use params::{Bounds, ParamError, Params};
pub use server::{ConnectionLimits, ConnectionStats};

/// Counters of the API, for logs and metrics.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Click-to-call requests that rang the agent.
    pub calls_placed: std::sync::atomic::AtomicU64,
    /// Requests refused (bad parameters, unknown agent, PBX errors).
    pub refused: std::sync::atomic::AtomicU64,
    /// `/route` answers from the CRM, and fallbacks.
    pub routes_answered: std::sync::atomic::AtomicU64,
    /// `/route` fallbacks (CRM slow, failing or naming nobody known).
    pub routes_fallback: std::sync::atomic::AtomicU64,
}

/// The API's figures on `/metrics`: `pbxlink_http_requests_total{result}`.
impl crate::metrics::MetricsSource for ApiStats {
    fn write(&self, scrape: &mut crate::metrics::Scrape) {
        use std::sync::atomic::Ordering::Relaxed;
        for (result, value) in [
            ("call_placed", &self.calls_placed),
            ("refused", &self.refused),
            ("route_answered", &self.routes_answered),
            ("route_fallback", &self.routes_fallback),
        ] {
            scrape.counter_with(
                "http_requests",
                "HTTP API results",
                &[("result", result)],
                value.load(Relaxed),
            );
        }
    }
}

/// Callers whose `/route` answer is cached at most (each for `[http] route_cache_ms`): a
/// flood of distinct callers evicts the oldest answers instead of growing the cache; 10 000
/// covers a busy hour of a large call centre's distinct callers.
pub const ROUTE_CACHE_MAX_ENTRIES: usize = 10_000;

/// Click-to-call requests remembered at most for the dedupe window
/// (`[http] click_to_call_dedupe_ms`); beyond it the oldest are forgotten.
pub const RECENT_CLICKS_MAX: usize = 10_000;

/// Everything the handlers need.
pub struct ApiState {
    /// The configured PBX's control (None: no PBX control configured, e.g. `[http]` for
    /// `/route` only; click to call then answers 503).
    pbx: Option<Arc<dyn PbxControl>>,
    store: Arc<Store>,
    /// Agents and virtual numbers; replaced on SIGHUP ([`ApiState::set_directory`]).
    directory: std::sync::RwLock<Arc<Directory>>,
    http: HttpConfig,
    route: Option<RouteClient>,
    lead_api: LeadApi,
    /// Click-to-call requests of the dedupe window, per agent and lead.
    recent_clicks: Mutex<ExpiringMap<(String, String), ()>>,
    /// `/route` answers per caller, for `[http] route_cache_ms`.
    route_cache: Mutex<ExpiringMap<String, String>>,
    stats: Arc<ApiStats>,
    metrics: Option<Arc<Metrics>>,
    /// The length bound of each parameter, under the configured names.
    bounds: Bounds,
    /// The daemon's tasks, for `/readyz`.
    health: Option<Arc<crate::service::health::Health>>,
    /// Whether a `/readyz` store check is still running: at most one waits on a locked store.
    store_check_running: Arc<std::sync::atomic::AtomicBool>,
}

impl ApiState {
    /// The state for a configuration, driving `pbx` (the configured PBX's control).
    pub fn new(
        config: &Config,
        pbx: Option<Arc<dyn PbxControl>>,
        store: Arc<Store>,
    ) -> anyhow::Result<Self> {
        let http = config.http.clone().unwrap_or_default();
        let credentials = config.credentials()?;
        let route = (!config.leadsquared.call_route_url.is_empty())
            .then(|| {
                RouteClient::new(
                    config.leadsquared.call_route_url.clone(),
                    credentials,
                    Duration::from_millis(http.route_timeout_ms),
                )
            })
            .transpose()?;
        Ok(Self {
            pbx,
            store,
            directory: std::sync::RwLock::new(Arc::new(Directory::from_config(config)?)),
            route,
            lead_api: LeadApi::new(config, config.leadsquared.request_timeout())?,
            recent_clicks: Mutex::new(ExpiringMap::new(
                Duration::from_millis(http.click_to_call_dedupe_ms),
                RECENT_CLICKS_MAX,
            )),
            route_cache: Mutex::new(ExpiringMap::new(
                Duration::from_millis(http.route_cache_ms),
                ROUTE_CACHE_MAX_ENTRIES,
            )),
            stats: Arc::default(),
            metrics: None,
            bounds: Bounds::for_names(&http.params),
            http,
            health: None,
            store_check_running: Arc::default(),
        })
    }

    /// Serves `/metrics` from `metrics` (and registers this API's counters there).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.register(self.stats.clone());
        self.metrics = Some(metrics);
        self
    }

    /// Caps the `/route` cache at `capacity` callers (tests: a small cap shows eviction).
    #[cfg(test)]
    fn with_route_cache_capacity(self, capacity: usize) -> Self {
        let ttl = Duration::from_millis(self.http.route_cache_ms);
        *self.route_cache.lock().unwrap_or_else(|p| p.into_inner()) =
            ExpiringMap::new(ttl, capacity);
        self
    }

    /// `/readyz` also reports the daemon's tasks that ended or are stuck.
    pub fn with_health(mut self, health: Arc<crate::service::health::Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Uses a reloaded configuration's agents and virtual numbers from the next request on.
    pub fn set_directory(&self, directory: Directory) {
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(directory);
    }

    fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The API's counters.
    pub fn stats(&self) -> Arc<ApiStats> {
        self.stats.clone()
    }

    /// A request's parameters, each within its length bound.
    fn params(&self, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Params, ParamError> {
        Params::read(uri, headers, body).and_then(|p| p.within(&self.bounds))
    }
}

/// A request's parameters, from its query or its POSTed form or JSON body, each within its
/// length bound. A request whose parameters cannot be read is refused with 400 (counted and
/// logged, see [`refuse`]) before the handler runs.
struct RequestParams(Params);

impl FromRequest<Arc<ApiState>> for RequestParams {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<ApiState>) -> Result<Self, Response> {
        let (uri, headers) = (request.uri().clone(), request.headers().clone());
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        state
            .params(&uri, &headers, &body)
            .map(RequestParams)
            .map_err(|e| refuse(state, StatusCode::BAD_REQUEST, e))
    }
}

/// [`RequestParams`] from the query alone (the GET-only endpoints).
struct QueryParams(Params);

impl axum::extract::FromRequestParts<Arc<ApiState>> for QueryParams {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Response> {
        state
            .params(&parts.uri, &HeaderMap::new(), &Bytes::new())
            .map(QueryParams)
            .map_err(|e| refuse(state, StatusCode::BAD_REQUEST, e))
    }
}

/// Builds the router with its guards (address allow-list, token, body size, rate).
pub fn router(state: Arc<ApiState>) -> anyhow::Result<Router> {
    let policy = Arc::new(
        AccessPolicy::new(state.http.resolve_token()?, &state.http.allow_from)
            .with_failure_throttle(FailureThrottle::new(
                state.http.auth_failures_per_minute,
                Duration::from_secs(60),
            )),
    );
    let per_second =
        NonZeroU32::new(state.http.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let limiter: Arc<KeyedLimiter> = Arc::new(RateLimiter::keyed(Quota::per_second(per_second)));
    let max_body = state.http.max_body_bytes;
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/click-to-call", get(click_to_call).post(click_to_call))
        .route("/disposition", get(disposition).post(disposition))
        .route("/route", get(route))
        .route("/metrics", get(metrics))
        .route("/sso", get(sso))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(limiter, rate_limit))
        .layer(middleware::from_fn_with_state(policy, auth::guard)))
}

/// A request rate per client address (`[http] requests_per_second`, the status page's own).
type KeyedLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// The 429 answer when `peer` is over its rate in `limiter`.
fn over_rate(limiter: &KeyedLimiter, peer: IpAddr) -> Option<Response> {
    limiter
        .check_key(&peer)
        .is_err()
        .then(|| (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response())
}

/// The client address axum's connect info puts in a request's extensions (None only when
/// the server was not started with it: such a request is refused).
fn peer_of(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// The answer to a request without a client address.
fn no_peer() -> Response {
    (StatusCode::FORBIDDEN, "no peer address\n").into_response()
}

async fn rate_limit(
    State(limiter): State<Arc<KeyedLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let refused = match peer_of(&request) {
        Some(peer) => over_rate(&limiter, peer.ip()),
        None => Some(no_peer()),
    };
    match refused {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// How the API is served: plain HTTP, or HTTPS with `[http] tls_cert`/`tls_key`, within
/// the connection limits of `[http]`.
pub struct Transport {
    /// The TLS server configuration for HTTPS (the certificate chain and key of
    /// `tls_cert`/`tls_key`, HTTP/1.1 only); None: plain HTTP (loopback, or behind a reverse
    /// proxy).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Open connections, header and idle timeouts.
    pub limits: ConnectionLimits,
    /// Counters of incoming connections, filled while serving.
    pub stats: Arc<ConnectionStats>,
}

impl Transport {
    /// Plain HTTP within `limits`.
    pub fn plain(limits: ConnectionLimits) -> Transport {
        Transport {
            tls: None,
            limits,
            stats: Arc::default(),
        }
    }

    /// Reads `[http] tls_cert`/`tls_key` when set, and the connection limits.
    pub async fn from_config(http: &HttpConfig) -> anyhow::Result<Transport> {
        let mut transport = Transport::plain(ConnectionLimits::from_config(http));
        match (&http.tls_cert, &http.tls_key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (cert.clone(), key.clone());
                let config = tokio::task::spawn_blocking(move || tls_config(&cert, &key))
                    .await
                    .map_err(|e| anyhow::anyhow!("reading [http] tls_cert/tls_key: {e}"))??;
                transport.tls = Some(Arc::new(config));
                Ok(transport)
            }
            (None, None) => Ok(transport),
            _ => anyhow::bail!("[http] tls_cert and tls_key go together"),
        }
    }
}

/// The TLS server configuration of `[http] tls_cert` (a PEM chain, leaf first) and `tls_key`
/// (a PEM PKCS#8, PKCS#1 or SEC1 key), with ring as the crypto provider (as reqwest uses) and
/// HTTP/1.1 only: its header read timeout is what bounds a slow client.
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let shown = |path: &std::path::Path| Escaped(&path.to_string_lossy()).to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("[http] tls_cert {}: {e}", shown(cert)))?;
    if chain.is_empty() {
        anyhow::bail!("[http] tls_cert {}: no certificate in it", shown(cert));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("[http] tls_key {}: {e}", shown(key)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "[http] tls_cert {} / tls_key {}: {e}",
                shown(cert),
                shown(key)
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the API on a bound `[http] listen` socket until `shutdown` resolves (see
/// [`server`] for the bounds on connections).
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    transport: Transport,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = transport.tls.map(tokio_rustls::TlsAcceptor::from);
    server::serve(
        router,
        listener,
        tls,
        transport.limits,
        transport.stats,
        shutdown,
    )
    .await
}

fn refuse(state: &ApiState, status: StatusCode, reason: impl std::fmt::Display) -> Response {
    state
        .stats
        .refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reason = reason.to_string().replace(['\r', '\n'], " ");
    tracing::warn!(status = status.as_u16(), "HTTP request refused: {reason}");
    (status, format!("{reason}\n")).into_response()
}

/// How long `/readyz` waits for the store's write check: a store locked by another process
/// (the check waits on SQLite's busy timeout) must not hold the answer, which also names the
/// daemon's stuck or ended tasks.
const READYZ_STORE_CHECK: Duration = Duration::from_secs(2);

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let mut problems = Vec::new();
    use std::sync::atomic::Ordering::AcqRel;
    let running = state.store_check_running.clone();
    if running.swap(true, AcqRel) {
        problems.push("the previous store check is still waiting (store locked or busy)".into());
    } else {
        let store = state.store.clone();
        let check = tokio::task::spawn_blocking(move || {
            let result = store.check_writable();
            running.store(false, std::sync::atomic::Ordering::Release);
            result
        });
        match tokio::time::timeout(READYZ_STORE_CHECK, check).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("store not writable: {e}")),
            Ok(Err(e)) => problems.push(format!("store check failed: {e}")),
            Err(_) => problems.push(format!(
                "store check took longer than {READYZ_STORE_CHECK:?} (store locked or busy)"
            )),
        }
    }
    if !state.pbx.as_ref().is_some_and(|pbx| pbx.is_connected()) {
        problems.push("PBX not connected".into());
    }
    if let Some(health) = &state.health {
        problems.extend(health.problems());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

/// `GET /sso?agentEmail=..[&leadId=..]`: a sign-on key for a configured agent, then a
/// redirect to LeadSquared's lead-details page.
async fn sso(State(state): State<Arc<ApiState>>, QueryParams(params): QueryParams) -> Response {
    let names = &state.http.params;
    let directory = state.directory();
    let Some(email) = params.get(&names.agent_email) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            format!("{} is required", names.agent_email),
        );
    };
    let Some(agent) = directory.agent_by_email(email) else {
        return refuse(
            &state,
            StatusCode::NOT_FOUND,
            "unknown agent: no [[agents]] entry has this e-mail",
        );
    };
    let Some(email) = agent.email.clone() else {
        return refuse(&state, StatusCode::NOT_FOUND, "the agent has no e-mail");
    };
    match state.lead_api.sign_on_key(&email).await {
        Ok(key) => {
            let target = state
                .lead_api
                .redirect_url(&key, params.get(&names.lead_id));
            tracing::info!(agent = %agent.extension, "single sign-on key issued");
            (
                StatusCode::FOUND,
                [(axum::http::header::LOCATION, target)],
                "redirecting to LeadSquared\n",
            )
                .into_response()
        }
        Err(e) => refuse(
            &state,
            StatusCode::BAD_GATEWAY,
            format!("single sign-on failed: {e}"),
        ),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    match &state.metrics {
        Some(m) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            m.render().await,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not collected here\n").into_response(),
    }
}

/// The agent a request names: by phone, e-mail or extension.
fn find_agent<'a>(
    directory: &'a Directory,
    number: Option<&str>,
    email: Option<&str>,
) -> Option<&'a AgentInfo> {
    number
        .and_then(|n| directory.agent_by_phone(n).or_else(|| directory.agent(n)))
        .or_else(|| email.and_then(|e| directory.agent_by_email(e)))
}

async fn click_to_call(
    State(state): State<Arc<ApiState>>,
    RequestParams(params): RequestParams,
) -> Response {
    let names = &state.http.params;
    let directory = state.directory();
    let Some(agent) = find_agent(
        &directory,
        params.get(&names.agent_number),
        params.get(&names.agent_email),
    ) else {
        return refuse(
            &state,
            StatusCode::NOT_FOUND,
            "unknown agent: no [[agents]] entry has this agentNumber or agentEmail",
        );
    };
    let lead_raw = params
        .get(&names.phone_with_country_code)
        .or_else(|| params.get(&names.customer_number));
    let Some(lead) = lead_raw.and_then(|n| directory.normalize(n)) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "no valid lead number (PhoneNumberWithCountryCode or customerNumber)",
        );
    };
    let caller_id = match params.get(&names.virtual_number) {
        Some(v) => match directory.normalize(v) {
            Some(n) => n,
            None => {
                return refuse(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "virtualNumber is not a phone number",
                );
            }
        },
        None => match directory.first_virtual_number() {
            Some(v) => v.number.clone(),
            None => {
                return refuse(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "no virtualNumber and no [[virtual_numbers]] configured",
                );
            }
        },
    };
    let Some(pbx) = state.pbx.clone() else {
        return refuse(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("originate failed: {}", PbxError::NotConnected),
        );
    };
    let keyword = state.http.response_keyword.clone();
    let dedupe_key = (agent.extension.clone(), lead.to_e164());
    {
        let mut recent = state
            .recent_clicks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if recent.contains(&dedupe_key) {
            let window = Duration::from_millis(state.http.click_to_call_dedupe_ms);
            tracing::info!(agent = %agent.extension, "click to call repeated within {window:?}: not ringing again");
            return (StatusCode::OK, keyword).into_response();
        }
        recent.insert(dedupe_key.clone(), ());
    }
    let call_id = pbx.new_call_id();
    let lead_id = params.get(&names.lead_id).map(str::to_owned);
    if let Some(id) = &lead_id {
        let (store, call, id) = (state.store.clone(), call_id.clone(), id.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.set_lead_id(&call, &id)).await
        {
            tracing::error!("storing the lead id of a click to call failed: {e}");
        }
    }
    let request = OriginateRequest {
        call_id: call_id.clone(),
        agent: agent.clone(),
        lead_number: lead.clone(),
        lead_id,
        caller_id,
    };
    match pbx.originate(request).await {
        Ok(()) => {
            state
                .stats
                .calls_placed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(call_id, agent = %agent.extension, lead = %lead.to_e164(), "click to call placed");
            (StatusCode::OK, keyword).into_response()
        }
        Err(e) => {
            state
                .recent_clicks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&dedupe_key);
            let status = match e {
                PbxError::NotConnected => StatusCode::SERVICE_UNAVAILABLE,
                PbxError::Unsafe(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            refuse(&state, status, format!("originate failed: {e}"))
        }
    }
}

async fn disposition(
    State(state): State<Arc<ApiState>>,
    RequestParams(params): RequestParams,
) -> Response {
    let names = &state.http.params;
    let directory = state.directory();
    let Some(call_id) = params.get(&names.call_session_id).map(str::to_owned) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            format!("{} is required", names.call_session_id),
        );
    };
    let Some(value) = params.get(&names.disposition_value).map(str::to_owned) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            format!("{} is required", names.disposition_value),
        );
    };
    if call_id.len() > 200 || value.len() > 500 {
        return refuse(&state, StatusCode::BAD_REQUEST, "value too long");
    }
    let notes = params.get(&names.notes).map(str::to_owned);
    let store = state.store.clone();
    let (c, v) = (call_id.clone(), value.clone());
    let stored =
        tokio::task::spawn_blocking(move || store.set_disposition(&c, &v, notes.as_deref())).await;
    let update_queued = match stored {
        Ok(Ok(queued)) => queued,
        Ok(Err(e)) => {
            return refuse(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot store the disposition: {e}"),
            );
        }
        Err(e) => {
            return refuse(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot store the disposition: {e}"),
            );
        }
    };
    tracing::info!(call_id, disposition = %value, update_queued, "disposition stored");
    let agent = find_agent(
        &directory,
        params.get(&names.agent_number),
        params.get(&names.agent_email),
    );
    let freed = match &state.pbx {
        Some(pbx) => match pbx.free_agent(agent).await {
            AgentRelease::NotConfigured => "stored".to_owned(),
            AgentRelease::Done(what) | AgentRelease::NotDone(what) => format!("stored; {what}"),
        },
        None => format!(
            "stored; the agent was not freed: {}",
            PbxError::NotConnected
        ),
    };
    (StatusCode::OK, format!("{freed}\n")).into_response()
}

async fn route(State(state): State<Arc<ApiState>>, QueryParams(params): QueryParams) -> Response {
    let fallback = state.http.route_fallback.clone();
    let directory = state.directory();
    let Some(caller) = params.get("caller").map(str::to_owned) else {
        return (StatusCode::OK, fallback).into_response();
    };
    let key = directory
        .normalize(&caller)
        .map(|n| n.to_e164())
        .unwrap_or_else(|| caller.clone());
    let cached = state
        .route_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    if let Some(ext) = cached {
        return (StatusCode::OK, ext).into_response();
    }
    let Some(client) = &state.route else {
        return (StatusCode::OK, fallback).into_response();
    };
    let deadline = Duration::from_millis(state.http.route_timeout_ms);
    let answer = tokio::time::timeout(deadline, client.lookup(&key)).await;
    let extension = match answer {
        Ok(Ok(answer)) => answer.agent(&directory).map(|a| a.extension.clone()),
        Ok(Err(e)) => {
            tracing::warn!(caller = %key, "call route lookup failed, answering the fallback: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(caller = %key, "call route lookup took longer than {deadline:?}, answering the fallback");
            None
        }
    };
    match extension {
        Some(ext) => {
            state
                .stats
                .routes_answered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            state
                .route_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, ext.clone());
            (StatusCode::OK, ext).into_response()
        }
        None => {
            state
                .stats
                .routes_fallback
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (StatusCode::OK, fallback).into_response()
        }
    }
}

#[cfg(test)]
mod tests;

//! The API's own accept loop: every connection is bounded in number, in the time its
//! request headers (and TLS handshake) may take, and in how long it may sit with nothing
//! moving, so idle or slow clients can neither exhaust the file descriptors nor keep
//! `/healthz` from answering.
//!
//! - At most [`ConnectionLimits::max_connections`] connections are open, and never more than
//!   the open-file limit less [`FD_RESERVE`], so CRM, PBX and store files always find a
//!   descriptor. When the table is full, a newcomer takes the place of the connection that
//!   has been quiet longest with no request in flight, if it has been quiet at least
//!   [`SHED_QUIET`]; otherwise the newcomer is closed at accept. Either is counted and
//!   logged as a summary, at most one line per [`SUMMARY_EVERY`].
//! - Request headers must arrive within `header_read_timeout` (hyper's timer, which also
//!   bounds the wait for the next request on a kept-alive connection); a TLS handshake gets
//!   the same time.
//! - A connection on which no byte moves either way for `idle_timeout` is closed, and a
//!   request must be answered within it (a body trickled byte by byte ends there too).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use crate::config::HttpConfig;

/// Descriptors kept free of incoming connections for everything else the daemon opens
/// (CRM and AMI connections, the store, the CDR file, the journal).
pub const FD_RESERVE: u64 = 256;
/// Under a full table, a connection quiet this long with no request in flight gives its
/// place to a newcomer.
pub const SHED_QUIET: Duration = Duration::from_millis(250);
/// Repeated refusals and accept errors are logged at most once per this time.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// The most bytes hyper buffers for one connection's request head.
const MAX_HEAD_BUFFER: usize = 64 * 1024;
/// How long open connections may finish their requests after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bounds of incoming connections (`[http] max_connections`, `header_read_timeout_ms`,
/// `idle_timeout_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most (before the open-file limit is considered).
    pub max_connections: usize,
    /// A request's headers, or a TLS handshake, must arrive within this time.
    pub header_read_timeout: Duration,
    /// Nothing moving for this long closes a connection; a request must be answered within it.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits `[http]` sets.
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            max_connections: http.max_connections.max(1),
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms.max(1)),
        }
    }

    /// The cap applied with an open-file limit of `soft_nofile` (None: unlimited): at most
    /// `max_connections`, leaving [`FD_RESERVE`] descriptors (or three quarters of a tiny
    /// limit) to the rest of the daemon.
    pub fn effective_cap(&self, soft_nofile: Option<u64>) -> usize {
        let Some(soft) = soft_nofile else {
            return self.max_connections;
        };
        let room = soft.saturating_sub(FD_RESERVE).max(soft / 4).max(1);
        self.max_connections
            .min(usize::try_from(room).unwrap_or(usize::MAX))
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::from_config(&HttpConfig::default())
    }
}

/// Counters of incoming connections.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at accept because the table was full.
    pub refused_at_cap: AtomicU64,
    /// Quiet connections closed to make room for a newcomer.
    pub shed_quiet: AtomicU64,
    /// Connections closed after `idle_timeout` with nothing moving, or a request not
    /// answered within it.
    pub idle_closed: AtomicU64,
    /// TLS handshakes that failed or did not finish within `header_read_timeout`.
    pub tls_failed: AtomicU64,
    /// `accept` errors (EMFILE and the like).
    pub accept_errors: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// The connections' figures on `/metrics`: `pbxlink_http_connections_total{outcome}` and
/// `pbxlink_http_connections_open`.
impl crate::metrics::MetricsSource for ConnectionStats {
    fn write(&self, scrape: &mut crate::metrics::Scrape) {
        for (outcome, value) in [
            ("accepted", &self.accepted),
            ("refused_at_cap", &self.refused_at_cap),
            ("shed_quiet", &self.shed_quiet),
            ("idle_closed", &self.idle_closed),
            ("tls_failed", &self.tls_failed),
            ("accept_error", &self.accept_errors),
        ] {
            scrape.counter_with(
                "http_connections",
                "HTTP API connections by what became of them (refused at the cap, shed while quiet, closed idle, TLS failed, accept errors)",
                &[("outcome", outcome)],
                value.load(Ordering::Relaxed),
            );
        }
        scrape.gauge(
            "http_connections_open",
            "HTTP API connections open now",
            i64::try_from(self.open.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
    }
}

/// Raises the soft open-file limit to the hard one, when it is lower; returns the soft
/// limit in force afterwards (None: unlimited). Under systemd `LimitNOFILE=` has set both,
/// and the unit's system call filter refuses `setrlimit`, which is fine: the limit stays.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            match setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard),
                    maximum: Some(hard),
                },
            ) {
                Ok(()) => {
                    tracing::debug!(from = soft, to = hard, "raised the open-file limit");
                    Some(hard)
                }
                Err(e) => {
                    tracing::debug!(soft, hard, "cannot raise the open-file limit: {e}");
                    Some(soft)
                }
            }
        }
        (soft, _) => soft,
    }
}

/// One open connection as the table sees it.
#[derive(Debug)]
struct Conn {
    /// Milliseconds since the table's epoch when a byte last moved.
    last_activity_ms: AtomicU64,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Notified when the connection is to be closed to make room.
    shed: Notify,
}

/// The open connections, bounded by `cap`.
#[derive(Debug)]
struct Table {
    cap: usize,
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    stats: Arc<ConnectionStats>,
}

enum Admission {
    /// Served; the slot is freed when the guard drops.
    Admitted(Slot),
    /// Another connection was closed to make room.
    AdmittedShedding(Slot),
    /// The table is full of busy or freshly active connections.
    Refused,
}

/// A place in the table; dropping it frees the place.
struct Slot {
    id: u64,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let removed = self
            .table
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if removed.is_some() {
            self.table.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Table {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn admit(self: &Arc<Self>) -> Admission {
        let now = self.now_ms();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut shed = false;
        if open.len() >= self.cap {
            let quietest = open
                .iter()
                .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, c)| c.last_activity_ms.load(Ordering::Relaxed))
                .map(|(id, c)| (*id, c.last_activity_ms.load(Ordering::Relaxed)));
            let quiet_enough = quietest
                .filter(|(_, last)| Duration::from_millis(now.saturating_sub(*last)) >= SHED_QUIET);
            let Some((victim, _)) = quiet_enough else {
                return Admission::Refused;
            };
            if let Some(conn) = open.remove(&victim) {
                self.stats.open.fetch_sub(1, Ordering::Relaxed);
                conn.shed.notify_one();
                shed = true;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            last_activity_ms: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
            shed: Notify::new(),
        });
        open.insert(id, conn.clone());
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            conn,
            table: self.clone(),
        };
        if shed {
            Admission::AdmittedShedding(slot)
        } else {
            Admission::Admitted(slot)
        }
    }
}

/// Counts events and says when a summary line is due (the first at once, then at most one
/// per [`SUMMARY_EVERY`]).
#[derive(Debug, Default)]
struct Summary {
    pending: u64,
    last_line: Option<Instant>,
}

impl Summary {
    /// Counts one event; Some(events since the last line) when a line is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        let due = self
            .last_line
            .is_none_or(|at| now.duration_since(at) >= SUMMARY_EVERY);
        if due {
            self.last_line = Some(now);
            Some(std::mem::take(&mut self.pending))
        } else {
            None
        }
    }
}

/// A stream that records when bytes move, for the idle timeout and shedding.
struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        self.conn
            .last_activity_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is set) within `limits` until
/// `shutdown` resolves, then lets open connections finish for a few seconds.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listen = listener.local_addr()?;
    let soft_nofile = raise_open_file_limit();
    let cap = limits.effective_cap(soft_nofile);
    if cap < limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            cap,
            open_file_limit = soft_nofile,
            "[http] max_connections lowered to leave {FD_RESERVE} descriptors to CRM, PBX and store; raise LimitNOFILE="
        );
    }
    tracing::info!(
        %listen,
        tls = tls.is_some(),
        max_connections = cap,
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        "{} API listening",
        if tls.is_some() { "HTTPS" } else { "HTTP" }
    );
    let table = Arc::new(Table {
        cap,
        epoch: Instant::now(),
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        stats: stats.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refusals = Summary::default();
    let mut sheddings = Summary::default();
    let mut accept_errors = Summary::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = accept_errors.note(Instant::now()) {
                    tracing::error!(
                        "HTTP accept failed ({n} time(s) since the last line): {e}; open connections {}",
                        stats.open.load(Ordering::Relaxed)
                    );
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let slot = match table.admit() {
            Admission::Admitted(slot) => slot,
            Admission::AdmittedShedding(slot) => {
                stats.shed_quiet.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = sheddings.note(Instant::now()) {
                    tracing::warn!(
                        "HTTP connections at the cap ({cap}): {n} quiet connection(s) closed to make room since the last line"
                    );
                }
                slot
            }
            Admission::Refused => {
                stats.refused_at_cap.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                if let Some(n) = refusals.note(Instant::now()) {
                    tracing::warn!(
                        %peer,
                        "HTTP connections at the cap ({cap}), all busy: {n} new connection(s) closed at accept since the last line"
                    );
                }
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (router, tls, stats, stop) =
            (router.clone(), tls.clone(), stats.clone(), stop_rx.clone());
        connections.spawn(async move {
            let (conn, table) = (slot.conn.clone(), slot.table.clone());
            let io = Tracked {
                inner: stream,
                conn: conn.clone(),
                table: table.clone(),
            };
            let context = ConnectionContext {
                peer,
                router,
                limits,
                table,
                conn,
                stats: stats.clone(),
                stop,
            };
            match tls {
                None => connection(io, context).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(io)) => connection(io, context).await,
                        Ok(Err(e)) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake took longer than the header read timeout");
                        }
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} HTTP connection(s) still open after {DRAIN:?} of shutdown: closed",
            connections.len()
        );
    }
    Ok(())
}

/// What one connection's task works with.
struct ConnectionContext {
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    table: Arc<Table>,
    conn: Arc<Conn>,
    stats: Arc<ConnectionStats>,
    stop: watch::Receiver<bool>,
}

/// Serves HTTP/1.1 on one connection until the client leaves, the connection is shed or
/// idle, or shutdown ends it after its request in flight.
async fn connection<I>(io: I, context: ConnectionContext)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnectionContext {
        peer,
        router,
        limits,
        table,
        conn,
        stats,
        mut stop,
    } = context;
    let in_flight = conn.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        let guard = InFlight::new(in_flight.clone());
        let answer_within = limits.idle_timeout;
        async move {
            let answer = tokio::time::timeout(answer_within, router.call(request)).await;
            drop(guard);
            Ok::<_, Infallible>(match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => request_timeout(),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    let http = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    let mut draining = false;
    loop {
        tokio::select! {
            result = http.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "HTTP connection ended: {e}");
                }
                return;
            }
            () = conn.shed.notified() => {
                tracing::debug!(%peer, "quiet HTTP connection closed to make room");
                return;
            }
            () = idle_expired(&table, &conn, limits.idle_timeout) => {
                stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "HTTP connection idle for {:?}: closed", limits.idle_timeout);
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !draining => {
                http.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Resolves once no byte has moved on `conn` for `idle`.
async fn idle_expired(table: &Table, conn: &Conn, idle: Duration) {
    loop {
        let last = conn.last_activity_ms.load(Ordering::Relaxed);
        let quiet = Duration::from_millis(table.now_ms().saturating_sub(last));
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

fn request_timeout() -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        "request not completed within the idle timeout\n",
    )
        .into_response()
}

//! [`Supervisor`]: the connection task every PBX client runs, and the [`Protocol`] a client
//! plugs into it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::link::{Link, LinkError};
use super::state::{ConnectionState, ConnectionStats};
use crate::backoff::Backoff;

/// How a supervised connection is made and watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorSettings {
    /// Host to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How often the protocol's keepalive probe is written.
    pub keepalive_interval: Duration,
    /// No byte for this long (despite the probes) means the socket is half-open.
    pub idle_limit: Duration,
    /// Timeout of each step of connecting (TCP connect, each login/setup step).
    pub setup_timeout: Duration,
    /// Timeout of one write to the socket.
    pub write_timeout: Duration,
    /// How long a logged-in connection must last before the backoff starts over.
    pub healthy_after: Duration,
    /// Delay between attempts: `backoff.delay(n + 1)` after `n` failed attempts or
    /// short-lived connections since the last healthy one (a healthy connection that ended is
    /// retried after `backoff.initial` at most).
    pub backoff: Backoff,
}

impl SupervisorSettings {
    /// The defaults every PBX connection uses: probe every 10 s, half-open after 25 s of
    /// silence, 10 s per setup step and per write, healthy after 30 s, reconnect delays of
    /// 0.25-0.5 s after a healthy connection, 0.5-1 s after the first failure, doubling to at
    /// most 30 s.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            keepalive_interval: Duration::from_secs(10),
            idle_limit: Duration::from_secs(25),
            setup_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            healthy_after: Duration::from_secs(30),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                cap: Duration::from_secs(30),
            },
        }
    }
}

/// What kind of failure ended a connection (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server refused the login (credentials, ACL).
    LoginRefused,
    /// The server sent something that is not the protocol.
    MalformedFrame,
    /// Nothing arrived for the idle limit.
    HalfOpen,
    /// Anything else (refused connect, server close, timeout ...).
    Other,
}

/// Bytes of one request for the connection (generation) it was registered on, and what the
/// protocol needs to know once they are written (e.g. who waits for the reply).
#[derive(Debug)]
pub struct Outgoing<T> {
    /// The generation the request was registered on ([`Supervisor::register`]).
    pub generation: u64,
    /// The bytes to write.
    pub bytes: Vec<u8>,
    /// Handed to [`Protocol::written`] once written.
    pub ticket: T,
}

/// What a protocol holds for consumers that had no room ([`Protocol::backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// Nothing held.
    None,
    /// Frames held, but the socket may still be read (e.g. so that answers reach callers).
    KeepReading,
    /// Frames held: stop reading until [`Protocol::drain`] made room.
    StopReading,
}

/// A PBX protocol, as the supervisor drives it.
pub trait Protocol: Send + 'static {
    /// What callers wait on, shared with the handles (e.g. calls by ActionID); reset to its
    /// default, dropping every waiter, when a connection ends.
    type Pending: Default + Send + 'static;
    /// Per-connection state (the framer, replies expected in order ...).
    type Session: Send;
    /// Carried by an [`Outgoing`] to [`Protocol::written`].
    type Ticket: Send + 'static;
    /// What ends a connection.
    type Error: std::error::Error + From<LinkError> + Send + 'static;

    /// The protocol's name in logs ("AMI", "ESL").
    const NAME: &'static str;

    /// Logs in on a fresh connection; returns the session and what the server says it is.
    fn connect<'a>(
        &'a mut self,
        link: &'a mut Link,
    ) -> impl Future<Output = Result<(Self::Session, String), Self::Error>> + Send + 'a;

    /// Bytes arrived (empty right after [`Protocol::connect`]: frames it left buffered);
    /// dispatches the whole frames buffered. Must not wait; a protocol whose consumers are
    /// full holds what they have no room for and says so in [`Protocol::backlog`].
    fn received(&mut self, session: &mut Self::Session, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Whether the protocol holds frames its consumers had no room for, and whether the
    /// socket may be read meanwhile. While it holds any, the supervisor runs
    /// [`Protocol::drain`]; while it says [`Backlog::StopReading`] it does not read the
    /// socket (TCP then pushes back on the server) nor count the silence as half-open.
    fn backlog(&self, _session: &Self::Session) -> Backlog {
        Backlog::None
    }

    /// Waits until the consumers made room, hands on what was held and dispatches what is
    /// still buffered. Must be cancel-safe (the supervisor drops it when another branch of
    /// its loop is ready): progress lives in the session.
    fn drain<'a>(
        &'a mut self,
        _session: &'a mut Self::Session,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'a {
        std::future::ready(Ok(()))
    }

    /// The bytes of an [`Outgoing`] were written.
    fn written(&mut self, session: &mut Self::Session, ticket: Self::Ticket);

    /// The keepalive probe to write now, if any.
    fn keepalive(&mut self, session: &mut Self::Session) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The bytes to write, best effort, before closing on shutdown (a logoff).
    fn goodbye(&mut self, session: &mut Self::Session) -> Option<Vec<u8>>;

    /// What kind of failure `error` is.
    fn classify(error: &Self::Error) -> Failure;
}

/// The state a client's handles and its connection task share: the connection state, the
/// counters, the shutdown flag and the registry of waiting callers with the live generation.
pub struct Supervisor<P> {
    name: &'static str,
    server: String,
    state: watch::Sender<ConnectionState>,
    stats: Mutex<ConnectionStats>,
    shutdown: watch::Sender<bool>,
    live: Mutex<Live<P>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<P> std::fmt::Debug for Supervisor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("protocol", &self.name)
            .field("server", &self.server)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// A supervised connection as the daemon sees it: its name on the `STATUS=` line, its
/// state, and its close at shutdown. Every [`Supervisor`] is one; a PBX's wiring hands it to
/// [`crate::pbx::parts::LivePart`].
pub trait SupervisedConnection: Send + Sync {
    /// The protocol's name (`AMI`, `ESL`).
    fn name(&self) -> &'static str;
    /// The connection state, updated as it changes.
    fn state(&self) -> watch::Receiver<ConnectionState>;
    /// Closes the connection and stops its task ([`Supervisor::shutdown`]).
    fn close(&self) -> crate::pbx::PbxFuture<'_, ()>;
}

impl<P: Default + Send + 'static> SupervisedConnection for Supervisor<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        Supervisor::state(self)
    }

    fn close(&self) -> crate::pbx::PbxFuture<'_, ()> {
        Box::pin(self.shutdown())
    }
}

/// The live generation (if logged in) and the callers waiting on it.
#[derive(Default)]
struct Live<P> {
    generation: Option<u64>,
    last_generation: u64,
    pending: P,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a connection ended.
enum End<E> {
    Shutdown,
    HandlesDropped,
    Failed(E),
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl<P: Default + Send + 'static> Supervisor<P> {
    /// A supervisor for a `name` connection to `server` (not started: [`Supervisor::spawn`]).
    pub fn new(name: &'static str, server: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            name,
            server: server.into(),
            state: watch::Sender::new(ConnectionState::Connecting { attempt: 1 }),
            stats: Mutex::new(ConnectionStats::default()),
            shutdown: watch::Sender::new(false),
            live: Mutex::new(Live {
                generation: None,
                last_generation: 0,
                pending: P::default(),
            }),
            task: Mutex::new(None),
        })
    }

    /// `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The connection state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ConnectionStats {
        lock(&self.stats).clone()
    }

    /// True once [`Supervisor::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Why no request can be sent right now (the last disconnect reason, or "connecting").
    pub fn down_reason(&self) -> String {
        match &*self.state.borrow() {
            ConnectionState::Disconnected { reason, .. } => reason.clone(),
            ConnectionState::Connecting { attempt } => {
                format!("connecting to {} (attempt {attempt})", self.server)
            }
            ConnectionState::Connected { .. } => "connection lost".into(),
        }
    }

    /// Registers a request on the live connection: runs `f` on the pending registry and
    /// returns the generation to queue the bytes for. None (counted as
    /// [`ConnectionStats::sent_while_down`]) when not logged in; `f` is not run then.
    pub fn register<R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<(u64, R)> {
        let mut live = lock(&self.live);
        match live.generation {
            Some(g) => Some((g, f(&mut live.pending))),
            None => {
                drop(live);
                lock(&self.stats).sent_while_down += 1;
                None
            }
        }
    }

    /// Runs `f` on the pending registry, connected or not (unregistering, dispatching).
    pub fn with_pending<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        f(&mut lock(&self.live).pending)
    }

    /// Starts the connection task on the current Tokio runtime (panics outside one, like
    /// `tokio::spawn`). The task ends on [`Supervisor::shutdown`] or when `commands` closes
    /// (every handle dropped).
    pub fn spawn<Pr: Protocol<Pending = P>>(
        self: &Arc<Self>,
        protocol: Pr,
        settings: SupervisorSettings,
        commands: mpsc::Receiver<Outgoing<Pr::Ticket>>,
    ) {
        let task = tokio::spawn(run(self.clone(), protocol, settings, commands));
        *lock(&self.task) = Some(task);
    }

    /// Closes the connection (after the protocol's goodbye), fails pending requests and stops
    /// the task; returns when the task has ended.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                warn!("{} task ended abnormally: {e}", self.name);
            }
        }
    }

    /// Logged in: new requests are accepted for the returned generation.
    fn go_live(&self, version: String) -> u64 {
        let generation = {
            let mut live = lock(&self.live);
            live.last_generation += 1;
            live.generation = Some(live.last_generation);
            live.last_generation
        };
        {
            let mut st = lock(&self.stats);
            st.logins += 1;
            if st.logins > 1 {
                st.reconnects += 1;
            }
            st.connected = true;
        }
        info!(server = %self.server, %version, "{} logged in", self.name);
        self.state.send_replace(ConnectionState::Connected {
            version,
            since: SystemTime::now(),
        });
        generation
    }

    /// Down: the state says why, then every waiter of the connection fails.
    fn go_down(&self, reason: String) {
        let mut live = lock(&self.live);
        live.generation = None;
        lock(&self.stats).connected = false;
        self.state.send_replace(ConnectionState::Disconnected {
            since: SystemTime::now(),
            reason,
        });
        live.pending = P::default();
    }
}

/// The connection task: connect, serve, back off, again.
async fn run<Pr: Protocol>(
    sup: Arc<Supervisor<Pr::Pending>>,
    mut protocol: Pr,
    settings: SupervisorSettings,
    mut commands: mpsc::Receiver<Outgoing<Pr::Ticket>>,
) {
    let mut shutdown = sup.shutdown.subscribe();
    let mut failures: u32 = 0;
    let mut attempt: u32 = 0;
    loop {
        // The session of the connection that ended is dropped only after the state says why,
        // so callers whose waiters it holds see the reason.
        let mut ended_session = None;
        attempt += 1;
        sup.state
            .send_replace(ConnectionState::Connecting { attempt });
        let established = tokio::select! {
            r = establish(&mut protocol, &settings) => Some(r),
            () = wait_true(&mut shutdown) => None,
        };
        let end = match established {
            None => End::Shutdown,
            Some(Err(e)) => {
                failures = failures.saturating_add(1);
                let mut st = lock(&sup.stats);
                st.connect_failures += 1;
                if Pr::classify(&e) == Failure::LoginRefused {
                    st.login_failures += 1;
                }
                End::Failed(e)
            }
            Some(Ok((link, mut session, version))) => {
                attempt = 0;
                let generation = sup.go_live(version);
                let up_since = Instant::now();
                let end = serve(
                    &mut protocol,
                    &settings,
                    link,
                    &mut session,
                    generation,
                    &mut commands,
                    &mut shutdown,
                )
                .await;
                ended_session = Some(session);
                if up_since.elapsed() >= settings.healthy_after {
                    failures = 0;
                } else {
                    failures = failures.saturating_add(1);
                }
                end
            }
        };
        let reason = match &end {
            End::Shutdown => "shut down".to_owned(),
            End::HandlesDropped => "every client handle dropped".to_owned(),
            End::Failed(e) => {
                let mut st = lock(&sup.stats);
                match Pr::classify(e) {
                    Failure::MalformedFrame => st.malformed_frames += 1,
                    Failure::HalfOpen => st.half_open_drops += 1,
                    Failure::LoginRefused | Failure::Other => {}
                }
                e.to_string()
            }
        };
        let failed = matches!(end, End::Failed(_));
        if failed {
            warn!(server = %sup.server, "{} connection down: {reason}", Pr::NAME);
        } else {
            info!(server = %sup.server, "{} client stopped: {reason}", Pr::NAME);
        }
        sup.go_down(reason);
        drop(ended_session);
        if !failed {
            return;
        }
        // A healthy connection that ended (failures = 0) is retried after the first step
        // (`backoff.initial`); each failure since moves one doubling further.
        let delay = settings
            .backoff
            .delay(failures.saturating_add(1), None, &mut rand::rng());
        debug!(?delay, failures, "{} reconnect backoff", Pr::NAME);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = wait_true(&mut shutdown) => {
                    sup.go_down("shut down".into());
                    return;
                }
                cmd = commands.recv() => {
                    // Queued for a connection that is gone: its caller already failed.
                    if cmd.is_none() {
                        return;
                    }
                }
            }
        }
    }
}

/// TCP connect, then the protocol's login.
async fn establish<Pr: Protocol>(
    protocol: &mut Pr,
    settings: &SupervisorSettings,
) -> Result<(Link, Pr::Session, String), Pr::Error> {
    let mut link = Link::connect(
        &settings.host,
        settings.port,
        settings.setup_timeout,
        settings.write_timeout,
    )
    .await?;
    let (session, version) = protocol.connect(&mut link).await?;
    Ok((link, session, version))
}

/// The logged-in connection: reads, writes queued requests, probes, watches for silence.
async fn serve<Pr: Protocol>(
    protocol: &mut Pr,
    settings: &SupervisorSettings,
    mut link: Link,
    session: &mut Pr::Session,
    generation: u64,
    commands: &mut mpsc::Receiver<Outgoing<Pr::Ticket>>,
    shutdown: &mut watch::Receiver<bool>,
) -> End<Pr::Error> {
    let interval = settings.keepalive_interval;
    let mut keepalive = tokio::time::interval_at(Instant::now() + interval, interval);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if let Err(e) = protocol.received(session, &[]) {
        return End::Failed(e);
    }
    let mut was_reading = true;
    loop {
        let backlog = protocol.backlog(session);
        let reading = backlog != Backlog::StopReading;
        if reading && !was_reading {
            // Not reading was this side's choice: the silence it caused is not the peer's.
            link.note_alive();
        }
        was_reading = reading;
        let idle_deadline = link.last_rx() + settings.idle_limit;
        let step: Result<Option<End<Pr::Error>>, Pr::Error> = tokio::select! {
            r = link.read(), if reading => match r {
                Ok(bytes) => protocol.received(session, bytes).map(|()| None),
                Err(e) => Err(e.into()),
            },
            r = protocol.drain(session), if backlog != Backlog::None => r.map(|()| None),
            cmd = commands.recv() => match cmd {
                None => {
                    if let Some(bytes) = protocol.goodbye(session) {
                        link.write_best_effort(&bytes).await;
                    }
                    Ok(Some(End::HandlesDropped))
                }
                Some(out) if out.generation == generation => match link.write(&out.bytes).await {
                    Ok(()) => {
                        protocol.written(session, out.ticket);
                        Ok(None)
                    }
                    Err(e) => Err(e.into()),
                },
                // Registered on an earlier connection: its caller already failed.
                Some(_) => Ok(None),
            },
            _ = keepalive.tick() => match protocol.keepalive(session) {
                Ok(Some(bytes)) => link.write(&bytes).await.map(|()| None).map_err(Into::into),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
            () = tokio::time::sleep_until(idle_deadline), if reading => {
                Err(LinkError::HalfOpen { idle: settings.idle_limit }.into())
            }
            () = wait_true(shutdown) => {
                if let Some(bytes) = protocol.goodbye(session) {
                    link.write_best_effort(&bytes).await;
                }
                Ok(Some(End::Shutdown))
            }
        };
        match step {
            Ok(None) => {}
            Ok(Some(end)) => return end,
            Err(e) => return End::Failed(e),
        }
    }
}

//! [`AmiClient`]: a cloneable handle on the task that owns the AMI connection.
//!
//! The task connects, reads the banner, logs in (`Events: off` so nothing arrives before
//! filtering is set up), asks Asterisk to filter events for it (`Action: Filter`, which
//! needs `write = system` on the manager user; when refused, the client falls back to an
//! `EventMask` made of the needed classes and filters on its side), then turns events on.
//! While connected it sends `Ping` every [`PING_INTERVAL`] and declares the socket
//! half-open when no byte at all arrived for [`IDLE_LIMIT`]. Whatever ends a connection
//! (server close, half-open, malformed frame, write timeout, login refused), the task fails
//! the pending calls of that connection, reports [`ConnectionState::Disconnected`] with the
//! reason and tries again after a capped, jittered exponential backoff (never more than
//! [`BACKOFF_MAX`] between tries). A restarted Asterisk greets the new connection with its
//! banner again and the client logs in again.
//!
//! Calls are correlated by a generated `ActionID`: every message carrying it goes to the
//! caller waiting for it, which is how event lists and the `OriginateResponse` event of an
//! async `Originate` reach [`AmiClient::send_list`] and [`AmiClient::originate`]. Events are
//! also offered, after filtering, to every [`AmiClient::events`] receiver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::{Action, AmiError, Frame, FrameLimits, Framer, Message};
use crate::config::{AmiLogin, AmiSettings};

/// How often a `Ping` is sent on an idle-or-not connection.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// No byte for this long (despite the pings) means the socket is half-open.
pub const IDLE_LIMIT: Duration = Duration::from_secs(25);
/// First reconnect delay (before jitter).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest delay between two connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a logged-in connection must last before the reconnect backoff starts again from
/// [`BACKOFF_INITIAL`]. A server that accepts the login and then fails at once (sends
/// garbage, closes) is retried with growing delays like one that refuses the connection,
/// not every half second.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Events buffered per [`AmiClient::events`] receiver before it lags.
pub const EVENT_CAPACITY: usize = 32_768;
/// Timeout of each step of connecting: TCP connect, banner, each setup action.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one write to the socket.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Events that are always forwarded, whatever the configuration says.
const ALWAYS_FORWARDED: [&str; 2] = ["FullyBooted", "Shutdown"];
const COMMAND_CAPACITY: usize = 256;
const READ_CHUNK: usize = 16 * 1024;

/// Where the connection to Asterisk stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected; the client retries on its own (unless shut down).
    Disconnected {
        /// When the connection went down.
        since: SystemTime,
        /// Why (an [`AmiError`] as text, or "shut down").
        reason: String,
    },
    /// Connecting or logging in.
    Connecting {
        /// Consecutive attempt since the last successful login (1-based).
        attempt: u32,
    },
    /// Logged in; actions can be sent.
    Connected {
        /// Manager protocol version from the banner (`Asterisk Call Manager/<version>`).
        version: String,
        /// When the login succeeded.
        since: SystemTime,
    },
}

/// A snapshot of the client's counters ([`AmiClient::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmiStats {
    /// Logged in right now.
    pub connected: bool,
    /// Successful logins.
    pub logins: u64,
    /// Successful logins after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed before or during login.
    pub connect_failures: u64,
    /// Logins refused by Asterisk (wrong user or secret).
    pub login_failures: u64,
    /// Connections dropped because nothing arrived for [`IDLE_LIMIT`].
    pub half_open_drops: u64,
    /// Connections dropped because the server sent a malformed or oversized frame.
    pub malformed_frames: u64,
    /// Events received, by event name (before filtering).
    pub events_by_type: HashMap<String, u64>,
    /// Events offered to the [`AmiClient::events`] receivers.
    pub events_forwarded: u64,
    /// Events overwritten before at least one receiver read them (a lagging receiver).
    pub events_lagged: u64,
    /// Actions refused before reaching the wire (CR/LF in a header or the name).
    pub refused_actions: u64,
    /// Calls that failed at once because the client was not connected.
    pub sent_while_down: u64,
    /// Whether Asterisk filters events for us (`Action: Filter` accepted) on the current
    /// or last connection; false means pbxlink filters them.
    pub server_side_filter: bool,
}

/// A handle on the AMI connection task. Cheap to clone; the task ends with
/// [`AmiClient::shutdown`] or when every handle is dropped.
#[derive(Clone)]
pub struct AmiClient {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Outgoing>,
}

impl std::fmt::Debug for AmiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmiClient")
            .field("server", &self.shared.server)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl AmiClient {
    /// Spawns the connection task (connect, banner, login, filter, keepalive, reconnect)
    /// on the current Tokio runtime and returns at once; watch [`AmiClient::state`] to see
    /// it connect. Panics outside a runtime (like `tokio::spawn`).
    pub fn spawn(settings: AmiSettings, secret: String) -> AmiClient {
        let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
        let shared = Arc::new(Shared::new(&settings));
        let task = tokio::spawn(run(shared.clone(), settings, secret, rx));
        *lock(&shared.task) = Some(task);
        AmiClient { shared, commands }
    }

    /// Sends `action` and returns its response (`Response: Success`, or `Follows` for an
    /// old `Command`). `Response: Error` is [`AmiError::Rejected`]. Fails at once with
    /// [`AmiError::NotConnected`] when not logged in, with [`AmiError::Disconnected`] when
    /// the connection drops while waiting, and with [`AmiError::Timeout`] after `timeout`.
    pub async fn send(&self, action: Action, timeout: Duration) -> Result<Message, AmiError> {
        let name = action.name().to_owned();
        within(&name, timeout, async {
            let mut call = self.start(&action).await?;
            call.response().await
        })
        .await
    }

    /// Sends a list action (`QueueStatus`, `CoreShowChannels`...) and returns its response
    /// and the events of the list, in order, without the final `...Complete` event (the
    /// one with `EventList: Complete`). Events of the list carry the action's ActionID;
    /// other events arriving meanwhile are not mixed in. A response without `EventList` and
    /// without "follow" in its message ends the call with no events.
    pub async fn send_list(
        &self,
        action: Action,
        timeout: Duration,
    ) -> Result<(Message, Vec<Message>), AmiError> {
        let name = action.name().to_owned();
        within(&name, timeout, async {
            let mut call = self.start(&action).await?;
            let mut response = None;
            let mut items = Vec::new();
            let mut complete = false;
            loop {
                let m = call.next().await?;
                if m.response().is_some() && response.is_none() {
                    let r = call.check(m)?;
                    let follows = r.get("EventList").is_some()
                        || r.get("Message")
                            .is_some_and(|t| t.to_ascii_lowercase().contains("follow"));
                    response = Some(r);
                    if !follows {
                        complete = true;
                    }
                } else if let Some(event) = m.event() {
                    if m.get("EventList")
                        .is_some_and(|v| v.eq_ignore_ascii_case("Complete"))
                        || event.ends_with("Complete")
                    {
                        complete = true;
                    } else {
                        items.push(Arc::unwrap_or_clone(m));
                    }
                }
                if let (true, Some(r)) = (complete, &response) {
                    return Ok((r.clone(), items));
                }
            }
        })
        .await
    }

    /// Sends an `Originate` with `Async: true` (replacing any `Async` header) and waits for
    /// both its response (`Response: Error` is [`AmiError::Rejected`]) and the
    /// `OriginateResponse` event with the same ActionID, which it returns: check its
    /// `Response` (`Success`/`Failure`), `Reason` and `Uniqueid`. `timeout` must cover the
    /// ringing time (the action's `Timeout` header, 30 s by default in Asterisk).
    pub async fn originate(&self, action: Action, timeout: Duration) -> Result<Message, AmiError> {
        let action = action.set("Async", "true")?;
        let name = action.name().to_owned();
        within(&name, timeout, async {
            let mut call = self.start(&action).await?;
            let mut responded = false;
            let mut outcome = None;
            loop {
                let m = call.next().await?;
                if m.response().is_some() && !responded && m.event().is_none() {
                    call.check(m)?;
                    responded = true;
                } else if m
                    .event()
                    .is_some_and(|e| e.eq_ignore_ascii_case("OriginateResponse"))
                {
                    outcome = Some(m);
                }
                if responded {
                    if let Some(m) = outcome.take() {
                        return Ok(Arc::unwrap_or_clone(m));
                    }
                }
            }
        })
        .await
    }

    /// A receiver of the events that pass the filter (the configured `events`, plus
    /// FullyBooted and Shutdown; every event when `events` is empty), unknown event names
    /// included when configured. A receiver that falls more than [`EVENT_CAPACITY`] events
    /// behind gets `RecvError::Lagged`; the loss is counted in
    /// [`AmiStats::events_lagged`].
    pub fn events(&self) -> broadcast::Receiver<Arc<Message>> {
        self.shared.events.subscribe()
    }

    /// The connection state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AmiStats {
        lock(&self.shared.stats).clone()
    }

    /// Logs off (best effort), closes the connection, fails pending calls and stops the
    /// task; returns when the task has ended. Later calls fail with [`AmiError::Closed`].
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let task = lock(&self.shared.task).take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                warn!("AMI task ended abnormally: {e}");
            }
        }
    }

    /// Registers a call and queues its bytes for the connection task.
    async fn start(&self, action: &Action) -> Result<Call, AmiError> {
        let shared = &self.shared;
        if *shared.shutdown.borrow() {
            return Err(AmiError::Closed);
        }
        let id = format!("pbxlink-{}", shared.next_id.fetch_add(1, Ordering::Relaxed));
        let bytes = match action.encode(&id) {
            Ok(b) => b,
            Err(e) => {
                lock(&shared.stats).refused_actions += 1;
                warn!(action = action.name(), "refused AMI action: {e}");
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = {
            let mut live = lock(&shared.live);
            match live.generation {
                Some(g) => {
                    live.pending.insert(id.clone(), tx);
                    g
                }
                None => {
                    drop(live);
                    lock(&shared.stats).sent_while_down += 1;
                    return Err(AmiError::NotConnected {
                        reason: shared.down_reason(),
                    });
                }
            }
        };
        let call = Call {
            shared: shared.clone(),
            id,
            action: action.name().to_owned(),
            rx,
        };
        self.commands
            .send(Outgoing { generation, bytes })
            .await
            .map_err(|_| AmiError::Closed)?;
        Ok(call)
    }
}

/// Runs `work` with a deadline, mapping expiry to [`AmiError::Timeout`].
async fn within<T>(
    action: &str,
    timeout: Duration,
    work: impl Future<Output = Result<T, AmiError>>,
) -> Result<T, AmiError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(AmiError::Timeout {
                action: action.to_owned(),
                after: timeout,
            })
        })
}

/// One action waiting for its answers; unregisters itself when dropped.
struct Call {
    shared: Arc<Shared>,
    id: String,
    action: String,
    rx: mpsc::UnboundedReceiver<Arc<Message>>,
}

impl Call {
    /// The next message carrying this call's ActionID.
    async fn next(&mut self) -> Result<Arc<Message>, AmiError> {
        self.rx.recv().await.ok_or_else(|| {
            if *self.shared.shutdown.borrow() {
                AmiError::Closed
            } else {
                AmiError::Disconnected {
                    action: self.action.clone(),
                    reason: self.shared.down_reason(),
                }
            }
        })
    }

    /// The first `Response:` message, checked.
    async fn response(&mut self) -> Result<Message, AmiError> {
        loop {
            let m = self.next().await?;
            if m.response().is_some() && m.event().is_none() {
                return self.check(m);
            }
        }
    }

    /// `Response: Error` → [`AmiError::Rejected`].
    fn check(&self, m: Arc<Message>) -> Result<Message, AmiError> {
        if m.is_error() {
            return Err(AmiError::Rejected {
                action: self.action.clone(),
                message: m.get("Message").unwrap_or("").to_owned(),
            });
        }
        Ok(Arc::unwrap_or_clone(m))
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        lock(&self.shared.live).pending.remove(&self.id);
    }
}

/// Bytes of one action for the connection it was registered on.
struct Outgoing {
    generation: u64,
    bytes: Vec<u8>,
}

/// State shared by the handles and the task.
struct Shared {
    server: String,
    filter: EventFilter,
    live: Mutex<Live>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<Arc<Message>>,
    next_id: AtomicU64,
    stats: Mutex<AmiStats>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The current connection (if logged in) and the calls waiting on it.
#[derive(Default)]
struct Live {
    generation: Option<u64>,
    last_generation: u64,
    pending: HashMap<String, mpsc::UnboundedSender<Arc<Message>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(settings: &AmiSettings) -> Self {
        Self {
            server: format!("{}:{}", settings.host, settings.port),
            filter: EventFilter::new(&settings.events),
            live: Mutex::new(Live::default()),
            state: watch::Sender::new(ConnectionState::Connecting { attempt: 1 }),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            next_id: AtomicU64::new(1),
            stats: Mutex::new(AmiStats::default()),
            shutdown: watch::Sender::new(false),
            task: Mutex::new(None),
        }
    }

    fn down_reason(&self) -> String {
        match &*self.state.borrow() {
            ConnectionState::Disconnected { reason, .. } => reason.clone(),
            ConnectionState::Connecting { attempt } => {
                format!("connecting to {} (attempt {attempt})", self.server)
            }
            ConnectionState::Connected { .. } => "connection lost".into(),
        }
    }

    /// Logged in: new calls are accepted for connection `generation`.
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
        info!(server = %self.server, %version, "AMI logged in");
        self.state.send_replace(ConnectionState::Connected {
            version,
            since: SystemTime::now(),
        });
        generation
    }

    /// Down: the state says why, then every pending call of the connection fails.
    fn go_down(&self, reason: String) {
        let mut live = lock(&self.live);
        live.generation = None;
        lock(&self.stats).connected = false;
        self.state.send_replace(ConnectionState::Disconnected {
            since: SystemTime::now(),
            reason,
        });
        live.pending.clear();
    }

    /// Routes a message to the call waiting for its ActionID and, when it is an event that
    /// passes the filter, to the event receivers.
    fn dispatch(&self, msg: Message) {
        let msg = Arc::new(msg);
        if let Some(id) = msg.action_id() {
            if let Some(tx) = lock(&self.live).pending.get(id) {
                let _ = tx.send(msg.clone());
            }
        }
        let Some(name) = msg.event() else {
            return;
        };
        let forward = self.filter.allows(name);
        {
            let mut st = lock(&self.stats);
            match st.events_by_type.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    st.events_by_type.insert(name.to_owned(), 1);
                }
            }
            if forward {
                st.events_forwarded += 1;
                if self.events.receiver_count() > 0 && self.events.len() >= EVENT_CAPACITY {
                    st.events_lagged += 1;
                }
            }
        }
        if forward {
            let _ = self.events.send(msg);
        }
    }
}

/// Which events are forwarded, and what to ask Asterisk for.
#[derive(Debug)]
struct EventFilter {
    /// Forwarded names (configured + always); empty = everything.
    names: Vec<String>,
}

impl EventFilter {
    fn new(configured: &[String]) -> Self {
        let mut names: Vec<String> = Vec::new();
        for n in configured {
            let n = n.trim();
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                warn!("ignoring AMI event name {n:?} in [asterisk.ami] events");
                continue;
            }
            if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                names.push(n.to_owned());
            }
        }
        if !names.is_empty() {
            for n in ALWAYS_FORWARDED {
                if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                    names.push(n.to_owned());
                }
            }
        }
        Self { names }
    }

    fn all(&self) -> bool {
        self.names.is_empty()
    }

    fn allows(&self, name: &str) -> bool {
        self.all() || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Events Asterisk must send: the forwarded ones and OriginateResponse (needed by
    /// [`AmiClient::originate`]).
    fn wanted(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.names.iter().map(String::as_str).collect();
        if !v
            .iter()
            .any(|n| n.eq_ignore_ascii_case("OriginateResponse"))
        {
            v.push("OriginateResponse");
        }
        v
    }

    /// The `EventMask` (event classes) covering [`EventFilter::wanted`], for servers that
    /// refuse `Filter`.
    fn class_mask(&self) -> String {
        let mut classes = vec!["call"];
        for n in self.wanted() {
            let c = event_class(n);
            if !classes.contains(&c) {
                classes.push(c);
            }
        }
        classes.join(",")
    }
}

/// The manager.conf class (`read=`) an event belongs to; "call" for unknown names.
fn event_class(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    match n.as_str() {
        "varset" | "newexten" => "dialplan",
        "fullybooted" | "shutdown" | "reload" => "system",
        "cdr" => "cdr",
        "cel" => "cel",
        "userevent" => "user",
        _ if n.starts_with("queue") || n.starts_with("agent") => "agent",
        _ => "call",
    }
}

/// The delay before connection attempt number `failures + 1` after `failures`
/// consecutive failures: `BACKOFF_INITIAL * 2^failures`, capped at [`BACKOFF_MAX`], times a
/// random factor in [0.5, 1] so that many clients do not retry in step.
pub fn backoff_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    let exp = BACKOFF_INITIAL.saturating_mul(1u32 << failures.min(16));
    let capped = exp.min(BACKOFF_MAX);
    capped.mul_f64(rng.random_range(0.5..=1.0))
}

/// Why a connection ended.
enum End {
    Shutdown,
    HandlesDropped,
    Failed(AmiError),
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The connection task.
async fn run(
    shared: Arc<Shared>,
    settings: AmiSettings,
    secret: String,
    mut commands: mpsc::Receiver<Outgoing>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut failures: u32 = 0;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        shared
            .state
            .send_replace(ConnectionState::Connecting { attempt });
        let established = tokio::select! {
            r = establish(&shared, &settings, &secret) => Some(r),
            () = wait_true(&mut shutdown) => None,
        };
        let end = match established {
            None => End::Shutdown,
            Some(Err(e)) => {
                failures = failures.saturating_add(1);
                let mut st = lock(&shared.stats);
                st.connect_failures += 1;
                if matches!(e, AmiError::LoginFailed { .. }) {
                    st.login_failures += 1;
                }
                End::Failed(e)
            }
            Some(Ok((conn, version))) => {
                attempt = 0;
                let generation = shared.go_live(version);
                let up_since = Instant::now();
                let end = serve(&shared, conn, generation, &mut commands, &mut shutdown).await;
                if up_since.elapsed() >= HEALTHY_AFTER {
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
                let mut st = lock(&shared.stats);
                match e {
                    AmiError::Frame(_) => st.malformed_frames += 1,
                    AmiError::HalfOpen { .. } => st.half_open_drops += 1,
                    _ => {}
                }
                e.to_string()
            }
        };
        let failed = matches!(end, End::Failed(_));
        if failed {
            warn!(server = %shared.server, "AMI connection down: {reason}");
        } else {
            info!(server = %shared.server, "AMI client stopped: {reason}");
        }
        shared.go_down(reason);
        if !failed {
            return;
        }
        let delay = backoff_delay(failures, &mut rand::rng());
        debug!(?delay, failures, "AMI reconnect backoff");
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = wait_true(&mut shutdown) => {
                    shared.go_down("shut down".into());
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

/// One TCP connection: split socket, framer, last time a byte arrived.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    framer: Framer,
    chunk: Box<[u8]>,
    last_rx: Instant,
    next_internal: u64,
}

impl Conn {
    async fn read_some(&mut self) -> Result<(), AmiError> {
        let n = self
            .rd
            .read(&mut self.chunk)
            .await
            .map_err(|e| AmiError::Io {
                context: "read".into(),
                source: e,
            })?;
        if n == 0 {
            return Err(AmiError::ClosedByServer);
        }
        self.last_rx = Instant::now();
        self.framer.extend(&self.chunk[..n]);
        Ok(())
    }

    /// The next frame within `SETUP_TIMEOUT` (setup phase only).
    async fn read_frame(&mut self, step: &'static str) -> Result<Frame, AmiError> {
        let read = async {
            loop {
                if let Some(f) = self.framer.next_frame()? {
                    return Ok(f);
                }
                self.read_some().await?;
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, read)
            .await
            .unwrap_or(Err(AmiError::StepTimeout {
                step,
                after: SETUP_TIMEOUT,
            }))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), AmiError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AmiError::Io {
                context: "write".into(),
                source: e,
            }),
            Err(_) => Err(AmiError::StepTimeout {
                step: "write",
                after: WRITE_TIMEOUT,
            }),
        }
    }

    fn internal_id(&mut self, what: &str) -> String {
        self.next_internal += 1;
        format!("pbxlink-{what}-{}", self.next_internal)
    }

    /// A setup action and its response; events arriving meanwhile are dispatched.
    async fn request(
        &mut self,
        shared: &Shared,
        action: &Action,
        step: &'static str,
    ) -> Result<Message, AmiError> {
        let id = self.internal_id(step);
        self.write(&action.encode(&id)?).await?;
        loop {
            match self.read_frame(step).await? {
                Frame::Message(m) if m.action_id() == Some(id.as_str()) && m.event().is_none() => {
                    return Ok(m);
                }
                Frame::Message(m) => shared.dispatch(m),
                Frame::Banner { .. } => {}
            }
        }
    }

    /// Dispatches every whole frame buffered.
    fn drain(&mut self, shared: &Shared) -> Result<(), AmiError> {
        while let Some(frame) = self.framer.next_frame()? {
            if let Frame::Message(m) = frame {
                shared.dispatch(m);
            }
        }
        Ok(())
    }

    /// Best-effort `Logoff` before closing.
    async fn logoff(&mut self) {
        let id = self.internal_id("logoff");
        if let Ok(bytes) = Action::new("Logoff").encode(&id) {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.write_all(&bytes)).await;
        }
    }
}

/// Connect, banner, login, event filtering.
async fn establish(
    shared: &Shared,
    settings: &AmiSettings,
    secret: &str,
) -> Result<(Conn, String), AmiError> {
    let stream = tokio::time::timeout(
        SETUP_TIMEOUT,
        TcpStream::connect((settings.host.as_str(), settings.port)),
    )
    .await
    .map_err(|_| AmiError::StepTimeout {
        step: "connect",
        after: SETUP_TIMEOUT,
    })?
    .map_err(|e| AmiError::Io {
        context: format!("connect to {}", shared.server),
        source: e,
    })?;
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut conn = Conn {
        rd,
        wr,
        framer: Framer::after_connect(FrameLimits::default()),
        chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        last_rx: Instant::now(),
        next_internal: 0,
    };
    let version = match conn.read_frame("banner").await? {
        Frame::Banner { version } => version,
        Frame::Message(_) => return Err(super::FrameError::BadBanner(String::new()).into()),
    };
    debug!(server = %shared.server, %version, "AMI banner");
    let login = Action::new("Login").header("Username", settings.username.as_str())?;
    let login = match settings.login {
        AmiLogin::Plain => login.header("Secret", secret)?,
        AmiLogin::Md5 => {
            let challenge = Action::new("Challenge").header("AuthType", "MD5")?;
            let reply = conn.request(shared, &challenge, "challenge").await?;
            let Some(challenge) = reply.get("Challenge").filter(|_| !reply.is_error()) else {
                return Err(AmiError::LoginFailed {
                    username: settings.username.clone(),
                    message: format!(
                        "MD5 challenge refused ({}); set [asterisk.ami] login = \"plain\"",
                        reply.get("Message").unwrap_or("no Challenge in the reply")
                    ),
                });
            };
            login
                .header("AuthType", "MD5")?
                .header("Key", md5_key(challenge, secret))?
        }
    };
    let login = login.header("Events", "off")?;
    let reply = conn.request(shared, &login, "login").await?;
    if reply.is_error() || reply.response().is_none() {
        return Err(AmiError::LoginFailed {
            username: settings.username.clone(),
            message: reply.get("Message").unwrap_or("").to_owned(),
        });
    }
    setup_events(&mut conn, shared).await?;
    Ok((conn, version))
}

/// The `Key` of an MD5 login: the lowercase hex MD5 of the challenge followed by the secret.
pub fn md5_key(challenge: &str, secret: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::new()
        .chain_update(challenge.as_bytes())
        .chain_update(secret.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Server-side `Filter`s when allowed, else an `EventMask` of classes; then events on.
async fn setup_events(conn: &mut Conn, shared: &Shared) -> Result<(), AmiError> {
    let mut server_side = false;
    let mask = if shared.filter.all() {
        "on".to_owned()
    } else {
        server_side = true;
        for name in shared.filter.wanted() {
            // Legacy filters are regexes over the whole event text: anchor the name.
            let filter = Action::new("Filter")
                .header("Operation", "Add")?
                .header("Filter", format!("Event: {name}[[:space:]]"))?;
            let reply = conn.request(shared, &filter, "filter").await?;
            if reply.is_error() {
                info!(
                    server = %shared.server,
                    "Asterisk refused Action: Filter ({}); filtering events in pbxlink \
                     (give the manager user `write = system` to filter in Asterisk)",
                    reply.get("Message").unwrap_or("")
                );
                server_side = false;
                break;
            }
        }
        if server_side {
            "on".to_owned()
        } else {
            shared.filter.class_mask()
        }
    };
    lock(&shared.stats).server_side_filter = server_side;
    let events = Action::new("Events").header("EventMask", mask.as_str())?;
    let reply = conn.request(shared, &events, "events").await?;
    if reply.is_error() {
        return Err(AmiError::Rejected {
            action: "Events".into(),
            message: reply.get("Message").unwrap_or("").to_owned(),
        });
    }
    debug!(server = %shared.server, %mask, server_side, "AMI events on");
    Ok(())
}

/// The logged-in connection: reads, writes queued actions, pings, watches for silence.
async fn serve(
    shared: &Shared,
    mut conn: Conn,
    generation: u64,
    commands: &mut mpsc::Receiver<Outgoing>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if let Err(e) = conn.drain(shared) {
        return End::Failed(e);
    }
    loop {
        let idle_deadline = conn.last_rx + IDLE_LIMIT;
        let step: Result<Option<End>, AmiError> = tokio::select! {
            r = conn.rd.read(&mut conn.chunk) => match r {
                Ok(0) => Err(AmiError::ClosedByServer),
                Ok(n) => {
                    conn.last_rx = Instant::now();
                    conn.framer.extend(&conn.chunk[..n]);
                    conn.drain(shared).map(|()| None)
                }
                Err(e) => Err(AmiError::Io { context: "read".into(), source: e }),
            },
            cmd = commands.recv() => match cmd {
                None => {
                    conn.logoff().await;
                    Ok(Some(End::HandlesDropped))
                }
                Some(out) if out.generation == generation => conn.write(&out.bytes).await.map(|()| None),
                // Registered on an earlier connection: its caller already failed.
                Some(_) => Ok(None),
            },
            _ = ping.tick() => {
                let id = conn.internal_id("ping");
                match Action::new("Ping").encode(&id) {
                    Ok(bytes) => conn.write(&bytes).await.map(|()| None),
                    Err(e) => Err(e),
                }
            }
            () = tokio::time::sleep_until(idle_deadline) => Err(AmiError::HalfOpen { idle: IDLE_LIMIT }),
            () = wait_true(shutdown) => {
                conn.logoff().await;
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

//! [`EslClient`]: an inbound event-socket client on the PBX-neutral supervision
//! ([`crate::pbx::connection::Supervisor`]: reconnect with capped jittered backoff, keepalive,
//! half-open detection, state and counters).
//!
//! On every connection the client waits for `auth/request`, answers `auth <password>`,
//! subscribes with one `event plain` command ([`subscription`]: `BACKGROUND_JOB` first and the
//! `CUSTOM` subclasses last, since FreeSWITCH takes every word after `CUSTOM` as a subclass),
//! asks `api version` (the state's `version`) and re-learns the calls in progress with
//! `api show channels as json`, which reaches the subscribers as a [`Resync`] before any event
//! of the new connection is reported as live. So a reconnect always re-subscribes and always
//! re-learns.
//!
//! Replies: FreeSWITCH answers the commands of one connection in order, with a
//! `command/reply` or an `api/response`; the connection task keeps the callers waiting in the
//! order their commands were written and hands each answer to the next one. `bgapi` names its
//! own `Job-UUID` (letters, digits, `-`), so the BACKGROUND_JOB event carrying the result is
//! matched to its caller whichever order the reply and the event arrive in.
//!
//! The reader never waits: events go to a bounded [`broadcast`] channel
//! ([`EVENT_CAPACITY`]); a subscriber that falls behind loses the oldest and is told so
//! (`RecvError::Lagged`), and the loss is counted ([`EslStats::events_lagged`]). FreeSWITCH
//! drops a listener whose queue stays full, so blocking on a slow subscriber is never an
//! option. A malformed frame, a `text/disconnect-notice` or a `text/rude-rejection` ends that
//! connection only; the supervisor reconnects.
//!
//! Every command is built by [`Command`] (see [`super::command`]): a value that could break
//! out of its line, argument or variable is refused before anything is written.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    BackgroundJob, Command, CommandError, Event, Frame, FrameError, FrameLimits, Framer, Reply,
};
use crate::logtext::{Escaped, excerpt};
use crate::pbx::connection::{
    ConnectionState, ConnectionStats, Failure, Link, LinkError, Outgoing, Protocol,
    SupervisedConnection, Supervisor, SupervisorSettings,
};

/// Events buffered per [`EslClient::events`] receiver before it lags. An event is a few KB,
/// so a full channel holds tens of MB at most.
pub const EVENT_CAPACITY: usize = 8192;
/// Commands queued for the connection task before callers wait for room.
const COMMAND_CAPACITY: usize = 256;
/// Distinct event names counted one by one in [`EslStats::events_by_name`]; others are
/// counted under [`OTHER_EVENTS`] (a server cannot grow the map without bound).
const MAX_EVENT_NAMES: usize = 256;
/// The bucket of event names beyond the 256 counted one by one.
pub const OTHER_EVENTS: &str = "(other)";
/// How much of a server's text an error or a log line shows.
const SHOWN: usize = 200;
/// The keepalive probe: cheap, always loaded (mod_commands), answered by an `api/response`.
const KEEPALIVE: &str = "version";
/// How calls in progress are re-learnt after every login.
const CHANNELS: &str = "show channels as json";
/// A command unanswered for this long ends the connection, even while events still flow (a
/// listener whose command thread is stuck); checked at every keepalive.
pub const UNANSWERED_LIMIT: Duration = Duration::from_secs(30);

/// Events subscribed by default: the channel life cycle the call tracker follows.
pub const DEFAULT_EVENTS: [&str; 6] = [
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
];
/// CUSTOM subclasses subscribed by default: mod_callcenter's.
pub const DEFAULT_CUSTOM: [&str; 1] = ["callcenter::info"];

/// How to reach and log in to `mod_event_socket`, and what to subscribe to. The daemon maps
/// `[freeswitch.esl]` onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EslSettings {
    /// Host of the event socket (`127.0.0.1`).
    pub host: String,
    /// Its TCP port (8021).
    pub port: u16,
    /// The `password` of `event_socket.conf.xml` (`ClueCon` by default in FreeSWITCH).
    pub password: String,
    /// Event names to subscribe to (BACKGROUND_JOB is always added, first).
    pub events: Vec<String>,
    /// CUSTOM subclasses to subscribe to (after `CUSTOM`, last on the line).
    pub custom: Vec<String>,
}

impl EslSettings {
    /// Settings with the default subscription ([`DEFAULT_EVENTS`], [`DEFAULT_CUSTOM`]).
    pub fn new(host: impl Into<String>, port: u16, password: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            password: password.into(),
            events: DEFAULT_EVENTS.iter().map(|s| (*s).to_owned()).collect(),
            custom: DEFAULT_CUSTOM.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The `event plain` command for `settings`: `BACKGROUND_JOB`, the other names (each once,
/// `CUSTOM` and `ALL` left out: placed by the client), then `CUSTOM` and the subclasses. A
/// name that could break out of the command is refused ([`CommandError`]).
pub fn subscription(settings: &EslSettings) -> Result<Command, CommandError> {
    let mut names: Vec<&str> = vec!["BACKGROUND_JOB"];
    for n in &settings.events {
        let n = n.trim();
        if n.is_empty()
            || n.eq_ignore_ascii_case("CUSTOM")
            || n.eq_ignore_ascii_case("ALL")
            || names.iter().any(|x| x.eq_ignore_ascii_case(n))
        {
            continue;
        }
        names.push(n);
    }
    let custom: Vec<&str> = settings
        .custom
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if !custom.is_empty() {
        names.push("CUSTOM");
        names.extend(custom);
    }
    Command::event_plain(&names)
}

/// Everything that can go wrong talking to the event socket, for a caller or a connection.
#[derive(Debug, thiserror::Error)]
pub enum EslError {
    /// The command was refused before reaching the wire (a value could break out of it).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// Not logged in right now; nothing was sent.
    #[error("not connected to the FreeSWITCH event socket: {reason}")]
    NotConnected {
        /// Why (the last disconnect reason, or "connecting").
        reason: String,
    },
    /// The connection went down while the command waited for its answer.
    #[error("event socket connection lost while waiting for the answer to {command:?}: {reason}")]
    Disconnected {
        /// The command line.
        command: String,
        /// Why the connection went down.
        reason: String,
    },
    /// No answer within the caller's timeout.
    #[error("no answer to {command:?} within {after:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// FreeSWITCH answered `-ERR` to a command (a refused subscription, a refused `bgapi`).
    #[error("FreeSWITCH refused {command:?}: {message}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// The text after `-ERR` (bounded, escaped).
        message: String,
    },
    /// The client was shut down (or every handle dropped).
    #[error("the event socket client is shut down")]
    Closed,
    /// `auth` refused: the password is not the one of `event_socket.conf.xml`.
    #[error(
        "FreeSWITCH refused the event socket password ({message}); check [freeswitch.esl] password against event_socket.conf.xml"
    )]
    AuthFailed {
        /// FreeSWITCH's reply (`-ERR invalid`).
        message: String,
    },
    /// `text/rude-rejection`: the server's ACL (`apply-inbound-acl`) refuses this address.
    #[error(
        "FreeSWITCH rejected the event socket connection ({message}); allow pbxlink's address in event_socket.conf.xml apply-inbound-acl"
    )]
    RudeRejection {
        /// The rejection text (`Access Denied, go away.`).
        message: String,
    },
    /// `text/disconnect-notice`: FreeSWITCH closes the connection (shutdown, `exit`).
    #[error("FreeSWITCH closed the event socket: {message}")]
    DisconnectNotice {
        /// The notice (`Disconnected, goodbye.`).
        message: String,
    },
    /// The oldest command has waited longer than [`UNANSWERED_LIMIT`] for its answer.
    #[error("FreeSWITCH left a command unanswered for {after:?}: connection dropped")]
    Unanswered {
        /// How long the oldest command waited.
        after: Duration,
    },
    /// The server sent something else than the protocol step expects.
    #[error("unexpected event socket message during {step}: {what}")]
    Unexpected {
        /// The step (`auth`, `subscribe` ...).
        step: &'static str,
        /// What arrived.
        what: String,
    },
    /// The server sent a malformed or oversized message (the connection is dropped).
    #[error("bad event socket frame: {0}")]
    Frame(#[from] FrameError),
    /// The socket failed, closed, timed out or went silent.
    #[error("event socket {0}")]
    Link(#[from] LinkError),
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EslAnswer {
    /// A `command/reply` (`auth`, `event`, `bgapi`, `filter` ...).
    Reply(Reply),
    /// An `api/response` body (`api ...`), lossy UTF-8.
    Api(String),
}

/// One row of `show channels as json`: column name → value (numbers and nulls as text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRow {
    /// Every column of the row.
    pub fields: BTreeMap<String, String>,
}

impl ChannelRow {
    /// A column's value, when present and not empty.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.fields
            .get(column)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The channel's `uuid`.
    pub fn uuid(&self) -> Option<&str> {
        self.get("uuid")
    }

    /// `call_uuid`: the uuid of the call the channel is bridged in, when it is.
    pub fn call_uuid(&self) -> Option<&str> {
        self.get("call_uuid")
    }
}

/// The calls in progress, re-learnt right after a login (every reconnect included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// The login this snapshot belongs to (1 for the first connection).
    pub login: u64,
    /// The channels FreeSWITCH has now.
    pub channels: Vec<ChannelRow>,
    /// Why the snapshot is incomplete (the answer was `-ERR` or not JSON): the subscriber
    /// cannot trust `channels` to hold every call. None when complete.
    pub problem: Option<String>,
}

/// What subscribers receive, in wire order.
#[derive(Debug, Clone)]
pub enum EslNotice {
    /// An event (BACKGROUND_JOB events included).
    Event(Arc<Event>),
    /// The calls in progress after a (re)connect: events before it belong to an older view.
    Resync(Arc<Resync>),
}

/// A snapshot of the client's counters ([`EslClient::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EslStats {
    /// The connection's counters (logins, reconnects, failures, half-open drops ...).
    pub connection: ConnectionStats,
    /// Events received, by `Event-Name` (`CUSTOM <subclass>` for CUSTOM events).
    pub events_by_name: HashMap<String, u64>,
    /// Notices offered to the [`EslClient::events`] receivers.
    pub events_forwarded: u64,
    /// Notices overwritten before at least one receiver read them (a lagging receiver).
    pub events_lagged: u64,
    /// Commands refused before reaching the wire ([`EslError::Refused`]).
    pub refused_commands: u64,
    /// Replies that arrived with no command waiting for them.
    pub unmatched_replies: u64,
    /// BACKGROUND_JOB events handed to the `bgapi` call waiting for them.
    pub jobs_matched: u64,
    /// Snapshots of the calls in progress delivered ([`Resync`]).
    pub resyncs: u64,
    /// Snapshots that were incomplete ([`Resync::problem`]).
    pub resync_problems: u64,
    /// Messages of other content types (`log/data` ...), ignored.
    pub other_frames: u64,
}

/// The `bgapi` calls waiting for their BACKGROUND_JOB event, by Job-UUID.
#[derive(Default)]
struct Jobs {
    by_uuid: HashMap<String, oneshot::Sender<BackgroundJob>>,
}

/// Who waits for the next `command/reply` or `api/response`.
enum Waiter {
    /// A caller.
    Caller(oneshot::Sender<EslAnswer>),
    /// A keepalive probe: the answer is dropped.
    Probe,
}

/// Counters that are the event socket's own.
#[derive(Default)]
struct OwnStats {
    events_by_name: HashMap<String, u64>,
    events_forwarded: u64,
    events_lagged: u64,
    refused_commands: u64,
    unmatched_replies: u64,
    jobs_matched: u64,
    resyncs: u64,
    resync_problems: u64,
    other_frames: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the handles and the connection task.
struct Shared {
    sup: Arc<Supervisor<Jobs>>,
    notices: broadcast::Sender<EslNotice>,
    stats: Mutex<OwnStats>,
    next_job: AtomicU64,
    /// Random per client, so Job-UUIDs of two pbxlink processes never collide.
    job_prefix: String,
}

impl Shared {
    /// Offers a notice to the subscribers; never waits.
    fn publish(&self, notice: EslNotice) {
        {
            let mut st = lock(&self.stats);
            st.events_forwarded += 1;
            if self.notices.receiver_count() > 0 && self.notices.len() >= EVENT_CAPACITY {
                st.events_lagged += 1;
            }
        }
        let _ = self.notices.send(notice);
    }

    /// Counts an event, hands a BACKGROUND_JOB to its caller, and publishes the event.
    fn dispatch_event(&self, event: Event) {
        let mut name = event.name().into_owned();
        if name.eq_ignore_ascii_case("CUSTOM") {
            if let Some(sub) = event.subclass() {
                name = format!("CUSTOM {sub}");
            }
        }
        {
            let mut st = lock(&self.stats);
            let known = st.events_by_name.len() < MAX_EVENT_NAMES;
            match st.events_by_name.get_mut(&name) {
                Some(n) => *n += 1,
                None if known => {
                    st.events_by_name.insert(name, 1);
                }
                None => *st.events_by_name.entry(OTHER_EVENTS.into()).or_default() += 1,
            }
        }
        if let Some(job) = event.background_job() {
            let waiter = self
                .sup
                .with_pending(|jobs| jobs.by_uuid.remove(&job.job_uuid));
            if let Some(tx) = waiter {
                if tx.send(job).is_ok() {
                    lock(&self.stats).jobs_matched += 1;
                }
            }
        }
        self.publish(EslNotice::Event(Arc::new(event)));
    }
}

/// A handle on the event-socket connection task. Cheap to clone; the task ends with
/// [`EslClient::shutdown`] or when every handle is dropped.
#[derive(Clone)]
pub struct EslClient {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Outgoing<Waiter>>,
}

impl std::fmt::Debug for EslClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EslClient")
            .field("server", &self.shared.sup.server())
            .field("state", &*self.shared.sup.state().borrow())
            .finish()
    }
}

impl EslClient {
    /// Spawns the connection task with the default supervision
    /// ([`SupervisorSettings::new`]) and returns at once; watch [`EslClient::state`] to see it
    /// connect. Panics outside a Tokio runtime (like `tokio::spawn`).
    pub fn spawn(settings: EslSettings) -> EslClient {
        let supervision = SupervisorSettings::new(settings.host.clone(), settings.port);
        Self::spawn_with(settings, supervision)
    }

    /// [`EslClient::spawn`] with explicit supervision settings (timeouts, backoff).
    pub fn spawn_with(settings: EslSettings, supervision: SupervisorSettings) -> EslClient {
        Self::spawn_subscribed(settings, supervision).0
    }

    /// [`EslClient::spawn_with`], and a receiver subscribed before the task starts: it sees
    /// every notice, the first login's [`Resync`] included (the call tracker's way in).
    pub fn spawn_subscribed(
        settings: EslSettings,
        supervision: SupervisorSettings,
    ) -> (EslClient, broadcast::Receiver<EslNotice>) {
        let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
        let sup = Supervisor::new("ESL", format!("{}:{}", settings.host, settings.port));
        let shared = Arc::new(Shared {
            sup: sup.clone(),
            notices: broadcast::Sender::new(EVENT_CAPACITY),
            stats: Mutex::new(OwnStats::default()),
            next_job: AtomicU64::new(1),
            job_prefix: format!("pbxlink-{:016x}", rand::random::<u64>()),
        });
        let notices = shared.notices.subscribe();
        let protocol = EslProtocol {
            shared: shared.clone(),
            settings,
        };
        sup.spawn(protocol, supervision, rx);
        (EslClient { shared, commands }, notices)
    }

    /// A receiver of every event and every [`Resync`] from now on, in wire order (to see the
    /// first login's [`Resync`] for sure, use [`EslClient::spawn_subscribed`]). A receiver
    /// that falls more than [`EVENT_CAPACITY`] notices behind gets `RecvError::Lagged`
    /// (counted in [`EslStats::events_lagged`]); the connection never waits for it.
    pub fn events(&self) -> broadcast::Receiver<EslNotice> {
        self.shared.notices.subscribe()
    }

    /// The connection state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.sup.state()
    }

    /// The connection, for the daemon's status line and shutdown.
    pub fn connection(&self) -> Arc<dyn SupervisedConnection> {
        self.shared.sup.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EslStats {
        let own = lock(&self.shared.stats);
        EslStats {
            connection: self.shared.sup.stats(),
            events_by_name: own.events_by_name.clone(),
            events_forwarded: own.events_forwarded,
            events_lagged: own.events_lagged,
            refused_commands: own.refused_commands,
            unmatched_replies: own.unmatched_replies,
            jobs_matched: own.jobs_matched,
            resyncs: own.resyncs,
            resync_problems: own.resync_problems,
            other_frames: own.other_frames,
        }
    }

    /// `api <command>`: its output (the `api/response` body, e.g. `+OK ...`, `-ERR ...` or a
    /// table). The command text is checked first ([`Command::api`]).
    pub async fn api(&self, command: &str, timeout: Duration) -> Result<String, EslError> {
        let cmd = self.checked(Command::api(command))?;
        match self.send(&cmd, timeout).await? {
            EslAnswer::Api(body) => Ok(body),
            EslAnswer::Reply(r) => Err(EslError::Unexpected {
                step: "api",
                what: format!("a command/reply ({})", excerpt(r.text().as_bytes(), SHOWN)),
            }),
        }
    }

    /// `bgapi <command>` with a Job-UUID of the client's own, and the result its
    /// BACKGROUND_JOB event carries (check [`BackgroundJob::outcome`]). `-ERR` to the
    /// `bgapi` itself is [`EslError::CommandFailed`]. `timeout` covers both.
    pub async fn bgapi(&self, command: &str, timeout: Duration) -> Result<BackgroundJob, EslError> {
        let job_uuid = format!(
            "{}-{}",
            self.shared.job_prefix,
            self.shared.next_job.fetch_add(1, Ordering::Relaxed)
        );
        let cmd = self.checked(Command::bgapi(command, Some(&job_uuid)))?;
        let line = cmd.command_line().to_owned();
        let (job_tx, job_rx) = oneshot::channel();
        let guard = JobGuard {
            shared: &self.shared,
            job_uuid: &job_uuid,
        };
        let work = async {
            let (reply_tx, reply_rx) = oneshot::channel();
            let generation = self
                .shared
                .sup
                .register(|jobs| {
                    jobs.by_uuid.insert(job_uuid.clone(), job_tx);
                })
                .map(|(g, ())| g)
                .ok_or_else(|| self.not_connected())?;
            self.queue(generation, &cmd, reply_tx).await?;
            match self.answer(&line, reply_rx).await? {
                EslAnswer::Reply(r) if r.is_ok() => {}
                EslAnswer::Reply(r) => {
                    return Err(EslError::CommandFailed {
                        command: line.clone(),
                        message: excerpt(r.error().unwrap_or_default().as_bytes(), SHOWN),
                    });
                }
                EslAnswer::Api(body) => {
                    return Err(EslError::Unexpected {
                        step: "bgapi",
                        what: format!("an api/response ({})", excerpt(body.as_bytes(), SHOWN)),
                    });
                }
            }
            job_rx.await.map_err(|_| self.lost(&line))
        };
        let result = within(&line, timeout, work).await;
        drop(guard);
        result
    }

    /// Sends any command and returns its answer (a `command/reply` or an `api/response`).
    /// Fails at once with [`EslError::NotConnected`] when not logged in, with
    /// [`EslError::Disconnected`] when the connection drops while waiting and with
    /// [`EslError::Timeout`] after `timeout`.
    pub async fn send(&self, command: &Command, timeout: Duration) -> Result<EslAnswer, EslError> {
        let line = command.command_line().to_owned();
        within(&line, timeout, async {
            let (tx, rx) = oneshot::channel();
            let generation = self
                .shared
                .sup
                .register(|_| ())
                .map(|(g, ())| g)
                .ok_or_else(|| self.not_connected())?;
            self.queue(generation, command, tx).await?;
            self.answer(&line, rx).await
        })
        .await
    }

    /// The channels FreeSWITCH has now (`show channels as json`).
    pub async fn channels(&self, timeout: Duration) -> Result<Vec<ChannelRow>, EslError> {
        let body = self.api(CHANNELS, timeout).await?;
        parse_channels(&body).map_err(|problem| EslError::CommandFailed {
            command: format!("api {CHANNELS}"),
            message: problem,
        })
    }

    /// Sends `exit` (best effort), closes the connection, fails pending calls and stops the
    /// task; returns when the task has ended. Later calls fail with [`EslError::Closed`].
    pub async fn shutdown(&self) {
        self.shared.sup.shutdown().await;
    }

    fn checked(&self, command: Result<Command, CommandError>) -> Result<Command, EslError> {
        if self.shared.sup.is_shut_down() {
            return Err(EslError::Closed);
        }
        command.map_err(|e| {
            lock(&self.shared.stats).refused_commands += 1;
            warn!("refused event socket command: {e}");
            EslError::Refused(e)
        })
    }

    fn not_connected(&self) -> EslError {
        if self.shared.sup.is_shut_down() {
            EslError::Closed
        } else {
            EslError::NotConnected {
                reason: self.shared.sup.down_reason(),
            }
        }
    }

    fn lost(&self, line: &str) -> EslError {
        if self.shared.sup.is_shut_down() {
            EslError::Closed
        } else {
            EslError::Disconnected {
                command: line.to_owned(),
                reason: self.shared.sup.down_reason(),
            }
        }
    }

    async fn queue(
        &self,
        generation: u64,
        command: &Command,
        tx: oneshot::Sender<EslAnswer>,
    ) -> Result<(), EslError> {
        self.commands
            .send(Outgoing {
                generation,
                bytes: command.to_wire(),
                ticket: Waiter::Caller(tx),
            })
            .await
            .map_err(|_| EslError::Closed)
    }

    async fn answer(
        &self,
        line: &str,
        rx: oneshot::Receiver<EslAnswer>,
    ) -> Result<EslAnswer, EslError> {
        rx.await.map_err(|_| self.lost(line))
    }
}

/// Unregisters a `bgapi` job when its call ends (answered, timed out or dropped).
struct JobGuard<'a> {
    shared: &'a Shared,
    job_uuid: &'a str,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        let id = self.job_uuid;
        self.shared.sup.with_pending(|jobs| jobs.by_uuid.remove(id));
    }
}

/// Runs `work` with a deadline, mapping expiry to [`EslError::Timeout`].
async fn within<T>(
    command: &str,
    timeout: Duration,
    work: impl Future<Output = Result<T, EslError>>,
) -> Result<T, EslError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(EslError::Timeout {
                command: command.to_owned(),
                after: timeout,
            })
        })
}

/// The rows of a `show channels as json` answer (`{"row_count":N,"rows":[{...}]}`; no `rows`
/// when there are none), or why they could not be read.
pub fn parse_channels(body: &str) -> Result<Vec<ChannelRow>, String> {
    let trimmed = body.trim();
    if let Some(err) = trimmed.strip_prefix("-ERR") {
        return Err(format!("-ERR{}", excerpt(err.as_bytes(), SHOWN)));
    }
    let value: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
        format!(
            "not JSON ({e}): {}",
            excerpt(trimmed.as_bytes(), crate::logtext::EXCERPT_BYTES)
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err("not a JSON object".into());
    };
    let rows = match object.get("rows") {
        None => return Ok(Vec::new()),
        Some(serde_json::Value::Array(rows)) => rows,
        Some(_) => return Err("`rows` is not an array".into()),
    };
    Ok(rows
        .iter()
        .filter_map(serde_json::Value::as_object)
        .map(|row| ChannelRow {
            fields: row
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect(),
        })
        .collect())
}

crate::pbx::connection::impl_framing!(Framer, Frame, FrameError);

/// The event-socket protocol as the supervisor drives it.
struct EslProtocol {
    shared: Arc<Shared>,
    settings: EslSettings,
}

/// One logged-in connection: its framer and the callers waiting for answers, in order.
struct EslSession {
    framer: Framer,
    /// When each command was written, and who waits for its answer.
    waiting: VecDeque<(Instant, Waiter)>,
}

impl EslSession {
    /// The next frame within the setup timeout (setup phase only).
    async fn read_frame(&mut self, link: &mut Link, step: &'static str) -> Result<Frame, EslError> {
        link.read_frame(&mut self.framer, step).await
    }

    /// Writes a setup command and reads up to its answer; events meanwhile are dispatched.
    async fn request(
        &mut self,
        link: &mut Link,
        shared: &Shared,
        command: &Command,
        step: &'static str,
    ) -> Result<EslAnswer, EslError> {
        link.write(&command.to_wire()).await?;
        loop {
            match self.read_frame(link, step).await? {
                Frame::CommandReply(r) => return Ok(EslAnswer::Reply(r)),
                Frame::ApiResponse { body } => {
                    return Ok(EslAnswer::Api(String::from_utf8_lossy(&body).into_owned()));
                }
                other => handle_unsolicited(shared, other)?,
            }
        }
    }
}

/// A frame that is not an answer: events are dispatched; a notice or rejection ends the
/// connection; anything else is counted and ignored.
fn handle_unsolicited(shared: &Shared, frame: Frame) -> Result<(), EslError> {
    match frame {
        Frame::Event(e) => shared.dispatch_event(e),
        Frame::EventJson { body } => shared.dispatch_event(Event::from_json(&body)?),
        Frame::DisconnectNotice { body, .. } => {
            return Err(EslError::DisconnectNotice {
                message: excerpt(body.trim_ascii(), SHOWN),
            });
        }
        Frame::RudeRejection { body } => {
            return Err(EslError::RudeRejection {
                message: excerpt(body.trim_ascii(), SHOWN),
            });
        }
        Frame::AuthRequest | Frame::Other { .. } => {
            lock(&shared.stats).other_frames += 1;
        }
        Frame::CommandReply(_) | Frame::ApiResponse { .. } => {
            lock(&shared.stats).unmatched_replies += 1;
        }
    }
    Ok(())
}

impl Protocol for EslProtocol {
    type Pending = Jobs;
    type Session = EslSession;
    type Ticket = Waiter;
    type Error = EslError;

    const NAME: &'static str = "ESL";

    fn connect<'a>(
        &'a mut self,
        link: &'a mut Link,
    ) -> impl Future<Output = Result<(EslSession, String), EslError>> + Send + 'a {
        establish(self, link)
    }

    fn received(&mut self, session: &mut EslSession, bytes: &[u8]) -> Result<(), EslError> {
        session.framer.extend(bytes);
        while let Some(frame) = session.framer.next_frame()? {
            let answer = match frame {
                Frame::CommandReply(r) => EslAnswer::Reply(r),
                Frame::ApiResponse { body } => {
                    EslAnswer::Api(String::from_utf8_lossy(&body).into_owned())
                }
                other => {
                    handle_unsolicited(&self.shared, other)?;
                    continue;
                }
            };
            match session.waiting.pop_front().map(|(_, w)| w) {
                Some(Waiter::Caller(tx)) => {
                    // The caller may have timed out and gone: the answer is dropped.
                    let _ = tx.send(answer);
                }
                Some(Waiter::Probe) => {}
                None => {
                    lock(&self.shared.stats).unmatched_replies += 1;
                    debug!(server = %self.shared.sup.server(), "event socket answer with no command waiting");
                }
            }
        }
        Ok(())
    }

    fn written(&mut self, session: &mut EslSession, ticket: Waiter) {
        session.waiting.push_back((Instant::now(), ticket));
    }

    fn keepalive(&mut self, session: &mut EslSession) -> Result<Option<Vec<u8>>, EslError> {
        if let Some((since, _)) = session.waiting.front() {
            let after = since.elapsed();
            if after >= UNANSWERED_LIMIT {
                return Err(EslError::Unanswered { after });
            }
        }
        let probe = Command::api(KEEPALIVE)?;
        session.waiting.push_back((Instant::now(), Waiter::Probe));
        Ok(Some(probe.to_wire()))
    }

    fn goodbye(&mut self, _session: &mut EslSession) -> Option<Vec<u8>> {
        Some(Command::exit().to_wire())
    }

    fn classify(error: &EslError) -> Failure {
        match error {
            EslError::AuthFailed { .. } | EslError::RudeRejection { .. } => Failure::LoginRefused,
            EslError::Frame(_) | EslError::Unexpected { .. } => Failure::MalformedFrame,
            EslError::Link(LinkError::HalfOpen { .. }) => Failure::HalfOpen,
            _ => Failure::Other,
        }
    }
}

/// `auth/request` → `auth`, the subscription, `api version`, the calls in progress.
async fn establish(
    protocol: &EslProtocol,
    link: &mut Link,
) -> Result<(EslSession, String), EslError> {
    let shared = &*protocol.shared;
    let settings = &protocol.settings;
    let server = shared.sup.server();
    let mut session = EslSession {
        framer: Framer::new(FrameLimits::default()),
        waiting: VecDeque::new(),
    };
    match session.read_frame(link, "auth/request").await? {
        Frame::AuthRequest => {}
        Frame::RudeRejection { body } => {
            return Err(EslError::RudeRejection {
                message: excerpt(body.trim_ascii(), SHOWN),
            });
        }
        other => {
            return Err(EslError::Unexpected {
                step: "auth/request",
                what: describe(&other),
            });
        }
    }
    let auth = Command::auth(&settings.password)?;
    match session.request(link, shared, &auth, "auth").await? {
        EslAnswer::Reply(r) if r.is_ok() => {}
        EslAnswer::Reply(r) => {
            return Err(EslError::AuthFailed {
                message: excerpt(r.text().as_bytes(), SHOWN),
            });
        }
        EslAnswer::Api(body) => {
            return Err(EslError::Unexpected {
                step: "auth",
                what: format!("an api/response ({})", excerpt(body.as_bytes(), SHOWN)),
            });
        }
    }
    let subscribe = subscription(settings)?;
    match session
        .request(link, shared, &subscribe, "subscribe")
        .await?
    {
        EslAnswer::Reply(r) if r.is_ok() => {}
        answer => {
            return Err(EslError::CommandFailed {
                command: subscribe.command_line().to_owned(),
                message: describe_answer(&answer),
            });
        }
    }
    debug!(server, events = %Escaped(subscribe.command_line()), "ESL subscribed");
    let version = match session
        .request(link, shared, &Command::api("version")?, "version")
        .await?
    {
        EslAnswer::Api(body) => excerpt(body.trim().as_bytes(), SHOWN),
        answer => describe_answer(&answer),
    };
    let snapshot = match session
        .request(link, shared, &Command::api(CHANNELS)?, "show channels")
        .await?
    {
        EslAnswer::Api(body) => parse_channels(&body),
        answer => Err(describe_answer(&answer)),
    };
    let login = shared.sup.stats().logins + 1;
    let resync = match snapshot {
        Ok(channels) => Resync {
            login,
            channels,
            problem: None,
        },
        Err(problem) => {
            let hint = if problem.contains("SQL disabled") {
                " (FreeSWITCH runs with -nosql: `show channels` needs its core SQL scoreboard)"
            } else {
                ""
            };
            warn!(
                server,
                "could not re-learn the calls in progress: {problem}{hint}"
            );
            Resync {
                login,
                channels: Vec::new(),
                problem: Some(problem),
            }
        }
    };
    {
        let mut st = lock(&shared.stats);
        st.resyncs += 1;
        if resync.problem.is_some() {
            st.resync_problems += 1;
        }
    }
    info!(
        server,
        channels = resync.channels.len(),
        "ESL re-learnt the calls in progress"
    );
    shared.publish(EslNotice::Resync(Arc::new(resync)));
    Ok((session, version))
}

fn describe(frame: &Frame) -> String {
    match frame {
        Frame::AuthRequest => "auth/request".into(),
        Frame::CommandReply(r) => format!("command/reply {}", excerpt(r.text().as_bytes(), SHOWN)),
        Frame::ApiResponse { body } => format!("api/response {}", excerpt(body, SHOWN)),
        Frame::Event(e) => format!("event {}", excerpt(e.name().as_bytes(), SHOWN)),
        Frame::EventJson { .. } => "text/event-json".into(),
        Frame::DisconnectNotice { body, .. } => {
            format!(
                "text/disconnect-notice {}",
                excerpt(body.trim_ascii(), SHOWN)
            )
        }
        Frame::RudeRejection { body } => {
            format!("text/rude-rejection {}", excerpt(body.trim_ascii(), SHOWN))
        }
        Frame::Other { headers, .. } => format!(
            "content type {}",
            excerpt(headers.get_raw("Content-Type").unwrap_or_default(), SHOWN)
        ),
    }
}

fn describe_answer(answer: &EslAnswer) -> String {
    match answer {
        EslAnswer::Reply(r) => excerpt(r.text().as_bytes(), SHOWN),
        EslAnswer::Api(body) => excerpt(body.trim().as_bytes(), SHOWN),
    }
}

#[cfg(test)]
mod tests;

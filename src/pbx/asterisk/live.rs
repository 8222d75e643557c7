//! Live Asterisk: AMI events drive the call tracker, whose popups go out at once and whose
//! finished calls are pushed into a [`CallSink`] (the outbox for `call_log_source = "ami"`,
//! the reconciler for `"both"`) by their own task, which retries a call the store refuses;
//! and the HTTP API's [`PbxControl`] is carried out with AMI actions (Originate, QueuePause).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc, watch};

use super::ami::{Action, AmiClient, AmiError, ConnectionState, Message};
use super::tracker::{CallTracker, EventFields, PopupRequest, TrackerOutput, TrackerSettings};
use crate::call::sink::{CallBatch, CallSink, FinishedCall, OutboxSink, SinkOutcome, SourceKind};
use crate::call::{CallRecord, Directory};
use crate::config::{Config, OriginateConfig};
use crate::outbox::Store;
use crate::pbx::{OriginateRequest, PbxControl, PbxError};

impl EventFields for Message {
    fn field(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

pub use crate::call::monotonic_ms;

/// How long an AMI action may take before the HTTP caller gets an error.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// [`PbxControl`] for Asterisk, over AMI.
#[derive(Debug, Clone)]
pub struct AsteriskControl {
    ami: AmiClient,
    originate: OriginateConfig,
}

impl AsteriskControl {
    /// Control over `ami`, placing calls as `[asterisk.originate]` says.
    pub fn new(ami: AmiClient, originate: OriginateConfig) -> Self {
        Self { ami, originate }
    }
}

fn pbx_error(e: AmiError) -> PbxError {
    match e {
        AmiError::HeaderInjection { key } => {
            PbxError::Unsafe(format!("line break or NUL in {key}"))
        }
        AmiError::InvalidKey { key } | AmiError::ReservedKey { key } => PbxError::Unsafe(key),
        e @ (AmiError::LineTooLong { .. }
        | AmiError::TooManyHeaders { .. }
        | AmiError::InvalidVariable { .. }) => PbxError::Unsafe(e.to_string()),
        AmiError::NotConnected { .. } | AmiError::Disconnected { .. } => PbxError::NotConnected,
        AmiError::Timeout { .. } => PbxError::Timeout,
        AmiError::Rejected { message, .. } => PbxError::Refused(message),
        other => PbxError::Refused(other.to_string()),
    }
}

/// Refuses `value` (the `what` of an Originate) unless it is one dialplan token: ASCII
/// letters, digits and `+ * # . _ -`. Anything else is read specially by some part of
/// Asterisk that gets it: `/` splits a channel into technology and resource (and PJSIP's
/// resource again), `@` names a context (`Local/100@agents`), `,` and `|` separate
/// arguments, `&` separates the channels of a `Dial` string that the dialplan may build
/// from `${EXTEN}`, quotes, brackets and `<`/`>` are caller-id and argument syntax, `$`,
/// `{`, `}` are expression syntax, and blanks and control characters end or change a value.
pub fn check_dial_token(what: &str, value: &str) -> Result<(), PbxError> {
    let bad = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '-')));
    match bad {
        _ if value.is_empty() => Err(PbxError::Unsafe(format!("{what} is empty"))),
        _ if value.len() > 80 => Err(PbxError::Unsafe(format!(
            "{what} is {} bytes long (at most 80)",
            value.len()
        ))),
        Some(c) => Err(PbxError::Unsafe(format!(
            "{what} {:?} holds {c:?}, which Asterisk would read as syntax (only letters, digits and + * # . _ - are sent)",
            crate::logtext::excerpt(value.as_bytes(), 80)
        ))),
        None => Ok(()),
    }
}

/// Why Asterisk refused an Originate, with what was tried and the keys that change it.
pub fn originate_refused(
    asterisk_said: &str,
    channel: &str,
    exten: &str,
    originate: &OriginateConfig,
) -> String {
    format!(
        "Asterisk refused to originate: {said} Tried extension {exten:?} in context {context:?} \
         (agent channel {channel:?}). The extension is the lead's number written as \
         [asterisk.originate] number_format = \"{format}\" after dial_prefix = {prefix:?}; \
         the context is [asterisk.originate] context. Change those keys (e.g. number_format = \
         \"e164_digits\", which an `exten => _X.` pattern matches) or the dialplan so that \
         the context has that extension.",
        said = crate::logtext::excerpt(asterisk_said.trim().as_bytes(), 200),
        context = originate.context,
        format = originate.number_format.name(),
        prefix = originate.dial_prefix,
    )
}

impl AsteriskControl {
    /// Sends `action`; `Response: Error` and AMI failures become [`PbxError`]s.
    async fn perform(&self, action: Action) -> Result<(), PbxError> {
        let response = self
            .ami
            .send(action, ACTION_TIMEOUT)
            .await
            .map_err(pbx_error)?;
        if response.is_error() {
            return Err(PbxError::Refused(
                response
                    .get("Message")
                    .unwrap_or("Asterisk answered Error")
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// The Originate for `request` as `[asterisk.originate]` says, every value checked or
/// escaped for the part of Asterisk that reads it.
pub fn originate_action(
    originate: &OriginateConfig,
    request: &OriginateRequest,
) -> Result<Action, PbxError> {
    check_dial_token("agent extension", &request.agent_extension)?;
    check_dial_token(
        "the number to dial (dial_prefix + the lead's number)",
        &request.lead_dial,
    )?;
    check_dial_token("[asterisk.originate] context", &originate.context)?;
    check_dial_token("caller id", &request.caller_id)?;
    check_dial_token("call id", &request.call_id)?;
    let channel = originate
        .agent_channel
        .replace("{extension}", &request.agent_extension);
    let mut action = Action::new("Originate")
        .header("Channel", channel)
        .and_then(|a| a.header("Context", originate.context.as_str()))
        .and_then(|a| a.header("Exten", request.lead_dial.as_str()))
        .and_then(|a| a.header("Priority", "1"))
        .and_then(|a| a.header("CallerID", format!("<{}>", request.caller_id)))
        .and_then(|a| a.header("Timeout", originate.timeout_ms.to_string()))
        .and_then(|a| a.header("ChannelId", request.call_id.as_str()))
        .and_then(|a| a.header("Async", "true"))
        .map_err(pbx_error)?;
    for (name, value) in &request.variables {
        // One `Variable:` header per variable, the value escaped for Asterisk's
        // argument splitter: a ',' in a lead id cannot set another variable.
        action = action.variable(name, value).map_err(pbx_error)?;
    }
    Ok(action)
}

impl PbxControl for AsteriskControl {
    async fn originate(&self, request: OriginateRequest) -> Result<(), PbxError> {
        let action = originate_action(&self.originate, &request)?;
        let channel = action.get("Channel").unwrap_or_default().to_owned();
        // Async: Asterisk answers once the call is queued; the agent's phone rings next.
        match self.perform(action).await {
            Err(PbxError::Refused(said)) => {
                let why = originate_refused(&said, &channel, &request.lead_dial, &self.originate);
                tracing::warn!(call_id = %request.call_id, "{why}");
                Err(PbxError::Refused(why))
            }
            other => other,
        }
    }

    async fn free_agent(&self, interface: String) -> Result<(), PbxError> {
        let action = Action::new("QueuePause")
            .header("Interface", interface)
            .and_then(|a| a.header("Paused", "false"))
            .and_then(|a| a.header("Reason", "pbxlink: call disposed"))
            .map_err(pbx_error)?;
        self.perform(action).await
    }

    fn is_connected(&self) -> bool {
        matches!(
            *self.ami.state().borrow(),
            ConnectionState::Connected { .. }
        )
    }
}

/// Counters of the live path.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Popups lost because the sender's queue was full.
    pub popups_overflow: std::sync::atomic::AtomicU64,
    /// Calls enqueued from AMI events.
    pub calls_enqueued: std::sync::atomic::AtomicU64,
    /// Events missed by a lagging reader.
    pub events_lagged: std::sync::atomic::AtomicU64,
    /// Calls expired without a hangup.
    pub calls_expired: std::sync::atomic::AtomicU64,
    /// Calls forgotten because the tracker's table was full (a flood of distinct calls);
    /// refreshed at every expiry tick.
    pub calls_evicted: std::sync::atomic::AtomicU64,
    /// Attempts to store a call log that the store refused (each is retried).
    pub call_log_store_failures: std::sync::atomic::AtomicU64,
    /// Call logs lost because [`CALL_LOG_QUEUE`] calls were already waiting for the store,
    /// or because pbxlink stopped while the store still refused them.
    pub call_logs_lost: std::sync::atomic::AtomicU64,
}

/// At most this many finished calls wait for the store (a store refusing writes for long
/// fills it; then calls are counted in [`LiveStats::call_logs_lost`]).
pub const CALL_LOG_QUEUE: usize = 10_000;

/// First wait before storing a refused call log again; doubled per failure up to
/// [`CALL_LOG_RETRY_MAX`].
pub const CALL_LOG_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Longest wait between two attempts to store a refused call log.
pub const CALL_LOG_RETRY_MAX: Duration = Duration::from_secs(30);

/// Runs the tracker on `ami`'s events until `shutdown` turns true.
pub struct LiveAsterisk {
    /// The AMI connection.
    pub ami: AmiClient,
    /// The outbox (for call logs from events).
    pub store: Arc<Store>,
    /// Whether finished calls are enqueued as call logs.
    pub enqueue_call_logs: bool,
    /// Wakes the call-log delivery worker.
    pub wake_delivery: Arc<Notify>,
    /// Where finished calls go; `None`: straight into `store`'s outbox. The reconciler of
    /// `call_log_source = "both"` is given here.
    pub call_sink: Option<Arc<dyn CallSink>>,
    /// Where popups go (None when `[leadsquared] agent_popup_url` is not set).
    pub popups: Option<mpsc::Sender<PopupRequest>>,
    /// New configurations (SIGHUP): the tracker takes their agents and virtual numbers.
    pub config_updates: watch::Receiver<Arc<Config>>,
    /// Counters.
    pub stats: Arc<LiveStats>,
}

impl LiveAsterisk {
    /// Follows events, rebuilding the call table after every reconnect.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let config = self.config_updates.borrow_and_update().clone();
        use std::sync::atomic::Ordering::Relaxed;
        let ast = config.asterisk.clone().unwrap_or_default();
        let mut tracker = CallTracker::new(
            Directory::from_config(&config)?,
            TrackerSettings {
                rules: super::call_rules(&ast),
                max_calls: 10_000,
                max_call_ms: i64::try_from(ast.max_call_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
            },
        );
        // Call logs are stored by their own task: a popup never waits behind an fsync.
        let (call_logs, pending_logs) = mpsc::channel(CALL_LOG_QUEUE);
        let sink = self.call_sink.clone().unwrap_or_else(|| {
            Arc::new(OutboxSink::new(
                self.store.clone(),
                self.wake_delivery.clone(),
            ))
        });
        let writer = self.enqueue_call_logs.then(|| {
            tokio::spawn(store_call_logs(
                sink,
                self.stats.clone(),
                pending_logs,
                shutdown.clone(),
            ))
        });
        let mut events = self.ami.events();
        let mut state = self.ami.state();
        // Already logged in before this task subscribed: learn the calls in progress now.
        if matches!(
            *state.borrow_and_update(),
            ConnectionState::Connected { .. }
        ) {
            self.rebuild(&mut tracker).await;
        }
        let mut expiry = tokio::time::interval(Duration::from_secs(60));
        let result = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(message) => {
                        let outputs = tracker.handle(&*message, monotonic_ms(), chrono::Utc::now());
                        self.dispatch(outputs, &call_logs);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.stats.events_lagged.fetch_add(n, Relaxed);
                        tracing::warn!(missed = n, "AMI events missed by the call tracker; re-learning the calls in progress");
                        self.rebuild(&mut tracker).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break Ok(()),
                },
                changed = state.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                    let connected = matches!(*state.borrow_and_update(), ConnectionState::Connected { .. });
                    if connected {
                        self.rebuild(&mut tracker).await;
                    }
                }
                _ = expiry.tick() => {
                    let n = tracker.expire(monotonic_ms());
                    self.stats.calls_evicted.store(tracker.evictions(), Relaxed);
                    if n > 0 {
                        self.stats.calls_expired.fetch_add(n as u64, Relaxed);
                        tracing::warn!(calls = n, "calls without a hangup for too long were forgotten");
                    }
                }
                changed = self.config_updates.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let new = self.config_updates.borrow_and_update().clone();
                    match Directory::from_config(&new) {
                        Ok(directory) => {
                            tracker.set_directory(directory);
                            tracing::info!("call tracker: agents and virtual numbers reloaded");
                        }
                        Err(e) => tracing::error!("call tracker keeps its agents: {e}"),
                    }
                }
                _ = shutdown.changed() => break Ok(()),
            }
        };
        drop(call_logs);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        result
    }

    /// After a (re)connect or missed events: forgets what it knew and learns the calls in
    /// progress from `CoreShowChannels`.
    async fn rebuild(&self, tracker: &mut CallTracker) {
        tracker.clear();
        match self
            .ami
            .send_list(Action::new("CoreShowChannels"), Duration::from_secs(10))
            .await
        {
            Ok((_, channels)) => {
                let now = chrono::Utc::now();
                for channel in &channels {
                    tracker.handle(channel, monotonic_ms(), now);
                }
                tracing::info!(
                    channels = channels.len(),
                    calls = tracker.len(),
                    "call table rebuilt after (re)connecting to Asterisk"
                );
            }
            Err(e) => tracing::warn!("could not list the channels in progress: {e}"),
        }
    }

    fn dispatch(&self, outputs: Vec<TrackerOutput>, call_logs: &mpsc::Sender<CallRecord>) {
        use std::sync::atomic::Ordering::Relaxed;
        for output in outputs {
            match output {
                TrackerOutput::Popup(popup) => {
                    let Some(popups) = &self.popups else { continue };
                    if popups.try_send(popup).is_err() {
                        self.stats.popups_overflow.fetch_add(1, Relaxed);
                        tracing::error!("agent popup queue full: popup dropped");
                    }
                }
                TrackerOutput::Ended(Some(call)) if self.enqueue_call_logs => {
                    if let Err(e) = call_logs.try_send(call) {
                        self.stats.call_logs_lost.fetch_add(1, Relaxed);
                        let why = match e {
                            mpsc::error::TrySendError::Full(_) => {
                                "the store refuses writes and the queue of call logs waiting for it is full"
                            }
                            mpsc::error::TrySendError::Closed(_) => "the call-log writer stopped",
                        };
                        tracing::error!(
                            "{why}: a call from AMI was not stored (counted in call_logs_lost)"
                        );
                    }
                }
                TrackerOutput::Ended(_) => {}
            }
        }
    }
}

/// Pushes one live call into `sink` on a blocking thread (the sink writes SQLite).
async fn push_live(sink: &Arc<dyn CallSink>, call: &CallRecord) -> Result<SinkOutcome, String> {
    let sink = sink.clone();
    let call = call.clone();
    let batch = CallBatch {
        calls: vec![FinishedCall::live(call)],
        ..CallBatch::default()
    };
    match tokio::task::spawn_blocking(move || sink.push(SourceKind::Live, batch)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("store task failed: {e}")),
    }
}

/// Stores the calls the tracker finished, one at a time, until the channel closes. A call
/// the store refuses is tried again after a wait that doubles up to [`CALL_LOG_RETRY_MAX`]
/// (the calls behind it wait in the bounded queue); once `shutdown` is set, a refused call is
/// tried once more and then counted lost.
pub async fn store_call_logs(
    sink: Arc<dyn CallSink>,
    stats: Arc<LiveStats>,
    mut calls: mpsc::Receiver<CallRecord>,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Some(call) = calls.recv().await {
        let mut wait = CALL_LOG_RETRY_INITIAL;
        let mut failures = 0u32;
        loop {
            match push_live(&sink, &call).await {
                Ok(outcome) => {
                    if outcome.queued > 0 {
                        stats
                            .calls_enqueued
                            .fetch_add(outcome.queued as u64, Relaxed);
                    }
                    if failures > 0 {
                        tracing::info!(call_id = %crate::logtext::Escaped(&call.call_id), failures, "call from AMI stored after the store refused it");
                    }
                    break;
                }
                Err(e) => {
                    failures += 1;
                    stats.call_log_store_failures.fetch_add(1, Relaxed);
                    if *shutdown.borrow() {
                        stats.call_logs_lost.fetch_add(1, Relaxed);
                        tracing::error!(call_id = %crate::logtext::Escaped(&call.call_id), "pbxlink is stopping and the store still refuses a call from AMI; it is lost: {e}");
                        break;
                    }
                    tracing::error!(call_id = %crate::logtext::Escaped(&call.call_id), failures, retry_in_ms = wait.as_millis() as u64, "cannot store a call from AMI, retrying: {e}");
                    let stopping = async {
                        if shutdown.changed().await.is_err() {
                            // No one can stop us any more: only the wait ends the pause.
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopping => {}
                    }
                    wait = (wait * 2).min(CALL_LOG_RETRY_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

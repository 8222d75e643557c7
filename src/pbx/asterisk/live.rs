//! Live Asterisk: AMI events drive the call tracker, whose popups go out at once and whose
//! finished calls are pushed into a [`CallSink`] (the outbox for `call_log_source = "ami"`,
//! the reconciler for `"both"`) by their own task, which retries a call the store refuses.
//! The HTTP API's control of the PBX (Originate, QueuePause) is in [`super::control`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use super::ami::{Action, AmiClient, ConnectionState, Message};
use super::tracker::{CallTracker, EventFields, PopupRequest, TrackerOutput, TrackerSettings};
use crate::call::sink::{CallSink, OutboxSink};
use crate::call::{CallRecord, Directory};
use crate::config::Config;
use crate::outbox::Store;

impl EventFields for Message {
    fn field(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

pub use crate::call::monotonic_ms;

// The live path's counters, queue and call-log writer are shared with every live source.
pub use crate::pbx::live::{CALL_LOG_QUEUE, CALL_LOG_RETRY_INITIAL, CALL_LOG_RETRY_MAX, LiveStats};

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
                rules: super::call_rules_with_links(&config)?,
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
                    Some(message) => {
                        let outputs = tracker.handle(&*message, monotonic_ms(), chrono::Utc::now());
                        self.dispatch(outputs, &call_logs);
                    }
                    None => break Ok(()),
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
                    if popups.try_send(*popup).is_err() {
                        self.stats.popups_overflow.fetch_add(1, Relaxed);
                        tracing::error!("agent popup queue full: popup dropped");
                    }
                }
                TrackerOutput::Ended(Some(call)) if self.enqueue_call_logs => {
                    if let Err(e) = call_logs.try_send(*call) {
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

/// [`crate::pbx::live::store_call_logs`] for the calls of the AMI call tracker.
pub async fn store_call_logs(
    sink: Arc<dyn CallSink>,
    stats: Arc<LiveStats>,
    calls: mpsc::Receiver<CallRecord>,
    shutdown: watch::Receiver<bool>,
) {
    crate::pbx::live::store_call_logs("AMI", sink, stats, calls, shutdown).await
}

#[cfg(test)]
mod tests;

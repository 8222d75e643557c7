//! [`AmiClient`]: the cloneable handle callers use, and the calls it correlates by
//! `ActionID` (a response, an event list, an `OriginateResponse`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::client::supervisor_settings;
use super::connection::AmiProtocol;
use super::dispatch::{AmiStats, Dispatcher};
use super::{Action, AmiError, Message};
use crate::config::AmiSettings;
use crate::pbx::connection::{ConnectionState, Outgoing, SupervisedConnection, Supervisor};

const COMMAND_CAPACITY: usize = 256;

/// A handle on the AMI connection task. Cheap to clone; the task ends with
/// [`AmiClient::shutdown`] or when every handle is dropped.
#[derive(Clone)]
pub struct AmiClient {
    dispatcher: Arc<Dispatcher>,
    commands: mpsc::Sender<Outgoing<()>>,
}

impl std::fmt::Debug for AmiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmiClient")
            .field("server", &self.dispatcher.sup.server())
            .field("state", &*self.dispatcher.sup.state().borrow())
            .finish()
    }
}

impl AmiClient {
    /// Spawns the connection task (connect, banner, login, filter, keepalive, reconnect)
    /// on the current Tokio runtime and returns at once; watch [`AmiClient::state`] to see
    /// it connect. Panics outside a runtime (like `tokio::spawn`).
    pub fn spawn(settings: AmiSettings, secret: String) -> AmiClient {
        let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
        let server = format!("{}:{}", settings.host, settings.port);
        let sup = Supervisor::new("AMI", server);
        let dispatcher = Arc::new(Dispatcher::new(sup.clone(), &settings.events));
        let supervision = supervisor_settings(&settings.host, settings.port);
        let protocol = AmiProtocol {
            dispatcher: dispatcher.clone(),
            settings,
            secret,
        };
        sup.spawn(protocol, supervision, rx);
        AmiClient {
            dispatcher,
            commands,
        }
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
    /// included when configured, from now on and in order; `None` once the client is gone.
    /// It queues [`EVENT_CAPACITY`](super::client::EVENT_CAPACITY) events; when it is full
    /// the connection waits for it (no event is lost, Asterisk is pushed back through
    /// TCP), except that answers to actions still reach their callers. Read it, or drop
    /// it: a receiver nobody reads holds the connection up.
    pub fn events(&self) -> mpsc::Receiver<Arc<Message>> {
        self.dispatcher.subscribe()
    }

    /// The connection state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.dispatcher.sup.state()
    }

    /// The connection, for the daemon's status line and shutdown.
    pub fn connection(&self) -> Arc<dyn SupervisedConnection> {
        self.dispatcher.sup.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AmiStats {
        self.dispatcher.stats()
    }

    /// Logs off (best effort), closes the connection, fails pending calls and stops the
    /// task; returns when the task has ended. Later calls fail with [`AmiError::Closed`].
    pub async fn shutdown(&self) {
        self.dispatcher.sup.shutdown().await;
    }

    /// Registers a call and queues its bytes for the connection task.
    async fn start(&self, action: &Action) -> Result<Call, AmiError> {
        let d = &self.dispatcher;
        if d.sup.is_shut_down() {
            return Err(AmiError::Closed);
        }
        let id = d.next_action_id();
        let bytes = match action.encode(&id) {
            Ok(b) => b,
            Err(e) => {
                d.count_refused();
                warn!(action = action.name(), "refused AMI action: {e}");
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let Some((generation, ())) = d.sup.register(|calls| calls.insert(id.clone(), tx)) else {
            return Err(AmiError::NotConnected {
                reason: d.sup.down_reason(),
            });
        };
        let call = Call {
            dispatcher: d.clone(),
            id,
            action: action.name().to_owned(),
            rx,
        };
        self.commands
            .send(Outgoing {
                generation,
                bytes,
                ticket: (),
            })
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
    dispatcher: Arc<Dispatcher>,
    id: String,
    action: String,
    rx: mpsc::UnboundedReceiver<Arc<Message>>,
}

impl Call {
    /// The next message carrying this call's ActionID.
    async fn next(&mut self) -> Result<Arc<Message>, AmiError> {
        self.rx.recv().await.ok_or_else(|| {
            let sup = &self.dispatcher.sup;
            if sup.is_shut_down() {
                AmiError::Closed
            } else {
                AmiError::Disconnected {
                    action: self.action.clone(),
                    reason: sup.down_reason(),
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
        let id = &self.id;
        self.dispatcher.sup.with_pending(|calls| calls.remove(id));
    }
}

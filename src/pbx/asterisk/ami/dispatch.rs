//! Where AMI messages go: to the caller waiting for their `ActionID`, and, for events that
//! pass the filter, to every [`super::AmiClient::events`] receiver. Also the event filter
//! itself and the client's counters ([`AmiStats`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use super::Message;
use super::client::EVENT_CAPACITY;
use crate::pbx::connection::{ConnectionStats, Supervisor};

/// Events that are always forwarded, whatever the configuration says.
const ALWAYS_FORWARDED: [&str; 2] = ["FullyBooted", "Shutdown"];

/// A snapshot of the client's counters ([`super::AmiClient::stats`]): the connection's
/// (the supervisor's: logins, reconnects, failures, half-open drops ...; read through
/// `Deref`, e.g. `stats.logins`), then AMI's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmiStats {
    /// The connection's counters. Logins refused are Asterisk refusing the user or secret;
    /// half-open drops are connections silent for [`super::client::IDLE_LIMIT`].
    pub connection: ConnectionStats,
    /// Events received, by event name (before filtering).
    pub events_by_type: HashMap<String, u64>,
    /// Events offered to the [`super::AmiClient::events`] receivers.
    pub events_forwarded: u64,
    /// Events overwritten before at least one receiver read them (a lagging receiver).
    pub events_lagged: u64,
    /// Actions refused before reaching the wire (CR/LF in a header or the name).
    pub refused_actions: u64,
    /// Whether Asterisk filters events for us (`Action: Filter` accepted) on the current
    /// or last connection; false means pbxlink filters them.
    pub server_side_filter: bool,
}

impl std::ops::Deref for AmiStats {
    type Target = ConnectionStats;

    fn deref(&self) -> &ConnectionStats {
        &self.connection
    }
}

/// The calls waiting for answers on the live connection, by ActionID.
#[derive(Default)]
pub(super) struct Calls {
    by_id: HashMap<String, mpsc::UnboundedSender<Arc<Message>>>,
}

impl Calls {
    pub(super) fn insert(&mut self, id: String, tx: mpsc::UnboundedSender<Arc<Message>>) {
        self.by_id.insert(id, tx);
    }

    pub(super) fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

/// The counters that are AMI's own (the connection's are the supervisor's).
#[derive(Default)]
struct DispatchStats {
    events_by_type: HashMap<String, u64>,
    events_forwarded: u64,
    events_lagged: u64,
    refused_actions: u64,
    server_side_filter: bool,
}

/// State shared by the handles and the connection task.
pub(super) struct Dispatcher {
    /// Connection state, counters, the calls of the live connection.
    pub(super) sup: Arc<Supervisor<Calls>>,
    pub(super) filter: EventFilter,
    events: broadcast::Sender<Arc<Message>>,
    next_id: AtomicU64,
    stats: Mutex<DispatchStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Dispatcher {
    pub(super) fn new(sup: Arc<Supervisor<Calls>>, configured_events: &[String]) -> Self {
        Self {
            sup,
            filter: EventFilter::new(configured_events),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            next_id: AtomicU64::new(1),
            stats: Mutex::new(DispatchStats::default()),
        }
    }

    /// A fresh ActionID for a caller's action.
    pub(super) fn next_action_id(&self) -> String {
        format!("pbxlink-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<Message>> {
        self.events.subscribe()
    }

    pub(super) fn count_refused(&self) {
        lock(&self.stats).refused_actions += 1;
    }

    pub(super) fn set_server_side_filter(&self, on: bool) {
        lock(&self.stats).server_side_filter = on;
    }

    /// The connection's and the dispatcher's counters together.
    pub(super) fn stats(&self) -> AmiStats {
        let d = lock(&self.stats);
        AmiStats {
            connection: self.sup.stats(),
            events_by_type: d.events_by_type.clone(),
            events_forwarded: d.events_forwarded,
            events_lagged: d.events_lagged,
            refused_actions: d.refused_actions,
            server_side_filter: d.server_side_filter,
        }
    }

    /// Routes a message to the call waiting for its ActionID and, when it is an event that
    /// passes the filter, to the event receivers. Never waits.
    pub(super) fn dispatch(&self, msg: Message) {
        let msg = Arc::new(msg);
        if let Some(id) = msg.action_id() {
            self.sup.with_pending(|calls| {
                if let Some(tx) = calls.by_id.get(id) {
                    let _ = tx.send(msg.clone());
                }
            });
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
pub(super) struct EventFilter {
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

    /// True when every event is wanted (no names configured).
    pub(super) fn all(&self) -> bool {
        self.names.is_empty()
    }

    fn allows(&self, name: &str) -> bool {
        self.all() || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Events Asterisk must send: the forwarded ones and OriginateResponse (needed by
    /// [`super::AmiClient::originate`]).
    pub(super) fn wanted(&self) -> Vec<&str> {
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
    pub(super) fn class_mask(&self) -> String {
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

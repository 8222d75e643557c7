//! Where AMI messages go: to the caller waiting for their `ActionID`, and, for events that
//! pass the filter, to every [`super::AmiClient::events`] receiver. Also the event filter
//! itself and the client's counters ([`AmiStats`]).
//!
//! Each receiver has a small bounded channel ([`EVENT_CAPACITY`]). When one is full the
//! connection's [`Fanout`] holds the event and the reader stops reading the socket until the
//! receiver made room, so TCP pushes back on Asterisk instead of pbxlink buffering events.
//! One exception keeps answers from starving: while a caller waits for the answer to an
//! action (the call tracker itself waits for `CoreShowChannels` while it does not read
//! events), the reader goes on reading, hands answers to their callers at once and *parks*
//! the events for the receivers, at most [`PARK_LIMIT`] of them; past that it stops reading
//! too (the caller's timeout then ends the wait).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tracing::warn;

use super::client::{EVENT_CAPACITY, PARK_LIMIT};
use super::frame::Keep;
use super::{Frame, FrameError, Framer, Message};
use crate::pbx::connection::{Backlog, ConnectionStats, Supervisor};

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
    /// Times the reader stopped reading the socket because a receiver was full
    /// (backpressure; no event is lost).
    pub reader_waits: u64,
    /// Most events parked at once for full receivers while a caller waited for an answer.
    pub events_parked_peak: u64,
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
    reader_waits: u64,
    events_parked_peak: u64,
    refused_actions: u64,
    server_side_filter: bool,
}

/// State shared by the handles and the connection task.
pub(super) struct Dispatcher {
    /// Connection state, counters, the calls of the live connection.
    pub(super) sup: Arc<Supervisor<Calls>>,
    pub(super) filter: EventFilter,
    /// The receivers' channels, and a version bumped when the list changes.
    subscribers: Mutex<Vec<mpsc::Sender<Arc<Message>>>>,
    subscribers_version: AtomicU64,
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
            subscribers: Mutex::new(Vec::new()),
            subscribers_version: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            stats: Mutex::new(DispatchStats::default()),
        }
    }

    /// A fresh ActionID for a caller's action.
    pub(super) fn next_action_id(&self) -> String {
        format!("pbxlink-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A new receiver of the forwarded events (from the next one on).
    pub(super) fn subscribe(&self) -> mpsc::Receiver<Arc<Message>> {
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let mut subs = lock(&self.subscribers);
        subs.retain(|s| !s.is_closed());
        subs.push(tx);
        self.subscribers_version.fetch_add(1, Ordering::Release);
        rx
    }

    /// Whether some caller waits for the answer to an action.
    fn calls_waiting(&self) -> bool {
        self.sup.with_pending(|calls| !calls.by_id.is_empty())
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
            reader_waits: d.reader_waits,
            events_parked_peak: d.events_parked_peak,
            refused_actions: d.refused_actions,
            server_side_filter: d.server_side_filter,
        }
    }

    /// Routes a message to the call waiting for its ActionID and, when it is an event that
    /// passes the filter, to the receivers through `fanout` (which may hold it). Never
    /// waits.
    pub(super) fn dispatch(&self, fanout: &mut Fanout, msg: Message) {
        let msg = Arc::new(msg);
        let event = msg.event();
        let forward = event.is_some_and(|name| {
            fanout.count(name.as_bytes());
            self.filter.allows(name.as_bytes())
        });
        if forward {
            fanout.forwarded += 1;
        }
        // Counters first: whoever sees this message sees the counts of every one before.
        self.flush_counts(fanout);
        if let Some(id) = msg.action_id() {
            self.sup.with_pending(|calls| {
                if let Some(tx) = calls.by_id.get(id) {
                    let _ = tx.send(msg.clone());
                }
            });
        }
        if forward {
            fanout.push(self, msg);
        }
    }

    /// What to do with an event named `name` before it is parsed: count it, and parse it
    /// only if it is forwarded, or when `calls_waiting` if it may answer an action.
    pub(super) fn keep(&self, fanout: &mut Fanout, name: &[u8], calls_waiting: bool) -> Keep {
        if self.filter.allows(name) {
            return Keep::Yes;
        }
        fanout.count(name);
        if calls_waiting {
            Keep::IfActionId
        } else {
            Keep::No
        }
    }

    /// Parses and dispatches what `framer` holds, until it needs more bytes or the fan-out
    /// must not take more events (a receiver is full and parking is not allowed).
    pub(super) fn pump(&self, fanout: &mut Fanout, framer: &mut Framer) -> Result<(), FrameError> {
        fanout.try_flush(self);
        let calls_waiting = self.calls_waiting();
        loop {
            if !fanout.may_take(calls_waiting) {
                break;
            }
            let frame = framer.next_frame_keeping(|name| self.keep(fanout, name, calls_waiting));
            match frame {
                Ok(Some(Frame::Message(m))) => self.dispatch(fanout, m),
                Ok(Some(Frame::Banner { .. })) => {}
                Ok(None) => break,
                Err(e) => {
                    self.flush_counts(fanout);
                    return Err(e);
                }
            }
        }
        self.flush_counts(fanout);
        Ok(())
    }

    /// Where the reader stands with the receivers.
    pub(super) fn backlog(&self, fanout: &Fanout) -> Backlog {
        if fanout.held.is_empty() {
            Backlog::None
        } else if fanout.may_take(self.calls_waiting()) {
            Backlog::KeepReading
        } else {
            Backlog::StopReading
        }
    }

    /// Waits until every held event is handed to every receiver (cancel-safe: an event
    /// leaves the queue only once handed on).
    pub(super) async fn flush(&self, fanout: &mut Fanout) {
        if fanout.held.is_empty() {
            return;
        }
        {
            let mut st = lock(&self.stats);
            st.reader_waits += 1;
        }
        while let Some(front) = fanout.held.front().cloned() {
            fanout.refresh(self);
            while fanout.front_done < fanout.senders.len() {
                let tx = &fanout.senders[fanout.front_done];
                // A closed receiver takes nothing; a full one is waited for.
                if let Ok(permit) = tx.reserve().await {
                    permit.send(front.clone());
                }
                fanout.front_done += 1;
            }
            fanout.held.pop_front();
            fanout.front_done = 0;
        }
    }

    /// Adds the fan-out's counts to the shared counters.
    fn flush_counts(&self, fanout: &mut Fanout) {
        if !fanout.dirty {
            return;
        }
        let mut st = lock(&self.stats);
        for (name, n) in &mut fanout.counts {
            if *n == 0 {
                continue;
            }
            match st.events_by_type.get_mut(name.as_str()) {
                Some(total) => *total += *n,
                None => {
                    st.events_by_type.insert(name.clone(), *n);
                }
            }
            *n = 0;
        }
        st.events_forwarded += fanout.forwarded;
        fanout.forwarded = 0;
        st.events_parked_peak = st.events_parked_peak.max(fanout.held.len() as u64);
        fanout.dirty = false;
    }
}

/// One connection's side of the fan-out: its copy of the receivers' channels, the events
/// held for full receivers, and event counts not yet added to the shared counters.
#[derive(Default)]
pub(super) struct Fanout {
    version: u64,
    senders: Vec<mpsc::Sender<Arc<Message>>>,
    /// Events not yet handed to every receiver, oldest first.
    held: VecDeque<Arc<Message>>,
    /// How many receivers (in `senders` order) already have the oldest held event.
    front_done: usize,
    /// Events seen by name since the last flush to the shared counters.
    counts: Vec<(String, u64)>,
    forwarded: u64,
    dirty: bool,
}

impl Fanout {
    /// Events held for full receivers.
    pub(super) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Takes the receivers list again when it changed.
    fn refresh(&mut self, d: &Dispatcher) {
        let version = d.subscribers_version.load(Ordering::Acquire);
        if version != self.version && self.front_done == 0 {
            let mut subs = lock(&d.subscribers);
            subs.retain(|s| !s.is_closed());
            self.senders.clone_from(&subs);
            self.version = d.subscribers_version.load(Ordering::Acquire);
        }
    }

    fn count(&mut self, name: &[u8]) {
        self.dirty = true;
        if let Some((_, n)) = self.counts.iter_mut().find(|(k, _)| k.as_bytes() == name) {
            *n += 1;
            return;
        }
        // Bounded like the shared map: names are what the server sends (a few dozen).
        self.counts
            .push((String::from_utf8_lossy(name).into_owned(), 1));
    }

    /// Whether another event may be taken now.
    fn may_take(&self, calls_waiting: bool) -> bool {
        self.held.is_empty() || calls_waiting && self.held.len() < PARK_LIMIT
    }

    /// Hands `msg` to every receiver that has room, holding it for the others (behind any
    /// event already held, so order is kept).
    fn push(&mut self, d: &Dispatcher, msg: Arc<Message>) {
        self.refresh(d);
        if !self.held.is_empty() {
            self.held.push_back(msg);
            return;
        }
        for (i, tx) in self.senders.iter().enumerate() {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg.clone()) {
                self.front_done = i;
                self.held.push_back(msg);
                return;
            }
        }
    }

    /// Hands on what held events the receivers have room for now, without waiting.
    fn try_flush(&mut self, d: &Dispatcher) {
        if self.held.is_empty() {
            return;
        }
        self.refresh(d);
        while let Some(front) = self.held.front() {
            while self.front_done < self.senders.len() {
                match self.senders[self.front_done].try_send(front.clone()) {
                    Err(mpsc::error::TrySendError::Full(_)) => return,
                    _ => self.front_done += 1,
                }
            }
            self.held.pop_front();
            self.front_done = 0;
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

    fn allows(&self, name: &[u8]) -> bool {
        self.all()
            || self
                .names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
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

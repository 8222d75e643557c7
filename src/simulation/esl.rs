//! A small FreeSWITCH event socket (`mod_event_socket`, inbound mode) for `pbxlink demo
//! --pbx freeswitch` and the ESL bench. It speaks the real framing, as FreeSWITCH 1.10 writes
//! it (see the captures in `tests/fixtures/freeswitch`):
//!
//! - greets with `Content-Type: auth/request`; `auth <password>` is answered
//!   `command/reply` `+OK accepted` (a wrong password: `-ERR invalid`, then a
//!   `text/disconnect-notice` and the end of the connection, as FreeSWITCH does);
//! - `event plain <names...>` subscribes (`CUSTOM <subclass>` included; `ALL` is everything);
//!   only subscribed events are sent, as `text/event-plain` with a `Content-Length` envelope
//!   and URL-encoded values ([`EslEvent::to_wire`]);
//! - `api <command>` is answered `api/response` with a `Content-Length` body: `version`,
//!   `status`, `show channels as json` (the channels up, from the events sent),
//!   `uuid_exists`, `uuid_kill`, `callcenter_config agent set|get status|state`; anything
//!   else `-ERR <command> Command not found!`;
//! - `bgapi <command>` is answered `+OK Job-UUID: <uuid>` (the client's `Job-UUID` header
//!   when it sent one); its BACKGROUND_JOB event (body: the command's output) follows. An
//!   `originate` is handed to the story ([`EslSimulator::next_originate`]), which places the
//!   call and finishes the job ([`EslSimulator::finish_job`]) as FreeSWITCH would;
//! - `exit` is answered `+OK bye`, then `text/disconnect-notice` and the end of the
//!   connection; `noevents`, `filter`, `linger` ... are acknowledged.
//!
//! Commands are read with a bounded buffer; a command line longer than that ends the
//! connection. It stands in for FreeSWITCH's side of the protocol only; the tests that
//! matter run against the real FreeSWITCH rig (`tests/freeswitch`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// The largest command the simulator buffers; a longer one ends the connection.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Events queued for one client before the simulator drops them (FreeSWITCH drops events
/// for a listener whose queue is full too, and then kills it).
const CLIENT_QUEUE: usize = 8192;
/// Commands remembered for [`EslSimulator::commands`].
const MAX_LOGGED_COMMANDS: usize = 1024;
/// Originates waiting for the story.
const MAX_PENDING_ORIGINATES: usize = 64;

/// `Core-UUID` of the simulated switch.
pub const CORE_UUID: &str = "9f3a5a56-0c52-4b8e-9d1e-5e6f1a2b3c4d";
/// `FreeSWITCH-Hostname` / `FreeSWITCH-Switchname` of the simulated switch.
pub const HOSTNAME: &str = "pbxlink-demo";
/// The notice FreeSWITCH sends before it closes a connection (`exit`, a failed `auth`).
const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// Bytes FreeSWITCH's `switch_url_encode` escapes besides every byte outside `' '..='~'`
/// (`SWITCH_URL_UNSAFE`, switch_utils.h).
const URL_UNSAFE: &[u8] = b"\r\n #%&+:;<=>?@[\\]^`{|}\"";

/// `value` as FreeSWITCH URL-encodes an event header value (`%XX`, upper-case hex).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for &b in value.as_bytes() {
        if !(b' '..=b'~').contains(&b) || URL_UNSAFE.contains(&b) {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

/// One event, as `switch_event_serialize` writes it: headers in order (values URL-encoded on
/// the wire) and an optional body of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EslEvent {
    /// The headers, `Event-Name` first, values not encoded.
    pub headers: Vec<(String, String)>,
    /// The event's own body (a BACKGROUND_JOB's result).
    pub body: Option<String>,
}

impl EslEvent {
    /// An event with only its `Event-Name`.
    pub fn named(name: &str) -> Self {
        Self {
            headers: vec![("Event-Name".into(), name.into())],
            body: None,
        }
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_owned(), value.into()));
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Event-Name`.
    pub fn name(&self) -> &str {
        self.get("Event-Name").unwrap_or_default()
    }

    /// The event body (`Name: %-encoded value` lines, then an empty line or the event's own
    /// `Content-Length` and body).
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.headers.len() * 48);
        for (n, v) in &self.headers {
            out.push_str(n);
            out.push_str(": ");
            out.push_str(&url_encode(v));
            out.push('\n');
        }
        match &self.body {
            Some(body) => {
                let _ = write!(out, "Content-Length: {}\n\n{body}", body.len());
            }
            None => out.push('\n'),
        }
        out.into_bytes()
    }

    /// The whole `text/event-plain` message.
    pub fn to_wire(&self) -> Vec<u8> {
        let body = self.body_bytes();
        let mut out = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// The headers FreeSWITCH puts first on every event (`switch_event_prep_for_delivery`):
/// `Event-Name`, `Core-UUID`, host names, the event's dates, where it was fired and its
/// sequence number.
pub fn core_headers(
    name: &str,
    at: DateTime<Utc>,
    calling: (&str, &str, u32),
    sequence: u64,
) -> EslEvent {
    let mut e = EslEvent::named(name);
    e.push("Core-UUID", CORE_UUID);
    e.push("FreeSWITCH-Hostname", HOSTNAME);
    e.push("FreeSWITCH-Switchname", HOSTNAME);
    e.push("FreeSWITCH-IPv4", "127.0.0.1");
    e.push("FreeSWITCH-IPv6", "::1");
    e.push(
        "Event-Date-Local",
        at.format("%Y-%m-%d %H:%M:%S").to_string(),
    );
    e.push(
        "Event-Date-GMT",
        at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
    );
    e.push("Event-Date-Timestamp", at.timestamp_micros().to_string());
    e.push("Event-Calling-File", calling.0);
    e.push("Event-Calling-Function", calling.1);
    e.push("Event-Calling-Line-Number", calling.2.to_string());
    e.push("Event-Sequence", sequence.to_string());
    e
}

/// A `bgapi originate` the simulator received, for the story to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateJob {
    /// The job's uuid (the BACKGROUND_JOB must carry it).
    pub job_uuid: String,
    /// The `{k=v,...}` channel variables, in order.
    pub variables: Vec<(String, String)>,
    /// The endpoint rung first (`user/101`).
    pub endpoint: String,
    /// Where the answered leg is sent (the lead's number).
    pub destination: String,
    /// `XML`.
    pub dialplan: String,
    /// `default`.
    pub context: String,
}

impl OriginateJob {
    /// A channel variable of the originate.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The arguments as the command line had them: `{k=v,...}endpoint destination dialplan
    /// context`.
    pub fn arguments(&self) -> String {
        let variables: Vec<String> = self
            .variables
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{{{}}}{} {} {} {}",
            variables.join(","),
            self.endpoint,
            self.destination,
            self.dialplan,
            self.context
        )
    }

    /// Parses `{vars}endpoint destination [dialplan [context]]`.
    fn parse(job_uuid: &str, args: &str) -> Option<Self> {
        let args = args.trim();
        let (variables, rest) = match args.strip_prefix('{') {
            Some(inner) => {
                let (vars, rest) = inner.split_once('}')?;
                (split_variables(vars), rest)
            }
            None => (Vec::new(), args),
        };
        let mut words = rest.split_whitespace();
        let endpoint = words.next()?.to_owned();
        let destination = words.next()?.to_owned();
        Some(Self {
            job_uuid: job_uuid.to_owned(),
            variables,
            endpoint,
            destination,
            dialplan: words.next().unwrap_or("XML").to_owned(),
            context: words.next().unwrap_or("default").to_owned(),
        })
    }
}

/// `k=v,k='v, with comma',...` as FreeSWITCH's originate reads it.
fn split_variables(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut flush = |item: &mut String| {
        if let Some((k, v)) = item.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            out.push((k.trim().to_owned(), v.to_owned()));
        }
        item.clear();
    };
    for ch in text.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                current.push(ch);
            }
            ',' if !quoted => flush(&mut current),
            _ => current.push(ch),
        }
    }
    flush(&mut current);
    out
}

/// A channel up, as `show channels as json` lists it.
#[derive(Debug, Clone)]
struct ChannelRow {
    fields: Vec<(&'static str, String)>,
}

/// What the connections and the story share.
struct Shared {
    password: String,
    sequence: AtomicU64,
    next_client: AtomicU64,
    clients: Mutex<Vec<Client>>,
    commands: Mutex<Vec<String>>,
    command_seen: Notify,
    originates_tx: mpsc::Sender<OriginateJob>,
    originates_rx: tokio::sync::Mutex<mpsc::Receiver<OriginateJob>>,
    channels: Mutex<HashMap<String, ChannelRow>>,
    agents: Mutex<HashMap<String, (String, String)>>,
    dropped: AtomicU64,
}

/// A subscribed connection: its subscription and its outgoing queue.
struct Client {
    id: u64,
    all: bool,
    names: HashSet<String>,
    subclasses: HashSet<String>,
    tx: mpsc::Sender<Arc<Vec<u8>>>,
}

impl Client {
    fn wants(&self, name: &str, subclass: Option<&str>) -> bool {
        if self.all {
            return true;
        }
        if name.eq_ignore_ascii_case("CUSTOM") {
            return subclass.is_some_and(|s| self.subclasses.contains(&s.to_ascii_lowercase()));
        }
        self.names.contains(&name.to_ascii_uppercase())
    }
}

/// A running simulator; clones share it. It runs until the runtime ends.
#[derive(Clone)]
pub struct EslSimulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EslSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EslSimulator")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EslSimulator {
    /// Listens on `addr` (port 0: any free port), accepting `auth <password>`.
    pub async fn start(addr: SocketAddr, password: &str) -> std::io::Result<EslSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (originates_tx, originates_rx) = mpsc::channel(MAX_PENDING_ORIGINATES);
        let shared = Arc::new(Shared {
            password: password.to_owned(),
            sequence: AtomicU64::new(1000),
            next_client: AtomicU64::new(1),
            clients: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            command_seen: Notify::new(),
            originates_tx,
            originates_rx: tokio::sync::Mutex::new(originates_rx),
            channels: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let shared = accepting.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, shared).await {
                        tracing::debug!("ESL simulator connection ended: {e}");
                    }
                });
            }
        });
        Ok(EslSimulator { addr, shared })
    }

    /// The address to put in `[freeswitch.esl] host`/`port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections that subscribed to events (`event plain ...`) and are still open.
    pub fn subscribers(&self) -> usize {
        let mut clients = lock(&self.shared.clients);
        clients.retain(|c| !c.tx.is_closed());
        clients.len()
    }

    /// Events dropped because a client's queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The next `Event-Sequence` number.
    pub fn next_sequence(&self) -> u64 {
        self.shared.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `event` to every client subscribed to it; notes channels created and hung up
    /// for `show channels` / `uuid_exists`.
    pub fn emit(&self, event: &EslEvent) {
        self.note_channel(event);
        let name = event.name();
        let subclass = event.get("Event-Subclass");
        let wire = Arc::new(event.to_wire());
        let mut clients = lock(&self.shared.clients);
        clients.retain(|c| !c.tx.is_closed());
        for c in clients.iter().filter(|c| c.wants(name, subclass)) {
            if c.tx.try_send(wire.clone()).is_err() {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends raw bytes (whole messages, e.g. a captured event stream) to every subscribed
    /// client, waiting while a client's queue is full (the bench's backpressure: nothing is
    /// dropped here).
    pub async fn send_raw(&self, bytes: Arc<Vec<u8>>) {
        let senders: Vec<mpsc::Sender<Arc<Vec<u8>>>> = {
            let mut clients = lock(&self.shared.clients);
            clients.retain(|c| !c.tx.is_closed());
            clients.iter().map(|c| c.tx.clone()).collect()
        };
        for tx in senders {
            let _ = tx.send(bytes.clone()).await;
        }
    }

    /// Every command line received so far (at most the last [`MAX_LOGGED_COMMANDS`]).
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }

    /// Waits until a command line containing `needle` has been received.
    pub async fn wait_for_command(&self, needle: &str) -> String {
        loop {
            let seen = self.shared.command_seen.notified();
            if let Some(c) = lock(&self.shared.commands)
                .iter()
                .find(|c| c.contains(needle))
            {
                return c.clone();
            }
            seen.await;
        }
    }

    /// The next `bgapi originate` received (waits for one).
    pub async fn next_originate(&self) -> Option<OriginateJob> {
        self.shared.originates_rx.lock().await.recv().await
    }

    /// Sends the BACKGROUND_JOB event that ends job `job_uuid` with `result` (`+OK <uuid>\n`
    /// or `-ERR USER_NOT_REGISTERED\n`).
    pub fn finish_job(&self, job_uuid: &str, command: &str, args: &str, result: &str) {
        let mut e = core_headers(
            "BACKGROUND_JOB",
            Utc::now(),
            ("mod_event_socket.c", "api_exec", 1572),
            self.next_sequence(),
        );
        e.push("Job-UUID", job_uuid);
        e.push("Job-Command", command);
        e.push("Job-Command-Arg", args);
        e.body = Some(result.to_owned());
        self.emit(&e);
    }

    /// The status `callcenter_config agent set status` last gave `agent`, if any.
    pub fn agent_status(&self, agent: &str) -> Option<(String, String)> {
        lock(&self.shared.agents).get(agent).cloned()
    }

    fn note_channel(&self, event: &EslEvent) {
        let Some(uuid) = event.get("Unique-ID") else {
            return;
        };
        let name = event.name();
        let mut channels = lock(&self.shared.channels);
        if name.eq_ignore_ascii_case("CHANNEL_HANGUP_COMPLETE") {
            channels.remove(uuid);
        } else if name.eq_ignore_ascii_case("CHANNEL_CREATE") {
            let h = |n: &str| event.get(n).unwrap_or_default().to_owned();
            let created_us: i64 = h("Caller-Channel-Created-Time").parse().unwrap_or(0);
            let row = ChannelRow {
                fields: vec![
                    ("uuid", uuid.to_owned()),
                    ("direction", h("Call-Direction")),
                    ("created_epoch", (created_us / 1_000_000).to_string()),
                    ("name", h("Channel-Name")),
                    ("state", h("Channel-State")),
                    ("cid_name", h("Caller-Caller-ID-Name")),
                    ("cid_num", h("Caller-Caller-ID-Number")),
                    ("dest", h("Caller-Destination-Number")),
                    ("context", h("Caller-Context")),
                    ("callstate", h("Channel-Call-State")),
                    ("call_uuid", h("Channel-Call-UUID")),
                    ("initial_cid_name", h("Caller-Caller-ID-Name")),
                    ("initial_cid_num", h("Caller-Caller-ID-Number")),
                    ("initial_dest", h("Caller-Destination-Number")),
                    ("initial_context", h("Caller-Context")),
                    ("hostname", HOSTNAME.to_owned()),
                ],
            };
            channels.insert(uuid.to_owned(), row);
        } else if name.eq_ignore_ascii_case("CHANNEL_ANSWER") {
            if let Some(row) = channels.get_mut(uuid) {
                for (k, v) in &mut row.fields {
                    if *k == "callstate" {
                        *v = "ACTIVE".into();
                    }
                }
            }
        }
    }

    fn show_channels(&self) -> String {
        let channels = lock(&self.shared.channels);
        if channels.is_empty() {
            return "{\"row_count\":0}\n".into();
        }
        let rows: Vec<serde_json::Value> = channels
            .values()
            .map(|r| {
                serde_json::Value::Object(
                    r.fields
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
                        .collect(),
                )
            })
            .collect();
        let doc = serde_json::json!({ "row_count": rows.len(), "rows": rows });
        format!("{doc}\n")
    }

    /// The output of `api <command>`.
    fn api(&self, command: &str) -> String {
        let command = command.trim();
        let (name, args) = command.split_once(' ').unwrap_or((command, ""));
        let args = args.trim();
        match name {
            "version" => "FreeSWITCH Version 1.10.12-release~64bit (-release 64bit)\n".into(),
            "status" => format!(
                "UP 0 years, 0 days, 0 hours, 1 minute, 0 seconds, 0 milliseconds, 0 microseconds\n\
                 FreeSWITCH ({HOSTNAME}) is ready\n{} session(s) since startup\n",
                lock(&self.shared.channels).len()
            ),
            "show" if args == "channels as json" => self.show_channels(),
            "uuid_exists" => {
                let up = lock(&self.shared.channels).contains_key(args);
                format!("{up}")
            }
            "uuid_kill" => {
                if lock(&self.shared.channels).contains_key(args) {
                    "+OK\n".into()
                } else {
                    "-ERR No such channel!\n".into()
                }
            }
            "callcenter_config" => self.callcenter_config(args),
            _ => format!("-ERR {name} Command not found!\n"),
        }
    }

    fn callcenter_config(&self, args: &str) -> String {
        // mod_callcenter splits its arguments on blanks, single quotes grouping.
        let words: Vec<String> = args
            .split('\'')
            .enumerate()
            .flat_map(|(i, part)| {
                if i % 2 == 1 {
                    vec![part.to_owned()]
                } else {
                    part.split_whitespace().map(str::to_owned).collect()
                }
            })
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut agents = lock(&self.shared.agents);
        match words.as_slice() {
            [
                "agent",
                "set",
                what @ ("status" | "state"),
                agent,
                value @ ..,
            ] if !value.is_empty() => {
                let value = value.join(" ");
                let entry = agents
                    .entry((*agent).to_owned())
                    .or_insert_with(|| ("Logged Out".into(), "Waiting".into()));
                if *what == "status" {
                    entry.0 = value;
                } else {
                    entry.1 = value;
                }
                "+OK\n".into()
            }
            ["agent", "get", what @ ("status" | "state"), agent] => match agents.get(*agent) {
                Some((status, state)) => {
                    format!("{}\n", if *what == "status" { status } else { state })
                }
                None => "-ERR Invalid Agent!\n".into(),
            },
            _ => "-ERR Unknown Command!\n".into(),
        }
    }

    fn log_command(&self, line: &str) {
        let mut commands = lock(&self.shared.commands);
        if commands.len() >= MAX_LOGGED_COMMANDS {
            commands.remove(0);
        }
        commands.push(line.to_owned());
        drop(commands);
        self.shared.command_seen.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn reply(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}

fn api_response(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

fn disconnect_notice() -> Vec<u8> {
    format!(
        "Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{GOODBYE}",
        GOODBYE.len()
    )
    .into_bytes()
}

/// One command: its line and the header lines after it (`Job-UUID: ...`).
struct Received {
    line: String,
    headers: Vec<(String, String)>,
}

/// Takes one whole command (up to its empty line) off `buf`.
fn next_command(buf: &mut Vec<u8>) -> Option<Received> {
    let end = buf.windows(2).position(|w| w == b"\n\n")?;
    let text = String::from_utf8_lossy(&buf[..end]).replace('\r', "");
    buf.drain(..end + 2);
    let mut lines = text.lines();
    let line = lines.next().unwrap_or_default().trim().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Received { line, headers })
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let sim = EslSimulator {
        addr: stream.local_addr()?,
        shared: shared.clone(),
    };
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(b"Content-Type: auth/request\n\n").await?;
    let (tx, mut rx) = mpsc::channel::<Arc<Vec<u8>>>(CLIENT_QUEUE);
    let client_id = shared.next_client.fetch_add(1, Ordering::Relaxed);
    let mut authed = false;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = rd.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(cmd) = next_command(&mut buf) {
                    if cmd.line.is_empty() {
                        continue;
                    }
                    sim.log_command(&cmd.line);
                    let (verb, rest) = cmd.line.split_once(' ').unwrap_or((cmd.line.as_str(), ""));
                    if !authed {
                        if verb == "auth" && rest.trim() == shared.password {
                            authed = true;
                            wr.write_all(&reply("+OK accepted")).await?;
                            continue;
                        }
                        wr.write_all(&reply("-ERR invalid")).await?;
                        wr.write_all(&disconnect_notice()).await?;
                        return Ok(());
                    }
                    match verb {
                        "event" => {
                            let mut words = rest.split_whitespace();
                            let format = words.next().unwrap_or("plain").to_owned();
                            let mut client = Client {
                                id: client_id,
                                all: false,
                                names: HashSet::new(),
                                subclasses: HashSet::new(),
                                tx: tx.clone(),
                            };
                            let mut custom = false;
                            for w in words {
                                if w.eq_ignore_ascii_case("ALL") {
                                    client.all = true;
                                } else if w.eq_ignore_ascii_case("CUSTOM") {
                                    custom = true;
                                    client.names.insert("CUSTOM".into());
                                } else if custom && w.contains("::") {
                                    client.subclasses.insert(w.to_ascii_lowercase());
                                } else {
                                    client.names.insert(w.to_ascii_uppercase());
                                }
                            }
                            {
                                let mut clients = lock(&shared.clients);
                                clients.retain(|c| c.id != client_id && !c.tx.is_closed());
                                clients.push(client);
                            }
                            wr.write_all(&reply(&format!("+OK event listener enabled {format}"))).await?;
                        }
                        "api" => {
                            let out = sim.api(rest);
                            wr.write_all(&api_response(&out)).await?;
                        }
                        "bgapi" => {
                            let job = cmd
                                .headers
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("Job-UUID"))
                                .map(|(_, v)| v.clone())
                                .unwrap_or_else(crate::pbx::freeswitch::control::new_uuid);
                            wr.write_all(
                                format!(
                                    "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
                                )
                                .as_bytes(),
                            )
                            .await?;
                            let (name, args) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                            if name == "originate" {
                                match OriginateJob::parse(&job, args) {
                                    Some(o) => {
                                        if shared.originates_tx.try_send(o).is_err() {
                                            sim.finish_job(&job, name, args, "-ERR NORMAL_TEMPORARY_FAILURE\n");
                                        }
                                    }
                                    None => sim.finish_job(&job, name, args, "-ERR INVALID_NUMBER_FORMAT\n"),
                                }
                            } else {
                                let out = sim.api(rest);
                                sim.finish_job(&job, name, args, &out);
                            }
                        }
                        "exit" => {
                            wr.write_all(&reply("+OK bye")).await?;
                            wr.write_all(&disconnect_notice()).await?;
                            return Ok(());
                        }
                        "noevents" => {
                            lock(&shared.clients).retain(|c| c.id != client_id);
                            wr.write_all(&reply("+OK no longer listening for events")).await?;
                        }
                        "filter" | "nixevent" | "linger" | "nolinger" | "log" | "nolog" | "divert_events" => {
                            wr.write_all(&reply("+OK")).await?;
                        }
                        _ => wr.write_all(&reply("-ERR command not found")).await?,
                    }
                }
                if buf.len() > MAX_COMMAND_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "command longer than the simulator's buffer",
                    ));
                }
            }
            out = rx.recv() => match out {
                Some(bytes) => wr.write_all(&bytes).await?,
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests;

//! The PBX-neutral connection state and counters, as every protocol client reports them.

use std::time::SystemTime;

use crate::metrics::Scrape;

/// Where a PBX connection stands (AMI, event socket ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected; the client retries on its own (unless shut down).
    Disconnected {
        /// When the connection went down.
        since: SystemTime,
        /// Why (the protocol's error as text, or "shut down").
        reason: String,
    },
    /// Connecting or logging in.
    Connecting {
        /// Consecutive attempt since the last successful login (1-based).
        attempt: u32,
    },
    /// Logged in; requests can be sent.
    Connected {
        /// What the server said it is (AMI: the banner's manager version; event socket: the
        /// `version` API's answer).
        version: String,
        /// When the login succeeded.
        since: SystemTime,
    },
}

impl ConnectionState {
    /// The connection's part of the `STATUS=` line: `"{name} connected"`, `"{name}
    /// connecting"` or `"{name} DISCONNECTED"` (e.g. `name` = `AMI`, `ESL`).
    pub fn status_line(&self, name: &str) -> String {
        match self {
            ConnectionState::Connected { .. } => format!("{name} connected"),
            ConnectionState::Connecting { .. } => format!("{name} connecting"),
            ConnectionState::Disconnected { .. } => format!("{name} DISCONNECTED"),
        }
    }

    /// True when logged in.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected { .. })
    }
}

/// Counters of one supervised connection (a snapshot: [`super::Supervisor::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Logged in right now.
    pub connected: bool,
    /// Successful logins.
    pub logins: u64,
    /// Successful logins after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed before or during login.
    pub connect_failures: u64,
    /// Logins the server refused (wrong credentials, ACL).
    pub login_failures: u64,
    /// Connections dropped because nothing arrived for the idle limit.
    pub half_open_drops: u64,
    /// Connections dropped because the server sent a malformed or oversized frame.
    pub malformed_frames: u64,
    /// Requests that failed at once because the client was not connected.
    pub sent_while_down: u64,
}

/// The `/metrics` names of a connection's figures (each client keeps the names it always
/// had: `ami_logins`, `esl_logins` ...) and the server its help texts name.
pub struct ConnectionMetricNames {
    /// What the help texts call the server ("the Asterisk Manager Interface").
    pub server: &'static str,
    /// 1 while logged in.
    pub connected: &'static str,
    /// Successful logins.
    pub logins: &'static str,
    /// Logins after the first one.
    pub reconnects: &'static str,
    /// Connection attempts that failed.
    pub connect_failures: &'static str,
    /// Connections dropped as half-open.
    pub half_open_drops: &'static str,
    /// Connections dropped after a malformed or oversized frame.
    pub malformed_frames: &'static str,
}

impl ConnectionStats {
    /// Writes these counters to `scrape` under `names`.
    pub fn write_metrics(&self, scrape: &mut Scrape, names: &ConnectionMetricNames) {
        let server = names.server;
        scrape.gauge(
            names.connected,
            &format!("1 while logged in to {server}"),
            i64::from(self.connected),
        );
        for (name, help, value) in [
            (names.logins, "Successful logins to", self.logins),
            (
                names.reconnects,
                "Logins after the first one to",
                self.reconnects,
            ),
            (
                names.connect_failures,
                "Connection attempts that failed to",
                self.connect_failures,
            ),
            (
                names.half_open_drops,
                "Connections dropped as half-open (silent despite keepalives) to",
                self.half_open_drops,
            ),
            (
                names.malformed_frames,
                "Connections dropped after a malformed or oversized frame from",
                self.malformed_frames,
            ),
        ] {
            scrape.counter(name, &format!("{help} {server}"), value);
        }
    }
}

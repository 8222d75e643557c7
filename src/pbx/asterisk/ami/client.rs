//! The AMI client: [`AmiClient`], a cloneable handle on the task that owns the connection.
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
//!
//! The client is cut along its concerns: [`super::handle`] (the public handle and its calls),
//! [`super::dispatch`] (ActionID correlation, event filtering and fan-out, counters) and
//! [`super::connection`] (the AMI session: banner, login, event setup, ping) plugged into the
//! PBX-neutral [`crate::pbx::connection::Supervisor`] (reconnect, backoff, keepalive,
//! half-open detection, state). This module keeps the client's constants and names.

use std::time::Duration;

use rand::Rng;

use crate::backoff::Backoff;
use crate::pbx::connection::SupervisorSettings;

pub use super::connection::md5_key;
pub use super::dispatch::AmiStats;
pub use super::handle::AmiClient;
pub use crate::pbx::connection::ConnectionState;

/// How often a `Ping` is sent on an idle-or-not connection.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// No byte for this long (despite the pings) means the socket is half-open.
pub const IDLE_LIMIT: Duration = Duration::from_secs(25);
/// Reconnect delay after a healthy connection ended (before jitter, 0.5-1 times it); each
/// failure since doubles it.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest delay between two connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a logged-in connection must last before the reconnect backoff starts again from
/// [`BACKOFF_INITIAL`]. A server that accepts the login and then fails at once (sends
/// garbage, closes) is retried with growing delays like one that refuses the connection,
/// not every half second.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Events queued per [`AmiClient::events`] receiver. When a receiver's queue is full the
/// reader waits for it and stops reading the socket, so TCP pushes back on Asterisk.
pub const EVENT_CAPACITY: usize = 1024;
/// Most events parked for full receivers while a caller waits for the answer to an action
/// (the reader then goes on reading so the answer reaches it; see [`super::dispatch`]).
pub const PARK_LIMIT: usize = 4096;
/// Timeout of each step of connecting: TCP connect, banner, each setup action.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one write to the socket.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The reconnect policy of the AMI connection.
pub const RECONNECT_BACKOFF: Backoff = Backoff {
    initial: BACKOFF_INITIAL,
    cap: BACKOFF_MAX,
};

/// The supervision of a connection to `host:port` with the constants above.
pub fn supervisor_settings(host: &str, port: u16) -> SupervisorSettings {
    SupervisorSettings {
        host: host.to_owned(),
        port,
        keepalive_interval: PING_INTERVAL,
        idle_limit: IDLE_LIMIT,
        setup_timeout: SETUP_TIMEOUT,
        write_timeout: WRITE_TIMEOUT,
        healthy_after: HEALTHY_AFTER,
        backoff: RECONNECT_BACKOFF,
    }
}

/// The delay before the next connection attempt after `failures` consecutive failures, as
/// the supervisor computes it: `BACKOFF_INITIAL · 2^failures`, capped at [`BACKOFF_MAX`],
/// times a random factor in [0.5, 1] so that many clients do not retry in step.
pub fn backoff_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    RECONNECT_BACKOFF.delay(failures.saturating_add(1), None, rng)
}

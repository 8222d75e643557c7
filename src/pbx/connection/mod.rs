//! Connection supervision shared by every PBX protocol client (the Asterisk Manager Interface,
//! the FreeSWITCH event socket).
//!
//! A protocol plugs three things into the [`Supervisor`]: how to log in on a fresh TCP
//! connection ([`Protocol::connect`]), what to do with the bytes that arrive
//! ([`Protocol::received`]) and which bytes prove the peer is alive ([`Protocol::keepalive`]).
//! The supervisor owns everything else, the same way for every PBX:
//!
//! - **Reconnect** after whatever ended a connection (refused connect, login refused, server
//!   close, malformed frame, write timeout, half-open socket), after a capped, jittered
//!   exponential backoff ([`crate::backoff::Backoff`]). The backoff starts over only after a
//!   connection stayed up for [`SupervisorSettings::healthy_after`]: a server that accepts the
//!   login and fails at once is retried with growing delays, not in a tight loop.
//! - **Keepalive**: the protocol's probe is written every
//!   [`SupervisorSettings::keepalive_interval`].
//! - **Half-open detection**: no byte at all for [`SupervisorSettings::idle_limit`] (despite the
//!   probes) ends the connection.
//! - **State and counters**: a [`watch`](tokio::sync::watch) of the neutral
//!   [`ConnectionState`] and a [`ConnectionStats`] snapshot.
//! - **Generations**: each logged-in connection has a generation number. A caller registers
//!   its request against the live generation ([`Supervisor::register`]); bytes queued for a
//!   connection that is gone are dropped, and every waiter of a connection fails when it ends
//!   (its pending registry is reset), so nobody waits for an answer that cannot come.
//!
//! [`Link`] is the TCP side: split socket, read chunk, time of the last byte, writes with a
//! timeout. Frame parsing stays in each protocol (the AMI and ESL framers over
//! [`crate::pbx::read_buffer::ReadBuffer`]).

mod link;
mod state;
mod supervisor;

pub(crate) use link::impl_framing;
pub use link::{Framing, Link, LinkError, within_step};
pub use state::{ConnectionMetricNames, ConnectionState, ConnectionStats};
pub use supervisor::{
    Backlog, Failure, Outgoing, Protocol, SupervisedConnection, Supervisor, SupervisorSettings,
};

#[cfg(test)]
mod tests;

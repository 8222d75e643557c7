//! Asterisk Manager Interface (AMI) client.
//!
//! AMI is a line protocol on TCP (port 5038): on connect the server sends one banner line,
//! `Asterisk Call Manager/<version>`, then both sides exchange messages made of
//! `Key: Value` lines ended by a blank line. A client sends *actions* (`Action:` plus an
//! `ActionID:` that the server echoes); the server sends *responses* (`Response:`) and
//! *events* (`Event:`).
//!
//! The module is split like a small network service:
//!
//! - [`frame`]: the framer. It owns a connection's read buffer, first proves that a whole
//!   message is buffered (`check`, no allocation) and only then parses it. "Incomplete" is a
//!   normal state; a malformed or oversized frame is an error that ends that connection
//!   only.
//! - [`message`]: [`Message`] (what the server sends, headers in wire order with
//!   case-insensitive lookup) and [`Action`] (what the client sends; every key and value is
//!   checked for CR/LF/NUL and length so nothing can be injected into the stream, and
//!   channel variables are escaped for the argument parser Asterisk runs on them).
//! - [`client`]: [`AmiClient`], a cloneable handle on a background task that connects,
//!   reads the banner, logs in, sets up event filtering, keeps the connection alive with
//!   `Ping`, detects half-open sockets, reconnects with capped exponential backoff and
//!   correlates responses, event lists and `OriginateResponse` events with the action that
//!   caused them. It is cut along concerns: [`handle`] (the handle and its calls),
//!   [`dispatch`] (ActionID correlation, event filter and fan-out, counters) and
//!   [`connection`] (the AMI session plugged into the PBX-neutral
//!   [`crate::pbx::connection::Supervisor`], which reconnects, backs off, keeps alive and
//!   detects half-open sockets for every PBX).
//!
//! Login is MD5 by default (`Action: Challenge`, then `Login` with
//! `Key: md5(challenge + secret)`, so the secret never crosses the wire); `[asterisk.ami]
//! login = "plain"` sends `Secret:` instead.

pub mod client;
pub mod connection;
pub mod dispatch;
pub mod frame;
pub mod handle;
pub mod message;
/// The AMI simulator the demo and the tests use (it lives in [`crate::simulation`]).
pub use crate::simulation::ami as simulator;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use client::{AmiClient, AmiStats, ConnectionState};
pub use frame::{Frame, FrameError, FrameLimits, Framer};
pub use message::{Action, Message};

/// Everything that can go wrong talking to Asterisk, for a caller or for one connection.
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    /// A key or value of an action holds a CR or LF: sending it would let the value inject
    /// headers or whole actions. The action is refused and nothing is sent.
    #[error("refused to send AMI header {key:?}: its key or value contains CR, LF or NUL")]
    HeaderInjection {
        /// The offending key (as given, possibly itself holding the CR/LF).
        key: String,
    },
    /// A key is empty or holds a ':' (or other characters that cannot be a key).
    #[error("invalid AMI header key {key:?}: keys must be non-empty and hold no ':'")]
    InvalidKey {
        /// The offending key.
        key: String,
    },
    /// A header line would be longer than Asterisk reads (it would discard the action).
    #[error("refused to send AMI header {key:?}: the line would be {len} bytes, more than {limit}")]
    LineTooLong {
        /// The header's key.
        key: String,
        /// The line's length with its CRLF.
        len: usize,
        /// [`message::MAX_LINE_BYTES`].
        limit: usize,
    },
    /// An action with more headers than Asterisk keeps.
    #[error("refused to send an AMI action with more than {limit} headers")]
    TooManyHeaders {
        /// [`message::MAX_HEADERS`].
        limit: usize,
    },
    /// A channel variable name that is not `NAME` or `FUNC(arg)`.
    #[error("refused to set channel variable {name:?}: not a plain variable or function name")]
    InvalidVariable {
        /// The offending name (at most 80 characters).
        name: String,
    },
    /// `Action` and `ActionID` are written by the client itself.
    #[error("AMI header {key:?} is set by the client; it cannot be set on an Action")]
    ReservedKey {
        /// The offending key.
        key: String,
    },
    /// The client is not logged in to Asterisk right now; nothing was sent.
    #[error("not connected to Asterisk: {reason}")]
    NotConnected {
        /// Why (the last disconnect reason, or "connecting").
        reason: String,
    },
    /// The connection went down while the action was waiting for its answer.
    #[error("AMI connection lost while waiting for the answer to {action}: {reason}")]
    Disconnected {
        /// The action's name.
        action: String,
        /// Why the connection went down.
        reason: String,
    },
    /// No (complete) answer within the caller's timeout.
    #[error("no answer to AMI action {action} within {after:?}")]
    Timeout {
        /// The action's name.
        action: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// Asterisk answered `Response: Error`.
    #[error("Asterisk refused AMI action {action}: {message}")]
    Rejected {
        /// The action's name.
        action: String,
        /// Asterisk's `Message:` (e.g. "Permission denied").
        message: String,
    },
    /// The client was shut down (or every handle dropped).
    #[error("the AMI client is shut down")]
    Closed,
    /// Login refused by Asterisk (wrong user or secret, or `permit=`/`deny=`).
    #[error("AMI login as {username:?} refused: {message}")]
    LoginFailed {
        /// The manager.conf user.
        username: String,
        /// Asterisk's `Message:` (e.g. "Authentication failed").
        message: String,
    },
    /// A socket operation failed.
    #[error("AMI {context}: {source}")]
    Io {
        /// What was being done (e.g. "connect to 127.0.0.1:5038").
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server sent something that is not AMI (the connection is dropped).
    #[error("bad AMI frame: {0}")]
    Frame(#[from] FrameError),
    /// No byte arrived for this long although pings were sent: the socket is half-open.
    #[error("no data from Asterisk for {idle:?} despite pings: connection half-open, dropped")]
    HalfOpen {
        /// How long the connection was silent.
        idle: Duration,
    },
    /// A step of the connection (connect, banner, login, filter setup, write) timed out.
    #[error("AMI {step} timed out after {after:?}")]
    StepTimeout {
        /// The step.
        step: &'static str,
        /// Its timeout.
        after: Duration,
    },
    /// Asterisk closed the connection.
    #[error("Asterisk closed the AMI connection")]
    ClosedByServer,
}

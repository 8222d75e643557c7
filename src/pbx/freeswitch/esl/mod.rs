//! FreeSWITCH event socket (ESL), inbound mode: the wire layer and the client.
//!
//! pbxlink connects to `mod_event_socket` (TCP 8021). The server greets with `auth/request`;
//! the client answers `auth <password>`, subscribes with `event plain <names...>`, runs
//! commands with `api` (answer: `api/response`) or `bgapi` (answer: a `command/reply` naming a
//! `Job-UUID`, later a BACKGROUND_JOB event carrying the result), and receives
//! `text/event-plain` events. A `text/disconnect-notice` announces the end of the connection,
//! a `text/rude-rejection` a refusal by the server's ACL.
//!
//! - [`frame`]: the framer. It owns a connection's read buffer, first proves that a whole
//!   message is buffered (the header block and `Content-Length` bytes of body; no allocation),
//!   and only then parses it into a [`Frame`]. "Incomplete" is a normal state; a malformed or
//!   oversized message is a [`FrameError`] that ends that connection only. Every size is
//!   bounded ([`FrameLimits`]). Event values are URL-decoded lazily, when read.
//! - [`command`]: the commands a client sends ([`Command`]), and the builders for the
//!   `originate` and `callcenter_config` commands pbxlink uses. Every value put into a command
//!   is checked: one that could end its line, its argument or its channel variable is refused
//!   with a [`CommandError`] naming the parameter, and nothing is sent.
//!
//! - [`client`]: [`EslClient`], the inbound client on the PBX-neutral supervision
//!   ([`crate::pbx::connection`]: reconnect with capped jittered backoff, keepalive, half-open
//!   detection, state): auth, the subscription (re-sent after every reconnect), `api`,
//!   `bgapi` matched to its BACKGROUND_JOB by Job-UUID, the calls in progress re-learnt after
//!   every login ([`Resync`]), events fanned out without ever blocking the reader.

pub mod client;
pub mod command;
pub mod frame;

pub use client::{
    ChannelRow, EslAnswer, EslClient, EslError, EslNotice, EslSettings, EslStats, Resync,
};

pub use command::{CallcenterAgentCommand, Command, CommandError, Originate};
pub use frame::{BackgroundJob, Event, Frame, FrameError, FrameLimits, Framer, Headers, Reply};

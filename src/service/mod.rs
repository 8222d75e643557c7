//! Running as a systemd service: the notify protocol (READY, STATUS, WATCHDOG, RELOADING,
//! STOPPING), the liveness of the daemon's tasks, logging to the journal with structured
//! fields, and what a config reload (SIGHUP) can apply live.
//!
//! Everything here is a no-op outside systemd: without `NOTIFY_SOCKET` nothing is sent,
//! without `JOURNAL_STREAM` logs go to stderr.

pub mod health;
pub mod logging;
pub mod notify;
pub mod reload;
pub mod status;

pub use notify::Notifier;

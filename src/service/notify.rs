//! The sd_notify protocol through libsystemd (the `systemd` crate).

use std::time::Duration;

use systemd::daemon::{STATE_READY, STATE_RELOADING, STATE_STATUS, STATE_STOPPING, STATE_WATCHDOG};

/// Talks to the service manager. Sending never fails the daemon: errors are logged once.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// Whether `NOTIFY_SOCKET` was set at start (otherwise every call is a no-op).
    enabled: bool,
}

impl Notifier {
    /// A notifier for this process's service manager, if it has one.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// Whether messages are sent at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `WatchdogSec=` of the unit, when the watchdog is on for this process
    /// (`WATCHDOG_USEC`, and `WATCHDOG_PID` if set is ours).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        match systemd::daemon::watchdog_enabled(false) {
            Ok(0) => None,
            Ok(usec) => Some(Duration::from_micros(usec)),
            Err(e) => {
                tracing::warn!("WATCHDOG_USEC is unusable, watchdog off: {e}");
                None
            }
        }
    }

    fn send(&self, state: &[(&str, &str)]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = systemd::daemon::notify(false, state.iter()) {
            tracing::warn!("sd_notify failed: {e}");
        }
    }

    /// `READY=1` with a first `STATUS=`.
    pub fn ready(&self, status: &str) {
        self.send(&[(STATE_READY, "1"), (STATE_STATUS, status)]);
    }

    /// `RELOADING=1` (SIGHUP received); follow with [`Notifier::ready`].
    pub fn reloading(&self) {
        self.send(&[
            (STATE_RELOADING, "1"),
            (STATE_STATUS, "reloading the configuration"),
        ]);
    }

    /// `STATUS=` line shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[(STATE_STATUS, status)]);
    }

    /// `WATCHDOG=1`: the main loop is alive.
    pub fn watchdog(&self) {
        self.send(&[(STATE_WATCHDOG, "1")]);
    }

    /// `STOPPING=1`: shutdown started.
    pub fn stopping(&self, status: &str) {
        self.send(&[(STATE_STOPPING, "1"), (STATE_STATUS, status)]);
    }
}

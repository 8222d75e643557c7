//! The clocks every source shares: the monotonic clock of live sources, the popup sender
//! and health heartbeats, and the [`TimeWindow`] a CDR's times must fall in.

use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Instant;

/// Milliseconds since the first call in this process, on a monotonic clock (never jumps
/// with the wall clock); shared by live trackers, the popup sender and heartbeats.
pub fn monotonic_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    i64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// The times a CDR may carry: from 2000-01-01 00:00 UTC to one day past the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
}

impl TimeWindow {
    /// How far past the clock a CDR time may be (clock skew between the PBX and this host).
    pub const AHEAD: TimeDelta = TimeDelta::days(1);

    /// The window for lines read at `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            earliest: DateTime::<Utc>::from_timestamp(946_684_800, 0)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            latest: now
                .checked_add_signed(Self::AHEAD)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// The first time accepted (2000-01-01 00:00:00 UTC).
    pub fn earliest(&self) -> DateTime<Utc> {
        self.earliest
    }

    /// The last time accepted.
    pub fn latest(&self) -> DateTime<Utc> {
        self.latest
    }

    /// Whether `t` is inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.earliest <= t && t <= self.latest
    }
}

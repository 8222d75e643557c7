//! The monotonic clock live sources, the popup sender and health heartbeats share.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the first call in this process, on a monotonic clock (never jumps
/// with the wall clock); shared by live trackers, the popup sender and heartbeats.
pub fn monotonic_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    i64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(i64::MAX)
}

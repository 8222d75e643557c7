//! The one retry policy of pbxlink: capped exponential backoff with jitter.
//!
//! Every retry loop uses [`Backoff`]: the outbox delivery workers (per CRM endpoint), agent
//! popups, and the PBX connections (AMI, the FreeSWITCH event socket, through
//! [`crate::pbx::connection`]). The n-th consecutive failure has a *ceiling* of
//! `initial · 2ⁿ⁻¹`, capped at `cap`; the wait is a random time in the upper half of that
//! ceiling, `[ceiling / 2, ceiling]` ("equal jitter"). The lower half bound makes every retry a
//! real backoff (a run of failures never retries at once by chance); the random upper half
//! spreads clients that failed together, so they do not retry in step. A server's
//! `Retry-After` is honoured, but never beyond `cap`: no answer can make pbxlink wait longer
//! than its configured ceiling.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with equal jitter (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub initial: Duration,
    /// Ceiling of every wait (and of a `Retry-After`).
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling of the wait after `failures` consecutive failures (≥ 1; 0 reads as 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The wait after `failures` consecutive failures: a random time in
    /// `[ceiling / 2, ceiling]`, and never less than `retry_after` capped at [`Backoff::cap`].
    pub fn delay(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let ceiling = self.ceiling(failures);
        let jittered = ceiling.mul_f64(rng.random_range(0.5..=1.0));
        match retry_after {
            Some(after) => jittered.max(after.min(self.cap)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(500),
        cap: Duration::from_secs(30),
    };

    #[test]
    fn ceiling_doubles_to_the_cap_and_never_overflows() {
        assert_eq!(B.ceiling(0), Duration::from_millis(500));
        assert_eq!(B.ceiling(1), Duration::from_millis(500));
        assert_eq!(B.ceiling(2), Duration::from_secs(1));
        assert_eq!(
            B.ceiling(7),
            Duration::from_secs(30),
            "500 ms · 64 is capped"
        );
        assert_eq!(B.ceiling(u32::MAX), Duration::from_secs(30));
        let huge = Backoff {
            initial: Duration::MAX,
            cap: Duration::MAX,
        };
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn delay_is_in_the_upper_half_of_the_ceiling() {
        let mut rng = rand::rng();
        for failures in 1..64 {
            let ceiling = B.ceiling(failures);
            for _ in 0..100 {
                let d = B.delay(failures, None, &mut rng);
                assert!(d <= ceiling && d >= ceiling / 2, "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn delay_is_spread_not_fixed() {
        let mut rng = rand::rng();
        let waits: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| B.delay(5, None, &mut rng)).collect();
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let mut rng = rand::rng();
        assert!(B.delay(1, Some(Duration::from_secs(20)), &mut rng) >= Duration::from_secs(20));
        for after in [31, 999_999_999, u64::MAX] {
            let d = B.delay(1, Some(Duration::from_secs(after)), &mut rng);
            assert_eq!(d, Duration::from_secs(30));
        }
        // A Retry-After shorter than the jittered wait does not shorten it.
        assert!(B.delay(6, Some(Duration::ZERO), &mut rng) >= B.ceiling(6) / 2);
    }
}

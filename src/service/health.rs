//! Liveness of the daemon's long-running tasks (delivery workers, popup sender, call tracker,
//! HTTP API, pruning), for `/readyz`, the `STATUS=` line and the watchdog.
//!
//! Each task owns a [`Heartbeat`]. Before every wait it may legitimately spend (idle, backing
//! off, a request in flight) it says how long that can take at most ([`Heartbeat::beat`]); a
//! task whose promise ran out is *stuck*. The supervisor that spawned it marks it *ended*
//! ([`Heartbeat::ended`]) when it returns or panics. A task that never beats (the HTTP server)
//! is alive until it ends.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::call::monotonic_ms;

/// One task's liveness.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    /// Monotonic ms until which the task is known to be alive (`i64::MAX`: never beats).
    alive_until_ms: AtomicI64,
    /// Why the task ended, once it did.
    ended: Mutex<Option<String>>,
}

impl Heartbeat {
    /// The task's name as logs and `/readyz` show it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The task is alive and will beat again within `within`.
    pub fn beat(&self, within: Duration) {
        let within = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        self.alive_until_ms
            .store(monotonic_ms().saturating_add(within), Relaxed);
    }

    /// The task returned or panicked (`why` says which).
    pub fn ended(&self, why: String) {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    /// What is wrong with the task now, if anything.
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = &*self.ended.lock().unwrap_or_else(PoisonError::into_inner) {
            return Some(format!("{} {why}", self.name));
        }
        let late = monotonic_ms().saturating_sub(self.alive_until_ms.load(Relaxed));
        (late > 0).then(|| format!("{} stuck (no heartbeat for {} ms)", self.name, late))
    }
}

/// Every supervised task's heartbeat.
#[derive(Debug, Default)]
pub struct Health {
    beats: Mutex<Vec<Arc<Heartbeat>>>,
}

impl Health {
    /// A heartbeat for a new task, alive until it beats, ends or misses a beat.
    pub fn register(&self, name: &'static str) -> Arc<Heartbeat> {
        let beat = Arc::new(Heartbeat {
            name,
            alive_until_ms: AtomicI64::new(i64::MAX),
            ended: Mutex::new(None),
        });
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(beat.clone());
        beat
    }

    /// One line per task that ended or is stuck; empty when every task is alive.
    pub fn problems(&self) -> Vec<String> {
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|b| b.problem())
            .collect()
    }

    /// The names of the tasks watched.
    pub fn names(&self) -> Vec<&'static str> {
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|b| b.name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_alive_until_it_ends_or_misses_its_promise() {
        let health = Health::default();
        let quiet = health.register("http api");
        let worker = health.register("call_log delivery");
        assert!(health.problems().is_empty());
        worker.beat(Duration::from_secs(60));
        assert!(health.problems().is_empty());
        worker.beat(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let problems = health.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("call_log delivery stuck"),
            "{problems:?}"
        );
        worker.beat(Duration::from_secs(u64::MAX));
        quiet.ended("panicked: boom".into());
        assert_eq!(health.problems(), ["http api panicked: boom"]);
        assert_eq!(health.names(), ["http api", "call_log delivery"]);
    }
}

//! Delivers outbox rows to a CRM endpoint: rate limit, endpoint-wide backoff, and the
//! state transitions pending → delivered | dead.
//!
//! What a response *means* (retry, reject, pause, success) is decided by the CRM client
//! ([`SendOutcome`]); how long to wait after a failure is decided here ([`Backoff`]).
//! While an endpoint fails, the whole endpoint backs off, not each row; a failed row goes
//! behind the rows due now, so one row the CRM keeps refusing never blocks the rest.
//!
//! Crash accounting: a row is marked in flight (committed) before its request is sent and
//! the mark goes with the outcome. A worker starting finds the rows a dead process left in
//! flight, logs each call id (bounded) and counts them as resent after an unclean stop; a
//! request that timed out without an answer is retried and counted as resent after an
//! ambiguous timeout. Every store call runs off the runtime's worker threads.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{Quota, RateLimiter as Governor};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::store::{OutboxRow, ResentCall, ResentReason, Store, StoreError, now_ms};

/// What one delivery attempt came to, as classified by the CRM client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The CRM accepted the row.
    Delivered {
        /// HTTP status.
        status: u16,
        /// The response body (kept for audits).
        response: String,
    },
    /// A transient failure (408, 429, 5xx, timeout, connection error): try again later.
    Retry {
        /// HTTP status, None for transport errors.
        status: Option<u16>,
        /// What happened.
        reason: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The CRM refused this row for good (400, 422, a 200 whose body says `"Status":"Error"`).
    Reject {
        /// HTTP status.
        status: u16,
        /// Why, with the response body.
        reason: String,
    },
    /// The CRM refused our credentials or URL (401, 403, 404): pause, lose nothing.
    Pause {
        /// HTTP status.
        status: u16,
        /// Why.
        reason: String,
    },
}

/// How a transport error that is a timeout begins its reason (the CRM client's wording:
/// `timed out: ...`).
pub const TIMED_OUT: &str = "timed out";

impl SendOutcome {
    /// Whether the request may have reached the CRM although no answer came: it timed out
    /// after it was sent (the CRM may have logged the call and stalled). Sending it again
    /// may log the call twice, so it is counted as resent after an ambiguous timeout.
    pub fn is_ambiguous_timeout(&self) -> bool {
        matches!(self, SendOutcome::Retry { status: None, reason, .. } if reason.starts_with(TIMED_OUT))
    }

    /// The HTTP status of the answer, None when none came (or the row never left).
    pub fn status(&self) -> Option<u16> {
        match self {
            SendOutcome::Delivered { status, .. }
            | SendOutcome::Reject { status, .. }
            | SendOutcome::Pause { status, .. } => Some(*status).filter(|s| *s != 0),
            SendOutcome::Retry { status, .. } => *status,
        }
    }
}

/// Sends one outbox row to the CRM.
pub trait Sender: Send + Sync + 'static {
    /// Sends and classifies the answer. Never panics on a bad answer.
    fn send(&self, row: &OutboxRow) -> impl Future<Output = SendOutcome> + Send;
}

pub use crate::backoff::Backoff;

/// `Instant::now() + wait`, saturating (a year ahead at most) instead of panicking.
pub fn deadline_after(wait: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 86_400);
    let now = Instant::now();
    now.checked_add(wait.min(FAR)).unwrap_or(now)
}

/// Runs a store call (synchronous SQLite, which may wait up to the busy timeout on a store
/// locked by another process) so that it does not hold a thread of the multi-thread runtime:
/// the HTTP API, the timers and the other workers keep running. On a current-thread runtime
/// (unit tests) it simply runs `f`.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Rows found in flight at a start that are logged one by one; the rest are summarised.
const RESENT_LOGGED: usize = 20;

/// How long a worker may go between heartbeats while idle or backing off.
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Slack on every heartbeat promise (a busy machine, the rate limiter's queue).
const BEAT_SLACK: Duration = Duration::from_secs(30);

/// A clock for the rate limiter that follows tokio's clock, so paused-time tests hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

/// Client-side rate limit shared by everything that calls one CRM (GCRA, via `governor`).
pub struct RateLimiter {
    inner: Governor<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        TokioClock,
        governor::middleware::NoOpMiddleware<std::time::Instant>,
    >,
    /// Urgent requests (agent popups) waiting: ordinary ones hold back while any wait.
    urgent_waiting: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimiter")
    }
}

/// How much wider than `period / requests` the limiter spaces requests: 1.5 % (25 per 5 s:
/// 203 ms apart; 26 requests span 5.08 s, and a 5-minute drain sends 1,478 of 1,500).
pub const SPACING_MARGIN: f64 = 0.015;

impl RateLimiter {
    /// At most `requests` in any sliding window of `period`, and exactly that rate while a
    /// backlog drains (25 per 5 s: 1,500 requests in 5 minutes).
    ///
    /// GCRA admits `burst + window / interval` requests in any window. Any burst above one
    /// would have to be paid for with a slower steady rate (a burst of 5 left 20 per 5 s:
    /// 1,200 in 5 minutes, 20 % under the limit), so requests are spaced evenly,
    /// `period / requests` apart, plus [`SPACING_MARGIN`] so that the CRM, counting arrivals
    /// that the network delayed unevenly, never sees `requests + 1` inside one `period`.
    pub fn new(requests: u32, period: Duration) -> Self {
        let requests = requests.max(1);
        let interval =
            (period.mul_f64(1.0 + SPACING_MARGIN) / requests).max(Duration::from_micros(1));
        let burst = NonZeroU32::MIN;
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Self {
            inner: Governor::direct_with_clock(quota, TokioClock),
            urgent_waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Waits until one more request is allowed, and takes it; yields to urgent requests.
    pub async fn acquire(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            if self.urgent_waiting.load(SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            match self.inner.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
        }
    }

    /// Like [`RateLimiter::acquire`], ahead of every ordinary request waiting.
    pub async fn acquire_urgent(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.urgent_waiting.fetch_add(1, SeqCst);
        loop {
            match self.inner.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
        }
        self.urgent_waiting.fetch_sub(1, SeqCst);
    }
}

/// Settings of one delivery worker.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Which outbox rows (kind) this worker delivers.
    pub kind: &'static str,
    /// Endpoint name used in the store's endpoint state and logs.
    pub endpoint: &'static str,
    /// Backoff after transient failures.
    pub backoff: Backoff,
    /// Pause after 401/403/404.
    pub pause: Duration,
    /// How often to look for due rows when nothing wakes the worker.
    pub idle_poll: Duration,
    /// The longest one attempt may take (the request timeout): the heartbeat promise made
    /// before each request, plus slack.
    pub attempt_timeout: Duration,
}

/// Counts what the worker did, for logs, tests and metrics.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Rows delivered.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Attempts that will be retried.
    pub retried: std::sync::atomic::AtomicU64,
    /// Rows dead-lettered.
    pub dead: std::sync::atomic::AtomicU64,
    /// Pauses after 401/403/404.
    pub paused: std::sync::atomic::AtomicU64,
    /// Answers by HTTP status ("200", "429", ...; "none" when no answer came).
    responses: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl DeliveryStats {
    /// Counts one attempt's answer.
    pub fn count_response(&self, status: Option<u16>) {
        let key = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
        *self
            .responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
    }

    /// Attempts so far by HTTP status.
    pub fn responses(&self) -> Vec<(String, u64)> {
        self.responses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Delivers the rows of one kind to one endpoint until shut down.
pub struct DeliveryWorker<S: Sender> {
    store: Arc<Store>,
    sender: S,
    settings: DeliverySettings,
    limiter: Arc<RateLimiter>,
    wake: Arc<Notify>,
    stats: Arc<DeliveryStats>,
    consecutive_failures: u32,
    blocked_until: Option<Instant>,
    heartbeat: Option<Arc<crate::service::health::Heartbeat>>,
    /// Whether a full disk was logged since the last write that went through.
    full_logged: bool,
}

impl<S: Sender> DeliveryWorker<S> {
    /// A worker; `wake` is notified whenever new rows are enqueued.
    pub fn new(
        store: Arc<Store>,
        sender: S,
        settings: DeliverySettings,
        limiter: Arc<RateLimiter>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            sender,
            settings,
            limiter,
            wake,
            stats: Arc::default(),
            consecutive_failures: 0,
            blocked_until: None,
            heartbeat: None,
            full_logged: false,
        }
    }

    /// Beats `heartbeat` while the worker runs: at least every second while idle or backing
    /// off, and before each request with the request's timeout as the promise.
    pub fn with_heartbeat(mut self, heartbeat: Arc<crate::service::health::Heartbeat>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    fn beat(&self, within: Duration) {
        if let Some(h) = &self.heartbeat {
            h.beat(within.saturating_add(BEAT_SLACK));
        }
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<DeliveryStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` becomes true. A request in flight is finished first.
    ///
    /// First, the rows of this worker's kind that the last process left in flight are
    /// recovered: reported (one line per call id, the first [`RESENT_LOGGED`], then one
    /// summary) and counted as resent after an unclean stop; they are sent again.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let kind = self.settings.kind;
        let recovered =
            off_the_runtime(|| self.until_stored(|store| store.recover_in_flight(kind)))?;
        report_unclean_stop(self.settings.endpoint, &recovered);
        while !*shutdown.borrow() {
            if let Some(until) = self.blocked_until {
                // Backing off is being alive: beat every second until the wait is over.
                self.beat(BEAT_EVERY);
                let step = until.min(deadline_after(BEAT_EVERY));
                tokio::select! {
                    _ = tokio::time::sleep_until(step) => {}
                    _ = shutdown.changed() => continue,
                }
                if Instant::now() >= until {
                    self.blocked_until = None;
                }
                continue;
            }
            self.beat(self.settings.idle_poll.max(BEAT_EVERY));
            let kind = self.settings.kind;
            let Some(row) = off_the_runtime(|| self.store.next_due(kind, now_ms()))? else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.idle_poll) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            self.beat(self.settings.attempt_timeout);
            self.limiter.acquire().await;
            // Committed before the request leaves: a crash from here on is found at the
            // next start.
            match off_the_runtime(|| self.store.mark_in_flight(row.id)) {
                Ok(()) => {}
                Err(e) if e.is_disk_full() => {
                    // Not sent: nothing was marked. Try again in a second.
                    self.disk_full(&e);
                    self.blocked_until = Some(deadline_after(BEAT_EVERY));
                    continue;
                }
                Err(e) => return Err(e),
            }
            let outcome = self.sender.send(&row).await;
            off_the_runtime(|| self.record(&row, outcome))?;
            self.full_logged = false;
        }
        Ok(())
    }

    /// Logs, once per full-disk episode, that the store refused a delivery's write.
    fn disk_full(&mut self, e: &StoreError) {
        if !self.full_logged {
            tracing::error!(
                endpoint = self.settings.endpoint,
                "the store's disk is full; delivery waits for space to record what it sends \
                 (logged once until a write goes through): {e}"
            );
            self.full_logged = true;
        }
    }

    /// Runs a write that records what the CRM answered; while the store's disk is full it
    /// is tried again every second (the answer must not be forgotten: the row stays marked
    /// in flight meanwhile, so a stop before space returns is reported at the next start).
    fn until_stored<T>(
        &mut self,
        mut write: impl FnMut(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        loop {
            match write(&self.store) {
                Err(e) if e.is_disk_full() => {
                    self.disk_full(&e);
                    self.beat(BEAT_EVERY);
                    std::thread::sleep(BEAT_EVERY);
                }
                other => return other,
            }
        }
    }

    fn record(&mut self, row: &OutboxRow, outcome: SendOutcome) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let endpoint = self.settings.endpoint;
        self.stats.count_response(outcome.status());
        let ambiguous = outcome.is_ambiguous_timeout();
        match outcome {
            SendOutcome::Delivered { status, response } => {
                self.consecutive_failures = 0;
                self.until_stored(|store| {
                    store.mark_delivered(row.id, endpoint, status, &response)
                })?;
                self.stats.delivered.fetch_add(1, Relaxed);
                tracing::info!(
                    endpoint,
                    call_id = %row.call_id,
                    status,
                    attempts = row.attempts + 1,
                    "delivered"
                );
            }
            SendOutcome::Retry {
                status,
                reason,
                retry_after,
            } => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let delay = self.settings.backoff.delay(
                    self.consecutive_failures,
                    retry_after,
                    &mut rand::rng(),
                );
                self.blocked_until = Some(deadline_after(delay));
                if ambiguous {
                    self.until_stored(|store| {
                        store.mark_retry_ambiguous(row.id, endpoint, &reason)
                    })?;
                    tracing::warn!(
                        endpoint,
                        call_id = %crate::logtext::Escaped(&row.call_id),
                        reason = ResentReason::AmbiguousTimeout.as_str(),
                        "no answer before the timeout: the CRM may have logged the call; \
                         it is sent again ({}, counted in {})",
                        ResentReason::AmbiguousTimeout.describe(),
                        ResentReason::AmbiguousTimeout.counter()
                    );
                } else {
                    self.until_stored(|store| store.mark_retry(row.id, endpoint, status, &reason))?;
                }
                self.stats.retried.fetch_add(1, Relaxed);
                tracing::warn!(
                    endpoint,
                    call_id = %row.call_id,
                    status,
                    failures = self.consecutive_failures,
                    delay_ms = delay.as_millis() as u64,
                    "delivery failed, endpoint backs off: {reason}"
                );
            }
            SendOutcome::Reject { status, reason } => {
                // The endpoint answered; it is up. Only this row is bad.
                self.consecutive_failures = 0;
                self.until_stored(|store| store.mark_dead(row.id, endpoint, status, &reason))?;
                self.stats.dead.fetch_add(1, Relaxed);
                tracing::error!(
                    endpoint,
                    call_id = %row.call_id,
                    status,
                    "CRM rejected the call log; moved to dead letters \
                     (see `pbxlink dead-letter list`): {reason}"
                );
            }
            SendOutcome::Pause { status, reason } => {
                let pause = self.settings.pause;
                self.blocked_until = Some(deadline_after(pause));
                let until =
                    now_ms().saturating_add(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX));
                // The CRM refused the request itself: the row was not logged, it stays pending.
                self.until_stored(|store| store.clear_in_flight(row.id))?;
                self.until_stored(|store| store.mark_paused(endpoint, &reason, until))?;
                self.stats.paused.fetch_add(1, Relaxed);
                tracing::error!(
                    endpoint,
                    status,
                    pause_s = pause.as_secs(),
                    "DELIVERY PAUSED: the CRM refused pbxlink's credentials or URL; \
                     nothing is dropped, check [leadsquared] keys and URLs: {}",
                    crate::logtext::Escaped(&reason)
                );
            }
        }
        Ok(())
    }
}

/// Logs the rows found in flight at a start: one line per call id for the first
/// [`RESENT_LOGGED`], then one line with how many more (all are counted in the store).
fn report_unclean_stop(endpoint: &str, recovered: &[ResentCall]) {
    let reason = ResentReason::UncleanStop;
    for call in recovered.iter().take(RESENT_LOGGED) {
        tracing::warn!(
            endpoint,
            call_id = %crate::logtext::Escaped(&call.call_id),
            reason = reason.as_str(),
            sent_at_ms = call.sent_at,
            "request in flight when pbxlink last stopped uncleanly: the CRM may have logged \
             the call; it is sent again ({}, counted in {})",
            reason.describe(),
            reason.counter()
        );
    }
    if recovered.len() > RESENT_LOGGED {
        tracing::warn!(
            endpoint,
            more = recovered.len() - RESENT_LOGGED,
            total = recovered.len(),
            reason = reason.as_str(),
            "{} more call(s) in flight at the unclean stop are sent again (not listed; \
             counted in {})",
            recovered.len() - RESENT_LOGGED,
            reason.counter()
        );
    }
}

/// `Retry-After` as seconds or an HTTP date, relative to now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::outbox::store::{KIND_CALL_LOG, NewOutboxRow};
    use std::sync::Mutex;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        };
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(2), Duration::from_secs(2));
        assert_eq!(b.ceiling(9), Duration::from_secs(256));
        assert_eq!(b.ceiling(10), Duration::from_secs(300));
        assert_eq!(b.ceiling(1000), Duration::from_secs(300));
        let mut rng = rand::rng();
        for failures in 1..40 {
            let d = b.delay(failures, None, &mut rng);
            assert!(d <= b.ceiling(failures));
        }
        assert!(b.delay(1, Some(Duration::from_secs(30)), &mut rng) >= Duration::from_secs(30));
        // A Retry-After beyond the cap waits the cap, however large.
        for after in [999_999_999, u64::MAX] {
            let d = b.delay(1, Some(Duration::from_secs(after)), &mut rng);
            assert_eq!(d, Duration::from_secs(300));
        }
        let far = deadline_after(Duration::MAX);
        assert!(far > Instant::now());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).expect("date");
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }

    /// A sender that plays a script of outcomes and records when (tokio time) each call came.
    #[derive(Clone)]
    struct Scripted {
        script: Arc<Mutex<Vec<SendOutcome>>>,
        calls: Arc<Mutex<Vec<(Instant, String)>>>,
    }

    impl Sender for Scripted {
        async fn send(&self, row: &OutboxRow) -> SendOutcome {
            self.calls
                .lock()
                .expect("lock")
                .push((Instant::now(), row.call_id.clone()));
            let mut script = self.script.lock().expect("lock");
            if script.is_empty() {
                SendOutcome::Delivered {
                    status: 200,
                    response: "{}".into(),
                }
            } else {
                script.remove(0)
            }
        }
    }

    fn setup(
        outcomes: Vec<SendOutcome>,
        calls: &[&str],
    ) -> (
        tempfile::TempDir,
        Arc<Store>,
        Scripted,
        DeliveryWorker<Scripted>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("open"));
        let rows: Vec<NewOutboxRow> = calls
            .iter()
            .map(|c| NewOutboxRow {
                kind: KIND_CALL_LOG,
                idempotency_key: format!("call_log:{c}"),
                call_id: (*c).into(),
                source: "t".into(),
                body: "{}".into(),
                raw: String::new(),
            })
            .collect();
        store.enqueue(&rows, &[], &[]).expect("enqueue");
        let sender = Scripted {
            script: Arc::new(Mutex::new(outcomes)),
            calls: Arc::default(),
        };
        let worker = DeliveryWorker::new(
            store.clone(),
            sender.clone(),
            DeliverySettings {
                kind: KIND_CALL_LOG,
                endpoint: "call_log",
                backoff: Backoff {
                    initial: Duration::from_secs(1),
                    cap: Duration::from_secs(300),
                },
                pause: Duration::from_secs(60),
                idle_poll: Duration::from_millis(100),
                attempt_timeout: Duration::from_secs(10),
            },
            Arc::new(RateLimiter::new(25, Duration::from_secs(5))),
            Arc::new(Notify::new()),
        );
        (dir, store, sender, worker)
    }

    async fn run_for(worker: DeliveryWorker<Scripted>, time: Duration) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(worker.run(rx));
        tokio::time::sleep(time).await;
        tx.send(true).expect("stop");
        task.await.expect("join").expect("run");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_for_the_whole_endpoint() {
        let (_d, store, sender, worker) = setup(
            vec![SendOutcome::Retry {
                status: Some(429),
                reason: "rate limited".into(),
                retry_after: Some(Duration::from_secs(30)),
            }],
            &["a", "b"],
        );
        let start = Instant::now();
        run_for(worker, Duration::from_secs(120)).await;
        let calls = sender.calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(calls[0].1, "a");
        // No request of any row before the Retry-After deadline.
        assert!(calls[1].0 - start >= Duration::from_secs(30), "{calls:?}");
        assert_eq!(store.status().expect("status").delivered, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_row_is_dead_lettered_and_the_rest_flow() {
        let (_d, store, sender, worker) = setup(
            vec![SendOutcome::Reject {
                status: 400,
                reason: "CallDuration missing".into(),
            }],
            &["bad", "good1", "good2"],
        );
        run_for(worker, Duration::from_secs(5)).await;
        assert_eq!(sender.calls.lock().expect("lock").len(), 3);
        let status = store.status().expect("status");
        assert_eq!((status.delivered, status.dead), (2, 1));
        let dead = store.dead_letters().expect("list");
        assert_eq!(dead[0].call_id, "bad");
        assert_eq!(dead[0].last_status, Some(400));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_backs_off_exponentially_and_loses_nothing() {
        let failures: Vec<SendOutcome> = (0..8)
            .map(|_| SendOutcome::Retry {
                status: Some(503),
                reason: "down".into(),
                retry_after: None,
            })
            .collect();
        let (_d, store, sender, worker) = setup(failures, &["a", "b", "c"]);
        run_for(worker, Duration::from_secs(1200)).await;
        let calls = sender.calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 8 + 3);
        // Attempt n+1 comes no later than the backoff ceiling after attempt n.
        for (n, pair) in calls.windows(2).take(8).enumerate() {
            let gap = pair[1].0 - pair[0].0;
            let ceiling = Duration::from_secs(1 << n).min(Duration::from_secs(300));
            assert!(
                gap <= ceiling + Duration::from_millis(1),
                "gap {n}: {gap:?}"
            );
        }
        assert_eq!(store.status().expect("status").delivered, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn auth_failure_pauses_without_losing_rows() {
        let (_d, store, sender, worker) = setup(
            vec![SendOutcome::Pause {
                status: 401,
                reason: "bad keys".into(),
            }],
            &["a"],
        );
        let start = Instant::now();
        run_for(worker, Duration::from_secs(90)).await;
        let calls = sender.calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 2);
        assert!(calls[1].0 - start >= Duration::from_secs(60));
        let status = store.status().expect("status");
        assert_eq!((status.delivered, status.dead), (1, 0));
    }

    /// A sender whose first request never gets an answer (the process dies meanwhile).
    #[derive(Clone, Default)]
    struct Hangs {
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Sender for Hangs {
        async fn send(&self, row: &OutboxRow) -> SendOutcome {
            self.calls.lock().expect("lock").push(row.call_id.clone());
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_in_flight_when_the_process_died_is_sent_again_and_counted() {
        let (_d, store, sender, worker) = setup(vec![], &["a", "b"]);
        let hangs = Hangs::default();
        let dying = DeliveryWorker::new(
            store.clone(),
            hangs.clone(),
            worker.settings.clone(),
            worker.limiter.clone(),
            worker.wake.clone(),
        );
        let (_tx, rx) = watch::channel(false);
        let task = tokio::spawn(dying.run(rx));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // kill -9: the task is gone with the request in flight, nothing recorded after it.
        task.abort();
        let _ = task.await;
        assert_eq!(*hangs.calls.lock().expect("lock"), ["a"]);
        assert_eq!(store.status().expect("status").in_flight, 1);

        run_for(worker, Duration::from_secs(5)).await;
        let calls: Vec<String> = sender
            .calls
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.1.clone())
            .collect();
        assert_eq!(calls, ["a", "b"], "a sent again, b once");
        let status = store.status().expect("status");
        assert_eq!((status.delivered, status.in_flight), (2, 0));
        assert_eq!(status.resent(ResentReason::UncleanStop), 1);
        assert_eq!(status.resent(ResentReason::AmbiguousTimeout), 0);
        let resent = store.resent_calls(10).expect("resent");
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].call_id, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_without_an_answer_is_retried_and_counted_as_ambiguous() {
        let (_d, store, sender, worker) = setup(
            vec![
                SendOutcome::Retry {
                    status: None,
                    reason: format!("{TIMED_OUT}: operation timed out"),
                    retry_after: None,
                },
                SendOutcome::Retry {
                    status: None,
                    reason: "connection failed: refused".into(),
                    retry_after: None,
                },
            ],
            &["a"],
        );
        run_for(worker, Duration::from_secs(30)).await;
        assert_eq!(sender.calls.lock().expect("lock").len(), 3);
        let status = store.status().expect("status");
        assert_eq!(status.delivered, 1);
        // The refused connection never reached the CRM: only the timeout counts.
        assert_eq!(status.resent(ResentReason::AmbiguousTimeout), 1);
        assert_eq!(status.resent(ResentReason::UncleanStop), 0);
        assert!(
            SendOutcome::Retry {
                status: None,
                reason: format!("{TIMED_OUT}: x"),
                retry_after: None
            }
            .is_ambiguous_timeout()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_requests_go_ahead_of_the_backlog() {
        let limiter = Arc::new(RateLimiter::new(25, Duration::from_secs(5)));
        limiter.acquire().await; // the backlog took the last slot
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (l, o) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                o.lock().expect("lock").push(format!("log{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (l, o) = (limiter.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            l.acquire_urgent().await;
            o.lock().expect("lock").push("popup".into());
        }));
        for t in tasks {
            t.await.expect("join");
        }
        assert_eq!(order.lock().expect("lock")[0], "popup");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_holds_25_per_5_seconds() {
        let keys: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (_d, _store, sender, worker) = setup(vec![], &refs);
        let start = Instant::now();
        run_for(worker, Duration::from_secs(20)).await;
        let calls = sender.calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 60);
        // No sliding 5 s window holds more than 25 requests.
        for window in calls.windows(26) {
            assert!(window[25].0 - window[0].0 >= Duration::from_secs(5));
        }
        // The first at once, then the configured rate less the margin: 5 a second, evenly
        // spaced 203 ms apart.
        assert!(calls[0].0 - start < Duration::from_millis(10));
        let fifty = calls[50].0 - calls[0].0;
        let want = Duration::from_secs(10).mul_f64(1.0 + SPACING_MARGIN);
        assert!(
            fifty >= want && fifty < want + Duration::from_millis(50),
            "50 requests after the first took {fifty:?}, not {want:?}"
        );
        for pair in calls.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= Duration::from_millis(203));
        }
    }
}

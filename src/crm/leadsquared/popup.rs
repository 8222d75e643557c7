//! Sends agent popups the moment a call rings an agent: ahead of any call-log backlog, each
//! on its own (a ring-all queue pops several agents at once), retried only while it is still
//! useful, and dropped (counted, logged) once older than `popup_ttl_ms`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;

use super::LeadSquaredClient;
use crate::outbox::{RateLimiter, SendOutcome};
use crate::pbx::asterisk::live::monotonic_ms;
use crate::pbx::asterisk::tracker::PopupRequest;

/// Counters of the popup path.
#[derive(Debug, Default)]
pub struct PopupStats {
    /// Popups LeadSquared accepted.
    pub sent: AtomicU64,
    /// Popups dropped: too old, or refused for good.
    pub dropped: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Milliseconds from the AMI event to the request leaving, of the last popup.
    pub last_latency_ms: AtomicU64,
    /// The largest such latency seen.
    pub max_latency_ms: AtomicU64,
}

/// Sends popups from a queue.
pub struct PopupSender {
    client: LeadSquaredClient,
    limiter: Arc<RateLimiter>,
    ttl_ms: i64,
    stats: Arc<PopupStats>,
}

impl PopupSender {
    /// A sender sharing the CRM rate limit with the call-log delivery.
    pub fn new(client: LeadSquaredClient, limiter: Arc<RateLimiter>, ttl: Duration) -> Self {
        Self {
            client,
            limiter,
            ttl_ms: ttl.as_millis() as i64,
            stats: Arc::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<PopupStats> {
        self.stats.clone()
    }

    /// Sends every popup that arrives until the queue closes.
    pub async fn run(self, mut queue: mpsc::Receiver<PopupRequest>) {
        let this = Arc::new(self);
        while let Some(popup) = queue.recv().await {
            let this = this.clone();
            tokio::spawn(async move { this.send_one(popup).await });
        }
    }

    async fn send_one(&self, popup: PopupRequest) {
        let body = self.client.format().popup(&popup);
        let mut attempt = 0u32;
        loop {
            let age = monotonic_ms() - popup.event_at_ms;
            if age > self.ttl_ms {
                self.stats.dropped.fetch_add(1, Relaxed);
                tracing::warn!(call_id = %popup.call_id, agent = %popup.agent_extension, age_ms = age, "agent popup dropped: older than popup_ttl_ms");
                return;
            }
            self.limiter.acquire_urgent().await;
            let latency = (monotonic_ms() - popup.event_at_ms).max(0) as u64;
            match self.client.send_popup(&body).await {
                SendOutcome::Delivered { .. } => {
                    self.stats.sent.fetch_add(1, Relaxed);
                    self.stats.last_latency_ms.store(latency, Relaxed);
                    self.stats.max_latency_ms.fetch_max(latency, Relaxed);
                    tracing::info!(call_id = %popup.call_id, agent = %popup.agent_extension, latency_ms = latency, "agent popup sent");
                    return;
                }
                SendOutcome::Retry {
                    reason,
                    retry_after,
                    ..
                } => {
                    attempt += 1;
                    self.stats.retried.fetch_add(1, Relaxed);
                    let wait = retry_after.unwrap_or(Duration::from_millis(
                        200u64.saturating_mul(1 << attempt.min(5)),
                    ));
                    tracing::warn!(call_id = %popup.call_id, "agent popup failed, retrying in {wait:?}: {reason}");
                    tokio::time::sleep(wait).await;
                }
                SendOutcome::Reject { reason, .. } | SendOutcome::Pause { reason, .. } => {
                    self.stats.dropped.fetch_add(1, Relaxed);
                    tracing::error!(call_id = %popup.call_id, agent = %popup.agent_extension, "agent popup refused: {reason}");
                    return;
                }
            }
        }
    }
}

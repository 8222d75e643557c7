//! Sends agent popups the moment a call rings an agent: ahead of any call-log backlog, each
//! on its own (a ring-all queue pops several agents at once), retried only while it is still
//! useful, and dropped (counted, logged) once older than `popup_ttl_ms`. A `Retry-After` never
//! makes a popup wait past its TTL: one that would is dropped at once.
//!
//! The sender beats its [`Heartbeat`] while it waits for popups; a popup task that panics
//! ends [`PopupSender::run`] with an error, so the daemon's supervisor notices.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::LeadSquaredClient;
use super::lead::LeadApi;
use crate::call::{PopupRequest, monotonic_ms};
use crate::outbox::{RateLimiter, SendOutcome};
use crate::service::health::Heartbeat;

/// How often the sender beats its heartbeat while the queue is quiet.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Popup requests in flight at most (more wait in the queue; the TTL still applies).
pub const MAX_IN_FLIGHT: usize = 64;

/// Counters of the popup path.
#[derive(Debug, Default)]
pub struct PopupStats {
    /// Popups LeadSquared accepted.
    pub sent: AtomicU64,
    /// Popups dropped: too old, or refused for good.
    pub dropped: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// The largest such latency seen.
    pub max_latency_ms: AtomicU64,
    /// Lead lookups that gave no single lead (none, several, failed or late).
    pub lookup_misses: AtomicU64,
    /// The last [`RECENT_POPUPS`] popups sent or dropped, newest last (the status page).
    recent: std::sync::Mutex<std::collections::VecDeque<RecentPopup>>,
}

/// Popups [`PopupStats::recent`] remembers.
pub const RECENT_POPUPS: usize = 20;

/// One popup as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentPopup {
    /// When it was sent or dropped (unix ms).
    pub at_ms: i64,
    /// The call's id (bounded).
    pub call_id: String,
    /// The agent's extension (bounded).
    pub agent: String,
    /// PBX event to request leaving, in ms (None: dropped before it was sent).
    pub latency_ms: Option<u64>,
    /// `sent` or why it was dropped (`too old`, `refused`).
    pub outcome: &'static str,
}

impl PopupStats {
    /// The last popups, newest first.
    pub fn recent(&self) -> Vec<RecentPopup> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }

    fn remember(&self, popup: &PopupRequest, latency_ms: Option<u64>, outcome: &'static str) {
        let bounded = |s: &str| s.chars().take(80).collect::<String>();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT_POPUPS {
            recent.pop_front();
        }
        recent.push_back(RecentPopup {
            at_ms: crate::outbox::store::now_ms(),
            call_id: bounded(&popup.call_id),
            agent: bounded(&popup.agent_extension),
            latency_ms,
            outcome,
        });
    }
}

/// Sends popups from a queue.
pub struct PopupSender {
    client: LeadSquaredClient,
    limiter: Arc<RateLimiter>,
    ttl_ms: i64,
    stats: Arc<PopupStats>,
    lead_lookup: Option<(LeadApi, Duration)>,
    heartbeat: Option<Arc<Heartbeat>>,
}

impl PopupSender {
    /// A sender sharing the CRM rate limit with the call-log delivery.
    pub fn new(client: LeadSquaredClient, limiter: Arc<RateLimiter>, ttl: Duration) -> Self {
        Self {
            client,
            limiter,
            ttl_ms: ttl.as_millis() as i64,
            stats: Arc::default(),
            lead_lookup: None,
            heartbeat: None,
        }
    }

    /// Beats `heartbeat` at least every second while [`PopupSender::run`] runs.
    pub fn with_heartbeat(mut self, heartbeat: Arc<Heartbeat>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Adds `LeadId` to each popup when `RetrieveLeadByPhoneNumber` finds exactly one lead
    /// within `deadline` (the popup goes out without it otherwise).
    pub fn with_lead_lookup(mut self, api: LeadApi, deadline: Duration) -> Self {
        self.lead_lookup = Some((api, deadline));
        self
    }

    /// The lead id for the caller, when the lookup is on and answers in time.
    async fn lead_id(&self, popup: &PopupRequest) -> Option<String> {
        let (api, deadline) = self.lead_lookup.as_ref()?;
        let number = popup.lead_number.e164.as_ref()?.to_e164();
        match tokio::time::timeout(*deadline, api.lead_by_phone(&number)).await {
            Ok(Ok(found)) => {
                if found.is_none() {
                    self.stats.lookup_misses.fetch_add(1, Relaxed);
                }
                found
            }
            Ok(Err(e)) => {
                self.stats.lookup_misses.fetch_add(1, Relaxed);
                tracing::warn!(call_id = %popup.call_id, "lead lookup failed; popup without LeadId: {e}");
                None
            }
            Err(_) => {
                self.stats.lookup_misses.fetch_add(1, Relaxed);
                tracing::warn!(call_id = %popup.call_id, "lead lookup took longer than {deadline:?}; popup without LeadId");
                None
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<PopupStats> {
        self.stats.clone()
    }

    /// Sends every popup that arrives until the queue closes: each on its own task (a
    /// ring-all queue pops several agents at once), at most [`MAX_IN_FLIGHT`] at a time.
    /// Returns an error when a popup task panicked.
    pub async fn run(self, mut queue: mpsc::Receiver<PopupRequest>) -> Result<(), String> {
        let this = Arc::new(self);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut tasks = JoinSet::new();
        let mut beat = tokio::time::interval(BEAT_EVERY);
        loop {
            if let Some(h) = &this.heartbeat {
                h.beat(BEAT_EVERY * 5);
            }
            tokio::select! {
                popup = queue.recv() => {
                    let Some(popup) = popup else { break };
                    // The queue is drained at once (a burst never overflows it); each popup
                    // then waits for a slot, still within its TTL.
                    let (this, in_flight) = (this.clone(), in_flight.clone());
                    tasks.spawn(async move {
                        let Ok(_slot) = in_flight.acquire_owned().await else {
                            return;
                        };
                        this.send_one(popup).await;
                    });
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        return Err(format!("a popup task failed: {e}"));
                    }
                }
                _ = beat.tick() => {}
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                return Err(format!("a popup task failed: {e}"));
            }
        }
        Ok(())
    }

    async fn send_one(&self, popup: PopupRequest) {
        let mut body = self.client.format().popup(&popup);
        if let (Some(lead_id), Some(fields)) = (self.lead_id(&popup).await, body.as_object_mut()) {
            fields.insert("LeadId".into(), serde_json::Value::String(lead_id));
        }
        let mut attempt = 0u32;
        loop {
            let age = monotonic_ms() - popup.event_at_ms;
            if age > self.ttl_ms {
                self.stats.dropped.fetch_add(1, Relaxed);
                self.stats.remember(&popup, None, "dropped: too old");
                tracing::warn!(call_id = %popup.call_id, agent = %popup.agent_extension, age_ms = age, "agent popup dropped: older than popup_ttl_ms");
                return;
            }
            self.limiter.acquire_urgent().await;
            let latency = (monotonic_ms() - popup.event_at_ms).max(0) as u64;
            match self.client.send_popup(&body).await {
                SendOutcome::Delivered { .. } => {
                    self.stats.sent.fetch_add(1, Relaxed);
                    self.stats.max_latency_ms.fetch_max(latency, Relaxed);
                    self.stats.remember(&popup, Some(latency), "sent");
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
                    let wait = retry_after.unwrap_or_else(|| {
                        crate::backoff::Backoff {
                            initial: Duration::from_millis(400),
                            cap: Duration::from_millis(6400),
                        }
                        .delay(attempt, None, &mut rand::rng())
                    });
                    let left = self
                        .ttl_ms
                        .saturating_sub(monotonic_ms() - popup.event_at_ms);
                    let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
                    if wait > left {
                        self.stats.dropped.fetch_add(1, Relaxed);
                        self.stats
                            .remember(&popup, None, "dropped: CRM asks to wait past the TTL");
                        tracing::warn!(call_id = %popup.call_id, agent = %popup.agent_extension, "agent popup dropped: the CRM asks to wait {wait:?}, past popup_ttl_ms: {reason}");
                        return;
                    }
                    tracing::warn!(call_id = %popup.call_id, "agent popup failed, retrying in {wait:?}: {reason}");
                    tokio::time::sleep(wait).await;
                }
                SendOutcome::Reject { reason, .. } | SendOutcome::Pause { reason, .. } => {
                    self.stats.dropped.fetch_add(1, Relaxed);
                    self.stats
                        .remember(&popup, Some(latency), "refused by the CRM");
                    tracing::error!(call_id = %popup.call_id, agent = %popup.agent_extension, "agent popup refused: {reason}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::crm::leadsquared::standin::{Expectations, StandIn};
    use crate::phone::PhoneNormalizer;
    use serde_json::json;

    async fn setup(lead_lookup: bool) -> (StandIn, PopupSender) {
        let crm = StandIn::start(
            "127.0.0.1:0".parse().expect("addr"),
            Expectations {
                url_key: "k".into(),
                access_keys: Some(("ak".into(), "sk".into())),
                reject_call_ids: vec![],
            },
        )
        .await
        .expect("stand-in");
        let config = Config::parse(&format!(
            "[leadsquared]\ncall_log_url = {:?}\nagent_popup_url = {:?}\napi_host = {:?}\n\
             access_key = \"ak\"\nsecret_key = \"sk\"\ndefault_country_code = \"91\"\n\
             [asterisk]\ncdr_csv = \"/x\"\n",
            crm.call_log_url(),
            crm.agent_popup_url(),
            crm.api_host()
        ))
        .expect("config");
        let client =
            LeadSquaredClient::new(&config, config.credentials().expect("keys")).expect("client");
        let mut sender = PopupSender::new(
            client,
            Arc::new(RateLimiter::new(25, Duration::from_secs(5))),
            Duration::from_secs(30),
        );
        if lead_lookup {
            let deadline = Duration::from_secs(2);
            sender =
                sender.with_lead_lookup(LeadApi::new(&config, deadline).expect("api"), deadline);
        }
        (crm, sender)
    }

    fn popup(caller: &str) -> PopupRequest {
        let n = PhoneNormalizer::new("91").expect("India");
        PopupRequest {
            call_id: "1700000000.7".into(),
            lead_number: crate::call::Number {
                raw: caller.into(),
                e164: n.normalize(caller),
            },
            agent_extension: "100".into(),
            agent: None,
            display_number: Some(crate::call::Number {
                raw: "918044556677".into(),
                e164: n.normalize("918044556677"),
            }),
            tag: None,
            event_at_ms: monotonic_ms(),
        }
    }

    #[tokio::test]
    async fn lead_id_added_only_when_exactly_one_lead_matches() {
        let (crm, sender) = setup(true).await;
        crm.set_leads(
            "919611795983",
            vec![json!({"ProspectID": "p-1", "FirstName": "Ravi"})],
        );
        crm.set_leads(
            "919611795984",
            vec![json!({"ProspectID": "p-2"}), json!({"ProspectID": "p-3"})],
        );
        sender.send_one(popup("+919611795983")).await;
        sender.send_one(popup("09611795984")).await;
        sender.send_one(popup("+919611795985")).await;
        let popups = crm.accepted_popups();
        assert_eq!(popups.len(), 3, "{:?}", crm.received());
        assert_eq!(popups[0]["LeadId"], "p-1");
        assert!(
            popups[1].get("LeadId").is_none(),
            "two leads: {}",
            popups[1]
        );
        assert!(popups[2].get("LeadId").is_none(), "no lead: {}", popups[2]);
        assert_eq!(sender.stats().lookup_misses.load(Relaxed), 2);
        assert_eq!(sender.stats().sent.load(Relaxed), 3);
    }

    #[tokio::test]
    async fn no_lookup_by_default_and_stale_popups_are_dropped() {
        let (crm, sender) = setup(false).await;
        sender.send_one(popup("+919611795983")).await;
        let mut old = popup("+919611795983");
        old.event_at_ms -= 31_000;
        sender.send_one(old).await;
        assert_eq!(crm.accepted_popups().len(), 1);
        assert!(crm.received().iter().all(|r| r.endpoint == "agent_popup"));
        assert_eq!(sender.stats().dropped.load(Relaxed), 1);
    }
}

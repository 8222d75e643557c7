//! `GET /metrics`: the daemon's figures in the Prometheus text format.
//!
//! Nothing is counted twice: each component keeps its own counters and registers a
//! [`MetricsSource`] with [`Metrics`] when the daemon builds it (the delivery workers, the
//! popup sender, the HTTP API and its connections, each PBX connection and live tracker);
//! a scrape asks each to write its figures into one [`Scrape`] and encodes it. The outbox's
//! figures come from one store query per scrape, read off the async worker threads; its
//! persistent counters carry a `source` label when a source claimed them (the CDR
//! counters: `source="asterisk-cdr"`). There is no background collection.
//!
//! This module names no component: components depend on it, never the other way round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::crm::leadsquared::popup::PopupStats;
use crate::outbox::store::{StatusReport, now_ms};
use crate::outbox::{DeliveryStats, Store};

type Labels = Vec<(String, String)>;

/// A component's figures: written into every scrape.
pub trait MetricsSource: Send + Sync {
    /// Writes this component's figures, read now, into `scrape`.
    fn write(&self, scrape: &mut Scrape);
}

/// One scrape being written: metric names get the `pbxlink_` prefix; components that write
/// the same family (e.g. two delivery workers, `pbxlink_deliveries`) share it, each adding
/// its own label values.
pub struct Scrape {
    registry: Registry,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    gauges: HashMap<&'static str, Family<Labels, Gauge>>,
}

impl Default for Scrape {
    fn default() -> Self {
        Self {
            registry: Registry::with_prefix("pbxlink"),
            counters: HashMap::new(),
            gauges: HashMap::new(),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Scrape {
    /// Adds `value` to the counter `name` (exposed as `pbxlink_{name}_total`) with `labels`;
    /// the family is registered with `help` the first time.
    pub fn counter_with(
        &mut self,
        name: &'static str,
        help: &str,
        pairs: &[(&str, &str)],
        value: u64,
    ) {
        let registry = &mut self.registry;
        let family = self.counters.entry(name).or_insert_with(|| {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        });
        family.get_or_create(&labels(pairs)).inc_by(value);
    }

    /// Sets the gauge `name` with `labels` to `value`.
    pub fn gauge_with(
        &mut self,
        name: &'static str,
        help: &str,
        pairs: &[(&str, &str)],
        value: i64,
    ) {
        let registry = &mut self.registry;
        let family = self.gauges.entry(name).or_insert_with(|| {
            let family = Family::<Labels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        });
        family.get_or_create(&labels(pairs)).set(value);
    }

    /// A counter without labels (`pbxlink_{name}_total`).
    pub fn counter(&mut self, name: &'static str, help: &str, value: u64) {
        let c = Counter::<u64, AtomicU64>::default();
        c.inc_by(value);
        self.registry.register(name, help, c);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &'static str, help: &str, value: i64) {
        let g = Gauge::<i64, AtomicI64>::default();
        g.set(value);
        self.registry.register(name, help, g);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        text
    }
}

/// The figures a scrape reads: the outbox's, and every registered component's.
#[derive(Default)]
pub struct Metrics {
    /// The outbox.
    store: Option<Arc<Store>>,
    /// Every component's figures, in the order they were registered.
    sources: Mutex<Vec<Arc<dyn MetricsSource>>>,
    /// The outbox's persistent counters a source claimed: counter name → `source` label.
    counter_sources: Mutex<HashMap<String, String>>,
}

impl Metrics {
    /// The figures of `store` (None: no outbox figures), and of the sources registered later.
    pub fn new(store: Option<Arc<Store>>) -> Self {
        Self {
            store,
            ..Self::default()
        }
    }

    /// Adds a component's figures to every scrape from now on.
    pub fn register(&self, source: Arc<dyn MetricsSource>) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
    }

    /// The outbox's persistent counters `names` come from `source` (e.g. the CDR counters
    /// from `asterisk-cdr`): they are exposed with that `source` label.
    pub fn label_store_counters(&self, source: &str, names: &[&str]) {
        let mut claimed = self
            .counter_sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for name in names {
            claimed.insert((*name).to_owned(), source.to_owned());
        }
    }

    /// The text exposition of every figure, read now.
    pub async fn render(&self) -> String {
        let report = match &self.store {
            Some(store) => {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.status()).await {
                    Ok(Ok(report)) => Some(report),
                    Ok(Err(e)) => {
                        tracing::warn!("metrics: store unreadable: {e}");
                        None
                    }
                    Err(e) => {
                        tracing::warn!("metrics: store task failed: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        self.encode(report.as_ref(), now_ms())
    }

    fn encode(&self, report: Option<&StatusReport>, now: i64) -> String {
        let mut scrape = Scrape::default();
        if let Some(r) = report {
            let claimed = self
                .counter_sources
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            outbox_metrics(&mut scrape, r, &claimed, now);
        }
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for source in sources {
            source.write(&mut scrape);
        }
        scrape.encode()
    }
}

fn outbox_metrics(
    scrape: &mut Scrape,
    r: &StatusReport,
    claimed: &HashMap<String, String>,
    now: i64,
) {
    for (state, n) in [
        ("pending", r.pending),
        ("delivered", r.delivered),
        ("dead", r.dead),
        ("staged", r.staged),
    ] {
        scrape.gauge_with(
            "outbox_rows",
            "Outbox rows by state",
            &[("state", state)],
            i64::try_from(n).unwrap_or(i64::MAX),
        );
    }
    for reason in crate::outbox::store::ResentReason::ALL {
        scrape.counter_with(
            "outbox_resent",
            "Call logs posted again because their first request may have reached the CRM \
             (in flight at an unclean stop, or timed out without an answer); each is logged \
             with its call id",
            &[("reason", reason.as_str())],
            r.resent(reason),
        );
    }
    scrape.gauge(
        "outbox_oldest_pending_age_seconds",
        "Age of the oldest pending row (0 when none)",
        r.oldest_pending_at.map_or(0, |t| (now - t).max(0) / 1000),
    );
    scrape.gauge(
        "last_delivery_timestamp_seconds",
        "Unix time of the last successful delivery (0: none yet)",
        r.last_delivery_at.map_or(0, |t| t / 1000),
    );
    scrape.gauge(
        "delivery_paused",
        "1 while delivery is paused after the CRM refused the credentials or URL",
        i64::from(r.paused_until.is_some_and(|t| t > now)),
    );
    for (name, value) in &r.counters {
        let value = u64::try_from(*value).unwrap_or(0);
        let help = "Persistent counters of the pipeline (cdr_parse_errors, duplicates, ...), \
                    with the source that counts them";
        match claimed.get(name) {
            Some(source) => {
                scrape.counter_with("events", help, &[("name", name), ("source", source)], value)
            }
            None => scrape.counter_with("events", help, &[("name", name)], value),
        }
    }
}

/// A delivery worker's figures, under its endpoint's name.
pub struct DeliveryMetrics {
    /// The endpoint label (`call_log`, `disposition_update`).
    pub endpoint: &'static str,
    /// The worker's counters.
    pub stats: Arc<DeliveryStats>,
}

impl MetricsSource for DeliveryMetrics {
    fn write(&self, scrape: &mut Scrape) {
        let endpoint = self.endpoint;
        for (outcome, value) in [
            ("delivered", &self.stats.delivered),
            ("retried", &self.stats.retried),
            ("dead", &self.stats.dead),
            ("paused", &self.stats.paused),
        ] {
            scrape.counter_with(
                "deliveries",
                "Delivery attempts by endpoint and outcome (delivered, retried, dead, paused)",
                &[("endpoint", endpoint), ("outcome", outcome)],
                value.load(Relaxed),
            );
        }
        for (status, n) in self.stats.responses() {
            scrape.counter_with(
                "crm_responses",
                "CRM answers by endpoint and HTTP status (none: no answer)",
                &[("endpoint", endpoint), ("status", &status)],
                n,
            );
        }
    }
}

/// The popup sender's figures.
impl MetricsSource for PopupStats {
    fn write(&self, scrape: &mut Scrape) {
        for (outcome, value) in [
            ("sent", &self.sent),
            ("dropped", &self.dropped),
            ("retried", &self.retried),
        ] {
            scrape.counter_with(
                "popups",
                "Agent popups by outcome (sent, dropped, retried)",
                &[("outcome", outcome)],
                value.load(Relaxed),
            );
        }
        scrape.counter(
            "lead_lookup_misses",
            "Popup lead lookups that found no single lead (none, several, failed or late)",
            self.lookup_misses.load(Relaxed),
        );
        scrape.gauge(
            "popup_latency_max_ms",
            "Largest time from the PBX event to the popup request leaving",
            i64::try_from(self.max_latency_ms.load(Relaxed)).unwrap_or(i64::MAX),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_every_family_with_its_labels() {
        let delivery = Arc::new(DeliveryStats::default());
        delivery.delivered.store(7, Relaxed);
        delivery.count_response(Some(200));
        delivery.count_response(Some(429));
        delivery.count_response(None);
        let updates = Arc::new(DeliveryStats::default());
        updates.dead.store(1, Relaxed);
        let popups = Arc::new(PopupStats::default());
        popups.sent.store(3, Relaxed);
        popups.dropped.store(1, Relaxed);
        let metrics = Metrics::default();
        metrics.register(Arc::new(DeliveryMetrics {
            endpoint: "call_log",
            stats: delivery,
        }));
        metrics.register(Arc::new(DeliveryMetrics {
            endpoint: "disposition_update",
            stats: updates,
        }));
        metrics.register(popups);
        metrics.label_store_counters("asterisk-cdr", &["cdr_parse_errors"]);
        let report = StatusReport {
            pending: 2,
            delivered: 5,
            oldest_pending_at: Some(1_000),
            counters: vec![
                ("cdr_parse_errors".into(), 4),
                ("duplicate_calls".into(), 1),
            ],
            ..StatusReport::default()
        };
        let text = metrics.encode(Some(&report), 61_000);
        for line in [
            "pbxlink_outbox_rows{state=\"pending\"} 2",
            "pbxlink_outbox_rows{state=\"delivered\"} 5",
            "pbxlink_outbox_oldest_pending_age_seconds 60",
            "pbxlink_events_total{name=\"cdr_parse_errors\",source=\"asterisk-cdr\"} 4",
            "pbxlink_events_total{name=\"duplicate_calls\"} 1",
            "pbxlink_deliveries_total{endpoint=\"call_log\",outcome=\"delivered\"} 7",
            "pbxlink_deliveries_total{endpoint=\"disposition_update\",outcome=\"dead\"} 1",
            "pbxlink_crm_responses_total{endpoint=\"call_log\",status=\"429\"} 1",
            "pbxlink_crm_responses_total{endpoint=\"call_log\",status=\"none\"} 1",
            "pbxlink_popups_total{outcome=\"sent\"} 3",
            "pbxlink_popups_total{outcome=\"dropped\"} 1",
            "pbxlink_lead_lookup_misses_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        // Two workers share one family: it is declared once.
        assert_eq!(
            text.matches("# TYPE pbxlink_deliveries counter").count(),
            1,
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn without_a_store_or_components_a_scrape_is_empty_but_valid() {
        assert_eq!(Metrics::default().encode(None, 0), "# EOF\n");
    }
}

//! `GET /metrics`: the daemon's figures in the Prometheus text format.
//!
//! Nothing is counted twice: each component keeps its own counters (the store, the delivery
//! workers, the AMI client, the call tracker, the popup sender, the HTTP API) and a scrape
//! reads them all into a fresh `prometheus-client` registry and encodes it. A scrape costs
//! one store query; there is no background collection.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::crm::leadsquared::popup::PopupStats;
use crate::http::{ApiStats, ConnectionStats};
use crate::outbox::store::{StatusReport, now_ms};
use crate::outbox::{DeliveryStats, Store};
use crate::pbx::asterisk::ami::{AmiClient, AmiStats};
use crate::pbx::asterisk::live::LiveStats;

type Labels = Vec<(String, String)>;

/// The counters a scrape reads. Parts the configuration leaves out stay `None`.
#[derive(Default)]
pub struct Metrics {
    /// The outbox.
    pub store: Option<Arc<Store>>,
    /// Each delivery worker's endpoint name and counters.
    pub deliveries: Vec<(&'static str, Arc<DeliveryStats>)>,
    /// The AMI connection.
    pub ami: Option<AmiClient>,
    /// The live call tracker.
    pub live: Option<Arc<LiveStats>>,
    /// The popup sender.
    pub popups: Option<Arc<PopupStats>>,
    /// The HTTP API (set once its state exists).
    pub api: OnceLock<Arc<ApiStats>>,
    /// The HTTP API's connections (set once its listener exists).
    pub http_connections: OnceLock<Arc<ConnectionStats>>,
}

/// Registers a counter family and returns it.
fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    reg.register(name, help, family.clone());
    family
}

fn counter(reg: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64, AtomicU64>::default();
    c.inc_by(value);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64, AtomicI64>::default();
    g.set(value);
    reg.register(name, help, g);
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Metrics {
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
        let ami = self.ami.as_ref().map(AmiClient::stats);
        self.encode(report.as_ref(), ami.as_ref(), now_ms())
    }

    fn encode(&self, report: Option<&StatusReport>, ami: Option<&AmiStats>, now: i64) -> String {
        let mut reg = Registry::with_prefix("pbxlink");
        if let Some(r) = report {
            outbox_metrics(&mut reg, r, now);
        }
        let outcomes = counter_family(
            &mut reg,
            "deliveries",
            "Delivery attempts by endpoint and outcome (delivered, retried, dead, paused)",
        );
        let responses = counter_family(
            &mut reg,
            "crm_responses",
            "CRM answers by endpoint and HTTP status (none: no answer)",
        );
        for (endpoint, stats) in &self.deliveries {
            for (outcome, value) in [
                ("delivered", &stats.delivered),
                ("retried", &stats.retried),
                ("dead", &stats.dead),
                ("paused", &stats.paused),
            ] {
                outcomes
                    .get_or_create(&labels(&[("endpoint", endpoint), ("outcome", outcome)]))
                    .inc_by(value.load(Relaxed));
            }
            for (status, n) in stats.responses() {
                responses
                    .get_or_create(&labels(&[("endpoint", endpoint), ("status", &status)]))
                    .inc_by(n);
            }
        }
        if let Some(popups) = &self.popups {
            let family = counter_family(
                &mut reg,
                "popups",
                "Agent popups by outcome (sent, dropped, retried)",
            );
            for (outcome, value) in [
                ("sent", &popups.sent),
                ("dropped", &popups.dropped),
                ("retried", &popups.retried),
            ] {
                family
                    .get_or_create(&labels(&[("outcome", outcome)]))
                    .inc_by(value.load(Relaxed));
            }
            counter(
                &mut reg,
                "lead_lookup_misses",
                "Popup lead lookups that found no single lead (none, several, failed or late)",
                popups.lookup_misses.load(Relaxed),
            );
            gauge(
                &mut reg,
                "popup_latency_max_ms",
                "Largest time from the AMI event to the popup request leaving",
                popups.max_latency_ms.load(Relaxed) as i64,
            );
        }
        if let Some(ami) = ami {
            ami_metrics(&mut reg, ami);
        }
        if let Some(live) = &self.live {
            counter(
                &mut reg,
                "ami_calls_logged",
                "Call logs enqueued from AMI events",
                live.calls_enqueued.load(Relaxed),
            );
            counter(
                &mut reg,
                "ami_calls_expired",
                "Calls forgotten by the tracker without a hangup",
                live.calls_expired.load(Relaxed),
            );
            counter(
                &mut reg,
                "ami_events_lagged",
                "AMI events the call tracker missed (it fell behind)",
                live.events_lagged.load(Relaxed),
            );
            counter(
                &mut reg,
                "ami_calls_evicted",
                "Calls the AMI call tracker forgot because its table was full",
                live.calls_evicted.load(Relaxed),
            );
            counter(
                &mut reg,
                "popups_overflow",
                "Popups lost because the popup queue was full",
                live.popups_overflow.load(Relaxed),
            );
        }
        if let Some(api) = self.api.get() {
            let family = counter_family(&mut reg, "http_requests", "HTTP API results");
            for (result, value) in [
                ("call_placed", &api.calls_placed),
                ("refused", &api.refused),
                ("route_answered", &api.routes_answered),
                ("route_fallback", &api.routes_fallback),
            ] {
                family
                    .get_or_create(&labels(&[("result", result)]))
                    .inc_by(value.load(Relaxed));
            }
        }
        if let Some(conns) = self.http_connections.get() {
            let family = counter_family(
                &mut reg,
                "http_connections",
                "HTTP API connections by what became of them (refused at the cap, shed while quiet, closed idle, TLS failed, accept errors)",
            );
            for (outcome, value) in [
                ("accepted", &conns.accepted),
                ("refused_at_cap", &conns.refused_at_cap),
                ("shed_quiet", &conns.shed_quiet),
                ("idle_closed", &conns.idle_closed),
                ("tls_failed", &conns.tls_failed),
                ("accept_error", &conns.accept_errors),
            ] {
                family
                    .get_or_create(&labels(&[("outcome", outcome)]))
                    .inc_by(value.load(Relaxed));
            }
            gauge(
                &mut reg,
                "http_connections_open",
                "HTTP API connections open now",
                i64::try_from(conns.open.load(Relaxed)).unwrap_or(i64::MAX),
            );
        }
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &reg) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        text
    }
}

fn outbox_metrics(reg: &mut Registry, r: &StatusReport, now: i64) {
    let rows = Family::<Labels, Gauge>::default();
    reg.register("outbox_rows", "Outbox rows by state", rows.clone());
    for (state, n) in [
        ("pending", r.pending),
        ("delivered", r.delivered),
        ("dead", r.dead),
        ("staged", r.staged),
    ] {
        rows.get_or_create(&labels(&[("state", state)]))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    gauge(
        reg,
        "outbox_oldest_pending_age_seconds",
        "Age of the oldest pending row (0 when none)",
        r.oldest_pending_at.map_or(0, |t| (now - t).max(0) / 1000),
    );
    gauge(
        reg,
        "last_delivery_timestamp_seconds",
        "Unix time of the last successful delivery (0: none yet)",
        r.last_delivery_at.map_or(0, |t| t / 1000),
    );
    gauge(
        reg,
        "delivery_paused",
        "1 while delivery is paused after the CRM refused the credentials or URL",
        i64::from(r.paused_until.is_some_and(|t| t > now)),
    );
    let named = counter_family(
        reg,
        "events",
        "Persistent counters of the pipeline (cdr_parse_errors, duplicates, ...)",
    );
    for (name, value) in &r.counters {
        named
            .get_or_create(&labels(&[("name", name)]))
            .inc_by(u64::try_from(*value).unwrap_or(0));
    }
}

fn ami_metrics(reg: &mut Registry, ami: &AmiStats) {
    gauge(
        reg,
        "ami_connected",
        "1 while logged in to the Asterisk Manager Interface",
        i64::from(ami.connected),
    );
    for (name, help, value) in [
        ("ami_logins", "Successful AMI logins", ami.logins),
        (
            "ami_reconnects",
            "AMI logins after the first one",
            ami.reconnects,
        ),
        (
            "ami_connect_failures",
            "AMI connection attempts that failed",
            ami.connect_failures,
        ),
        (
            "ami_half_open_drops",
            "AMI connections dropped as half-open (silent despite pings)",
            ami.half_open_drops,
        ),
        (
            "ami_malformed_frames",
            "AMI connections dropped after a malformed or oversized frame",
            ami.malformed_frames,
        ),
        (
            "ami_refused_actions",
            "AMI actions refused before the wire (CR/LF in a value)",
            ami.refused_actions,
        ),
    ] {
        counter(reg, name, help, value);
    }
    let events = counter_family(reg, "ami_received_events", "AMI events received, by type");
    for (name, n) in &ami.events_by_type {
        events.get_or_create(&labels(&[("event", name)])).inc_by(*n);
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
        let popups = Arc::new(PopupStats::default());
        popups.sent.store(3, Relaxed);
        popups.dropped.store(1, Relaxed);
        let metrics = Metrics {
            deliveries: vec![("call_log", delivery)],
            popups: Some(popups),
            live: Some(Arc::default()),
            ..Metrics::default()
        };
        let _ = metrics.api.set(Arc::default());
        let report = StatusReport {
            pending: 2,
            delivered: 5,
            oldest_pending_at: Some(1_000),
            counters: vec![("cdr_parse_errors".into(), 4)],
            ..StatusReport::default()
        };
        let mut ami = AmiStats {
            connected: true,
            reconnects: 2,
            ..AmiStats::default()
        };
        ami.events_by_type.insert("DialBegin".into(), 9);
        let text = metrics.encode(Some(&report), Some(&ami), 61_000);
        for line in [
            "pbxlink_outbox_rows{state=\"pending\"} 2",
            "pbxlink_outbox_rows{state=\"delivered\"} 5",
            "pbxlink_outbox_oldest_pending_age_seconds 60",
            "pbxlink_events_total{name=\"cdr_parse_errors\"} 4",
            "pbxlink_deliveries_total{endpoint=\"call_log\",outcome=\"delivered\"} 7",
            "pbxlink_crm_responses_total{endpoint=\"call_log\",status=\"429\"} 1",
            "pbxlink_crm_responses_total{endpoint=\"call_log\",status=\"none\"} 1",
            "pbxlink_popups_total{outcome=\"sent\"} 3",
            "pbxlink_popups_total{outcome=\"dropped\"} 1",
            "pbxlink_lead_lookup_misses_total 0",
            "pbxlink_ami_connected 1",
            "pbxlink_ami_reconnects_total 2",
            "pbxlink_ami_received_events_total{event=\"DialBegin\"} 9",
            "pbxlink_http_requests_total{result=\"refused\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

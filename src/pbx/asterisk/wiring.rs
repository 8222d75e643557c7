//! Asterisk's parts for the daemon, built from `[asterisk]`: the CDR file reader (unless
//! `call_log_source = "ami"`), and with `[asterisk.ami]` the AMI connection, its call
//! tracker (popups, and call logs unless `call_log_source = "cdr"`) and the
//! [`AsteriskControl`] click to call and dispositions go through; their figures on
//! `/metrics` (`pbxlink_ami_*`, the CDR counters labelled `source="asterisk-cdr"`), their
//! parts of the `STATUS=` line, the reload of agents into the CDR assembler and the AMI
//! logoff at shutdown. [`crate::pbx::build_parts`] calls [`build`]; nothing else outside
//! `src/pbx/asterisk` names Asterisk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;

use super::AsteriskCdrSource;
use super::ami::{AmiClient, AmiStats};
use super::assemble::AsteriskAssembler;
use super::control::AsteriskControl;
use super::live::{LiveAsterisk, LiveStats};
use crate::call::reconcile::ReconcilingSink;
use crate::call::sink::CallSink;
use crate::config::{CallLogSource, Config};
use crate::metrics::{MetricsSource, Scrape};
use crate::outbox::Store;
use crate::pbx::connection::ConnectionMetricNames;
use crate::pbx::parts::{FileImport, LivePart, PbxContext, PbxParts};
use crate::pipeline::{SourceUpdate, Tailed, counters};

/// The `source` label of the CDR file's counters on `/metrics`.
pub const CDR_SOURCE_LABEL: &str = "asterisk-cdr";

/// Adds the parts `[asterisk]` configures to `parts`.
pub fn build(ctx: &PbxContext<'_>, parts: &mut PbxParts) -> anyhow::Result<()> {
    let Some(ast) = ctx.config.asterisk.as_ref() else {
        return Ok(());
    };
    // "both": the CDR reader and the AMI tracker push into one reconciler.
    let reconciler = (ast.call_log_source == CallLogSource::Both && ast.cdr_csv.is_some())
        .then(|| parts.add_reconciler(ctx, ast.reconcile_wait_ms));
    if ast.cdr_csv.is_some() && ast.call_log_source != CallLogSource::Ami {
        cdr_file(ctx, parts, reconciler.clone())?;
    }
    if let Some(settings) = ast.ami.clone() {
        let secret = settings.resolve_secret()?;
        let ami = AmiClient::spawn(settings, secret);
        let stats = Arc::new(LiveStats::default());
        ctx.metrics.register(Arc::new(AmiMetrics(ami.clone())));
        ctx.metrics.register(Arc::new(LiveMetrics(stats.clone())));
        let live = LiveAsterisk {
            ami: ami.clone(),
            store: ctx.store.clone(),
            enqueue_call_logs: ast.call_log_source != CallLogSource::Cdr,
            wake_delivery: ctx.wake_delivery.clone(),
            call_sink: reconciler.map(|r| r as Arc<dyn CallSink>),
            popups: ctx.popups.clone(),
            config_updates: ctx.config_updates.clone(),
            stats,
        };
        let shutdown = ctx.shutdown.clone();
        parts.add_live(LivePart {
            tracker_name: "AMI call tracker",
            tracker: Box::pin(
                async move { live.run(shutdown).await.map_err(|e| format!("{e:#}")) },
            ),
            control: Arc::new(AsteriskControl::new(
                ami.clone(),
                ast.originate.clone(),
                ast.free_agent,
            )),
            connection: ami.connection(),
        });
    }
    Ok(())
}

/// The reader that tails `[asterisk] cdr_csv`, with its status, reload hook and counters.
fn cdr_file(
    ctx: &PbxContext<'_>,
    parts: &mut PbxParts,
    reconciler: Option<Arc<ReconcilingSink>>,
) -> anyhow::Result<()> {
    let Some(ast) = ctx.config.asterisk.as_ref() else {
        return Ok(());
    };
    let Some(path) = ast.cdr_csv.clone() else {
        return Ok(());
    };
    let (updates_tx, updates) = std::sync::mpsc::channel::<SourceUpdate<AsteriskAssembler>>();
    let source = super::cdr_source(
        ctx.config,
        ctx.store.clone(),
        ctx.wake_delivery.clone(),
        None,
    )?
    .with_updates(updates);
    let tailed = Tailed {
        source,
        poll: Duration::from_millis(ast.poll_interval_ms),
    };
    let sink = reconciler.map(|r| r as Arc<dyn CallSink>);
    parts.add_file_reader("asterisk-cdr", tailed, ctx.config_path, sink);
    let follow_symlink = ast.cdr_follow_symlink;
    parts.status.push(Box::new(move || {
        crate::service::status::cdr_line(&path, follow_symlink)
    }));
    parts
        .reloads
        .push(Box::new(move |config: &Config, directory| {
            let agents = config.agents.len();
            let numbers = config.virtual_numbers.len();
            let directory = directory.clone();
            let update: SourceUpdate<AsteriskAssembler> = Box::new(move |assembler| {
                assembler.set_directory(directory);
                tracing::info!(
                    agents,
                    virtual_numbers = numbers,
                    "CDR source: agents and virtual numbers reloaded"
                );
            });
            if updates_tx.send(update).is_err() {
                tracing::warn!("CDR source is not running; agents not reloaded");
            }
        }));
    ctx.metrics
        .label_store_counters(CDR_SOURCE_LABEL, &counters::FILE_SOURCE);
    Ok(())
}

/// `pbxlink import`: the CDR pipeline reading whole files under `name`.
pub fn import_source(
    config: &Config,
    store: Arc<Store>,
    wake_delivery: Arc<tokio::sync::Notify>,
    name: String,
) -> anyhow::Result<Box<dyn FileImport>> {
    Ok(Box::new(super::cdr_source(
        config,
        store,
        wake_delivery,
        Some(name),
    )?))
}

impl FileImport for AsteriskCdrSource {
    fn import_file(&mut self, path: &Path) -> anyhow::Result<usize> {
        // A FIFO, a device or a refused symbolic link is an error naming the file, never a
        // hang (the file is opened as the daemon opens it).
        Ok(AsteriskCdrSource::import_file(self, path).context("import stopped")??)
    }

    fn report_to(&mut self, progress: Arc<crate::import::ImportProgress>) {
        self.set_progress(Some(progress));
    }
}

/// The AMI connection's figures.
struct AmiMetrics(AmiClient);

impl MetricsSource for AmiMetrics {
    fn write(&self, scrape: &mut Scrape) {
        write_ami_stats(scrape, &self.0.stats());
    }
}

/// The AMI connection's figures, under the names they always had.
const AMI_CONNECTION_METRICS: ConnectionMetricNames = ConnectionMetricNames {
    server: "the Asterisk Manager Interface",
    connected: "ami_connected",
    logins: "ami_logins",
    reconnects: "ami_reconnects",
    connect_failures: "ami_connect_failures",
    half_open_drops: "ami_half_open_drops",
    malformed_frames: "ami_malformed_frames",
};

fn write_ami_stats(scrape: &mut Scrape, ami: &AmiStats) {
    ami.connection
        .write_metrics(scrape, &AMI_CONNECTION_METRICS);
    scrape.counter(
        "ami_refused_actions",
        "AMI actions refused before the wire (CR/LF in a value)",
        ami.refused_actions,
    );
    scrape.counter(
        "ami_reader_waits",
        "Times the AMI reader stopped reading because the call tracker was behind (TCP pushes back on Asterisk; no event is lost)",
        ami.reader_waits,
    );
    scrape.gauge(
        "ami_events_parked_peak",
        "Most AMI events parked at once for a full receiver while an action waited for its answer",
        i64::try_from(ami.events_parked_peak).unwrap_or(i64::MAX),
    );
    for (event, n) in &ami.events_by_type {
        scrape.counter_with(
            "ami_received_events",
            "AMI events received, by type",
            &[("event", event)],
            *n,
        );
    }
}

/// The AMI call tracker's figures.
struct LiveMetrics(Arc<LiveStats>);

impl MetricsSource for LiveMetrics {
    fn write(&self, scrape: &mut Scrape) {
        let live = &self.0;
        for (name, help, value) in [
            (
                "ami_calls_logged",
                "Call logs enqueued from AMI events",
                &live.calls_enqueued,
            ),
            (
                "ami_calls_expired",
                "Calls forgotten by the tracker without a hangup",
                &live.calls_expired,
            ),
            (
                "ami_calls_evicted",
                "Calls the AMI call tracker forgot because its table was full",
                &live.calls_evicted,
            ),
            (
                "popups_overflow",
                "Popups lost because the popup queue was full",
                &live.popups_overflow,
            ),
        ] {
            scrape.counter(name, help, value.load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests;

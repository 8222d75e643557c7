//! What a PBX hands the daemon, whichever PBX it is: the pieces [`super::build_parts`] builds
//! from the configuration and [`crate::daemon`] runs without knowing which PBX they talk to.
//!
//! A PBX contributes, from a [`PbxContext`] (the store, the delivery wake-up, the popup queue,
//! the reload and shutdown channels, the metrics registry):
//! - [`FileSourceRun`]s: blocking readers of the files the PBX writes (CDR files), each on
//!   its own thread with a heartbeat the watchdog checks;
//! - [`PbxTask`]s: async tasks (a live event connection and its call tracker), each
//!   supervised under its name;
//! - at most one [`PbxControl`] (click to call, freeing agents) for the HTTP API;
//! - its figures, registered with [`crate::metrics::Metrics`] while it builds;
//! - parts of the `STATUS=` line, hooks that apply a reloaded configuration, and futures that
//!   close its connections at shutdown.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

use tokio::sync::{Notify, mpsc, watch};

use super::connection::SupervisedConnection;
use super::{PbxControl, PbxFuture};
use crate::call::reconcile::{ReconcileStats, ReconcilingSink};
use crate::call::sink::CallSink;
use crate::call::{Directory, PopupRequest};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsSource, Scrape};
use crate::outbox::Store;
use crate::outbox::store::now_ms;
use crate::pipeline::FileReader;

/// What the daemon gives a PBX's wiring to build its parts with.
pub struct PbxContext<'a> {
    /// The validated configuration.
    pub config: &'a Config,
    /// The file it was loaded from, which logs name in the commands they suggest.
    pub config_path: Option<&'a Path>,
    /// The outbox.
    pub store: Arc<Store>,
    /// Wakes the call-log delivery worker after an enqueue.
    pub wake_delivery: Arc<Notify>,
    /// Where agent popups go (None: `[leadsquared] agent_popup_url` is not set).
    pub popups: Option<mpsc::Sender<PopupRequest>>,
    /// Reloaded configurations (SIGHUP), for tasks that follow them.
    pub config_updates: watch::Receiver<Arc<Config>>,
    /// Turns true when the daemon stops.
    pub shutdown: watch::Receiver<bool>,
    /// Where each component registers its figures.
    pub metrics: &'a Metrics,
}

/// A blocking reader of a file the PBX writes, run on its own thread.
pub struct FileSourceRun {
    /// The thread's name (`asterisk-cdr`).
    pub thread_name: String,
    /// When the reader last went round its loop (unix ms); the watchdog checks it.
    pub heartbeat: Arc<AtomicI64>,
    /// Reads until the flag turns true; an error is the full reason it stopped (logged, and
    /// the daemon exits so that systemd restarts it).
    pub run: Box<dyn FnOnce(Arc<AtomicBool>) -> Result<(), String> + Send>,
}

/// An async task of the PBX, supervised under its name.
pub struct PbxTask {
    /// The name `/readyz`, `STATUS=` and the logs show (`AMI call tracker`).
    pub name: &'static str,
    /// Runs until the context's shutdown turns true; an error says why it stopped.
    pub run: PbxFuture<'static, Result<(), String>>,
}

/// A part of the `STATUS=` line, read each time the line is refreshed (never blocking: no
/// network, no store).
pub type StatusPart = Box<dyn Fn() -> String + Send + Sync>;

/// Applies a reloaded, validated configuration (and the agents and virtual numbers built from
/// it) to a running part.
pub type ReloadHook = Box<dyn Fn(&Config, &Directory) + Send + Sync>;

/// Everything the configured PBX contributes to the daemon.
#[derive(Default)]
pub struct PbxParts {
    /// File readers, each on its own thread.
    pub file_sources: Vec<FileSourceRun>,
    /// Async tasks.
    pub tasks: Vec<PbxTask>,
    /// Click to call and freeing agents (None: no PBX connection to act through).
    pub control: Option<Arc<dyn PbxControl>>,
    /// Whether a part sends agent popups (the daemon runs the popup sender only then).
    pub sends_popups: bool,
    /// Parts of the `STATUS=` line, in order (`CDR ...: readable`, `AMI connected`).
    pub status: Vec<StatusPart>,
    /// What a SIGHUP applies.
    pub reloads: Vec<ReloadHook>,
    /// Closes the PBX's connections at shutdown (each bounded by the daemon).
    pub stops: Vec<PbxFuture<'static, ()>>,
}

/// The live side of a PBX, as [`PbxParts::add_live`] adds it: its call tracker, the control
/// the HTTP API acts through, and its connection.
pub struct LivePart {
    /// The tracker task's name (`AMI call tracker`).
    pub tracker_name: &'static str,
    /// The call tracker: runs until the context's shutdown.
    pub tracker: PbxFuture<'static, Result<(), String>>,
    /// Click to call and freeing agents, through the connection.
    pub control: Arc<dyn PbxControl>,
    /// The connection: its state on the `STATUS=` line, closed at shutdown.
    pub connection: Arc<dyn SupervisedConnection>,
}

impl PbxParts {
    /// Adds `reader` as the thread `thread_name` (see [`FileSourceRun`]), with a fresh
    /// heartbeat, the context's configuration path and `sink` (the reconciler in "both").
    pub fn add_file_reader(
        &mut self,
        thread_name: &str,
        reader: impl FileReader,
        config_path: Option<&Path>,
        sink: Option<Arc<dyn CallSink>>,
    ) {
        let heartbeat = Arc::new(AtomicI64::new(now_ms()));
        let reader = reader.attach(heartbeat.clone(), config_path, sink);
        let what = thread_name.to_owned();
        self.file_sources.push(FileSourceRun {
            thread_name: thread_name.to_owned(),
            heartbeat,
            run: Box::new(move |stop| {
                reader
                    .read_until(stop)
                    .map_err(|e| format!("{what} reader stopped: {e}"))
            }),
        });
    }

    /// Adds `live`: the tracker as a task (it sends popups), the control, the connection's
    /// part of the `STATUS=` line and its close at shutdown.
    pub fn add_live(&mut self, live: LivePart) {
        self.tasks.push(PbxTask {
            name: live.tracker_name,
            run: live.tracker,
        });
        self.sends_popups = true;
        self.control = Some(live.control);
        let connection = live.connection;
        let (state, label) = (connection.state(), connection.name());
        self.status
            .push(Box::new(move || state.borrow().status_line(label)));
        self.stops
            .push(Box::pin(async move { connection.close().await }));
    }

    /// For `call_log_source = "both"`: the reconciler the file source and the live tracker
    /// both push into, which holds a call until its other source reports it (at most
    /// `wait_ms`) and posts it once. Its figures are registered and its task (posting the
    /// calls whose wait ran out) is added.
    pub fn add_reconciler(&mut self, ctx: &PbxContext<'_>, wait_ms: u64) -> Arc<ReconcilingSink> {
        let reconciler = Arc::new(ReconcilingSink::new(
            ctx.store.clone(),
            ctx.wake_delivery.clone(),
            wait_ms,
        ));
        ctx.metrics
            .register(Arc::new(ReconcileMetrics(reconciler.stats())));
        let (task, shutdown) = (reconciler.clone(), ctx.shutdown.clone());
        self.tasks.push(PbxTask {
            name: "call reconciler",
            run: Box::pin(async move {
                task.run(shutdown)
                    .await
                    .map_err(|e| format!("posting held calls failed: {e}"))
            }),
        });
        reconciler
    }
}

/// The "both" reconciler's figures: calls posted merged, or from one source alone.
pub(crate) struct ReconcileMetrics(pub(crate) Arc<ReconcileStats>);

impl MetricsSource for ReconcileMetrics {
    fn write(&self, scrape: &mut Scrape) {
        for (result, value) in self.0.by_result() {
            scrape.counter_with(
                "calls_reconciled",
                "Calls of call_log_source = \"both\" posted merged from the file and the live source, or from one alone (which one was missing)",
                &[("result", result)],
                value,
            );
        }
        scrape.gauge(
            "calls_reconciled_held",
            "Calls held now, waiting for their other source",
            i64::try_from(self.0.held.load(Relaxed)).unwrap_or(i64::MAX),
        );
    }
}

/// A one-shot import of a PBX's file (`pbxlink import`).
pub trait FileImport {
    /// Reads the whole of `path` into the outbox; returns how many new calls were queued.
    fn import_file(&mut self, path: &Path) -> anyhow::Result<usize>;
    /// Every later [`FileImport::import_file`] counts into `progress`: how far into its
    /// input it is, rows, corrupt lines, and calls new, already in the outbox or skipped.
    fn report_to(&mut self, progress: std::sync::Arc<crate::import::ImportProgress>);
}

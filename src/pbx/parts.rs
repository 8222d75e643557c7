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
use std::sync::atomic::{AtomicBool, AtomicI64};

use tokio::sync::{Notify, mpsc, watch};

use super::{PbxControl, PbxFuture};
use crate::call::{Directory, PopupRequest};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbox::Store;

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

/// A one-shot import of a PBX's file (`pbxlink import`).
pub trait FileImport {
    /// Reads the whole of `path` into the outbox; returns how many new calls were queued.
    fn import_file(&mut self, path: &Path) -> anyhow::Result<usize>;
    /// Every later [`FileImport::import_file`] counts into `progress`: how far into its
    /// input it is, rows, corrupt lines, and calls new, already in the outbox or skipped.
    fn report_to(&mut self, progress: std::sync::Arc<crate::import::ImportProgress>);
}

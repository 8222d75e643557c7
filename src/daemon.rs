//! Wires sources, the outbox and delivery into the running daemon (`pbxlink run`), and
//! stops it cleanly: sources first, then delivery after the request in flight. Under
//! systemd it speaks the notify protocol ([`crate::service`]): READY once the store is open
//! and the sources run, STATUS and WATCHDOG from the main loop, RELOADING on SIGHUP,
//! STOPPING on SIGTERM.
//!
//! Every task of the daemon runs under [`supervise`]: one that returns or panics while the
//! daemon is not stopping is logged, marked dead in [`Health`] (so `/readyz` and `STATUS=`
//! name it) and reported on the `fatal` channel, so `pbxlink run` exits non-zero and systemd
//! restarts it (the outbox is durable: nothing is lost). The watchdog is pinged only while
//! every file reader and every task with a heartbeat (delivery workers, popup sender) are alive.
//!
//! The daemon names no PBX: [`crate::pbx::build_parts`] gives it the configured PBX's file
//! readers, tasks, control, status and reload hooks ([`crate::pbx::parts`]), and it runs them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::Config;
use crate::crm::leadsquared::LeadSquaredClient;
use crate::crm::leadsquared::lead::LeadApi;
use crate::crm::leadsquared::popup::PopupSender;
use crate::http::ApiState;
use crate::metrics::{DeliveryMetrics, Metrics};
use crate::outbox::store::KIND_DISPOSITION_UPDATE;
use crate::outbox::{Backoff, DeliverySettings, DeliveryWorker, KIND_CALL_LOG, RateLimiter, Store};
use crate::pbx::PbxFuture;
use crate::pbx::parts::{PbxContext, ReloadHook, StatusPart};
use crate::service::health::{Health, Heartbeat};
use crate::service::{Notifier, reload, status};

/// Keys of compacted delivered rows are kept this long, so re-imports stay deduplicated.
const KEY_RETENTION_DAYS: i64 = 400;
/// Popups waiting to be sent (a burst of ring-all calls); beyond it they are dropped, counted.
const POPUP_QUEUE: usize = 1024;
/// How often delivered rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A running daemon.
pub struct Daemon {
    store: Arc<Store>,
    stop_sources: Arc<AtomicBool>,
    sources: Vec<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    fatal: mpsc::UnboundedReceiver<String>,
    config: Config,
    client: LeadSquaredClient,
    /// When each file reader last went round its loop (unix ms).
    source_heartbeats: Vec<Arc<AtomicI64>>,
    /// The PBX's parts of the `STATUS=` line (shared with the status page).
    pbx_status: Arc<Vec<StatusPart>>,
    /// What a SIGHUP applies to the PBX's parts.
    pbx_reloads: Vec<ReloadHook>,
    /// Closes the PBX's connections at shutdown.
    pbx_stops: Vec<PbxFuture<'static, ()>>,
    /// Hands reloaded configurations to the PBX's live tasks.
    config_tx: watch::Sender<Arc<Config>>,
    /// Every component's counters, for `/metrics`.
    metrics: Arc<Metrics>,
    /// The HTTP API's state, when `[http]` is set (its agents follow reloads).
    api: Option<Arc<ApiState>>,
    /// The liveness of every supervised task.
    health: Arc<Health>,
    /// The status page, when `[http]` is set (it shows the keys a reload could not apply).
    status_page: Option<Arc<crate::http::status::StatusPage>>,
}

/// Runs `task` on its own tokio task and watches it: when it returns (or panics) while
/// `shutdown` is not set, `heartbeat` is marked ended, an error is logged and the reason goes
/// to `fatal`.
fn supervise<F>(
    heartbeat: Arc<Heartbeat>,
    fatal: mpsc::UnboundedSender<String>,
    shutdown: watch::Receiver<bool>,
    task: F,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    tokio::spawn(async move {
        let why = match tokio::spawn(task).await {
            Ok(Ok(())) if *shutdown.borrow() => return,
            Ok(Ok(())) => "ended unexpectedly".to_owned(),
            Ok(Err(e)) => format!("stopped: {e}"),
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                format!("panicked: {}", crate::logtext::Escaped(&text))
            }
            Err(e) => format!("was cancelled: {e}"),
        };
        let name = heartbeat.name();
        heartbeat.ended(why.clone());
        tracing::error!(
            task = name,
            "{name} {why}; pbxlink exits so that systemd restarts it"
        );
        let _ = fatal.send(format!("{name} {why}"));
    })
}

impl Daemon {
    /// Opens the store and starts every configured source and the delivery worker.
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        Self::start_from(config, None).await
    }

    /// [`Daemon::start`] with the path `config` was loaded from, which the logs name in the
    /// commands they suggest (`pbxlink import --config ...`).
    pub async fn start_from(config: &Config, config_path: Option<&Path>) -> anyhow::Result<Daemon> {
        let (path, synchronous) = (config.store.path.clone(), config.store.synchronous);
        let store = Arc::new(
            // The daemon keeps the store's reserve for delivery on a full disk.
            tokio::task::spawn_blocking(move || {
                Store::open(&path, synchronous).inspect(|s| {
                    s.keep_reserve();
                })
            })
            .await
            .context("the task opening the store failed")?
            .context("opening the store")?,
        );
        let credentials = config.credentials()?;
        let client = LeadSquaredClient::new(config, credentials)?;
        let wake = Arc::new(Notify::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let health = Arc::new(Health::default());
        let stop_sources = Arc::new(AtomicBool::new(false));
        let ls = &config.leadsquared;
        let limiter = Arc::new(RateLimiter::new(
            ls.rate_limit_requests,
            Duration::from_millis(ls.rate_limit_period_ms),
        ));
        let backoff = Backoff {
            initial: Duration::from_millis(ls.retry_initial_ms),
            cap: Duration::from_millis(ls.retry_max_ms),
        };
        let metrics = Arc::new(Metrics::new(Some(store.clone())));
        let mut tasks = Vec::new();
        // Call logs, and the updates that carry a disposition after the call log went out:
        // the same client, rate limit and backoff rules, one worker per kind so an update
        // never waits behind the call-log backlog's backoff.
        for (kind, endpoint, task, wake) in [
            (KIND_CALL_LOG, "call_log", "call_log delivery", wake.clone()),
            (
                KIND_DISPOSITION_UPDATE,
                "disposition_update",
                "disposition_update delivery",
                Arc::new(Notify::new()),
            ),
        ] {
            let heartbeat = health.register(task);
            let worker = DeliveryWorker::new(
                store.clone(),
                client.clone(),
                DeliverySettings {
                    kind,
                    endpoint,
                    backoff,
                    pause: Duration::from_millis(ls.auth_failure_pause_ms),
                    idle_poll: Duration::from_secs(1),
                    attempt_timeout: ls.request_timeout(),
                },
                limiter.clone(),
                wake,
            )
            .with_heartbeat(heartbeat.clone());
            metrics.register(Arc::new(DeliveryMetrics {
                endpoint,
                stats: worker.stats(),
            }));
            let rx = shutdown_rx.clone();
            tasks.push(supervise(
                heartbeat,
                fatal_tx.clone(),
                shutdown_rx.clone(),
                async move { worker.run(rx).await.map_err(|e| e.to_string()) },
            ));
        }

        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let (popup_tx, popup_rx) = if ls.agent_popup_url.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(POPUP_QUEUE);
            (Some(tx), Some(rx))
        };
        let pbx = crate::pbx::build_parts(&PbxContext {
            config,
            config_path,
            store: store.clone(),
            wake_delivery: wake.clone(),
            popups: popup_tx,
            config_updates: config_rx,
            shutdown: shutdown_rx.clone(),
            metrics: &metrics,
        })?;
        let pbx_status = Arc::new(pbx.status);
        let mut popup_stats = None;
        let mut sources = Vec::new();
        let mut source_heartbeats = Vec::new();
        for source in pbx.file_sources {
            source_heartbeats.push(source.heartbeat);
            let (stop, fatal_tx, run) = (stop_sources.clone(), fatal_tx.clone(), source.run);
            sources.push(
                std::thread::Builder::new()
                    .name(source.thread_name.clone())
                    .spawn(move || {
                        if let Err(why) = run(stop) {
                            tracing::error!("{why}");
                            let _ = fatal_tx.send(why);
                        }
                    })
                    .with_context(|| format!("starting the {} thread", source.thread_name))?,
            );
        }
        if pbx.sends_popups {
            match popup_rx {
                None => {
                    tracing::info!("[leadsquared] agent_popup_url is not set: no agent popups")
                }
                Some(popup_rx) => {
                    let mut sender = PopupSender::new(
                        client.clone(),
                        limiter.clone(),
                        Duration::from_millis(ls.popup_ttl_ms),
                    );
                    if ls.lead_lookup {
                        let deadline = Duration::from_millis(ls.lead_lookup_timeout_ms);
                        sender = sender.with_lead_lookup(LeadApi::new(config, deadline)?, deadline);
                    }
                    metrics.register(sender.stats());
                    popup_stats = Some(sender.stats());
                    let heartbeat = health.register("popup sender");
                    let sender = sender.with_heartbeat(heartbeat.clone());
                    tasks.push(supervise(
                        heartbeat,
                        fatal_tx.clone(),
                        shutdown_rx.clone(),
                        sender.run(popup_rx),
                    ));
                }
            }
        }
        for task in pbx.tasks {
            tasks.push(supervise(
                health.register(task.name),
                fatal_tx.clone(),
                shutdown_rx.clone(),
                task.run,
            ));
        }

        let mut api = None;
        let mut status_page = None;
        if let Some(http) = &config.http {
            let state = Arc::new(
                ApiState::new(config, pbx.control.clone(), store.clone())?
                    .with_metrics(metrics.clone())
                    .with_health(health.clone()),
            );
            api = Some(state.clone());
            let mut page = crate::http::status::StatusPage::new(config, store.clone())?
                .with_config_path(config_path)
                .with_metrics(metrics.clone())
                .with_pbx_status(pbx_status.clone());
            if let Some(popups) = &popup_stats {
                page = page.with_popups(popups.clone());
            }
            let page = Arc::new(page);
            status_page = Some(page.clone());
            let router = crate::http::router(state)?
                .merge(crate::http::recordings::router(config, &metrics)?)
                .merge(page.router());
            let transport = crate::http::Transport::from_config(http).await?;
            metrics.register(transport.stats.clone());
            let listener = tokio::net::TcpListener::bind(http.listen)
                .await
                .with_context(|| format!("[http] listen {}: cannot bind", http.listen))?;
            let mut rx = shutdown_rx.clone();
            tasks.push(supervise(
                health.register("HTTP API"),
                fatal_tx.clone(),
                shutdown_rx.clone(),
                async move {
                    let stop = async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    };
                    crate::http::serve(router, listener, transport, stop)
                        .await
                        .map_err(|e| e.to_string())
                },
            ));
        }

        let retention_days = i64::from(config.store.delivered_retention_days);
        let prune_store = store.clone();
        let mut rx = shutdown_rx.clone();
        let prune = async move {
            loop {
                let day = 86_400_000i64;
                let now = crate::outbox::store::now_ms();
                // SQLite (and its fsync) runs on a blocking thread, never on a worker thread.
                let store = prune_store.clone();
                let pruned = tokio::task::spawn_blocking(move || {
                    store.prune(now - retention_days * day, now - KEY_RETENTION_DAYS * day)
                })
                .await;
                match pruned {
                    Ok(Ok((compacted, deleted))) if compacted + deleted > 0 => {
                        tracing::info!(compacted, deleted, "pruned delivered rows")
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("pruning failed: {e}"),
                    Err(e) => tracing::warn!("pruning task failed: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                    _ = rx.changed() => return Ok(()),
                }
            }
        };
        tasks.push(supervise(
            health.register("pruning"),
            fatal_tx.clone(),
            shutdown_rx,
            prune,
        ));
        tracing::info!(store = %config.store.path.display(), "pbxlink started");
        Ok(Daemon {
            store,
            stop_sources,
            sources,
            shutdown,
            tasks,
            fatal,
            config: config.clone(),
            client,
            source_heartbeats,
            pbx_status,
            pbx_reloads: pbx.reloads,
            pbx_stops: pbx.stops,
            config_tx,
            metrics,
            api,
            health,
            status_page,
        })
    }

    /// Applies a new, validated configuration without dropping state: the agents and
    /// virtual numbers go to the CDR source (calls assembled from then on use them), the
    /// URL, keys and payload format to the delivery client. Returns the changed keys that
    /// need a restart (logged, not applied).
    pub fn reload(&mut self, new: Config) -> anyhow::Result<Vec<&'static str>> {
        let credentials = new.credentials()?;
        let directory = crate::call::Directory::from_config(&new)
            .map_err(|e| anyhow::anyhow!("agents/virtual numbers: {e}"))?;
        self.client
            .reload(&new, credentials)
            .context("rebuilding the LeadSquared client")?;
        for reload in &self.pbx_reloads {
            reload(&new, &directory);
        }
        self.config_tx.send_replace(Arc::new(new.clone()));
        if let Some(api) = &self.api {
            match crate::call::Directory::from_config(&new) {
                Ok(directory) => api.set_directory(directory),
                Err(e) => tracing::error!("HTTP API keeps its agents: {e}"),
            }
        }
        let restart = reload::restart_needed(&self.config, &new);
        if let Some(page) = &self.status_page {
            page.config_reloaded(&new);
        }
        self.config = new;
        Ok(restart)
    }

    /// Whether every file reader (the CDR reader) went round its loop within `max_age`
    /// (true without one).
    pub fn sources_alive(&self, max_age: Duration) -> bool {
        let now = crate::outbox::store::now_ms();
        let max_age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        self.source_heartbeats
            .iter()
            .all(|beat| now - beat.load(Ordering::Relaxed) <= max_age)
    }

    /// Whether every supervised task with a heartbeat (delivery workers, popup sender) beat
    /// in time and none ended.
    pub fn tasks_alive(&self) -> bool {
        self.health.problems().is_empty()
    }

    /// The liveness of every supervised task (what `/readyz` reports).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The `STATUS=` line: outbox depth, last delivery, the PBX's parts (the state of the CDR
    /// file, of the AMI connection) and the daemon's tasks.
    pub async fn status_line(&self) -> String {
        let store = self.store.clone();
        let report = tokio::task::spawn_blocking(move || store.status()).await;
        let mut line = match report {
            Ok(Ok(report)) => status::outbox_line(&report, crate::outbox::store::now_ms()),
            Ok(Err(e)) => format!("outbox unreadable: {e}"),
            Err(e) => format!("outbox unreadable: {e}"),
        };
        for part in self.pbx_status.iter() {
            line.push_str("; ");
            line.push_str(&part());
        }
        line.push_str("; ");
        line.push_str(&status::tasks_line(&self.health.problems()));
        if let Some(full) = self.store.disk_full() {
            line.push_str("; ");
            line.push_str(&full);
        }
        line
    }

    /// Every component's counters (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The store, for status and tests.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Waits until a part of the daemon fails for good; returns its reason.
    pub async fn failed(&mut self) -> String {
        self.fatal
            .recv()
            .await
            .unwrap_or_else(|| "all components stopped".into())
    }

    /// Stops sources, then delivery (finishing the request in flight), within `timeout`.
    pub async fn stop(self, timeout: Duration) {
        self.stop_sources.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        for stop in self.pbx_stops {
            let _ = tokio::time::timeout(Duration::from_secs(2), stop).await;
        }
        let sources = self.sources;
        let tasks = self.tasks;
        let all = async move {
            for t in tasks {
                let _ = t.await;
            }
            let _ = tokio::task::spawn_blocking(move || {
                for s in sources {
                    let _ = s.join();
                }
            })
            .await;
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                "shutdown took longer than {timeout:?}; exiting anyway (nothing committed is lost)"
            );
        }
    }
}

/// How long a SIGTERM drain may take; the unit's `TimeoutStopSec=30` leaves room above it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often `STATUS=` is refreshed (the watchdog may ask for more often).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// `pbxlink run`: runs until SIGTERM or SIGINT, or until a component fails; SIGHUP reloads
/// `config_path`.
pub async fn run(config: Config, config_path: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let notifier = Notifier::from_env();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut daemon = Daemon::start_from(&config, Some(config_path)).await?;
    notifier.ready(&daemon.status_line().await);

    let watchdog = notifier.watchdog_interval();
    let tick_every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    if let Some(w) = watchdog {
        tracing::info!(watchdog_ms = w.as_millis() as u64, "systemd watchdog on");
    }
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stuck_reported = false;
    let result = loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break Ok(()) }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break Ok(()) }
            reason = daemon.failed() => break Err(anyhow::anyhow!(reason)),
            _ = hup.recv() => {
                notifier.reloading();
                reload_config(&mut daemon, config_path);
                notifier.ready(&daemon.status_line().await);
            }
            _ = tick.tick() => {
                if let Some(w) = watchdog {
                    // Ping only while every loop of the daemon is alive: a stuck CDR
                    // reader, delivery worker or popup sender misses pings and systemd
                    // restarts the service.
                    let problems = daemon.health().problems();
                    if daemon.sources_alive(w) && problems.is_empty() {
                        notifier.watchdog();
                        stuck_reported = false;
                    } else if !stuck_reported {
                        let what = if problems.is_empty() {
                            "a file reader (the CDR reader) is stuck".to_owned()
                        } else {
                            problems.join("; ")
                        };
                        tracing::error!("{what}; not pinging the watchdog");
                        stuck_reported = true;
                    }
                }
                notifier.status(&daemon.status_line().await);
            }
        }
    };
    notifier.stopping("stopping: finishing the request in flight");
    daemon.stop(STOP_TIMEOUT).await;
    result
}

/// SIGHUP: re-reads and validates the file; an invalid file is logged and the running
/// configuration kept.
fn reload_config(daemon: &mut Daemon, path: &Path) {
    tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(crate::config::ConfigError::Invalid { problems, .. }) => {
            for p in &problems {
                tracing::error!(key = %p.key, "config reload rejected: {}", p.message);
            }
            tracing::error!("configuration NOT reloaded; the previous one stays in use");
            return;
        }
        Err(e) => {
            tracing::error!("configuration NOT reloaded ({e}); the previous one stays in use");
            return;
        }
    };
    match daemon.reload(new) {
        Ok(restart) => {
            for key in &restart {
                tracing::warn!(key, "changed, restart needed: systemctl restart pbxlink");
            }
            tracing::info!(
                restart_needed = restart.len(),
                "configuration reloaded: agents, virtual numbers, CRM URL, keys and payload format"
            );
        }
        Err(e) => {
            tracing::error!("configuration NOT reloaded ({e:#}); the previous one stays in use")
        }
    }
}

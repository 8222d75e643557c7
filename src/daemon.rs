//! Wires sources, the outbox and delivery into the running daemon (`pbxlink run`), and
//! stops it cleanly: sources first, then delivery after the request in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::Config;
use crate::crm::leadsquared::LeadSquaredClient;
use crate::outbox::{Backoff, DeliverySettings, DeliveryWorker, KIND_CALL_LOG, RateLimiter, Store};

/// Keys of compacted delivered rows are kept this long, so re-imports stay deduplicated.
const KEY_RETENTION_DAYS: i64 = 400;
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
}

impl Daemon {
    /// Opens the store and starts every configured source and the delivery worker.
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        let store = Arc::new(
            Store::open(&config.store.path, config.store.synchronous)
                .context("opening the store")?,
        );
        let credentials = config.credentials().map_err(|p| anyhow::anyhow!("{p}"))?;
        let client = LeadSquaredClient::new(config, credentials)?;
        let wake = Arc::new(Notify::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let stop_sources = Arc::new(AtomicBool::new(false));
        let mut sources = Vec::new();

        if let Some(ast) = &config.asterisk {
            let source =
                crate::pbx::asterisk::cdr_source(config, store.clone(), wake.clone(), None)?;
            let poll = Duration::from_millis(ast.poll_interval_ms);
            let stop = stop_sources.clone();
            let fatal_tx = fatal_tx.clone();
            sources.push(
                std::thread::Builder::new()
                    .name("asterisk-cdr".into())
                    .spawn(move || {
                        if let Err(e) = source.run(poll, stop) {
                            tracing::error!("CDR source stopped: {e}");
                            let _ = fatal_tx.send(format!("CDR source stopped: {e}"));
                        }
                    })
                    .context("starting the CDR reader thread")?,
            );
        }

        let ls = &config.leadsquared;
        let limiter = Arc::new(RateLimiter::new(
            ls.rate_limit_requests,
            Duration::from_millis(ls.rate_limit_period_ms),
        ));
        let worker = DeliveryWorker::new(
            store.clone(),
            client,
            DeliverySettings {
                kind: KIND_CALL_LOG,
                endpoint: "call_log",
                backoff: Backoff {
                    initial: Duration::from_millis(ls.retry_initial_ms),
                    cap: Duration::from_millis(ls.retry_max_ms),
                },
                pause: Duration::from_millis(ls.auth_failure_pause_ms),
                idle_poll: Duration::from_secs(1),
            },
            limiter,
            wake,
        );
        let mut tasks = Vec::new();
        let rx = shutdown_rx.clone();
        let fatal_delivery = fatal_tx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = worker.run(rx).await {
                tracing::error!("delivery stopped: {e}");
                let _ = fatal_delivery.send(format!("delivery stopped: {e}"));
            }
        }));
        let retention_days = i64::from(config.store.delivered_retention_days);
        let prune_store = store.clone();
        let mut rx = shutdown_rx;
        tasks.push(tokio::spawn(async move {
            loop {
                let day = 86_400_000i64;
                let now = crate::outbox::store::now_ms();
                match prune_store.prune(now - retention_days * day, now - KEY_RETENTION_DAYS * day)
                {
                    Ok((compacted, deleted)) if compacted + deleted > 0 => {
                        tracing::info!(compacted, deleted, "pruned delivered rows")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("pruning failed: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                    _ = rx.changed() => return,
                }
            }
        }));
        tracing::info!(store = %config.store.path.display(), "pbxlink started");
        Ok(Daemon {
            store,
            stop_sources,
            sources,
            shutdown,
            tasks,
            fatal,
        })
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

/// `pbxlink run`: runs until SIGTERM or SIGINT, or until a component fails.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(&config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let result = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); Ok(()) }
        reason = daemon.failed() => Err(anyhow::anyhow!(reason)),
    };
    daemon.stop(Duration::from_secs(20)).await;
    result
}

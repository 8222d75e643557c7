//! FreeSWITCH's parts for the daemon, built from `[freeswitch]`: the file source that
//! `call_log_source` selects (mod_json_cdr's directory or mod_cdr_csv's file, unless
//! `call_log_source = "esl"`), and with `[freeswitch.esl]` the event-socket connection, its
//! call tracker (popups, and call logs with `esl` or `both`) and the [`FsControl`] click to
//! call and dispositions go through; their figures on `/metrics` (`pbxlink_esl_*`, the file
//! source's counters labelled `source="freeswitch-json_cdr"` / `"freeswitch-cdr"`), their
//! parts of the `STATUS=` line, the reload of agents and the event-socket `exit` at shutdown.
//! [`crate::pbx::build_parts`] calls [`build`]; nothing else outside `src/pbx/freeswitch`
//! names FreeSWITCH.
//!
//! Every call is classified by the one rule set ([`CallRules`]) with the agents and virtual
//! numbers of the running configuration, held in one [`SharedDirectory`] a SIGHUP replaces.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{broadcast, mpsc, watch};

use super::assemble::{Classifier, FsAssembler, SettleTimes};
use super::cdr::{FsCdrSettings, FsCsvParser};
use super::control::{self, FreeAgent, FsClickToCall, FsNumberFormat, FsOriginateSettings};
use super::esl::{EslAnswer, EslClient, EslNotice, EslSettings, EslStats, Resync};
use super::json_cdr::{JsonCdrDirSource, json_counters};
use super::tracker::{FsCallTracker, FsTrackerOutput, FsTrackerSettings, FsTrackerStats};
use crate::call::sink::{CallSink, OutboxSink};
use crate::call::{AgentInfo, CallRecord, CallRules, Directory, monotonic_ms};
use crate::config::{
    Config, DialFormat, FreeSwitchCallLogSource, FreeSwitchConfig, FreeSwitchFileSource,
    FreeSwitchFreeAgent,
};
use crate::logtext::Escaped;
use crate::metrics::{MetricsSource, Scrape};
use crate::outbox::Store;
use crate::pbx::connection::{ConnectionMetricNames, SupervisorSettings};
use crate::pbx::live::{CALL_LOG_QUEUE, LiveStats, store_call_logs};
use crate::pbx::parts::{FileImport, LivePart, PbxContext, PbxParts};
use crate::pbx::{AgentRelease, OriginateRequest, PbxControl, PbxError, PbxFuture};
use crate::pipeline::{FileSource, Tailed, counters};

/// The `source` label of the json_cdr directory's counters on `/metrics`.
pub const JSON_CDR_SOURCE_LABEL: &str = "freeswitch-json_cdr";
/// The `source` label of the cdr_csv file's counters on `/metrics`.
pub const CDR_CSV_SOURCE_LABEL: &str = "freeswitch-cdr";

/// The outbox's persistent counters a FreeSWITCH file source keeps beyond
/// [`counters::FILE_SOURCE`].
const JSON_CDR_COUNTERS: [&str; 4] = [
    json_counters::FILES_READ,
    json_counters::FILES_HISTORY,
    json_counters::FILES_TOO_LARGE,
    json_counters::NOT_REGULAR,
];

/// Labels a FreeSWITCH file source's counters with its `source` on `/metrics`.
fn label_file_counters(ctx: &PbxContext<'_>, source: &str) {
    ctx.metrics
        .label_store_counters(source, &counters::FILE_SOURCE);
    ctx.metrics.label_store_counters(source, &JSON_CDR_COUNTERS);
}

/// How long a click to call waits for FreeSWITCH's BACKGROUND_JOB before it answers the HTTP
/// caller that the job is accepted. A refusal FreeSWITCH knows at once
/// (`USER_NOT_REGISTERED`, a bad endpoint) arrives within it and is a 502; the job of a
/// ringing agent only completes when the agent answers (or `NO_ANSWER` after
/// `originate_timeout`), which is logged when it comes.
pub const ORIGINATE_GRACE: Duration = Duration::from_millis(1500);

/// How long an `api`/`bgapi` command waits for FreeSWITCH's reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The agents and virtual numbers of the running configuration, shared by the file
/// source's classifier, the call tracker and the control; a SIGHUP replaces it.
pub type SharedDirectory = Arc<RwLock<Directory>>;

/// The classification rules of `[freeswitch]`: its `recording_url_template` (else
/// `[asterisk]`'s, when one is set there), and the signed links of `[recordings]` when
/// configured.
pub fn call_rules(config: &Config, fs: &FreeSwitchConfig) -> anyhow::Result<CallRules> {
    Ok(CallRules {
        inbound_contexts: fs.inbound_contexts.clone(),
        outbound_contexts: fs.outbound_contexts.clone(),
        voicemail_apps: Vec::new(),
        outbound_display_number: None,
        outbound_dial_prefix: String::new(),
        recording_url_template: fs.recording_url_template.clone().or_else(|| {
            config
                .asterisk
                .as_ref()
                .and_then(|a| a.recording_url_template.clone())
        }),
        recordings: crate::recordings::RecordingLinks::from_config(config)
            .context("[recordings]")?,
        transfer_logs: fs.transfer_logs,
    })
}

/// `[freeswitch]` as the file sources' settings.
pub fn cdr_settings(fs: &FreeSwitchConfig) -> anyhow::Result<FsCdrSettings> {
    let defaults = FsCdrSettings::default();
    let cdr_columns = fs.cdr_column_names();
    Ok(FsCdrSettings {
        json_cdr_dir: fs.json_cdr_dir.clone().unwrap_or(defaults.json_cdr_dir),
        cdr_csv: fs.cdr_csv.clone().unwrap_or(defaults.cdr_csv),
        cdr_template: "custom".into(),
        cdr_columns: Some(cdr_columns),
        cdr_time_zone: fs.cdr_time_zone.zone().with_context(|| {
            format!(
                "[freeswitch] cdr_time_zone {:?} is not a time zone",
                fs.cdr_time_zone
            )
        })?,
        start_at: fs.start_at,
        ..defaults
    })
}

/// `[freeswitch.originate]` as the control's settings.
pub fn originate_settings(fs: &FreeSwitchConfig) -> FsOriginateSettings {
    let o = &fs.originate;
    FsOriginateSettings {
        agent_endpoint: o.agent_endpoint.clone(),
        context: o.context.clone(),
        dialplan: o.dialplan.clone(),
        number_format: match o.number_format {
            DialFormat::E164 => FsNumberFormat::E164,
            DialFormat::E164Digits => FsNumberFormat::E164Digits,
            DialFormat::National => FsNumberFormat::National,
        },
        timeout_ms: o.timeout_ms,
    }
}

/// mod_callcenter agent name → extension, from `[[agents]]`.
fn callcenter_agents(config: &Config) -> HashMap<String, String> {
    config
        .agents
        .iter()
        .map(|a| (a.callcenter_agent_name().to_owned(), a.extension.clone()))
        .collect()
}

/// The classifier of the file sources: the shared rules with the current directory.
fn classifier(rules: CallRules, directory: SharedDirectory) -> Classifier {
    Box::new(move |facts| {
        let directory = directory.read().unwrap_or_else(PoisonError::into_inner);
        rules.record(&directory, facts).map_err(|e| e.to_string())
    })
}

/// The name under which a FreeSWITCH file source's positions and staged legs are stored.
pub fn source_name(source: &FreeSwitchFileSource) -> String {
    match source {
        FreeSwitchFileSource::JsonCdr { dir } => format!("freeswitch-json_cdr:{}", dir.display()),
        FreeSwitchFileSource::CdrCsv { path, .. } => format!("freeswitch-cdr:{}", path.display()),
    }
}

/// Adds the parts `[freeswitch]` configures to `parts`.
pub fn build(ctx: &PbxContext<'_>, parts: &mut PbxParts) -> anyhow::Result<()> {
    let Some(fs) = ctx.config.freeswitch.as_ref() else {
        return Ok(());
    };
    let directory: SharedDirectory = Arc::new(RwLock::new(
        Directory::from_config(ctx.config).context("[[agents]] / [[virtual_numbers]]")?,
    ));
    {
        let directory = directory.clone();
        parts.reloads.push(Box::new(move |_config, new| {
            *directory.write().unwrap_or_else(PoisonError::into_inner) = new.clone();
            tracing::info!("FreeSWITCH: agents and virtual numbers reloaded");
        }));
    }
    let rules = call_rules(ctx.config, fs)?;
    let file_source = (fs.call_log_source != FreeSwitchCallLogSource::Esl)
        .then(|| fs.file_source())
        .flatten();
    let reconciler = (fs.call_log_source == FreeSwitchCallLogSource::Both
        && file_source.is_some()
        && fs.esl.is_some())
    .then(|| parts.add_reconciler(ctx, fs.reconcile_wait_ms));
    if let Some(source) = &file_source {
        file_part(
            ctx,
            parts,
            source,
            fs,
            classifier(rules.clone(), directory.clone()),
            reconciler.clone().map(|r| r as Arc<dyn CallSink>),
        )?;
    }
    if let Some(esl) = fs.esl.as_ref() {
        let password = esl.resolve_password()?;
        let settings = EslSettings::new(esl.host.clone(), esl.port, password);
        let supervision = SupervisorSettings::new(esl.host.clone(), esl.port);
        let (client, notices) = EslClient::spawn_subscribed(settings, supervision);
        let stats = Arc::new(LiveStats::default());
        let tracker_stats = Arc::new(Mutex::new(FsTrackerStats::default()));
        ctx.metrics.register(Arc::new(EslMetrics {
            client: client.clone(),
            live: stats.clone(),
            tracker: tracker_stats.clone(),
        }));
        let sink: Arc<dyn CallSink> = match &reconciler {
            Some(r) => r.clone(),
            None => Arc::new(OutboxSink::new(
                ctx.store.clone(),
                ctx.wake_delivery.clone(),
            )),
        };
        let live = LiveFreeSwitch {
            client: client.clone(),
            notices,
            rules,
            directory: directory.clone(),
            call_logs: fs.logs_from_esl().then_some(sink),
            popups: ctx.popups.clone(),
            config_updates: ctx.config_updates.clone(),
            stats,
            tracker_stats,
        };
        let shutdown = ctx.shutdown.clone();
        parts.add_live(LivePart {
            tracker_name: "ESL call tracker",
            tracker: Box::pin(async move { live.run(shutdown).await }),
            control: Arc::new(FsControl::new(
                client.clone(),
                originate_settings(fs),
                match fs.free_agent {
                    FreeSwitchFreeAgent::Available => FreeAgent::Available,
                    FreeSwitchFreeAgent::None => FreeAgent::None,
                },
                ctx.config,
            )),
            connection: client.connection(),
        });
    }
    Ok(())
}

/// The reader of the file source `call_log_source` selects, with its status line and
/// counters.
fn file_part(
    ctx: &PbxContext<'_>,
    parts: &mut PbxParts,
    source: &FreeSwitchFileSource,
    fs: &FreeSwitchConfig,
    classify: Classifier,
    sink: Option<Arc<dyn CallSink>>,
) -> anyhow::Result<()> {
    let settings = cdr_settings(fs)?;
    let name = source_name(source);
    let times = SettleTimes {
        settle_ms: settings.settle_ms,
        max_call_secs: settings.max_call_secs,
    };
    match source {
        FreeSwitchFileSource::JsonCdr { dir } => {
            let assembler = FsAssembler::new(name.clone(), times, classify);
            let reader = JsonCdrDirSource::new(
                name,
                &settings,
                ctx.store.clone(),
                assembler,
                ctx.wake_delivery.clone(),
            );
            parts.add_file_reader("freeswitch-json", reader, ctx.config_path, sink);
            let dir = dir.clone();
            parts.status.push(Box::new(move || json_cdr_line(&dir)));
            label_file_counters(ctx, JSON_CDR_SOURCE_LABEL);
        }
        FreeSwitchFileSource::CdrCsv { path, .. } => {
            let assembler = FsAssembler::new(name.clone(), times, classify);
            let source = csv_source(
                name,
                path.clone(),
                &settings,
                ctx.store.clone(),
                ctx.wake_delivery.clone(),
                assembler,
            )?;
            let tailed = Tailed {
                source,
                poll: Duration::from_millis(settings.poll_ms),
            };
            parts.add_file_reader("freeswitch-cdr", tailed, ctx.config_path, sink);
            let path = path.clone();
            parts.status.push(Box::new(move || {
                crate::service::status::cdr_line(&path, false)
            }));
            label_file_counters(ctx, CDR_CSV_SOURCE_LABEL);
        }
    }
    Ok(())
}

/// The pipeline that tails (or imports) a mod_cdr_csv file.
fn csv_source(
    name: String,
    path: PathBuf,
    settings: &FsCdrSettings,
    store: Arc<Store>,
    wake_delivery: Arc<tokio::sync::Notify>,
    assembler: FsAssembler,
) -> anyhow::Result<FileSource<FsCsvParser, FsAssembler>> {
    let parser = settings
        .csv_parser()
        .context("[freeswitch] cdr_template / cdr_columns")?;
    Ok(
        FileSource::new(name, path, store, parser, assembler, wake_delivery)
            .with_file_rules(settings.follow_symlink, settings.start_at),
    )
}

/// The `STATUS=` part of the json_cdr directory.
fn json_cdr_line(dir: &Path) -> String {
    let shown = Escaped(&dir.to_string_lossy()).to_string();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => format!("json_cdr {shown}: readable"),
        Ok(_) => format!("json_cdr {shown}: not a directory"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("json_cdr {shown}: not there yet")
        }
        Err(e) => format!("json_cdr {shown}: {e}"),
    }
}

/// Runs the call tracker on the event socket's notices until shutdown: popups go out at
/// once (after [`CallRules::popup`]), finished calls become call logs (after
/// [`CallRules::record`]) stored by their own task when call logs come from the event socket.
struct LiveFreeSwitch {
    client: EslClient,
    notices: broadcast::Receiver<EslNotice>,
    rules: CallRules,
    directory: SharedDirectory,
    /// Where call logs go; None: the event socket gives popups only.
    call_logs: Option<Arc<dyn CallSink>>,
    popups: Option<mpsc::Sender<crate::call::PopupRequest>>,
    config_updates: watch::Receiver<Arc<Config>>,
    stats: Arc<LiveStats>,
    tracker_stats: Arc<Mutex<FsTrackerStats>>,
}

impl LiveFreeSwitch {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let config = self.config_updates.borrow_and_update().clone();
        let mut tracker = FsCallTracker::new(FsTrackerSettings {
            callcenter_agents: callcenter_agents(&config),
            ..FsTrackerSettings::default()
        });
        let (logs_tx, logs_rx) = mpsc::channel(CALL_LOG_QUEUE);
        let writer = self.call_logs.clone().map(|sink| {
            tokio::spawn(store_call_logs(
                "ESL",
                sink,
                self.stats.clone(),
                logs_rx,
                shutdown.clone(),
            ))
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                notice = self.notices.recv() => match notice {
                    Ok(EslNotice::Event(event)) => {
                        let out = tracker.handle(&event, monotonic_ms());
                        self.dispatch(out, &logs_tx);
                    }
                    Ok(EslNotice::Resync(resync)) => self.resync(&mut tracker, &resync).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.stats.events_lagged.fetch_add(n, Relaxed);
                        tracing::warn!(missed = n, "ESL events missed by the call tracker (it fell behind); calls they belong to may lack a popup or a log");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    let out = tracker.tick(monotonic_ms());
                    self.dispatch(out, &logs_tx);
                    *self.tracker_stats.lock().unwrap_or_else(PoisonError::into_inner) = tracker.stats();
                }
                changed = self.config_updates.changed() => {
                    if changed.is_ok() {
                        let new = self.config_updates.borrow_and_update().clone();
                        tracker.set_callcenter_agents(callcenter_agents(&new));
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        drop(logs_tx);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        Ok(())
    }

    /// After a (re)connect: the calls in progress from `show channels as json`, or, when
    /// FreeSWITCH has no channel table (`-nosql`), `uuid_exists` for each leg followed.
    async fn resync(&self, tracker: &mut FsCallTracker, resync: &Resync) {
        match &resync.problem {
            None => {
                let rows: Vec<serde_json::Value> = resync
                    .channels
                    .iter()
                    .map(|row| {
                        serde_json::Value::Object(
                            row.fields
                                .iter()
                                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                                .collect(),
                        )
                    })
                    .collect();
                let report = tracker.relearn(
                    &serde_json::json!({ "rows": rows }),
                    monotonic_ms(),
                    chrono::Utc::now(),
                );
                tracing::info!(
                    login = resync.login,
                    channels = report.rows,
                    new_legs = report.new_legs,
                    lost_calls = report.lost_calls,
                    "ESL: calls in progress re-learnt"
                );
            }
            Some(problem) => {
                let mut up = HashSet::new();
                for uuid in tracker.legs_up() {
                    if control::check_token("uuid", &uuid).is_err() {
                        continue;
                    }
                    match self
                        .client
                        .api(&format!("uuid_exists {uuid}"), COMMAND_TIMEOUT)
                        .await
                    {
                        Ok(answer) if answer.trim() == "true" => {
                            up.insert(uuid);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("ESL: uuid_exists failed ({e}); keeping leg");
                            up.insert(uuid);
                        }
                    }
                }
                let lost = tracker.keep_legs_up(&up, chrono::Utc::now());
                tracing::info!(
                    login = resync.login,
                    problem = %Escaped(problem),
                    lost_calls = lost,
                    "ESL: no channel list; calls in progress checked one by one"
                );
            }
        }
    }

    fn dispatch(&self, outputs: Vec<FsTrackerOutput>, logs: &mpsc::Sender<CallRecord>) {
        if outputs.is_empty() {
            return;
        }
        let directory = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for output in outputs {
            match output {
                FsTrackerOutput::Ringing(ringing) => {
                    let (Some(popups), Some(popup)) =
                        (&self.popups, self.rules.popup(&directory, &ringing))
                    else {
                        continue;
                    };
                    if popups.try_send(popup).is_err() {
                        self.stats.popups_overflow.fetch_add(1, Relaxed);
                        tracing::error!("agent popup queue full: popup dropped");
                    }
                }
                FsTrackerOutput::Ended(facts) => {
                    if self.call_logs.is_none() {
                        continue;
                    }
                    match self.rules.record(&directory, &facts) {
                        Ok(call) => {
                            if logs.try_send(call).is_err() {
                                self.stats.call_logs_lost.fetch_add(1, Relaxed);
                                tracing::error!(
                                    "the queue of call logs waiting for the store is full: a call from ESL was not stored (counted in call_logs_lost)"
                                );
                            }
                        }
                        Err(skip) => tracing::info!(
                            call_id = %Escaped(&facts.call_id),
                            "FreeSWITCH call not posted: {skip}"
                        ),
                    }
                }
            }
        }
    }
}

/// Click to call and dispositions over the event socket.
pub struct FsControl {
    client: EslClient,
    settings: FsOriginateSettings,
    free_agent: FreeAgent,
    /// Extension → mod_callcenter agent name (`[[agents]] callcenter_agent`).
    agents: RwLock<HashMap<String, String>>,
}

impl FsControl {
    /// The control over `client` with `[freeswitch.originate]`, `free_agent` and the agents
    /// of `config`.
    pub fn new(
        client: EslClient,
        settings: FsOriginateSettings,
        free_agent: FreeAgent,
        config: &Config,
    ) -> Self {
        let control = Self {
            client,
            settings,
            free_agent,
            agents: RwLock::new(HashMap::new()),
        };
        control.set_agents(config);
        control
    }

    /// Takes the mod_callcenter agent names of a (reloaded) configuration.
    pub fn set_agents(&self, config: &Config) {
        let names = config
            .agents
            .iter()
            .map(|a| (a.extension.clone(), a.callcenter_agent_name().to_owned()))
            .collect();
        *self.agents.write().unwrap_or_else(PoisonError::into_inner) = names;
    }

    async fn place(&self, request: OriginateRequest) -> Result<(), PbxError> {
        let click = FsClickToCall {
            call_id: request.call_id.clone(),
            agent_extension: request.agent.extension.clone(),
            lead: request.lead_number.clone(),
            lead_as_sent: None,
            caller_id: self.settings.number_format.format(&request.caller_id),
            lead_id: request.lead_id.clone(),
        };
        let plan = control::click_to_call(&self.settings, &click, &control::new_uuid())?;
        // Subscribed before sending: the BACKGROUND_JOB cannot slip past.
        let mut events = self.client.events();
        let reply = match self
            .client
            .send(&plan.command, COMMAND_TIMEOUT)
            .await
            .map_err(esl_error)?
        {
            EslAnswer::Reply(reply) => reply,
            EslAnswer::Api(body) => {
                return Err(PbxError::Refused(format!(
                    "an api/response to bgapi: {}",
                    crate::logtext::excerpt(body.as_bytes(), 200)
                )));
            }
        };
        control::bgapi_accepted(&reply, "click to call")?;
        let job_uuid = plan.job_uuid.clone();
        match tokio::time::timeout(ORIGINATE_GRACE, wait_job(&mut events, &job_uuid)).await {
            Ok(Some(Ok(uuid))) => {
                tracing::info!(call_id = %Escaped(&plan.call_id), agent_leg = %Escaped(&uuid), "click to call: the agent answered");
                Ok(())
            }
            Ok(Some(Err(refusal))) => Err(refusal.into()),
            Ok(None) => Ok(()),
            Err(_) => {
                // The job completes when the agent answers: the HTTP caller is answered now,
                // the outcome is logged when it comes.
                let wait =
                    Duration::from_millis(self.settings.timeout_ms) + Duration::from_secs(30);
                let call_id = plan.call_id.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(wait, wait_job(&mut events, &job_uuid)).await {
                        Ok(Some(Ok(uuid))) => {
                            tracing::info!(call_id = %Escaped(&call_id), agent_leg = %Escaped(&uuid), "click to call: the agent answered")
                        }
                        Ok(Some(Err(refusal))) => {
                            tracing::warn!(call_id = %Escaped(&call_id), "click to call accepted, then failed: {refusal}")
                        }
                        Ok(None) => {
                            tracing::warn!(call_id = %Escaped(&call_id), "click to call: the event socket closed before its result")
                        }
                        Err(_) => {
                            tracing::warn!(call_id = %Escaped(&call_id), "click to call: no result from FreeSWITCH in {}s", wait.as_secs())
                        }
                    }
                });
                Ok(())
            }
        }
    }

    async fn release(&self, agent: Option<&AgentInfo>) -> AgentRelease {
        if self.free_agent == FreeAgent::None {
            return AgentRelease::NotConfigured;
        }
        let Some(agent) = agent else {
            return AgentRelease::NotDone("no known agent to make Available".to_owned());
        };
        let name = self
            .agents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&agent.extension)
            .cloned()
            .unwrap_or_else(|| agent.extension.clone());
        let shown = Escaped(&name).to_string();
        let commands = match control::free_agent_commands(self.free_agent, &name) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(agent = %shown, "freeing the callcenter agent failed: {e}");
                return AgentRelease::NotDone(format!("making {shown} Available failed: {e}"));
            }
        };
        for command in commands {
            let result = match self.client.send(&command, COMMAND_TIMEOUT).await {
                Ok(EslAnswer::Api(body)) => {
                    control::api_result(body.as_bytes(), "freeing the callcenter agent")
                        .map(|_| ())
                        .map_err(|r| r.to_string())
                }
                Ok(EslAnswer::Reply(r)) => Err(format!(
                    "a command/reply instead of an api/response: {}",
                    crate::logtext::excerpt(r.text().as_bytes(), 200)
                )),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                tracing::error!(agent = %shown, "freeing the callcenter agent failed: {e}");
                return AgentRelease::NotDone(format!("making {shown} Available failed: {e}"));
            }
        }
        AgentRelease::Done(format!("callcenter agent {shown} Available"))
    }
}

/// Waits for the BACKGROUND_JOB of `job_uuid`: the originate's result, None when the event
/// stream closed.
async fn wait_job(
    events: &mut broadcast::Receiver<EslNotice>,
    job_uuid: &str,
) -> Option<Result<String, control::FsRefusal>> {
    loop {
        match events.recv().await {
            Ok(EslNotice::Event(event)) => {
                if let Some(job) = event.background_job().filter(|j| j.job_uuid == job_uuid) {
                    return Some(control::originate_result(&job));
                }
            }
            Ok(EslNotice::Resync(_)) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// The event socket's errors in the HTTP API's terms.
fn esl_error(e: super::esl::EslError) -> PbxError {
    use super::esl::EslError;
    match e {
        EslError::NotConnected { .. } | EslError::Closed => PbxError::NotConnected,
        EslError::Timeout { .. } => PbxError::Timeout,
        EslError::Refused(e) => PbxError::Unsafe(e.to_string()),
        other => PbxError::Refused(other.to_string()),
    }
}

impl PbxControl for FsControl {
    fn new_call_id(&self) -> String {
        control::new_uuid()
    }

    fn originate(&self, request: OriginateRequest) -> PbxFuture<'_, Result<(), PbxError>> {
        Box::pin(self.place(request))
    }

    fn free_agent<'a>(&'a self, agent: Option<&'a AgentInfo>) -> PbxFuture<'a, AgentRelease> {
        Box::pin(self.release(agent))
    }

    fn is_connected(&self) -> bool {
        self.client.state().borrow().is_connected()
    }
}

/// The event-socket connection's figures, under the names they always had.
const ESL_CONNECTION_METRICS: ConnectionMetricNames = ConnectionMetricNames {
    server: "the FreeSWITCH event socket",
    connected: "esl_connected",
    logins: "esl_logins",
    reconnects: "esl_reconnects",
    connect_failures: "esl_connect_failures",
    half_open_drops: "esl_half_open_drops",
    malformed_frames: "esl_malformed_frames",
};

/// The event socket's and its call tracker's figures (`pbxlink_esl_*`).
struct EslMetrics {
    client: EslClient,
    live: Arc<LiveStats>,
    tracker: Arc<Mutex<FsTrackerStats>>,
}

impl MetricsSource for EslMetrics {
    fn write(&self, scrape: &mut Scrape) {
        let esl: EslStats = self.client.stats();
        esl.connection
            .write_metrics(scrape, &ESL_CONNECTION_METRICS);
        let tracker = *self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, help, value) in [
            (
                "esl_refused_commands",
                "Event-socket commands refused before the wire (a value that could break out)",
                esl.refused_commands,
            ),
            (
                "esl_events_lagged",
                "Event-socket notices a slow receiver missed",
                esl.events_lagged,
            ),
            (
                "esl_resyncs",
                "Calls in progress re-learnt after a login",
                esl.resyncs,
            ),
            (
                "esl_calls_logged",
                "Call logs enqueued from event-socket events",
                self.live.calls_enqueued.load(Relaxed),
            ),
            (
                "esl_call_logs_lost",
                "Call logs from event-socket events that could not be stored",
                self.live.call_logs_lost.load(Relaxed),
            ),
            (
                "esl_calls_expired",
                "Calls the ESL tracker forgot without a hangup",
                tracker.expired,
            ),
            (
                "esl_calls_evicted",
                "Calls the ESL tracker forgot because its table was full",
                tracker.evicted,
            ),
            (
                "esl_popups_overflow",
                "Popups lost because the popup queue was full",
                self.live.popups_overflow.load(Relaxed),
            ),
        ] {
            scrape.counter(name, help, value);
        }
        for (event, n) in &esl.events_by_name {
            scrape.counter_with(
                "esl_received_events",
                "Event-socket events received, by name",
                &[("event", event)],
                *n,
            );
        }
    }
}

/// `pbxlink import` of FreeSWITCH records: a json_cdr directory or `.json` file, or a
/// mod_cdr_csv file (with the `[freeswitch]` template), under `name`. With `[asterisk]` set
/// too, CSV files go to `asterisk` (given), json_cdr to FreeSWITCH.
pub fn import_source(
    config: &Config,
    store: Arc<Store>,
    wake_delivery: Arc<tokio::sync::Notify>,
    name: String,
    asterisk: Option<Box<dyn FileImport>>,
) -> anyhow::Result<Box<dyn FileImport>> {
    let fs = config
        .freeswitch
        .clone()
        .context("[freeswitch] is not configured")?;
    let directory: SharedDirectory = Arc::new(RwLock::new(
        Directory::from_config(config).context("[[agents]] / [[virtual_numbers]]")?,
    ));
    Ok(Box::new(FsImport {
        rules: call_rules(config, &fs)?,
        settings: cdr_settings(&fs)?,
        directory,
        store,
        wake_delivery,
        name,
        asterisk,
        progress: None,
    }))
}

/// See [`import_source`].
struct FsImport {
    rules: CallRules,
    settings: FsCdrSettings,
    directory: SharedDirectory,
    store: Arc<Store>,
    wake_delivery: Arc<tokio::sync::Notify>,
    name: String,
    asterisk: Option<Box<dyn FileImport>>,
    progress: Option<Arc<crate::import::ImportProgress>>,
}

impl FileImport for FsImport {
    fn import_file(&mut self, path: &Path) -> anyhow::Result<usize> {
        let times = SettleTimes {
            settle_ms: self.settings.settle_ms,
            max_call_secs: self.settings.max_call_secs,
        };
        let assembler = FsAssembler::new(
            self.name.clone(),
            times,
            classifier(self.rules.clone(), self.directory.clone()),
        );
        let json = path.is_dir() || path.extension().is_some_and(|e| e == "json");
        if json {
            let mut settings = self.settings.clone();
            settings.json_cdr_dir = path.to_owned();
            let mut source = JsonCdrDirSource::new(
                self.name.clone(),
                &settings,
                self.store.clone(),
                assembler,
                self.wake_delivery.clone(),
            );
            source.set_progress(self.progress.clone());
            return source
                .import(path)
                .with_context(|| format!("importing {}", Escaped(&path.to_string_lossy())));
        }
        if let Some(asterisk) = self.asterisk.as_mut() {
            return asterisk.import_file(path);
        }
        let mut source = csv_source(
            self.name.clone(),
            path.to_owned(),
            &self.settings,
            self.store.clone(),
            self.wake_delivery.clone(),
            assembler,
        )?;
        source.set_progress(self.progress.clone());
        Ok(source.import_file(path).context("import stopped")??)
    }

    fn report_to(&mut self, progress: Arc<crate::import::ImportProgress>) {
        if let Some(asterisk) = self.asterisk.as_mut() {
            asterisk.report_to(progress.clone());
        }
        self.progress = Some(progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[store]
path = "/tmp/pbxlink-wiring-test.db"

[leadsquared]
call_log_url = "http://127.0.0.1:9/call"
access_key = "ak"
secret_key = "sk"
default_country_code = "49"

[[agents]]
extension = "100"
phone = "+4915100000100"
callcenter_agent = "100@default"

[[agents]]
extension = "101"
phone = "+4915100000101"

[freeswitch]
call_log_source = "cdr_csv"
cdr_csv = "/var/log/freeswitch/cdr-csv/Master.csv"
cdr_template = "snom"
cdr_time_zone = "Europe/Berlin"
inbound_contexts = ["from-carrier"]

[freeswitch.originate]
agent_endpoint = "sofia/internal/{extension}%127.0.0.1"
number_format = "national"
timeout_ms = 20500
"#;

    fn config() -> Config {
        Config::parse(CONFIG).expect("the test config parses")
    }

    #[test]
    fn freeswitch_section_maps_onto_the_file_source_settings() {
        let config = config();
        let fs = config.freeswitch.as_ref().expect("[freeswitch]");
        let settings = cdr_settings(fs).expect("settings");
        assert_eq!(settings.cdr_time_zone, chrono_tz::Europe::Berlin);
        // The template's columns are passed as columns, so the parser reads exactly them.
        assert_eq!(
            settings.cdr_columns.as_deref(),
            Some(fs.cdr_column_names().as_slice())
        );
        let layout = settings.csv_layout().expect("layout");
        assert_eq!(layout.columns, fs.cdr_column_names());
        assert_eq!(
            fs.file_source().map(|s| source_name(&s)).as_deref(),
            Some("freeswitch-cdr:/var/log/freeswitch/cdr-csv/Master.csv")
        );
        let rules = call_rules(&config, fs).expect("rules");
        assert_eq!(rules.inbound_contexts, ["from-carrier"]);
        assert_eq!(rules.outbound_contexts, ["default"]);
    }

    #[test]
    fn originate_section_and_callcenter_names_map_onto_the_control() {
        let config = config();
        let fs = config.freeswitch.as_ref().expect("[freeswitch]");
        let o = originate_settings(fs);
        assert_eq!(o.agent_endpoint, "sofia/internal/{extension}%127.0.0.1");
        assert_eq!(o.number_format, FsNumberFormat::National);
        assert_eq!(
            (o.context.as_str(), o.dialplan.as_str()),
            ("default", "XML")
        );
        assert_eq!(o.timeout_ms, 20_500);
        let names = callcenter_agents(&config);
        assert_eq!(names.get("100@default").map(String::as_str), Some("100"));
        assert_eq!(names.get("101").map(String::as_str), Some("101"));
    }

    #[test]
    fn event_socket_errors_become_the_http_api_s_answers() {
        use super::super::esl::EslError;
        assert_eq!(
            esl_error(EslError::NotConnected {
                reason: "connecting".into()
            }),
            PbxError::NotConnected
        );
        assert_eq!(esl_error(EslError::Closed), PbxError::NotConnected);
        match esl_error(EslError::CommandFailed {
            command: "bgapi originate".into(),
            message: "-ERR no such command".into(),
        }) {
            PbxError::Refused(text) => assert!(text.contains("no such command"), "{text}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_cdr_status_line_says_whether_the_directory_is_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = json_cdr_line(dir.path());
        assert!(line.ends_with(": readable"), "{line}");
        let missing = dir.path().join("nope");
        assert!(json_cdr_line(&missing).ends_with(": not there yet"));
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("file");
        assert!(json_cdr_line(&file).ends_with(": not a directory"));
    }

    #[test]
    fn freeswitch_recording_url_template_names_the_recording_of_a_real_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal)
                .expect("store"),
        );
        let text = CONFIG
            .replace(
                "call_log_source = \"cdr_csv\"",
                "call_log_source = \"json_cdr\"\njson_cdr_dir = \"/nonexistent\"\n\
                 recording_url_template = \"https://rec.example/{year}/{month}/{day}?f={file}&leg={uniqueid}&call={linkedid}\"",
            )
            .replace("inbound_contexts = [\"from-carrier\"]", "");
        let config = Config::parse(&text).expect("config");
        let fs = config.freeswitch.as_ref().expect("[freeswitch]");
        assert_eq!(
            call_rules(&config, fs)
                .expect("rules")
                .recording_url_template
                .as_deref(),
            fs.recording_url_template.as_deref()
        );
        // The rig's answered inbound call, recorded by the dialplan (record_path on its legs).
        let legs = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/freeswitch/answered_inbound/json_cdr");
        let mut import = crate::pbx::import_source(
            &config,
            store.clone(),
            Arc::new(tokio::sync::Notify::new()),
            "import-test".into(),
        )
        .expect("importer");
        assert_eq!(import.import_file(&legs).expect("import"), 1);
        let bodies = store.bodies("pending").expect("bodies");
        let call: CallRecord = serde_json::from_str(&bodies[0]).expect("a call record");
        let day = call.start.format("%Y/%m/%d").to_string();
        assert_eq!(
            call.recording_url.as_deref(),
            Some(
                format!(
                    "https://rec.example/{day}?f=/usr/local/freeswitch/recordings/2026-12-01/\
                     bcc77915-8cf9-4441-8633-7c068ba183cd.wav&leg=bcc77915-8cf9-4441-8633-7c068ba183cd\
                     &call={}",
                    call.call_id
                )
                .as_str()
            )
        );
    }

    #[test]
    fn without_its_own_template_freeswitch_takes_asterisk_s_and_its_own_wins() {
        let asterisk = "[asterisk]\ncdr_csv = \"/var/log/asterisk/cdr-csv/Master.csv\"\n\
                        recording_url_template = \"https://ast.example/{file}\"\n";
        let both = Config::parse(&format!("{CONFIG}\n{asterisk}")).expect("config");
        let fs = both.freeswitch.as_ref().expect("[freeswitch]");
        assert_eq!(
            call_rules(&both, fs)
                .expect("rules")
                .recording_url_template
                .as_deref(),
            Some("https://ast.example/{file}")
        );
        let own = CONFIG.replace(
            "cdr_template = \"snom\"",
            "cdr_template = \"snom\"\nrecording_url_template = \"https://fs.example/{file}\"",
        );
        let both = Config::parse(&format!("{own}\n{asterisk}")).expect("config");
        let fs = both.freeswitch.as_ref().expect("[freeswitch]");
        assert_eq!(
            call_rules(&both, fs)
                .expect("rules")
                .recording_url_template
                .as_deref(),
            Some("https://fs.example/{file}")
        );
        let alone = Config::parse(CONFIG).expect("config");
        let fs = alone.freeswitch.as_ref().expect("[freeswitch]");
        assert_eq!(
            call_rules(&alone, fs)
                .expect("rules")
                .recording_url_template,
            None
        );
    }

    #[test]
    fn import_of_a_real_json_cdr_directory_queues_one_call_for_its_legs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            Store::open(&dir.path().join("s.db"), crate::config::Synchronous::Normal)
                .expect("store"),
        );
        let text = CONFIG.replace(
            "call_log_source = \"cdr_csv\"",
            "call_log_source = \"json_cdr\"\njson_cdr_dir = \"/nonexistent\"",
        );
        let text = text.replace("inbound_contexts = [\"from-carrier\"]", "");
        let config = Config::parse(&text).expect("config");
        // The rig's answered inbound call: three legs (caller, agent, the agent phone's loop).
        let legs = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/freeswitch/answered_inbound/json_cdr");
        let mut import = crate::pbx::import_source(
            &config,
            store.clone(),
            Arc::new(tokio::sync::Notify::new()),
            "import-test".into(),
        )
        .expect("importer");
        assert_eq!(import.import_file(&legs).expect("import"), 1);
        // Read again: the same call is not queued twice.
        assert_eq!(import.import_file(&legs).expect("import"), 0);
    }
}

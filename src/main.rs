//! The `pbxlink` command: the daemon and its operator commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use pbxlink::config::{Config, ConfigError};
use pbxlink::outbox::Store;

/// Connects an Asterisk PBX to the LeadSquared CRM: call logs, with an offline-safe outbox.
#[derive(Parser)]
#[command(name = "pbxlink", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `pbxlink demo --pbx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DemoPbxArg {
    /// Asterisk: Master.csv and AMI.
    Asterisk,
    /// FreeSWITCH: mod_json_cdr files and the event socket.
    Freeswitch,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (tail CDRs, deliver call logs) until SIGTERM.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file; print every problem with its key (exit 1 on error).
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
    },
    /// Run the whole pipeline against a built-in PBX simulator and a local CRM stand-in.
    Demo {
        /// Seconds to wait after a call's last CDR row (the real default is 5; Asterisk).
        #[arg(long, default_value_t = 1)]
        settle_secs: u64,
        /// The PBX to simulate: `asterisk` (Master.csv + AMI) or `freeswitch` (json_cdr +
        /// event socket, click to call and a disposition).
        #[arg(long, value_enum, default_value_t = DemoPbxArg::Asterisk)]
        pbx: DemoPbxArg,
    },
    /// Show the outbox: depth by state, oldest pending age, last delivery, last error.
    Status {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List or retry call logs the CRM refused.
    DeadLetter {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Feed old CDR files through the pipeline (calls already queued or delivered are skipped);
    /// shows progress (a bar on a terminal) and sums up what was found.
    Import {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
        /// Seconds between progress lines when stderr is not a terminal (a terminal gets a bar).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        progress_every: u64,
        /// CDR files in the configured format (FreeSWITCH: json_cdr directories or files too).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the man pages (pbxlink.1, pbxlink-<command>.1) into DIR (the package build runs it).
    #[command(hide = true)]
    Manpage { dir: PathBuf },
    /// Print the completion script for SHELL (the package build runs it for bash and zsh).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// List dead-lettered call logs with the CRM's answer.
    List {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
    },
    /// Queue one dead-lettered call log again.
    Retry {
        /// The row id from `dead-letter list`.
        id: i64,
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
    },
    /// Queue every dead-lettered call log again.
    RetryAll {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    memory::limit_arenas();
    let cli = Cli::parse();
    pbxlink::service::logging::init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pbxlink: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads of the runtime: the daemon's work is I/O and short SQLite transactions,
/// which two workers keep up with (benches/live.rs `-- footprint`); each more costs its
/// stack and a malloc arena.
const WORKER_THREADS: usize = 2;
/// Threads for blocking calls (store transactions, file opens): short jobs, a few at once.
const MAX_BLOCKING_THREADS: usize = 8;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The allocator settings of a small daemon (glibc): few malloc arenas, and memory handed
/// back to the system after a peak instead of kept for the next one.
mod memory {
    use std::time::Duration;

    /// How often freed memory is returned to the system (`malloc_trim`).
    pub const TRIM_EVERY: Duration = Duration::from_secs(2);

    /// At most two malloc arenas (glibc's default is eight per core, each one keeping its
    /// own free memory), and large blocks (read buffers, SQLite's big allocations, a
    /// batch's rows) mapped on their own so that freeing them returns them at once. Called
    /// first thing in `main`, before any thread exists.
    pub fn limit_arenas() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes glibc's allocator parameters; nothing is allocated
        // concurrently (no other thread exists yet).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
        }
    }

    /// Returns the free memory of every arena to the system, every [`TRIM_EVERY`]: after a
    /// burst of events or an import, RSS falls back instead of staying at the peak.
    pub async fn trim_periodically() {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim is thread-safe (it takes each arena's lock).
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(anyhow::Error::from)
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.store.path, config.store.synchronous).context("opening the store")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config: path } => {
            let config = load(&path)?;
            let runtime = runtime()?;
            runtime.spawn(memory::trim_periodically());
            runtime.block_on(pbxlink::daemon::run(config, &path))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => Ok(check_config(&config)),
        Command::Demo { settle_secs, pbx } => {
            let pbx = match pbx {
                DemoPbxArg::Asterisk => pbxlink::demo::DemoPbx::Asterisk,
                DemoPbxArg::Freeswitch => pbxlink::demo::DemoPbx::FreeSwitch,
            };
            runtime()?.block_on(pbxlink::demo::run(pbx, settle_secs))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json } => {
            let config = load(&config)?;
            let store = open_store(&config)?;
            let report = store.status()?;
            // Free space where the store lives: a full disk stops ingestion (not delivery).
            let space = store.space();
            // The running daemon's own counters (AMI, popups, deliveries by status, HTTP)
            // live in its memory: ask its /metrics when the HTTP API is on.
            let live = match &config.http {
                Some(http) => Some(runtime()?.block_on(live_metrics(http))),
                None => None,
            };
            if json {
                let mut value = serde_json::to_value(&report)?;
                if let (Some(map), Some((line, full))) = (value.as_object_mut(), &space) {
                    map.insert(
                        "store_space".into(),
                        serde_json::json!({ "line": line, "disk_full": full }),
                    );
                }
                if let (Some(map), Some(live)) = (value.as_object_mut(), &live) {
                    let live = match live {
                        Ok(samples) => serde_json::json!(
                            samples
                                .iter()
                                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                                .collect::<serde_json::Map<_, _>>()
                        ),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    };
                    map.insert("live".into(), live);
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!(
                    "{}",
                    pbxlink::outbox::store::format_status(&report, chrono::Utc::now())
                );
                if let Some((line, _)) = &space {
                    println!("{line}");
                }
                match &live {
                    Some(Ok(samples)) => {
                        println!("live figures of the running daemon (/metrics):");
                        for (name, value) in samples {
                            println!("  {name} {value}");
                        }
                    }
                    Some(Err(e)) => println!("live figures unavailable: {e:#}"),
                    None => println!("live figures: no [http] table, so no /metrics to ask"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetter { action } => dead_letter(action),
        Command::Manpage { dir } => {
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut public_cli(), "pbxlink", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            config,
            progress_every,
            files,
        } => import(&config, progress_every, &files),
    }
}

/// `pbxlink import`: every file through the configured PBX's importer, its progress on
/// stderr, the summary on stdout.
fn import(path: &Path, progress_every: u64, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use pbxlink::import::{ImportProgress, ImportSummary, RateLimit, ReportStyle, Reporter};
    let config = load(path)?;
    let store = std::sync::Arc::new(open_store(&config)?);
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let progress = std::sync::Arc::new(ImportProgress::default());
    let style = ReportStyle::for_stderr(std::time::Duration::from_secs(progress_every));
    let started = std::time::Instant::now();
    for file in files {
        let name = format!("import:{}", file.display());
        let mut source = pbxlink::pbx::import_source(&config, store.clone(), wake.clone(), name)?;
        source.report_to(progress.clone());
        let before = progress.snapshot();
        let reporter = Reporter::start(progress.clone(), file, style);
        // A FIFO, a device or a refused symbolic link is an error naming the file, never a
        // hang (the file is opened as the daemon opens it).
        let imported = source.import_file(file);
        reporter.finish();
        let queued = imported?;
        let here = progress.snapshot().since(&before);
        println!(
            "{}: {queued} new call(s) queued, {} already delivered or queued, {} skipped, {} corrupt line(s)",
            file.display(),
            here.duplicates,
            here.skipped,
            here.corrupt
        );
    }
    let status = store.status()?;
    let summary = ImportSummary {
        figures: progress.snapshot(),
        pending: status.pending,
        rate: RateLimit {
            requests: config.leadsquared.rate_limit_requests,
            period: std::time::Duration::from_millis(config.leadsquared.rate_limit_period_ms),
        },
        elapsed: started.elapsed(),
    };
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// The CLI as users see it: the command without the hidden ones the package build runs
/// (completion scripts would offer hidden commands too).
fn public_cli() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("pbxlink")
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .subcommands(visible)
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if let Err(problem) = config.credentials() {
                println!("{}: {problem}", path.display());
                return ExitCode::FAILURE;
            }
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { path, problems }) => {
            for p in problems {
                println!("{}: {}: {}", path.display(), p.key, p.message);
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn dead_letter(action: DeadLetterAction) -> anyhow::Result<ExitCode> {
    match action {
        DeadLetterAction::List { config } => {
            let store = open_store(&load(&config)?)?;
            let dead = store.dead_letters()?;
            if dead.is_empty() {
                println!("no dead letters");
            }
            for d in dead {
                let created = chrono::DateTime::from_timestamp_millis(d.created_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                println!(
                    "{}\tcall {}\tqueued {}\tattempts {}\tHTTP {}\t{}",
                    d.id,
                    d.call_id,
                    created,
                    d.attempts,
                    d.last_status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    d.last_error.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterAction::Retry { id, config } => {
            let n = open_store(&load(&config)?)?.retry_dead(Some(id))?;
            if n == 0 {
                println!("no dead letter with id {id}");
                return Ok(ExitCode::FAILURE);
            }
            println!("dead letter {id} queued again");
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterAction::RetryAll { config } => {
            let n = open_store(&load(&config)?)?.retry_dead(None)?;
            println!("{n} dead letter(s) queued again");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The samples of the running daemon's `/metrics` (`name{labels}` → value), asked on the
/// loopback with the configured token.
async fn live_metrics(http: &pbxlink::config::HttpConfig) -> anyhow::Result<Vec<(String, String)>> {
    let mut addr = http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}/metrics");
    // Our own daemon on this host: its certificate is for the public name, not the address.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .danger_accept_invalid_certs(true)
        .build()?;
    let mut request = client.get(&url);
    if let Some(token) = http.resolve_token()? {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("the daemon does not answer at {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        text.trim()
    );
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

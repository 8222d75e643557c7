//! The `pbxlink` command: the daemon and its operator commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use pbxlink::config::{Config, ConfigError};
use pbxlink::outbox::Store;

/// Connects an Asterisk PBX to the LeadSquared CRM: call logs, with an offline-safe outbox.
#[derive(Parser)]
#[command(name = "pbxlink", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// Seconds to wait after a call's last CDR row (the real default is 5).
        #[arg(long, default_value_t = 1)]
        settle_secs: u64,
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
    /// Feed old CDR files through the pipeline (calls already queued or delivered are skipped).
    Import {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/pbxlink/pbxlink.toml")]
        config: PathBuf,
        /// CDR files in the configured format.
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
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
            runtime()?.block_on(pbxlink::daemon::run(config, &path))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => Ok(check_config(&config)),
        Command::Demo { settle_secs } => {
            runtime()?.block_on(pbxlink::demo::run(settle_secs))?;
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
        Command::Import { config, files } => {
            let config = load(&config)?;
            let store = std::sync::Arc::new(open_store(&config)?);
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            let mut total = 0;
            for file in &files {
                let name = format!("import:{}", file.display());
                let mut source =
                    pbxlink::pbx::import_source(&config, store.clone(), wake.clone(), name)?;
                // A FIFO, a device or a refused symbolic link is an error naming the file,
                // never a hang (the file is opened as the daemon opens it).
                let queued = source.import_file(file)?;
                println!("{}: {queued} new call(s) queued", file.display());
                total += queued;
            }
            let status = store.status()?;
            println!(
                "{total} new call(s) queued; {} pending in the outbox. The running daemon delivers them.",
                status.pending
            );
            Ok(ExitCode::SUCCESS)
        }
    }
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

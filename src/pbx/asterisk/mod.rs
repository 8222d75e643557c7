//! Asterisk: CDR files (cdr_csv, cdr_custom) turned into calls.

pub mod ami;
pub mod assemble;
pub mod cdr;
pub mod control;
pub mod live;
pub mod tracker;
pub mod wiring;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::call::{CallRules, Directory};
use crate::config::{AsteriskConfig, Config};
use crate::outbox::Store;
use crate::pipeline::{FileSource, LineParser};
use assemble::AsteriskAssembler;
use cdr::{CdrParser, ColumnLayout};

impl LineParser for CdrParser {
    type Record = cdr::CdrRow;
    type Error = cdr::CdrError;

    fn parse(
        &self,
        line: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Self::Record>, Self::Error> {
        self.parse_within(line, &crate::call::TimeWindow::at(now))
    }
}

/// The pipeline of an Asterisk CDR file.
pub type AsteriskCdrSource = FileSource<CdrParser, AsteriskAssembler>;

/// Why an Asterisk source could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `[asterisk] cdr_csv` is not set.
    #[error("[asterisk] cdr_csv is not set")]
    NoCdrFile,
    /// A configuration value is unusable (validation should have caught it).
    #[error("{0}")]
    Invalid(String),
}

/// The name under which an Asterisk CDR file's offset and staged rows are stored.
pub fn source_name(path: &std::path::Path) -> String {
    format!("asterisk-cdr:{}", path.display())
}

/// The call rules of `[asterisk]`, shared by the CDR assembler and the AMI tracker.
pub fn call_rules(ast: &AsteriskConfig) -> CallRules {
    CallRules {
        inbound_contexts: ast.inbound_contexts.clone(),
        outbound_contexts: ast.outbound_contexts.clone(),
        voicemail_apps: ast.voicemail_apps.clone(),
        outbound_display_number: ast.outbound_display_number.clone(),
        outbound_dial_prefix: ast.outbound_dial_prefix.clone(),
        recording_url_template: ast.recording_url_template.clone(),
        recordings: None,
        transfer_logs: ast.transfer_logs,
    }
}

/// [`call_rules`] with the signed recording links of `[recordings]`, when configured.
pub fn call_rules_with_links(config: &Config) -> Result<CallRules, SourceError> {
    let mut rules = call_rules(
        config
            .asterisk
            .as_ref()
            .unwrap_or(&AsteriskConfig::default()),
    );
    rules.recordings = crate::recordings::RecordingLinks::from_config(config)
        .map_err(|e| SourceError::Invalid(e.to_string()))?;
    Ok(rules)
}

/// Builds the CDR parser for `[asterisk]`.
pub fn cdr_parser(ast: &AsteriskConfig) -> Result<CdrParser, SourceError> {
    let tz = ast.cdr_time_zone.zone().ok_or_else(|| {
        SourceError::Invalid(format!("bad cdr_time_zone {:?}", ast.cdr_time_zone))
    })?;
    let layout = match ast.custom_columns() {
        None => None,
        Some(names) => {
            Some(ColumnLayout::from_names(names).map_err(|e| SourceError::Invalid(e.to_string()))?)
        }
    };
    Ok(CdrParser::new(layout, tz))
}

/// Builds the pipeline that tails `[asterisk] cdr_csv` (or imports `path` when given).
pub fn cdr_source(
    config: &Config,
    store: Arc<Store>,
    wake_delivery: Arc<Notify>,
    name_override: Option<String>,
) -> Result<AsteriskCdrSource, SourceError> {
    let ast = config.asterisk.as_ref().ok_or(SourceError::NoCdrFile)?;
    let path: PathBuf = ast.cdr_csv.clone().ok_or(SourceError::NoCdrFile)?;
    let directory =
        Directory::from_config(config).map_err(|e| SourceError::Invalid(e.to_string()))?;
    let name = name_override.unwrap_or_else(|| source_name(&path));
    let assembler = AsteriskAssembler::new(
        name.clone(),
        directory,
        call_rules_with_links(config)?,
        ast.settle_ms,
        ast.max_call_secs,
    );
    Ok(FileSource::new(
        name,
        path,
        store,
        cdr_parser(ast)?,
        assembler,
        wake_delivery,
    )
    .with_file_rules(ast.cdr_follow_symlink, ast.start_at))
}

//! Asterisk: CDR files (cdr_csv, cdr_custom) turned into calls.

pub mod ami;
pub mod assemble;
pub mod cdr;
pub mod live;
pub mod tracker;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::call::Directory;
use crate::config::{AsteriskConfig, Config};
use crate::outbox::Store;
use crate::pipeline::FileSource;
use assemble::{AsteriskAssembler, ClassifyRules};
use cdr::{CdrParser, ColumnLayout};

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
    let mut rules = ClassifyRules::from_config(ast);
    rules.recordings = crate::recordings::RecordingLinks::from_config(config)
        .map_err(|e| SourceError::Invalid(e.to_string()))?;
    let assembler = AsteriskAssembler::new(
        name.clone(),
        directory,
        rules,
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

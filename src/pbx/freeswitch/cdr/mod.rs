//! FreeSWITCH call logs from CDR files: the leg model both file formats are read into, and
//! mod_cdr_csv's `Master.csv`.
//!
//! - [`leg`]: [`FsLeg`], one leg as a CDR recorded it (what is staged in the store), and how
//!   a hangup cause reads as a dial attempt ([`dial_result`]).
//! - [`vars`]: a leg from its channel variables (json_cdr `variables`, cdr_csv columns);
//!   times from `*_uepoch`, `*_epoch`, then `*_stamp` in `cdr_time_zone`.
//! - [`csv`]: cdr_csv lines of a template ([`FsCsvParser`], a [`crate::pipeline::LineParser`],
//!   so `Master.csv` is tailed by the same pipeline as Asterisk's, rotation included).
//! - [`templates`]: the stock templates by name and pbxlink's recommended one.
//!
//! json_cdr files are in [`super::json_cdr`]; grouping legs into calls in
//! [`super::assemble`].

pub mod csv;
pub mod leg;
pub mod templates;
pub mod vars;

use std::path::PathBuf;

use chrono_tz::Tz;

pub use csv::{CsvError, CsvLayout, FsCsvParser, LayoutError};
pub use leg::{FsLeg, LegDirection, dial_result};
pub use vars::LegError;

use crate::tail::StartAt;

/// The file-source settings of `[freeswitch]`, as a plain struct (the configuration maps
/// `[freeswitch]` onto it).
#[derive(Debug, Clone)]
pub struct FsCdrSettings {
    /// mod_json_cdr's `log-dir` (one file per leg).
    pub json_cdr_dir: PathBuf,
    /// mod_cdr_csv's Master.csv.
    pub cdr_csv: PathBuf,
    /// A template name of mod_cdr_csv's stock cdr_csv.conf.xml (or `pbxlink`); used when
    /// `cdr_columns` is not set.
    pub cdr_template: String,
    /// The `${variables}` of a custom template, in order.
    pub cdr_columns: Option<Vec<String>>,
    /// The zone of `*_stamp` values (epochs are used whenever present).
    pub cdr_time_zone: Tz,
    /// Where a first start begins: existing files (json_cdr) or lines (cdr_csv) are history
    /// with [`StartAt::End`].
    pub start_at: StartAt,
    /// Whether a symbolic link at `cdr_csv` is followed.
    pub follow_symlink: bool,
    /// A call is complete when none of its legs arrived for this long.
    pub settle_ms: u64,
    /// A group of legs without party A's leg is dropped after this long.
    pub max_call_secs: u64,
    /// json_cdr files larger than this are skipped (counted and logged).
    pub max_json_file_bytes: u64,
    /// How often the json_cdr directory is scanned.
    pub poll_ms: u64,
}

impl Default for FsCdrSettings {
    fn default() -> Self {
        Self {
            json_cdr_dir: PathBuf::from("/var/log/freeswitch/json_cdr"),
            cdr_csv: PathBuf::from("/var/log/freeswitch/cdr-csv/Master.csv"),
            cdr_template: "example".into(),
            cdr_columns: None,
            cdr_time_zone: Tz::UTC,
            start_at: StartAt::End,
            follow_symlink: false,
            settle_ms: 3000,
            max_call_secs: 4 * 3600,
            max_json_file_bytes: 1024 * 1024,
            poll_ms: 1000,
        }
    }
}

impl FsCdrSettings {
    /// The cdr_csv layout these settings name (`cdr_columns` wins over `cdr_template`).
    pub fn csv_layout(&self) -> Result<CsvLayout, LayoutError> {
        CsvLayout::new(Some(&self.cdr_template), self.cdr_columns.as_deref())
    }

    /// The cdr_csv parser these settings name.
    pub fn csv_parser(&self) -> Result<FsCsvParser, LayoutError> {
        Ok(FsCsvParser::new(self.csv_layout()?, self.cdr_time_zone))
    }
}

#[cfg(test)]
mod tests;

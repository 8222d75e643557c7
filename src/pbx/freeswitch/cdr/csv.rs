//! Parses one line of mod_cdr_csv's `Master.csv` into an [`FsLeg`].
//!
//! mod_cdr_csv writes a template with every `${variable}` expanded and nothing escaped: the
//! stock templates quote every value (`"${uuid}","${bleg_uuid}"`), some put a space after
//! a comma (`, "${accountcode}"`), and a `"` inside a value is written as it is. A field is
//! therefore read up to the quote that is followed by the separator (or the line's end),
//! so a value with a quote inside survives; an unquoted field runs to the next comma. The
//! number of fields must be the template's.
//!
//! The layout is a [`CsvLayout`]: the `${variables}` of the template in order, from a stock
//! template name ([`super::templates`]) or the configured `cdr_columns`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::leg::FsLeg;
use super::templates;
use super::vars::{LegError, VarReader};
use crate::call::TimeWindow;
use crate::logtext::{EXCERPT_BYTES, excerpt};

/// Longest line accepted (the tailer bounds lines too; this bounds a line given directly).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The columns of a cdr_csv template and the text around them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvLayout {
    /// The variable of each column, in order (`uuid`, `start_epoch` ...); a column that is
    /// not a plain `${variable}` has an empty name and is ignored.
    pub columns: Vec<String>,
    /// Text before the first field (the `sql` template's `INSERT INTO cdr VALUES (`).
    pub prefix: String,
    /// Text after the last field (`);`).
    pub suffix: String,
}

/// Why a layout cannot read a leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Neither a stock template name nor columns.
    #[error(
        "unknown cdr_template {0:?} (stock templates: {known}); or list the template's variables in cdr_columns",
        known = templates::NAMES.join(", ")
    )]
    UnknownTemplate(String),
    /// A column list without `uuid`: legs cannot be grouped.
    #[error("the cdr_csv columns have no uuid column: legs cannot be grouped into calls")]
    NoUuid,
    /// A column list without a start or end time.
    #[error("the cdr_csv columns have no {0} time (one of {0}_uepoch, {0}_epoch, {0}_stamp)")]
    NoTime(&'static str),
    /// An empty column list.
    #[error("cdr_columns is empty")]
    Empty,
    /// A column named twice.
    #[error("cdr_columns names {0:?} twice")]
    Duplicate(String),
}

impl CsvLayout {
    /// The layout of a stock template, or of the columns listed (`${...}` around a name
    /// is allowed and removed).
    pub fn new(template: Option<&str>, columns: Option<&[String]>) -> Result<Self, LayoutError> {
        let layout = match (columns, template) {
            (Some(columns), _) => {
                if columns.is_empty() {
                    return Err(LayoutError::Empty);
                }
                let columns: Vec<String> = columns.iter().map(|c| column_name(c)).collect();
                for (i, c) in columns.iter().enumerate() {
                    if !c.is_empty() && columns[..i].contains(c) {
                        return Err(LayoutError::Duplicate(c.clone()));
                    }
                }
                Self {
                    columns,
                    prefix: String::new(),
                    suffix: String::new(),
                }
            }
            (None, template) => {
                let name = template.unwrap_or("example");
                templates::layout(name).ok_or_else(|| LayoutError::UnknownTemplate(name.into()))?
            }
        };
        let has = |name: &str| layout.columns.iter().any(|c| c == name);
        if !has("uuid") {
            return Err(LayoutError::NoUuid);
        }
        for base in ["start", "end"] {
            let found = ["uepoch", "epoch", "stamp"]
                .iter()
                .any(|kind| has(&format!("{base}_{kind}")));
            if !found {
                return Err(LayoutError::NoTime(if base == "start" {
                    "start"
                } else {
                    "end"
                }));
            }
        }
        Ok(layout)
    }

    /// The layout of a template's text (`"${a}","${b}"`): the name of each field's single
    /// `${variable}`, empty for a field that is anything else.
    pub fn from_template_text(text: &str) -> Self {
        let text = text.trim_end_matches(['\n', '\r']);
        let first = text.find('"').unwrap_or(0);
        let last = text.rfind('"').map_or(text.len(), |i| i + 1);
        let (prefix, body, suffix) = if first < last {
            (&text[..first], &text[first..last], &text[last..])
        } else {
            ("", text, "")
        };
        let columns = split_fields(body.as_bytes())
            .into_iter()
            .map(|f| column_name(&String::from_utf8_lossy(f)))
            .collect();
        Self {
            columns,
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        }
    }
}

/// `${name}` → `name`; a plain `name` stays; anything else (an expression) → empty.
fn column_name(field: &str) -> String {
    let f = field.trim().trim_matches('"').trim();
    let inner = f
        .strip_prefix("${")
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(f);
    let plain = !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        inner.to_owned()
    } else {
        String::new()
    }
}

/// Splits a line into fields; see the module documentation. Quotes around a field are
/// removed.
pub fn split_fields(line: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i] == b' ' {
            i += 1;
        }
        if i < n && line[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            let end = loop {
                match line[j..].iter().position(|&b| b == b'"') {
                    None => break None,
                    Some(k) => {
                        let q = j + k;
                        let mut after = q + 1;
                        while after < n && line[after] == b' ' {
                            after += 1;
                        }
                        if after == n || line[after] == b',' {
                            break Some((q, after));
                        }
                        j = q + 1;
                    }
                }
            };
            match end {
                Some((q, after)) => {
                    fields.push(&line[start..q]);
                    if after == n {
                        return fields;
                    }
                    i = after + 1;
                }
                None => {
                    // An unterminated quote: the rest is one field.
                    fields.push(&line[start..]);
                    return fields;
                }
            }
        } else {
            let end = line[i..].iter().position(|&b| b == b',').map(|k| i + k);
            match end {
                Some(e) => {
                    fields.push(&line[i..e]);
                    i = e + 1;
                }
                None => {
                    fields.push(&line[i..]);
                    return fields;
                }
            }
        }
    }
}

/// Why a line is not a leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// More or fewer fields than the template has.
    #[error("{found} fields, the template has {expected}")]
    FieldCount {
        /// Fields in the line.
        found: usize,
        /// Columns of the template.
        expected: usize,
    },
    /// The template's text around the fields is missing.
    #[error("the line does not start with {0:?} / end with the template's text")]
    Frame(String),
    /// A line longer than [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes, longer than {MAX_LINE_BYTES}")]
    TooLong(usize),
    /// The fields do not make a leg.
    #[error("{0}")]
    Leg(#[from] LegError),
}

/// Parses cdr_csv lines of one layout, stamps in one time zone.
#[derive(Debug, Clone)]
pub struct FsCsvParser {
    layout: CsvLayout,
    time_zone: Tz,
}

impl FsCsvParser {
    /// A parser for `layout` reading `*_stamp` values in `time_zone`.
    pub fn new(layout: CsvLayout, time_zone: Tz) -> Self {
        Self { layout, time_zone }
    }

    /// The layout read.
    pub fn layout(&self) -> &CsvLayout {
        &self.layout
    }

    /// Parses one line (without its newline) read at a time inside `window`. `Ok(None)` for
    /// an empty line.
    pub fn parse_within(&self, line: &[u8], window: TimeWindow) -> Result<Option<FsLeg>, CsvError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(CsvError::TooLong(line.len()));
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        let body = line
            .strip_prefix(self.layout.prefix.as_bytes())
            .and_then(|l| l.strip_suffix(self.layout.suffix.as_bytes()))
            .ok_or_else(|| {
                CsvError::Frame(excerpt(self.layout.prefix.as_bytes(), EXCERPT_BYTES))
            })?;
        let fields = split_fields(body);
        if fields.len() != self.layout.columns.len() {
            return Err(CsvError::FieldCount {
                found: fields.len(),
                expected: self.layout.columns.len(),
            });
        }
        let values: Vec<(&str, String)> = self
            .layout
            .columns
            .iter()
            .zip(fields)
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, f)| (name.as_str(), String::from_utf8_lossy(f).into_owned()))
            .collect();
        let get = |name: &str| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let reader = VarReader::new(&get, self.time_zone, window);
        let leg = reader.leg((None, None, None))?;
        Ok(Some(leg))
    }
}

impl crate::pipeline::LineParser for FsCsvParser {
    type Record = FsLeg;
    type Error = CsvError;

    fn parse(&self, line: &[u8], now: DateTime<Utc>) -> Result<Option<FsLeg>, CsvError> {
        self.parse_within(line, TimeWindow::at(now))
    }
}

//! Parses one line of an Asterisk CDR file (cdr_csv `Master.csv` or cdr_custom) into a [`CdrRow`].
//!
//! cdr_csv writes 16 fixed columns, then `uniqueid` (loguniqueid), `userfield` (loguserfield)
//! and `peeraccount, linkedid, sequence` (newcdrcolumns), so the layout is told by the column
//! count. cdr_custom writes whatever its template says, so the layout is named in the config.
//! Every line is parsed on its own: a corrupt line can never swallow its neighbours.
//!
//! A time outside [`TimeWindow`] (before 2000, or more than a day past the clock: a PBX
//! with a broken clock, a line from another file) makes the line corrupt rather than a call.
//! Error texts show at most [`EXCERPT_BYTES`] of any value, escaped.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::call::TimeWindow;
use crate::logtext::{EXCERPT_BYTES, excerpt};

/// A value of a line as an error text shows it: bounded and escaped.
fn shown(value: &str) -> String {
    excerpt(value.as_bytes(), EXCERPT_BYTES)
}

/// A CDR field pbxlink understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `accountcode`
    AccountCode,
    /// `src`: the caller id number.
    Src,
    /// `dst`: the dialled extension.
    Dst,
    /// `dcontext`: the dialplan context of `dst`.
    DContext,
    /// `clid`: `"Name" <number>`.
    Clid,
    /// `channel`: party A's channel.
    Channel,
    /// `dstchannel`: party B's channel.
    DstChannel,
    /// `lastapp`
    LastApp,
    /// `lastdata`
    LastData,
    /// `start`
    Start,
    /// `answer` (empty when not answered)
    Answer,
    /// `end`
    End,
    /// `duration` in seconds
    Duration,
    /// `billsec` in seconds
    Billsec,
    /// `disposition`
    Disposition,
    /// `amaflags`
    AmaFlags,
    /// `uniqueid` of party A's channel
    UniqueId,
    /// `userfield`
    UserField,
    /// `peeraccount`
    PeerAccount,
    /// `linkedid`: one id for the whole call
    LinkedId,
    /// `sequence`
    Sequence,
    /// `recordingfile` (FreePBX's name; a cdr_custom column)
    RecordingFile,
    /// `leadid`: the LeadSquared lead id set by click-to-call (a cdr_custom column)
    LeadId,
}

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        Some(match name.to_ascii_lowercase().as_str() {
            "accountcode" => Field::AccountCode,
            "src" => Field::Src,
            "dst" => Field::Dst,
            "dcontext" => Field::DContext,
            "clid" => Field::Clid,
            "channel" => Field::Channel,
            "dstchannel" => Field::DstChannel,
            "lastapp" => Field::LastApp,
            "lastdata" => Field::LastData,
            "start" => Field::Start,
            "answer" => Field::Answer,
            "end" => Field::End,
            "duration" => Field::Duration,
            "billsec" => Field::Billsec,
            "disposition" => Field::Disposition,
            "amaflags" => Field::AmaFlags,
            "uniqueid" => Field::UniqueId,
            "userfield" => Field::UserField,
            "peeraccount" => Field::PeerAccount,
            "linkedid" => Field::LinkedId,
            "sequence" => Field::Sequence,
            "recordingfile" => Field::RecordingFile,
            "leadid" => Field::LeadId,
            _ => return None,
        })
    }
}

const STANDARD: [Field; 16] = [
    Field::AccountCode,
    Field::Src,
    Field::Dst,
    Field::DContext,
    Field::Clid,
    Field::Channel,
    Field::DstChannel,
    Field::LastApp,
    Field::LastData,
    Field::Start,
    Field::Answer,
    Field::End,
    Field::Duration,
    Field::Billsec,
    Field::Disposition,
    Field::AmaFlags,
];

/// Which field each column holds; `None` columns are kept in [`CdrRow::extra`] under their name.
#[derive(Debug, Clone)]
pub struct ColumnLayout {
    columns: Vec<(String, Option<Field>)>,
}

/// Why a column list is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A column every call log needs is missing.
    #[error("the column list lacks {0:?}, which every call log needs")]
    Missing(&'static str),
    /// The same field is named twice.
    #[error("column {0:?} is listed twice")]
    Duplicate(String),
}

impl ColumnLayout {
    /// A cdr_custom layout from the configured column names.
    pub fn from_names(names: &[String]) -> Result<Self, LayoutError> {
        let mut seen = std::collections::HashSet::new();
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let name = name.trim().to_ascii_lowercase();
            if !seen.insert(name.clone()) {
                return Err(LayoutError::Duplicate(name));
            }
            let field = Field::from_name(&name);
            columns.push((name, field));
        }
        // The columns every call log needs are the config's rule for cdr_columns.
        for any_of in crate::config::ASTERISK_CDR_COLUMNS.required {
            if !any_of.iter().any(|name| seen.contains(*name)) {
                return Err(LayoutError::Missing(any_of.first().copied().unwrap_or("")));
            }
        }
        Ok(Self { columns })
    }

    /// The cdr_csv layout for a line with `count` columns. 17 and 20 are ambiguous
    /// (uniqueid or userfield alone); `extra_is_uniqueid` tells which.
    fn cdr_csv(count: usize, extra_is_uniqueid: bool) -> Option<Self> {
        let mut fields: Vec<Field> = STANDARD.to_vec();
        let one_extra = if extra_is_uniqueid {
            Field::UniqueId
        } else {
            Field::UserField
        };
        match count {
            16 => {}
            17 => fields.push(one_extra),
            18 => fields.extend([Field::UniqueId, Field::UserField]),
            19 => fields.extend([Field::PeerAccount, Field::LinkedId, Field::Sequence]),
            20 => fields.extend([
                one_extra,
                Field::PeerAccount,
                Field::LinkedId,
                Field::Sequence,
            ]),
            21 => fields.extend([
                Field::UniqueId,
                Field::UserField,
                Field::PeerAccount,
                Field::LinkedId,
                Field::Sequence,
            ]),
            _ => return None,
        }
        Some(Self {
            columns: fields
                .into_iter()
                .map(|f| (String::new(), Some(f)))
                .collect(),
        })
    }
}

/// Asterisk's CDR disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// `ANSWERED`
    Answered,
    /// `NO ANSWER`
    NoAnswer,
    /// `BUSY`
    Busy,
    /// `FAILED`
    Failed,
    /// `CONGESTION`
    Congestion,
}

impl Disposition {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.trim() {
            "ANSWERED" => Disposition::Answered,
            "NO ANSWER" => Disposition::NoAnswer,
            "BUSY" => Disposition::Busy,
            "FAILED" => Disposition::Failed,
            "CONGESTION" => Disposition::Congestion,
            _ => return None,
        })
    }
}

/// One CDR row: one pair of parties that met (or tried to) during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrRow {
    /// `accountcode`
    pub accountcode: String,
    /// `src`: caller id number of party A.
    pub src: String,
    /// `dst`: the extension dialled.
    pub dst: String,
    /// `dcontext`: the context of `dst`.
    pub dcontext: String,
    /// `clid`: `"Name" <number>`.
    pub clid: String,
    /// Party A's channel, e.g. `PJSIP/trunk-00000001`.
    pub channel: String,
    /// Party B's channel, empty when nobody was dialled.
    pub dstchannel: String,
    /// The last application party A ran.
    pub lastapp: String,
    /// Its arguments.
    pub lastdata: String,
    /// Start, in UTC.
    pub start: DateTime<Utc>,
    /// Answer, in UTC; None when not answered.
    pub answer: Option<DateTime<Utc>>,
    /// End, in UTC.
    pub end: DateTime<Utc>,
    /// Seconds from start to end.
    pub duration: u64,
    /// Seconds from answer to end.
    pub billsec: u64,
    /// How this leg ended.
    pub disposition: Disposition,
    /// Party A's uniqueid.
    pub uniqueid: Option<String>,
    /// `userfield`
    pub userfield: Option<String>,
    /// The whole call's id (newcdrcolumns or cdr_custom).
    pub linkedid: Option<String>,
    /// CDR sequence number.
    pub sequence: Option<u64>,
    /// Recording file name.
    pub recordingfile: Option<String>,
    /// LeadSquared lead id.
    pub leadid: Option<String>,
    /// Columns pbxlink does not interpret, by name (cdr_custom only).
    pub extra: BTreeMap<String, String>,
}

impl CdrRow {
    /// The caller id name from `clid` (`"Name" <number>` → `Name`), if any.
    pub fn caller_name(&self) -> Option<&str> {
        let name = match self.clid.rfind('<') {
            Some(i) => self.clid[..i].trim(),
            None => return None,
        };
        let name = name.trim_matches('"').trim();
        (!name.is_empty()).then_some(name)
    }

    /// The caller id number from `clid`, if it carries one in angle brackets.
    pub fn clid_number(&self) -> Option<&str> {
        let open = self.clid.rfind('<')?;
        let close = self.clid[open..].find('>')? + open;
        let number = self.clid[open + 1..close].trim();
        (!number.is_empty()).then_some(number)
    }
}

/// Why a CDR line was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CdrError {
    /// The CSV itself is broken (e.g. an unterminated quote).
    #[error("malformed CSV: {0}")]
    Csv(String),
    /// The number of columns fits no known layout.
    #[error("{found} columns, expected {expected}")]
    ColumnCount {
        /// Columns in the line.
        found: usize,
        /// What the layout wants.
        expected: String,
    },
    /// A field holds a value that cannot be right.
    #[error("column {column}: {message}")]
    Field {
        /// The column's name.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A time is before 2000 or more than a day ahead of the clock.
    #[error("column {column}: {time} is outside {} to {} (before 2000 or more than a day ahead of the clock)", .window.earliest().format("%Y-%m-%d"), .window.latest().format("%Y-%m-%d %H:%M:%S UTC"))]
    TimeOutOfRange {
        /// The column's name.
        column: &'static str,
        /// The time found, in UTC.
        time: DateTime<Utc>,
        /// The window it had to be in.
        window: TimeWindow,
    },
}

/// Parses CDR lines of one file. Holds one CSV reader, reused for every line.
#[derive(Debug)]
pub struct CdrParser {
    custom: Option<ColumnLayout>,
    time_zone: Tz,
    reader: std::cell::RefCell<csv_core::Reader>,
}

impl Clone for CdrParser {
    fn clone(&self) -> Self {
        Self::new(self.custom.clone(), self.time_zone)
    }
}

const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

impl CdrParser {
    /// A parser for cdr_csv (`custom` None) or cdr_custom lines whose times are in `time_zone`.
    pub fn new(custom: Option<ColumnLayout>, time_zone: Tz) -> Self {
        Self {
            custom,
            time_zone,
            reader: std::cell::RefCell::new(csv_core::Reader::new()),
        }
    }

    /// Splits one line into its fields (quotes removed, doubled quotes undone).
    fn split(&self, line: &[u8]) -> Result<Vec<String>, CdrError> {
        use csv_core::ReadRecordResult;
        let mut reader = self.reader.borrow_mut();
        reader.reset();
        let mut output = vec![0u8; line.len() + 1];
        let mut ends = vec![0usize; 32];
        let (mut input, mut out_len, mut end_len) = (line, 0usize, 0usize);
        let mut at_eof = false;
        loop {
            let (result, read, written, ended) =
                reader.read_record(input, &mut output[out_len..], &mut ends[end_len..]);
            input = &input[read..];
            out_len += written;
            end_len += ended;
            match result {
                ReadRecordResult::InputEmpty if !at_eof => at_eof = true,
                ReadRecordResult::InputEmpty | ReadRecordResult::End => {
                    return Err(CdrError::Csv("empty line".into()));
                }
                ReadRecordResult::OutputFull => output.resize(output.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                ReadRecordResult::Record => break,
            }
        }
        let mut start = 0;
        Ok(ends[..end_len]
            .iter()
            .map(|&end| {
                let field = String::from_utf8_lossy(&output[start..end]).into_owned();
                start = end;
                field
            })
            .collect())
    }

    /// Parses one line (without its newline) read now. `Ok(None)` for a header line.
    pub fn parse(&self, line: &[u8]) -> Result<Option<CdrRow>, CdrError> {
        self.parse_within(line, &TimeWindow::at(Utc::now()))
    }

    /// Parses one line whose times must fall in `window` (computed once per batch of
    /// lines). `Ok(None)` for a header line.
    pub fn parse_within(
        &self,
        line: &[u8],
        window: &TimeWindow,
    ) -> Result<Option<CdrRow>, CdrError> {
        // A quote left open swallows the rest of the line into one field; the CSV reader
        // accepts that silently, so look for it: a real CDR field never holds a newline or
        // ends the record inside quotes.
        if unbalanced_quotes(line) {
            return Err(CdrError::Csv("unterminated quoted field".into()));
        }
        let fields = self.split(line)?;
        if self.custom.is_none() && fields.first().map(String::as_str) == Some("accountcode") {
            return Ok(None);
        }
        let layout = match &self.custom {
            Some(layout) => {
                if fields.len() != layout.columns.len() {
                    return Err(CdrError::ColumnCount {
                        found: fields.len(),
                        expected: layout.columns.len().to_string(),
                    });
                }
                if fields
                    .iter()
                    .zip(&layout.columns)
                    .all(|(v, (n, _))| v.eq_ignore_ascii_case(n))
                {
                    return Ok(None);
                }
                std::borrow::Cow::Borrowed(layout)
            }
            None => {
                let extra_is_uniqueid = fields.get(16).is_some_and(|v| looks_like_uniqueid(v));
                std::borrow::Cow::Owned(
                    ColumnLayout::cdr_csv(fields.len(), extra_is_uniqueid).ok_or(
                        CdrError::ColumnCount {
                            found: fields.len(),
                            expected: "16 to 21 (cdr_csv)".into(),
                        },
                    )?,
                )
            }
        };
        self.build(&layout, fields, window).map(Some)
    }

    fn build(
        &self,
        layout: &ColumnLayout,
        fields: Vec<String>,
        window: &TimeWindow,
    ) -> Result<CdrRow, CdrError> {
        let mut row = RowBuilder::default();
        for ((name, field), value) in layout.columns.iter().zip(fields) {
            match field {
                Some(field) => {
                    row.values.insert(*field, value);
                }
                None => {
                    row.extra.insert(name.clone(), value);
                }
            }
        }
        let take = |row: &mut RowBuilder, f: Field| row.values.remove(&f).unwrap_or_default();
        let opt = |row: &mut RowBuilder, f: Field| {
            row.values
                .remove(&f)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let start_text = take(&mut row, Field::Start);
        let start = self.time(&start_text, "start")?.ok_or(CdrError::Field {
            column: "start",
            message: "is empty".into(),
        })?;
        let end_text = take(&mut row, Field::End);
        let end = self.time(&end_text, "end")?.ok_or(CdrError::Field {
            column: "end",
            message: "is empty".into(),
        })?;
        let answer_text = take(&mut row, Field::Answer);
        let answer = self.time(&answer_text, "answer")?;
        for (column, time) in [
            ("start", Some(start)),
            ("answer", answer),
            ("end", Some(end)),
        ] {
            if let Some(time) = time.filter(|t| !window.contains(*t)) {
                return Err(CdrError::TimeOutOfRange {
                    column,
                    time,
                    window: *window,
                });
            }
        }
        let disposition_text = take(&mut row, Field::Disposition);
        let disposition = Disposition::parse(&disposition_text).ok_or(CdrError::Field {
            column: "disposition",
            message: format!("unknown disposition \"{}\"", shown(&disposition_text)),
        })?;
        let duration = seconds(row.values.remove(&Field::Duration), "duration")?
            .unwrap_or_else(|| u64::try_from((end - start).num_seconds()).unwrap_or(0));
        let billsec =
            seconds(row.values.remove(&Field::Billsec), "billsec")?.unwrap_or_else(|| {
                answer.map_or(0, |a| u64::try_from((end - a).num_seconds()).unwrap_or(0))
            });
        let sequence = seconds(row.values.remove(&Field::Sequence), "sequence")?;
        if end < start {
            return Err(CdrError::Field {
                column: "end",
                message: format!(
                    "\"{}\" is before start \"{}\"",
                    shown(&end_text),
                    shown(&start_text)
                ),
            });
        }
        Ok(CdrRow {
            accountcode: take(&mut row, Field::AccountCode),
            src: take(&mut row, Field::Src).trim().to_owned(),
            dst: take(&mut row, Field::Dst).trim().to_owned(),
            dcontext: take(&mut row, Field::DContext),
            clid: take(&mut row, Field::Clid),
            channel: take(&mut row, Field::Channel),
            dstchannel: take(&mut row, Field::DstChannel),
            lastapp: take(&mut row, Field::LastApp),
            lastdata: take(&mut row, Field::LastData),
            start,
            answer,
            end,
            duration,
            billsec,
            disposition,
            uniqueid: opt(&mut row, Field::UniqueId),
            userfield: opt(&mut row, Field::UserField),
            linkedid: opt(&mut row, Field::LinkedId),
            sequence,
            recordingfile: opt(&mut row, Field::RecordingFile),
            leadid: opt(&mut row, Field::LeadId),
            extra: row.extra,
        })
    }

    fn time(&self, text: &str, column: &'static str) -> Result<Option<DateTime<Utc>>, CdrError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let naive =
            NaiveDateTime::parse_from_str(text, TIME_FORMAT).map_err(|e| CdrError::Field {
                column,
                message: format!("\"{}\" is not YYYY-MM-DD HH:MM:SS ({e})", shown(text)),
            })?;
        // In a DST fall-back hour a local time happens twice; Asterisk does not say which,
        // so the earlier one is taken. A time in the spring-forward gap cannot exist.
        match self.time_zone.from_local_datetime(&naive).earliest() {
            Some(t) => Ok(Some(t.with_timezone(&Utc))),
            None => Err(CdrError::Field {
                column,
                message: format!("\"{}\" does not exist in {}", shown(text), self.time_zone),
            }),
        }
    }
}

#[derive(Default)]
struct RowBuilder {
    values: std::collections::HashMap<Field, String>,
    extra: BTreeMap<String, String>,
}

fn seconds(value: Option<String>, column: &'static str) -> Result<Option<u64>, CdrError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| CdrError::Field {
            column,
            message: format!("\"{}\" is not a whole number of seconds", shown(v)),
        }),
    }
}

/// `1706368044.0` or `host-1706368044.0` (a system-name prefix).
fn looks_like_uniqueid(value: &str) -> bool {
    let tail = value.rsplit('-').next().unwrap_or(value);
    let mut parts = tail.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), None)
            if !a.is_empty() && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    )
}

/// True when a quote opened at the start of a field is never closed before the line ends.
fn unbalanced_quotes(line: &[u8]) -> bool {
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if in_quotes {
            if b == b'"' {
                if line.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else if b == b'"' && at_field_start {
            in_quotes = true;
        }
        at_field_start = !in_quotes && b == b',';
        i += 1;
    }
    in_quotes
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn utc_parser() -> CdrParser {
        CdrParser::new(None, chrono_tz::UTC)
    }

    const ANSWERED_18: &str = r#""","1001","1002","from-internal","""karthik"" <1001>","SIP/1001-00000002","SIP/1002-00000003","Dial","SIP/1002,,trIb(func-apply-sipheaders^s^1)","2022-06-17 04:15:03","2022-06-17 04:15:08","2022-06-17 04:15:28",24,19,"ANSWERED","DOCUMENTATION","1655439303.12","""#;

    #[test]
    fn parses_the_18_column_layout() {
        let row = utc_parser()
            .parse(ANSWERED_18.as_bytes())
            .expect("valid")
            .expect("not a header");
        assert_eq!(row.src, "1001");
        assert_eq!(row.dst, "1002");
        assert_eq!(row.clid, r#""karthik" <1001>"#);
        assert_eq!(row.caller_name(), Some("karthik"));
        assert_eq!(row.clid_number(), Some("1001"));
        assert_eq!(row.dstchannel, "SIP/1002-00000003");
        assert_eq!(row.duration, 24);
        assert_eq!(row.billsec, 19);
        assert_eq!(row.disposition, Disposition::Answered);
        assert_eq!(row.uniqueid.as_deref(), Some("1655439303.12"));
        assert_eq!(row.userfield, None);
        assert_eq!(row.linkedid, None);
        assert_eq!(row.start.to_string(), "2022-06-17 04:15:03 UTC");
    }

    #[test]
    fn unanswered_leg_has_no_answer_time() {
        let line = r#""","1001","1002","from-internal","""karthik"" <1001>","SIP/1001-00000001","","Dial","SIP/1002","2022-06-17 04:13:34",,"2022-06-17 04:13:34",0,0,"CONGESTION","DOCUMENTATION","1655439214.5","""#;
        let row = utc_parser()
            .parse(line.as_bytes())
            .expect("valid")
            .expect("row");
        assert_eq!(row.answer, None);
        assert_eq!(row.disposition, Disposition::Congestion);
    }

    #[test]
    fn parses_21_columns_with_prefixed_uniqueid_and_raw_bytes() {
        let mut line = br#""","89245555937","211474","stadion-pstn","""8107924651"#.to_vec();
        line.extend_from_slice(&[0xa5, 0xa5]);
        line.extend_from_slice(br#"b"" <81079246516548>","SIP/211474-00000000","","Hangup","","2024-01-27 15:07:24","2024-01-27 15:07:24","2024-01-27 15:07:51",27,27,"ANSWERED","DOCUMENTATION","mainserverdss-1706368044.0","","","mainserverdss-1706368044.0",0"#);
        let row = utc_parser().parse(&line).expect("valid").expect("row");
        assert_eq!(row.linkedid.as_deref(), Some("mainserverdss-1706368044.0"));
        assert_eq!(row.uniqueid.as_deref(), Some("mainserverdss-1706368044.0"));
        assert_eq!(row.sequence, Some(0));
        assert!(row.clid.contains('\u{fffd}'));
    }

    #[test]
    fn seventeen_columns_tell_uniqueid_from_userfield() {
        let base = r#""","1","2","c","","SIP/a-1","","Hangup","","2024-01-27 15:07:24","","2024-01-27 15:07:25",1,0,"NO ANSWER","DOCUMENTATION""#;
        let p = utc_parser();
        let with_id = p
            .parse(format!("{base},\"1706368044.7\"").as_bytes())
            .expect("valid")
            .expect("row");
        assert_eq!(with_id.uniqueid.as_deref(), Some("1706368044.7"));
        let with_user = p
            .parse(format!("{base},\"vip\"").as_bytes())
            .expect("valid")
            .expect("row");
        assert_eq!(with_user.userfield.as_deref(), Some("vip"));
        assert_eq!(with_user.uniqueid, None);
    }

    #[test]
    fn local_time_zone_is_converted_to_utc() {
        let p = CdrParser::new(None, chrono_tz::Asia::Kolkata);
        let row = p
            .parse(ANSWERED_18.as_bytes())
            .expect("valid")
            .expect("row");
        assert_eq!(row.start.to_string(), "2022-06-16 22:45:03 UTC");
    }

    /// A UTC parser for a cdr_custom layout given as its comma-separated column names.
    fn custom_layout_parser(columns: &str) -> CdrParser {
        let names: Vec<String> = columns.split(',').map(str::to_owned).collect();
        CdrParser::new(
            Some(ColumnLayout::from_names(&names).expect("layout")),
            chrono_tz::UTC,
        )
    }

    #[test]
    fn custom_layout_with_linkedid_and_quoted_numbers() {
        let p = custom_layout_parser(
            "clid,src,dst,dcontext,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,disposition,amaflags,accountcode,uniqueid,userfield,sequence",
        );
        let line = r#""""" <client2>","client2","1234","default","PJSIP/client2-00000004","PJSIP/client1-00000005","Dial","PJSIP/client1","2023-07-26 01:52:11","","2023-07-26 01:52:42","30","0","NO ANSWER","DOCUMENTATION","","1690325531.5","",4"#;
        let row = p.parse(line.as_bytes()).expect("valid").expect("row");
        assert_eq!(row.src, "client2");
        assert_eq!(row.answer, None);
        assert_eq!(row.duration, 30);
        assert_eq!(row.sequence, Some(4));
        assert_eq!(row.caller_name(), None);
    }

    #[test]
    fn unknown_custom_columns_are_kept_by_name() {
        let p = custom_layout_parser("src,dst,channel,start,end,disposition,linkedid,campaign");
        let row = p
            .parse(br#""1","2","SIP/a-1","2024-01-01 00:00:00","2024-01-01 00:00:09","BUSY","99.1","spring""#)
            .expect("valid")
            .expect("row");
        assert_eq!(
            row.extra.get("campaign").map(String::as_str),
            Some("spring")
        );
        assert_eq!(row.duration, 9);
        assert_eq!(row.linkedid.as_deref(), Some("99.1"));
    }

    #[test]
    fn corrupt_lines_are_errors_not_panics() {
        let p = utc_parser();
        for bad in [
            &b"garbage"[..],
            b"\"unterminated,\"1\",\"2\"",
            b",,,,,,,,,,,,,,,,,",
            &ANSWERED_18.as_bytes()[..ANSWERED_18.len() / 2],
            ANSWERED_18
                .replace("2022-06-17 04:15:28", "yesterday")
                .as_bytes(),
            ANSWERED_18.replace(",24,19,", ",-4,19,").as_bytes(),
            ANSWERED_18.replace("ANSWERED", "MAYBE").as_bytes(),
            ANSWERED_18.replace("04:15:28", "03:15:28").as_bytes(),
        ] {
            assert!(p.parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn one_reader_serves_every_line_even_after_a_bad_one() {
        let p = utc_parser();
        assert!(p.parse(b"\"unterminated,\"x").is_err());
        for _ in 0..3 {
            let row = p
                .parse(ANSWERED_18.as_bytes())
                .expect("valid")
                .expect("row");
            assert_eq!(row.billsec, 19);
        }
        let wide = format!(
            "{},\"{}\"",
            &ANSWERED_18[..ANSWERED_18.len() - 3],
            "u".repeat(5000)
        );
        assert!(
            p.parse(wide.as_bytes()).is_ok(),
            "fields longer than the line buffer grow it"
        );
    }

    #[test]
    fn custom_layout_needs_the_essential_columns() {
        let names = vec!["src".to_string(), "dst".to_string()];
        assert_eq!(
            ColumnLayout::from_names(&names).err(),
            Some(LayoutError::Missing("start"))
        );
    }

    fn window_now() -> TimeWindow {
        TimeWindow::at(Utc::now())
    }

    #[test]
    fn times_before_2000_or_more_than_a_day_ahead_make_the_line_corrupt() {
        let p = utc_parser();
        let w = window_now();
        let tomorrow = (Utc::now() + TimeDelta::hours(20))
            .format(TIME_FORMAT)
            .to_string();
        let too_late = (Utc::now() + TimeDelta::hours(30))
            .format(TIME_FORMAT)
            .to_string();
        for (from, to, ok) in [
            ("2022-06-17 04:15:03", "0000-01-01 00:00:00", false),
            ("2022-06-17 04:15:03", "1999-12-31 23:59:59", false),
            ("2022-06-17 04:15:28", "9999-12-31 23:59:59", false),
            ("2022-06-17 04:15:28", too_late.as_str(), false),
            ("2022-06-17 04:15:08", "1970-01-01 00:00:00", false), // the answer time too
            ("2022-06-17 04:15:28", tomorrow.as_str(), true),
        ] {
            let line = ANSWERED_18.replace(from, to);
            let got = p.parse_within(line.as_bytes(), &w);
            if ok {
                assert!(matches!(got, Ok(Some(_))), "{to}: {got:?}");
            } else {
                assert!(got.is_err(), "{to}: {got:?}");
            }
        }
        // Every time in the line is checked: start 0000 with the rest plausible.
        let line = ANSWERED_18.replace("2022-06-17 04:15:03", "0000-06-17 04:15:03");
        let err = p.parse_within(line.as_bytes(), &w).expect_err("year 0000");
        assert!(
            matches!(
                err,
                CdrError::TimeOutOfRange {
                    column: "start",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("before 2000"), "{err}");
    }

    #[test]
    fn error_texts_show_values_bounded_and_escaped() {
        let p = utc_parser();
        let hostile = format!("\x1b[31m{}\r\nFAKE LOG LINE", "A".repeat(500));
        let line = ANSWERED_18.replace("ANSWERED", &hostile);
        let err = p
            .parse(line.as_bytes())
            .expect_err("unknown disposition")
            .to_string();
        assert!(
            !err.contains('\x1b') && !err.contains('\r') && !err.contains('\n'),
            "{err}"
        );
        assert!(err.contains("\\x1b[31m"), "{err}");
        assert!(err.len() < 200, "{} bytes: {err}", err.len());
        let line = ANSWERED_18.replace("2022-06-17 04:15:28", &hostile);
        let err = p.parse(line.as_bytes()).expect_err("bad time").to_string();
        assert!(!err.contains('\x1b') && err.len() < 300, "{err}");
    }

    /// The properties every parse must have: no panic (the caller runs it), and a row only
    /// with times inside the window, in order.
    fn check(parser: &CdrParser, line: &[u8], window: &TimeWindow) -> Result<(), String> {
        match parser.parse_within(line, window) {
            Ok(Some(row)) => {
                for t in [Some(row.start), row.answer, Some(row.end)]
                    .into_iter()
                    .flatten()
                {
                    if !window.contains(t) {
                        return Err(format!("a row with {t} outside the window: {row:?}"));
                    }
                }
                if row.end < row.start {
                    return Err(format!("end before start: {row:?}"));
                }
                Ok(())
            }
            Ok(None) | Err(_) => Ok(()),
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const CUSTOM_NAMES: [&str; 12] = [
            "src",
            "dst",
            "channel",
            "start",
            "end",
            "disposition",
            "answer",
            "billsec",
            "duration",
            "linkedid",
            "sequence",
            "campaign",
        ];

        /// A time with any year 0000 to 9999, sometimes mangled.
        fn time_text() -> impl Strategy<Value = String> {
            (
                0u32..=9999,
                0u32..=13,
                0u32..=32,
                0u32..=24,
                0u32..=60,
                0u32..=60,
                0u8..8,
            )
                .prop_map(|(y, mo, d, h, mi, s, how)| match how {
                    0 => String::new(),
                    1 => format!("{y}-{mo}-{d}T{h}:{mi}:{s}"),
                    2 => format!("{}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}", 1990 + y % 60),
                    _ => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"),
                })
        }

        /// A field value: a time, a number, a disposition or arbitrary text.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => time_text(),
                2 => any::<u64>().prop_map(|n| n.to_string()),
                1 => (-5i64..100_000).prop_map(|n| n.to_string()),
                2 => prop::sample::select(vec!["ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "answered", ""]).prop_map(str::to_owned),
                1 => prop::sample::select(vec!["1706368044.7", "host-1706368044.0", "SIP/100-00000001", "accountcode", "\"\"", ","]).prop_map(str::to_owned),
                2 => ".{0,24}",
                1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]
        }

        /// A CSV line of `fields`, each quoted or not (quotes doubled or, sometimes, not).
        fn line_of(count: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec((value(), 0u8..6), count).prop_map(|fields| {
                let parts: Vec<String> = fields
                    .into_iter()
                    .map(|(v, how)| match how {
                        0 | 1 => v,
                        2 => format!("\"{v}"),
                        _ => format!("\"{}\"", v.replace('"', "\"\"")),
                    })
                    .collect();
                parts.join(",").into_bytes()
            })
        }

        /// A valid 18-column line with its three times replaced by arbitrary ones.
        fn valid_with_times() -> impl Strategy<Value = Vec<u8>> {
            (time_text(), time_text(), time_text()).prop_map(|(s, a, e)| {
                ANSWERED_18
                    .replace("2022-06-17 04:15:03", &s)
                    .replace("2022-06-17 04:15:08", &a)
                    .replace("2022-06-17 04:15:28", &e)
                    .into_bytes()
            })
        }

        fn custom_parser(extra: &[bool]) -> CdrParser {
            let names: Vec<String> = CUSTOM_NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < 6 || extra.get(*i - 6).copied().unwrap_or(false))
                .map(|(_, n)| (*n).to_owned())
                .collect();
            let layout = ColumnLayout::from_names(&names).expect("the required columns are in");
            CdrParser::new(Some(layout), chrono_tz::Asia::Kolkata)
        }

        fn run_all(
            bytes: &[u8],
            line: &[u8],
            timed: &[u8],
            extra: &[bool],
        ) -> Result<(), TestCaseError> {
            let w = window_now();
            let csv = utc_parser();
            let custom = custom_parser(extra);
            for (parser, input) in [
                (&csv, bytes),
                (&csv, line),
                (&csv, timed),
                (&custom, bytes),
                (&custom, line),
            ] {
                check(parser, input, &w).map_err(TestCaseError::fail)?;
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn parser_never_panics_nor_accepts_a_time_outside_the_window(
                bytes in prop::collection::vec(any::<u8>(), 0..400),
                line in line_of(0..=24),
                timed in valid_with_times(),
                extra in prop::collection::vec(any::<bool>(), 6),
            ) {
                run_all(&bytes, &line, &timed, &extra)?;
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

            /// `cargo test --release --lib pbx::asterisk::cdr -- --ignored`
            #[test]
            #[ignore = "100,000 cases: run by hand or in a long CI job"]
            fn parser_never_panics_nor_accepts_a_time_outside_the_window_100k(
                bytes in prop::collection::vec(any::<u8>(), 0..400),
                line in line_of(0..=24),
                timed in valid_with_times(),
                extra in prop::collection::vec(any::<bool>(), 6),
            ) {
                run_all(&bytes, &line, &timed, &extra)?;
            }
        }

        #[test]
        fn a_year_outside_the_window_is_always_refused() {
            let p = utc_parser();
            let w = window_now();
            let this_year: u32 = Utc::now().format("%Y").to_string().parse().expect("year");
            for year in (0..2000)
                .step_by(37)
                .chain([1999])
                .chain(this_year + 1..=9999)
            {
                let t = format!("{year:04}-06-17 04:15:03");
                let line = ANSWERED_18.replace("2022-06-17 04:15:03", &t);
                assert!(p.parse_within(line.as_bytes(), &w).is_err(), "{t}");
            }
        }
    }
}

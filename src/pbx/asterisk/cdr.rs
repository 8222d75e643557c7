//! Parses one line of an Asterisk CDR file (cdr_csv `Master.csv` or cdr_custom) into a [`CdrRow`].
//!
//! cdr_csv writes 16 fixed columns, then `uniqueid` (loguniqueid), `userfield` (loguserfield)
//! and `peeraccount, linkedid, sequence` (newcdrcolumns), so the layout is told by the column
//! count. cdr_custom writes whatever its template says, so the layout is named in the config.
//! Every line is parsed on its own: a corrupt line can never swallow its neighbours.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

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
        let has = |f: Field| columns.iter().any(|(_, c)| *c == Some(f));
        for (field, name) in [
            (Field::Src, "src"),
            (Field::Dst, "dst"),
            (Field::Start, "start"),
            (Field::End, "end"),
            (Field::Disposition, "disposition"),
            (Field::Channel, "channel"),
        ] {
            if !has(field) {
                return Err(LayoutError::Missing(name));
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

    /// Parses one line (without its newline). `Ok(None)` for a header line.
    pub fn parse(&self, line: &[u8]) -> Result<Option<CdrRow>, CdrError> {
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
        self.build(&layout, fields).map(Some)
    }

    fn build(&self, layout: &ColumnLayout, fields: Vec<String>) -> Result<CdrRow, CdrError> {
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
        let disposition_text = take(&mut row, Field::Disposition);
        let disposition = Disposition::parse(&disposition_text).ok_or(CdrError::Field {
            column: "disposition",
            message: format!("unknown disposition {disposition_text:?}"),
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
                message: format!("{end_text:?} is before start {start_text:?}"),
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
                message: format!("{text:?} is not YYYY-MM-DD HH:MM:SS ({e})"),
            })?;
        // In a DST fall-back hour a local time happens twice; Asterisk does not say which,
        // so the earlier one is taken. A time in the spring-forward gap cannot exist.
        match self.time_zone.from_local_datetime(&naive).earliest() {
            Some(t) => Ok(Some(t.with_timezone(&Utc))),
            None => Err(CdrError::Field {
                column,
                message: format!("{text:?} does not exist in {}", self.time_zone),
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
            message: format!("{v:?} is not a whole number of seconds"),
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

    #[test]
    fn custom_layout_with_linkedid_and_quoted_numbers() {
        let names: Vec<String> = "clid,src,dst,dcontext,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,disposition,amaflags,accountcode,uniqueid,userfield,sequence"
            .split(',')
            .map(str::to_owned)
            .collect();
        let p = CdrParser::new(
            Some(ColumnLayout::from_names(&names).expect("layout")),
            chrono_tz::UTC,
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
        let names: Vec<String> = "src,dst,channel,start,end,disposition,linkedid,campaign"
            .split(',')
            .map(str::to_owned)
            .collect();
        let p = CdrParser::new(
            Some(ColumnLayout::from_names(&names).expect("layout")),
            chrono_tz::UTC,
        );
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
}

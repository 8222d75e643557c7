use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::csv::split_fields;
use super::*;
use crate::call::DialResult;
use crate::call::TimeWindow;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn window() -> TimeWindow {
    TimeWindow::at(Utc::now())
}

fn parser(template: &str, tz: Tz) -> FsCsvParser {
    FsCsvParser::new(CsvLayout::new(Some(template), None).expect("layout"), tz)
}

fn lines(path: PathBuf) -> Vec<Vec<u8>> {
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("time")
}

#[test]
fn stock_templates_have_their_columns() {
    let count = |name: &str| templates::layout(name).map(|l| l.columns.len());
    assert_eq!(count("example"), Some(15));
    assert_eq!(count("default"), Some(13));
    assert_eq!(count("sql"), Some(13));
    assert_eq!(count("snom"), Some(20));
    assert_eq!(count("linksys"), Some(17));
    assert_eq!(count("asterisk"), Some(18));
    assert_eq!(count("opencdrrate"), Some(13));
    assert_eq!(count("pbxlink"), Some(38));
    let example = templates::layout("example").expect("example");
    assert_eq!(example.columns[10], "uuid");
    assert_eq!(example.columns[4], "start_stamp");
    let sql = templates::layout("sql").expect("sql");
    assert_eq!(sql.prefix, "INSERT INTO cdr VALUES (");
    assert_eq!(sql.suffix, ");");
    // The expression column of opencdrrate is no variable.
    let open = templates::layout("opencdrrate").expect("opencdrrate");
    assert_eq!(open.columns[11], "");
    assert_eq!(&open.columns[..2], ["uuid", "signal_bond"]);
}

#[test]
fn the_recommended_template_starts_with_the_rig_columns() {
    let pbxlink = templates::layout("pbxlink").expect("pbxlink");
    assert_eq!(
        &pbxlink.columns[..templates::RIG_COLUMNS.len()],
        templates::RIG_COLUMNS
    );
}

/// The rig writes Master.csv with exactly the recommended template.
#[test]
fn the_rig_config_carries_the_recommended_template() {
    let xml = std::fs::read_to_string(root().join("tests/freeswitch/conf/freeswitch.xml"))
        .expect("rig config");
    let start = xml
        .find("<template name=\"pbxlink\">")
        .expect("a pbxlink template")
        + "<template name=\"pbxlink\">".len();
    let len = xml[start..].find("</template>").expect("end of template");
    assert_eq!(&xml[start..start + len], templates::PBXLINK);
}

#[test]
fn layouts_that_cannot_group_are_refused() {
    assert!(matches!(
        CsvLayout::new(Some("no-such"), None),
        Err(LayoutError::UnknownTemplate(_))
    ));
    // opencdrrate has no start time.
    assert_eq!(
        CsvLayout::new(Some("opencdrrate"), None),
        Err(LayoutError::NoTime("start"))
    );
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        CsvLayout::new(
            None,
            Some(&cols(&["caller_id_number", "start_epoch", "end_epoch"]))
        ),
        Err(LayoutError::NoUuid)
    );
    assert_eq!(
        CsvLayout::new(
            None,
            Some(&cols(&["uuid", "uuid", "start_epoch", "end_epoch"]))
        ),
        Err(LayoutError::Duplicate("uuid".into()))
    );
    assert_eq!(CsvLayout::new(None, Some(&[])), Err(LayoutError::Empty));
    // cdr_columns wins over the template; `${...}` around a name is allowed.
    let layout = CsvLayout::new(
        Some("no-such"),
        Some(&cols(&["${uuid}", "start_uepoch", "${end_uepoch}"])),
    )
    .expect("columns");
    assert_eq!(
        layout.columns,
        cols(&["uuid", "start_uepoch", "end_uepoch"])
    );
}

/// The stock `example` template's rows of the rig: times from `*_stamp` in cdr_time_zone
/// (the rig runs in UTC), the B leg linked by the A leg's bleg_uuid.
#[test]
fn example_template_rows_of_the_rig() {
    let p = parser("example", Tz::UTC);
    let rows = lines(root().join("tests/fixtures/freeswitch/answered_inbound/example.csv"));
    let legs: Vec<FsLeg> = rows
        .iter()
        .map(|l| p.parse_within(l, window()).expect("row").expect("a leg"))
        .collect();
    assert_eq!(legs.len(), 3);
    let a = &legs[1];
    assert_eq!(a.uuid, "bcc77915-8cf9-4441-8633-7c068ba183cd");
    assert_eq!(
        a.bridged_to,
        vec!["439e62da-17c8-4cbe-afab-bfd8e368fc3a".to_string()]
    );
    assert_eq!(a.start, utc(2026, 12, 1, 23, 28, 26));
    assert_eq!(a.answer, Some(utc(2026, 12, 1, 23, 28, 29)));
    assert_eq!(a.end, utc(2026, 12, 1, 23, 28, 32));
    assert_eq!(a.billsec, 3);
    assert_eq!(a.duration, 6);
    assert_eq!(a.destinations, vec!["4930100".to_string()]);
    assert_eq!(a.contexts, vec!["public".to_string()]);
    assert_eq!(a.caller_id_number.as_deref(), Some("sipp"));
    assert_eq!(a.hangup_cause.as_deref(), Some("NORMAL_CLEARING"));

    // Stamps in another zone: the same text is an hour earlier in UTC in Berlin's winter.
    let berlin = parser("example", Tz::Europe__Berlin);
    let leg = berlin
        .parse_within(&rows[1], window())
        .expect("row")
        .expect("leg");
    assert_eq!(leg.start, utc(2026, 12, 1, 22, 28, 26));

    // Missed call: an unanswered leg's empty answer_stamp is no answer.
    let rows = lines(root().join("tests/fixtures/freeswitch/missed_inbound/example.csv"));
    let leg = p
        .parse_within(&rows[1], window())
        .expect("row")
        .expect("leg");
    assert_eq!(leg.answer, None);
    assert_eq!(leg.dial_result(), DialResult::NoAnswer);
}

/// Master.csv of the rig (its 25 columns): epochs to the microsecond, every link column.
#[test]
fn rig_template_rows_carry_epochs_and_links() {
    let columns: Vec<String> = templates::RIG_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .collect();
    let p = FsCsvParser::new(
        CsvLayout::new(None, Some(&columns)).expect("layout"),
        Tz::UTC,
    );
    let rows = lines(root().join("tests/fixtures/freeswitch/queue_ring_all/Master.csv"));
    let legs: Vec<FsLeg> = rows
        .iter()
        .map(|l| p.parse_within(l, window()).expect("row").expect("leg"))
        .collect();
    let lose = &legs[0];
    assert_eq!(lose.uuid, "7fdff1e8-3392-4333-a062-5e51216e2cc8");
    assert_eq!(
        lose.cc_member_session_uuid.as_deref(),
        Some("d718501f-df0f-4c3f-8c32-22faf9acf617")
    );
    assert!(lose.is_callcenter_agent_leg());
    assert_eq!(lose.cc_agent.as_deref(), Some("100"));
    assert_eq!(lose.hangup_cause.as_deref(), Some("LOSE_RACE"));
    assert_eq!(lose.dial_result(), DialResult::NoAnswer);
    assert_eq!(lose.answer, None);
    assert_eq!(
        lose.start,
        DateTime::<Utc>::from_timestamp_micros(1796167719718725).expect("t")
    );
    assert_eq!(lose.direction, Some(LegDirection::Outbound));
    let member = &legs[3];
    assert_eq!(member.uuid, "d718501f-df0f-4c3f-8c32-22faf9acf617");
    assert!(!member.is_callcenter_agent_leg());
    assert_eq!(
        member.recording.as_deref(),
        Some(
            "/usr/local/freeswitch/recordings/2026-12-01/d718501f-df0f-4c3f-8c32-22faf9acf617.wav"
        )
    );
    assert_eq!(member.direction, Some(LegDirection::Inbound));
    let rows = lines(root().join("tests/fixtures/freeswitch/click_to_call/Master.csv"));
    let agent = p
        .parse_within(&rows[1], window())
        .expect("row")
        .expect("leg");
    assert_eq!(agent.lead_id.as_deref(), Some("lead-42"));
}

#[test]
fn default_sql_and_quoted_values() {
    // The compiled-in default template has a space before accountcode.
    let line = br#""Bob","100","4930100","public","2026-12-01 10:00:00","","2026-12-01 10:00:05","5","0","NO_ANSWER","u-1","", "acct""#;
    let leg = parser("default", Tz::UTC)
        .parse_within(line, window())
        .expect("row")
        .expect("leg");
    assert_eq!(leg.uuid, "u-1");
    assert!(leg.bridged_to.is_empty());
    assert_eq!(leg.end, utc(2026, 12, 1, 10, 0, 5));

    let line = br#"INSERT INTO cdr VALUES ("Bob","100","4930100","public","2026-12-01 10:00:00","","2026-12-01 10:00:05","5","0","NO_ANSWER","u-2","", "acct");"#;
    let leg = parser("sql", Tz::UTC)
        .parse_within(line, window())
        .expect("row")
        .expect("leg");
    assert_eq!(leg.uuid, "u-2");
    assert!(matches!(
        parser("sql", Tz::UTC).parse_within(&line[7..], window()),
        Err(CsvError::Frame(_))
    ));

    // mod_cdr_csv does not escape a quote inside a value.
    let line = br#""Bob "the" Builder","100","4930100","public","2026-12-01 10:00:00","","2026-12-01 10:00:05","5","0","NO_ANSWER","u-3","","acct","PCMU","PCMU""#;
    let leg = parser("example", Tz::UTC)
        .parse_within(line, window())
        .expect("row")
        .expect("leg");
    assert_eq!(leg.caller_id_name.as_deref(), Some(r#"Bob "the" Builder"#));
    assert_eq!(leg.uuid, "u-3");
    // CRLF and blank lines.
    let mut crlf = line.to_vec();
    crlf.extend_from_slice(b"\r");
    assert!(
        parser("example", Tz::UTC)
            .parse_within(&crlf, window())
            .is_ok()
    );
    assert_eq!(
        parser("example", Tz::UTC).parse_within(b"  ", window()),
        Ok(None)
    );
}

#[test]
fn corrupt_rows_are_errors() {
    let p = parser("example", Tz::UTC);
    let good = br#""Bob","100","4930100","public","2026-12-01 10:00:00","","2026-12-01 10:00:05","5","0","NO_ANSWER","u-3","","acct","PCMU","PCMU""#;
    assert!(p.parse_within(good, window()).is_ok());
    // Cut short (a crash mid-write), one field short, one too many.
    assert!(matches!(
        p.parse_within(&good[..good.len() / 2], window()),
        Err(CsvError::FieldCount { .. })
    ));
    let mut extra = good.to_vec();
    extra.extend_from_slice(b",\"x\"");
    assert_eq!(
        p.parse_within(&extra, window()),
        Err(CsvError::FieldCount {
            found: 16,
            expected: 15
        })
    );
    // A bad stamp, a time in 1999, an end before the start, no uuid.
    let bad = String::from_utf8_lossy(good).replace("2026-12-01 10:00:05", "yesterday");
    assert!(matches!(
        p.parse_within(bad.as_bytes(), window()),
        Err(CsvError::Leg(LegError::BadStamp { .. }))
    ));
    let old = String::from_utf8_lossy(good).replace("2026-12-01", "1999-12-01");
    assert!(matches!(
        p.parse_within(old.as_bytes(), window()),
        Err(CsvError::Leg(LegError::OutOfWindow { .. }))
    ));
    let backwards = String::from_utf8_lossy(good).replace("10:00:05", "09:00:05");
    assert!(matches!(
        p.parse_within(backwards.as_bytes(), window()),
        Err(CsvError::Leg(LegError::EndsBeforeStart { .. }))
    ));
    let no_uuid = String::from_utf8_lossy(good).replace("\"u-3\"", "\"\"");
    assert_eq!(
        p.parse_within(no_uuid.as_bytes(), window()),
        Err(CsvError::Leg(LegError::NoUuid))
    );
    let huge = vec![b'"'; csv::MAX_LINE_BYTES + 1];
    assert!(matches!(
        p.parse_within(&huge, window()),
        Err(CsvError::TooLong(_))
    ));
    // A billsec that is no number.
    let text = String::from_utf8_lossy(good).replace("\"5\",\"0\"", "\"5\",\"zero\"");
    assert!(matches!(
        p.parse_within(text.as_bytes(), window()),
        Err(CsvError::Leg(LegError::NotANumber {
            field: "billsec",
            ..
        }))
    ));
}

#[test]
fn epochs_win_over_stamps() {
    let cols: Vec<String> = [
        "uuid",
        "start_stamp",
        "start_epoch",
        "end_uepoch",
        "end_stamp",
        "answer_epoch",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = FsCsvParser::new(
        CsvLayout::new(None, Some(&cols)).expect("layout"),
        Tz::Asia__Kolkata,
    );
    let leg = p
        .parse_within(
            br#""u","1999-01-01 00:00:00","1796167706","1796167712178743","garbage","0""#,
            window(),
        )
        .expect("row")
        .expect("leg");
    assert_eq!(leg.start, utc(2026, 12, 1, 23, 28, 26));
    assert_eq!(
        leg.end,
        DateTime::<Utc>::from_timestamp_micros(1796167712178743).expect("t")
    );
    assert_eq!(leg.answer, None);
}

#[test]
fn hangup_causes_as_dial_results() {
    for (cause, want) in [
        ("NORMAL_CLEARING", DialResult::NoAnswer),
        ("NO_ANSWER", DialResult::NoAnswer),
        ("ORIGINATOR_CANCEL", DialResult::NoAnswer),
        ("LOSE_RACE", DialResult::NoAnswer),
        ("NO_USER_RESPONSE", DialResult::NoAnswer),
        ("USER_BUSY", DialResult::Busy),
        ("CALL_REJECTED", DialResult::Busy),
        ("USER_NOT_REGISTERED", DialResult::Failed),
        ("UNALLOCATED_NUMBER", DialResult::Failed),
        ("NORMAL_TEMPORARY_FAILURE", DialResult::Congestion),
        ("SWITCH_CONGESTION", DialResult::Congestion),
        ("something new", DialResult::NoAnswer),
    ] {
        assert_eq!(dial_result(cause), want, "{cause}");
    }
}

/// Real mod_cdr_csv output of other installations (../shared/samples, read in place: their
/// licence allows test input only): the stock example template, legs a and ab, and a file a
/// spreadsheet re-saved (no quotes, dates without seconds), every line of which is refused.
#[test]
fn cdr_csv_samples_of_other_installations() {
    let samples = root().join("../shared/samples");
    if !samples.is_dir() {
        eprintln!("SKIPPED: {} is not there", samples.display());
        return;
    }
    let p = parser("example", Tz::UTC);
    for (file, rows) in [
        ("fs_cdrcsv_raspberry-pi-maker_cdr_basic_legs-a.csv", 2),
        ("fs_cdrcsv_raspberry-pi-maker_cdr_basic_legs-ab.csv", 4),
        ("fs_cdrcsv_raspberry-pi-maker_cdr_callcenter_legs-ab.csv", 2),
    ] {
        let legs: Vec<FsLeg> = lines(samples.join(file))
            .iter()
            .map(|l| {
                p.parse_within(l, window())
                    .unwrap_or_else(|e| panic!("{file}: {e}"))
                    .expect("leg")
            })
            .collect();
        assert_eq!(legs.len(), rows, "{file}");
    }
    let mangled =
        lines(samples.join("fs_cdrcsv_Kxingyunliushui-freeswitch_tools_Master_EXCEL-MANGLED.csv"));
    assert!(!mangled.is_empty());
    for line in &mangled {
        assert!(p.parse_within(line, window()).is_err());
    }
}

proptest! {
    /// No line makes the parser panic, whatever the template.
    #[test]
    fn csv_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..600)) {
        for name in templates::NAMES {
            if let Ok(layout) = CsvLayout::new(Some(name), None) {
                let _ = FsCsvParser::new(layout, Tz::UTC).parse_within(&line, window());
            }
        }
        let _ = split_fields(&line);
    }

    /// A row of quoted values without `","` inside splits back into exactly those values.
    #[test]
    fn quoted_fields_split_back(values in proptest::collection::vec("[^\",\r\n]{0,12}", 1..20)) {
        let line = values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(",");
        let fields: Vec<String> = split_fields(line.as_bytes())
            .into_iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        prop_assert_eq!(fields, values);
    }
}

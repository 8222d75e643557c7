//! The Originate that click to call sends: every value escaped or refused for the part of
//! Asterisk that reads it, and the refusal that names the extension, context and keys.

use super::*;
use crate::config::DialFormat;

fn request(lead_id: &str) -> OriginateRequest {
    OriginateRequest {
        call_id: "pbxlink-1795554073.000042".into(),
        agent_extension: "100".into(),
        lead_dial: "919611795983".into(),
        caller_id: "+918044556677".into(),
        variables: vec![
            ("LEADID".into(), lead_id.into()),
            ("CDR(leadid)".into(), lead_id.into()),
        ],
    }
}

#[test]
fn a_hostile_lead_id_goes_escaped_one_variable_per_header() {
    let lead = "L1,CALLERID(num)=+18005551234,CDR(accountcode)=evil";
    let action = originate_action(&OriginateConfig::default(), &request(lead)).expect("built");
    let wire = String::from_utf8(action.encode("7").expect("encodes")).expect("utf-8");
    assert_eq!(
        wire,
        "Action: Originate\r\nActionID: 7\r\nChannel: PJSIP/100\r\nContext: from-internal\r\n\
         Exten: 919611795983\r\nPriority: 1\r\nCallerID: <+918044556677>\r\nTimeout: 30000\r\n\
         ChannelId: pbxlink-1795554073.000042\r\nAsync: true\r\n\
         Variable: LEADID=L1\\,CALLERID\\(num\\)=+18005551234\\,CDR\\(accountcode\\)=evil\r\n\
         Variable: CDR(leadid)=L1\\,CALLERID\\(num\\)=+18005551234\\,CDR\\(accountcode\\)=evil\r\n\r\n"
    );
}

#[test]
fn values_asterisk_reads_as_syntax_are_refused() {
    type Change = fn(&mut OriginateRequest, &mut OriginateConfig);
    let cases: [(&str, Change); 9] = [
        ("agent extension", |r, _| {
            r.agent_extension = "100/sip:evil@x".into()
        }),
        ("agent extension", |r, _| {
            r.agent_extension = "100@other".into()
        }),
        ("agent extension", |r, _| {
            r.agent_extension = "100&PJSIP/200".into()
        }),
        ("number to dial", |r, _| r.lead_dial = "9196,1".into()),
        ("number to dial", |r, _| {
            r.lead_dial = "919611795983&PJSIP/evil".into()
        }),
        ("number to dial", |r, _| r.lead_dial = "9196 1".into()),
        ("context", |_, c| c.context = "from-internal,evil".into()),
        ("caller id", |r, _| r.caller_id = "\"x\" <1>".into()),
        ("number to dial", |r, _| r.lead_dial = "9".repeat(81)),
    ];
    for (what, change) in cases {
        let (mut r, mut c) = (request("L1"), OriginateConfig::default());
        change(&mut r, &mut c);
        match originate_action(&c, &r) {
            Err(PbxError::Unsafe(why)) => assert!(why.contains(what), "{what}: {why}"),
            other => panic!("{what}: expected Unsafe, got {other:?}"),
        }
    }
    // A lead id Asterisk could not read in one line is refused, not cut.
    match originate_action(
        &OriginateConfig::default(),
        &request(&"x".repeat(12 * 1024)),
    ) {
        Err(PbxError::Unsafe(why)) => assert!(why.contains("bytes"), "{why}"),
        other => panic!("expected Unsafe, got {other:?}"),
    }
    match originate_action(&OriginateConfig::default(), &request("L1\0x")) {
        Err(PbxError::Unsafe(why)) => assert!(why.contains("NUL"), "{why}"),
        other => panic!("expected Unsafe, got {other:?}"),
    }
}

#[test]
fn a_refused_originate_names_the_extension_context_and_keys() {
    let originate = OriginateConfig {
        number_format: DialFormat::E164,
        dial_prefix: "9".into(),
        ..OriginateConfig::default()
    };
    let why = originate_refused(
        "Extension does not exist.",
        "PJSIP/100",
        "9+919611795983",
        &originate,
    );
    for part in [
        "Extension does not exist.",
        "extension \"9+919611795983\" in context \"from-internal\"",
        "[asterisk.originate] number_format = \"e164\"",
        "dial_prefix = \"9\"",
        "[asterisk.originate] context",
        "e164_digits",
        "PJSIP/100",
    ] {
        assert!(why.contains(part), "{part:?} missing from {why}");
    }
    // What Asterisk said is bounded and escaped before it reaches the answer and the log.
    let why = originate_refused(&"\x1b[31mx".repeat(500), "PJSIP/100", "1", &originate);
    assert!(!why.contains('\x1b'), "{why}");
    assert!(why.len() < 1500, "{} bytes", why.len());
}

#[test]
fn the_default_number_format_is_digits_without_plus() {
    assert_eq!(
        OriginateConfig::default().number_format,
        DialFormat::E164Digits
    );
    let config: crate::config::OriginateConfig = toml::from_str("").expect("empty section");
    assert_eq!(config.number_format.name(), "e164_digits");
}

/// A finished inbound call as the tracker hands it to the writer.
fn finished_call(call_id: &str) -> CallRecord {
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-07T10:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    CallRecord {
        call_id: call_id.into(),
        source: "asterisk-ami".into(),
        direction: crate::call::Direction::Inbound,
        outcome: crate::call::Outcome::NoAnswer,
        lead_number: crate::call::Number {
            raw: "+919611795983".into(),
            e164: None,
        },
        agent: None,
        agent_extension: None,
        display_number: None,
        tag: None,
        start: at,
        answer: None,
        end: at,
        talk_seconds: 0,
        caller_name: None,
        recording_url: None,
        lead_id: None,
        legs: 1,
        segments: Vec::new(),
    }
}

/// A real store made to refuse inserts into the outbox (a trigger, as a full disk or a
/// corrupt page would make SQLite refuse), and the connection that can lift it.
fn refusing_store(dir: &std::path::Path) -> (Arc<Store>, rusqlite::Connection) {
    let path = dir.join("store.db");
    let store = Arc::new(Store::open(&path, crate::config::Synchronous::Normal).expect("store"));
    let admin = rusqlite::Connection::open(&path).expect("second connection");
    admin
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )
        .expect("trigger");
    (store, admin)
}

/// Item 7 of issue 9: a call log from AMI that the store refuses was logged and lost; now it
/// waits (with a doubling pause, not a busy loop) and is stored once the store takes writes.
#[tokio::test(start_paused = true)]
async fn a_call_log_the_store_refuses_is_retried_with_backoff_until_stored() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("dir");
    let (store, admin) = refusing_store(dir.path());
    let stats = Arc::new(LiveStats::default());
    let (calls, pending) = mpsc::channel(CALL_LOG_QUEUE);
    let (_stop, shutdown) = watch::channel(false);
    let sink: Arc<dyn CallSink> = Arc::new(OutboxSink::new(store.clone(), Arc::new(Notify::new())));
    let writer = tokio::spawn(store_call_logs(sink, stats.clone(), pending, shutdown));
    calls.send(finished_call("1.1")).await.expect("queued");
    calls.send(finished_call("1.2")).await.expect("queued");
    // Ten seconds of a refusing store: attempts at 0, 0.2, 0.6, 1.4, 3.0, 6.2 s.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failures = stats.call_log_store_failures.load(Relaxed);
    assert!(
        (5..=7).contains(&failures),
        "{failures} attempts in 10 s: the pause doubles"
    );
    assert!(
        !store
            .has_key(&crate::call::sink::call_log_key("1.1"))
            .expect("read")
    );
    admin
        .execute_batch("DROP TRIGGER refuse")
        .expect("lift the refusal");
    let started = tokio::time::Instant::now();
    while stats.calls_enqueued.load(Relaxed) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(31),
            "stored within one longest pause"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ["1.1", "1.2"] {
        assert!(
            store
                .has_key(&crate::call::sink::call_log_key(id))
                .expect("read"),
            "{id}"
        );
    }
    assert_eq!(stats.call_logs_lost.load(Relaxed), 0);
    drop(calls);
    writer.await.expect("writer ends when the tracker does");
}

/// Stopping while the store still refuses: the call is tried once more, then counted lost
/// (the daemon does not hang on a store that never comes back).
#[tokio::test(start_paused = true)]
async fn stopping_while_the_store_refuses_counts_the_call_lost() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("dir");
    let (store, _admin) = refusing_store(dir.path());
    let stats = Arc::new(LiveStats::default());
    let (calls, pending) = mpsc::channel(CALL_LOG_QUEUE);
    let (stop, shutdown) = watch::channel(false);
    let sink: Arc<dyn CallSink> = Arc::new(OutboxSink::new(store, Arc::new(Notify::new())));
    let writer = tokio::spawn(store_call_logs(sink, stats.clone(), pending, shutdown));
    calls.send(finished_call("2.1")).await.expect("queued");
    while stats.call_log_store_failures.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).expect("stop");
    drop(calls);
    writer.await.expect("writer stops");
    assert_eq!(stats.call_logs_lost.load(Relaxed), 1);
    assert_eq!(stats.call_log_store_failures.load(Relaxed), 2);
}

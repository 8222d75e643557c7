//! Framer unit tests: every message type, split reads, several messages per read, URL-encoded
//! values, event bodies, limits, garbage, a property test, and replays of real captures
//! (`testdata/` and whatever the FreeSWITCH rig drops into `tests/fixtures/freeswitch/`).

use proptest::prelude::*;

use super::*;

fn frames_of(f: &mut Framer) -> Result<Vec<Frame>, FrameError> {
    let mut out = Vec::new();
    while let Some(frame) = f.next_frame()? {
        out.push(frame);
    }
    Ok(out)
}

fn all_frames(input: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let mut f = Framer::new(FrameLimits::default());
    f.extend(input);
    frames_of(&mut f)
}

/// Feeds `input` in pieces cut at `cuts` (sorted offsets), collecting frames after each.
fn frames_split(input: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, FrameError> {
    let mut f = Framer::new(FrameLimits::default());
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(at, input.len());
        f.extend(&input[at..cut]);
        at = cut;
        out.extend(frames_of(&mut f)?);
    }
    assert_eq!(f.buffered(), 0, "bytes left over");
    Ok(out)
}

fn event(frame: &Frame) -> &Event {
    match frame {
        Frame::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// An event body as `switch_event_serialize` writes it: values URL-encoded, then either an
/// empty line or `Content-Length: N\n\n<body>`.
fn event_body(headers: &[(&str, &str)], body: Option<&str>) -> String {
    let mut out = String::new();
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\n"));
    }
    match body {
        Some(b) => out.push_str(&format!("Content-Length: {}\n\n{b}", b.len())),
        None => out.push('\n'),
    }
    out
}

/// The envelope `read_packet` writes around an event.
fn plain(body: &str) -> String {
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    )
}

const JOB_UUID: &str = "7f4de4bc-17d7-11dd-b7a0-db4edd065621";

/// One of each message type, as mod_event_socket writes them.
fn stream() -> String {
    let answer = event_body(
        &[
            ("Event-Name", "CHANNEL_ANSWER"),
            ("Unique-ID", "9559167d-66b1-447e-8642-ece9310e5fec"),
            ("Caller-Caller-ID-Name", "Gregor%20stacionarni"),
            ("Caller-Context", "default%3A%3Ainfomediavoip.voco.si"),
            ("variable_sip_from_uri", "001%40example.org"),
            ("variable_empty", "_undef_"),
            ("variable_percent", "100%25%20sure"),
            ("variable_sdp", "v%3D0%0D%0Ao%3D-"),
            ("variable_array", "ARRAY%3A%3Aa%7C%3Ab"),
            ("variable_broken", "50%zz"),
        ],
        None,
    );
    let job = event_body(
        &[
            ("Event-Name", "BACKGROUND_JOB"),
            ("Job-UUID", JOB_UUID),
            ("Job-Command", "originate"),
            (
                "Job-Command-Arg",
                "%7Borigination_caller_id_number%3D100%7Duser/1001%20100",
            ),
        ],
        Some("-ERR USER_NOT_REGISTERED\n"),
    );
    let custom = event_body(
        &[
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "callcenter%3A%3Ainfo"),
            ("CC-Action", "agent-offering"),
        ],
        Some("line one\n\nline three: not a header\n"),
    );
    let api_body = "+OK\n";
    let notice = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
    let rude = "Access Denied, go away.\n";
    format!(
        "Content-Type: auth/request\n\n\
         Content-Type: command/reply\nReply-Text: +OK accepted\n\n\
         Content-Type: command/reply\nReply-Text: +OK Job-UUID: {JOB_UUID}\nJob-UUID: {JOB_UUID}\n\n\
         Content-Type: api/response\nContent-Length: {}\n\n{api_body}\
         {}{}{}\
         Content-Type: command/reply\nReply-Text: -ERR invalid\n\n\
         Content-Type: log/data\nContent-Length: 3\nLog-Level: 7\n\nabc\
         Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{notice}\
         Content-Type: text/rude-rejection\nContent-Length: {}\n\n{rude}",
        api_body.len(),
        plain(&answer),
        plain(&job),
        plain(&custom),
        notice.len(),
        rude.len(),
    )
}

fn check_stream(frames: &[Frame]) {
    assert_eq!(frames.len(), 11, "{frames:#?}");
    assert_eq!(frames[0], Frame::AuthRequest);
    let Frame::CommandReply(auth) = &frames[1] else {
        panic!("{:?}", frames[1])
    };
    assert!(auth.is_ok());
    assert_eq!(auth.text(), "+OK accepted");
    let Frame::CommandReply(bg) = &frames[2] else {
        panic!("{:?}", frames[2])
    };
    assert!(bg.is_ok());
    assert_eq!(bg.job_uuid().as_deref(), Some(JOB_UUID));
    assert_eq!(
        frames[3],
        Frame::ApiResponse {
            body: b"+OK\n".to_vec()
        }
    );

    let answer = event(&frames[4]);
    assert_eq!(answer.name(), "CHANNEL_ANSWER");
    assert_eq!(answer.body, None);
    assert_eq!(
        answer.get("caller-caller-id-name").as_deref(),
        Some("Gregor stacionarni"),
        "case-insensitive name, %20 decoded"
    );
    assert_eq!(
        answer.get("Caller-Context").as_deref(),
        Some("default::infomediavoip.voco.si")
    );
    assert_eq!(
        answer.get("variable_sip_from_uri").as_deref(),
        Some("001@example.org")
    );
    assert_eq!(answer.get("variable_empty").as_deref(), Some(""));
    assert_eq!(
        answer.headers.get_raw("variable_empty"),
        Some(&b"_undef_"[..])
    );
    assert_eq!(answer.get("variable_percent").as_deref(), Some("100% sure"));
    assert_eq!(answer.get("variable_sdp").as_deref(), Some("v=0\r\no=-"));
    assert_eq!(answer.get("variable_array").as_deref(), Some("ARRAY::a|:b"));
    assert_eq!(
        answer.get("variable_broken").as_deref(),
        Some("50%zz"),
        "an invalid escape is kept, as switch_url_decode keeps it"
    );
    assert_eq!(answer.get("Missing"), None);
    assert!(
        matches!(answer.get("Unique-ID"), Some(Cow::Borrowed(_))),
        "nothing to decode: no allocation"
    );

    let job = event(&frames[5]);
    let bj = job.background_job().expect("a BACKGROUND_JOB");
    assert_eq!(bj.job_uuid, JOB_UUID);
    assert_eq!(bj.command, "originate");
    assert_eq!(bj.outcome(), Err("USER_NOT_REGISTERED"));
    assert_eq!(
        job.get("Job-Command-Arg").as_deref(),
        Some("{origination_caller_id_number=100}user/1001 100")
    );
    assert!(answer.background_job().is_none());

    let custom = event(&frames[6]);
    assert_eq!(custom.subclass().as_deref(), Some("callcenter::info"));
    assert_eq!(
        custom.body_text(),
        "line one\n\nline three: not a header\n",
        "the event's own body, empty line and colon included, is not headers"
    );
    assert_eq!(custom.get("CC-Action").as_deref(), Some("agent-offering"));

    let Frame::CommandReply(err) = &frames[7] else {
        panic!("{:?}", frames[7])
    };
    assert!(!err.is_ok());
    assert_eq!(err.error().as_deref(), Some("invalid"));
    let Frame::Other { headers, body } = &frames[8] else {
        panic!("{:?}", frames[8])
    };
    assert_eq!(headers.get("Log-Level").as_deref(), Some("7"));
    assert_eq!(body, b"abc");
    let Frame::DisconnectNotice { body, .. } = &frames[9] else {
        panic!("{:?}", frames[9])
    };
    assert!(body.starts_with(b"Disconnected, goodbye."));
    assert_eq!(
        frames[10],
        Frame::RudeRejection {
            body: b"Access Denied, go away.\n".to_vec()
        }
    );
}

#[test]
fn every_message_type_in_one_read() {
    check_stream(&all_frames(stream().as_bytes()).unwrap());
}

#[test]
fn split_at_every_byte_offset() {
    let s = stream();
    let bytes = s.as_bytes();
    for cut in 0..=bytes.len() {
        check_stream(&frames_split(bytes, &[cut]).unwrap());
    }
}

#[test]
fn one_byte_at_a_time() {
    let s = stream();
    let cuts: Vec<usize> = (1..s.len()).collect();
    check_stream(&frames_split(s.as_bytes(), &cuts).unwrap());
}

#[test]
fn crlf_line_ends_and_blank_lines_between_messages() {
    let s = "\n\r\nContent-Type: command/reply\r\nReply-Text: +OK\r\n\r\n\n\
             Content-Type: api/response\r\nContent-Length: 2\r\n\r\nok\r\n";
    let frames = all_frames(s.as_bytes()).unwrap();
    assert_eq!(frames.len(), 2, "{frames:?}");
    let Frame::CommandReply(r) = &frames[0] else {
        panic!()
    };
    assert_eq!(r.text(), "+OK");
    assert_eq!(
        frames[1],
        Frame::ApiResponse {
            body: b"ok".to_vec()
        }
    );
    // Split between the CR and LF of the empty line.
    for cut in 0..=s.len() {
        assert_eq!(frames_split(s.as_bytes(), &[cut]).unwrap(), frames);
    }
}

#[test]
fn incomplete_is_not_an_error() {
    let mut f = Framer::new(FrameLimits::default());
    f.extend(b"Content-Type: api/response\nContent-Length: 10\n\n12345");
    assert_eq!(f.next_frame(), Ok(None));
    assert_eq!(f.next_frame(), Ok(None), "asking again is fine");
    f.extend(b"6789");
    assert_eq!(f.next_frame(), Ok(None));
    f.extend(b"0Content-Type: auth/");
    assert_eq!(
        f.next_frame(),
        Ok(Some(Frame::ApiResponse {
            body: b"1234567890".to_vec()
        }))
    );
    assert_eq!(f.next_frame(), Ok(None));
    f.extend(b"request\n\n");
    assert_eq!(f.next_frame(), Ok(Some(Frame::AuthRequest)));
}

#[test]
fn linger_disconnect_notice_without_body() {
    let s = "Content-Type: text/disconnect-notice\nControlled-Session-UUID: abc\n\
             Content-Disposition: linger\nChannel-Name: sofia/internal/1000%40x\nLinger-Time: 5\n\
             Content-Length: 0\n\n";
    let frames = all_frames(s.as_bytes()).unwrap();
    let Frame::DisconnectNotice { headers, body } = &frames[0] else {
        panic!("{frames:?}")
    };
    assert!(body.is_empty());
    assert_eq!(
        headers.get("Content-Disposition").as_deref(),
        Some("linger")
    );
    assert_eq!(
        headers.get("Channel-Name").as_deref(),
        Some("sofia/internal/1000%40x"),
        "envelope values are not URL-encoded by FreeSWITCH, so not decoded"
    );
}

#[test]
fn event_json() {
    let body = r#"{"Event-Name":"BACKGROUND_JOB","Job-UUID":"u1","Job-Command":"status","_body":"+OK up\n"}"#;
    let s = format!(
        "Content-Length: {}\nContent-Type: text/event-json\n\n{body}",
        body.len()
    );
    let frames = all_frames(s.as_bytes()).unwrap();
    let Frame::EventJson { body } = &frames[0] else {
        panic!("{frames:?}")
    };
    let e = Event::from_json(body).unwrap();
    let job = e.background_job().unwrap();
    assert_eq!(job.job_uuid, "u1");
    assert_eq!(job.outcome(), Ok("up"));
    assert!(Event::from_json(b"[1]").is_err());
    assert!(Event::from_json(b"{").is_err());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let err = |s: &[u8]| all_frames(s).unwrap_err();
    assert!(matches!(
        err(b"Content-Type: command/reply\nthis is not a header\n\n"),
        FrameError::Malformed { line: 2, .. }
    ));
    assert!(matches!(
        err(b": no name\n\n"),
        FrameError::Malformed { line: 1, .. }
    ));
    assert!(matches!(
        err(b"\x00\x01\xff\n\n"),
        FrameError::Malformed { .. }
    ));
    assert_eq!(
        err(b"Content-Type: api/response\nContent-Length: 99999999999999999999999\n\n"),
        FrameError::BodyTooLarge {
            length: usize::MAX,
            limit: DEFAULT_MAX_BODY_BYTES
        }
    );
    assert!(matches!(
        err(b"Content-Type: api/response\nContent-Length: 20000000\n\n"),
        FrameError::BodyTooLarge { .. }
    ));
    for bad in ["12a", "-1", "", "0x10", "1 2"] {
        assert!(
            matches!(
                err(format!("Content-Type: api/response\nContent-Length: {bad}\n\n").as_bytes()),
                FrameError::BadContentLength(_)
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        err(b"Content-Type: api/response\nContent-Length: 1\nContent-Length: 2\n\nab"),
        FrameError::RepeatedContentLength
    );
    assert_eq!(err(b"Reply-Text: +OK\n\n"), FrameError::MissingContentType);
    // An event whose own body is shorter than announced.
    let body = "Event-Name: CUSTOM\nContent-Length: 50\n\nshort";
    assert!(matches!(
        err(plain(body).as_bytes()),
        FrameError::BadEvent(_)
    ));
    // An event header line without a colon.
    let body = "Event-Name: CUSTOM\nnot a header\n\n";
    assert!(matches!(
        err(plain(body).as_bytes()),
        FrameError::Malformed { line: 2, .. }
    ));
}

#[test]
fn header_block_over_the_bound() {
    let limits = FrameLimits {
        max_header_bytes: 1024,
        max_body_bytes: 4096,
    };
    // Never ended: refused as soon as the buffer passes the bound, without waiting.
    let mut f = Framer::new(limits);
    f.extend(b"Content-Type: text/event-plain\n");
    let mut refused = None;
    for _ in 0..200 {
        f.extend(b"X-Header: 0123456789\n");
        if let Err(e) = f.next_frame() {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(FrameError::HeadersTooLarge { limit: 1024 }));
    // A single line without a newline.
    let mut f = Framer::new(limits);
    f.extend(&[b'a'; 2000]);
    assert_eq!(
        f.next_frame(),
        Err(FrameError::HeadersTooLarge { limit: 1024 })
    );
    // Complete but too large.
    let big = format!(
        "Content-Type: command/reply\nReply-Text: {}\n\n",
        "y".repeat(1100)
    );
    let mut f = Framer::new(limits);
    f.extend(big.as_bytes());
    assert_eq!(
        f.next_frame(),
        Err(FrameError::HeadersTooLarge { limit: 1024 })
    );
    // Body over its bound, refused from the header alone (before the body arrives).
    let mut f = Framer::new(limits);
    f.extend(b"Content-Type: api/response\nContent-Length: 4097\n\n");
    assert_eq!(
        f.next_frame(),
        Err(FrameError::BodyTooLarge {
            length: 4097,
            limit: 4096
        })
    );
    // At the bound: fine.
    let ok = format!(
        "Content-Type: api/response\nContent-Length: 4096\n\n{}",
        "z".repeat(4096)
    );
    let mut f = Framer::new(limits);
    f.extend(ok.as_bytes());
    assert!(matches!(
        f.next_frame(),
        Ok(Some(Frame::ApiResponse { .. }))
    ));
}

fn testdata(name: &str) -> Vec<u8> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pbx/freeswitch/esl/testdata");
    std::fs::read(dir.join(name)).expect("fixture")
}

/// Checks a capture of the server side of an inbound connection: it frames completely, the
/// same in one read, at every split (for captures up to 64 KiB, else in chunks) and byte by byte.
fn replay(name: &str, bytes: &[u8]) -> Vec<Frame> {
    let whole = all_frames(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let step = (bytes.len() / 4096).max(1);
    for cut in (0..=bytes.len()).step_by(step) {
        assert_eq!(
            frames_split(bytes, &[cut]).unwrap(),
            whole,
            "{name}: cut at {cut}"
        );
    }
    for chunk in [1, 7, 1000] {
        let cuts: Vec<usize> = (chunk..bytes.len()).step_by(chunk).collect();
        assert_eq!(
            frames_split(bytes, &cuts).unwrap(),
            whole,
            "{name}: {chunk}"
        );
    }
    whole
}

#[test]
fn replay_neventsocket_capture() {
    let bytes = testdata("NEventSocket_issue20-inbound-wire-capture_fs1.5.txt");
    let frames = replay("NEventSocket", &bytes);
    assert_eq!(frames.len(), 10, "{frames:#?}");
    assert_eq!(frames[0], Frame::AuthRequest);
    let Frame::CommandReply(r) = &frames[1] else {
        panic!()
    };
    assert_eq!(r.text(), "+OK accepted");
    let Frame::ApiResponse { body } = &frames[2] else {
        panic!("{:?}", frames[2])
    };
    assert_eq!(body.len(), 328);
    assert!(body.starts_with(b"UP 0 years, 0 days, 1 hour"));
    assert!(body.ends_with(b"min idle cpu 0.00/100.00\n"));
    let Frame::CommandReply(r) = &frames[3] else {
        panic!()
    };
    assert_eq!(r.text(), "+OK event listener enabled plain");
    let names: Vec<String> = frames[4..]
        .iter()
        .map(|f| event(f).name().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_PROGRESS_MEDIA",
            "CHANNEL_PROGRESS_MEDIA"
        ]
    );
    let first = event(&frames[4]);
    assert_eq!(
        first.get("Caller-Caller-ID-Name").as_deref(),
        Some("Gregor stacionarni")
    );
    assert_eq!(
        first.get("FreeSWITCH-IPv6").as_deref(),
        Some("2a02:c200:0:10:2:1:9547:1")
    );
    assert_eq!(
        first.get("variable_sip_full_from").as_deref(),
        Some("\"Gregor stacionarni\" <sip:001@infomediavoip.voco.si>;tag=ab236a192a9e5949o0")
    );
    assert!(
        first
            .get("variable_switch_r_sdp")
            .unwrap()
            .starts_with("v=0\r\no=- 389263887")
    );
    assert_eq!(
        first.get("Application-Data").as_deref(),
        Some("caller_id_number=001")
    );
    assert_eq!(first.body, None);
    let last = event(&frames[9]);
    assert_eq!(
        last.get("variable_endpoint_disposition").as_deref(),
        Some("EARLY MEDIA")
    );
}

/// Every capture the FreeSWITCH rig records (`tests/fixtures/freeswitch/*.esl`, the server
/// side of an inbound connection, byte for byte) frames without error, whichever way it is
/// split. No files yet is fine: the rig adds them.
#[test]
fn replay_rig_captures() {
    // Our own captures from the real FreeSWITCH 1.10.12 rig (tests/fixtures/freeswitch/README.md):
    // every scenario's bytes frame without error, whole or cut anywhere, and carry what the
    // scenario is known to have produced.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/freeswitch");
    let read = |scenario: &str| -> Vec<Frame> {
        let path = dir.join(scenario).join("esl.txt");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let whole = all_frames(&bytes).unwrap_or_else(|e| panic!("{scenario}: {e}"));
        let step = (bytes.len() / 64).max(1);
        for cut in (0..=bytes.len()).step_by(step) {
            assert_eq!(
                frames_split(&bytes, &[cut]).unwrap(),
                whole,
                "{scenario}: cut at {cut}"
            );
        }
        let cuts: Vec<usize> = (7..bytes.len()).step_by(7).collect();
        assert_eq!(
            frames_split(&bytes, &cuts).unwrap(),
            whole,
            "{scenario}: 7-byte reads"
        );
        whole
    };
    let names = |frames: &[Frame]| -> Vec<String> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Event(e) => Some(match e.subclass() {
                    Some(sub) => format!("{}:{sub}", e.name()),
                    None => e.name().into_owned(),
                }),
                _ => None,
            })
            .collect()
    };
    let count = |names: &[String], name: &str| names.iter().filter(|n| *n == name).count();

    let session = read("session_start");
    assert_eq!(session[0], Frame::AuthRequest);
    assert!(
        matches!(&session[1], Frame::CommandReply(r) if r.text() == "+OK accepted"),
        "{:?}",
        session[1]
    );
    assert!(
        matches!(&session[3], Frame::ApiResponse { body } if body.windows(10).any(|w| w == b"1.10.12-re"))
    );

    let shutdown = read("shutdown");
    assert!(
        shutdown
            .iter()
            .any(|f| matches!(f, Frame::DisconnectNotice { .. })),
        "{shutdown:?}"
    );

    for (scenario, legs) in [
        ("answered_inbound", 3),
        ("missed_inbound", 3),
        ("busy_agent", 3),
        ("agent_outbound", 2),
        ("queue_ring_all", 5),
        ("click_to_call", 3),
    ] {
        let events = names(&read(scenario));
        assert_eq!(
            count(&events, "CHANNEL_CREATE"),
            legs,
            "{scenario}: {events:?}"
        );
        assert_eq!(
            count(&events, "CHANNEL_HANGUP_COMPLETE"),
            legs,
            "{scenario}: {events:?}"
        );
    }
    let queue = names(&read("queue_ring_all"));
    assert!(count(&queue, "CUSTOM:callcenter::info") >= 10, "{queue:?}");

    let click = read("click_to_call");
    let jobs: Vec<_> = click
        .iter()
        .filter_map(|f| match f {
            Frame::Event(e) => e.background_job(),
            _ => None,
        })
        .collect();
    assert!(
        !jobs.is_empty(),
        "no BACKGROUND_JOB in the click-to-call capture"
    );
    assert!(jobs.iter().any(|j| j.outcome().is_ok()), "{jobs:?}");
}

/// Splits every valid stream the same way, whatever the cuts.
fn valid_stream() -> Vec<u8> {
    let mut s = stream().into_bytes();
    s.extend(testdata(
        "NEventSocket_issue20-inbound-wire-capture_fs1.5.txt",
    ));
    s
}

fn split_property(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn arbitrary_bytes_never_panic(data: &[u8], cuts: &[usize]) {
    let limits = FrameLimits {
        max_header_bytes: 256,
        max_body_bytes: 1024,
    };
    let mut f = Framer::new(limits);
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(at, data.len());
        f.extend(&data[at..cut]);
        at = cut;
        loop {
            match f.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return, // the connection would be closed
            }
        }
        assert!(f.buffered() <= data.len());
    }
}

/// Bytes that look like ESL: mostly header-ish fragments, some random.
fn eslish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"Content-Type: ".to_vec()),
        Just(b"text/event-plain".to_vec()),
        Just(b"api/response".to_vec()),
        Just(b"Content-Length: ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b":".to_vec()),
        "[0-9]{1,4}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn cuts_for(len_hint: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..len_hint.max(1), 0..8).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

proptest! {
    #![proptest_config(split_property(2000))]

    #[test]
    fn prop_arbitrary_bytes_and_splits_never_panic(
        data in prop_oneof![eslish(), proptest::collection::vec(any::<u8>(), 0..600)],
        cuts in cuts_for(600),
    ) {
        arbitrary_bytes_never_panic(&data, &cuts);
    }

    #[test]
    fn prop_valid_stream_split_anywhere_parses_the_same(cuts in cuts_for(valid_stream().len())) {
        let s = valid_stream();
        let whole = all_frames(&s).unwrap();
        prop_assert_eq!(frames_split(&s, &cuts).unwrap(), whole);
    }
}

/// The same properties with 100,000 cases each:
/// `cargo test --release --lib pbx::freeswitch::esl::frame::tests::prop_many -- --ignored`.
#[test]
#[ignore = "long property run"]
fn prop_many() {
    let mut runner = proptest::test_runner::TestRunner::new(split_property(100_000));
    let data = (
        prop_oneof![eslish(), proptest::collection::vec(any::<u8>(), 0..600)],
        cuts_for(600),
    );
    runner
        .run(&data, |(data, cuts)| {
            arbitrary_bytes_never_panic(&data, &cuts);
            Ok(())
        })
        .unwrap();
    let s = valid_stream();
    let whole = all_frames(&s).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(split_property(100_000));
    runner
        .run(&cuts_for(s.len()), |cuts| {
            prop_assert_eq!(frames_split(&s, &cuts).unwrap(), whole.clone());
            Ok(())
        })
        .unwrap();
}

/// Parsing throughput on the real capture's events (release mode:
/// `cargo test --release --lib pbx::freeswitch::esl::frame::tests::frame_throughput -- --ignored --nocapture`).
#[test]
#[ignore = "measurement; run in release mode"]
fn frame_throughput() {
    let capture = testdata("NEventSocket_issue20-inbound-wire-capture_fs1.5.txt");
    // The six events of the capture (skip the login and api lines: 18 lines).
    let start_of_events = capture
        .windows(16)
        .position(|w| w == b"Content-Length: ")
        .and_then(|first| {
            capture[first + 1..]
                .windows(16)
                .position(|w| w == b"Content-Length: ")
                .map(|p| p + first + 1)
        })
        .expect("events");
    let events = &capture[start_of_events..];
    let stream = events.repeat(5000);
    let start = std::time::Instant::now();
    let mut n = 0usize;
    let mut reads = 0usize;
    let mut f = Framer::new(FrameLimits::default());
    for chunk in stream.chunks(16 * 1024) {
        f.extend(chunk);
        reads += 1;
        while let Some(frame) = f.next_frame().unwrap() {
            let Frame::Event(e) = frame else {
                panic!("not an event")
            };
            // What a tracker reads per event.
            for h in [
                "Event-Name",
                "Unique-ID",
                "Other-Leg-Unique-ID",
                "Caller-Context",
                "variable_cc_member_session_uuid",
            ] {
                std::hint::black_box(e.get(h));
            }
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ESL framer: {n} events ({:.1} MB, {reads} reads) in {secs:.3} s = {:.0} events/s, {:.0} MB/s",
        stream.len() as f64 / 1e6,
        n as f64 / secs,
        stream.len() as f64 / 1e6 / secs
    );
    assert_eq!(n, 6 * 5000);
}

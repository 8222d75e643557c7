//! Framer unit tests: partial reads, line ends, repeated keys, `Follows`, limits, garbage,
//! and replays of real captures.

use super::*;

fn frames_of(framer: &mut Framer) -> Result<Vec<Frame>, FrameError> {
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame()? {
        out.push(f);
    }
    Ok(out)
}

fn all_frames(input: &[u8], banner: bool) -> Result<Vec<Frame>, FrameError> {
    let mut f = if banner {
        Framer::after_connect(FrameLimits::default())
    } else {
        Framer::messages_only(FrameLimits::default())
    };
    f.extend(input);
    frames_of(&mut f)
}

fn msg(frame: &Frame) -> &Message {
    match frame {
        Frame::Message(m) => m,
        Frame::Banner { .. } => panic!("expected a message, got {frame:?}"),
    }
}

/// LF → CRLF, as on the wire.
fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

const STREAM: &str = "Asterisk Call Manager/11.0.0\r\n\
Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n\
Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/100-00000001\r\nCallerIDNum: \r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n\
Event: VarSet\r\nVariable: A\r\nValue: x: y\r\nChanVariable(Local/1): 1\r\nChanVariable(Local/1): 2\r\n\r\n";

fn check_stream(frames: &[Frame]) {
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(
        frames[0],
        Frame::Banner {
            version: "11.0.0".into()
        }
    );
    let login = msg(&frames[1]);
    assert_eq!(login.response(), Some("Success"));
    assert_eq!(login.action_id(), Some("1"));
    let nc = msg(&frames[2]);
    assert_eq!(nc.event(), Some("Newchannel"));
    assert_eq!(
        nc.get("callerIDnum"),
        Some(""),
        "empty value, case-insensitive key"
    );
    assert_eq!(nc.get("Linkedid"), Some("1.1"));
    let vs = msg(&frames[3]);
    assert_eq!(vs.get("Value"), Some("x: y"), "only the first ':' splits");
    assert_eq!(
        vs.get_all("ChanVariable(Local/1)").collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!(
        vs.get("ChanVariable(Local/1)"),
        Some("1"),
        "first value wins"
    );
}

#[test]
fn whole_stream_in_one_read() {
    check_stream(&all_frames(STREAM.as_bytes(), true).unwrap());
}

#[test]
fn split_at_every_byte_boundary() {
    let bytes = STREAM.as_bytes();
    for cut in 0..=bytes.len() {
        let mut f = Framer::after_connect(FrameLimits::default());
        f.extend(&bytes[..cut]);
        let mut frames = frames_of(&mut f).unwrap();
        f.extend(&bytes[cut..]);
        frames.extend(frames_of(&mut f).unwrap());
        check_stream(&frames);
        assert_eq!(f.buffered(), 0);
    }
}

#[test]
fn one_byte_at_a_time() {
    let mut f = Framer::after_connect(FrameLimits::default());
    let mut frames = Vec::new();
    for b in STREAM.as_bytes() {
        f.extend(std::slice::from_ref(b));
        frames.extend(frames_of(&mut f).unwrap());
    }
    check_stream(&frames);
}

#[test]
fn crlf_split_between_reads() {
    let mut f = Framer::messages_only(FrameLimits::default());
    f.extend(b"Event: Hangup\r\nCause: 16\r");
    assert_eq!(f.next_frame().unwrap(), None);
    f.extend(b"\n\r");
    assert_eq!(f.next_frame().unwrap(), None);
    f.extend(b"\nEvent: Ne");
    let m = f.next_frame().unwrap().unwrap();
    assert_eq!(msg(&m).get("Cause"), Some("16"));
    assert_eq!(f.next_frame().unwrap(), None);
}

#[test]
fn bare_lf_and_mixed_line_ends() {
    let s = STREAM.replace("\r\n", "\n");
    check_stream(&all_frames(s.as_bytes(), true).unwrap());
    let mixed = "Event: A\nX: 1\r\n\nEvent: B\r\n\r\n";
    let frames = all_frames(mixed.as_bytes(), false).unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(msg(&frames[0]).get("X"), Some("1"));
    assert_eq!(msg(&frames[1]).event(), Some("B"));
}

#[test]
fn blank_lines_between_messages_and_odd_spacing() {
    let s = "\r\n\r\nEvent: A\r\nKey:NoSpace\r\nSpaced :  two\r\nEmpty:\r\n\r\n\r\n";
    let frames = all_frames(s.as_bytes(), false).unwrap();
    assert_eq!(frames.len(), 1);
    let m = msg(&frames[0]);
    assert_eq!(m.get("Key"), Some("NoSpace"));
    assert_eq!(m.get("Spaced"), Some("two"));
    assert_eq!(m.get("Empty"), Some(""));
}

#[test]
fn response_follows_until_end_command() {
    let s = "Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n\
Name/username: Host: Dyn\r\n\r\nsecond line\n--END COMMAND--\r\n\r\n\
Event: After\r\n\r\n";
    let frames = all_frames(s.as_bytes(), false).unwrap();
    assert_eq!(frames.len(), 2, "{frames:?}");
    let m = msg(&frames[0]);
    assert_eq!(m.response(), Some("Follows"));
    assert_eq!(m.action_id(), Some("7"));
    assert_eq!(
        m.get_all("Output").collect::<Vec<_>>(),
        ["Name/username: Host: Dyn", "", "second line"]
    );
    assert_eq!(msg(&frames[1]).event(), Some("After"));
    // --END COMMAND-- glued to the last output line (Asterisk 1.4 style).
    let s = "Response: Follows\r\nActionID: 8\r\nNo such command 'x'--END COMMAND--\r\n\r\n";
    let frames = all_frames(s.as_bytes(), false).unwrap();
    assert_eq!(
        msg(&frames[0]).get_all("Output").collect::<Vec<_>>(),
        ["No such command 'x'"]
    );
}

#[test]
fn follows_split_at_every_byte() {
    let s = "Response: Follows\r\nActionID: 7\r\nline: a\r\n\r\n--END COMMAND--\r\n\r\nEvent: X\r\n\r\n";
    let expect = all_frames(s.as_bytes(), false).unwrap();
    assert_eq!(expect.len(), 2);
    for cut in 0..=s.len() {
        let mut f = Framer::messages_only(FrameLimits::default());
        f.extend(&s.as_bytes()[..cut]);
        let mut frames = frames_of(&mut f).unwrap();
        f.extend(&s.as_bytes()[cut..]);
        frames.extend(frames_of(&mut f).unwrap());
        assert_eq!(frames, expect, "cut at {cut}");
    }
}

#[test]
fn modern_command_output_headers_repeat() {
    let s = "Response: Success\r\nActionID: 3\r\nMessage: Command output follows\r\n\
Output: Name/username             Host\r\nOutput: 100/100  (Unspecified)\r\nOutput: \r\n\r\n";
    let frames = all_frames(s.as_bytes(), false).unwrap();
    assert_eq!(msg(&frames[0]).get_all("output").count(), 3);
}

#[test]
fn oversized_frame_is_an_error() {
    let limits = FrameLimits {
        max_message_bytes: 1024,
        max_headers: 1024,
    };
    // Never terminated: refused once the buffer passes the limit, without waiting.
    let mut f = Framer::messages_only(limits);
    f.extend(b"Event: Big\r\n");
    for _ in 0..200 {
        f.extend(b"X: 0123456789\r\n");
        if f.next_frame().is_err() {
            break;
        }
    }
    assert_eq!(f.next_frame(), Err(FrameError::TooLarge { limit: 1024 }));
    // One line without a newline.
    let mut f = Framer::messages_only(limits);
    f.extend(&[b'a'; 2000]);
    assert_eq!(f.next_frame(), Err(FrameError::TooLarge { limit: 1024 }));
    // Complete but too large.
    let big = format!("Event: Big\r\nX: {}\r\n\r\n", "y".repeat(1100));
    let mut f = Framer::messages_only(limits);
    f.extend(big.as_bytes());
    assert_eq!(f.next_frame(), Err(FrameError::TooLarge { limit: 1024 }));
    // Too many headers.
    let mut f = Framer::messages_only(FrameLimits {
        max_message_bytes: 1024,
        max_headers: 16,
    });
    f.extend("H: 1\r\n".repeat(17).as_bytes());
    assert_eq!(
        f.next_frame(),
        Err(FrameError::TooManyHeaders { limit: 16 })
    );
    // The default limits take a 60 KiB message.
    let ok = format!("Event: Big\r\nX: {}\r\n\r\n", "y".repeat(60 * 1024));
    assert_eq!(all_frames(ok.as_bytes(), false).unwrap().len(), 1);
}

#[test]
fn garbage_is_an_error() {
    assert!(matches!(
        all_frames(b"Event: A\r\nthis is not a header\r\n\r\n", false),
        Err(FrameError::Malformed { line: 2, .. })
    ));
    assert!(matches!(
        all_frames(b"\x00\x01\x02\xff\xfe\r\n\r\n", false),
        Err(FrameError::Malformed { line: 1, .. })
    ));
    assert!(matches!(
        all_frames(b": no key\r\n\r\n", false),
        Err(FrameError::Malformed { .. })
    ));
    assert!(matches!(
        all_frames(b"HTTP/1.1 400 Bad Request\r\n\r\n", true),
        Err(FrameError::BadBanner(_))
    ));
    let mut f = Framer::after_connect(FrameLimits::default());
    f.extend(&[b'x'; 2000]);
    assert!(matches!(f.next_frame(), Err(FrameError::BadBanner(_))));
}

#[test]
fn non_utf8_values_are_kept_lossily() {
    let frames = all_frames(b"Event: A\r\nCallerIDName: 81079\xa5\xa5b\r\n\r\n", false).unwrap();
    assert_eq!(
        msg(&frames[0]).get("CallerIDName"),
        Some("81079\u{fffd}\u{fffd}b")
    );
}

/// The captures in `ami/testdata` (LF in the files) replayed with CRLF, in chunks of
/// several sizes: every event is found.
#[test]
fn replay_real_captures() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pbx/asterisk/ami/testdata");
    // (file, starts with a banner, events, other messages)
    let cases = [
        ("sweeney-asterisk-mqtt_answered-internal.txt", false, 27, 0),
        ("sweeney-asterisk-mqtt_answered-outbound.txt", false, 23, 0),
        ("sweeney-asterisk-mqtt_unanswered-cancel.txt", false, 15, 0),
        (
            "sweeney-asterisk-mqtt_unanswered-huntgroup.txt",
            false,
            53,
            0,
        ),
        ("panoramisk_originate-with-events_ast11.txt", false, 748, 2),
        ("panoramisk_queuestatus-eventlist_ast11.txt", false, 8, 1),
        ("panoramisk_command-response-follows_ast11.txt", false, 0, 2),
        ("panoramisk_challenge-md5_ami7.txt", true, 0, 2),
        ("panoramisk_login-failed_ami1.3.txt", true, 0, 2),
    ];
    for (file, banner, events, others) in cases {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        // Some captures were cut after their last header: end the last message.
        let text = format!("{}\n\n", text.trim_end_matches('\n'));
        for (name, bytes) in [("lf", text.clone().into_bytes()), ("crlf", crlf(&text))] {
            for chunk in [1, 7, 100, 4096, usize::MAX] {
                let mut f = if banner {
                    Framer::after_connect(FrameLimits::default())
                } else {
                    Framer::messages_only(FrameLimits::default())
                };
                let mut frames = Vec::new();
                for piece in bytes.chunks(chunk.min(bytes.len()).max(1)) {
                    f.extend(piece);
                    frames.extend(frames_of(&mut f).unwrap());
                }
                let n_banner = frames
                    .iter()
                    .filter(|f| matches!(f, Frame::Banner { .. }))
                    .count();
                let n_events = frames
                    .iter()
                    .filter(|f| matches!(f, Frame::Message(m) if m.event().is_some()))
                    .count();
                assert_eq!(n_banner, usize::from(banner), "{file} {name} {chunk}");
                assert_eq!(n_events, events, "{file} {name} {chunk}");
                assert_eq!(
                    frames.len() - n_banner - n_events,
                    others,
                    "{file} {name} {chunk}"
                );
                assert_eq!(f.buffered(), 0, "{file} {name} {chunk}");
            }
        }
    }
    // Spot checks.
    let text =
        std::fs::read_to_string(dir.join("panoramisk_command-response-follows_ast11.txt")).unwrap();
    let frames = all_frames(&crlf(&text), false).unwrap();
    let reply = msg(&frames[1]);
    assert_eq!(reply.response(), Some("Follows"));
    assert_eq!(reply.get("Privilege"), Some("Command"));
    let out: Vec<_> = reply.get_all("Output").collect();
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with("Asterisk 11.11.0+xivo"), "{out:?}");
    let text = std::fs::read_to_string(dir.join("panoramisk_challenge-md5_ami7.txt")).unwrap();
    let frames = all_frames(&crlf(&text), true).unwrap();
    assert_eq!(
        frames[0],
        Frame::Banner {
            version: "7.0.3".into()
        }
    );
    assert_eq!(msg(&frames[2]).get("Challenge"), Some("145769581"));
}

/// Framer throughput on a real capture (release mode: `cargo test --release --lib
/// frame_throughput -- --ignored --nocapture`).
#[test]
#[ignore = "measurement; run in release mode"]
fn frame_throughput() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pbx/asterisk/ami/testdata");
    let one = crlf(
        &std::fs::read_to_string(dir.join("sweeney-asterisk-mqtt_unanswered-huntgroup.txt"))
            .unwrap(),
    );
    let stream = one.repeat(2000);
    let start = std::time::Instant::now();
    let mut frames = 0usize;
    let mut f = Framer::messages_only(FrameLimits::default());
    for chunk in stream.chunks(16 * 1024) {
        f.extend(chunk);
        while let Some(_frame) = f.next_frame().unwrap() {
            frames += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "framer: {frames} frames, {:.1} MB in {secs:.3} s = {:.0} frames/s, {:.0} MB/s",
        stream.len() as f64 / 1e6,
        frames as f64 / secs,
        stream.len() as f64 / 1e6 / secs
    );
    assert_eq!(frames, 53 * 2000);
}

/// Property tests: whatever bytes arrive, cut wherever the socket cuts them, the framer
/// never panics, and a valid stream parses to the same frames however it is cut.
///
/// A few thousand cases run with the suite; the long run is
/// `cargo test --release --lib frame::tests::properties -- --ignored`.
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Feeds `input` in pieces cut at `cuts` (positions modulo the length), collecting
    /// frames until the first error.
    fn feed(input: &[u8], cuts: &[usize], banner: bool) -> Result<Vec<Frame>, FrameError> {
        let mut f = if banner {
            Framer::after_connect(FrameLimits::default())
        } else {
            Framer::messages_only(FrameLimits::default())
        };
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| c % (input.len() + 1))
            .chain([0, input.len()])
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut out = Vec::new();
        for w in points.windows(2) {
            f.extend(&input[w[0]..w[1]]);
            out.extend(frames_of(&mut f)?);
        }
        Ok(out)
    }

    /// Bytes that look like AMI often enough to reach every branch: line ends, colons,
    /// `Response: Follows`, `--END COMMAND--`, the banner, and anything else.
    fn amiish_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            vec(any::<u8>(), 0..64),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b": ".to_vec()),
            Just(b"Response: Follows\r\n".to_vec()),
            Just(b"--END COMMAND--".to_vec()),
            Just(b"Asterisk Call Manager/11.0.0\r\n".to_vec()),
            Just(b"Event: Newchannel\r\n".to_vec()),
            "[A-Za-z]{1,8}: [ -~]{0,20}\r?\n".prop_map(String::into_bytes),
        ];
        vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    /// A generated message: its headers, and its wire form.
    type Generated = (Vec<(String, String)>, Vec<u8>);

    /// A valid message: its headers, and its wire form with CRLF or bare LF line ends.
    fn message() -> impl Strategy<Value = Generated> {
        let header = (
            "[A-Za-z][A-Za-z0-9_()/-]{0,15}",
            "([!-~][ -~]{0,40})?",
            any::<bool>(),
        );
        vec(header, 1..12)
            .prop_filter("not a Follows reply", |hs| {
                !(hs[0].0.eq_ignore_ascii_case("Response") && hs[0].1.trim() == "Follows")
            })
            .prop_map(|hs| {
                let mut wire = Vec::new();
                let mut headers = Vec::new();
                for (k, v, crlf) in hs {
                    let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                    wire.extend_from_slice(format!("{k}: {v}").as_bytes());
                    wire.extend_from_slice(end);
                    headers.push((k, v));
                }
                wire.extend_from_slice(b"\r\n");
                (headers, wire)
            })
    }

    fn never_panics(bytes: &[u8], cuts: &[usize], banner: bool) {
        let _ = feed(bytes, cuts, banner);
    }

    fn same_however_cut(
        messages: &[Generated],
        cuts: &[usize],
        banner: bool,
    ) -> Result<(), TestCaseError> {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        if banner {
            stream.extend_from_slice(b"Asterisk Call Manager/11.0.0\r\n");
            expected.push(Frame::Banner {
                version: "11.0.0".into(),
            });
        }
        for (headers, wire) in messages {
            stream.extend_from_slice(wire);
            expected.push(Frame::Message(Message::new(headers.clone())));
        }
        let whole = all_frames(&stream, banner).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&whole, &expected);
        let cut = feed(&stream, cuts, banner).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(cut, expected);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_cut_anywhere_never_panic(
            bytes in amiish_bytes(),
            cuts in vec(any::<usize>(), 0..12),
            banner in any::<bool>(),
        ) {
            never_panics(&bytes, &cuts, banner);
        }

        #[test]
        fn a_valid_stream_cut_anywhere_parses_the_same(
            messages in vec(message(), 1..6),
            cuts in vec(any::<usize>(), 0..12),
            banner in any::<bool>(),
        ) {
            same_however_cut(&messages, &cuts, banner)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        #[test]
        #[ignore = "long run (100,000 cases each): cargo test --release --lib frame::tests::properties -- --ignored"]
        fn long_arbitrary_bytes_cut_anywhere_never_panic(
            bytes in amiish_bytes(),
            cuts in vec(any::<usize>(), 0..12),
            banner in any::<bool>(),
        ) {
            never_panics(&bytes, &cuts, banner);
        }

        #[test]
        #[ignore = "long run (100,000 cases each): cargo test --release --lib frame::tests::properties -- --ignored"]
        fn long_a_valid_stream_cut_anywhere_parses_the_same(
            messages in vec(message(), 1..6),
            cuts in vec(any::<usize>(), 0..12),
            banner in any::<bool>(),
        ) {
            same_however_cut(&messages, &cuts, banner)?;
        }
    }
}

use super::*;
use crate::pbx::freeswitch::esl::{Frame, FrameLimits, Framer};
use crate::simulation::fs_leg::SimLeg;

/// Every message of a real capture with its exact bytes.
fn capture_frames(scenario: &str) -> Vec<(Frame, Vec<u8>)> {
    let path = format!(
        "{}/tests/fixtures/freeswitch/{scenario}/esl.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut framer = Framer::new(FrameLimits::default());
    framer.extend(&bytes);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let before = framer.buffered();
        let Some(frame) = framer.next_frame().expect("the capture frames") else {
            break;
        };
        let used = before - framer.buffered();
        out.push((frame, bytes[offset..offset + used].to_vec()));
        offset += used;
    }
    out
}

#[test]
fn events_are_written_byte_for_byte_as_freeswitch_writes_them() {
    let mut compared = 0;
    for scenario in [
        "answered_inbound",
        "missed_inbound",
        "busy_agent",
        "queue_ring_all",
        "agent_outbound",
        "click_to_call",
    ] {
        for (frame, wire) in capture_frames(scenario) {
            let Frame::Event(event) = frame else { continue };
            let raw = String::from_utf8_lossy(&wire);
            if raw.contains("_undef_") {
                // Read back as empty by design; not the same bytes.
                continue;
            }
            let mut rebuilt = EslEvent {
                headers: Vec::new(),
                body: event
                    .body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
            };
            for (name, value) in event.headers.iter() {
                if rebuilt.body.is_some() && name.eq_ignore_ascii_case("Content-Length") {
                    continue;
                }
                rebuilt.push(&name, value.into_owned());
            }
            assert_eq!(
                String::from_utf8_lossy(&rebuilt.to_wire()),
                raw,
                "{scenario}: {}",
                event.name()
            );
            compared += 1;
        }
    }
    assert!(compared >= 50, "only {compared} events compared");
}

#[test]
fn url_encoding_matches_freeswitch() {
    assert_eq!(
        url_encode("Tue, 01 Dec 2026 23:28:39 GMT"),
        "Tue,%2001%20Dec%202026%2023%3A28%3A39%20GMT"
    );
    assert_eq!(url_encode("sip:a@b;tag=x"), "sip%3Aa%40b%3Btag%3Dx");
    assert_eq!(url_encode("'Lead 42'/x"), "'Lead%2042'/x");
    assert_eq!(url_encode("50%\r\n"), "50%25%0D%0A");
    assert_eq!(url_encode("Müller"), "M%C3%BCller");
}

#[test]
fn originate_arguments_parse_as_freeswitch_reads_them() {
    let job = OriginateJob::parse(
        "job-1",
        "{origination_uuid=abc,origination_caller_id_name='Sales, India',pbxlink_lead_id=lead-1}user/101 919845022222 XML default",
    )
    .expect("parses");
    assert_eq!(job.endpoint, "user/101");
    assert_eq!(job.destination, "919845022222");
    assert_eq!(job.dialplan, "XML");
    assert_eq!(job.context, "default");
    assert_eq!(job.variable("origination_uuid"), Some("abc"));
    assert_eq!(
        job.variable("origination_caller_id_name"),
        Some("Sales, India")
    );
    assert_eq!(job.variable("pbxlink_lead_id"), Some("lead-1"));
    assert!(OriginateJob::parse("j", "{a=b}user/101").is_none());
}

/// Reads frames off a raw connection with pbxlink's framer.
struct Wire {
    stream: TcpStream,
    framer: Framer,
}

impl Wire {
    async fn connect(addr: SocketAddr) -> Wire {
        Wire {
            stream: TcpStream::connect(addr).await.expect("connect"),
            framer: Framer::new(FrameLimits::default()),
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("write");
    }

    async fn frame(&mut self) -> Option<Frame> {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(f) = self
                .framer
                .next_frame()
                .expect("the simulator's bytes frame")
            {
                return Some(f);
            }
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf))
                .await
                .expect("a frame within 5 s")
                .expect("read");
            if n == 0 {
                return None;
            }
            self.framer.extend(&buf[..n]);
        }
    }

    async fn reply(&mut self) -> String {
        match self.frame().await {
            Some(Frame::CommandReply(r)) => r.text().into_owned(),
            other => panic!("not a command/reply: {other:?}"),
        }
    }

    async fn api(&mut self, command: &str) -> String {
        self.send(&format!("api {command}\n\n")).await;
        match self.frame().await {
            Some(Frame::ApiResponse { body }) => String::from_utf8_lossy(&body).into_owned(),
            other => panic!("not an api/response: {other:?}"),
        }
    }
}

use std::time::Duration;

#[tokio::test]
async fn a_session_as_freeswitch_holds_it() {
    let sim = EslSimulator::start("127.0.0.1:0".parse().expect("addr"), "ClueCon")
        .await
        .expect("start");

    // A wrong password: refused, a disconnect notice, the end.
    let mut bad = Wire::connect(sim.addr()).await;
    assert_eq!(bad.frame().await, Some(Frame::AuthRequest));
    bad.send("auth nope\n\n").await;
    assert_eq!(bad.reply().await, "-ERR invalid");
    assert!(matches!(
        bad.frame().await,
        Some(Frame::DisconnectNotice { .. })
    ));
    assert_eq!(bad.frame().await, None);

    let mut w = Wire::connect(sim.addr()).await;
    assert_eq!(w.frame().await, Some(Frame::AuthRequest));
    w.send("auth ClueCon\n\n").await;
    assert_eq!(w.reply().await, "+OK accepted");
    w.send("event plain BACKGROUND_JOB CHANNEL_CREATE CUSTOM callcenter::info\n\n")
        .await;
    assert_eq!(w.reply().await, "+OK event listener enabled plain");
    assert_eq!(sim.subscribers(), 1);

    let at = Utc::now();
    let mut leg = SimLeg::new("0b5c3b1e-1111-4a2b-9c3d-000000000001", false, at);
    leg.channel_name = "sofia/external/+919611795983@203.0.113.10".into();
    leg.context = "public".into();
    leg.destination = "918044556677".into();
    leg.caller_id_name = "Priya Sharma".into();
    leg.caller_id_number = "+919611795983".into();
    // Not subscribed: never sent. Subscribed: sent, values URL-encoded on the wire.
    sim.emit(&leg.event("CHANNEL_ANSWER", at, sim.next_sequence()));
    sim.emit(&leg.event("CHANNEL_CREATE", at, sim.next_sequence()));
    let Some(Frame::Event(e)) = w.frame().await else {
        panic!("no event")
    };
    assert_eq!(e.name(), "CHANNEL_CREATE");
    assert_eq!(
        e.get("Caller-Caller-ID-Name").as_deref(),
        Some("Priya Sharma")
    );
    assert_eq!(
        e.get("Channel-Name").as_deref(),
        Some("sofia/external/+919611795983@203.0.113.10")
    );
    assert_eq!(
        e.get("Event-Date-Timestamp").as_deref(),
        Some(at.timestamp_micros().to_string().as_str())
    );

    // The channel is up until its hangup.
    let shown: serde_json::Value =
        serde_json::from_str(&w.api("show channels as json").await).expect("JSON");
    assert_eq!(shown["row_count"], 1);
    assert_eq!(shown["rows"][0]["uuid"], leg.uuid.as_str());
    assert_eq!(shown["rows"][0]["context"], "public");
    assert_eq!(w.api(&format!("uuid_exists {}", leg.uuid)).await, "true");
    sim.emit(&leg.event("CHANNEL_HANGUP_COMPLETE", at, sim.next_sequence()));
    assert_eq!(w.api("show channels as json").await, "{\"row_count\":0}\n");

    assert!(
        w.api("version")
            .await
            .starts_with("FreeSWITCH Version 1.10.12")
    );
    assert_eq!(
        w.api("callcenter_config agent set status 100 Available")
            .await,
        "+OK\n"
    );
    assert_eq!(
        w.api("callcenter_config agent get status 100").await,
        "Available\n"
    );
    assert_eq!(
        w.api("no_such_thing now").await,
        "-ERR no_such_thing Command not found!\n"
    );

    // bgapi: the reply names the client's Job-UUID; the originate goes to the story, whose
    // result comes back as the BACKGROUND_JOB event with a body.
    w.send("bgapi originate {origination_uuid=c2c-1}user/100 919845022222 XML default\nJob-UUID: job-42\n\n")
        .await;
    assert_eq!(w.reply().await, "+OK Job-UUID: job-42");
    let job = sim.next_originate().await.expect("the originate");
    assert_eq!(job.job_uuid, "job-42");
    assert_eq!(job.variable("origination_uuid"), Some("c2c-1"));
    sim.finish_job("job-42", "originate", "user/100", "+OK c2c-1\n");
    let Some(Frame::Event(done)) = w.frame().await else {
        panic!("no BACKGROUND_JOB")
    };
    let bg = done.background_job().expect("a BACKGROUND_JOB");
    assert_eq!(bg.job_uuid, "job-42");
    assert_eq!(bg.outcome(), Ok("c2c-1"));
    assert!(
        sim.commands()
            .iter()
            .any(|c| c.starts_with("bgapi originate"))
    );

    w.send("exit\n\n").await;
    assert_eq!(w.reply().await, "+OK bye");
    assert!(matches!(
        w.frame().await,
        Some(Frame::DisconnectNotice { .. })
    ));
    assert_eq!(w.frame().await, None);
}

#[tokio::test]
async fn a_leg_s_json_cdr_file_reads_back_through_the_real_parser() {
    use crate::pbx::freeswitch::json_cdr::parse::parse_json_cdr;
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = crate::simulation::json_cdr::JsonCdrWriter::new(dir.path()).expect("dir");
    let t0 = Utc::now() - chrono::Duration::seconds(100);
    let mut leg = SimLeg::new("5e2f8a90-2222-4b3c-8d4e-000000000002", true, t0);
    leg.channel_name = "sofia/internal/100@192.0.2.120:5060".into();
    leg.context = "public".into();
    leg.destination = "100".into();
    leg.caller_id_name = "Priya Sharma".into();
    leg.caller_id_number = "+919611795983".into();
    leg.answered = Some(t0 + chrono::Duration::seconds(4));
    leg.ended = t0 + chrono::Duration::seconds(95);
    leg.b_leg = true;
    leg.set("dialed_user", "100")
        .set("originating_leg_uuid", "a-leg")
        .set("record_path", "/var/lib/freeswitch/recordings/x y.wav");
    let path = writer.write(&leg).await.expect("write");
    assert!(path.ends_with("5e2f8a90-2222-4b3c-8d4e-000000000002.cdr.json"));
    let bytes = std::fs::read(&path).expect("read");
    assert!(
        String::from_utf8_lossy(&bytes).contains("x%20y.wav"),
        "values URL-encoded"
    );
    let parsed = parse_json_cdr(
        &bytes,
        chrono_tz::UTC,
        crate::call::TimeWindow::at(Utc::now()),
    )
    .expect("a json_cdr leg");
    assert_eq!(parsed.uuid, leg.uuid);
    assert_eq!(parsed.originator.as_deref(), Some("a-leg"));
    assert_eq!(parsed.dialed_user.as_deref(), Some("100"));
    assert_eq!(parsed.contexts, vec!["public".to_owned()]);
    assert_eq!(parsed.caller_id_number.as_deref(), Some("+919611795983"));
    assert_eq!(parsed.billsec, 91);
    assert_eq!(
        parsed.answer,
        leg.answered
            .map(|a| { DateTime::from_timestamp_micros(a.timestamp_micros()).expect("time") })
    );
    assert_eq!(
        parsed.recording.as_deref(),
        Some("/var/lib/freeswitch/recordings/x y.wav")
    );
}

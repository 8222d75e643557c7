//! pbxlink's FreeSWITCH actions (`src/pbx/freeswitch/control.rs`) and live call tracker
//! (`src/pbx/freeswitch/tracker`) against the real FreeSWITCH 1.10.12 rig
//! (`tests/freeswitch/rig.sh`, config `tests/freeswitch/conf/freeswitch.xml`): the commands
//! pbxlink builds are sent as they are over a raw event-socket session, FreeSWITCH's answers
//! are read by pbxlink's framer and readers, and the events of the click-to-call call go
//! through the tracker.
//!
//! - A disposition frees a mod_callcenter agent: agent 100 is put `On Break`, the two
//!   commands of `free_agent_commands` make it `Available` / `Waiting` (read back with
//!   `callcenter_config agent get status|state 100`); an unknown agent is a clear refusal.
//! - Click to call to a user FreeSWITCH does not have is refused with FreeSWITCH's cause.
//! - Click to call to agent 101: the BACKGROUND_JOB says `+OK <the call id pbxlink chose>`;
//!   the tracker's call facts carry that id, the lead id and the lead's number as sent.
//!
//! Root only (the rig is a chroot); otherwise a loud SKIPPED banner.

mod fsrig;

use std::time::{Duration, Instant};

use fsrig::Esl;
use pbxlink::call::{CallFacts, DialResult};
use pbxlink::pbx::freeswitch::control::{
    self, FreeAgent, FsClickToCall, FsOriginateSettings, OriginatePlan,
};
use pbxlink::pbx::freeswitch::esl::{
    BackgroundJob, CallcenterAgentCommand, Command, Frame, FrameLimits, Framer, Reply,
};
use pbxlink::pbx::freeswitch::tracker::{FsCallTracker, FsTrackerOutput, FsTrackerSettings};
use pbxlink::phone::E164;

/// Reads the session's bytes with pbxlink's framer, from a mark on, keeping every frame.
struct Reader {
    framer: Framer,
    offset: usize,
    /// Every frame read, in order.
    all: Vec<Frame>,
    /// The first frame no [`Reader::wait`] has looked at.
    cursor: usize,
}

impl Reader {
    fn new(esl: &Esl) -> Self {
        Self {
            framer: Framer::new(FrameLimits::default()),
            offset: esl.len(),
            all: Vec::new(),
            cursor: 0,
        }
    }

    /// Reads the frames that arrived.
    fn pull(&mut self, esl: &Esl) {
        let bytes = esl.bytes_since(self.offset);
        self.offset += bytes.len();
        self.framer.extend(&bytes);
        while let Some(f) = self.framer.next_frame().expect("FreeSWITCH's bytes frame") {
            self.all.push(f);
        }
    }

    /// Waits for the first frame after the last one waited for that `pick` accepts.
    fn wait<T>(&mut self, esl: &Esl, what: &str, mut pick: impl FnMut(&Frame) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            self.pull(esl);
            while self.cursor < self.all.len() {
                let found = pick(&self.all[self.cursor]);
                self.cursor += 1;
                if let Some(v) = found {
                    return v;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {what} from FreeSWITCH within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes `command` exactly as pbxlink encodes it (fsrig's `send` adds the final blank line).
fn send(esl: &Esl, command: &Command) {
    let wire = String::from_utf8(command.to_wire()).expect("commands are text");
    esl.send(wire.trim_end_matches('\n'));
}

/// Sends an `api` command and returns its `api/response` body.
fn api(esl: &Esl, reader: &mut Reader, command: &Command) -> Vec<u8> {
    send(esl, command);
    reader.wait(esl, "api/response", |f| match f {
        Frame::ApiResponse { body } => Some(body.clone()),
        _ => None,
    })
}

/// Sends a click to call; returns FreeSWITCH's reading of the job.
fn originate(
    esl: &Esl,
    reader: &mut Reader,
    plan: &OriginatePlan,
) -> Result<String, control::FsRefusal> {
    send(esl, &plan.command);
    let reply: Reply = reader.wait(esl, "command/reply", |f| match f {
        Frame::CommandReply(r) => Some(r.clone()),
        _ => None,
    });
    let job = control::bgapi_accepted(&reply, "click to call")?;
    assert_eq!(
        job, plan.job_uuid,
        "FreeSWITCH keeps the Job-UUID pbxlink chose"
    );
    let done: BackgroundJob = reader.wait(esl, "BACKGROUND_JOB", |f| match f {
        Frame::Event(e) => e.background_job().filter(|j| j.job_uuid == job),
        _ => None,
    });
    control::originate_result(&done)
}

fn request(call_id: &str, agent: &str) -> FsClickToCall {
    FsClickToCall {
        call_id: call_id.to_owned(),
        agent_extension: agent.to_owned(),
        lead: E164 {
            country_code: 49,
            national: "30123457".into(),
        },
        lead_as_sent: Some("+49-30123457".into()),
        caller_id: "4930100".into(),
        lead_id: Some("lead-7".into()),
    }
}

#[test]
fn real_freeswitch_takes_pbxlinks_click_to_call_and_disposition() {
    if !fsrig::root_or_skip(
        "tests/freeswitch_control.rs",
        "FreeSWITCH click to call, disposition and the live call tracker",
    ) {
        return;
    }
    let _rig = fsrig::install_and_start("freeswitch_control");
    let esl = Esl::connect(fsrig::esl_port(), &fsrig::esl_password());
    let mut reader = Reader::new(&esl);
    send(&esl, &Command::api("status").expect("api status"));
    reader.wait(&esl, "api/response", |f| {
        matches!(f, Frame::ApiResponse { .. }).then_some(())
    });
    esl.send(fsrig::SUBSCRIBE);
    reader.wait(&esl, "the subscription's reply", |f| match f {
        Frame::CommandReply(r) if r.is_ok() => Some(()),
        _ => None,
    });
    let events_from = reader.all.len();

    // Disposition: agent 100 on break, then freed by pbxlink's two commands.
    let brk = CallcenterAgentCommand::set_status("100", "On Break")
        .and_then(|c| c.api())
        .expect("on break");
    let body = api(&esl, &mut reader, &brk);
    assert_eq!(control::api_result(&body, "on break").unwrap(), "+OK");
    let status = |reader: &mut Reader| {
        let q = control::agent_status_query("100").unwrap();
        control::api_result(&api(&esl, reader, &q), "status").unwrap()
    };
    assert_eq!(status(&mut reader), "On Break");
    let agent = control::callcenter_agent_name("100", None);
    for command in control::free_agent_commands(FreeAgent::Available, agent).unwrap() {
        let body = api(&esl, &mut reader, &command);
        assert_eq!(
            control::api_result(&body, "freeing agent 100").unwrap(),
            "+OK",
            "{}",
            command.command_line()
        );
    }
    assert_eq!(status(&mut reader), "Available");
    let state = Command::api("callcenter_config agent get state 100").unwrap();
    let body = api(&esl, &mut reader, &state);
    assert_eq!(control::api_result(&body, "state").unwrap(), "Waiting");
    let unknown = &control::free_agent_commands(FreeAgent::Available, "nobody").unwrap()[0];
    let e = control::api_result(&api(&esl, &mut reader, unknown), "freeing nobody").unwrap_err();
    assert_eq!(e.reason, "Agent not found!");
    eprintln!("[freeswitch_control] unknown agent: {e}");

    // Click to call to a user FreeSWITCH's directory does not have.
    let settings = FsOriginateSettings::default();
    let plan = control::click_to_call(
        &settings,
        &request(&control::new_uuid(), "109"),
        &control::new_uuid(),
    )
    .unwrap();
    let e = originate(&esl, &mut reader, &plan).unwrap_err();
    eprintln!("[freeswitch_control] click to call to user/109: {e}");
    assert_eq!(e.reason, "SUBSCRIBER_ABSENT", "{e}");
    assert!(e.meaning().is_some(), "{e}");

    // Click to call to agent 101; the lead is the carrier's UAS (sipp on 25099).
    let uas = std::thread::spawn(|| fsrig::carrier_uas(1, 60));
    std::thread::sleep(Duration::from_millis(500));
    let call_id = control::new_uuid();
    let plan =
        control::click_to_call(&settings, &request(&call_id, "101"), &control::new_uuid()).unwrap();
    eprintln!(
        "[freeswitch_control] sending {}",
        plan.command.command_line()
    );
    let agent_leg = originate(&esl, &mut reader, &plan).expect("click to call");
    assert_eq!(agent_leg, call_id, "origination_uuid names the agent leg");
    std::thread::sleep(Duration::from_secs(1));
    // What a reconnecting pbxlink asks: the calls in progress. The rig runs FreeSWITCH with
    // -nosql, which answers `show channels` with an error: then the fallback, `uuid_exists`
    // for each leg the tracker follows, is what is tested.
    let relearn_from = reader.all.len();
    let channels = api(
        &esl,
        &mut reader,
        &Command::api("show channels as json").unwrap(),
    );
    let channels: Option<serde_json::Value> = match control::api_result(&channels, "show channels")
    {
        Ok(text) => Some(serde_json::from_str(&text).expect("show channels as json is JSON")),
        Err(e) => {
            assert_eq!(e.reason, "SQL disabled, no data available!", "{e}");
            eprintln!(
                "[freeswitch_control] NOTE: the rig's FreeSWITCH runs -nosql ({e}); testing the \
                 uuid_exists fallback of relearning instead of `show channels as json`"
            );
            None
        }
    };
    let mut up = std::collections::HashSet::new();
    if channels.is_none() {
        let mut mid = FsCallTracker::new(FsTrackerSettings::default());
        for f in &reader.all[events_from..relearn_from] {
            if let Frame::Event(e) = f {
                mid.handle(e, 0);
            }
        }
        for leg in mid.legs_up() {
            let q = Command::api(&format!("uuid_exists {leg}")).unwrap();
            if control::api_result(&api(&esl, &mut reader, &q), "uuid_exists").unwrap() == "true" {
                up.insert(leg);
            }
        }
        assert!(up.contains(&call_id), "{up:?}");
    }
    std::thread::sleep(Duration::from_secs(2));
    send(
        &esl,
        &Command::bgapi(&format!("uuid_kill {call_id}"), None).unwrap(),
    );

    // The call's events through the tracker.
    let mut tracker = FsCallTracker::new(FsTrackerSettings::default());
    let mut ended: Vec<CallFacts> = Vec::new();
    let mut rung = 0;
    let mut fed = events_from;
    let start = Instant::now();
    loop {
        let now = start.elapsed().as_millis() as i64;
        reader.pull(&esl);
        let mut out = Vec::new();
        for f in &reader.all[fed..] {
            if let Frame::Event(e) = f {
                out.extend(tracker.handle(e, now));
            }
        }
        fed = reader.all.len();
        out.extend(tracker.tick(now));
        for o in out {
            match o {
                FsTrackerOutput::Ended(f) => ended.push(*f),
                FsTrackerOutput::Ringing(_) => rung += 1,
            }
        }
        if ended.iter().any(|f| f.call_id == call_id) && tracker.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no call facts for {call_id} within 30 s: {ended:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A tracker that learnt the call again after a "reconnect": from `show channels` (it
    // connected while the call was up), or, on -nosql, from what it had followed before and
    // `uuid_exists`; then it got the events from that moment on.
    let (mut late, feed_from) = match &channels {
        Some(channels) => {
            let mut late = FsCallTracker::new(FsTrackerSettings::default());
            let report = late.relearn(channels, 0, chrono::Utc::now());
            assert!(report.new_legs >= 2, "{report:?}");
            (late, relearn_from)
        }
        None => {
            let mut late = FsCallTracker::new(FsTrackerSettings::default());
            for f in &reader.all[events_from..relearn_from] {
                if let Frame::Event(e) = f {
                    late.handle(e, 0);
                }
            }
            assert_eq!(late.keep_legs_up(&up, chrono::Utc::now()), 0);
            (late, relearn_from)
        }
    };
    let mut late_ended = Vec::new();
    for f in &reader.all[feed_from..] {
        if let Frame::Event(e) = f {
            for o in late.handle(e, 1) {
                match o {
                    FsTrackerOutput::Ended(f) => late_ended.push(*f),
                    FsTrackerOutput::Ringing(r) => panic!("late popup {r:?}"),
                }
            }
        }
    }
    for o in late.tick(60_000) {
        if let FsTrackerOutput::Ended(f) = o {
            late_ended.push(*f);
        }
    }
    assert!(late.is_empty());
    let (uas_ok, uas_out) = uas.join().expect("sipp uas thread");
    assert!(uas_ok, "the lead's UAS did not see the call:\n{uas_out}");
    assert_eq!(
        ended.len(),
        1,
        "one call, no log for the phone's own leg: {ended:#?}"
    );
    let f = &ended[0];
    eprintln!("[freeswitch_control] click to call facts: {f:#?}");
    assert_eq!(f.source, "freeswitch-esl");
    assert_eq!(f.caller_extension.as_deref(), Some("101"));
    assert_eq!(f.caller_number, "4930100");
    assert_eq!(f.dialled, "4930123457");
    assert_eq!(f.contexts, vec!["default".to_owned()]);
    assert_eq!(f.lead_id.as_deref(), Some("lead-7"));
    assert_eq!(f.lead_number_hint.as_deref(), Some("+49-30123457"));
    assert_eq!(f.attempts, vec![DialResult::Answered]);
    assert!(f.outside_answered.is_some(), "{f:#?}");
    assert!(f.shown_caller_ids.contains(&"4930100".to_owned()), "{f:#?}");
    assert_eq!(f.legs, 2);
    assert!(f.end > f.start);
    assert_eq!(
        rung, 0,
        "the originate ringing the agent is party A, not a popup"
    );
    assert_eq!(late_ended.len(), 1, "{late_ended:#?}");
    let g = &late_ended[0];
    assert_eq!(g.call_id, call_id);
    assert_eq!(g.caller_extension.as_deref(), Some("101"));
    assert_eq!(g.caller_number, "4930100");
    assert_eq!(g.dialled, "4930123457");
    assert_eq!(g.lead_id.as_deref(), Some("lead-7"));
    assert_eq!(g.lead_number_hint.as_deref(), Some("+49-30123457"));
    assert_eq!(g.attempts, f.attempts);
    assert_eq!(g.outside_answered, f.outside_answered);
    assert_eq!((g.start, g.end, g.legs), (f.start, f.end, f.legs));
}

//! `pbxlink demo --pbx freeswitch`: the demo's call centre on FreeSWITCH. The real daemon
//! (its ESL client and call tracker, its json_cdr directory source, the outbox, the HTTP API)
//! runs against the event-socket simulator and mod_json_cdr files written as FreeSWITCH
//! writes them; the story places the calls one after the other, each leg described once
//! ([`SimLeg`]) and played as its events and, when it ends, its json_cdr file:
//!
//! 1. an inbound call on the sales line bridged to agent 100, who answers (a popup, an
//!    Answered log);
//! 2. an inbound call that rings agent 101 for 20 s (a popup, a Missed log);
//! 3. agent 101 dials a lead through the carrier gateway (an Outbound log);
//! 4. a call into the ring-all mod_callcenter queue: agents 100 and 101 ring, 101 answers,
//!    100's leg ends LOSE_RACE (two popups, one Answered log for 101);
//! 5. click to call over the daemon's HTTP API: `bgapi originate` on the simulated event
//!    socket rings agent 100, then the lead (an Outbound log with the LeadId);
//! 6. a disposition for that call over HTTP: `callcenter_config agent set status 100
//!    Available` (and state Waiting) on the event socket, the disposition posted as CallNotes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{Expected, Stage, stage_config};
use crate::crm::leadsquared::standin::StandIn;
use crate::pbx::freeswitch::control::new_uuid;
use crate::simulation::esl::{EslSimulator, OriginateJob};
use crate::simulation::fs_leg::SimLeg;
use crate::simulation::json_cdr::JsonCdrWriter;

/// Five call logs (the ring-all call is one), four popups (agent 100, agent 101, both queue
/// agents), the click-to-call call's disposition.
const EXPECTED: Expected = Expected {
    call_logs: 5,
    popups: 4,
    dispositions: 1,
};

/// The event-socket password of the simulated FreeSWITCH (its stock one).
const ESL_PASSWORD: &str = "ClueCon";
/// The demo's `[http] token`.
const HTTP_TOKEN: &str = "demo-http-token";
/// The sales line, as the carrier sends it to FreeSWITCH.
const DID: &str = "918044556677";
/// The carrier's address in channel names and SIP Call-IDs.
const CARRIER: &str = "203.0.113.10";

/// Runs the FreeSWITCH demo.
pub async fn run() -> anyhow::Result<()> {
    let stage = Stage::new().await?;
    let cdr = JsonCdrWriter::new(&stage.dir().join("json_cdr"))
        .context("creating the json_cdr directory")?;
    let esl = EslSimulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), ESL_PASSWORD)
        .await
        .context("starting the event-socket simulator")?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the HTTP API")?;
    let config = stage_config(
        &stage,
        &format!(
            r#"
[freeswitch]
call_log_source = "json_cdr"
json_cdr_dir = {dir:?}
cdr_time_zone = "UTC"

[freeswitch.esl]
host = "{host}"
port = {port}
password = "{ESL_PASSWORD}"

[http]
listen = "{http}"
token = "{HTTP_TOKEN}"
"#,
            dir = cdr.dir(),
            host = esl.addr().ip(),
            port = esl.addr().port(),
        ),
    )?;
    let story = Story {
        esl: esl.clone(),
        cdr: cdr.clone(),
        standin: stage.standin.clone(),
        api: format!("http://{http}"),
    };
    let tally = stage
        .play(
            &config,
            &[
                ("FreeSWITCH simulator ESL", esl.addr().to_string()),
                ("json_cdr files", cdr.dir().display().to_string()),
                ("pbxlink HTTP API", format!("http://{http}")),
            ],
            EXPECTED,
            Duration::from_secs(90),
            story.play(),
        )
        .await?;
    println!(
        "\ndemo complete: {} call logs went json_cdr files → SQLite outbox → LeadSquared stand-in; \
         {} agent popups went ESL → LeadSquared stand-in while calls rang; click to call \
         went HTTP → ESL originate; {} disposition freed agent 100 in mod_callcenter.",
        tally.call_logs, tally.popups, tally.dispositions
    );
    Ok(())
}

/// The simulated FreeSWITCH and what the story needs to reach the daemon and the stand-in.
struct Story {
    esl: EslSimulator,
    cdr: JsonCdrWriter,
    standin: StandIn,
    api: String,
}

/// A leg received from the carrier on the sales line.
fn carrier_leg(caller: &str, name: &str, at: DateTime<Utc>) -> SimLeg {
    let uuid = new_uuid();
    let mut leg = SimLeg::new(&uuid, false, at);
    leg.channel_name = format!("sofia/external/{caller}@{CARRIER}");
    leg.profile = "external".into();
    leg.context = "public".into();
    leg.destination = DID.into();
    leg.caller_id_name = name.into();
    leg.caller_id_number = caller.into();
    leg.sip_call_id = format!("{}@{CARRIER}", &uuid[..18]);
    leg.set("sip_from_user", caller)
        .set("sip_req_user", DID)
        .set("sip_to_user", DID)
        .set("pbxlink_did", DID);
    leg
}

/// The B leg a `bridge user/<ext>` places from `a` to agent `ext`'s phone.
fn agent_leg(a: &SimLeg, ext: &str, at: DateTime<Utc>) -> SimLeg {
    let uuid = new_uuid();
    let mut leg = SimLeg::new(&uuid, true, at);
    leg.channel_name = format!("sofia/internal/{}", contact(ext));
    leg.context = a.context.clone();
    leg.destination = ext.into();
    leg.caller_id_name = a.caller_id_name.clone();
    leg.caller_id_number = a.caller_id_number.clone();
    leg.sip_call_id = uuid.replace('-', "");
    leg.b_leg = true;
    leg.set("dialed_user", ext)
        .set("dialed_domain", "pbx.example.com")
        .set("presence_id", format!("{ext}@pbx.example.com"))
        .set("originating_leg_uuid", a.uuid.clone())
        .set("sip_to_user", ext);
    leg
}

/// A leg agent `ext`'s phone places into the `default` context.
fn phone_leg(ext: &str, name: &str, dialled: &str, at: DateTime<Utc>) -> SimLeg {
    let uuid = new_uuid();
    let mut leg = SimLeg::new(&uuid, false, at);
    leg.channel_name = format!("sofia/internal/{ext}@pbx.example.com");
    leg.destination = dialled.into();
    leg.caller_id_name = name.into();
    leg.caller_id_number = ext.into();
    leg.sip_call_id = format!("{}@{}", &uuid[..20], contact(ext));
    leg.set("user_name", ext)
        .set("sip_from_user", ext)
        .set("sip_req_user", dialled);
    leg
}

/// The B leg `a`'s bridge places through the carrier gateway to `number`.
fn gateway_leg(a: &SimLeg, number: &str, at: DateTime<Utc>) -> SimLeg {
    let uuid = new_uuid();
    let mut leg = SimLeg::new(&uuid, true, at);
    leg.channel_name = format!("sofia/gateway/carrier/{number}");
    leg.profile = "external".into();
    leg.context = a.context.clone();
    leg.destination = number.into();
    leg.caller_id_name = a.caller_id_name.clone();
    leg.caller_id_number = a.caller_id_number.clone();
    leg.sip_call_id = uuid.replace('-', "");
    leg.b_leg = true;
    leg.set("originating_leg_uuid", a.uuid.clone())
        .set("sip_to_user", number);
    leg
}

/// `a` and `b` bridged at `at` (each names the other).
fn bridge(a: &mut SimLeg, b: &mut SimLeg, at: DateTime<Utc>) {
    a.bridged = Some(at);
    b.bridged = Some(at);
    a.other_leg = Some(b.uuid.clone());
    b.other_leg = Some(a.uuid.clone());
}

impl Story {
    /// Sends `leg`'s event `name` (its time `at`).
    fn emit(&self, leg: &SimLeg, name: &str, at: DateTime<Utc>) {
        self.esl
            .emit(&leg.event(name, at, self.esl.next_sequence()));
    }

    /// A mod_callcenter `callcenter::info` event: `action` about the member's call, with
    /// the channel headers of `session` when it is about one, and `extra` CC- headers.
    fn callcenter(
        &self,
        action: &str,
        session: Option<&SimLeg>,
        at: DateTime<Utc>,
        extra: &[(&str, String)],
    ) {
        let seq = self.esl.next_sequence();
        let mut e = match session {
            Some(leg) => leg.event("CUSTOM", at, seq),
            None => crate::simulation::esl::core_headers(
                "CUSTOM",
                at,
                ("mod_callcenter.c", "cc_send_presence", 1050),
                seq,
            ),
        };
        e.headers
            .insert(0, ("Event-Subclass".into(), "callcenter::info".into()));
        e.push("CC-Queue", "sales@default");
        e.push("CC-Action", action);
        for (k, v) in extra {
            e.push(k, v.clone());
        }
        self.esl.emit(&e);
    }

    /// Writes the json_cdr file of each leg, as FreeSWITCH does when a leg is destroyed.
    async fn write_cdrs(&self, legs: &[&SimLeg]) -> anyhow::Result<()> {
        for leg in legs {
            self.cdr
                .write(leg)
                .await
                .with_context(|| format!("writing the json_cdr file of leg {}", leg.uuid))?;
        }
        Ok(())
    }

    async fn play(self) -> anyhow::Result<()> {
        // The daemon logs in and subscribes before the first call rings.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.esl.subscribers() == 0 {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "pbxlink did not subscribe to the simulated event socket"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let base = Utc::now() - chrono::Duration::seconds(300);
        let pause = || tokio::time::sleep(Duration::from_millis(700));
        self.answered_inbound(base).await?;
        pause().await;
        self.missed_inbound(base + secs(100)).await?;
        pause().await;
        self.agent_outbound(base + secs(130)).await?;
        pause().await;
        self.queue_ring_all(base + secs(160)).await?;
        pause().await;
        let call_id = self.click_to_call().await?;
        self.disposition(&call_id).await
    }

    async fn answered_inbound(&self, t0: DateTime<Utc>) -> anyhow::Result<()> {
        println!(
            "FreeSWITCH simulator: inbound call from +91 96117 95983 on the sales line, bridged to user/100, agent 100 answers"
        );
        let mut a = carrier_leg("+919611795983", "Priya Sharma", t0);
        a.applications = vec![
            ("set".into(), "hangup_after_bridge=true".into()),
            ("bridge".into(), "user/100".into()),
        ];
        let b = agent_leg(&a, "100", t0 + ms(80));
        self.two_legs(a, b, Some(t0 + secs(4)), t0 + secs(95)).await
    }

    async fn missed_inbound(&self, t0: DateTime<Utc>) -> anyhow::Result<()> {
        println!(
            "FreeSWITCH simulator: inbound call from 09845012345 rings agent 101 for 20 s, nobody answers"
        );
        let mut a = carrier_leg("09845012345", "", t0);
        a.applications = vec![
            ("set".into(), "call_timeout=20".into()),
            ("bridge".into(), "user/101".into()),
        ];
        let mut b = agent_leg(&a, "101", t0 + ms(60));
        b.hangup_cause = "NO_ANSWER".into();
        self.two_legs(a, b, None, t0 + secs(20)).await
    }

    async fn agent_outbound(&self, t0: DateTime<Utc>) -> anyhow::Result<()> {
        println!(
            "FreeSWITCH simulator: agent 101 dials 98450 11111 through the carrier gateway, the lead answers"
        );
        let lead = "9845011111";
        let mut a = phone_leg("101", "Ravi", lead, t0);
        a.applications = vec![("bridge".into(), format!("sofia/gateway/carrier/{lead}"))];
        let b = gateway_leg(&a, lead, t0 + ms(50));
        self.two_legs(a, b, Some(t0 + secs(7)), t0 + secs(187))
            .await
    }

    /// Plays a call of two legs: both created, then (when `answer` is given) `b` answers,
    /// `a` is answered and bridged to it; both hang up at `end` (`b`'s event first); then both
    /// json_cdr files.
    async fn two_legs(
        &self,
        mut a: SimLeg,
        mut b: SimLeg,
        answer: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.emit(&a, "CHANNEL_CREATE", a.created);
        self.emit(&b, "CHANNEL_CREATE", b.created);
        if let Some(answer) = answer {
            a.answered = Some(answer);
            b.answered = Some(answer);
            bridge(&mut a, &mut b, answer);
            self.emit(&b, "CHANNEL_ANSWER", answer);
            self.emit(&a, "CHANNEL_ANSWER", answer);
            self.emit(&a, "CHANNEL_BRIDGE", answer);
        }
        b.ended = end;
        a.ended = end;
        self.emit(&b, "CHANNEL_HANGUP_COMPLETE", b.ended);
        self.emit(&a, "CHANNEL_HANGUP_COMPLETE", a.ended);
        self.write_cdrs(&[&b, &a]).await
    }

    async fn queue_ring_all(&self, t0: DateTime<Utc>) -> anyhow::Result<()> {
        println!(
            "FreeSWITCH simulator: inbound call into the ring-all mod_callcenter queue sales@default: agents 100 and 101 ring, 101 answers, 100's leg ends LOSE_RACE"
        );
        let mut member = carrier_leg("+14155552671", "Dana", t0);
        member.applications = vec![
            ("answer".into(), String::new()),
            ("callcenter".into(), "sales@default".into()),
        ];
        member.answered = Some(t0 + ms(20));
        member.set("cc_queue", "sales@default");
        self.emit(&member, "CHANNEL_CREATE", t0);
        self.emit(&member, "CHANNEL_ANSWER", t0 + ms(20));
        let joined: Vec<(&str, String)> = vec![
            ("CC-Member-UUID", member.uuid.replace('-', "")),
            ("CC-Member-Session-UUID", member.uuid.clone()),
            ("CC-Member-CID-Name", member.caller_id_name.clone()),
            ("CC-Member-CID-Number", member.caller_id_number.clone()),
            ("CC-Member-Joined-Time", t0.timestamp().to_string()),
        ];
        let cc_member = |_: DateTime<Utc>| joined.clone();
        self.callcenter(
            "member-queue-start",
            Some(&member),
            t0 + ms(30),
            &cc_member(t0),
        );
        let ring = t0 + secs(1);
        let mut agents = Vec::new();
        for ext in ["100", "101"] {
            let mut extra = cc_member(t0);
            extra.push(("CC-Agent", ext.to_owned()));
            extra.push(("CC-Agent-Type", "callback".into()));
            self.callcenter("agent-offering", None, ring, &extra);
            // mod_callcenter originates each agent's leg as a call of its own.
            let uuid = new_uuid();
            let mut leg = SimLeg::new(&uuid, true, ring + ms(10));
            leg.channel_name = format!("sofia/internal/{}", contact(ext));
            leg.destination = ext.into();
            leg.caller_id_name = member.caller_id_name.clone();
            leg.caller_id_number = member.caller_id_number.clone();
            leg.sip_call_id = uuid.replace('-', "");
            leg.set("cc_member_session_uuid", member.uuid.clone())
                .set("cc_queue", "sales@default")
                .set("cc_agent", ext)
                .set("cc_side", "agent")
                .set("dialed_user", ext)
                .set("dialed_domain", "pbx.example.com");
            self.emit(&leg, "CHANNEL_CREATE", leg.created);
            agents.push(leg);
        }
        let (mut loser, mut winner) = (agents.remove(0), agents.remove(0));
        let answer = t0 + secs(12);
        winner.answered = Some(answer);
        self.emit(&winner, "CHANNEL_ANSWER", answer);
        let mut extra = cc_member(t0);
        extra.push(("CC-Agent", "101".into()));
        extra.push(("CC-Agent-UUID", winner.uuid.clone()));
        extra.push(("CC-Agent-Called-Time", ring.timestamp().to_string()));
        extra.push(("CC-Agent-Answered-Time", answer.timestamp().to_string()));
        self.callcenter("bridge-agent-start", Some(&winner), answer, &extra);
        loser.ended = answer + ms(10);
        loser.hangup_cause = "LOSE_RACE".into();
        self.emit(&loser, "CHANNEL_HANGUP_COMPLETE", loser.ended);
        winner.b_leg = true;
        bridge(&mut member, &mut winner, answer + ms(20));
        self.emit(&member, "CHANNEL_BRIDGE", answer + ms(20));
        let end = t0 + secs(70);
        winner.ended = end;
        member.ended = end + ms(20);
        member.set("cc_agent", "101");
        member.set("cc_cause", "answered");
        self.emit(&winner, "CHANNEL_HANGUP_COMPLETE", winner.ended);
        self.emit(&member, "CHANNEL_HANGUP_COMPLETE", member.ended);
        let mut extra = cc_member(t0);
        extra.push(("CC-Agent", "101".into()));
        extra.push(("CC-Agent-UUID", winner.uuid.clone()));
        extra.push(("CC-Cause", "Terminated".into()));
        self.callcenter("member-queue-end", Some(&member), member.ended, &extra);
        self.write_cdrs(&[&loser, &winner, &member]).await
    }

    /// Asks the daemon's `/click-to-call` (as LeadSquared does) for agent 100 to call a lead,
    /// places the call the `bgapi originate` asks for, and returns the call's id.
    async fn click_to_call(&self) -> anyhow::Result<String> {
        println!(
            "LeadSquared (as the demo): click to call, agent 100 → lead +91 98450 22222 (lead id lead-4711)"
        );
        let url = format!(
            "{}/click-to-call?token={HTTP_TOKEN}&agentNumber=%2B919876500100\
             &PhoneNumberWithCountryCode=%2B919845022222&leadId=lead-4711",
            self.api
        );
        let request = tokio::spawn(async move {
            let response = reqwest::get(&url).await?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Ok::<_, reqwest::Error>((status, text))
        });
        let job = tokio::time::timeout(Duration::from_secs(10), self.esl.next_originate())
            .await
            .context("no bgapi originate reached the simulated event socket")?
            .context("the event-socket simulator stopped")?;
        println!("FreeSWITCH simulator: bgapi originate {}", job.arguments());
        let call_id = self.originate(&job).await?;
        let (status, text) = request
            .await
            .context("the click-to-call request task failed")?
            .context("the click-to-call request failed")?;
        println!(
            "pbxlink answered the click to call: HTTP {status} {}",
            text.trim()
        );
        anyhow::ensure!(
            status.is_success(),
            "click to call refused: {status} {text}"
        );
        Ok(call_id)
    }

    /// Plays the call an originate places: the agent's phone rings and answers (the job
    /// succeeds), then the dialplan bridges to the lead through the carrier gateway.
    async fn originate(&self, job: &OriginateJob) -> anyhow::Result<String> {
        let ext = job
            .endpoint
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let uuid = job
            .variable("origination_uuid")
            .map_or_else(new_uuid, str::to_owned);
        let t0 = Utc::now() - chrono::Duration::seconds(100);
        let mut a = SimLeg::new(&uuid, true, t0);
        a.channel_name = format!("sofia/internal/{}", contact(&ext));
        a.context = job.context.clone();
        a.destination = job.destination.clone();
        a.caller_id_number = job
            .variable("origination_caller_id_number")
            .unwrap_or_default()
            .to_owned();
        a.caller_id_name = job
            .variable("origination_caller_id_name")
            .unwrap_or(&a.caller_id_number)
            .to_owned();
        a.sip_call_id = uuid.replace('-', "");
        for (k, v) in &job.variables {
            a.set(k, v.clone());
        }
        a.set("dialed_user", ext.clone())
            .set("dialed_domain", "pbx.example.com");
        a.applications = vec![(
            "bridge".into(),
            format!("sofia/gateway/carrier/{}", job.destination),
        )];
        self.emit(&a, "CHANNEL_CREATE", t0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = t0 + secs(3);
        a.answered = Some(answer);
        self.emit(&a, "CHANNEL_ANSWER", answer);
        self.esl.finish_job(
            &job.job_uuid,
            "originate",
            &job.arguments(),
            &format!("+OK {uuid}\n"),
        );
        println!(
            "FreeSWITCH simulator: agent {ext} answered; dialling the lead {} through the carrier gateway, the lead answers",
            job.destination
        );
        let mut b = gateway_leg(&a, &job.destination, answer + ms(30));
        self.emit(&b, "CHANNEL_CREATE", b.created);
        let talk = answer + secs(5);
        b.answered = Some(talk);
        bridge(&mut a, &mut b, talk);
        self.emit(&b, "CHANNEL_ANSWER", talk);
        self.emit(&a, "CHANNEL_BRIDGE", talk);
        let end = talk + secs(64);
        a.ended = end;
        b.ended = end;
        self.emit(&b, "CHANNEL_HANGUP_COMPLETE", end);
        self.emit(&a, "CHANNEL_HANGUP_COMPLETE", end);
        self.write_cdrs(&[&b, &a]).await?;
        Ok(uuid)
    }

    /// Once the click-to-call call's log is at the stand-in, posts its disposition (as
    /// LeadSquared does) and shows what it did on the event socket.
    async fn disposition(&self, call_id: &str) -> anyhow::Result<()> {
        let logged = async {
            loop {
                let posted = self
                    .standin
                    .accepted_call_logs()
                    .iter()
                    .any(|l| l["CallSessionId"] == call_id);
                if posted {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), logged)
            .await
            .context("the click-to-call call's log did not reach the stand-in")?;
        println!(
            "LeadSquared (as the demo): disposition \"Interested\" for call {call_id} by agent 100"
        );
        let url = format!(
            "{}/disposition?token={HTTP_TOKEN}&callSessionId={call_id}\
             &dispositionValue=Interested&agentNumber=%2B919876500100",
            self.api
        );
        let response = reqwest::get(&url)
            .await
            .context("the disposition request failed")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!(
            "pbxlink answered the disposition: HTTP {status} {}",
            text.trim()
        );
        anyhow::ensure!(status.is_success(), "disposition refused: {status} {text}");
        let command = tokio::time::timeout(
            Duration::from_secs(5),
            self.esl
                .wait_for_command("callcenter_config agent set status 100"),
        )
        .await
        .context("the disposition did not free agent 100 over the event socket")?;
        let (status, state) = self.esl.agent_status("100").unwrap_or_default();
        println!(
            "FreeSWITCH simulator: {command} → mod_callcenter agent 100 is {status} ({state})\n"
        );
        Ok(())
    }
}

/// Where agent `ext`'s phone is registered (`100@192.0.2.120:5060`).
fn contact(ext: &str) -> String {
    let host = 20 + ext.parse::<u32>().unwrap_or(0) % 200;
    format!("{ext}@192.0.2.{host}:5060")
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

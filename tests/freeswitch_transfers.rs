//! Transferred FreeSWITCH calls end to end: the real `pbxlink run` binary, the LeadSquared
//! stand-in for the CRM, real calls on the real FreeSWITCH 1.10.12 rig
//! (`tests/freeswitch/rig.sh`) with sipp as the carrier, and the transfers done the way a
//! FreeSWITCH site does them, over the event socket:
//! - **blind**: the lead calls the transfer desk (DID 4930105, agent 100), 100 answers and
//!   after 3 s is transferred away with `uuid_transfer <100's leg> -bleg 101 XML default`;
//!   101 answers: two call logs, `<id>` for 100 ("transferred to 101 at …") and `<id>-2`
//!   for 101 ("from 100 by blind transfer at …"), each with its own agent, talk time and
//!   times;
//! - **attended**: `uuid_broadcast <100's leg> att_xfer::user/101`, 101 answers the
//!   consultation, 100 hangs up its phone: two logs, 100's talk time without the
//!   consultation, 101's from the hand-over ("by attended transfer");
//! - **transfer to a user who does not answer**: 100 transfers to 103, who never answers
//!   (the lead gets the "voicemail"): one log, agent 100, no note;
//! - **follow-me** (DID 4930104): 103 rings 4 s unanswered, then 101 answers: one log,
//!   agent 101, "forwarded from 103";
//! - **queue** (DID 4930200, ring-all, agents 100 and 101): 101 wins, then transfers the
//!   member to 100: two logs (101, then 100), none for 100's losing ring leg.
//!
//! Each log is checked field by field at the stand-in, for each call-log source: `json_cdr`,
//! `cdr_csv` (the recommended `pbxlink` template), `esl` and `both` (esl + json_cdr,
//! reconciled). The popups (always from the event socket) carry the segment's id: the
//! transfer target's is `<id>-2`.
//!
//! Root only (the rig is a chroot); otherwise a loud SKIPPED banner. Holds the rig lock
//! (`/var/tmp/pbxlink-freeswitch.lock`) for its whole run.

mod fsrig;

use std::path::Path;
use std::time::Duration;

use fsrig::{Esl, EslMessage, LEAD, Run, lead_call, logs_where, new_standin, time_of};
use serde_json::{Value, json};

const AGENT_100: &str = "+4915100000100";
const AGENT_101: &str = "+4915100000101";
const AGENT_103: &str = "+4915100000103";
const DESK_DID: &str = "4930105";
const FOLLOW_ME_DID: &str = "4930104";
const QUEUE_DID: &str = "4930200";

/// The virtual numbers and agents of this test's configuration.
fn directory() -> String {
    format!(
        "[[virtual_numbers]]\nnumber = \"+{DESK_DID}\"\ntag = \"desk\"\n\n\
         [[virtual_numbers]]\nnumber = \"+{FOLLOW_ME_DID}\"\ntag = \"follow\"\n\n\
         [[virtual_numbers]]\nnumber = \"+{QUEUE_DID}\"\ntag = \"sales\"\n\n\
         [[agents]]\nextension = \"100\"\nphone = \"{AGENT_100}\"\nuser_id = \"u-100\"\n\n\
         [[agents]]\nextension = \"101\"\nphone = \"{AGENT_101}\"\nuser_id = \"u-101\"\n\n\
         [[agents]]\nextension = \"103\"\nphone = \"{AGENT_103}\"\nuser_id = \"u-103\"\n\n"
    )
}

/// How the agent who answered gets rid of the lead.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// Nothing: the call is not transferred (follow-me).
    Stay,
    /// `uuid_transfer <agent leg> -bleg <target> XML default`.
    Blind(&'static str),
    /// `uuid_broadcast <agent leg> att_xfer::user/<target>`, then the agent hangs up.
    Attended(&'static str),
}

fn header(m: &EslMessage, name: &str) -> String {
    m.event_header(name).unwrap_or_default()
}

/// Waits (blocking) for `agent`'s answered leg of the next call, does `how` 3 s later, and
/// returns the call's id (the lead's leg: the agent leg's originating or member leg).
fn drive(esl: &Esl, mark: usize, agent: &str, how: Move) -> String {
    let answered = esl.wait_for(mark, Duration::from_secs(40), |m| {
        header(m, "Event-Name") == "CHANNEL_ANSWER"
            && header(m, "Call-Direction") == "outbound"
            && (header(m, "variable_dialed_user") == agent
                || header(m, "variable_cc_agent") == agent)
    });
    let leg = header(&answered, "Unique-ID");
    let lead = [
        "variable_cc_member_session_uuid",
        "variable_originating_leg_uuid",
    ]
    .iter()
    .map(|h| header(&answered, h))
    .find(|v| !v.is_empty())
    .expect("the agent leg names the lead's leg");
    std::thread::sleep(Duration::from_secs(3));
    let api = |cmd: &str| {
        let at = esl.len();
        esl.send(&format!("api {cmd}"));
        let reply = esl.wait_for(at, Duration::from_secs(10), |m| {
            m.header("Content-Type") == Some("api/response")
        });
        assert!(reply.body.starts_with("+OK"), "{cmd}: {}", reply.body);
    };
    match how {
        Move::Stay => {}
        Move::Blind(target) => api(&format!("uuid_transfer {leg} -bleg {target} XML default")),
        Move::Attended(target) => {
            let at = esl.len();
            api(&format!(
                "uuid_broadcast {leg} att_xfer::user/{target} aleg"
            ));
            esl.wait_for(at, Duration::from_secs(20), |m| {
                header(m, "Event-Name") == "CHANNEL_ANSWER"
                    && header(m, "variable_dialed_user") == target
                    && header(m, "Unique-ID") != leg
            });
            std::thread::sleep(Duration::from_secs(2));
            // Agent 100 hangs up its phone: the far end of its leg's SIP dialog (the rig's
            // phones are FreeSWITCH answering its own calls).
            let sip = header(&answered, "variable_sip_call_id");
            let phone = esl.wait_for(mark, Duration::from_secs(5), |m| {
                header(m, "Event-Name") == "CHANNEL_ANSWER"
                    && header(m, "Call-Direction") == "inbound"
                    && header(m, "variable_sip_call_id") == sip
            });
            api(&format!("uuid_kill {}", header(&phone, "Unique-ID")));
        }
    }
    lead
}

/// One scenario: the lead calls `did` and hangs up `hold_ms` after the answer, `agent`
/// does `how`; returns the call's id.
async fn place(
    esl: &std::sync::Arc<Esl>,
    lead: &Path,
    did: &str,
    hold_ms: u32,
    agent: &'static str,
    how: Move,
) -> String {
    let mark = esl.len();
    let driver = {
        let esl = std::sync::Arc::clone(esl);
        tokio::task::spawn_blocking(move || drive(&esl, mark, agent, how))
    };
    let (ok, out) = lead_call(lead, did, hold_ms, "25121").await;
    let id = driver.await.expect("the ESL driver");
    assert!(
        ok || matches!(how, Move::Blind("103")),
        "sipp call to {did}:\n{out}"
    );
    id
}

/// The log with `CallSessionId` `id`, once it arrived.
async fn log_of(run: &Run, id: &str) -> Value {
    run.wait_for(Duration::from_secs(60), &format!("call log {id}"), |st| {
        logs_where(st, |l| l["CallSessionId"] == id)
            .into_iter()
            .next()
    })
    .await
}

fn secs(log: &Value) -> i64 {
    log["CallDuration"].as_i64().unwrap_or(-1)
}

fn hms(log: &Value, field: &str) -> String {
    time_of(log, field).format("%H:%M:%S").to_string()
}

/// `log` equals `want` plus the fields only the log can know (times, recording).
fn same(log: &Value, mut want: Value, what: &str) {
    for f in ["StartTime", "EndTime", "CallDuration"] {
        want[f] = log[f].clone();
    }
    if log.get("ResourceURL").is_some() {
        want["ResourceURL"] = log["ResourceURL"].clone();
        assert!(
            log["ResourceURL"].as_str().unwrap_or("").ends_with(".wav"),
            "{what}: {log}"
        );
    }
    assert_eq!(*log, want, "{what}: field by field");
    assert!(
        time_of(log, "StartTime") <= time_of(log, "EndTime"),
        "{what}: {log}"
    );
}

fn base(did: &str, tag: &str, id: &str, agent: &str, user: &str) -> Value {
    json!({
        "SourceNumber": LEAD,
        "DestinationNumber": agent,
        "DisplayNumber": format!("+{did}"),
        "Status": "Answered",
        "Direction": "Inbound",
        "CallSessionId": id,
        "Tag": tag,
        "UserId": user,
        "CallerName": LEAD,
    })
}

/// Two logs of a transfer from `(from_agent, from_user, from_ext)` to `(to…)`: ids, agents,
/// notes, talk times in the ranges given, the second starting where the first ended.
#[allow(clippy::too_many_arguments)]
async fn transferred(
    run: &Run,
    what: &str,
    (did, tag): (&str, &str),
    id: &str,
    from: (&str, &str, &str),
    to: (&str, &str, &str),
    kind: &str,
    talk: (std::ops::RangeInclusive<i64>, std::ops::RangeInclusive<i64>),
    caller_name: bool,
) {
    let first = log_of(run, id).await;
    let second_id = format!("{id}-2");
    let second = log_of(run, &second_id).await;
    eprintln!("[fs_transfers] {what}:\n  {first}\n  {second}");
    let at = hms(&first, "EndTime");
    let mut want = base(did, tag, id, from.0, from.1);
    want["CallNotes"] = json!(format!("transferred to {} at {at} (1 of 2)", to.2));
    if !caller_name {
        if let Some(fields) = want.as_object_mut() {
            fields.remove("CallerName");
        }
    }
    same(&first, want, &format!("{what}: the first agent's log"));
    let mut want = base(did, tag, &second_id, to.0, to.1);
    want["CallNotes"] = json!(format!(
        "from {} by {kind} transfer at {at} (2 of 2)",
        from.2
    ));
    if !caller_name {
        if let Some(fields) = want.as_object_mut() {
            fields.remove("CallerName");
        }
    }
    same(&second, want, &format!("{what}: the second agent's log"));
    assert_eq!(
        time_of(&second, "StartTime"),
        time_of(&first, "EndTime"),
        "{what}: the second segment starts at the transfer"
    );
    assert!(talk.0.contains(&secs(&first)), "{what}: {first}");
    assert!(talk.1.contains(&secs(&second)), "{what}: {second}");
    assert!(
        secs(&second)
            <= (time_of(&second, "EndTime") - time_of(&second, "StartTime")).num_seconds() + 1,
        "{what}: {second}"
    );
}

/// The popups of call `id` (any segment), as (agent, CallSessionId), sorted.
fn popups(run: &Run, id: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = run
        .standin
        .accepted_popups()
        .into_iter()
        .filter(|p| p["CallSessionId"].as_str().unwrap_or("").starts_with(id))
        .map(|p| {
            (
                p["DestinationNumber"].as_str().unwrap_or("").to_owned(),
                p["CallSessionId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn transferred_freeswitch_calls_give_one_call_log_per_agent_from_every_source() {
    if !fsrig::root_or_skip(
        "tests/freeswitch_transfers.rs",
        "FreeSWITCH transfers (blind, att_xfer, no answer, follow-me, queue) through `pbxlink run`",
    ) {
        return;
    }
    let _rig = fsrig::install_and_start("freeswitch_transfers");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario());
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lead = fsrig::lead_scenario(tmp.path(), LEAD);
    let sources: Vec<String> = std::env::var("PBXLINK_FS_TRANSFER_SOURCES")
        .unwrap_or_else(|_| "json_cdr,cdr_csv,esl,both".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    for source in &sources {
        let source = source.as_str();
        let standin = new_standin().await;
        let mut run = Run::start(source, &standin, &directory()).await;
        let esl = std::sync::Arc::new(Esl::connect(fsrig::esl_port(), &fsrig::esl_password()));
        esl.send("event plain CHANNEL_ANSWER");
        let mut ids = Vec::new();

        // Blind: 100 → 101.
        let id = place(&esl, &lead, DESK_DID, 10_000, "100", Move::Blind("101")).await;
        transferred(
            &run,
            &format!("{source} blind"),
            (DESK_DID, "desk"),
            &id,
            (AGENT_100, "u-100", "100"),
            (AGENT_101, "u-101", "101"),
            "blind",
            (2..=4, 4..=8),
            true,
        )
        .await;
        ids.extend([id.clone(), format!("{id}-2")]);
        let want = pairs(&[
            ("+4915100000100", &id),
            ("+4915100000101", &format!("{id}-2")),
        ]);
        assert_eq!(popups(&run, &id), want, "{source} blind: popups");

        // Attended: 100 consults 101, hangs up; 101 has the lead.
        let id = place(&esl, &lead, DESK_DID, 14_000, "100", Move::Attended("101")).await;
        transferred(
            &run,
            &format!("{source} attended"),
            (DESK_DID, "desk"),
            &id,
            (AGENT_100, "u-100", "100"),
            (AGENT_101, "u-101", "101"),
            "attended",
            (2..=4, 5..=10),
            // After att_xfer FreeSWITCH writes agent 100's phone into the lead's caller id
            // name and number; the CDRs keep the number (`ani`), not the name. The event
            // socket saw the name before.
            !matches!(source, "json_cdr" | "cdr_csv"),
        )
        .await;
        ids.extend([id.clone(), format!("{id}-2")]);
        let want = pairs(&[
            ("+4915100000100", &id),
            ("+4915100000101", &format!("{id}-2")),
        ]);
        assert_eq!(popups(&run, &id), want, "{source} attended: popups");

        // A transfer to 103, who does not answer: one log, 100's.
        let id = place(&esl, &lead, DESK_DID, 22_000, "100", Move::Blind("103")).await;
        let log = log_of(&run, &id).await;
        eprintln!("[fs_transfers] {source} no answer: {log}");
        same(
            &log,
            base(DESK_DID, "desk", &id, AGENT_100, "u-100"),
            &format!("{source}: transfer to a user who does not answer"),
        );
        assert!((2..=4).contains(&secs(&log)), "{log}");
        ids.push(id.clone());
        let want = pairs(&[
            ("+4915100000100", &id),
            ("+4915100000103", &format!("{id}-2")),
        ]);
        assert_eq!(popups(&run, &id), want, "{source} no answer: popups");

        // Follow-me: 103 rings out, 101 answers.
        let id = place(&esl, &lead, FOLLOW_ME_DID, 5_000, "101", Move::Stay).await;
        let log = log_of(&run, &id).await;
        eprintln!("[fs_transfers] {source} follow-me: {log}");
        let mut want = base(FOLLOW_ME_DID, "follow", &id, AGENT_101, "u-101");
        want["CallNotes"] = json!("forwarded from 103");
        same(&log, want, &format!("{source}: follow-me"));
        assert!((4..=6).contains(&secs(&log)), "{log}");
        ids.push(id.clone());
        let want = pairs(&[("+4915100000101", &id), ("+4915100000103", &id)]);
        assert_eq!(popups(&run, &id), want, "{source} follow-me: popups");

        // Queue: 101 wins the ring-all, transfers the member to 100.
        let id = place(&esl, &lead, QUEUE_DID, 10_000, "101", Move::Blind("100")).await;
        transferred(
            &run,
            &format!("{source} queue"),
            (QUEUE_DID, "sales"),
            &id,
            (AGENT_101, "u-101", "101"),
            (AGENT_100, "u-100", "100"),
            "blind",
            (2..=4, 2..=6),
            true,
        )
        .await;
        ids.extend([id.clone(), format!("{id}-2")]);
        let want = pairs(&[
            ("+4915100000100", &id),
            ("+4915100000100", &format!("{id}-2")),
            ("+4915100000101", &id),
        ]);
        assert_eq!(popups(&run, &id), want, "{source} queue: popups");

        // Past the settle time: each log once, and no other (no consultation call, no
        // target who did not answer, no losing ring leg).
        tokio::time::sleep(Duration::from_secs(8)).await;
        let logs = run.standin.accepted_call_logs();
        for id in &ids {
            let n = logs
                .iter()
                .filter(|l| l["CallSessionId"] == id.as_str())
                .count();
            assert_eq!(n, 1, "{source}: {id} posted {n} times: {logs:#?}");
        }
        assert_eq!(
            logs.len(),
            ids.len(),
            "{source}: logs of calls not placed: {logs:#?}\n{}",
            run.log_tail()
        );
        eprintln!(
            "[fs_transfers] {source}: {} call logs as expected",
            ids.len()
        );
        run.daemon.stop();
    }
}

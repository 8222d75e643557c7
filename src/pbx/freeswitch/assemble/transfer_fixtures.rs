//! What the rig's transfer captures (`tests/fixtures/freeswitch/transfer_*`) must give: the
//! agent segments of each call, the same from json_cdr, cdr_csv and the event socket (the
//! assembler's and the tracker's tests both check against these).

use chrono::{DateTime, Utc};

use crate::call::AgentSegment;

fn us(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).expect("time")
}

/// One transfer fixture's expected segments, the same from json_cdr and cdr_csv.
pub fn transfer_segments(scenario: &str) -> (&'static str, Vec<AgentSegment>) {
    use crate::call::SegmentArrival::{AttendedTransfer, BlindTransfer, Direct, Forwarded};
    let seg = |ext: &str, a: i64, e: i64, talk: u64, arrival| AgentSegment {
        extension: ext.into(),
        answered_at: us(a),
        ended_at: Some(us(e)),
        talk_seconds: talk,
        arrival,
    };
    match scenario {
        // uuid_transfer <100's leg> -bleg 101: 100's leg ends, the lead's leg places 101's.
        "transfer_blind" => (
            "63abece5-8ca3-4973-9bb3-d3b4251f5db0",
            vec![
                seg("100", 1796184332494006, 1796184335573958, 3, Direct),
                seg(
                    "101",
                    1796184336593968,
                    1796184342553963,
                    6,
                    BlindTransfer {
                        from: "100".into(),
                        at: us(1796184335573958),
                    },
                ),
            ],
        ),
        // att_xfer user/101 on 100's leg: 100 talked to the lead until the consultation
        // started (3 s of its 7 s leg), 101 has the lead from 100's hangup (7 s of its 9 s).
        "transfer_attended" => (
            "141a705b-d76a-4224-ab4a-ea3599915903",
            vec![
                seg("100", 1796184350933948, 1796184357193942, 3, Direct),
                seg(
                    "101",
                    1796184357193942,
                    1796184364973946,
                    7,
                    AttendedTransfer {
                        from: "100".into(),
                        at: us(1796184357193942),
                    },
                ),
            ],
        ),
        // Blind transfer to 103, who never answers: only 100 talked to the lead.
        "transfer_no_answer" => (
            "9bf4c2cf-0329-44cb-a0ef-f71a9b9125dc",
            vec![seg("100", 1796184373256871, 1796184376313988, 3, Direct)],
        ),
        // 103 rang 4 s unanswered, then 101 answered: one segment, forwarded from 103.
        "transfer_follow_me" => (
            "1aab794a-ffab-4222-bd73-24aff838647d",
            vec![seg(
                "101",
                1796184395033938,
                1796184400073947,
                5,
                Forwarded { from: "103".into() },
            )],
        ),
        // Ring-all queue: 101 won (100 LOSE_RACE: no segment, no forward), then 101
        // transferred the member to 100.
        "transfer_queue" => (
            "a096148c-ef8b-40e7-b259-29ff2d05466d",
            vec![
                seg("101", 1796184406713967, 1796184409773965, 3, Direct),
                seg(
                    "100",
                    1796184412293969,
                    1796184415693957,
                    3,
                    BlindTransfer {
                        from: "101".into(),
                        at: us(1796184409773965),
                    },
                ),
            ],
        ),
        other => panic!("no transfer fixture {other}"),
    }
}

pub const TRANSFER_SCENARIOS: [&str; 5] = [
    "transfer_blind",
    "transfer_attended",
    "transfer_no_answer",
    "transfer_follow_me",
    "transfer_queue",
];

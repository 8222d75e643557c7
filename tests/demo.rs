//! `pbxlink demo` as a newcomer runs it: the real binary, no PBX, no network, no root. It
//! must end with every call log and both popups accepted by the stand-in.

use std::process::Command;

#[test]
fn demo_delivers_every_call_log_and_popup() {
    let out = Command::new(env!("CARGO_BIN_EXE_pbxlink"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running pbxlink demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("demo complete: 7 calls went CDR file → SQLite outbox → LeadSquared stand-in; 2 agent popups"),
        "{stdout}"
    );
    for n in 1..=7 {
        assert!(
            stdout.contains(&format!("accepted call log {n}/7")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("accepted agent popup 2/2"), "{stdout}");
    // The transferred call: one log per agent, the second keyed by the call's id plus -2.
    assert!(
        stdout.contains("transferred to 101 at ")
            && stdout.contains("from 100 by blind transfer at "),
        "{stdout}"
    );
    assert!(
        !stdout.contains("answered HTTP"),
        "the stand-in refused a request:\n{stdout}"
    );
}

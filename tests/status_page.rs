//! The status page in a real browser: a real `pbxlink run` daemon (CDR file, the AMI
//! simulator, agent popups, the HTTP listener) against the CRM stand-in, which refuses one
//! call so that it becomes a dead letter. Headless Chromium, driven over the DevTools
//! protocol (headless_chrome), opens `/`, logs in through the form with the token, and the
//! test checks the figures Chromium rendered against the store; Chromium then presses
//! "Retry" on the dead letter, and the stand-in must receive that call. A screenshot is
//! saved as target/test-artifacts/status-page.png (with `PBXLINK_UPDATE_SCREENSHOT=1` also
//! as docs/status-page.png, the README's).
//!
//! Without Chromium (Debian package `chromium`; `.ci/run` installs it) the test is SKIPPED
//! with a banner, unless `PBXLINK_REQUIRE_RIG=1`, which makes it fail.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{World, call_id, inbound_call};
use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use pbxlink::pbx::asterisk::ami::simulator::AmiSimulator;

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "status-page-test-token";
/// The call the stand-in refuses until the test lets it through.
const REFUSED: u32 = 3;

/// Chromium's path, or None after the SKIPPED banner (a failure with PBXLINK_REQUIRE_RIG=1).
fn chromium_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|p| p.is_file())
    });
    if found.is_some() {
        return found;
    }
    if std::env::var("PBXLINK_REQUIRE_RIG").is_ok_and(|v| v == "1") {
        panic!(
            "PBXLINK_REQUIRE_RIG=1 but Chromium is not installed (Debian package chromium; \
             .ci/run installs it): the status page is NOT tested in a browser"
        );
    }
    let bar = "*".repeat(72);
    eprintln!(
        "\n{bar}\n*** SKIPPED tests/status_page.rs: chromium not found (apt-get install chromium).\n\
         *** The status page is NOT tested in a browser.\n{bar}\n"
    );
    None
}

/// The text of the element `<... id="{id}" ...>TEXT</...>` in a DOM Chromium serialised.
fn by_id(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} on the page:\n{html}"));
    let rest = &html[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let end = rest[start..].find('<').expect("text end") + start;
    rest[start..end].trim().to_owned()
}

fn number(html: &str, id: &str) -> u64 {
    let text = by_id(html, id);
    text.parse()
        .unwrap_or_else(|e| panic!("#{id} shows {text:?}, not a number: {e}"))
}

/// Blocks the test's thread on a browser call (headless_chrome is synchronous).
fn browser<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn save_screenshot(tab: &Tab) -> PathBuf {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    let path = dir.join("status-page.png");
    std::fs::write(&path, &png).expect("write screenshot");
    if std::env::var("PBXLINK_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(root.join("docs/status-page.png"), &png).expect("docs screenshot");
    }
    eprintln!(
        "[status page] screenshot: {} ({} bytes)",
        path.display(),
        png.len()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_logs_in_sees_the_stores_figures_and_retries_a_dead_letter() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let w = World::new(vec![call_id(REFUSED)]).await;
    let ami = AmiSimulator::start(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("AMI simulator");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let text = std::fs::read_to_string(&w.config).expect("config");
    let text = text.replace(
        "secret_key = \"sk\"\n",
        &format!(
            "secret_key = \"sk\"\nagent_popup_url = {:?}\n",
            w.standin.agent_popup_url()
        ),
    );
    assert!(text.contains("agent_popup_url"), "{text}");
    std::fs::write(
        &w.config,
        format!(
            "{text}[asterisk.ami]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"pbxlink\"\nsecret = \"s\"\n\
             [http]\nlisten = \"{listen}\"\ntoken = \"{TOKEN}\"\n",
            ami.addr().port()
        ),
    )
    .expect("config");
    for n in 1..=5 {
        w.append(&inbound_call(n));
    }
    let daemon = w.start_daemon();
    w.wait_for(LIMIT, "the daemon logged in to the AMI simulator", || {
        ami.clients() > 0
    })
    .await;
    w.wait_for(LIMIT, "four calls delivered, one dead", || {
        let s = w.status();
        s["delivered"] == 4 && s["dead"] == 1
    })
    .await;
    // One call ringing agent 100: its popup goes out and is listed with its latency.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (popup_call, caller) = ("1700000200.1", "PJSIP/airtel-00000200");
    ami.emit(&[
        ("Event", "Newchannel"),
        ("Channel", caller),
        ("CallerIDNum", "+919611700200"),
        ("CallerIDName", "Lead"),
        ("Context", "from-trunk"),
        ("Exten", "918044556677"),
        ("Uniqueid", popup_call),
        ("Linkedid", popup_call),
    ]);
    ami.emit(&[
        ("Event", "AgentCalled"),
        ("Channel", caller),
        ("CallerIDNum", "+919611700200"),
        ("Queue", "sales"),
        ("Interface", "PJSIP/100"),
        ("MemberName", "100"),
        ("DestChannel", "PJSIP/100-00000201"),
        ("Uniqueid", popup_call),
        ("Linkedid", popup_call),
    ]);
    w.wait_for(LIMIT, "the popup accepted", || {
        !w.standin.accepted_popups().is_empty()
    })
    .await;

    // A reload that changes a key read only at start: the page names it.
    let text = std::fs::read_to_string(&w.config).expect("config");
    assert!(text.contains("settle_ms = 300\n"), "{text}");
    std::fs::write(
        &w.config,
        text.replace("settle_ms = 300\n", "settle_ms = 400\n"),
    )
    .expect("config");
    daemon.signal("HUP");
    w.wait_for(LIMIT, "the reload logged", || {
        daemon.log_contains("configuration reloaded")
    })
    .await;

    let profile = tempfile::tempdir().expect("profile dir");
    let browser_handle = browser(|| {
        Browser::new(LaunchOptions {
            headless: true,
            // Root (CI) cannot use Chromium's sandbox.
            sandbox: false,
            path: Some(chromium.clone()),
            window_size: Some((1280, 1900)),
            user_data_dir: Some(profile.path().to_owned()),
            idle_browser_timeout: Duration::from_secs(120),
            ..LaunchOptions::default()
        })
    })
    .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let tab: Arc<Tab> = browser(|| browser_handle.new_tab()).expect("tab");
    tab.set_default_timeout(LIMIT);
    let base = format!("http://{listen}");

    // The login form: Chromium types the token and presses the button.
    let html = browser(|| {
        tab.navigate_to(&format!("{base}/"))?
            .wait_until_navigated()?;
        tab.wait_for_element("#token")?.click()?;
        tab.type_str(TOKEN)?;
        tab.wait_for_element("#login")?.click()?;
        tab.wait_for_element("#outbox-dead")?;
        tab.get_content()
    })
    .unwrap_or_else(|e| panic!("logging in: {e}\ndaemon log:\n{}", daemon.log_tail()));
    assert!(tab.get_url().ends_with("/status"), "{}", tab.get_url());
    let cookies = browser(|| tab.get_cookies()).expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name == "pbxlink_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert!(session.http_only, "{session:?}");
    assert!(!session.value.contains(TOKEN), "{session:?}");

    // The figures Chromium shows are the store's.
    let report = w.store().status().expect("status");
    let calls = w
        .store()
        .recent_calls(pbxlink::outbox::store::now_ms(), 20_000)
        .expect("calls");
    let shown = [
        ("outbox-pending", report.pending),
        ("outbox-dead", report.dead),
        ("outbox-in-flight", report.in_flight),
        ("outbox-delivered", report.delivered),
        ("dead-total", report.dead),
        ("calls-hour-total", calls.hour.total),
        ("calls-day-total", calls.day.total),
    ];
    for (id, expected) in shown {
        assert_eq!(number(&html, id), expected, "#{id}");
    }
    assert_eq!(report.dead, 1);
    assert_eq!(calls.day.total, 5, "{calls:?}");
    assert!(
        html.contains("data-direction=\"Inbound\" data-status=\"Answered\""),
        "{html}"
    );
    let dead = w.store().dead_letter_details(10).expect("dead letters");
    assert_eq!(dead.len(), 1);
    let dead_id = dead[0].id;
    assert_eq!(dead[0].call_id, call_id(REFUSED));
    assert!(
        html.contains(&format!(
            "id=\"dead-{dead_id}\" class=\"dead-row\" data-call=\"{}\"",
            call_id(REFUSED)
        )),
        "{html}"
    );
    assert!(html.contains("Lead could not be created"), "{html}");
    assert!(html.contains("AMI connected"), "{html}");
    assert!(html.contains(popup_call), "the popup is listed: {html}");
    assert!(html.contains(" ms</td>"), "with its latency: {html}");
    assert!(
        html.contains(&w.cdr.display().to_string()),
        "the CDR file: {html}"
    );
    assert!(
        html.contains("id=\"restart-banner\"") && html.contains("<code>asterisk.settle_ms</code>"),
        "the restart-needed key after the reload: {html}"
    );
    assert_eq!(
        by_id(&html, "version"),
        format!("pbxlink {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(by_id(&html, "config-path"), w.config.display().to_string());
    let screenshot = save_screenshot(&tab);
    eprintln!(
        "[status page] shown: pending {} in flight {} dead {} delivered {}, calls hour {} day {}, dead letter {} ({}), screenshot {}",
        report.pending,
        report.in_flight,
        report.dead,
        report.delivered,
        calls.hour.total,
        calls.day.total,
        dead_id,
        call_id(REFUSED),
        screenshot.display()
    );

    // On a phone's width (390 CSS px) the page keeps to the screen: one column, no sideways
    // scrolling of the page itself (wide tables scroll inside their own box).
    let widths = browser(|| {
        tab.call_method(Emulation::SetDeviceMetricsOverride {
            width: 390,
            height: 844,
            device_scale_factor: 2.0,
            mobile: true,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })?;
        tab.reload(true, None)?;
        tab.wait_for_element("#outbox-dead")?;
        tab.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth].join(' ')",
            false,
        )
    })
    .expect("the page at a phone's width");
    let widths = widths.value.and_then(|v| v.as_str().map(str::to_owned));
    let (scroll, inner) = widths
        .as_deref()
        .and_then(|w| w.split_once(' '))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("widths: {widths:?}"));
    eprintln!("[status page] at a phone's width: page {scroll} px in a {inner} px screen");
    assert!(
        scroll <= inner,
        "at a phone's width the page is {scroll} px wide in a {inner} px screen"
    );
    browser(|| tab.call_method(Emulation::ClearDeviceMetricsOverride(None)))
        .expect("desktop again");

    // The CRM takes the call now; Chromium presses "Retry" and the stand-in gets it.
    w.standin.set_reject_call_ids(vec![]);
    let html = browser(|| {
        tab.wait_for_element(&format!("#retry-{dead_id}"))?
            .click()?;
        tab.wait_for_element("#flash")?;
        tab.get_content()
    })
    .unwrap_or_else(|e| panic!("pressing retry: {e}\ndaemon log:\n{}", daemon.log_tail()));
    assert!(
        by_id(&html, "flash").contains(&format!("Dead letter {dead_id} is queued again")),
        "{html}"
    );
    w.wait_for(LIMIT, "the retried call accepted by the stand-in", || {
        w.accepted_by_id().get(&call_id(REFUSED)) == Some(&1)
    })
    .await;
    w.wait_for(LIMIT, "no dead letter left", || w.status()["dead"] == 0)
        .await;
    let html = browser(|| {
        tab.navigate_to(&format!("{base}/status"))?
            .wait_until_navigated()?;
        tab.wait_for_element("#no-dead")?;
        tab.get_content()
    })
    .expect("the page after the retry");
    assert_eq!(number(&html, "outbox-dead"), 0);
    assert_eq!(number(&html, "outbox-delivered"), 5);
    w.assert_delivered_exactly(1..=5, 0);
    drop(daemon);
}

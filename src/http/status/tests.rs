//! The status page over real HTTP on loopback, merged with the API router as the daemon
//! does: login and its cookie, the session signature and expiry, CSRF on retry, and what the
//! page renders (figures from the store, hostile text escaped).

use super::session::{COOKIE, SessionKeys, clear_cookie, cookie_value, set_cookie};
use super::*;
use crate::config::Synchronous;
use crate::outbox::store::{KIND_CALL_LOG, NewOutboxRow};

const TOKEN: &str = "s3cret-T0ken";

struct Page {
    base: String,
    store: Arc<Store>,
    page: Arc<StatusPage>,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

async fn page_with(http_extra: &str) -> Page {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
[leadsquared]
call_log_url = "https://x.invalid/k"
default_country_code = "91"
[asterisk]
cdr_csv = "/x"
[http]
listen = "127.0.0.1:0"
token = "{TOKEN}"
requests_per_second = 1000
auth_failures_per_minute = 50
{http_extra}
"#
    );
    let config = Config::parse(&text).expect("config");
    let store =
        Arc::new(Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("store"));
    let parts: Vec<StatusPart> = vec![Box::new(|| "AMI connected".to_owned())];
    let page = Arc::new(
        StatusPage::new(&config, store.clone())
            .expect("page")
            .with_config_path(Some(Path::new("/etc/pbxlink/pbxlink.toml")))
            .with_pbx_status(Arc::new(parts)),
    );
    let state = Arc::new(crate::http::ApiState::new(&config, None, store.clone()).expect("api"));
    let app = crate::http::router(state)
        .expect("router")
        .merge(page.clone().router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let transport = crate::http::Transport::plain(crate::http::ConnectionLimits::default());
    tokio::spawn(crate::http::serve(
        app,
        listener,
        transport,
        std::future::pending(),
    ));
    Page {
        base: format!("http://{addr}"),
        store,
        page,
        _dir: dir,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

async fn page() -> Page {
    page_with("").await
}

/// A call log row with this body, dead-lettered with `error` when `dead`.
fn add_call(store: &Store, id: &str, body: serde_json::Value, dead: Option<&str>) -> i64 {
    store
        .enqueue(
            &[NewOutboxRow {
                kind: KIND_CALL_LOG,
                idempotency_key: format!("call_log:{id}"),
                call_id: id.into(),
                source: "test".into(),
                body: body.to_string(),
                raw: String::new(),
            }],
            &[],
            &[],
        )
        .expect("enqueue");
    let row = store
        .next_due(KIND_CALL_LOG, crate::outbox::store::now_ms() + 10)
        .expect("due")
        .expect("a row");
    match dead {
        Some(error) => store
            .mark_dead(row.id, "call_log", 400, error)
            .expect("dead"),
        None => store
            .mark_delivered(row.id, "call_log", 200, "{}")
            .expect("delivered"),
    }
    row.id
}

impl Page {
    async fn login(&self, token: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/login", self.base))
            .form(&[("token", token)])
            .send()
            .await
            .expect("login")
    }

    /// Logs in; returns the `Cookie` header value.
    async fn session(&self) -> String {
        let r = self.login(TOKEN).await;
        assert_eq!(r.status(), 303);
        let set = r
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("Set-Cookie")
            .to_owned();
        set.split(';').next().expect("pair").to_owned()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (u16, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            request = request.header(header::COOKIE, c);
        }
        let r = request.send().await.expect("get");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, cookie)
            .form(form)
            .send()
            .await
            .expect("post");
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
        (status, if status == 303 { location } else { body })
    }
}

/// The `value` of `<input type="hidden" name="csrf" value="...">` in a page.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

#[test]
fn a_session_verifies_until_it_expires_and_not_after_any_change() {
    let keys = SessionKeys::random(Duration::from_secs(60));
    let (value, session) = keys.issue(1_000);
    assert_eq!(keys.verify(&value, 1_000), Some(session.clone()));
    assert_eq!(keys.verify(&value, 1_059), Some(session.clone()));
    assert_eq!(keys.verify(&value, 1_060), None, "expired");
    let parts: Vec<&str> = value.split('.').collect();
    assert_eq!(parts.len(), 3, "{value}");
    // A later expiry with the old signature, a changed nonce, a cut value, another key.
    let longer = format!("999999999.{}.{}", parts[1], parts[2]);
    assert_eq!(keys.verify(&longer, 1_000), None);
    let other_nonce = format!("{}.AAAAAAAAAAAAAAAAAAAAAA.{}", parts[0], parts[2]);
    assert_eq!(keys.verify(&other_nonce, 1_000), None);
    assert_eq!(keys.verify(&value[..value.len() - 2], 1_000), None);
    assert_eq!(keys.verify(&format!("{value}.x"), 1_000), None);
    assert_eq!(keys.verify(&"a".repeat(10_000), 1_000), None);
    assert_eq!(keys.verify("", 1_000), None);
    let other = SessionKeys::random(Duration::from_secs(60));
    assert_eq!(other.verify(&value, 1_000), None, "another daemon's key");
}

#[test]
fn a_csrf_token_belongs_to_one_session() {
    let keys = SessionKeys::random(Duration::from_secs(60));
    let (_, a) = keys.issue(0);
    let (_, b) = keys.issue(0);
    let token_a = keys.csrf_token(&a);
    assert!(keys.csrf_ok(&a, &token_a));
    assert!(!keys.csrf_ok(&b, &token_a), "a token from another session");
    assert!(!keys.csrf_ok(&a, ""));
    assert!(!keys.csrf_ok(&a, &token_a[1..]));
    let other = SessionKeys::random(Duration::from_secs(60));
    assert!(!other.csrf_ok(&a, &token_a));
}

#[test]
fn the_cookie_is_http_only_strict_and_secure_over_https() {
    let plain = set_cookie("v", Duration::from_secs(60), false);
    assert_eq!(
        plain,
        format!("{COOKIE}=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict")
    );
    assert!(set_cookie("v", Duration::from_secs(60), true).ends_with("; Secure"));
    assert!(clear_cookie(false).contains("Max-Age=0"));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static("a=1; pbxlink_session=abc.def.ghi; b=2"),
    );
    assert_eq!(cookie_value(&headers).as_deref(), Some("abc.def.ghi"));
    assert_eq!(cookie_value(&HeaderMap::new()), None);
}

#[tokio::test]
async fn without_a_session_the_page_is_a_login_form_and_shows_nothing() {
    let p = page().await;
    add_call(
        &p.store,
        "secret-call",
        serde_json::json!({}),
        Some("HTTP 400"),
    );
    for path in ["/", "/status"] {
        let (status, body) = p.get(path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            body.contains("<form method=\"post\" action=\"/login\">"),
            "{body}"
        );
        assert!(!body.contains("secret-call"), "{body}");
    }
    let (status, body) = p.get("/status", Some(&format!("{COOKIE}=1.2.3"))).await;
    assert_eq!(status, 401, "a forged cookie: {body}");
    // The API itself still wants its token: the cookie is only for the page.
    let cookie = p.session().await;
    let (status, _) = p.get("/metrics", Some(&cookie)).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn login_sets_a_signed_cookie_that_is_not_the_token() {
    let p = page().await;
    let wrong = p.login("nope").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    assert!(wrong.text().await.expect("body").contains("Wrong token."));
    assert_eq!(
        p.page
            .policy
            .failures()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "counted like a failed API token check"
    );

    let r = p.login(TOKEN).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/status");
    let set = r.headers()[header::SET_COOKIE]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(set.starts_with(&format!("{COOKIE}=")), "{set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(
        !set.contains(TOKEN),
        "the token is never in the cookie: {set}"
    );
    let cookie = set.split(';').next().expect("pair").to_owned();
    let (status, body) = p.get("/status", Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pbxlink status"));

    // Behind a proxy terminating HTTPS the cookie is Secure.
    let r = p
        .client
        .post(format!("{}/login", p.base))
        .header("x-forwarded-proto", "https")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("login");
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .expect("text")
            .ends_with("; Secure")
    );
}

#[tokio::test]
async fn a_token_in_the_address_starts_a_session_and_leaves_the_address_bar() {
    let p = page().await;
    let r = p
        .client
        .get(format!("{}/?token={TOKEN}", p.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/status");
    assert!(r.headers().get(header::SET_COOKIE).is_some());
    assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
    let (status, _) = p.get("/?token=wrong", None).await;
    assert_eq!(status, 401);
    // A bearer token (scripts) gets the page at once.
    let r = p
        .client
        .get(format!("{}/status", p.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn retry_needs_the_session_and_its_csrf_token() {
    let p = page().await;
    let id = add_call(&p.store, "c-dead", serde_json::json!({}), Some("HTTP 400"));
    let cookie = p.session().await;
    let (_, html) = p.get("/status", Some(&cookie)).await;
    let csrf = csrf_of(&html);
    let id_text = id.to_string();
    let dead = |s: &Store| s.status().expect("status").dead;

    // No token, a wrong one, one from another session, no session: nothing changes.
    let other_session = p.session().await;
    let (_, other_html) = p.get("/status", Some(&other_session)).await;
    let other_csrf = csrf_of(&other_html);
    assert_ne!(csrf, other_csrf);
    for (cookie, csrf, expected) in [
        (cookie.as_str(), "", 403),
        (cookie.as_str(), "forged", 403),
        (cookie.as_str(), other_csrf.as_str(), 403),
        ("", csrf.as_str(), 401),
    ] {
        let (status, body) = p
            .post("/status/retry", cookie, &[("csrf", csrf), ("id", &id_text)])
            .await;
        assert_eq!(status, expected, "{body}");
        assert_eq!(dead(&p.store), 1);
    }
    let (status, body) = p
        .post("/status/retry", &cookie, &[("csrf", &csrf), ("id", "x<y")])
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, location) = p
        .post(
            "/status/retry",
            &cookie,
            &[("csrf", &csrf), ("id", &id_text)],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(location, format!("/status?retried={id}"));
    let report = p.store.status().expect("status");
    assert_eq!((report.dead, report.pending), (0, 1));
    let (_, html) = p.get(&location, Some(&cookie)).await;
    assert!(
        html.contains(&format!("Dead letter {id} is queued again")),
        "{html}"
    );
    // Again: it is no longer dead.
    let (_, location) = p
        .post(
            "/status/retry",
            &cookie,
            &[("csrf", &csrf), ("id", &id_text)],
        )
        .await;
    assert_eq!(location, format!("/status?not_dead={id}"));

    // Logging out needs the token too, and ends the cookie.
    let (status, _) = p.post("/logout", &cookie, &[("csrf", "forged")]).await;
    assert_eq!(status, 403);
    let r = p
        .client
        .post(format!("{}/logout", p.base))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .expect("text")
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn the_page_shows_the_stores_figures_and_escapes_what_came_from_outside() {
    let p = page().await;
    let body = |dir: &str, status: &str| serde_json::json!({"direction": dir, "outcome": status});
    add_call(&p.store, "a1", body("Inbound", "Answered"), None);
    add_call(&p.store, "a2", body("Inbound", "Answered"), None);
    add_call(&p.store, "a3", body("Outbound", "NoAnswer"), None);
    let hostile = "<script>alert(1)</script>";
    let dead = add_call(
        &p.store,
        hostile,
        body("Inbound", "Missed"),
        Some(
            r#"HTTP 400 with an error body: {"Status":"Error","ExceptionMessage":"<b>Lead</b> could not be created"}"#,
        ),
    );
    p.page.config_reloaded(
        &Config::parse(
            r#"
[leadsquared]
call_log_url = "https://x.invalid/k"
default_country_code = "91"
[asterisk]
cdr_csv = "/elsewhere"
[http]
listen = "127.0.0.1:0"
"#,
        )
        .expect("config"),
    );
    let cookie = p.session().await;
    let (status, html) = p.get("/status", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(!html.contains(hostile), "unescaped: {html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || html.contains("&lt;script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<b>Lead</b>"), "{html}");
    for expected in [
        "<meta http-equiv=\"refresh\" content=\"5; url=/status\">",
        "<a id=\"refresh\" href=\"/status\">Refresh</a>",
        "name=\"viewport\"",
        "<td id=\"outbox-dead\" class=\"alarm\">1</td>",
        "<td id=\"outbox-pending\">0</td>",
        "<td id=\"calls-day-total\">4</td>",
        "<td id=\"calls-hour-total\">4</td>",
        "data-direction=\"Inbound\" data-status=\"Answered\"><td>Inbound</td><td>Answered</td><td class=\"n\">2</td><td class=\"n\">2</td>",
        "data-direction=\"Outbound\" data-status=\"NoAnswer\"",
        "<td id=\"pbx-0\">AMI connected</td>",
        "/etc/pbxlink/pbxlink.toml",
        "could not be created",
        "<code>asterisk.cdr_csv</code>",
    ] {
        let expected = expected
            .replace(
                "<td id=\"calls-day-total\">",
                "<td class=\"n\" id=\"calls-day-total\">",
            )
            .replace(
                "<td id=\"calls-hour-total\">",
                "<td class=\"n\" id=\"calls-hour-total\">",
            );
        assert!(html.contains(&expected), "{expected} missing from\n{html}");
    }
    assert!(html.contains(&format!("id=\"retry-{dead}\"")), "{html}");
    assert!(!html.contains(TOKEN), "the token never appears on the page");
}

#[tokio::test]
async fn the_call_tally_splits_hour_and_day_and_says_when_it_is_a_lower_bound() {
    let p = page().await;
    let body = |dir: &str, outcome: &str| serde_json::json!({"direction": dir, "outcome": outcome});
    add_call(&p.store, "t1", body("Inbound", "Answered"), None);
    add_call(&p.store, "t2", body("Outbound", "Busy"), None);
    add_call(
        &p.store,
        "t3",
        serde_json::json!({"direction": "x".repeat(500)}),
        None,
    );
    let now = crate::outbox::store::now_ms();
    let calls = p.store.recent_calls(now, 100).expect("tally");
    assert_eq!(
        (calls.hour.total, calls.day.total, calls.truncated),
        (3, 3, false)
    );
    assert!(
        calls
            .day
            .counts
            .contains(&("Inbound".into(), "Answered".into(), 1)),
        "{calls:?}"
    );
    assert!(
        calls
            .day
            .counts
            .iter()
            .any(|(d, s, n)| d.chars().count() == 41 && s == "unknown" && *n == 1),
        "a hostile value is bounded, a missing one is unknown: {calls:?}"
    );
    // Two hours later they are out of the hour but still in the day; a day later, gone.
    let later = p
        .store
        .recent_calls(now + 2 * 3_600_000, 100)
        .expect("tally");
    assert_eq!((later.hour.total, later.day.total), (0, 3));
    let next_day = p
        .store
        .recent_calls(now + 25 * 3_600_000, 100)
        .expect("tally");
    assert_eq!(next_day.day.total, 0);
    // Bounded: at most max_rows are read, and the tally says so.
    let bounded = p.store.recent_calls(now, 2).expect("tally");
    assert_eq!((bounded.day.total, bounded.truncated), (2, true));
    // Dead letters: newest first, bounded in number and text.
    for i in 0..3 {
        add_call(
            &p.store,
            &format!("d{i}"),
            serde_json::json!({}),
            Some(&"e".repeat(5_000)),
        );
    }
    let dead = p.store.dead_letter_details(2).expect("dead");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].call_id, "d2");
    assert!(dead[0].reason.chars().count() <= crate::outbox::store::REPORT_TEXT_MAX + 1);
}

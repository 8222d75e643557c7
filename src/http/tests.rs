//! Handler tests over real HTTP on loopback: auth, parameter forms, dedupe, injection
//! attempts, disposition, routing with a slow CRM. The PBX here records what it is asked;
//! tests/asterisk_live.rs drives the same handlers against a real Asterisk.

use super::*;
use crate::config::Synchronous;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Default)]
struct RecordingPbx {
    originated: Arc<Mutex<Vec<OriginateRequest>>>,
    freed: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
}

impl PbxControl for RecordingPbx {
    async fn originate(&self, request: OriginateRequest) -> Result<(), crate::pbx::PbxError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(crate::pbx::PbxError::NotConnected);
        }
        self.originated.lock().expect("lock").push(request);
        Ok(())
    }
    async fn free_agent(&self, interface: String) -> Result<(), crate::pbx::PbxError> {
        self.freed.lock().expect("lock").push(interface);
        Ok(())
    }
    fn is_connected(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }
}

struct Api {
    base: String,
    pbx: RecordingPbx,
    state: Arc<ApiState<RecordingPbx>>,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

async fn api(extra: &str) -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
[leadsquared]
call_log_url = "https://x.invalid/k"
default_country_code = "91"
{extra}
[[virtual_numbers]]
number = "+918044556677"
[[agents]]
extension = "100"
phone = "+919876500100"
email = "asha@example.com"
[[agents]]
extension = "101"
phone = "+919876500101"
queue_interface = "Local/101@agents/n"
[asterisk]
cdr_csv = "/x"
[http]
listen = "127.0.0.1:0"
token = "t0ken"
requests_per_second = 1000
route_timeout_ms = 300
route_fallback = "600"
"#
    );
    let config = Config::parse(&text).expect("config");
    let store =
        Arc::new(Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("store"));
    let pbx = RecordingPbx::default();
    let state = Arc::new(ApiState::new(&config, pbx.clone(), store.clone()).expect("state"));
    let app = router(state.clone()).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Api {
        base: format!("http://{addr}"),
        pbx,
        state,
        store,
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

impl Api {
    async fn get(&self, path_and_query: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    }
}

#[tokio::test]
async fn health_is_open_everything_else_needs_the_token() {
    let api = api("").await;
    assert_eq!(api.get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(api.get("/readyz").await.0, 401);
    assert_eq!(api.get("/readyz?token=wrong").await.0, 401);
    assert_eq!(
        api.get("/readyz?token=t0ken").await,
        (200, "ready\n".into())
    );
    let r = api
        .client
        .get(format!("{}/readyz", api.base))
        .bearer_auth("t0ken")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    api.pbx.down.store(true, Ordering::Relaxed);
    let (status, body) = api.get("/readyz?token=t0ken").await;
    assert_eq!(status, 503);
    assert!(body.contains("PBX not connected"), "{body}");
    let (status, _) = api
        .get("/click-to-call?agentNumber=9876500100&customerNumber=9611795983")
        .await;
    assert_eq!(status, 401, "no token: nothing happens");
    assert!(api.pbx.originated.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn click_to_call_from_query_form_and_json() {
    let api = api("").await;
    let (status, body) = api
        .get("/click-to-call?token=t0ken&agentNumber=%2B919876500100&customerNumber=09611795983&PhoneNumberWithCountryCode=%2B919611795983&leadId=L-1&virtualNumber=918044556677")
        .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let r = api
        .client
        .post(format!("{}/click-to-call?token=t0ken", api.base))
        .form(&[
            ("agentEmail", "ASHA@example.com"),
            ("customerNumber", "9611700001"),
        ])
        .send()
        .await
        .expect("form");
    assert_eq!(r.status().as_u16(), 200);
    let r = api
        .client
        .post(format!("{}/click-to-call", api.base))
        .bearer_auth("t0ken")
        .json(&serde_json::json!({"agentNumber": 9876500101u64, "PhoneNumberWithCountryCode": "+14155552671"}))
        .send()
        .await
        .expect("json");
    assert_eq!(r.status().as_u16(), 200);
    let calls = api.pbx.originated.lock().expect("lock").clone();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].agent_extension, "100");
    assert_eq!(calls[0].lead_dial, "919611795983");
    assert_eq!(calls[0].caller_id, "+918044556677");
    assert!(
        calls[0]
            .variables
            .contains(&("LEADID".into(), "L-1".into()))
    );
    assert_eq!(calls[1].agent_extension, "100");
    assert_eq!(calls[1].lead_dial, "919611700001");
    assert_eq!(calls[2].agent_extension, "101");
    assert_eq!(calls[2].lead_dial, "14155552671");
    // The lead id is stored for the call log of this call.
    api.store
        .enqueue(
            &[crate::outbox::NewOutboxRow {
                kind: crate::outbox::KIND_CALL_LOG,
                idempotency_key: format!("call_log:{}", calls[0].call_id),
                call_id: calls[0].call_id.clone(),
                source: "t".into(),
                body: "{}".into(),
                raw: String::new(),
            }],
            &[],
            &[],
        )
        .expect("enqueue");
    let row = api
        .store
        .next_due(
            crate::outbox::KIND_CALL_LOG,
            crate::outbox::store::now_ms() + 10,
        )
        .expect("read")
        .expect("row");
    assert_eq!(row.lead_id.as_deref(), Some("L-1"));
}

#[tokio::test]
async fn the_same_click_within_seconds_rings_once() {
    let api = api("").await;
    let q = "/click-to-call?token=t0ken&agentNumber=9876500100&customerNumber=9611795983";
    assert_eq!(api.get(q).await, (200, "OK".into()));
    assert_eq!(api.get(q).await, (200, "OK".into()));
    assert_eq!(api.pbx.originated.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn bad_clicks_get_a_reason_and_ring_nobody() {
    let api = api("").await;
    for (q, status, reason) in [
        (
            "agentNumber=9999999999&customerNumber=9611795983",
            404,
            "unknown agent",
        ),
        ("agentNumber=9876500100", 400, "lead number"),
        (
            "agentNumber=9876500100&customerNumber=abc",
            400,
            "lead number",
        ),
        (
            "agentNumber=9876500100&customerNumber=9611795983&agentName=x%0D%0AAction:%20Originate",
            400,
            "control character",
        ),
        (
            "agentNumber=9876500100&customerNumber=9611795983&virtualNumber=s",
            400,
            "virtualNumber",
        ),
    ] {
        let (got, body) = api.get(&format!("/click-to-call?token=t0ken&{q}")).await;
        assert_eq!(got, status, "{q}: {body}");
        assert!(body.contains(reason), "{q}: {body}");
        assert!(
            !body.contains("OK"),
            "an error must not contain the response keyword: {body}"
        );
        assert_eq!(body.lines().count(), 1);
    }
    api.pbx.down.store(true, Ordering::Relaxed);
    let (status, body) = api
        .get("/click-to-call?token=t0ken&agentNumber=9876500100&customerNumber=9611795983")
        .await;
    assert_eq!(
        (status, body.trim()),
        (503, "originate failed: PBX not connected")
    );
    assert!(api.pbx.originated.lock().expect("lock").is_empty());
    let r = api
        .client
        .post(format!("{}/click-to-call?token=t0ken", api.base))
        .header("content-type", "application/json")
        .body(vec![b'{'; 64 * 1024])
        .send()
        .await
        .expect("big");
    assert_eq!(r.status().as_u16(), 413);
}

#[tokio::test]
async fn disposition_is_stored_and_frees_the_agent() {
    let api = api("").await;
    let (status, body) = api
        .get("/disposition?token=t0ken&callSessionId=1700.1&dispositionValue=Interested&agentNumber=9876500100")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("PJSIP/100 unpaused"), "{body}");
    let (status, body) = api
        .get("/disposition?token=t0ken&callSessionId=1700.2&dispositionValue=Busy&agentNumber=9876500101")
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("Local/101@agents/n unpaused"), "{body}");
    assert_eq!(
        api.pbx.freed.lock().expect("lock").clone(),
        ["PJSIP/100", "Local/101@agents/n"]
    );
    assert_eq!(
        api.get("/disposition?token=t0ken&callSessionId=1").await.0,
        400
    );
}

#[tokio::test]
async fn route_answers_the_owner_or_the_fallback_in_time() {
    // A CRM stand-in for the Call Route API: owner by user id, or a stall.
    let crm = Router::new()
        .route(
            "/route",
            get(|uri: Uri| async move {
                let q = uri.query().unwrap_or_default().to_owned();
                if q.contains("919611795983") {
                    axum::Json(serde_json::json!({"Status":"Success","Message":{"EmailAddress":"asha@example.com"}})).into_response()
                } else if q.contains("919611700000") {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late".into_response()
                } else {
                    axum::Json(serde_json::json!({"Status":"Success","Message":{}})).into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, crm).await;
    });
    let api = api(&format!("call_route_url = \"http://{addr}/route\"")).await;
    assert_eq!(
        api.get("/route?token=t0ken&caller=09611795983&did=918044556677")
            .await,
        (200, "100".into())
    );
    let started = Instant::now();
    assert_eq!(
        api.get("/route?token=t0ken&caller=9611700000").await,
        (200, "600".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fallback came late"
    );
    assert_eq!(
        api.get("/route?token=t0ken&caller=9611711111").await,
        (200, "600".into())
    );
    assert_eq!(api.get("/route?token=t0ken").await, (200, "600".into()));
}

#[tokio::test]
async fn addresses_outside_allow_from_are_refused() {
    let api = api("").await;
    // A second API whose allow-list excludes loopback.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::parse(
        "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n\
         [asterisk]\ncdr_csv = \"/x\"\n[http]\nallow_from = [\"10.0.0.0/8\"]\n",
    )
    .expect("config");
    let store =
        Arc::new(Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("store"));
    let app = router(Arc::new(
        ApiState::new(&config, api.pbx.clone(), store).expect("state"),
    ))
    .expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn sso_redirects_a_configured_agent_with_a_fresh_key() {
    use crate::crm::leadsquared::standin::{Expectations, StandIn};
    let crm = StandIn::start(
        "127.0.0.1:0".parse().expect("addr"),
        Expectations {
            url_key: "k".into(),
            access_keys: Some(("ak".into(), "sk".into())),
            reject_call_ids: vec![],
        },
    )
    .await
    .expect("stand-in");
    let api = api(&format!(
        "access_key = \"ak\"\nsecret_key = \"sk\"\napi_host = \"{}\"\napp_host = \"https://app.example\"\n\
         sso_redirect = \"{{app_host}}/SingleSignOn/LeadDetails?key={{key}}&LeadID={{lead_id}}\"\n",
        crm.api_host()
    ))
    .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_redirects
        .get(format!(
            "{}/sso?token=t0ken&agentEmail=ASHA@example.com&leadId=lead%2042",
            api.base
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(
            "https://app.example/SingleSignOn/LeadDetails?key=sso-key-for-asha%40example.com&LeadID=lead+42"
        )
    );
    let asked: Vec<_> = crm
        .received()
        .into_iter()
        .filter(|r| r.endpoint == "sso")
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].status, 200, "{:?}", asked[0].problem);
    // Unknown agents and missing tokens never reach LeadSquared.
    assert_eq!(
        api.get("/sso?token=t0ken&agentEmail=eve@example.com")
            .await
            .0,
        404
    );
    assert_eq!(api.get("/sso?agentEmail=asha@example.com").await.0, 401);
    assert_eq!(api.get("/sso?token=t0ken").await.0, 400);
    assert_eq!(crm.received().len(), 1);
}

#[tokio::test]
async fn tls_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let http = HttpConfig {
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path),
        ..HttpConfig::default()
    };
    let transport = Transport::from_config(&http).await.expect("tls config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(app, listener, transport, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let r = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("https request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "ok\n");
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
    // Half a pair is a configuration error.
    let half = HttpConfig {
        tls_cert: Some(cert_path),
        ..HttpConfig::default()
    };
    assert!(Transport::from_config(&half).await.is_err());
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

#[tokio::test]
async fn reloaded_agents_reach_the_api_at_once() {
    let api = api("").await;
    let click = "/click-to-call?token=t0ken&agentNumber=%2B919876500102&customerNumber=9611795983";
    assert_eq!(
        api.get(click).await.0,
        404,
        "agent 102 is not configured yet"
    );
    let config = Config::parse(
        "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n\
         [[virtual_numbers]]\nnumber = \"+918044556677\"\n\
         [[agents]]\nextension = \"102\"\nphone = \"+919876500102\"\n\
         [asterisk]\ncdr_csv = \"/x\"\n",
    )
    .expect("config");
    api.state
        .set_directory(Directory::from_config(&config).expect("directory"));
    assert_eq!(api.get(click).await, (200, "OK".into()));
    let placed = api.pbx.originated.lock().expect("lock").clone();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].agent_extension, "102");
}

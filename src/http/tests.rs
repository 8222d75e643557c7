//! Handler tests over real HTTP on loopback: auth, parameter forms, dedupe, injection
//! attempts, disposition, routing with a slow CRM. The PBX here records the neutral requests
//! it is asked (how Asterisk writes them is tested beside its control);
//! tests/asterisk_live.rs drives the same handlers against a real Asterisk.

use super::*;
use crate::config::Synchronous;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Default)]
struct RecordingPbx {
    originated: Arc<Mutex<Vec<OriginateRequest>>>,
    freed: Arc<Mutex<Vec<Option<AgentInfo>>>>,
    down: Arc<AtomicBool>,
    calls: Arc<std::sync::atomic::AtomicU32>,
}

impl PbxControl for RecordingPbx {
    fn new_call_id(&self) -> String {
        format!("rec-{}", self.calls.fetch_add(1, Ordering::Relaxed))
    }
    fn originate(
        &self,
        request: OriginateRequest,
    ) -> crate::pbx::PbxFuture<'_, Result<(), PbxError>> {
        Box::pin(async move {
            if self.down.load(Ordering::Relaxed) {
                return Err(PbxError::NotConnected);
            }
            self.originated.lock().expect("lock").push(request);
            Ok(())
        })
    }
    fn free_agent<'a>(
        &'a self,
        agent: Option<&'a AgentInfo>,
    ) -> crate::pbx::PbxFuture<'a, AgentRelease> {
        Box::pin(async move {
            self.freed.lock().expect("lock").push(agent.cloned());
            match agent {
                Some(agent) => AgentRelease::Done(format!("agent {} freed", agent.extension)),
                None => AgentRelease::NotDone("no agent to free".into()),
            }
        })
    }
    fn is_connected(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }
}

impl RecordingPbx {
    fn control(&self) -> Option<Arc<dyn PbxControl>> {
        Some(Arc::new(self.clone()))
    }
}

struct Api {
    base: String,
    pbx: RecordingPbx,
    state: Arc<ApiState>,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
    connections: Arc<ConnectionStats>,
}

async fn api(extra: &str) -> Api {
    api_with(extra, "").await
}

/// An API with `extra` in `[leadsquared]` and `http_extra` in `[http]`.
async fn api_with(extra: &str, http_extra: &str) -> Api {
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
{http_extra}
"#
    );
    let config = Config::parse(&text).expect("config");
    let store =
        Arc::new(Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("store"));
    let pbx = RecordingPbx::default();
    let state = Arc::new(ApiState::new(&config, pbx.control(), store.clone()).expect("state"));
    let app = router(state.clone()).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let transport = Transport::from_config(config.http.as_ref().expect("[http]"))
        .await
        .expect("transport");
    let connections = transport.stats.clone();
    tokio::spawn(serve(app, listener, transport, std::future::pending()));
    Api {
        base: format!("http://{addr}"),
        pbx,
        state,
        store,
        _dir: dir,
        client: reqwest::Client::new(),
        connections,
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
    assert_eq!(calls[0].agent.extension, "100");
    assert_eq!(calls[0].agent.email.as_deref(), Some("asha@example.com"));
    assert_eq!(calls[0].lead_number.to_e164(), "+919611795983");
    assert_eq!(calls[0].caller_id.to_e164(), "+918044556677");
    assert_eq!(calls[0].lead_id.as_deref(), Some("L-1"));
    assert_eq!(calls[0].call_id, "rec-0", "the id the PBX gave the call");
    assert_eq!(calls[1].agent.extension, "100");
    assert_eq!(calls[1].lead_number.to_e164(), "+919611700001");
    assert_eq!(calls[1].lead_id, None);
    assert_eq!(calls[2].agent.extension, "101");
    assert_eq!(calls[2].lead_number.to_e164(), "+14155552671");
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
    assert_eq!(body, "stored; agent 100 freed\n");
    let (status, body) = api
        .get("/disposition?token=t0ken&callSessionId=1700.2&dispositionValue=Busy&agentNumber=9876500101")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, "stored; agent 101 freed\n");
    let (status, body) = api
        .get("/disposition?token=t0ken&callSessionId=1700.3&dispositionValue=Busy&agentNumber=9999999999")
        .await;
    assert_eq!((status, body.as_str()), (200, "stored; no agent to free\n"));
    let freed: Vec<Option<String>> = api
        .pbx
        .freed
        .lock()
        .expect("lock")
        .iter()
        .map(|a| a.as_ref().map(|a| a.extension.clone()))
        .collect();
    assert_eq!(freed, [Some("100".into()), Some("101".into()), None]);
    // The agent the PBX is asked to free is the configured one, queue interface and all.
    let second = api.pbx.freed.lock().expect("lock")[1].clone();
    assert_eq!(
        second.and_then(|a| a.queue_interface).as_deref(),
        Some("Local/101@agents/n")
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
async fn route_answers_are_cached_per_caller_within_a_bounded_cache() {
    // A Call Route API that names agent 100 for everyone and counts the lookups.
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = lookups.clone();
    let crm = Router::new().route(
        "/route",
        get(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({"Status":"Success","Message":{"EmailAddress":"asha@example.com"}}))
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
    let config = Config::parse(&format!(
        "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n\
         call_route_url = \"http://{addr}/route\"\n\
         [[agents]]\nextension = \"100\"\nemail = \"asha@example.com\"\n\
         [http]\ntoken = \"t0ken\"\nrequests_per_second = 1000\nroute_fallback = \"600\"\n"
    ))
    .expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(Store::open(&dir.path().join("s.db"), Synchronous::Normal).expect("store"));
    let state = Arc::new(
        ApiState::new(&config, None, store)
            .expect("state")
            .with_route_cache_capacity(2),
    );
    let app = router(state.clone()).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(
        app,
        listener,
        Transport::plain(ConnectionLimits::default()),
        std::future::pending(),
    ));
    let route = |caller: &str| {
        let url = format!("{base}/route?token=t0ken&caller={caller}");
        async move {
            let r = reqwest::get(url).await.expect("request");
            r.text().await.expect("body")
        }
    };
    assert_eq!(route("9611700001").await, "100");
    assert_eq!(
        route("+919611700001").await,
        "100",
        "the same caller, normalised"
    );
    assert_eq!(
        lookups.load(Ordering::Relaxed),
        1,
        "the second came from the cache"
    );
    assert_eq!(route("9611700002").await, "100");
    assert_eq!(route("9611700003").await, "100");
    assert_eq!(lookups.load(Ordering::Relaxed), 3);
    let held = state.route_cache.lock().expect("lock").len();
    assert_eq!(held, 2, "the cache holds at most its cap");
    // The oldest caller was evicted: asked again, the CRM is asked again.
    assert_eq!(route("9611700001").await, "100");
    assert_eq!(lookups.load(Ordering::Relaxed), 4);
    assert_eq!(route("9611700003").await, "100");
    assert_eq!(
        lookups.load(Ordering::Relaxed),
        4,
        "a recent caller stays cached"
    );
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
        ApiState::new(&config, api.pbx.control(), store).expect("state"),
    ))
    .expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(
        app,
        listener,
        Transport::plain(ConnectionLimits::default()),
        std::future::pending(),
    ));
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
    assert_eq!(placed[0].agent.extension, "102");
}

/// Reads until the server closes the connection (or `limit` passes): how long it took,
/// and what came back.
async fn until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> (Option<Duration>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (None, got),
        }
    }
}

#[tokio::test]
async fn over_long_parameters_get_a_400_naming_them() {
    let api = api("").await;
    let (status, body) = api
        .get(&format!(
            "/click-to-call?token=t0ken&agentNumber=9876500100&customerNumber=9611795983&leadId={}",
            "L".repeat(12 * 1024)
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body.trim(),
        "parameter leadId is too long: 12288 bytes, at most 128"
    );
    let (status, body) = api
        .get(&format!(
            "/route?token=t0ken&caller={}",
            "9".repeat(60 * 1024)
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("parameter caller is too long"), "{body}");
    let r = api
        .client
        .post(format!("{}/disposition?token=t0ken", api.base))
        .form(&[
            ("callSessionId", "1700.1"),
            ("dispositionValue", "Interested"),
            ("notes", &"n".repeat(5000)),
        ])
        .send()
        .await
        .expect("form");
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("parameter notes is too long"),
        "notes over 4 KiB"
    );
    assert!(api.pbx.originated.lock().expect("lock").is_empty());
    assert!(api.pbx.freed.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn wrong_tokens_from_one_address_are_throttled() {
    let api = api_with("", "auth_failures_per_minute = 5").await;
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(api.get("/readyz?token=guess").await.0);
    }
    assert_eq!(statuses[..5], [401; 5]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Throttled means not checked: the right token waits for the window too.
    assert_eq!(api.get("/readyz?token=t0ken").await.0, 429);
    assert_eq!(api.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    use tokio::io::AsyncWriteExt;
    let api = api_with("", "header_read_timeout_ms = 300").await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let trickle = tokio::spawn({
        let (_, mut w) = slow.into_split();
        async move {
            for _ in 0..40 {
                if w.write_all(b"X-A: b\r\n").await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    });
    let stopped = tokio::time::timeout(Duration::from_secs(3), trickle)
        .await
        .expect("the server never closed the slow client")
        .expect("task");
    assert!(stopped, "the writes kept succeeding for 2 s");
    // A silent connection gets the same time.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (closed, _) = until_closed(&mut silent, Duration::from_secs(3)).await;
    let closed = closed.expect("a silent connection stayed open");
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
    assert_eq!(api.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_stalled_body_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let api = api_with("", "idle_timeout_ms = 400").await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(b"POST /disposition?token=t0ken HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncallSessionId=1")
        .await
        .expect("write");
    let (closed, answer) = until_closed(&mut stalled, Duration::from_secs(3)).await;
    let closed = closed.expect("a stalled body kept its connection");
    assert!(closed >= Duration::from_millis(350), "{closed:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(api.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn beyond_the_cap_new_connections_are_closed_at_accept_and_quiet_ones_make_room() {
    let api = api_with("", "max_connections = 4").await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    // Let the server accept the four, and keep them fresh (a byte each) when the fifth comes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for stream in &mut idle {
        use tokio::io::AsyncWriteExt;
        stream.write_all(b"G").await.expect("write");
    }
    let mut fifth = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (closed, _) = until_closed(&mut fifth, Duration::from_secs(1)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(1)),
        "the fifth connection was not closed at accept: {closed:?}"
    );
    assert_eq!(api.connections.refused_at_cap.load(Ordering::Relaxed), 1);
    // Once the idle ones have been quiet a while, a newcomer takes the quietest one's place.
    tokio::time::sleep(server::SHED_QUIET + Duration::from_millis(50)).await;
    let started = Instant::now();
    assert_eq!(api.get("/healthz").await, (200, "ok\n".into()));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(api.connections.shed_quiet.load(Ordering::Relaxed), 1);
    assert!(api.connections.open.load(Ordering::Relaxed) <= 4);
    let mut closed_idle = 0;
    for stream in &mut idle {
        if until_closed(stream, Duration::from_millis(200))
            .await
            .0
            .is_some()
        {
            closed_idle += 1;
        }
    }
    assert_eq!(
        closed_idle, 1,
        "exactly the quietest idle connection made room"
    );
}

#[tokio::test]
async fn a_tls_client_that_never_says_hello_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let http = HttpConfig {
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        header_read_timeout_ms: 300,
        ..HttpConfig::default()
    };
    let transport = Transport::from_config(&http).await.expect("tls config");
    let stats = transport.stats.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(serve(app, listener, transport, std::future::pending()));
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (closed, _) = until_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "a silent TLS client kept its connection");
    assert_eq!(stats.tls_failed.load(Ordering::Relaxed), 1);
}

#[test]
fn connection_keys_default_and_refuse_zero() {
    let config = Config::parse(
        "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\n[asterisk]\ncdr_csv = \"/x\"\n\
         [http]\ntoken = \"t\"\nmax_connections = 0\nheader_read_timeout_ms = 0\n\
         idle_timeout_ms = 0\nauth_failures_per_minute = 0\n",
    )
    .expect("config");
    let keys: Vec<String> = config.problems().into_iter().map(|p| p.key).collect();
    for key in [
        "http.max_connections",
        "http.header_read_timeout_ms",
        "http.idle_timeout_ms",
        "http.auth_failures_per_minute",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not refused: {keys:?}");
    }
    let limits = ConnectionLimits::from_config(&HttpConfig::default());
    assert_eq!(
        limits,
        ConnectionLimits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    );
    // The cap leaves descriptors to CRM, PBX and store under any open-file limit.
    assert_eq!(limits.effective_cap(Some(65_536)), 256);
    assert_eq!(limits.effective_cap(Some(1_024)), 256);
    assert_eq!(limits.effective_cap(Some(400)), 144);
    assert_eq!(limits.effective_cap(Some(64)), 16);
    assert_eq!(limits.effective_cap(None), 256);
}

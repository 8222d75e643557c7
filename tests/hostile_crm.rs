//! A hostile CRM against the real `pbxlink run`: a huge `Retry-After`, a redirect to another
//! host that records whatever reaches it, and a 200 whose body is not JSON.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{World, inbound_call};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(60);

/// A raw HTTP/1.1 server: answers the n-th request with `answers[n]` (the last one repeats)
/// and records each request's head and body.
async fn hostile(answers: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answers[n.min(answers.len() - 1)].clone();
            n += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while let Ok(k) = sock.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                log.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&got).to_string());
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/log"), seen)
}

fn json_ok() -> String {
    let body = r#"{"Status":"Success","Message":{"Id":"x"}}"#;
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn point_at(w: &World, url: &str) {
    let text = std::fs::read_to_string(&w.config).expect("config");
    let text = text.replace(&w.standin.call_log_url(), url);
    std::fs::write(&w.config, text).expect("config");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_retry_after_waits_retry_max_ms_and_delivery_goes_on() {
    let w = World::new(vec![]).await;
    let (url, seen) = hostile(vec![
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 18446744073709551615\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        "HTTP/1.1 503 Busy\r\nRetry-After: 999999999\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        json_ok(),
    ])
    .await;
    point_at(&w, &url);
    let daemon = w.start_daemon();
    for n in 1..=3 {
        w.append(&inbound_call(n));
    }
    w.wait_for(LIMIT, "3 calls delivered after capped waits", || {
        w.status()["delivered"] == 3
    })
    .await;
    assert!(seen.lock().expect("lock").len() >= 5);
    assert!(!daemon.log_contains("panicked"), "{}", daemon.log_tail());
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_not_followed_and_nothing_is_marked_delivered() {
    let w = World::new(vec![]).await;
    let (elsewhere, reached) = hostile(vec![json_ok()]).await;
    for code in ["302 Found", "307 Temporary Redirect"] {
        let (url, _) = hostile(vec![format!(
            "HTTP/1.1 {code}\r\nLocation: {elsewhere}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )])
        .await;
        point_at(&w, &url);
        let text = std::fs::read_to_string(&w.config).expect("config");
        let daemon = w.start_daemon();
        w.append(&inbound_call(if code.starts_with("302") { 1 } else { 2 }));
        let log = daemon.log.clone();
        w.wait_for(LIMIT, "delivery paused on the redirect", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("redirect to")
        })
        .await;
        assert_eq!(w.status()["delivered"], 0);
        assert!(
            reached.lock().expect("lock").is_empty(),
            "the redirect target was reached"
        );
        daemon.stop();
        std::fs::write(&w.config, text.replace(&url, &w.standin.call_log_url())).expect("config");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_that_is_not_json_pauses_instead_of_counting_as_delivered() {
    let w = World::new(vec![]).await;
    let body = "<html>login</html>";
    let (url, _) = hostile(vec![format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )])
    .await;
    point_at(&w, &url);
    let daemon = w.start_daemon();
    w.append(&inbound_call(1));
    let log = daemon.log.clone();
    w.wait_for(LIMIT, "delivery paused on the non-JSON 200", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("not JSON")
    })
    .await;
    assert_eq!(w.status()["delivered"], 0);
    daemon.stop();
}

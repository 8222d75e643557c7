//! `GET /recordings/{signed}` (and HEAD): serves the recording a signed link names, for
//! LeadSquared and the agents' browsers playing it.
//!
//! No token is needed (LeadSquared cannot send one): the link's HMAC signature and expiry are
//! the authority ([`crate::recordings`]). `[http] allow_from` still applies, and requests are
//! rate limited per address like the rest of the API. An unsigned, tampered, expired or
//! traversal link, a symbolic link, anything but a regular file under `[recordings] dir`,
//! and a file not (yet) there all get the same `404 not found`, so a caller learns nothing;
//! the reason goes to the log (bounded, escaped) and to [`RecordingStats`].
//!
//! The file is opened once, under the directory with `O_NOFOLLOW` per component; the
//! response is built by tower-http's `ServeFile` from that open file (through
//! `/proc/self/fd`, the same inode, so nothing can be swapped in between), which gives
//! Content-Type, single `Range` (206, 416), `Last-Modified`/`If-Modified-Since` and HEAD.
//! This module adds a strong `ETag` (inode, size, modification time) with `If-None-Match`
//! (304) and `If-Range` (a stale validator gets the whole file, not a piece of another one).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use governor::{Quota, RateLimiter};
use tower_http::services::ServeFile;

use super::auth::AccessPolicy;
use crate::config::{Config, HttpConfig};
use crate::logtext::{Escaped, excerpt};
use crate::metrics::{Metrics, MetricsSource, Scrape};
use crate::recordings::{RecordingLinks, Refusal};

/// The path prefix of recording links.
pub const PREFIX: &str = "/recordings/";

/// Counters of the recordings endpoint, on `/metrics` as `pbxlink_recordings_*` (the
/// daemon registers them; see [`router`]).
#[derive(Debug, Default)]
pub struct RecordingStats {
    /// Files served (200 or 206, GET or HEAD).
    pub served: AtomicU64,
    /// Bytes of recordings sent: the length of each 200/206 body answering a GET.
    pub bytes_served: AtomicU64,
    /// Conditional requests answered 304.
    pub not_modified: AtomicU64,
    /// Links refused (unsigned, tampered, expired, outside the directory, not a regular
    /// file, missing): all answered 404.
    pub refused: AtomicU64,
    /// [`RecordingStats::refused`] by reason, indexed by [`Refusal::index`]; the reason is
    /// in the metrics and the log only, never in the answer.
    pub refused_by_reason: [AtomicU64; Refusal::ALL.len()],
    /// Requests refused by `allow_from` or the per-address rate limit.
    pub throttled: AtomicU64,
}

impl RecordingStats {
    /// Links refused for `reason` so far.
    pub fn refused_for(&self, reason: Refusal) -> u64 {
        self.refused_by_reason[reason.index()].load(Ordering::Relaxed)
    }
}

impl MetricsSource for RecordingStats {
    fn write(&self, scrape: &mut Scrape) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        scrape.counter(
            "recordings_served",
            "Recordings served through signed links (200 or 206, GET or HEAD)",
            get(&self.served),
        );
        scrape.counter(
            "recordings_served_bytes",
            "Bytes of recordings sent (the body of each 200/206 answer to a GET)",
            get(&self.bytes_served),
        );
        scrape.counter(
            "recordings_not_modified",
            "Conditional recording requests answered 304",
            get(&self.not_modified),
        );
        for reason in Refusal::ALL {
            scrape.counter_with(
                "recordings_refused",
                "Recording links refused, by reason (the caller gets the same 404 for every \
                 reason; not_found includes a recording not written yet)",
                &[("reason", reason.label())],
                self.refused_for(reason),
            );
        }
        scrape.counter(
            "recordings_throttled",
            "Recording requests refused by allow_from or the per-address rate limit",
            get(&self.throttled),
        );
    }
}

type KeyedLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// The recordings endpoint: the links, the address checks and the counters.
pub struct RecordingService {
    links: RecordingLinks,
    policy: AccessPolicy,
    limiter: KeyedLimiter,
    stats: Arc<RecordingStats>,
}

/// The routes serving `[recordings]`, their counters registered with `metrics`; an empty
/// router when the table is absent. Merge it outside the token guard: recording links
/// carry their own signature.
pub fn router(config: &Config, metrics: &Metrics) -> anyhow::Result<Router> {
    Ok(match RecordingService::from_config(config)? {
        Some(service) => {
            metrics.register(service.stats());
            Arc::new(service).router()
        }
        None => Router::new(),
    })
}

impl RecordingService {
    /// The service for `[recordings]` (its key read or created) under `[http]`'s address
    /// rules; None without `[recordings]`.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<RecordingService>> {
        let Some(links) = RecordingLinks::from_config(config)? else {
            return Ok(None);
        };
        let http = config.http.clone().unwrap_or_default();
        Ok(Some(RecordingService::new(links, &http)))
    }

    /// Serves `links` with `http`'s `allow_from` and per-address request rate.
    pub fn new(links: RecordingLinks, http: &HttpConfig) -> RecordingService {
        let per_second = NonZeroU32::new(http.requests_per_second).unwrap_or(NonZeroU32::MIN);
        RecordingService {
            links,
            policy: AccessPolicy::new(None, &http.allow_from),
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            stats: Arc::default(),
        }
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> Arc<RecordingStats> {
        self.stats.clone()
    }

    /// `GET`/`HEAD /recordings/{signed}`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            // Any path below /recordings/ (a link is one segment; anything else is refused
            // as malformed, with the same 404).
            .route("/recordings/{*signed}", get(serve))
            .with_state(self)
    }

    fn refuse(&self, peer: SocketAddr, signed: &str, why: Refusal) -> Response {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.stats.refused_by_reason[why.index()].fetch_add(1, Ordering::Relaxed);
        let link = excerpt(signed.as_bytes(), 96);
        if why == Refusal::NotFound {
            tracing::info!(peer = %peer, link = %Escaped(&link), "recording link: the file is not there (yet)");
        } else {
            tracing::warn!(peer = %peer, link = %Escaped(&link), reason = %why, "recording link refused");
        }
        not_found()
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn serve(
    State(service): State<Arc<RecordingService>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    if !service.policy.allows(peer.ip()) {
        service.stats.throttled.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %peer, "recording request from an address outside allow_from");
        return (StatusCode::FORBIDDEN, "address not allowed\n").into_response();
    }
    if service.limiter.check_key(&peer.ip()).is_err() {
        service.stats.throttled.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response();
    }
    let signed = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .to_owned();
    let named = match service.links.verify(&signed, Utc::now()) {
        Ok(named) => named,
        Err(why) => return service.refuse(peer, &signed, why),
    };
    let links = service.links.clone();
    let opened = tokio::task::spawn_blocking(move || links.open(&named).map(|f| (f, named))).await;
    let (file, named) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(why)) => return service.refuse(peer, &signed, why),
        Err(_) => return service.refuse(peer, &signed, Refusal::Unreadable),
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(_) => return service.refuse(peer, &signed, Refusal::Unreadable),
    };
    let etag = entity_tag(&meta);
    if if_none_match(request.headers(), &etag) {
        service.stats.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    if !if_range_holds(request.headers(), &etag, &meta) {
        request.headers_mut().remove(header::RANGE);
    }
    let is_get = request.method() == axum::http::Method::GET;
    let mime = content_type(&named.file);
    // The same open file: /proc/self/fd/N reopens its inode, not a path that could change.
    let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let response = ServeFile::new_with_mime(&fd_path, &mime)
        .try_call(request)
        .await;
    drop(file);
    match response {
        Ok(response) => {
            let mut response = response.map(Body::new);
            let status = response.status();
            if status.is_success() {
                service.stats.served.fetch_add(1, Ordering::Relaxed);
                // ServeFile sets the length of exactly the bytes it sends (the range's).
                let sent = response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let (true, Some(sent)) = (is_get, sent) {
                    service
                        .stats
                        .bytes_served
                        .fetch_add(sent, Ordering::Relaxed);
                }
            }
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&etag) {
                headers.insert(header::ETAG, value);
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Err(e) => {
            tracing::warn!(peer = %peer, file = %Escaped(&named.file), "recording could not be served: {e}");
            service.refuse(peer, &signed, Refusal::Unreadable)
        }
    }
}

/// The Content-Type of a recording, by its extension.
pub fn content_type(file: &str) -> mime::Mime {
    let ext = file
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let name = match ext.as_str() {
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "gsm" => "audio/x-gsm",
        "ogg" | "oga" | "opus" => "audio/ogg",
        _ => "application/octet-stream",
    };
    name.parse().unwrap_or(mime::APPLICATION_OCTET_STREAM)
}

/// A strong validator: the file's inode, size and modification time (ns).
fn entity_tag(meta: &std::fs::Metadata) -> String {
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.len(), mtime_ns)
}

/// Whether `If-None-Match` names the current tag (weak comparison, `*` matches).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// Whether a `Range` may be honoured: no `If-Range`, or one naming the current file (a
/// strong tag, or its exact Last-Modified date).
fn if_range_holds(headers: &HeaderMap, etag: &str, meta: &std::fs::Metadata) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return value == etag;
    }
    match (httpdate::parse_http_date(value), meta.modified()) {
        (Ok(date), Ok(modified)) => {
            let secs = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .ok()
            };
            secs(date).is_some() && secs(date) == secs(modified)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordings::Signer;
    use axum::body::to_bytes;
    use tower_service::Service;

    struct Site {
        dir: tempfile::TempDir,
        service: Arc<RecordingService>,
        router: Router,
    }

    fn site() -> Site {
        site_with(&HttpConfig {
            requests_per_second: 1000,
            ..HttpConfig::default()
        })
    }

    impl Site {
        fn link(&self, file: &str) -> String {
            let url = self.service.links.link(file, Utc::now()).expect("a link");
            url.strip_prefix("http://127.0.0.1:8478")
                .expect("base")
                .to_owned()
        }

        async fn get(
            &mut self,
            path: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, HeaderMap, Vec<u8>) {
            self.send("GET", path, headers).await
        }

        async fn send(
            &mut self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, HeaderMap, Vec<u8>) {
            let mut builder = Request::builder().method(method).uri(path);
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            let mut request = builder.body(Body::empty()).expect("request");
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5555))));
            let response = self.router.call(request).await.expect("infallible");
            let status = response.status();
            let headers = response.headers().clone();
            let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
            (status, headers, body.to_vec())
        }
    }

    fn audio() -> Vec<u8> {
        (0..1000u32).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn serves_the_whole_file_with_type_tag_and_date() {
        let mut s = site();
        std::fs::write(s.dir.path().join("in-1.wav"), audio()).expect("write");
        let link = s.link("in-1.wav");
        let (status, headers, body) = s.get(&link, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, audio());
        assert_eq!(headers[header::CONTENT_TYPE], "audio/wav");
        assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
        assert!(headers.contains_key(header::LAST_MODIFIED));
        let etag = headers[header::ETAG].to_str().expect("ascii").to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let (status, headers, body) = s.send("HEAD", &link, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(headers[header::CONTENT_LENGTH], "1000");
        assert_eq!(headers[header::ETAG], etag.as_str());
        let (status, _, body) = s.get(&link, &[("if-none-match", &etag)]).await;
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
        assert_eq!(s.service.stats.not_modified.load(Ordering::Relaxed), 1);
        assert_eq!(s.service.stats.served.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn range_edges() {
        let mut s = site();
        std::fs::write(s.dir.path().join("a.mp3"), audio()).expect("write");
        let link = s.link("a.mp3");
        let data = audio();
        for (range, from, to) in [
            ("bytes=0-0", 0, 0),
            ("bytes=10-19", 10, 19),
            ("bytes=990-", 990, 999),
            ("bytes=-5", 995, 999),
            ("bytes=900-5000", 900, 999),
        ] {
            let (status, headers, body) = s.get(&link, &[("range", range)]).await;
            assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(body, &data[from..=to], "{range}");
            assert_eq!(
                headers[header::CONTENT_RANGE],
                format!("bytes {from}-{to}/1000").as_str(),
                "{range}"
            );
            assert_eq!(headers[header::CONTENT_TYPE], "audio/mpeg");
        }
        for range in ["bytes=1000-", "bytes=2000-3000", "bytes=0-1,5-6"] {
            let (status, headers, _) = s.get(&link, &[("range", range)]).await;
            assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(headers[header::CONTENT_RANGE], "bytes */1000", "{range}");
        }
        // If-Range with the current tag: the range; with a stale one: the whole file.
        let (_, headers, _) = s.get(&link, &[]).await;
        let etag = headers[header::ETAG].to_str().expect("ascii").to_owned();
        let (status, _, body) = s
            .get(&link, &[("range", "bytes=0-3"), ("if-range", &etag)])
            .await;
        assert_eq!((status, body.len()), (StatusCode::PARTIAL_CONTENT, 4));
        let (status, _, body) = s
            .get(&link, &[("range", "bytes=0-3"), ("if-range", "\"old\"")])
            .await;
        assert_eq!((status, body), (StatusCode::OK, data));
    }

    #[tokio::test]
    async fn every_bad_link_is_the_same_404() {
        let mut s = site();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret.wav"), b"secret").expect("write");
        std::fs::write(s.dir.path().join("ok.gsm"), b"gsm").expect("write");
        std::os::unix::fs::symlink(
            outside.path().join("secret.wav"),
            s.dir.path().join("l.wav"),
        )
        .expect("ln");
        std::fs::create_dir(s.dir.path().join("d.wav")).expect("mkdir");
        let signer = Signer::new(vec![9; 32]).expect("key");
        let far = Utc::now().timestamp() + 3600;
        let good = s.link("ok.gsm");
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let bad = [
            "/recordings/".to_owned(),
            "/recordings/ok.gsm".to_owned(),
            "/recordings/2026/12/ok.gsm".to_owned(),
            String::from_utf8(tampered).expect("ascii"),
            format!(
                "/recordings/{}",
                signer.sign("ok.gsm", Utc::now().timestamp() - 1)
            ),
            format!("/recordings/{}", signer.sign("../secret.wav", far)),
            format!(
                "/recordings/{}",
                signer.sign(
                    &outside.path().join("secret.wav").display().to_string(),
                    far
                )
            ),
            format!("/recordings/{}", signer.sign("l.wav", far)),
            format!("/recordings/{}", signer.sign("d.wav", far)),
            format!("/recordings/{}", signer.sign("missing.wav", far)),
        ];
        for path in &bad {
            let (status, _, body) = s.get(path, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                body == b"not found\n" || path == "/recordings/",
                "{path}: {body:?}"
            );
        }
        // "/recordings/" matches no route; the nine others are refused, each for its reason.
        let stats = s.service.stats();
        assert_eq!(stats.refused.load(Ordering::Relaxed), 9);
        for (reason, n) in [
            (Refusal::Malformed, 2),
            (Refusal::BadSignature, 1),
            (Refusal::Expired, 1),
            (Refusal::OutsideDir, 2),
            (Refusal::Symlink, 1),
            (Refusal::NotRegular, 1),
            (Refusal::NotFound, 1),
            (Refusal::Unreadable, 0),
        ] {
            assert_eq!(stats.refused_for(reason), n, "{reason:?}");
        }
        let (status, headers, body) = s.get(&good, &[]).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"gsm"[..]));
        assert_eq!(headers[header::CONTENT_TYPE], "audio/x-gsm");
        assert_eq!(stats.served.load(Ordering::Relaxed), 1);
        assert_eq!(stats.bytes_served.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn metrics_show_served_bytes_and_refusals_by_reason() {
        let mut s = site();
        std::fs::write(s.dir.path().join("a.wav"), audio()).expect("write");
        let link = s.link("a.wav");
        let metrics = Metrics::new(None);
        metrics.register(s.service.stats());
        let before = metrics.render().await;
        for reason in Refusal::ALL {
            let line = format!(
                "pbxlink_recordings_refused_total{{reason=\"{}\"}} 0",
                reason.label()
            );
            assert!(before.contains(&line), "{line} in\n{before}");
        }
        assert!(
            before.contains("pbxlink_recordings_served_total 0"),
            "{before}"
        );
        // A whole GET (1000 bytes), a range (10), a HEAD (nothing sent), a 304 (nothing).
        assert_eq!(s.get(&link, &[]).await.0, StatusCode::OK);
        let (status, headers, _) = s.get(&link, &[("range", "bytes=10-19")]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(s.send("HEAD", &link, &[]).await.0, StatusCode::OK);
        let etag = headers[header::ETAG].to_str().expect("ascii").to_owned();
        assert_eq!(
            s.get(&link, &[("if-none-match", &etag)]).await.0,
            StatusCode::NOT_MODIFIED
        );
        let signer = Signer::new(vec![9; 32]).expect("key");
        let far = Utc::now().timestamp() + 3600;
        for path in [
            format!("/recordings/{}", signer.sign("../x.wav", far)),
            format!("/recordings/{}", signer.sign("not-yet.wav", far)),
            format!("/recordings/{}", signer.sign("a.wav", far - 7200)),
            format!(
                "/recordings/{}",
                Signer::new(vec![7; 32]).expect("key").sign("a.wav", far)
            ),
        ] {
            let (status, _, body) = s.get(&path, &[]).await;
            assert_eq!(
                (status, body.as_slice()),
                (StatusCode::NOT_FOUND, &b"not found\n"[..])
            );
        }
        let after = metrics.render().await;
        for line in [
            "pbxlink_recordings_served_total 3",
            "pbxlink_recordings_served_bytes_total 1010",
            "pbxlink_recordings_not_modified_total 1",
            "pbxlink_recordings_refused_total{reason=\"outside_dir\"} 1",
            "pbxlink_recordings_refused_total{reason=\"not_found\"} 1",
            "pbxlink_recordings_refused_total{reason=\"expired\"} 1",
            "pbxlink_recordings_refused_total{reason=\"bad_signature\"} 1",
            "pbxlink_recordings_refused_total{reason=\"not_regular\"} 0",
            "pbxlink_recordings_throttled_total 0",
        ] {
            assert!(after.contains(line), "{line} in\n{after}");
        }
    }

    #[tokio::test]
    async fn a_recording_written_after_the_link_is_served_once_it_is_there() {
        let mut s = site();
        let link = s.link("late.ogg");
        assert_eq!(s.get(&link, &[]).await.0, StatusCode::NOT_FOUND);
        std::fs::write(s.dir.path().join("late.ogg"), b"OggS").expect("write");
        let (status, headers, body) = s.get(&link, &[]).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"OggS"[..]));
        assert_eq!(headers[header::CONTENT_TYPE], "audio/ogg");
    }

    fn site_with(http: &HttpConfig) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let links = RecordingLinks::new(
            Signer::new(vec![9; 32]).expect("key"),
            dir.path().to_owned(),
            "http://127.0.0.1:8478".into(),
            90,
        );
        let service = Arc::new(RecordingService::new(links, http));
        Site {
            dir,
            router: service.clone().router(),
            service,
        }
    }

    #[tokio::test]
    async fn allow_from_and_the_rate_limit_apply() {
        let mut s = site_with(&HttpConfig {
            allow_from: crate::config::NetworkList::new(vec!["10.0.0.0/8".into()]),
            ..HttpConfig::default()
        });
        std::fs::write(s.dir.path().join("a.wav"), b"x").expect("write");
        let link = s.link("a.wav");
        assert_eq!(s.get(&link, &[]).await.0, StatusCode::FORBIDDEN);
        let mut s = site_with(&HttpConfig {
            requests_per_second: 1,
            ..HttpConfig::default()
        });
        std::fs::write(s.dir.path().join("a.wav"), b"x").expect("write");
        let link = s.link("a.wav");
        assert_eq!(s.get(&link, &[]).await.0, StatusCode::OK);
        assert_eq!(s.get(&link, &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(s.service.stats.throttled.load(Ordering::Relaxed), 1);
    }
}

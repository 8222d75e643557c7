//! Recording links against the real `pbxlink run` daemon (issue 12): a CDR row naming a
//! recording is posted to the LeadSquared stand-in with a signed ResourceURL; fetching that
//! URL (reqwest and curl, no token) returns the file, a Range request exactly those bytes;
//! tampered, unsigned, expired, traversal and symlink links are 404; a recording that
//! appears after the call log was posted plays once it is there. On the real Asterisk rig
//! (as root), a call MixMonitor records gets a ResourceURL that curl fetches as the audio.

mod common;
mod rig;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Daemon, World, call_start};
use pbxlink::recordings::Signer;
use pbxlink::recordings::key::load_or_create;

const TOKEN: &str = "t0ken";

const COLUMNS: &str = r#"cdr_format = "custom"
cdr_columns = ["accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel",
  "lastapp", "lastdata", "start", "answer", "end", "duration", "billsec", "disposition",
  "amaflags", "uniqueid", "userfield", "linkedid", "sequence", "recordingfile", "did"]
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An inbound call answered by agent 100, as cdr_custom writes it, naming `recording`.
fn recorded_call(n: u32, recording: &str) -> String {
    let t = |s: i64| {
        (call_start() + chrono::Duration::seconds(s))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    format!(
        r#""","+9196117{n:05}","918044556677","from-trunk","""Lead {n}"" <+9196117{n:05}>","PJSIP/airtel-{n:08x}","PJSIP/100-{n:08x}","Dial","PJSIP/100,30","{s}","{a}","{e}","60","55","ANSWERED","DOCUMENTATION","1700000000.{n}","","1700000000.{n}",1,"{recording}","918044556677"
"#,
        s = t(0),
        a = t(5),
        e = t(60),
    )
}

struct Site {
    world: World,
    daemon: Daemon,
    addr: SocketAddr,
    recordings: PathBuf,
}

/// The world's config with cdr_custom columns, `[http]` and `[recordings]`; the daemon
/// started once `/healthz` answers.
async fn start(rows: &str) -> Site {
    let world = World::new(Vec::new()).await;
    let recordings = world.dir.path().join("monitor");
    std::fs::create_dir_all(recordings.join("2026/12/02")).expect("mkdir");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = std::fs::read_to_string(&world.config).expect("config");
    config = config.replace("[asterisk]\n", &format!("[asterisk]\n{COLUMNS}"));
    config.push_str(&format!(
        "[http]\nlisten = \"{addr}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 1000\n\
         [recordings]\ndir = {recordings:?}\npublic_url = \"http://{addr}/\"\n"
    ));
    std::fs::write(&world.config, config).expect("config");
    world.append(rows);
    let daemon = world.start_daemon();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API never answered: {}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Site {
        world,
        daemon,
        addr,
        recordings,
    }
}

impl Site {
    /// The ResourceURL the CRM got for call `n`, once it got the call.
    async fn resource_url(&self, n: u32) -> String {
        let id = common::call_id(n);
        let find = || {
            self.world
                .standin
                .accepted_call_logs()
                .into_iter()
                .find(|b| b["CallSessionId"] == id.as_str())
        };
        self.world
            .wait_for(Duration::from_secs(30), "the call log", || find().is_some())
            .await;
        let body = find().expect("posted");
        body["ResourceURL"]
            .as_str()
            .unwrap_or_else(|| panic!("no ResourceURL in {body}"))
            .to_owned()
    }

    /// The daemon's key, read from the state dir beside the store.
    fn signer(&self) -> Signer {
        let key = load_or_create(&self.world.dir.path().join("recordings.key")).expect("key");
        Signer::new(key).expect("signer")
    }

    fn url(&self, signed: &str) -> String {
        format!("http://{}/recordings/{signed}", self.addr)
    }
}

fn audio() -> Vec<u8> {
    let mut wav = b"RIFF\x24\x40\x00\x00WAVEfmt ".to_vec();
    wav.extend((0..16_000u32).map(|i| (i * 7 % 256) as u8));
    wav
}

async fn status(url: &str) -> reqwest::StatusCode {
    reqwest::get(url).await.expect("request").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_posted_resource_url_plays_and_bad_links_are_404() {
    let dir_file = "2026/12/02/in-1.wav";
    // The row names the recording by absolute path, as MixMonitor's ${MIXMONITOR_FILENAME}.
    let site = start("").await;
    let absolute = site.recordings.join(dir_file);
    std::fs::write(&absolute, audio()).expect("recording");
    site.world
        .append(&recorded_call(1, &absolute.display().to_string()));
    let url = site.resource_url(1).await;
    let prefix = format!("http://{}/recordings/", site.addr);
    assert!(url.starts_with(&prefix), "{url}");

    // The key was made on first start, 0600, beside the store.
    let key = site.world.dir.path().join("recordings.key");
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // No token needed; the whole file with its type, tag and date.
    let client = reqwest::Client::new();
    let full = client.get(&url).send().await.expect("GET");
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-type"], "audio/wav");
    assert!(full.headers().contains_key("last-modified"));
    let etag = full.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(
        full.bytes().await.expect("body").as_ref(),
        audio().as_slice()
    );

    // A Range request: 206 with exactly those bytes.
    let part = client
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("GET range");
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 1000-1999/{}", audio().len()).as_str()
    );
    assert_eq!(
        part.bytes().await.expect("body").as_ref(),
        &audio()[1000..2000]
    );
    let beyond = client
        .get(&url)
        .header("range", format!("bytes={}-", audio().len()))
        .send()
        .await
        .expect("GET range");
    assert_eq!(beyond.status(), 416);
    let again = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(again.status(), 304);

    // curl, as an admin checks it: HEAD and a range written to a file.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-I", &url])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", audio().len())),
        "{head}"
    );
    let piece = site.world.dir.path().join("piece");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-r", "0-99", "-o"])
        .arg(&piece)
        .arg("-w")
        .arg("%{http_code}")
        .arg(&url)
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "206");
    assert_eq!(std::fs::read(&piece).expect("piece"), &audio()[..100]);

    // Tampered: one character of the signature changed.
    let signed = url.strip_prefix(&prefix).expect("prefix");
    let mut tampered = signed.as_bytes().to_vec();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_eq!(status(&site.url(&tampered)).await, 404);
    // Unsigned: the file's name.
    assert_eq!(status(&site.url("in-1.wav")).await, 404);
    assert_eq!(status(&site.url(dir_file)).await, 404);
    // Expired, with the daemon's own key.
    let signer = site.signer();
    let past = chrono::Utc::now().timestamp() - 1;
    let future = chrono::Utc::now().timestamp() + 3600;
    assert_eq!(status(&site.url(&signer.sign(dir_file, past))).await, 404);
    assert_eq!(status(&site.url(&signer.sign(dir_file, future))).await, 200);
    // Traversal and absolute paths, validly signed: still nothing outside the directory.
    for outside in [
        "../pbxlink.toml".to_owned(),
        "2026/../../pbxlink.toml".to_owned(),
        site.world.config.display().to_string(),
    ] {
        assert_eq!(
            status(&site.url(&signer.sign(&outside, future))).await,
            404,
            "{outside}"
        );
    }
    // A symlink inside the directory to a file outside it, and a directory.
    std::os::unix::fs::symlink(&site.world.config, site.recordings.join("evil.wav")).expect("ln");
    assert_eq!(
        status(&site.url(&signer.sign("evil.wav", future))).await,
        404
    );
    assert_eq!(status(&site.url(&signer.sign("2026", future))).await, 404);
    // The rest of the API still wants its token.
    assert_eq!(status(&format!("http://{}/metrics", site.addr)).await, 401);
    // /metrics counts what was served and why links were refused (the callers all got the
    // same 404): 5 answers with the file (GET, range, curl HEAD, curl range, the re-signed
    // link), their bytes but the HEAD's, one 304.
    let metrics = client
        .get(format!("http://{}/metrics", site.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let whole = audio().len();
    for line in [
        "pbxlink_recordings_served_total 5".to_owned(),
        format!(
            "pbxlink_recordings_served_bytes_total {}",
            2 * whole + 1000 + 100
        ),
        "pbxlink_recordings_not_modified_total 1".to_owned(),
        "pbxlink_recordings_refused_total{reason=\"bad_signature\"} 1".to_owned(),
        "pbxlink_recordings_refused_total{reason=\"malformed\"} 2".to_owned(), // in-1.wav, 2026/12/02/in-1.wav
        "pbxlink_recordings_refused_total{reason=\"expired\"} 1".to_owned(),
        "pbxlink_recordings_refused_total{reason=\"outside_dir\"} 3".to_owned(),
        "pbxlink_recordings_refused_total{reason=\"symlink\"} 1".to_owned(),
        "pbxlink_recordings_refused_total{reason=\"not_regular\"} 1".to_owned(),
        "pbxlink_recordings_refused_total{reason=\"not_found\"} 0".to_owned(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not on /metrics:\n{metrics}"
        );
    }
    assert!(
        site.daemon.log_contains("recording link refused"),
        "{}",
        site.daemon.log_tail()
    );
    site.daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_finished_after_the_call_log_plays_once_it_is_there() {
    let site = start(&recorded_call(2, "2026/12/02/late-2.wav")).await;
    let url = site.resource_url(2).await;
    assert_eq!(status(&url).await, 404, "not written yet");
    write_atomically(&site.recordings.join("2026/12/02/late-2.wav"), &audio());
    let got = reqwest::get(&url).await.expect("GET");
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.bytes().await.expect("body").as_ref(),
        audio().as_slice()
    );
    site.daemon.stop();
}

fn write_atomically(path: &Path, data: &[u8]) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, data).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

/// The real Asterisk rig: an inbound call to the recorded DID (MixMonitor, `CDR(recordingfile)`,
/// agent 104 answering with a tone); the call log's ResourceURL, fetched with curl, is the
/// WAV file Asterisk wrote, and a Range request gives exactly those bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_asterisk_recorded_call_resource_url_returns_the_audio() {
    if !rig::root_or_skip(
        "tests/recordings.rs",
        "A MixMonitor recording's ResourceURL was",
    ) {
        return;
    }
    let _lock = rig::RigLock::acquire("recordings", "asterisk_e2e|tests/ami");
    rig::rig_ok(&["install"]);
    let _rig = rig::RigGuard;
    rig::rig_ok(&["start"]);
    let monitor = rig::rig_root().join("var/spool/asterisk/monitor");
    let cdr = rig::rig_root().join("var/log/asterisk/cdr-custom/Master.csv");

    let world = World::new(Vec::new()).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let columns: Vec<String> = rig::CUSTOM_COLUMNS
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    let config = std::fs::read_to_string(&world.config).expect("config");
    let (head, _) = config.split_once("[asterisk]").expect("[asterisk]");
    let config = format!(
        "{head}[[agents]]\nextension = \"104\"\nphone = \"+919876500104\"\n\
         [asterisk]\ncdr_csv = {cdr:?}\ncdr_format = \"custom\"\ncdr_columns = [{}]\n\
         cdr_time_zone = {:?}\nstart_at = \"beginning\"\nsettle_ms = 1000\npoll_interval_ms = 100\n\
         [http]\nlisten = \"{addr}\"\ntoken = \"{TOKEN}\"\n\
         [recordings]\ndir = {monitor:?}\npublic_url = \"http://{addr}\"\n",
        columns.join(", "),
        rig::rig_tz(),
    );
    std::fs::write(&world.config, config).expect("config");
    let daemon = world.start_daemon();

    // Earlier runs' recordings (rig.sh start clears the CDR files, not the spool).
    for entry in std::fs::read_dir(&monitor).expect("monitor dir").flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("rec-") {
            std::fs::remove_file(entry.path()).expect("remove an old recording");
        }
    }
    rig::rig_ok(&["call-in", "918044556607", "+919611700007", "4"]);
    world
        .wait_for(Duration::from_secs(60), "the recorded call's log", || {
            !world.standin.accepted_call_logs().is_empty()
        })
        .await;
    let body = world.standin.accepted_call_logs().remove(0);
    let url = body["ResourceURL"]
        .as_str()
        .unwrap_or_else(|| panic!("no ResourceURL in {body}\n{}", daemon.log_tail()))
        .to_owned();
    assert!(
        url.starts_with(&format!("http://{addr}/recordings/")),
        "{url}"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&monitor)
        .expect("monitor dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let audio = std::fs::read(&files[0]).expect("the recording");
    assert!(
        audio.len() > 1044 && audio.starts_with(b"RIFF"),
        "{} bytes",
        audio.len()
    );
    eprintln!(
        "[recordings] {} ({} bytes) served at {url}",
        files[0].display(),
        audio.len()
    );

    let fetched = site_curl(&world, &url, None);
    assert_eq!(fetched.0, "200");
    assert_eq!(fetched.1, audio, "the ResourceURL returns the recording");
    let piece = site_curl(&world, &url, Some("44-1043"));
    assert_eq!(piece.0, "206");
    assert_eq!(piece.1, &audio[44..1044]);
    daemon.stop();
}

/// curl's status code and body for `url` (with `-r range`).
fn site_curl(world: &World, url: &str, range: Option<&str>) -> (String, Vec<u8>) {
    let out_file = world.dir.path().join("curl.out");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code}"]);
    if let Some(range) = range {
        cmd.args(["-r", range]);
    }
    let out = cmd.arg(url).output().expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read(&out_file).unwrap_or_default(),
    )
}

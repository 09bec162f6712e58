//! End-to-end: the status page (`/status`) as people see it, in a real browser. Headless
//! Chromium from Debian's packages loads the page of a running daemon with one account down
//! (its IRC server is not there); the test reads the DOM Chromium built and saves a screenshot
//! as a test artefact.

mod common;

use common::{Api, Daemon, free_port};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "status-token-0123456789abcdef";
const OTHER_TOKEN: &str = "status-other-token-0123456789";
const CANARY: &str = "canary-status-page-7d41e9";

fn chromium() -> PathBuf {
    let path = std::env::var("PASSERELLE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} is not installed: run the README's test command (scripts/test.sh), which installs it",
        path.display()
    );
    path
}

/// Runs headless Chromium with `args` (then `url`), killed after 60 s; its standard output.
fn headless(profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap_or_default()
}

/// The `<tr …>` element whose opening tag holds `attr`, up to its `</tr>`.
fn row<'a>(dom: &'a str, attr: &str) -> &'a str {
    let start = dom
        .find(attr)
        .unwrap_or_else(|| panic!("no row with {attr} in:\n{dom}"));
    let end = dom[start..]
        .find("</tr>")
        .map(|e| start + e)
        .unwrap_or(dom.len());
    &dom[start..end]
}

#[tokio::test]
async fn the_status_page_shows_accounts_links_queues_and_traffic_in_a_browser_and_no_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_main, api_other, irc_down) =
        (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        r##"
{head}
[accounts."irc.down"]
kind = "irc"
server = "127.0.0.1"
port = {irc_down}
tls = false
nick = "bridge"

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api_main}"
token = "{TOKEN}"

[accounts."api.other"]
kind = "api"
listen = "127.0.0.1:{api_other}"
token = "{OTHER_TOKEN}"
rights = ["write"]

[[links]]
name = "lobby"
rooms = [
  {{ account = "api.main", room = "lobby", direction = "in" }},
  {{ account = "api.other", room = "lobby" }},
  {{ account = "irc.down", room = "#lobby" }},
]
"##,
        head = common::base_config(dir.path(), admin)
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{admin}/status");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no /status: {}", daemon.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One message: delivered to api.other at once, queued for the IRC account that is down.
    let api = Api::new(api_main, TOKEN);
    let wait_up = Instant::now() + Duration::from_secs(15);
    let mut status = None;
    while status != Some(200) && Instant::now() < wait_up {
        status = api
            .try_post(&serde_json::json!({"text": CANARY, "username": "alice", "gateway": "lobby"}))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(200));
    let other = Api::new(api_other, OTHER_TOKEN);
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while delivered.is_empty() && Instant::now() < deadline {
        delivered = other.messages().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered.len(), 1, "api.other gets the message");
    // Let the IRC account fail once, so it has a last error.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !daemon.logs().contains("connector failed; will restart") {
        assert!(
            Instant::now() < deadline,
            "the IRC account did not fail: {}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let profile = tempfile::tempdir().expect("profile");
    let dom = headless(profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("<h1>passerelle</h1>"), "not the page: {dom}");
    assert!(
        dom.contains(&format!("version {}", env!("CARGO_PKG_VERSION"))),
        "{dom}"
    );
    assert!(dom.contains("2 of 3 connected"), "{dom}");

    let irc = row(&dom, "data-account=\"irc.down\"");
    assert!(irc.contains(">irc<"), "kind: {irc}");
    assert!(
        irc.contains("data-state=\"connecting\"") || irc.contains("data-state=\"disconnected\""),
        "the IRC account is shown down: {irc}"
    );
    assert!(irc.contains("refused"), "its last error: {irc}");
    assert!(irc.contains(" ago"), "since when: {irc}");
    let main = row(&dom, "data-account=\"api.main\"");
    assert!(main.contains("data-state=\"connected\""), "{main}");
    assert!(
        main.contains("<td class=\"n\">1</td><td class=\"n\">0</td>"),
        "api.main: one in, none out in the last hour: {main}"
    );
    let other_row = row(&dom, "data-account=\"api.other\"");
    assert!(
        other_row.contains("<td class=\"n\">0</td><td class=\"n\">1</td>"),
        "api.other: one delivered in the last hour: {other_row}"
    );

    // The link, its rooms and directions.
    assert!(dom.contains("rowspan=\"3\">lobby</td>"), "{dom}");
    for (account, room, direction) in [
        ("api.main", "lobby", "in"),
        ("api.other", "lobby", "inout"),
        ("irc.down", "#lobby", "inout"),
    ] {
        assert!(
            dom.contains(&format!(
                "<td>{account}</td><td>{room}</td><td>{direction}</td>"
            )),
            "{account} {room} {direction} in:\n{dom}"
        );
    }
    // What waits for the account that is down.
    let queued = row(&dom, "data-room=\"irc.down/#lobby\"");
    assert!(
        queued.contains("<td class=\"n\">1</td><td class=\"n\">0</td>"),
        "one queued for #lobby: {queued}"
    );

    // Ids and counts only.
    for secret in [CANARY, TOKEN, OTHER_TOKEN, "alice"] {
        assert!(!dom.contains(secret), "the page shows {secret:?}");
    }

    // A screenshot, kept as a test artefact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(png.len() > 10_000, "a screenshot of {} bytes", png.len());
    println!("status page screenshot: {}", shot.display());
}

//! End-to-end resilience: a graceful stop in the middle of a burst, an IRC server restart, and the
//! metrics that show both.

mod common;

use common::{Api, Daemon, free_port, metric};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use std::time::Duration;

const TOKEN: &str = "resilience-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);

fn config(irc_port: u16, admin: u16, api_port: u16, dir: &std::path::Path, rate: f64) -> String {
    format!(
        r##"
[general]
shutdown_grace_secs = 1

[store]
path = "{data}/passerelle.db"

[http]
listen = "127.0.0.1:{admin}"

[accounts."irc.main"]
kind = "irc"
server = "127.0.0.1"
port = {irc_port}
tls = false
nick = "bridge"
send_rate_per_second = {rate}
send_burst = 1
ping_interval_secs = 2
dead_link_secs = 6

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc.main", room = "#a" }},
  {{ account = "api.main", room = "lobby" }},
]
"##,
        data = dir.join("data").display()
    )
}

async fn alice(port: u16) -> IrcClient {
    let mut c = IrcClient::connect(port, "alice").await;
    c.join("#a").await;
    c
}

#[tokio::test]
async fn a_graceful_stop_mid_burst_loses_nothing_and_repeats_nothing() {
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    // 20 lines a second: the burst is still queued when SIGTERM comes.
    let mut daemon = Daemon::start(
        dir.path(),
        &config(irc.port, admin, api_port, dir.path(), 20.0),
        admin,
    );
    daemon.wait_ready(Duration::from_secs(30)).await;
    let mut alice = alice(irc.port).await;
    let api = Api::new(api_port, TOKEN);

    const N: usize = 60;
    for i in 0..N {
        let (status, _) = api
            .post(serde_json::json!({"text": format!("burst {i:03}"), "username": "s", "gateway": "lobby"}))
            .await;
        assert_eq!(status, 200, "post {i}");
    }
    assert_eq!(daemon.stop(), Some(0), "clean exit on SIGTERM");
    let logs = daemon.logs();
    assert!(
        logs.contains("grace period over") || logs.contains("stopped"),
        "{logs}"
    );
    daemon.restart();
    daemon.wait_ready(Duration::from_secs(30)).await;

    let got = alice
        .messages_until(Duration::from_secs(30), |m| m.len() >= N)
        .await;
    let numbers: Vec<usize> = got
        .iter()
        .filter_map(|m| m.text.strip_prefix("<s> burst ")?.parse().ok())
        .collect();
    let notable: Vec<String> = daemon
        .logs()
        .lines()
        .filter(|l| {
            l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("shutting")
                || l.contains("running")
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(
        numbers,
        (0..N).collect::<Vec<_>>(),
        "lost, repeated or reordered across the stop; daemon said:\n{}",
        notable.join("\n")
    );
    assert!(
        alice.next_message(Duration::from_secs(2)).await.is_none(),
        "a message was repeated"
    );
    // The queue gauge counted the rows left from the first run: it is back to zero, not below.
    let m = daemon.metrics().await;
    assert_eq!(
        metric(&m, "passerelle_queue_depth", &["irc.main"]),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn the_bridge_reconnects_and_rejoins_after_the_irc_server_restarts() {
    let mut irc = Ngircd::start();
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    let daemon = Daemon::start(
        dir.path(),
        &config(irc.port, admin, api_port, dir.path(), 0.0),
        admin,
    );
    daemon.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut a = alice(irc.port).await;
    a.say("#a", "before the restart").await;
    assert_eq!(
        stream.next(WAIT).await.expect("before")["text"],
        "before the restart"
    );

    irc.restart();
    let mut a = alice(irc.port).await;
    assert!(
        a.wait_for_join("bridge", "#a", Duration::from_secs(30))
            .await,
        "the bridge did not rejoin #a"
    );
    daemon.wait_ready(Duration::from_secs(10)).await;
    a.say("#a", "after the restart").await;
    assert_eq!(
        stream.next(WAIT).await.expect("after")["text"],
        "after the restart"
    );
    let (status, _) = api
        .post(serde_json::json!({"text": "back again", "username": "s", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        a.next_message(WAIT).await.expect("API to IRC").text,
        "<s> back again"
    );

    let m = daemon.metrics().await;
    assert!(
        metric(&m, "passerelle_reconnects_total", &["irc.main"]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "passerelle_events_in_total", &["irc.main", "message"]) >= 2.0,
        "{m}"
    );
    assert!(
        metric(&m, "passerelle_events_out_total", &["api.main"]) >= 2.0,
        "{m}"
    );
    assert!(
        metric(&m, "passerelle_events_out_total", &["irc.main"]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "passerelle_send_latency_seconds_count", &["irc.main"]) >= 1.0,
        "{m}"
    );
    assert!(
        m.contains("passerelle_send_latency_seconds_bucket"),
        "latency is not a histogram:\n{m}"
    );
    assert!(
        m.contains("passerelle_queue_depth{account=\"api.main\"}"),
        "{m}"
    );
    assert_eq!(
        metric(&m, "passerelle_account_connected", &["irc.main"]),
        1.0,
        "{m}"
    );
    // IRC user joins/parts are counted drops (no destination carries membership).
    assert!(m.contains("passerelle_drops_total{"), "{m}");
}

/// The daemon with one more `[general]` key, then the IRC server stopped and `texts` posted to
/// the API (each stored, waiting for IRC).
struct Outage {
    irc: Ngircd,
    _dir: tempfile::TempDir,
    daemon: Daemon,
    admin: u16,
    api: Api,
}

async fn outage(general_key: &str, texts: &[String]) -> Outage {
    let mut irc = Ngircd::start();
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    let config = config(irc.port, admin, api_port, dir.path(), 0.0).replace(
        "shutdown_grace_secs = 1",
        &format!("shutdown_grace_secs = 1\n{general_key}"),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(api_port, TOKEN);
    irc.stop();
    for text in texts {
        let (status, _) = api
            .post(serde_json::json!({"text": text, "username": "s", "gateway": "lobby"}))
            .await;
        assert_eq!(status, 200, "stored while IRC is down");
    }
    Outage {
        irc,
        _dir: dir,
        daemon,
        admin,
        api,
    }
}

/// The IRC server down for five times the answer timeout, with 50 messages queued for it: when it
/// is back each arrives exactly once, in order. The lane hands each row to the connector once and
/// waits for that answer however long the connector takes to reconnect.
#[tokio::test]
async fn an_outage_longer_than_the_answer_timeout_sends_each_message_once() {
    const TOTAL: usize = 50;
    let texts: Vec<String> = (0..TOTAL).map(|i| format!("queued {i}")).collect();
    let Outage {
        mut irc,
        _dir,
        daemon,
        ..
    } = outage("answer_timeout_secs = 2", &texts).await;
    // Five answer timeouts with the destination gone.
    tokio::time::sleep(Duration::from_secs(10)).await;
    irc.start_again();
    let mut a = alice(irc.port).await;
    let got = a
        .messages_until(Duration::from_secs(60), |got| got.len() >= TOTAL)
        .await;
    let extra = a.messages_until(Duration::from_secs(4), |_| false).await;
    let seen: Vec<String> = got
        .iter()
        .chain(extra.iter())
        .map(|m| m.text.clone())
        .collect();
    let expected: Vec<String> = texts.iter().map(|t| format!("<s> {t}")).collect();
    assert_eq!(
        seen,
        expected,
        "each message once, in order; log:\n{}",
        daemon.logs()
    );
}

/// Messages that waited in the outbox longer than `max_queue_age_secs` while the IRC server was
/// down are given up on when it is back: counted, listed by `/dead-letters` (ids, destination,
/// reason; no text), never sent; the one already handed over goes, and new ones flow.
#[tokio::test]
async fn messages_queued_too_long_become_dead_letters_and_later_ones_flow() {
    let texts = ["first", "dead canary one", "dead canary two"].map(String::from);
    let Outage {
        mut irc,
        _dir,
        daemon,
        admin,
        api,
    } = outage("max_queue_age_secs = 2", &texts).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    irc.start_again();
    let mut a = alice(irc.port).await;
    assert_eq!(
        a.next_message(Duration::from_secs(30))
            .await
            .map(|m| m.text),
        Some("<s> first".to_owned()),
        "the message handed over before the outage goes"
    );
    let letters: serde_json::Value = {
        let url = format!("http://127.0.0.1:{admin}/dead-letters");
        let mut got = serde_json::Value::Null;
        for _ in 0..100 {
            got = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if got["dead_letters"].as_array().is_some_and(|l| l.len() == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got
    };
    let list = letters["dead_letters"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{letters}");
    for d in list {
        assert_eq!(d["account"], "irc.main");
        assert_eq!(d["room"], "#a");
        assert_eq!(d["reason"], "max_age");
        assert!(d["queued_secs_ago"].as_u64().is_some_and(|s| s >= 2), "{d}");
    }
    assert!(!letters.to_string().contains("canary"), "no text listed");
    let m = daemon.metrics().await;
    assert_eq!(
        metric(
            &m,
            "passerelle_dead_letters_total",
            &["irc.main", "max_age"]
        ),
        2.0,
        "{m}"
    );
    let (status, _) = api
        .post(serde_json::json!({"text": "after", "username": "s", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    let rest = a
        .messages_until(WAIT, |got| got.iter().any(|m| m.text == "<s> after"))
        .await;
    let texts: Vec<&str> = rest.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["<s> after"], "the dead letters were never sent");
    assert!(!daemon.logs().contains("canary"), "no text in the log");
}

//! Cluster mode with real daemons: three instances of the binary on one PostgreSQL server share
//! an API account and an IRC account (InspIRCd, flood control off); messages posted to the API at
//! one instance are delivered to IRC by another, and the IRC owner killed with SIGKILL mid-stream
//! loses nothing: a survivor takes the account over once the lease expires and goes on in order.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::postgres::Postgres;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "cluster-test-token-0123456789";
const LEASE_SECS: u64 = 5;

/// One instance's configuration: the same for all but its name, admin port and data directory.
fn instance_config(
    dir: &Path,
    secrets: &Path,
    name: &str,
    admin: u16,
    irc_port: u16,
    api_port: u16,
) -> String {
    format!(
        r##"
[general]
shutdown_grace_secs = 5

[store]
path = "{data}/passerelle.db"
url_file = "{secrets}/database-url"
outbox_key_file = "{secrets}/outbox-key"

[http]
listen = "127.0.0.1:{admin}"

[cluster]
enabled = true
instance = "{name}"
lease_secs = {LEASE_SECS}
prefer = {{ "irc.main" = "a", "api.main" = "b" }}

[accounts."irc.main"]
kind = "irc"
server = "127.0.0.1"
port = {irc_port}
tls = false
nick = "bridge"
send_rate_per_second = 0

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"

[[links]]
name = "lobby"
rooms = [
  {{ account = "api.main", room = "lobby" }},
  {{ account = "irc.main", room = "#c" }},
]
"##,
        data = dir.join("data").display(),
        secrets = secrets.display(),
    )
}

/// The `/readyz` body of a daemon, when it answers.
async fn readyz(admin: u16) -> Option<serde_json::Value> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Waits until one of `admins` reports `account` connected there; returns which (by index).
async fn connected_at(admins: &[u16], account: &str, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for (i, admin) in admins.iter().enumerate() {
            if let Some(body) = readyz(*admin).await
                && body["accounts"][account] == "connected"
            {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Three instances, SIGKILL of the one that owns the IRC destination after 1,500 of 5,000
/// messages: every message reaches IRC, in order, with at most one repeat, and IRC is back at
/// another instance within the lease plus one reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_destinations_owner_mid_stream_loses_nothing() {
    const MESSAGES: usize = 5_000;
    const KILL_AT: usize = 1_500;
    let irc = passerelle_testkit::servers::Inspircd::start();
    let (url, _pg) = Postgres::shared_database();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("database-url"), &url).unwrap();
    std::fs::write(secrets.path().join("outbox-key"), "42".repeat(32)).unwrap();

    let api_port = free_port();
    let names = ["a", "b", "c"];
    let dirs: Vec<tempfile::TempDir> = names.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let admins: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut daemons: Vec<Daemon> = names
        .iter()
        .zip(&dirs)
        .zip(&admins)
        .map(|((name, dir), admin)| {
            let config =
                instance_config(dir.path(), secrets.path(), name, *admin, irc.port, api_port);
            Daemon::start(dir.path(), &config, *admin)
        })
        .collect();

    let mut bob = IrcClient::connect(irc.port, "bob").await;
    bob.join("#c").await;
    // IRC at a, the API at b (their pins), c waiting.
    assert_eq!(
        connected_at(&admins, "irc.main", Duration::from_secs(30)).await,
        Some(0),
        "irc.main connected at a; logs:\n{}",
        daemons[0].logs()
    );
    assert_eq!(
        connected_at(&admins, "api.main", Duration::from_secs(30)).await,
        Some(1)
    );
    assert!(
        bob.wait_for_join("bridge", "#c", Duration::from_secs(30))
            .await
    );
    let c = readyz(admins[2]).await.expect("c answers");
    assert_eq!(c["accounts"]["irc.main"], "elsewhere", "{c}");
    assert_eq!(c["cluster"]["owners"]["irc.main"], "a", "{c}");

    let want: Vec<String> = (0..MESSAGES).map(|i| format!("<s> m {i:05}")).collect();
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut distinct = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
        while distinct.len() < MESSAGES && tokio::time::Instant::now() < deadline {
            let Some(m) = bob.next_message(Duration::from_secs(30)).await else {
                break;
            };
            distinct.insert(m.text.clone());
            lines.push(m.text);
        }
        // A repeat of the last may still be on its way.
        if let Some(extra) = bob.next_message(Duration::from_secs(2)).await {
            lines.push(extra.text);
        }
        lines
    });

    let api = Api::new(api_port, TOKEN);
    let mut back = None;
    for i in 0..MESSAGES {
        if i == KILL_AT {
            daemons[0].kill();
            let killed_at = Instant::now();
            let survivors = admins[1..].to_vec();
            back = Some(tokio::spawn(async move {
                let at = connected_at(&survivors, "irc.main", Duration::from_secs(60)).await;
                (at, killed_at.elapsed())
            }));
        }
        let body =
            serde_json::json!({"text": format!("m {i:05}"), "username": "s", "gateway": "lobby"});
        let mut tries = 0;
        while api.try_post(&body).await != Some(200) {
            tries += 1;
            assert!(tries < 300, "message {i} not acknowledged within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (back_at, back_after) = back.expect("killed").await.unwrap();
    let back_at = back_at.expect("irc.main back at b or c within 60 s");
    assert!(
        back_after < Duration::from_secs(LEASE_SECS + 10),
        "irc.main back only after {back_after:?}"
    );
    let lines = collector.await.unwrap();
    let repeats = common::check_stream(&lines, &want, 1);
    eprintln!(
        "cluster failover: irc.main back at {} {:.1} s after the kill (lease {LEASE_SECS} s); \
         {} lines, {repeats} repeats",
        names[back_at + 1],
        back_after.as_secs_f64(),
        lines.len()
    );
    for d in &mut daemons[1..] {
        d.stop();
    }
}

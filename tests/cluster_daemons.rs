//! Cluster mode with real daemons: three instances of the binary on one PostgreSQL server share
//! an API account and an IRC account (InspIRCd, flood control off); messages posted to the API at
//! one instance are delivered to IRC by another, and the IRC owner killed with SIGKILL mid-stream
//! loses nothing: a survivor takes the account over once the lease expires and goes on in order.
//! Without pins, six accounts spread two to an instance, and three to each survivor after a death.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::postgres::Postgres;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
{head}

{irc}
{api}
[[links]]
name = "lobby"
rooms = [
  {{ account = "api.main", room = "lobby" }},
  {{ account = "irc.main", room = "#c" }},
]
"##,
        head = common::cluster_head(
            dir,
            secrets,
            name,
            admin,
            LEASE_SECS,
            r#""irc.main" = "a", "api.main" = "b""#
        ),
        irc = common::irc_account(irc_port),
        api = common::api_account(api_port, TOKEN),
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

/// Three instances of the daemon (a, b, c) on one database, with IRC pinned to a and the API to
/// b; returns once a runs IRC, b the API, and bob watches `#c`.
struct Cluster {
    daemons: Vec<Daemon>,
    admins: Vec<u16>,
    api_port: u16,
    _dirs: Vec<tempfile::TempDir>,
    _secrets: tempfile::TempDir,
}

const NAMES: [&str; 3] = ["a", "b", "c"];

async fn start_cluster(url: &str, irc_port: u16) -> (Cluster, IrcClient) {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("database-url"), url).unwrap();
    std::fs::write(secrets.path().join("outbox-key"), "42".repeat(32)).unwrap();
    let api_port = free_port();
    let dirs: Vec<tempfile::TempDir> = NAMES.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let admins: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
    let daemons: Vec<Daemon> = NAMES
        .iter()
        .zip(&dirs)
        .zip(&admins)
        .map(|((name, dir), admin)| {
            let config =
                instance_config(dir.path(), secrets.path(), name, *admin, irc_port, api_port);
            Daemon::start(dir.path(), &config, *admin)
        })
        .collect();
    let mut bob = IrcClient::connect(irc_port, "bob").await;
    bob.join("#c").await;
    // Each pinned account at its instance (started together, the instances come up in any
    // order; a pinned account waits a lease for its instance).
    assert_eq!(
        connected_at(&admins[..1], "irc.main", Duration::from_secs(60)).await,
        Some(0),
        "irc.main connected at a; logs:\n{}",
        daemons[0].logs()
    );
    assert_eq!(
        connected_at(&admins[1..2], "api.main", Duration::from_secs(60)).await,
        Some(0)
    );
    assert!(
        bob.wait_in_channel("bridge", "#c", Duration::from_secs(60))
            .await
    );
    let cluster = Cluster {
        daemons,
        admins,
        api_port,
        _dirs: dirs,
        _secrets: secrets,
    };
    (cluster, bob)
}

/// Collects what bob sees in `#c` until `n` distinct lines came (and a repeat of the last that
/// may still be on its way), or 60 s pass with nothing. Sets `other_nick` once a line comes from
/// another nick than `bridge` (the first owner's).
fn collect(
    mut bob: IrcClient,
    n: usize,
    other_nick: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, String)>> {
    tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut distinct = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while distinct.len() < n && tokio::time::Instant::now() < deadline {
            let Some(m) = bob.next_message(Duration::from_secs(60)).await else {
                break;
            };
            if m.nick != "bridge" {
                other_nick.store(true, Ordering::SeqCst);
            }
            distinct.insert(m.text.clone());
            lines.push((m.nick, m.text));
        }
        if let Some(extra) = bob.next_message(Duration::from_secs(2)).await {
            lines.push((extra.nick, extra.text));
        }
        lines
    })
}

/// Posts `m 00000`, … to the API, each again until acknowledged; calls `at(i)` before message i.
async fn post_all(api_port: u16, n: usize, mut at: impl AsyncFnMut(usize)) {
    let api = Api::new(api_port, TOKEN);
    for i in 0..n {
        at(i).await;
        let body =
            serde_json::json!({"text": format!("m {i:05}"), "username": "s", "gateway": "lobby"});
        let mut tries = 0;
        while api.try_post(&body).await != Some(200) {
            tries += 1;
            assert!(tries < 600, "message {i} not acknowledged within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn want(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("<s> m {i:05}")).collect()
}

fn texts(lines: &[(String, String)]) -> Vec<String> {
    lines.iter().map(|(_, t)| t.clone()).collect()
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
    let (mut cluster, bob) = start_cluster(&url, irc.port).await;
    let c = readyz(cluster.admins[2]).await.expect("c answers");
    assert_eq!(c["accounts"]["irc.main"], "elsewhere", "{c}");
    assert_eq!(c["cluster"]["owners"]["irc.main"], "a", "{c}");

    let collector = collect(bob, MESSAGES, Arc::default());
    let mut back = None;
    let survivors = cluster.admins[1..].to_vec();
    let daemons = &mut cluster.daemons;
    post_all(cluster.api_port, MESSAGES, async |i| {
        if i == KILL_AT {
            daemons[0].kill();
            let killed_at = Instant::now();
            let survivors = survivors.clone();
            back = Some(tokio::spawn(async move {
                let at = connected_at(&survivors, "irc.main", Duration::from_secs(60)).await;
                (at, killed_at.elapsed())
            }));
        }
    })
    .await;
    let (back_at, back_after) = back.expect("killed").await.unwrap();
    let back_at = back_at.expect("irc.main back at b or c within 60 s");
    assert!(
        back_after < Duration::from_secs(LEASE_SECS + 10),
        "irc.main back only after {back_after:?}"
    );
    let lines = texts(&collector.await.unwrap());
    let repeats = common::check_stream(&lines, &want(MESSAGES), 1);
    eprintln!(
        "cluster failover: irc.main back at {} {:.1} s after the kill (lease {LEASE_SECS} s); \
         {} lines, {repeats} repeats",
        NAMES[back_at + 1],
        back_after.as_secs_f64(),
        lines.len()
    );
    for d in &mut cluster.daemons[1..] {
        d.stop();
    }
}

/// The IRC owner paused (SIGSTOP) past its lease mid-stream, then resumed (SIGCONT) while the
/// stream goes on: another instance took IRC over meanwhile, and the resumed one sends nothing
/// more (at most the one line its connector held when it was paused), stops its IRC connection,
/// and nothing is lost or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_owner_sends_nothing_once_it_resumes() {
    const MESSAGES: usize = 2_000;
    const PAUSE_AT: usize = 500;
    const RESUME_AT: usize = 1_200;
    let irc = passerelle_testkit::servers::Inspircd::start();
    let (url, _pg) = Postgres::shared_database();
    let (mut cluster, bob) = start_cluster(&url, irc.port).await;
    let pid = cluster.daemons[0].pid().expect("a runs");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let survivor_sent = Arc::new(AtomicBool::new(false));
    let collector = collect(bob, MESSAGES, survivor_sent.clone());
    let survivors = cluster.admins[1..].to_vec();
    let mut taken_over = None;
    post_all(cluster.api_port, MESSAGES, async |i| {
        if i == PAUSE_AT {
            signal("STOP");
            let paused = Instant::now();
            let at = connected_at(&survivors, "irc.main", Duration::from_secs(60)).await;
            taken_over = Some((at.expect("taken over while a is paused"), paused.elapsed()));
        }
        if i == RESUME_AT {
            // Once the survivor delivers (its IRC connection waits up to 30 s for the nick the
            // paused one still holds, then goes on under another).
            let deadline = Instant::now() + Duration::from_secs(90);
            while !survivor_sent.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the survivor delivered nothing");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            signal("CONT");
        }
    })
    .await;
    let (by, after) = taken_over.unwrap();
    let lines = collector.await.unwrap();
    let repeats = common::check_stream(&texts(&lines), &want(MESSAGES), 1);
    // a's nick is "bridge"; the survivor's IRC connection got another while a's was still open.
    // Between the survivor's first line and its last, a's old connection sends nothing (after
    // the survivor's last, a may have the account back: it is pinned there, at a new epoch).
    let first_of_survivor = lines
        .iter()
        .position(|(nick, _)| nick != "bridge")
        .expect("the survivor delivered");
    let last_of_survivor = lines
        .iter()
        .rposition(|(nick, _)| nick != "bridge")
        .expect("the survivor delivered");
    let late: Vec<&(String, String)> = lines[first_of_survivor..=last_of_survivor]
        .iter()
        .filter(|(nick, _)| nick == "bridge")
        .collect();
    assert!(
        late.len() <= 1,
        "a sent {} lines after losing its lease: {late:?}",
        late.len()
    );
    let log = cluster.daemons[0].logs();
    assert!(
        log.contains("cluster: lease lost"),
        "a did not notice the loss"
    );
    eprintln!(
        "cluster pause: irc.main connected at {} {:.1} s after SIGSTOP (lease {LEASE_SECS} s); \
         {} lines from a while the survivor delivered, {} from the survivor, {repeats} repeats",
        NAMES[by + 1],
        after.as_secs_f64(),
        late.len(),
        lines.iter().filter(|(nick, _)| nick != "bridge").count()
    );
    for d in &mut cluster.daemons {
        d.stop();
    }
}

/// The database restarted mid-stream (stopped for 5 s): the daemons wait, the API answers
/// 503 meanwhile (nothing acknowledged is lost), and everything reaches IRC once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_mid_stream_loses_nothing() {
    const MESSAGES: usize = 1_000;
    const RESTART_AT: usize = 400;
    let irc = passerelle_testkit::servers::Inspircd::start();
    let mut pg = Postgres::start(true);
    let url = pg.create_database("cluster");
    let (mut cluster, bob) = start_cluster(&url, irc.port).await;
    let collector = collect(bob, MESSAGES, Arc::default());
    post_all(cluster.api_port, MESSAGES, async |i| {
        if i == RESTART_AT {
            pg.stop();
            tokio::time::sleep(Duration::from_secs(5)).await;
            pg.start_again();
        }
    })
    .await;
    let lines = texts(&collector.await.unwrap());
    common::check_stream(&lines, &want(MESSAGES), 1);
    for d in &mut cluster.daemons {
        d.stop();
    }
}

/// Six accounts (three IRC, three API, each pair linked), nothing pinned, three instances: the
/// accounts spread two to an instance, every link carries its messages whichever instances run
/// its two ends, and once one instance is killed its two accounts spread over the survivors
/// (three each) and every link carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpinned_accounts_spread_evenly_and_again_after_a_death() {
    const EACH: usize = 30;
    let irc = passerelle_testkit::servers::Inspircd::start();
    let (url, _pg) = Postgres::shared_database();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("database-url"), &url).unwrap();
    std::fs::write(secrets.path().join("outbox-key"), "24".repeat(32)).unwrap();
    let api_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut accounts = String::new();
    for (i, port) in api_ports.iter().enumerate() {
        accounts.push_str(&format!(
            "[accounts.\"irc.{i}\"]\nkind = \"irc\"\nserver = \"127.0.0.1\"\nport = {}\ntls = false\n\
             nick = \"br{i}\"\nsend_rate_per_second = 0\n\n\
             [accounts.\"api.{i}\"]\nkind = \"api\"\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n\
             rights = [\"read\", \"write\"]\n\n\
             [[links]]\nname = \"s{i}\"\nrooms = [\n  {{ account = \"api.{i}\", room = \"lobby\" }},\n  \
             {{ account = \"irc.{i}\", room = \"#s{i}\" }},\n]\n\n",
            irc.port
        ));
    }
    let dirs: Vec<tempfile::TempDir> = NAMES.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let admins: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
    let mut daemons: Vec<Daemon> = NAMES
        .iter()
        .zip(&dirs)
        .zip(&admins)
        .map(|((name, dir), admin)| {
            let config = format!(
                "[general]\nshutdown_grace_secs = 5\n\n[store]\npath = \"{data}/passerelle.db\"\n\
                 url_file = \"{s}/database-url\"\noutbox_key_file = \"{s}/outbox-key\"\n\n\
                 [http]\nlisten = \"127.0.0.1:{admin}\"\n\n[cluster]\nenabled = true\n\
                 instance = \"{name}\"\nlease_secs = {LEASE_SECS}\n\n{accounts}",
                data = dir.path().join("data").display(),
                s = secrets.path().display(),
            );
            Daemon::start(dir.path(), &config, *admin)
        })
        .collect();
    let ids: Vec<String> = (0..3)
        .flat_map(|i| [format!("irc.{i}"), format!("api.{i}")])
        .collect();
    // Which instance runs each account, once every account is connected at some live instance
    // and the live ones run `per` each.
    let spread = async |live: &[usize], per: usize| -> std::collections::BTreeMap<String, usize> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut at = std::collections::BTreeMap::new();
            for &i in live {
                if let Some(body) = readyz(admins[i]).await {
                    for id in &ids {
                        if body["accounts"][id] == "connected" {
                            at.insert(id.clone(), i);
                        }
                    }
                }
            }
            let even = live
                .iter()
                .all(|i| at.values().filter(|v| *v == i).count() == per);
            if at.len() == ids.len() && even {
                return at;
            }
            assert!(Instant::now() < deadline, "not spread {per} each: {at:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    for i in 0..3 {
        bob.join(&format!("#s{i}")).await;
    }
    let first = spread(&[0, 1, 2], 2).await;
    // Every link, whichever instances run its ends: EACH messages per link, in order.
    let round = async |bob: &mut IrcClient, tag: &str| {
        for n in 0..EACH {
            for (i, port) in api_ports.iter().enumerate() {
                let api = Api::new(*port, TOKEN);
                let body = serde_json::json!({"text": format!("{tag} {i} {n:03}"), "username": "s", "gateway": "lobby"});
                let mut tries = 0;
                while api.try_post(&body).await != Some(200) {
                    tries += 1;
                    assert!(tries < 300, "api.{i} did not take message {n} within 30 s");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Lines of an earlier round are repeats (a kill may resend what its victim had sent
        // but not yet recorded): counted, not taken for this round's.
        let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut repeats = Vec::new();
        let prefix = format!("<s> {tag} ");
        while got.values().map(Vec::len).sum::<usize>() < 3 * EACH {
            let Some(m) = bob.next_message(Duration::from_secs(30)).await else {
                break;
            };
            if m.text.starts_with(&prefix) {
                got.entry(m.target).or_default().push(m.text);
            } else {
                repeats.push((m.target, m.text));
            }
        }
        for i in 0..3 {
            let want: Vec<String> = (0..EACH).map(|n| format!("<s> {tag} {i} {n:03}")).collect();
            assert_eq!(got.get(&format!("#s{i}")), Some(&want), "link s{i} ({tag})");
        }
        repeats
    };
    let repeats = round(&mut bob, "before").await;
    assert!(repeats.is_empty(), "{repeats:?}");
    let victim = first["irc.0"];
    daemons[victim].kill();
    let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let second = spread(&live, 3).await;
    let repeats = round(&mut bob, "after").await;
    // At most one repeat per IRC account the victim ran (one send in flight per room).
    let moved = first
        .iter()
        .filter(|(id, at)| id.starts_with("irc.") && **at == victim)
        .count();
    assert!(
        repeats.len() <= moved && repeats.iter().all(|(_, t)| t.starts_with("<s> before ")),
        "{} repeats for {moved} IRC accounts killed: {repeats:?}",
        repeats.len()
    );
    eprintln!(
        "cluster spread: {first:?} (instances by index {NAMES:?}); after killing {}: {second:?}; {} repeats",
        NAMES[victim],
        repeats.len()
    );
    for d in &mut daemons {
        d.stop();
    }
}

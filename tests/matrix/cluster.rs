//! Cluster mode with a Matrix bot account: its data directory (the session, matrix-sdk's
//! stores) moves with the lease. Two instances on one PostgreSQL; the Matrix account is pinned
//! to `a`, IRC to `b`. `a` is killed with SIGKILL once it has copied the directory; `b` takes the
//! account over on the same device (no second login) and the room goes on bridging both ways;
//! `a` started again gets the account back from `b` the same way, by a hand-over; killed and
//! started again before anyone else ran the account, `a` keeps its own directory.

use super::{BRIDGE, WAIT, from_bridge, irc_line};
use crate::common::{Daemon, free_port};
use passerelle_matrix::testing::client::MatrixUser;
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::postgres::Postgres;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const LEASE_SECS: u64 = 5;

#[allow(clippy::too_many_arguments)]
fn instance_config(
    dir: &Path,
    secrets: &Path,
    name: &str,
    admin: u16,
    irc: u16,
    hs: &str,
    room: &str,
) -> String {
    format!(
        r##"
{head}

[accounts.irc]
kind = "irc"
server = "127.0.0.1"
port = {irc}
tls = false
nick = "bridge"
send_rate_per_second = 0

[accounts.matrix]
kind = "matrix"
mode = "bot"
homeserver = "{hs}"
user = "{BRIDGE}"
password = "bridge-pw"

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc", room = "#m" }},
  {{ account = "matrix", room = "{room}" }},
]
"##,
        head = crate::common::cluster_head(
            dir,
            secrets,
            name,
            admin,
            LEASE_SECS,
            r#""matrix" = "a", "irc" = "b""#
        ),
    )
}

/// The bridge user's devices, as Synapse's admin API lists them.
async fn devices(admin: &MatrixUser) -> Vec<String> {
    let (status, body) = admin
        .call(
            reqwest::Method::GET,
            &format!("/_synapse/admin/v2/users/{BRIDGE}/devices"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// Whether the instance at `admin` reports `account` connected.
async fn connected(admin: u16, account: &str) -> bool {
    let Ok(r) = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return false;
    };
    r.json::<serde_json::Value>()
        .await
        .is_ok_and(|b| b["accounts"][account] == "connected")
}

async fn wait_connected(admin: u16, account: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if connected(admin, account).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The size of the kept copy of `account`'s directory, once one was written.
async fn kept_copy(url: &str, account: &str) -> Option<i32> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    let task = tokio::spawn(connection);
    let row = client
        .query_opt(
            "SELECT length(sealed) FROM account_files WHERE account = $1",
            &[&account],
        )
        .await
        .ok()
        .flatten();
    drop(client);
    let _ = task.await;
    row.map(|r| r.get(0))
}

/// Whether the kept copy of `account`'s directory was written under the lease it has now.
async fn copied_under_current_lease(url: &str, account: &str) -> bool {
    let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return false;
    };
    let task = tokio::spawn(connection);
    let same = client
        .query_opt(
            "SELECT 1 FROM account_files f JOIN leases l USING (account)
              WHERE f.account = $1 AND f.epoch = l.epoch",
            &[&account],
        )
        .await
        .ok()
        .flatten()
        .is_some();
    drop(client);
    let _ = task.await;
    same
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_account_keeps_its_device_when_its_lease_moves_to_another_instance() {
    let (url, _pg) = Postgres::shared_database();
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    hs.register("root", "root-pw", true);
    let root = MatrixUser::login(&hs.url(), "root", "root-pw").await;
    let irc = passerelle_testkit::servers::Ngircd::start();
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice.create_room(json!({"invite": [BRIDGE]})).await;
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    bob.join("#m").await;

    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("database-url"), &url).unwrap();
    std::fs::write(secrets.path().join("outbox-key"), "5c".repeat(32)).unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let admins = [free_port(), free_port()];
    let mut daemons: Vec<Daemon> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let config = instance_config(
                dirs[i].path(),
                secrets.path(),
                name,
                admins[i],
                irc.port,
                &hs.url(),
                &room,
            );
            Daemon::start(dirs[i].path(), &config, admins[i])
        })
        .collect();
    assert!(
        wait_connected(admins[0], "matrix", Duration::from_secs(90)).await,
        "matrix connected at a; logs:\n{}",
        daemons[0].logs()
    );
    assert!(wait_connected(admins[1], "irc", Duration::from_secs(60)).await);
    alice.wait_member(&room, BRIDGE, WAIT).await;
    alice.say(&room, "before the move").await;
    irc_line(&mut bob, "before the move").await;
    // The bridge user's devices: registering it made one, a's login another.
    let before = devices(&root).await;

    // a copies the account's directory (its session and stores) within a copy interval.
    let deadline = Instant::now() + Duration::from_secs(60);
    let size = loop {
        if let Some(size) = kept_copy(&url, "matrix").await {
            break size;
        }
        assert!(
            Instant::now() < deadline,
            "no copy of the directory kept in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(size > 1_000, "the copy holds the stores ({size} bytes)");
    eprintln!("the directory's copy: {size} bytes sealed");

    daemons[0].kill();
    let killed = Instant::now();
    assert!(
        wait_connected(admins[1], "matrix", Duration::from_secs(60)).await,
        "matrix taken over by b; logs:\n{}",
        daemons[1].logs()
    );
    eprintln!(
        "matrix back at b {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        devices(&root).await,
        before,
        "b runs the account on a's device, with no second login"
    );
    let logs = daemons[1].logs();
    assert!(
        logs.contains("the account's directory is in place"),
        "b restored the copy; logs:\n{logs}"
    );
    alice.say(&room, "after the move").await;
    irc_line(&mut bob, "after the move").await;
    bob.say("#m", "bob answers after the move").await;
    from_bridge(&mut alice, &room, "bob answers after the move").await;

    // a comes back: b gives the pinned account back (its last copy made under the lease it
    // still holds), and a puts b's copy in place of its own older one.
    daemons[0].start_again();
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !connected(admins[0], "matrix").await || connected(admins[1], "matrix").await {
        assert!(
            Instant::now() < deadline,
            "matrix back at a; logs:\n{}",
            daemons[0].logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "matrix handed back to a {:.1} s after its start",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(
        devices(&root).await,
        before,
        "a handed back the same device"
    );
    alice.say(&room, "handed back").await;
    irc_line(&mut bob, "handed back").await;
    bob.say("#m", "bob after the hand-back").await;
    from_bridge(&mut alice, &room, "bob after the hand-back").await;

    // a copies the directory it now runs (under its new lease), dies, and comes back before
    // anyone else ran the account: its own directory is as new as that copy, or newer, and is
    // kept rather than replaced by the copy.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !copied_under_current_lease(&url, "matrix").await {
        assert!(
            Instant::now() < deadline,
            "a kept no copy under its lease in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemons[0].kill();
    daemons[0].start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !connected(admins[0], "matrix").await {
        assert!(
            Instant::now() < deadline,
            "matrix back at a after its restart; logs:\n{}",
            daemons[0].logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !connected(admins[1], "matrix").await,
        "b does not run the account pinned to a, alive again"
    );
    let logs = daemons[0].logs();
    assert!(
        logs.contains("the account's directory here is as new as its copy; kept"),
        "a kept its own directory; logs:\n{logs}"
    );
    assert_eq!(
        devices(&root).await,
        before,
        "a restarted on the same device"
    );
    alice.say(&room, "after the restart").await;
    irc_line(&mut bob, "after the restart").await;
    for d in &mut daemons {
        d.stop();
    }
}

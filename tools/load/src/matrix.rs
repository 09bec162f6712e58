//! Matrix → IRC: a Matrix user's messages in a room that the daemon (a Matrix bot account) bridges
//! into an IRC channel; direct baseline: the same user's messages read by another Matrix user of
//! the same homeserver (the source side's own limit: every message is one client-server request
//! and one `/sync` away on both paths).

use crate::daemon::Daemon;
use crate::irc;
use crate::tally::{self, Arrival, Figures};
use crate::{Load, measure_with, next_message, report, run_id};
use anyhow::{Result, bail};
use passerelle_matrix::testing::client::MatrixUser;
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_testkit::free_port;
use passerelle_testkit::servers::Inspircd;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BRIDGE: &str = "@bridge:hs.passerelle.test";

fn config(dir: &std::path::Path, admin: u16, hs: &str, irc: u16, room: &str) -> String {
    format!(
        r##"{head}
[accounts.matrix]
kind = "matrix"
mode = "bot"
homeserver = "{hs}"
user = "{BRIDGE}"
password = "bridge-pw"

[accounts."irc.out"]
kind = "irc"
server = "127.0.0.1"
port = {irc}
tls = false
nick = "pout"
send_rate_per_second = 0.0

[[links]]
name = "matrix"
rooms = [
  {{ account = "matrix", room = "{room}", direction = "in" }},
  {{ account = "irc.out", room = "#load-out", direction = "out" }},
]
"##,
        head = crate::daemon::base_config(dir, admin, ""),
    )
}

/// Sends the tagged messages into `room` one request after another (each answered once the
/// homeserver stored the event), paced or as fast as answers come.
async fn send(
    user: &mut MatrixUser,
    room: &str,
    run: u32,
    load: &Load,
    clock: Instant,
) -> Result<(u64, Box<dyn std::any::Any + Send>)> {
    let filler = "x".repeat(load.pad);
    let mut first = None;
    for seq in 0..load.messages {
        let (sent, text) = next_message(load, run, seq, clock, &filler).await;
        first.get_or_insert(sent);
        user.say(room, &text).await;
    }
    Ok((first.unwrap_or(0), Box::new(())))
}

/// Reads `room`'s timeline by `/sync` until `count` distinct messages of run `run` arrived, or for
/// as long as `until` allows.
pub async fn receive(
    mut user: MatrixUser,
    room: String,
    run: u32,
    count: u64,
    clock: Instant,
    until: irc::Until,
) -> Result<Vec<Arrival>> {
    let mut log = tally::Log::new(count);
    let mut last_arrival = Instant::now();
    while log.distinct < count {
        let now = Instant::now();
        if now >= until.deadline {
            break;
        }
        if *until.sending_done.borrow() && now.duration_since(last_arrival) >= until.idle {
            break;
        }
        let wait = Duration::from_millis(200).min(until.deadline - now);
        let Some(event) = user
            .next_matching(wait, |e| e.room == room && e.kind() == "m.room.message")
            .await
        else {
            continue;
        };
        let recv_us = clock.elapsed().as_micros() as u64;
        if log.record(run, event.body(), recv_us).is_some() {
            last_arrival = Instant::now();
        }
    }
    Ok(log.arrivals)
}

/// The scenario.
pub async fn matrix_to_irc(load: Load) -> Result<()> {
    if load.store != [crate::daemon::StoreKind::Sqlite] {
        anyhow::bail!("--store applies to the irc and api scenarios");
    }
    let binary = crate::daemon::binary(load.daemon.clone())?;
    let hs = Synapse::start(&[]);
    for name in ["bridge", "alice", "bob"] {
        hs.register(name, &format!("{name}-pw"), false);
    }
    let server = Inspircd::start();
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let mut bob = MatrixUser::login(&hs.url(), "bob", "bob-pw").await;
    // A burst between two syncs is seen whole.
    bob.set_timeline_limit(1000);
    let base_room = alice
        .create_room(json!({"invite": ["@bob:hs.passerelle.test"]}))
        .await;
    bob.join(&base_room).await;
    let bridged_room = alice.create_room(json!({"invite": [BRIDGE]})).await;

    let temp = tempfile::tempdir()?;
    let dir = load.keep.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let admin = free_port();
    let mut daemon = Daemon::start(
        &binary,
        &dir,
        &config(&dir, admin, &hs.url(), server.port, &bridged_room),
        admin,
    )?;
    daemon
        .wait_for(
            "/readyz",
            Duration::from_millis(50),
            Duration::from_secs(60),
        )
        .await?;
    // The bot joins on invite.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !alice
        .members(&bridged_room)
        .await
        .iter()
        .any(|m| m == BRIDGE)
    {
        if Instant::now() >= deadline {
            bail!(
                "the daemon's Matrix bot never joined the room; its log is in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Direct: alice → Synapse → bob.
    let run = run_id();
    let messages = load.messages;
    let direct = if load.no_direct {
        Figures::default()
    } else {
        let clock = Instant::now();
        let room = base_room.clone();
        measure_with(
            &load,
            run,
            move |until| tokio::spawn(receive(bob, room, run, messages, clock, until)),
            send(&mut alice, &base_room, run, &load, clock),
        )
        .await?
    };

    // Through passerelle: alice → Synapse → daemon → InspIRCd → an IRC client.
    let run = run.wrapping_add(1);
    let b = irc::Client::join(server.port, "db", "#load-out").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = daemon.rss_kib();
    let clock = Instant::now();
    let quickack = load.quickack;
    let bridged = measure_with(
        &load,
        run,
        move |until| {
            tokio::spawn(b.receive(
                run,
                messages,
                clock,
                until,
                Arc::new(irc::Progress::default()),
                quickack,
            ))
        },
        send(&mut alice, &bridged_room, run, &load, clock),
    )
    .await?;
    let peak_rss = daemon.peak_rss_kib();
    let clean = daemon.stop();
    drop(hs);

    report(
        ("matrix->irc", "sqlite"),
        &load,
        None,
        &direct,
        &bridged,
        (idle_rss, peak_rss),
        clean,
    );
    if load.keep.is_none() {
        drop(temp);
    }
    Ok(())
}

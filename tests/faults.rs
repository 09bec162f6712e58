//! Fault injection with the real binary and a real ngIRCd: SIGKILL at random points while numbered
//! messages flow, and counts of what was lost, repeated and reordered at the destination.
//!
//! Two flows run at once into one IRC channel (`#dst`), so both share the daemon's fate:
//! - **API → IRC**: a client posts `a 00000`, `a 00001`, … to the HTTP message API, sending each
//!   again until it is acknowledged (an acknowledgement means the event is stored). Nothing
//!   acknowledged may be lost.
//! - **IRC → IRC**: alice says `b 00000`, … in `#src`. She pauses while the daemon is down, as a
//!   person would see the bridge gone; IRC has no redelivery, so a line the server had already
//!   passed to the killed process and that was not yet stored is gone with it (at most the few in
//!   flight at each kill).
//!
//! IRC has no idempotency key, so a message delivered to the server just before a kill, and not yet
//! recorded as delivered, is sent again on restart: at most one per kill.
//!
//! ngIRCd relays at most 3 lines a second from each client (hard-coded), so the test keeps to that:
//! alice says 2 lines a second; the API posts 5 a second and the bridge's backlog for `#dst` grows,
//! which is what the kills should hit. The bridge sends without its own rate limit, so at a kill the
//! server still holds lines the killed connection wrote: the next connection must not overtake
//! them (it waits for the old nick to go, `reclaim_nick_secs`).
//!
//! The default run is short (60 messages a flow, 5 kills); `PASSERELLE_FAULT_MESSAGES=N` runs
//! longer, and `PASSERELLE_FAULT_IRC=inspircd` takes InspIRCd with its flood control off for the
//! 10,000-message runs (see docs/reliability.md). `PASSERELLE_FAULT_SEED` repeats a run. The same
//! kills run with a Matrix room as the destination.
//!
//! Also here: a 30-second homeserver outage, and a hung IRC server beside a flowing link with the
//! daemon's memory measured.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_testkit::irc_client::{IrcClient, Received};
use passerelle_testkit::servers::Ngircd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TOKEN: &str = "faults-token-0123456789abcdef";
const KILLS: usize = 5;

/// The daemon's own sections: a short shutdown grace, the store in `dir`, the admin listener.
fn daemon_section(dir: &std::path::Path, admin: u16) -> String {
    format!(
        "[general]\nshutdown_grace_secs = 2\n\n[store]\npath = \"{}/passerelle.db\"\n\n\
         [http]\nlisten = \"127.0.0.1:{admin}\"\n",
        dir.join("data").display()
    )
}

/// An IRC account `name` on 127.0.0.1:`port`, without its own rate limit; `extra` adds keys.
fn irc_account(name: &str, port: u16, extra: &str) -> String {
    format!(
        "\n[accounts.\"{name}\"]\nkind = \"irc\"\nserver = \"127.0.0.1\"\nport = {port}\n\
         tls = false\nnick = \"bridge\"\nsend_rate_per_second = 0.0\n{extra}"
    )
}

/// The HTTP message API as account `api.main` on `port`.
fn api_account(port: u16) -> String {
    format!(
        "\n[accounts.\"api.main\"]\nkind = \"api\"\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n"
    )
}

/// A Matrix account `matrix` in bot mode, as `@bridge:hs.passerelle.test`.
fn matrix_account(homeserver: &str) -> String {
    format!(
        "\n[accounts.matrix]\nkind = \"matrix\"\nmode = \"bot\"\nhomeserver = \"{homeserver}\"\n\
         user = \"@bridge:hs.passerelle.test\"\npassword = \"bridge-pw\"\n"
    )
}

/// A link that carries messages one way only, from (account, room) to (account, room).
fn one_way(name: &str, from: (&str, &str), to: (&str, &str)) -> String {
    format!(
        "\n[[links]]\nname = \"{name}\"\nrooms = [\n  \
         {{ account = \"{}\", room = \"{}\", direction = \"in\" }},\n  \
         {{ account = \"{}\", room = \"{}\", direction = \"out\" }},\n]\n",
        from.0, from.1, to.0, to.1
    )
}

/// The crash test's set-up: the API and `#src` both lead one way to `dest` (an account and room).
fn crash_config(
    dir: &std::path::Path,
    admin: u16,
    irc_port: u16,
    api_port: u16,
    dest: (&str, &str),
) -> String {
    daemon_section(dir, admin)
        + &*irc_account(
            "irc.main",
            irc_port,
            "ping_interval_secs = 5\ndead_link_secs = 15\n",
        )
        + &*api_account(api_port)
        + &*one_way("from-api", ("api.main", "lobby"), dest)
        + &*one_way("from-irc", ("irc.main", "#src"), dest)
}

/// A small deterministic generator (xorshift), so a failing run can be repeated with its seed.
struct Rng(u64);

impl Rng {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low).max(1)
    }
}

/// Lost, repeated and reordered messages of one flow, from the numbers seen in arrival order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    received: usize,
    lost: usize,
    duplicated: usize,
    reordered: usize,
}

fn count(seen: &[usize], sent: usize) -> Counts {
    let mut times = vec![0usize; sent];
    let mut highest: Option<usize> = None;
    let mut reordered = 0;
    for &n in seen {
        if let Some(t) = times.get_mut(n) {
            *t += 1;
        }
        match highest {
            // A repeat of an earlier message is a duplicate, not a reordering; a first arrival
            // below one already seen is out of order.
            Some(h) if n < h && times.get(n) == Some(&1) => reordered += 1,
            _ => highest = Some(highest.map_or(n, |h| h.max(n))),
        }
    }
    Counts {
        received: seen.len(),
        lost: times.iter().filter(|&&t| t == 0).count(),
        duplicated: times.iter().map(|&t| t.saturating_sub(1)).sum(),
        reordered,
    }
}

fn numbers(got: &[Received], prefix: &str) -> Vec<usize> {
    got.iter()
        .filter_map(|m| {
            m.text
                .split_once("> ")?
                .1
                .strip_prefix(prefix)?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn counting_finds_losses_repeats_and_reorderings() {
    assert_eq!(
        count(&[0, 1, 2, 3], 4),
        Counts {
            received: 4,
            ..Counts::default()
        }
    );
    assert_eq!(
        count(&[0, 2, 1, 1, 3], 5),
        Counts {
            received: 5,
            lost: 1,
            duplicated: 1,
            reordered: 1,
        }
    );
    // A message sent again after a restart, right after itself, is a duplicate only.
    assert_eq!(count(&[0, 1, 1, 2], 3).reordered, 0);
    assert_eq!(count(&[0, 1, 1, 2], 3).duplicated, 1);
}

/// How fast the flows go: under what the IRC server relays from one client.
#[derive(Clone, Copy)]
struct Pace {
    post_every: Duration,
    say_every: Duration,
}

impl Pace {
    /// ngIRCd relays 3 lines a second from a client: alice says 2, the API posts 5 (the bridge's
    /// backlog grows, which is what the kills should hit).
    const NGIRCD: Pace = Pace {
        post_every: Duration::from_millis(200),
        say_every: Duration::from_millis(500),
    };
    /// InspIRCd with its flood control off: 100 lines a second a flow.
    const INSPIRCD: Pace = Pace {
        post_every: Duration::from_millis(10),
        say_every: Duration::from_millis(10),
    };
}

/// The IRC server of the crash test: ngIRCd, or InspIRCd with `PASSERELLE_FAULT_IRC=inspircd`
/// (for long runs; ngIRCd's flood control would make 10,000 lines take an hour).
enum IrcServer {
    Ngircd(Ngircd),
    Inspircd(passerelle_testkit::servers::Inspircd),
}

impl IrcServer {
    fn from_env() -> Self {
        match std::env::var("PASSERELLE_FAULT_IRC").as_deref() {
            Ok("inspircd") => Self::Inspircd(passerelle_testkit::servers::Inspircd::start()),
            _ => Self::Ngircd(Ngircd::start()),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Self::Ngircd(s) => s.port,
            Self::Inspircd(s) => s.port,
        }
    }

    fn pace(&self) -> Pace {
        match self {
            Self::Ngircd(_) => Pace::NGIRCD,
            Self::Inspircd(_) => Pace::INSPIRCD,
        }
    }
}

/// The run's size and seed: `PASSERELLE_FAULT_MESSAGES` (default 60 a flow) and
/// `PASSERELLE_FAULT_SEED` (default: from the clock, printed).
fn run_parameters(name: &str) -> (usize, Rng, u64) {
    let per_flow: usize = std::env::var("PASSERELLE_FAULT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("PASSERELLE_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("{name}: {per_flow} messages a flow, {KILLS} kills, seed {seed}");
    (per_flow, Rng(seed), seed)
}

/// Posts `a 00000`, … to gateway `lobby`, 5 a second, each again until acknowledged. Returns how
/// many posts had to be sent again.
fn spawn_poster(api_port: u16, per_flow: usize, pace: Pace) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let api = Api::new(api_port, TOKEN);
        let mut resent = 0usize;
        for i in 0..per_flow {
            let body = serde_json::json!({"text": format!("a {i:05}"), "username": "s", "gateway": "lobby"});
            let mut tries = 0;
            // Sent again until acknowledged: the daemon may be down or starting.
            while !matches!(api.try_post(&body).await, Some(200)) {
                tries += 1;
                assert!(
                    tries < 600,
                    "message a {i} not acknowledged within a minute"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            resent += tries;
            tokio::time::sleep(pace.post_every).await;
        }
        resent
    })
}

/// alice says `b 00000`, … in `#src`, 2 lines a second, holding while `paused`.
fn spawn_speaker(
    mut alice: IrcClient,
    paused: Arc<AtomicBool>,
    per_flow: usize,
    pace: Pace,
) -> tokio::task::JoinHandle<IrcClient> {
    tokio::spawn(async move {
        for i in 0..per_flow {
            while paused.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            alice.say("#src", &format!("b {i:05}")).await;
            tokio::time::sleep(pace.say_every).await;
        }
        alice
    })
}

/// Runs both flows (the API poster and alice) while the daemon is killed at random points, until
/// both have sent everything. Returns the kill intervals and how many posts were sent again.
async fn run_flows(
    daemon: &mut Daemon,
    rng: &mut Rng,
    api_port: u16,
    alice: IrcClient,
    per_flow: usize,
    pace: Pace,
) -> (Vec<u64>, usize) {
    let paused = Arc::new(AtomicBool::new(false));
    let poster = spawn_poster(api_port, per_flow, pace);
    let speaker = spawn_speaker(alice, paused.clone(), per_flow, pace);
    let kill_at = kill_at_random(daemon, rng, &paused, per_flow, pace).await;
    let resent = poster.await.expect("poster");
    speaker.await.expect("speaker");
    (kill_at, resent)
}

/// Kills the daemon with SIGKILL [`KILLS`] times at random points spread over the flows' expected
/// length, and starts it again 0.1–1 s later; `paused` is set while it is down. Returns the
/// intervals.
async fn kill_at_random(
    daemon: &mut Daemon,
    rng: &mut Rng,
    paused: &AtomicBool,
    per_flow: usize,
    pace: Pace,
) -> Vec<u64> {
    let span = pace.say_every.as_millis() as u64 * per_flow as u64;
    let most = (span / (KILLS as u64 + 1)).max(2_000);
    let mut kill_at = Vec::new();
    for _ in 0..KILLS {
        let wait = rng.between(most / 4, most);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        paused.store(true, Ordering::SeqCst);
        daemon.kill();
        kill_at.push(wait);
        tokio::time::sleep(Duration::from_millis(rng.between(100, 1_000))).await;
        daemon.start_again();
        daemon.wait_ready(Duration::from_secs(60)).await;
        // Ready means the bridge is back in its channels; give the JOIN a moment to settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        paused.store(false, Ordering::SeqCst);
    }
    kill_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_acknowledged_and_reorders_nothing() {
    let (per_flow, mut rng, seed) = run_parameters("IRC destination");
    let irc = IrcServer::from_env();
    let pace = irc.pace();
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    let mut daemon = Daemon::start(
        dir.path(),
        &crash_config(
            dir.path(),
            admin,
            irc.port(),
            api_port,
            ("irc.main", "#dst"),
        ),
        admin,
    );
    daemon.wait_ready(Duration::from_secs(30)).await;

    let mut bob = IrcClient::connect(irc.port(), "bob").await;
    bob.join("#dst").await;
    let mut alice = IrcClient::connect(irc.port(), "alice").await;
    alice.join("#src").await;

    // Bob reads until both flows are complete, or nothing came for a while.
    let receiver = tokio::spawn(async move {
        let mut got: Vec<Received> = Vec::new();
        loop {
            let complete = |prefix: &str| {
                let mut distinct = numbers(&got, prefix);
                distinct.sort_unstable();
                distinct.dedup();
                distinct.len() >= per_flow
            };
            if complete("a ") && complete("b ") || got.len() > per_flow * 4 {
                break;
            }
            match bob.next_message(Duration::from_secs(45)).await {
                Some(m) => got.push(m),
                None => break,
            }
        }
        got
    });
    let (kill_at, resent) = run_flows(&mut daemon, &mut rng, api_port, alice, per_flow, pace).await;
    let got = receiver.await.expect("receiver");
    daemon.stop();

    let a = count(&numbers(&got, "a "), per_flow);
    let b = count(&numbers(&got, "b "), per_flow);
    eprintln!("kills after (ms): {kill_at:?}; API posts sent again while down: {resent}");
    eprintln!("API -> IRC: {a:?}");
    eprintln!("IRC -> IRC: {b:?}");
    if std::env::var_os("PASSERELLE_FAULT_VERBOSE").is_some() {
        eprintln!("a seen: {:?}", numbers(&got, "a "));
        eprintln!("b seen: {:?}", numbers(&got, "b "));
    }
    assert_eq!(
        daemon.logs().matches("panicked").count(),
        0,
        "the daemon panicked"
    );
    assert_eq!(
        a.lost, 0,
        "acknowledged API messages lost: {a:?} (seed {seed})"
    );
    assert_eq!(
        a.reordered, 0,
        "API messages reordered: {a:?} (seed {seed})"
    );
    assert_eq!(
        b.reordered, 0,
        "IRC messages reordered: {b:?} (seed {seed})"
    );
    // IRC gives no idempotency: at most one repeat per kill and destination room, and an API
    // client that sends again a post whose answer the kill cut off makes one more.
    assert!(
        a.duplicated + b.duplicated <= 2 * KILLS,
        "{a:?} {b:?} (seed {seed})"
    );
    // IRC gives no redelivery: only what was in flight at a kill can be gone.
    assert!(b.lost <= 3 * KILLS, "{b:?} (seed {seed})");
}

/// The same kills with a Matrix room (bot mode) as the destination of both flows. Matrix sends
/// carry transaction ids derived from the event key, so a send repeated after a kill is not shown
/// twice: no duplicates at all, whatever the timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_matrix_destination_repeats_nothing() {
    use passerelle_matrix::testing::client::{MatrixUser, SeenEvent};
    use passerelle_matrix::testing::synapse::Synapse;
    let (per_flow, mut rng, seed) = run_parameters("Matrix destination");
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let mut reader = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = reader
        .create_room(serde_json::json!({"invite": ["@bridge:hs.passerelle.test"]}))
        .await;
    let irc = IrcServer::from_env();
    let pace = irc.pace();
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    let config = crash_config(dir.path(), admin, irc.port(), api_port, ("matrix", &room))
        + &*matrix_account(&hs.url());
    let mut daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(60)).await;
    reader
        .wait_member(&room, "@bridge:hs.passerelle.test", Duration::from_secs(30))
        .await;
    let mut alice = IrcClient::connect(irc.port(), "alice").await;
    alice.join("#src").await;

    // The reader syncs all along, taking whole bursts (a sync gives only the latest events of a
    // room otherwise).
    reader.set_timeline_limit(1000);
    let reading = room.clone();
    let receiver = tokio::spawn(async move {
        let number = |e: &SeenEvent, prefix: &str| -> Option<usize> {
            (e.room == reading && e.sender() == "@bridge:hs.passerelle.test")
                .then(|| {
                    e.body()
                        .split_once("> ")?
                        .1
                        .strip_prefix(prefix)?
                        .parse()
                        .ok()
                })
                .flatten()
        };
        let (mut a_seen, mut b_seen) = (Vec::new(), Vec::new());
        let mut quiet = 0;
        // Until both flows are complete and nothing more came for 3 s, or 45 s of silence.
        while quiet < 45 && (a_seen.len() < per_flow || b_seen.len() < per_flow || quiet < 3) {
            let got = reader.drain(Duration::from_secs(1)).await;
            quiet = if got.is_empty() { quiet + 1 } else { 0 };
            for e in got {
                a_seen.extend(number(&e, "a "));
                b_seen.extend(number(&e, "b "));
            }
        }
        (a_seen, b_seen)
    });
    let (kill_at, resent) = run_flows(&mut daemon, &mut rng, api_port, alice, per_flow, pace).await;
    let (a_seen, b_seen) = receiver.await.expect("receiver");
    daemon.stop();
    let a = count(&a_seen, per_flow);
    let b = count(&b_seen, per_flow);
    eprintln!("kills after (ms): {kill_at:?}; API posts sent again while down: {resent}");
    eprintln!("API -> Matrix: {a:?}");
    eprintln!("IRC -> Matrix: {b:?}");
    assert_eq!(
        daemon.logs().matches("panicked").count(),
        0,
        "the daemon panicked"
    );
    assert_eq!(
        (a.lost, a.reordered),
        (0, 0),
        "API -> Matrix: {a:?} (seed {seed})"
    );
    assert_eq!(b.reordered, 0, "IRC -> Matrix: {b:?} (seed {seed})");
    // Only the API client's own resend of a post whose answer was cut off can repeat.
    assert!(a.duplicated <= KILLS, "API -> Matrix: {a:?} (seed {seed})");
    assert_eq!(
        b.duplicated, 0,
        "IRC -> Matrix repeated: {b:?} (seed {seed})"
    );
    assert!(b.lost <= 3 * KILLS, "{b:?} (seed {seed})");
}

/// API → Matrix (bot mode) while the homeserver is down for `PASSERELLE_OUTAGE_SECS` (default 30):
/// every message posted meanwhile is acknowledged (stored), and once the homeserver is back all of
/// them arrive once, in order. Matrix sends carry transaction ids, so a retried send never repeats.
#[tokio::test]
async fn a_homeserver_down_for_30_seconds_gets_everything_once_in_order_when_back() {
    use passerelle_matrix::testing::client::MatrixUser;
    use passerelle_matrix::testing::synapse::Synapse;
    let outage = Duration::from_secs(
        std::env::var("PASSERELLE_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    );
    let mut hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    // What arrives once the homeserver is back comes as one burst.
    alice.set_timeline_limit(1000);
    let room = alice
        .create_room(serde_json::json!({"invite": ["@bridge:hs.passerelle.test"]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    let config = daemon_section(dir.path(), admin)
        + &*api_account(api_port)
        + &*matrix_account(&hs.url())
        + &*one_way("lobby", ("api.main", "lobby"), ("matrix", &room));
    let mut daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(60)).await;
    alice
        .wait_member(&room, "@bridge:hs.passerelle.test", Duration::from_secs(30))
        .await;
    let api = Api::new(api_port, TOKEN);
    let post = |i: usize| serde_json::json!({"text": format!("o {i:03}"), "username": "s", "gateway": "lobby"});
    const BEFORE: usize = 5;
    const DURING: usize = 30;
    for i in 0..BEFORE {
        assert_eq!(api.try_post(&post(i)).await, Some(200));
    }
    let mut seen: Vec<usize> = Vec::new();
    let number = |e: &passerelle_matrix::testing::client::SeenEvent| -> Option<usize> {
        (e.sender() == "@bridge:hs.passerelle.test")
            .then(|| e.body().strip_prefix("<s> o ")?.parse().ok())
            .flatten()
    };
    while seen.len() < BEFORE {
        let e = alice
            .next_matching(Duration::from_secs(30), |e| number(e).is_some())
            .await
            .expect("messages before the outage");
        seen.extend(number(&e));
    }

    hs.stop();
    let down = std::time::Instant::now();
    for i in BEFORE..BEFORE + DURING {
        assert_eq!(
            api.try_post(&post(i)).await,
            Some(200),
            "not acknowledged while the homeserver is down"
        );
        tokio::time::sleep(outage / DURING as u32).await;
    }
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    hs.restart();
    let back = std::time::Instant::now();
    while seen.len() < BEFORE + DURING {
        let Some(e) = alice
            .next_matching(Duration::from_secs(120), |e| number(e).is_some())
            .await
        else {
            break;
        };
        seen.extend(number(&e));
    }
    let caught_up = back.elapsed();
    // Anything repeated would come right behind.
    for e in alice.drain(Duration::from_secs(3)).await {
        seen.extend(number(&e));
    }
    let counts = count(&seen, BEFORE + DURING);
    eprintln!(
        "outage of {:?}: {} posted during it; all delivered {:?} after the homeserver was back; {counts:?}",
        outage, DURING, caught_up
    );
    daemon.stop();
    assert_eq!(
        counts,
        Counts {
            received: BEFORE + DURING,
            ..Counts::default()
        },
        "seen: {seen:?}"
    );
}

/// One destination hangs (its IRC server is frozen with SIGSTOP) while 10,000 messages of 4 KiB
/// are queued for it: the other link keeps flowing at once, every post is still acknowledged, and
/// the daemon's memory stays bounded (the backlog lives in the store, not in memory).
#[tokio::test]
async fn a_hung_destination_holds_only_its_own_rooms_and_memory_stays_bounded() {
    let stalled = Ngircd::start();
    let flowing = Ngircd::start();
    let dir = tempfile::tempdir().unwrap();
    let (admin, api_port) = (free_port(), free_port());
    let config = daemon_section(dir.path(), admin)
        + &*irc_account("irc.stalled", stalled.port, "")
        + &*irc_account("irc.flowing", flowing.port, "")
        + &*api_account(api_port)
        + &*one_way(
            "to-stalled",
            ("api.main", "heavy"),
            ("irc.stalled", "#slow"),
        )
        + &*one_way(
            "to-flowing",
            ("api.main", "light"),
            ("irc.flowing", "#fast"),
        );
    let mut daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let mut bob = IrcClient::connect(flowing.port, "bob").await;
    bob.join("#fast").await;
    let api = Api::new(api_port, TOKEN);

    stalled.pause();
    let before = daemon.rss_kib().expect("daemon memory");
    const HEAVY: usize = 10_000;
    let text = "x".repeat(4096);
    let started = std::time::Instant::now();
    for i in 0..HEAVY {
        let body = serde_json::json!({"text": format!("{i:05} {text}"), "username": "s", "gateway": "heavy"});
        assert_eq!(api.try_post(&body).await, Some(200), "post {i}");
    }
    let posting = started.elapsed();
    // The other link is not held up by the hung one.
    for i in 0..3 {
        let body =
            serde_json::json!({"text": format!("light {i}"), "username": "s", "gateway": "light"});
        assert_eq!(api.try_post(&body).await, Some(200));
    }
    let sent = std::time::Instant::now();
    for i in 0..3 {
        let m = bob
            .next_message(Duration::from_secs(20))
            .await
            .expect("the flowing link delivers while the other hangs");
        assert_eq!(m.text, format!("<s> light {i}"));
    }
    let light_latency = sent.elapsed();
    let after = daemon.rss_kib().expect("daemon memory");
    let m = daemon.metrics().await;
    let queued = common::metric(&m, "passerelle_queue_depth", &["irc.stalled"]);
    eprintln!(
        "hung destination: {HEAVY} posts of 4 KiB acknowledged in {posting:?}; {queued} queued; \
         RSS {before} KiB -> {after} KiB; the other link delivered 3 in {light_latency:?}"
    );
    // Some rows left the outbox before the kernel's socket buffers towards the frozen server
    // filled up (a write is a delivery to IRC); most must be waiting.
    assert!(
        queued >= (HEAVY / 2) as f64,
        "the backlog is not queued:\n{m}"
    );
    // 10,000 × 4 KiB is 40 MiB of text: memory grows by far less than that.
    assert!(
        after.saturating_sub(before) < 20 * 1024,
        "memory grew from {before} KiB to {after} KiB with the backlog"
    );
    drop(stalled); // killed while frozen: its connections reset
    assert_eq!(daemon.stop(), Some(0), "clean stop with a backlog");
}

//! `passerelle-load`: measures passerelle with real clients against real local servers.
//!
//! Each scenario starts its own servers on loopback (InspIRCd with its flood limits off, from the
//! testkit), starts the real daemon between them, and sends tagged messages through two paths in
//! the same run: **direct** (client A → server → client B, the machine's physical limit for that
//! path) and **passerelle** (client A → server → daemon → server → client B). It prints one line:
//! delivered, lost, duplicated, reordered, throughput and latency of both paths, their ratio, and
//! the daemon's resident memory (idle before the run, peak after it). Everything talks to
//! 127.0.0.1 only and stops by itself. `docs/performance.md` has the commands and the figures.

mod accounts;
mod daemon;
mod irc;
mod matrix;
mod tally;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use daemon::{Daemon, mib};
use passerelle_testkit::free_port;
use passerelle_testkit::servers::Inspircd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally::Figures;

#[derive(Parser)]
#[command(version, about = "Load tool for passerelle (loopback only)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// IRC → IRC: a raw client's lines in one channel, bridged by the daemon into another channel
    /// of the same server; direct baseline: the same clients in one channel.
    Irc(Load),
    /// HTTP API → IRC: posts to the message API, bridged into an IRC channel; direct baseline:
    /// IRC → IRC in one channel (the destination side's own limit).
    Api(Load),
    /// Matrix → IRC: a Matrix user's messages, bridged by the daemon's Matrix bot into an IRC
    /// channel; direct baseline: the same user's messages read by another Matrix user (Synapse
    /// from the testkit's Python venv). `--window` does not apply: each message is one request.
    Matrix(Load),
    /// IRC → out-of-process connector → IRC: a raw client's lines bridged by the daemon to a
    /// program (`tools/load/relay.py`, `kind = "process"`) that emits each back, then into an IRC
    /// channel; baseline: the same lines bridged IRC → IRC by in-process connectors alone.
    Process(Load),
    /// What each account costs: resident memory and idle CPU with 2 accounts and with
    /// `--pairs` IRC and as many API accounts, all connected (InspIRCd).
    Accounts(accounts::Accounts),
    /// Start-up to ready and idle memory on a configuration (the example by default), started
    /// `--runs` times, each on a new store and again on the store it left.
    Startup(Startup),
}

#[derive(Args, Clone)]
struct Load {
    /// How many messages each path carries.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Messages a second; without it, a burst (as fast as the sending socket takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// In a burst, at most this many messages on their way (sent, not yet arrived); 0: no limit.
    /// InspIRCd 3 handles a client's backlog in time quadratic in its size (it erases each line
    /// from the front of its receive queue), so an unbounded burst measures that, not the path.
    #[arg(long, default_value_t = 1000)]
    window: u64,
    /// The receiving clients (of both paths) acknowledge every read at once (`TCP_QUICKACK`).
    /// Without it they are ordinary clients: Linux delays their ACKs up to 40 ms, and InspIRCd,
    /// which writes with Nagle's algorithm on, holds the next lines until that ACK comes.
    #[arg(long)]
    quickack: bool,
    /// Skip the direct path (when profiling the daemon).
    #[arg(long)]
    no_direct: bool,
    /// Filler bytes after each message's tag.
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Give up on a path after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Stop waiting once sending is done and nothing arrived for this many seconds.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// `api` only: meanwhile, post this many replies a second whose parent the daemon never saw
    /// (as a Telegram topic's messages name a service message, or anyone's reaction to a message
    /// never bridged), to the same gateway; they reach IRC too, untagged.
    #[arg(long)]
    orphan_replies: Option<f64>,
    /// The `passerelle` binary (default: the one beside this tool).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// `irc` and `api`: the store(s) the daemon keeps, each measured in turn beside the one
    /// direct run (`--store sqlite,postgres`).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [daemon::StoreKind::Sqlite])]
    store: Vec<daemon::StoreKind>,
    /// Keep the daemon's log and config in this directory (default: a temporary one), with every
    /// arrival of each path (`arrivals-<run>.txt`: sequence number, µs sent, µs received).
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[derive(Args)]
struct Startup {
    /// The configuration to start on. Its listen addresses are moved to free ports and its store
    /// into a temporary directory.
    #[arg(long, default_value = "config.example.toml")]
    config: PathBuf,
    /// How many times.
    #[arg(long, default_value_t = 10)]
    runs: u32,
    /// Seconds to stay idle before reading memory.
    #[arg(long, default_value_t = 2)]
    idle_secs: u64,
    /// The `passerelle` binary (default: the one beside this tool).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Irc(load) => irc_to_irc(load, Source::Irc).await,
        Scenario::Api(load) => irc_to_irc(load, Source::Api).await,
        Scenario::Process(load) => irc_to_irc(load, Source::Process).await,
        Scenario::Matrix(load) => matrix::matrix_to_irc(load).await,
        Scenario::Startup(s) => startup(s).await,
        Scenario::Accounts(a) => accounts::accounts(a).await,
    };
    if let Err(e) = result {
        eprintln!("passerelle-load: {e:#}");
        std::process::exit(1);
    }
}

const TOKEN: &str = "passerelle-load-token";

/// Where a scenario's bridged messages come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An IRC channel.
    Irc,
    /// The HTTP message API.
    Api,
    /// An IRC channel, through the relay program and back.
    Process,
}

/// The relay program's account and its links: `#load-pin` → the program's room `in`; its room
/// `out` → `#load-out`.
fn relay_config() -> String {
    let relay = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.py");
    format!(
        r##"
[accounts."proc.relay"]
kind = "process"
command = ["python3", "{relay}"]
capabilities = ["per_message_identity"]

[[links]]
name = "proc-in"
rooms = [
  {{ account = "irc.in", room = "#load-pin", direction = "in" }},
  {{ account = "proc.relay", room = "in", direction = "out" }},
]

[[links]]
name = "proc-out"
rooms = [
  {{ account = "proc.relay", room = "out", direction = "in" }},
  {{ account = "irc.out", room = "#load-out", direction = "out" }},
]
"##
    )
}

/// The daemon's config: two IRC accounts on one server (`#load-in` read by one, `#load-out`
/// written by the other) and an API account, with one-way links into `#load-out`.
fn bridge_config(dir: &std::path::Path, admin: u16, irc: u16, api: u16, store: &str) -> String {
    format!(
        r##"{head}
[accounts."irc.in"]
kind = "irc"
server = "127.0.0.1"
port = {irc}
tls = false
nick = "pin"
send_rate_per_second = 0.0

[accounts."irc.out"]
kind = "irc"
server = "127.0.0.1"
port = {irc}
tls = false
nick = "pout"
send_rate_per_second = 0.0

[accounts."api.load"]
kind = "api"
listen = "127.0.0.1:{api}"
token = "{TOKEN}"

[[links]]
name = "irc"
rooms = [
  {{ account = "irc.in", room = "#load-in", direction = "in" }},
  {{ account = "irc.out", room = "#load-out", direction = "out" }},
]

[[links]]
name = "api"
rooms = [
  {{ account = "api.load", room = "load", direction = "in" }},
  {{ account = "irc.out", room = "#load-out", direction = "out" }},
]
"##,
        head = daemon::base_config(dir, admin, store)
    )
}

fn run_id() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(1)
}

/// Runs one path: the receiver reads while `send` writes; the figures.
async fn measure<F>(
    receiver: irc::Client,
    run: u32,
    load: &Load,
    clock: Instant,
    progress: Arc<irc::Progress>,
    send: F,
) -> Result<Figures>
where
    F: std::future::Future<Output = Result<(u64, Box<dyn std::any::Any + Send>)>>,
{
    let (messages, quickack) = (load.messages, load.quickack);
    measure_with(
        load,
        run,
        move |until| {
            tokio::spawn(receiver.receive(run, messages, clock, until, progress, quickack))
        },
        send,
    )
    .await
}

/// Runs one path with any receiver: `start_reading` spawns it (told when to stop), then `send`
/// writes; the figures.
async fn measure_with<R, F>(load: &Load, run: u32, start_reading: R, send: F) -> Result<Figures>
where
    R: FnOnce(irc::Until) -> tokio::task::JoinHandle<Result<Vec<tally::Arrival>>>,
    F: std::future::Future<Output = Result<(u64, Box<dyn std::any::Any + Send>)>>,
{
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let deadline = Instant::now() + Duration::from_secs(load.timeout_secs);
    let reading = start_reading(irc::Until {
        idle: Duration::from_secs(load.idle_secs),
        deadline,
        sending_done: done_rx,
    });
    let sent = send.await;
    let _ = done_tx.send(true);
    let arrivals = reading.await.context("the receiver failed")??;
    let (first, open) = sent?;
    drop(open);
    if let Some(dir) = &load.keep {
        // Every arrival, for a closer look: sequence number, sent and received (µs).
        let mut rows = String::with_capacity(arrivals.len() * 24);
        for a in &arrivals {
            rows.push_str(&format!("{} {} {}\n", a.seq, a.sent_us, a.recv_us));
        }
        std::fs::write(dir.join(format!("arrivals-{run}.txt")), rows)?;
    }
    Ok(Figures::from_arrivals(load.messages, first, &arrivals))
}

async fn irc_to_irc(load: Load, source: Source) -> Result<()> {
    let from_api = source == Source::Api;
    if source == Source::Process && load.store != [daemon::StoreKind::Sqlite] {
        bail!("--store applies to the irc and api scenarios");
    }
    if load.store.is_empty() {
        bail!("--store names no store");
    }
    let binary = daemon::binary(load.daemon.clone())?;
    let server = Inspircd::start();
    let mut stores = daemon::Stores::start(&load.store);
    let temp = tempfile::tempdir()?;
    let dir = load.keep.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let (admin, api_port) = (free_port(), free_port());
    // One daemon per store, each on a new one; the first is up for the direct run too (the
    // process scenario's baseline goes through it).
    let start = |kind: daemon::StoreKind, store: String| {
        let dir = dir.join(kind.name());
        let mut config = bridge_config(&dir, admin, server.port, api_port, &store);
        if source == Source::Process {
            config.push_str(&relay_config());
        }
        std::fs::create_dir_all(&dir)?;
        Daemon::start(&binary, &dir, &config, admin)
    };
    let mut daemon = start(load.store[0], stores.config(load.store[0]))?;
    daemon
        .wait_for(
            "/readyz",
            Duration::from_millis(50),
            Duration::from_secs(30),
        )
        .await?;

    // Direct: A → server → B in one channel. For the process scenario, the baseline is the
    // daemon's in-process path instead: A → #load-in → daemon → #load-out → B.
    let run = run_id();
    let (base_in, base_out) = if source == Source::Process {
        ("#load-in", "#load-out")
    } else {
        ("#load-base", "#load-base")
    };
    let b = irc::Client::join(server.port, "lb", base_out).await?;
    let a = irc::Client::join(server.port, "la", base_in).await?;
    if source == Source::Process {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let direct = if load.no_direct {
        Figures::default()
    } else {
        irc_lines(a, b, run, &load).await?
    };

    // Through passerelle, on each store in turn.
    for (i, kind) in load.store.iter().copied().enumerate() {
        if i > 0 {
            daemon.stop();
            daemon = start(kind, stores.config(kind))?;
            daemon
                .wait_for(
                    "/readyz",
                    Duration::from_millis(50),
                    Duration::from_secs(30),
                )
                .await?;
        }
        let run = run.wrapping_add(1 + i as u32);
        let b = irc::Client::join(server.port, &format!("db{i}"), "#load-out").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss = daemon.rss_kib();
        let bridged = if from_api {
            let clock = Instant::now();
            let progress = Arc::new(irc::Progress::default());
            let posted = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let orphans = load
                .orphan_replies
                .map(|rate| tokio::spawn(post_orphan_replies(api_port, rate, posted.clone())));
            let figures = measure(
                b,
                run,
                &load,
                clock,
                progress,
                post_all(api_port, run, &load, clock),
            )
            .await;
            if let Some(task) = orphans {
                task.abort();
                let n = posted.load(std::sync::atomic::Ordering::Relaxed);
                println!("orphan replies posted meanwhile: {n}");
            }
            figures?
        } else {
            let channel = if source == Source::Process {
                "#load-pin"
            } else {
                "#load-in"
            };
            let a = irc::Client::join(server.port, &format!("da{i}"), channel).await?;
            irc_lines(a, b, run, &load).await?
        };
        let peak_rss = daemon.peak_rss_kib();
        let clean = daemon.stop();
        let path = match source {
            Source::Irc => "irc->irc",
            Source::Api => "api->irc",
            Source::Process => "irc->process->irc (direct: in-process irc->irc)",
        };
        report(
            (path, kind.name()),
            &load,
            Some(load.window),
            &direct,
            &bridged,
            (idle_rss, peak_rss),
            clean,
        );
    }
    if load.keep.is_none() {
        drop(temp);
    }
    Ok(())
}

/// `a` writes the run's tagged lines into its channel, as `load` says; the first send time and
/// the open connection (kept until the receiver is done).
/// One run of IRC lines: `a` sends them (as [`send_lines`]), `b` receives; the figures, with the
/// clock started now.
async fn irc_lines(a: irc::Client, b: irc::Client, run: u32, load: &Load) -> Result<Figures> {
    let clock = Instant::now();
    let progress = Arc::new(irc::Progress::default());
    measure(
        b,
        run,
        load,
        clock,
        progress.clone(),
        send_lines(a, run, load, progress, clock),
    )
    .await
}

async fn send_lines(
    a: irc::Client,
    run: u32,
    load: &Load,
    progress: Arc<irc::Progress>,
    clock: Instant,
) -> Result<(u64, Box<dyn std::any::Any + Send>)> {
    let (first, open) = a
        .send(
            run,
            load.messages,
            load.rate,
            load.window,
            progress,
            load.pad,
            clock,
        )
        .await?;
    Ok((first, Box::new(open) as Box<dyn std::any::Any + Send>))
}

/// Prints a run's one line: both paths' figures, their ratio and the daemon's memory
/// (`window` only where the path has one).
fn report(
    (path, store): (&str, &str),
    load: &Load,
    window: Option<u64>,
    direct: &Figures,
    bridged: &Figures,
    (idle_rss, peak_rss): (Option<u64>, Option<u64>),
    clean: bool,
) {
    let mode = load
        .rate
        .map_or_else(|| "burst".to_owned(), |r| format!("{r}/s"));
    let window = window.map_or_else(String::new, |w| format!(" window={w}"));
    println!(
        "{path} {mode} n={n}{window} pad={pad} quickack={quickack} store={store} | direct: {direct} | passerelle: {bridged} | \
         throughput {ratio:.1}% of direct, p50 {p50:+.2}ms p99 {p99:+.2}ms over direct | \
         daemon rss idle={idle} peak={peak} stopped_cleanly={clean}",
        n = load.messages,
        pad = load.pad,
        quickack = load.quickack,
        ratio = 100.0 * bridged.throughput / direct.throughput.max(f64::MIN_POSITIVE),
        p50 = (bridged.p50_us as f64 - direct.p50_us as f64) / 1000.0,
        p99 = (bridged.p99_us as f64 - direct.p99_us as f64) / 1000.0,
        idle = mib(idle_rss),
        peak = mib(peak_rss),
    );
}

/// For senders that write one message per request: waits until message `seq` is due (when
/// paced), then its send time and text (the tag, then `filler` when there is one).
async fn next_message(
    load: &Load,
    run: u32,
    seq: u64,
    clock: Instant,
    filler: &str,
) -> (u64, String) {
    if let Some(rate) = load.rate {
        let due = clock + Duration::from_secs_f64(seq as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
    }
    let sent = clock.elapsed().as_micros() as u64;
    let mut text = tally::tag(run, seq, sent);
    if !filler.is_empty() {
        text.push(' ');
        text.push_str(filler);
    }
    (sent, text)
}

/// Posts the tagged messages to the API one after another (each answered once stored), paced or
/// as fast as answers come.
async fn post_all(
    port: u16,
    run: u32,
    load: &Load,
    clock: Instant,
) -> Result<(u64, Box<dyn std::any::Any + Send>)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/api/message");
    let filler = "x".repeat(load.pad);
    let mut first = None;
    for seq in 0..load.messages {
        let (sent, text) = next_message(load, run, seq, clock, &filler).await;
        first.get_or_insert(sent);
        let body = serde_json::json!({"text": text, "username": "load", "gateway": "load"});
        let status = http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .context("posting to the message API")?
            .status();
        if !status.is_success() {
            bail!("the message API answered {status} to message {seq}");
        }
    }
    Ok((first.unwrap_or(0), Box::new(())))
}

/// Posts replies to messages that were never bridged, `rate` a second, until aborted (at most
/// ten minutes), counting them in `posted`.
async fn post_orphan_replies(
    port: u16,
    rate: f64,
    posted: Arc<std::sync::atomic::AtomicU64>,
) -> Result<u64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/api/message");
    let clock = Instant::now();
    let mut n: u64 = 0;
    while clock.elapsed() < Duration::from_secs(600) {
        let due = clock + Duration::from_secs_f64(n as f64 / rate.max(0.01));
        tokio::time::sleep_until(due.into()).await;
        let body = serde_json::json!({"text": "orphan reply", "username": "orphan",
            "gateway": "load", "parent_id": format!("never-bridged-{n}")});
        http.post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await?;
        n += 1;
        posted.store(n, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(n)
}

async fn startup(s: Startup) -> Result<()> {
    if s.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let binary = daemon::binary(s.daemon.clone())?;
    let example = std::fs::read_to_string(&s.config)
        .with_context(|| format!("reading {}", s.config.display()))?;
    let (mut first, mut again, mut idle, mut peak) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.runs {
        let temp = tempfile::tempdir()?;
        let admin = free_port();
        let mut config = example.replace(
            "path = \"data/passerelle.db\"",
            &format!("path = \"{}/data/passerelle.db\"", temp.path().display()),
        );
        // Every listen address of the file moves to a free port.
        let mut rest = config.as_str();
        let mut moved = String::new();
        while let Some(at) = rest.find("\"127.0.0.1:") {
            let end = rest[at + 1..]
                .find('"')
                .map(|e| at + 1 + e + 1)
                .context("an unterminated listen address")?;
            moved.push_str(&rest[..at]);
            let port = if rest[at..end].contains(":9180") {
                admin
            } else {
                free_port()
            };
            moved.push_str(&format!("\"127.0.0.1:{port}\""));
            rest = &rest[end..];
        }
        moved.push_str(rest);
        config = moved;
        for fresh in [true, false] {
            let mut d = Daemon::start(&binary, temp.path(), &config, admin)?;
            let ready = d
                .wait_for(
                    "/healthz",
                    Duration::from_micros(500),
                    Duration::from_secs(10),
                )
                .await?;
            if fresh {
                first.push(ready);
                tokio::time::sleep(Duration::from_secs(s.idle_secs)).await;
                idle.push(d.rss_kib().unwrap_or(0));
                peak.push(d.peak_rss_kib().unwrap_or(0));
            } else {
                again.push(ready);
            }
            if !d.stop() {
                bail!(
                    "passerelle did not stop cleanly; its log is {}",
                    d.log.display()
                );
            }
        }
    }
    let ms = |v: &mut Vec<Duration>| {
        v.sort();
        format!(
            "min={:.1}ms p50={:.1}ms max={:.1}ms",
            v[0].as_secs_f64() * 1e3,
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3
        )
    };
    println!(
        "startup {config} runs={runs} | to /healthz, new store: {f} | existing store: {a} | \
         idle rss max={idle} peak max={peak}",
        config = s.config.display(),
        runs = s.runs,
        f = ms(&mut first),
        a = ms(&mut again),
        idle = mib(idle.iter().max().copied()),
        peak = mib(peak.iter().max().copied()),
    );
    Ok(())
}

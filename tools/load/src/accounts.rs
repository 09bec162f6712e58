//! What each account costs: the daemon's resident memory and its CPU while idle, all accounts
//! connected, with one IRC and one API account and then with many of each (each IRC account
//! in a channel of its own, linked to an API account), on the same InspIRCd. The difference,
//! divided by the accounts added, is what one more account costs.

use crate::daemon::{self, Daemon, StoreKind, mib};
use anyhow::{Result, bail};
use clap::Args;
use passerelle_testkit::free_port;
use passerelle_testkit::servers::Inspircd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct Accounts {
    /// IRC accounts, and as many API accounts, in the large configuration.
    #[arg(long, default_value_t = 50)]
    pairs: u32,
    /// Seconds, every account connected, over which idle CPU is measured.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// The store the daemon keeps.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// The `passerelle` binary (default: the one beside this tool).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

/// One configuration's figures.
struct Measured {
    ready: Duration,
    rss_kib: u64,
    cpu_ticks: u64,
}

fn config(dir: &std::path::Path, admin: u16, irc: u16, pairs: u32, store: &str) -> String {
    let mut c = daemon::base_config(dir, admin, store);
    for i in 0..pairs {
        let api = free_port();
        c.push_str(&format!(
            "\n[accounts.\"irc.{i}\"]\nkind = \"irc\"\nserver = \"127.0.0.1\"\nport = {irc}\n\
             tls = false\nnick = \"acc{i}\"\n\n[accounts.\"api.{i}\"]\nkind = \"api\"\n\
             listen = \"127.0.0.1:{api}\"\ntoken = \"{token}\"\n\n[[links]]\nname = \"l{i}\"\n\
             rooms = [\n  {{ account = \"irc.{i}\", room = \"#acc{i}\" }},\n  \
             {{ account = \"api.{i}\", room = \"lobby\" }},\n]\n",
            token = crate::TOKEN
        ));
    }
    c
}

async fn measure(
    binary: &std::path::Path,
    dir: &std::path::Path,
    config: &str,
    admin: u16,
    idle: Duration,
) -> Result<Measured> {
    std::fs::create_dir_all(dir)?;
    let mut d = Daemon::start(binary, dir, config, admin)?;
    // `/readyz` is 200 once every account is connected.
    let ready = d
        .wait_for(
            "/readyz",
            Duration::from_millis(50),
            Duration::from_secs(180),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (Some(before), start) = (d.cpu_ticks(), Instant::now()) else {
        bail!("cannot read the daemon's CPU time");
    };
    tokio::time::sleep(idle).await;
    let after = d.cpu_ticks().unwrap_or(before);
    let spent = start.elapsed();
    let rss_kib = d.rss_kib().unwrap_or(0);
    if !d.stop() {
        bail!(
            "passerelle did not stop cleanly; its log is {}",
            d.log.display()
        );
    }
    // Ticks over the idle time, scaled to exactly `idle`.
    let cpu_ticks =
        ((after - before) as f64 * idle.as_secs_f64() / spent.as_secs_f64()).round() as u64;
    Ok(Measured {
        ready,
        rss_kib,
        cpu_ticks,
    })
}

pub async fn accounts(a: Accounts) -> Result<()> {
    if a.pairs < 2 {
        bail!("--pairs must be at least 2");
    }
    let binary = daemon::binary(a.daemon.clone())?;
    let server = Inspircd::start();
    let mut stores = daemon::Stores::start(&[a.store]);
    let temp = tempfile::tempdir()?;
    let idle = Duration::from_secs(a.idle_secs.max(1));
    let mut runs = Vec::new();
    for pairs in [1, a.pairs] {
        let admin = free_port();
        let dir = temp.path().join(format!("p{pairs}"));
        let store = stores.config(a.store);
        let config = config(&dir, admin, server.port, pairs, &store);
        runs.push(measure(&binary, &dir, &config, admin, idle).await?);
    }
    let (small, large) = (&runs[0], &runs[1]);
    let added = f64::from(2 * (a.pairs - 1));
    let cpu_pct = |m: &Measured| m.cpu_ticks as f64 / (idle.as_secs_f64() * 100.0) * 100.0;
    let per_rss = (large.rss_kib as f64 - small.rss_kib as f64) / added;
    // CPU ms a minute that each added account costs while idle (a tick is 10 ms: less than
    // one in the window reads as 0).
    let per_cpu = (large.cpu_ticks as f64 - small.cpu_ticks as f64).max(0.0) * 10.0 / added
        * (60.0 / idle.as_secs_f64());
    println!(
        "accounts store={store} idle={secs}s | 2 accounts: ready {r1:.2}s rss={m1} idle cpu={c1:.2}% \
         ({t1} ticks) | {n} accounts: ready {r2:.2}s rss={m2} idle cpu={c2:.2}% ({t2} ticks) | \
         per added account: rss={per_rss:.0}KiB idle cpu={per_cpu:.2}ms/min",
        t1 = small.cpu_ticks,
        t2 = large.cpu_ticks,
        store = a.store.name(),
        secs = idle.as_secs(),
        r1 = small.ready.as_secs_f64(),
        m1 = mib(Some(small.rss_kib)),
        c1 = cpu_pct(small),
        n = 2 * a.pairs,
        r2 = large.ready.as_secs_f64(),
        m2 = mib(Some(large.rss_kib)),
        c2 = cpu_pct(large),
    );
    Ok(())
}

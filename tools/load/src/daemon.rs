//! The daemon under load: the real `passerelle` binary on a written config, its memory read from
//! `/proc`, stopped by PID.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `[general]`, `[store]` and `[http]` tables every load config starts with: a short
/// shutdown grace, the store under `dir/data` (and `store`'s lines from [`Stores::config`]), the
/// admin listener on `admin`.
pub fn base_config(dir: &Path, admin: u16, store: &str) -> String {
    format!(
        "[general]\nshutdown_grace_secs = 5\n\n[store]\npath = \"{}/passerelle.db\"\n{store}\n[http]\nlisten = \"127.0.0.1:{admin}\"\n",
        dir.join("data").display()
    )
}

/// Which store the daemon under load keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded SQLite file (the default).
    Sqlite,
    /// A PostgreSQL server of the tool's own on loopback (Debian's package, `fsync` on), a new
    /// database for each run.
    Postgres,
    /// That PostgreSQL store in cluster mode, this daemon its only instance: every delivery is
    /// claimed under its destination's lease, every callback kept before it is handled.
    Cluster,
}

impl StoreKind {
    /// Its name in the printed line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Cluster => "cluster",
        }
    }
}

/// The stores a run needs: the PostgreSQL server when one of `kinds` is PostgreSQL (stopped by
/// PID when dropped).
pub struct Stores {
    postgres: Option<passerelle_testkit::postgres::Postgres>,
    made: u32,
}

impl Stores {
    /// Starts what `kinds` need.
    pub fn start(kinds: &[StoreKind]) -> Self {
        Self {
            postgres: kinds
                .iter()
                .any(|k| *k != StoreKind::Sqlite)
                .then(|| passerelle_testkit::postgres::Postgres::start(true)),
            made: 0,
        }
    }

    /// The `[store]` lines (and the `[cluster]` table) for a new store of `kind`: nothing for
    /// SQLite, else a new database's `store.url`.
    pub fn config(&mut self, kind: StoreKind) -> String {
        let Some(pg) = self.postgres.as_ref().filter(|_| kind != StoreKind::Sqlite) else {
            return String::new();
        };
        self.made += 1;
        let url = pg.create_database(&format!("load{}", self.made));
        let mut lines = format!("url = \"{url}\"\n");
        if kind == StoreKind::Cluster {
            lines.push_str(&format!(
                "outbox_key = \"{}\"\n\n[cluster]\nenabled = true\ninstance = \"load\"\n",
                "5a".repeat(32)
            ));
        }
        lines
    }
}

/// A running daemon, stopped (SIGTERM, then SIGKILL after 30 s) when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// Its admin listener's port on 127.0.0.1.
    pub admin_port: u16,
    /// Where its log goes.
    pub log: PathBuf,
    /// When it was started.
    pub started: Instant,
}

/// The `passerelle` binary: `--daemon`, else the one beside this tool.
pub fn binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let me = std::env::current_exe().context("locating this tool")?;
    let beside = me
        .parent()
        .map(|d| d.join("passerelle"))
        .context("locating this tool's directory")?;
    if beside.exists() {
        Ok(beside)
    } else {
        bail!(
            "no passerelle binary beside {}: build it (cargo build --release -p passerelle) or pass --daemon",
            me.display()
        )
    }
}

impl Daemon {
    /// Writes `config` into `dir/config.toml` and starts `binary` on it (log at `info`).
    pub fn start(binary: &Path, dir: &Path, config: &str, admin_port: u16) -> Result<Self> {
        let path = dir.join("config.toml");
        std::fs::write(&path, config).context("writing the daemon's config")?;
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log).context("creating the daemon's log")?;
        let started = Instant::now();
        let child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(&path)
            .env("PASSERELLE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child: Some(child),
            admin_port,
            log,
            started,
        })
    }

    /// Waits until `path` (`/healthz` or `/readyz`) answers 200, polling every `every`; the time
    /// from start.
    pub async fn wait_for(
        &mut self,
        path: &str,
        every: Duration,
        timeout: Duration,
    ) -> Result<Duration> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(self.started.elapsed());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "passerelle exited ({status}); its log is {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(every).await;
        }
        bail!(
            "passerelle did not answer {path} within {timeout:?}; its log is {}",
            self.log.display()
        )
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// CPU time used so far by all its threads (user and system), in clock ticks (1/100 s on
    /// Linux).
    pub fn cpu_ticks(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The name in parentheses may hold spaces: the fields that count come after it.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime) = (fields.get(11)?, fields.get(12)?);
        Some(utime.parse::<u64>().ok()? + stime.parse::<u64>().ok()?)
    }

    /// Peak resident memory so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// SIGTERM, then waits (SIGKILL after 30 s); whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |k| format!("{:.1}MiB", k as f64 / 1024.0))
}

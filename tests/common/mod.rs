//! Shared helpers of the end-to-end tests: the real `passerelle` binary started on a config, and a
//! client for the HTTP message API.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use passerelle_testkit::free_port;

/// The `[general]`, `[store]` and `[http]` tables every end-to-end config starts with: a short
/// shutdown grace, the store under `dir/data`, the admin listener on `admin`.
pub fn base_config(dir: &Path, admin: u16) -> String {
    format!(
        "[general]\nshutdown_grace_secs = 5\n\n[store]\npath = \"{}/passerelle.db\"\n\n[http]\nlisten = \"127.0.0.1:{admin}\"\n",
        dir.join("data").display()
    )
}

/// The `[general]`, `[store]`, `[http]` and `[cluster]` tables of one cluster instance: its store
/// under `dir/data`, the database URL and outbox key in `secrets` (`database-url`,
/// `outbox-key`), its admin listener on `admin`, named `name`, with `prefer`'s pins (TOML
/// `"account" = "instance"` pairs).
pub fn cluster_head(
    dir: &Path,
    secrets: &Path,
    name: &str,
    admin: u16,
    lease_secs: u64,
    prefer: &str,
) -> String {
    format!(
        "[general]\nshutdown_grace_secs = 5\n\n[store]\npath = \"{data}/passerelle.db\"\n\
         url_file = \"{s}/database-url\"\noutbox_key_file = \"{s}/outbox-key\"\n\n\
         [http]\nlisten = \"127.0.0.1:{admin}\"\n\n[cluster]\nenabled = true\n\
         instance = \"{name}\"\nlease_secs = {lease_secs}\nprefer = {{ {prefer} }}\n",
        data = dir.join("data").display(),
        s = secrets.display(),
    )
}

/// The `[accounts."irc.main"]` table: the nick `bridge` on the ngIRCd at `port`, plain TCP, sends
/// not paced.
pub fn irc_account(port: u16) -> String {
    format!(
        "[accounts.\"irc.main\"]\nkind = \"irc\"\nserver = \"127.0.0.1\"\nport = {port}\ntls = false\nnick = \"bridge\"\nsend_rate_per_second = 0\n"
    )
}

/// The `[accounts."api.main"]` table: the HTTP API on `port` with `token`, with every right.
pub fn api_account(port: u16, token: &str) -> String {
    format!(
        "[accounts.\"api.main\"]\nkind = \"api\"\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\nrights = [\"read\", \"write\", \"delete\"]\n"
    )
}

/// Calls `probe` every 100 ms until `done` says its answer will do or `timeout` passes; the last
/// answer.
pub async fn wait_for<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = probe();
        if done(&got) || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running daemon (the real binary), stopped by PID when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
    pub admin_port: u16,
}

impl Daemon {
    /// Writes `config` into `dir` and starts the daemon on it with trace logging.
    pub fn start(dir: &Path, config: &str, admin_port: u16) -> Self {
        let path = dir.join("config.toml");
        std::fs::write(&path, config).expect("write config");
        let mut daemon = Self {
            child: None,
            config: path,
            log: dir.join("daemon.log"),
            admin_port,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .env("PASSERELLE_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start passerelle");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let deadline = Instant::now() + timeout;
        let http = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                !self.exited(),
                "passerelle exited before it was ready; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "passerelle not ready within {timeout:?}; log:\n{}",
            self.logs()
        );
    }

    /// Whether the process has exited and waits to be reaped (its state in `/proc` is `Z`).
    fn exited(&self) -> bool {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else {
            return true;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = stat.rsplit_once(')')?.1;
                after_name
                    .split_whitespace()
                    .next()
                    .map(|state| state == "Z")
            })
            .unwrap_or(true)
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("passerelle did not stop within 30 s of SIGTERM");
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hangup(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    /// Writes `config` over the configuration file (read again at the next reload).
    pub fn rewrite(&self, config: &str) {
        std::fs::write(&self.config, config).expect("write config");
    }

    /// Runs `passerelle reload -c CONFIG`: its exit code, standard output and standard error.
    pub fn reload(&self) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .arg("reload")
            .arg("-c")
            .arg(&self.config)
            .output()
            .expect("passerelle reload");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `passerelle reload`, which must succeed; its JSON report.
    pub fn reload_ok(&self) -> serde_json::Value {
        let (code, out, err) = self.reload();
        assert_eq!(code, 0, "passerelle reload: {out}{err}");
        serde_json::from_str(out.trim()).expect("a JSON report")
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again after [`Daemon::kill`] or [`Daemon::stop`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// Starts the daemon again on the same config.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The process's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The PIDs of the processes the daemon started (an out-of-process connector's program).
    pub fn children(&self) -> Vec<u32> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            found.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process's resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of a counter line in Prometheus text, summed over label sets containing `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A client of one API account.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(port: u16, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            token: token.to_owned(),
        }
    }

    /// Posts a JSON body (as raw text) with a token; returns the status and the answer.
    pub async fn post_raw(&self, body: &str, token: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/api/message", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("API reachable");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Posts `text` as `username` to `gateway`, which must be taken (200).
    pub async fn say(&self, text: &str, username: &str, gateway: &str) {
        let (status, answer) = self
            .post(serde_json::json!({"text": text, "username": username, "gateway": gateway}))
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Posts a message; returns the status and the answer.
    pub async fn post(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_raw(&body.to_string(), &self.token.clone()).await
    }

    /// Posts a message when the API is reachable; the status, or `None` when the daemon is
    /// down (connection refused, reset, or no answer within 5 s).
    pub async fn try_post(&self, body: &serde_json::Value) -> Option<u16> {
        let r = self
            .http
            .post(format!("{}/api/message", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(5))
            .json(body)
            .send()
            .await
            .ok()?;
        Some(r.status().as_u16())
    }

    /// Drains `GET /api/messages`: what the account was sent since the last call (up to its
    /// buffer), oldest first.
    pub async fn messages(&self) -> Vec<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/api/messages", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("API reachable");
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.unwrap_or_default()
    }

    /// Opens `/api/stream`.
    pub async fn stream(&self) -> ApiStream {
        let response = self
            .http
            .get(format!("{}/api/stream", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("stream opens");
        assert_eq!(response.status().as_u16(), 200);
        ApiStream {
            response,
            pending: String::new(),
        }
    }
}

/// An open `/api/stream`.
pub struct ApiStream {
    response: reqwest::Response,
    pending: String,
}

impl ApiStream {
    /// The next message (skipping `api_connected`), within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(pos) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=pos).collect();
                let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
                if value["event"] != "api_connected" {
                    return Some(value);
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

/// Collects what IRC shows until `n` distinct lines came (and a repeat of the last that may
/// still be on its way), or 15 s pass with nothing, or 90 s in all.
pub fn collect_irc(
    mut irc: passerelle_testkit::irc_client::IrcClient,
    n: usize,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while tokio::time::Instant::now() < deadline {
            let Some(m) = irc.next_message(Duration::from_secs(15)).await else {
                break;
            };
            lines.push(m.text.clone());
            let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
            if distinct.len() >= n {
                if let Some(extra) = irc.next_message(Duration::from_secs(2)).await {
                    lines.push(extra.text);
                }
                break;
            }
        }
        lines
    })
}

/// The daemon killed (SIGKILL), started, stopped (SIGTERM) and started, killed and started
/// again, a second or so apart: the restarts of the mid-stream tests.
pub async fn kill_term_kill(daemon: &mut Daemon) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    daemon.restart();
    daemon.wait_ready(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    daemon.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(30)).await;
}

/// Checks a stream IRC showed against `want`: none lost, in order, at most one repeat per kill
/// (IRC has no idempotency key). The number of repeats.
pub fn check_stream(lines: &[String], want: &[String], kills: usize) -> usize {
    let mut first_seen: Vec<String> = Vec::new();
    for l in lines {
        if !first_seen.contains(l) {
            first_seen.push(l.clone());
        }
    }
    let lost: Vec<&String> = want.iter().filter(|w| !lines.contains(w)).collect();
    assert!(lost.is_empty(), "lost {} message(s): {lost:?}", lost.len());
    assert_eq!(first_seen, want, "the stream arrived out of order");
    let repeats = lines.len() - first_seen.len();
    assert!(repeats <= kills, "{repeats} IRC repeats for {kills} kills");
    repeats
}

/// How many events the store under `dir` holds for `account` (the daemon stopped).
pub fn stored_events(dir: &Path, account: &str) -> i64 {
    let db = rusqlite::Connection::open(dir.join("data/passerelle.db")).expect("the store");
    db.query_row(
        "SELECT COUNT(*) FROM events WHERE account = ?1",
        [account],
        |r| r.get(0),
    )
    .expect("count")
}

/// The daemon bridging one network's account with IRC and the API, as the network end-to-end
/// tests run it: link `lobby` joins the account's `lobby` room, IRC's `irc_channel` and the API's
/// `lobby`; link `other` joins its `other` room and IRC's `#other`.
pub struct IrcApiBridge {
    pub irc: passerelle_testkit::servers::Ngircd,
    pub dir: tempfile::TempDir,
    pub daemon: Daemon,
    pub api_port: u16,
}

/// Starts ngIRCd and the daemon with `account_toml` (the account `account`'s table), the IRC
/// account and an API account whose token is `api_token`; returns once the daemon is ready.
pub async fn irc_api_bridge(
    account: &str,
    account_toml: &str,
    lobby: &str,
    irc_channel: &str,
    other: &str,
    api_token: &str,
) -> IrcApiBridge {
    let irc = passerelle_testkit::servers::Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    let config = format!(
        r##"
{head}
{account_toml}

{irc_account}
{api_account}
[[links]]
name = "lobby"
rooms = [
  {{ account = "{account}", room = "{lobby}" }},
  {{ account = "irc.main", room = "{irc_channel}" }},
  {{ account = "api.main", room = "lobby" }},
]

[[links]]
name = "other"
rooms = [
  {{ account = "{account}", room = "{other}" }},
  {{ account = "irc.main", room = "#other" }},
]
"##,
        head = base_config(dir.path(), admin),
        irc_account = irc_account(irc.port),
        api_account = api_account(api_port, api_token),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    IrcApiBridge {
        irc,
        dir,
        daemon,
        api_port,
    }
}

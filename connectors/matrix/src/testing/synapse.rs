//! A throwaway Synapse homeserver on loopback: SQLite, no federation, every rate limit raised,
//! users created with the shared registration secret. The test command installs Synapse from PyPI
//! into a virtual environment (`$HOME/.cache/passerelle-venv`, or `PASSERELLE_SYNAPSE_VENV`).

use passerelle_testkit::servers::{kill_and_wait, wait_for_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server name every test homeserver uses: users are `@name:hs.passerelle.test`.
pub const SERVER_NAME: &str = "hs.passerelle.test";

/// The virtual environment Synapse is installed in.
pub fn venv() -> PathBuf {
    if let Ok(dir) = std::env::var("PASSERELLE_SYNAPSE_VENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/passerelle-venv")
}

fn python() -> PathBuf {
    let p = venv().join("bin/python");
    assert!(
        p.exists(),
        "Synapse is not installed at {}: run the README's test command (scripts/test.sh), which \
         installs it",
        p.display()
    );
    p
}

/// A running Synapse.
pub struct Synapse {
    child: Option<Child>,
    /// Its client-server port on 127.0.0.1.
    pub port: u16,
    /// The shared secret for `register_new_matrix_user`.
    pub registration_secret: String,
    appservices: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        out.push_str(&uuid_like());
    }
    out.truncate(bytes * 2);
    out
}

fn uuid_like() -> String {
    // Random enough for throwaway secrets: the std hasher is seeded randomly per process.
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

const RATE: &str = "{per_second: 100000, burst_count: 100000}";

impl Synapse {
    /// Starts a homeserver on a free port with these appservice registration files, and waits
    /// until it answers.
    pub fn start(appservice_files: &[PathBuf]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = Self {
            child: None,
            port: passerelle_testkit::free_port(),
            registration_secret: random_hex(16),
            appservices: appservice_files.to_vec(),
            dir,
        };
        server.write_config();
        server.spawn();
        server
    }

    /// The homeserver's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where Synapse keeps its files and its log (`homeserver.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write_config(&self) {
        let d = self.dir.path();
        // An ed25519 signing key: "ed25519 <key id> <unpadded base64 of a 32-byte seed>".
        let mut seed = random_hex(22);
        seed.truncate(43);
        std::fs::write(d.join("signing.key"), format!("ed25519 a_test {seed}\n"))
            .expect("write signing key");
        let appservices: String = if self.appservices.is_empty() {
            " []".to_owned()
        } else {
            self.appservices
                .iter()
                .map(|p| format!("\n  - {:?}", p.display().to_string()))
                .collect()
        };
        let rc = [
            format!("rc_message: {RATE}"),
            format!("rc_registration: {RATE}"),
            format!("rc_login: {{address: {RATE}, account: {RATE}, failed_attempts: {RATE}}}"),
            format!("rc_joins: {{local: {RATE}, remote: {RATE}}}"),
            format!("rc_joins_per_room: {RATE}"),
            format!("rc_invites: {{per_room: {RATE}, per_user: {RATE}, per_issuer: {RATE}}}"),
            format!("rc_room_creation: {RATE}"),
            format!("rc_profile: {RATE}"),
            format!("rc_media_create: {RATE}"),
            format!("rc_key_requests: {RATE}"),
            format!("rc_presence: {{per_user: {RATE}}}"),
            format!("rc_3pid_validation: {RATE}"),
            format!("rc_admin_redaction: {RATE}"),
        ]
        .join("\n");
        let config = format!(
            r#"server_name: "{SERVER_NAME}"
pid_file: "{dir}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{dir}/homeserver.db"
media_store_path: "{dir}/media"
signing_key_path: "{dir}/signing.key"
registration_shared_secret: "{secret}"
macaroon_secret_key: "{macaroon}"
form_secret: "{form}"
report_stats: false
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
enable_metrics: false
presence:
  enabled: false
url_preview_enabled: false
log_config: "{dir}/log.yaml"
app_service_config_files:{appservices}
{rc}
"#,
            dir = d.display(),
            port = self.port,
            secret = self.registration_secret,
            macaroon = random_hex(16),
            form = random_hex(16),
        );
        std::fs::write(d.join("homeserver.yaml"), config).expect("write homeserver.yaml");
        std::fs::write(
            d.join("log.yaml"),
            format!(
                "version: 1\nformatters:\n  f:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\n\
                 handlers:\n  file:\n    class: logging.FileHandler\n    filename: \"{}/homeserver.log\"\n    formatter: f\n\
                 root:\n  level: INFO\n  handlers: [file]\ndisable_existing_loggers: false\n",
                d.display()
            ),
        )
        .expect("write log.yaml");
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let out = std::fs::File::create(d.join("stdout.log")).expect("log file");
        let child = Command::new(python())
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(d.join("homeserver.yaml"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start synapse");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ready = false;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "synapse exited at start ({status}); see {}",
                    d.join("stdout.log").display()
                );
            }
            if wait_for_port(self.port, Duration::from_millis(200)) && self.healthy() {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            ready,
            "synapse did not answer on {} within 60 s; see {}",
            self.port,
            d.join("homeserver.log").display()
        );
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    /// Creates a user (`@name:hs.passerelle.test`) with `password`.
    pub fn register(&self, name: &str, password: &str, admin: bool) {
        let tool = venv().join("bin/register_new_matrix_user");
        let status = Command::new(if tool.exists() { tool } else { python() })
            .args(["-u", name, "-p", password, "-k", &self.registration_secret])
            .arg(if admin { "--admin" } else { "--no-admin" })
            .arg(self.url())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run register_new_matrix_user");
        assert!(status.success(), "registering {name} failed");
    }

    /// Stops the server (by its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        kill_and_wait(&mut self.child);
    }

    /// Starts the server again on the same port, with the same database.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.stop();
    }
}

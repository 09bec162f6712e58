//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `postgres` on a
//! free loopback port with password authentication, stopped by its PID. Debian's package
//! `postgresql` (the test command installs it); `PASSERELLE_PG_BIN` names another directory of
//! PostgreSQL's programs.
//!
//! PostgreSQL refuses to run as root, so under root the server runs as the `postgres` user the
//! package creates.
//!
//! [`Postgres::shared_database`] gives each test a database of its own in the one server the test
//! command starts (its address in `PASSERELLE_TEST_POSTGRES`), or, when run alone, in a server
//! of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The superuser the throwaway clusters have.
pub const USER: &str = "passerelle";

/// Where PostgreSQL's programs are.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PASSERELLE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server is not installed: run the README's test command (scripts/test.sh), \
             which installs Debian's postgresql"
        )
    })
}

/// The uid and gid to run PostgreSQL as: the `postgres` user under root, else none (as we are).
fn run_as() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((
        id(&["-u", "postgres"]).expect("the postgres user (Debian's postgresql package makes it)"),
        id(&["-g", "postgres"]).expect("the postgres group"),
    ))
}

fn command(program: &str) -> Command {
    let mut command = Command::new(bin_dir().join(program));
    if let Some((uid, gid)) = run_as() {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(gid);
    }
    command
}

fn give_to_server(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for postgres");
    }
}

/// A PostgreSQL server of a test's own, on 127.0.0.1.
pub struct Postgres {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    password: String,
}

impl Postgres {
    /// Makes a cluster and starts it. `durable`: `fsync` on (for measurements); otherwise off,
    /// which only matters if the machine itself crashes.
    pub fn start(durable: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        give_to_server(&data);
        let password = format!("pw-{:x}", rand_u64());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).expect("pwfile");
        give_to_server(&pwfile);
        let status = command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("initdb.log")).expect("log"))
            .status()
            .expect("run initdb");
        assert!(
            status.success(),
            "initdb failed: {}",
            std::fs::read_to_string(dir.path().join("initdb.log")).unwrap_or_default()
        );
        let mut server = Self {
            dir,
            child: None,
            port: crate::free_port(),
            password,
        };
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = {}\nmax_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n",
            server.port,
            server.dir.path().join("data").display(),
            if durable { "on" } else { "off" }
        );
        let conf_path = server.dir.path().join("data/postgresql.auto.conf");
        std::fs::write(&conf_path, conf).expect("postgresql.auto.conf");
        give_to_server(&conf_path);
        server.start_again();
        server
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`, with the superuser's password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Creates database `name` and gives its URL.
    pub fn create_database(&self, name: &str) -> String {
        create_database(&self.url("postgres"), name)
    }

    /// Starts the server (again, after [`Postgres::stop`]) and waits until it takes queries.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("log");
        let child = command("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Turns TLS on with the certificate `server.pem` and key `server.key` in `certs` (see
    /// [`crate::servers::make_certificates_for`]) and refuses every connection over TCP without
    /// it (`hostnossl … reject`), then restarts the server.
    pub fn require_tls(&mut self, certs: &Path) {
        let data = self.dir.path().join("data");
        for name in ["server.pem", "server.key"] {
            let to = data.join(name);
            std::fs::copy(certs.join(name), &to).expect("copy the certificate");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
            }
            give_to_server(&to);
        }
        let conf = data.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.auto.conf");
        text.push_str("ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).expect("postgresql.auto.conf");
        let hba = data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("pg_hba.conf");
        give_to_server(&hba);
        self.stop();
        self.start_again();
    }

    /// Stops the server as an operator restarting it would (fast shutdown: SIGINT to its PID,
    /// which ends every session), and waits for it to exit.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A database of the calling test's own: in the server the test command started
    /// (`PASSERELLE_TEST_POSTGRES`, a URL of its `postgres` database), or in a new server that
    /// the returned guard stops.
    pub fn shared_database() -> (String, Option<Postgres>) {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}_{:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand_u64() & 0xffff_ffff
        );
        match std::env::var("PASSERELLE_TEST_POSTGRES") {
            Ok(admin) if !admin.is_empty() => (create_database(&admin, &name), None),
            _ => {
                let server = Postgres::start(false);
                (server.create_database(&name), Some(server))
            }
        }
    }
}

/// Creates database `name` through the server `admin` (a URL) names, with `psql`; its URL.
fn create_database(admin: &str, name: &str) -> String {
    let out = Command::new(bin_dir().join("psql"))
        .arg(admin)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "CREATE DATABASE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("not a URL with a database: {admin}"),
    }
}

fn stop_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        // Fast shutdown, then immediate (SIGQUIT: the postmaster ends its backends at once),
        // then SIGKILL as the last resort.
        crate::servers::stop_with(&mut child, &[("INT", 15), ("QUIT", 5)]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

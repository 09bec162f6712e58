//! Real servers for tests, each started on a free loopback port in its own temporary directory and
//! stopped (by PID) when dropped. The test command installs them from Debian's packages.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn find_binary(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        for name in names {
            let p = PathBuf::from(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "{} is not installed: run the README's test command (scripts/test.sh), which installs it",
        names[0]
    );
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// An ngIRCd server on loopback.
pub struct Ngircd {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Ngircd {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = crate::free_port();
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("ngircd.conf");
        let text = format!(
            "[Global]\nName = irc.passerelle.test\nInfo = passerelle test server\nListen = 127.0.0.1\n\
             Ports = {port}\nMotdPhrase = \"passerelle tests\"\nAdminInfo1 = tests\nAdminInfo2 = tests\nAdminEMail = tests@localhost\n\
             [Limits]\nMaxConnectionsIP = 0\nMaxNickLength = 30\nMaxJoins = 0\nPingTimeout = 120\nPongTimeout = 20\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\n",
            port = self.port
        );
        std::fs::write(&conf, text).expect("write ngircd.conf");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755));
            let _ = std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644));
        }
        let log = std::fs::File::create(self.dir.path().join("ngircd.log")).expect("log file");
        let child = Command::new(find_binary("PASSERELLE_NGIRCD", &["ngircd"]))
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start ngircd");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "ngircd did not listen on {} within 10 s",
            self.port
        );
    }

    /// Stops the server (by its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.stop();
    }
}

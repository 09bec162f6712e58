//! A throwaway Prosody XMPP server on loopback (Debian package `prosody`; `PASSERELLE_PROSODY`
//! overrides the binary, `PASSERELLE_PROSODYCTL` its control tool): one virtual host `localhost`
//! with local accounts, multi-user chat components `muc.localhost` (archived) and `chat.localhost`
//! (in-memory history only), HTTP file sharing
//! (XEP-0363) on `upload.localhost` served over plain HTTP on 127.0.0.1, and an external component
//! (XEP-0114) `bridge.localhost`. Client connections need TLS (STARTTLS or direct TLS) with a
//! certificate signed by a throwaway CA ([`Prosody::ca`]). Stopped by PID when dropped.

use passerelle_testkit::servers::{
    find_binary, kill_and_wait, make_certificates_for, spawn_logged, wait_for_port,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The virtual host.
pub const DOMAIN: &str = "localhost";
/// The multi-user chat component (rooms archived with `muc_mam`).
pub const MUC: &str = "muc.localhost";
/// A second multi-user chat component whose rooms keep only the in-memory history (no
/// archive), as many servers run them.
pub const MUC_UNARCHIVED: &str = "chat.localhost";
/// The HTTP file share component.
pub const UPLOAD: &str = "upload.localhost";
/// The external component (XEP-0114), and its secret.
pub const COMPONENT: &str = "bridge.localhost";
/// The external component's shared secret.
pub const COMPONENT_SECRET: &str = "component-secret";

/// A running Prosody.
pub struct Prosody {
    child: Option<Child>,
    /// Client-to-server port (STARTTLS).
    pub c2s_port: u16,
    /// Client-to-server port with TLS from the first byte (XEP-0368).
    pub c2s_tls_port: u16,
    /// External component port (XEP-0114).
    pub component_port: u16,
    /// HTTP port (file sharing).
    pub http_port: u16,
    dir: tempfile::TempDir,
}

impl Prosody {
    /// Starts a server on free ports and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        make_certificates_for(
            dir.path(),
            &[DOMAIN, MUC, MUC_UNARCHIVED, UPLOAD, COMPONENT],
        );
        std::fs::create_dir_all(dir.path().join("data")).expect("data directory");
        let mut server = Self {
            child: None,
            c2s_port: passerelle_testkit::free_port(),
            c2s_tls_port: passerelle_testkit::free_port(),
            component_port: passerelle_testkit::free_port(),
            http_port: passerelle_testkit::free_port(),
            dir,
        };
        std::fs::write(server.config(), server.config_text()).expect("write prosody.cfg.lua");
        server.spawn();
        server
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn config_text(&self) -> String {
        let d = self.dir.path().display();
        format!(
            r#"-- Throwaway test server: loopback only, no server-to-server, no rate limits.
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}"
admins = {{}}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "smacks"; "carbons"; "posix" }}
modules_disabled = {{ "s2s" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ {c2s_tls} }}
component_ports = {{ {component} }}
component_interfaces = {{ "127.0.0.1" }}
http_ports = {{ {http} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{}}
s2s_ports = {{}}
http_external_url = "http://127.0.0.1:{http}/"
http_default_host = "{UPLOAD}"
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
limits = {{ c2s = {{ rate = "1000mb/s" }} }}
log = {{ info = "{d}/prosody.log" }}
ssl = {{ certificate = "{d}/server.pem"; key = "{d}/server.key" }}

VirtualHost "{DOMAIN}"

Component "{MUC}" "muc"
  modules_enabled = {{ "muc_mam" }}
  muc_room_default_persistent = true
  max_history_messages = 1000
  muc_room_default_history_length = 1000

Component "{MUC_UNARCHIVED}" "muc"
  muc_room_default_persistent = true
  max_history_messages = 1000
  muc_room_default_history_length = 1000

Component "{UPLOAD}" "http_file_share"
  http_file_share_size_limit = 10485760

Component "{COMPONENT}"
  component_secret = "{COMPONENT_SECRET}"
"#,
            c2s = self.c2s_port,
            c2s_tls = self.c2s_tls_port,
            component = self.component_port,
            http = self.http_port,
        )
    }

    fn spawn(&mut self) {
        let mut command = Command::new(find_binary("PASSERELLE_PROSODY", &["prosody"]));
        command.arg("--config").arg(self.config()).arg("-F");
        self.child = Some(spawn_logged(command, &self.dir.path().join("out.log")));
        for port in [self.c2s_port, self.component_port, self.http_port] {
            assert!(
                wait_for_port(port, Duration::from_secs(15)),
                "prosody did not listen on {port} within 15 s; its log: {}",
                self.log()
            );
        }
    }

    /// The CA that signed the server's certificate (for `SSL_CERT_FILE` or a client's roots).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's directory (config, log, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged (never message text: Prosody logs at `info` here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    /// Creates the account `user@localhost`.
    pub fn register(&self, user: &str, password: &str) {
        let status = Command::new(find_binary("PASSERELLE_PROSODYCTL", &["prosodyctl"]))
            .arg("--config")
            .arg(self.config())
            .args(["register", user, DOMAIN, password])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run prosodyctl");
        assert!(status.success(), "registering {user}@{DOMAIN} failed");
    }

    /// Stops the server (by its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        kill_and_wait(&mut self.child);
    }

    /// Stops and starts the server again on the same ports, with the same accounts and rooms.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A raw connection as the external component [`COMPONENT`]: whatever bytes a test writes reach
/// the server as they are, with no XML library on our side, so a test can send what a hostile
/// client would (a stanza nested 20,000 levels deep). The component may send from any address in
/// its domain: it joins rooms and messages people as any of them. What the server sends is kept
/// so a test can wait for it.
pub struct RawComponent {
    write: tokio::net::tcp::OwnedWriteHalf,
    received: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl RawComponent {
    /// Connects to the server's component port and completes the handshake.
    pub async fn connect(server: &Prosody) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.component_port))
            .await
            .expect("connect to the component port");
        let (mut read, mut write) = tcp.into_split();
        write
            .write_all(
                format!(
                    "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                     xmlns:stream='http://etherx.jabber.org/streams' to='{COMPONENT}'>"
                )
                .as_bytes(),
            )
            .await
            .expect("send the stream header");
        let mut header = Vec::new();
        let id = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                let n = read.read(&mut buf).await.expect("read the server's header");
                assert!(n > 0, "the server closed the component stream");
                header.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&header);
                if let Some(start) = text.find(" id='").map(|i| i + 5)
                    && let Some(len) = text[start..].find('\'')
                {
                    break text[start..start + len].to_owned();
                }
                if let Some(start) = text.find(" id=\"").map(|i| i + 5)
                    && let Some(len) = text[start..].find('"')
                {
                    break text[start..start + len].to_owned();
                }
            }
        })
        .await
        .expect("the server's stream header within 10 s");
        let handshake = tokio_xmpp::parsers::component::Handshake::from_stream_id_and_password(
            id,
            COMPONENT_SECRET,
        );
        let proof: String = handshake
            .data
            .expect("a handshake digest")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write
            .write_all(format!("<handshake>{proof}</handshake>").as_bytes())
            .await
            .expect("send the handshake");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut got) = sink.lock() {
                    got.extend_from_slice(&buf[..n]);
                }
            }
        });
        let me = Self {
            write,
            received,
            reader,
        };
        assert!(
            me.wait_for("<handshake", Duration::from_secs(10)).await,
            "the server did not accept the component's handshake"
        );
        me
    }

    /// Writes `bytes` to the server as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.write
            .write_all(bytes)
            .await
            .expect("write to the server");
    }

    /// The last `n` bytes the server sent, as text (for a failing test's message).
    pub fn tail(&self, n: usize) -> String {
        self.received
            .lock()
            .map(|got| String::from_utf8_lossy(&got[got.len().saturating_sub(n)..]).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the server has sent `needle` (anywhere in what it sent so far).
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let seen = self
                .received
                .lock()
                .map(|got| String::from_utf8_lossy(&got).contains(needle))
                .unwrap_or(false);
            if seen {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for RawComponent {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

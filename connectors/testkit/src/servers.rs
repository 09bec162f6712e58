//! Real servers for tests, each started on a free loopback port in its own temporary directory and
//! stopped (by PID) when dropped. The test command installs them from Debian's packages.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server's binary: the path in the environment variable `env` if set, else the first of
/// `names` found in the usual system directories; panics naming the test command otherwise.
pub fn find_binary(env: &str, names: &[&str]) -> PathBuf {
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
    /// Its plain-text port on 127.0.0.1.
    pub port: u16,
    /// Its TLS port and the CA that signed its certificate, when started with [`Ngircd::start_tls`].
    pub tls: Option<(u16, PathBuf)>,
    dir: tempfile::TempDir,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(status.success(), "openssl {args:?} failed");
}

/// Makes a throwaway CA and a certificate for 127.0.0.1 / localhost signed by it, in `dir`.
/// Returns the CA file.
fn make_certificates(dir: &std::path::Path) -> PathBuf {
    make_certificates_for(dir, &["localhost"])
}

/// Makes a throwaway CA (`ca.pem`) and a certificate (`server.pem`, `server.key`) for 127.0.0.1
/// and the DNS `names`, signed by it, in `dir`. Returns the CA file.
pub fn make_certificates_for(dir: &std::path::Path, names: &[&str]) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=passerelle test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=IP:127.0.0.1{}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            names.iter().map(|n| format!(",DNS:{n}")).collect::<String>()
        ),
    )
    .expect("write ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // ngIRCd reads its key after dropping to an unprivileged user.
        let _ = std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o644),
        );
    }
    dir.join("ca.pem")
}

impl Ngircd {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = crate::free_port();
        let mut server = Self {
            child: None,
            port,
            tls: None,
            dir,
        };
        server.spawn();
        server
    }

    /// Starts a server with a TLS port too, its certificate signed by a throwaway CA.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = make_certificates(dir.path());
        let mut server = Self {
            child: None,
            port: crate::free_port(),
            tls: Some((crate::free_port(), ca)),
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
        let mut text = text;
        if let Some((tls_port, _)) = &self.tls {
            let d = self.dir.path();
            text.push_str(&format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {tls_port}\n",
                d.join("server.pem").display(),
                d.join("server.key").display()
            ));
        }
        std::fs::write(&conf, text).expect("write ngircd.conf");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755));
            let _ = std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644));
        }
        let mut command = Command::new(find_binary("PASSERELLE_NGIRCD", &["ngircd"]));
        command.arg("-n").arg("-f").arg(&conf);
        self.child = Some(spawn_logged(command, &self.dir.path().join("ngircd.log")));
        for port in std::iter::once(self.port).chain(self.tls.as_ref().map(|t| t.0)) {
            assert!(
                wait_for_port(port, Duration::from_secs(10)),
                "ngircd did not listen on {port} within 10 s"
            );
        }
    }

    /// Stops the server (by its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        kill_and_wait(&mut self.child);
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the server again on the same port after [`Ngircd::stop`] (an outage of the
    /// test's own length).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as with a
    /// server that hangs. Stopping or dropping it still ends it (SIGKILL).
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg("-STOP")
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -STOP ngircd failed");
        }
    }
}

/// Ends a test server's process (SIGKILL, by its PID) and waits for it, if it is running.
pub fn kill_and_wait(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts `command` with its output in `log`.
pub fn spawn_logged(mut command: Command, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start the test server")
}

/// A throwaway InspIRCd on 127.0.0.1 with its flood control off (ngIRCd relays at most 3 lines a
/// second from a client, hard-coded): for runs that must move thousands of lines. Debian package
/// `inspircd`; `PASSERELLE_INSPIRCD` overrides the binary. Stopped by PID when dropped.
pub struct Inspircd {
    child: Option<Child>,
    /// Its plain-text port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Inspircd {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = crate::free_port();
        let d = dir.path().display();
        let conf = dir.path().join("inspircd.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<server name="irc.passerelle.test" description="passerelle test server" network="test">
<admin name="tests" nick="tests" email="tests@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<power diepass="" restartpass="">
<connect name="tests" allow="127.0.0.1" timeout="20" pingfreq="120" hardsendq="4194304" softsendq="4194304" recvq="4194304" threshold="100000000" commandrate="100000000" fakelag="no" localmax="1000" globalmax="1000" useident="no" resolvehostnames="no" limit="5000" maxconnwarn="no">
<dns timeout="1">
<pid file="{d}/inspircd.pid">
<options defaultmodes="nt">
<performance clonesonconnect="no" timeskipwarn="0">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/inspircd.log">
"#
            ),
        )
        .expect("write inspircd.conf");
        let mut command = Command::new(find_binary("PASSERELLE_INSPIRCD", &["inspircd"]));
        command
            .arg(format!("--config={}", conf.display()))
            .arg("--nofork")
            .arg("--runasroot");
        let child = spawn_logged(command, &dir.path().join("out.log"));
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "inspircd did not listen on {port} within 10 s"
        );
        Self {
            child: Some(child),
            port,
            _dir: dir,
        }
    }
}

impl Drop for Inspircd {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx on loopback (Debian's package), serving one site file as it would be included from
/// the `http` block, with its own prefix, logs, pid file and temporary paths in a temporary
/// directory.
pub struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// A directory for the site's files (certificates, included snippets) before it starts.
    pub fn workdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // nginx's workers run as an unprivileged user, and read and write under it.
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        }
        dir
    }

    /// Starts nginx on `site` (a `server { }` file's text) in `dir` (from [`Nginx::workdir`]),
    /// waiting until `port` (the one the site listens on) accepts connections.
    pub fn start(dir: tempfile::TempDir, site: &str, port: u16) -> Self {
        let binary = find_binary("PASSERELLE_NGINX", &["nginx"]);
        let root = dir.path();
        for temp in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let path = root.join(temp);
            std::fs::create_dir_all(&path).expect("temp dir");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777));
            }
        }
        std::fs::write(root.join("site.conf"), site).expect("write site");
        let r = root.display();
        let main = format!(
            "worker_processes 1;\ndaemon off;\npid {r}/nginx.pid;\nerror_log {r}/error.log info;\n\
             events {{ worker_connections 128; }}\n\
             http {{\n  access_log {r}/access.log;\n  client_body_temp_path {r}/body;\n  \
             proxy_temp_path {r}/proxy;\n  fastcgi_temp_path {r}/fastcgi;\n  uwsgi_temp_path {r}/uwsgi;\n  \
             scgi_temp_path {r}/scgi;\n  include {r}/site.conf;\n}}\n"
        );
        std::fs::write(root.join("nginx.conf"), main).expect("write nginx.conf");
        let test = Command::new(&binary)
            .arg("-t")
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .output()
            .expect("run nginx -t");
        assert!(
            test.status.success(),
            "nginx refuses the configuration: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = Command::new(&binary)
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Self {
            child: Some(child),
            dir,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "nginx did not listen on {port}; its log:\n{}",
            nginx.error_log()
        );
        nginx
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// nginx's access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: nginx's fast shutdown; its workers go with the master.
            stop_with(&mut child, &[("TERM", 5)]);
        }
    }
}

/// Stops `child` by its PID: each signal in turn, waiting up to its seconds for the process to
/// exit, then SIGKILL.
pub fn stop_with(child: &mut Child, steps: &[(&str, u64)]) {
    let pid = child.id().to_string();
    for (signal, secs) in steps {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status();
        let deadline = Instant::now() + Duration::from_secs(*secs);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

//! The command line on good and bad configurations: `check` and `run` report every problem with
//! its key path and refuse to start; the example config is valid; environment overrides apply.

mod common;

use common::free_port;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn passerelle(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_passerelle"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run passerelle")
}

fn bad_config(dir: &std::path::Path, api_port: u16) -> std::path::PathBuf {
    let path = dir.join("bad.toml");
    let text = format!(
        r##"
colour = "blue"

[store]
path = "{data}/p.db"

[accounts."irc.main"]
kind = "irc"
nick = "bridge"
tls = false
sever = "typo.example"

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api_port}"
token_file = "{missing}"

[accounts.mystery]
rights = ["read", "admin"]

[[links]]
name = "l"
rooms = [{{ account = "irc.main", room = "#a" }}, {{ account = "api.gone", room = "x" }}, {{ account = "api.main", room = "y", direction = "both" }}]

[accounts."irc.other"]
kind = "irc"
server = "irc.example"
nick = "bridge"

[[links]]
name = "m"
rooms = [{{ account = "irc.other", room = "alice" }}, {{ account = "irc.other", room = "#ok" }}]
"##,
        data = dir.display(),
        missing = dir.join("no-such-secret").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

const EXPECTED: [&str; 8] = [
    "links[1].rooms[0].room: an IRC room is a channel name",
    "colour: unknown key",
    "accounts.\"irc.main\".sever: unknown key",
    "accounts.\"api.main\".token_file: cannot read",
    "accounts.mystery.kind: missing",
    "accounts.mystery.rights[1]: unknown right",
    "links[0].rooms[1].account: no account \"api.gone\"",
    "links[0].rooms[2].direction: unknown variant",
];

#[test]
fn check_reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_config(dir.path(), free_port());
    let out = passerelle(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in EXPECTED {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn run_refuses_a_bad_config_before_any_network_io() {
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let path = bad_config(dir.path(), api_port);
    let started = Instant::now();
    let out = passerelle(&["run", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in EXPECTED {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !dir.path().join("p.db").exists(),
        "the store was opened despite the errors"
    );
}

/// A port already in use for `http.listen` stops the daemon at once, with an error naming the key,
/// before any connector starts: nothing half-runs without its admin and webhook listener.
#[test]
fn a_taken_admin_port_stops_the_daemon_before_any_connector_starts() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().port();
    let api = free_port();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r##"
[store]
path = "{data}/p.db"
[http]
listen = "127.0.0.1:{admin}"
[accounts.a]
kind = "api"
listen = "127.0.0.1:{api}"
token = "a-long-enough-token-for-tests"
"##,
            data = dir.path().display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = passerelle(&["run", "-c", path.to_str().unwrap()], &[]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http.listen: cannot listen on 127.0.0.1:{admin}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("connector starting"),
        "a connector started: {stderr}"
    );
    drop(taken);
}

#[test]
fn secrets_are_never_printed_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        r#"
[accounts.api]
kind = "api"
listen = "not an address"
token = "s3cret-value-never-shown"
"#,
    )
    .unwrap();
    let out = passerelle(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("accounts.api.listen: not a socket address"),
        "{all}"
    );
    assert!(!all.contains("s3cret-value-never-shown"), "{all}");
}

#[test]
fn the_example_config_is_valid() {
    let example = &example_config();
    let out = passerelle(&["check", "-c", example], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `passerelle example-config` prints `config.example.toml` as it is in the repository, and what
/// it prints passes `check`.
#[test]
fn example_config_prints_the_repositorys_example() {
    let out = passerelle(&["example-config"], &[]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    let file = std::fs::read_to_string(example_config()).expect("config.example.toml");
    assert!(
        printed == file,
        "config.example.toml is not what example-config prints"
    );
    assert!(printed.contains("[accounts.") && printed.contains("[[links]]"));
}

/// The example runs as it is on loopback; listening beyond it with the example's placeholder
/// secrets is refused, each one named with the listener that exposes it.
#[test]
fn the_examples_secrets_are_refused_once_a_listener_leaves_loopback() {
    let example = &example_config();
    let out = passerelle(
        &["check", "-c", example],
        &[("PASSERELLE__HTTP__LISTEN", "0.0.0.0:9180")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "accounts.\"api.scripts\".token: is the example's placeholder",
        "accounts.\"api.bots\".token: is the example's placeholder",
    ] {
        assert!(stderr.contains(key), "{key} in {stderr}");
    }
    assert!(
        stderr.contains("http.listen = \"0.0.0.0:9180\""),
        "{stderr}"
    );
    assert!(!stderr.contains("change-me"), "no secret printed: {stderr}");
    // The container's environment: the admin listener on loopback, the public one on every
    // interface. The public one exposes the placeholders as much.
    let out = passerelle(
        &["check", "-c", example],
        &[
            ("PASSERELLE__HTTP__LISTEN", "127.0.0.1:9180"),
            ("PASSERELLE__HTTP__PUBLIC_LISTEN", "0.0.0.0:9181"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http.public_listen = \"0.0.0.0:9181\""),
        "{stderr}"
    );
    // The same port twice, or not an address, is named.
    for (value, want) in [
        (
            "127.0.0.1:9180",
            "http.public_listen: 127.0.0.1:9180 is http.listen too",
        ),
        ("everywhere", "http.public_listen: not a socket address"),
    ] {
        let out = passerelle(
            &["check", "-c", example],
            &[("PASSERELLE__HTTP__PUBLIC_LISTEN", value)],
        );
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{want} in {stderr}");
    }
    // An API account listening on every interface does the same.
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("\"127.0.0.1:4242\"", "\"[::]:4242\"");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exposed.toml");
    std::fs::write(&config, text).unwrap();
    let out = passerelle(&["check", "-c", config.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("accounts.\"api.scripts\".listen = \"[::]:4242\""),
        "{stderr}"
    );
}

#[test]
fn environment_overrides_apply_and_are_checked() {
    let example = &example_config();
    let out = passerelle(
        &["check", "-c", example],
        &[
            ("PASSERELLE__STORE__RETENTION_DAYS", "forever"),
            ("PASSERELLE__HTTP__LISTEN", "nowhere"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("store.retention_days: invalid type"),
        "{stderr}"
    );
    assert!(
        stderr.contains("http.listen: not a socket address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_example_config_runs_on_the_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let example = &example_config();
    let (admin, a, b) = (free_port(), free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let store = dir.path().join("data/passerelle.db");
    // The example's own API ports, moved to free ones so tests can run side by side. The quotes
    // are part of the match: a free port such as 42431 must not be taken for 4243 again.
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("\"127.0.0.1:4242\"", &format!("\"127.0.0.1:{a}\""))
        .replace("\"127.0.0.1:4243\"", &format!("\"127.0.0.1:{b}\""));
    assert_eq!(text.matches(&format!("\"127.0.0.1:{a}\"")).count(), 1);
    assert_eq!(text.matches(&format!("\"127.0.0.1:{b}\"")).count(), 1);
    let config = dir.path().join("example.toml");
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["run", "-c", config.to_str().unwrap()])
        .env("PASSERELLE__HTTP__LISTEN", &admin_addr)
        .env("PASSERELLE__STORE__PATH", store.to_str().unwrap())
        .stderr(log)
        .spawn()
        .expect("start");
    let mut daemon = ChildGuard(Some(child));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = false;
    while Instant::now() < deadline && !ready {
        ready = http
            .get(format!("http://{admin_addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "the example config did not become ready:\n{}",
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
    let health = http
        .get(format!("http://{admin_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // The two example API accounts are linked: a post on one reaches the other.
    let reader = http
        .get(format!("http://127.0.0.1:{b}/api/messages"))
        .bearer_auth("change-me-bots-token-0");
    let posted = http
        .post(format!("http://127.0.0.1:{a}/api/message"))
        .bearer_auth("change-me-scripts-token")
        .json(&serde_json::json!({"text": "hello", "username": "me", "gateway": "lobby"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 200);
    let mut delivered = serde_json::Value::Null;
    for _ in 0..50 {
        delivered = reader
            .try_clone()
            .unwrap()
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if delivered.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered[0]["text"], "hello", "{delivered}");
    assert_eq!(delivered[0]["username"], "me");
    assert!(store.exists());
    daemon.terminate();
}

struct ChildGuard(Option<std::process::Child>);

impl ChildGuard {
    fn terminate(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "exit status {status}");
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            panic!("did not stop on SIGTERM");
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `config.example.toml` of the checkout under test. The directory is read when the test runs,
/// not when it was built: clones at other paths share one target directory, and a test binary
/// that cargo found fresh may have been built from another clone.
fn example_config() -> String {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    format!("{dir}/config.example.toml")
}

/// One person's private chat never fans out without the operator's word: two private chats in
/// one link, or one private chat in two links, are refused by `check` naming the rooms; with
/// `private_fanout = true` on the links the same file is valid.
#[test]
fn private_chats_joined_or_shared_between_links_need_private_fanout() {
    let dir = tempfile::tempdir().unwrap();
    let config = |fanout: &str| {
        format!(
            r##"
[store]
path = "{data}/p.db"

[accounts.tg]
kind = "telegram"
token = "123456:ABCDEFabcdef0123456789"

[accounts.sig]
kind = "signal"
account = "+15550000000"
url = "http://127.0.0.1:9/api/v1/rpc"

[accounts."irc.main"]
kind = "irc"
server = "irc.example"
nick = "bridge"

[accounts.xmpp]
kind = "xmpp"
jid = "bridge@example.org"
password = "xmpp-password"

# Alice's Telegram chat and Bob's Signal chat in one link: each one's messages in the other's
# inbox.
[[links]]
name = "two-people"
{fanout}
rooms = [{{ account = "tg", room = "1001" }}, {{ account = "sig", room = "+15551112222" }}]

# Carol's Signal chat in two links: her messages in two channels.
[[links]]
name = "first"
{fanout}
rooms = [{{ account = "sig", room = "+15553334444" }}, {{ account = "irc.main", room = "#one" }}]
[[links]]
name = "second"
{fanout}
rooms = [{{ account = "sig", room = "+15553334444" }}, {{ account = "irc.main", room = "#two" }}]

# A group and a channel: nobody's private chat.
[[links]]
name = "groups"
rooms = [{{ account = "tg", room = "-1001234567890" }}, {{ account = "sig", room = "group:abcDEF123=" }}, {{ account = "irc.main", room = "#three" }}, {{ account = "xmpp", room = "room@conference.example.org" }}]

# Dave's XMPP direct chat and Erin's Telegram chat.
[[links]]
name = "xmpp-dm"
{fanout}
rooms = [{{ account = "xmpp", room = "dm:dave@example.org" }}, {{ account = "tg", room = "1002" }}]
"##,
            data = dir.path().display()
        )
    };
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config("")).unwrap();
    let out = passerelle(&["check", "-c", path.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "links[0].rooms[1].room: 1001 on tg and +15551112222 on sig are both one person's private chat",
        "links[1].rooms[0].room: +15553334444 on sig is one person's private chat and is in link \"second\" too",
        "links[2].rooms[0].room: +15553334444 on sig is one person's private chat and is in link \"first\" too",
        "links[4].rooms[1].room: dm:dave@example.org on xmpp and 1002 on tg are both one person's private chat",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("links[3]"),
        "a link of groups refused:\n{stderr}"
    );
    assert_eq!(stderr.matches("private chat").count(), 4, "{stderr}");

    std::fs::write(&path, config("private_fanout = true")).unwrap();
    let out = passerelle(&["check", "-c", path.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "refused with private_fanout = true:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `passerelle connector ACCOUNT COMMAND`, its `help`, its refusals, and the older
/// `matrix-registration` name, on a configuration with two appservice accounts and an IRC one.
#[test]
fn connector_commands_run_on_the_named_account_and_refuse_what_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let appservice = |name: &str, token: &str| {
        format!(
            "[accounts.\"{name}\"]\nkind = \"matrix\"\nmode = \"appservice\"\n\
             homeserver = \"https://matrix.example.org\"\nserver_name = \"example.org\"\n\
             as_token = \"{token}-as-0123456789abcdef0123456789\"\n\
             hs_token = \"{token}-hs-0123456789abcdef0123456789\"\n\
             registration_id = \"{name}\"\n"
        )
    };
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n\n{}\n{}\n[accounts.\"irc.libera\"]\nkind = \"irc\"\n",
        appservice("chat.one", "first"),
        appservice("chat.two", "second"),
    );
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let c = cfg.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = passerelle(args, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let refused = |args: &[&str]| {
        let out = passerelle(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("0123456789abcdef"), "a token in {err}");
        err
    };

    let yaml = ok(&["connector", "chat.two", "registration", "-c", c]);
    assert!(
        yaml.contains(&format!(
            "url: \"http://127.0.0.1:{port}/accounts/chat.two\""
        )),
        "{yaml}"
    );
    assert!(yaml.contains("id: \"chat.two\""), "{yaml}");
    assert!(ok(&["connector", "chat.one", "help", "-c", c]).contains("registration"));

    let err = refused(&["connector", "chat.one", "frobnicate", "-c", c]);
    assert!(
        err.contains("accounts.\"chat.one\"") && err.contains("frobnicate"),
        "{err}"
    );
    let err = refused(&["connector", "nobody", "registration", "-c", c]);
    assert!(err.contains("no account named \"nobody\""), "{err}");
    let err = refused(&["connector", "irc.libera", "registration", "-c", c]);
    assert!(err.contains("has no commands"), "{err}");

    // The older name: one account of the kind must be meant.
    let err = refused(&["matrix-registration", "-c", c]);
    assert!(err.contains("name one with --account"), "{err}");
    assert_eq!(
        ok(&["matrix-registration", "-c", c, "--account", "chat.two"]),
        yaml
    );
    let err = refused(&["no-such-command", "-c", c]);
    assert!(err.contains("no-such-command"), "{err}");
}

//! End-to-end: the configuration read again while the daemon runs (`passerelle reload`,
//! SIGHUP), between a real ngIRCd and the HTTP message API.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use std::time::Duration;

const TOKEN: &str = "reload-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_secs(3);

/// IRC and the API; `links` and the API's `rights` vary between versions of the file.
fn config(
    dir: &std::path::Path,
    ports: (u16, u16, u16),
    api_rights: &str,
    links: &str,
    extra: &str,
) -> String {
    config_with(dir, ports, api_rights, links, extra, "")
}

/// [`config`] with more keys for the IRC account.
fn config_with(
    dir: &std::path::Path,
    ports: (u16, u16, u16),
    api_rights: &str,
    links: &str,
    extra: &str,
    irc_extra: &str,
) -> String {
    let (irc, admin, api) = ports;
    format!(
        r##"
{head}
[accounts."irc.main"]
kind = "irc"
server = "127.0.0.1"
port = {irc}
tls = false
nick = "bridge"
send_rate_per_second = 0
{irc_extra}

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{api}"
token = "{TOKEN}"
rights = {api_rights}
{extra}
{links}
"##,
        head = common::base_config(dir, admin)
    )
}

const LOBBY: &str = r##"
[[links]]
name = "lobby"
rooms = [
  { account = "irc.main", room = "#a" },
  { account = "api.main", room = "lobby" },
]
"##;

const SECOND: &str = r##"
[[links]]
name = "second"
rooms = [
  { account = "irc.main", room = "#b" },
  { account = "api.main", room = "second" },
]
"##;

const RW: &str = r#"["read", "write"]"#;

/// The API's next message in `gateway`, skipping others, within `timeout`.
async fn next_in(api: &Api, gateway: &str, timeout: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        for m in api.messages().await {
            if m["gateway"] == gateway {
                return Some(m);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test]
async fn a_reload_adds_a_link_on_the_same_irc_connection_takes_a_right_away_at_once_and_refuses_a_broken_file()
 {
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = (irc.port, free_port(), free_port());
    // The file as it is at each step: the API's rights, the links, more accounts.
    let file =
        |rights: &str, links: &str, extra: &str| config(dir.path(), ports, rights, links, extra);
    let mut daemon = Daemon::start(dir.path(), &file(RW, LOBBY, ""), ports.1);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let api = Api::new(ports.2, TOKEN);
    let mut alice = IrcClient::connect(irc.port, "alice").await;
    alice.join("#a").await;
    alice.join("#b").await;
    let signon = alice.signon("bridge").await.expect("WHOIS bridge");

    alice.say("#a", "before any reload").await;
    let got = next_in(&api, "lobby", WAIT)
        .await
        .expect("#a reaches the API");
    assert_eq!(got["text"], "before any reload");
    alice.say("#b", "not linked yet").await;
    assert!(next_in(&api, "second", QUIET).await.is_none());

    // 1. A link added (with a channel the bridge is not in): `passerelle reload`.
    daemon.rewrite(&file(RW, &format!("{LOBBY}{SECOND}"), ""));
    let report = daemon.reload_ok();
    // Both follow their new rooms on the connection (the listener) they have.
    assert_eq!(
        report["rooms_changed"],
        serde_json::json!(["api.main", "irc.main"]),
        "{report}"
    );
    assert_eq!(report["restarted"], serde_json::json!([]), "{report}");
    assert_eq!(report["links"], 2);
    assert!(
        alice.wait_for_join("bridge", "#b", WAIT).await,
        "the bridge joins #b"
    );
    alice.say("#b", "after the link was added").await;
    let got = next_in(&api, "second", WAIT)
        .await
        .expect("#b reaches the API once linked");
    assert_eq!(got["text"], "after the link was added");
    // The same connection: signed on once, registered once, never quit.
    assert_eq!(
        alice.signon("bridge").await,
        Some(signon),
        "a new IRC connection"
    );
    assert!(!alice.saw_quit("bridge", Duration::from_millis(200)).await);
    assert_eq!(
        count(&daemon.logs(), "IRC registered"),
        1,
        "{}",
        daemon.logs()
    );

    // 2. The API's write right taken away, and IRC's nick format changed, by SIGHUP: IRC stops
    //    reaching the API at once; the API still reaches IRC (its read right stays), in the new
    //    format, on the same connection.
    daemon.rewrite(&config_with(
        dir.path(),
        ports,
        r#"["read"]"#,
        &format!("{LOBBY}{SECOND}"),
        "",
        r#"remote_nick_format = "[{nick}] ""#,
    ));
    daemon.hangup();
    let deadline = tokio::time::Instant::now() + WAIT;
    while count(&daemon.logs(), "configuration reloaded") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second reload in the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.say("#a", "after write was taken away").await;
    assert!(
        next_in(&api, "lobby", QUIET).await.is_none(),
        "a message reached an account without the write right"
    );
    api.say("from the api", "scripty", "lobby").await;
    let m = alice
        .next_message(WAIT)
        .await
        .expect("the API still reaches #a");
    assert_eq!(m.text, "[scripty] from the api");
    assert_eq!(
        count(&daemon.logs(), "IRC registered"),
        1,
        "{}",
        daemon.logs()
    );

    // 3. A broken file is refused with the problem named by its key; the running
    //    configuration stays and bridging goes on.
    daemon.rewrite(&file(r#"["read", "fly"]"#, &format!("{LOBBY}{SECOND}"), ""));
    let (code, out, err) = daemon.reload();
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(err.contains("accounts.\"api.main\".rights"), "{err}");
    daemon.hangup();
    let deadline = tokio::time::Instant::now() + WAIT;
    while count(&daemon.logs(), "new configuration refused") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP on a broken file not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.say("still bridging", "scripty", "second").await;
    let m = alice.next_message(WAIT).await.expect("bridging goes on");
    assert_eq!(
        (m.target.as_str(), m.text.as_str()),
        ("#b", "[scripty] still bridging")
    );

    // 4. An account added starts; removed again, it stops (its listener closes); the IRC
    //    connection is the same throughout.
    let second_api = free_port();
    let added = format!(
        "[accounts.\"api.extra\"]\nkind = \"api\"\nlisten = \"127.0.0.1:{second_api}\"\ntoken = \"{TOKEN}\"\n"
    );
    let extra_link = r##"
[[links]]
name = "extra"
rooms = [
  { account = "irc.main", room = "#a" },
  { account = "api.extra", room = "x" },
]
"##;
    daemon.rewrite(&file(RW, &format!("{LOBBY}{SECOND}{extra_link}"), &added));
    let report = daemon.reload_ok();
    assert_eq!(
        report["started"],
        serde_json::json!(["api.extra"]),
        "{report}"
    );
    let extra = Api::new(second_api, TOKEN);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut status = None;
    while status.is_none() && tokio::time::Instant::now() < deadline {
        status = extra
            .try_post(&serde_json::json!({"text": "from extra", "username": "x", "gateway": "x"}))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(200), "the new account answers");
    let m = alice
        .next_message(WAIT)
        .await
        .expect("the new account reaches #a");
    assert_eq!(m.text, "<x> from extra");

    daemon.rewrite(&file(RW, &format!("{LOBBY}{SECOND}"), ""));
    let report = daemon.reload_ok();
    assert_eq!(
        report["stopped"],
        serde_json::json!(["api.extra"]),
        "{report}"
    );
    assert!(
        extra
            .try_post(&serde_json::json!({"text": "gone", "username": "x", "gateway": "x"}))
            .await
            .is_none(),
        "the removed account still answers"
    );
    assert_eq!(
        alice.signon("bridge").await,
        Some(signon),
        "a new IRC connection"
    );
    assert_eq!(count(&daemon.logs(), "IRC registered"), 1);
    assert!(daemon.running());
    assert_eq!(daemon.stop(), Some(0));
}

#[tokio::test]
async fn a_removed_account_delivers_what_was_queued_for_it_before_it_stops() {
    drains_then_stops(false).await;
}

#[tokio::test]
async fn a_disabled_account_delivers_what_was_queued_for_it_before_it_stops() {
    drains_then_stops(true).await;
}

/// Six messages queued for a paced IRC account, then the account removed (or, `disable`,
/// disabled with its link kept) by a reload.
async fn drains_then_stops(disable: bool) {
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    // IRC paced at 2 lines a second: six messages queue for about three seconds.
    let config = |with_irc: bool| {
        let irc_part = if with_irc || disable {
            format!(
                "[accounts.\"irc.main\"]\nkind = \"irc\"\nenabled = {with_irc}\nserver = \"127.0.0.1\"\nport = {}\ntls = false\nnick = \"bridge\"\nsend_rate_per_second = 2\nsend_burst = 1\n\n[[links]]\nname = \"lobby\"\nrooms = [\n  {{ account = \"irc.main\", room = \"#a\" }},\n  {{ account = \"api.main\", room = \"lobby\" }},\n]\n",
                irc.port
            )
        } else {
            String::new()
        };
        format!(
            "{}\n{}\n{irc_part}",
            common::base_config(dir.path(), admin)
                .replace("shutdown_grace_secs = 5", "shutdown_grace_secs = 20"),
            common::api_account(api_port, TOKEN)
        )
    };
    let daemon = Daemon::start(dir.path(), &config(true), admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let mut alice = IrcClient::connect(irc.port, "alice").await;
    alice.join("#a").await;
    let api = Api::new(api_port, TOKEN);
    for i in 0..6 {
        api.say(&format!("queued {i}"), "s", "lobby").await;
    }
    // The IRC account and its link removed while most of the six still wait for it.
    daemon.rewrite(&config(false));
    let started = std::time::Instant::now();
    let report = daemon.reload_ok();
    let took = started.elapsed();
    assert_eq!(
        report["stopped"],
        serde_json::json!(["irc.main"]),
        "{report}"
    );
    assert!(
        took > Duration::from_secs(1),
        "the reload waited for the queue ({took:?})"
    );
    let got = alice.messages_until(WAIT, |m| m.len() >= 6).await;
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    let want: Vec<String> = (0..6).map(|i| format!("<s> queued {i}")).collect();
    assert_eq!(
        texts, want,
        "everything queued reached #a, in order, before the account stopped"
    );
    assert!(alice.saw_quit("bridge", WAIT).await, "the bridge left IRC");
    assert!(
        !daemon
            .logs()
            .contains("what is still queued for them is dropped")
    );
}

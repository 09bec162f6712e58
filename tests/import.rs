//! `passerelle import matterbridge`: configurations in matterbridge's documented format
//! (`tests/matterbridge/`), converted by the real binary, checked with `passerelle check`, and
//! run end to end where the networks are here (ngIRCd and the HTTP API), with a matterbridge API
//! script's requests replayed against the converted daemon.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn passerelle(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn import(dir: &Path, source: &str, extra: &[&str]) -> (String, String) {
    std::fs::write(dir.join("matterbridge.toml"), source).expect("written");
    let mut args = vec!["import", "matterbridge", "matterbridge.toml"];
    args.extend_from_slice(extra);
    let out = passerelle(&args, dir);
    assert!(out.status.success(), "import failed: {}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

fn check(dir: &Path, config: &str) {
    std::fs::write(dir.join("config.toml"), config).expect("written");
    let out = passerelle(&["check", "-c", "config.toml"], dir);
    assert!(
        out.status.success(),
        "check refused the converted file:\n{}{}\n{config}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn every_bridge_converts_checks_and_names_what_was_left_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, notes) = import(
        dir.path(),
        include_str!("matterbridge/every-bridge.toml"),
        &[],
    );
    check(dir.path(), &config);
    let t: toml::Table = toml::from_str(&config).expect("the output is TOML");
    let accounts = t["accounts"].as_table().expect("accounts");
    let kinds: Vec<(String, String)> = accounts
        .iter()
        .map(|(k, v)| (k.clone(), v["kind"].as_str().unwrap_or("").to_owned()))
        .collect();
    let want: Vec<(String, String)> = [
        ("api.local", "api"),
        ("discord.mine", "discord"),
        ("irc.libera", "irc"),
        ("irc.oftc", "irc"),
        ("matrix.neo", "matrix"),
        ("mattermost.team", "mattermost"),
        ("slack.work", "slack"),
        ("telegram.tg", "telegram"),
        ("whatsapp.phone", "whatsapp"),
        ("xmpp.jabber", "xmpp"),
    ]
    .iter()
    .map(|(a, k)| (a.to_string(), k.to_string()))
    .collect();
    assert_eq!(kinds, want);
    assert_eq!(
        t["general"]["remote_nick_format"].as_str(),
        Some("[{account}] <{nick}> ")
    );
    let libera = &accounts["irc.libera"];
    assert_eq!(libera["server"].as_str(), Some("irc.libera.chat"));
    assert_eq!(libera["port"].as_integer(), Some(6697));
    assert_eq!(libera["tls"].as_bool(), Some(true));
    assert_eq!(libera["sasl_username"].as_str(), Some("mybridge"));
    assert_eq!(libera["send_rate_per_second"].as_float(), Some(2.0));
    assert_eq!(libera["ping_interval_secs"].as_integer(), Some(120));
    assert_eq!(
        libera["remote_nick_format"].as_str(),
        Some("<{nopingnick}> ")
    );
    // Secrets are in files only the operator reads, named by *_file keys.
    let sasl = Path::new(libera["sasl_password_file"].as_str().expect("a file"));
    assert_eq!(
        std::fs::read_to_string(sasl).unwrap(),
        "irc-sasl-secret-canary\n"
    );
    let keys = Path::new(libera["channel_keys_file"].as_str().expect("a file"));
    assert_eq!(
        std::fs::read_to_string(keys).unwrap(),
        "#bridge channel-key-canary\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sasl).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(
        !config.contains("canary"),
        "a secret was written inline:\n{config}"
    );
    assert_eq!(accounts["whatsapp.phone"]["enabled"].as_bool(), Some(false));
    // Slack: the bot token carried over; disabled until the Socket Mode app token is there.
    assert_eq!(accounts["slack.work"]["kind"].as_str(), Some("slack"));
    assert_eq!(accounts["slack.work"]["enabled"].as_bool(), Some(false));
    let slack_token =
        std::fs::read_to_string(accounts["slack.work"]["bot_token_file"].as_str().unwrap())
            .unwrap();
    assert_eq!(slack_token.trim(), "xoxb-slack-canary");
    assert_eq!(
        accounts["mattermost.team"]["url"].as_str(),
        Some("https://chat.example.org:8065")
    );
    assert_eq!(accounts["mattermost.team"]["team"].as_str(), Some("crew"));
    assert!(
        accounts["mattermost.team"]
            .get("enabled")
            .is_none_or(|e| e.as_bool() == Some(true)),
        "a token is all it needs"
    );
    assert_eq!(
        accounts["discord.mine"]["guild"].as_str(),
        Some("My Great Server")
    );
    assert_eq!(
        accounts["matrix.neo"]["user"].as_str(),
        Some("@bridgebot:matrix.example.org")
    );
    assert_eq!(
        accounts["xmpp.jabber"]["server"].as_str(),
        Some("jabber.example.org")
    );
    // The API's 9-character token was replaced by a long random one, and said so.
    let api_token =
        std::fs::read_to_string(accounts["api.local"]["token_file"].as_str().unwrap()).unwrap();
    assert_eq!(api_token.trim().len(), 32);
    let links = t["links"].as_array().expect("links");
    let rooms = |name: &str| -> Vec<(String, String, String)> {
        let link = links
            .iter()
            .find(|l| l["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("link {name}"));
        link["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["account"].as_str().unwrap().to_owned(),
                    r["room"].as_str().unwrap().to_owned(),
                    r.get("direction")
                        .and_then(|d| d.as_str())
                        .unwrap_or("inout")
                        .to_owned(),
                )
            })
            .collect()
    };
    let s = |a: &str, r: &str, d: &str| (a.to_owned(), r.to_owned(), d.to_owned());
    assert_eq!(
        rooms("gateway1"),
        vec![
            s("irc.libera", "#bridge", "inout"),
            s("discord.mine", "123456789012345678", "inout"),
            s("discord.mine", "#general", "inout"),
            s("xmpp.jabber", "bridge@conference.example.org", "inout"),
            s("api.local", "gateway1", "inout"),
            s("slack.work", "#general", "inout"),
            s("mattermost.team", "~town-square", "inout"),
            s("telegram.tg", "-1001234567890", "in"),
            s("matrix.neo", "#bridge:example.org", "out"),
        ]
    );
    assert_eq!(
        rooms("in-and-out"),
        // The in and the out of the same channel merge into both ways.
        vec![
            s("irc.libera", "#both", "inout"),
            s("irc.oftc", "#both", "inout")
        ]
    );
    assert_eq!(
        rooms("same.#one"),
        vec![
            s("irc.libera", "#one", "inout"),
            s("irc.oftc", "#one", "inout")
        ]
    );
    assert!(
        links
            .iter()
            .all(|l| l["name"].as_str() != Some("switched-off"))
    );
    for expected in [
        "[slack.work]: passerelle uses Socket Mode",
        "Slack channel \"general\" is found by name",
        "matterbridge's `steam` bridge",
        "matterbridge's `zulip` bridge",
        "whatsmeow",
        "Discord channel \"general\" is found by name",
        "[irc.libera] ignorenicks: not carried over",
        "[tengo]",
        "[api.local]'s Token was 9 characters",
        "\"switched-off\" is not enabled",
        "{PROTOCOL} became {account}",
    ] {
        assert!(
            notes.contains(expected),
            "stderr lacks {expected:?}:\n{notes}"
        );
    }
    assert!(!notes.contains("canary"), "a secret reached stderr");
}

#[test]
fn inline_secrets_are_written_inline_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = import(
        dir.path(),
        include_str!("matterbridge/every-bridge.toml"),
        &["--inline-secrets"],
    );
    check(dir.path(), &config);
    assert!(
        config.contains("token = \"discord-bot-token-canary\""),
        "{config}"
    );
    assert!(config.contains("sasl_password = \"irc-sasl-secret-canary\""));
    // A channel key has no inline form that keeps it out of the links: it stays a file.
    assert!(config.contains("channel_keys_file = "));
    assert!(!config.contains("sasl_password_file"));
}

#[test]
fn what_is_not_a_matterbridge_file_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.toml"), "[irc.x\nServer=").unwrap();
    let out = passerelle(&["import", "matterbridge", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.toml: not a TOML file"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let out = passerelle(&["import", "matterbridge", "missing.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

/// A matterbridge set-up of IRC and its API, converted, run, and driven by the requests a
/// matterbridge API script makes; the answers are compared with what matterbridge's API gives
/// (bridge/api/api.go: the post echoed with `channel` and `protocol` "api" and the API's
/// account, `/api/health` "OK", `/api/messages` a JSON array of messages).
#[tokio::test]
async fn a_converted_irc_and_api_set_up_runs_and_answers_a_matterbridge_script_alike() {
    const TOKEN: &str = "matterbridge-api-token-0123456789";
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let source = format!(
        r##"
[irc.local]
Server="127.0.0.1:{irc}"
Nick="bridge"
RemoteNickFormat="<{{NICK}}> "

[api.scripts]
BindAddress="127.0.0.1:{api_port}"
Token="{TOKEN}"
Buffer=100

[[gateway]]
name="lobby"
enable=true
    [[gateway.inout]]
    account="irc.local"
    channel="#mb"
    [[gateway.inout]]
    account="api.scripts"
    channel="api"
"##,
        irc = irc.port
    );
    let (config, _) = import(dir.path(), &source, &["--inline-secrets"]);
    check(dir.path(), &config);
    let admin = free_port();
    let head = common::base_config(dir.path(), admin);
    let daemon = Daemon::start(dir.path(), &format!("{head}\n{config}"), admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    let mut ircer = IrcClient::connect(irc.port, "ircer").await;
    ircer.join("#mb").await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api_port}");
    // The script's requests, as matterbridge's README shows them.
    let health = http
        .get(format!("{base}/api/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(
        (health.status().as_u16(), health.text().await.unwrap()),
        (200, "OK".to_owned())
    );
    let api = Api::new(api_port, TOKEN);
    let (status, echo) = api
        .post(json!({"text": "hello from a script", "username": "scriptbot", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    for (field, want) in [
        ("text", "hello from a script"),
        ("username", "scriptbot"),
        ("gateway", "lobby"),
        ("channel", "api"),
        ("protocol", "api"),
        ("account", "api.scripts"),
    ] {
        assert_eq!(echo[field].as_str(), Some(want), "{field} in {echo}");
    }
    assert!(
        echo["timestamp"].as_str().is_some_and(|t| t.contains('T')),
        "{echo}"
    );
    let m = ircer.next_message(WAIT).await.expect("IRC sees the script");
    assert_eq!(m.text, "<scriptbot> hello from a script");
    ircer.say("#mb", "hi script").await;
    let mut seen: Vec<Value> = Vec::new();
    for _ in 0..100 {
        seen.extend(api.messages().await);
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let msg = seen.first().expect("the script reads IRC's message");
    for (field, want) in [
        ("text", "hi script"),
        ("username", "ircer"),
        ("gateway", "lobby"),
        ("account", "irc.local"),
        ("protocol", "irc"),
    ] {
        assert_eq!(msg[field].as_str(), Some(want), "{field} in {msg}");
    }
    // A wrong token is refused as matterbridge's key check refuses it.
    let wrong = http
        .post(format!("{base}/api/message"))
        .bearer_auth("not-the-token")
        .json(&json!({"text": "x", "username": "y", "gateway": "lobby"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(wrong.status().as_u16(), 401);
    drop(daemon);
}

//! End-to-end: the real `passerelle` binary between the fake of the Telegram Bot API, a real
//! ngIRCd and the HTTP message API; and restarts of the daemon in the middle of a stream of
//! Telegram updates.

mod common;

use common::{Api, Daemon, free_port};
use passerelle_telegram::testing::{FakeTelegram, User};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";
const BOT: &str = "123456789:AAE-e2e_bot_token";
const GROUP: i64 = -1001000000001;
const OTHER: i64 = -1001000000002;
const WAIT: Duration = Duration::from_secs(20);

struct Bridge {
    fake: std::sync::Arc<FakeTelegram>,
    irc: Ngircd,
    dir: tempfile::TempDir,
    daemon: Daemon,
    api_port: u16,
}

/// The bridge, with `mode` lines for the Telegram account (`{admin}` stands for the admin port).
async fn start_with(mode: &str) -> Bridge {
    let fake = FakeTelegram::start(BOT).await;
    fake.add_chat(GROUP, "supergroup", "Lobby", false);
    fake.add_chat(OTHER, "supergroup", "Other", false);
    let irc = Ngircd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, api_port) = (free_port(), free_port());
    let mode = mode.replace("{admin}", &admin.to_string());
    let config = format!(
        r##"
{head}
[accounts."tg"]
kind = "telegram"
token = "{BOT}"
api_base = "{api}"
{mode}

{irc_account}
{api_account}
[[links]]
name = "lobby"
rooms = [
  {{ account = "tg", room = "{GROUP}" }},
  {{ account = "irc.main", room = "#tg" }},
  {{ account = "api.main", room = "lobby" }},
]

[[links]]
name = "other"
rooms = [
  {{ account = "tg", room = "{OTHER}" }},
  {{ account = "irc.main", room = "#other" }},
]
"##,
        head = common::base_config(dir.path(), admin),
        api = fake.api_base(),
        irc_account = common::irc_account(irc.port),
        api_account = common::api_account(api_port, TOKEN),
    );
    let daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(30)).await;
    Bridge {
        fake: std::sync::Arc::new(fake),
        irc,
        dir,
        daemon,
        api_port,
    }
}

async fn start(poll_secs: u64) -> Bridge {
    start_with(&format!("poll_timeout_secs = {poll_secs}")).await
}

async fn bot_texts(fake: &FakeTelegram, chat: i64, n: usize) -> Vec<String> {
    common::wait_for(WAIT, || fake.bot_texts(chat), |got| got.len() >= n).await
}

#[tokio::test]
async fn a_telegram_group_reaches_irc_and_the_api_and_back() {
    let b = start(2).await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#tg").await;
    irc.join("#other").await;
    let ada = User::new(5002, "Ada");
    let first = b.fake.user_says(GROUP, &ada, "hello from telegram");
    let m = irc.next_message(WAIT).await.expect("IRC sees it");
    assert_eq!(
        (m.target.as_str(), m.text.as_str()),
        ("#tg", "<Ada> hello from telegram")
    );
    let a = stream.next(WAIT).await.expect("the API sees it");
    assert_eq!(
        (
            a["text"].as_str(),
            a["username"].as_str(),
            a["gateway"].as_str()
        ),
        (Some("hello from telegram"), Some("Ada"), Some("lobby"))
    );
    // An edit reaches IRC as a correction and the API as an edit of the same message.
    b.fake
        .user_edits(GROUP, &ada, first, "hello from telegram!");
    let m = irc.next_message(WAIT).await.expect("IRC sees the edit");
    assert_eq!(m.text, "<Ada> hello from telegram! (edited)");
    let e = stream.next(WAIT).await.expect("the API sees the edit");
    assert_eq!(e["id"], a["id"], "{e} vs {a}");
    // IRC answers: it goes to this group only.
    irc.say("#tg", "hi Ada").await;
    assert_eq!(bot_texts(&b.fake, GROUP, 1).await, vec!["<ircer> hi Ada"]);
    let (status, _) = api
        .post(json!({"text": "from the api", "username": "bot", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        bot_texts(&b.fake, GROUP, 2).await,
        vec!["<ircer> hi Ada", "<bot> from the api"]
    );
    assert!(
        b.fake.bot_texts(OTHER).is_empty(),
        "nothing went to the other group"
    );
    let sent = b
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "sendMessage")
        .map(|c| c.params)
        .collect::<Vec<_>>();
    assert_eq!(sent[0], json!({"chat_id": GROUP, "text": "<ircer> hi Ada"}));
}

/// Telegram people post a numbered stream while the daemon is stopped and started again three
/// times (SIGKILL, SIGTERM, SIGKILL). Every update must be bridged (none lost) and stored once
/// (none bridged twice); IRC, which has no idempotency key, may repeat at most one line per kill
/// (see docs/reliability.md).
#[tokio::test]
async fn restarts_mid_stream_lose_no_update_and_bridge_none_twice() {
    const N: usize = 60;
    let mut b = start(1).await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#tg").await;
    let fake = b.fake.clone();
    let poster = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let ada = User::new(5002, "Ada");
            for i in 0..N {
                fake.user_says(GROUP, &ada, &format!("tg {i:03}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let collector = common::collect_irc(irc, N);
    common::kill_term_kill(&mut b.daemon).await;
    poster.await.expect("the poster ran");
    let lines = collector.await.expect("the collector ran");
    let want: Vec<String> = (0..N).map(|i| format!("<Ada> tg {i:03}")).collect();
    let repeats = common::check_stream(&lines, &want, 2);
    // The store holds exactly one event per Telegram message: no update was bridged twice.
    b.daemon.stop();
    let events = common::stored_events(b.dir.path(), "tg");
    assert_eq!(events, N as i64, "events stored for {N} Telegram messages");
    assert_eq!(
        fake.pending_updates(),
        0,
        "every update was confirmed to Telegram"
    );
    println!("telegram restarts: {N} sent, 0 lost, 0 bridged twice, {repeats} IRC repeat(s)");
}

/// Webhook mode through the real daemon: Telegram's calls reach IRC; a call with a wrong secret
/// is refused unread, a malformed one with the right secret is refused, and neither bridges.
#[tokio::test]
async fn webhook_mode_bridges_and_refuses_a_wrong_secret() {
    const SECRET: &str = "e2e_webhook-secret-0123456789abcdef";
    let b = start_with(&format!(
        "mode = \"webhook\"\nwebhook_url = \"http://127.0.0.1:{{admin}}/hooks/tg\"\nwebhook_secret = \"{SECRET}\""
    ))
    .await;
    let (url, secret) = b.fake.webhook().expect("the daemon set its webhook");
    assert_eq!(secret, SECRET);
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#tg").await;
    let ada = User::new(5002, "Ada");
    b.fake.user_says(GROUP, &ada, "by webhook");
    let m = irc.next_message(WAIT).await.expect("IRC sees it");
    assert_eq!(m.text, "<Ada> by webhook");
    let http = reqwest::Client::new();
    let forged = json!({"update_id": 1, "message": {"message_id": 9, "date": 1,
        "chat": {"id": GROUP, "type": "supergroup"}, "from": {"id": 6, "first_name": "Eve"},
        "text": "forged"}});
    for (secret, body, want) in [
        (Some("guess"), forged.to_string(), 401),
        (None, forged.to_string(), 401),
        (Some(SECRET), "{\"message\":".to_owned(), 400),
        (Some(SECRET), "{\"no_update_id\": true}".to_owned(), 400),
    ] {
        let mut req = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        assert_eq!(
            req.send()
                .await
                .expect("the hook answers")
                .status()
                .as_u16(),
            want
        );
    }
    assert!(
        irc.next_message(Duration::from_secs(2)).await.is_none(),
        "nothing refused was bridged"
    );
    assert_eq!(
        b.fake.pending_update_ids().len(),
        0,
        "every real update was answered 200"
    );
}

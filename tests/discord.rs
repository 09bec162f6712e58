//! End-to-end: the real `passerelle` binary between the fake of Discord's REST API and Gateway, a
//! real ngIRCd and the HTTP message API; and restarts of the daemon in the middle of a stream of
//! Discord messages.

mod common;

use common::{Api, Daemon};
use passerelle_discord::testing::{FakeDiscord, User};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";
const BOT: &str = "MTAwMDAwMQ.e2e.discord-bot-token";
const LOBBY: u64 = 3_000_001;
const OTHER: u64 = 3_000_002;
const WAIT: Duration = Duration::from_secs(20);

struct Bridge {
    fake: Arc<FakeDiscord>,
    irc: Ngircd,
    dir: tempfile::TempDir,
    daemon: Daemon,
    api_port: u16,
}

async fn start() -> Bridge {
    let fake = FakeDiscord::start(BOT).await;
    fake.add_text_channel(LOBBY, "lobby");
    fake.add_text_channel(OTHER, "other");
    let (api, gateway) = (fake.api_base(), fake.gateway_url());
    let b = common::irc_api_bridge(
        "discord",
        &format!(
            r#"[accounts."discord"]
kind = "discord"
token = "{BOT}"
api_base = "{api}"
gateway_url = "{gateway}""#
        ),
        &LOBBY.to_string(),
        "#dc",
        &OTHER.to_string(),
        TOKEN,
    )
    .await;
    let fake = Arc::new(fake);
    common::wait_for(WAIT, || fake.connected(), |c| *c).await;
    Bridge {
        fake,
        irc: b.irc,
        dir: b.dir,
        daemon: b.daemon,
        api_port: b.api_port,
    }
}

/// The texts the bridge posted in `channel` (through its webhook or as the bot), with the name
/// each was posted under.
fn posted(fake: &FakeDiscord, channel: u64) -> Vec<(String, String)> {
    fake.messages_in(channel)
        .into_iter()
        .filter(|m| m.author["bot"] == json!(true))
        .map(|m| {
            let name = m.author["username"].as_str().unwrap_or("").to_owned();
            (name, m.content)
        })
        .collect()
}

#[tokio::test]
async fn a_discord_channel_reaches_irc_and_the_api_and_back() {
    let b = start().await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#dc").await;
    irc.join("#other").await;
    let mut ana = User::new(6001, "ana");
    ana.global_name = Some("Ana".into());
    let first = b.fake.user_says(LOBBY, &ana, "hello from **discord**");
    let m = irc.next_message(WAIT).await.expect("IRC sees it");
    assert_eq!(
        (m.target.as_str(), m.text.as_str()),
        ("#dc", "<Ana> hello from **discord**")
    );
    let a = stream.next(WAIT).await.expect("the API sees it");
    assert_eq!(
        (a["username"].as_str(), a["gateway"].as_str()),
        (Some("Ana"), Some("lobby"))
    );
    b.fake.user_edits(first, "hello from discord!");
    let m = irc.next_message(WAIT).await.expect("IRC sees the edit");
    assert_eq!(m.text, "<Ana> hello from discord! (edited)");
    // IRC and the API answer: each through the channel's one webhook, under its own name, and
    // only to this channel.
    irc.say("#dc", "hi Ana @everyone").await;
    let (status, _) = api
        .post(json!({"text": "from the api", "username": "bot", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200);
    let m = irc
        .next_message(WAIT)
        .await
        .expect("IRC sees the API's message");
    assert_eq!(m.text, "<bot> from the api");
    let mut got = common::wait_for(WAIT, || posted(&b.fake, LOBBY), |p| p.len() >= 2).await;
    // Two origins: each keeps its own order, not one against the other.
    got.sort();
    assert_eq!(
        got,
        vec![
            ("bot".to_owned(), "from the api".to_owned()),
            ("ircer".to_owned(), "hi Ana @everyone".to_owned()),
        ]
    );
    let executes: Vec<_> = b
        .fake
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.path.starts_with("webhooks/"))
        .collect();
    assert_eq!(executes.len(), 2);
    assert!(
        executes
            .iter()
            .all(|q| q.body["allowed_mentions"] == json!({"parse": []})),
        "bridged text pings nobody"
    );
    assert_eq!(b.fake.webhooks_in(LOBBY).len(), 1, "one webhook, reused");
    assert!(
        posted(&b.fake, OTHER).is_empty(),
        "nothing went to the other channel"
    );
    // The webhook's messages come back on the Gateway: none is bridged back to IRC.
    assert!(
        irc.next_message(Duration::from_secs(2)).await.is_none(),
        "an own message came back"
    );
}

/// Discord people post a numbered stream while the daemon is stopped and started again three
/// times (SIGKILL, SIGTERM, SIGKILL). A SIGTERM saves the session, which the next start resumes;
/// after a SIGKILL the session is new and the gap is read from the channel's history. Every
/// message must be bridged (none lost) and stored once (none bridged twice); IRC, which has no
/// idempotency key, may repeat at most one line per kill.
#[tokio::test]
async fn restarts_mid_stream_lose_no_message_and_bridge_none_twice() {
    const N: usize = 60;
    let mut b = start().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#dc").await;
    let fake = b.fake.clone();
    let poster = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let ana = User::new(6001, "Ana");
            for i in 0..N {
                fake.user_says(LOBBY, &ana, &format!("dc {i:03}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let collector = common::collect_irc(irc, N);
    common::kill_term_kill(&mut b.daemon).await;
    poster.await.expect("the poster ran");
    let lines = collector.await.expect("the collector ran");
    let want: Vec<String> = (0..N).map(|i| format!("<Ana> dc {i:03}")).collect();
    let repeats = common::check_stream(&lines, &want, 2);
    b.daemon.stop();
    let events = common::stored_events(b.dir.path(), "discord");
    assert_eq!(events, N as i64, "events stored for {N} Discord messages");
    assert!(
        fake.resumes() >= 1,
        "the SIGTERM's saved session was resumed"
    );
    println!(
        "discord restarts: {N} sent, 0 lost, 0 bridged twice, {repeats} IRC repeat(s), {} identifies, {} resumes",
        fake.identifies().len(),
        fake.resumes()
    );
}

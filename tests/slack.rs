//! End-to-end: the real `passerelle` binary between the fake of Slack's Web API and Socket Mode,
//! a real ngIRCd and the HTTP message API; and restarts of the daemon in the middle of a stream of
//! Slack messages.

mod common;

use common::{Api, Daemon};
use passerelle_slack::testing::{BOT_ID, FakeSlack, User};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";
const BOT: &str = "xoxb-2000-3000-e2eSlackBotToken";
const APP: &str = "xapp-1-A0FAKEAPP-4000-e2eSlackAppToken";
const LOBBY: &str = "C0LOBBY001";
const OTHER: &str = "C0OTHER001";
const WAIT: Duration = Duration::from_secs(20);

struct Bridge {
    fake: Arc<FakeSlack>,
    irc: Ngircd,
    dir: tempfile::TempDir,
    daemon: Daemon,
    api_port: u16,
}

async fn start() -> Bridge {
    let fake = FakeSlack::start(BOT, APP).await;
    fake.add_channel(LOBBY, "lobby");
    fake.add_channel(OTHER, "other");
    let api = fake.api_base();
    let b = common::irc_api_bridge(
        "slack",
        &format!(
            r#"[accounts."slack"]
kind = "slack"
bot_token = "{BOT}"
app_token = "{APP}"
api_base = "{api}""#
        ),
        LOBBY,
        "#sl",
        "#other",
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

/// What the bridge posted in `channel`: the name it posted under and the text.
fn posted(fake: &FakeSlack, channel: &str) -> Vec<(String, String)> {
    fake.messages_in(channel)
        .into_iter()
        .filter(|m| m.bot_id.as_deref() == Some(BOT_ID))
        .map(|m| (m.username.unwrap_or_default(), m.text))
        .collect()
}

#[tokio::test]
async fn a_slack_channel_reaches_irc_and_the_api_and_back() {
    let b = start().await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#sl").await;
    irc.join("#other").await;
    let ana = User::new("U0ANA00001", "ana", "Ana");
    let bo = User::new("U0BO000001", "bo", "Bo");
    b.fake.add_user(&bo);
    let first = b.fake.user_says(
        LOBBY,
        &ana,
        "hello from *slack*, <@U0BO000001> &amp; <https://example.org|a site>",
    );
    let m = irc.next_message(WAIT).await.expect("IRC sees it");
    assert_eq!(
        (m.target.as_str(), m.text.as_str()),
        (
            "#sl",
            "<Ana> hello from *slack*, @Bo & a site (https://example.org)"
        )
    );
    let a = stream.next(WAIT).await.expect("the API sees it");
    assert_eq!(
        (a["username"].as_str(), a["gateway"].as_str()),
        (Some("Ana"), Some("lobby"))
    );
    b.fake.user_edits(LOBBY, &first, "hello from slack!");
    let m = irc.next_message(WAIT).await.expect("IRC sees the edit");
    assert_eq!(m.text, "<Ana> hello from slack! (edited)");
    // IRC and the API answer: each posted under its own name, escaped so that nothing pings.
    irc.say("#sl", "hi Ana <!channel> & <@U0ANA00001>").await;
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
    got.sort();
    assert_eq!(
        got,
        vec![
            ("bot".to_owned(), "from the api".to_owned()),
            (
                "ircer".to_owned(),
                "hi Ana &lt;!channel&gt; &amp; &lt;@U0ANA00001&gt;".to_owned()
            ),
        ]
    );
    assert!(
        posted(&b.fake, OTHER).is_empty(),
        "nothing went to the other channel"
    );
    // The room given by name works both ways.
    b.fake.user_says(OTHER, &bo, "in other");
    let m = irc.next_message(WAIT).await.expect("IRC sees #other");
    assert_eq!(
        (m.target.as_str(), m.text.as_str()),
        ("#other", "<Bo> in other")
    );
    // Our posts come back as events: none is bridged back to IRC.
    assert!(
        irc.next_message(Duration::from_secs(2)).await.is_none(),
        "an own message came back"
    );
    assert_eq!(b.fake.unacknowledged(), 0, "every envelope acknowledged");
}

/// Slack people post a numbered stream while the daemon is killed (SIGKILL), stopped (SIGTERM)
/// and killed again. An envelope is acknowledged only once stored: what a kill cut short is
/// delivered again by Slack on the next connection, and its copy is dropped by the daemon. Every
/// message must be bridged (none lost) and stored once (none bridged twice); IRC, which has no
/// idempotency key, may repeat at most one line per kill.
#[tokio::test]
async fn restarts_mid_stream_lose_no_message_and_bridge_none_twice() {
    const N: usize = 60;
    let mut b = start().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#sl").await;
    let fake = b.fake.clone();
    let poster = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let ana = User::new("U0ANA00001", "Ana", "");
            for i in 0..N {
                fake.user_says(LOBBY, &ana, &format!("sl {i:03}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let collector = common::collect_irc(irc, N);
    common::kill_term_kill(&mut b.daemon).await;
    poster.await.expect("the poster ran");
    let lines = collector.await.expect("the collector ran");
    let want: Vec<String> = (0..N).map(|i| format!("<Ana> sl {i:03}")).collect();
    let repeats = common::check_stream(&lines, &want, 2);
    let unacknowledged = fake.unacknowledged();
    b.daemon.stop();
    let events = common::stored_events(b.dir.path(), "slack");
    assert_eq!(events, N as i64, "events stored for {N} Slack messages");
    assert_eq!(
        unacknowledged, 0,
        "every envelope was acknowledged in the end"
    );
    assert_eq!(fake.dropped(), 0, "Slack never gave up on one");
    println!(
        "slack restarts: {N} sent, 0 lost, 0 bridged twice, {repeats} IRC repeat(s), {} deliveries for {N} envelopes, {} connections",
        fake.deliveries(),
        fake.connections()
    );
}

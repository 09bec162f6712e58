//! End-to-end: the real `passerelle` binary between the fake of Mattermost's REST API and
//! WebSocket, a real ngIRCd and the HTTP message API; and restarts of the daemon in the middle of
//! a stream of Mattermost posts.

mod common;

use common::{Api, Daemon};
use passerelle_mattermost::testing::{BOT_USER, FakeMattermost, User};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::servers::Ngircd;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";
const MM: &str = "e2emattermosttoken00000001";
const LOBBY: &str = "lobby000000000000000000001";
const OTHER: &str = "other000000000000000000001";
const WAIT: Duration = Duration::from_secs(20);

struct Bridge {
    fake: Arc<FakeMattermost>,
    irc: Ngircd,
    dir: tempfile::TempDir,
    daemon: Daemon,
    api_port: u16,
}

async fn start() -> Bridge {
    let fake = FakeMattermost::start(MM).await;
    fake.add_channel(LOBBY, "crew", "lobby");
    fake.add_channel(OTHER, "crew", "other");
    let url = fake.url();
    let b = common::irc_api_bridge(
        "mattermost",
        &format!(
            r#"[accounts."mattermost"]
kind = "mattermost"
url = "{url}"
token = "{MM}"
team = "crew""#
        ),
        LOBBY,
        "#mm",
        "~other",
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

/// What the bridge posted in `channel`: the name it posted as and the text.
fn posted(fake: &FakeMattermost, channel: &str) -> Vec<(String, String)> {
    fake.posts_in(channel)
        .into_iter()
        .filter(|p| p.user_id == BOT_USER)
        .map(|p| {
            (
                p.props["override_username"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                p.message,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_mattermost_channel_reaches_irc_and_the_api_and_back() {
    let b = start().await;
    let api = Api::new(b.api_port, TOKEN);
    let mut stream = api.stream().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#mm").await;
    irc.join("#other").await;
    let ana = User::new("ana00000000000000000000001", "ana", "Ana");
    let bo = User::new("bo000000000000000000000001", "bo", "Bo");
    let first = b.fake.user_posts(LOBBY, &ana, "hello from **mattermost**");
    let m = irc.next_message(WAIT).await.expect("IRC sees it");
    assert_eq!(
        (m.target.as_str(), m.text.as_str()),
        ("#mm", "<Ana> hello from **mattermost**")
    );
    let a = stream.next(WAIT).await.expect("the API sees it");
    assert_eq!(
        (a["username"].as_str(), a["gateway"].as_str()),
        (Some("Ana"), Some("lobby"))
    );
    b.fake.user_edits(&first, "hello from mattermost!");
    let m = irc.next_message(WAIT).await.expect("IRC sees the edit");
    assert_eq!(m.text, "<Ana> hello from mattermost! (edited)");
    // IRC and the API answer, each posted under its own name, mentioning nobody.
    irc.say("#mm", "hi Ana @all").await;
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
            ("ircer".to_owned(), "hi Ana @\u{200b}all".to_owned()),
        ]
    );
    assert!(
        posted(&b.fake, OTHER).is_empty(),
        "nothing went to the other channel"
    );
    // The room given by name works both ways.
    b.fake.user_posts(OTHER, &bo, "in other");
    let m = irc.next_message(WAIT).await.expect("IRC sees #other");
    assert_eq!(
        (m.target.as_str(), m.text.as_str()),
        ("#other", "<Bo> in other")
    );
    assert!(
        irc.next_message(Duration::from_secs(2)).await.is_none(),
        "an own post came back"
    );
}

/// Mattermost people post a numbered stream while the daemon is killed (SIGKILL), stopped
/// (SIGTERM) and killed again. Each start is a new WebSocket: what was posted meanwhile is read
/// with `GET /channels/{id}/posts?since=` from the last post stored. Every post must be bridged
/// (none lost) and stored once (none bridged twice); IRC may repeat at most one line per kill.
#[tokio::test]
async fn restarts_mid_stream_lose_no_post_and_bridge_none_twice() {
    const N: usize = 60;
    let mut b = start().await;
    let mut irc = IrcClient::connect(b.irc.port, "ircer").await;
    irc.join("#mm").await;
    let fake = b.fake.clone();
    let poster = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let ana = User::new("ana00000000000000000000001", "Ana", "");
            for i in 0..N {
                fake.user_posts(LOBBY, &ana, &format!("mm {i:03}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let collector = common::collect_irc(irc, N);
    common::kill_term_kill(&mut b.daemon).await;
    poster.await.expect("the poster ran");
    let lines = collector.await.expect("the collector ran");
    let want: Vec<String> = (0..N).map(|i| format!("<Ana> mm {i:03}")).collect();
    let repeats = common::check_stream(&lines, &want, 2);
    b.daemon.stop();
    let events = common::stored_events(b.dir.path(), "mattermost");
    assert_eq!(events, N as i64, "events stored for {N} Mattermost posts");
    println!(
        "mattermost restarts: {N} sent, 0 lost, 0 bridged twice, {repeats} IRC repeat(s), {} connections",
        fake.connections()
    );
}

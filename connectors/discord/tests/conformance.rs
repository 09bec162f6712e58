//! The conformance suite and the Discord connector's own behaviour, against the faithful fake of
//! Discord's REST API and Gateway (`passerelle_discord::testing`).

use futures::future::BoxFuture;
use passerelle_discord::DiscordFactory;
use passerelle_discord::testing::{FakeDiscord, User};
use passerelle_sdk::{
    BuildContext, Connector, ConnectorFactory, Content, Event, EventKind, MessageKind, RoomId,
    SendError, Sender,
};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::Harness;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "MTAwMDAwMQ.fake-discord.conformance-token";
const CHANNEL: u64 = 3_000_001;
const ACCOUNT: &str = "conformance.account";
const WAIT: Duration = Duration::from_secs(15);

fn table(fake: &FakeDiscord, extra: Value) -> Value {
    let mut t = json!({"token": TOKEN, "api_base": fake.api_base(), "gateway_url": fake.gateway_url(),
                       "request_timeout_secs": 10, "media_fetch_private": true});
    if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    t
}

fn build(table: Value) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: ACCOUNT.into(),
        data_dir: std::env::temp_dir(),
    };
    match DiscordFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

/// What a Discord client shows of a message's Markdown: backslash escapes removed.
fn rendered(content: &str) -> String {
    let mut out = String::new();
    let mut chars = content.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(|n| n.is_ascii_punctuation()) {
            continue;
        }
        out.push(c);
    }
    out
}

struct DiscordPeer {
    fake: Arc<FakeDiscord>,
    user: User,
    seen: usize,
}

impl Peer for DiscordPeer {
    fn room(&self) -> RoomId {
        CHANNEL.to_string().into()
    }
    fn unknown_room(&self) -> RoomId {
        "3999999".into()
    }
    fn user(&self) -> passerelle_sdk::UserId {
        self.user.id.to_string().into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.user_says(CHANNEL, &self.user, text);
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake
                .user_says(CHANNEL, &self.user, &format!("_{text}_"));
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        let fake = self.fake.clone();
        let me = self.user.id.to_string();
        let seen = &mut self.seen;
        Box::pin(conformance::collect_sent(min_bytes, timeout, move || {
            let all = fake.messages_in(CHANNEL);
            let new: Vec<String> = all[(*seen).min(all.len())..]
                .iter()
                .filter(|m| m.author["id"].as_str() != Some(me.as_str()))
                .map(|m| {
                    let text = rendered(&m.content);
                    match text.strip_prefix('_').and_then(|t| t.strip_suffix('_')) {
                        Some(action) => format!("/me {action}"),
                        None => text,
                    }
                })
                .collect();
            *seen = all.len();
            new
        }))
    }
}

async fn fake() -> Arc<FakeDiscord> {
    let fake = FakeDiscord::start(TOKEN).await;
    fake.add_text_channel(CHANNEL, "bridge");
    Arc::new(fake)
}

#[tokio::test]
async fn discord_passes_the_conformance_suite() {
    let fake = fake().await;
    let t = table(&fake, json!({}));
    let make = move || build(t.clone());
    let mut peer = DiscordPeer {
        fake: fake.clone(),
        user: User::new(5001, "peer"),
        seen: 0,
    };
    conformance::run(&make, &mut peer, vec![CHANNEL.to_string().into()]).await;
    assert_eq!(
        fake.webhooks_in(CHANNEL).len(),
        1,
        "one webhook for the channel"
    );
}

#[tokio::test]
async fn discord_passes_the_conformance_suite_without_webhooks() {
    let fake = fake().await;
    let t = table(&fake, json!({"webhooks": false}));
    let make = move || build(t.clone());
    let mut peer = DiscordPeer {
        fake: fake.clone(),
        user: User::new(5001, "peer"),
        seen: 0,
    };
    // Without webhooks the bot's messages start with the sender's name.
    struct Named(DiscordPeer);
    impl Peer for Named {
        fn room(&self) -> RoomId {
            self.0.room()
        }
        fn unknown_room(&self) -> RoomId {
            self.0.unknown_room()
        }
        fn user(&self) -> passerelle_sdk::UserId {
            self.0.user()
        }
        fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
            self.0.say(text)
        }
        fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
            self.0.act(text)
        }
        fn collect(&mut self, min: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
            let fake = self.0.fake.clone();
            let seen = &mut self.0.seen;
            Box::pin(conformance::collect_sent(min, timeout, move || {
                let all = fake.messages_in(CHANNEL);
                let new = all[(*seen).min(all.len())..]
                    .iter()
                    .filter(|m| m.webhook_id.is_none() && m.author["bot"] == json!(true))
                    .map(|m| {
                        let text = rendered(&m.content);
                        let text = text
                            .strip_prefix("**conformance**: ")
                            .unwrap_or(&text)
                            .to_owned();
                        match text.strip_prefix('_').and_then(|t| t.strip_suffix('_')) {
                            Some(action) => format!("/me {action}"),
                            None => text,
                        }
                    })
                    .collect();
                *seen = all.len();
                new
            }))
        }
    }
    let _ = &mut peer;
    conformance::run(&make, &mut Named(peer), vec![CHANNEL.to_string().into()]).await;
    assert!(fake.webhooks_in(CHANNEL).is_empty());
}

struct Running {
    h: Harness,
    fake: Arc<FakeDiscord>,
}

async fn running(extra: Value) -> Running {
    let fake = fake().await;
    let h = Harness::start(
        build(table(&fake, extra)),
        ACCOUNT,
        vec![CHANNEL.to_string().into()],
    );
    let mut r = Running { h, fake };
    assert!(r.h.wait_connected(WAIT).await, "connected");
    // The catch-up task has found the webhook once the bot has one.
    for _ in 0..100 {
        if !r.fake.webhooks_in(CHANNEL).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = &mut r;
    r
}

fn from(name: &str, avatar: Option<&str>) -> Sender {
    let mut s = Sender::new(name.to_lowercase());
    s.display_name = Some(name.into());
    s.avatar_url = avatar.map(str::to_owned);
    s
}

async fn send(h: &mut Harness, event: Event) -> Result<Option<String>, SendError> {
    match h.send(event, WAIT).await {
        Some(r) => r.map(|receipt| receipt.remote_id.map(|r| r.as_str().to_owned())),
        None => panic!("no answer to a send"),
    }
}

fn say(sender: Sender, text: &str) -> Event {
    Event::new(
        CHANNEL.to_string(),
        sender,
        EventKind::Message(Content::plain(text)),
    )
}

#[tokio::test]
async fn each_sender_speaks_through_one_webhook_with_their_name_and_pings_nobody() {
    let mut r = running(json!({})).await;
    for (name, text) in [
        ("Ana", "hello @everyone"),
        ("Bo Discord", "hi"),
        ("Ana", "again"),
    ] {
        let avatar = format!("https://matrix.example.org/avatar/{name}.png");
        let id = send(&mut r.h, say(from(name, Some(&avatar)), text))
            .await
            .unwrap();
        assert!(id.unwrap().starts_with(&format!("{CHANNEL}/")));
    }
    let hooks = r.fake.webhooks_in(CHANNEL);
    assert_eq!(hooks.len(), 1, "one webhook, reused: {hooks:?}");
    assert_eq!(hooks[0].1, "passerelle");
    let executes: Vec<_> = r
        .fake
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.path.starts_with("webhooks/"))
        .collect();
    assert_eq!(executes.len(), 3);
    assert!(executes.iter().all(|q| q.path.ends_with("?wait=true")));
    assert_eq!(executes[0].body["username"], json!("Ana"));
    assert_eq!(
        executes[0].body["avatar_url"],
        json!("https://matrix.example.org/avatar/Ana.png")
    );
    assert_eq!(executes[0].body["allowed_mentions"], json!({"parse": []}));
    assert_eq!(executes[0].body["content"], json!("hello @everyone"));
    let name = executes[1].body["username"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        !name.contains("discord"),
        "Discord refuses such names: {name}"
    );
    // The webhook's messages come back on the Gateway; none is bridged back.
    assert!(
        r.h.next_matching(Duration::from_secs(2), |_| true)
            .await
            .is_none(),
        "an own message was emitted"
    );
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn people_threads_replies_edits_and_reactions_come_in() {
    let mut r = running(json!({})).await;
    let mut ana = User::new(6001, "ana");
    ana.nick = Some("Ana (guild)".into());
    let first = r.fake.user_says(CHANNEL, &ana, "**bold** and <@6001>");
    let e =
        r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Message(_)))
            .await
            .expect("message");
    assert_eq!(e.sender.display_name.as_deref(), Some("Ana (guild)"));
    assert_eq!(
        e.remote_id.as_ref().unwrap().as_str(),
        format!("{CHANNEL}/{first}")
    );
    let c = e.content().unwrap();
    assert_eq!(c.text.as_str(), "**bold** and @6001");
    assert!(
        matches!(&c.formatted, Some(passerelle_sdk::Formatted::Html(h)) if h.as_str().contains("<b>bold</b>"))
    );
    r.fake.user_replies(CHANNEL, &ana, first, "answer");
    let e =
        r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Message(_)))
            .await
            .expect("reply");
    assert_eq!(
        e.reply_to.as_ref().unwrap().as_str(),
        format!("{CHANNEL}/{first}")
    );
    let thread = r.fake.start_thread(CHANNEL, Some(first), &ana, "");
    r.fake.user_says(thread, &ana, "in the thread");
    let e =
        r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Message(_)))
            .await
            .expect("thread message");
    assert_eq!(e.room.as_str(), CHANNEL.to_string());
    assert_eq!(
        e.thread_root.as_ref().unwrap().as_str(),
        format!("{CHANNEL}/{first}")
    );
    r.fake.user_edits(first, "changed");
    let e =
        r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Edit { .. }))
            .await
            .expect("edit");
    assert!(
        matches!(&e.kind, EventKind::Edit { target, content } if target.as_str() == format!("{CHANNEL}/{first}") && content.text.as_str() == "changed")
    );
    r.fake.user_reacts(first, &ana, "party", Some(77), false);
    let e =
        r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Reaction { .. }))
            .await
            .expect("reaction");
    assert!(
        matches!(&e.kind, EventKind::Reaction { key, removed: false, .. } if key.as_str() == ":party:")
    );
    r.fake.delete_message(first);
    let e =
        r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Delete { .. }))
            .await
            .expect("delete");
    assert!(
        matches!(&e.kind, EventKind::Delete { target } if target.as_str() == format!("{CHANNEL}/{first}"))
    );
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn replies_threads_edits_deletes_and_reactions_go_out() {
    let mut r = running(json!({})).await;
    let ana = User::new(6001, "ana");
    let root = r.fake.user_says(CHANNEL, &ana, "root");
    r.h.next_matching(WAIT, |_| true)
        .await
        .expect("the root came in");
    // A reply through the webhook links the message answered.
    let mut reply = say(from("Bo", None), "answer");
    reply.reply_to = Some(format!("{CHANNEL}/{root}").into());
    let id = send(&mut r.h, reply).await.unwrap().unwrap();
    let (_, mid) = id.split_once('/').unwrap();
    let sent = r.fake.message(mid.parse().unwrap()).unwrap();
    assert!(
        sent.content
            .contains(&format!("/channels/2000001/{CHANNEL}/{root}")),
        "{}",
        sent.content
    );
    // A thread root that has no thread yet: the bot opens one from it.
    let mut threaded = say(from("Bo", None), "first in thread");
    threaded.thread_root = Some(format!("{CHANNEL}/{root}").into());
    let id = send(&mut r.h, threaded).await.unwrap().unwrap();
    assert!(
        id.starts_with(&format!("{root}/")),
        "sent in the thread: {id}"
    );
    assert!(
        r.fake.requests().iter().any(|q| q.method == "POST"
            && q.path == format!("channels/{CHANNEL}/messages/{root}/threads"))
    );
    let exec = r
        .fake
        .requests()
        .into_iter()
        .rfind(|q| q.path.starts_with("webhooks/"))
        .unwrap();
    assert!(
        exec.path.ends_with(&format!("&thread_id={root}")),
        "{}",
        exec.path
    );
    // Edit and delete the webhook's message through the webhook.
    let edit = Event::new(
        CHANNEL.to_string(),
        from("Bo", None),
        EventKind::Edit {
            target: id.clone().into(),
            content: Content::plain("fixed"),
        },
    );
    send(&mut r.h, edit).await.unwrap();
    let (_, mid) = id.split_once('/').unwrap();
    assert_eq!(
        r.fake.message(mid.parse().unwrap()).unwrap().content,
        "fixed"
    );
    let react = Event::new(
        CHANNEL.to_string(),
        from("Bo", None),
        EventKind::Reaction {
            target: format!("{CHANNEL}/{root}").into(),
            key: "👍".into(),
            removed: false,
        },
    );
    send(&mut r.h, react).await.unwrap();
    assert_eq!(r.fake.message(root).unwrap().bot_reactions, ["👍"]);
    assert!(r.fake.requests().iter().any(|q| q.method == "PUT"
        && q.path == format!("channels/{CHANNEL}/messages/{root}/reactions/%F0%9F%91%8D/@me")));
    let delete = Event::new(
        CHANNEL.to_string(),
        from("Bo", None),
        EventKind::Delete {
            target: id.clone().into(),
        },
    );
    send(&mut r.h, delete).await.unwrap();
    assert!(r.fake.message(mid.parse().unwrap()).is_none());
    let long = "word ".repeat(900);
    send(&mut r.h, say(from("Bo", None), &long)).await.unwrap();
    let parts: Vec<_> = r
        .fake
        .messages_in(CHANNEL)
        .into_iter()
        .filter(|m| m.content.starts_with("word"))
        .collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|m| m.content.chars().count() <= 2000));
    assert_eq!(
        parts.iter().map(|m| m.content.as_str()).collect::<String>(),
        long.trim_end()
    );
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn sends_follow_the_rate_limit_headers_without_429s() {
    let mut r = running(json!({})).await;
    r.fake.set_send_limit(2, Duration::from_secs(1));
    let started = std::time::Instant::now();
    for n in 0..7 {
        send(&mut r.h, say(from("Ana", None), &format!("burst {n}")))
            .await
            .unwrap();
    }
    assert_eq!(
        r.fake.too_many(),
        0,
        "the bridge waited for the buckets' resets"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "7 sends at 2 per second take 3 windows"
    );
    let texts: Vec<String> = r
        .fake
        .messages_in(CHANNEL)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(
        texts,
        (0..7).map(|n| format!("burst {n}")).collect::<Vec<_>>()
    );
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn refusals_are_typed_and_a_missing_channel_is_room_not_found() {
    let fake = fake().await;
    let rooms: Vec<RoomId> = vec![CHANNEL.to_string().into(), "3000404".into()];
    let mut h = Harness::start(
        build(table(&fake, json!({"webhooks": false}))),
        ACCOUNT,
        rooms,
    );
    assert!(h.wait_connected(WAIT).await);
    fake.fail_next("POST", &format!("channels/{CHANNEL}/messages"), 403, 50013);
    match send(&mut h, say(from("Ana", None), "x")).await {
        Err(SendError::Rejected(why)) => assert!(why.contains("50013"), "{why}"),
        other => panic!("{other:?}"),
    }
    let lost = Event::new(
        "3000404",
        from("Ana", None),
        EventKind::Message(Content::plain("x")),
    );
    assert_eq!(send(&mut h, lost).await, Err(SendError::RoomNotFound));
    h.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_dropped_connection_resumes_and_replays_what_was_said_meanwhile() {
    let mut r = running(json!({})).await;
    let ana = User::new(6001, "ana");
    r.fake.drop_connection();
    r.fake.user_says(CHANNEL, &ana, "said while away");
    let e =
        r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Message(_)))
            .await
            .expect("replayed");
    assert_eq!(e.content().unwrap().text.as_str(), "said while away");
    assert_eq!(r.fake.resumes(), 1);
    assert_eq!(
        r.fake.identifies().len(),
        1,
        "resumed, not identified again"
    );
    r.fake.send_reconnect();
    for _ in 0..100 {
        if r.fake.resumes() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.fake.resumes(), 2, "op 7 Reconnect resumes");
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_gap_resume_cannot_cover_is_fetched_from_history_once() {
    let mut r = running(json!({})).await;
    let ana = User::new(6001, "ana");
    let before = r.fake.user_says(CHANNEL, &ana, "before");
    r.h.next_matching(WAIT, |_| true).await.expect("before");
    // Wait for the last-seen id to be saved (every second), as after a long outage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.fake.expire_sessions();
    r.fake.drop_connection();
    for n in 0..3 {
        r.fake.user_says(CHANNEL, &ana, &format!("gap {n}"));
    }
    let mut texts = Vec::new();
    while texts.len() < 3 {
        let e =
            r.h.next_matching(WAIT, |e| matches!(e.kind, EventKind::Message(_)))
                .await
                .expect("caught up");
        texts.push(e.content().unwrap().text.as_str().to_owned());
    }
    assert_eq!(texts, ["gap 0", "gap 1", "gap 2"]);
    assert!(
        r.h.next_matching(Duration::from_secs(2), |e| matches!(
            e.kind,
            EventKind::Message(_)
        ))
        .await
        .is_none(),
        "nothing twice"
    );
    assert_eq!(r.fake.identifies().len(), 2);
    let fetch = r
        .fake
        .requests()
        .into_iter()
        .rfind(|q| q.path.contains("messages?after="))
        .expect("a history fetch");
    assert_eq!(
        fetch.path,
        format!("channels/{CHANNEL}/messages?after={before}&limit=100")
    );
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn intents_refused_for_good_stop_the_account_with_a_clear_error() {
    let fake = fake().await;
    fake.grant_message_content(false);
    let mut h = Harness::start(
        build(table(&fake, json!({}))),
        ACCOUNT,
        vec![CHANNEL.to_string().into()],
    );
    match h.wait_finished(WAIT).await {
        Some(Err(passerelle_sdk::ConnectorError::Fatal(why))) => {
            assert!(why.contains("Message Content"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.identifies().len(), 0);
    let _ = MessageKind::Normal;
}

#[tokio::test]
async fn sessions_lost_again_and_again_never_identify_faster_than_discord_allows() {
    let r = running(json!({})).await;
    // Three times over, Discord forgets the session and cuts the connection: each reconnect
    // has to identify anew, and identifies may come once per 5 s (max_concurrency 1).
    for _ in 0..3 {
        r.fake.expire_sessions();
        r.fake.drop_connection();
        let before = r.fake.identifies().len();
        for _ in 0..300 {
            if r.fake.identifies().len() > before && r.fake.connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let at = r.fake.identifies();
    assert_eq!(at.len(), 4, "one identify per lost session");
    for pair in at.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(4900),
            "identifies {gap:?} apart"
        );
    }
}

#[tokio::test]
async fn a_channel_named_in_its_guild_is_a_room_both_ways() {
    let fake = fake().await;
    let extra = json!({"guild": "fake GUILD"});
    let mut h = Harness::start(build(table(&fake, extra)), ACCOUNT, vec!["#Bridge".into()]);
    assert!(h.wait_connected(WAIT).await);
    let ana = User::new(6001, "ana");
    // The name is bound once the guild's channels arrive.
    let mut bound = false;
    for _ in 0..100 {
        fake.user_says(CHANNEL, &ana, "ping");
        if let Some(e) = h.next_matching(Duration::from_millis(100), |_| true).await {
            assert_eq!(e.room.as_str(), "#Bridge");
            bound = true;
            break;
        }
    }
    assert!(
        bound,
        "the named room never received its channel's messages"
    );
    let out = Event::new(
        "#Bridge",
        from("Bo", None),
        EventKind::Message(Content::plain("pong")),
    );
    let id = send(&mut h, out).await.unwrap().unwrap();
    assert!(id.starts_with(&format!("{CHANNEL}/")), "{id}");
    h.shutdown(WAIT).await;
}

//! The conformance suite and the Mattermost connector's own behaviour, against the faithful fake
//! of Mattermost's REST API v4 and WebSocket (`passerelle_mattermost::testing`).

use futures::future::BoxFuture;
use passerelle_mattermost::MattermostFactory;
use passerelle_mattermost::testing::{BOT_USER, FakeMattermost, User};
use passerelle_sdk::{
    BuildContext, Connector, ConnectorError, ConnectorFactory, Content, Event, EventKind,
    Formatted, RoomId, SendError, Sender, Text,
};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::{Harness, MemoryState};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "9f3k2m1x8c7v6b5n4a3s2d1f0g";
const CHANNEL: &str = "chan0000000000000000000001";
const ACCOUNT: &str = "conformance.account";
const WAIT: Duration = Duration::from_secs(15);

fn table(fake: &FakeMattermost, extra: Value) -> Value {
    let mut t = json!({"url": fake.url(), "token": TOKEN, "team": "crew", "request_timeout_secs": 10, "media_fetch_private": true});
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
    match MattermostFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

/// What Mattermost shows of Markdown's backslash escapes: the characters.
fn rendered(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(|n| n.is_ascii_punctuation()) {
            continue;
        }
        out.push(c);
    }
    out
}

struct MmPeer {
    fake: Arc<FakeMattermost>,
    user: User,
    seen: usize,
    prefix: Option<&'static str>,
}

impl Peer for MmPeer {
    fn room(&self) -> RoomId {
        CHANNEL.into()
    }
    fn unknown_room(&self) -> RoomId {
        "chan0000000000000000000999".into()
    }
    fn user(&self) -> passerelle_sdk::UserId {
        self.user.id.clone().into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.user_posts(CHANNEL, &self.user, text);
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.user_me(CHANNEL, &self.user, text);
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        let fake = self.fake.clone();
        let seen = &mut self.seen;
        let prefix = self.prefix;
        Box::pin(conformance::collect_sent(min_bytes, timeout, move || {
            let all = fake.posts_in(CHANNEL);
            let new = all[(*seen).min(all.len())..]
                .iter()
                .filter(|p| p.user_id == BOT_USER)
                .map(|p| {
                    let text = rendered(&p.message);
                    let text = match prefix {
                        Some(pre) => text.strip_prefix(pre).unwrap_or(&text).to_owned(),
                        None => text,
                    };
                    match text.strip_prefix('*').and_then(|t| t.strip_suffix('*')) {
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

async fn fake() -> Arc<FakeMattermost> {
    let fake = FakeMattermost::start(TOKEN).await;
    fake.add_channel(CHANNEL, "crew", "bridge");
    Arc::new(fake)
}

fn peer(fake: &Arc<FakeMattermost>) -> MmPeer {
    MmPeer {
        fake: fake.clone(),
        user: User::new("peer0000000000000000000001", "peer", "Peer"),
        seen: 0,
        prefix: None,
    }
}

#[tokio::test]
async fn mattermost_passes_the_conformance_suite() {
    let fake = fake().await;
    let t = table(&fake, json!({}));
    let make = move || build(t.clone());
    conformance::run(&make, &mut peer(&fake), vec![CHANNEL.into()]).await;
}

#[tokio::test]
async fn mattermost_passes_the_conformance_suite_where_names_cannot_be_overridden() {
    let fake = fake().await;
    fake.set_overrides(false);
    let t = table(&fake, json!({}));
    let make = move || build(t.clone());
    let mut p = peer(&fake);
    p.prefix = Some("**conformance**: ");
    conformance::run(&make, &mut p, vec![CHANNEL.into()]).await;
    assert!(
        fake.posts_in(CHANNEL)
            .iter()
            .all(|p| p.props.get("override_username").is_none())
    );
}

async fn running(fake: &Arc<FakeMattermost>, rooms: Vec<RoomId>) -> Harness {
    let mut h = Harness::start(build(table(fake, json!({}))), ACCOUNT, rooms);
    assert!(h.wait_connected(WAIT).await, "connected");
    h
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

fn say(text: &str) -> Event {
    Event::new(
        CHANNEL,
        from("Ann", Some("https://matrix.example.org/ann.png")),
        EventKind::Message(Content::plain(text)),
    )
}

#[tokio::test]
async fn posts_carry_the_identity_mention_nobody_and_keep_threads() {
    let fake = fake().await;
    let mut h = running(&fake, vec![CHANNEL.into()]).await;
    let id = send(&mut h, say("hi @all and @peer"))
        .await
        .expect("sent")
        .expect("an id");
    let posts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.0 == "POST" && r.1 == "posts")
        .collect();
    assert_eq!(
        posts[0].2,
        json!({"channel_id": CHANNEL, "message": "hi @\u{200b}all and @\u{200b}peer",
               "props": {"override_username": "Ann", "override_icon_url": "https://matrix.example.org/ann.png", "from_bot": "true"}})
    );
    // A reply goes into the thread; formatting is CommonMark.
    let mut html = Content::plain("bold");
    html.formatted = Some(Formatted::Html(Text::new(
        "<b>bold</b> <a href=\"https://example.org\">link</a>",
    )));
    let reply =
        Event::new(CHANNEL, from("Ann", None), EventKind::Message(html)).replying_to(id.clone());
    let second = send(&mut h, reply).await.expect("sent").expect("an id");
    let p = fake
        .posts_in(CHANNEL)
        .into_iter()
        .find(|p| p.id == second)
        .expect("posted");
    assert_eq!(
        (p.message.as_str(), p.root_id.as_str()),
        ("**bold** [link](https://example.org)", id.as_str())
    );
    // A reply to the reply: still the thread's root.
    let third = send(&mut h, say("again").replying_to(second.clone()))
        .await
        .expect("sent")
        .expect("an id");
    assert_eq!(
        fake.posts_in(CHANNEL)
            .into_iter()
            .find(|p| p.id == third)
            .map(|p| p.root_id),
        Some(id.clone())
    );
    let edit = Event::new(
        CHANNEL,
        from("Ann", None),
        EventKind::Edit {
            target: id.clone().into(),
            content: Content::plain("changed"),
        },
    );
    send(&mut h, edit).await.expect("edited");
    let react = Event::new(
        CHANNEL,
        from("Ann", None),
        EventKind::Reaction {
            target: id.clone().into(),
            key: Text::new("👍"),
            removed: false,
        },
    );
    send(&mut h, react).await.expect("reacted");
    let p = fake
        .posts_in(CHANNEL)
        .into_iter()
        .find(|p| p.id == id)
        .expect("the first post");
    assert_eq!(p.message, "changed");
    assert_eq!(p.reactions, [("+1".to_owned(), BOT_USER.to_owned())]);
    let delete = Event::new(
        CHANNEL,
        from("Ann", None),
        EventKind::Delete {
            target: id.clone().into(),
        },
    );
    send(&mut h, delete).await.expect("deleted");
    assert!(fake.posts_in(CHANNEL).iter().all(|p| p.id != id));
    assert!(
        h.next_event(Duration::from_secs(1)).await.is_none(),
        "nothing of ours came back"
    );
    let unknown = Event::new(
        "chan0000000000000000000999",
        from("Ann", None),
        EventKind::Message(Content::plain("x")),
    );
    assert_eq!(send(&mut h, unknown).await, Err(SendError::RoomNotFound));
}

#[tokio::test]
async fn people_threads_edits_deletes_and_reactions_come_in() {
    let fake = fake().await;
    let mut h = running(&fake, vec!["~bridge".into()]).await;
    let bob = User::new("bob00000000000000000000001", "bob", "Bobby");
    let root = fake.user_posts(CHANNEL, &bob, "hello **there**");
    let e = h.next_event(WAIT).await.expect("the post");
    assert_eq!(e.room.as_str(), "~bridge");
    assert_eq!(
        e.remote_id.as_ref().map(|r| r.as_str()),
        Some(root.as_str())
    );
    assert_eq!(e.sender.display_name.as_deref(), Some("Bobby"));
    let c = e.content().expect("content");
    assert_eq!(
        (c.text.as_str(), c.formatted.clone()),
        (
            "hello **there**",
            Some(Formatted::Html(Text::new("hello <b>there</b>")))
        )
    );
    fake.user_replies(CHANNEL, &bob, "in thread", &root);
    let t = h.next_event(WAIT).await.expect("the reply");
    assert_eq!(
        t.thread_root.as_ref().map(|r| r.as_str()),
        Some(root.as_str())
    );
    fake.user_edits(&root, "edited");
    assert!(
        matches!(h.next_event(WAIT).await.map(|e| e.kind), Some(EventKind::Edit { content, .. }) if content.text.as_str() == "edited")
    );
    fake.user_reacts(&root, &bob, "heart");
    assert!(
        matches!(h.next_event(WAIT).await.map(|e| e.kind), Some(EventKind::Reaction { key, .. }) if key.as_str() == "❤️")
    );
    fake.user_deletes(&root);
    assert!(
        matches!(h.next_event(WAIT).await.map(|e| e.kind), Some(EventKind::Delete { target }) if target.as_str() == root)
    );
}

#[tokio::test]
async fn a_gap_in_seq_and_a_reconnect_are_caught_up_once() {
    let fake = fake().await;
    let state = Arc::new(MemoryState::default());
    let mut h = Harness::start_with_state(
        build(table(&fake, json!({}))),
        ACCOUNT,
        vec![CHANNEL.into()],
        state.clone(),
    );
    assert!(h.wait_connected(WAIT).await);
    let bob = User::new("bob00000000000000000000001", "bob", "");
    fake.user_posts(CHANNEL, &bob, "first");
    assert!(h.next_event(WAIT).await.is_some());
    // The server drops two events for this client; the next one shows the gap.
    fake.skip_events(2);
    fake.user_posts(CHANNEL, &bob, "skipped 1");
    fake.user_posts(CHANNEL, &bob, "skipped 2");
    fake.user_posts(CHANNEL, &bob, "after the gap");
    let mut texts = Vec::new();
    while let Some(e) = h.next_event(Duration::from_secs(2)).await {
        texts.push(
            e.content()
                .map(|c| c.text.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
    // The catch-up reads all three; the live one comes again after it (the daemon drops it by id).
    assert_eq!(
        texts[..3],
        ["skipped 1", "skipped 2", "after the gap"],
        "{texts:?}"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.1.starts_with(&format!("channels/{CHANNEL}/posts?since=")))
    );
    // Said while the WebSocket is down: read after the reconnect.
    fake.drop_connection();
    fake.user_posts(CHANNEL, &bob, "while away");
    let e = h
        .next_event(WAIT)
        .await
        .expect("caught up after the reconnect");
    assert_eq!(
        e.content().map(|c| c.text.as_str().to_owned()).as_deref(),
        Some("while away")
    );
    assert!(fake.connections() >= 2);
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_a_refused_token_ends_the_account() {
    let fake = fake().await;
    let mut h = running(&fake, vec![CHANNEL.into()]).await;
    fake.set_rate_limit(2, Duration::from_secs(1));
    for n in 0..4 {
        send(&mut h, say(&format!("n{n}")))
            .await
            .expect("sent after waiting");
    }
    assert!(fake.too_many() >= 1, "the limit was hit and waited out");
    assert_eq!(fake.posts_in(CHANNEL).len(), 4);
    let mut bad = Harness::start(
        build(table(&fake, json!({"token": "wrongtokenwrongtoken00"}))),
        ACCOUNT,
        vec![CHANNEL.into()],
    );
    assert!(matches!(
        bad.wait_finished(Duration::from_secs(20)).await,
        Some(Err(ConnectorError::AuthRejected(_)))
    ));
}

#[tokio::test]
async fn files_are_uploaded_and_come_back_as_signed_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = fake().await;
    let port = passerelle_testkit::free_port();
    let ctx = BuildContext {
        account: ACCOUNT.into(),
        data_dir: dir.path().to_owned(),
    };
    let t = table(
        &fake,
        json!({"media_public_url": format!("http://127.0.0.1:{port}")}),
    );
    let mut h = Harness::start(
        MattermostFactory.build(&ctx, t).expect("config"),
        ACCOUNT,
        vec![CHANNEL.into()],
    );
    h.serve_http(port).await;
    assert!(h.wait_connected(WAIT).await);
    let data = b"mattermost file bytes".to_vec();
    let url = passerelle_testkit::file_server("notes.txt", "text/plain", data.clone()).await;
    let mut content = Content::plain("a file");
    content.add_file(
        Some(url),
        "notes.txt".into(),
        Some("text/plain".into()),
        None,
    );
    let id = send(
        &mut h,
        Event::new(CHANNEL, from("Ann", None), EventKind::Message(content)),
    )
    .await
    .expect("sent")
    .expect("id");
    let post = fake
        .posts_in(CHANNEL)
        .into_iter()
        .find(|p| p.id == id)
        .expect("posted");
    assert_eq!(
        fake.file(&post.file_ids[0]),
        Some(("notes.txt".to_owned(), data.clone()))
    );
    let bob = User::new("bob00000000000000000000001", "bob", "");
    fake.user_posts_file(CHANNEL, &bob, "photo.bin", b"bob's bytes");
    let e = h.next_event(WAIT).await.expect("the file post");
    let att = &e.content().expect("content").attachments[0];
    let got = reqwest::get(att.url.as_str())
        .await
        .expect("link")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(got.as_ref(), b"bob's bytes");
}

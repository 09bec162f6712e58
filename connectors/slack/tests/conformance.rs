//! The conformance suite and the Slack connector's own behaviour, against the faithful fake of
//! Slack's Web API and Socket Mode (`passerelle_slack::testing`).

use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Connector, ConnectorError, ConnectorFactory, Content, Event, EventKind,
    Formatted, RoomId, SendError, Sender, Text,
};
use passerelle_slack::SlackFactory;
use passerelle_slack::testing::{BOT_ID, FakeSlack, User};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::{Harness, MemoryState};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const BOT: &str = "xoxb-1000-2000-conformanceBotToken";
const APP: &str = "xapp-1-A0FAKEAPP-3000-conformanceAppToken";
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const CHANNEL: &str = "C0BRIDGE01";
const ACCOUNT: &str = "conformance.account";
const WAIT: Duration = Duration::from_secs(15);

fn table(fake: &FakeSlack, extra: Value) -> Value {
    let mut t = json!({"bot_token": BOT, "app_token": APP, "api_base": fake.api_base(),
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
    match SlackFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

/// What a Slack client shows of the bot's mrkdwn: entities decoded.
fn shown(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

struct SlackPeer {
    fake: Arc<FakeSlack>,
    user: User,
    seen: usize,
    /// Events mode: the hook's port, where the peer's events are posted signed.
    hook: Option<u16>,
    /// Without per-message identity, the prefix the bot writes.
    prefix: Option<&'static str>,
}

impl SlackPeer {
    async fn deliver(&self) {
        if let Some(port) = self.hook {
            let payload = self.fake.last_payload().expect("an event was queued");
            let url = format!("http://127.0.0.1:{port}/hooks/{ACCOUNT}");
            let (status, _) = FakeSlack::post_event(&url, SECRET, &payload, None).await;
            assert_eq!(status, 200, "the signed event was taken");
        }
    }
}

impl Peer for SlackPeer {
    fn room(&self) -> RoomId {
        CHANNEL.into()
    }
    fn unknown_room(&self) -> RoomId {
        "C0NOTHERE9".into()
    }
    fn user(&self) -> passerelle_sdk::UserId {
        self.user.id.clone().into()
    }
    fn http_port(&self) -> Option<u16> {
        self.hook
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.user_says(CHANNEL, &self.user, text);
            self.deliver().await;
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.user_me(CHANNEL, &self.user, text);
            self.deliver().await;
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        let fake = self.fake.clone();
        let seen = &mut self.seen;
        let prefix = self.prefix;
        Box::pin(conformance::collect_sent(min_bytes, timeout, move || {
            let all = fake.messages_in(CHANNEL);
            let new: Vec<String> = all[(*seen).min(all.len())..]
                .iter()
                .filter(|m| m.bot_id.as_deref() == Some(BOT_ID))
                .map(|m| {
                    let text = shown(&m.text);
                    let text = match prefix {
                        Some(p) => text.strip_prefix(p).unwrap_or(&text).to_owned(),
                        None => text,
                    };
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

async fn fake() -> Arc<FakeSlack> {
    let fake = FakeSlack::start(BOT, APP).await;
    fake.add_channel(CHANNEL, "bridge");
    Arc::new(fake)
}

fn peer(fake: &Arc<FakeSlack>) -> SlackPeer {
    SlackPeer {
        fake: fake.clone(),
        user: User::new("U0PEER0001", "peer", "Peer"),
        seen: 0,
        hook: None,
        prefix: None,
    }
}

#[tokio::test]
async fn slack_passes_the_conformance_suite_in_socket_mode() {
    let fake = fake().await;
    let t = table(&fake, json!({}));
    let make = move || build(t.clone());
    conformance::run(&make, &mut peer(&fake), vec![CHANNEL.into()]).await;
    assert_eq!(fake.unacknowledged(), 0, "every envelope was acknowledged");
    assert_eq!(fake.late_acks(), 0, "within the ack timeout");
}

#[tokio::test]
async fn slack_passes_the_conformance_suite_over_the_events_api() {
    let fake = fake().await;
    let t = table(
        &fake,
        json!({"mode": "events", "app_token": null, "signing_secret": SECRET}),
    );
    let make = move || build(t.clone());
    let mut p = peer(&fake);
    p.hook = Some(passerelle_testkit::free_port());
    conformance::run(&make, &mut p, vec![CHANNEL.into()]).await;
    assert_eq!(fake.connections(), 0, "no Socket Mode in events mode");
}

#[tokio::test]
async fn slack_passes_the_conformance_suite_without_per_message_identity() {
    let fake = fake().await;
    let t = table(&fake, json!({"per_message_identity": false}));
    let make = move || build(t.clone());
    let mut p = peer(&fake);
    p.prefix = Some("*conformance*: ");
    conformance::run(&make, &mut p, vec![CHANNEL.into()]).await;
    assert!(
        fake.calls("chat.postMessage")
            .iter()
            .all(|r| r.params.get("username").is_none()),
        "no username without per-message identity"
    );
}

struct Running {
    h: Harness,
    fake: Arc<FakeSlack>,
}

async fn running(extra: Value) -> Running {
    let fake = fake().await;
    let mut h = Harness::start(build(table(&fake, extra)), ACCOUNT, vec![CHANNEL.into()]);
    assert!(h.wait_connected(WAIT).await, "connected");
    Running { h, fake }
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
    Event::new(CHANNEL, sender, EventKind::Message(Content::plain(text)))
}

#[tokio::test]
async fn sends_carry_the_identity_ping_nobody_and_keep_threads() {
    let mut r = running(json!({})).await;
    let ann = from("Ann", Some("https://matrix.example.org/avatar/ann.png"));
    let id = send(&mut r.h, say(ann.clone(), "<!channel> & <@U0PEER0001> hi"))
        .await
        .expect("sent")
        .expect("an id");
    let posts = r.fake.calls("chat.postMessage");
    assert_eq!(
        posts[0].params,
        json!({"channel": CHANNEL, "text": "&lt;!channel&gt; &amp; &lt;@U0PEER0001&gt; hi", "username": "Ann",
               "icon_url": "https://matrix.example.org/avatar/ann.png", "unfurl_links": false, "unfurl_media": false})
    );
    let ts = id
        .strip_prefix(&format!("{CHANNEL}/"))
        .expect("channel/ts")
        .to_owned();
    // Formatting as mrkdwn, in the thread of the message answered.
    let mut html = Content::plain("bold and a link");
    html.formatted = Some(Formatted::Html(Text::new(
        "<b>bold</b> and <a href=\"https://example.org/a\">a link</a>",
    )));
    let mut reply = Event::new(CHANNEL, ann.clone(), EventKind::Message(html));
    reply.thread_root = Some(id.clone().into());
    send(&mut r.h, reply).await.expect("sent");
    let posts = r.fake.calls("chat.postMessage");
    assert_eq!(
        posts[1].params["text"],
        json!("*bold* and <https://example.org/a|a link>")
    );
    assert_eq!(posts[1].params["thread_ts"], json!(ts));
    // Edits, reactions and deletes of our message.
    let edit = Event::new(
        CHANNEL,
        ann.clone(),
        EventKind::Edit {
            target: id.clone().into(),
            content: Content::plain("changed"),
        },
    );
    send(&mut r.h, edit).await.expect("edited");
    assert_eq!(
        r.fake.calls("chat.update")[0].params,
        json!({"channel": CHANNEL, "ts": ts, "text": "changed"})
    );
    let react = Event::new(
        CHANNEL,
        ann.clone(),
        EventKind::Reaction {
            target: id.clone().into(),
            key: Text::new("👍"),
            removed: false,
        },
    );
    send(&mut r.h, react).await.expect("reacted");
    assert_eq!(
        r.fake.calls("reactions.add")[0].params,
        json!({"channel": CHANNEL, "timestamp": ts, "name": "+1"})
    );
    let odd = Event::new(
        CHANNEL,
        ann.clone(),
        EventKind::Reaction {
            target: id.clone().into(),
            key: Text::new("🦀"),
            removed: false,
        },
    );
    assert!(matches!(
        send(&mut r.h, odd).await,
        Err(SendError::Rejected(_))
    ));
    let delete = Event::new(
        CHANNEL,
        ann,
        EventKind::Delete {
            target: id.clone().into(),
        },
    );
    send(&mut r.h, delete).await.expect("deleted");
    assert!(r.fake.messages_in(CHANNEL).iter().all(|m| m.ts != ts));
    // None of our own messages, edits, reactions or deletes came back as events.
    assert!(
        r.h.next_event(Duration::from_secs(1)).await.is_none(),
        "no echo"
    );
    assert_eq!(r.fake.unacknowledged(), 0);
}

#[tokio::test]
async fn people_threads_edits_deletes_reactions_and_mentions_come_in() {
    let mut r = running(json!({})).await;
    let bob = User::new("U0BOB00001", "bob", "Bob B");
    let ann = User::new("U0ANN00001", "ann", "");
    r.fake.add_user(&bob);
    r.fake.add_user(&ann);
    let ts = r.fake.user_says(
        CHANNEL,
        &ann,
        "hi <@U0BOB00001>, *look* at <https://example.org|this> &amp; <!here>",
    );
    let e = r.h.next_event(WAIT).await.expect("the message");
    assert_eq!(
        e.remote_id.as_ref().map(|i| i.as_str().to_owned()),
        Some(format!("{CHANNEL}/{ts}"))
    );
    assert_eq!(
        e.sender.display_name.as_deref(),
        Some("ann"),
        "the username when there is no display name"
    );
    let c = e.content().expect("content");
    assert_eq!(
        c.text.as_str(),
        "hi @Bob B, *look* at this (https://example.org) & @here"
    );
    assert_eq!(
        c.formatted,
        Some(Formatted::Html(Text::new(
            "hi @Bob B, <b>look</b> at <a href=\"https://example.org\">this</a> &amp; @here"
        )))
    );
    r.fake
        .user_says_in_thread(CHANNEL, &bob, "in the thread", &ts);
    let t = r.h.next_event(WAIT).await.expect("the reply");
    assert_eq!(
        t.thread_root.as_ref().map(|i| i.as_str().to_owned()),
        Some(format!("{CHANNEL}/{ts}"))
    );
    r.fake.user_edits(CHANNEL, &ts, "hi again");
    let edit = r.h.next_event(WAIT).await.expect("the edit");
    match &edit.kind {
        EventKind::Edit { target, content } => {
            assert_eq!(target.as_str(), format!("{CHANNEL}/{ts}"));
            assert_eq!(content.text.as_str(), "hi again");
        }
        other => panic!("expected an edit, got {other:?}"),
    }
    r.fake.user_reacts(CHANNEL, &ts, &bob, "thumbsup");
    let react = r.h.next_event(WAIT).await.expect("the reaction");
    assert!(
        matches!(&react.kind, EventKind::Reaction { key, removed: false, .. } if key.as_str() == "👍")
    );
    r.fake.user_deletes(CHANNEL, &ts);
    let del = r.h.next_event(WAIT).await.expect("the delete");
    assert!(
        matches!(&del.kind, EventKind::Delete { target } if target.as_str() == format!("{CHANNEL}/{ts}"))
    );
    // Another channel the bridge does not serve: nothing.
    r.fake.add_channel("C0OTHER001", "other");
    r.fake.user_says("C0OTHER001", &bob, "elsewhere");
    assert!(r.h.next_event(Duration::from_secs(1)).await.is_none());
    assert_eq!(
        r.fake.unacknowledged(),
        0,
        "acknowledged, the unserved one too"
    );
}

#[tokio::test]
async fn drops_and_refreshes_lose_nothing_and_link_disabled_ends_the_account() {
    let mut r = running(json!({})).await;
    let ann = User::new("U0ANN00001", "ann", "Ann");
    r.fake.drop_connection();
    // Said while the connection is down: queued by Slack, delivered on the next one.
    r.fake.user_says(CHANNEL, &ann, "during the drop");
    let e =
        r.h.next_event(WAIT)
            .await
            .expect("delivered after the reconnect");
    assert_eq!(
        e.content().map(|c| c.text.as_str().to_owned()).as_deref(),
        Some("during the drop")
    );
    assert!(r.fake.connections() >= 2);
    r.fake.disconnect("refresh_requested");
    for _ in 0..100 {
        if r.fake.connections() >= 3 && r.fake.connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        r.fake.connections() >= 3,
        "a new connection after refresh_requested"
    );
    r.fake.user_says(CHANNEL, &ann, "after the refresh");
    let e = r.h.next_event(WAIT).await.expect("after the refresh");
    assert_eq!(
        e.content().map(|c| c.text.as_str().to_owned()).as_deref(),
        Some("after the refresh")
    );
    assert!(
        r.h.next_event(Duration::from_millis(500)).await.is_none(),
        "each once"
    );
    r.fake.disconnect("link_disabled");
    match r.h.wait_finished(WAIT).await {
        Some(Err(ConnectorError::Fatal(why))) => assert!(why.contains("link_disabled"), "{why}"),
        other => panic!("expected a fatal end, got {other:?}"),
    }
}

#[tokio::test]
async fn what_slack_stopped_redelivering_is_read_from_history_after_a_restart() {
    let fake = fake().await;
    let ann = User::new("U0ANN00001", "ann", "Ann");
    let state = Arc::new(MemoryState::default());
    let mut h = Harness::start_with_state(
        build(table(&fake, json!({}))),
        ACCOUNT,
        vec![CHANNEL.into()],
        state.clone(),
    );
    assert!(h.wait_connected(WAIT).await);
    let first = fake.user_says(CHANNEL, &ann, "before");
    assert!(h.next_event(WAIT).await.is_some());
    h.shutdown(WAIT).await;
    // A long outage: Slack spends its retries and drops the envelopes.
    fake.user_says(CHANNEL, &ann, "while down 1");
    fake.user_says(CHANNEL, &ann, "while down 2");
    fake.give_up_pending();
    let mut h = Harness::start_with_state(
        build(table(&fake, json!({}))),
        ACCOUNT,
        vec![CHANNEL.into()],
        state,
    );
    assert!(h.wait_connected(WAIT).await);
    let mut texts = Vec::new();
    while let Some(e) = h.next_event(Duration::from_secs(2)).await {
        texts.push(
            e.content()
                .map(|c| c.text.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
    assert_eq!(
        texts,
        ["while down 1", "while down 2"],
        "oldest first, nothing twice"
    );
    let history = fake.calls("conversations.history");
    // The first run had nothing stored to read after; the second reads after the last stored.
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].params["channel"], json!(CHANNEL));
    assert_eq!(history[0].params["oldest"], json!(first));
    assert_eq!(history[0].params["inclusive"], json!("false"));
}

#[tokio::test]
async fn sends_keep_to_the_rate_limits_and_typed_errors_come_back() {
    let mut r = running(json!({})).await;
    r.fake.set_post_burst(1);
    let started = std::time::Instant::now();
    for n in 0..4 {
        send(&mut r.h, say(from("Ann", None), &format!("message {n}")))
            .await
            .expect("sent");
    }
    assert_eq!(r.fake.too_many(), 0, "never over the limit");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "one per second per channel"
    );
    // A 429 anyway (the workspace's other apps): its Retry-After is waited out, then sent.
    r.fake.rate_limit_next("chat.postMessage", 1);
    let started = std::time::Instant::now();
    send(&mut r.h, say(from("Ann", None), "after a 429"))
        .await
        .expect("sent after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After waited out"
    );
    assert_eq!(r.fake.too_many(), 1);
    assert_eq!(
        r.fake
            .calls("chat.postMessage")
            .iter()
            .filter(|c| c.params["text"] == json!("after a 429"))
            .count(),
        2
    );
    // Still limited after the retries: a typed error the daemon retries later.
    for _ in 0..3 {
        r.fake.rate_limit_next("chat.postMessage", 1);
    }
    assert!(matches!(
        send(&mut r.h, say(from("Ann", None), "x")).await,
        Err(SendError::RateLimited { .. })
    ));
    r.fake.fail_next("chat.postMessage", "not_in_channel");
    assert_eq!(
        send(&mut r.h, say(from("Ann", None), "x")).await,
        Err(SendError::RoomNotFound)
    );
    r.fake.fail_next("chat.postMessage", "msg_too_long");
    assert_eq!(
        send(&mut r.h, say(from("Ann", None), "x")).await,
        Err(SendError::TooLarge)
    );
    let unknown = Event::new(
        "C0NOTHERE9",
        from("Ann", None),
        EventKind::Message(Content::plain("x")),
    );
    assert_eq!(send(&mut r.h, unknown).await, Err(SendError::RoomNotFound));
}

#[tokio::test]
async fn the_events_api_takes_only_signed_fresh_calls() {
    let fake = fake().await;
    let port = passerelle_testkit::free_port();
    let mut h = Harness::start(
        build(table(
            &fake,
            json!({"mode": "events", "app_token": null, "signing_secret": SECRET}),
        )),
        ACCOUNT,
        vec![CHANNEL.into()],
    );
    h.serve_http(port).await;
    assert!(h.wait_connected(WAIT).await);
    let url = format!("http://127.0.0.1:{port}/hooks/{ACCOUNT}");
    let challenge = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
    let (status, body) = FakeSlack::post_event(&url, SECRET, &challenge, None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).ok()),
        (200, Some(json!({"challenge": challenge["challenge"]})))
    );
    fake.user_says(CHANNEL, &User::new("U0ANN00001", "ann", "Ann"), "signed");
    let payload = fake.last_payload().expect("queued");
    assert_eq!(
        FakeSlack::post_event(&url, "another-secret-of-32-characters!", &payload, None)
            .await
            .0,
        401
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        FakeSlack::post_event(&url, SECRET, &payload, Some(now - 600))
            .await
            .0,
        401,
        "a replay"
    );
    assert!(
        h.next_event(Duration::from_millis(500)).await.is_none(),
        "nothing unproved taken"
    );
    assert_eq!(
        FakeSlack::post_event(&url, SECRET, &payload, None).await.0,
        200
    );
    assert!(h.next_event(WAIT).await.is_some());
    // Slack's retry of the same event: taken again (the daemon drops the copy by its id).
    assert_eq!(
        FakeSlack::post_event(&url, SECRET, &payload, None).await.0,
        200
    );
    assert_eq!(
        FakeSlack::post_event(&url, SECRET, &json!([1]), None)
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn files_go_through_the_external_upload_flow_and_come_back_as_signed_links() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = fake().await;
    let port = passerelle_testkit::free_port();
    let t = table(
        &fake,
        json!({"media_public_url": format!("http://127.0.0.1:{port}")}),
    );
    let ctx = BuildContext {
        account: ACCOUNT.into(),
        data_dir: dir.path().to_owned(),
    };
    let connector = SlackFactory.build(&ctx, t).expect("config");
    let mut h = Harness::start(connector, ACCOUNT, vec![CHANNEL.into()]);
    h.serve_http(port).await;
    assert!(h.wait_connected(WAIT).await);
    let data = b"the file's bytes".to_vec();
    let url = passerelle_testkit::file_server("notes.txt", "text/plain", data.clone()).await;
    let mut content = Content::plain("a file");
    content.add_file(
        Some(url),
        "notes.txt".into(),
        Some("text/plain".into()),
        Some(16),
    );
    send(
        &mut h,
        Event::new(CHANNEL, from("Ann", None), EventKind::Message(content)),
    )
    .await
    .expect("sent");
    let got = fake.calls("files.getUploadURLExternal");
    assert_eq!(
        got[0].params,
        json!({"filename": "notes.txt", "length": "16"})
    );
    let complete = fake.calls("files.completeUploadExternal");
    let file_id = complete[0].params["files"][0]["id"]
        .as_str()
        .expect("a file id")
        .to_owned();
    assert_eq!(complete[0].params["channel_id"], json!(CHANNEL));
    assert_eq!(fake.uploaded(&file_id), Some(data.clone()));
    // The file share comes back from the bot user: not bridged.
    assert!(h.next_event(Duration::from_millis(800)).await.is_none());
    // A person's file: offered through a signed link that fetches it with the bot token.
    let bob = User::new("U0BOB00001", "bob", "Bob");
    fake.user_says(CHANNEL, &bob, "x");
    let _ = h.next_event(WAIT).await;
    // Re-share the uploaded file as Bob's (the fake keeps files by id).
    fake.user_shares(CHANNEL, &bob, &file_id, "notes.txt", data.len());
    let e = h.next_event(WAIT).await.expect("the file message");
    let att = &e.content().expect("content").attachments[0];
    assert_eq!(att.name.as_str(), "notes.txt");
    let body = reqwest::get(att.url.as_str())
        .await
        .expect("the link answers")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(body.to_vec(), data);
}

#[tokio::test]
async fn named_rooms_are_found_and_a_refused_token_ends_the_account() {
    let fake = fake().await;
    fake.add_channel("C0GENERAL1", "general");
    let mut h = Harness::start(
        build(table(&fake, json!({}))),
        ACCOUNT,
        vec!["#General".into()],
    );
    assert!(h.wait_connected(WAIT).await);
    send(
        &mut h,
        Event::new(
            "#General",
            from("Ann", None),
            EventKind::Message(Content::plain("by name")),
        ),
    )
    .await
    .expect("sent");
    assert_eq!(fake.messages_in("C0GENERAL1").len(), 1);
    let bob = User::new("U0BOB00001", "bob", "Bob");
    fake.user_says("C0GENERAL1", &bob, "back");
    let e = h.next_event(WAIT).await.expect("an event");
    assert_eq!(e.room.as_str(), "#General");
    let mut bad = Harness::start(
        build(table(&fake, json!({"bot_token": "xoxb-wrong-token"}))),
        ACCOUNT,
        vec![CHANNEL.into()],
    );
    assert!(matches!(
        bad.wait_finished(WAIT).await,
        Some(Err(ConnectorError::AuthRejected(_)))
    ));
}

/// The daemon stores slowly: the envelope must stay unacknowledged (and Slack send it again)
/// until the store answers, and be acknowledged once it does.
#[tokio::test]
async fn an_envelope_is_acknowledged_only_once_its_event_is_stored() {
    use passerelle_sdk::{
        AccountId, ConnectionState, ConnectorIo, DaemonView, Disposition, Emitter, HttpMount,
        Links, OutboundQueue, RoomUpdates, StateHandle, StatusReporter,
    };
    let fake = fake().await;
    fake.set_ack_timeout(Duration::from_millis(700));
    let account = AccountId::new(ACCOUNT);
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(16);
    let (_out_tx, out_rx) = tokio::sync::mpsc::channel(4);
    let (status, mut status_rx) = StatusReporter::new();
    let shutdown = passerelle_sdk::CancellationToken::new();
    let mut io = ConnectorIo {
        account: account.clone(),
        rooms: vec![CHANNEL.into()],
        room_updates: RoomUpdates::fixed(vec![CHANNEL.into()]),
        emitter: Emitter::new(account.clone(), in_tx),
        outbound: OutboundQueue::new(out_rx),
        state: StateHandle::new(account.clone(), Arc::new(MemoryState::default())),
        status,
        shutdown: shutdown.clone(),
        http: HttpMount::new(),
        daemon: DaemonView::default(),
        links: Links::unavailable(account.clone()),
    };
    let connector = build(table(&fake, json!({})));
    let task = tokio::spawn(async move { connector.run(&mut io).await });
    tokio::time::timeout(
        WAIT,
        status_rx.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .expect("connected")
    .expect("status");
    fake.user_says(
        CHANNEL,
        &User::new("U0ANN00001", "ann", "Ann"),
        "slow store",
    );
    let first = tokio::time::timeout(WAIT, in_rx.recv())
        .await
        .expect("emitted")
        .expect("an event");
    // The store has not answered: past the ack timeout, Slack sends the envelope again, which
    // waits behind the first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fake.unacknowledged(),
        1,
        "not acknowledged before it is stored"
    );
    assert!(
        fake.deliveries() >= 2,
        "delivered again: {}",
        fake.deliveries()
    );
    first.answer(Ok(Disposition::Queued { destinations: 1 }));
    // The copy comes in once the first is done, and is a duplicate for the daemon.
    let copy = tokio::time::timeout(WAIT, in_rx.recv())
        .await
        .expect("the copy")
        .expect("an event");
    assert_eq!(copy.event.remote_id, first_remote(&fake));
    copy.answer(Ok(Disposition::Duplicate));
    common_wait(|| fake.unacknowledged() == 0).await;
    assert_eq!(fake.unacknowledged(), 0, "acknowledged once stored");
    shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}

fn first_remote(fake: &FakeSlack) -> Option<passerelle_sdk::RemoteMessageId> {
    fake.messages_in(CHANNEL)
        .first()
        .map(|m| format!("{CHANNEL}/{}", m.ts).into())
}

async fn common_wait(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

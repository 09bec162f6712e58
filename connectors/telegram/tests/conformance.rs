//! The conformance suite and the Telegram connector's own behaviour, against the faithful fake of
//! the Bot API (`passerelle_telegram::testing`), in polling and in webhook mode.

use futures::future::BoxFuture;
use passerelle_sdk::{
    Attachment, BuildContext, Connector, ConnectorError, ConnectorFactory, Content, Event,
    EventKind, RoomId, SendError, Sender, Text, UserId,
};
use passerelle_telegram::TelegramFactory;
use passerelle_telegram::testing::{FakeTelegram, User};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::Harness;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "123456789:AAE-conformance_token";
const GROUP: i64 = -1001000000001;
const ACCOUNT: &str = "conformance.account";
const WAIT: Duration = Duration::from_secs(10);

fn table(fake: &FakeTelegram, extra: Value) -> Value {
    let mut t = json!({"token": TOKEN, "api_base": fake.api_base(), "poll_timeout_secs": 2,
                       "request_timeout_secs": 10});
    if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    t
}

fn build(table: Value, dir: &std::path::Path) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: ACCOUNT.into(),
        data_dir: dir.to_owned(),
    };
    match TelegramFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

struct TelegramPeer {
    fake: Arc<FakeTelegram>,
    user: User,
    port: Option<u16>,
    seen: usize,
}

impl Peer for TelegramPeer {
    fn room(&self) -> RoomId {
        GROUP.to_string().into()
    }
    fn unknown_room(&self) -> RoomId {
        "-1009999999999".into()
    }
    fn user(&self) -> UserId {
        self.user.id.to_string().into()
    }
    fn http_port(&self) -> Option<u16> {
        self.port
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.user_says(GROUP, &self.user, text);
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake
                .user_says(GROUP, &self.user, &format!("/me {text}"));
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        let fake = self.fake.clone();
        let seen = &mut self.seen;
        Box::pin(conformance::collect_sent(min_bytes, timeout, move || {
            let calls = fake.calls();
            let new = calls[*seen..]
                .iter()
                .filter(|c| c.method == "sendMessage" && c.params["chat_id"] == json!(GROUP))
                .map(|c| c.params["text"].as_str().unwrap_or("").to_owned())
                .collect();
            *seen = calls.len();
            new
        }))
    }
}

async fn fake() -> Arc<FakeTelegram> {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.add_chat(GROUP, "supergroup", "Conformance", true);
    Arc::new(fake)
}

#[tokio::test]
async fn telegram_passes_the_conformance_suite_by_polling() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (t, path) = (table(&fake, json!({})), dir.path().to_owned());
    let make = move || build(t.clone(), &path);
    let mut peer = TelegramPeer {
        fake: fake.clone(),
        user: User::new(5001, "Peer"),
        port: None,
        seen: 0,
    };
    conformance::run(&make, &mut peer, vec![GROUP.to_string().into()]).await;
}

#[tokio::test]
async fn telegram_passes_the_conformance_suite_by_webhook() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let t = table(
        &fake,
        json!({"mode": "webhook", "webhook_url": format!("http://127.0.0.1:{port}/hooks/{ACCOUNT}"),
               "webhook_secret": "conformance_secret-1-0123456789abcdef"}),
    );
    let path = dir.path().to_owned();
    let make = move || build(t.clone(), &path);
    let mut peer = TelegramPeer {
        fake: fake.clone(),
        user: User::new(5001, "Peer"),
        port: Some(port),
        seen: 0,
    };
    conformance::run(&make, &mut peer, vec![GROUP.to_string().into()]).await;
    let (url, secret) = fake.webhook().expect("the webhook was set");
    assert!(url.ends_with("/hooks/conformance.account"));
    assert_eq!(secret, "conformance_secret-1-0123456789abcdef");
    assert_eq!(fake.pending_updates(), 0, "every update was answered 200");
}

struct Running {
    h: Harness,
    fake: Arc<FakeTelegram>,
    base: String,
    _dir: tempfile::TempDir,
}

async fn running(extra: Value, rooms: Vec<i64>) -> Running {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let mut extra = extra;
    if extra.get("media_public_url").is_some() {
        extra["media_public_url"] = json!(format!("http://127.0.0.1:{port}"));
    }
    let connector = build(table(&fake, extra), dir.path());
    let rooms = rooms.iter().map(|r| r.to_string().into()).collect();
    let mut h = Harness::start(connector, ACCOUNT, rooms);
    h.serve_http(port).await;
    assert!(h.wait_connected(WAIT).await);
    Running {
        h,
        fake,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn out(room: i64, kind: EventKind) -> Event {
    let mut sender = Sender::new("alice");
    sender.display_name = Some("alice".into());
    Event::new(room.to_string(), sender, kind)
}

#[tokio::test]
async fn edits_deletes_reactions_replies_and_topics_map_both_ways() {
    let mut r = running(json!({}), vec![GROUP]).await;
    let ada = User::new(5002, "Ada");
    // Inbound: a message, its edit, a reply, a topic message, reactions.
    let first = r.fake.user_says(GROUP, &ada, "first");
    let e = r.h.next_event(WAIT).await.unwrap();
    assert_eq!(e.remote_id.as_ref().unwrap().as_str(), first.to_string());
    assert_eq!(e.sender.display_name.as_deref(), Some("Ada"));
    r.fake.user_edits(GROUP, &ada, first, "first, edited");
    let e = r.h.next_event(WAIT).await.unwrap();
    assert!(
        matches!(&e.kind, EventKind::Edit { target, content } if target.as_str() == first.to_string() && content.text.as_str() == "first, edited")
    );
    r.fake.user_replies(GROUP, &ada, first, "a reply");
    let e = r.h.next_event(WAIT).await.unwrap();
    assert_eq!(e.reply_to.unwrap().as_str(), first.to_string());
    r.fake.user_says_in_topic(GROUP, &ada, 77, "in a topic");
    let e = r.h.next_event(WAIT).await.unwrap();
    assert_eq!(e.thread_root.unwrap().as_str(), "77");
    assert_eq!(e.reply_to, None);
    r.fake.user_reacts(GROUP, &ada, first, &[], &["👍"]);
    r.fake.user_reacts(GROUP, &ada, first, &["👍"], &["🔥"]);
    let mut reactions = Vec::new();
    for _ in 0..3 {
        if let EventKind::Reaction { key, removed, .. } = r.h.next_event(WAIT).await.unwrap().kind {
            reactions.push((key.as_str().to_owned(), removed));
        }
    }
    assert_eq!(
        reactions,
        vec![
            ("👍".into(), false),
            ("👍".into(), true),
            ("🔥".into(), false)
        ]
    );

    // Outbound: a reply in a topic, its edit, a reaction, its removal, a delete.
    let mut m = out(GROUP, EventKind::Message(Content::plain("<alice> hi")));
    m.reply_to = Some(first.to_string().into());
    m.thread_root = Some("77".into());
    let id = r.h.send(m, WAIT).await.unwrap().unwrap().remote_id.unwrap();
    let edit = EventKind::Edit {
        target: id.clone(),
        content: Content::plain("<alice> hi again"),
    };
    r.h.send(out(GROUP, edit), WAIT).await.unwrap().unwrap();
    let react = |key: &str, removed| EventKind::Reaction {
        target: first.to_string().into(),
        key: Text::new(key),
        removed,
    };
    r.h.send(out(GROUP, react("🔥", false)), WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.fake.bot_reaction(GROUP, first), vec!["🔥"]);
    r.h.send(out(GROUP, react("🔥", true)), WAIT)
        .await
        .unwrap()
        .unwrap();
    assert!(r.fake.bot_reaction(GROUP, first).is_empty());
    // An emoji bots may not use is refused, not dropped silently.
    assert!(matches!(
        r.h.send(out(GROUP, react("🦀", false)), WAIT)
            .await
            .unwrap(),
        Err(SendError::Rejected(_))
    ));
    let calls: Vec<(String, Value)> = r
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method != "deleteWebhook")
        .map(|c| (c.method, c.params))
        .collect();
    assert_eq!(
        calls[0],
        (
            "sendMessage".into(),
            json!({"chat_id": GROUP, "text": "<alice> hi", "message_thread_id": 77,
                   "reply_parameters": {"message_id": first, "allow_sending_without_reply": true}})
        )
    );
    assert_eq!(
        calls[1],
        (
            "editMessageText".into(),
            json!({"chat_id": GROUP, "message_id": id.as_str().parse::<i64>().unwrap(), "text": "<alice> hi again"})
        )
    );
    assert_eq!(
        calls[2],
        (
            "setMessageReaction".into(),
            json!({"chat_id": GROUP, "message_id": first, "reaction": [{"type": "emoji", "emoji": "🔥"}]})
        )
    );
    assert_eq!(calls[3].1["reaction"], json!([]));
    r.h.send(out(GROUP, EventKind::Delete { target: id }), WAIT)
        .await
        .unwrap()
        .unwrap();
    assert!(r.fake.bot_texts(GROUP).is_empty());
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn files_go_both_ways_and_the_token_never_leaves() {
    let mut r = running(
        json!({"media_public_url": "set", "media_fetch_private": true}),
        vec![GROUP],
    )
    .await;
    let ada = User::new(5002, "Ada");
    let data = b"%PDF-1.4 a small file".to_vec();
    r.fake
        .user_sends_file(GROUP, &ada, "report.pdf", &data, "the report");
    let e = r.h.next_event(WAIT).await.unwrap();
    let c = e.content().unwrap();
    assert_eq!(c.text.as_str(), "the report");
    let link = c.attachments[0].url.as_str().to_owned();
    assert!(link.starts_with(&format!("{}/accounts/{ACCOUNT}/media/", r.base)));
    assert!(!link.contains("AAE-conformance_token"));
    let got = reqwest::get(&link).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), data);
    // Outbound: the file is fetched and uploaded as a document.
    let url =
        passerelle_testkit::file_server("notes.txt", "text/plain", b"some notes".to_vec()).await;
    let mut content = Content::plain("");
    content.attachments.push(Attachment {
        name: Text::new("notes.txt"),
        mime: Some("text/plain".into()),
        size: None,
        url: Text::new(url),
    });
    r.h.send(out(GROUP, EventKind::Message(content)), WAIT)
        .await
        .unwrap()
        .unwrap();
    let upload = r
        .fake
        .calls()
        .into_iter()
        .find(|c| c.method == "sendDocument")
        .expect("the file was uploaded");
    assert_eq!(upload.params["chat_id"], json!(GROUP.to_string()));
    assert_eq!(upload.params["document"]["file_name"], "notes.txt");
    let bytes: Vec<u8> = upload.params["document"]["bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, b"some notes");
    r.h.shutdown(WAIT).await;
}

#[tokio::test]
async fn flood_waits_migrations_and_a_wrong_token() {
    const OLD: i64 = -4000001;
    const NEW: i64 = -1004000001;
    let mut r = running(json!({}), vec![OLD]).await;
    r.fake.add_chat(OLD, "group", "Old group", false);
    let hi = || out(OLD, EventKind::Message(Content::plain("<alice> hi")));
    r.fake.fail_next(
        429,
        "Too Many Requests: retry after 3",
        Some(json!({"retry_after": 3})),
    );
    assert_eq!(
        r.h.send(hi(), WAIT).await.unwrap(),
        Err(SendError::RateLimited {
            retry_after: Duration::from_secs(3)
        })
    );
    // The group is upgraded while the bridge is not told yet: the send is refused with the new
    // id, followed, and sent there.
    let ada = User::new(5002, "Ada");
    r.fake.migrate(OLD, NEW, &ada);
    r.h.send(hi(), WAIT).await.unwrap().unwrap();
    assert_eq!(r.fake.bot_texts(NEW), vec!["<alice> hi"]);
    // The supergroup's messages arrive under the configured room.
    r.fake.user_says(NEW, &ada, "from the supergroup");
    let e = r.h.next_event(WAIT).await.unwrap();
    assert_eq!(e.room.as_str(), OLD.to_string());
    assert!(
        matches!(r.h.state().get(&passerelle_telegram::intake::moved_key(-4000001)).await, Ok(Some(v)) if v == NEW.to_string().as_bytes())
    );
    r.h.shutdown(WAIT).await;

    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = table(&fake, json!({}));
    t["token"] = json!("123456789:wrong");
    let mut h = Harness::start(
        build(t, dir.path()),
        ACCOUNT,
        vec![GROUP.to_string().into()],
    );
    assert!(matches!(
        h.wait_finished(WAIT).await,
        Some(Err(ConnectorError::AuthRejected(_)))
    ));
}

#[tokio::test]
async fn a_restart_resumes_after_the_saved_offset() {
    // A run stored three updates and saved the offset after them, then crashed before its next
    // poll told Telegram: Telegram still holds them. The next run must not bridge them again.
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let ada = User::new(5002, "Ada");
    for i in 0..3 {
        fake.user_says(GROUP, &ada, &format!("before {i}"));
    }
    let held = fake.pending_update_ids();
    assert_eq!(held.len(), 3);
    let state = Arc::new(passerelle_testkit::harness::MemoryState::default());
    passerelle_sdk::StateHandle::new(ACCOUNT.into(), state.clone())
        .put("offset", (held[2] + 1).to_string())
        .await
        .unwrap();
    fake.user_says(GROUP, &ada, "after");
    let mut h = Harness::start_with_state(
        build(table(&fake, json!({})), dir.path()),
        ACCOUNT,
        vec![RoomId::from(GROUP.to_string())],
        state,
    );
    let e = h.next_event(WAIT).await.expect("the new update");
    assert_eq!(
        e.content().unwrap().text.as_str(),
        "after",
        "an update was replayed"
    );
    assert!(h.next_event(Duration::from_millis(500)).await.is_none());
    assert_eq!(fake.pending_update_ids().len(), 0, "Telegram was told");
    h.shutdown(WAIT).await;
}

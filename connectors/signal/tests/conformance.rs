//! The conformance suite and the Signal connector's own behaviour, against the faithful fake of
//! signal-cli's HTTP daemon (`passerelle_signal::testing`).

use futures::future::BoxFuture;
use passerelle_sdk::{
    Attachment, BuildContext, Connector, ConnectorFactory, Content, Event, EventKind, RoomId,
    SendError, Sender, Text, UserId,
};
use passerelle_signal::SignalFactory;
use passerelle_signal::testing::FakeSignalCli;
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::{Harness, MemoryState};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const ME: &str = "+15550000000";
const ME_UUID: &str = "11111111-1111-4111-8111-111111111111";
const ADA: &str = "+15551112222";
const ADA_UUID: &str = "7ccae375-cd51-4c82-8b1e-7be3280aa485";
const GROUP: &str = "Pmpi+EfPWmsxiomLe9Nx2XF9HOE483p6iKiFj65iMwI=";
const ACCOUNT: &str = "conformance.account";
const WAIT: Duration = Duration::from_secs(10);

async fn fake() -> Arc<FakeSignalCli> {
    let fake = FakeSignalCli::start(ME, ME_UUID).await;
    fake.add_user(ADA, ADA_UUID);
    fake.add_group(GROUP, &[ME, ADA]);
    Arc::new(fake)
}

fn build(fake: &FakeSignalCli, extra: Value, dir: &std::path::Path) -> Box<dyn Connector> {
    let mut t = json!({"account": ME, "url": fake.url(), "request_timeout_secs": 10});
    if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    let ctx = BuildContext {
        account: ACCOUNT.into(),
        data_dir: dir.to_owned(),
    };
    match SignalFactory.build(&ctx, t) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

struct SignalPeer {
    fake: Arc<FakeSignalCli>,
    seen: usize,
}

impl Peer for SignalPeer {
    fn room(&self) -> RoomId {
        ADA.into()
    }
    fn unknown_room(&self) -> RoomId {
        "+15559999999".into()
    }
    fn user(&self) -> UserId {
        ADA_UUID.into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.text_from(ADA, text);
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.fake.text_from(ADA, &format!("/me {text}"));
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        let fake = self.fake.clone();
        let seen = &mut self.seen;
        Box::pin(conformance::collect_sent(min_bytes, timeout, move || {
            let calls = fake.calls();
            let new = calls[*seen..]
                .iter()
                .filter(|c| c.method == "send" && c.params["recipient"] == json!([ADA]))
                .map(|c| c.params["message"].as_str().unwrap_or("").to_owned())
                .collect();
            *seen = calls.len();
            new
        }))
    }
}

#[tokio::test]
async fn signal_passes_the_conformance_suite() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = (fake.clone(), dir.path().to_owned());
    let make = move || build(&f, json!({}), &path);
    let mut peer = SignalPeer {
        fake: fake.clone(),
        seen: 0,
    };
    conformance::run(&make, &mut peer, vec![ADA.into()]).await;
}

fn out(room: &str, kind: EventKind) -> Event {
    let mut sender = Sender::new("alice");
    sender.display_name = Some("alice".into());
    Event::new(room, sender, kind)
}

fn group_room() -> String {
    format!("group:{GROUP}")
}

async fn running(fake: &Arc<FakeSignalCli>, extra: Value) -> (Harness, tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let mut extra = extra;
    if extra.get("media_public_url").is_some() {
        extra["media_public_url"] = json!(format!("http://127.0.0.1:{port}"));
    }
    let rooms = vec![
        RoomId::from(ADA),
        RoomId::from(group_room()),
        RoomId::from("+15557777777"),
    ];
    let mut h = Harness::start(build(fake, extra, dir.path()), ACCOUNT, rooms);
    h.serve_http(port).await;
    assert!(h.wait_connected(WAIT).await);
    (h, dir, port)
}

#[tokio::test]
async fn replies_reactions_edits_deletes_and_files_map_both_ways() {
    let fake = fake().await;
    let (mut h, _dir, port) = running(
        &fake,
        json!({"media_public_url": "set", "media_fetch_private": true}),
    )
    .await;
    // Outbound in the group: a message, then a reply to Ada's message, an edit and a delete of
    // ours, a reaction to hers.
    let ada_ts = fake.group_text(ADA, GROUP, "hello group");
    let e = h.next_event(WAIT).await.unwrap();
    assert_eq!(e.room.as_str(), group_room());
    let ada_id = format!("{ada_ts}@{ADA_UUID}");
    assert_eq!(e.remote_id.as_ref().unwrap().as_str(), ada_id);
    let mut reply = out(
        &group_room(),
        EventKind::Message(Content::plain("<alice> yes")),
    );
    reply.reply_to = Some(ada_id.clone().into());
    let ours = h
        .send(reply, WAIT)
        .await
        .unwrap()
        .unwrap()
        .remote_id
        .unwrap();
    let (our_ts, author) = ours.as_str().split_once('@').unwrap();
    assert_eq!(author, ME);
    let edit = EventKind::Edit {
        target: ours.clone(),
        content: Content::plain("<alice> yes!"),
    };
    h.send(out(&group_room(), edit), WAIT)
        .await
        .unwrap()
        .unwrap();
    let react = EventKind::Reaction {
        target: ada_id.clone().into(),
        key: Text::new("👍"),
        removed: false,
    };
    h.send(out(&group_room(), react), WAIT)
        .await
        .unwrap()
        .unwrap();
    h.send(
        out(
            &group_room(),
            EventKind::Delete {
                target: ours.clone(),
            },
        ),
        WAIT,
    )
    .await
    .unwrap()
    .unwrap();
    // Her messages can't be edited or deleted by us: refused, not sent.
    let theirs = EventKind::Delete {
        target: ada_id.clone().into(),
    };
    assert!(matches!(
        h.send(out(&group_room(), theirs), WAIT).await.unwrap(),
        Err(SendError::Rejected(_))
    ));
    let calls: Vec<(String, Value)> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method != "getUserStatus")
        .map(|c| (c.method, c.params))
        .collect();
    let our_ts: u64 = our_ts.parse().unwrap();
    assert_eq!(
        calls,
        vec![
            (
                "send".into(),
                json!({"groupId": GROUP, "message": "<alice> yes", "quoteTimestamp": ada_ts, "quoteAuthor": ADA_UUID})
            ),
            (
                "send".into(),
                json!({"groupId": GROUP, "editTimestamp": our_ts, "message": "<alice> yes!"})
            ),
            (
                "sendReaction".into(),
                json!({"groupId": GROUP, "emoji": "👍", "targetAuthor": ADA_UUID, "targetTimestamp": ada_ts, "remove": false})
            ),
            (
                "remoteDelete".into(),
                json!({"groupId": GROUP, "targetTimestamp": our_ts})
            ),
        ]
    );
    // Inbound: her quote of our message, her reaction to it, an attachment.
    fake.receive(
        ADA,
        json!({"dataMessage": {"timestamp": our_ts + 10, "message": "quoting you",
            "groupInfo": {"groupId": GROUP, "type": "DELIVER"},
            "quote": {"id": our_ts, "author": ME, "authorNumber": ME, "authorUuid": ME_UUID, "text": "", "attachments": []}}}),
    );
    let e = h.next_event(WAIT).await.unwrap();
    assert_eq!(e.reply_to.unwrap().as_str(), ours.as_str());
    fake.add_attachment("Zm9vYmFy.jpg", b"\xff\xd8 jpeg bytes");
    fake.receive(
        ADA,
        json!({"dataMessage": {"timestamp": our_ts + 20, "message": "photo",
            "attachments": [{"contentType": "image/jpeg", "filename": "cat.jpg", "id": "Zm9vYmFy.jpg", "size": 12}]}}),
    );
    let e = h.next_event(WAIT).await.unwrap();
    assert_eq!(e.room.as_str(), ADA);
    let link = e.content().unwrap().attachments[0].url.as_str().to_owned();
    assert!(link.starts_with(&format!(
        "http://127.0.0.1:{port}/accounts/{ACCOUNT}/media/"
    )));
    let got = reqwest::get(&link).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), b"\xff\xd8 jpeg bytes");
    // Outbound file: fetched and sent as a data: URI.
    let url = passerelle_testkit::file_server("n.txt", "text/plain", b"notes".to_vec()).await;
    let mut content = Content::plain("<alice> a file");
    content.attachments.push(Attachment {
        name: Text::new("n.txt"),
        mime: Some("text/plain".into()),
        size: None,
        url: Text::new(url),
    });
    h.send(out(ADA, EventKind::Message(content)), WAIT)
        .await
        .unwrap()
        .unwrap();
    let sent = fake.files();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (
            sent[0].mime.as_str(),
            sent[0].name.as_deref(),
            sent[0].data.as_slice()
        ),
        ("text/plain", Some("n.txt"), b"notes".as_slice())
    );
    h.shutdown(WAIT).await;
}

#[tokio::test]
async fn rate_limits_and_unregistered_numbers_are_typed_errors() {
    let fake = fake().await;
    let (mut h, _dir, _) = running(&fake, json!({})).await;
    let hi = |room: &str| out(room, EventKind::Message(Content::plain("<alice> hi")));
    fake.fail_next(
        -5,
        "Failed to send message due to rate limiting",
        json!({"response": {"timestamp": 1, "results": [{"recipientAddress": {"number": ADA}, "type": "RATE_LIMIT_FAILURE", "retryAfterSeconds": 12}]}}),
    );
    assert_eq!(
        h.send(hi(ADA), WAIT).await.unwrap(),
        Err(SendError::RateLimited {
            retry_after: Duration::from_secs(12)
        })
    );
    assert!(matches!(
        h.send(hi("+15557777777"), WAIT).await.unwrap(),
        Err(SendError::Rejected(_))
    ));
    fake.fail_next(-3, "Failed to send message: network", Value::Null);
    assert_eq!(
        h.send(hi(ADA), WAIT).await.unwrap(),
        Err(SendError::Disconnected)
    );
    assert!(h.send(hi(ADA), WAIT).await.unwrap().is_ok());
    h.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_lost_stream_and_a_restart_resume_after_the_last_event() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(MemoryState::default());
    let start = |state: Arc<MemoryState>| {
        Harness::start_with_state(
            build(&fake, json!({}), dir.path()),
            ACCOUNT,
            vec![RoomId::from(ADA)],
            state,
        )
    };
    let texts = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e.content().map(|c| c.text.as_str().to_owned()))
            .collect()
    };
    let mut h = start(state.clone());
    assert!(h.wait_connected(WAIT).await);
    fake.text_from(ADA, "one");
    assert_eq!(texts(&[h.next_event(WAIT).await.unwrap()]), vec!["one"]);
    // The stream drops; what arrives meanwhile is asked for again, and nothing twice.
    fake.drop_streams();
    fake.text_from(ADA, "two");
    fake.text_from(ADA, "three");
    let mut got = Vec::new();
    while let Some(e) = h.next_event(Duration::from_secs(3)).await {
        got.push(e);
    }
    assert_eq!(texts(&got), vec!["two", "three"]);
    assert_eq!(fake.streams(), 1, "the connector reconnected");
    // The daemon restarts: the new run resumes after "three".
    h.shutdown(WAIT).await;
    fake.text_from(ADA, "four");
    let mut h = start(state);
    let mut got = Vec::new();
    while let Some(e) = h.next_event(Duration::from_secs(3)).await {
        got.push(e);
    }
    assert_eq!(texts(&got), vec!["four"]);
    h.shutdown(WAIT).await;
}

//! The shared conformance suite, run against a real Synapse on loopback.

use futures::future::BoxFuture;
use passerelle_matrix::MatrixFactory;
use passerelle_sdk::{BuildContext, Connector, ConnectorFactory, RoomId, UserId};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::matrix_client::MatrixUser;
use passerelle_testkit::synapse::Synapse;
use std::path::Path;
use std::time::Duration;

struct MatrixPeer {
    user: MatrixUser,
    room: String,
    bridge: String,
}

impl Peer for MatrixPeer {
    fn room(&self) -> RoomId {
        self.room.as_str().into()
    }
    fn unknown_room(&self) -> RoomId {
        "!not-served:localhost".into()
    }
    fn user(&self) -> UserId {
        self.user.user_id.as_str().into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let room = self.room.clone();
            self.user.say(&room, text).await;
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let room = self.room.clone();
            self.user
                .send(
                    &room,
                    "m.room.message",
                    serde_json::json!({"msgtype": "m.emote", "body": text}),
                )
                .await;
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        Box::pin(async move {
            let mut seen = Vec::new();
            let mut bytes = 0;
            let deadline = std::time::Instant::now() + timeout;
            while bytes < min_bytes {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let (room, bridge) = (self.room.clone(), self.bridge.clone());
                let Some(e) = self
                    .user
                    .next_matching(left, |e| {
                        e.room == room && e.sender() == bridge && e.kind() == "m.room.message"
                    })
                    .await
                else {
                    break;
                };
                bytes += e.body().len();
                seen.push(Seen {
                    text: e.body().to_owned(),
                    emote: e.event["content"]["msgtype"] == "m.emote",
                });
            }
            seen
        })
    }
}

fn bot(hs: &Synapse, dir: &Path) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "matrix.test".into(),
        data_dir: dir.to_owned(),
    };
    let table = serde_json::json!({
        "homeserver": hs.url(), "user": "@bridge:localhost", "password": "bridge-pw",
    });
    match MatrixFactory.build(&ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

#[tokio::test]
async fn bot_mode_passes_the_conformance_suite_against_synapse() {
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice
        .create_room(serde_json::json!({"invite": ["@bridge:localhost"]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut peer = MatrixPeer {
        user: alice,
        room: room.clone(),
        bridge: "@bridge:localhost".into(),
    };
    let make = || bot(&hs, dir.path());
    conformance::run(&make, &mut peer, vec![room.as_str().into()]).await;
}

#[tokio::test]
async fn bot_mode_logs_in_with_an_access_token_from_a_file() {
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let token_holder = MatrixUser::login(&hs.url(), "bridge", "bridge-pw").await;
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice
        .create_room(serde_json::json!({"invite": ["@bridge:localhost"]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", token_holder.access_token())).unwrap();
    let ctx = BuildContext {
        account: "m".into(),
        data_dir: dir.path().join("m"),
    };
    // A token of another user is refused at start, naming the key.
    let wrong = MatrixFactory
        .build(
            &ctx,
            serde_json::json!({"homeserver": hs.url(), "user": "@alice:localhost",
            "access_token_file": token_file}),
        )
        .unwrap();
    let mut h = passerelle_testkit::harness::Harness::start(wrong, "m", vec![room.as_str().into()]);
    match h.wait_finished(std::time::Duration::from_secs(20)).await {
        Some(Err(e)) => assert!(e.to_string().contains("access_token"), "{e}"),
        other => panic!("a token of another user was accepted: {other:?}"),
    }
    let connector = MatrixFactory
        .build(
            &ctx,
            serde_json::json!({"homeserver": hs.url(), "user": "@bridge:localhost",
            "access_token_file": token_file}),
        )
        .unwrap();
    let mut h =
        passerelle_testkit::harness::Harness::start(connector, "m", vec![room.as_str().into()]);
    assert!(h.wait_connected(std::time::Duration::from_secs(30)).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !alice
        .members(&room)
        .await
        .iter()
        .any(|m| m == "@bridge:localhost")
    {
        assert!(std::time::Instant::now() < deadline, "the bot never joined");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    alice.say(&room, "token login works").await;
    assert!(
        h.next_matching(std::time::Duration::from_secs(20), |e| matches!(&e.kind,
            passerelle_sdk::EventKind::Message(c) if c.text.as_str() == "token login works"))
            .await
            .is_some()
    );
    h.shutdown(std::time::Duration::from_secs(10)).await;
}

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

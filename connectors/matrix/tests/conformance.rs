//! The shared conformance suite, run against a real Synapse on loopback.

use passerelle_matrix::MatrixFactory;
use passerelle_matrix::testing::client::{MatrixUser, RoomPeer};
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_sdk::{BuildContext, Connector, ConnectorFactory};
use passerelle_testkit::conformance;
use std::path::Path;

fn bot(hs: &Synapse, dir: &Path) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "matrix.test".into(),
        data_dir: dir.to_owned(),
    };
    let table = serde_json::json!({
        "homeserver": hs.url(), "user": "@bridge:hs.passerelle.test", "password": "bridge-pw",
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
        .create_room(serde_json::json!({"invite": ["@bridge:hs.passerelle.test"]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut peer = RoomPeer {
        user: alice,
        room: room.clone(),
        bridge: "@bridge:hs.passerelle.test".into(),
        http_port: None,
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
        .create_room(serde_json::json!({"invite": ["@bridge:hs.passerelle.test"]}))
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
            serde_json::json!({"homeserver": hs.url(), "user": "@alice:hs.passerelle.test",
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
            serde_json::json!({"homeserver": hs.url(), "user": "@bridge:hs.passerelle.test",
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
        .any(|m| m == "@bridge:hs.passerelle.test")
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

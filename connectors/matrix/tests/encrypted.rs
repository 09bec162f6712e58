//! Bot mode in an encrypted room, against a real Synapse: the peer is a real client library
//! (matrix-sdk with its own crypto store), and the homeserver only ever holds ciphertext.

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId};
use passerelle_matrix::MatrixFactory;
use passerelle_matrix::testing::client::MatrixUser;
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_sdk::{BuildContext, ConnectorFactory, Content, Event, EventKind, Sender};
use passerelle_testkit::harness::Harness;
use serde_json::json;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

async fn sdk_login(hs: &Synapse, dir: &std::path::Path, name: &str, pw: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(hs.url())
        .sqlite_store(dir, None)
        .build()
        .await
        .expect("client");
    client
        .matrix_auth()
        .login_username(name, pw)
        .send()
        .await
        .expect("login");
    client
        .sync_once(SyncSettings::default().timeout(Duration::ZERO))
        .await
        .expect("first sync");
    client
}

/// Syncs until `id` can be read in clear, and returns its body.
async fn decrypted_body(client: &Client, room: &OwnedRoomId, id: &OwnedEventId) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = client
            .sync_once(SyncSettings::default().timeout(Duration::from_millis(500)))
            .await;
        if let Some(r) = client.get_room(room)
            && let Ok(ev) = r.event(id, None).await
            && let TimelineEventKind::Decrypted(d) = &ev.kind
        {
            let v: serde_json::Value = serde_json::from_str(d.event.json().get()).unwrap();
            return v["content"]["body"].as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "never decrypted {id}");
    }
}

/// A homeserver with the bridge's account and Alice, and an encrypted room Alice made and
/// invited the bridge to.
async fn encrypted_room_with_the_bot() -> (Synapse, MatrixUser, String) {
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let http = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = http
        .create_room(json!({
            "invite": ["@bridge:hs.passerelle.test"],
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        }))
        .await;
    (hs, http, room)
}

#[tokio::test]
async fn bot_mode_bridges_an_encrypted_room_both_ways() {
    let (hs, http, room) = encrypted_room_with_the_bot().await;

    let dir = tempfile::tempdir().unwrap();
    let ctx = BuildContext {
        account: "matrix.e2e".into(),
        data_dir: dir.path().join("bridge"),
    };
    let table = json!({"homeserver": hs.url(), "user": "@bridge:hs.passerelle.test", "password": "bridge-pw",
        "store_passphrase": "a store passphrase", "key_backup": true});
    let connector = MatrixFactory.build(&ctx, table).expect("config");
    let mut h = Harness::start(connector, "matrix.e2e", vec![room.as_str().into()]);
    assert!(h.wait_connected(WAIT).await, "the bot did not connect");
    http.wait_member(&room, "@bridge:hs.passerelle.test", WAIT)
        .await;

    // Alice's client encrypts; the bot decrypts and emits the clear text.
    let alice = sdk_login(&hs, &dir.path().join("alice"), "alice", "alice-pw").await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let alice_room = alice.get_room(&room_id).expect("alice sees the room");
    let sent = alice_room
        .send(RoomMessageEventContent::text_plain(
            "secret hello from alice",
        ))
        .await
        .expect("alice sends");
    let wire = http.event(&room, sent.response.event_id.as_str()).await;
    assert_eq!(
        wire["type"], "m.room.encrypted",
        "alice's message is encrypted on the server"
    );
    let inbound = h
        .next_matching(WAIT, |e| {
            matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "secret hello from alice")
        })
        .await
        .expect("the bot decrypted alice's message");
    assert_eq!(inbound.sender.id.as_str(), "@alice:hs.passerelle.test");

    // The bot encrypts what it sends; alice's client reads it.
    let mut sender = Sender::new("bob");
    sender.display_name = Some("bob".into());
    let out = Event::new(
        room.as_str(),
        sender,
        EventKind::Message(Content::plain("secret answer from the bridge")),
    );
    let receipt = h
        .send(out, WAIT)
        .await
        .expect("an answer")
        .expect("the send succeeded");
    let id = receipt.remote_id.expect("an event id");
    let wire = http.event(&room, id.as_str()).await;
    assert_eq!(
        wire["type"], "m.room.encrypted",
        "the bot's message is encrypted on the server"
    );
    assert!(
        !wire.to_string().contains("secret answer"),
        "clear text on the server: {wire}"
    );
    let id = OwnedEventId::try_from(id.as_str()).unwrap();
    assert_eq!(
        decrypted_body(&alice, &room_id, &id).await,
        "secret answer from the bridge"
    );
    // The bot's keys are backed up on the homeserver, and the recovery key is in its data dir.
    let key_file = dir.path().join("bridge").join("recovery-key");
    let deadline = Instant::now() + WAIT;
    while !key_file.exists() {
        assert!(Instant::now() < deadline, "no recovery key was written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the recovery key is readable by others");
    }
    let other_device = MatrixUser::login(&hs.url(), "bridge", "bridge-pw").await;
    let (status, version) = other_device
        .call(
            reqwest::Method::GET,
            "/_matrix/client/v3/room_keys/version",
            None,
        )
        .await;
    assert_eq!(status, 200, "no key backup on the server: {version}");
    h.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn appservice_mode_bridges_an_encrypted_room_through_the_bots_device() {
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let table = json!({"mode": "appservice", "homeserver": "http://127.0.0.1:9", "server_name": "hs.passerelle.test",
        "as_token": "as-token-0123456789abcdef0123456789abcdef",
        "hs_token": "hs-token-0123456789abcdef0123456789abcdef"});
    let yaml = passerelle_matrix::registration(table.clone(), &format!("http://127.0.0.1:{port}"))
        .expect("registration");
    let file = dir.path().join("registration.yaml");
    std::fs::write(&file, yaml).unwrap();
    let hs = Synapse::start(&[file]);
    hs.register("alice", "alice-pw", false);
    let http = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = http
        .create_room(
            json!({"initial_state": [{"type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
        )
        .await;

    let mut table = table;
    table["homeserver"] = json!(hs.url());
    let ctx = BuildContext {
        account: "matrix.as".into(),
        data_dir: dir.path().join("as"),
    };
    let connector = MatrixFactory.build(&ctx, table).expect("config");
    let mut h = Harness::start(connector, "matrix.as", vec![room.as_str().into()]);
    h.serve_http(port).await;
    assert!(
        h.wait_connected(WAIT).await,
        "the appservice did not connect"
    );
    http.invite(&room, "@passerelle:hs.passerelle.test").await;
    http.wait_member(&room, "@passerelle:hs.passerelle.test", WAIT)
        .await;

    let alice = sdk_login(&hs, &dir.path().join("alice"), "alice", "alice-pw").await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let sent = alice
        .get_room(&room_id)
        .expect("alice sees the room")
        .send(RoomMessageEventContent::text_plain(
            "secret for the appservice",
        ))
        .await
        .expect("alice sends");
    let wire = http.event(&room, sent.response.event_id.as_str()).await;
    assert_eq!(wire["type"], "m.room.encrypted");
    h.next_matching(WAIT, |e| {
        matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "secret for the appservice")
    })
    .await
    .expect("the bot's device decrypted alice's message");

    let mut sender = Sender::new("bob");
    sender.display_name = Some("bob".into());
    let out = Event::new(
        room.as_str(),
        sender,
        EventKind::Message(Content::plain("secret answer from a ghost's side")),
    );
    let receipt = h.send(out, WAIT).await.expect("an answer").expect("sent");
    let id = receipt.remote_id.expect("an event id");
    let wire = http.event(&room, id.as_str()).await;
    assert_eq!(
        wire["type"], "m.room.encrypted",
        "encrypted on the server: {wire}"
    );
    assert_eq!(wire["sender"], "@passerelle:hs.passerelle.test");
    let id = OwnedEventId::try_from(id.as_str()).unwrap();
    assert_eq!(
        decrypted_body(&alice, &room_id, &id).await,
        "bob: secret answer from a ghost's side"
    );
    h.shutdown(Duration::from_secs(10)).await;
}

/// After downtime, a room key can arrive a sync later than the message it opens: Synapse hands a
/// device at most 100 to-device messages per sync, so with more waiting (here 120 others, sent
/// while the bot was stopped) the key for a message comes only in the second sync, the message
/// in the first. The bot holds the message until then instead of dropping it.
#[tokio::test]
async fn a_message_whose_key_comes_a_sync_later_is_held_and_bridged() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("passerelle_matrix=debug")
        .try_init();
    let (hs, mut http, room) = encrypted_room_with_the_bot().await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = BuildContext {
        account: "matrix.e2e".into(),
        data_dir: dir.path().join("bridge"),
    };
    let table = json!({"homeserver": hs.url(), "user": "@bridge:hs.passerelle.test", "password": "bridge-pw"});
    let state = std::sync::Arc::new(passerelle_testkit::harness::MemoryState::default());
    let start = |state| {
        let connector = MatrixFactory.build(&ctx, table.clone()).expect("config");
        Harness::start_with_state(connector, "matrix.e2e", vec![room.as_str().into()], state)
    };
    let mut h = start(state.clone());
    assert!(h.wait_connected(WAIT).await, "the bot did not connect");
    http.wait_member(&room, "@bridge:hs.passerelle.test", WAIT)
        .await;
    let alice = sdk_login(&hs, &dir.path().join("alice"), "alice", "alice-pw").await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let alice_room = alice.get_room(&room_id).expect("alice sees the room");
    alice_room
        .send(RoomMessageEventContent::text_plain("while the bot is up"))
        .await
        .expect("alice sends");
    h.next_matching(
        WAIT,
        |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "while the bot is up"),
    )
    .await
    .expect("the first message is bridged");
    h.shutdown(Duration::from_secs(10)).await;

    // While the bot is down: 120 other to-device messages for its device, then a message under
    // a new room key (whose share is the 121st).
    for i in 0..120 {
        http.send_to_device(
            "org.passerelle.test.filler",
            "@bridge:hs.passerelle.test",
            json!({"n": i}),
        )
        .await;
    }
    alice_room.discard_room_key().await.expect("a new room key");
    alice_room
        .send(RoomMessageEventContent::text_plain(
            "sent while the bot was away",
        ))
        .await
        .expect("alice sends");

    let mut h = start(state);
    let late = h
        .next_matching(WAIT, |e| {
            matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "sent while the bot was away")
        })
        .await;
    assert!(
        late.is_some(),
        "the message whose key came a sync later was dropped"
    );
    h.shutdown(Duration::from_secs(10)).await;
}

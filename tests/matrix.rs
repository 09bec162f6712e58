//! End-to-end: the real `passerelle` binary between a real Synapse and a real ngIRCd.

mod common;

use common::{Daemon, free_port};
use passerelle_testkit::irc_client::IrcClient;
use passerelle_testkit::matrix_client::{MatrixUser, SeenEvent};
use passerelle_testkit::servers::Ngircd;
use passerelle_testkit::synapse::Synapse;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const BRIDGE: &str = "@bridge:localhost";

fn bot_config(
    dir: &std::path::Path,
    hs: &Synapse,
    irc_port: u16,
    admin: u16,
    room: &str,
) -> String {
    format!(
        r##"
[general]
shutdown_grace_secs = 5

[store]
path = "{data}/passerelle.db"

[http]
listen = "127.0.0.1:{admin}"

[accounts.irc]
kind = "irc"
server = "127.0.0.1"
port = {irc_port}
tls = false
nick = "bridge"
send_rate_per_second = 0

[accounts.matrix]
kind = "matrix"
mode = "bot"
homeserver = "{hs}"
user = "{BRIDGE}"
password = "bridge-pw"

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc", room = "#m" }},
  {{ account = "matrix", room = "{room}" }},
]
"##,
        data = dir.join("data").display(),
        hs = hs.url(),
    )
}

async fn irc_line(bob: &mut IrcClient, want: &str) -> String {
    let got = bob
        .messages_until(WAIT, |got| {
            got.iter()
                .any(|m| m.text.contains(want) || m.action().is_some_and(|a| a.contains(want)))
        })
        .await;
    got.iter()
        .find(|m| m.text.contains(want) || m.action().is_some_and(|a| a.contains(want)))
        .map(|m| {
            m.action()
                .map(|a| format!("* {a}"))
                .unwrap_or_else(|| m.text.clone())
        })
        .unwrap_or_else(|| panic!("IRC never saw {want:?}; saw {got:?}"))
}

async fn from_bridge(alice: &mut MatrixUser, room: &str, want: &str) -> SeenEvent {
    alice
        .next_matching(WAIT, |e| {
            e.room == room && e.sender() == BRIDGE && e.body().contains(want)
        })
        .await
        .unwrap_or_else(|| panic!("Matrix never saw {want:?} from the bridge"))
}

#[tokio::test]
async fn bot_mode_bridges_matrix_and_irc_with_relations_across_a_restart() {
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let irc = Ngircd::start();
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    alice.set_display_name("Alice Liddell").await;
    let room = alice.create_room(json!({"invite": [BRIDGE]})).await;
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    bob.join("#m").await;

    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut daemon = Daemon::start(
        dir.path(),
        &bot_config(dir.path(), &hs, irc.port, admin, &room),
        admin,
    );
    daemon.wait_ready(Duration::from_secs(60)).await;
    // The bot joins on invite.
    let deadline = std::time::Instant::now() + WAIT;
    while !alice.members(&room).await.iter().any(|m| m == BRIDGE) {
        assert!(
            std::time::Instant::now() < deadline,
            "the bot never joined; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Matrix → IRC, with the Matrix display name.
    let first = alice.say(&room, "hello from matrix").await;
    let line = irc_line(&mut bob, "hello from matrix").await;
    assert_eq!(line, "<Alice Liddell> hello from matrix");

    // IRC → Matrix, from the bot, with the nick.
    bob.say("#m", "hi from irc").await;
    let bridged = from_bridge(&mut alice, &room, "hi from irc").await;
    assert_eq!(bridged.body(), "<bob> hi from irc");
    let bob_msg = bridged.id().to_owned();

    // Edit, reply, thread reply, reaction and redaction made in Matrix reach IRC degraded.
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* hello, edited",
            "m.new_content": {"msgtype": "m.text", "body": "hello, edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": first}}),
        )
        .await;
    assert_eq!(
        irc_line(&mut bob, "hello, edited").await,
        "<Alice Liddell> hello, edited (edited)"
    );
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text",
            "body": "> <@bridge:localhost> <bob> hi from irc\n\nanswering bob",
            "m.relates_to": {"m.in_reply_to": {"event_id": bob_msg}}}),
        )
        .await;
    assert_eq!(
        irc_line(&mut bob, "answering bob").await,
        "<Alice Liddell> (re bob) answering bob"
    );
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "in the thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": first, "is_falling_back": true,
                "m.in_reply_to": {"event_id": first}}}),
        )
        .await;
    assert_eq!(
        irc_line(&mut bob, "in the thread").await,
        "<Alice Liddell> (re Alice Liddell) in the thread"
    );
    alice
        .send(
            &room,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation",
            "event_id": bob_msg, "key": "👍"}}),
        )
        .await;
    assert_eq!(
        irc_line(&mut bob, "reacted").await,
        "* Alice Liddell reacted 👍 to bob's message"
    );
    let doomed = alice.say(&room, "soon gone").await;
    irc_line(&mut bob, "soon gone").await;
    alice.redact(&room, &doomed).await;
    assert_eq!(
        irc_line(&mut bob, "deleted").await,
        "* Alice Liddell deleted a message"
    );

    // An IRC answer addressed to Alice is a real reply in Matrix.
    let question = alice.say(&room, "anyone there?").await;
    irc_line(&mut bob, "anyone there?").await;
    bob.say("#m", "Alice Liddell: got it").await;
    let reply = from_bridge(&mut alice, &room, "got it").await;
    assert_eq!(
        reply.event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        question.as_str(),
        "the IRC answer is a reply to Alice's last message: {}",
        reply.event
    );

    // Restart mid-conversation: nothing replayed, nothing missed, old messages still map.
    daemon.stop();
    let during = alice.say(&room, "said while the bridge was down").await;
    let _ = during;
    daemon.restart();
    daemon.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(
        irc_line(&mut bob, "said while the bridge was down").await,
        "<Alice Liddell> said while the bridge was down"
    );
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* hello again",
            "m.new_content": {"msgtype": "m.text", "body": "hello again"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": first}}),
        )
        .await;
    assert_eq!(
        irc_line(&mut bob, "hello again").await,
        "<Alice Liddell> hello again (edited)"
    );
    // Her last line on IRC was the correction of her first message: an answer replies to that
    // message, remembered from before the restart.
    bob.say("#m", "alice liddell, still here").await;
    let reply = from_bridge(&mut alice, &room, "still here").await;
    assert_eq!(
        reply.event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        first.as_str()
    );
    // Nothing from before the restart came again.
    let again = bob.messages_until(Duration::from_secs(3), |_| false).await;
    assert!(
        !again
            .iter()
            .any(|m| m.text.contains("hello from matrix") || m.text.contains("down")),
        "replayed after the restart: {again:?}"
    );
    daemon.stop();
}

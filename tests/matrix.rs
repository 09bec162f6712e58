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
const BRIDGE: &str = "@bridge:hs.passerelle.test";

fn bot_config(
    dir: &std::path::Path,
    hs: &Synapse,
    irc_port: u16,
    admin: u16,
    room: &str,
) -> String {
    format!(
        r##"
{head}
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
admins = ["@alice:hs.passerelle.test"]

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc", room = "#m" }},
  {{ account = "matrix", room = "{room}" }},
]

# A room that does not exist on the homeserver.
[[links]]
name = "nowhere"
rooms = [
  {{ account = "irc", room = "#lost", direction = "in" }},
  {{ account = "matrix", room = "!missing:hs.passerelle.test", direction = "out" }},
]
"##,
        head = common::base_config(dir, admin),
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
    alice.edit(&room, &first, "hello, edited").await;
    assert_eq!(
        irc_line(&mut bob, "hello, edited").await,
        "<Alice Liddell> hello, edited (edited)"
    );
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text",
            "body": "> <@bridge:hs.passerelle.test> <bob> hi from irc\n\nanswering bob",
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
    assert_eq!(
        reply.event["content"]["m.mentions"]["user_ids"],
        json!(["@alice:hs.passerelle.test"]),
        "the reply mentions the person answered"
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
    alice.edit(&room, &first, "hello again").await;
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
    // The management room works in bot mode too.
    let dm = alice
        .create_room(json!({"invite": [BRIDGE], "is_direct": true}))
        .await;
    let deadline = std::time::Instant::now() + WAIT;
    while !alice.members(&dm).await.iter().any(|m| m == BRIDGE) {
        assert!(
            std::time::Instant::now() < deadline,
            "the bot never joined the admin's chat"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    alice.say(&dm, "!status").await;
    let status = alice
        .next_matching(WAIT, |e| {
            e.room == dm && e.sender() == BRIDGE && e.body().contains("irc (irc)")
        })
        .await
        .expect("a status answer in bot mode");
    assert_eq!(status.event["content"]["msgtype"], "m.notice");

    // Privacy: message text, edits, replies and file names are in no log line (trace level),
    // nowhere in the data dir and not in /metrics.
    let canary = "canary-matrix-7f3a9";
    let said = alice.say(&room, &format!("{canary} from alice")).await;
    irc_line(&mut bob, canary).await;
    bob.say("#m", &format!("{canary} from bob")).await;
    from_bridge(&mut alice, &room, canary).await;
    let edit_canary = "canary-edit-c01d2";
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": format!("* {edit_canary}"),
            "m.new_content": {"msgtype": "m.text", "body": edit_canary},
            "m.relates_to": {"rel_type": "m.replace", "event_id": said}}),
        )
        .await;
    irc_line(&mut bob, edit_canary).await;
    let reply_canary = "canary-reply-e4f5a";
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": reply_canary,
            "m.relates_to": {"m.in_reply_to": {"event_id": said}}}),
        )
        .await;
    irc_line(&mut bob, reply_canary).await;
    let file_canary = "canary-file-9b8c7.txt";
    let mxc = alice.upload(b"file bytes".to_vec(), "text/plain").await;
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.file", "body": file_canary, "filename": file_canary,
            "url": mxc, "info": {"mimetype": "text/plain", "size": 10}}),
        )
        .await;
    irc_line(&mut bob, file_canary).await;
    let metrics = daemon.metrics().await;
    for c in [canary, edit_canary, reply_canary, file_canary] {
        assert!(!daemon.logs().contains(c), "{c} in the daemon's log");
        assert!(!metrics.contains(c), "{c} in /metrics");
        let leaked = common::files_containing(&dir.path().join("data"), c);
        assert!(leaked.is_empty(), "{c} at rest in {leaked:?}");
    }

    // A message for a room that doesn't exist on the homeserver is a counted drop, and the
    // rest goes on.
    let mut lost = IrcClient::connect(irc.port, "carol").await;
    lost.join("#lost").await;
    lost.say("#lost", "into a room that is not there").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let m = daemon.metrics().await;
        if common::metric(&m, "passerelle_drops_total", &["matrix", "room_not_found"]) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no counted drop for the missing room:\n{m}\n{}",
            daemon
                .logs()
                .lines()
                .filter(|l| l.contains("not joined yet") || l.contains("does not exist"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    alice.say(&room, "after the missing room").await;
    irc_line(&mut bob, "after the missing room").await;

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

/// Bot mode with two API accounts, one that may delete and one that may not.
fn authorship_config(
    dir: &std::path::Path,
    hs: &Synapse,
    admin: u16,
    apis: [u16; 2],
    room: &str,
    moderation: bool,
) -> String {
    format!(
        r##"
{head}
[accounts.matrix]
kind = "matrix"
mode = "bot"
homeserver = "{hs}"
user = "{BRIDGE}"
password = "bridge-pw"

[accounts."api.main"]
kind = "api"
listen = "127.0.0.1:{main}"
token = "{API_TOKEN}"
rights = ["read", "write", "delete"]

[accounts."api.nodelete"]
kind = "api"
listen = "127.0.0.1:{nodelete}"
token = "{API_TOKEN}"
rights = ["read", "write"]

[[links]]
name = "lobby"
rooms = [
  {{ account = "matrix", room = "{room}" }},
  {{ account = "api.main", room = "lobby" }},
  {{ account = "api.nodelete", room = "lobby" }},
]
"##,
        // Off is the default: said only when on.
        head = common::base_config(dir, admin).replace(
            "[general]\n",
            if moderation {
                "[general]\nbridge_moderation = true\n"
            } else {
                "[general]\n"
            }
        ),
        hs = hs.url(),
        main = apis[0],
        nodelete = apis[1],
    )
}

const API_TOKEN: &str = "e2e-api-token-0123456789abcdef";

/// A homeserver with the bridge's account and these people (each password `NAME-pw`), logged in.
async fn homeserver_with(people: &[&str]) -> (Synapse, Vec<MatrixUser>) {
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    let mut users = Vec::new();
    for name in people {
        hs.register(name, &format!("{name}-pw"), false);
        users.push(MatrixUser::login(&hs.url(), name, &format!("{name}-pw")).await);
    }
    (hs, users)
}

/// The daemon in bot mode on `room` with the two API accounts of [`authorship_config`], ready,
/// the bot in the room (it was invited).
async fn bot_with_two_apis(
    hs: &Synapse,
    alice: &MatrixUser,
    room: &str,
) -> (tempfile::TempDir, Daemon, [u16; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let (admin, apis) = (free_port(), [free_port(), free_port()]);
    let daemon = Daemon::start(
        dir.path(),
        &authorship_config(dir.path(), hs, admin, apis, room, false),
        admin,
    );
    daemon.wait_ready(Duration::from_secs(60)).await;
    alice.wait_member(room, BRIDGE, WAIT).await;
    (dir, daemon, apis)
}

/// The next message on `stream` (an API client's view), or a panic naming what was awaited.
async fn api_next(stream: &mut common::ApiStream, what: &str) -> serde_json::Value {
    stream
        .next(WAIT)
        .await
        .unwrap_or_else(|| panic!("the API never saw {what}"))
}

#[tokio::test]
async fn edits_and_deletions_cross_only_from_their_author_and_moderation_only_when_allowed() {
    let (hs, users) = homeserver_with(&["alice", "bob"]).await;
    let [mut alice, mut bob]: [MatrixUser; 2] = users.try_into().ok().unwrap();
    // Alice made the room: she is its moderator (power 100), Bob a plain member.
    let room = alice
        .create_room(json!({"invite": [BRIDGE, "@bob:hs.passerelle.test"]}))
        .await;
    bob.join(&room).await;
    let (dir, mut daemon, apis) = bot_with_two_apis(&hs, &alice, &room).await;
    let admin = daemon.admin_port;
    let (main, nodelete) = (
        common::Api::new(apis[0], API_TOKEN),
        common::Api::new(apis[1], API_TOKEN),
    );
    let mut seen = main.stream().await;

    let original = alice.say(&room, "alice says this").await;
    let first = api_next(&mut seen, "Alice's message").await;
    assert_eq!(first["text"], "alice says this");
    let alice_id = first["id"].as_str().unwrap().to_owned();

    // Bob sends an edit of Alice's message (the homeserver takes it; the spec says clients must
    // ignore it), then a message of his own: only his message crosses.
    bob.edit(&room, &original, "forged by bob").await;
    let bob_msg = bob.say(&room, "bob says this").await;
    let next = api_next(&mut seen, "Bob's message").await;
    assert_eq!(
        next["text"], "bob says this",
        "an edit by someone other than the author crossed: {next}"
    );

    // Alice, the room's moderator, removes Bob's message: moderation, not bridged by default.
    alice.redact(&room, &bob_msg).await;
    alice.say(&room, "alice again").await;
    let next = api_next(&mut seen, "Alice's second message").await;
    assert_eq!(
        next["text"], "alice again",
        "a moderator's deletion crossed with bridge_moderation off: {next}"
    );
    let m = daemon.metrics().await;
    assert_eq!(
        common::metric(&m, "passerelle_drops_total", &["matrix", "not_author"]),
        1.0,
        "{m}"
    );
    assert_eq!(
        common::metric(
            &m,
            "passerelle_drops_total",
            &["matrix", "moderation_not_bridged"]
        ),
        1.0,
        "{m}"
    );

    // The author's own edit and deletion do cross.
    alice.edit(&room, &original, "alice fixed this").await;
    let edit = api_next(&mut seen, "Alice's edit").await;
    assert_eq!(
        (edit["text"].as_str(), edit["id"].as_str()),
        (Some("alice fixed this"), Some(alice_id.as_str())),
        "{edit}"
    );
    alice.redact(&room, &original).await;
    let gone = api_next(&mut seen, "Alice's deletion").await;
    assert_eq!(
        (gone["event"].as_str(), gone["id"].as_str()),
        (Some("msg_delete"), Some(alice_id.as_str())),
        "{gone}"
    );

    // With the operator's word, a moderator's deletion crosses, to accounts that may delete.
    daemon.stop();
    std::fs::write(
        &daemon.config,
        authorship_config(dir.path(), &hs, admin, apis, &room, true),
    )
    .unwrap();
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(60)).await;
    let (mut seen, mut limited) = (main.stream().await, nodelete.stream().await);
    let bob_msg = bob.say(&room, "bob once more").await;
    let bridged = api_next(&mut seen, "Bob's third message").await;
    assert_eq!(bridged["text"], "bob once more");
    assert_eq!(
        api_next(&mut limited, "Bob's third message").await["text"],
        "bob once more"
    );
    alice.redact(&room, &bob_msg).await;
    let gone = api_next(&mut seen, "the moderator's deletion").await;
    assert_eq!(
        (gone["event"].as_str(), gone["id"].as_str()),
        (Some("msg_delete"), bridged["id"].as_str()),
        "{gone}"
    );
    alice.say(&room, "the end").await;
    let next = api_next(&mut limited, "the last message").await;
    assert_eq!(
        next["text"], "the end",
        "a moderator's deletion reached an account without the delete right: {next}"
    );
    daemon.stop();
}

/// Texts drained from `api`'s `/api/messages` until `n` came or `WAIT` × 3 passed.
async fn api_texts(api: &common::Api, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT * 3;
    let mut texts = Vec::new();
    while texts.len() < n && std::time::Instant::now() < deadline {
        for m in api.messages().await {
            texts.push(m["text"].as_str().unwrap_or_default().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    texts
}

#[tokio::test]
async fn what_was_said_while_the_bot_was_away_is_fetched_back_in_order() {
    let (hs, users) = homeserver_with(&["alice"]).await;
    let [mut alice]: [MatrixUser; 1] = users.try_into().ok().unwrap();
    let room = alice.create_room(json!({"invite": [BRIDGE]})).await;
    let (_dir, mut daemon, apis) = bot_with_two_apis(&hs, &alice, &room).await;
    let api = common::Api::new(apis[0], API_TOKEN);
    alice.say(&room, "before the outage").await;
    assert_eq!(api_texts(&api, 1).await, ["before the outage"]);

    // 300 messages while the daemon is down: more than a sync's timeline (200) holds.
    daemon.stop();
    let away: Vec<String> = (0..300)
        .map(|i| format!("said while away {i:03}"))
        .collect();
    for text in &away {
        alice.say(&room, text).await;
    }
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(60)).await;
    alice.say(&room, "after the outage").await;
    let mut want = away.clone();
    want.push("after the outage".to_owned());
    let got = api_texts(&api, want.len()).await;
    let missing = want.iter().filter(|w| !got.contains(w)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} messages lost; first seen: {:?}",
        want.len(),
        got.first()
    );
    assert_eq!(got, want, "not in order, or some twice");
    assert!(
        daemon.logs().contains("backfilled a gap in the timeline"),
        "the gap was not fetched back"
    );
    daemon.stop();
}

const AS_TOKEN: &str = "e2e-as-token-0123456789abcdef0123456789";
const HS_TOKEN: &str = "e2e-hs-token-0123456789abcdef0123456789";
const AS_BOT: &str = "@passerelle:hs.passerelle.test";

fn appservice_config(
    dir: &std::path::Path,
    hs_url: &str,
    irc_port: u16,
    admin: u16,
    room: &str,
) -> String {
    format!(
        r##"
{head}
[accounts.irc]
kind = "irc"
server = "127.0.0.1"
port = {irc_port}
tls = false
nick = "bridge"
send_rate_per_second = 0

[accounts.matrix]
kind = "matrix"
mode = "appservice"
homeserver = "{hs_url}"
server_name = "hs.passerelle.test"
as_token = "{AS_TOKEN}"
hs_token = "{HS_TOKEN}"

[[links]]
name = "lobby"
rooms = [
  {{ account = "irc", room = "#m" }},
  {{ account = "matrix", room = "{room}" }},
]
"##,
        head = common::base_config(dir, admin),
    )
}

/// What a user does first: writes the config (with a placeholder homeserver URL, which the
/// registration does not use), asks the daemon for the registration file, and starts the
/// homeserver with it installed. Returns the homeserver and the registration's text.
fn homeserver_with_registration(dir: &std::path::Path, config: &str) -> (Synapse, String) {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["matrix-registration", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let registration = dir.join("registration.yaml");
    std::fs::write(&registration, &yaml).unwrap();
    (Synapse::start(&[registration]), yaml)
}

#[tokio::test]
async fn appservice_mode_shows_irc_people_as_ghosts_and_survives_a_crash_mid_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let irc = Ngircd::start();
    // The registration comes from the daemon's own command, as a user would make it.
    let (hs, yaml) = homeserver_with_registration(
        dir.path(),
        &appservice_config(
            dir.path(),
            "http://127.0.0.1:9",
            irc.port,
            admin,
            "!r:hs.passerelle.test",
        ),
    );
    assert!(
        yaml.contains(&format!(
            "url: \"http://127.0.0.1:{admin}/accounts/matrix\""
        )),
        "{yaml}"
    );
    hs.register("alice", "alice-pw", false);
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    alice.set_display_name("Alice").await;
    let room = alice.create_room(json!({})).await;
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    bob.join("#m").await;

    let mut daemon = Daemon::start(
        dir.path(),
        &appservice_config(dir.path(), &hs.url(), irc.port, admin, &room),
        admin,
    );
    daemon.wait_ready(Duration::from_secs(60)).await;
    alice.invite(&room, AS_BOT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !alice.members(&room).await.iter().any(|m| m == AS_BOT) {
        assert!(
            std::time::Instant::now() < deadline,
            "the bot never joined; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // IRC → Matrix: sent by bob's ghost, whose display name is his nick; no name prefix.
    bob.say("#m", "hello from irc").await;
    let seen = alice
        .next_matching(WAIT, |e| {
            e.room == room && e.body().contains("hello from irc")
        })
        .await
        .unwrap_or_else(|| panic!("Matrix never saw bob; log:\n{}", daemon.logs()));
    assert_eq!(seen.sender(), "@passerelle_irc_bob:hs.passerelle.test");
    assert_eq!(seen.body(), "hello from irc");
    assert_eq!(alice.profile(seen.sender()).await["displayname"], "bob");

    // Someone joining on IRC joins the Matrix room as a ghost; leaving, leaves.
    let mut carol = IrcClient::connect(irc.port, "carol").await;
    carol.join("#m").await;
    let ghost = "@passerelle_irc_carol:hs.passerelle.test";
    let deadline = std::time::Instant::now() + WAIT;
    while !alice.members(&room).await.iter().any(|m| m == ghost) {
        assert!(
            std::time::Instant::now() < deadline,
            "carol's ghost never joined; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    carol.raw("PART #m :bye").await;
    let deadline = std::time::Instant::now() + WAIT;
    while alice.members(&room).await.iter().any(|m| m == ghost) {
        assert!(
            std::time::Instant::now() < deadline,
            "carol's ghost never left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Matrix → IRC with the display name; an IRC answer is a real Matrix reply.
    let question = alice.say(&room, "who is there?").await;
    assert_eq!(
        irc_line(&mut bob, "who is there?").await,
        "<Alice> who is there?"
    );
    bob.say("#m", "Alice: me").await;
    let reply = alice
        .next_matching(WAIT, |e| e.room == room && e.body() == "me")
        .await
        .expect("the answer reaches Matrix");
    assert_eq!(reply.sender(), "@passerelle_irc_bob:hs.passerelle.test");
    assert_eq!(
        reply.event["content"]["m.mentions"]["user_ids"],
        json!(["@alice:hs.passerelle.test"])
    );
    assert_eq!(
        reply.event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        question.as_str()
    );

    // Edits, reactions and redactions come through transactions too, and reach IRC degraded.
    alice.edit(&room, &question, "who are you?").await;
    assert_eq!(
        irc_line(&mut bob, "who are you?").await,
        "<Alice> who are you? (edited)"
    );
    alice
        .send(
            &room,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation",
            "event_id": reply.id(), "key": "🎉"}}),
        )
        .await;
    assert_eq!(
        irc_line(&mut bob, "reacted").await,
        "* Alice reacted 🎉 to bob's message"
    );
    alice.redact(&room, &question).await;
    assert_eq!(
        irc_line(&mut bob, "deleted").await,
        "* Alice deleted a message"
    );

    // Privacy: no message text in the daemon's log (trace level), and only ids in its store.
    for text in ["hello from irc", "who is there?", "who are you?"] {
        assert!(
            !daemon.logs().contains(text),
            "message text in the log: {text}"
        );
        let leaked = common::files_containing(&dir.path().join("data"), text);
        assert!(leaked.is_empty(), "message text at rest in {leaked:?}");
    }

    // A wrong hs_token gets 403 M_FORBIDDEN from the daemon and bridges nothing.
    let forged = json!({"events": [{"type": "m.room.message", "room_id": room, "sender": "@alice:hs.passerelle.test",
        "event_id": "$forged", "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "forged line"}}]});
    let r = reqwest::Client::new()
        .put(format!(
            "http://127.0.0.1:{admin}/accounts/matrix/_matrix/app/v1/transactions/forged-1"
        ))
        .bearer_auth("not-the-hs-token-at-all-0123456789")
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["errcode"],
        "M_FORBIDDEN"
    );

    // Crash: the homeserver's transaction fails while the daemon is gone and is retried after
    // the restart; it is bridged exactly once.
    daemon.kill();
    alice.say(&room, "sent during the crash").await;
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(60)).await;
    let got = bob
        .messages_until(Duration::from_secs(45), |got| {
            got.iter().any(|m| m.text.contains("sent during the crash"))
        })
        .await;
    let more = bob.messages_until(Duration::from_secs(4), |_| false).await;
    let copies = got
        .iter()
        .chain(more.iter())
        .filter(|m| m.text.contains("sent during the crash"))
        .count();
    assert_eq!(copies, 1, "bridged {copies} times; log:\n{}", daemon.logs());
    assert!(
        !got.iter()
            .chain(more.iter())
            .any(|m| m.text.contains("forged line")),
        "a transaction with a wrong token was bridged"
    );

    // Killed after storing but before answering, the daemon sees the transaction again: under the
    // same id (remembered), or, had it died before remembering it, as the same events again.
    let replay = json!({"events": [{"type": "m.room.message", "room_id": room, "sender": "@alice:hs.passerelle.test",
        "event_id": "$replayed-event", "origin_server_ts": 2, "content": {"msgtype": "m.text", "body": "replayed line"}}]});
    for txn in ["replay-1", "replay-1", "replay-2"] {
        let r = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{admin}/accounts/matrix/_matrix/app/v1/transactions/{txn}"
            ))
            .bearer_auth(HS_TOKEN)
            .json(&replay)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let got = bob.messages_until(Duration::from_secs(4), |_| false).await;
    let copies = got
        .iter()
        .filter(|m| m.text.contains("replayed line"))
        .count();
    assert_eq!(
        copies, 1,
        "a replayed transaction was bridged {copies} times"
    );
    daemon.stop();
}

#[tokio::test]
async fn admins_get_status_and_links_and_a_warning_when_an_account_stays_down() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let mut irc = Ngircd::start();
    let extra = "admins = [\"@alice:hs.passerelle.test\"]\ndisconnect_warning_secs = 2\n";
    let config = |hs_url: &str| {
        appservice_config(
            dir.path(),
            hs_url,
            irc.port,
            admin_port,
            "!unused:hs.passerelle.test",
        )
        .replace("hs_token = ", &format!("{extra}hs_token = "))
    };
    let (hs, _) = homeserver_with_registration(dir.path(), &config("http://127.0.0.1:9"));
    hs.register("alice", "alice-pw", false);
    hs.register("mallory", "mallory-pw", false);
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let mut daemon = Daemon::start(dir.path(), &config(&hs.url()), admin_port);
    daemon.wait_ready(Duration::from_secs(60)).await;

    // Alice opens a direct chat with the bot: it joins on an admin's invite and answers her.
    let dm = alice
        .create_room(json!({"invite": [AS_BOT], "is_direct": true}))
        .await;
    let deadline = std::time::Instant::now() + WAIT;
    while !alice.members(&dm).await.iter().any(|m| m == AS_BOT) {
        assert!(
            std::time::Instant::now() < deadline,
            "the bot never joined; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let notice = |want: &'static str| {
        let dm = dm.clone();
        move |e: &SeenEvent| {
            e.room == dm
                && e.sender() == AS_BOT
                && e.event["content"]["msgtype"] == "m.notice"
                && e.body().contains(want)
        }
    };
    alice.say(&dm, "status").await;
    let status = alice
        .next_matching(WAIT, notice("irc (irc)"))
        .await
        .expect("a status answer");
    assert!(
        status.body().contains("irc (irc): connected"),
        "{}",
        status.body()
    );
    assert!(
        status.body().contains("matrix (matrix): connected"),
        "{}",
        status.body()
    );
    alice.say(&dm, "links").await;
    let links = alice
        .next_matching(WAIT, notice("lobby"))
        .await
        .expect("a links answer");
    assert!(links.body().contains("irc: #m"), "{}", links.body());

    // Someone who is not an admin gets no answer, even when they invite the bot.
    let mallory = MatrixUser::login(&hs.url(), "mallory", "mallory-pw").await;
    let other = mallory.create_room(json!({"invite": [AS_BOT]})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !mallory.members(&other).await.iter().any(|m| m == AS_BOT),
        "joined a stranger's room"
    );

    // In a room with someone else, the admin's commands are not answered: the answers name
    // rooms and people.
    let group = alice
        .create_room(json!({"invite": [AS_BOT, "@mallory:hs.passerelle.test"]}))
        .await;
    mallory.join(&group).await;
    alice.wait_member(&group, AS_BOT, WAIT).await;
    alice.say(&group, "links").await;
    let leaked = alice
        .next_matching(Duration::from_secs(4), |e: &SeenEvent| {
            e.room == group && e.sender() == AS_BOT && e.kind() == "m.room.message"
        })
        .await;
    assert!(
        leaked.is_none(),
        "answered in a shared room: {:?}",
        leaked.map(|e| e.body().to_owned())
    );

    // IRC goes away: after the delay the admin is warned, and told when it is back.
    irc.stop();
    let warning = alice
        .next_matching(Duration::from_secs(30), notice("has been"))
        .await
        .unwrap_or_else(|| panic!("no warning; log:\n{}", daemon.logs()));
    assert!(
        warning.body().starts_with("irc (irc) has been"),
        "{}",
        warning.body()
    );
    irc.restart();
    alice
        .next_matching(Duration::from_secs(60), notice("connected again"))
        .await
        .unwrap_or_else(|| panic!("no all-clear; log:\n{}", daemon.logs()));
    daemon.stop();
}

#[tokio::test]
async fn a_matrix_user_opens_an_irc_channel_through_an_alias_and_the_portal_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let irc = Ngircd::start();
    // The operator links #m (to an admin room here) and lets Matrix users open irc rooms.
    let config = |hs_url: &str| {
        appservice_config(
            dir.path(),
            hs_url,
            irc.port,
            admin_port,
            "!operator:hs.passerelle.test",
        )
        .replace("hs_token = ", "portal_accounts = [\"irc\"]\nhs_token = ")
            + "\n# #news only feeds its link: announcements out, nothing in.\n\
               [[links]]\nname = \"news\"\nrooms = [\n\
               { account = \"irc\", room = \"#news\", direction = \"in\" },\n\
               { account = \"matrix\", room = \"!newsroom:hs.passerelle.test\", direction = \"out\" },\n]\n"
    };
    let (hs, _) = homeserver_with_registration(dir.path(), &config("http://127.0.0.1:9"));
    hs.register("alice", "alice-pw", false);
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    alice.set_display_name("Alice").await;
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    bob.join("#m").await;
    let mut daemon = Daemon::start(dir.path(), &config(&hs.url()), admin_port);
    daemon.wait_ready(Duration::from_secs(60)).await;

    // An alias for a room no link names, or for an account that can't be opened, leads nowhere.
    let (status, _) = alice
        .call(
            reqwest::Method::POST,
            "/_matrix/client/v3/join/%23passerelle_irc_=23elsewhere%3Ahs.passerelle.test",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404, "a portal to a channel no link names");

    // The alias opens the portal: an invite-only room, linked with #m. Joining it straight is
    // refused; a knock from a user of this server is answered with the bot's invite.
    let alias = "#passerelle_irc_=23m:hs.passerelle.test";
    let (status, answer) = alice
        .call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", urlencoding(alias)),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403, "a portal room anyone can join: {answer}");
    let portal = knock_and_enter(&alice, alias, &daemon).await;
    let rules = alice.state(&portal, "m.room.join_rules", "").await;
    assert_eq!(
        rules.as_ref().map(|r| r["join_rule"].clone()),
        Some(json!("knock"))
    );
    let guests = alice.state(&portal, "m.room.guest_access", "").await;
    assert_eq!(
        guests.as_ref().map(|g| g["guest_access"].clone()),
        Some(json!("forbidden"))
    );
    alice.say(&portal, "hello through the portal").await;
    assert_eq!(
        irc_line(&mut bob, "hello through the portal").await,
        "<Alice> hello through the portal"
    );
    bob.say("#m", "welcome in").await;
    let seen = alice
        .next_matching(WAIT, |e| e.room == portal && e.body() == "welcome in")
        .await
        .unwrap_or_else(|| panic!("IRC never reached the portal; log:\n{}", daemon.logs()));
    assert_eq!(seen.sender(), "@passerelle_irc_bob:hs.passerelle.test");

    // An IRC topic reaches the portal (set by the bot where the ghost may not).
    bob.raw("TOPIC #m :bridged topic from irc").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let topic = alice.state(&portal, "m.room.topic", "").await;
        if topic
            .as_ref()
            .is_some_and(|t| t["topic"] == "bridged topic from irc")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the topic never arrived: {topic:?}; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A portal keeps the direction its channel has in the configuration: #news only feeds, so
    // its portal only receives.
    let mut carol = IrcClient::connect(irc.port, "carol").await;
    carol.join("#news").await;
    let news = knock_and_enter(
        &alice,
        "#passerelle_irc_=23news:hs.passerelle.test",
        &daemon,
    )
    .await;
    carol.say("#news", "an announcement").await;
    alice
        .next_matching(WAIT, |e| e.room == news && e.body() == "an announcement")
        .await
        .unwrap_or_else(|| panic!("#news never reached its portal; log:\n{}", daemon.logs()));
    alice.say(&news, "talking back to the news").await;
    alice
        .say(&portal, "a marker through the other portal")
        .await;
    irc_line(&mut bob, "a marker through the other portal").await;
    let heard = carol
        .messages_until(Duration::from_secs(2), |_| false)
        .await;
    assert!(
        !heard.iter().any(|m| m.text.contains("talking back")),
        "a portal to a channel that only feeds its link wrote into it: {heard:?}"
    );

    // The portal is kept: after a restart it still bridges.
    daemon.restart();
    daemon.wait_ready(Duration::from_secs(60)).await;
    alice.say(&portal, "still open after a restart").await;
    assert_eq!(
        irc_line(&mut bob, "still open after a restart").await,
        "<Alice> still open after a restart"
    );

    // The operator takes irc out of portal_accounts: the kept portal is checked again at start
    // and no longer used.
    daemon.stop();
    std::fs::write(
        &daemon.config,
        config(&hs.url()).replace("portal_accounts = [\"irc\"]\n", ""),
    )
    .unwrap();
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(60)).await;
    alice.say(&portal, "after portals were closed").await;
    bob.say("#m", "anyone in the portal?").await;
    let seen = bob.messages_until(Duration::from_secs(4), |_| false).await;
    assert!(
        !seen
            .iter()
            .any(|m| m.text.contains("after portals were closed")),
        "a portal no longer allowed still bridged: {seen:?}"
    );
    assert!(
        alice
            .next_matching(Duration::from_secs(3), |e| e.room == portal
                && e.body() == "anyone in the portal?")
            .await
            .is_none(),
        "IRC reached a portal no longer allowed"
    );
    assert!(
        daemon
            .logs()
            .contains("a kept portal no longer fits the configuration"),
        "the operator is not told why"
    );
    daemon.stop();
}

/// Knocks on a portal's alias, waits for the bot's invite and joins; the room id.
async fn knock_and_enter(user: &MatrixUser, alias: &str, daemon: &Daemon) -> String {
    let room = user.knock(alias).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let path = format!("/_matrix/client/v3/join/{}", urlencoding(&room));
        if user
            .call(reqwest::Method::POST, &path, Some(json!({})))
            .await
            .0
            == 200
        {
            return room;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the knock on {alias} was never answered; log:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A room id or alias as one path segment.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

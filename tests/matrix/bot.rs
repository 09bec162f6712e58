//! Bot mode: relations across a restart, authorship of edits and deletions, what was said while the bot was away, and the admins' watch.

use super::*;

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

/// Bot mode's admin watch (the same `admin::Watch` appservice mode runs): an admin who opened a
/// direct chat with the bot is warned there when an account stays down past
/// `disconnect_warning_secs`, and told when it is back; the status command answers there too.
#[tokio::test]
async fn a_bot_mode_admin_is_warned_when_an_account_stays_down_and_told_when_it_is_back() {
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let mut irc = Ngircd::start();
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice.create_room(json!({"invite": [BRIDGE]})).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = bot_config(dir.path(), &hs, irc.port, admin, &room).replace(
        "admins = [\"@alice:hs.passerelle.test\"]\n",
        "admins = [\"@alice:hs.passerelle.test\"]\ndisconnect_warning_secs = 2\n",
    );
    assert!(config.contains("disconnect_warning_secs = 2"));
    let mut daemon = Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(60)).await;

    let dm = alice
        .create_room(json!({"invite": [BRIDGE], "is_direct": true}))
        .await;
    alice.wait_member(&dm, BRIDGE, WAIT).await;
    let notice = |want: &'static str| notice(&dm, BRIDGE, want);
    alice.say(&dm, "status").await;
    let status = alice
        .next_matching(WAIT, notice("irc (irc)"))
        .await
        .unwrap_or_else(|| panic!("no status answer; log:\n{}", daemon.logs()));
    assert!(
        status.body().contains("irc (irc): connected"),
        "{}",
        status.body()
    );

    irc_down_is_warned_and_back_is_told(&mut alice, &dm, BRIDGE, &mut irc, &daemon).await;
    daemon.stop();
}

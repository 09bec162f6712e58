//! Appservice mode: ghosts, a crash mid-transaction, and the admins' management room.

use super::*;

pub(crate) const AS_TOKEN: &str = "e2e-as-token-0123456789abcdef0123456789";
pub(crate) const HS_TOKEN: &str = "e2e-hs-token-0123456789abcdef0123456789";
pub(crate) const AS_BOT: &str = "@passerelle:hs.passerelle.test";

pub(crate) fn appservice_config(
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
pub(crate) fn homeserver_with_registration(
    dir: &std::path::Path,
    config: &str,
) -> (Synapse, String) {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The README's command, and the older name scripts may still use: the same file.
    let yaml = run(&["connector", "matrix", "registration"]);
    assert_eq!(run(&["matrix-registration"]), yaml);
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
    let notice = |want: &'static str| notice(&dm, AS_BOT, want);
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
    irc_down_is_warned_and_back_is_told(&mut alice, &dm, AS_BOT, &mut irc, &daemon).await;
    daemon.stop();
}

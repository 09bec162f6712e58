//! Portal rooms: a Matrix user opens an IRC channel through an alias.

use super::*;
use crate::appservice::{appservice_config, homeserver_with_registration};

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

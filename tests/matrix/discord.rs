//! Discord and Matrix through the real binary: the fake of Discord's REST API and Gateway, a
//! real Synapse (bot mode) and a real ngIRCd in one link.

use super::*;
use passerelle_discord::testing::{FakeDiscord, User};

const CHANNEL: u64 = 3_000_001;
const BOT: &str = "MTAwMDAwMQ.e2e.discord-matrix-token";

#[tokio::test]
async fn discord_reaches_matrix_and_irc_and_back_as_each_person() {
    let discord = FakeDiscord::start(BOT).await;
    discord.add_text_channel(CHANNEL, "bridge");
    let (api, gateway) = (discord.api_base(), discord.gateway_url());
    let t = matrix_irc_and(
        "#d",
        &format!(
            r##"[accounts.discord]
kind = "discord"
token = "{BOT}"
api_base = "{api}"
gateway_url = "{gateway}"
rights = ["read", "write", "delete"]"##,
        ),
        &format!(r#"{{ account = "discord", room = "{CHANNEL}" }}"#),
    )
    .await;
    let (mut alice, room, mut bob, daemon) = (t.alice, t.room, t.bob, t.daemon);
    common::wait_for(WAIT, || discord.connected(), |c| *c).await;

    // Discord → Matrix and IRC.
    let mut ana = User::new(6001, "ana");
    ana.global_name = Some("Ana".into());
    let first = discord.user_says(CHANNEL, &ana, "hello from **discord**");
    let seen = from_bridge(&mut alice, &room, "hello from").await;
    assert_eq!(seen.body(), "<Ana> hello from **discord**");
    assert!(
        seen.event["content"]["formatted_body"]
            .as_str()
            .is_some_and(|f| f.contains("<b>discord</b>")),
        "Matrix gets the formatting: {}",
        seen.event
    );
    let from_discord = seen.id().to_owned();
    assert_eq!(
        irc_line(&mut bob, "hello from").await,
        "<Ana> hello from **discord**"
    );

    // An edit on Discord is an edit on Matrix.
    discord.user_edits(first, "hello again from discord");
    let edit = from_bridge(&mut alice, &room, "hello again").await;
    assert_eq!(
        edit.event["content"]["m.relates_to"]["rel_type"], "m.replace",
        "{}",
        edit.event
    );
    assert_eq!(
        edit.event["content"]["m.relates_to"]["event_id"],
        from_discord.as_str()
    );

    // Matrix → Discord, as Alice through the channel's webhook, answering Ana's message.
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hi Ana",
                   "m.relates_to": {"m.in_reply_to": {"event_id": from_discord}}}),
        )
        .await;
    // IRC → Discord, as bob.
    bob.say("#d", "and hi from irc").await;
    let posted = common::wait_for(
        WAIT,
        || {
            discord
                .messages_in(CHANNEL)
                .into_iter()
                .filter(|m| m.webhook_id.is_some())
                .map(|m| {
                    (
                        m.author["username"].as_str().unwrap_or("").to_owned(),
                        m.content,
                    )
                })
                .collect::<Vec<_>>()
        },
        |p| p.len() >= 2,
    )
    .await;
    assert_eq!(posted.len(), 2, "{posted:?}");
    // Two origins: each keeps its own order, not one against the other.
    let mut posted = posted;
    posted.sort();
    assert_eq!(posted[0].0, "Alice Liddell");
    assert!(
        posted[0].1.ends_with("hi Ana") && posted[0].1.contains(&format!("/{CHANNEL}/{first}")),
        "the reply links Ana's message: {}",
        posted[0].1
    );
    assert_eq!(posted[1], ("bob".to_owned(), "and hi from irc".to_owned()));
    // Nothing the bridge posted came back to Matrix or IRC.
    let echoes = alice.drain(Duration::from_secs(2)).await;
    assert!(
        !echoes
            .iter()
            .any(|e| e.sender() == BRIDGE && e.body().contains("hi Ana")),
        "an own message came back: {echoes:?}"
    );

    // A reaction on Matrix is the bot's reaction on Discord.
    alice
        .send(
            &room,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": from_discord, "key": "👍"}}),
        )
        .await;
    let reacted = common::wait_for(
        WAIT,
        || {
            discord
                .message(first)
                .map(|m| m.bot_reactions)
                .unwrap_or_default()
        },
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(reacted, ["👍"]);
    drop(daemon);
}

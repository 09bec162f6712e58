//! Mattermost and Matrix through the real binary: the fake of Mattermost's REST API and
//! WebSocket, a real Synapse (bot mode) and a real ngIRCd in one link.

use super::*;
use passerelle_mattermost::testing::{BOT_USER, FakeMattermost, User};

const CHANNEL: &str = "matrix00000000000000000001";
const MM: &str = "e2emattermostmatrixtoken01";

#[tokio::test]
async fn mattermost_reaches_matrix_and_irc_and_back_as_each_person() {
    let mm = FakeMattermost::start(MM).await;
    mm.add_channel(CHANNEL, "crew", "bridge");
    let url = mm.url();
    let t = matrix_irc_and(
        "#m",
        &format!(
            r##"[accounts.mattermost]
kind = "mattermost"
url = "{url}"
token = "{MM}"
rights = ["read", "write", "delete"]"##,
        ),
        &format!(r#"{{ account = "mattermost", room = "{CHANNEL}" }}"#),
    )
    .await;
    let (mut alice, room, mut bob, daemon) = (t.alice, t.room, t.bob, t.daemon);
    common::wait_for(WAIT, || mm.connected(), |c| *c).await;

    // Mattermost → Matrix and IRC.
    let ana = User::new("ana00000000000000000000001", "ana", "Ana");
    let first = mm.user_posts(CHANNEL, &ana, "hello from **mattermost**");
    let seen = from_bridge(&mut alice, &room, "hello from").await;
    assert_eq!(seen.body(), "<Ana> hello from **mattermost**");
    assert!(
        seen.event["content"]["formatted_body"]
            .as_str()
            .is_some_and(|f| f.contains("<b>mattermost</b>")),
        "Matrix gets the formatting: {}",
        seen.event
    );
    let from_mm = seen.id().to_owned();
    assert_eq!(
        irc_line(&mut bob, "hello from").await,
        "<Ana> hello from **mattermost**"
    );

    // An edit on Mattermost is an edit on Matrix.
    mm.user_edits(&first, "hello again from mattermost");
    let edit = from_bridge(&mut alice, &room, "hello again").await;
    assert_eq!(
        edit.event["content"]["m.relates_to"]["rel_type"], "m.replace",
        "{}",
        edit.event
    );
    assert_eq!(
        edit.event["content"]["m.relates_to"]["event_id"],
        from_mm.as_str()
    );

    // Matrix → Mattermost as Alice, formatted, in the thread of the post she answers.
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hi **Ana** @all", "format": "org.matrix.custom.html",
                   "formatted_body": "hi <strong>Ana</strong> @all",
                   "m.relates_to": {"m.in_reply_to": {"event_id": from_mm}}}),
        )
        .await;
    bob.say("#m", "and hi from irc").await;
    let posted = common::wait_for(
        WAIT,
        || {
            mm.posts_in(CHANNEL)
                .into_iter()
                .filter(|p| p.user_id == BOT_USER)
                .collect::<Vec<_>>()
        },
        |p| p.len() >= 2,
    )
    .await;
    let mut posted: Vec<(String, String, String)> = posted
        .into_iter()
        .map(|p| {
            (
                p.props["override_username"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                p.message,
                p.root_id,
            )
        })
        .collect();
    posted.sort();
    assert_eq!(
        posted,
        vec![
            (
                "Alice Liddell".to_owned(),
                "hi **Ana** @\u{200b}all".to_owned(),
                first.clone()
            ),
            (
                "bob".to_owned(),
                "and hi from irc".to_owned(),
                String::new()
            ),
        ]
    );
    let echoes = alice.drain(Duration::from_secs(2)).await;
    assert!(
        !echoes
            .iter()
            .any(|e| e.sender() == BRIDGE && e.body().contains("hi **Ana**")),
        "an own message came back: {echoes:?}"
    );

    // A reaction on Matrix is the bot's reaction on Mattermost, by name.
    alice
        .send(
            &room,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": from_mm, "key": "👍"}}),
        )
        .await;
    let reacted = common::wait_for(
        WAIT,
        || {
            mm.posts_in(CHANNEL)
                .into_iter()
                .find(|p| p.id == first)
                .map(|p| p.reactions)
                .unwrap_or_default()
        },
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(reacted, [("+1".to_owned(), BOT_USER.to_owned())]);
    drop(daemon);
}

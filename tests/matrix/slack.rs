//! Slack and Matrix through the real binary: the fake of Slack's Web API and Socket Mode, a real
//! Synapse (bot mode) and a real ngIRCd in one link.

use super::*;
use passerelle_slack::testing::{BOT_ID, FakeSlack, User};

const CHANNEL: &str = "C0MATRIX01";
const BOT: &str = "xoxb-5000-6000-e2eSlackMatrixToken";
const APP: &str = "xapp-1-A0FAKEAPP-7000-e2eSlackMatrixApp";

#[tokio::test]
async fn slack_reaches_matrix_and_irc_and_back_as_each_person() {
    let slack = FakeSlack::start(BOT, APP).await;
    slack.add_channel(CHANNEL, "bridge");
    let api = slack.api_base();
    let t = matrix_irc_and(
        "#s",
        &format!(
            r##"[accounts.slack]
kind = "slack"
bot_token = "{BOT}"
app_token = "{APP}"
api_base = "{api}"
rights = ["read", "write", "delete"]"##,
        ),
        &format!(r#"{{ account = "slack", room = "{CHANNEL}" }}"#),
    )
    .await;
    let (mut alice, room, mut bob, daemon) = (t.alice, t.room, t.bob, t.daemon);
    common::wait_for(WAIT, || slack.connected(), |c| *c).await;

    // Slack → Matrix and IRC.
    let ana = User::new("U0ANA00001", "ana", "Ana");
    let first = slack.user_says(
        CHANNEL,
        &ana,
        "hello from *slack* &amp; <https://example.org|a site>",
    );
    let seen = from_bridge(&mut alice, &room, "hello from").await;
    assert_eq!(
        seen.body(),
        "<Ana> hello from *slack* & a site (https://example.org)"
    );
    let formatted = seen.event["content"]["formatted_body"]
        .as_str()
        .unwrap_or("");
    assert!(
        formatted.contains("<b>slack</b>")
            && formatted.contains("<a href=\"https://example.org\">a site</a>"),
        "Matrix gets the formatting: {}",
        seen.event
    );
    let from_slack = seen.id().to_owned();
    assert_eq!(
        irc_line(&mut bob, "hello from").await,
        "<Ana> hello from *slack* & a site (https://example.org)"
    );

    // An edit on Slack is an edit on Matrix.
    slack.user_edits(CHANNEL, &first, "hello again from slack");
    let edit = from_bridge(&mut alice, &room, "hello again").await;
    assert_eq!(
        edit.event["content"]["m.relates_to"]["rel_type"], "m.replace",
        "{}",
        edit.event
    );
    assert_eq!(
        edit.event["content"]["m.relates_to"]["event_id"],
        from_slack.as_str()
    );

    // Matrix → Slack as Alice, with her formatting, in the thread of Ana's message she answers.
    alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hi **Ana**", "format": "org.matrix.custom.html",
                   "formatted_body": "hi <strong>Ana</strong> &lt;!channel&gt;",
                   "m.relates_to": {"m.in_reply_to": {"event_id": from_slack}}}),
        )
        .await;
    // IRC → Slack, as bob.
    bob.say("#s", "and hi from irc").await;
    let posted = common::wait_for(
        WAIT,
        || {
            slack
                .messages_in(CHANNEL)
                .into_iter()
                .filter(|m| m.bot_id.as_deref() == Some(BOT_ID))
                .collect::<Vec<_>>()
        },
        |p| p.len() >= 2,
    )
    .await;
    let mut posted: Vec<(String, String, Option<String>)> = posted
        .into_iter()
        .map(|m| (m.username.unwrap_or_default(), m.text, m.thread_ts))
        .collect();
    posted.sort();
    assert_eq!(
        posted,
        vec![
            (
                "Alice Liddell".to_owned(),
                "hi *Ana* &lt;!channel&gt;".to_owned(),
                Some(first.clone())
            ),
            ("bob".to_owned(), "and hi from irc".to_owned(), None),
        ]
    );
    // Nothing the bridge posted came back to Matrix or IRC.
    let echoes = alice.drain(Duration::from_secs(2)).await;
    assert!(
        !echoes
            .iter()
            .any(|e| e.sender() == BRIDGE && e.body().contains("Ana*")),
        "an own message came back: {echoes:?}"
    );
    // IRC sees Alice's message (from Matrix), and nothing of what went to Slack comes back.
    let mut lines = Vec::new();
    while let Some(m) = bob.next_message(Duration::from_millis(800)).await {
        lines.push(m.text);
    }
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("from irc") && !l.contains("hi *Ana*")),
        "an own message came back to IRC: {lines:?}"
    );

    // A reaction on Matrix is the bot's reaction on Slack, by Slack's name.
    alice
        .send(
            &room,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": from_slack, "key": "👍"}}),
        )
        .await;
    let reacted = common::wait_for(
        WAIT,
        || {
            slack
                .messages_in(CHANNEL)
                .into_iter()
                .find(|m| m.ts == first)
                .map(|m| m.reactions)
                .unwrap_or_default()
        },
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(
        reacted,
        [(
            "+1".to_owned(),
            passerelle_slack::testing::BOT_USER.to_owned()
        )]
    );
    assert_eq!(slack.unacknowledged(), 0);
    drop(daemon);
}

//! The testkit's Prosody is a working XMPP server: two local accounts log in over STARTTLS (the
//! throwaway CA trusted), join a room of the MUC component, and one's groupchat message reaches
//! the other with the room's stable id (XEP-0359) and an occupant id (XEP-0421); after a restart
//! the accounts still log in and the room still works.

use passerelle_xmpp::testing::client::{XmppClient, body, payload};
use passerelle_xmpp::testing::prosody::{MUC, Prosody};
use std::str::FromStr;
use std::time::Duration;
use tokio_xmpp::parsers::jid::BareJid;
use tokio_xmpp::parsers::message::MessageType;

#[tokio::test]
async fn accounts_log_in_join_a_room_and_talk_across_a_restart() {
    let mut server = Prosody::start();
    server.register("alice", "alice-pw");
    server.register("bob", "bob-pw");

    for round in 0..2 {
        let room = BareJid::from_str(&format!("lobby@{MUC}")).expect("a room JID");
        let mut alice = XmppClient::connect(&server, "alice").await;
        let mut bob = XmppClient::connect(&server, "bob").await;
        let alice_occupant = alice.join(&room, "Alice").await;
        assert!(alice_occupant.is_some(), "the room gives occupant ids");
        bob.join(&room, "Bob").await;

        let want = format!("hello {round}");
        alice.say(&room, &want).await;
        let got = bob
            .next_message(Duration::from_secs(20), |m| {
                m.type_ == MessageType::Groupchat && body(m) == Some(want.as_str())
            })
            .await
            .expect("bob saw alice's message");
        assert_eq!(
            got.from.as_ref().map(|f| f.to_string()),
            Some(format!("{room}/Alice"))
        );
        let stamped = payload(&got, "stanza-id", "urn:xmpp:sid:0").and_then(|e| e.attr("by"));
        assert_eq!(stamped, Some(room.as_str()), "the room stamps stanza-ids");
        let occupant =
            payload(&got, "occupant-id", "urn:xmpp:occupant-id:0").and_then(|e| e.attr("id"));
        assert_eq!(occupant, alice_occupant.as_deref());
        alice.close().await;
        bob.close().await;
        if round == 0 {
            server.restart();
        }
    }
}

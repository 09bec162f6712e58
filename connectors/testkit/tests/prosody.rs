//! The testkit's Prosody is a working XMPP server: two local accounts log in over STARTTLS (the
//! throwaway CA trusted through `SSL_CERT_FILE`), join a room of the MUC component, and one's
//! groupchat message reaches the other; after a restart the accounts still log in.

use futures::StreamExt;
use passerelle_testkit::prosody::{DOMAIN, MUC, Prosody};
use std::str::FromStr;
use std::time::Duration;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, IqRequest, IqResponse};

const WAIT: Duration = Duration::from_secs(20);

async fn online(server: &Prosody, user: &str) -> Client {
    let jid = BareJid::from_str(&format!("{user}@{DOMAIN}")).expect("a JID");
    let mut client = Client::new_starttls(
        jid,
        format!("{user}-pw"),
        DnsConfig::addr(&format!("127.0.0.1:{}", server.c2s_port)),
        Timeouts::default(),
    );
    let online = tokio::time::timeout(WAIT, async {
        while let Some(event) = client.next().await {
            match event {
                Event::Online { .. } => return true,
                Event::Disconnected(e) => panic!("{user} could not log in: {e}"),
                Event::Stanza(_) => {}
            }
        }
        false
    })
    .await;
    assert!(
        matches!(online, Ok(true)),
        "{user} never came online; server log:\n{}",
        server.log()
    );
    client
}

async fn join(client: &mut Client, room: &BareJid, nick: &str) {
    let occupant = FullJid::from_str(&format!("{room}/{nick}")).expect("an occupant JID");
    let presence = Presence::available()
        .with_to(Jid::from(occupant))
        .with_payloads(vec![Muc::new().into()]);
    client.send_stanza(presence.into()).await.expect("send");
    // Joined once the room sends our own presence back (status 110).
    let own = format!("{room}/{nick}");
    tokio::time::timeout(WAIT, async {
        while let Some(event) = client.next().await {
            if let Event::Stanza(stanza) = event
                && let Ok(p) = Presence::try_from(stanza)
                && p.from.as_ref().is_some_and(|f| f.to_string() == own)
            {
                assert!(
                    p.type_ != PresenceType::Error,
                    "{nick} could not join {room}: {p:?}"
                );
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{nick} never joined {room}"));
}

#[tokio::test]
async fn accounts_log_in_join_a_room_and_talk_across_a_restart() {
    let mut server = Prosody::start();
    server.register("alice", "alice-pw");
    server.register("bob", "bob-pw");
    // SAFETY: set before any client starts; rustls-native-certs reads it when a client connects.
    unsafe { std::env::set_var("SSL_CERT_FILE", server.ca()) };

    for round in 0..2 {
        let room = BareJid::from_str(&format!("lobby{round}@{MUC}")).expect("a room JID");
        let mut alice = online(&server, "alice").await;
        let mut bob = online(&server, "bob").await;
        join(&mut alice, &room, "Alice").await;
        // Prosody locks a new room until its owner configures it (XEP-0045 §10.1): accept the
        // defaults ("instant room").
        let instant: Element = "<query xmlns='http://jabber.org/protocol/muc#owner'>\
            <x xmlns='jabber:x:data' type='submit'/></query>"
            .parse()
            .expect("the owner form");
        let answer = alice
            .send_iq(Some(Jid::from(room.clone())), IqRequest::Set(instant))
            .await;
        let answer = tokio::time::timeout(WAIT, answer).await.expect("an answer");
        assert!(
            matches!(answer, Ok(IqResponse::Result(_))),
            "configuring {room}: {answer:?}"
        );
        join(&mut bob, &room, "Bob").await;

        let mut message = Message::groupchat(Some(Jid::from(room.clone())));
        message
            .bodies
            .insert(Lang::default(), format!("hello {round}"));
        alice.send_stanza(message.into()).await.expect("send");
        let want = format!("hello {round}");
        let got = tokio::time::timeout(WAIT, async {
            while let Some(event) = bob.next().await {
                if let Event::Stanza(stanza) = event
                    && let Ok(m) = Message::try_from(stanza)
                    && m.type_ == MessageType::Groupchat
                    && m.bodies.values().any(|b| *b == want)
                {
                    return m.from.map(|f| f.to_string());
                }
            }
            None
        })
        .await
        .expect("bob saw alice's message");
        assert_eq!(got, Some(format!("{room}/Alice")));
        let _ = alice.send_end().await;
        let _ = bob.send_end().await;
        if round == 0 {
            server.restart();
        }
    }
}

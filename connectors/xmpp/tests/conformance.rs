//! The shared conformance suite, and the XMPP extensions both ways, against a real Prosody on
//! loopback (TLS with its throwaway CA, a MUC with stable ids and occupant ids).

use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Connector, ConnectorFactory, Content, Event, EventKind, MembershipChange, RoomId,
    Sender, UserId,
};
use passerelle_testkit::conformance::{self, Peer, Seen};
use passerelle_testkit::harness::Harness;
use passerelle_xmpp::XmppFactory;
use passerelle_xmpp::testing::client::{XmppClient, body, payload};
use passerelle_xmpp::testing::prosody::{COMPONENT, COMPONENT_SECRET, DOMAIN, MUC, Prosody};
use std::str::FromStr;
use std::time::Duration;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::jid::BareJid;
use tokio_xmpp::parsers::message::{Lang, MessageType};

const WAIT: Duration = Duration::from_secs(20);

struct XmppPeer {
    client: XmppClient,
    room: BareJid,
    nick: String,
}

impl Peer for XmppPeer {
    fn room(&self) -> RoomId {
        self.room.as_str().into()
    }
    fn unknown_room(&self) -> RoomId {
        format!("not-served@{MUC}").into()
    }
    fn user(&self) -> UserId {
        self.client
            .occupant_ids
            .get(&self.room)
            .cloned()
            .unwrap_or_default()
            .into()
    }
    fn say<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.client.say(&self.room, text).await;
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.client.say(&self.room, &format!("/me {text}")).await;
        })
    }
    fn collect(&mut self, min_bytes: usize, timeout: Duration) -> BoxFuture<'_, Vec<Seen>> {
        Box::pin(async move {
            let room = self.room.clone();
            let nick = self.nick.clone();
            let mine = move |m: &tokio_xmpp::parsers::message::Message| {
                m.type_ == MessageType::Groupchat
                    && m.from.as_ref().is_some_and(|f| {
                        f.to_bare() == room && f.resource().is_some_and(|r| r.as_str() != nick)
                    })
            };
            let text = |m: &tokio_xmpp::parsers::message::Message| -> (String, bool) {
                let b = body(m).unwrap_or_default();
                match b.strip_prefix("/me ") {
                    Some(rest) => (rest.to_owned(), true),
                    None => (b.to_owned(), false),
                }
            };
            let got = self
                .client
                .messages_until(timeout, |got| {
                    got.iter()
                        .filter(|m| mine(m))
                        .map(|m| text(m).0.len())
                        .sum::<usize>()
                        >= min_bytes
                })
                .await;
            got.iter()
                .filter(|m| mine(m))
                .map(|m| {
                    let (text, emote) = text(m);
                    Seen { text, emote }
                })
                .collect()
        })
    }
}

fn connector(server: &Prosody) -> Box<dyn Connector> {
    connector_with(server, serde_json::json!({}))
}

/// The test account's config, with `extra` keys added.
fn connector_with(server: &Prosody, extra: serde_json::Value) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "xmpp.test".into(),
        data_dir: std::env::temp_dir(),
    };
    let mut table = serde_json::json!({
        "jid": format!("bridge@{DOMAIN}"), "password": "bridge-pw",
        "server": "127.0.0.1", "port": server.c2s_port,
        "tls_ca_file": server.ca(), "nick": "bridge",
        "ping_interval_secs": 5, "ping_timeout_secs": 5, "send_timeout_secs": 10
    });
    if let (Some(t), Some(e)) = (table.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    build(&ctx, table)
}

fn build(ctx: &BuildContext, table: serde_json::Value) -> Box<dyn Connector> {
    match XmppFactory.build(ctx, table) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

fn server() -> Prosody {
    let server = Prosody::start();
    server.register("bridge", "bridge-pw");
    server.register("peer", "peer-pw");
    server
}

/// The suite in room `name@MUC`, with a plain user `peer` there.
async fn suite(server: &Prosody, name: &str, make: &dyn Fn() -> Box<dyn Connector>) {
    let room = BareJid::from_str(&format!("{name}@{MUC}")).expect("a room");
    let mut client = XmppClient::connect(server, "peer").await;
    client.join(&room, "peer").await;
    let mut peer = XmppPeer {
        client,
        room: room.clone(),
        nick: "peer".into(),
    };
    conformance::run(make, &mut peer, vec![room.as_str().into()]).await;
}

#[tokio::test]
async fn xmpp_passes_the_conformance_suite_against_prosody() {
    let server = server();
    suite(&server, "conformance", &|| connector(&server)).await;
}

fn outbound(room: &BareJid, kind: EventKind) -> Event {
    let mut sender = Sender::new("matrix-alice");
    sender.display_name = Some("alice".into());
    Event::new(room.as_str(), sender, kind)
}

fn el(xml: &str) -> Element {
    xml.parse().expect("test XML")
}

/// Corrections, replies, reactions and retractions, each way, with a real room.
#[tokio::test]
async fn corrections_replies_reactions_and_retractions_map_both_ways() {
    let server = server();
    let room = BareJid::from_str(&format!("fidelity@{MUC}")).expect("a room");
    let mut peer = XmppClient::connect(&server, "peer").await;
    let peer_occupant = peer.join(&room, "peer").await.expect("an occupant id");
    let mut h = Harness::start(connector(&server), "xmpp.test", vec![room.as_str().into()]);
    assert!(h.wait_connected(WAIT).await, "connected");
    assert!(
        h.next_matching(Duration::from_secs(1), |e| matches!(
            e.kind,
            EventKind::Membership(_)
        ))
        .await
        .is_none(),
        "occupants already in the room are not announced as joining"
    );

    // Someone joins and leaves: membership events, with their occupant id and nick.
    server.register("visitor", "visitor-pw");
    let mut visitor = XmppClient::connect(&server, "visitor").await;
    let visitor_occupant = visitor
        .join(&room, "Visitor")
        .await
        .expect("an occupant id");
    let membership = |e: &Event| matches!(e.kind, EventKind::Membership(_));
    let joined = h.next_matching(WAIT, membership).await.expect("a join");
    visitor.close().await;
    let left = h.next_matching(WAIT, membership).await.expect("a leave");
    for (e, change) in [
        (joined, MembershipChange::Join),
        (left, MembershipChange::Leave),
    ] {
        assert_eq!(e.kind, EventKind::Membership(change));
        assert_eq!(e.sender.id.as_str(), visitor_occupant);
        assert_eq!(e.sender.display_name.as_deref(), Some("Visitor"));
    }

    // Inbound: a message, its correction, a reply to it, reactions, and its retraction.
    let first = peer.say(&room, "first").await;
    let msg = h
        .next_matching(
            WAIT,
            |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "first"),
        )
        .await
        .expect("the message");
    assert_eq!(msg.sender.id.as_str(), peer_occupant);
    assert_eq!(msg.sender.display_name.as_deref(), Some("peer"));
    let sid = msg.remote_id.clone().expect("the room's id");
    assert_ne!(sid.as_str(), first, "known by the room's stanza-id");

    let (mut m, _) = peer.message(&room, MessageType::Groupchat);
    m.bodies.insert(Lang::default(), "first, corrected".into());
    m.payloads.push(el(&format!(
        "<replace xmlns='urn:xmpp:message-correct:0' id='{first}'/>"
    )));
    peer.send(m).await;
    let edit = h
        .next_matching(WAIT, |e| matches!(e.kind, EventKind::Edit { .. }))
        .await
        .expect("the edit");
    match &edit.kind {
        EventKind::Edit { target, content } => {
            assert_eq!(target, &sid);
            assert_eq!(content.text.as_str(), "first, corrected");
        }
        other => panic!("{other:?}"),
    }

    let (mut m, _) = peer.message(&room, MessageType::Groupchat);
    m.bodies
        .insert(Lang::default(), "> peer: first\nan answer".into());
    m.payloads.push(el(&format!(
        "<reply xmlns='urn:xmpp:reply:0' to='{room}/peer' id='{}'/>",
        sid.as_str()
    )));
    m.payloads.push(el("<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='14'/></fallback>"));
    peer.send(m).await;
    let reply = h
        .next_matching(
            WAIT,
            |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "an answer"),
        )
        .await
        .expect("the reply, without its fallback");
    assert_eq!(reply.reply_to.as_ref(), Some(&sid));

    for set in [
        "<reaction>👍</reaction><reaction>🎉</reaction>",
        "<reaction>🎉</reaction>",
    ] {
        let (mut m, _) = peer.message(&room, MessageType::Groupchat);
        m.payloads.push(el(&format!(
            "<reactions xmlns='urn:xmpp:reactions:0' id='{}'>{set}</reactions>",
            sid.as_str()
        )));
        peer.send(m).await;
    }
    let mut reactions = Vec::new();
    while reactions.len() < 3 {
        let e = h
            .next_matching(WAIT, |e| matches!(e.kind, EventKind::Reaction { .. }))
            .await
            .expect("reactions");
        if let EventKind::Reaction {
            target,
            key,
            removed,
        } = e.kind
        {
            assert_eq!(target, sid);
            reactions.push((key.as_str().to_owned(), removed));
        }
    }
    assert_eq!(
        reactions,
        vec![
            ("👍".to_owned(), false),
            ("🎉".to_owned(), false),
            ("👍".to_owned(), true)
        ]
    );

    let (mut m, _) = peer.message(&room, MessageType::Groupchat);
    m.payloads.push(el(&format!(
        "<retract xmlns='urn:xmpp:message-retract:1' id='{}'/>",
        sid.as_str()
    )));
    peer.send(m).await;
    let delete = h
        .next_matching(WAIT, |e| matches!(e.kind, EventKind::Delete { .. }))
        .await
        .expect("the delete");
    assert!(matches!(&delete.kind, EventKind::Delete { target } if *target == sid));

    // Outbound: a message, a reply to the peer's, its correction, a reaction, its retraction.
    let from_bridge = |m: &tokio_xmpp::parsers::message::Message| {
        m.type_ == MessageType::Groupchat
            && m.from
                .as_ref()
                .is_some_and(|f| f.resource().is_some_and(|r| r.as_str() == "bridge"))
    };
    let mut out = outbound(&room, EventKind::Message(Content::plain("from matrix")));
    out.reply_to = Some(sid.clone());
    let receipt = h.send(out, WAIT).await.expect("an answer").expect("sent");
    let ours = receipt.remote_id.expect("the room's id for our message");
    let seen = peer
        .next_message(WAIT, |m| from_bridge(m) && body(m) == Some("from matrix"))
        .await
        .expect("seen");
    let stamped = payload(&seen, "stanza-id", "urn:xmpp:sid:0").and_then(|e| e.attr("id"));
    assert_eq!(stamped, Some(ours.as_str()), "the receipt is the room's id");
    let replied = payload(&seen, "reply", "urn:xmpp:reply:0").and_then(|e| e.attr("id"));
    assert_eq!(replied, Some(sid.as_str()));
    let origin = seen.id.clone().expect("an id").0;

    let edit = outbound(
        &room,
        EventKind::Edit {
            target: ours.clone(),
            content: Content::plain("from matrix, edited"),
        },
    );
    h.send(edit, WAIT)
        .await
        .expect("an answer")
        .expect("corrected");
    let seen = peer
        .next_message(WAIT, |m| {
            from_bridge(m) && body(m) == Some("from matrix, edited")
        })
        .await
        .expect("seen");
    let replaced =
        payload(&seen, "replace", "urn:xmpp:message-correct:0").and_then(|e| e.attr("id"));
    assert_eq!(
        replaced,
        Some(origin.as_str()),
        "a correction names our own id"
    );

    let react = outbound(
        &room,
        EventKind::Reaction {
            target: sid.clone(),
            key: "❤".into(),
            removed: false,
        },
    );
    h.send(react, WAIT)
        .await
        .expect("an answer")
        .expect("reacted");
    let seen = peer
        .next_message(WAIT, |m| {
            from_bridge(m) && payload(m, "reactions", "urn:xmpp:reactions:0").is_some()
        })
        .await
        .expect("seen");
    let r = payload(&seen, "reactions", "urn:xmpp:reactions:0").expect("reactions");
    assert_eq!(r.attr("id"), Some(sid.as_str()));
    assert_eq!(
        r.children().map(|c| c.text()).collect::<Vec<_>>(),
        vec!["❤".to_owned()]
    );

    let delete = outbound(
        &room,
        EventKind::Delete {
            target: ours.clone(),
        },
    );
    h.send(delete, WAIT)
        .await
        .expect("an answer")
        .expect("retracted");
    let seen = peer
        .next_message(WAIT, |m| {
            from_bridge(m) && payload(m, "retract", "urn:xmpp:message-retract:1").is_some()
        })
        .await
        .expect("seen");
    let r = payload(&seen, "retract", "urn:xmpp:message-retract:1").and_then(|e| e.attr("id"));
    assert_eq!(r, Some(ours.as_str()));

    // Someone else's message can't be corrected or retracted by the bridge.
    let edit = outbound(
        &room,
        EventKind::Edit {
            target: sid.clone(),
            content: Content::plain("no"),
        },
    );
    assert!(matches!(
        h.send(edit, WAIT).await,
        Some(Err(passerelle_sdk::SendError::Rejected(_)))
    ));
    let _ = h.shutdown(WAIT).await;
    peer.close().await;
}

/// A direct chat is a room only for the person it names: their messages come in there, ours go
/// to them, and a message from anyone else (or a private message in a room) is not bridged.
#[tokio::test]
async fn direct_chats_reach_only_the_configured_person() {
    let server = server();
    server.register("stranger", "stranger-pw");
    let dm: RoomId = format!("dm:peer@{DOMAIN}").into();
    let mut h = Harness::start(connector(&server), "xmpp.test", vec![dm.clone()]);
    assert!(h.wait_connected(WAIT).await, "connected");
    let bridge = BareJid::from_str(&format!("bridge@{DOMAIN}")).expect("a JID");
    let mut peer = XmppClient::connect(&server, "peer").await;
    let mut stranger = XmppClient::connect(&server, "stranger").await;

    let (mut m, _) = stranger.message(&bridge, MessageType::Chat);
    m.bodies.insert(Lang::default(), "from a stranger".into());
    stranger.send(m).await;
    let (mut m, _) = peer.message(&bridge, MessageType::Chat);
    m.bodies.insert(Lang::default(), "hello bridge".into());
    peer.send(m).await;
    let e = h
        .next_matching(WAIT, |e| matches!(e.kind, EventKind::Message(_)))
        .await
        .expect("the peer's direct message");
    assert_eq!(e.room, dm);
    assert_eq!(e.sender.id.as_str(), format!("peer@{DOMAIN}"));
    assert!(
        matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "hello bridge"),
        "the stranger's message was not bridged first"
    );

    let receipt = h
        .send(
            outbound_to(&dm, EventKind::Message(Content::plain("hello peer"))),
            WAIT,
        )
        .await
        .expect("an answer");
    assert!(receipt.is_ok(), "{receipt:?}");
    let got = peer
        .next_message(WAIT, |m| {
            m.type_ == MessageType::Chat && body(m) == Some("hello peer")
        })
        .await
        .expect("the peer got our direct message");
    assert_eq!(got.from.map(|f| f.to_bare()), Some(bridge.clone()));
    assert!(
        stranger
            .next_message(Duration::from_secs(2), |m| body(m) == Some("hello peer"))
            .await
            .is_none(),
        "only the configured person gets it"
    );
    let other: RoomId = format!("dm:stranger@{DOMAIN}").into();
    let refused = h
        .send(
            outbound_to(&other, EventKind::Message(Content::plain("no"))),
            WAIT,
        )
        .await;
    assert!(
        matches!(refused, Some(Err(passerelle_sdk::SendError::RoomNotFound))),
        "{refused:?}"
    );
    assert!(
        h.next_matching(Duration::from_secs(2), |e| matches!(
            e.kind,
            EventKind::Message(_)
        ))
        .await
        .is_none(),
        "nothing else was bridged"
    );
    let _ = h.shutdown(WAIT).await;
}

fn outbound_to(room: &RoomId, kind: EventKind) -> Event {
    Event::new(room.clone(), Sender::new("someone"), kind)
}

/// Serves `body` once per connection on a loopback port (a file another network links to).
async fn serve_file(body: &'static [u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body).await;
        }
    });
    port
}

/// A file from another network is fetched and uploaded to the server's HTTP File Upload service
/// (found by service discovery), and the room gets its new link, out of band too; where it may
/// not be fetched (a private address, not allowed), its original link goes out instead.
#[tokio::test]
async fn files_from_other_networks_are_uploaded_or_sent_as_links() {
    const PICTURE: &[u8] = b"\x89PNG a tiny picture";
    let server = server();
    let room = BareJid::from_str(&format!("files@{MUC}")).expect("a room");
    let mut peer = XmppClient::connect(&server, "peer").await;
    peer.join(&room, "peer").await;
    let origin = format!("http://127.0.0.1:{}/cat.png", serve_file(PICTURE).await);
    let attachment = passerelle_sdk::Attachment {
        name: "cat.png".into(),
        mime: Some("image/png".into()),
        size: Some(PICTURE.len() as u64),
        url: origin.as_str().into(),
    };
    let content = Content {
        attachments: vec![attachment],
        ..Content::plain("a picture")
    };
    let from_bridge = |m: &tokio_xmpp::parsers::message::Message| {
        m.type_ == MessageType::Groupchat
            && m.from
                .as_ref()
                .is_some_and(|f| f.resource().is_some_and(|r| r.as_str() == "bridge"))
    };

    for allowed in [true, false] {
        let mut h = Harness::start(
            connector_with(&server, serde_json::json!({"media_fetch_private": allowed})),
            "xmpp.test",
            vec![room.as_str().into()],
        );
        assert!(h.wait_connected(WAIT).await, "connected");
        let sent = h
            .send(outbound(&room, EventKind::Message(content.clone())), WAIT)
            .await
            .expect("an answer");
        assert!(sent.is_ok(), "{sent:?}");
        let seen = peer
            .next_message(WAIT, |m| {
                from_bridge(m) && body(m).is_some_and(|b| b.starts_with("a picture\n"))
            })
            .await
            .expect("the room sees the message with its file");
        let link = body(&seen)
            .and_then(|b| b.lines().nth(1))
            .expect("a link line")
            .to_owned();
        let oob = payload(&seen, "x", "jabber:x:oob")
            .and_then(|x| x.get_child("url", "jabber:x:oob"))
            .map(|u| u.text());
        assert_eq!(
            oob.as_deref(),
            Some(link.as_str()),
            "the link is also out of band"
        );
        if allowed {
            let upload = format!("http://127.0.0.1:{}/", server.http_port);
            assert!(link.starts_with(&upload), "{link} is on the upload service");
            let got = reqwest::get(&link).await.expect("the uploaded file");
            assert!(got.status().is_success());
            assert_eq!(got.bytes().await.expect("bytes").as_ref(), PICTURE);
        } else {
            assert_eq!(
                link, origin,
                "not fetched from a private address: the original link"
            );
        }
        let _ = h.shutdown(WAIT).await;
    }
    peer.close().await;
}

/// The account in component mode (XEP-0114): the bot `bridge@bridge.localhost` joins the rooms,
/// and each person from another network speaks as their own puppet there.
fn component(server: &Prosody) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "xmpp.component".into(),
        data_dir: std::env::temp_dir(),
    };
    let table = serde_json::json!({
        "mode": "component", "jid": format!("bridge@{COMPONENT}"),
        "password": COMPONENT_SECRET, "server": "127.0.0.1", "port": server.component_port,
        "nick": "bridge", "ping_interval_secs": 5, "ping_timeout_secs": 5, "send_timeout_secs": 10
    });
    build(&ctx, table)
}

#[tokio::test]
async fn xmpp_component_mode_passes_the_conformance_suite_against_prosody() {
    let server = server();
    suite(&server, "component", &|| component(&server)).await;
}

/// Two people from another network appear as two occupants under their own names; their
/// messages, corrections and reactions come from their puppets and are not bridged back; a
/// taken name gets a `_`; a refused secret is an authentication error.
#[tokio::test]
async fn component_mode_gives_each_person_their_own_occupant() {
    let server = server();
    let room = BareJid::from_str(&format!("puppets@{MUC}")).expect("a room");
    let mut peer = XmppClient::connect(&server, "peer").await;
    peer.join(&room, "carol").await;
    let mut h = Harness::start(
        component(&server),
        "xmpp.component",
        vec![room.as_str().into()],
    );
    if !h.wait_connected(WAIT).await {
        let r = h.wait_finished(WAIT).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        panic!("not connected: {r:?}\n{}", server.log());
    }

    let from_nick = |m: &tokio_xmpp::parsers::message::Message, nick: &str| {
        m.type_ == MessageType::Groupchat
            && m.from
                .as_ref()
                .is_some_and(|f| f.resource().is_some_and(|r| r.as_str() == nick))
    };
    let said = |name: &str, text: &str| {
        let mut sender = Sender::new(name.to_lowercase());
        sender.display_name = Some(name.into());
        Event::new(
            room.as_str(),
            sender,
            EventKind::Message(Content::plain(text)),
        )
    };
    let alice = h
        .send(said("Alice", "hello from alice"), WAIT)
        .await
        .expect("an answer")
        .expect("sent");
    h.send(said("Bob", "hello from bob"), WAIT)
        .await
        .expect("an answer")
        .expect("sent");
    h.send(said("carol", "hello from another carol"), WAIT)
        .await
        .expect("an answer")
        .expect("sent");
    for (nick, text) in [
        ("Alice", "hello from alice"),
        ("Bob", "hello from bob"),
        ("carol_", "hello from another carol"),
    ] {
        let m = peer
            .next_message(WAIT, |m| from_nick(m, nick) && body(m) == Some(text))
            .await
            .unwrap_or_else(|| panic!("{nick} said {text:?} in the room"));
        assert!(payload(&m, "occupant-id", "urn:xmpp:occupant-id:0").is_some());
    }

    let mut sender = Sender::new("alice");
    sender.display_name = Some("Alice".into());
    let edit = Event::new(
        room.as_str(),
        sender.clone(),
        EventKind::Edit {
            target: alice.remote_id.clone().expect("an id"),
            content: Content::plain("hello, edited"),
        },
    );
    h.send(edit, WAIT)
        .await
        .expect("an answer")
        .expect("corrected");
    let m = peer
        .next_message(WAIT, |m| {
            from_nick(m, "Alice") && body(m) == Some("hello, edited")
        })
        .await
        .expect("Alice's correction, from Alice");
    assert!(payload(&m, "replace", "urn:xmpp:message-correct:0").is_some());

    assert!(
        h.next_matching(Duration::from_secs(2), |e| matches!(
            e.kind,
            EventKind::Message(_) | EventKind::Edit { .. } | EventKind::Membership(_)
        ))
        .await
        .is_none(),
        "the puppets' messages and joins are not bridged back"
    );
    // A person in the room is still bridged, by the bot.
    peer.say(&room, "hello puppets").await;
    let e = h
        .next_matching(
            WAIT,
            |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "hello puppets"),
        )
        .await
        .expect("the peer's message");
    assert_eq!(e.sender.display_name.as_deref(), Some("carol"));
    let _ = h.shutdown(WAIT).await;

    // A wrong secret is refused for good, not retried as a lost connection.
    let ctx = BuildContext {
        account: "xmpp.bad".into(),
        data_dir: std::env::temp_dir(),
    };
    let bad = build(
        &ctx,
        serde_json::json!({
            "mode": "component", "jid": format!("bridge@{COMPONENT}"), "password": "wrong",
            "server": "127.0.0.1", "port": server.component_port
        }),
    );
    let mut h = Harness::start(bad, "xmpp.bad", vec![]);
    let result = h.wait_finished(WAIT).await.expect("run returned");
    assert!(
        matches!(result, Err(passerelle_sdk::ConnectorError::AuthRejected(_))),
        "{result:?}"
    );
    peer.close().await;
}

/// A room with a password is joined with the configured one (and refused without it), and a
/// taken nick falls back to the next.
#[tokio::test]
async fn room_passwords_and_taken_nicks() {
    let server = server();
    let room = BareJid::from_str(&format!("locked@{MUC}")).expect("a room");
    let mut peer = XmppClient::connect(&server, "peer").await;
    // The peer holds the bridge's nick and locks the room with a password.
    peer.join(&room, "bridge").await;
    let form: tokio_xmpp::minidom::Element = "<query xmlns='http://jabber.org/protocol/muc#owner'>\
        <x xmlns='jabber:x:data' type='submit'>\
          <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
          <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
          <field var='muc#roomconfig_roomsecret'><value>sesame</value></field>\
        </x></query>"
        .parse()
        .expect("the form");
    let answer = peer
        .iq(
            &tokio_xmpp::parsers::jid::Jid::from(room.clone()),
            tokio_xmpp::IqRequest::Set(form),
        )
        .await;
    assert!(
        matches!(answer, tokio_xmpp::IqResponse::Result(_)),
        "{answer:?}"
    );

    for (password, joins) in [("wrong", false), ("sesame", true)] {
        let extra = serde_json::json!({"room_passwords": {room.to_string(): password}});
        let mut h = Harness::start(
            connector_with(&server, extra),
            "xmpp.test",
            vec![room.as_str().into()],
        );
        assert!(h.wait_connected(WAIT).await, "connected");
        let answer = h
            .send(
                outbound(
                    &room,
                    EventKind::Message(Content::plain("through the lock")),
                ),
                WAIT,
            )
            .await
            .expect("an answer");
        if joins {
            assert!(answer.is_ok(), "{answer:?}");
            let seen = peer
                .next_message(WAIT, |m| body(m) == Some("through the lock"))
                .await
                .expect("the room sees it");
            let nick = seen
                .from
                .as_ref()
                .and_then(|f| f.resource())
                .map(|r| r.to_string());
            assert_eq!(nick.as_deref(), Some("bridge_"), "the taken nick fell back");
        } else {
            assert_eq!(
                answer,
                Err(passerelle_sdk::SendError::RoomNotFound),
                "a wrong password is refused for good"
            );
        }
        let _ = h.shutdown(WAIT).await;
    }
    peer.close().await;
}

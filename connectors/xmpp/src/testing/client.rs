//! A plain XMPP client for tests, on tokio-xmpp's own `Client` (STARTTLS, XEP-0198, automatic
//! reconnection): logs in to the testkit's [`Prosody`], joins rooms (configuring a room it
//! creates as an instant room), sends stanzas and collects the messages it receives.

use super::prosody::{DOMAIN, Prosody};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, IqRequest, IqResponse};

const WAIT: Duration = Duration::from_secs(20);

/// A logged-in test account.
pub struct XmppClient {
    client: Client,
    /// The account.
    pub jid: BareJid,
    /// Our occupant id (XEP-0421) per joined room.
    pub occupant_ids: HashMap<BareJid, String>,
    /// Messages received and not yet taken.
    inbox: VecDeque<Message>,
    next_id: u64,
}

/// The text of a message's body, whatever its language.
pub fn body(m: &Message) -> Option<&str> {
    m.bodies.values().next().map(String::as_str)
}

/// A child element of a message by name and namespace.
pub fn payload<'a>(m: &'a Message, name: &str, ns: &str) -> Option<&'a Element> {
    m.payloads.iter().find(|e| e.is(name, ns))
}

impl XmppClient {
    /// Logs `user` (password `<user>-pw`, see [`Prosody::register`]) in over STARTTLS, trusting
    /// the server's throwaway CA.
    pub async fn connect(server: &Prosody, user: &str) -> Self {
        // SAFETY: tests set this before any TLS client of theirs starts; it names the same file
        // every time.
        unsafe { std::env::set_var("SSL_CERT_FILE", server.ca()) };
        let jid = BareJid::from_str(&format!("{user}@{DOMAIN}")).expect("a JID");
        let mut client = Client::new_starttls(
            jid.clone(),
            format!("{user}-pw"),
            DnsConfig::addr(&format!("127.0.0.1:{}", server.c2s_port)),
            Timeouts::tight(),
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
        let mut me = Self {
            client,
            jid,
            occupant_ids: HashMap::new(),
            inbox: VecDeque::new(),
            // Ids unique across connections too, as real clients make them (a room without
            // stanza-ids is known only by them).
            next_id: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
        };
        // Available, as a client is, so that messages to the bare JID reach this session.
        me.send(Presence::available()).await;
        me
    }

    /// Sends any stanza.
    pub async fn send(&mut self, stanza: impl Into<tokio_xmpp::Stanza>) {
        self.client
            .send_stanza(stanza.into())
            .await
            .expect("the stanza was sent");
    }

    /// Joins `room` as `nick` without history; configures it as an instant room when we
    /// created it. Returns our occupant id there, when the room gives them.
    pub async fn join(&mut self, room: &BareJid, nick: &str) -> Option<String> {
        self.join_asking(room, nick, History::new().with_maxstanzas(0))
            .await
    }

    /// Joins `room` as `nick` asking for the room's whole history (which then arrives as
    /// messages, see [`XmppClient::messages_until`]).
    pub async fn join_with_history(&mut self, room: &BareJid, nick: &str) -> Option<String> {
        self.join_asking(room, nick, History::new().with_maxstanzas(10_000))
            .await
    }

    async fn join_asking(
        &mut self,
        room: &BareJid,
        nick: &str,
        history: History,
    ) -> Option<String> {
        let occupant = FullJid::from_str(&format!("{room}/{nick}")).expect("an occupant JID");
        let presence = Presence::available()
            .with_to(Jid::from(occupant))
            .with_payloads(vec![Muc::new().with_history(history).into()]);
        self.send(presence).await;
        let own = format!("{room}/{nick}");
        let created = tokio::time::timeout(WAIT, async {
            while let Some(event) = self.client.next().await {
                match event {
                    Event::Stanza(tokio_xmpp::Stanza::Presence(p))
                        if p.from.as_ref().is_some_and(|f| f.to_string() == own) =>
                    {
                        assert!(
                            p.type_ != PresenceType::Error,
                            "{nick} could not join {room}: {p:?}"
                        );
                        if let Some(id) = p
                            .payloads
                            .iter()
                            .find(|e| e.is("occupant-id", "urn:xmpp:occupant-id:0"))
                            .and_then(|e| e.attr("id"))
                        {
                            self.occupant_ids.insert(room.clone(), id.to_owned());
                        }
                        return p.payloads.iter().any(|e| {
                            e.is("x", "http://jabber.org/protocol/muc#user")
                                && e.children().any(|s| s.attr("code") == Some("201"))
                        });
                    }
                    Event::Stanza(tokio_xmpp::Stanza::Message(m)) => self.inbox.push_back(m),
                    _ => {}
                }
            }
            false
        })
        .await
        .unwrap_or_else(|_| panic!("{nick} never joined {room}"));
        if created {
            // Prosody locks a new room until its owner configures it (XEP-0045 §10.1).
            let instant: Element = "<query xmlns='http://jabber.org/protocol/muc#owner'>\
                <x xmlns='jabber:x:data' type='submit'/></query>"
                .parse()
                .expect("the owner form");
            let answer = self
                .client
                .send_iq(Some(Jid::from(room.clone())), IqRequest::Set(instant))
                .await;
            let answer = tokio::time::timeout(WAIT, answer).await.expect("an answer");
            assert!(
                matches!(answer, Ok(IqResponse::Result(_))),
                "configuring {room}: {answer:?}"
            );
        }
        self.occupant_ids.get(room).cloned()
    }

    /// A new message to `to` with a fresh id (returned with it).
    pub fn message(&mut self, to: &BareJid, type_: MessageType) -> (Message, String) {
        self.next_id += 1;
        let id = format!(
            "{}-{}",
            self.jid.node().map(|n| n.as_str()).unwrap_or("t"),
            self.next_id
        );
        let mut m = Message::new(Some(Jid::from(to.clone())));
        m.type_ = type_;
        m.id = Some(Id(id.clone()));
        (m, id)
    }

    /// Says `text` in `room`; returns the message's id.
    pub async fn say(&mut self, room: &BareJid, text: &str) -> String {
        let (mut m, id) = self.message(room, MessageType::Groupchat);
        m.bodies.insert(Lang::default(), text.to_owned());
        self.send(m).await;
        id
    }

    /// The next received message that `accept` takes (earlier ones stay in the inbox), within
    /// `timeout`.
    pub async fn next_message(
        &mut self,
        timeout: Duration,
        accept: impl Fn(&Message) -> bool,
    ) -> Option<Message> {
        if let Some(i) = self.inbox.iter().position(&accept) {
            return self.inbox.remove(i);
        }
        let until = Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(until, self.client.next())
                .await
                .ok()??;
            if let Event::Stanza(tokio_xmpp::Stanza::Message(m)) = event {
                if accept(&m) {
                    return Some(m);
                }
                self.inbox.push_back(m);
            }
        }
    }

    /// Every message received until `done` holds for them (or `timeout` passes); takes them.
    pub async fn messages_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Message]) -> bool,
    ) -> Vec<Message> {
        let until = Instant::now() + timeout;
        let mut got: Vec<Message> = self.inbox.drain(..).collect();
        while !done(&got) {
            match tokio::time::timeout_at(until, self.client.next()).await {
                Ok(Some(Event::Stanza(tokio_xmpp::Stanza::Message(m)))) => got.push(m),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        got
    }

    /// Sends an IQ request to `to` and waits for its answer.
    pub async fn iq(&mut self, to: &Jid, request: IqRequest) -> IqResponse {
        let token = self.client.send_iq(Some(to.clone()), request).await;
        match tokio::time::timeout(WAIT, token).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => panic!("the request to {to} failed: {e}"),
            Err(_) => panic!("no answer from {to} within {WAIT:?}"),
        }
    }

    /// Uploads `data` through the server's HTTP file sharing (XEP-0363) and returns the URL to
    /// get it from.
    pub async fn upload(&mut self, service: &Jid, name: &str, mime: &str, data: Vec<u8>) -> String {
        let request: Element = format!(
            "<request xmlns='urn:xmpp:http:upload:0' filename='{name}' size='{}' content-type='{mime}'/>",
            data.len()
        )
        .parse()
        .expect("the slot request");
        let slot = match self.iq(service, IqRequest::Get(request)).await {
            IqResponse::Result(Some(slot)) => slot,
            other => panic!("no upload slot: {other:?}"),
        };
        let ns = "urn:xmpp:http:upload:0";
        let put_el = slot.get_child("put", ns).expect("a put element");
        let put = put_el.attr("url").expect("a put URL").to_owned();
        // The slot's headers (Prosody's authorization token) go with the upload.
        let headers: Vec<(String, String)> = put_el
            .children()
            .filter(|h| h.is("header", ns))
            .filter_map(|h| h.attr("name").map(|n| (n.to_owned(), h.text())))
            .collect();
        let get = slot
            .get_child("get", ns)
            .and_then(|g| g.attr("url"))
            .expect("a get URL")
            .to_owned();
        let status = reqwest::Client::new()
            .put(&put)
            .headers(
                headers
                    .iter()
                    .filter_map(|(n, v)| {
                        Some((
                            reqwest::header::HeaderName::from_bytes(n.as_bytes()).ok()?,
                            reqwest::header::HeaderValue::from_str(v).ok()?,
                        ))
                    })
                    .collect(),
            )
            .header("content-type", mime)
            .body(data)
            .send()
            .await
            .expect("the upload")
            .status();
        assert!(status.is_success(), "upload answered {status}");
        get
    }

    /// Closes the stream.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.send_end()).await;
    }
}

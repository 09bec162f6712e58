//! Message stanzas ↔ the event model, without I/O: what an inbound `<message/>` says, and the
//! stanzas for what the bridge sends.
//!
//! Extensions read and written: corrections (XEP-0308), replies with their fallback (XEP-0461,
//! XEP-0428), reactions (XEP-0444), retractions (XEP-0424, both `:1` and the older fastened
//! `:0`), moderation (XEP-0425, both versions), stable ids (XEP-0359), occupant ids (XEP-0421),
//! delayed delivery (XEP-0203) and out-of-band links (XEP-0066). `/me ` is an action.

use passerelle_sdk::{Attachment, Text};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::NcName;
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType};

/// XEP-0359.
pub const NS_SID: &str = "urn:xmpp:sid:0";
/// XEP-0421.
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0308.
pub const NS_CORRECT: &str = "urn:xmpp:message-correct:0";
/// XEP-0461.
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
/// XEP-0428.
pub const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
/// XEP-0444.
pub const NS_REACTIONS: &str = "urn:xmpp:reactions:0";
/// XEP-0424, current.
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0424, before version 0.4.
pub const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// XEP-0422, which the old retraction was fastened with.
pub const NS_FASTEN: &str = "urn:xmpp:fasten:0";
/// XEP-0425, current.
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
/// XEP-0425, before version 0.3.
pub const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
/// XEP-0066.
pub const NS_OOB: &str = "jabber:x:oob";
/// XEP-0203.
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0334.
pub const NS_HINTS: &str = "urn:xmpp:hints";

/// The most bytes of text one bridged message may carry (servers' stanza limits are larger; this
/// keeps a stanza well under Prosody's default 256 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What an inbound message does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A message, or (with `replaces`) a correction of the author's message with that sender id.
    Message {
        /// The body, without reply fallback and without `/me `.
        text: String,
        /// Whether it was `/me …`.
        emote: bool,
        /// Out-of-band links.
        attachments: Vec<Attachment>,
        /// The sender's id of the message this corrects.
        replaces: Option<String>,
    },
    /// The author's whole reaction set on a message (empty: all taken back).
    Reactions {
        /// The message reacted to (the room's id in a room).
        target: String,
        /// The reactions.
        keys: Vec<String>,
    },
    /// The author retracted their message.
    Retract {
        /// The message.
        target: String,
        /// Whether `target` is the sender's id (old `:0` form) rather than the room's.
        by_origin: bool,
    },
    /// A moderator removed a message (sent by the room itself).
    Moderated {
        /// The message (the room's id).
        target: String,
    },
    /// The room's subject was set.
    Subject(String),
    /// Nothing to bridge (chat states, receipts, markers, an empty message).
    Nothing,
}

/// An inbound message, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The sender's id for it: the origin-id, else the `id` attribute.
    pub origin: Option<String>,
    /// The id stamped by the room (or our server), when the stamp comes from the expected JID.
    pub stanza_id: Option<String>,
    /// The sender's occupant id (XEP-0421), in a room that gives them.
    pub occupant_id: Option<String>,
    /// When it was sent, for delayed delivery (history), in ms since the epoch.
    pub delay_ms: Option<u64>,
    /// The message it answers (the room's id in a room).
    pub reply_to: Option<String>,
    /// What it does.
    pub what: What,
}

impl Parsed {
    /// The id the message map knows this message by.
    pub fn remote_id(&self) -> Option<&str> {
        self.stanza_id.as_deref().or(self.origin.as_deref())
    }
}

fn child<'a>(msg: &'a Message, name: &str, ns: &str) -> Option<&'a Element> {
    msg.payloads.iter().find(|e| e.is(name, ns))
}

/// Reads `msg`. Only a stanza-id stamped `by` the given JID counts (anyone can put one in).
pub fn parse(msg: &Message, stamped_by: &BareJid) -> Parsed {
    let origin = child(msg, "origin-id", NS_SID)
        .and_then(|e| e.attr("id"))
        .map(str::to_owned)
        .or_else(|| msg.id.as_ref().map(|i| i.0.clone()));
    let stanza_id = msg
        .payloads
        .iter()
        .filter(|e| e.is("stanza-id", NS_SID))
        .find(|e| {
            e.attr("by")
                .and_then(|b| BareJid::new(b).ok())
                .is_some_and(|b| &b == stamped_by)
        })
        .and_then(|e| e.attr("id"))
        .map(str::to_owned);
    let occupant_id = child(msg, "occupant-id", NS_OCCUPANT_ID)
        .and_then(|e| e.attr("id"))
        .map(str::to_owned);
    let delay_ms = child(msg, "delay", NS_DELAY)
        .and_then(|e| e.attr("stamp"))
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok());
    let reply_to = child(msg, "reply", NS_REPLY)
        .and_then(|e| e.attr("id"))
        .map(str::to_owned);
    Parsed {
        origin,
        stanza_id,
        occupant_id,
        delay_ms,
        reply_to,
        what: what(msg),
    }
}

fn body(msg: &Message) -> Option<&str> {
    msg.bodies
        .get(&Lang(String::new()))
        .or_else(|| msg.bodies.values().next())
        .map(String::as_str)
}

fn what(msg: &Message) -> What {
    if let Some(r) = child(msg, "retract", NS_RETRACT)
        && let Some(id) = r.attr("id")
    {
        return if r.has_child("moderated", NS_MODERATE) {
            What::Moderated { target: id.into() }
        } else {
            What::Retract {
                target: id.into(),
                by_origin: false,
            }
        };
    }
    if let Some(f) = child(msg, "apply-to", NS_FASTEN)
        && let Some(id) = f.attr("id")
    {
        if f.has_child("moderated", NS_MODERATE_0) {
            return What::Moderated { target: id.into() };
        }
        if f.has_child("retract", NS_RETRACT_0) {
            return What::Retract {
                target: id.into(),
                by_origin: true,
            };
        }
    }
    if let Some(r) = child(msg, "reactions", NS_REACTIONS)
        && let Some(id) = r.attr("id")
    {
        let keys = r
            .children()
            .filter(|c| c.is("reaction", NS_REACTIONS))
            .map(|c| c.text())
            .filter(|t| !t.is_empty())
            .collect();
        return What::Reactions {
            target: id.into(),
            keys,
        };
    }
    let replaces = child(msg, "replace", NS_CORRECT)
        .and_then(|e| e.attr("id"))
        .map(str::to_owned);
    let attachments: Vec<Attachment> = msg
        .payloads
        .iter()
        .filter(|e| e.is("x", NS_OOB))
        .filter_map(|x| x.get_child("url", NS_OOB).map(|u| u.text()))
        .map(|u| u.trim().to_owned())
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(|url| Attachment {
            name: Text::new(file_name(&url)),
            mime: None,
            size: None,
            url: Text::new(url),
        })
        .collect();
    let Some(raw) = body(msg) else {
        if let Some(subject) = msg
            .subjects
            .get(&Lang(String::new()))
            .or_else(|| msg.subjects.values().next())
        {
            return What::Subject(subject.clone());
        }
        if attachments.is_empty() {
            return What::Nothing;
        }
        return What::Message {
            text: String::new(),
            emote: false,
            attachments,
            replaces,
        };
    };
    let mut text = strip_fallback(msg, raw);
    // A message that only carries a link to its file repeats the link as its body.
    if attachments.len() == 1 && text.trim() == attachments[0].url.as_str() {
        text.clear();
    }
    let (text, emote) = match text.strip_prefix("/me ") {
        Some(rest) => (rest.to_owned(), true),
        None => (text, false),
    };
    if text.is_empty() && attachments.is_empty() {
        return What::Nothing;
    }
    What::Message {
        text,
        emote,
        attachments,
        replaces,
    }
}

/// The last path segment of a URL, for an attachment's name.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .filter(|s| !s.contains(':'))
        .unwrap_or("file")
        .to_owned()
}

/// The body without the parts marked as reply fallback (XEP-0428 ranges count characters).
fn strip_fallback(msg: &Message, body: &str) -> String {
    let mut cut: Vec<(usize, usize)> = Vec::new();
    for f in msg
        .payloads
        .iter()
        .filter(|e| e.is("fallback", NS_FALLBACK))
    {
        if f.attr("for") != Some(NS_REPLY) {
            continue;
        }
        let ranges: Vec<&Element> = f.children().filter(|c| c.is("body", NS_FALLBACK)).collect();
        if ranges.is_empty() {
            return String::new();
        }
        for r in ranges {
            let start = r.attr("start").and_then(|s| s.parse::<usize>().ok());
            let end = r.attr("end").and_then(|s| s.parse::<usize>().ok());
            match (start, end) {
                (Some(s), Some(e)) if s <= e => cut.push((s, e)),
                (None, None) => return String::new(),
                _ => {}
            }
        }
    }
    if cut.is_empty() {
        return body.to_owned();
    }
    body.chars()
        .enumerate()
        .filter(|(i, _)| !cut.iter().any(|(s, e)| i >= s && i < e))
        .map(|(_, c)| c)
        .collect()
}

fn el(name: &str, ns: &str, attrs: &[(&str, &str)]) -> Element {
    let mut b = Element::builder(name, ns);
    for (k, v) in attrs {
        if let Ok(k) = NcName::try_from(*k) {
            b = b.attr(k, *v);
        }
    }
    b.build()
}

/// A new message to `to` with our id `id` (also as origin-id).
pub fn new_message(to: Jid, type_: MessageType, id: &str) -> Message {
    let mut m = Message::new(Some(to));
    m.type_ = type_;
    m.id = Some(Id(id.to_owned()));
    m.payloads.push(el("origin-id", NS_SID, &[("id", id)]));
    m
}

/// Sets the body (`/me ` before an action's text).
pub fn set_body(m: &mut Message, text: &str, emote: bool) {
    let body = if emote {
        format!("/me {text}")
    } else {
        text.to_owned()
    };
    m.bodies.insert(Lang(String::new()), body);
}

/// Sets the body to `text` (`/me ` before an action's) followed by one line per link, each link
/// also out of band (XEP-0066), so that clients show a file whose link is the whole body inline.
pub fn set_text_and_links(m: &mut Message, text: &str, emote: bool, links: &[String]) {
    let mut body = if emote {
        format!("/me {text}")
    } else {
        text.to_owned()
    };
    for link in links {
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(link);
        add_oob(m, link);
    }
    m.bodies.insert(Lang(String::new()), body);
}

/// Marks `m` as an answer to `target` (the room's id in a room).
pub fn set_reply(m: &mut Message, target: &str, author: Option<&Jid>) {
    let to = author.map(|a| a.to_string());
    let mut attrs = vec![("id", target)];
    if let Some(to) = to.as_deref() {
        attrs.push(("to", to));
    }
    m.payloads.push(el("reply", NS_REPLY, &attrs));
}

/// Marks `m` as the correction of our message with the sender's id `origin`.
pub fn set_replace(m: &mut Message, origin: &str) {
    m.payloads
        .push(el("replace", NS_CORRECT, &[("id", origin)]));
}

/// Adds an out-of-band link.
pub fn add_oob(m: &mut Message, url: &str) {
    let mut x = el("x", NS_OOB, &[]);
    let mut u = el("url", NS_OOB, &[]);
    u.append_text_node(url);
    x.append_child(u);
    m.payloads.push(x);
}

/// Our whole reaction set on `target`.
pub fn set_reactions(m: &mut Message, target: &str, keys: &[String]) {
    let mut r = el("reactions", NS_REACTIONS, &[("id", target)]);
    for k in keys {
        let mut one = el("reaction", NS_REACTIONS, &[]);
        one.append_text_node(k.as_str());
        r.append_child(one);
    }
    m.payloads.push(r);
    m.payloads.push(el("store", NS_HINTS, &[]));
}

/// Retracts `target` (the room's id in a room), with a fallback body for clients without
/// XEP-0424.
pub fn set_retract(m: &mut Message, target: &str) {
    m.payloads
        .push(el("retract", NS_RETRACT, &[("id", target)]));
    m.payloads
        .push(el("fallback", NS_FALLBACK, &[("for", NS_RETRACT)]));
    m.payloads.push(el("store", NS_HINTS, &[]));
    m.bodies.insert(
        Lang(String::new()),
        "This person attempted to retract a previous message, but it's unsupported by your client."
            .to_owned(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn msg(xml: &str) -> Message {
        let e = Element::from_str(xml).unwrap();
        Message::try_from(e).unwrap()
    }

    fn room() -> BareJid {
        BareJid::new("room@muc.example").unwrap()
    }

    #[test]
    fn a_room_message_gives_its_ids_sender_and_text() {
        let m = msg(
            r#"<message xmlns='jabber:client' type='groupchat' id='abc' from='room@muc.example/alice'>
            <body xml:lang='en'>hello</body>
            <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='other@muc.example'/>
            <stanza-id xmlns='urn:xmpp:sid:0' id='S1' by='room@muc.example'/>
            <occupant-id xmlns='urn:xmpp:occupant-id:0' id='occ-a'/>
            <origin-id xmlns='urn:xmpp:sid:0' id='O1'/>
            <delay xmlns='urn:xmpp:delay' stamp='2026-01-02T03:04:05.678Z'/>
        </message>"#,
        );
        let p = parse(&m, &room());
        assert_eq!(p.origin.as_deref(), Some("O1"));
        assert_eq!(p.stanza_id.as_deref(), Some("S1"));
        assert_eq!(p.remote_id(), Some("S1"));
        assert_eq!(p.occupant_id.as_deref(), Some("occ-a"));
        assert_eq!(p.delay_ms, Some(1_767_323_045_678));
        assert_eq!(
            p.what,
            What::Message {
                text: "hello".into(),
                emote: false,
                attachments: vec![],
                replaces: None
            }
        );
    }

    #[test]
    fn a_forged_stanza_id_is_not_taken() {
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat' id='abc'>
            <body>x</body><stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='mallory@example'/></message>"#);
        let p = parse(&m, &room());
        assert_eq!(p.remote_id(), Some("abc"));
        assert_eq!(p.stanza_id, None);
    }

    #[test]
    fn actions_corrections_and_replies() {
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat' id='n2'>
            <body>/me waves</body><replace xmlns='urn:xmpp:message-correct:0' id='n1'/></message>"#);
        assert_eq!(
            parse(&m, &room()).what,
            What::Message {
                text: "waves".into(),
                emote: true,
                attachments: vec![],
                replaces: Some("n1".into())
            }
        );
        // The fallback quote ("> alice: hi\n", 12 characters with the é) is removed.
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat' id='n3'>
            <body>&gt; alicé: hi
sure</body>
            <reply xmlns='urn:xmpp:reply:0' to='room@muc.example/alice' id='S9'/>
            <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='12'/></fallback>
        </message>"#);
        let p = parse(&m, &room());
        assert_eq!(p.reply_to.as_deref(), Some("S9"));
        assert!(
            matches!(p.what, What::Message { ref text, .. } if text == "sure"),
            "{p:?}"
        );
    }

    #[test]
    fn reactions_retractions_and_moderation() {
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat' id='r'>
            <reactions xmlns='urn:xmpp:reactions:0' id='S1'><reaction>👍</reaction><reaction>🎉</reaction></reactions>
            <store xmlns='urn:xmpp:hints'/></message>"#);
        assert_eq!(
            parse(&m, &room()).what,
            What::Reactions {
                target: "S1".into(),
                keys: vec!["👍".into(), "🎉".into()]
            }
        );
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat' id='d'>
            <retract xmlns='urn:xmpp:message-retract:1' id='S1'/><body>fallback</body>
            <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/></message>"#);
        assert_eq!(
            parse(&m, &room()).what,
            What::Retract {
                target: "S1".into(),
                by_origin: false
            }
        );
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat' id='d'>
            <apply-to xmlns='urn:xmpp:fasten:0' id='O1'><retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>"#);
        assert_eq!(
            parse(&m, &room()).what,
            What::Retract {
                target: "O1".into(),
                by_origin: true
            }
        );
        let m = msg(
            r#"<message xmlns='jabber:client' type='groupchat' from='room@muc.example'>
            <retract xmlns='urn:xmpp:message-retract:1' id='S2'>
              <moderated by='room@muc.example/mod' xmlns='urn:xmpp:message-moderate:1'/>
            </retract></message>"#,
        );
        assert_eq!(
            parse(&m, &room()).what,
            What::Moderated {
                target: "S2".into()
            }
        );
    }

    #[test]
    fn links_out_of_band_become_attachments() {
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat' id='f'>
            <body>https://up.example/abc/cat.png</body>
            <x xmlns='jabber:x:oob'><url>https://up.example/abc/cat.png</url></x></message>"#);
        match parse(&m, &room()).what {
            What::Message {
                text, attachments, ..
            } => {
                assert_eq!(text, "");
                assert_eq!(attachments.len(), 1);
                assert_eq!(attachments[0].name.as_str(), "cat.png");
                assert_eq!(
                    attachments[0].url.as_str(),
                    "https://up.example/abc/cat.png"
                );
            }
            other => panic!("{other:?}"),
        }
        let m = msg(r#"<message xmlns='jabber:client' id='f'>
            <x xmlns='jabber:x:oob'><url>javascript:alert(1)</url></x></message>"#);
        assert_eq!(parse(&m, &room()).what, What::Nothing);
    }

    #[test]
    fn chat_states_and_subjects() {
        let m = msg(r#"<message xmlns='jabber:client' type='groupchat'>
            <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"#);
        assert_eq!(parse(&m, &room()).what, What::Nothing);
        let m = msg(
            r#"<message xmlns='jabber:client' type='groupchat'><subject>Topic</subject></message>"#,
        );
        assert_eq!(parse(&m, &room()).what, What::Subject("Topic".into()));
    }

    #[test]
    fn built_stanzas_read_back() {
        let to = Jid::new("room@muc.example").unwrap();
        let mut m = new_message(to.clone(), MessageType::Groupchat, "pss-1");
        set_body(&mut m, "hi <there> & all", true);
        set_reply(&mut m, "S5", None);
        set_replace(&mut m, "pss-0");
        let back = parse(&msg(&String::from(&Element::from(m))), &room());
        assert_eq!(back.origin.as_deref(), Some("pss-1"));
        assert_eq!(back.reply_to.as_deref(), Some("S5"));
        assert_eq!(
            back.what,
            What::Message {
                text: "hi <there> & all".into(),
                emote: true,
                attachments: vec![],
                replaces: Some("pss-0".into())
            }
        );
        let mut m = new_message(to.clone(), MessageType::Groupchat, "pss-2");
        set_reactions(&mut m, "S5", &["👍".to_owned()]);
        assert_eq!(
            parse(&msg(&String::from(&Element::from(m))), &room()).what,
            What::Reactions {
                target: "S5".into(),
                keys: vec!["👍".into()]
            }
        );
        let mut m = new_message(to, MessageType::Groupchat, "pss-3");
        set_retract(&mut m, "S5");
        assert_eq!(
            parse(&msg(&String::from(&Element::from(m))), &room()).what,
            What::Retract {
                target: "S5".into(),
                by_origin: false
            }
        );
    }
}

//! Matrix events (as JSON, the way both `/sync` and appservice transactions deliver them) to the
//! event model and back. One translation serves both modes.

use crate::media::MediaLinks;
use passerelle_sdk::html;
use passerelle_sdk::{
    Attachment, Content, Event, EventKey, EventKind, Formatted, MembershipChange, MessageKind,
    RemoteMessageId, RoomId, Sender, Text, Timestamp,
};
use serde_json::{Map, Value, json};

/// What became of one Matrix event.
#[derive(Debug)]
pub enum Inbound {
    /// Bridge it.
    Event(Box<Event>),
    /// Not bridged, with a content-free reason for logs.
    Skip(&'static str),
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Removes the quoted reply fallback (`> <@alice:x> text` lines and the blank line after them).
fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with('>') {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        match rest.find('\n') {
            Some(nl) => rest = &rest[nl + 1..],
            None => return body,
        }
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// The content of an `m.room.message` (or its `m.new_content`).
fn message_content(c: &Value, links: &MediaLinks, strip_fallback: bool) -> Option<Content> {
    let msgtype = str_at(c, "msgtype")?;
    let raw_body = str_at(c, "body").unwrap_or_default();
    let body = if strip_fallback {
        strip_reply_fallback(raw_body)
    } else {
        raw_body
    };
    let mut content = Content {
        text: Text::new(body),
        ..Content::default()
    };
    content.kind = match msgtype {
        "m.emote" => MessageKind::Emote,
        "m.notice" => MessageKind::Notice,
        _ => MessageKind::Normal,
    };
    if str_at(c, "format") == Some("org.matrix.custom.html")
        && let Some(formatted) = str_at(c, "formatted_body")
    {
        let clean = html::sanitize(formatted);
        if html::has_markup(&clean) {
            content.formatted = Some(Formatted::Html(Text::new(clean)));
        }
    }
    if matches!(msgtype, "m.image" | "m.file" | "m.audio" | "m.video") {
        let name = str_at(c, "filename").unwrap_or(body);
        // An encrypted file (`file`) is not offered: its key would travel with the link.
        let url = str_at(c, "url")
            .and_then(|mxc| links.link(mxc, name))
            .unwrap_or_default();
        let info = c.get("info");
        content.attachments.push(Attachment {
            name: Text::new(name),
            mime: info.and_then(|i| str_at(i, "mimetype")).map(str::to_owned),
            size: info.and_then(|i| i.get("size")).and_then(Value::as_u64),
            url: Text::new(url),
        });
        // The body of a media message is its file name (or a caption); keep it as the text only
        // when it is a caption.
        if str_at(c, "filename").is_none_or(|f| f == body) {
            content.text = Text::default();
        }
    }
    Some(content)
}

/// Translates one timeline event. `room` is the configured room name; `sender_name` the sender's
/// display name in the room, when known; `links` makes the links files are offered under.
pub fn inbound(
    ev: &Value,
    room: &RoomId,
    sender_name: Option<String>,
    links: &MediaLinks,
) -> Inbound {
    let Some(kind) = str_at(ev, "type") else {
        return Inbound::Skip("no_type");
    };
    let Some(sender) = str_at(ev, "sender") else {
        return Inbound::Skip("no_sender");
    };
    let Some(event_id) = str_at(ev, "event_id") else {
        return Inbound::Skip("no_event_id");
    };
    let empty = Value::Object(Map::new());
    let content = ev.get("content").unwrap_or(&empty);
    let at = ev
        .get("origin_server_ts")
        .and_then(Value::as_u64)
        .map(Timestamp)
        .unwrap_or_else(Timestamp::now);
    let mut who = Sender::new(sender);
    who.display_name = sender_name;
    let relates = content.get("m.relates_to");
    let rel_type = relates.and_then(|r| str_at(r, "rel_type"));
    let rel_target = relates.and_then(|r| str_at(r, "event_id"));
    let in_reply_to = relates
        .and_then(|r| r.get("m.in_reply_to"))
        .and_then(|r| str_at(r, "event_id"));

    let mut thread_root = None;
    let mut reply_to = None;
    let kind = match kind {
        "m.room.message" => {
            if rel_type == Some("m.replace") {
                let (Some(target), Some(new)) = (rel_target, content.get("m.new_content")) else {
                    return Inbound::Skip("bad_edit");
                };
                let Some(new_content) = message_content(new, links, false) else {
                    return Inbound::Skip("bad_edit");
                };
                EventKind::Edit {
                    target: RemoteMessageId::new(target),
                    content: new_content,
                }
            } else {
                let falling_back = relates
                    .and_then(|r| r.get("is_falling_back"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if rel_type == Some("m.thread") {
                    thread_root = rel_target.map(RemoteMessageId::new);
                    if !falling_back {
                        reply_to = in_reply_to.map(RemoteMessageId::new);
                    }
                } else {
                    reply_to = in_reply_to.map(RemoteMessageId::new);
                }
                let Some(c) = message_content(content, links, reply_to.is_some()) else {
                    return Inbound::Skip("no_msgtype");
                };
                EventKind::Message(c)
            }
        }
        "m.reaction" => match (rel_type, rel_target, relates.and_then(|r| str_at(r, "key"))) {
            (Some("m.annotation"), Some(target), Some(key)) => EventKind::Reaction {
                target: RemoteMessageId::new(target),
                key: Text::new(key),
                removed: false,
            },
            _ => return Inbound::Skip("bad_reaction"),
        },
        "m.room.redaction" => {
            let target = str_at(content, "redacts").or_else(|| str_at(ev, "redacts"));
            match target {
                Some(t) => EventKind::Delete {
                    target: RemoteMessageId::new(t),
                },
                None => return Inbound::Skip("bad_redaction"),
            }
        }
        "m.room.member" => {
            let Some(subject) = str_at(ev, "state_key") else {
                return Inbound::Skip("bad_member");
            };
            let previous = ev
                .get("unsigned")
                .and_then(|u| u.get("prev_content"))
                .and_then(|p| str_at(p, "membership"));
            let change = match str_at(content, "membership") {
                Some("join") if previous == Some("join") => return Inbound::Skip("profile_change"),
                Some("join") => MembershipChange::Join,
                Some("leave") if previous != Some("join") => return Inbound::Skip("not_joined"),
                Some("leave") if subject != sender => MembershipChange::Kick,
                Some("leave") => MembershipChange::Leave,
                Some("ban") => MembershipChange::Ban,
                _ => return Inbound::Skip("membership_other"),
            };
            who = Sender::new(subject);
            who.display_name = str_at(content, "displayname").map(str::to_owned);
            EventKind::Membership(change)
        }
        "m.room.topic" => match str_at(content, "topic") {
            Some(topic) => EventKind::Topic(Text::new(topic)),
            None => return Inbound::Skip("bad_topic"),
        },
        "m.room.encrypted" => return Inbound::Skip("undecryptable"),
        _ => return Inbound::Skip("other_type"),
    };
    let mut event = Event::new(room.clone(), who, kind);
    event.at = at;
    event.remote_id = Some(RemoteMessageId::new(event_id));
    event.reply_to = reply_to;
    event.thread_root = thread_root;
    Inbound::Event(Box::new(event))
}

/// What to do on Matrix for one outbound event.
#[derive(Debug, PartialEq)]
pub enum Outgoing {
    /// Send a message-like event.
    Send {
        /// Event type.
        kind: &'static str,
        /// Its content.
        content: Value,
    },
    /// Redact an event.
    Redact {
        /// The event.
        target: String,
    },
    /// Take back our reaction `key` on `target`.
    Unreact {
        /// The reacted-to event.
        target: String,
        /// The reaction key.
        key: String,
    },
    /// Set a state event.
    State {
        /// Event type.
        kind: &'static str,
        /// Its content.
        content: Value,
    },
    /// A membership change of the sender (appservice mode shows it through the ghost).
    Membership(MembershipChange),
    /// Typing on or off (appservice mode, through the ghost).
    Typing(bool),
}

fn message_json(content: &Content) -> Value {
    let msgtype = match content.kind {
        MessageKind::Emote => "m.emote",
        MessageKind::Notice => "m.notice",
        _ => "m.text",
    };
    let mut c = json!({"msgtype": msgtype, "body": content.text.as_str()});
    if let Some(Formatted::Html(h)) = &content.formatted {
        c["format"] = json!("org.matrix.custom.html");
        c["formatted_body"] = json!(html::sanitize(h.as_str()));
    }
    c
}

/// How the bridge marks who really spoke when it posts as itself (MSC4144 per-message profiles,
/// shown by clients that know them; others show the name prefix in the body).
pub fn per_message_profile(event: &Event, has_fallback: bool) -> Value {
    let mut p = json!({
        "id": event.sender.id.as_str(),
        "displayname": event.sender.name(),
        "has_fallback": has_fallback,
    });
    if let Some(avatar) = &event.sender.avatar_url
        && avatar.starts_with("mxc://")
    {
        p["avatar_url"] = json!(avatar);
    }
    p
}

/// Adds `user` to the message's `m.mentions`.
pub fn mention(content: &mut Value, user: &str) {
    let list = &mut content["m.mentions"]["user_ids"];
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut()
        && !a.iter().any(|u| u == user)
    {
        a.push(json!(user));
    }
}

/// Puts MSC4144's name fallback before a message: `Name: text` in the body, and a marked
/// `<strong data-mx-profile-fallback>Name: </strong>` in the HTML, which clients that show
/// per-message profiles remove. Actions are left alone: they continue the sender's name already.
pub fn add_name_fallback(content: &mut Value, name: &str) {
    if content["msgtype"] == "m.emote" {
        return;
    }
    let body = content["body"].as_str().unwrap_or_default().to_owned();
    let html_body = match content.get("formatted_body").and_then(Value::as_str) {
        Some(h) => h.to_owned(),
        None => html::escape(&body),
    };
    content["body"] = json!(format!("{name}: {body}"));
    content["format"] = json!("org.matrix.custom.html");
    content["formatted_body"] = json!(format!(
        "<strong data-mx-profile-fallback>{}: </strong>{html_body}",
        html::escape(name)
    ));
}

/// Translates one outbound event (ids already on this account). `Err` is a content-free reason the
/// connector answers as unsupported.
pub fn outbound(event: &Event) -> Result<Outgoing, &'static str> {
    Ok(match &event.kind {
        EventKind::Message(content) => {
            let mut c = message_json(content);
            let mut relates = Map::new();
            if let Some(root) = &event.thread_root {
                relates.insert("rel_type".into(), json!("m.thread"));
                relates.insert("event_id".into(), json!(root.as_str()));
                let (target, falling_back) = match &event.reply_to {
                    Some(r) => (r, false),
                    None => (root, true),
                };
                relates.insert("is_falling_back".into(), json!(falling_back));
                relates.insert("m.in_reply_to".into(), json!({"event_id": target.as_str()}));
            } else if let Some(r) = &event.reply_to {
                relates.insert("m.in_reply_to".into(), json!({"event_id": r.as_str()}));
            }
            if !relates.is_empty() {
                c["m.relates_to"] = Value::Object(relates);
            }
            // Bridged text never pings anyone by accident: mentions are explicit (none).
            c["m.mentions"] = json!({});
            Outgoing::Send {
                kind: "m.room.message",
                content: c,
            }
        }
        EventKind::Edit { target, content } => {
            let new = message_json(content);
            let mut c = new.clone();
            c["body"] = json!(format!("* {}", content.text.as_str()));
            if let Some(f) = c.get("formatted_body").and_then(Value::as_str) {
                c["formatted_body"] = json!(format!("* {f}"));
            }
            let mut new = new;
            new["m.mentions"] = json!({});
            c["m.new_content"] = new;
            c["m.mentions"] = json!({});
            c["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": target.as_str()});
            Outgoing::Send {
                kind: "m.room.message",
                content: c,
            }
        }
        EventKind::Delete { target } => Outgoing::Redact {
            target: target.as_str().to_owned(),
        },
        EventKind::Reaction {
            target,
            key,
            removed: false,
        } => Outgoing::Send {
            kind: "m.reaction",
            content: json!({"m.relates_to": {
                "rel_type": "m.annotation",
                "event_id": target.as_str(),
                "key": key.as_str(),
            }}),
        },
        EventKind::Reaction {
            target,
            key,
            removed: true,
        } => Outgoing::Unreact {
            target: target.as_str().to_owned(),
            key: key.as_str().to_owned(),
        },
        EventKind::Topic(topic) => Outgoing::State {
            kind: "m.room.topic",
            content: json!({"topic": topic.as_str()}),
        },
        EventKind::Membership(change) => Outgoing::Membership(*change),
        EventKind::Typing(on) => Outgoing::Typing(*on),
        _ => return Err("unknown_kind"),
    })
}

/// The transaction id of an outbound event: derived from its key, so a resend after a crash or a
/// retry is recognised by the homeserver and never duplicates.
pub fn txn_id(key: &EventKey, part: &str) -> String {
    format!("pss.{key}.{part}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HS: &str = "https://hs.example";

    fn room() -> RoomId {
        RoomId::new("!r:hs")
    }

    fn links() -> MediaLinks {
        MediaLinks::new(HS, None, "mx", std::path::Path::new("/nonexistent")).unwrap()
    }

    fn event(v: Value) -> Event {
        match inbound(&v, &room(), Some("Alice".into()), &links()) {
            Inbound::Event(e) => *e,
            Inbound::Skip(why) => panic!("skipped: {why}"),
        }
    }

    fn skip(v: Value) -> &'static str {
        match inbound(&v, &room(), None, &links()) {
            Inbound::Skip(why) => why,
            Inbound::Event(e) => panic!("bridged {e:?}"),
        }
    }

    #[test]
    fn text_emote_notice_and_html() {
        let e = event(
            json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$1",
            "origin_server_ts": 5, "content": {"msgtype": "m.emote", "body": "waves",
            "format": "org.matrix.custom.html", "formatted_body": "<em>waves</em>"}}),
        );
        assert_eq!(e.remote_id.as_ref().map(|r| r.as_str()), Some("$1"));
        assert_eq!(e.sender.name(), "Alice");
        assert_eq!(e.at, Timestamp(5));
        let c = e.content().unwrap();
        assert_eq!(c.kind, MessageKind::Emote);
        assert_eq!(
            c.formatted,
            Some(Formatted::Html(Text::new("<i>waves</i>")))
        );
        let e = event(
            json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$1",
            "content": {"msgtype": "m.notice", "body": "n", "format": "org.matrix.custom.html",
            "formatted_body": "n"}}),
        );
        let c = e.content().unwrap();
        assert_eq!(c.kind, MessageKind::Notice);
        assert_eq!(c.formatted, None, "plain HTML says nothing more");
    }

    #[test]
    fn replies_lose_their_fallback_and_threads_keep_their_root() {
        let e = event(
            json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$2",
            "content": {"msgtype": "m.text", "body": "> <@b:hs> old\n> more\n\nnew answer",
            "format": "org.matrix.custom.html",
            "formatted_body": "<mx-reply><blockquote>old</blockquote></mx-reply><b>new</b> answer",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$1"}}}}),
        );
        assert_eq!(e.reply_to.as_ref().map(|r| r.as_str()), Some("$1"));
        assert_eq!(e.content().unwrap().text.as_str(), "new answer");
        assert_eq!(
            e.content().unwrap().formatted,
            Some(Formatted::Html(Text::new("<b>new</b> answer")))
        );
        let e = event(
            json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$3",
            "content": {"msgtype": "m.text", "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true,
            "m.in_reply_to": {"event_id": "$latest"}}}}),
        );
        assert_eq!(e.thread_root.as_ref().map(|r| r.as_str()), Some("$root"));
        assert_eq!(e.reply_to, None, "a falling-back reply is not a reply");
        assert_eq!(e.content().unwrap().text.as_str(), "in thread");
    }

    #[test]
    fn edits_reactions_redactions_members_topics() {
        let e = event(
            json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$4",
            "content": {"msgtype": "m.text", "body": "* fixed", "m.new_content":
            {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$1"}}}),
        );
        match e.kind {
            EventKind::Edit { target, content } => {
                assert_eq!(target.as_str(), "$1");
                assert_eq!(content.text.as_str(), "fixed");
            }
            other => panic!("{other:?}"),
        }
        let e = event(
            json!({"type": "m.reaction", "sender": "@a:hs", "event_id": "$5",
            "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$1", "key": "👍"}}}),
        );
        assert!(
            matches!(e.kind, EventKind::Reaction { ref key, removed: false, .. } if key.as_str() == "👍")
        );
        let e = event(
            json!({"type": "m.room.redaction", "sender": "@a:hs", "event_id": "$6",
            "redacts": "$1", "content": {}}),
        );
        assert!(matches!(e.kind, EventKind::Delete { ref target } if target.as_str() == "$1"));
        let e = event(
            json!({"type": "m.room.redaction", "sender": "@a:hs", "event_id": "$6",
            "content": {"redacts": "$2"}}),
        );
        assert!(matches!(e.kind, EventKind::Delete { ref target } if target.as_str() == "$2"));
        let e = event(
            json!({"type": "m.room.member", "sender": "@mod:hs", "event_id": "$7",
            "state_key": "@b:hs", "content": {"membership": "leave"},
            "unsigned": {"prev_content": {"membership": "join"}}}),
        );
        assert_eq!(e.kind, EventKind::Membership(MembershipChange::Kick));
        assert_eq!(e.sender.id.as_str(), "@b:hs");
        assert_eq!(
            skip(
                json!({"type": "m.room.member", "sender": "@b:hs", "event_id": "$8",
            "state_key": "@b:hs", "content": {"membership": "join", "displayname": "B2"},
            "unsigned": {"prev_content": {"membership": "join"}}})
            ),
            "profile_change"
        );
        let e = event(
            json!({"type": "m.room.topic", "sender": "@a:hs", "event_id": "$9",
            "state_key": "", "content": {"topic": "t"}}),
        );
        assert_eq!(e.kind, EventKind::Topic(Text::new("t")));
    }

    #[test]
    fn malformed_events_are_skipped_not_fatal() {
        assert_eq!(skip(json!({"sender": "@a:hs"})), "no_type");
        assert_eq!(
            skip(json!({"type": "m.room.message", "event_id": "$1"})),
            "no_sender"
        );
        assert_eq!(
            skip(
                json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$1",
            "content": {"body": 5}})
            ),
            "no_msgtype"
        );
        assert_eq!(
            skip(
                json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$1",
            "content": {"msgtype": "m.text", "body": "x",
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$0"}}})
            ),
            "bad_edit"
        );
        assert_eq!(
            skip(
                json!({"type": "m.reaction", "sender": "@a:hs", "event_id": "$1",
            "content": {"m.relates_to": {"rel_type": "m.reference"}}})
            ),
            "bad_reaction"
        );
        assert_eq!(
            skip(
                json!({"type": "m.room.encrypted", "sender": "@a:hs", "event_id": "$1",
            "content": {}})
            ),
            "undecryptable"
        );
        assert_eq!(
            skip(
                json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$1",
            "content": "not an object"})
            ),
            "no_msgtype"
        );
    }

    #[test]
    fn media_becomes_an_attachment_with_an_authenticated_link() {
        let e = event(
            json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$1",
            "content": {"msgtype": "m.image", "body": "cat.png", "url": "mxc://hs/abc",
            "info": {"mimetype": "image/png", "size": 12}}}),
        );
        let c = e.content().unwrap();
        assert_eq!(c.text.as_str(), "");
        assert_eq!(
            c.attachments[0].url.as_str(),
            "https://hs.example/_matrix/client/v1/media/download/hs/abc"
        );
        assert_eq!(c.attachments[0].mime.as_deref(), Some("image/png"));
        let e = event(
            json!({"type": "m.room.message", "sender": "@a:hs", "event_id": "$2",
            "content": {"msgtype": "m.file", "body": "secret.pdf", "file": {"url": "mxc://hs/enc"}}}),
        );
        assert_eq!(
            e.content().unwrap().attachments[0].url.as_str(),
            "",
            "encrypted files are not offered"
        );
    }

    #[test]
    fn outbound_messages_carry_relations_and_no_pings() {
        let mut e = Event::new(
            "!r:hs",
            Sender::new("bob"),
            EventKind::Message(Content::emote("hi")),
        );
        e.reply_to = Some("$1".into());
        let Outgoing::Send { kind, content } = outbound(&e).unwrap() else {
            panic!()
        };
        assert_eq!(kind, "m.room.message");
        assert_eq!(content["msgtype"], "m.emote");
        assert_eq!(content["m.relates_to"]["m.in_reply_to"]["event_id"], "$1");
        assert_eq!(content["m.mentions"], json!({}));
        e.thread_root = Some("$root".into());
        e.reply_to = None;
        let Outgoing::Send { content, .. } = outbound(&e).unwrap() else {
            panic!()
        };
        assert_eq!(content["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(content["m.relates_to"]["is_falling_back"], true);
        let edit = Event::new(
            "!r:hs",
            Sender::new("bob"),
            EventKind::Edit {
                target: "$1".into(),
                content: Content::plain("new"),
            },
        );
        let Outgoing::Send { content, .. } = outbound(&edit).unwrap() else {
            panic!()
        };
        assert_eq!(content["body"], "* new");
        assert_eq!(content["m.new_content"]["body"], "new");
        assert_eq!(content["m.relates_to"]["rel_type"], "m.replace");
        let del = Event::new(
            "!r:hs",
            Sender::new("bob"),
            EventKind::Delete {
                target: "$1".into(),
            },
        );
        assert_eq!(
            outbound(&del).unwrap(),
            Outgoing::Redact {
                target: "$1".into()
            }
        );
    }
}

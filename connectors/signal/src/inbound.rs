//! Received envelopes (signal-cli's `{"account", "envelope"}`) to events.
//!
//! Signal names a message by its author and the timestamp it was sent with; the bridge's id for
//! it is `<timestamp>@<author>`, the author being their account id (ACI UUID) or, without one,
//! their number, and our own account always being its number. Replies (quotes), reactions,
//! remote deletes and edits name their target the same way.
//!
//! A group message belongs to the room `group:<group id>`; a direct message to the room named by
//! the sender's number or, when the links name it so (or the number is hidden), their UUID. Our
//! own messages (sync messages from other devices), receipts, typing and calls are not bridged.

use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{Content, Event, EventKind, RoomId, Sender, Text, Timestamp};
use serde_json::Value;

/// What one envelope holds.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Events to emit.
    pub events: Vec<Event>,
    /// A content-free name of what was not bridged.
    pub skipped: Option<&'static str>,
}

/// Reads envelopes for one account.
pub struct Reader<'a> {
    /// Our number.
    pub account: &'a str,
    /// Our ACI, when known.
    pub self_uuid: Option<&'a str>,
    /// The rooms links name (to pick a person's room by number or UUID).
    pub rooms: &'a [RoomId],
    /// Signed links for attachments.
    pub links: Option<&'a SignedLinks>,
    /// Attachments larger than this are named, not linked.
    pub max_bytes: u64,
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn text_content(text: &str) -> Content {
    match text.strip_prefix("/me ") {
        Some(rest) => Content::emote(rest),
        None => Content::plain(text),
    }
}

impl Reader<'_> {
    /// The author part of a message id.
    pub fn author(&self, uuid: Option<&str>, number: Option<&str>) -> Option<String> {
        if number == Some(self.account) || (uuid.is_some() && uuid == self.self_uuid) {
            return Some(self.account.to_owned());
        }
        uuid.or(number).map(str::to_owned)
    }

    fn skip(why: &'static str) -> Parsed {
        Parsed {
            events: Vec::new(),
            skipped: Some(why),
        }
    }

    /// Reads one received event's data.
    pub fn read(&self, data: &Value) -> Parsed {
        if str_at(data, "account").is_some_and(|a| a != self.account) {
            return Self::skip("another account's envelope");
        }
        let Some(env) = data.get("envelope") else {
            return Self::skip("no envelope (a receive error)");
        };
        let (uuid, number) = (str_at(env, "sourceUuid"), str_at(env, "sourceNumber"));
        let Some(author) = self.author(uuid, number) else {
            return Self::skip("envelope without a sender");
        };
        if author == self.account {
            return Self::skip("our own message");
        }
        let mut sender = Sender::new(author.as_str());
        sender.display_name = str_at(env, "sourceName").map(str::to_owned);
        let ts = env.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
        let direct_room = || -> String {
            let named =
                |id: &Option<&str>| id.is_some_and(|i| self.rooms.iter().any(|r| r.as_str() == i));
            [number, uuid]
                .iter()
                .find(|id| named(id))
                .copied()
                .flatten()
                .or(number)
                .or(uuid)
                .unwrap_or_default()
                .to_owned()
        };
        let room_of = |dm: &Value| -> Option<String> {
            match dm.get("groupInfo") {
                Some(g) => {
                    if str_at(g, "type") == Some("UPDATE") {
                        return None;
                    }
                    Some(format!("group:{}", str_at(g, "groupId")?))
                }
                None => Some(direct_room()),
            }
        };
        let event = |room: String, kind: EventKind, id: String| {
            let mut e = Event::new(room, sender.clone(), kind).with_remote_id(id);
            e.at = Timestamp(ts);
            e
        };
        if let Some(edit) = env.get("editMessage") {
            let (Some(target), Some(dm)) = (
                edit.get("targetSentTimestamp").and_then(Value::as_u64),
                edit.get("dataMessage"),
            ) else {
                return Self::skip("edit without target");
            };
            let Some(room) = room_of(dm) else {
                return Self::skip("group update");
            };
            return Parsed {
                events: vec![event(
                    room,
                    EventKind::Edit {
                        target: format!("{target}@{author}").into(),
                        content: self.content(dm),
                    },
                    format!("edit:{ts}@{author}"),
                )],
                skipped: None,
            };
        }
        let Some(dm) = env.get("dataMessage") else {
            return Self::skip(if env.get("syncMessage").is_some() {
                "sync message (ours, from another device)"
            } else {
                "receipt, typing, call or story"
            });
        };
        let Some(room) = room_of(dm) else {
            return Self::skip("group update");
        };
        if let Some(del) = dm.get("remoteDelete") {
            let Some(target) = del.get("timestamp").and_then(Value::as_u64) else {
                return Self::skip("remote delete without target");
            };
            return Parsed {
                events: vec![event(
                    room,
                    EventKind::Delete {
                        target: format!("{target}@{author}").into(),
                    },
                    format!("delete:{ts}@{author}"),
                )],
                skipped: None,
            };
        }
        if let Some(r) = dm.get("reaction") {
            let (Some(target), Some(target_author), Some(emoji)) = (
                r.get("targetSentTimestamp").and_then(Value::as_u64),
                self.author(
                    str_at(r, "targetAuthorUuid"),
                    str_at(r, "targetAuthorNumber"),
                ),
                str_at(r, "emoji"),
            ) else {
                return Self::skip("reaction without target");
            };
            let removed = r.get("isRemove").and_then(Value::as_bool) == Some(true);
            return Parsed {
                events: vec![event(
                    room,
                    EventKind::Reaction {
                        target: format!("{target}@{target_author}").into(),
                        key: Text::new(emoji),
                        removed,
                    },
                    format!("reaction:{ts}@{author}"),
                )],
                skipped: None,
            };
        }
        let content = self.content(dm);
        if content.text.as_str().is_empty() && content.attachments.is_empty() {
            return Self::skip("message without text or files (sticker, payment, poll…)");
        }
        let mut e = event(room, EventKind::Message(content), format!("{ts}@{author}"));
        if let Some(q) = dm.get("quote")
            && let (Some(id), Some(qa)) = (
                q.get("id").and_then(Value::as_u64),
                self.author(str_at(q, "authorUuid"), str_at(q, "authorNumber")),
            )
        {
            e.reply_to = Some(format!("{id}@{qa}").into());
        }
        Parsed {
            events: vec![e],
            skipped: None,
        }
    }

    fn content(&self, dm: &Value) -> Content {
        let mut content = text_content(str_at(dm, "message").unwrap_or(""));
        for a in dm
            .get("attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = str_at(a, "id") else { continue };
            let name = str_at(a, "filename").unwrap_or("attachment").to_owned();
            let size = a.get("size").and_then(Value::as_u64);
            let link = match size {
                Some(s) if s > self.max_bytes => None,
                _ => self.links.and_then(|l| l.link(id, &name)),
            };
            content.add_file(
                link,
                name,
                str_at(a, "contentType").map(str::to_owned),
                size,
            );
        }
        content
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ME: &str = "+15550000000";
    const ADA: &str = "7ccae375-cd51-4c82-8b1e-7be3280aa485";

    fn reader(rooms: &[RoomId]) -> Reader<'_> {
        Reader {
            account: ME,
            self_uuid: Some("11111111-1111-4111-8111-111111111111"),
            rooms,
            links: None,
            max_bytes: 1 << 20,
        }
    }

    fn env(extra: Value) -> Value {
        let mut e = json!({"source": "+15551112222", "sourceNumber": "+15551112222", "sourceUuid": ADA,
            "sourceName": "Ada", "sourceDevice": 1, "timestamp": 1700000000123u64,
            "serverReceivedTimestamp": 1700000000200u64, "serverDeliveredTimestamp": 1700000000300u64});
        if let (Some(e), Some(x)) = (e.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        json!({"envelope": e, "account": ME})
    }

    #[test]
    fn a_quote_of_our_own_message_names_it_as_we_sent_it() {
        let rooms = vec![RoomId::from("+15551112222")];
        let p = reader(&rooms).read(&env(json!({"dataMessage": {"timestamp": 1700000000123u64,
            "message": "yes", "expiresInSeconds": 0,
            "quote": {"id": 1699999999000u64, "author": ME, "authorNumber": ME,
                      "authorUuid": "11111111-1111-4111-8111-111111111111", "text": "q", "attachments": []}}})));
        let e = &p.events[0];
        assert_eq!(e.room.as_str(), "+15551112222");
        assert_eq!(
            e.remote_id.as_ref().unwrap().as_str(),
            format!("1700000000123@{ADA}")
        );
        assert_eq!(
            e.reply_to.as_ref().unwrap().as_str(),
            format!("1699999999000@{ME}")
        );
    }

    #[test]
    fn groups_reactions_deletes_edits_and_what_is_skipped() {
        let rooms = vec![RoomId::from(ADA)];
        let r = reader(&rooms);
        let g = r.read(&env(json!({"dataMessage": {"timestamp": 1, "message": "hi",
            "groupInfo": {"groupId": "Pmpi+EfPWmsx=", "groupName": "G", "revision": 3, "type": "DELIVER"}}})));
        assert_eq!(g.events[0].room.as_str(), "group:Pmpi+EfPWmsx=");
        let d = r.read(&env(json!({"dataMessage": {"timestamp": 2, "message": null, "remoteDelete": {"timestamp": 1}}})));
        assert_eq!(
            d.events[0].room.as_str(),
            ADA,
            "the links name this person by UUID"
        );
        assert!(
            matches!(&d.events[0].kind, EventKind::Delete { target } if target.as_str() == format!("1@{ADA}"))
        );
        let x = r.read(&env(
            json!({"dataMessage": {"timestamp": 3, "message": null, "reaction": {
            "emoji": "👍", "targetAuthor": ME, "targetAuthorNumber": ME, "targetAuthorUuid": null,
            "targetSentTimestamp": 9, "isRemove": true}}}),
        ));
        assert!(
            matches!(&x.events[0].kind, EventKind::Reaction { target, removed: true, .. } if target.as_str() == format!("9@{ME}"))
        );
        let e = r.read(&env(json!({"editMessage": {"targetSentTimestamp": 1,
            "dataMessage": {"timestamp": 4, "message": "fixed"}}})));
        assert!(
            matches!(&e.events[0].kind, EventKind::Edit { target, .. } if target.as_str() == format!("1@{ADA}"))
        );
        for skipped in [
            json!({"typingMessage": {"action": "STARTED", "timestamp": 1}}),
            json!({"receiptMessage": {"when": 1, "isDelivery": true, "timestamps": [1]}}),
            json!({"dataMessage": {"timestamp": 5, "message": null, "groupInfo": {"groupId": "x", "type": "UPDATE"}}}),
        ] {
            assert!(r.read(&env(skipped)).events.is_empty());
        }
        let mut other = env(json!({"dataMessage": {"timestamp": 6, "message": "x"}}));
        other["account"] = json!("+15559999999");
        assert!(
            r.read(&other).events.is_empty(),
            "another account's envelope"
        );
    }
}

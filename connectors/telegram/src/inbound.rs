//! Telegram updates to events.
//!
//! - `message`, `channel_post`: messages, with their files, replies, and their forum topic as the
//!   thread (`message_thread_id` when `is_topic_message`); joins and leaves as membership; a
//!   group's upgrade to a supergroup (`migrate_to_chat_id`, `migrate_from_chat_id`) as a
//!   [`Migration`].
//! - `edited_message`, `edited_channel_post`: edits.
//! - `message_reaction`: the reactions added and taken back, from the old and new lists.
//!
//! Every event carries an id the daemon can deduplicate on, so an update delivered twice (after a
//! crash before the offset was saved, or a webhook retry) is bridged once: a message's id is its
//! `message_id`; an edit's, `edit:<id>:<edit_date>`; other events', the `update_id`.

use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{Content, Event, EventKind, MembershipChange, Sender, Text, Timestamp};
use serde_json::Value;

/// A group that became a supergroup: messages for `from` now go to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The old group's chat id.
    pub from: i64,
    /// The supergroup's chat id.
    pub to: i64,
}

/// What one update holds.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Events to emit, in order.
    pub events: Vec<Event>,
    /// A chat migration to follow.
    pub migration: Option<Migration>,
    /// A content-free name of what was not bridged.
    pub skipped: Option<&'static str>,
}

/// Reads updates for one bot.
pub struct Reader<'a> {
    /// The bot's own user id (its messages are never bridged back).
    pub bot_id: i64,
    /// The room name of a chat id (a migrated supergroup keeps its configured group's name).
    pub room_of: &'a (dyn Fn(i64) -> String + Send + Sync),
    /// Signed links for files, when `media_public_url` is set.
    pub links: Option<&'a SignedLinks>,
    /// Files larger than this are named, not linked.
    pub max_bytes: u64,
}

fn text_content(text: &str) -> Content {
    match text.strip_prefix("/me ") {
        Some(rest) => Content::emote(rest),
        None => Content::plain(text),
    }
}

fn user_sender(user: &Value) -> Option<Sender> {
    let id = user.get("id")?.as_i64()?;
    let first = user.get("first_name").and_then(Value::as_str).unwrap_or("");
    let last = user.get("last_name").and_then(Value::as_str).unwrap_or("");
    let full = format!("{first} {last}").trim().to_owned();
    let mut s = Sender::new(id.to_string());
    s.display_name = if full.is_empty() {
        user.get("username")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        Some(full)
    };
    Some(s)
}

fn chat_sender(chat: &Value) -> Option<Sender> {
    let id = chat.get("id")?.as_i64()?;
    let mut s = Sender::new(id.to_string());
    s.display_name = chat.get("title").and_then(Value::as_str).map(str::to_owned);
    Some(s)
}

/// The file of a message: (file id, name, MIME type, size).
fn file_of(m: &Value) -> Option<(String, String, Option<String>, Option<u64>)> {
    let (obj, default_name, default_mime) =
        if let Some(sizes) = m.get("photo").and_then(Value::as_array) {
            (sizes.last()?, "photo.jpg", Some("image/jpeg"))
        } else if let Some(d) = m.get("document") {
            (d, "file", None)
        } else if let Some(v) = m.get("video") {
            (v, "video.mp4", Some("video/mp4"))
        } else if let Some(a) = m.get("animation") {
            (a, "animation.mp4", Some("video/mp4"))
        } else if let Some(a) = m.get("audio") {
            (a, "audio.mp3", Some("audio/mpeg"))
        } else if let Some(v) = m.get("voice") {
            (v, "voice.ogg", Some("audio/ogg"))
        } else if let Some(v) = m.get("video_note") {
            (v, "video_note.mp4", Some("video/mp4"))
        } else if let Some(s) = m.get("sticker") {
            (s, "sticker.webp", Some("image/webp"))
        } else {
            return None;
        };
    let id = obj.get("file_id")?.as_str()?.to_owned();
    let name = obj
        .get("file_name")
        .and_then(Value::as_str)
        .unwrap_or(default_name)
        .to_owned();
    let mime = obj
        .get("mime_type")
        .and_then(Value::as_str)
        .or(default_mime)
        .map(str::to_owned);
    let size = obj.get("file_size").and_then(Value::as_u64);
    Some((id, name, mime, size))
}

fn emojis(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("emoji"))
        .filter_map(|r| r.get("emoji").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

impl Reader<'_> {
    /// Reads one update.
    pub fn read(&self, update: &Value) -> Parsed {
        let update_id = update.get("update_id").and_then(Value::as_i64).unwrap_or(0);
        for key in ["message", "channel_post"] {
            if let Some(m) = update.get(key) {
                return self.message(m, update_id);
            }
        }
        for key in ["edited_message", "edited_channel_post"] {
            if let Some(m) = update.get(key) {
                return self.edit(m);
            }
        }
        if let Some(r) = update.get("message_reaction") {
            return self.reaction(r, update_id);
        }
        Parsed {
            skipped: Some("update kind not bridged"),
            ..Parsed::default()
        }
    }

    fn skip(why: &'static str) -> Parsed {
        Parsed {
            skipped: Some(why),
            ..Parsed::default()
        }
    }

    fn sender_of(&self, m: &Value) -> Option<Sender> {
        m.get("from")
            .and_then(user_sender)
            .or_else(|| m.get("sender_chat").and_then(chat_sender))
    }

    fn content(&self, m: &Value) -> Content {
        let text = m
            .get("text")
            .or_else(|| m.get("caption"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut content = text_content(text);
        if let Some((id, name, mime, size)) = file_of(m) {
            let link = match size {
                Some(s) if s > self.max_bytes => None,
                _ => self.links.and_then(|l| l.link(&id, &name)),
            };
            content.add_file(link, name, mime, size);
        }
        content
    }

    fn message(&self, m: &Value, update_id: i64) -> Parsed {
        let Some(chat) = m
            .get("chat")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_i64)
        else {
            return Self::skip("message without chat");
        };
        if let Some(to) = m.get("migrate_to_chat_id").and_then(Value::as_i64) {
            return Parsed {
                migration: Some(Migration { from: chat, to }),
                ..Parsed::default()
            };
        }
        if let Some(from) = m.get("migrate_from_chat_id").and_then(Value::as_i64) {
            return Parsed {
                migration: Some(Migration { from, to: chat }),
                ..Parsed::default()
            };
        }
        let Some(message_id) = m.get("message_id").and_then(Value::as_i64) else {
            return Self::skip("message without message_id");
        };
        let room = (self.room_of)(chat);
        let at = Timestamp::from_secs(m.get("date").and_then(Value::as_u64).unwrap_or(0));
        let Some(sender) = self.sender_of(m) else {
            return Self::skip("message without sender");
        };
        if sender.id.as_str() == self.bot_id.to_string() {
            return Self::skip("our own message");
        }
        let membership = |who: &Value, change, i: usize| {
            let mut e = Event::new(
                room.as_str(),
                user_sender(who)?,
                EventKind::Membership(change),
            )
            .with_remote_id(format!("u{update_id}:{i}"));
            e.at = at;
            Some(e)
        };
        if let Some(members) = m.get("new_chat_members").and_then(Value::as_array) {
            let events = members
                .iter()
                .enumerate()
                .filter(|(_, u)| u.get("id").and_then(Value::as_i64) != Some(self.bot_id))
                .filter_map(|(i, u)| membership(u, MembershipChange::Join, i))
                .collect();
            return Parsed {
                events,
                ..Parsed::default()
            };
        }
        if let Some(left) = m.get("left_chat_member") {
            let kicked = left.get("id") != m.get("from").and_then(|f| f.get("id"));
            let change = if kicked {
                MembershipChange::Kick
            } else {
                MembershipChange::Leave
            };
            return Parsed {
                events: membership(left, change, 0).into_iter().collect(),
                ..Parsed::default()
            };
        }
        let content = self.content(m);
        if content.text.as_str().is_empty() && content.attachments.is_empty() {
            return Self::skip("service message or unsupported content");
        }
        let mut e = Event::new(room.as_str(), sender, EventKind::Message(content))
            .with_remote_id(message_id.to_string());
        e.at = at;
        let topic = (m.get("is_topic_message").and_then(Value::as_bool) == Some(true))
            .then(|| m.get("message_thread_id").and_then(Value::as_i64))
            .flatten();
        e.thread_root = topic.map(|t| t.to_string().into());
        e.reply_to = m
            .get("reply_to_message")
            .and_then(|r| r.get("message_id"))
            .and_then(Value::as_i64)
            // In a topic, a message that answers nothing "replies" to the topic's first message.
            .filter(|r| Some(*r) != topic)
            .map(|r| r.to_string().into());
        Parsed {
            events: vec![e],
            ..Parsed::default()
        }
    }

    fn edit(&self, m: &Value) -> Parsed {
        let (Some(chat), Some(message_id)) = (
            m.get("chat")
                .and_then(|c| c.get("id"))
                .and_then(Value::as_i64),
            m.get("message_id").and_then(Value::as_i64),
        ) else {
            return Self::skip("edit without chat or message_id");
        };
        let Some(sender) = self.sender_of(m) else {
            return Self::skip("edit without sender");
        };
        let edit_date = m.get("edit_date").and_then(Value::as_u64).unwrap_or(0);
        let mut e = Event::new(
            (self.room_of)(chat),
            sender,
            EventKind::Edit {
                target: message_id.to_string().into(),
                content: self.content(m),
            },
        )
        .with_remote_id(format!("edit:{message_id}:{edit_date}"));
        e.at = Timestamp::from_secs(edit_date);
        Parsed {
            events: vec![e],
            ..Parsed::default()
        }
    }

    fn reaction(&self, r: &Value, update_id: i64) -> Parsed {
        let (Some(chat), Some(message_id)) = (
            r.get("chat")
                .and_then(|c| c.get("id"))
                .and_then(Value::as_i64),
            r.get("message_id").and_then(Value::as_i64),
        ) else {
            return Self::skip("reaction without chat or message_id");
        };
        let Some(sender) = r
            .get("user")
            .and_then(user_sender)
            .or_else(|| r.get("actor_chat").and_then(chat_sender))
        else {
            return Self::skip("anonymous reaction");
        };
        let old = emojis(r.get("old_reaction"));
        let new = emojis(r.get("new_reaction"));
        let at = Timestamp::from_secs(r.get("date").and_then(Value::as_u64).unwrap_or(0));
        let room = (self.room_of)(chat);
        let mut events = Vec::new();
        let changes = old
            .iter()
            .filter(|k| !new.contains(k))
            .map(|k| (k, true))
            .chain(new.iter().filter(|k| !old.contains(k)).map(|k| (k, false)));
        for (i, (key, removed)) in changes.enumerate() {
            let mut e = Event::new(
                room.as_str(),
                sender.clone(),
                EventKind::Reaction {
                    target: message_id.to_string().into(),
                    key: Text::new(key.as_str()),
                    removed,
                },
            )
            .with_remote_id(format!("u{update_id}:{i}"));
            e.at = at;
            events.push(e);
        }
        Parsed {
            events,
            ..Parsed::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reader() -> Reader<'static> {
        Reader {
            bot_id: 999,
            room_of: &|id| {
                if id == -1002 {
                    "-1".to_owned()
                } else {
                    id.to_string()
                }
            },
            links: None,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_topic_message_is_threaded_and_only_a_real_reply_is_a_reply() {
        let r = reader();
        let base = json!({"update_id": 10, "message": {"message_id": 50, "date": 1700000000,
            "chat": {"id": -1002, "type": "supergroup", "is_forum": true},
            "from": {"id": 7, "is_bot": false, "first_name": "Ada", "last_name": "L"},
            "message_thread_id": 40, "is_topic_message": true,
            "reply_to_message": {"message_id": 40, "date": 1, "chat": {"id": -1002, "type": "supergroup"}},
            "text": "in the topic"}});
        let p = r.read(&base);
        let e = &p.events[0];
        assert_eq!(
            e.room.as_str(),
            "-1",
            "a migrated supergroup keeps its configured name"
        );
        assert_eq!(e.thread_root.as_ref().map(|t| t.as_str()), Some("40"));
        assert_eq!(e.reply_to, None);
        assert_eq!(e.sender.display_name.as_deref(), Some("Ada L"));
        assert_eq!(e.remote_id.as_ref().map(|t| t.as_str()), Some("50"));
        let mut reply = base.clone();
        reply["message"]["reply_to_message"]["message_id"] = json!(45);
        assert_eq!(
            r.read(&reply).events[0]
                .reply_to
                .as_ref()
                .map(|t| t.as_str()),
            Some("45")
        );
    }

    #[test]
    fn a_date_past_the_end_of_time_is_no_panic() {
        // Found by the fuzzer: seconds times 1000 overflowed.
        let p = reader().read(&json!({"update_id": 1, "message": {"message_id": 5,
            "date": 666666444444444441u64, "chat": {"id": 7}, "from": {"id": 8, "first_name": "A"},
            "text": "x"}}));
        assert_eq!(p.events[0].at, Timestamp(u64::MAX));
        let e = reader().read(&json!({"update_id": 2, "edited_message": {"message_id": 5,
            "edit_date": u64::MAX, "chat": {"id": 7}, "from": {"id": 8, "first_name": "A"}, "text": "y"}}));
        assert_eq!(e.events[0].at, Timestamp(u64::MAX));
    }

    #[test]
    fn reactions_are_the_difference_of_the_lists() {
        let p = reader().read(&json!({"update_id": 11, "message_reaction": {
            "chat": {"id": 5, "type": "group"}, "message_id": 3, "date": 1700000001,
            "user": {"id": 7, "is_bot": false, "first_name": "Ada"},
            "old_reaction": [{"type": "emoji", "emoji": "👍"}],
            "new_reaction": [{"type": "emoji", "emoji": "🔥"}, {"type": "custom_emoji", "custom_emoji_id": "1"}]}}));
        let got: Vec<(String, bool)> = p
            .events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Reaction { key, removed, .. } => (key.as_str().to_owned(), *removed),
                _ => panic!("not a reaction"),
            })
            .collect();
        assert_eq!(got, vec![("👍".to_owned(), true), ("🔥".to_owned(), false)]);
    }

    #[test]
    fn migrations_memberships_and_files_without_links() {
        let r = reader();
        let m = r.read(
            &json!({"update_id": 12, "message": {"message_id": 9, "date": 1,
            "chat": {"id": -1, "type": "group"}, "from": {"id": 7, "first_name": "A"},
            "migrate_to_chat_id": -1002}}),
        );
        assert_eq!(
            m.migration,
            Some(Migration {
                from: -1,
                to: -1002
            })
        );
        assert!(m.events.is_empty());
        let j = r.read(
            &json!({"update_id": 13, "message": {"message_id": 10, "date": 1,
            "chat": {"id": -1, "type": "group"}, "from": {"id": 7, "first_name": "A"},
            "new_chat_members": [{"id": 8, "first_name": "B"}, {"id": 999, "first_name": "bot"}]}}),
        );
        assert_eq!(j.events.len(), 1);
        assert_eq!(
            j.events[0].kind,
            EventKind::Membership(MembershipChange::Join)
        );
        let f = r.read(
            &json!({"update_id": 14, "message": {"message_id": 11, "date": 1,
            "chat": {"id": 7, "type": "private"}, "from": {"id": 7, "first_name": "A"},
            "photo": [{"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
                      {"file_id": "big", "file_unique_id": "b", "width": 800, "height": 800}],
            "caption": "look"}}),
        );
        assert_eq!(
            f.events[0].content().unwrap().text.as_str(),
            "look [photo.jpg]"
        );
        let own = r.read(&json!({"update_id": 15, "message": {"message_id": 12, "date": 1,
            "chat": {"id": 7, "type": "private"}, "from": {"id": 999, "is_bot": true, "first_name": "bot"},
            "text": "echo"}}));
        assert!(own.events.is_empty());
    }
}

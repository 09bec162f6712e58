//! Webhook bodies to events. The envelope (`object`, `entry[]`) must be what this kind of account
//! receives, or the whole body is refused before anything is emitted; items inside that this
//! bridge does not carry (locations aside, contacts cards, buttons, postbacks…) are skipped and
//! counted. Entries for another phone number, Page or Instagram account (one Meta app can serve
//! several) are never emitted: a message for another inbox must not enter this one.

use crate::kind::Kind;
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{Attachment, Content, Event, EventKind, Sender, Text, Timestamp};
use serde_json::Value;

/// A delivery status of a message we sent (WhatsApp `statuses[]`, Messenger/Instagram
/// `delivery` and `read`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The message's id; Messenger's `read` has none and names the conversation instead.
    pub message_id: Option<String>,
    /// The person (room) it went to.
    pub recipient: String,
    /// `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    /// When, ms since the epoch.
    pub at: u64,
    /// For `failed`: Meta's error code.
    pub error_code: Option<i64>,
}

/// What one webhook body holds.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events to emit, in order.
    pub events: Vec<Item>,
    /// Delivery statuses to record.
    pub statuses: Vec<Status>,
    /// Entries or changes for another phone number, Page or account: dropped.
    pub foreign: usize,
    /// Items this bridge does not carry, by content-free name.
    pub skipped: Vec<&'static str>,
}

/// One thing to emit.
#[derive(Debug)]
pub enum Item {
    /// A message, edit or delete.
    Event(Event),
    /// A reaction (the sink tracks each person's reaction per message).
    Reaction(Event),
}

/// Why a body was refused; names a field, never a value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Turns webhook bodies of one account into events.
pub struct Parser<'a> {
    /// The account's network.
    pub kind: Kind,
    /// The account's phone number, Page or Instagram account id.
    pub id: &'a str,
    /// Signed links for files that need the token, when `media_public_url` is set.
    pub links: Option<&'a SignedLinks>,
}

fn text_content(text: &str) -> Content {
    match text.strip_prefix("/me ") {
        Some(rest) => Content::emote(rest),
        None => Content::plain(text),
    }
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn id_at(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An emoji for Messenger's reaction names, when the event carries no `emoji`.
fn reaction_emoji(name: &str) -> &str {
    match name {
        "smile" => "😆",
        "angry" => "😠",
        "sad" => "😢",
        "wow" => "😮",
        "love" => "❤️",
        "like" => "👍",
        other => other,
    }
}

impl Parser<'_> {
    /// Parses a whole body, or refuses it.
    pub fn parse(&self, body: &[u8]) -> Result<Batch, Malformed> {
        let v: Value =
            serde_json::from_slice(body).map_err(|_| Malformed("body is not JSON".into()))?;
        let object = str_at(&v, "object").ok_or_else(|| Malformed("no \"object\"".into()))?;
        if object != self.kind.object() {
            return Err(Malformed(format!(
                "\"object\" is not \"{}\"",
                self.kind.object()
            )));
        }
        let entries = v
            .get("entry")
            .and_then(Value::as_array)
            .ok_or_else(|| Malformed("no \"entry\" list".into()))?;
        let mut batch = Batch::default();
        for entry in entries {
            let entry_id =
                id_at(entry, "id").ok_or_else(|| Malformed("an entry has no \"id\"".into()))?;
            match self.kind {
                Kind::WhatsApp => {
                    let changes = entry
                        .get("changes")
                        .and_then(Value::as_array)
                        .ok_or_else(|| Malformed("an entry has no \"changes\" list".into()))?;
                    for change in changes {
                        self.whatsapp_change(change, &mut batch)?;
                    }
                }
                Kind::Messenger | Kind::Instagram => {
                    if entry_id != self.id {
                        batch.foreign += 1;
                        continue;
                    }
                    let Some(messaging) = entry.get("messaging").and_then(Value::as_array) else {
                        // `changes` (feed, comments…) and `standby` are not messages.
                        batch.skipped.push("entry without messaging");
                        continue;
                    };
                    for item in messaging {
                        self.messaging_item(item, &mut batch);
                    }
                }
            }
        }
        Ok(batch)
    }

    fn whatsapp_change(&self, change: &Value, batch: &mut Batch) -> Result<(), Malformed> {
        if str_at(change, "field") != Some("messages") {
            batch.skipped.push("change other than messages");
            return Ok(());
        }
        let value = change
            .get("value")
            .ok_or_else(|| Malformed("a change has no \"value\"".into()))?;
        let phone = value
            .get("metadata")
            .and_then(|m| id_at(m, "phone_number_id"))
            .ok_or_else(|| Malformed("a change has no metadata.phone_number_id".into()))?;
        if phone != self.id {
            batch.foreign += 1;
            return Ok(());
        }
        let names: Vec<(String, String)> = value
            .get("contacts")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        Some((
                            id_at(c, "wa_id")?,
                            c.get("profile").and_then(|p| str_at(p, "name"))?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for m in value
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match self.whatsapp_message(m, &names) {
                Ok(item) => batch.events.push(item),
                Err(skip) => batch.skipped.push(skip),
            }
        }
        for s in value
            .get("statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(id), Some(status), Some(recipient)) = (
                id_at(s, "id"),
                str_at(s, "status"),
                id_at(s, "recipient_id"),
            ) else {
                batch.skipped.push("status without id");
                continue;
            };
            batch.statuses.push(Status {
                message_id: Some(id),
                recipient,
                status: status.chars().take(16).collect(),
                at: Timestamp::from_secs(seconds(s.get("timestamp"))).0,
                error_code: s
                    .get("errors")
                    .and_then(Value::as_array)
                    .and_then(|e| e.first())
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_i64),
            });
        }
        Ok(())
    }

    fn whatsapp_message(
        &self,
        m: &Value,
        names: &[(String, String)],
    ) -> Result<Item, &'static str> {
        let id = id_at(m, "id").ok_or("message without id")?;
        let from = id_at(m, "from").ok_or("message without from")?;
        let kind = str_at(m, "type").ok_or("message without type")?;
        let mut sender = Sender::new(from.as_str());
        sender.display_name = names
            .iter()
            .find(|(wa, _)| *wa == from)
            .map(|(_, n)| n.clone());
        let at = Timestamp::from_secs(seconds(m.get("timestamp")));
        let reply_to = m.get("context").and_then(|c| id_at(c, "id"));
        let content = match kind {
            "text" => {
                let body = m
                    .get("text")
                    .and_then(|t| str_at(t, "body"))
                    .ok_or("text without body")?;
                text_content(body)
            }
            "image" | "video" | "audio" | "document" | "sticker" => {
                let media = m.get(kind).ok_or("media without its object")?;
                let media_id = id_at(media, "id").ok_or("media without id")?;
                let mime = str_at(media, "mime_type").map(str::to_owned);
                let caption = str_at(media, "caption").unwrap_or("");
                let name = str_at(media, "filename")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{kind}{}", extension(mime.as_deref())));
                let mut content = text_content(caption);
                let link = self.links.and_then(|l| l.link(&media_id, &name));
                content.add_file(link, name, mime, None);
                content
            }
            "location" => {
                let loc = m.get("location").ok_or("location without its object")?;
                let lat = loc
                    .get("latitude")
                    .and_then(Value::as_f64)
                    .ok_or("location without latitude")?;
                let lon = loc
                    .get("longitude")
                    .and_then(Value::as_f64)
                    .ok_or("location without longitude")?;
                let name = str_at(loc, "name").unwrap_or("location");
                Content::plain(format!(
                    "📍 {name} https://www.openstreetmap.org/?mlat={lat}&mlon={lon}"
                ))
            }
            "reaction" => {
                let r = m.get("reaction").ok_or("reaction without its object")?;
                let target = id_at(r, "message_id").ok_or("reaction without message_id")?;
                let emoji = str_at(r, "emoji").unwrap_or("");
                let mut event = Event::new(
                    from.as_str(),
                    sender,
                    EventKind::Reaction {
                        target: target.into(),
                        key: Text::new(emoji),
                        removed: emoji.is_empty(),
                    },
                )
                .with_remote_id(id);
                event.at = at;
                return Ok(Item::Reaction(event));
            }
            "contacts" => return Err("contacts card"),
            "interactive" | "button" => return Err("button reply"),
            "order" => return Err("order"),
            "system" => return Err("system message"),
            _ => return Err("unsupported message type"),
        };
        let mut event =
            Event::new(from.as_str(), sender, EventKind::Message(content)).with_remote_id(id);
        event.at = at;
        event.reply_to = reply_to.map(Into::into);
        Ok(Item::Event(event))
    }

    fn messaging_item(&self, item: &Value, batch: &mut Batch) {
        let (Some(sender), Some(recipient)) = (
            item.get("sender").and_then(|s| id_at(s, "id")),
            item.get("recipient").and_then(|r| id_at(r, "id")),
        ) else {
            batch
                .skipped
                .push("messaging item without sender or recipient");
            return;
        };
        let at = Timestamp(item.get("timestamp").and_then(Value::as_u64).unwrap_or(0));
        if let Some(message) = item.get("message") {
            if message.get("is_echo").and_then(Value::as_bool) == Some(true) {
                // Our own sends (and the Page's other senders) coming back.
                batch.skipped.push("echo");
                return;
            }
            if recipient != self.id {
                batch.foreign += 1;
                return;
            }
            let Some(mid) = id_at(message, "mid") else {
                batch.skipped.push("message without mid");
                return;
            };
            if message.get("is_deleted").and_then(Value::as_bool) == Some(true) {
                let mut event = Event::new(
                    sender.as_str(),
                    Sender::new(sender.as_str()),
                    EventKind::Delete {
                        target: mid.clone().into(),
                    },
                )
                .with_remote_id(format!("delete:{mid}"));
                event.at = at;
                batch.events.push(Item::Event(event));
                return;
            }
            let mut content = text_content(str_at(message, "text").unwrap_or(""));
            for a in message
                .get("attachments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kind = str_at(a, "type").unwrap_or("file");
                match a.get("payload").and_then(|p| str_at(p, "url")) {
                    Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                        content.attachments.push(Attachment {
                            name: Text::new(kind),
                            mime: None,
                            size: None,
                            url: Text::new(url),
                        })
                    }
                    _ => batch.skipped.push("attachment without a link"),
                }
            }
            if content.text.as_str().is_empty() && content.attachments.is_empty() {
                batch.skipped.push("message without text or files");
                return;
            }
            let mut event = Event::new(
                sender.as_str(),
                Sender::new(sender.as_str()),
                EventKind::Message(content),
            )
            .with_remote_id(mid);
            event.at = at;
            event.reply_to = message
                .get("reply_to")
                .and_then(|r| id_at(r, "mid"))
                .map(Into::into);
            batch.events.push(Item::Event(event));
        } else if let Some(edit) = item.get("message_edit") {
            if recipient != self.id {
                batch.foreign += 1;
                return;
            }
            let (Some(mid), Some(text)) = (id_at(edit, "mid"), str_at(edit, "text")) else {
                batch.skipped.push("edit without mid or text");
                return;
            };
            let n = edit.get("num_edit").and_then(Value::as_u64).unwrap_or(0);
            let mut event = Event::new(
                sender.as_str(),
                Sender::new(sender.as_str()),
                EventKind::Edit {
                    target: mid.clone().into(),
                    content: text_content(text),
                },
            )
            .with_remote_id(format!("edit:{mid}:{n}"));
            event.at = at;
            batch.events.push(Item::Event(event));
        } else if let Some(r) = item.get("reaction") {
            if recipient != self.id {
                batch.foreign += 1;
                return;
            }
            let Some(mid) = id_at(r, "mid") else {
                batch.skipped.push("reaction without mid");
                return;
            };
            let removed = str_at(r, "action") == Some("unreact");
            let key = str_at(r, "emoji")
                .or_else(|| str_at(r, "reaction").map(reaction_emoji))
                .unwrap_or("");
            let mut event = Event::new(
                sender.as_str(),
                Sender::new(sender.as_str()),
                EventKind::Reaction {
                    target: mid.clone().into(),
                    key: Text::new(if removed { "" } else { key }),
                    removed,
                },
            )
            .with_remote_id(format!(
                "reaction:{mid}:{sender}:{}:{}",
                at.0,
                if removed { "-" } else { "+" }
            ));
            event.at = at;
            batch.events.push(Item::Reaction(event));
        } else if let Some(d) = item.get("delivery") {
            let watermark = d.get("watermark").and_then(Value::as_u64).unwrap_or(at.0);
            for mid in d
                .get("mids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(mid) = mid.as_str() {
                    batch.statuses.push(Status {
                        message_id: Some(mid.to_owned()),
                        recipient: sender.clone(),
                        status: "delivered".into(),
                        at: watermark,
                        error_code: None,
                    });
                }
            }
        } else if let Some(r) = item.get("read") {
            batch.statuses.push(Status {
                message_id: id_at(r, "mid"),
                recipient: sender,
                status: "read".into(),
                at: r.get("watermark").and_then(Value::as_u64).unwrap_or(at.0),
                error_code: None,
            });
        } else {
            batch.skipped.push("postback, optin, referral or other");
        }
    }
}

fn seconds(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn extension(mime: Option<&str>) -> &'static str {
    match mime.map(|m| m.split(';').next().unwrap_or(m).trim()) {
        Some("image/jpeg") => ".jpg",
        Some("image/png") => ".png",
        Some("image/webp") => ".webp",
        Some("video/mp4") => ".mp4",
        Some("audio/ogg") => ".ogg",
        Some("audio/mpeg") => ".mp3",
        Some("application/pdf") => ".pdf",
        _ => "",
    }
}

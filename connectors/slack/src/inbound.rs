//! Events API payloads (from Socket Mode or an HTTP call) and history messages to events.
//!
//! Read as JSON values, field by field: a field the bridge does not need may be anything, a
//! missing one it needs drops that event (logged without content), never the connection.
//!
//! - A message's remote id is `conversation/ts`; a reply in a thread carries its thread's first
//!   message as `thread_root`.
//! - The bot's own messages (its `bot_id` or user) are never bridged back.
//! - Mentions `<@U…>`, `<#C…|name>`, `<!here>`, `<!subteam^…|@team>` become `@name`, `#name`,
//!   `@here` and `@team`; the text is the mrkdwn with links as `label (url)` and entities
//!   decoded, the formatted body its HTML. `/me` messages (`me_message`) are actions.
//! - `message_changed` is an edit (unless the text did not change: Slack also sends it for link
//!   previews), `message_deleted` a delete, `reaction_added`/`_removed` reactions (named emoji
//!   translated, others `:name:`).
//! - Files are offered through signed links of the daemon (`media_public_url`), since Slack's
//!   need the bot token; without it, they are named.

use crate::api::Api;
use crate::directory::Directory;
use passerelle_sdk::emoji;
use passerelle_sdk::markdown::{self, Flavor, slack_escape};
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{
    Content, EmitError, Emitter, Event, EventKind, Formatted, MessageKind, Sender, StateHandle,
    Text, Timestamp, html,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The most `<…>` tokens resolved in one message (the rest stay as written).
const MAX_TOKENS: usize = 500;
/// The most people looked up for one message's mentions.
const MAX_LOOKUPS: usize = 20;
/// The most characters of a message's text taken (Slack's own limit is 40,000).
const MAX_TEXT: usize = 40_000;

/// What one event of the Events API is, before names are looked up.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A new message in `conversation` (the message object).
    Message {
        /// Where.
        conversation: String,
        /// The message.
        message: Value,
    },
    /// `message_changed`.
    Edit {
        /// Where.
        conversation: String,
        /// The message as it is now.
        message: Value,
    },
    /// `message_deleted`.
    Delete {
        /// Where.
        conversation: String,
        /// The deleted message's `ts`.
        ts: String,
        /// Who wrote it, if Slack says.
        user: Option<String>,
        /// The bot that wrote it, if one did.
        bot_id: Option<String>,
    },
    /// `reaction_added` / `reaction_removed`.
    Reaction {
        /// Where.
        conversation: String,
        /// The message reacted to.
        ts: String,
        /// Who.
        user: String,
        /// Slack's name of the emoji.
        name: String,
        /// Taken back.
        removed: bool,
    },
    /// A person's profile changed (`user_change`, `user_profile_changed`).
    Profile(String),
    /// A channel got a name (`channel_rename`, `channel_created`).
    ChannelName(String, String),
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// A `ts` as Slack writes it: seconds, a dot, six digits.
pub fn valid_ts(ts: &str) -> bool {
    let Some((secs, micros)) = ts.split_once('.') else {
        return false;
    };
    (1..=12).contains(&secs.len())
        && micros.len() == 6
        && secs.bytes().all(|b| b.is_ascii_digit())
        && micros.bytes().all(|b| b.is_ascii_digit())
}

/// A conversation or user id as Slack writes them.
pub fn valid_id(id: &str) -> bool {
    (2..=24).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// The event of an `event_callback` payload (or a bare event), classified; `None` for what the
/// bridge does not carry.
pub fn classify(payload: &Value) -> Option<Incoming> {
    let event = match s(payload, "type") {
        Some("event_callback") => payload.get("event")?,
        _ => payload,
    };
    match s(event, "type")? {
        "message" => {
            let conversation = s(event, "channel").filter(|c| valid_id(c))?.to_owned();
            match s(event, "subtype") {
                None | Some("thread_broadcast" | "me_message" | "file_share" | "bot_message") => {
                    Some(Incoming::Message {
                        conversation,
                        message: event.clone(),
                    })
                }
                Some("message_changed") => Some(Incoming::Edit {
                    conversation,
                    message: event.get("message")?.clone(),
                }),
                Some("message_deleted") => Some(Incoming::Delete {
                    conversation,
                    ts: s(event, "deleted_ts").filter(|t| valid_ts(t))?.to_owned(),
                    user: event
                        .get("previous_message")
                        .and_then(|p| s(p, "user"))
                        .map(str::to_owned),
                    bot_id: event
                        .get("previous_message")
                        .and_then(|p| s(p, "bot_id"))
                        .map(str::to_owned),
                }),
                _ => None,
            }
        }
        kind @ ("reaction_added" | "reaction_removed") => {
            let item = event.get("item")?;
            if s(item, "type") != Some("message") {
                return None;
            }
            Some(Incoming::Reaction {
                conversation: s(item, "channel").filter(|c| valid_id(c))?.to_owned(),
                ts: s(item, "ts").filter(|t| valid_ts(t))?.to_owned(),
                user: s(event, "user").filter(|u| valid_id(u))?.to_owned(),
                name: s(event, "reaction")?.chars().take(100).collect(),
                removed: kind == "reaction_removed",
            })
        }
        "user_change" | "user_profile_changed" => {
            let user = event.get("user")?;
            let id = s(user, "id").or_else(|| user.as_str())?;
            Some(Incoming::Profile(id.to_owned()))
        }
        "channel_rename" | "channel_created" => {
            let c = event.get("channel")?;
            Some(Incoming::ChannelName(
                s(c, "id")?.to_owned(),
                s(c, "name")?.to_owned(),
            ))
        }
        _ => None,
    }
}

/// The user ids a text mentions (`<@U…>`), in order, once each.
pub fn mentioned_users(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("<@") {
        rest = &rest[at + 2..];
        let end = rest.find(['>', '|']).unwrap_or(rest.len()).min(24);
        let id = &rest[..end];
        if valid_id(id) && !out.iter().any(|o| o == id) {
            out.push(id.to_owned());
            if out.len() >= MAX_LOOKUPS {
                break;
            }
        }
    }
    out
}

/// Resolves Slack's `<…>` mention tokens in mrkdwn `text` to names (escaped, so they stay text);
/// links stay as they are.
pub fn resolve_mentions(
    text: &str,
    people: &HashMap<String, String>,
    channels: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut tokens = 0;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('>').filter(|e| *e <= 2048) else {
            out.push('<');
            rest = after;
            continue;
        };
        let inner = &after[..end];
        tokens += 1;
        let (id, label) = match inner.split_once('|') {
            Some((i, l)) => (i, Some(l)),
            None => (inner, None),
        };
        let replaced = if tokens > MAX_TOKENS {
            None
        } else if let Some(user) = id.strip_prefix('@').filter(|u| valid_id(u)) {
            let name = people
                .get(user)
                .cloned()
                .or_else(|| label.map(str::to_owned))
                .unwrap_or_else(|| user.to_owned());
            Some(format!("@{}", slack_escape(&name)))
        } else if let Some(channel) = id.strip_prefix('#').filter(|c| valid_id(c)) {
            let name = label
                .map(str::to_owned)
                .filter(|l| !l.is_empty())
                .or_else(|| channels(channel))
                .unwrap_or_else(|| channel.to_owned());
            Some(format!("#{}", slack_escape(&name)))
        } else if let Some(special) = id.strip_prefix('!') {
            match special {
                "here" | "channel" | "everyone" => Some(format!("@{special}")),
                _ => label.map(|l| {
                    if special.starts_with("subteam^") && !l.starts_with('@') {
                        format!("@{l}")
                    } else {
                        l.to_owned()
                    }
                }),
            }
        } else {
            None
        };
        match replaced {
            Some(r) => {
                out.push_str(&r);
                rest = &after[end + 1..];
            }
            None => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The plain text of resolved mrkdwn: links as `label (url)` (or the url), entities decoded.
pub fn plain_of(mrkdwn: &str) -> String {
    let mut out = String::with_capacity(mrkdwn.len());
    let mut rest = mrkdwn;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('>') {
            Some(end) => {
                let inner = &after[..end];
                match inner.split_once('|') {
                    Some((url, label)) if !label.is_empty() && label != url => {
                        out.push_str(&format!("{label} ({url})"));
                    }
                    Some((url, _)) => out.push_str(url),
                    None => out.push_str(inner),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Turns Slack's events into the bus's and hands them to the daemon.
pub struct Intake {
    /// The Web API (names, files).
    pub api: Api,
    /// The directory.
    pub dir: Arc<Directory>,
    /// To the daemon.
    pub emitter: Emitter,
    /// Signed links for files, when `media_public_url` is set.
    pub links: Option<SignedLinks>,
    /// Where the last message seen in each conversation is kept (for the catch-up).
    pub state: StateHandle,
}

/// The state key of a conversation's last message seen.
pub fn seen_key(conversation: &str) -> String {
    passerelle_sdk::state::key(&["seen", conversation])
}

impl Intake {
    /// Takes one payload: its events are emitted and stored before this returns (so Socket Mode
    /// acknowledges, or the HTTP call is answered 200, only then).
    pub async fn take(&self, payload: &Value) -> Result<(), EmitError> {
        let Some(incoming) = classify(payload) else {
            return Ok(());
        };
        self.take_incoming(incoming).await
    }

    /// Takes one classified event.
    pub async fn take_incoming(&self, incoming: Incoming) -> Result<(), EmitError> {
        let me = self.dir.me();
        match incoming {
            Incoming::Profile(user) => {
                self.dir.forget_person(&user);
                Ok(())
            }
            Incoming::ChannelName(id, name) => {
                self.dir.note_channel(&id, &name);
                Ok(())
            }
            Incoming::Message {
                conversation,
                message,
            } => {
                let Some(room) = self.dir.room_of(&conversation) else {
                    return Ok(());
                };
                if self.ours(&message, &me) || message.get("hidden") == Some(&Value::Bool(true)) {
                    return Ok(());
                }
                let Some(ts) = s(&message, "ts").filter(|t| valid_ts(t)) else {
                    tracing::info!(kind = "message", "Slack event without a valid ts dropped");
                    return Ok(());
                };
                let ts = ts.to_owned();
                let content = self.content(&message).await;
                let mut event = Event::new(
                    room,
                    self.sender(&message).await,
                    EventKind::Message(content),
                )
                .with_remote_id(format!("{conversation}/{ts}"));
                event.at = ts_time(&ts);
                if let Some(thread) = s(&message, "thread_ts").filter(|t| valid_ts(t) && *t != ts) {
                    event.thread_root = Some(format!("{conversation}/{thread}").into());
                }
                self.emitter.emit(event).await?;
                self.seen(&conversation, &ts).await;
                Ok(())
            }
            Incoming::Edit {
                conversation,
                message,
            } => {
                let Some(room) = self.dir.room_of(&conversation) else {
                    return Ok(());
                };
                if self.ours(&message, &me) {
                    return Ok(());
                }
                // Link previews and thread replies change the message without an `edited`.
                if message.get("edited").is_none() {
                    return Ok(());
                }
                let Some(ts) = s(&message, "ts").filter(|t| valid_ts(t)) else {
                    return Ok(());
                };
                let target = format!("{conversation}/{ts}");
                let content = self.content(&message).await;
                let event = Event::new(
                    room,
                    self.sender(&message).await,
                    EventKind::Edit {
                        target: target.into(),
                        content,
                    },
                );
                self.emitter.emit(event).await.map(|_| ())
            }
            Incoming::Delete {
                conversation,
                ts,
                user,
                bot_id,
            } => {
                let Some(room) = self.dir.room_of(&conversation) else {
                    return Ok(());
                };
                // Our own message deleted (by us, for the bus): nothing to carry back.
                let ours = (!me.bot.is_empty() && bot_id.as_deref() == Some(me.bot.as_str()))
                    || (!me.user.is_empty() && user.as_deref() == Some(me.user.as_str()));
                if ours {
                    return Ok(());
                }
                let sender = Sender::new(user.unwrap_or_else(|| "slack".into()));
                let event = Event::new(
                    room,
                    sender,
                    EventKind::Delete {
                        target: format!("{conversation}/{ts}").into(),
                    },
                );
                self.emitter.emit(event).await.map(|_| ())
            }
            Incoming::Reaction {
                conversation,
                ts,
                user,
                name,
                removed,
            } => {
                let Some(room) = self.dir.room_of(&conversation) else {
                    return Ok(());
                };
                if user == me.user {
                    return Ok(());
                }
                let sender = self.person_sender(&user).await;
                let event = Event::new(
                    room,
                    sender,
                    EventKind::Reaction {
                        target: format!("{conversation}/{ts}").into(),
                        key: Text::new(emoji::from_name(&name)),
                        removed,
                    },
                );
                self.emitter.emit(event).await.map(|_| ())
            }
        }
    }

    /// Whether a message is the bridge's own.
    fn ours(&self, message: &Value, me: &crate::directory::Me) -> bool {
        (!me.bot.is_empty() && s(message, "bot_id") == Some(me.bot.as_str()))
            || (!me.user.is_empty() && s(message, "user") == Some(me.user.as_str()))
    }

    async fn seen(&self, conversation: &str, ts: &str) {
        let key = seen_key(conversation);
        let newer = match self.state.get_text(&key).await {
            Ok(Some(old)) => ts_order(ts) > ts_order(&old),
            _ => true,
        };
        if newer && let Err(e) = self.state.put(&key, ts.as_bytes().to_vec()).await {
            tracing::warn!(error = %e, "could not keep the last Slack message seen");
        }
    }

    async fn person_sender(&self, user: &str) -> Sender {
        let mut sender = Sender::new(user.to_owned());
        if let Some(p) = self.dir.person(&self.api, user).await {
            sender.display_name = Some(p.name);
            sender.avatar_url = p.avatar;
        }
        sender
    }

    async fn sender(&self, message: &Value) -> Sender {
        if let Some(user) = s(message, "user").filter(|u| valid_id(u)) {
            return self.person_sender(user).await;
        }
        // An integration's message: its bot id, and the name it posted with.
        let id = s(message, "bot_id").unwrap_or("bot");
        let mut sender = Sender::new(id.chars().take(24).collect::<String>());
        sender.display_name = s(message, "username")
            .or_else(|| message.pointer("/bot_profile/name").and_then(Value::as_str))
            .map(|n| n.chars().filter(|c| !c.is_control()).take(80).collect());
        sender
    }

    async fn content(&self, message: &Value) -> Content {
        let raw: String = s(message, "text")
            .unwrap_or("")
            .chars()
            .take(MAX_TEXT)
            .collect();
        let mut people = HashMap::new();
        for user in mentioned_users(&raw) {
            if let Some(p) = self.dir.person(&self.api, &user).await {
                people.insert(user, p.name);
            }
        }
        let dir = self.dir.clone();
        let resolved = resolve_mentions(&raw, &people, &move |c| dir.channel_name(c));
        let mut content = content_of(&resolved, s(message, "subtype") == Some("me_message"));
        for f in message
            .get("files")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .take(20)
        {
            let Some(id) = s(f, "id").filter(|i| valid_id(i)) else {
                continue;
            };
            let name = s(f, "name")
                .unwrap_or("file")
                .chars()
                .take(200)
                .collect::<String>();
            let link = self.links.as_ref().and_then(|l| l.link(id, &name));
            content.add_file(
                link,
                name,
                s(f, "mimetype").map(str::to_owned),
                f.get("size").and_then(Value::as_u64),
            );
        }
        content
    }
}

/// The content of resolved mrkdwn.
pub fn content_of(resolved: &str, action: bool) -> Content {
    let formatted = markdown::to_html(resolved, Flavor::Slack);
    let mut content = if action {
        Content::emote(plain_of(resolved))
    } else {
        Content::plain(plain_of(resolved))
    };
    if html::has_markup(&formatted) {
        content.formatted = Some(Formatted::Html(Text::new(formatted)));
    }
    if action {
        content.kind = MessageKind::Emote;
    }
    content
}

/// A `ts` as a number that orders them (seconds and microseconds).
pub fn ts_order(ts: &str) -> u128 {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    secs.parse::<u128>().unwrap_or(0) * 1_000_000 + micros.parse::<u128>().unwrap_or(0)
}

/// When a message was written, from its `ts`.
pub fn ts_time(ts: &str) -> Timestamp {
    Timestamp((ts_order(ts) / 1000).min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_classified_field_by_field() {
        let m = json!({"type": "event_callback", "event": {"type": "message", "channel": "C1AB", "user": "U1", "text": "hi", "ts": "1700000000.000100"}});
        assert!(matches!(classify(&m), Some(Incoming::Message { .. })));
        let d = json!({"type": "message", "subtype": "message_deleted", "channel": "C1AB", "deleted_ts": "1700000000.000100", "previous_message": {"user": "U1"}});
        assert_eq!(
            classify(&d),
            Some(Incoming::Delete {
                conversation: "C1AB".into(),
                ts: "1700000000.000100".into(),
                user: Some("U1".into()),
                bot_id: None,
            })
        );
        let r = json!({"type": "reaction_added", "user": "U1", "reaction": "thumbsup", "item": {"type": "message", "channel": "C1AB", "ts": "1700000000.000100"}});
        assert!(matches!(
            classify(&r),
            Some(Incoming::Reaction { removed: false, .. })
        ));
        for junk in [
            json!({"type": "message", "channel": "c1ab"}),
            json!({"type": "message", "subtype": "channel_join", "channel": "C1AB"}),
            json!({"type": "reaction_added", "item": {"type": "file"}}),
            json!({"type": "message", "subtype": "message_deleted", "channel": "C1AB", "deleted_ts": "x"}),
            json!([1, 2]),
            json!("text"),
        ] {
            assert_eq!(classify(&junk), None, "{junk}");
        }
    }

    #[test]
    fn mentions_and_links_read_as_people_see_them() {
        let text = "<@U1> and <@U2|bob> in <#C9|general>: <!here> <!subteam^S1|@devs> see <https://example.org|the site> &amp; <https://x.org> &lt;3";
        assert_eq!(mentioned_users(text), ["U1", "U2"]);
        let people: HashMap<String, String> = [("U1".to_owned(), "Ann <admin>".to_owned())].into();
        let resolved = resolve_mentions(text, &people, &|_| None);
        assert_eq!(
            resolved,
            "@Ann &lt;admin&gt; and @bob in #general: @here @devs see <https://example.org|the site> &amp; <https://x.org> &lt;3"
        );
        assert_eq!(
            plain_of(&resolved),
            "@Ann <admin> and @bob in #general: @here @devs see the site (https://example.org) & https://x.org <3"
        );
        let c = content_of("*bold* <https://example.org|link>", false);
        assert_eq!(c.text.as_str(), "*bold* link (https://example.org)");
        assert_eq!(
            c.formatted,
            Some(Formatted::Html(Text::new(
                "<b>bold</b> <a href=\"https://example.org\">link</a>"
            )))
        );
    }

    #[test]
    fn ts_are_checked_and_ordered() {
        assert!(valid_ts("1700000000.000100"));
        assert!(!valid_ts("1700000000.1"));
        assert!(!valid_ts("17e9.000100"));
        assert!(ts_order("1700000000.000100") > ts_order("1699999999.999999"));
        assert_eq!(ts_time("1700000000.123456").0, 1_700_000_000_123);
    }
}

//! Gateway dispatches (and messages from a channel's history) to events.
//!
//! Read as JSON values, field by field: a field the bridge does not need may be anything, a
//! missing one it needs drops that event (counted in the log, without content), never the
//! connection. Bot messages and the messages of this bridge's own webhooks are not bridged.
//!
//! - A message's remote id is `channel/message`, the channel being where it lives (a thread's
//!   messages live in the thread). A message in a thread carries the thread's root as
//!   `thread_root` ([`crate::directory::Place`]).
//! - Mentions `<@id>`, `<#id>` and `<@&id>` become `@name` and `#name`; custom emoji
//!   `<:name:id>` become `:name:`. The text is Discord's Markdown source; the formatted body is
//!   its HTML. A message that is all `_…_` (what `/me` writes) is an action.
//! - Attachments are passed on as Discord's CDN links (public).

use crate::directory::Directory;
use crate::rest::snowflake;
use passerelle_sdk::markdown::{self, Flavor};
use passerelle_sdk::{
    Content, Event, EventKind, Formatted, MessageKind, Sender, Text, Timestamp, html,
};
use serde_json::Value;

/// Milliseconds from the Unix epoch to Discord's (2015-01-01).
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// The most `<…>` tokens resolved in one message (the rest stay as written).
const MAX_TOKENS: usize = 500;

/// What one dispatch gave.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The events, in order.
    pub events: Vec<Event>,
    /// A channel the dispatch came from that the directory does not know: look it up (once) and
    /// translate the dispatch again.
    pub unknown_channel: Option<u64>,
    /// Room channel and message id of a bridged message, to record as seen once stored.
    pub seen: Option<(u64, u64)>,
}

/// The time a snowflake was made.
pub fn snowflake_time(id: u64) -> Timestamp {
    Timestamp((id >> 22).saturating_add(DISCORD_EPOCH_MS))
}

/// A user's shown name: the guild nickname, else the global display name, else the username.
fn sender(author: &Value, member: Option<&Value>) -> Option<Sender> {
    let id = snowflake(author, "id")?;
    let mut s = Sender::new(id.to_string());
    let name = member
        .and_then(|m| m.get("nick"))
        .and_then(Value::as_str)
        .or_else(|| author.get("global_name").and_then(Value::as_str))
        .or_else(|| author.get("username").and_then(Value::as_str));
    s.display_name = name.map(|n| n.chars().take(100).collect());
    if let Some(hash) = author.get("avatar").and_then(Value::as_str)
        && !hash.is_empty()
        && hash.len() <= 64
        && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        s.avatar_url = Some(format!(
            "https://cdn.discordapp.com/avatars/{id}/{hash}.png"
        ));
    }
    Some(s)
}

fn mention_name(d: &Value, id: u64) -> Option<String> {
    let users = d.get("mentions")?.as_array()?;
    let user = users.iter().find(|u| snowflake(u, "id") == Some(id))?;
    let nick = user
        .get("member")
        .and_then(|m| m.get("nick"))
        .and_then(Value::as_str);
    nick.or_else(|| user.get("global_name").and_then(Value::as_str))
        .or_else(|| user.get("username").and_then(Value::as_str))
        .map(|n| n.chars().take(100).collect())
}

/// Resolves `<@id>`, `<@!id>`, `<#id>`, `<@&id>` and `<:name:id>` / `<a:name:id>` in `content`.
pub fn resolve_mentions(content: &str, d: &Value, dir: &Directory) -> String {
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    let mut tokens = 0;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('>').filter(|e| *e <= 120) else {
            out.push('<');
            rest = after;
            continue;
        };
        let inner = &after[..end];
        tokens += 1;
        let replaced = if tokens > MAX_TOKENS {
            None
        } else if let Some(id) = inner
            .strip_prefix("@!")
            .or_else(|| inner.strip_prefix('@').filter(|s| !s.starts_with('&')))
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(format!(
                "@{}",
                mention_name(d, id).unwrap_or_else(|| id.to_string())
            ))
        } else if let Some(id) = inner.strip_prefix('#').and_then(|s| s.parse::<u64>().ok()) {
            Some(format!(
                "#{}",
                dir.name_of(id).unwrap_or_else(|| id.to_string())
            ))
        } else if inner
            .strip_prefix("@&")
            .is_some_and(|s| s.parse::<u64>().is_ok())
        {
            Some("@role".to_owned())
        } else {
            let emoji = inner.strip_prefix("a:").or_else(|| inner.strip_prefix(':'));
            emoji
                .and_then(|e| e.split_once(':'))
                .and_then(|(name, id)| {
                    (!name.is_empty() && id.parse::<u64>().is_ok()).then(|| format!(":{name}:"))
                })
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

/// A message's content for the bus.
fn content_of(d: &Value, dir: &Directory) -> Content {
    let raw = d.get("content").and_then(Value::as_str).unwrap_or("");
    let text = resolve_mentions(raw, d, dir);
    let mut content = Content::plain(String::new());
    let inner = text
        .strip_prefix('_')
        .and_then(|t| t.strip_suffix('_'))
        .filter(|t| !t.is_empty() && !t.contains('_') && !t.contains('\n'));
    let shown = match inner {
        Some(action) => {
            content.kind = MessageKind::Emote;
            action.to_owned()
        }
        None => text,
    };
    let formatted = markdown::to_html(&shown, Flavor::Discord);
    if html::has_markup(&formatted) {
        content.formatted = Some(Formatted::Html(Text::new(formatted)));
    }
    content.text = Text::new(shown);
    if let Some(files) = d.get("attachments").and_then(Value::as_array) {
        for a in files.iter().take(10) {
            let (Some(url), Some(name)) = (
                a.get("url").and_then(Value::as_str),
                a.get("filename").and_then(Value::as_str),
            ) else {
                continue;
            };
            if !url.starts_with("https://") && !url.starts_with("http://") {
                continue;
            }
            content.add_file(
                Some(url.to_owned()),
                name.chars().take(200).collect(),
                a.get("content_type")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                a.get("size").and_then(Value::as_u64),
            );
        }
    }
    if let Some(stickers) = d.get("sticker_items").and_then(Value::as_array) {
        for s in stickers.iter().take(3) {
            if let Some(name) = s.get("name").and_then(Value::as_str) {
                content.add_file(None, format!("sticker: {name}"), None, None);
            }
        }
    }
    content
}

/// Whether a message is one to bridge: an ordinary message or a reply, from a person (or a
/// webhook that is not ours), not from this bot.
fn bridged(d: &Value, dir: &Directory) -> bool {
    let kind = d.get("type").and_then(Value::as_u64).unwrap_or(0);
    if kind != 0 && kind != 19 {
        return false;
    }
    let Some(author) = d.get("author") else {
        return false;
    };
    if snowflake(author, "id").is_some_and(|id| id == dir.me()) {
        return false;
    }
    match snowflake(d, "webhook_id") {
        Some(hook) => !dir.is_ours(hook, snowflake(d, "application_id")),
        None => author.get("bot").and_then(Value::as_bool) != Some(true),
    }
}

/// A message object (`MESSAGE_CREATE`'s `d`, or one from a channel's history) as an event.
pub fn message(d: &Value, dir: &Directory) -> Outcome {
    let mut out = Outcome::default();
    let (Some(channel), Some(id)) = (snowflake(d, "channel_id"), snowflake(d, "id")) else {
        tracing::debug!("a message without its ids was skipped");
        return out;
    };
    if let Some(guild) = snowflake(d, "guild_id") {
        dir.learn_guild(channel, guild);
    }
    if !bridged(d, dir) {
        return out;
    }
    let Some(place) = dir.place(channel) else {
        out.unknown_channel = (!dir.looked_up(channel)).then_some(channel);
        return out;
    };
    let Some(from) = d.get("author").and_then(|a| sender(a, d.get("member"))) else {
        return out;
    };
    let mut event = Event::new(
        place.room.clone(),
        from,
        EventKind::Message(content_of(d, dir)),
    )
    .with_remote_id(format!("{channel}/{id}"));
    event.at = snowflake_time(id);
    if let Some(reference) = d.get("message_reference")
        && d.get("type").and_then(Value::as_u64) == Some(19)
        && let Some(target) = snowflake(reference, "message_id")
    {
        let in_channel = snowflake(reference, "channel_id").unwrap_or(channel);
        event.reply_to = Some(format!("{in_channel}/{target}").into());
    }
    event.thread_root = place.thread_root.clone().map(Into::into);
    if place.thread_root.is_none() {
        out.seen = Some((place.channel, id));
    }
    out.events.push(event);
    out
}

fn edit(d: &Value, dir: &Directory) -> Outcome {
    let mut out = Outcome::default();
    let (Some(channel), Some(id)) = (snowflake(d, "channel_id"), snowflake(d, "id")) else {
        return out;
    };
    // Embeds being unfurled update a message too; only a new text is an edit.
    let Some(edited) = d.get("edited_timestamp").and_then(Value::as_str) else {
        return out;
    };
    if d.get("content").is_none() || !bridged(d, dir) {
        return out;
    }
    let Some(place) = dir.place(channel) else {
        out.unknown_channel = (!dir.looked_up(channel)).then_some(channel);
        return out;
    };
    let Some(from) = d.get("author").and_then(|a| sender(a, d.get("member"))) else {
        return out;
    };
    let target = format!("{channel}/{id}");
    let stamp: String = edited.chars().take(40).collect();
    let mut event = Event::new(
        place.room,
        from,
        EventKind::Edit {
            target: target.clone().into(),
            content: content_of(d, dir),
        },
    )
    .with_remote_id(format!("edit:{target}:{stamp}"));
    event.thread_root = place.thread_root.map(Into::into);
    out.events.push(event);
    out
}

fn deletes(d: &Value, dir: &Directory, ids: Vec<u64>) -> Outcome {
    let mut out = Outcome::default();
    let Some(channel) = snowflake(d, "channel_id") else {
        return out;
    };
    let Some(place) = dir.place(channel) else {
        out.unknown_channel = (!dir.looked_up(channel)).then_some(channel);
        return out;
    };
    for id in ids.into_iter().take(100) {
        let mut event = Event::new(
            place.room.clone(),
            Sender::new("discord"),
            EventKind::Delete {
                target: format!("{channel}/{id}").into(),
            },
        );
        event.thread_root = place.thread_root.clone().map(Into::into);
        out.events.push(event);
    }
    out
}

fn reaction(d: &Value, dir: &Directory, removed: bool) -> Outcome {
    let mut out = Outcome::default();
    let (Some(channel), Some(message), Some(user)) = (
        snowflake(d, "channel_id"),
        snowflake(d, "message_id"),
        snowflake(d, "user_id"),
    ) else {
        return out;
    };
    if user == dir.me() {
        return out;
    }
    if d.get("member")
        .and_then(|m| m.get("user"))
        .and_then(|u| u.get("bot"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return out;
    }
    let Some(emoji) = d.get("emoji") else {
        return out;
    };
    let Some(name) = emoji
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return out;
    };
    // A custom emoji has an id; elsewhere it is its name.
    let key = if emoji.get("id").is_some_and(|i| !i.is_null()) {
        format!(":{}:", name.chars().take(32).collect::<String>())
    } else {
        name.chars().take(16).collect()
    };
    let Some(place) = dir.place(channel) else {
        out.unknown_channel = (!dir.looked_up(channel)).then_some(channel);
        return out;
    };
    let mut from = Sender::new(user.to_string());
    if let Some(member) = d.get("member")
        && let Some(author) = member.get("user")
        && let Some(s) = sender(author, Some(member))
    {
        from = s;
    }
    let mut event = Event::new(
        place.room,
        from,
        EventKind::Reaction {
            target: format!("{channel}/{message}").into(),
            key: Text::new(key),
            removed,
        },
    );
    event.thread_root = place.thread_root.map(Into::into);
    out.events.push(event);
    out
}

/// A dispatch (`t`, `d`) as events; channel and thread dispatches only teach the directory.
pub fn dispatch(t: &str, d: &Value, dir: &Directory) -> Outcome {
    match t {
        "MESSAGE_CREATE" => message(d, dir),
        "MESSAGE_UPDATE" => edit(d, dir),
        "MESSAGE_DELETE" => match snowflake(d, "id") {
            Some(id) => deletes(d, dir, vec![id]),
            None => Outcome::default(),
        },
        "MESSAGE_DELETE_BULK" => {
            let ids = d
                .get("ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str()?.parse().ok())
                        .collect::<Vec<u64>>()
                })
                .unwrap_or_default();
            deletes(d, dir, ids)
        }
        "MESSAGE_REACTION_ADD" => reaction(d, dir, false),
        "MESSAGE_REACTION_REMOVE" => reaction(d, dir, true),
        "GUILD_CREATE" => {
            let guild = snowflake(d, "id");
            if let (Some(g), Some(name)) = (guild, d.get("name").and_then(Value::as_str)) {
                dir.learn_guild_name(g, name);
            }
            for list in ["channels", "threads"] {
                for c in d
                    .get(list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .take(10_000)
                {
                    // The guild first: a `#name` room is bound only in its guild.
                    if let (Some(g), Some(id)) = (guild, snowflake(c, "id")) {
                        dir.learn_guild(id, g);
                    }
                    dir.learn_channel(c);
                }
            }
            Outcome::default()
        }
        "CHANNEL_CREATE" | "CHANNEL_UPDATE" | "THREAD_CREATE" | "THREAD_UPDATE" => {
            dir.learn_channel(d);
            Outcome::default()
        }
        "THREAD_LIST_SYNC" => {
            for c in d
                .get("threads")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .take(10_000)
            {
                dir.learn_channel(c);
            }
            Outcome::default()
        }
        _ => Outcome::default(),
    }
}

/// The most bytes of one Gateway frame read (a large guild's `GUILD_CREATE` is a few MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// One Gateway text frame: its dispatch name and data, if it is a dispatch (`op` 0) of a
/// bounded size that parses. What is not is `None` (the shard handles the other opcodes).
pub fn frame(json: &str) -> Option<(String, Value)> {
    if json.len() > MAX_FRAME {
        tracing::warn!(bytes = json.len(), "an oversized Gateway frame was skipped");
        return None;
    }
    let mut v: Value = serde_json::from_str(json).ok()?;
    if v.get("op").and_then(Value::as_u64) != Some(0) {
        return None;
    }
    let t = v.get("t")?.as_str()?.chars().take(64).collect();
    Some((t, v.get_mut("d").map(Value::take).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir() -> Directory {
        let d = Directory::new(&["100".into(), "@7".into()]);
        d.set_me(1, 2);
        d.learn_channel(&json!({"id": "300", "type": 11, "parent_id": "100", "guild_id": "9"}));
        d.learn_channel(&json!({"id": "100", "type": 0, "guild_id": "9", "name": "general"}));
        d
    }

    fn msg(extra: Value) -> Value {
        let mut m = json!({"id": "5000000", "channel_id": "100", "guild_id": "9", "type": 0,
            "content": "hi <@55> in <#100> :) <:party:77>", "author": {"id": "55", "username": "ana", "global_name": "Ana", "avatar": "abc123"},
            "mentions": [{"id": "55", "username": "ana", "global_name": "Ana B"}], "attachments": []});
        if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        m
    }

    #[test]
    fn a_message_becomes_an_event_with_names_resolved() {
        let d = dir();
        let out = message(&msg(json!({})), &d);
        let e = &out.events[0];
        assert_eq!(e.room.as_str(), "100");
        assert_eq!(e.remote_id.as_ref().unwrap().as_str(), "100/5000000");
        assert_eq!(e.sender.display_name.as_deref(), Some("Ana"));
        assert_eq!(
            e.sender.avatar_url.as_deref(),
            Some("https://cdn.discordapp.com/avatars/55/abc123.png")
        );
        assert_eq!(
            e.content().unwrap().text.as_str(),
            "hi @Ana B in #general :) :party:"
        );
        assert_eq!(out.seen, Some((100, 5000000)));
    }

    #[test]
    fn bots_and_our_webhooks_are_not_bridged_but_other_webhooks_are() {
        let d = dir();
        d.add_ours(88);
        let bot = msg(json!({"author": {"id": "66", "username": "b", "bot": true}}));
        assert!(message(&bot, &d).events.is_empty());
        let ours =
            msg(json!({"webhook_id": "88", "author": {"id": "88", "username": "x", "bot": true}}));
        assert!(message(&ours, &d).events.is_empty());
        let ours_by_app = msg(
            json!({"webhook_id": "89", "application_id": "2", "author": {"id": "89", "username": "x", "bot": true}}),
        );
        assert!(message(&ours_by_app, &d).events.is_empty());
        let foreign =
            msg(json!({"webhook_id": "90", "author": {"id": "90", "username": "CI", "bot": true}}));
        assert_eq!(message(&foreign, &d).events.len(), 1);
        let me = msg(json!({"author": {"id": "1", "username": "me"}}));
        assert!(message(&me, &d).events.is_empty());
        let join = msg(json!({"type": 7}));
        assert!(message(&join, &d).events.is_empty());
    }

    #[test]
    fn threads_replies_and_unknown_channels() {
        let d = dir();
        let out = message(&msg(json!({"channel_id": "300"})), &d);
        let e = &out.events[0];
        assert_eq!(e.room.as_str(), "100");
        assert_eq!(e.thread_root.as_ref().unwrap().as_str(), "100/300");
        assert_eq!(out.seen, None);
        let reply = msg(
            json!({"type": 19, "message_reference": {"message_id": "4000", "channel_id": "100"}}),
        );
        assert_eq!(
            message(&reply, &d).events[0]
                .reply_to
                .as_ref()
                .unwrap()
                .as_str(),
            "100/4000"
        );
        let unknown = message(&msg(json!({"channel_id": "777"})), &d);
        assert!(unknown.events.is_empty());
        assert_eq!(unknown.unknown_channel, Some(777));
        d.mark_looked_up(777);
        assert_eq!(
            message(&msg(json!({"channel_id": "777"})), &d).unknown_channel,
            None
        );
    }

    #[test]
    fn reactions_edits_deletes_and_actions() {
        let d = dir();
        let r = dispatch(
            "MESSAGE_REACTION_ADD",
            &json!({"user_id": "55", "channel_id": "100", "message_id": "42", "emoji": {"id": "77", "name": "party"}}),
            &d,
        );
        match &r.events[0].kind {
            EventKind::Reaction {
                target,
                key,
                removed,
            } => {
                assert_eq!(
                    (target.as_str(), key.as_str(), *removed),
                    ("100/42", ":party:", false)
                );
            }
            other => panic!("{other:?}"),
        }
        let own = dispatch(
            "MESSAGE_REACTION_ADD",
            &json!({"user_id": "1", "channel_id": "100", "message_id": "42", "emoji": {"id": null, "name": "👍"}}),
            &d,
        );
        assert!(own.events.is_empty());
        let unfurl = dispatch(
            "MESSAGE_UPDATE",
            &msg(json!({"edited_timestamp": null})),
            &d,
        );
        assert!(unfurl.events.is_empty());
        let e = dispatch(
            "MESSAGE_UPDATE",
            &msg(json!({"edited_timestamp": "2026-12-01T10:00:00+00:00"})),
            &d,
        );
        assert!(
            matches!(&e.events[0].kind, EventKind::Edit { target, .. } if target.as_str() == "100/5000000")
        );
        let del = dispatch(
            "MESSAGE_DELETE_BULK",
            &json!({"ids": ["1", "2"], "channel_id": "100"}),
            &d,
        );
        assert_eq!(del.events.len(), 2);
        let act = message(&msg(json!({"content": "_waves_"})), &d);
        let c = act.events[0].content().unwrap();
        assert_eq!((c.kind, c.text.as_str()), (MessageKind::Emote, "waves"));
    }

    #[test]
    fn named_rooms_are_found_in_their_guild_and_refused_when_ambiguous() {
        let d = Directory::with_guild(
            &["#General".into(), "#dup".into()],
            crate::config::Guild::Name("Home".into()),
        );
        let guild = |id: &str, name: &str, channels: Value| {
            dispatch(
                "GUILD_CREATE",
                &json!({"id": id, "name": name, "channels": channels}),
                &d,
            );
        };
        guild(
            "8",
            "Elsewhere",
            json!([{"id": "700", "type": 0, "name": "general"}]),
        );
        assert_eq!(d.named_channel("general"), None, "not the configured guild");
        guild(
            "9",
            "home",
            json!([{"id": "701", "type": 0, "name": "General"}, {"id": "702", "type": 2, "name": "dup"},
            {"id": "703", "type": 0, "name": "dup"}, {"id": "704", "type": 0, "name": "dup"}]),
        );
        assert_eq!(d.named_channel("general"), Some(701));
        assert_eq!(d.place(701).unwrap().room.as_str(), "#General");
        assert_eq!(
            d.named_channel("dup"),
            None,
            "two text channels named dup: neither"
        );
        assert!(d.place(703).is_none() && d.place(704).is_none());
        assert!(d.room_channels().contains(&701));
    }

    #[test]
    fn frames_are_bounded_and_only_dispatches_are_read() {
        assert_eq!(frame(r#"{"op":11}"#), None);
        assert_eq!(frame("not json"), None);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(frame(&deep), None);
        let (t, d) = frame(r#"{"op":0,"t":"MESSAGE_CREATE","s":3,"d":{"id":"1"}}"#).unwrap();
        assert_eq!(
            (t.as_str(), d["id"].as_str()),
            ("MESSAGE_CREATE", Some("1"))
        );
    }
}

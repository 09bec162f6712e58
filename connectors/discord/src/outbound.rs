//! Events to REST calls.
//!
//! - Messages go through the channel's webhook, with the sender's name and avatar
//!   (`username`, `avatar_url`), `wait=true` for the message's id and `thread_id` in a thread;
//!   the webhook is found among the channel's own (one this bot made) or made once, never one
//!   per message. Where there is none (a direct message, webhooks off, no Manage Webhooks, 15
//!   webhooks already), the bot sends with the name in bold before the text.
//! - `allowed_mentions` is `{"parse": []}` on every send: bridged text pings nobody.
//! - Texts are cut at 2,000 characters; files are fetched and uploaded within
//!   `max_upload_bytes` (with the last part), else sent as links.
//! - A reply is a `message_reference` from the bot; a webhook can't reply, so its message starts
//!   with a small link to the message answered.
//! - A thread root `C/M` is the thread `M`: created from message `M` of channel `C` when it does
//!   not exist yet (Discord gives the thread the message's id).
//! - Edits and deletes go through the webhook for its messages, else as the bot.
//! - Reactions are the bot's own (`PUT …/reactions/{emoji}/@me`).

use crate::config::{Room, Settings, room};
use crate::directory::{Directory, Hook};
use crate::rest::{Body, Rest, RestError, emoji_path, snowflake};
use passerelle_sdk::content::split_text;
use passerelle_sdk::markdown::{self, Flavor};
use passerelle_sdk::{Content, Event, EventKind, Formatted, MessageKind, SendError, html};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

/// The most characters of one message.
pub const MAX_TEXT: usize = 2000;
/// Discord's limit of webhooks per channel.
pub const MAX_WEBHOOKS: usize = 15;

/// The Markdown sent for a message's content: its HTML as Discord Markdown, or its plain text
/// with Markdown escaped; an action in italics.
pub fn markdown_of(content: &Content) -> String {
    let body = match &content.formatted {
        Some(Formatted::Html(h)) => markdown::from_html(h.as_str(), Flavor::Discord),
        Some(Formatted::Markdown(m)) => markdown::from_html(
            &markdown::to_html(m.as_str(), Flavor::CommonMark),
            Flavor::Discord,
        ),
        _ => markdown::from_html(&html::escape(content.text.as_str()), Flavor::Discord),
    };
    match content.kind {
        MessageKind::Emote => format!("_{}_", body.trim()),
        _ => body,
    }
}

/// A name Discord takes for a webhook message: 1–80 characters, without "discord" or
/// "clyde" (which it refuses).
pub fn webhook_username(name: &str) -> String {
    let mut out: String = name.chars().filter(|c| !c.is_control()).take(80).collect();
    for banned in ["discord", "clyde"] {
        while let Some(at) = out.to_lowercase().find(banned) {
            // Lowercasing can change byte lengths; fall back to a plain cut when it does.
            if out.to_lowercase().len() != out.len() {
                out = out.replace(banned, "");
                break;
            }
            let first = out[at..].chars().next().map(char::len_utf8).unwrap_or(1);
            out.replace_range(at + first..at + first, "\u{200b}");
        }
    }
    let trimmed = out.trim();
    if trimmed.is_empty() {
        "someone".into()
    } else {
        trimmed.to_owned()
    }
}

/// A remote id `channel/message`.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (c, m) = id.split_once('/')?;
    Some((c.parse().ok()?, m.parse().ok()?))
}

/// Sends events for one bot.
pub struct Sender {
    /// REST.
    pub rest: Rest,
    /// The directory.
    pub dir: Arc<Directory>,
    /// The account's settings.
    pub settings: Settings,
}

/// Where one outbound message goes.
struct Target {
    /// The channel the webhook belongs to (a thread's parent).
    channel: u64,
    /// The thread, if any.
    thread: Option<u64>,
}

impl Target {
    fn posts_to(&self) -> u64 {
        self.thread.unwrap_or(self.channel)
    }
}

impl Sender {
    /// The channel a room sends to (opening the direct-message channel when needed).
    pub async fn channel_of(&self, name: &str) -> Result<u64, SendError> {
        match room(name) {
            Some(Room::Channel(c)) => Ok(c),
            Some(Room::Named(n)) => self.dir.named_channel(&n).ok_or(SendError::RoomNotFound),
            Some(Room::Direct(user)) => {
                if let Some(c) = self.dir.dm_channel(user) {
                    return Ok(c);
                }
                let ch = self
                    .rest
                    .call(
                        Method::POST,
                        "users/@me/channels",
                        &Body::Json(json!({"recipient_id": user.to_string()})),
                    )
                    .await
                    .map_err(|e| e.to_send_error())?;
                self.dir.learn_channel(&ch);
                snowflake(&ch, "id").ok_or(SendError::Rejected("no DM channel id".into()))
            }
            None => Err(SendError::RoomNotFound),
        }
    }

    /// The thread a thread root names, created from its message if it does not exist yet.
    async fn thread_of(
        &self,
        channel: u64,
        root: &str,
        first: &str,
    ) -> Result<Option<u64>, SendError> {
        let Some((c, m)) = parse_id(root) else {
            return Ok(None);
        };
        if c == m || self.dir.parent_of(m).is_some() {
            return Ok(Some(m));
        }
        if c != channel {
            // A thread of another channel than the room's: not ours to open.
            return Ok(None);
        }
        let name: String = {
            let line = first.lines().next().unwrap_or("").trim();
            let n: String = line.chars().take(90).collect();
            if n.is_empty() { "Thread".into() } else { n }
        };
        let answer = self
            .rest
            .call(
                Method::POST,
                &format!("channels/{c}/messages/{m}/threads"),
                &Body::Json(json!({"name": name, "auto_archive_duration": 1440})),
            )
            .await;
        match answer {
            Ok(thread) => {
                self.dir.learn_channel(&thread);
                self.dir.add_thread(m, c);
                Ok(Some(m))
            }
            // 160004: a thread was already created from this message.
            Err(e) if e.code() == Some(160004) => {
                self.dir.add_thread(m, c);
                Ok(Some(m))
            }
            Err(e) => Err(e.to_send_error()),
        }
    }

    /// Finds (or makes) the webhook of a room's channel ahead of the first send.
    pub async fn prepare(&self, channel: u64) {
        let _ = self.hook(channel).await;
    }

    /// The webhook of `channel`: known, one of this bot's found among the channel's, or made.
    async fn hook(&self, channel: u64) -> Option<Hook> {
        if !self.settings.webhooks || self.dir.hookless(channel) {
            return None;
        }
        if let Some(h) = self.dir.hook(channel) {
            return Some(h);
        }
        let hooks = match self.rest.get(&format!("channels/{channel}/webhooks")).await {
            Ok(Value::Array(h)) => h,
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!(channel, error = %e, "webhooks not readable in this channel (Manage Webhooks?); the bot sends with names in the text");
                self.dir.set_hook(channel, None);
                return None;
            }
        };
        let me = self.dir.me();
        let mine = |h: &&Value| {
            h.get("type").and_then(Value::as_u64) == Some(1)
                && h.get("token").and_then(Value::as_str).is_some()
                && h.get("user").and_then(|u| snowflake(u, "id")) == Some(me)
        };
        for h in hooks.iter().filter(mine) {
            if let Some(id) = snowflake(h, "id") {
                self.dir.add_ours(id);
            }
        }
        let reuse = hooks
            .iter()
            .filter(mine)
            .find(|h| {
                h.get("name").and_then(Value::as_str) == Some(self.settings.webhook_name.as_str())
            })
            .or_else(|| hooks.iter().find(mine));
        let made = match reuse {
            Some(h) => Some(h.clone()),
            None if hooks.len() >= MAX_WEBHOOKS => {
                tracing::warn!(
                    channel,
                    "the channel has 15 webhooks already; the bot sends with names in the text"
                );
                None
            }
            None => match self
                .rest
                .call(
                    Method::POST,
                    &format!("channels/{channel}/webhooks"),
                    &Body::Json(json!({"name": self.settings.webhook_name})),
                )
                .await
            {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(channel, error = %e, "no webhook could be made (Manage Webhooks?); the bot sends with names in the text");
                    None
                }
            },
        };
        let hook = made.and_then(|h| {
            Some(Hook {
                id: snowflake(&h, "id")?,
                token: passerelle_sdk::Secret::new(h.get("token")?.as_str()?.to_owned()),
            })
        });
        self.dir.set_hook(channel, hook.clone());
        hook
    }

    /// Sends `event` to the room's channel `channel`; the remote id of its first message.
    pub async fn send(&self, channel: u64, event: &Event) -> Result<Option<String>, SendError> {
        match &event.kind {
            EventKind::Message(content) => self.message(channel, content, event).await.map(Some),
            EventKind::Edit { target, content } => {
                let (c, m) = parse_id(target.as_str())
                    .ok_or(SendError::Rejected("not a Discord message id".into()))?;
                let text = split_text(&markdown_of(content), MAX_TEXT, usize::MAX)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let body = Body::Json(json!({"content": text, "allowed_mentions": {"parse": []}}));
                self.on_message(channel, c, m, Method::PATCH, &body)
                    .await
                    .map(|_| None)
            }
            EventKind::Delete { target } => {
                let (c, m) = parse_id(target.as_str())
                    .ok_or(SendError::Rejected("not a Discord message id".into()))?;
                self.on_message(channel, c, m, Method::DELETE, &Body::None)
                    .await
                    .map(|_| None)
            }
            EventKind::Reaction {
                target,
                key,
                removed,
            } => {
                let (c, m) = parse_id(target.as_str())
                    .ok_or(SendError::Rejected("not a Discord message id".into()))?;
                let method = if *removed {
                    Method::DELETE
                } else {
                    Method::PUT
                };
                let path = format!(
                    "channels/{c}/messages/{m}/reactions/{}/@me",
                    emoji_path(key)
                );
                self.rest
                    .call(method, &path, &Body::None)
                    .await
                    .map(|_| None)
                    .map_err(|e| e.to_send_error())
            }
            other => Err(SendError::Unsupported(other.name())),
        }
    }

    /// Edits or deletes message `m` of channel `c`: through the webhook that sent it if it was
    /// ours, else as the bot.
    async fn on_message(
        &self,
        room_channel: u64,
        c: u64,
        m: u64,
        method: Method,
        body: &Body,
    ) -> Result<(), SendError> {
        let parent = self.dir.parent_of(c).unwrap_or(c);
        if parent == room_channel
            && let Some(hook) = self.dir.hook(parent)
        {
            let thread = if c != parent {
                format!("?thread_id={c}")
            } else {
                String::new()
            };
            let path = format!(
                "webhooks/{}/{}/messages/{m}{thread}",
                hook.id,
                hook.token.expose()
            );
            match self.rest.call(method.clone(), &path, body).await {
                Ok(_) => return Ok(()),
                // Not this webhook's message: try as the bot.
                Err(e) if e.code() == Some(10008) => {}
                Err(e) => return Err(e.to_send_error()),
            }
        }
        self.rest
            .call(method, &format!("channels/{c}/messages/{m}"), body)
            .await
            .map(|_| ())
            .map_err(|e| e.to_send_error())
    }

    async fn message(
        &self,
        channel: u64,
        content: &Content,
        event: &Event,
    ) -> Result<String, SendError> {
        let text = markdown_of(content);
        let thread = match &event.thread_root {
            Some(root) => {
                self.thread_of(channel, root.as_str(), content.text.as_str())
                    .await?
            }
            None => None,
        };
        let target = Target { channel, thread };
        let hook = if self
            .dir
            .place(channel)
            .is_some_and(|p| p.room.as_str().starts_with('@'))
        {
            None
        } else {
            self.hook(channel).await
        };
        let mut body = String::new();
        if hook.is_none() {
            body.push_str(&format!(
                "**{}**: ",
                markdown::from_html(&html::escape(event.sender.name()), Flavor::Discord)
            ));
        }
        let reply = event.reply_to.as_ref().and_then(|r| parse_id(r.as_str()));
        if hook.is_some()
            && let Some((c, m)) = reply
            && let Some(guild) = self.dir.guild_of(channel)
        {
            body.push_str(&format!(
                "-# ↪ https://discord.com/channels/{guild}/{c}/{m}\n"
            ));
        }
        body.push_str(&text);
        let mut files = Vec::new();
        for att in &content.attachments {
            match passerelle_sdk::fetch::fetch(
                att,
                self.settings.media.max_upload_bytes,
                self.settings.media.fetch_private,
            )
            .await
            {
                Ok(f) if files.len() < 10 => {
                    files.push((att.name.as_str().to_owned(), f.mime, Arc::new(f.data)))
                }
                Ok(_) | Err(_) => {
                    body.push_str(&format!("\n{}: <{}>", att.name.as_str(), att.url.as_str()));
                }
            }
        }
        let pieces = split_text(&body, MAX_TEXT, usize::MAX);
        let count = pieces.len().max(1);
        let mut first: Option<String> = None;
        let mut files = Some(files);
        for (i, piece) in pieces
            .into_iter()
            .chain(std::iter::once(String::new()))
            .take(count)
            .enumerate()
        {
            let last = i + 1 == count;
            let mut payload = json!({"content": piece, "allowed_mentions": {"parse": []}});
            if hook.is_none()
                && i == 0
                && let Some((c, m)) = reply
            {
                payload["message_reference"] = json!({"message_id": m.to_string(), "channel_id": c.to_string(), "fail_if_not_exists": false});
            }
            let with_files = if last {
                files.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            if with_files.is_empty() && piece.is_empty() {
                continue;
            }
            let attachments: Vec<Value> = with_files
                .iter()
                .enumerate()
                .map(|(n, (name, _, _))| json!({"id": n, "filename": name}))
                .collect();
            let request = if with_files.is_empty() {
                Body::Json(payload)
            } else {
                payload["attachments"] = Value::Array(attachments);
                Body::Files {
                    payload,
                    files: with_files,
                }
            };
            let sent = self.post(&target, hook.as_ref(), event, request).await;
            match (sent, first.is_some()) {
                (Ok(id), _) => {
                    first.get_or_insert(format!("{}/{id}", target.posts_to()));
                }
                (Err(e), false) => return Err(e.to_send_error()),
                (Err(e), true) => {
                    // The first part is out: failing now would send it again.
                    tracing::warn!(error = %e, "a later part of a message was refused; it is lost");
                }
            }
        }
        first.ok_or(SendError::Rejected("empty message".into()))
    }

    /// Posts one message; its id.
    async fn post(
        &self,
        target: &Target,
        hook: Option<&Hook>,
        event: &Event,
        body: Body,
    ) -> Result<u64, RestError> {
        let answer = match hook {
            Some(h) => {
                let mut path = format!("webhooks/{}/{}?wait=true", h.id, h.token.expose());
                if let Some(t) = target.thread {
                    path.push_str(&format!("&thread_id={t}"));
                }
                let body = match body {
                    Body::Json(mut p) => {
                        identity(&mut p, event);
                        Body::Json(p)
                    }
                    Body::Files { mut payload, files } => {
                        identity(&mut payload, event);
                        Body::Files { payload, files }
                    }
                    Body::None => Body::None,
                };
                self.rest.call(Method::POST, &path, &body).await
            }
            None => {
                self.rest
                    .call(
                        Method::POST,
                        &format!("channels/{}/messages", target.posts_to()),
                        &body,
                    )
                    .await
            }
        };
        let answer = match answer {
            // The webhook was deleted by someone: forget it, and make another next time.
            Err(e) if hook.is_some() && matches!(e.code(), Some(10015) | Some(50027)) => {
                self.dir.forget_hook(target.channel);
                return Err(RestError::Unreachable(
                    "the channel's webhook was deleted".into(),
                ));
            }
            other => other?,
        };
        snowflake(&answer, "id").ok_or_else(|| RestError::Unexpected("a message without id".into()))
    }
}

fn identity(payload: &mut Value, event: &Event) {
    payload["username"] = json!(webhook_username(event.sender.name()));
    if let Some(avatar) = &event.sender.avatar_url
        && (avatar.starts_with("https://") || avatar.starts_with("http://"))
        && avatar.len() <= 2048
    {
        payload["avatar_url"] = json!(avatar);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_names_avoid_what_discord_refuses() {
        assert_eq!(webhook_username("alice"), "alice");
        let n = webhook_username("Discord fan");
        assert!(!n.to_lowercase().contains("discord"), "{n}");
        assert!(n.starts_with('D'));
        assert_eq!(webhook_username("   "), "someone");
        assert_eq!(webhook_username(&"x".repeat(200)).chars().count(), 80);
    }

    #[test]
    fn plain_text_is_escaped_and_actions_are_italic() {
        assert_eq!(markdown_of(&Content::plain("a *b* c")), r"a \*b\* c");
        assert_eq!(markdown_of(&Content::emote("waves")), "_waves_");
        let mut rich = Content::plain("bold");
        rich.formatted = Some(Formatted::Html(passerelle_sdk::Text::new("<b>bold</b>")));
        assert_eq!(markdown_of(&rich), "**bold**");
        assert_eq!(parse_id("1/2"), Some((1, 2)));
        assert_eq!(parse_id("x/2"), None);
    }
}

//! Events to REST calls.
//!
//! - Posts: `POST /posts` with `props.override_username` and `override_icon_url` where the
//!   server allows them (else the name in bold before the text). Every `@` that would mention
//!   someone (`@all`, `@channel`, `@here`, `@name`) gets a zero-width space after it, so bridged
//!   text pings nobody. Cut at 16,383 characters (the server's default limit).
//! - Threads: `root_id` is the thread's first post; a reply goes into the thread of the post it
//!   answers (its `root_id`, or the post itself).
//! - Edits `PUT /posts/{id}/patch`, deletes `DELETE /posts/{id}`, reactions `POST /reactions` and
//!   `DELETE /users/{me}/posts/{id}/reactions/{name}`.
//! - Files: `POST /files` (multipart, into the channel), then the post's `file_ids`, within
//!   `max_upload_bytes`; larger ones, and ones that can't be fetched, are sent as links.

use crate::api::{Api, ApiError, Body};
use crate::config::{Settings, valid_id};
use crate::inbound::Directory;
use passerelle_sdk::content::split_text;
use passerelle_sdk::markdown::{self, Flavor};
use passerelle_sdk::{Content, Event, EventKind, Formatted, MessageKind, SendError, emoji, html};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

/// The most characters of one post.
pub const MAX_TEXT: usize = 16_383;

/// `@` followed by a name gets a zero-width space: the text reads the same and mentions nobody.
pub fn defuse_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '@'
            && chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() || *n == '_')
        {
            out.push('\u{200b}');
        }
    }
    out
}

/// The Markdown sent for a message's content; an action in italics.
pub fn markdown_of(content: &Content) -> String {
    let body = match &content.formatted {
        Some(Formatted::Html(h)) => markdown::from_html(h.as_str(), Flavor::CommonMark),
        Some(Formatted::Markdown(m)) => markdown::from_html(
            &markdown::to_html(m.as_str(), Flavor::CommonMark),
            Flavor::CommonMark,
        ),
        _ => markdown::from_html(&html::escape(content.text.as_str()), Flavor::CommonMark),
    };
    let body = defuse_mentions(&body);
    match content.kind {
        MessageKind::Emote => format!("*{}*", body.trim()),
        _ => body,
    }
}

/// Sends events for one account.
pub struct Sender {
    /// REST.
    pub api: Api,
    /// The directory.
    pub dir: Arc<Directory>,
    /// Settings.
    pub settings: Settings,
    /// Whether the server takes the override props.
    pub overrides: bool,
}

fn err(e: ApiError) -> SendError {
    e.to_send_error()
}

impl Sender {
    /// Sends `event` to `channel`; the id of its first post.
    pub async fn send(&self, channel: &str, event: &Event) -> Result<Option<String>, SendError> {
        match &event.kind {
            EventKind::Message(content) => self.post(channel, content, event).await,
            EventKind::Edit { target, content } => {
                let id = target.as_str();
                if !valid_id(id) {
                    return Err(SendError::Rejected("not a Mattermost post id".into()));
                }
                let text = self.named(event, &markdown_of(content));
                let text = split_text(&text, MAX_TEXT, usize::MAX)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                self.api
                    .call(
                        Method::PUT,
                        &format!("posts/{id}/patch"),
                        &Body::Json(json!({"message": text})),
                    )
                    .await
                    .map(|_| None)
                    .map_err(err)
            }
            EventKind::Delete { target } => {
                let id = target.as_str();
                if !valid_id(id) {
                    return Err(SendError::Rejected("not a Mattermost post id".into()));
                }
                match self
                    .api
                    .call(Method::DELETE, &format!("posts/{id}"), &Body::None)
                    .await
                {
                    // Gone already.
                    Err(ApiError::Server { status: 404, .. }) => Ok(None),
                    r => r.map(|_| None).map_err(err),
                }
            }
            EventKind::Reaction {
                target,
                key,
                removed,
            } => {
                let id = target.as_str();
                let name = emoji::to_name(key.as_str()).ok_or(SendError::Rejected(
                    "no Mattermost name for this emoji".into(),
                ))?;
                if !valid_id(id) {
                    return Err(SendError::Rejected("not a Mattermost post id".into()));
                }
                let me = self.dir.me();
                let r = if *removed {
                    self.api
                        .call(
                            Method::DELETE,
                            &format!("users/{me}/posts/{id}/reactions/{name}"),
                            &Body::None,
                        )
                        .await
                } else {
                    self.api
                        .call(
                            Method::POST,
                            "reactions",
                            &Body::Json(json!({"user_id": me, "post_id": id, "emoji_name": name})),
                        )
                        .await
                };
                r.map(|_| None).map_err(err)
            }
            other => Err(SendError::Unsupported(other.name())),
        }
    }

    fn named(&self, event: &Event, text: &str) -> String {
        if self.overrides {
            text.to_owned()
        } else {
            let name = markdown::from_html(&html::escape(event.sender.name()), Flavor::CommonMark);
            format!("**{}**: {text}", defuse_mentions(&name))
        }
    }

    /// The thread a post goes into: the thread's root, or the root of the post answered.
    async fn root(&self, event: &Event) -> Option<String> {
        if let Some(root) = event.thread_root.as_ref().filter(|r| valid_id(r.as_str())) {
            return Some(root.as_str().to_owned());
        }
        let answered = event.reply_to.as_ref().filter(|r| valid_id(r.as_str()))?;
        let post = self
            .api
            .get(&format!("posts/{}", answered.as_str()))
            .await
            .ok()?;
        let root = post
            .get("root_id")
            .and_then(Value::as_str)
            .filter(|r| valid_id(r));
        Some(root.unwrap_or(answered.as_str()).to_owned())
    }

    async fn post(
        &self,
        channel: &str,
        content: &Content,
        event: &Event,
    ) -> Result<Option<String>, SendError> {
        let root = self.root(event).await;
        let mut body = self.named(event, &markdown_of(content));
        let mut file_ids = Vec::new();
        for att in &content.attachments {
            let fetched = if file_ids.len() < 10 {
                passerelle_sdk::fetch::fetch(
                    att,
                    self.settings.media.max_upload_bytes,
                    self.settings.media.fetch_private,
                )
                .await
                .ok()
            } else {
                None
            };
            let uploaded = match fetched {
                Some(f) => {
                    let upload = Body::File {
                        channel: channel.to_owned(),
                        name: att.name.as_str().to_owned(),
                        data: f.data.to_vec(),
                    };
                    self.api
                        .call(Method::POST, "files", &upload)
                        .await
                        .ok()
                        .and_then(|v| {
                            v.pointer("/file_infos/0/id")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                }
                None => None,
            };
            match uploaded {
                Some(id) => file_ids.push(id),
                None => body.push_str(&format!(
                    "\n[{}]({})",
                    markdown::from_html(&html::escape(att.name.as_str()), Flavor::CommonMark),
                    att.url.as_str().replace(' ', "%20").replace(')', "%29")
                )),
            }
        }
        let pieces = split_text(&body, MAX_TEXT, usize::MAX);
        let count = pieces.len().max(1);
        let mut first = None;
        for (i, piece) in pieces
            .into_iter()
            .chain(std::iter::once(String::new()))
            .take(count)
            .enumerate()
        {
            let mut payload = json!({"channel_id": channel, "message": piece});
            if let Some(r) = &root {
                payload["root_id"] = json!(r);
            }
            if self.overrides {
                let mut props = json!({"override_username": event.sender.name().chars().take(64).collect::<String>(), "from_bot": "true"});
                if let Some(icon) = event
                    .sender
                    .avatar_url
                    .as_deref()
                    .filter(|u| u.starts_with("https://") && u.len() <= 1024)
                {
                    props["override_icon_url"] = json!(icon);
                }
                payload["props"] = props;
            }
            if i + 1 == count && !file_ids.is_empty() {
                payload["file_ids"] = json!(file_ids);
            }
            let answer = self
                .api
                .call(Method::POST, "posts", &Body::Json(payload))
                .await
                .map_err(err)?;
            if first.is_none() {
                first = answer
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|i| valid_id(i))
                    .map(str::to_owned);
            }
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridged_text_mentions_nobody() {
        assert_eq!(
            defuse_mentions("@all hi @ann, mail a@b"),
            "@\u{200b}all hi @\u{200b}ann, mail a@\u{200b}b"
        );
        assert_eq!(defuse_mentions("@ alone"), "@ alone");
        assert_eq!(
            markdown_of(&Content::plain("*not* @channel")),
            "\\*not\\* @\u{200b}channel"
        );
        assert_eq!(markdown_of(&Content::emote("waves")), "*waves*");
    }
}

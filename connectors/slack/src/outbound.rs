//! Events to Web API calls.
//!
//! - Messages: `chat.postMessage` with the sender's name and avatar (`username`, `icon_url`;
//!   the `chat:write.customize` scope), or the name in bold before the text when
//!   `per_message_identity` is off. Text is mrkdwn with `&`, `<` and `>` escaped, so bridged text
//!   can't ping (`<!channel>`) or fake a link; cut at 4,000 characters (Slack's advice).
//! - Threads: `thread_ts` is the thread's first message. A reply is sent into the thread of the
//!   message it answers (Slack has no other kind).
//! - Edits `chat.update`, deletes `chat.delete`, reactions `reactions.add`/`.remove` (by name;
//!   an emoji Slack has no name for here is refused).
//! - Files: the external upload flow (`files.getUploadURLExternal`, the bytes to its URL,
//!   `files.completeUploadExternal` into the channel and thread), within `max_upload_bytes`;
//!   larger ones, and ones that can't be fetched, are sent as links.

use crate::api::{Api, ApiError, Tier};
use crate::config::Settings;
use crate::directory::Directory;
use crate::inbound::valid_ts;
use passerelle_sdk::content::split_text;
use passerelle_sdk::emoji;
use passerelle_sdk::markdown::{self, Flavor, slack_escape};
use passerelle_sdk::{Content, Event, EventKind, Formatted, MessageKind, SendError};
use serde_json::{Value, json};
use std::sync::Arc;

/// The most characters of one message sent (Slack truncates at 40,000 and advises 4,000).
pub const MAX_TEXT: usize = 4000;

/// The mrkdwn sent for a message's content.
pub fn mrkdwn_of(content: &Content) -> String {
    let body = match &content.formatted {
        Some(Formatted::Html(h)) => markdown::from_html(h.as_str(), Flavor::Slack),
        Some(Formatted::Markdown(m)) => markdown::from_html(
            &markdown::to_html(m.as_str(), Flavor::CommonMark),
            Flavor::Slack,
        ),
        _ => slack_escape(content.text.as_str()),
    };
    match content.kind {
        MessageKind::Emote => format!("_{}_", body.trim()),
        _ => body,
    }
}

/// A name Slack shows for `username`: 1–80 characters, no control characters.
pub fn username(name: &str) -> String {
    let out: String = name.chars().filter(|c| !c.is_control()).take(80).collect();
    let t = out.trim();
    if t.is_empty() {
        "someone".into()
    } else {
        t.to_owned()
    }
}

/// A remote id `conversation/ts`.
pub fn parse_id(id: &str) -> Option<(&str, &str)> {
    let (c, ts) = id.split_once('/')?;
    (crate::inbound::valid_id(c) && valid_ts(ts)).then_some((c, ts))
}

/// Sends events for one bot.
pub struct Sender {
    /// The Web API.
    pub api: Api,
    /// The directory.
    pub dir: Arc<Directory>,
    /// The account's settings.
    pub settings: Settings,
}

fn send_error(e: ApiError) -> SendError {
    e.to_send_error()
}

impl Sender {
    /// Sends `event` to `conversation`; the remote id of its first message.
    pub async fn send(
        &self,
        conversation: &str,
        event: &Event,
    ) -> Result<Option<String>, SendError> {
        match &event.kind {
            EventKind::Message(content) => self.message(conversation, content, event).await,
            EventKind::Edit { target, content } => {
                let (c, ts) = parse_id(target.as_str())
                    .ok_or(SendError::Rejected("not a Slack message id".into()))?;
                let mut text = self.named(event, &mrkdwn_of(content));
                text = split_text(&text, MAX_TEXT, usize::MAX)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                self.api
                    .call(
                        "chat.update",
                        &json!({"channel": c, "ts": ts, "text": text}),
                        Tier::T3,
                    )
                    .await
                    .map(|_| None)
                    .map_err(send_error)
            }
            EventKind::Delete { target } => {
                let (c, ts) = parse_id(target.as_str())
                    .ok_or(SendError::Rejected("not a Slack message id".into()))?;
                match self
                    .api
                    .call("chat.delete", &json!({"channel": c, "ts": ts}), Tier::T3)
                    .await
                {
                    // Gone already: what was asked holds.
                    Err(ApiError::Slack(code)) if code == "message_not_found" => Ok(None),
                    r => r.map(|_| None).map_err(send_error),
                }
            }
            EventKind::Reaction {
                target,
                key,
                removed,
            } => {
                let (c, ts) = parse_id(target.as_str())
                    .ok_or(SendError::Rejected("not a Slack message id".into()))?;
                let name = emoji::to_name(key.as_str())
                    .ok_or(SendError::Rejected("no Slack name for this emoji".into()))?;
                let method = if *removed {
                    "reactions.remove"
                } else {
                    "reactions.add"
                };
                match self
                    .api
                    .call(
                        method,
                        &json!({"channel": c, "timestamp": ts, "name": name}),
                        Tier::T3,
                    )
                    .await
                {
                    Err(ApiError::Slack(code))
                        if code == "already_reacted" || code == "no_reaction" =>
                    {
                        Ok(None)
                    }
                    r => r.map(|_| None).map_err(send_error),
                }
            }
            other => Err(SendError::Unsupported(other.name())),
        }
    }

    /// The text with the sender's name before it, when messages don't carry identity.
    fn named(&self, event: &Event, text: &str) -> String {
        if self.settings.per_message_identity {
            text.to_owned()
        } else {
            format!("*{}*: {text}", slack_escape(event.sender.name()))
        }
    }

    async fn message(
        &self,
        conversation: &str,
        content: &Content,
        event: &Event,
    ) -> Result<Option<String>, SendError> {
        // A thread's first message, or the message answered: the thread to post in.
        let thread = event
            .thread_root
            .as_ref()
            .or(event.reply_to.as_ref())
            .and_then(|r| parse_id(r.as_str()))
            .filter(|(c, _)| *c == conversation)
            .map(|(_, ts)| ts.to_owned());
        let mut body = self.named(event, &mrkdwn_of(content));
        let mut files = Vec::new();
        for att in &content.attachments {
            match passerelle_sdk::fetch::fetch(
                att,
                self.settings.media.max_upload_bytes,
                self.settings.media.fetch_private,
            )
            .await
            {
                Ok(f) if files.len() < 10 => files.push((att.name.as_str().to_owned(), f.data)),
                Ok(_) | Err(_) => {
                    let url = att.url.as_str();
                    let label = slack_escape(att.name.as_str()).replace('|', "¦");
                    if url.starts_with("https://") || url.starts_with("http://") {
                        body.push_str(&format!(
                            "\n<{}|{label}>",
                            url.replace('|', "%7C").replace('>', "%3E")
                        ));
                    } else {
                        body.push_str(&format!("\n{label}"));
                    }
                }
            }
        }
        let mut first: Option<String> = None;
        let pieces = if body.trim().is_empty() && !files.is_empty() {
            Vec::new()
        } else {
            split_text(&body, MAX_TEXT, usize::MAX)
        };
        for piece in pieces {
            let mut payload = json!({"channel": conversation, "text": piece, "unfurl_links": false, "unfurl_media": false});
            if self.settings.per_message_identity {
                payload["username"] = json!(username(event.sender.name()));
                if let Some(icon) = event
                    .sender
                    .avatar_url
                    .as_deref()
                    .filter(|u| u.starts_with("https://") && u.len() <= 1024)
                {
                    payload["icon_url"] = json!(icon);
                }
            }
            if let Some(t) = &thread {
                payload["thread_ts"] = json!(t);
            }
            let answer = self
                .api
                .post_message(conversation, &payload)
                .await
                .map_err(send_error)?;
            if first.is_none() {
                first = answer
                    .get("ts")
                    .and_then(Value::as_str)
                    .filter(|t| valid_ts(t))
                    .map(|ts| format!("{conversation}/{ts}"));
            }
        }
        for (name, data) in files {
            let comment = (first.is_none()).then(|| self.named(event, ""));
            match self
                .upload(conversation, thread.as_deref(), &name, data, comment)
                .await
            {
                Ok(()) => {}
                Err(e) if first.is_none() => return Err(e),
                Err(e) => tracing::warn!(error = %e, "a file could not be uploaded to Slack"),
            }
        }
        // A message of files only: Slack's upload answer names no message to give.
        Ok(first)
    }

    /// The external upload flow.
    async fn upload(
        &self,
        conversation: &str,
        thread: Option<&str>,
        name: &str,
        data: Vec<u8>,
        comment: Option<String>,
    ) -> Result<(), SendError> {
        let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
        let name = if name.trim().is_empty() {
            "file".to_owned()
        } else {
            name
        };
        let got = self
            .api
            .get(
                "files.getUploadURLExternal",
                &[
                    ("filename", name.clone()),
                    ("length", data.len().to_string()),
                ],
                Tier::T4,
            )
            .await
            .map_err(send_error)?;
        let (Some(url), Some(id)) = (
            got.get("upload_url").and_then(Value::as_str),
            got.get("file_id").and_then(Value::as_str),
        ) else {
            return Err(SendError::Rejected(
                "files.getUploadURLExternal gave no upload_url".into(),
            ));
        };
        let posted = self
            .api
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await
            .map_err(|_| SendError::Disconnected)?;
        if !posted.status().is_success() {
            return Err(SendError::Rejected(format!(
                "the upload URL answered HTTP {}",
                posted.status().as_u16()
            )));
        }
        let mut complete =
            json!({"files": [{"id": id, "title": name}], "channel_id": conversation});
        if let Some(t) = thread {
            complete["thread_ts"] = json!(t);
        }
        if let Some(c) = comment.filter(|c| !c.trim().is_empty() && c.trim() != "*:") {
            complete["initial_comment"] = json!(c);
        }
        self.api
            .call("files.completeUploadExternal", &complete, Tier::T2)
            .await
            .map(|_| ())
            .map_err(send_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_mrkdwn_that_pings_nobody() {
        let c = Content::plain("<!channel> & <@U123> *not bold*");
        assert_eq!(
            mrkdwn_of(&c),
            "&lt;!channel&gt; &amp; &lt;@U123&gt; *not bold*"
        );
        let mut f = Content::plain("bold");
        f.formatted = Some(Formatted::Html(passerelle_sdk::Text::new(
            "<b>bold</b> <i>it</i>",
        )));
        assert_eq!(mrkdwn_of(&f), "*bold* _it_");
        assert_eq!(mrkdwn_of(&Content::emote("waves")), "_waves_");
        assert_eq!(username("  "), "someone");
        assert_eq!(username(&"x".repeat(100)).len(), 80);
        assert_eq!(
            parse_id("C1/1700000000.000100"),
            Some(("C1", "1700000000.000100"))
        );
        assert_eq!(parse_id("C1/17"), None);
    }
}

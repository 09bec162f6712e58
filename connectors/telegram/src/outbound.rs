//! Events to Bot API calls: `sendMessage` (split at 4,096 characters, with `reply_parameters`
//! and the topic's `message_thread_id`), `sendPhoto`/`sendDocument` (files fetched and uploaded),
//! `editMessageText`, `deleteMessage` and `setMessageReaction`.
//!
//! As for every network that splits: once the first part is out, later parts are retried in place
//! (waiting out `retry_after`) rather than failing the send, which would repeat the first part.

use crate::api::{ApiError, BotApi};
use crate::config::Settings;
use passerelle_sdk::content::split_text;
use passerelle_sdk::{Attachment, Content, Event, EventKind, MessageKind, SendError};
use serde_json::{Value, json};
use std::time::Duration;

/// The longest text of one message, in characters.
pub const MAX_TEXT: usize = 4096;

/// Why a send stopped.
#[derive(Debug)]
pub struct Failure {
    /// The typed error for the daemon.
    pub error: SendError,
    /// The token was refused: the account stops.
    pub auth: bool,
    /// The chat became this supergroup: follow it and send again.
    pub migrate_to: Option<i64>,
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let migrate_to = match &e {
            ApiError::Api { migrate_to, .. } => *migrate_to,
            _ => None,
        };
        Self {
            auth: e.is_auth(),
            error: e.to_send_error(),
            migrate_to,
        }
    }
}

impl From<SendError> for Failure {
    fn from(error: SendError) -> Self {
        Self {
            error,
            auth: false,
            migrate_to: None,
        }
    }
}

fn text_of(content: &Content) -> String {
    match content.kind {
        MessageKind::Emote => format!("/me {}", content.text.as_str()),
        _ => content.text.as_str().to_owned(),
    }
}

fn message_id(result: &Value) -> Result<String, ApiError> {
    result
        .get("message_id")
        .and_then(Value::as_i64)
        .map(|id| id.to_string())
        .ok_or_else(|| ApiError::Unexpected("sent message without message_id".into()))
}

/// Sends events for one bot.
pub struct Sender<'a> {
    /// The bot.
    pub api: &'a BotApi,
    /// Its config.
    pub config: &'a Settings,
}

fn target(id: &passerelle_sdk::RemoteMessageId) -> Result<i64, Failure> {
    id.as_str()
        .parse::<i64>()
        .map_err(|_| SendError::Rejected("not a Telegram message id".into()).into())
}

impl Sender<'_> {
    /// Sends `event` to the chat `chat`; the id of its first message.
    pub async fn send(&self, chat: i64, event: &Event) -> Result<Option<String>, Failure> {
        match &event.kind {
            EventKind::Message(content) => self.message(chat, content, event).await,
            EventKind::Edit { target: t, content } => {
                let text = split_text(&text_of(content), MAX_TEXT, usize::MAX)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                self.api
                    .call(
                        "editMessageText",
                        &json!({"chat_id": chat, "message_id": target(t)?, "text": text}),
                    )
                    .await?;
                Ok(None)
            }
            EventKind::Delete { target: t } => {
                self.api
                    .call(
                        "deleteMessage",
                        &json!({"chat_id": chat, "message_id": target(t)?}),
                    )
                    .await?;
                Ok(None)
            }
            EventKind::Reaction {
                target: t,
                key,
                removed,
            } => {
                // A bot has one reaction per message: setting one replaces it, an empty list
                // takes it back.
                let reaction = if *removed {
                    json!([])
                } else {
                    json!([{"type": "emoji", "emoji": key.as_str()}])
                };
                self.api
                    .call(
                        "setMessageReaction",
                        &json!({"chat_id": chat, "message_id": target(t)?, "reaction": reaction}),
                    )
                    .await?;
                Ok(None)
            }
            other => Err(SendError::Unsupported(other.name()).into()),
        }
    }

    fn place(&self, params: &mut Value, event: &Event, first: bool) {
        if let Some(thread) = event
            .thread_root
            .as_ref()
            .and_then(|t| t.as_str().parse::<i64>().ok())
        {
            params["message_thread_id"] = json!(thread);
        }
        if first
            && let Some(reply) = event
                .reply_to
                .as_ref()
                .and_then(|r| r.as_str().parse::<i64>().ok())
        {
            params["reply_parameters"] =
                json!({"message_id": reply, "allow_sending_without_reply": true});
        }
    }

    async fn later(&self, method: &str, params: &Value) {
        for _ in 0..3 {
            match self.api.call(method, params).await {
                Ok(_) => return,
                Err(ApiError::Api {
                    code: 429,
                    retry_after,
                    ..
                }) => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(5).min(30));
                    tokio::time::sleep(wait).await;
                }
                Err(ApiError::Unreachable(_)) => tokio::time::sleep(Duration::from_secs(2)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "a later part of a message was refused; it is lost");
                    return;
                }
            }
        }
        tracing::warn!("a later part of a message could not be sent; it is lost");
    }

    async fn message(
        &self,
        chat: i64,
        content: &Content,
        event: &Event,
    ) -> Result<Option<String>, Failure> {
        let mut first: Option<String> = None;
        for piece in split_text(&text_of(content), MAX_TEXT, usize::MAX) {
            self.say(chat, &piece, event, &mut first).await?;
        }
        for att in &content.attachments {
            match self.upload(chat, att, event, first.is_none()).await {
                Ok(id) => {
                    first.get_or_insert(id);
                }
                Err(f) if f.auth || f.migrate_to.is_some() => return Err(f),
                Err(f) if first.is_none() && f.error.is_retryable() => return Err(f),
                Err(f) => {
                    tracing::info!(
                        reason = f.error.reason(),
                        "file not uploaded; sending its link instead"
                    );
                    let link = format!("{}: {}", att.name.as_str(), att.url.as_str());
                    self.say(chat, &link, event, &mut first).await?;
                }
            }
        }
        first
            .map(Some)
            .ok_or_else(|| SendError::Rejected("empty message".into()).into())
    }

    /// Sends one text part: the first (replying, with its errors), or a later one retried in place.
    async fn say(
        &self,
        chat: i64,
        text: &str,
        event: &Event,
        first: &mut Option<String>,
    ) -> Result<(), Failure> {
        let mut params = json!({"chat_id": chat, "text": text});
        self.place(&mut params, event, first.is_none());
        if first.is_none() {
            *first = Some(message_id(&self.api.call("sendMessage", &params).await?)?);
        } else {
            self.later("sendMessage", &params).await;
        }
        Ok(())
    }

    /// Fetches a file and uploads it: images as photos, everything else as documents.
    async fn upload(
        &self,
        chat: i64,
        att: &Attachment,
        event: &Event,
        first: bool,
    ) -> Result<String, Failure> {
        let fetched = passerelle_sdk::fetch::fetch(
            att,
            self.config.media.max_upload_bytes,
            self.config.media.fetch_private,
        )
        .await?;
        let photo = matches!(fetched.mime.as_str(), "image/jpeg" | "image/png")
            && fetched.data.len() <= 10 * 1024 * 1024;
        let (method, field) = if photo {
            ("sendPhoto", "photo")
        } else {
            ("sendDocument", "document")
        };
        let part = reqwest::multipart::Part::bytes(fetched.data)
            .file_name(att.name.as_str().to_owned())
            .mime_str(&fetched.mime)
            .map_err(|_| SendError::Rejected("file type not understood".into()))?;
        let mut form = reqwest::multipart::Form::new()
            .text("chat_id", chat.to_string())
            .part(field, part);
        let mut extra = json!({});
        self.place(&mut extra, event, first);
        if let Some(thread) = extra.get("message_thread_id") {
            form = form.text("message_thread_id", thread.to_string());
        }
        if let Some(reply) = extra.get("reply_parameters") {
            form = form.text("reply_parameters", reply.to_string());
        }
        Ok(message_id(&self.api.call_form(method, form).await?)?)
    }
}

//! Events to Graph API sends: WhatsApp's `POST /{PHONE_NUMBER_ID}/messages` and
//! `/{PHONE_NUMBER_ID}/media`, Messenger's and Instagram's `POST /{ID}/messages`.
//!
//! A long text is split at the network's limit (on a space where it can); files go after the text.
//! The first part's id is the message's id. Once a part is out, the rest is retried in place
//! (waiting out throttling, briefly) instead of failing the whole send, which would send the first
//! part twice; a later part that still fails is logged (without content) and counted as lost.

use crate::config::Settings;
use crate::graph::{Graph, GraphError};
use crate::kind::Kind;
use passerelle_sdk::content::split_text;
use passerelle_sdk::{Attachment, Content, Event, EventKind, MessageKind, SendError};
use serde_json::{Value, json};
use std::time::Duration;

/// Why a send stopped, with the Graph failure when there was one (an auth failure stops the
/// account).
#[derive(Debug)]
pub struct Failure {
    /// The typed error for the daemon.
    pub error: SendError,
    /// Set when the token was refused.
    pub auth: bool,
}

impl From<GraphError> for Failure {
    fn from(e: GraphError) -> Self {
        Self {
            auth: e.is_auth(),
            error: e.to_send_error(),
        }
    }
}

impl From<SendError> for Failure {
    fn from(error: SendError) -> Self {
        Self { error, auth: false }
    }
}

/// The text a message is sent with: an action starts with `/me `.
fn body(content: &Content) -> String {
    match content.kind {
        MessageKind::Emote => format!("/me {}", content.text.as_str()),
        _ => content.text.as_str().to_owned(),
    }
}

/// WhatsApp's message type for a MIME type.
fn whatsapp_type(mime: &str) -> &'static str {
    let base = mime.split(';').next().unwrap_or(mime).trim();
    match base {
        "image/jpeg" | "image/png" => "image",
        "video/mp4" | "video/3gpp" => "video",
        "audio/aac" | "audio/amr" | "audio/mpeg" | "audio/mp4" | "audio/ogg" => "audio",
        _ => "document",
    }
}

/// Messenger's and Instagram's attachment type for a MIME type.
fn messenger_type(mime: Option<&str>) -> &'static str {
    match mime.unwrap_or("") {
        m if m.starts_with("image/") => "image",
        m if m.starts_with("video/") => "video",
        m if m.starts_with("audio/") => "audio",
        _ => "file",
    }
}

/// Sends events for one account.
pub struct Sender<'a> {
    /// The account's config.
    pub config: &'a Settings,
    /// Its Graph client.
    pub graph: &'a Graph,
}

impl Sender<'_> {
    fn kind(&self) -> Kind {
        self.config.kind
    }

    /// The message-send path.
    fn messages_path(&self) -> String {
        format!("{}/messages", self.config.id)
    }

    /// A send body to `to` carrying `payload` (WhatsApp: the typed object; Messenger/Instagram:
    /// the `message` object).
    fn envelope(&self, to: &str, payload: Value) -> Value {
        match self.kind() {
            Kind::WhatsApp => {
                let mut body = json!({
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": to,
                });
                if let (Some(b), Some(p)) = (body.as_object_mut(), payload.as_object()) {
                    b.extend(p.clone());
                }
                body
            }
            Kind::Messenger => json!({
                "recipient": {"id": to},
                "messaging_type": "RESPONSE",
                "message": payload,
            }),
            Kind::Instagram => json!({
                "recipient": {"id": to},
                "message": payload,
            }),
        }
    }

    /// Posts one send; its message id.
    async fn post(&self, body: &Value) -> Result<String, GraphError> {
        let answer = self.graph.post(&self.messages_path(), body).await?;
        let id = match self.kind() {
            Kind::WhatsApp => answer
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|m| m.first())
                .and_then(|m| m.get("id")),
            Kind::Messenger | Kind::Instagram => answer.get("message_id"),
        };
        id.and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| GraphError::Unexpected("send answer without a message id".into()))
    }

    /// Posts a later part, waiting out throttling a few times; `None` when it is lost.
    async fn post_later(&self, body: &Value) -> Option<String> {
        for _ in 0..3 {
            match self.post(body).await {
                Ok(id) => return Some(id),
                Err(e) => match e.to_send_error() {
                    SendError::RateLimited { retry_after } => {
                        tokio::time::sleep(retry_after.min(Duration::from_secs(30))).await;
                    }
                    SendError::Disconnected if !e.is_auth() => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    _ => {
                        tracing::warn!(error = %e, "a later part of a message was refused; it is lost");
                        return None;
                    }
                },
            }
        }
        tracing::warn!("a later part of a message could not be sent; it is lost");
        None
    }

    /// Sends one outbound event to the person `to`.
    pub async fn send(&self, event: &Event) -> Result<Option<String>, Failure> {
        let to = event.room.as_str();
        match &event.kind {
            EventKind::Message(content) => self.message(to, content, event).await,
            EventKind::Reaction {
                target,
                key,
                removed,
            } if self.kind() == Kind::WhatsApp => {
                let emoji = if *removed { "" } else { key.as_str() };
                let body = self.envelope(
                    to,
                    json!({"type": "reaction", "reaction": {"message_id": target.as_str(), "emoji": emoji}}),
                );
                Ok(Some(self.post(&body).await?))
            }
            EventKind::Reaction { .. } => Err(SendError::Unsupported("reactions").into()),
            EventKind::Edit { .. } => Err(SendError::Unsupported("edits").into()),
            EventKind::Delete { .. } => Err(SendError::Unsupported("deletes").into()),
            other => Err(SendError::Unsupported(other.name()).into()),
        }
    }

    async fn message(
        &self,
        to: &str,
        content: &Content,
        event: &Event,
    ) -> Result<Option<String>, Failure> {
        let (max_chars, max_bytes) = self.kind().max_text();
        let mut first: Option<String> = None;
        for (n, piece) in split_text(&body(content), max_chars, max_bytes)
            .into_iter()
            .enumerate()
        {
            let mut text = self.text_body(to, &piece);
            if let (0, Some(reply), Kind::WhatsApp, Some(obj)) =
                (n, &event.reply_to, self.kind(), text.as_object_mut())
            {
                obj.insert("context".into(), json!({"message_id": reply.as_str()}));
            }
            self.part(&mut first, &text).await?;
        }
        for att in &content.attachments {
            let file = match self.attachment_body(to, att).await {
                Ok(file) => Some(file),
                Err(f) if f.auth || (first.is_none() && f.error.is_retryable()) => return Err(f),
                Err(f) => {
                    tracing::info!(
                        reason = f.error.reason(),
                        "file not uploaded; sending its link instead"
                    );
                    None
                }
            };
            let sent = match file {
                Some(file) if first.is_none() => match self.post(&file).await {
                    Ok(id) => {
                        first = Some(id);
                        true
                    }
                    Err(e) if e.is_auth() || e.to_send_error().is_retryable() => {
                        return Err(e.into());
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "file refused; sending its link instead");
                        false
                    }
                },
                Some(file) => self.post_later(&file).await.is_some(),
                None => false,
            };
            if !sent {
                let link = format!("{}: {}", att.name.as_str(), att.url.as_str());
                self.part(&mut first, &self.text_body(to, &link)).await?;
            }
        }
        first
            .map(Some)
            .ok_or_else(|| SendError::Rejected("empty message".into()).into())
    }

    /// A text message to `to`.
    fn text_body(&self, to: &str, text: &str) -> Value {
        match self.kind() {
            Kind::WhatsApp => self.envelope(
                to,
                json!({"type": "text", "text": {"preview_url": false, "body": text}}),
            ),
            _ => self.envelope(to, json!({"text": text})),
        }
    }

    /// Sends one part of a message: the first with its errors (nothing is out yet), a later one
    /// retried in place.
    async fn part(&self, first: &mut Option<String>, body: &Value) -> Result<(), Failure> {
        if first.is_none() {
            *first = Some(self.post(body).await?);
        } else {
            self.post_later(body).await;
        }
        Ok(())
    }

    /// The send body for one file: WhatsApp uploads it first (`/media`) and sends its id;
    /// Messenger and Instagram send its link, which Meta fetches.
    async fn attachment_body(&self, to: &str, att: &Attachment) -> Result<Value, Failure> {
        match self.kind() {
            Kind::WhatsApp => {
                let fetched = passerelle_sdk::fetch::fetch(
                    att,
                    self.config.media.max_upload_bytes,
                    self.config.media.fetch_private,
                )
                .await?;
                let name = att.name.as_str().to_owned();
                let part = reqwest::multipart::Part::bytes(fetched.data)
                    .file_name(name.clone())
                    .mime_str(&fetched.mime)
                    .map_err(|_| SendError::Rejected("file type not understood".into()))?;
                let form = reqwest::multipart::Form::new()
                    .text("messaging_product", "whatsapp")
                    .text("type", fetched.mime.clone())
                    .part("file", part);
                let answer = self
                    .graph
                    .post_form(&format!("{}/media", self.config.id), form)
                    .await?;
                let id = answer
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| GraphError::Unexpected("upload answer without id".into()))?;
                let kind = whatsapp_type(&fetched.mime);
                let mut media = json!({"id": id});
                if kind == "document" {
                    media["filename"] = json!(name);
                }
                Ok(self.envelope(to, json!({"type": kind, kind: media})))
            }
            Kind::Messenger | Kind::Instagram => Ok(self.envelope(
                to,
                json!({"attachment": {
                    "type": messenger_type(att.mime.as_deref()),
                    "payload": {"url": att.url.as_str(), "is_reusable": true}
                }}),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types() {
        assert_eq!(whatsapp_type("image/jpeg"), "image");
        assert_eq!(whatsapp_type("image/gif"), "document");
        assert_eq!(whatsapp_type("audio/ogg; codecs=opus"), "audio");
        assert_eq!(messenger_type(Some("video/mp4")), "video");
        assert_eq!(messenger_type(None), "file");
    }
}

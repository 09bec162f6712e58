//! Events to signal-cli calls: `send` (with `quoteTimestamp`/`quoteAuthor` for a reply,
//! `editTimestamp` for an edit, files as `data:` URIs in `attachments`), `sendReaction` and
//! `remoteDelete`. Signal lets us edit and delete only our own messages.

use crate::config::{Settings, group_of};
use crate::rpc::{Rpc, RpcError, results_error};
use base64::Engine;
use passerelle_sdk::{Content, Event, EventKind, MessageKind, RemoteMessageId, SendError};
use serde_json::{Value, json};

/// Splits a message id `<timestamp>@<author>`.
pub fn split_id(id: &RemoteMessageId) -> Option<(u64, &str)> {
    let (ts, author) = id.as_str().split_once('@')?;
    Some((ts.parse().ok()?, author))
}

/// Sends events for one account.
pub struct Sender<'a> {
    /// The daemon.
    pub rpc: &'a Rpc,
    /// The config.
    pub config: &'a Settings,
}

fn unknown() -> SendError {
    SendError::Rejected("not a Signal message id".into())
}

impl Sender<'_> {
    fn target(&self, room: &str) -> Value {
        match group_of(room) {
            Some(g) => json!({"groupId": g}),
            None => json!({"recipient": [room]}),
        }
    }

    fn own(&self, id: &RemoteMessageId) -> Result<u64, SendError> {
        match split_id(id) {
            Some((ts, author)) if author == self.config.account => Ok(ts),
            Some(_) => Err(SendError::Rejected(
                "Signal lets us change only our own messages".into(),
            )),
            None => Err(unknown()),
        }
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, SendError> {
        let result = self
            .rpc
            .call(method, params)
            .await
            .map_err(|e| e.to_send_error())?;
        match results_error(&result) {
            Some(e) => Err(e.to_send_error()),
            None => Ok(result),
        }
    }

    /// Sends `event` to its room; the id of the message it made.
    pub async fn send(&self, event: &Event) -> Result<Option<String>, SendError> {
        let room = event.room.as_str();
        let mut params = self.target(room);
        match &event.kind {
            EventKind::Message(content) => {
                let (text, files) = self.body(content).await?;
                params["message"] = json!(text);
                if !files.is_empty() {
                    params["attachments"] = json!(files);
                }
                if let Some((ts, author)) = event.reply_to.as_ref().and_then(split_id) {
                    params["quoteTimestamp"] = json!(ts);
                    params["quoteAuthor"] = json!(author);
                }
                let result = self.call("send", params).await?;
                let ts = result
                    .get("timestamp")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| {
                        SendError::Rejected("send answered without a timestamp".into())
                    })?;
                Ok(Some(format!("{ts}@{}", self.config.account)))
            }
            EventKind::Edit { target, content } => {
                params["editTimestamp"] = json!(self.own(target)?);
                params["message"] = json!(text_of(content));
                self.call("send", params).await?;
                Ok(None)
            }
            EventKind::Delete { target } => {
                params["targetTimestamp"] = json!(self.own(target)?);
                self.call("remoteDelete", params).await?;
                Ok(None)
            }
            EventKind::Reaction {
                target,
                key,
                removed,
            } => {
                let (ts, author) = split_id(target).ok_or_else(unknown)?;
                params["emoji"] = json!(key.as_str());
                params["targetAuthor"] = json!(author);
                params["targetTimestamp"] = json!(ts);
                params["remove"] = json!(removed);
                self.call("sendReaction", params).await?;
                Ok(None)
            }
            other => Err(SendError::Unsupported(other.name())),
        }
    }

    /// The text and the `data:` URIs of a message's files. A file that can't be fetched is sent as
    /// its link in the text; a retryable failure fails the send (nothing was sent yet).
    async fn body(&self, content: &Content) -> Result<(String, Vec<String>), SendError> {
        let mut text = text_of(content);
        let mut files = Vec::new();
        for att in &content.attachments {
            match passerelle_sdk::fetch::fetch(
                att,
                self.config.media.max_upload_bytes,
                self.config.media.fetch_private,
            )
            .await
            {
                Ok(f) => {
                    let name: String = att
                        .name
                        .as_str()
                        .chars()
                        .filter(|c| !matches!(c, ';' | ',' | '\n' | '\r'))
                        .collect();
                    files.push(format!(
                        "data:{};filename={};base64,{}",
                        f.mime,
                        name,
                        base64::engine::general_purpose::STANDARD.encode(&f.data)
                    ));
                }
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::info!(
                        reason = e.reason(),
                        "file not fetched; sending its link instead"
                    );
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("{}: {}", att.name.as_str(), att.url.as_str()));
                }
            }
        }
        Ok((text, files))
    }
}

fn text_of(content: &Content) -> String {
    match content.kind {
        MessageKind::Emote => format!("/me {}", content.text.as_str()),
        _ => content.text.as_str().to_owned(),
    }
}

/// Whether a failure of the event stream or a call means signal-cli is gone.
pub fn is_unreachable(e: &RpcError) -> bool {
    matches!(e, RpcError::Unreachable(_))
}

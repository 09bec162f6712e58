//! What both modes do the same way when they send: a message with files goes as its text first
//! (when there is any), then one event per file, each with a transaction id derived from the
//! event key, so a retry after a partial failure repeats nothing; a file that can't be fetched
//! goes as its link. And the state key a sent reaction is remembered under, for its removal.

use crate::{media, translate};
use passerelle_sdk::fetch::Fetched;
use passerelle_sdk::{Attachment, Event, EventKind, Outbound, Receipt, RemoteMessageId, SendError};
use serde_json::{Value, json};
use tracing::debug;

/// How one mode puts events into a room.
pub(crate) trait Carrier {
    /// Sends an event without files as one Matrix event.
    async fn event(&mut self, out: &Outbound, event: &Event) -> Result<Receipt, SendError>;
    /// Gets the room ready for a message's files (the appservice's ghost registered and joined).
    async fn before_files(&mut self, out: &Outbound) -> Result<(), SendError>;
    /// Sends one fetched file as its own event, under `txn`; its id, when the homeserver gave one.
    async fn file(
        &mut self,
        out: &Outbound,
        txn: String,
        att: &Attachment,
        file: Fetched,
    ) -> Result<Option<RemoteMessageId>, SendError>;
    /// Sends a message `content` (a file's link) as its own event, under `txn`.
    async fn content(
        &mut self,
        out: &Outbound,
        txn: String,
        content: Value,
    ) -> Result<Option<RemoteMessageId>, SendError>;
    /// The largest file fetched, and whether private addresses may be fetched.
    fn fetch_limits(&self) -> (u64, bool);
}

/// Sends `out` through `carrier`: one event, or a message's text and then each of its files. The
/// receipt names the first Matrix event sent.
pub(crate) async fn send(carrier: &mut impl Carrier, out: &Outbound) -> Result<Receipt, SendError> {
    let event: &Event = &out.event;
    let files = match &event.kind {
        EventKind::Message(content) if !content.attachments.is_empty() => &content.attachments,
        _ => return carrier.event(out, event).await,
    };
    let mut first = None;
    if let EventKind::Message(content) = &event.kind
        && !content.text.is_empty()
    {
        let mut text_only = event.clone();
        if let EventKind::Message(c) = &mut text_only.kind {
            c.attachments.clear();
        }
        first = carrier.event(out, &text_only).await?.remote_id;
    }
    carrier.before_files(out).await?;
    let (max, private) = carrier.fetch_limits();
    for (i, att) in files.iter().enumerate() {
        let txn = file_txn(event, i);
        let id = match passerelle_sdk::fetch::fetch(att, max, private).await {
            Ok(file) => carrier.file(out, txn, att, file).await?,
            // A file that can't be fetched (gone, refused, too large, a host that does not
            // resolve) goes as its link: retrying would hold the room for nothing.
            Err(e) => {
                debug!(
                    reason = e.reason(),
                    "attachment not fetched; its link is sent"
                );
                carrier.content(out, txn, link_content(att)).await?
            }
        };
        if first.is_none() {
            first = id;
        }
    }
    Ok(Receipt { remote_id: first })
}

/// The transaction id of a message's `index`th file.
fn file_txn(event: &Event, index: usize) -> String {
    translate::txn_id(&event.key, &format!("a{index}"))
}

/// The message content that stands for a file not fetched: its link, pinging nobody.
fn link_content(att: &Attachment) -> Value {
    json!({"msgtype": "m.text", "body": media::link_text(att), "m.mentions": {}})
}

/// The connector-state key of the Matrix event a reaction was sent as (by `sender`, on `target`
/// in `room`), so that removing the reaction redacts it.
pub(crate) fn reaction_key(room: &str, target: &str, key: &str, sender: &str) -> String {
    passerelle_sdk::state::key(&["reaction", room, target, key, sender])
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_sdk::{AccountId, Content, Sender};

    /// Records what a mode was asked to send, without a homeserver.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<String>,
    }

    impl Carrier for Recorder {
        async fn event(&mut self, _: &Outbound, event: &Event) -> Result<Receipt, SendError> {
            let EventKind::Message(c) = &event.kind else {
                return Err(SendError::Unsupported("test"));
            };
            let text = if c.text.is_empty() { "no text" } else { "text" };
            self.sent
                .push(format!("{text}, {} files", c.attachments.len()));
            Ok(Receipt {
                remote_id: Some(RemoteMessageId::new("$text")),
            })
        }
        async fn before_files(&mut self, _: &Outbound) -> Result<(), SendError> {
            self.sent.push("ready".into());
            Ok(())
        }
        async fn file(
            &mut self,
            _: &Outbound,
            txn: String,
            _: &Attachment,
            _: Fetched,
        ) -> Result<Option<RemoteMessageId>, SendError> {
            self.sent.push(format!("file {txn}"));
            Ok(Some(RemoteMessageId::new("$file")))
        }
        async fn content(
            &mut self,
            _: &Outbound,
            txn: String,
            content: Value,
        ) -> Result<Option<RemoteMessageId>, SendError> {
            let msgtype = content["msgtype"].as_str().unwrap_or("");
            self.sent.push(format!("link {txn} {msgtype}"));
            Ok(Some(RemoteMessageId::new(format!(
                "$link{}",
                self.sent.len()
            ))))
        }
        fn fetch_limits(&self) -> (u64, bool) {
            (1024, false)
        }
    }

    fn outbound(text: &str, files: usize) -> Outbound {
        let attachments = (0..files)
            .map(|i| Attachment {
                name: format!("f{i}").into(),
                mime: None,
                size: None,
                // Refused before any connection: not http(s).
                url: format!("file:///etc/f{i}").into(),
            })
            .collect();
        let content = Content {
            text: text.into(),
            attachments,
            ..Content::default()
        };
        let event = Event::new("r", Sender::new("u"), EventKind::Message(content));
        Outbound::new(event, AccountId::new("o"), "l".into()).0
    }

    #[tokio::test]
    async fn a_message_with_files_goes_as_its_text_then_one_event_per_file() {
        let mut r = Recorder::default();
        let out = outbound("hello", 2);
        let receipt = send(&mut r, &out).await.unwrap();
        let (a0, a1) = (file_txn(&out.event, 0), file_txn(&out.event, 1));
        assert_ne!(a0, a1);
        assert_eq!(
            r.sent,
            [
                "text, 0 files".to_owned(),
                "ready".to_owned(),
                format!("link {a0} m.text"),
                format!("link {a1} m.text"),
            ]
        );
        assert_eq!(receipt.remote_id, Some(RemoteMessageId::new("$text")));
    }

    #[tokio::test]
    async fn files_without_text_are_answered_with_the_first_files_event() {
        let mut r = Recorder::default();
        let receipt = send(&mut r, &outbound("", 1)).await.unwrap();
        assert_eq!(r.sent.len(), 2, "{:?}", r.sent);
        assert_eq!(receipt.remote_id, Some(RemoteMessageId::new("$link2")));
        let mut r = Recorder::default();
        send(&mut r, &outbound("plain", 0)).await.unwrap();
        assert_eq!(r.sent, ["text, 0 files"]);
    }
}

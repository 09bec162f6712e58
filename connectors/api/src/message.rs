//! The matterbridge API message shape, and its translation to and from passerelle events.

use passerelle_sdk::{
    Content, Event, EventKind, MessageKind, Outbound, RoomId, SendError, Sender, Text,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};

/// matterbridge's `config.Message` as its API reads and writes it. Every field is optional on
/// input; unknown fields are ignored, as matterbridge does.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiMessage {
    /// The body.
    pub text: String,
    /// The origin channel (informational).
    pub channel: String,
    /// The sender's display name.
    pub username: String,
    /// The sender's id.
    pub userid: String,
    /// The sender's avatar URL.
    pub avatar: String,
    /// The account the message came from.
    pub account: String,
    /// `""`, `"user_action"`, `"msg_delete"`, `"topic_change"`.
    pub event: String,
    /// The origin protocol (informational).
    pub protocol: String,
    /// The gateway: the API room (link room) the message belongs to.
    pub gateway: String,
    /// The id of the message this one answers.
    pub parent_id: String,
    /// RFC 3339 time.
    pub timestamp: String,
    /// The message id (set by the API).
    pub id: String,
    /// matterbridge's free-form extras; kept for compatibility, not interpreted.
    #[serde(rename = "Extra")]
    pub extra: serde_json::Value,
    /// Whether `id` is new (a message) rather than the id of an edited or deleted one.
    #[serde(skip)]
    pub new_id: bool,
}

/// Why a post was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostError {
    /// HTTP status.
    pub status: u16,
    /// A content-free explanation.
    pub message: String,
}

impl PostError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }
}

/// A fresh message id.
pub fn new_message_id() -> String {
    format!("api-{}", uuid::Uuid::now_v7().simple())
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl ApiMessage {
    /// Turns a posted message into an event for one of `rooms`, assigning ids. Returns the event and
    /// the message as it will be answered (with its id and timestamp).
    pub fn into_event(mut self, rooms: &[RoomId]) -> Result<(Event, ApiMessage), PostError> {
        if self.gateway.is_empty() {
            return Err(PostError::bad("gateway: missing"));
        }
        if !rooms.iter().any(|r| r.as_str() == self.gateway) {
            return Err(PostError {
                status: 404,
                message: "gateway: not linked to this API account".into(),
            });
        }
        if self.username.is_empty() {
            self.username = "api".into();
        }
        let mut sender = Sender::new(if self.userid.is_empty() {
            self.username.clone()
        } else {
            self.userid.clone()
        });
        sender.display_name = Some(self.username.clone());
        sender.avatar_url = (!self.avatar.is_empty()).then(|| self.avatar.clone());
        let text = Text::new(self.text.clone());
        let kind = match (self.event.as_str(), self.id.is_empty()) {
            ("", true) | ("user_action", true) => {
                if self.text.is_empty() {
                    return Err(PostError::bad("text: missing"));
                }
                let mut content = Content {
                    text,
                    ..Content::default()
                };
                if self.event == "user_action" {
                    content.kind = MessageKind::Emote;
                }
                self.id = new_message_id();
                self.new_id = true;
                EventKind::Message(content)
            }
            ("", false) => {
                if self.text.is_empty() {
                    return Err(PostError::bad("text: missing"));
                }
                EventKind::Edit {
                    target: self.id.clone().into(),
                    content: Content {
                        text,
                        ..Content::default()
                    },
                }
            }
            ("msg_delete", false) => EventKind::Delete {
                target: self.id.clone().into(),
            },
            ("msg_delete", true) => {
                return Err(PostError::bad(
                    "id: missing (msg_delete needs the id to delete)",
                ));
            }
            ("topic_change", _) => EventKind::Topic(text),
            ("user_action", false) => {
                return Err(PostError::bad("id: a user_action can't edit a message"));
            }
            _ => {
                return Err(PostError::bad(
                    "event: unknown (expected \"\", user_action, msg_delete, topic_change)",
                ));
            }
        };
        let mut event = Event::new(self.gateway.as_str(), sender, kind);
        if self.new_id {
            event.remote_id = Some(self.id.clone().into());
        } else {
            // Edits and deletes get their own id, so that the map can record them.
            event.remote_id = Some(new_message_id().into());
        }
        if !self.parent_id.is_empty() {
            event.reply_to = Some(self.parent_id.clone().into());
        }
        self.timestamp = rfc3339(event.at.0);
        self.account.clear();
        self.protocol = "api".into();
        Ok((event, self))
    }

    /// The message a stream client sees for an outbound event.
    pub fn from_outbound(outbound: &Outbound) -> Result<ApiMessage, SendError> {
        let e = &outbound.event;
        let mut msg = ApiMessage {
            username: e.sender.name().to_owned(),
            userid: e.sender.id.to_string(),
            avatar: e.sender.avatar_url.clone().unwrap_or_default(),
            account: outbound.origin.to_string(),
            gateway: e.room.to_string(),
            channel: "api".into(),
            protocol: "api".into(),
            parent_id: e
                .reply_to
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            timestamp: rfc3339(e.at.0),
            ..ApiMessage::default()
        };
        match &e.kind {
            EventKind::Message(content) => {
                msg.text = content.text.as_str().to_owned();
                if content.kind == MessageKind::Emote {
                    msg.event = "user_action".into();
                }
                msg.id = new_message_id();
                msg.new_id = true;
            }
            EventKind::Edit { target, content } => {
                msg.text = content.text.as_str().to_owned();
                msg.id = target.to_string();
            }
            EventKind::Delete { target } => {
                msg.event = "msg_delete".into();
                msg.id = target.to_string();
            }
            EventKind::Topic(topic) => {
                msg.event = "topic_change".into();
                msg.text = topic.as_str().to_owned();
            }
            _ => {
                return Err(SendError::Unsupported(
                    "the API carries messages, edits, deletes and topics",
                ));
            }
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms() -> Vec<RoomId> {
        vec!["lobby".into()]
    }

    #[test]
    fn posts_become_events() {
        let msg: ApiMessage = serde_json::from_str(
            r#"{"text":"hi","username":"bot","gateway":"lobby","parent_id":"api-1"}"#,
        )
        .unwrap();
        let (event, answer) = msg.into_event(&rooms()).unwrap();
        assert!(matches!(event.kind, EventKind::Message(ref c) if c.text.as_str() == "hi"));
        assert_eq!(event.reply_to, Some("api-1".into()));
        assert_eq!(event.sender.name(), "bot");
        assert!(answer.id.starts_with("api-"));
        assert_eq!(
            event.remote_id.as_ref().map(|r| r.as_str()),
            Some(answer.id.as_str())
        );

        let edit: ApiMessage =
            serde_json::from_str(r#"{"text":"hi!","gateway":"lobby","id":"api-1"}"#).unwrap();
        let (event, _) = edit.into_event(&rooms()).unwrap();
        assert!(
            matches!(event.kind, EventKind::Edit { ref target, .. } if target.as_str() == "api-1")
        );
        let delete: ApiMessage =
            serde_json::from_str(r#"{"event":"msg_delete","gateway":"lobby","id":"api-1"}"#)
                .unwrap();
        let (event, _) = delete.into_event(&rooms()).unwrap();
        assert!(matches!(event.kind, EventKind::Delete { .. }));
    }

    #[test]
    fn bad_posts_are_refused_with_the_field_named() {
        let cases = [
            (r#"{"text":"hi"}"#, 400, "gateway: missing"),
            (
                r#"{"text":"hi","gateway":"elsewhere"}"#,
                404,
                "gateway: not linked",
            ),
            (r#"{"gateway":"lobby"}"#, 400, "text: missing"),
            (
                r#"{"text":"x","gateway":"lobby","event":"explode"}"#,
                400,
                "event: unknown",
            ),
            (
                r#"{"gateway":"lobby","event":"msg_delete"}"#,
                400,
                "id: missing",
            ),
        ];
        for (body, status, start) in cases {
            let msg: ApiMessage = serde_json::from_str(body).unwrap();
            let err = msg.into_event(&rooms()).unwrap_err();
            assert_eq!(err.status, status, "{body}");
            assert!(err.message.starts_with(start), "{body}: {}", err.message);
        }
    }
}

//! The event model carried on the bus.
//!
//! One [`Event`] type serves both directions. Inbound (connector to core), its message ids
//! (`remote_id`, `reply_to`, `thread_root` and the targets inside [`EventKind`]) are ids on the
//! origin account. Outbound (core to connector), the core has already translated them into ids on the
//! destination account, and left out the ones that have no counterpart there.

use crate::content::{Content, Text};
use crate::ids::{EventKey, RemoteMessageId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The time `secs` seconds after the epoch (a network's value: saturates instead of
    /// overflowing).
    pub fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// The current time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self(ms)
    }
}

/// Who sent an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The sender's id on the origin account's network.
    pub id: UserId,
    /// The name to show, when it differs from the id.
    pub display_name: Option<String>,
    /// An avatar URL, when the network has one.
    pub avatar_url: Option<String>,
}

impl Sender {
    /// A sender known only by id.
    pub fn new(id: impl Into<UserId>) -> Self {
        Self {
            id: id.into(),
            display_name: None,
            avatar_url: None,
        }
    }
    /// The name to show: the display name, else the id.
    pub fn name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(self.id.as_str())
    }
}

/// A change of a member's presence in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MembershipChange {
    /// The sender joined.
    Join,
    /// The sender left.
    Leave,
    /// The sender was removed by someone else.
    Kick,
    /// The sender was banned.
    Ban,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new message.
    Message(Content),
    /// A message was changed; `content` is its whole new content.
    Edit {
        /// The edited message.
        target: RemoteMessageId,
        /// The new content.
        content: Content,
    },
    /// A message was removed.
    Delete {
        /// The removed message.
        target: RemoteMessageId,
    },
    /// A reaction was added (or, with `removed`, taken back).
    Reaction {
        /// The message reacted to.
        target: RemoteMessageId,
        /// The reaction, usually one emoji.
        key: Text,
        /// Whether the reaction was taken back.
        removed: bool,
    },
    /// The sender's membership of the room changed.
    Membership(MembershipChange),
    /// The room's topic was set.
    Topic(Text),
    /// The sender started (`true`) or stopped typing.
    Typing(bool),
}

impl EventKind {
    /// A short, content-free name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::Reaction { .. } => "reaction",
            Self::Membership(_) => "membership",
            Self::Topic(_) => "topic",
            Self::Typing(_) => "typing",
        }
    }
}

/// One event on the bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The core's id of this event, the same on every network it reaches.
    pub key: EventKey,
    /// The room it happened in (inbound) or goes to (outbound).
    pub room: RoomId,
    /// Who did it.
    pub sender: Sender,
    /// When it happened on the origin network.
    pub at: Timestamp,
    /// The message's id on the origin network, when it has one (inbound only).
    pub remote_id: Option<RemoteMessageId>,
    /// The message this one answers.
    pub reply_to: Option<RemoteMessageId>,
    /// The first message of the thread this one belongs to.
    pub thread_root: Option<RemoteMessageId>,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// A new event with a fresh key, stamped now, without ids or relations.
    pub fn new(room: impl Into<RoomId>, sender: Sender, kind: EventKind) -> Self {
        Self {
            key: EventKey::new(),
            room: room.into(),
            sender,
            at: Timestamp::now(),
            remote_id: None,
            reply_to: None,
            thread_root: None,
            kind,
        }
    }

    /// Sets the origin network's message id.
    pub fn with_remote_id(mut self, id: impl Into<RemoteMessageId>) -> Self {
        self.remote_id = Some(id.into());
        self
    }

    /// Marks the event as an answer to `target`.
    pub fn replying_to(mut self, target: impl Into<RemoteMessageId>) -> Self {
        self.reply_to = Some(target.into());
        self
    }

    /// The message content, for messages and edits.
    pub fn content(&self) -> Option<&Content> {
        match &self.kind {
            EventKind::Message(c) | EventKind::Edit { content: c, .. } => Some(c),
            _ => None,
        }
    }
}

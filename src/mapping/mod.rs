//! The message map: translates message ids between networks through the store, so replies,
//! threads, edits, deletes and reactions find their counterparts, across restarts.

use crate::store::{Store, StoreError};
use passerelle_sdk::{AccountId, Event, EventKey, EventKind, RoomId};
use std::sync::Arc;

/// An inbound event's relations, as core keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relations {
    /// The replied-to event.
    pub reply_to: Option<EventKey>,
    /// The thread root.
    pub thread_root: Option<EventKey>,
    /// The edited, deleted or reacted-to event.
    pub target: Option<EventKey>,
    /// Whether the event named a target (edit/delete/reaction) that the map does not know.
    pub unknown_target: bool,
}

/// Id translation over the store.
#[derive(Clone)]
pub struct MessageMap {
    store: Arc<dyn Store>,
}

impl MessageMap {
    /// A map over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Translates an inbound event's remote ids (on `account`, in its room) into core keys. A
    /// message that replies inside a thread inherits the replied message's thread.
    pub async fn inbound(
        &self,
        account: &AccountId,
        event: &Event,
    ) -> Result<Relations, StoreError> {
        let room = &event.room;
        let mut rel = Relations::default();
        if let Some(id) = &event.reply_to
            && let Some(info) = self.store.find_by_remote(account, room, id).await?
        {
            rel.reply_to = Some(info.key);
            rel.thread_root = info.thread_root;
        }
        if let Some(id) = &event.thread_root {
            rel.thread_root = self
                .store
                .find_by_remote(account, room, id)
                .await?
                .map(|i| i.key);
        }
        let target = match &event.kind {
            EventKind::Edit { target, .. }
            | EventKind::Delete { target }
            | EventKind::Reaction { target, .. } => Some(target),
            _ => None,
        };
        if let Some(id) = target {
            rel.target = self
                .store
                .find_by_remote(account, room, id)
                .await?
                .map(|i| i.key);
            rel.unknown_target = rel.target.is_none();
        }
        Ok(rel)
    }

    /// The id of `key` on (account, room).
    pub async fn remote_id(
        &self,
        key: EventKey,
        account: &AccountId,
        room: &RoomId,
    ) -> Result<Option<passerelle_sdk::RemoteMessageId>, StoreError> {
        self.store.remote_id(key, account, room).await
    }

    /// The id of `key` on (account, room), and the name of its original sender.
    pub async fn outbound(
        &self,
        key: EventKey,
        account: &AccountId,
        room: &RoomId,
    ) -> Result<(Option<passerelle_sdk::RemoteMessageId>, Option<String>), StoreError> {
        let remote = self.store.remote_id(key, account, room).await?;
        let sender = self.store.event_info(key).await?.map(|i| i.sender_name);
        Ok((remote, sender))
    }
}

//! The message map: translates message ids between networks through the store, so replies,
//! threads, edits, deletes and reactions find their counterparts, across restarts.

use crate::store::{Store, StoreError};
use passerelle_sdk::{AccountId, Event, EventKey, EventKind, RemoteMessageId, RoomId};
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
    /// Whether the target is known and was sent by this event's sender: the same account and
    /// the same sender id. Only then is an edit or a deletion the author's own.
    pub target_by_author: bool,
}

/// The destinations' ids of deliveries that were answered but whose receipts the recorder has
/// not written yet (it writes them in batches). An answer to a message can reach the router in
/// that moment (the destination showed the message at once); looking here finds it without
/// waiting. Entries live from the lane's receipt to the recorder's write.
#[derive(Clone, Default)]
pub struct PendingReceipts {
    ids: Arc<dashmap::DashMap<(AccountId, RoomId, RemoteMessageId), EventKey>>,
    /// Sends handed to a connector whose answer has not been taken in yet, per destination.
    in_flight: Arc<dashmap::DashMap<(AccountId, RoomId), usize>>,
}

/// One send in flight to a destination, until dropped.
pub struct InFlight {
    pending: PendingReceipts,
    at: (AccountId, RoomId),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let gone = match self.pending.in_flight.get_mut(&self.at) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if gone {
            self.pending.in_flight.remove_if(&self.at, |_, n| *n == 0);
        }
    }
}

impl PendingReceipts {
    /// A send to (account, room) is handed over; it counts as in flight until the guard is
    /// dropped, after its receipt (if any) was recorded here.
    pub fn send_begins(&self, account: &AccountId, room: &RoomId) -> InFlight {
        let at = (account.clone(), room.clone());
        *self.in_flight.entry(at.clone()).or_insert(0) += 1;
        InFlight {
            pending: self.clone(),
            at,
        }
    }

    /// Whether a send to (account, room) is on its way: an answer to it may name a message
    /// whose id is not known yet.
    pub fn sending_to(&self, account: &AccountId, room: &RoomId) -> bool {
        self.in_flight
            .get(&(account.clone(), room.clone()))
            .is_some_and(|n| *n > 0)
    }

    /// A destination answered `key` with `remote` on (account, room).
    pub fn record(
        &self,
        account: &AccountId,
        room: &RoomId,
        remote: &RemoteMessageId,
        key: EventKey,
    ) {
        self.ids
            .insert((account.clone(), room.clone(), remote.clone()), key);
    }

    /// The receipt is in the store now.
    pub fn written(&self, account: &AccountId, room: &RoomId, remote: &RemoteMessageId) {
        self.ids
            .remove(&(account.clone(), room.clone(), remote.clone()));
    }

    fn find(
        &self,
        account: &AccountId,
        room: &RoomId,
        remote: &RemoteMessageId,
    ) -> Option<EventKey> {
        self.ids
            .get(&(account.clone(), room.clone(), remote.clone()))
            .map(|k| *k)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Id translation over the store (and the receipts still on their way to it).
#[derive(Clone)]
pub struct MessageMap {
    store: Arc<dyn Store>,
    pending: PendingReceipts,
}

impl MessageMap {
    /// A map over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_pending(store, PendingReceipts::default())
    }

    /// The receipts on their way (shared with the lanes).
    pub fn pending(&self) -> &PendingReceipts {
        &self.pending
    }

    /// A map over `store` that also looks at receipts not written yet.
    pub fn with_pending(store: Arc<dyn Store>, pending: PendingReceipts) -> Self {
        Self { store, pending }
    }

    /// The event with `id` on (account, room): from the store, or from a receipt on its way.
    async fn find(
        &self,
        account: &AccountId,
        room: &RoomId,
        id: &RemoteMessageId,
    ) -> Result<Option<crate::store::EventInfo>, StoreError> {
        if let Some(info) = self.store.find_by_remote(account, room, id).await? {
            return Ok(Some(info));
        }
        match self.pending.find(account, room, id) {
            Some(key) => self.store.event_info(key).await,
            None => Ok(None),
        }
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
            && let Some(info) = self.find(account, room, id).await?
        {
            rel.reply_to = Some(info.key);
            rel.thread_root = info.thread_root;
        }
        if let Some(id) = &event.thread_root {
            rel.thread_root = self.find(account, room, id).await?.map(|i| i.key);
        }
        let target = match &event.kind {
            EventKind::Edit { target, .. }
            | EventKind::Delete { target }
            | EventKind::Reaction { target, .. } => Some(target),
            _ => None,
        };
        if let Some(id) = target {
            let info = self.find(account, room, id).await?;
            rel.target_by_author = info.as_ref().is_some_and(|i| {
                i.account == *account && i.sender_id.as_deref() == Some(event.sender.id.as_str())
            });
            rel.target = info.map(|i| i.key);
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

#[cfg(test)]
mod pending_tests {
    use super::*;
    use crate::store::NewEvent;
    use crate::store::sqlite::SqliteStore;
    use passerelle_sdk::{Content, Sender, Timestamp};

    #[tokio::test]
    async fn a_reply_finds_a_message_whose_receipt_is_not_written_yet() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let pending = PendingReceipts::default();
        let map = MessageMap::with_pending(store.clone(), pending.clone());
        // Bridged from `irc` to `matrix`; the destination answered `$m1`, not yet recorded.
        let key = EventKey::new();
        store
            .accept(
                NewEvent {
                    key,
                    account: "irc".into(),
                    room: "#a".into(),
                    remote_id: None,
                    sender_name: "bob".into(),
                    sender_id: "bob".into(),
                    thread_root: None,
                    at: Timestamp::now(),
                },
                vec![],
            )
            .await
            .unwrap();
        let (matrix, room) = (AccountId::new("matrix"), RoomId::new("!r"));
        let mut reply = Event::new(
            "!r",
            Sender::new("@alice:hs"),
            EventKind::Message(Content::plain("yes")),
        );
        reply.reply_to = Some("$m1".into());
        assert_eq!(map.inbound(&matrix, &reply).await.unwrap().reply_to, None);
        pending.record(&matrix, &room, &"$m1".into(), key);
        assert_eq!(
            map.inbound(&matrix, &reply).await.unwrap().reply_to,
            Some(key)
        );
        pending.written(&matrix, &room, &"$m1".into());
        assert!(pending.is_empty());
    }
}

//! Persistence: the message map, inbound dedupe, the durable outbox and connector state.
//!
//! [`Store`] is the one storage trait; [`sqlite::SqliteStore`] is the embedded default and
//! [`postgres::PostgresStore`] the shared one (`store.url`). Any backend must pass the
//! conformance tests in [`conformance`] (run with [`store_conformance!`]). The store
//! keeps ids and mapping only; outbox payloads are sealed by [`seal::Sealer`] before they reach it
//! and deleted on delivery.

pub mod conformance;
pub mod migrate;
pub mod postgres;
pub mod seal;
pub mod sqlite;

use async_trait::async_trait;
use passerelle_sdk::{AccountId, EventKey, RemoteMessageId, RoomId, Timestamp};

/// A storage failure. Carries no message content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("database: {0}")]
    Database(String),
    /// The database cannot be reached (refused, timed out, or the connection dropped): worth
    /// trying again once it is back.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database was written by a newer passerelle.
    #[error("the store has schema version {found}, newer than this passerelle knows ({known})")]
    TooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
}

/// Where an event was first seen, recorded when it is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Its key.
    pub key: EventKey,
    /// Origin account.
    pub account: AccountId,
    /// Origin room.
    pub room: RoomId,
    /// Its id on the origin network, when it has one (dedupe and reply translation use it).
    pub remote_id: Option<RemoteMessageId>,
    /// The sender's display name, for quoted-reply fallbacks.
    pub sender_name: String,
    /// The sender's id on the origin network: who may edit or delete it as its author.
    pub sender_id: String,
    /// The thread it belongs to.
    pub thread_root: Option<EventKey>,
    /// When the daemon received it (not the network's timestamp): the message map's retention
    /// and its deliveries' age in the outbox are dated by it.
    pub at: Timestamp,
}

/// What the map knows of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInfo {
    /// Its key.
    pub key: EventKey,
    /// Origin account.
    pub account: AccountId,
    /// The sender's display name.
    pub sender_name: String,
    /// The thread it belongs to.
    pub thread_root: Option<EventKey>,
    /// The sender's id on the origin network; `None` for events stored before the map kept it.
    pub sender_id: Option<String>,
}

/// One queued delivery to one destination room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Assigned by the store, increasing: delivery order within a destination room.
    pub id: i64,
    /// The event it delivers.
    pub key: EventKey,
    /// Destination account.
    pub account: AccountId,
    /// Destination room.
    pub room: RoomId,
    /// The sealed event.
    pub payload: Vec<u8>,
    /// When the daemon received the event (the delivery's age is counted from it).
    pub queued_at: Timestamp,
}

/// What waits for one destination room, and what was given up on there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomCounts {
    /// The destination account.
    pub account: AccountId,
    /// The destination room.
    pub room: RoomId,
    /// Deliveries queued.
    pub queued: u64,
    /// Deliveries given up on, still listed.
    pub dead: u64,
}

/// A delivery to queue (the store assigns the id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// Destination account.
    pub account: AccountId,
    /// Destination room.
    pub room: RoomId,
    /// The sealed event.
    pub payload: Vec<u8>,
}

/// Result of [`Store::accept`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored; the outbox ids of the deliveries, in the order given.
    Stored(Vec<i64>),
    /// The (account, room, remote id) is already mapped: a redelivery or our own echo. Nothing
    /// was written.
    Duplicate,
}

/// One ended delivery: its outbox row, and the destination's id for the event when it gave one.
pub type Completion = (i64, Option<(EventKey, AccountId, RoomId, RemoteMessageId)>);

/// The storage trait every backend implements.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records `event` and queues its deliveries in one transaction, unless its remote id is
    /// already mapped on its account and room.
    async fn accept(
        &self,
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
    ) -> Result<Accepted, StoreError>;

    /// [`Store::accept`] for several events, in order, in as few transactions as the backend
    /// can (the SQLite store: one). A duplicate among them is answered as such and the others
    /// stored; an error stores none of them.
    async fn accept_many(
        &self,
        events: Vec<(NewEvent, Vec<NewDelivery>)>,
    ) -> Result<Vec<Accepted>, StoreError> {
        let mut out = Vec::with_capacity(events.len());
        for (event, deliveries) in events {
            out.push(self.accept(event, deliveries).await?);
        }
        Ok(out)
    }

    /// Ends several deliveries as [`Store::complete`] does, in order, in as few transactions as
    /// the backend can (the SQLite store: one).
    async fn complete_many(&self, done: std::sync::Arc<[Completion]>) -> Result<(), StoreError> {
        for (outbox_id, delivered) in done.iter() {
            self.complete(*outbox_id, delivered.clone()).await?;
        }
        Ok(())
    }

    /// The event an id on (account, room) belongs to.
    async fn find_by_remote(
        &self,
        account: &AccountId,
        room: &RoomId,
        remote: &RemoteMessageId,
    ) -> Result<Option<EventInfo>, StoreError>;

    /// What the map knows of `key`.
    async fn event_info(&self, key: EventKey) -> Result<Option<EventInfo>, StoreError>;

    /// The id `key` has on (account, room), when it reached it.
    async fn remote_id(
        &self,
        key: EventKey,
        account: &AccountId,
        room: &RoomId,
    ) -> Result<Option<RemoteMessageId>, StoreError>;

    /// Queued deliveries to (account, room) with an id above `after`, oldest first, at most `limit`.
    async fn pending(
        &self,
        account: &AccountId,
        room: &RoomId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// The distinct destinations that have queued deliveries.
    async fn pending_destinations(&self) -> Result<Vec<(AccountId, RoomId)>, StoreError>;

    /// How many deliveries are queued in all.
    async fn pending_count(&self) -> Result<u64, StoreError>;

    /// How many deliveries are queued for each account that has any.
    async fn pending_by_account(&self) -> Result<Vec<(AccountId, u64)>, StoreError>;

    /// For each destination room with any: how many deliveries are queued and how many were
    /// given up on (dead letters kept), by account then room.
    async fn room_counts(&self) -> Result<Vec<RoomCounts>, StoreError>;

    /// Ends a delivery: deletes the outbox row and, when the destination gave an id, maps it, in
    /// one transaction.
    async fn complete(
        &self,
        outbox_id: i64,
        delivered: Option<(EventKey, AccountId, RoomId, RemoteMessageId)>,
    ) -> Result<(), StoreError>;

    /// Removes map rows and connector state records older than `before`; returns how many events
    /// were removed.
    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Reads connector state.
    async fn state_get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes connector state. With `recorded_at`, the row is a record that
    /// [`Store::purge_before`] removes once it is older than the cutoff; without, it is kept.
    async fn state_put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
        recorded_at: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// Removes connector state.
    async fn state_delete(&self, account: &AccountId, key: &str) -> Result<(), StoreError>;

    /// Keeps a link made at run time (`rooms`: a JSON list of `{account, room}`). `false` when a
    /// link of that name exists already (it is left as it is).
    async fn add_dynamic_link(&self, name: &str, rooms: String) -> Result<bool, StoreError>;
    /// Every link made at run time, oldest first: (name, rooms JSON).
    async fn dynamic_links(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Gives a delivery up: removes its outbox row and records why (ids only), in one
    /// transaction.
    async fn dead_letter(
        &self,
        entry: &OutboxEntry,
        reason: &'static str,
        attempts: u32,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// The latest deliveries given up on, newest first.
    async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<passerelle_sdk::DeadLetter>, StoreError>;

    /// Keeps a sealed paste (the whole text of a message cut to a destination's lines) until
    /// `expires_at`; the same id again replaces it.
    async fn paste_put(
        &self,
        id: &str,
        expires_at: Timestamp,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// A paste that has not expired at `now`.
    async fn paste_get(&self, id: &str, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError>;

    /// Deletes the pastes expired at `now`; how many.
    async fn paste_purge(&self, now: Timestamp) -> Result<u64, StoreError>;
}

/// Lets connectors reach their state through the SDK's [`passerelle_sdk::StateHandle`].
pub struct StoreState(pub std::sync::Arc<dyn Store>);

impl StoreState {
    /// Writes a value, as a record (purged with the map) when `recorded_at` is set.
    fn write(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
        recorded_at: Option<Timestamp>,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        let (store, account, key) = (self.0.clone(), account.clone(), key.to_owned());
        Box::pin(async move {
            store
                .state_put(&account, &key, value, recorded_at)
                .await
                .map_err(|e| passerelle_sdk::StateError(e.to_string()))
        })
    }
}

impl passerelle_sdk::StateBackend for StoreState {
    fn get(
        &self,
        account: &AccountId,
        key: &str,
    ) -> futures::future::BoxFuture<'static, Result<Option<Vec<u8>>, passerelle_sdk::StateError>>
    {
        let (store, account, key) = (self.0.clone(), account.clone(), key.to_owned());
        Box::pin(async move {
            store
                .state_get(&account, &key)
                .await
                .map_err(|e| passerelle_sdk::StateError(e.to_string()))
        })
    }

    fn put(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        self.write(account, key, value, None)
    }

    fn put_record(
        &self,
        account: &AccountId,
        key: &str,
        value: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        self.write(account, key, value, Some(Timestamp::now()))
    }

    fn delete(
        &self,
        account: &AccountId,
        key: &str,
    ) -> futures::future::BoxFuture<'static, Result<(), passerelle_sdk::StateError>> {
        let (store, account, key) = (self.0.clone(), account.clone(), key.to_owned());
        Box::pin(async move {
            store
                .state_delete(&account, &key)
                .await
                .map_err(|e| passerelle_sdk::StateError(e.to_string()))
        })
    }
}

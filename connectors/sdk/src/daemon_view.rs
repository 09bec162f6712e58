//! A read-only view of the daemon for connectors that report on it (the Matrix connector's
//! management room): every account's kind and connection state, the links, and the deliveries
//! the daemon gave up on.

use crate::connector::ConnectionState;
use crate::event::Timestamp;
use crate::ids::{AccountId, EventKey, RoomId};
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// One account as the daemon sees it.
#[derive(Clone, Debug)]
pub struct AccountStatus {
    /// The account.
    pub account: AccountId,
    /// Its connector kind (`irc`, `matrix`...).
    pub kind: String,
    /// Its connection state now.
    pub state: ConnectionState,
}

/// One link: its name and its rooms.
#[derive(Clone, Debug)]
pub struct LinkSummary {
    /// The link's name.
    pub name: String,
    /// Its rooms, by account.
    pub rooms: Vec<(AccountId, RoomId)>,
}

/// A delivery the daemon gave up on: ids, where it was going and why; never its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The outbox row it was.
    pub id: i64,
    /// The event.
    pub key: EventKey,
    /// Where it was going.
    pub account: AccountId,
    /// The destination room.
    pub room: RoomId,
    /// Why it was given up on (`max_attempts`, `max_age`).
    pub reason: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// When the daemon received the event.
    pub queued_at: Timestamp,
    /// When it was given up on.
    pub dead_at: Timestamp,
}

/// The latest dead letters, shared by the lanes that add them and whoever lists them.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterLog {
    recent: Arc<RwLock<VecDeque<DeadLetter>>>,
}

impl DeadLetterLog {
    /// How many the log keeps (the store keeps them all, until the retention purge).
    pub const KEPT: usize = 200;

    /// Adds one (the oldest beyond [`Self::KEPT`] is forgotten).
    pub fn push(&self, letter: DeadLetter) {
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        recent.push_front(letter);
        recent.truncate(Self::KEPT);
    }

    /// The latest, newest first.
    pub fn recent(&self) -> Vec<DeadLetter> {
        self.recent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

type AccountStates = Vec<(AccountId, String, watch::Receiver<ConnectionState>)>;

#[derive(Default)]
struct Inner {
    /// The accounts and links, replaced whole when the daemon reloads its configuration.
    now: RwLock<(AccountStates, Vec<LinkSummary>)>,
    dead_letters: DeadLetterLog,
}

/// What changes the view: kept by the daemon, never handed to a connector.
pub struct ViewUpdater {
    inner: Arc<Inner>,
}

impl ViewUpdater {
    /// Shows these accounts and links from now on.
    pub fn replace(&self, accounts: AccountStates, links: Vec<LinkSummary>) {
        *self.inner.now.write().unwrap_or_else(|e| e.into_inner()) = (accounts, links);
    }
}

/// The view. Cheap to clone.
#[derive(Clone, Default)]
pub struct DaemonView {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DaemonView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonView")
    }
}

impl DaemonView {
    /// A view over these accounts (id, kind, state receiver) and links.
    pub fn new(
        accounts: Vec<(AccountId, String, watch::Receiver<ConnectionState>)>,
        links: Vec<LinkSummary>,
    ) -> Self {
        Self::with_dead_letters(accounts, links, DeadLetterLog::default())
    }

    /// A view that also lists the deliveries given up on.
    pub fn with_dead_letters(
        accounts: Vec<(AccountId, String, watch::Receiver<ConnectionState>)>,
        links: Vec<LinkSummary>,
        dead_letters: DeadLetterLog,
    ) -> Self {
        Self::updatable(accounts, links, dead_letters).0
    }

    /// A view and what changes it.
    pub fn updatable(
        accounts: Vec<(AccountId, String, watch::Receiver<ConnectionState>)>,
        links: Vec<LinkSummary>,
        dead_letters: DeadLetterLog,
    ) -> (Self, ViewUpdater) {
        let inner = Arc::new(Inner {
            now: RwLock::new((accounts, links)),
            dead_letters,
        });
        (
            Self {
                inner: inner.clone(),
            },
            ViewUpdater { inner },
        )
    }

    /// The latest deliveries the daemon gave up on, newest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.dead_letters.recent()
    }
    /// Every enabled account's state now.
    pub fn accounts(&self) -> Vec<AccountStatus> {
        self.inner
            .now
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .iter()
            .map(|(account, kind, rx)| AccountStatus {
                account: account.clone(),
                kind: kind.clone(),
                state: *rx.borrow(),
            })
            .collect()
    }
    /// Every link.
    pub fn links(&self) -> Vec<LinkSummary> {
        self.inner
            .now
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

//! A read-only view of the daemon for connectors that report on it (the Matrix connector's
//! management room): every account's kind and connection state, and the links.

use crate::connector::ConnectionState;
use crate::ids::{AccountId, RoomId};
use std::sync::Arc;
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

#[derive(Default)]
struct Inner {
    accounts: Vec<(AccountId, String, watch::Receiver<ConnectionState>)>,
    links: Vec<LinkSummary>,
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
        Self {
            inner: Arc::new(Inner { accounts, links }),
        }
    }
    /// Every enabled account's state now.
    pub fn accounts(&self) -> Vec<AccountStatus> {
        self.inner
            .accounts
            .iter()
            .map(|(account, kind, rx)| AccountStatus {
                account: account.clone(),
                kind: kind.clone(),
                state: *rx.borrow(),
            })
            .collect()
    }
    /// Every link.
    pub fn links(&self) -> &[LinkSummary] {
        &self.inner.links
    }
}

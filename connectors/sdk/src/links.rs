//! Links made at run time: a connector may ask the daemon to link a room of its own with a room
//! another account already serves (a Matrix portal room opened through an alias). The daemon
//! checks the request, keeps the link across restarts and routes through it at once.

use crate::ids::{AccountId, RoomId};
use futures::future::BoxFuture;
use std::sync::Arc;

/// What a connector asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalRequest {
    /// The link's name, unique.
    pub name: String,
    /// The new room, on the asking account.
    pub room: RoomId,
    /// The other side: a room the other account already serves through a configured link.
    pub remote: (AccountId, RoomId),
}

/// The daemon's side.
pub trait LinkService: Send + Sync + 'static {
    /// Checks and makes the link. `Err` says why not, without secrets.
    fn open(
        &self,
        from: &AccountId,
        request: PortalRequest,
    ) -> BoxFuture<'static, Result<(), String>>;
}

/// A connector's handle on the daemon's link service.
#[derive(Clone)]
pub struct Links {
    account: AccountId,
    service: Option<Arc<dyn LinkService>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Links")
    }
}

impl Links {
    /// A handle for `account` over `service`.
    pub fn new(account: AccountId, service: Arc<dyn LinkService>) -> Self {
        Self {
            account,
            service: Some(service),
        }
    }
    /// A handle that refuses every request (no daemon, as in the testkit's harness).
    pub fn unavailable(account: AccountId) -> Self {
        Self {
            account,
            service: None,
        }
    }
    /// Asks for a link.
    pub async fn open(&self, request: PortalRequest) -> Result<(), String> {
        match &self.service {
            Some(s) => s.open(&self.account, request).await,
            None => Err("links can't be made here".into()),
        }
    }
}

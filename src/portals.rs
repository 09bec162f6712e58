//! Links made at run time (portals): a connector asks to link a new room of its own with a room
//! another account already serves through a configured link (a Matrix user opened an IRC channel
//! through an alias). The request is checked, kept in the store, and the route table and the route
//! guard are rebuilt from the configured links plus the kept ones, exactly as at start.

use crate::config::{Direction, LinkConfig, LinkRoom};
use crate::router::Policies;
use crate::router::guard::RouteGuard;
use crate::router::table::RouteTable;
use crate::store::Store;
use futures::future::BoxFuture;
use passerelle_sdk::{AccountId, LinkService, PortalRequest, RoomId};
use std::sync::{Arc, RwLock};

/// The daemon's link service.
pub struct PortalService {
    store: Arc<dyn Store>,
    links: tokio::sync::Mutex<Vec<LinkConfig>>,
    policies: Arc<Policies>,
    table: Arc<RwLock<RouteTable>>,
    guard: Arc<RwLock<RouteGuard>>,
}

/// A kept link as stored: its rooms as JSON.
pub fn rooms_json(rooms: &[LinkRoom]) -> String {
    serde_json::Value::Array(
        rooms
            .iter()
            .map(|r| serde_json::json!({"account": r.account.as_str(), "room": r.room.as_str()}))
            .collect(),
    )
    .to_string()
}

/// Reads a kept link back; `None` when it no longer fits the configuration (an account was
/// removed), which the caller logs and skips.
pub fn parse_kept(name: &str, rooms: &str, accounts: &Policies) -> Option<LinkConfig> {
    let list: Vec<serde_json::Value> = serde_json::from_str(rooms).ok()?;
    let mut out = Vec::new();
    for r in list {
        let account = AccountId::new(r["account"].as_str()?);
        let room = RoomId::new(r["room"].as_str()?);
        if !accounts.contains_key(&account) {
            return None;
        }
        out.push(LinkRoom {
            account,
            room,
            direction: Direction::Inout,
        });
    }
    (out.len() >= 2).then(|| LinkConfig {
        name: name.to_owned(),
        rooms: out,
    })
}

impl PortalService {
    /// A service over every link in force (configured and kept), sharing the router's table and
    /// the lanes' guard.
    pub fn new(
        store: Arc<dyn Store>,
        links: Vec<LinkConfig>,
        policies: Arc<Policies>,
        table: Arc<RwLock<RouteTable>>,
        guard: Arc<RwLock<RouteGuard>>,
    ) -> Self {
        Self {
            store,
            links: tokio::sync::Mutex::new(links),
            policies,
            table,
            guard,
        }
    }

    async fn open_checked(&self, from: &AccountId, request: PortalRequest) -> Result<(), String> {
        let (remote_account, remote_room) = &request.remote;
        if request.name.trim().is_empty() {
            return Err("the link needs a name".into());
        }
        if remote_account == from {
            return Err("a portal links two different accounts".into());
        }
        for account in [from, remote_account] {
            match self.policies.get(account) {
                Some(p) if p.enabled => {}
                _ => return Err(format!("account {account} is not running")),
            }
        }
        let mut links = self.links.lock().await;
        if links.iter().any(|l| l.name == request.name) {
            return Err("a link of that name exists".into());
        }
        let served = links.iter().any(|l| {
            l.rooms
                .iter()
                .any(|r| &r.account == remote_account && &r.room == remote_room)
        });
        if !served {
            return Err(format!(
                "{remote_account} does not serve that room (only rooms named in a link can be opened)"
            ));
        }
        if links.iter().any(|l| {
            l.rooms
                .iter()
                .any(|r| &r.account == from && r.room == request.room)
        }) {
            return Err("that room is linked already".into());
        }
        let link = LinkConfig {
            name: request.name.clone(),
            rooms: vec![
                LinkRoom {
                    account: from.clone(),
                    room: request.room.clone(),
                    direction: Direction::Inout,
                },
                LinkRoom {
                    account: remote_account.clone(),
                    room: remote_room.clone(),
                    direction: Direction::Inout,
                },
            ],
        };
        let added = self
            .store
            .add_dynamic_link(&link.name, rooms_json(&link.rooms))
            .await
            .map_err(|e| format!("store: {e}"))?;
        if !added {
            return Err("a link of that name exists".into());
        }
        links.push(link);
        let table = RouteTable::build(&links, &self.policies);
        let guard = RouteGuard::build(&links, &self.policies);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        *self.guard.write().unwrap_or_else(|e| e.into_inner()) = guard;
        tracing::info!(account = %from, link = %request.name, "portal link made");
        Ok(())
    }
}

/// The service as the SDK sees it.
pub struct SharedPortals(pub Arc<PortalService>);

impl LinkService for SharedPortals {
    fn open(
        &self,
        from: &AccountId,
        request: PortalRequest,
    ) -> BoxFuture<'static, Result<(), String>> {
        let service = self.0.clone();
        let from = from.clone();
        Box::pin(async move { service.open_checked(&from, request).await })
    }
}

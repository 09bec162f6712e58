//! Links made at run time (portals): a connector asks to link a new room of its own with a room
//! another account already serves through a configured link (a Matrix user opened an IRC channel
//! through an alias). The request is checked, kept in the store, and the route table and the route
//! guard are rebuilt from the configured links plus the kept ones, exactly as at start.
//!
//! A portal keeps the direction the opened room has in its configured links (a room that only
//! feeds them feeds the portal too, and the portal room only receives), never opens one person's
//! private chat, and is allowed only between accounts whose connector says so
//! (`portal_accounts`). Kept portals are checked again at every start.

use crate::config::{Direction, LinkConfig, LinkRoom};
use crate::router::Policies;
use crate::router::guard::RouteGuard;
use crate::router::table::RouteTable;
use crate::store::Store;
use futures::future::BoxFuture;
use passerelle_sdk::{AccountId, LinkService, PortalRequest, RoomId};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Which accounts may open portals to which: `(from, to)`, from each connector's
/// [`passerelle_sdk::Connector::opens_portals_to`] (a Matrix account's `portal_accounts`).
pub type PortalPairs = HashSet<(AccountId, AccountId)>;

/// The daemon's link service. It also puts each configuration in force (at start and at every
/// reload): the configured links plus the kept portals that still fit, from which the route
/// table and the route guard are built.
pub struct PortalService {
    store: Arc<dyn Store>,
    /// What a configuration sets: replaced whole by [`PortalService::reconfigure`].
    state: tokio::sync::Mutex<InForce>,
    live: Arc<crate::live::Live>,
    table: Arc<RwLock<RouteTable>>,
    guard: Arc<RwLock<RouteGuard>>,
}

struct InForce {
    /// The links of the configuration file: only their rooms can be opened.
    configured: Vec<LinkConfig>,
    /// Every link in force: the configured ones and the portals.
    links: Vec<LinkConfig>,
    /// Links the guard still lets deliver, not routed: those of accounts a reload removed or
    /// disabled, while they deliver what was queued for them, with those accounts' policies as
    /// they were (for the guard alone).
    draining: Vec<LinkConfig>,
    draining_policies: Policies,
    allowed: PortalPairs,
}

/// A kept link as stored: its rooms as JSON, the asking account's new room first.
pub fn rooms_json(rooms: &[LinkRoom]) -> String {
    serde_json::Value::Array(
        rooms
            .iter()
            .map(|r| serde_json::json!({"account": r.account.as_str(), "room": r.room.as_str()}))
            .collect(),
    )
    .to_string()
}

/// How `room` of `account` takes part in the configured links, which a portal to it keeps: it
/// feeds a portal only if it feeds every link it is in, and receives only if it receives in
/// every one. `Err` when it can't be opened: no configured link serves it, it is one person's
/// private chat, or it neither feeds nor receives everywhere.
fn remote_part(
    configured: &[LinkConfig],
    account: &AccountId,
    room: &RoomId,
) -> Result<Direction, String> {
    let entries: Vec<&LinkRoom> = configured
        .iter()
        .flat_map(|l| l.rooms.iter())
        .filter(|r| &r.account == account && &r.room == room)
        .collect();
    if entries.is_empty() {
        return Err(format!(
            "{account} does not serve that room (only rooms named in a link can be opened)"
        ));
    }
    if entries.iter().any(|r| r.private) {
        return Err(format!(
            "that room is one person's private chat on {account}: it is never opened as a portal"
        ));
    }
    let feeds = entries.iter().all(|r| r.direction.feeds());
    let receives = entries.iter().all(|r| r.direction.receives());
    match (feeds, receives) {
        (true, true) => Ok(Direction::Inout),
        (true, false) => Ok(Direction::In),
        (false, true) => Ok(Direction::Out),
        (false, false) => Err(format!(
            "that room feeds some links and receives from others on {account}: no one direction \
             for a portal"
        )),
    }
}

/// The portal link `name` between `room` (new, on `from`) and `remote`, checked against the
/// configured links and the allowed pairs. The new room takes the mirror of the remote room's
/// part: where the remote room only feeds (`in`), the portal only receives (`out`), and so on.
pub fn portal_link(
    name: &str,
    from: &AccountId,
    room: &RoomId,
    remote: (&AccountId, &RoomId),
    configured: &[LinkConfig],
    allowed: &PortalPairs,
) -> Result<LinkConfig, String> {
    let (remote_account, remote_room) = remote;
    if remote_account == from {
        return Err("a portal links two different accounts".into());
    }
    if !allowed.contains(&(from.clone(), remote_account.clone())) {
        return Err(format!(
            "{from} may not open rooms of {remote_account} (not in its portal_accounts)"
        ));
    }
    let remote_direction = remote_part(configured, remote_account, remote_room)?;
    let mirror = match remote_direction {
        Direction::Inout => Direction::Inout,
        Direction::In => Direction::Out,
        Direction::Out => Direction::In,
    };
    Ok(LinkConfig {
        name: name.to_owned(),
        rooms: vec![
            LinkRoom {
                account: from.clone(),
                room: room.clone(),
                direction: mirror,
                private: false,
            },
            LinkRoom {
                account: remote_account.clone(),
                room: remote_room.clone(),
                direction: remote_direction,
                private: false,
            },
        ],
        private_fanout: false,
    })
}

/// Reads a kept portal back and checks it again against the configuration as it is now (the
/// accounts, the configured links, who may open what): `Err` says why it is no longer used.
pub fn parse_kept(
    name: &str,
    rooms: &str,
    configured: &[LinkConfig],
    accounts: &Policies,
    allowed: &PortalPairs,
) -> Result<LinkConfig, String> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(rooms).map_err(|_| "unreadable".to_owned())?;
    let room_at = |i: usize| -> Result<(AccountId, RoomId), String> {
        let r = list.get(i).ok_or("not two rooms")?;
        let account = r["account"].as_str().ok_or("no account")?;
        let room = r["room"].as_str().ok_or("no room")?;
        Ok((AccountId::new(account), RoomId::new(room)))
    };
    if list.len() != 2 {
        return Err("not two rooms".into());
    }
    let (from, room) = room_at(0)?;
    let (remote_account, remote_room) = room_at(1)?;
    for account in [&from, &remote_account] {
        if !accounts.contains_key(account) {
            return Err(format!("account {account} is no longer configured"));
        }
    }
    portal_link(
        name,
        &from,
        &room,
        (&remote_account, &remote_room),
        configured,
        allowed,
    )
}

impl PortalService {
    /// A service sharing the router's table and the lanes' guard, with no link in force until
    /// [`PortalService::reconfigure`].
    pub fn new(
        store: Arc<dyn Store>,
        live: Arc<crate::live::Live>,
        table: Arc<RwLock<RouteTable>>,
        guard: Arc<RwLock<RouteGuard>>,
    ) -> Self {
        Self {
            store,
            state: tokio::sync::Mutex::new(InForce {
                configured: Vec::new(),
                links: Vec::new(),
                draining: Vec::new(),
                draining_policies: Policies::default(),
                allowed: PortalPairs::new(),
            }),
            live,
            table,
            guard,
        }
    }

    /// Puts a configuration in force: its links, and the kept portals that still fit it
    /// (checked against the accounts of the settings in force, `allowed` and `configured`). The
    /// route table and guard are rebuilt from them; the guard also keeps `draining`, with the
    /// accounts' policies `draining_policies` (the table knows neither). Returns every link in
    /// force.
    pub async fn reconfigure(
        &self,
        configured: Vec<LinkConfig>,
        allowed: PortalPairs,
        draining: Vec<LinkConfig>,
        draining_policies: Policies,
    ) -> Result<Vec<LinkConfig>, crate::store::StoreError> {
        let mut state = self.state.lock().await;
        let settings = self.live.now();
        let mut links = configured.clone();
        for (name, rooms) in self.store.dynamic_links().await? {
            if configured.iter().any(|l| l.name == name) {
                tracing::warn!(link = %name, "a kept portal has the name of a configured link; not used");
                continue;
            }
            match parse_kept(&name, &rooms, &configured, &settings.policies, &allowed) {
                Ok(link) => links.push(link),
                Err(why) => {
                    tracing::warn!(link = %name, reason = %why, "a kept portal no longer fits the configuration; not used")
                }
            }
        }
        *state = InForce {
            configured,
            links,
            draining,
            draining_policies,
            allowed,
        };
        self.rebuild(&state, &settings.policies);
        Ok(state.links.clone())
    }

    /// Every link in force: the configured ones and the portals.
    pub async fn links_in_force(&self) -> Vec<LinkConfig> {
        self.state.lock().await.links.clone()
    }

    /// Ends the drain of removed accounts: the guard forgets their links.
    pub async fn drained(&self) {
        let mut state = self.state.lock().await;
        state.draining.clear();
        state.draining_policies.clear();
        let settings = self.live.now();
        self.rebuild(&state, &settings.policies);
    }

    fn rebuild(&self, state: &InForce, policies: &Policies) {
        let table = RouteTable::build(&state.links, policies);
        let guarded: Vec<LinkConfig> = state
            .links
            .iter()
            .chain(state.draining.iter())
            .cloned()
            .collect();
        let guard = if state.draining_policies.is_empty() {
            RouteGuard::build(&guarded, policies)
        } else {
            let mut both = policies.clone();
            for (id, p) in &state.draining_policies {
                both.insert(id.clone(), p.clone());
            }
            RouteGuard::build(&guarded, &both)
        };
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        *self.guard.write().unwrap_or_else(|e| e.into_inner()) = guard;
    }

    async fn open_checked(&self, from: &AccountId, request: PortalRequest) -> Result<(), String> {
        let (remote_account, remote_room) = &request.remote;
        if request.name.trim().is_empty() {
            return Err("the link needs a name".into());
        }
        let mut state = self.state.lock().await;
        let settings = self.live.now();
        for account in [from, remote_account] {
            match settings.policies.get(account) {
                Some(p) if p.enabled => {}
                _ => return Err(format!("account {account} is not running")),
            }
        }
        let link = portal_link(
            &request.name,
            from,
            &request.room,
            (remote_account, remote_room),
            &state.configured,
            &state.allowed,
        )?;
        if state.links.iter().any(|l| l.name == request.name) {
            return Err("a link of that name exists".into());
        }
        if state.links.iter().any(|l| {
            l.rooms
                .iter()
                .any(|r| &r.account == from && r.room == request.room)
        }) {
            return Err("that room is linked already".into());
        }
        let added = self
            .store
            .add_dynamic_link(&link.name, rooms_json(&link.rooms))
            .await
            .map_err(|e| format!("store: {e}"))?;
        if !added {
            return Err("a link of that name exists".into());
        }
        state.links.push(link);
        self.rebuild(&state, &settings.policies);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Vec<LinkConfig> {
        let room = |account: &str, room: &str, direction, private| LinkRoom {
            account: account.into(),
            room: room.into(),
            direction,
            private,
        };
        vec![
            LinkConfig {
                name: "lobby".into(),
                rooms: vec![
                    room("irc", "#m", Direction::Inout, false),
                    room("matrix", "!a:hs", Direction::Inout, false),
                ],
                private_fanout: false,
            },
            LinkConfig {
                name: "news".into(),
                rooms: vec![
                    room("irc", "#news", Direction::In, false),
                    room("matrix", "!b:hs", Direction::Out, false),
                ],
                private_fanout: false,
            },
            LinkConfig {
                name: "alice".into(),
                rooms: vec![
                    room("signal", "+15551112222", Direction::Inout, true),
                    room("irc", "#alice", Direction::Inout, false),
                ],
                private_fanout: false,
            },
        ]
    }

    fn allowed() -> PortalPairs {
        [("matrix", "irc"), ("matrix", "signal")]
            .into_iter()
            .map(|(a, b)| (AccountId::new(a), AccountId::new(b)))
            .collect()
    }

    fn open(remote: (&str, &str), allowed: &PortalPairs) -> Result<LinkConfig, String> {
        portal_link(
            "p",
            &"matrix".into(),
            &"!new:hs".into(),
            (&remote.0.into(), &remote.1.into()),
            &configured(),
            allowed,
        )
    }

    fn directions(link: &LinkConfig) -> Vec<Direction> {
        link.rooms.iter().map(|r| r.direction).collect()
    }

    #[test]
    fn a_portal_keeps_the_direction_its_room_has_in_the_configuration() {
        let lobby = open(("irc", "#m"), &allowed()).unwrap();
        assert_eq!(directions(&lobby), [Direction::Inout, Direction::Inout]);
        // #news only feeds its link: it feeds the portal, and the portal room only receives.
        let news = open(("irc", "#news"), &allowed()).unwrap();
        assert_eq!(directions(&news), [Direction::Out, Direction::In]);
    }

    #[test]
    fn a_private_chat_an_unserved_room_or_an_account_not_allowed_is_never_opened() {
        let private = open(("signal", "+15551112222"), &allowed()).unwrap_err();
        assert!(private.contains("private chat"), "{private}");
        let unserved = open(("irc", "#elsewhere"), &allowed()).unwrap_err();
        assert!(unserved.contains("does not serve"), "{unserved}");
        let not_allowed = open(("irc", "#m"), &PortalPairs::new()).unwrap_err();
        assert!(not_allowed.contains("portal_accounts"), "{not_allowed}");
    }

    #[test]
    fn a_kept_portal_is_checked_again_against_the_configuration_of_today() {
        let kept = rooms_json(&open(("irc", "#news"), &allowed()).unwrap().rooms);
        let policies: Policies = ["matrix", "irc", "signal"]
            .into_iter()
            .map(|a| {
                (
                    AccountId::new(a),
                    crate::router::AccountPolicy {
                        enabled: true,
                        rights: crate::config::Rights::default(),
                        capabilities: Default::default(),
                        limits: Default::default(),
                        remote_nick_format: None,
                    },
                )
            })
            .collect();
        let back = parse_kept("p", &kept, &configured(), &policies, &allowed()).unwrap();
        assert_eq!(directions(&back), [Direction::Out, Direction::In]);
        // irc taken out of portal_accounts.
        let only_signal: PortalPairs = [("matrix".into(), "signal".into())].into_iter().collect();
        assert!(parse_kept("p", &kept, &configured(), &policies, &only_signal).is_err());
        // #news no longer in any link.
        let fewer: Vec<LinkConfig> = configured()
            .into_iter()
            .filter(|l| l.name != "news")
            .collect();
        assert!(parse_kept("p", &kept, &fewer, &policies, &allowed()).is_err());
        // The irc account removed.
        let mut no_irc = policies.clone();
        no_irc.remove(&AccountId::new("irc"));
        assert!(parse_kept("p", &kept, &configured(), &no_irc, &allowed()).is_err());
    }
}

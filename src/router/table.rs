//! The routing table: for each (account, room), the precomputed rooms its messages go to. Built
//! once from the links and the accounts' rights, so a routing decision is two hash look-ups,
//! however many links there are.

use super::Policies;
use super::key::RoomKey;
use crate::config::LinkConfig;
use passerelle_sdk::{AccountId, RoomId};
use std::collections::HashMap;
use std::sync::Arc;

/// One place a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    /// Destination account.
    pub account: AccountId,
    /// Destination room.
    pub room: RoomId,
    /// The link that carries it there (the first, when several do).
    pub link: Arc<str>,
}

type FxMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Destinations by origin account and room.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: FxMap<AccountId, FxMap<RoomKey, Arc<[Destination]>>>,
}

impl RouteTable {
    /// Builds the table: a room that feeds a link (`in`/`inout`) on an enabled account with
    /// `read` sends to every other room of that link that receives (`out`/`inout`) on an enabled
    /// account with `write`. A link that would fan a private chat out without the operator's
    /// word ([`crate::config::private_fanout_issues`]) carries nothing.
    pub fn build(links: &[LinkConfig], policies: &Policies) -> Self {
        let blocked = crate::config::blocked_links(links);
        let allowed = |account: &AccountId, want_read: bool| {
            policies.get(account).is_some_and(|p| {
                p.enabled
                    && if want_read {
                        p.rights.read
                    } else {
                        p.rights.write
                    }
            })
        };
        let mut building: HashMap<(AccountId, RoomId), Vec<Destination>> = HashMap::new();
        for (index, link) in links.iter().enumerate() {
            if blocked.contains(&index) {
                continue;
            }
            let name: Arc<str> = Arc::from(link.name.as_str());
            for source in &link.rooms {
                if !source.direction.feeds() || !allowed(&source.account, true) {
                    continue;
                }
                let entry = building
                    .entry((source.account.clone(), source.room.clone()))
                    .or_default();
                for dest in &link.rooms {
                    let same = dest.account == source.account && dest.room == source.room;
                    if same || !dest.direction.receives() || !allowed(&dest.account, false) {
                        continue;
                    }
                    if !entry
                        .iter()
                        .any(|d| d.account == dest.account && d.room == dest.room)
                    {
                        entry.push(Destination {
                            account: dest.account.clone(),
                            room: dest.room.clone(),
                            link: name.clone(),
                        });
                    }
                }
            }
        }
        let mut routes: FxMap<AccountId, FxMap<RoomKey, Arc<[Destination]>>> = FxMap::default();
        for ((account, room), dests) in building {
            routes
                .entry(account)
                .or_default()
                .insert(RoomKey::new(room.as_str()), Arc::from(dests));
        }
        Self { routes }
    }

    /// The destinations of a room; empty when it feeds none.
    pub fn destinations(&self, account: &str, room: &str) -> &[Destination] {
        self.shared(account, room).map(|d| &d[..]).unwrap_or(&[])
    }

    /// The destinations of a room as the table keeps them (never empty); `None` when it feeds none.
    pub fn shared(&self, account: &str, room: &str) -> Option<&Arc<[Destination]>> {
        self.routes
            .get(account)
            .and_then(|rooms| rooms.get(room.as_bytes()))
            .filter(|d| !d.is_empty())
    }
}

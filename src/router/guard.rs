//! The route guard: an independent last check before every send. It is built from the links and
//! rights by its own code, not from the routing table, so a fault in the table (or a corrupted
//! outbox row) can't send a message where it may not go. A refusal is counted and logged.

use super::AccountPolicy;
use crate::config::{Direction, LinkConfig};
use passerelle_sdk::{AccountId, EventKind, RoomId};
use std::collections::HashMap;

/// Why the guard refused a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Origin and destination are the same room.
    SameRoom,
    /// The origin account may not feed the bus (no `read`, or disabled).
    OriginMayNotRead,
    /// The destination account may not be posted to (no `write`, or disabled).
    DestinationMayNotWrite,
    /// An edit, delete or reaction on an account without `delete`.
    DestinationMayNotDelete,
    /// No link joins the origin room (feeding) to the destination room (receiving).
    NotLinked,
}

impl Refusal {
    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::SameRoom => "guard_same_room",
            Self::OriginMayNotRead => "guard_no_read",
            Self::DestinationMayNotWrite => "guard_no_write",
            Self::DestinationMayNotDelete => "guard_no_delete",
            Self::NotLinked => "guard_not_linked",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Membership {
    link: usize,
    direction: Direction,
}

/// The guard itself.
#[derive(Debug, Default)]
pub struct RouteGuard {
    members: HashMap<AccountId, HashMap<RoomId, Vec<Membership>>>,
    policies: HashMap<AccountId, (bool, crate::config::Rights)>,
}

impl RouteGuard {
    /// Builds the guard from the links and the accounts' policies.
    pub fn build(links: &[LinkConfig], policies: &HashMap<AccountId, AccountPolicy>) -> Self {
        let mut members: HashMap<AccountId, HashMap<RoomId, Vec<Membership>>> = HashMap::new();
        for (index, link) in links.iter().enumerate() {
            for room in &link.rooms {
                members
                    .entry(room.account.clone())
                    .or_default()
                    .entry(room.room.clone())
                    .or_default()
                    .push(Membership {
                        link: index,
                        direction: room.direction,
                    });
            }
        }
        let policies = policies
            .iter()
            .map(|(a, p)| (a.clone(), (p.enabled, p.rights)))
            .collect();
        Self { members, policies }
    }

    /// Whether `kind` may go from (origin account, room) to (destination account, room).
    pub fn check(
        &self,
        origin: (&AccountId, &RoomId),
        dest: (&AccountId, &RoomId),
        kind: &EventKind,
    ) -> Result<(), Refusal> {
        if origin.0 == dest.0 && origin.1 == dest.1 {
            return Err(Refusal::SameRoom);
        }
        match self.policies.get(origin.0) {
            Some((true, rights)) if rights.read => {}
            _ => return Err(Refusal::OriginMayNotRead),
        }
        let dest_rights = match self.policies.get(dest.0) {
            Some((true, rights)) if rights.write => *rights,
            _ => return Err(Refusal::DestinationMayNotWrite),
        };
        let modifies = matches!(
            kind,
            EventKind::Edit { .. } | EventKind::Delete { .. } | EventKind::Reaction { .. }
        );
        if modifies && !dest_rights.delete {
            return Err(Refusal::DestinationMayNotDelete);
        }
        let of = |a: &AccountId, r: &RoomId| {
            self.members
                .get(a)
                .and_then(|rooms| rooms.get(r))
                .map(|v| &v[..])
                .unwrap_or(&[])
        };
        let from = of(origin.0, origin.1);
        let to = of(dest.0, dest.1);
        let linked = from.iter().any(|f| {
            f.direction.feeds()
                && to
                    .iter()
                    .any(|t| t.link == f.link && t.direction.receives())
        });
        if linked {
            Ok(())
        } else {
            Err(Refusal::NotLinked)
        }
    }
}

//! The route guard: an independent last check before every send. It is built from the links and
//! rights by its own code, not from the routing table, so a fault in the table (or a corrupted
//! outbox row) can't send a message where it may not go. A refusal is counted and logged.

use super::Policies;
use super::key::RoomKey;
use crate::config::{Direction, LinkConfig};
use passerelle_sdk::{AccountId, EventKind, RoomId};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

type FxMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

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
    /// Only a link that would carry a private chat to more than one place joins them, and the
    /// operator did not say `private_fanout = true` on it.
    PrivateFanout,
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
            Self::PrivateFanout => "guard_private_fanout",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Membership {
    link: usize,
    direction: Direction,
}

/// The links one room belongs to. Nearly every room is in one link, so the first membership is
/// kept inline: a check reads the map's slot and nothing behind another pointer.
#[derive(Debug)]
struct Memberships {
    first: Membership,
    rest: Vec<Membership>,
}

impl Memberships {
    fn iter(&self) -> impl Iterator<Item = &Membership> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}

/// The guard itself.
#[derive(Debug, Default)]
pub struct RouteGuard {
    members: FxMap<AccountId, FxMap<RoomKey, Memberships>>,
    policies: FxMap<AccountId, (bool, crate::config::Rights)>,
    /// By link index: whether it fans a private chat out without `private_fanout` (two private
    /// rooms in it, or a private room that is in another link too). Such a link carries nothing.
    fans_out: Vec<bool>,
}

impl RouteGuard {
    /// Builds the guard from the links and the accounts' policies.
    pub fn build(links: &[LinkConfig], policies: &Policies) -> Self {
        let mut members: FxMap<AccountId, FxMap<RoomKey, Memberships>> = FxMap::default();
        for (index, link) in links.iter().enumerate() {
            for room in &link.rooms {
                let membership = Membership {
                    link: index,
                    direction: room.direction,
                };
                match members
                    .entry(room.account.clone())
                    .or_default()
                    .entry(RoomKey::new(room.room.as_str()))
                {
                    Entry::Occupied(mut known) => known.get_mut().rest.push(membership),
                    Entry::Vacant(new) => {
                        new.insert(Memberships {
                            first: membership,
                            rest: Vec::new(),
                        });
                    }
                }
            }
        }
        let policies = policies
            .iter()
            .map(|(a, p)| (a.clone(), (p.enabled, p.rights)))
            .collect();
        // Worked out here from the links alone, not taken from the configuration's check.
        let mut fans_out: Vec<bool> = links
            .iter()
            .map(|l| l.rooms.iter().filter(|r| r.private).count() > 1)
            .collect();
        for link in links {
            for room in link.rooms.iter().filter(|r| r.private) {
                let key = RoomKey::new(room.room.as_str());
                if let Some(m) = members.get(&room.account).and_then(|rooms| rooms.get(&key)) {
                    let mut in_links: Vec<usize> = m.iter().map(|m| m.link).collect();
                    in_links.sort_unstable();
                    in_links.dedup();
                    if in_links.len() > 1 {
                        for i in in_links {
                            fans_out[i] = true;
                        }
                    }
                }
            }
        }
        for (i, link) in links.iter().enumerate() {
            if link.private_fanout {
                fans_out[i] = false;
            }
        }
        Self {
            members,
            policies,
            fans_out,
        }
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
                .and_then(|rooms| rooms.get(r.as_str().as_bytes()))
        };
        let (mut linked, mut fanning) = (false, false);
        if let (Some(from), Some(to)) = (of(origin.0, origin.1), of(dest.0, dest.1)) {
            for f in from.iter().filter(|f| f.direction.feeds()) {
                if to
                    .iter()
                    .any(|t| t.link == f.link && t.direction.receives())
                {
                    if self.fans_out.get(f.link).copied().unwrap_or(true) {
                        fanning = true;
                    } else {
                        linked = true;
                    }
                }
            }
        }
        match (linked, fanning) {
            (true, _) => Ok(()),
            (false, true) => Err(Refusal::PrivateFanout),
            (false, false) => Err(Refusal::NotLinked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LinkRoom, Rights};
    use crate::router::AccountPolicy;
    use crate::router::table::RouteTable;
    use passerelle_sdk::{Capabilities, Content, Limits};

    fn policy(read: bool, write: bool, delete: bool) -> AccountPolicy {
        AccountPolicy {
            enabled: true,
            rights: Rights {
                read,
                write,
                delete,
            },
            capabilities: Capabilities::default(),
            limits: Limits::default(),
            remote_nick_format: None,
        }
    }

    fn room(account: &str, room: &str, direction: Direction) -> LinkRoom {
        LinkRoom {
            account: account.into(),
            room: room.into(),
            direction,
            private: false,
        }
    }

    fn setup() -> (Vec<LinkConfig>, Policies) {
        let links = vec![
            LinkConfig {
                name: "one".into(),
                private_fanout: false,
                rooms: vec![
                    room("a", "#1", Direction::Inout),
                    room("b", "x", Direction::In),
                    room("c", "y", Direction::Out),
                ],
            },
            LinkConfig {
                name: "two".into(),
                private_fanout: false,
                rooms: vec![
                    room("a", "#2", Direction::Inout),
                    room("d", "z", Direction::Inout),
                ],
            },
        ];
        let policies = [
            ("a", policy(true, true, true)),
            ("b", policy(true, true, false)),
            ("c", policy(true, true, false)),
            ("d", policy(true, false, false)),
        ]
        .into_iter()
        .map(|(k, v)| (AccountId::new(k), v))
        .collect();
        (links, policies)
    }

    fn msg() -> EventKind {
        EventKind::Message(Content::plain("x"))
    }

    #[test]
    fn the_guard_allows_only_linked_directed_and_permitted_pairs() {
        let (links, policies) = setup();
        let guard = RouteGuard::build(&links, &policies);
        let ok = |o: (&str, &str), d: (&str, &str), k: &EventKind| {
            guard.check((&o.0.into(), &o.1.into()), (&d.0.into(), &d.1.into()), k)
        };
        assert_eq!(ok(("a", "#1"), ("c", "y"), &msg()), Ok(()));
        assert_eq!(ok(("b", "x"), ("a", "#1"), &msg()), Ok(()));
        // "in" rooms receive nothing; "out" rooms feed nothing.
        assert_eq!(ok(("a", "#1"), ("b", "x"), &msg()), Err(Refusal::NotLinked));
        assert_eq!(ok(("c", "y"), ("a", "#1"), &msg()), Err(Refusal::NotLinked));
        // Rooms of different links never meet, even on the same account.
        assert_eq!(
            ok(("a", "#1"), ("a", "#2"), &msg()),
            Err(Refusal::NotLinked)
        );
        assert_eq!(
            ok(("b", "x"), ("d", "z"), &msg()),
            Err(Refusal::DestinationMayNotWrite)
        );
        assert_eq!(ok(("a", "#1"), ("a", "#1"), &msg()), Err(Refusal::SameRoom));
        let edit = EventKind::Edit {
            target: "m".into(),
            content: Content::plain("x"),
        };
        assert_eq!(
            ok(("a", "#1"), ("c", "y"), &edit),
            Err(Refusal::DestinationMayNotDelete)
        );
        assert_eq!(ok(("b", "x"), ("a", "#1"), &edit), Ok(()));
        assert_eq!(
            ok(("zz", "q"), ("a", "#1"), &msg()),
            Err(Refusal::OriginMayNotRead)
        );
    }

    #[test]
    fn the_table_and_the_guard_agree() {
        let (links, policies) = setup();
        let table = RouteTable::build(&links, &policies);
        let guard = RouteGuard::build(&links, &policies);
        let mut routed = 0;
        for link in &links {
            for origin in &link.rooms {
                for dest in table.destinations(origin.account.as_str(), origin.room.as_str()) {
                    routed += 1;
                    assert_eq!(
                        guard.check(
                            (&origin.account, &origin.room),
                            (&dest.account, &dest.room),
                            &msg()
                        ),
                        Ok(()),
                        "{origin:?} -> {dest:?}"
                    );
                }
            }
        }
        // a#1 -> c, b -> a#1, b -> c, d -> a#2; d can't be written to, so a#2 goes nowhere.
        assert_eq!(routed, 4);
        assert!(table.destinations("a", "#2").is_empty());
        assert_eq!(table.destinations("b", "x").len(), 2);
    }

    #[test]
    fn a_private_chat_never_fans_out_without_the_operators_word() {
        let private = |account: &str, r: &str| LinkRoom {
            private: true,
            ..room(account, r, Direction::Inout)
        };
        let link = |name: &str, rooms: Vec<LinkRoom>, private_fanout: bool| LinkConfig {
            name: name.into(),
            rooms,
            private_fanout,
        };
        let policies: Policies = ["a", "b", "c"]
            .into_iter()
            .map(|k| (AccountId::new(k), policy(true, true, true)))
            .collect();
        let ok = |guard: &RouteGuard, o: (&str, &str), d: (&str, &str)| {
            guard.check(
                (&o.0.into(), &o.1.into()),
                (&d.0.into(), &d.1.into()),
                &msg(),
            )
        };
        // Alice's chat and Bob's chat in one link.
        let joined = vec![link(
            "l",
            vec![private("a", "alice"), private("b", "bob")],
            false,
        )];
        let guard = RouteGuard::build(&joined, &policies);
        assert_eq!(
            ok(&guard, ("a", "alice"), ("b", "bob")),
            Err(Refusal::PrivateFanout)
        );
        assert!(
            RouteTable::build(&joined, &policies)
                .destinations("a", "alice")
                .is_empty()
        );
        // Carol's chat in two links: neither carries it, nor anything else.
        let shared = vec![
            link(
                "one",
                vec![private("a", "carol"), room("c", "#1", Direction::Inout)],
                false,
            ),
            link(
                "two",
                vec![private("a", "carol"), room("c", "#2", Direction::Inout)],
                false,
            ),
        ];
        let guard = RouteGuard::build(&shared, &policies);
        for dest in ["#1", "#2"] {
            assert_eq!(
                ok(&guard, ("a", "carol"), ("c", dest)),
                Err(Refusal::PrivateFanout)
            );
        }
        // With the operator's word on one of them, that one carries it; the other still not.
        let mut allowed = shared.clone();
        allowed[0].private_fanout = true;
        let guard = RouteGuard::build(&allowed, &policies);
        assert_eq!(ok(&guard, ("a", "carol"), ("c", "#1")), Ok(()));
        assert_eq!(
            ok(&guard, ("a", "carol"), ("c", "#2")),
            Err(Refusal::PrivateFanout)
        );
        // One private chat with groups, in one link: the ordinary case.
        let single = vec![link(
            "l",
            vec![
                private("a", "dave"),
                room("c", "#1", Direction::Inout),
                room("b", "g", Direction::Inout),
            ],
            false,
        )];
        let guard = RouteGuard::build(&single, &policies);
        assert_eq!(ok(&guard, ("a", "dave"), ("c", "#1")), Ok(()));
        assert_eq!(ok(&guard, ("b", "g"), ("a", "dave")), Ok(()));
    }
}

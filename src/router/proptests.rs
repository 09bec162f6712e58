//! Property tests of routing: random topologies (accounts, rights, capabilities, rooms, links,
//! directions) and random event streams go through the same steps as in the daemon: [`plan`]
//! (rights and the route table), [`degrade::adapt`] for each destination, then the
//! [`RouteGuard`]. Every delivery is checked against an oracle written from the rules alone (not
//! from the table or the guard): a room linked to the origin through one link, feeding into
//! receiving, never the origin itself, `read` on the origin, `write` on the destination, `delete`
//! for edits, deletes and reactions. Messages must reach every such room exactly once. Some rooms
//! are one person's private chat: a link that joins two of them, or one that is also in another
//! link, carries nothing unless it says `private_fanout`; one person's messages must never reach
//! another private chat, or a second link, without that word.
//!
//! A second property builds the route table from a corrupted copy of the configuration and checks
//! that the guard, built from the true one, lets nothing through that the oracle forbids.

use super::Policies;
use super::degrade::{self, DestRelations};
use super::guard::RouteGuard;
use super::table::RouteTable;
use super::{AccountPolicy, Plan, RoutedEvent, plan};
use crate::config::{Direction, General, LinkConfig, LinkRoom, Rights};
use passerelle_sdk::{
    AccountId, Capabilities, Content, Event, EventKind, Limits, MembershipChange, RoomId, Sender,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::cell::RefCell;
use std::collections::HashSet;

const ROOMS_PER_ACCOUNT: usize = 3;
/// Events per case, and cases: at least 1,000,000 routed events in all.
const EVENTS_PER_CASE: usize = 500;
const CASES: u32 = 2_000;

#[derive(Clone, Debug)]
struct Account {
    enabled: bool,
    rights: Rights,
    caps: Capabilities,
    /// By room: whether it is one person's private chat.
    private: [bool; ROOMS_PER_ACCOUNT],
}

#[derive(Clone, Debug)]
struct Topology {
    accounts: Vec<Account>,
    links: Vec<LinkConfig>,
}

/// One inbound event: origin (account, room), what it is, and whether its relations are known.
#[derive(Clone, Copy, Debug)]
struct Ev {
    account: usize,
    room: usize,
    kind: u8,
    related: bool,
}

fn account_name(i: usize) -> AccountId {
    AccountId::new(format!("acct{i}"))
}

fn room_name(i: usize) -> RoomId {
    RoomId::new(format!("r{i}"))
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::Inout),
        Just(Direction::In),
        Just(Direction::Out)
    ]
}

fn account() -> impl Strategy<Value = Account> {
    (
        prop::bool::weighted(0.9),
        [
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.5),
        ],
        any::<[bool; 8]>(),
        [
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.3),
        ],
    )
        .prop_map(|(enabled, [read, write, delete], c, private)| Account {
            enabled,
            private,
            rights: Rights {
                read,
                write,
                delete,
            },
            caps: Capabilities {
                edits: c[0],
                deletes: c[1],
                reactions: c[2],
                replies: c[3],
                threads: c[4],
                membership: c[5],
                topic: c[6],
                typing: c[7],
                ..Capabilities::default()
            },
        })
}

fn topology() -> impl Strategy<Value = Topology> {
    prop::collection::vec(account(), 1..=5).prop_flat_map(|accounts| {
        let n = accounts.len();
        let private: Vec<_> = accounts.iter().map(|a| a.private).collect();
        let room =
            (0..n, 0..ROOMS_PER_ACCOUNT, direction()).prop_map(move |(a, r, direction)| LinkRoom {
                account: account_name(a),
                room: room_name(r),
                direction,
                private: private[a][r],
            });
        let link = (
            prop::collection::vec(room, 1..=5),
            prop::bool::weighted(0.3),
        );
        let links = prop::collection::vec(link, 0..=5).prop_map(|links| {
            links
                .into_iter()
                .enumerate()
                .map(|(i, (rooms, private_fanout))| LinkConfig {
                    name: format!("link{i}"),
                    private_fanout,
                    rooms,
                })
                .collect::<Vec<_>>()
        });
        (Just(accounts), links).prop_map(|(accounts, links)| Topology { accounts, links })
    })
}

fn events(accounts: usize, len: usize) -> impl Strategy<Value = Vec<Ev>> {
    let ev = (0..accounts, 0..ROOMS_PER_ACCOUNT, 0u8..7, any::<bool>()).prop_map(
        |(account, room, kind, related)| Ev {
            account,
            room,
            kind,
            related,
        },
    );
    prop::collection::vec(ev, len)
}

fn policies(accounts: &[Account]) -> Policies {
    accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                account_name(i),
                AccountPolicy {
                    enabled: a.enabled,
                    rights: a.rights,
                    capabilities: a.caps,
                    limits: Limits::default(),
                    remote_nick_format: None,
                },
            )
        })
        .collect()
}

fn event_of(ev: Ev) -> Event {
    let kind = match ev.kind {
        0 | 1 => EventKind::Message(Content::plain("hello")),
        2 => EventKind::Edit {
            target: "t".into(),
            content: Content::plain("changed"),
        },
        3 => EventKind::Delete { target: "t".into() },
        4 => EventKind::Reaction {
            target: "t".into(),
            key: "👍".into(),
            removed: false,
        },
        5 => EventKind::Membership(MembershipChange::Join),
        _ => EventKind::Topic("topic".into()),
    };
    let mut event = Event::new(room_name(ev.room), Sender::new("someone"), kind);
    if ev.related {
        event.reply_to = Some("earlier".into());
    }
    event
}

fn modifies(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Edit { .. } | EventKind::Delete { .. } | EventKind::Reaction { .. }
    )
}

/// The rules, written from the configuration alone.
struct Oracle<'a> {
    topo: &'a Topology,
}

impl Oracle<'_> {
    fn account(&self, name: &AccountId) -> Option<&Account> {
        let i: usize = name.as_str().strip_prefix("acct")?.parse().ok()?;
        self.topo.accounts.get(i)
    }

    /// Whether a message may go from `origin` to `dest` at all.
    fn may(&self, origin: (&AccountId, &RoomId), dest: (&AccountId, &RoomId)) -> bool {
        if origin == dest {
            return false;
        }
        let (Some(o), Some(d)) = (self.account(origin.0), self.account(dest.0)) else {
            return false;
        };
        if !(o.enabled && o.rights.read && d.enabled && d.rights.write) {
            return false;
        }
        self.topo.links.iter().any(|link| {
            if !self.carries_private_safely(link) {
                return false;
            }
            let has = |who: (&AccountId, &RoomId), want: fn(Direction) -> bool| {
                link.rooms
                    .iter()
                    .any(|r| (&r.account, &r.room) == who && want(r.direction))
            };
            has(origin, Direction::feeds) && has(dest, Direction::receives)
        })
    }

    /// Whether `link` may carry anything: the operator said `private_fanout`, or it holds at most
    /// one private chat and that one is in no other link.
    fn carries_private_safely(&self, link: &LinkConfig) -> bool {
        if link.private_fanout {
            return true;
        }
        let private: Vec<&LinkRoom> = link.rooms.iter().filter(|r| r.private).collect();
        let elsewhere = |r: &LinkRoom| {
            self.topo
                .links
                .iter()
                .filter(|l| {
                    l.rooms
                        .iter()
                        .any(|x| x.account == r.account && x.room == r.room)
                })
                .count()
                > 1
        };
        private.len() <= 1 && !private.iter().any(|r| elsewhere(r))
    }

    /// Whether (account, room) is a private chat.
    fn private(&self, who: (&AccountId, &RoomId)) -> bool {
        let Some(a) = self.account(who.0) else {
            return false;
        };
        let r: Option<usize> = who
            .1
            .as_str()
            .strip_prefix('r')
            .and_then(|r| r.parse().ok());
        r.and_then(|r| a.private.get(r).copied()).unwrap_or(false)
    }

    /// Every room a message from `origin` must reach.
    fn message_destinations(&self, origin: (&AccountId, &RoomId)) -> HashSet<(AccountId, RoomId)> {
        let mut all = HashSet::new();
        for link in &self.topo.links {
            for r in &link.rooms {
                if self.may(origin, (&r.account, &r.room)) {
                    all.insert((r.account.clone(), r.room.clone()));
                }
            }
        }
        all
    }
}

#[derive(Default)]
struct Tally {
    routed: u64,
    delivered: u64,
    refused_by_guard: u64,
}

/// Routes `events` through a table built from `table_links`/`table_policies` and a guard built
/// from the true topology; checks every delivery against the oracle, and, when the table is built
/// from the true topology (`honest`), that messages reach every room they may.
fn route_all(
    topo: &Topology,
    table_links: &[LinkConfig],
    table_policies: &Policies,
    events: &[Ev],
    honest: bool,
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    let true_policies = policies(&topo.accounts);
    let table = RouteTable::build(table_links, table_policies);
    let guard = RouteGuard::build(&topo.links, &true_policies);
    let oracle = Oracle { topo };
    let general = General::default();
    for &ev in events {
        tally.routed += 1;
        let origin = account_name(ev.account);
        let event = event_of(ev);
        let planned = plan(&table, table_policies, &origin, &event);
        let dests = match planned {
            Plan::To(dests) => dests.to_vec(),
            Plan::Unrouted | Plan::Refused(_) => Vec::new(),
        };
        let mut reached = HashSet::new();
        for dest in &dests {
            let Some(policy) = table_policies.get(&dest.account) else {
                continue;
            };
            let routed = RoutedEvent {
                event: event.clone(),
                origin: origin.clone(),
                link: dest.link.to_string(),
                reply_to: None,
                thread_root: None,
                target: ev.related.then(passerelle_sdk::EventKey::new),
                moderation: false,
            };
            let rel = DestRelations {
                target: ev.related.then(|| "dest-target".into()),
                target_sender: ev.related.then(|| "owner".to_owned()),
                ..DestRelations::default()
            };
            let Ok(out) = degrade::adapt(&routed, &dest.room, policy, rel, &general) else {
                continue;
            };
            if guard
                .check(
                    (&origin, &event.room),
                    (&dest.account, &dest.room),
                    &out.kind,
                )
                .is_err()
            {
                tally.refused_by_guard += 1;
                continue;
            }
            // Delivered. Now the rules:
            tally.delivered += 1;
            prop_assert_eq!(&out.room, &dest.room, "adapted for another room");
            prop_assert!(
                oracle.may((&origin, &event.room), (&dest.account, &dest.room)),
                "{:?} from {}/{} reached {}/{}, which is not linked to it or may not be written",
                event.kind.name(),
                origin,
                event.room,
                dest.account,
                dest.room
            );
            // The worst misroute: one person's chat into another person's inbox.
            if oracle.private((&origin, &event.room)) && oracle.private((&dest.account, &dest.room))
            {
                prop_assert!(
                    topo.links.iter().any(|l| l.private_fanout
                        && l.rooms
                            .iter()
                            .any(|r| (&r.account, &r.room) == (&origin, &event.room))
                        && l.rooms
                            .iter()
                            .any(|r| (&r.account, &r.room) == (&dest.account, &dest.room))),
                    "a private chat ({}/{}) reached another ({}/{}) with no link saying private_fanout",
                    origin,
                    event.room,
                    dest.account,
                    dest.room
                );
            }
            prop_assert!(
                reached.insert((dest.account.clone(), dest.room.clone())),
                "delivered twice to {}/{}",
                dest.account,
                dest.room
            );
            let d = oracle.account(&dest.account).cloned();
            let d = d.ok_or_else(|| TestCaseError::fail("unknown destination account"))?;
            if modifies(&out.kind) {
                prop_assert!(d.rights.delete, "a modification without `delete`");
            }
            // Where the network could do it but the account may not, nothing is said instead.
            let native = match event.kind {
                EventKind::Delete { .. } => d.caps.deletes,
                EventKind::Reaction { .. } => d.caps.reactions,
                _ => false,
            };
            prop_assert!(
                !native || d.rights.delete,
                "a {} reached an account without `delete`",
                event.kind.name()
            );
        }
        // No loss: a message reaches every room the rules allow.
        if honest && matches!(event.kind, EventKind::Message(_)) {
            let want = oracle.message_destinations((&origin, &event.room));
            prop_assert_eq!(reached, want, "message destinations");
        }
    }
    Ok(())
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn a_million_random_events_never_leave_their_links_rights_or_origin() {
    let strategy = topology().prop_flat_map(|t| {
        let n = t.accounts.len();
        (Just(t), events(n, EVENTS_PER_CASE))
    });
    let tally = RefCell::new(Tally::default());
    let mut runner = runner();
    let result = runner.run(&strategy, |(topo, evs)| {
        let policies = policies(&topo.accounts);
        route_all(
            &topo,
            &topo.links,
            &policies,
            &evs,
            true,
            &mut tally.borrow_mut(),
        )?;
        // With a true table, the guard never has to refuse: table and guard agree.
        prop_assert_eq!(
            tally.borrow().refused_by_guard,
            0,
            "the guard refused a legitimate route"
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner();
    eprintln!(
        "routing property: {} events routed, {} deliveries checked",
        tally.routed, tally.delivered
    );
    assert!(tally.routed >= 1_000_000, "only {} events", tally.routed);
    assert!(
        tally.delivered > 50_000,
        "too few deliveries to mean anything"
    );
}

/// Ways to corrupt the table's copy of the configuration.
#[derive(Clone, Copy, Debug)]
enum Corruption {
    /// Every room of every link both feeds and receives.
    AllInout,
    /// Every account has every right and is enabled.
    AllRights,
    /// All links merged into one.
    Merged,
    /// One room of another account added to every link.
    Stranger,
    /// No room is private, and no link says `private_fanout`.
    NoPrivate,
}

fn corrupt(topo: &Topology, how: Corruption) -> (Vec<LinkConfig>, Policies) {
    let mut links = topo.links.clone();
    let mut policies = policies(&topo.accounts);
    match how {
        Corruption::AllInout => {
            for r in links.iter_mut().flat_map(|l| l.rooms.iter_mut()) {
                r.direction = Direction::Inout;
            }
        }
        Corruption::AllRights => {
            for p in policies.values_mut() {
                p.enabled = true;
                p.rights = Rights {
                    read: true,
                    write: true,
                    delete: true,
                };
            }
        }
        Corruption::Merged => {
            let rooms = links.drain(..).flat_map(|l| l.rooms).collect();
            links = vec![LinkConfig {
                name: "merged".into(),
                private_fanout: false,
                rooms,
            }];
        }
        Corruption::Stranger => {
            for (i, link) in links.iter_mut().enumerate() {
                link.rooms.push(LinkRoom {
                    account: account_name(i % topo.accounts.len()),
                    room: room_name(ROOMS_PER_ACCOUNT - 1 - i % ROOMS_PER_ACCOUNT),
                    direction: Direction::Inout,
                    private: false,
                });
            }
        }
        Corruption::NoPrivate => {
            for link in &mut links {
                link.private_fanout = false;
                for r in &mut link.rooms {
                    r.private = false;
                }
            }
        }
    }
    (links, policies)
}

#[test]
fn the_guard_stops_whatever_a_corrupted_table_would_misroute() {
    let corruption = prop_oneof![
        Just(Corruption::AllInout),
        Just(Corruption::AllRights),
        Just(Corruption::Merged),
        Just(Corruption::Stranger),
        Just(Corruption::NoPrivate),
    ];
    let strategy = (topology(), corruption).prop_flat_map(|(t, c)| {
        let n = t.accounts.len();
        (Just(t), Just(c), events(n, 50))
    });
    let tally = RefCell::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases: 1_000,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(topo, how, evs)| {
        let (links, policies) = corrupt(&topo, how);
        route_all(
            &topo,
            &links,
            &policies,
            &evs,
            false,
            &mut tally.borrow_mut(),
        )
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner();
    eprintln!(
        "corrupted tables: {} events, {} deliveries allowed, {} refused by the guard",
        tally.routed, tally.delivered, tally.refused_by_guard
    );
    // The corruptions did propose forbidden routes, and the guard refused them.
    assert!(tally.refused_by_guard > 1_000, "{}", tally.refused_by_guard);
}

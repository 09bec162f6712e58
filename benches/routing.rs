//! Routing one event: the router's decision (`plan`: rights, the route table, what each
//! destination can carry) and the route guard's check of every destination, with 10, 1,000 and
//! 100,000 links. The store is not involved. Figures: `docs/performance.md`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use passerelle::config::{Direction, LinkConfig, LinkRoom, Rights};
use passerelle::router::Policies;
use passerelle::router::guard::RouteGuard;
use passerelle::router::table::RouteTable;
use passerelle::router::{AccountPolicy, Plan, plan};
use passerelle_sdk::{AccountId, Capabilities, Content, Event, EventKind, Limits, Sender};
use std::hint::black_box;

const ACCOUNTS: [&str; 3] = ["irc.libera", "matrix.main", "api.scripts"];

fn policies() -> Policies {
    ACCOUNTS
        .iter()
        .map(|a| {
            (
                AccountId::from(*a),
                AccountPolicy {
                    enabled: true,
                    rights: Rights {
                        read: true,
                        write: true,
                        delete: true,
                    },
                    capabilities: Capabilities {
                        edits: true,
                        replies: true,
                        ..Capabilities::default()
                    },
                    limits: Limits::default(),
                    remote_nick_format: None,
                },
            )
        })
        .collect()
}

/// `n` links, each joining one room on every account (both ways).
fn links(n: usize) -> Vec<LinkConfig> {
    (0..n)
        .map(|i| LinkConfig {
            name: format!("link{i}"),
            private_fanout: false,
            rooms: ACCOUNTS
                .iter()
                .map(|a| LinkRoom {
                    account: AccountId::from(*a),
                    room: format!("#room{i}").into(),
                    direction: Direction::Inout,
                    private: false,
                })
                .collect(),
        })
        .collect()
}

/// Two ways to pick the rooms that events come from:
/// - `route_one_event`: 10 active rooms, spread evenly over the table, whatever its size. The work
///   per event is compared with the same active set, so what grows with the number of links shows.
/// - `route_one_event_4096_rooms`: events cycle over up to 4,096 distinct rooms, so with 100,000
///   links every look-up misses the CPU caches; this measures the memory hierarchy as much as the
///   router.
fn routing(c: &mut Criterion) {
    route(c, "route_one_event", 10);
    route(c, "route_one_event_4096_rooms", 4096);
}

fn route(c: &mut Criterion, name: &str, active: usize) {
    let policies = policies();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 1_000, 100_000] {
        let links = links(n);
        let table = RouteTable::build(&links, &policies);
        let guard = RouteGuard::build(&links, &policies);
        let origin = AccountId::from(ACCOUNTS[0]);
        let active = active.min(n);
        let events: Vec<Event> = (0..4096)
            .map(|i| {
                // Room `k * n / active` for the k-th active room: spread over the whole table.
                let room = format!("#room{}", ((i * 7919) % active) * n / active);
                Event::new(
                    room,
                    Sender::new("alice"),
                    EventKind::Message(Content::plain("hello")),
                )
            })
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let event = &events[i & 4095];
                i += 1;
                let Plan::To(dests) = plan(&table, &policies, &origin, event) else {
                    panic!("a linked room routes somewhere");
                };
                for d in dests.iter() {
                    let checked =
                        guard.check((&origin, &event.room), (&d.account, &d.room), &event.kind);
                    black_box(checked).expect("the guard allows a linked room");
                }
                black_box(dests.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);

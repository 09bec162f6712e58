//! The SQLite store, on a file (WAL), as the daemon uses it:
//! - `store_bridge`: bridging messages as the router and the lanes write them, in batches of 256:
//!   each message's mapping and one sealed outbox row in one transaction per batch
//!   (`accept_many`), then each delivery's receipt (row deleted, destination id mapped) in one
//!   transaction per batch (`complete_many`);
//! - `message_map_lookup`: look-ups in a message map of 10 million rows (built once and kept in
//!   `$PASSERELLE_BENCH_DIR`, default the system's temporary directory; `PASSERELLE_BENCH_MAP_ROWS`
//!   sets another size): an origin id to its event (`find_by_remote`), an event to its id on a
//!   destination (`remote_id`).
//!
//! Figures: `docs/performance.md`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use passerelle::store::sqlite::SqliteStore;
use passerelle::store::{Accepted, Completion, NewDelivery, NewEvent, Store};
use passerelle_sdk::{EventKey, RemoteMessageId, Timestamp};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const BATCH: u64 = 256;

/// A key made from a number, so a bench can find event `i` again (big-endian: inserted in order).
fn key(i: u64) -> EventKey {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&i.to_be_bytes());
    bytes[6] = 0x70; // shaped like a UUIDv7
    EventKey::from_bytes(bytes)
}

fn event(i: u64, now: Timestamp) -> NewEvent {
    NewEvent {
        key: key(i),
        account: "irc.libera".into(),
        room: format!("#room{}", i % 1000).into(),
        remote_id: Some(format!("irc-in.{i}").into()),
        sender_name: "alice".into(),
        sender_id: "alice".into(),
        thread_root: None,
        at: now,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn bridge(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("bench.db")).expect("store"));
    // A sealed payload is about this size for a short message.
    let payload = vec![0x5a; 300];
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("store_bridge");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("256_messages", |b| {
        b.to_async(&rt).iter(|| async {
            let first = next.fetch_add(BATCH, Ordering::Relaxed);
            let now = Timestamp::now();
            let items: Vec<(NewEvent, Vec<NewDelivery>)> = (first..first + BATCH)
                .map(|i| {
                    (
                        event(i, now),
                        vec![NewDelivery {
                            account: "matrix.main".into(),
                            room: "!room:example.org".into(),
                            payload: payload.clone(),
                        }],
                    )
                })
                .collect();
            let accepted = store.accept_many(items).await.expect("accepted");
            let done: Arc<[Completion]> = accepted
                .into_iter()
                .zip(first..)
                .map(|(a, i)| {
                    let Accepted::Stored(ids) = a else {
                        panic!("a new message is stored");
                    };
                    (
                        ids[0],
                        Some((
                            key(i),
                            "matrix.main".into(),
                            "!room:example.org".into(),
                            RemoteMessageId::new(format!("$event{i}")),
                        )),
                    )
                })
                .collect();
            store.complete_many(done).await.expect("recorded");
        })
    });
    group.finish();
}

/// The 10-million-row map, built on first use and kept.
fn big_map(rt: &tokio::runtime::Runtime, rows: u64) -> Arc<dyn Store> {
    let dir = std::env::var_os("PASSERELLE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("passerelle-bench-map-{rows}.db"));
    let marker = path.with_extension("complete");
    if !marker.exists() {
        let _ = std::fs::remove_file(&path);
        let store = SqliteStore::open(&path).expect("store");
        let started = Instant::now();
        eprintln!(
            "building a message map of {rows} rows in {}",
            path.display()
        );
        rt.block_on(async {
            let now = Timestamp::now();
            let mut i = 0;
            while i < rows {
                let end = (i + 10_000).min(rows);
                let items = (i..end).map(|i| (event(i, now), vec![])).collect();
                store.accept_many(items).await.expect("accepted");
                i = end;
            }
        });
        eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());
        std::fs::write(&marker, b"").expect("marker");
    }
    Arc::new(SqliteStore::open(&path).expect("store"))
}

fn lookups(c: &mut Criterion) {
    let rt = runtime();
    let rows: u64 = std::env::var("PASSERELLE_BENCH_MAP_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let store = big_map(&rt, rows);
    let account = "irc.libera".into();
    let mut group = c.benchmark_group("message_map_lookup");
    group.throughput(Throughput::Elements(1));
    let n = AtomicU64::new(0);
    // A multiplicative walk over all rows: every look-up lands somewhere else in the file.
    let pick = |n: &AtomicU64| {
        n.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(2_654_435_761)
            % rows
    };
    group.bench_function(format!("find_by_remote_{rows}_rows"), |b| {
        b.to_async(&rt).iter(|| async {
            let i = pick(&n);
            let room = format!("#room{}", i % 1000).into();
            let found = store
                .find_by_remote(&account, &room, &format!("irc-in.{i}").into())
                .await
                .expect("looked up");
            black_box(found.expect("a stored id is found"));
        })
    });
    group.bench_function(format!("remote_id_{rows}_rows"), |b| {
        b.to_async(&rt).iter(|| async {
            let i = pick(&n);
            let room = format!("#room{}", i % 1000).into();
            let found = store
                .remote_id(key(i), &account, &room)
                .await
                .expect("looked up");
            black_box(found.expect("a stored event has its origin id"));
        })
    });
    group.finish();
}

criterion_group!(benches, bridge, lookups);
criterion_main!(benches);

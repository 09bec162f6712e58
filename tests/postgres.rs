//! The PostgreSQL store against a real PostgreSQL server (Debian's package, a throwaway cluster
//! on loopback): the conformance suite every store passes, then what only a shared database
//! brings: several instances at once, a server that is away or restarts, a schema from a newer
//! passerelle.

use passerelle::store::conformance::new_event;
use passerelle::store::postgres::PostgresStore;
use passerelle::store::{Accepted, NewDelivery, Store, StoreError};
use passerelle_sdk::EventKey;
use passerelle_testkit::postgres::Postgres;
use std::sync::Arc;
use std::time::Duration;

/// A fresh database of the test's own and a store on it.
async fn fresh() -> (PostgresStore, Option<Postgres>) {
    let (url, guard) = Postgres::shared_database();
    let store = PostgresStore::connect(&url, 4).await.expect("connect");
    (store, guard)
}

passerelle::store_conformance!(guarded fresh().await);

fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new(passerelle_testkit::postgres::bin_dir().join("psql"))
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn to(room: &str) -> NewDelivery {
    NewDelivery {
        account: "feed".into(),
        room: room.into(),
        payload: b"sealed".to_vec(),
    }
}

/// Two daemons receiving the same message (a webhook retried to another instance behind a load
/// balancer) store it once: dedupe is the database's, not one process's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_message_at_two_instances_is_stored_once() {
    let (url, _guard) = Postgres::shared_database();
    let a = PostgresStore::connect(&url, 4).await.unwrap();
    let b = PostgresStore::connect(&url, 4).await.unwrap();
    let mut tasks = Vec::new();
    for round in 0..40 {
        for store in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                let remote = format!("m{}", round / 2);
                let event = new_event(EventKey::new(), "chat", "#a", Some(&remote));
                store.accept(event, vec![to("x")]).await.unwrap()
            }));
        }
    }
    let mut stored = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Accepted::Stored(_)) {
            stored += 1;
        }
    }
    assert_eq!(stored, 20, "each of the 20 remote ids stored exactly once");
    assert_eq!(a.pending_count().await.unwrap(), 20);
}

/// Outbox ids commit in order within a room even when many transactions queue for it at once
/// from two instances: a reader that follows "the rows after the last id I saw", as a delivery
/// lane does, sees every row. (A sequence alone hands out ids in the order transactions ask,
/// and a slow transaction would then commit an id below one already read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_ids_misses_no_row_under_concurrent_writers() {
    let (url, _guard) = Postgres::shared_database();
    let a = PostgresStore::connect(&url, 8).await.unwrap();
    let b = PostgresStore::connect(&url, 8).await.unwrap();
    const WRITERS: usize = 8;
    const EACH: usize = 60;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                // Each event also goes to a second room, some to a third: transactions hold
                // several room locks, in different combinations.
                let mut deliveries = vec![to("x"), to(&format!("side{}", w % 3))];
                if i % 5 == 0 {
                    deliveries.push(to("rare"));
                }
                let event = new_event(EventKey::new(), "chat", "#a", Some(&format!("{w}-{i}")));
                store.accept(event, deliveries).await.unwrap();
            }
        }));
    }
    let reader = {
        let store = a.clone();
        tokio::spawn(async move {
            let (account, room) = ("feed".into(), "x".into());
            let mut seen = Vec::new();
            let mut after = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < WRITERS * EACH && tokio::time::Instant::now() < deadline {
                let rows = store.pending(&account, &room, after, 50).await.unwrap();
                for row in &rows {
                    seen.push(row.id);
                    after = row.id;
                }
                if rows.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    let all = a
        .pending(&"feed".into(), &"x".into(), 0, 100_000)
        .await
        .unwrap();
    assert_eq!(all.len(), WRITERS * EACH);
    let missed: Vec<i64> = all
        .iter()
        .map(|e| e.id)
        .filter(|id| !seen.contains(id))
        .collect();
    assert!(
        missed.is_empty(),
        "the reader skipped {} of {} rows (committed below an id it had read): {:?}",
        missed.len(),
        all.len(),
        &missed[..missed.len().min(10)]
    );
}

/// Several daemons starting at once on an empty database migrate it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_migrate_once() {
    let (url, _guard) = Postgres::shared_database();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url, 2).await })
        })
        .collect();
    for s in starts {
        let store = s.await.unwrap().expect("every instance starts");
        assert_eq!(store.schema_version().await.unwrap(), 1);
    }
    assert_eq!(psql(&url, "SELECT count(*) FROM passerelle_schema"), "1");
}

/// A database a newer passerelle migrated is refused, not written to.
#[tokio::test]
async fn a_schema_from_a_newer_passerelle_is_refused() {
    let (url, _guard) = Postgres::shared_database();
    drop(PostgresStore::connect(&url, 1).await.unwrap());
    psql(&url, "UPDATE passerelle_schema SET version = 99");
    match PostgresStore::connect(&url, 1).await {
        Err(StoreError::TooNew { found: 99, known }) => assert_eq!(known, 1),
        Err(e) => panic!("expected TooNew, got {e}"),
        Ok(_) => panic!("expected TooNew, got a store"),
    }
}

/// A wrong password is an error at once (waiting would not help), and its text shows neither
/// password.
#[tokio::test]
async fn a_wrong_password_fails_at_once_without_showing_it() {
    let (url, _guard) = Postgres::shared_database();
    let (head, tail) = url.split_once('@').unwrap();
    let (user, right) = head.rsplit_once(':').unwrap();
    let wrong = format!("{user}:not-the-password@{tail}");
    let started = std::time::Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let result = PostgresStore::connect_patiently(&wrong, 1, Duration::from_secs(60), &stop).await;
    let Err(e) = result else {
        panic!("connected with a wrong password")
    };
    let text = e.to_string();
    assert!(matches!(e, StoreError::Database(_)), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "it waited");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        !text.contains("not-the-password") && !text.contains(right),
        "{text}"
    );
}

/// A daemon that starts before its database waits for it; one whose database restarts goes on
/// once it is back, with what it had stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_waits_for_the_database_and_survives_its_restart() {
    let mut server = Postgres::start(false);
    let url = server.create_database("bridge");
    server.stop();
    let stop = tokio_util::sync::CancellationToken::new();
    let connecting = {
        let url = url.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            PostgresStore::connect_patiently(&url, 2, Duration::from_secs(60), &stop).await
        })
    };
    // The database is away for 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!connecting.is_finished(), "it gave up instead of waiting");
    server.start_again();
    let store = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connected within 30 s of the database's start")
        .unwrap()
        .expect("connected");
    let key = EventKey::new();
    store
        .accept(new_event(key, "chat", "#a", Some("before")), vec![to("x")])
        .await
        .unwrap();

    server.stop();
    let during = store.pending_count().await;
    assert!(
        matches!(during, Err(StoreError::Unavailable(_))),
        "with the server down: {during:?}"
    );
    server.start_again();
    // The pool drops the broken connections and makes new ones.
    let mut after = store.pending_count().await;
    for _ in 0..50 {
        if after.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = store.pending_count().await;
    }
    assert_eq!(
        after.unwrap(),
        1,
        "what was stored before the restart is there"
    );
    assert!(store.event_info(key).await.unwrap().is_some());
}

/// The store's pool keeps to its size and the daemon's many calls share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_calls_share_a_small_pool() {
    let (url, _guard) = Postgres::shared_database();
    let store = Arc::new(PostgresStore::connect(&url, 2).await.unwrap());
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .state_put(&"a".into(), &format!("k{i}"), vec![i as u8], None)
                    .await
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let sessions: i64 = psql(
        &url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'passerelle' AND datname = current_database()",
    )
    .parse()
    .unwrap();
    assert!(sessions <= 2, "{sessions} connections for a pool of 2");
}

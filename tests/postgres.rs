//! The PostgreSQL store against a real PostgreSQL server (Debian's package, a throwaway cluster
//! on loopback): the conformance suite every store passes, then what only a shared database
//! brings: several instances at once, a server that is away or restarts, a schema from a newer
//! passerelle.

mod common;

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
        assert_eq!(
            store.schema_version().await.unwrap(),
            passerelle::store::postgres::SCHEMA_VERSION
        );
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
        Err(StoreError::TooNew { found: 99, known }) => {
            assert_eq!(known, passerelle::store::postgres::SCHEMA_VERSION)
        }
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
    let result =
        PostgresStore::connect_patiently(&wrong, 1, None, Duration::from_secs(60), &stop).await;
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
            PostgresStore::connect_patiently(&url, 2, None, Duration::from_secs(60), &stop).await
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

/// The store a used installation has: 300 events from IRC to one room, half delivered (their ids
/// mapped, so the outbox's counter is past its rows), 5 given up on, connector state, a link made
/// at run time and a paste. Returns the store's path and its highest outbox id.
async fn used_sqlite_store(dir: &std::path::Path) -> (std::path::PathBuf, i64) {
    use passerelle::store::sqlite::SqliteStore;
    use passerelle_sdk::{RemoteMessageId, Timestamp};
    let path = dir.join("data").join("passerelle.db");
    let store = SqliteStore::open(&path).unwrap();
    let mut last = 0;
    for i in 0..300 {
        let event = new_event(EventKey::new(), "irc", "#a", Some(&format!("m{i}")));
        let Accepted::Stored(ids) = store.accept(event, vec![to("#x")]).await.unwrap() else {
            panic!("stored");
        };
        last = ids[0];
    }
    let queued = store
        .pending(&"feed".into(), &"#x".into(), 0, 1000)
        .await
        .unwrap();
    for entry in &queued[..150] {
        let id = RemoteMessageId::from(format!("x{}", entry.id).as_str());
        let delivered = (entry.key, entry.account.clone(), entry.room.clone(), id);
        store.complete(entry.id, Some(delivered)).await.unwrap();
    }
    for entry in &queued[150..155] {
        store
            .dead_letter(entry, "max_attempts", 9, Timestamp::now())
            .await
            .unwrap();
    }
    // The last rows delivered too: the counter (300) is above every remaining row's id.
    for entry in &queued[290..] {
        store.complete(entry.id, None).await.unwrap();
    }
    let irc = "irc".into();
    store
        .state_put(&irc, "offset", b"42".to_vec(), None)
        .await
        .unwrap();
    store
        .state_put(&irc, "seen:1", b"1".to_vec(), Some(Timestamp::now()))
        .await
        .unwrap();
    let rooms = r##"[{"account":"matrix","room":"!p:example.org"},{"account":"irc","room":"#p"}]"##;
    assert!(
        store
            .add_dynamic_link("portal", rooms.into())
            .await
            .unwrap()
    );
    let far = Timestamp::from_secs(4_000_000_000);
    store
        .paste_put("p1", far, b"sealed paste".to_vec())
        .await
        .unwrap();
    (path, last)
}

fn migrate_store(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .arg("migrate-store")
        .args(args)
        .output()
        .expect("run passerelle migrate-store")
}

/// `passerelle migrate-store` moves a used SQLite store into PostgreSQL: what waits in the outbox
/// keeps its ids, sealed payloads and order; the map, state, links, pastes and dead letters read
/// back the same; the outbox goes on above every id the SQLite store gave. A second run is refused
/// (the destination is no longer empty) and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_used_sqlite_store() {
    use passerelle::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let (path, last_id) = used_sqlite_store(dir.path()).await;
    let (url, _guard) = Postgres::shared_database();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();

    let from = format!("sqlite:{}", path.display());
    let args = [
        "--from",
        from.as_str(),
        "--to-file",
        url_file.to_str().unwrap(),
    ];
    let out = migrate_store(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "migrate-store failed: {stderr}");
    let password = url.split(':').nth(2).unwrap().split('@').next().unwrap();
    assert!(!stdout.contains(password) && !stderr.contains(password));
    let count = |table: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no count for {table} in: {stdout}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(count("events"), 300);
    assert_eq!(
        count("remote_ids"),
        450,
        "300 origin ids and 150 delivered ones"
    );
    assert_eq!(
        count("outbox"),
        135,
        "300 - 150 delivered - 5 given up - 10 delivered"
    );
    assert_eq!(count("dead_letters"), 5);
    assert_eq!(count("connector_state"), 2);
    assert_eq!(count("dynamic_links"), 1);
    assert_eq!(count("pastes"), 1);

    let sqlite = SqliteStore::open(&path).unwrap();
    let pg = PostgresStore::connect(&url, 2).await.unwrap();
    let (feed, x) = ("feed".into(), "#x".into());
    let waiting = sqlite.pending(&feed, &x, 0, 1000).await.unwrap();
    assert_eq!(pg.pending(&feed, &x, 0, 1000).await.unwrap(), waiting);
    assert_eq!(
        pg.dead_letters(10).await.unwrap(),
        sqlite.dead_letters(10).await.unwrap()
    );
    assert_eq!(
        pg.room_counts().await.unwrap(),
        sqlite.room_counts().await.unwrap()
    );
    let (irc, a) = ("irc".into(), "#a".into());
    for i in [0, 7, 299] {
        let remote = format!("m{i}").as_str().into();
        let info = pg.find_by_remote(&irc, &a, &remote).await.unwrap();
        assert_eq!(
            info,
            sqlite.find_by_remote(&irc, &a, &remote).await.unwrap()
        );
        let key = info.expect("mapped").key;
        let there = pg.remote_id(key, &feed, &x).await.unwrap();
        assert_eq!(there, sqlite.remote_id(key, &feed, &x).await.unwrap());
    }
    assert_eq!(
        pg.state_get(&irc, "offset").await.unwrap(),
        Some(b"42".to_vec())
    );
    assert_eq!(
        pg.dynamic_links().await.unwrap(),
        sqlite.dynamic_links().await.unwrap()
    );
    let now = passerelle_sdk::Timestamp::now();
    assert_eq!(
        pg.paste_get("p1", now).await.unwrap(),
        Some(b"sealed paste".to_vec())
    );
    // Dedupe carried over: the same message again is known.
    let again = new_event(EventKey::new(), "irc", "#a", Some("m5"));
    assert_eq!(
        pg.accept(again, vec![to("#x")]).await.unwrap(),
        Accepted::Duplicate
    );
    let next = new_event(EventKey::new(), "irc", "#a", Some("m300"));
    let Accepted::Stored(ids) = pg.accept(next, vec![to("#x")]).await.unwrap() else {
        panic!("stored");
    };
    assert!(
        ids[0] > last_id,
        "new id {} above the SQLite store's {last_id}",
        ids[0]
    );

    let out = migrate_store(&args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(pg.pending_count().await.unwrap(), 136);
}

/// The copy is refused while a daemon has the SQLite store open (it holds `passerelle.db.lock`),
/// and when `--from` is not a store; the destination stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_refuses_a_store_in_use() {
    use passerelle::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = used_sqlite_store(dir.path()).await;
    let (url, _guard) = Postgres::shared_database();
    let from = format!("sqlite:{}", path.display());

    let running = SqliteStore::open_locked(&path).unwrap();
    let out = migrate_store(&["--from", &from, "--to", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("another passerelle has it open"),
        "{stderr}"
    );
    drop(running);

    let missing = format!("sqlite:{}", dir.path().join("nothing.db").display());
    let out = migrate_store(&["--from", &missing, "--to", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such file"), "{stderr}");
    let out = migrate_store(&["--from", path.to_str().unwrap(), "--to", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sqlite:PATH"), "{stderr}");

    let pg = PostgresStore::connect(&url, 2).await.unwrap();
    assert_eq!(pg.pending_count().await.unwrap(), 0);
    assert!(pg.dynamic_links().await.unwrap().is_empty());
}

/// Callbacks kept for another instance (cluster mode's relay): kept in order per account, up to
/// a cap past which nothing is kept, announced to the listeners, read oldest first and gone
/// once done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_callbacks_come_back_in_order_up_to_their_cap_and_go_once_done() {
    use passerelle_sdk::AccountId;
    let (store, _guard) = fresh().await;
    let mut listener = store.listen().await.expect("listen");
    let (tg, wa) = (AccountId::new("tg"), AccountId::new("wa"));
    for i in 0..3u8 {
        assert!(store.relay_keep(&tg, "a#1", &[i], 3).await.unwrap());
    }
    assert!(
        !store.relay_keep(&tg, "a#1", &[9], 3).await.unwrap(),
        "a fourth call was kept past the cap of 3"
    );
    assert!(store.relay_keep(&wa, "b#1", &[7], 3).await.unwrap());
    let notice = tokio::time::timeout(Duration::from_secs(5), listener.notices.recv())
        .await
        .expect("a notice within 5 s")
        .expect("the listener is open");
    assert_eq!(
        notice,
        (
            passerelle::store::postgres::RELAY_CHANNEL.to_owned(),
            "a#1\u{1f}tg".to_owned()
        )
    );
    let rows = store.relay_next(&tg, 0, 10).await.unwrap();
    let bodies: Vec<Vec<u8>> = rows.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, [vec![0], vec![1], vec![2]]);
    assert_eq!(store.relay_next(&tg, rows[0].0, 1).await.unwrap()[0].1, [1]);
    store.relay_done(rows[0].0).await.unwrap();
    assert_eq!(
        store.relay_waiting().await.unwrap(),
        [(tg.clone(), 2), (wa.clone(), 1)]
    );
    // Room again below the cap.
    assert!(store.relay_keep(&tg, "a#1", &[3], 3).await.unwrap());
}

/// TLS to the database as a deployment has it: the server's certificate names its host
/// (`db.passerelle.test`, reached at 127.0.0.1 through `hostaddr`) and is signed by a private CA,
/// and the server refuses plain-text connections over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_checks_its_certificate_and_name() {
    let certs = tempfile::tempdir().unwrap();
    let ca =
        passerelle_testkit::servers::make_certificates_for(certs.path(), &["db.passerelle.test"]);
    let mut server = Postgres::start(false);
    let plain = server.create_database("bridge");
    server.require_tls(certs.path());
    let named = |host: &str, query: &str| {
        format!(
            "{}?hostaddr=127.0.0.1{query}",
            plain.replace("@127.0.0.1:", &format!("@{host}:"))
        )
    };
    let tls = named("db.passerelle.test", "&sslmode=require");

    // Checked against the private CA and the host name: connected, and the store works, its
    // listening connection too.
    let store = PostgresStore::connect_with(&tls, 2, Some(&ca))
        .await
        .expect("connected over TLS");
    assert_eq!(store.pending_count().await.unwrap(), 0);
    store
        .listen()
        .await
        .expect("a listening connection over TLS");

    // Without TLS the server refuses; without the CA, or under another name, we refuse.
    for (what, url, ca_file) in [
        (
            "no sslmode",
            named("db.passerelle.test", ""),
            Some(ca.as_path()),
        ),
        (
            "sslmode=prefer",
            named("db.passerelle.test", "&sslmode=prefer"),
            Some(ca.as_path()),
        ),
        ("the CA not trusted", tls.clone(), None),
        (
            "another host name",
            named("other.passerelle.test", "&sslmode=require"),
            Some(ca.as_path()),
        ),
    ] {
        let result = PostgresStore::connect_with(&url, 1, ca_file).await;
        let Err(e) = result else {
            panic!("{what}: connected")
        };
        let text = e.to_string();
        assert!(!text.contains(&server_password(&plain)), "{what}: {text}");
        if ca_file.is_none() {
            assert!(text.contains("store.tls_ca_file"), "{what}: {text}");
        }
        eprintln!("{what}: {text}");
    }

    // The daemon on that database, as its configuration names it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("database-url"), &tls).unwrap();
    let admin = common::free_port();
    let config = format!(
        "[general]\nshutdown_grace_secs = 5\n\n[store]\npath = \"{data}/passerelle.db\"\n\
         url_file = \"{secrets}/database-url\"\ntls_ca_file = \"{ca}\"\n\n\
         [http]\nlisten = \"127.0.0.1:{admin}\"\n\n{api}",
        data = dir.path().join("data").display(),
        secrets = dir.path().display(),
        ca = ca.display(),
        api = common::api_account(common::free_port(), "tls-test-token-0123456789"),
    );
    let mut daemon = common::Daemon::start(dir.path(), &config, admin);
    daemon.wait_ready(Duration::from_secs(60)).await;
    assert!(
        daemon.logs().contains("store: PostgreSQL"),
        "{}",
        daemon.logs()
    );
    daemon.stop();
}

/// The password in a test server's URL (`postgres://USER:PASSWORD@…`).
fn server_password(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(creds, _)| creds.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
        .unwrap_or_default()
}

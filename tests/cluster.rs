//! Cluster mode's leases against a real PostgreSQL server: the accounts spread over the live
//! instances, pinned ones go to their instance, a dead instance's accounts are taken over once
//! its leases expire, a paused owner that comes back sends nothing (its own clock and the database
//! both refuse the old epoch), and an instance that leaves hands over at once.

use async_trait::async_trait;
use passerelle::cluster::{Accounts, Admit, Cluster, Settings};
use passerelle::store::conformance::new_event;
use passerelle::store::postgres::PostgresStore;
use passerelle::store::{Accepted, NewDelivery, Store};
use passerelle_sdk::{AccountId, EventKey};
use passerelle_testkit::postgres::Postgres;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_millis(250);

/// What each instance was asked to start and stop, in order, with when.
#[derive(Default)]
struct Log(Mutex<Vec<(Instant, String, AccountId, bool)>>);

struct Recorder {
    name: String,
    log: Arc<Log>,
}

#[async_trait]
impl Accounts for Recorder {
    async fn start(&self, account: &AccountId, _epoch: i64) {
        let mut log = self.log.0.lock().unwrap();
        log.push((Instant::now(), self.name.clone(), account.clone(), true));
    }
    async fn stop(&self, account: &AccountId, _handover: Option<i64>) {
        let mut log = self.log.0.lock().unwrap();
        log.push((Instant::now(), self.name.clone(), account.clone(), false));
    }
}

struct Instance {
    cluster: Cluster,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn accounts(names: &[&str]) -> Vec<AccountId> {
    names.iter().map(|n| AccountId::new(*n)).collect()
}

async fn start(
    store: &PostgresStore,
    name: &str,
    prefer: &[(&str, &str)],
    accounts: Vec<AccountId>,
    log: &Arc<Log>,
) -> Instance {
    let mut settings = Settings::new(name, LEASE);
    settings.heartbeat = HEARTBEAT;
    settings.prefer = prefer
        .iter()
        .map(|(a, i)| (AccountId::new(*a), (*i).to_owned()))
        .collect();
    let cluster = Cluster::join(store, settings).await.expect("join");
    let stop = CancellationToken::new();
    let handler = Arc::new(Recorder {
        name: name.to_owned(),
        log: log.clone(),
    });
    let task = tokio::spawn({
        let (cluster, stop) = (cluster.clone(), stop.clone());
        async move { cluster.run(accounts, handler, stop).await }
    });
    Instance {
        cluster,
        stop,
        task,
    }
}

/// Who holds what, by instance name, once every account in `all` is held by one instance
/// exactly; panics after 15 s.
async fn settled(instances: &[&Instance], all: &[AccountId]) -> BTreeMap<String, Vec<AccountId>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut by: BTreeMap<String, Vec<AccountId>> = BTreeMap::new();
        let mut count: BTreeMap<AccountId, usize> = BTreeMap::new();
        for i in instances {
            for account in i.cluster.held().into_keys() {
                *count.entry(account.clone()).or_default() += 1;
                by.entry(i.cluster.name().to_owned())
                    .or_default()
                    .push(account);
            }
        }
        if all.iter().all(|a| count.get(a) == Some(&1)) && count.len() == all.len() {
            return by;
        }
        assert!(Instant::now() < deadline, "not settled: {by:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every account moved was stopped at its old instance before it started at its new one.
fn one_runner_at_a_time(log: &Log, all: &[AccountId]) {
    let log = log.0.lock().unwrap().clone();
    for account in all {
        let mut running: Option<&str> = None;
        for (_, instance, acc, started) in log.iter().filter(|e| &e.2 == account) {
            if *started {
                assert!(
                    running.is_none(),
                    "{acc} started at {instance} while at {running:?}"
                );
                running = Some(instance);
            } else {
                assert_eq!(
                    running,
                    Some(instance.as_str()),
                    "{acc} stopped where it did not run"
                );
                running = None;
            }
        }
    }
}

async fn store() -> (PostgresStore, String, Option<Postgres>) {
    let (url, guard) = Postgres::shared_database();
    let store = PostgresStore::connect(&url, 8).await.expect("connect");
    (store, url, guard)
}

/// Six shared accounts over three instances: two each; the pinned one goes to its instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_spread_over_the_instances_and_pinned_ones_go_to_theirs() {
    let (store, _url, _guard) = store().await;
    let all = accounts(&["a1", "a2", "a3", "a4", "a5", "a6", "pinned"]);
    let prefer = [("pinned", "b")];
    let log = Arc::new(Log::default());
    let a = start(&store, "a", &prefer, all.clone(), &log).await;
    let b = start(&store, "b", &prefer, all.clone(), &log).await;
    let c = start(&store, "c", &prefer, all.clone(), &log).await;
    // The first to start took more than its share; wait for the others to get theirs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let by = loop {
        let by = settled(&[&a, &b, &c], &all).await;
        let counts: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|n| by.get(*n).map_or(0, Vec::len))
            .collect();
        if counts == [2, 3, 2] {
            break by;
        }
        assert!(Instant::now() < deadline, "not spread: {by:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(by["b"].contains(&AccountId::new("pinned")), "{by:?}");
    one_runner_at_a_time(&log, &all);
    let owners = a.cluster.owners().await.unwrap();
    assert_eq!(owners.len(), all.len());
    for o in owners {
        let expected = by
            .iter()
            .find(|(_, held)| held.contains(&o.account))
            .unwrap()
            .0;
        assert_eq!(o.instance.as_deref(), Some(expected.as_str()));
        assert!(o.expires_in_ms > 0);
    }
    for i in [a, b, c] {
        i.stop.cancel();
        i.task.await.unwrap();
        i.cluster.leave().await.unwrap();
    }
}

/// An instance that dies (no goodbye) loses its accounts once its leases expire; the survivor
/// takes them over at a higher epoch within the lease plus a heartbeat or two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_instances_accounts_are_taken_over_after_the_lease() {
    let (store, _url, _guard) = store().await;
    let all = accounts(&["x1", "x2", "x3", "x4"]);
    let log = Arc::new(Log::default());
    let a = start(&store, "a", &[], all.clone(), &log).await;
    let b = start(&store, "b", &[], all.clone(), &log).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let by = loop {
        let by = settled(&[&a, &b], &all).await;
        if by.get("a").map(Vec::len) == Some(2) && by.get("b").map(Vec::len) == Some(2) {
            break by;
        }
        assert!(Instant::now() < deadline, "not spread: {by:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let epochs_before = a.cluster.held();
    // a dies: its loop ends without giving anything back.
    a.stop.cancel();
    a.task.await.unwrap();
    let died = Instant::now();
    let by_after = settled(&[&b], &all).await;
    let took = died.elapsed();
    assert_eq!(by_after["b"].len(), 4);
    assert!(
        took <= LEASE + 4 * HEARTBEAT,
        "taken over after {took:?} (lease {LEASE:?})"
    );
    assert!(took >= LEASE - HEARTBEAT, "taken over too early: {took:?}");
    let held = b.cluster.held();
    for (account, epoch) in epochs_before {
        assert!(
            held[&account] > epoch,
            "{account}: epoch {} after {epoch}",
            held[&account]
        );
    }
    assert!(by["a"].iter().all(|acc| by_after["b"].contains(acc)));
    b.stop.cancel();
    b.task.await.unwrap();
}

/// An owner paused past its lease (SIGSTOP, a long GC pause, a network cut to the database)
/// sends nothing when it comes back: its own clock refuses the claim, and the database refuses
/// the old epoch even when asked; once its loop runs again it stops the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_owner_sends_nothing_after_losing_its_lease() {
    let (store, url, _guard) = store().await;
    let all = accounts(&["feed"]);
    let log = Arc::new(Log::default());
    let a = start(&store, "a", &[], all.clone(), &log).await;
    settled(&[&a], &all).await;
    let old_epoch = a.cluster.held()[&AccountId::new("feed")];
    let b = start(&store, "b", &[], all.clone(), &log).await;

    let queue = |remote: &'static str| {
        let store = store.clone();
        async move {
            let event = new_event(EventKey::new(), "irc", "#a", Some(remote));
            let delivery = NewDelivery {
                account: "feed".into(),
                room: "#x".into(),
                payload: b"sealed".to_vec(),
            };
            match store.accept(event, vec![delivery]).await.unwrap() {
                Accepted::Stored(ids) => ids[0],
                Accepted::Duplicate => panic!("stored"),
            }
        }
    };
    let first = queue("m1").await;
    let feed = AccountId::new("feed");
    assert_eq!(a.cluster.admit(&feed, first).await.unwrap(), Admit::Go);
    // Connector state is written under the lease too.
    assert!(
        a.cluster
            .state_write(&feed, "offset", Some(b"1"), None)
            .await
            .unwrap()
    );

    // a pauses: no heartbeat. b takes the account once the lease is over.
    a.stop.cancel();
    a.task.await.unwrap();
    let by = settled(&[&b], &all).await;
    assert_eq!(by["b"], all);
    let second = queue("m2").await;
    assert_eq!(b.cluster.admit(&feed, second).await.unwrap(), Admit::Go);

    // a comes back: its clock says the lease is over, so it does not even ask.
    assert_eq!(a.cluster.admit(&feed, second).await.unwrap(), Admit::Lost);
    assert_eq!(a.cluster.holds(&feed), None);
    // Asked anyway with the old epoch, the database refuses.
    let out = std::process::Command::new(passerelle_testkit::postgres::bin_dir().join("psql"))
        .arg(&url)
        .args(["-v", "ON_ERROR_STOP=1", "-qtA", "-c"])
        .arg(format!(
            "SELECT passerelle_claim('feed', '{}', {old_epoch}, {second})",
            a.cluster.owner()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the old epoch was accepted");
    assert!(stderr.contains("is not held"), "{stderr}");
    // The same for connector state: the new owner's write stands; the old one's is refused,
    // by its own clock and, asked with the old epoch, by the database.
    assert!(
        b.cluster
            .state_write(&feed, "offset", Some(b"2"), None)
            .await
            .unwrap()
    );
    assert!(
        !a.cluster
            .state_write(&feed, "offset", Some(b"3"), None)
            .await
            .unwrap()
    );
    let out = std::process::Command::new(passerelle_testkit::postgres::bin_dir().join("psql"))
        .arg(&url)
        .args(["-v", "ON_ERROR_STOP=1", "-qtA", "-c"])
        .arg(format!(
            "BEGIN; SELECT passerelle_fence('feed', '{}', {old_epoch}); \
             UPDATE connector_state SET value = '\\x34' WHERE account = 'feed'; COMMIT;",
            a.cluster.owner()
        ))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a state write under the old epoch was accepted"
    );
    assert_eq!(
        store.state_get(&feed, "offset").await.unwrap().as_deref(),
        Some(&b"2"[..]),
        "the new owner's state was overwritten"
    );

    // Its loop runs again: the renewal fails and the account is stopped there at once. (Alive again and first by name, it may then get the account back, handed over by b
    // at a higher epoch.)
    let handler = Arc::new(Recorder {
        name: "a".into(),
        log: log.clone(),
    });
    let again = CancellationToken::new();
    let task = tokio::spawn({
        let (cluster, again) = (a.cluster.clone(), again.clone());
        async move { cluster.run(all.clone(), handler, again).await }
    });
    tokio::time::sleep(8 * HEARTBEAT).await;
    let events: Vec<(String, bool)> = log
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, i, _, s)| (i.clone(), *s))
        .collect();
    // a could not stop the account while paused (b took it meanwhile: the fencing above is what
    // kept a from sending); it stopped it as soon as it ran again.
    assert_eq!(
        events[..3],
        [("a".into(), true), ("b".into(), true), ("a".into(), false)],
    );
    if events.len() > 3 {
        assert_eq!(
            events[3..],
            [("b".into(), false), ("a".into(), true)],
            "a handover"
        );
    }
    if let Some(epoch) = a.cluster.holds(&feed) {
        assert!(epoch > old_epoch + 1, "handed back at epoch {epoch}");
    }
    again.cancel();
    task.await.unwrap();
    b.stop.cancel();
    b.task.await.unwrap();
}

/// An instance that leaves gives its leases back: the others take the accounts at once, not
/// after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_that_leaves_hands_over_at_once() {
    let (store, _url, _guard) = store().await;
    let all = accounts(&["y1", "y2"]);
    let log = Arc::new(Log::default());
    let a = start(&store, "a", &[("y1", "a"), ("y2", "a")], all.clone(), &log).await;
    let b = start(&store, "b", &[("y1", "a"), ("y2", "a")], all.clone(), &log).await;
    let by = settled(&[&a, &b], &all).await;
    assert_eq!(by["a"].len(), 2, "both pinned to a: {by:?}");
    a.stop.cancel();
    a.task.await.unwrap();
    a.cluster.leave().await.unwrap();
    let left = Instant::now();
    settled(&[&b], &all).await;
    assert!(left.elapsed() < LEASE / 2, "took {:?}", left.elapsed());
    b.stop.cancel();
    b.task.await.unwrap();
}

/// A reload's accounts: an added one is taken by one instance, spread like the others; a removed
/// one is stopped where it ran and its lease given back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_added_and_removed_by_a_reload_are_taken_and_given_back() {
    let (store, _url, _guard) = store().await;
    let log = Arc::new(Log::default());
    let first = accounts(&["feed", "news"]);
    let a = start(&store, "a", &[], first.clone(), &log).await;
    let b = start(&store, "b", &[], first.clone(), &log).await;
    // Settled and spread: one each, then (three accounts) one and two.
    let spread = async |all: &[AccountId], want: &[Vec<usize>]| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let by = settled(&[&a, &b], all).await;
            let sizes: Vec<usize> = by.values().map(Vec::len).collect();
            if want.contains(&sizes) {
                return by;
            }
            assert!(Instant::now() < deadline, "not spread: {by:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    spread(&first, &[vec![1, 1]]).await;
    // Both instances read the new configuration: "news" goes, "chat" and "mail" come.
    let next = accounts(&["feed", "chat", "mail"]);
    for i in [&a, &b] {
        i.cluster.set_accounts(next.clone());
    }
    let after = spread(&next, &[vec![1, 2], vec![2, 1]]).await;
    assert!(
        !after.values().flatten().any(|acc| acc.as_str() == "news"),
        "the removed account is still held: {after:?}"
    );
    let stopped = log
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(_, _, acc, started)| acc.as_str() == "news" && !*started);
    assert!(stopped, "the removed account was never stopped");
    let owners = a.cluster.owners().await.unwrap();
    let news = owners.iter().find(|o| o.account.as_str() == "news");
    assert!(
        news.is_none_or(|o| o.expires_in_ms <= 0),
        "the removed account's lease was not given back"
    );
    for i in [a, b] {
        i.stop.cancel();
        i.task.await.unwrap();
    }
}

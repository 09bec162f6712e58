use super::*;
use crate::config::{Direction, General, LinkConfig, LinkRoom, Rights};
use crate::router::Policies;
use crate::router::table::RouteTable;
use crate::router::{AccountPolicy, Router, guard::RouteGuard};
use crate::store::sqlite::SqliteStore;
use passerelle_sdk::{Capabilities, Content, Event, EventKind, Limits, Sender};

/// One origin room `a/in` linked to two rooms on account `b`: `fast` and `slow`.
fn setup() -> (Router, Lanes, mpsc::Receiver<Outbound>, Arc<dyn Store>) {
    let (router, lanes, rx, store, _) = setup_with(General::default());
    (router, lanes, rx, store)
}

/// [`setup`] with these `[general]` settings, and the dead letters' log.
fn setup_with(
    general: General,
) -> (
    Router,
    Lanes,
    mpsc::Receiver<Outbound>,
    Arc<dyn Store>,
    passerelle_sdk::DeadLetterLog,
) {
    setup_fenced(general, None, Duration::ZERO)
}

/// [`setup_with`], with cluster mode's fence when given, and each receipt reaching the recorder
/// `record_delay` late (a store slow to write).
fn setup_fenced(
    general: General,
    fence: Option<Arc<dyn Fence>>,
    record_delay: Duration,
) -> (
    Router,
    Lanes,
    mpsc::Receiver<Outbound>,
    Arc<dyn Store>,
    passerelle_sdk::DeadLetterLog,
) {
    let policy = |rights: Rights| AccountPolicy {
        enabled: true,
        rights,
        capabilities: Capabilities {
            per_message_identity: true,
            ..Capabilities::default()
        },
        limits: Limits::default(),
        remote_nick_format: None,
    };
    let rw = Rights {
        read: true,
        write: true,
        delete: false,
    };
    let policies: Arc<Policies> = Arc::new(
        [("a".into(), policy(rw)), ("b".into(), policy(rw))]
            .into_iter()
            .collect(),
    );
    let links = vec![LinkConfig {
        name: "l".into(),
        private_fanout: false,
        rooms: vec![
            LinkRoom {
                account: "a".into(),
                room: "in".into(),
                direction: Direction::In,
                private: false,
            },
            LinkRoom {
                account: "b".into(),
                room: "fast".into(),
                direction: Direction::Out,
                private: false,
            },
            LinkRoom {
                account: "b".into(),
                room: "slow".into(),
                direction: Direction::Out,
                private: false,
            },
        ],
    }];
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let sealer = Arc::new(Sealer::new([1; 32]));
    let (tx, rx) = mpsc::channel(8);
    let tracker = TaskTracker::new();
    let dead_letters = passerelle_sdk::DeadLetterLog::default();
    let pending_receipts = PendingReceipts::default();
    let live = crate::live::Live::new((*policies).clone(), general);
    let mut recorder = Recorder::start(store.clone(), pending_receipts.clone(), &tracker);
    if !record_delay.is_zero() {
        let (slow, mut rx) = mpsc::channel::<Record>(64);
        let to = std::mem::replace(&mut recorder, slow);
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                tokio::time::sleep(record_delay).await;
                if to.send(r).await.is_err() {
                    break;
                }
            }
        });
    }
    let delivery = Arc::new(Delivery {
        recorder,
        pending_receipts,
        store: store.clone(),
        sealer: sealer.clone(),
        guard: Arc::new(std::sync::RwLock::new(RouteGuard::build(&links, &policies))),
        live: live.clone(),
        outbound: Arc::new([("b".into(), tx)].into_iter().collect()),
        stop: CancellationToken::new(),
        pastes: None,
        dead_letters: dead_letters.clone(),
        fence,
    });
    let lanes = Lanes::new(delivery, tracker);
    let router = Router::new(
        Arc::new(std::sync::RwLock::new(RouteTable::build(&links, &policies))),
        live,
        store.clone(),
        sealer,
        lanes.clone(),
    );
    (router, lanes, rx, store, dead_letters)
}

/// Answers `fast` at once and `slow` always with a retryable error; the texts sent to each.
fn flaky_destination(
    mut rx: mpsc::Receiver<Outbound>,
) -> tokio::task::JoinHandle<(Vec<String>, Vec<String>)> {
    tokio::spawn(async move {
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        while let Ok(Some(outbound)) = tokio::time::timeout(Duration::from_secs(4), rx.recv()).await
        {
            let text = outbound
                .event
                .content()
                .map(|c| c.text.as_str().to_owned())
                .unwrap_or_default();
            if outbound.event.room.as_str() == "fast" {
                fast.push(text);
                outbound.respond(Ok(passerelle_sdk::Receipt::default()));
            } else {
                slow.push(text);
                outbound.respond(Err(SendError::Disconnected));
            }
        }
        (fast, slow)
    })
}

#[tokio::test]
async fn a_row_that_keeps_failing_is_given_up_on_after_max_attempts_and_the_next_one_goes() {
    let general = General {
        max_attempts: 3,
        ..General::default()
    };
    let (router, _lanes, rx, store, log) = setup_with(general);
    let destination = flaky_destination(rx);
    for i in 0..2 {
        router.ingest(&"a".into(), message(i)).await.unwrap();
    }
    let (fast, slow) = destination.await.unwrap();
    assert_eq!(fast, ["0", "1"], "the other room is not held");
    assert_eq!(
        slow,
        ["0", "0", "0", "1", "1", "1"],
        "three tries each, in order"
    );
    let letters = log.recent();
    assert_eq!(letters.len(), 2);
    for (letter, n) in letters.iter().zip([1, 0]) {
        assert_eq!(
            (
                letter.account.as_str(),
                letter.room.as_str(),
                letter.reason.as_str()
            ),
            ("b", "slow", "max_attempts")
        );
        assert_eq!(letter.attempts, 3);
        assert_eq!(store.dead_letters(10).await.unwrap()[1 - n], *letter);
    }
    assert_eq!(
        store.pending_count().await.unwrap(),
        0,
        "removed from the outbox"
    );
}

#[tokio::test]
async fn retention_and_queue_age_count_from_receipt_not_the_networks_clock() {
    let (router, _lanes, rx, store, log) = setup_with(General::default());
    let destination = flaky_destination(rx);
    // A network that says its message was sent in 1970.
    let mut old = message(0);
    old.at = Timestamp(1_000);
    let key = old.key;
    router.ingest(&"a".into(), old).await.unwrap();
    let hour_ago = Timestamp(Timestamp::now().0 - 3_600_000);
    store.purge_before(hour_ago).await.unwrap();
    assert!(
        store.event_info(key).await.unwrap().is_some(),
        "kept: it was received just now"
    );
    let (fast, _) = destination.await.unwrap();
    assert_eq!(fast, ["0"], "sent, not given up on as 56 years old");
    assert!(log.recent().iter().all(|d| d.reason != "max_age"));
}

#[tokio::test]
async fn a_row_older_than_max_queue_age_is_given_up_on_before_it_is_sent() {
    let general = General {
        max_queue_age_secs: 0,
        ..General::default()
    };
    let (router, _lanes, rx, store, log) = setup_with(general);
    let destination = flaky_destination(rx);
    router.ingest(&"a".into(), message(0)).await.unwrap();
    let (fast, slow) = destination.await.unwrap();
    assert!(
        fast.is_empty() && slow.is_empty(),
        "nothing sent: {fast:?} {slow:?}"
    );
    let reasons: Vec<String> = log.recent().into_iter().map(|d| d.reason).collect();
    assert_eq!(reasons, ["max_age", "max_age"]);
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

fn message(i: usize) -> Event {
    Event::new(
        "in",
        Sender::new("u"),
        EventKind::Message(Content::plain(format!("{i}"))),
    )
    .with_remote_id(format!("m{i}"))
}

#[tokio::test]
async fn a_stalled_room_holds_only_itself_and_a_backlog_spills_then_arrives_in_order() {
    let (router, lanes, mut rx, store) = setup();
    const N: usize = 1500; // well past the lane's in-memory capacity
    // The destination answers `fast` at once and holds `slow` until every `fast` has arrived.
    let consumer = tokio::spawn(async move {
        let (mut fast, mut slow, mut held) = (Vec::new(), Vec::new(), Vec::new());
        while fast.len() < N || slow.len() < N {
            let Some(outbound) = rx.recv().await else {
                break;
            };
            let text = outbound
                .event
                .content()
                .map(|c| c.text.as_str().to_owned())
                .unwrap_or_default();
            let n: usize = text.parse().unwrap_or(usize::MAX);
            if outbound.event.room.as_str() == "fast" {
                fast.push(n);
                let id = format!("f{n}");
                outbound.respond(Ok(passerelle_sdk::Receipt {
                    remote_id: Some(id.into()),
                }));
            } else {
                held.push((n, outbound));
            }
            if fast.len() == N {
                for (n, o) in held.drain(..) {
                    slow.push(n);
                    o.respond(Ok(passerelle_sdk::Receipt::default()));
                }
            }
        }
        (fast, slow)
    });
    for i in 0..N {
        let d = router.ingest(&"a".into(), message(i)).await.unwrap();
        assert_eq!(d, passerelle_sdk::Disposition::Queued { destinations: 2 });
    }
    // A redelivered origin message is a duplicate, not a second delivery.
    assert_eq!(
        router.ingest(&"a".into(), message(7)).await.unwrap(),
        passerelle_sdk::Disposition::Duplicate
    );
    let (fast, slow) = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("everything delivered within 60 s")
        .unwrap();
    let expected: Vec<usize> = (0..N).collect();
    assert_eq!(fast, expected, "the fast room lost, repeated or reordered");
    assert_eq!(slow, expected, "the slow room lost, repeated or reordered");
    // Delivered rows are gone; the fast room's ids are mapped.
    for _ in 0..100 {
        if store.pending_count().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert!(
        store
            .find_by_remote(&"b".into(), &"fast".into(), &"f42".into())
            .await
            .unwrap()
            .is_some()
    );
    drop(lanes);
}

/// A cluster in which this instance owns every account and every claim succeeds.
struct OwnsAll;

#[async_trait::async_trait]
impl Fence for OwnsAll {
    fn owns(&self, _: &AccountId) -> bool {
        true
    }
    async fn admit(
        &self,
        _: &AccountId,
        _: i64,
    ) -> Result<crate::cluster::Admit, crate::store::StoreError> {
        Ok(crate::cluster::Admit::Go)
    }
}

#[tokio::test]
async fn in_cluster_mode_a_lane_sends_its_next_row_only_once_the_last_receipt_is_written() {
    // A successor resends what its dead predecessor delivered but had not recorded: with one
    // row at most unrecorded per lane, a kill costs one repeat at most.
    const N: usize = 20;
    let (router, lanes, mut rx, store, _) = setup_fenced(
        General::default(),
        Some(Arc::new(OwnsAll)),
        Duration::from_millis(20),
    );
    for i in 0..N {
        router.ingest(&"a".into(), message(i)).await.unwrap();
    }
    let mut seen = 0;
    while seen < N {
        let o = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a send within 10 s")
            .expect("the lanes are running");
        if o.event.room.as_str() == "fast" {
            // Everything this room was sent before this row is recorded (deleted) already.
            let queued = store
                .pending(&"b".into(), &"fast".into(), 0, N)
                .await
                .unwrap();
            assert_eq!(
                queued.len(),
                N - seen,
                "{} rows delivered to fast and not yet recorded when the next was sent",
                queued.len() + seen - N
            );
            seen += 1;
        }
        o.respond(Ok(passerelle_sdk::Receipt::default()));
    }
    drop(lanes);
}

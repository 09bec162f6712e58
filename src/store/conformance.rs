//! The conformance tests every [`Store`] backend must pass. A backend's test module runs them all
//! with `crate::store_conformance!(make_store_expression);`.

use super::{Accepted, NewDelivery, NewEvent, Store};
use passerelle_sdk::{AccountId, EventKey, RemoteMessageId, RoomId, Timestamp};

/// An accepted event for tests.
pub fn new_event(key: EventKey, account: &str, room: &str, remote: Option<&str>) -> NewEvent {
    NewEvent {
        key,
        account: account.into(),
        room: room.into(),
        remote_id: remote.map(RemoteMessageId::from),
        sender_name: "alice".into(),
        sender_id: "@alice:example.org".into(),
        thread_root: None,
        at: Timestamp::now(),
    }
}

fn delivery(account: &str, room: &str, payload: &[u8]) -> NewDelivery {
    NewDelivery {
        account: account.into(),
        room: room.into(),
        payload: payload.to_vec(),
    }
}

/// Accepting maps the origin id, queues deliveries in order, and a second accept of the same
/// origin id is a duplicate that writes nothing.
pub async fn accept_maps_queues_and_dedupes(store: impl Store) {
    let key = EventKey::new();
    let got = store
        .accept(
            new_event(key, "chat", "#a", Some("m1")),
            vec![
                delivery("chat", "#b", b"one"),
                delivery("feed", "x", b"two"),
            ],
        )
        .await
        .unwrap();
    let Accepted::Stored(ids) = got else {
        panic!("expected stored, got {got:?}")
    };
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    let origin = store
        .find_by_remote(&"chat".into(), &"#a".into(), &"m1".into())
        .await
        .unwrap();
    assert_eq!(
        origin.map(|i| i.key),
        Some(key),
        "the origin id maps to the event"
    );
    assert!(
        store
            .find_by_remote(&"chat".into(), &"#b".into(), &"m1".into())
            .await
            .unwrap()
            .is_none(),
        "ids are per room"
    );
    let again = store
        .accept(
            new_event(EventKey::new(), "chat", "#a", Some("m1")),
            vec![delivery("chat", "#b", b"x")],
        )
        .await
        .unwrap();
    assert_eq!(again, Accepted::Duplicate);
    assert_eq!(store.pending_count().await.unwrap(), 2);
    // Events without an origin id are never duplicates of each other.
    for _ in 0..2 {
        let r = store
            .accept(new_event(EventKey::new(), "chat", "#a", None), vec![])
            .await
            .unwrap();
        assert!(matches!(r, Accepted::Stored(_)));
    }
}

/// Pending deliveries come back per destination in id order, after a given id, and completing
/// one removes it and maps the destination's id to the event.
pub async fn outbox_orders_and_completes(store: impl Store) {
    let mut keys = Vec::new();
    for i in 0..5 {
        let key = EventKey::new();
        keys.push(key);
        let payload = format!("p{i}");
        store
            .accept(
                new_event(key, "chat", "#a", Some(&format!("m{i}"))),
                vec![
                    delivery("feed", "x", payload.as_bytes()),
                    delivery("feed", "y", b"other"),
                ],
            )
            .await
            .unwrap();
    }
    let (a, x) = (AccountId::from("feed"), RoomId::from("x"));
    let pending = store.pending(&a, &x, 0, 100).await.unwrap();
    assert_eq!(pending.len(), 5);
    assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(pending[0].payload, b"p0");
    assert_eq!(pending[0].key, keys[0]);
    let after = store.pending(&a, &x, pending[1].id, 2).await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![pending[2].id, pending[3].id]
    );
    let mut destinations = store.pending_destinations().await.unwrap();
    destinations.sort();
    assert_eq!(
        destinations,
        vec![(a.clone(), x.clone()), (a.clone(), "y".into())]
    );

    store
        .complete(
            pending[0].id,
            Some((keys[0], a.clone(), x.clone(), "api-1".into())),
        )
        .await
        .unwrap();
    store.complete(pending[1].id, None).await.unwrap();
    assert_eq!(store.pending(&a, &x, 0, 100).await.unwrap().len(), 3);
    assert_eq!(store.pending_count().await.unwrap(), 8);
    assert_eq!(
        store.pending_by_account().await.unwrap(),
        vec![(AccountId::from("feed"), 8)]
    );
    assert_eq!(
        store.remote_id(keys[0], &a, &x).await.unwrap(),
        Some("api-1".into())
    );
    assert_eq!(store.remote_id(keys[1], &a, &x).await.unwrap(), None);
    let info = store
        .find_by_remote(&a, &x, &"api-1".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.key, keys[0]);
    assert_eq!(info.account, AccountId::from("chat"));
    assert_eq!(info.sender_name, "alice");
    assert_eq!(info.sender_id.as_deref(), Some("@alice:example.org"));
}

/// Thread roots are kept, and event info is found by key.
pub async fn threads_and_info(store: impl Store) {
    let root = EventKey::new();
    store
        .accept(new_event(root, "a", "r", Some("root")), vec![])
        .await
        .unwrap();
    let child = EventKey::new();
    let mut event = new_event(child, "a", "r", Some("child"));
    event.thread_root = Some(root);
    store.accept(event, vec![]).await.unwrap();
    let info = store.event_info(child).await.unwrap().unwrap();
    assert_eq!(info.thread_root, Some(root));
    assert!(store.event_info(EventKey::new()).await.unwrap().is_none());
    assert!(
        store
            .find_by_remote(&"a".into(), &"r".into(), &"nope".into())
            .await
            .unwrap()
            .is_none()
    );
}

/// Retention removes old map rows but never an event that still has queued deliveries.
pub async fn purge_respects_age_and_queue(store: impl Store) {
    let old = EventKey::new();
    let mut event = new_event(old, "a", "r", Some("old"));
    event.at = Timestamp(1_000);
    store.accept(event, vec![]).await.unwrap();
    let queued = EventKey::new();
    let mut event = new_event(queued, "a", "r", Some("queued"));
    event.at = Timestamp(1_000);
    store
        .accept(event, vec![delivery("b", "s", b"x")])
        .await
        .unwrap();
    let fresh = EventKey::new();
    store
        .accept(new_event(fresh, "a", "r", Some("fresh")), vec![])
        .await
        .unwrap();
    let removed = store.purge_before(Timestamp(2_000)).await.unwrap();
    assert_eq!(removed, 1);
    assert!(store.event_info(old).await.unwrap().is_none());
    assert!(store.event_info(queued).await.unwrap().is_some());
    assert!(store.event_info(fresh).await.unwrap().is_some());
}

/// Connector state is per account and key.
pub async fn connector_state(store: impl Store) {
    let (a, b) = (AccountId::from("a"), AccountId::from("b"));
    assert_eq!(store.state_get(&a, "k").await.unwrap(), None);
    store.state_put(&a, "k", b"1".to_vec(), None).await.unwrap();
    store.state_put(&a, "k", b"2".to_vec(), None).await.unwrap();
    store.state_put(&b, "k", b"3".to_vec(), None).await.unwrap();
    assert_eq!(store.state_get(&a, "k").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.state_get(&b, "k").await.unwrap(), Some(b"3".to_vec()));
    store.state_delete(&a, "k").await.unwrap();
    assert_eq!(store.state_get(&a, "k").await.unwrap(), None);
    assert_eq!(store.state_get(&b, "k").await.unwrap(), Some(b"3".to_vec()));
    // Records go with the retention purge; plain values stay.
    let at = |ms| Some(Timestamp(ms));
    store
        .state_put(&a, "old", b"o".to_vec(), at(1_000))
        .await
        .unwrap();
    store
        .state_put(&a, "new", b"n".to_vec(), at(3_000))
        .await
        .unwrap();
    store.purge_before(Timestamp(2_000)).await.unwrap();
    assert_eq!(store.state_get(&a, "old").await.unwrap(), None);
    assert_eq!(
        store.state_get(&a, "new").await.unwrap(),
        Some(b"n".to_vec())
    );
    assert_eq!(store.state_get(&b, "k").await.unwrap(), Some(b"3".to_vec()));
}

/// Links made at run time are kept, in order, and a name is taken once.
pub async fn dynamic_links(store: impl Store) {
    assert!(store.dynamic_links().await.unwrap().is_empty());
    assert!(
        store
            .add_dynamic_link("portal:a", "[1]".into())
            .await
            .unwrap()
    );
    assert!(
        store
            .add_dynamic_link("portal:b", "[2]".into())
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_dynamic_link("portal:a", "[3]".into())
            .await
            .unwrap()
    );
    assert_eq!(
        store.dynamic_links().await.unwrap(),
        vec![
            ("portal:a".to_owned(), "[1]".to_owned()),
            ("portal:b".to_owned(), "[2]".to_owned())
        ]
    );
}

/// A row given up on leaves the outbox and is listed, newest first, with ids only.
pub async fn dead_letters_leave_the_outbox(store: impl Store) {
    let key = EventKey::new();
    let Accepted::Stored(ids) = store
        .accept(
            new_event(key, "a", "r", Some("dl")),
            vec![delivery("b", "s", b"x"), delivery("b", "t", b"y")],
        )
        .await
        .unwrap()
    else {
        panic!("stored");
    };
    let rows = store
        .pending(&"b".into(), &"s".into(), 0, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].queued_at.0 > 0, "the row knows when it was queued");
    store
        .dead_letter(&rows[0], "max_attempts", 7, Timestamp(5_000))
        .await
        .unwrap();
    assert!(
        store
            .pending(&"b".into(), &"s".into(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.pending_count().await.unwrap(),
        1,
        "the other destination stays"
    );
    let counts = store.room_counts().await.unwrap();
    let pairs: Vec<(&str, &str, u64, u64)> = counts
        .iter()
        .map(|c| (c.account.as_str(), c.room.as_str(), c.queued, c.dead))
        .collect();
    assert_eq!(
        pairs,
        vec![("b", "s", 0, 1), ("b", "t", 1, 0)],
        "per room: queued and given up on"
    );
    let listed = store.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!((d.id, d.key, d.attempts), (ids[0], key, 7));
    assert_eq!(
        (d.account.as_str(), d.room.as_str(), d.reason.as_str()),
        ("b", "s", "max_attempts")
    );
    assert_eq!(
        (d.queued_at, d.dead_at),
        (rows[0].queued_at, Timestamp(5_000))
    );
    // Purged with the map's retention.
    store.purge_before(Timestamp(6_000)).await.unwrap();
    assert!(store.dead_letters(10).await.unwrap().is_empty());
}

/// Pastes are found until they expire, replaced by id, and purged once expired.
pub async fn pastes_expire(store: impl Store) {
    let (t0, t1, t2) = (Timestamp(1_000), Timestamp(2_000), Timestamp(3_000));
    store.paste_put("p1", t1, b"one".to_vec()).await.unwrap();
    store.paste_put("p2", t2, b"two".to_vec()).await.unwrap();
    store
        .paste_put("p2", t2, b"two again".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.paste_get("p1", t0).await.unwrap(),
        Some(b"one".to_vec())
    );
    assert_eq!(
        store.paste_get("p1", t1).await.unwrap(),
        None,
        "expired at t1"
    );
    assert_eq!(store.paste_get("nope", t0).await.unwrap(), None);
    assert_eq!(store.paste_purge(t1).await.unwrap(), 1);
    assert_eq!(
        store.paste_get("p2", t1).await.unwrap(),
        Some(b"two again".to_vec())
    );
    assert_eq!(store.paste_purge(t2).await.unwrap(), 1);
    assert_eq!(store.paste_purge(t2).await.unwrap(), 0);
}

/// Batches behave as the same calls one by one: in order, a duplicate (also of an earlier event
/// of the same batch) is answered as such while the others are stored, and completing a batch
/// deletes every row and maps every id given.
pub async fn batches_behave_as_single_calls(store: impl Store) {
    let (k1, k2, k3) = (EventKey::new(), EventKey::new(), EventKey::new());
    store
        .accept(new_event(k1, "chat", "#a", Some("m1")), vec![])
        .await
        .unwrap();
    let got = store
        .accept_many(vec![
            (
                new_event(k2, "chat", "#a", Some("m2")),
                vec![delivery("feed", "x", b"two")],
            ),
            // Already mapped before the batch.
            (
                new_event(EventKey::new(), "chat", "#a", Some("m1")),
                vec![delivery("feed", "x", b"dup")],
            ),
            // The same id as the first of this batch.
            (
                new_event(EventKey::new(), "chat", "#a", Some("m2")),
                vec![delivery("feed", "x", b"dup")],
            ),
            (
                new_event(k3, "chat", "#a", Some("m3")),
                vec![
                    delivery("feed", "x", b"three"),
                    delivery("chat", "#b", b"3"),
                ],
            ),
        ])
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(&got[1..3], &[Accepted::Duplicate, Accepted::Duplicate]);
    let (Accepted::Stored(first), Accepted::Stored(last)) = (&got[0], &got[3]) else {
        panic!("expected the new events stored, got {got:?}")
    };
    assert_eq!((first.len(), last.len()), (1, 2));
    assert!(first[0] < last[0], "ids follow the batch's order");
    let queued = store
        .pending(&"feed".into(), &"x".into(), 0, 10)
        .await
        .unwrap();
    let payloads: Vec<&[u8]> = queued.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(
        payloads,
        [&b"two"[..], &b"three"[..]],
        "no duplicate was queued"
    );
    for (remote, key) in [("m2", k2), ("m3", k3)] {
        let info = store
            .find_by_remote(&"chat".into(), &"#a".into(), &remote.into())
            .await
            .unwrap();
        assert_eq!(info.map(|i| i.key), Some(key));
    }

    let done: std::sync::Arc<[super::Completion]> = vec![
        (
            first[0],
            Some((
                k2,
                AccountId::from("feed"),
                RoomId::from("x"),
                RemoteMessageId::from("a2"),
            )),
        ),
        (last[0], None),
        (
            last[1],
            Some((
                k3,
                AccountId::from("chat"),
                RoomId::from("#b"),
                RemoteMessageId::from("b3"),
            )),
        ),
    ]
    .into();
    store.complete_many(done).await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 0, "every row deleted");
    assert_eq!(
        store
            .remote_id(k2, &"feed".into(), &"x".into())
            .await
            .unwrap(),
        Some("a2".into())
    );
    assert_eq!(
        store
            .remote_id(k3, &"chat".into(), &"#b".into())
            .await
            .unwrap(),
        Some("b3".into())
    );
    assert_eq!(
        store
            .remote_id(k3, &"feed".into(), &"x".into())
            .await
            .unwrap(),
        None,
        "a receipt without an id maps nothing"
    );
}

/// Runs every store conformance test against the store that `$make` builds (a fresh one each).
/// `$make` may `.await`. With `guarded`, `$make` gives `(store, guard)` and the guard (a
/// database server of the test's own, say) is kept until the test ends.
#[macro_export]
macro_rules! store_conformance {
    (guarded $make:expr) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn accept_maps_queues_and_dedupes() {
                let (store, _guard) = $make;
                $crate::store::conformance::accept_maps_queues_and_dedupes(store).await;
            }
            #[tokio::test]
            async fn batches_behave_as_single_calls() {
                let (store, _guard) = $make;
                $crate::store::conformance::batches_behave_as_single_calls(store).await;
            }
            #[tokio::test]
            async fn outbox_orders_and_completes() {
                let (store, _guard) = $make;
                $crate::store::conformance::outbox_orders_and_completes(store).await;
            }
            #[tokio::test]
            async fn threads_and_info() {
                let (store, _guard) = $make;
                $crate::store::conformance::threads_and_info(store).await;
            }
            #[tokio::test]
            async fn purge_respects_age_and_queue() {
                let (store, _guard) = $make;
                $crate::store::conformance::purge_respects_age_and_queue(store).await;
            }
            #[tokio::test]
            async fn connector_state() {
                let (store, _guard) = $make;
                $crate::store::conformance::connector_state(store).await;
            }
            #[tokio::test]
            async fn dynamic_links() {
                let (store, _guard) = $make;
                $crate::store::conformance::dynamic_links(store).await;
            }
            #[tokio::test]
            async fn dead_letters_leave_the_outbox() {
                let (store, _guard) = $make;
                $crate::store::conformance::dead_letters_leave_the_outbox(store).await;
            }
            #[tokio::test]
            async fn pastes_expire() {
                let (store, _guard) = $make;
                $crate::store::conformance::pastes_expire(store).await;
            }
        }
    };
    ($make:expr) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn accept_maps_queues_and_dedupes() {
                $crate::store::conformance::accept_maps_queues_and_dedupes($make).await;
            }
            #[tokio::test]
            async fn batches_behave_as_single_calls() {
                $crate::store::conformance::batches_behave_as_single_calls($make).await;
            }
            #[tokio::test]
            async fn outbox_orders_and_completes() {
                $crate::store::conformance::outbox_orders_and_completes($make).await;
            }
            #[tokio::test]
            async fn threads_and_info() {
                $crate::store::conformance::threads_and_info($make).await;
            }
            #[tokio::test]
            async fn purge_respects_age_and_queue() {
                $crate::store::conformance::purge_respects_age_and_queue($make).await;
            }
            #[tokio::test]
            async fn connector_state() {
                $crate::store::conformance::connector_state($make).await;
            }
            #[tokio::test]
            async fn dynamic_links() {
                $crate::store::conformance::dynamic_links($make).await;
            }
            #[tokio::test]
            async fn dead_letters_leave_the_outbox() {
                $crate::store::conformance::dead_letters_leave_the_outbox($make).await;
            }
            #[tokio::test]
            async fn pastes_expire() {
                $crate::store::conformance::pastes_expire($make).await;
            }
        }
    };
}

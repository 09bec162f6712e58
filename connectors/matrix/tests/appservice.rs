//! Appservice mode against a real Synapse that has our generated registration installed: the
//! conformance suite, ghosts, the hs_token check and retried transactions.

use passerelle_matrix::MatrixFactory;
use passerelle_matrix::testing::client::{MatrixUser, RoomPeer};
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_sdk::{
    BuildContext, Connector, ConnectorFactory, Content, Event, EventKind, Sender,
};
use passerelle_testkit::conformance;
use passerelle_testkit::harness::Harness;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const AS_TOKEN: &str = "as-token-0123456789abcdef0123456789abcdef";
const HS_TOKEN: &str = "hs-token-0123456789abcdef0123456789abcdef";
const BOT: &str = "@passerelle:hs.passerelle.test";

fn table(hs_url: &str) -> serde_json::Value {
    json!({"mode": "appservice", "homeserver": hs_url, "server_name": "hs.passerelle.test",
        "as_token": AS_TOKEN, "hs_token": HS_TOKEN})
}

/// A Synapse with our registration (pointing at 127.0.0.1:`port`) installed.
fn homeserver(dir: &std::path::Path, port: u16) -> Synapse {
    let yaml = passerelle_matrix::registration(
        table("http://127.0.0.1:9"),
        &format!("http://127.0.0.1:{port}"),
    )
    .expect("registration");
    let file = dir.join("registration.yaml");
    std::fs::write(&file, yaml).unwrap();
    Synapse::start(&[file])
}

fn connector(hs: &Synapse, data_dir: &std::path::Path) -> Box<dyn Connector> {
    let ctx = BuildContext {
        account: "matrix.as".into(),
        data_dir: data_dir.to_owned(),
    };
    match MatrixFactory.build(&ctx, table(&hs.url())) {
        Ok(c) => c,
        Err(issues) => panic!("config refused: {issues:?}"),
    }
}

#[tokio::test]
async fn appservice_mode_passes_the_conformance_suite_with_ghosts() {
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let hs = homeserver(dir.path(), port);
    hs.register("alice", "alice-pw", false);
    let alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice.create_room(json!({})).await;
    // An admin invites the bot once; it joins on the invite.
    {
        let mut h = Harness::start(
            connector(&hs, &dir.path().join("as")),
            "matrix.as",
            vec![room.as_str().into()],
        );
        h.serve_http(port).await;
        assert!(h.wait_connected(WAIT).await);
        alice.invite(&room, BOT).await;
        alice.wait_member(&room, BOT, WAIT).await;
        h.shutdown(Duration::from_secs(10)).await;
    }
    let mut peer = RoomPeer {
        user: alice,
        room: room.clone(),
        bridge: "@passerelle_".into(),
        http_port: Some(port),
    };
    let make = || connector(&hs, &dir.path().join("as"));
    conformance::run(&make, &mut peer, vec![room.as_str().into()]).await;
}

/// A homeserver with our registration, alice, her room, and the connector running with the bot
/// in that room.
struct Bridged {
    dir: tempfile::TempDir,
    port: u16,
    hs: Synapse,
    alice: MatrixUser,
    room: String,
    h: Harness,
}

async fn bridged_room() -> Bridged {
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let hs = homeserver(dir.path(), port);
    hs.register("alice", "alice-pw", false);
    let alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice.create_room(json!({})).await;
    let mut h = Harness::start(
        connector(&hs, &dir.path().join("as")),
        "matrix.as",
        vec![room.as_str().into()],
    );
    h.serve_http(port).await;
    assert!(h.wait_connected(WAIT).await);
    alice.invite(&room, BOT).await;
    alice.wait_member(&room, BOT, WAIT).await;
    Bridged {
        dir,
        port,
        hs,
        alice,
        room,
        h,
    }
}

#[tokio::test]
async fn transactions_need_the_hs_token_and_a_retried_one_is_bridged_once() {
    let Bridged {
        dir: _dir,
        port,
        hs: _hs,
        mut alice,
        room,
        mut h,
    } = bridged_room().await;

    // Through the real homeserver: alice's message arrives, from her.
    alice.say(&room, "through synapse").await;
    let e = h
        .next_matching(
            WAIT,
            |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "through synapse"),
        )
        .await
        .expect("bridged");
    assert_eq!(e.sender.id.as_str(), "@alice:hs.passerelle.test");

    // Straight at the endpoint, as the homeserver would: a wrong token is refused and nothing
    // is bridged; a retried transaction is bridged once.
    let http = reqwest::Client::new();
    let url = |txn: &str| format!("http://127.0.0.1:{port}/_matrix/app/v1/transactions/{txn}");
    let body = json!({"events": [{"type": "m.room.message", "room_id": room, "sender": "@alice:hs.passerelle.test",
        "event_id": "$forged-by-test", "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "once only"}}]});
    let r = http
        .put(url("900"))
        .bearer_auth("wrong-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errcode"], "M_FORBIDDEN");
    let r = http.put(url("901")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "no token at all");
    for _ in 0..3 {
        let r = http
            .put(url("902"))
            .bearer_auth(HS_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let mut copies = 0;
    while h
        .next_matching(
            Duration::from_secs(2),
            |e| matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == "once only"),
        )
        .await
        .is_some()
    {
        copies += 1;
    }
    assert_eq!(
        copies, 1,
        "a retried transaction was bridged {copies} times"
    );
    let r = http
        .put(url("903"))
        .bearer_auth(HS_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "malformed transaction");
    let r = http
        .post(format!("http://127.0.0.1:{port}/_matrix/app/v1/ping"))
        .bearer_auth(HS_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Outbound: a ghost with the remote display name speaks in the room.
    let mut sender = Sender::new("bob");
    sender.display_name = Some("Bob the Builder".into());
    let out = Event::new(
        room.as_str(),
        sender,
        EventKind::Message(Content::plain("hi from a ghost")),
    );
    let receipt = h.send(out, WAIT).await.expect("answered").expect("sent");
    assert!(receipt.remote_id.is_some());
    let seen = alice
        .next_matching(WAIT, |e| e.body() == "hi from a ghost")
        .await
        .expect("alice sees the ghost's message");
    assert_eq!(
        seen.sender(),
        "@passerelle_testkit.origin_bob:hs.passerelle.test"
    );
    let profile = alice.profile(seen.sender()).await;
    assert_eq!(profile["displayname"], "Bob the Builder");
    h.shutdown(Duration::from_secs(10)).await;
}

/// An event nested deeper than the JSON parser's limit (any room member can send one; Synapse
/// accepts and delivers it) is skipped on its own: the transaction is still acknowledged, so the
/// homeserver does not hold every later transaction behind it.
#[tokio::test]
async fn an_event_nested_too_deep_is_skipped_and_later_transactions_flow() {
    let Bridged {
        dir: _dir,
        port,
        hs: _hs,
        mut alice,
        room,
        mut h,
    } = bridged_room().await;

    // The deepest event Synapse takes (its own parser stops at 128 levels too): inside a
    // transaction (an object and a list around it) it is past the limit of a parser that reads
    // the transaction whole.
    let nested = |depth: usize| {
        let mut v = json!("bottom");
        for _ in 0..depth {
            v = json!({ "a": v });
        }
        json!({"msgtype": "m.text", "body": "deep canary", "x": v})
    };
    let mut taken = None;
    for depth in (100..=130).rev() {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/deep-{depth}",
            room.replace('!', "%21")
        );
        let (status, _) = alice
            .call(reqwest::Method::PUT, &path, Some(nested(depth)))
            .await;
        if status == 200 {
            taken = Some(depth);
            break;
        }
    }
    let depth = taken.expect("Synapse takes a deeply nested event");
    let whole = json!({"events": [{"type": "m.room.message", "content": nested(depth)}]});
    assert!(
        serde_json::from_str::<serde_json::Value>(&whole.to_string()).is_err(),
        "at depth {depth} a transaction read whole is past the parser's limit"
    );
    alice.say(&room, "after the deep one").await;
    // Read on its own, the event is within the limit: a message like any other. The transaction
    // is acknowledged and the next one follows.
    for want in ["deep canary", "after the deep one"] {
        let e = h
            .next_matching(WAIT, |e| matches!(&e.kind, EventKind::Message(_)))
            .await
            .unwrap_or_else(|| panic!("{want:?} bridged (depth {depth})"));
        assert!(
            matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == want),
            "{want:?} next"
        );
    }

    // Straight at the endpoint: one unreadable event among good ones is skipped, the rest are
    // bridged, and the transaction is answered 200.
    let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    let good = |id: &str, text: &str| {
        json!({"type": "m.room.message", "room_id": room, "sender": "@alice:hs.passerelle.test",
            "event_id": id, "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": text}})
        .to_string()
    };
    let body = format!(
        "{{\"events\": [{}, {{\"type\": \"m.room.message\", \"content\": {deep}}}, {}]}}",
        good("$before-deep", "before"),
        good("$after-deep", "after")
    );
    let r = reqwest::Client::new()
        .put(format!(
            "http://127.0.0.1:{port}/_matrix/app/v1/transactions/deep-1"
        ))
        .bearer_auth(HS_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for want in ["before", "after"] {
        let e = h
            .next_matching(WAIT, |e| matches!(&e.kind, EventKind::Message(_)))
            .await
            .unwrap_or_else(|| panic!("{want} bridged"));
        assert!(matches!(&e.kind, EventKind::Message(c) if c.text.as_str() == want));
    }
    h.shutdown(Duration::from_secs(10)).await;
}

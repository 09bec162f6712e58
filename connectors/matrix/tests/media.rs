//! Files from other networks reach Matrix rooms: fetched (from loopback only when allowed),
//! uploaded to the content repository, sent as media events, readable by a Matrix user.

use passerelle_matrix::MatrixFactory;
use passerelle_matrix::testing::client::MatrixUser;
use passerelle_matrix::testing::synapse::Synapse;
use passerelle_sdk::{
    Attachment, BuildContext, ConnectorFactory, Content, Event, EventKind, Sender,
};
use passerelle_testkit::harness::Harness;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// Serves `body` as image/png to every request, on a loopback port.
async fn file_server(body: Vec<u8>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    port
}

fn with_file(room: &str, port: u16) -> Event {
    let mut sender = Sender::new("carol");
    sender.display_name = Some("carol".into());
    sender.avatar_url = Some(format!("http://127.0.0.1:{port}/avatar.png"));
    let content = Content {
        attachments: vec![Attachment {
            name: "pixel.png".into(),
            mime: None,
            size: None,
            url: format!("http://127.0.0.1:{port}/pixel.png").into(),
        }],
        ..Content::plain("a picture")
    };
    Event::new(room, sender, EventKind::Message(content))
}

/// Checks that alice sees the text and then the file, byte for byte.
async fn alice_gets_the_file(alice: &mut MatrixUser, room: &str, bytes: &[u8]) {
    alice
        .next_matching(WAIT, |e| e.room == room && e.body().ends_with("a picture"))
        .await
        .expect("the text arrives");
    let image = alice
        .next_matching(WAIT, |e| {
            e.room == room && e.event["content"]["msgtype"] == "m.image"
        })
        .await
        .expect("the file arrives as an image");
    assert_eq!(image.body(), "pixel.png");
    let mxc = image.event["content"]["url"].as_str().expect("an mxc URL");
    assert!(mxc.starts_with("mxc://"), "{mxc}");
    let (status, got) = alice.download(mxc).await;
    assert_eq!(status, 200);
    assert_eq!(got, bytes);
}

#[tokio::test]
async fn bot_mode_uploads_files_and_sends_private_links_unfetched_by_default() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let port = file_server(bytes.clone()).await;
    let hs = Synapse::start(&[]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice
        .create_room(json!({"invite": ["@bridge:hs.passerelle.test"]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    for (allow, sub) in [(false, "strict"), (true, "open")] {
        let ctx = BuildContext {
            account: "m".into(),
            data_dir: dir.path().join(sub),
        };
        let table = json!({"homeserver": hs.url(), "user": "@bridge:hs.passerelle.test",
            "password": "bridge-pw", "media_fetch_private": allow});
        let mut h = Harness::start(
            MatrixFactory.build(&ctx, table).unwrap(),
            "m",
            vec![room.as_str().into()],
        );
        assert!(h.wait_connected(WAIT).await);
        alice
            .wait_member(&room, "@bridge:hs.passerelle.test", WAIT)
            .await;
        let answer = h
            .send(with_file(&room, port), WAIT)
            .await
            .expect("an answer");
        if allow {
            assert!(answer.is_ok(), "{answer:?}");
            alice_gets_the_file(&mut alice, &room, &bytes).await;
        } else {
            // Not fetched from a private address: the link goes instead, and the send is done
            // (a file that can't be fetched never holds the room).
            assert!(answer.is_ok(), "{answer:?}");
            let link = format!("pixel.png: http://127.0.0.1:{port}/pixel.png");
            let seen = alice
                .next_matching(WAIT, |e| e.body() == link)
                .await
                .expect("alice gets the file's link");
            assert_eq!(seen.event["content"]["msgtype"], "m.text");
        }
        h.shutdown(Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn appservice_mode_uploads_files_as_the_ghost() {
    let bytes: Vec<u8> = (0..=255u8).rev().cycle().take(3000).collect();
    let file_port = file_server(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = passerelle_testkit::free_port();
    let table = json!({"mode": "appservice", "homeserver": "http://127.0.0.1:9", "server_name": "hs.passerelle.test",
        "as_token": "as-token-0123456789abcdef0123456789abcdef",
        "hs_token": "hs-token-0123456789abcdef0123456789abcdef",
        "media_fetch_private": true, "encryption": false});
    let yaml = passerelle_matrix::registration(table.clone(), &format!("http://127.0.0.1:{port}"))
        .unwrap();
    std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
    let hs = Synapse::start(&[dir.path().join("r.yaml")]);
    hs.register("alice", "alice-pw", false);
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;
    let room = alice.create_room(json!({})).await;
    let mut table = table;
    table["homeserver"] = json!(hs.url());
    let ctx = BuildContext {
        account: "m".into(),
        data_dir: dir.path().join("as"),
    };
    let mut h = Harness::start(
        MatrixFactory.build(&ctx, table).unwrap(),
        "m",
        vec![room.as_str().into()],
    );
    h.serve_http(port).await;
    assert!(h.wait_connected(WAIT).await);
    alice.invite(&room, "@passerelle:hs.passerelle.test").await;
    alice
        .wait_member(&room, "@passerelle:hs.passerelle.test", WAIT)
        .await;
    let answer = h
        .send(with_file(&room, file_port), WAIT)
        .await
        .expect("an answer");
    assert!(answer.is_ok(), "{answer:?}");
    alice_gets_the_file(&mut alice, &room, &bytes).await;
    // The remote avatar became the ghost's, uploaded to the content repository.
    let ghost = "@passerelle_testkit.origin_carol:hs.passerelle.test";
    let avatar = alice.profile(ghost).await["avatar_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(avatar.starts_with("mxc://"), "ghost avatar: {avatar:?}");
    assert_eq!(alice.download(&avatar).await.1, bytes);
    h.shutdown(Duration::from_secs(10)).await;
}

/// Alice posts an image; the emitted attachment's link (through the daemon, signed) serves it.
async fn matrix_file_is_offered_through_a_signed_link(
    h: &mut Harness,
    alice: &mut MatrixUser,
    room: &str,
    public_base: &str,
) {
    let bytes: Vec<u8> = b"not really a png, but bytes all the same".to_vec();
    let mxc = alice.upload(bytes.clone(), "image/png").await;
    alice
        .send(
            room,
            "m.room.message",
            json!({"msgtype": "m.image", "body": "shot.png",
            "url": mxc, "info": {"mimetype": "image/png", "size": bytes.len()}}),
        )
        .await;
    let e = h
        .next_matching(
            WAIT,
            |e| matches!(&e.kind, EventKind::Message(c) if !c.attachments.is_empty()),
        )
        .await
        .expect("the image is emitted");
    let link = e.content().unwrap().attachments[0].url.as_str().to_owned();
    assert!(link.starts_with(public_base), "{link}");
    let got = reqwest::get(&link).await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    // A link whose signature was not made here opens nothing.
    let parts: Vec<&str> = link.rsplitn(3, '/').collect();
    let forged = format!("{}/{}/{}", parts[2], "0".repeat(32), parts[0]);
    assert_eq!(reqwest::get(&forged).await.unwrap().status().as_u16(), 403);
}

#[tokio::test]
async fn matrix_files_reach_other_networks_as_signed_links_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let bot_port = passerelle_testkit::free_port();
    let as_port = passerelle_testkit::free_port();
    let table = json!({"mode": "appservice", "homeserver": "http://127.0.0.1:9", "server_name": "hs.passerelle.test",
        "as_token": "as-token-0123456789abcdef0123456789abcdef",
        "hs_token": "hs-token-0123456789abcdef0123456789abcdef", "encryption": false,
        "media_public_url": format!("http://127.0.0.1:{as_port}")});
    let yaml =
        passerelle_matrix::registration(table.clone(), &format!("http://127.0.0.1:{as_port}"))
            .unwrap();
    std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
    let hs = Synapse::start(&[dir.path().join("r.yaml")]);
    hs.register("bridge", "bridge-pw", false);
    hs.register("alice", "alice-pw", false);
    let mut alice = MatrixUser::login(&hs.url(), "alice", "alice-pw").await;

    // Bot mode.
    let room = alice
        .create_room(json!({"invite": ["@bridge:hs.passerelle.test"]}))
        .await;
    let ctx = BuildContext {
        account: "mbot".into(),
        data_dir: dir.path().join("bot"),
    };
    let public = format!("http://127.0.0.1:{bot_port}");
    let bot = json!({"homeserver": hs.url(), "user": "@bridge:hs.passerelle.test", "password": "bridge-pw",
        "media_public_url": public});
    let mut h = Harness::start(
        MatrixFactory.build(&ctx, bot).unwrap(),
        "mbot",
        vec![room.as_str().into()],
    );
    h.serve_http(bot_port).await;
    assert!(h.wait_connected(WAIT).await);
    alice
        .wait_member(&room, "@bridge:hs.passerelle.test", WAIT)
        .await;
    matrix_file_is_offered_through_a_signed_link(
        &mut h,
        &mut alice,
        &room,
        &format!("{public}/accounts/mbot/media/"),
    )
    .await;
    h.shutdown(Duration::from_secs(10)).await;

    // Appservice mode.
    let room = alice.create_room(json!({})).await;
    let mut table = table;
    table["homeserver"] = json!(hs.url());
    let ctx = BuildContext {
        account: "mas".into(),
        data_dir: dir.path().join("as"),
    };
    let mut h = Harness::start(
        MatrixFactory.build(&ctx, table).unwrap(),
        "mas",
        vec![room.as_str().into()],
    );
    h.serve_http(as_port).await;
    assert!(h.wait_connected(WAIT).await);
    alice.invite(&room, "@passerelle:hs.passerelle.test").await;
    alice
        .wait_member(&room, "@passerelle:hs.passerelle.test", WAIT)
        .await;
    matrix_file_is_offered_through_a_signed_link(
        &mut h,
        &mut alice,
        &room,
        &format!("http://127.0.0.1:{as_port}/accounts/mas/media/"),
    )
    .await;
    h.shutdown(Duration::from_secs(10)).await;
}

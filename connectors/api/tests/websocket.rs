//! The API's websocket: outbound messages arrive as frames, frames from the client are posted,
//! and a bad token or bad frame is refused.

use futures::{SinkExt, StreamExt};
use passerelle_api::ApiFactory;
use passerelle_sdk::{BuildContext, ConnectorFactory, Content, Event, EventKind, Sender};
use passerelle_testkit::harness::Harness;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "websocket-token-0123456789";

#[tokio::test]
async fn websocket_carries_both_ways() {
    let port = passerelle_testkit::free_port();
    let ctx = BuildContext {
        account: "api.ws".into(),
        data_dir: std::env::temp_dir(),
    };
    let table = serde_json::json!({"listen": format!("127.0.0.1:{port}"), "token": TOKEN});
    let connector = ApiFactory
        .build(&ctx, table)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let mut h = Harness::start(connector, "api.ws", vec!["lobby".into()]);
    assert!(h.wait_connected(Duration::from_secs(10)).await);

    let url = format!("ws://127.0.0.1:{port}/api/websocket");
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        refused.is_err(),
        "a websocket without the token was accepted"
    );

    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket opens");

    let mut sender = Sender::new("u1");
    sender.display_name = Some("alice".into());
    let out = Event::new(
        "lobby",
        sender,
        EventKind::Message(Content::plain("to the socket")),
    );
    let receipt = h
        .send(out, Duration::from_secs(10))
        .await
        .expect("answered")
        .expect("sent");
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame")
        .expect("open")
        .expect("valid");
    let value: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(value["text"], "to the socket");
    assert_eq!(value["username"], "alice");
    assert_eq!(value["gateway"], "lobby");
    assert_eq!(
        value["id"].as_str(),
        receipt.remote_id.as_ref().map(|r| r.as_str())
    );

    ws.send(Message::text(
        r#"{"text":"from the socket","username":"bob","gateway":"lobby"}"#,
    ))
    .await
    .unwrap();
    let event = h
        .next_event(Duration::from_secs(10))
        .await
        .expect("emitted");
    assert!(matches!(&event.kind, EventKind::Message(c) if c.text.as_str() == "from the socket"));
    assert_eq!(event.sender.name(), "bob");

    ws.send(Message::text("{not json")).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an error frame")
        .expect("open")
        .expect("valid");
    assert!(
        frame.to_text().unwrap().contains("malformed JSON"),
        "{frame:?}"
    );
    assert!(h.next_event(Duration::from_millis(300)).await.is_none());
}

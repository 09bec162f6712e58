//! The fake's WebSocket: `authentication_challenge`, `hello`, then events with `seq`.

use super::lock;
use super::web::App;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// `GET /api/v4/websocket`, upgraded.
pub(super) async fn upgrade(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| connection(app, socket))
}

async fn connection(app: App, mut socket: WebSocket) {
    // The challenge comes first.
    let token = app.lock().map(|i| i.token.clone()).unwrap_or_default();
    let authed = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v.get("action").and_then(Value::as_str) != Some("authentication_challenge") {
                    continue;
                }
                let seq = v.get("seq").cloned().unwrap_or(json!(1));
                let good = v.pointer("/data/token").and_then(Value::as_str) == Some(token.as_str());
                let reply = if good {
                    json!({"status": "OK", "seq_reply": seq})
                } else {
                    json!({"status": "FAIL", "seq_reply": seq, "error": {"id": "api.web_socket_router.not_authenticated.app_error", "message": "The session is not valid."}})
                };
                if socket
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                break good;
            }
            Some(Ok(_)) => continue,
            _ => return,
        }
    };
    if !authed {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    let id = {
        let mut i = lock(&app);
        i.connections += 1;
        i.seq = 0;
        let id = i.connections;
        if let Some((_, old)) = i.conn.replace((id, tx)) {
            let _ = old.send(None);
        }
        i.broadcast(
            "hello",
            json!({"server_version": "9.11.0.fake", "connection_id": format!("conn{id}")}),
            "",
        );
        id
    };
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Some(frame)) => {
                    if socket.send(Message::Text(frame.into())).await.is_err() { break; }
                }
                Some(None) | None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let mut i = lock(&app);
    if i.conn.as_ref().is_some_and(|(c, _)| *c == id) {
        i.conn = None;
    }
}

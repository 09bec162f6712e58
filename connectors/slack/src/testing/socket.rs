//! The fake's Socket Mode endpoint: one-use tickets, `hello`, envelopes and acknowledgements.

use super::web::App;
use super::{Ctl, lock};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// `GET /link/?ticket=…`, upgraded when the ticket is one `apps.connections.open` gave and not
/// used yet.
pub(super) async fn upgrade(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let ticket = passerelle_sdk::webhook::parse_query(query.as_deref().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v);
    let valid = {
        let mut i = lock(&app);
        match ticket.and_then(|t| i.tickets.iter().position(|x| *x == t)) {
            Some(pos) => {
                i.tickets.remove(pos);
                true
            }
            None => false,
        }
    };
    if !valid {
        return (StatusCode::UNAUTHORIZED, "invalid ticket").into_response();
    }
    ws.on_upgrade(move |socket| connection(app, socket))
}

async fn connection(app: App, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ctl>();
    let id = {
        let mut i = lock(&app);
        i.connections += 1;
        let id = i.connections;
        i.conn = Some((id, tx));
        id
    };
    let hello = json!({"type": "hello", "num_connections": 1,
        "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": "A0FAKEAPP"}});
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    lock(&app).pump();
    loop {
        tokio::select! {
            ctl = rx.recv() => match ctl {
                Some(Ctl::Frame(f)) => {
                    if socket.send(Message::Text(f.into())).await.is_err() { break; }
                }
                Some(Ctl::Drop) | None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                    let Some(envelope) = v.get("envelope_id").and_then(Value::as_str) else { continue };
                    let mut i = lock(&app);
                    if let Some(pos) = i.pending.iter().position(|e| e.id == envelope) {
                        let e = i.pending.remove(pos);
                        if e.sent.is_some_and(|(at, _)| at.elapsed() > i.ack_timeout) {
                            i.late_acks += 1;
                        }
                        i.acked.push(e.id);
                    }
                }
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

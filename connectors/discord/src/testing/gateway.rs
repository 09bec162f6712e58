//! The fake's Gateway: one client at a time, JSON frames, no compression.

use super::rest::App;
use super::{Ctl, Session};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};
use std::time::Instant;
use tokio::sync::mpsc;

/// `GET /?v=10&encoding=json`, upgraded.
pub(super) async fn upgrade(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let query = query.unwrap_or_default();
    let v10 = query.split('&').any(|kv| kv == "v=10");
    let json = query.split('&').any(|kv| kv == "encoding=json");
    ws.on_upgrade(move |socket| connection(app, socket, v10 && json))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn connection(app: App, mut socket: WebSocket, versioned: bool) {
    if !versioned {
        let _ = socket.send(close(4012, "Invalid API version")).await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Ctl>();
    let interval = {
        let mut i = app.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A new connection replaces the old one (Discord closes the older).
        if let Some(old) = i.conn.replace(tx.clone()) {
            let _ = old.send(Ctl::Drop);
        }
        i.heartbeat_ms
    };
    let hello =
        json!({"op": 10, "d": {"heartbeat_interval": interval}, "s": null, "t": null}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let mut identified = false;
    loop {
        tokio::select! {
            ctl = rx.recv() => match ctl {
                Some(Ctl::Frame(f)) => {
                    if socket.send(Message::Text(f.into())).await.is_err() { break; }
                }
                Some(Ctl::Close(code)) => {
                    let _ = socket.send(close(code, "closed by the test")).await;
                    break;
                }
                Some(Ctl::Drop) | None => break,
            },
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                let text = match frame {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    let _ = socket.send(close(4002, "Error while decoding payload")).await;
                    break;
                };
                match v.get("op").and_then(Value::as_u64) {
                    Some(1) => {
                        let ack = json!({"op": 11, "d": null}).to_string();
                        if socket.send(Message::Text(ack.into())).await.is_err() { break; }
                    }
                    Some(2) if identified => {
                        let _ = socket.send(close(4005, "Already authenticated")).await;
                        break;
                    }
                    Some(2) => match identify(&app, &v["d"], &tx) {
                        Ok(()) => identified = true,
                        Err(code) => {
                            let _ = socket.send(close(code, "refused")).await;
                            break;
                        }
                    },
                    Some(6) => {
                        if resume(&app, &v["d"], &tx) {
                            identified = true;
                        } else {
                            let nope = json!({"op": 9, "d": false}).to_string();
                            if socket.send(Message::Text(nope.into())).await.is_err() { break; }
                        }
                    }
                    Some(_) if !identified => {
                        let _ = socket.send(close(4003, "Not authenticated")).await;
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    let mut i = app.inner.lock().unwrap_or_else(|p| p.into_inner());
    if i.conn.as_ref().is_some_and(|c| c.same_channel(&tx)) {
        i.conn = None;
    }
}

fn identify(app: &App, d: &Value, tx: &mpsc::UnboundedSender<Ctl>) -> Result<(), u16> {
    let mut i = app.inner.lock().unwrap_or_else(|p| p.into_inner());
    if !token_ok(d, &i.token) {
        return Err(4004);
    }
    let intents = d.get("intents").and_then(Value::as_u64).ok_or(4013u16)?;
    if intents & (1 << 15) != 0 && !i.grant_message_content {
        return Err(4014);
    }
    if d.get("properties").and_then(|p| p.get("os")).is_none() {
        return Err(4002);
    }
    i.identifies.push(Instant::now());
    let id = format!("session-{:x}", i.next_id());
    i.sessions.insert(id.clone(), Session::default());
    i.current = Some(id.clone());
    let _ = tx;
    let port = app.port;
    let ready = json!({"v": 10, "user": i.bot.object(), "guilds": [{"id": i.guild.to_string(), "unavailable": true}],
        "session_id": id, "resume_gateway_url": format!("ws://127.0.0.1:{port}"), "shard": [0, 1],
        "application": {"id": i.application.to_string(), "flags": 0}});
    i.dispatch("READY", ready);
    let guild = i.guild;
    let channels: Vec<Value> = i
        .channels
        .iter()
        .filter(|(_, c)| c.guild == Some(guild) && c.parent.is_none())
        .filter_map(|(k, _)| i.channel_object(*k))
        .collect();
    let threads: Vec<Value> = i
        .channels
        .iter()
        .filter(|(_, c)| c.parent.is_some())
        .filter_map(|(k, _)| i.channel_object(*k))
        .collect();
    i.dispatch(
        "GUILD_CREATE",
        json!({"id": guild.to_string(), "name": "Fake guild", "unavailable": false,
        "channels": channels, "threads": threads, "members": [], "roles": [], "emojis": []}),
    );
    Ok(())
}

fn resume(app: &App, d: &Value, tx: &mpsc::UnboundedSender<Ctl>) -> bool {
    let mut i = app.inner.lock().unwrap_or_else(|p| p.into_inner());
    if !token_ok(d, &i.token) {
        return false;
    }
    let (Some(id), Some(seq)) = (
        d.get("session_id").and_then(Value::as_str),
        d.get("seq").and_then(Value::as_u64),
    ) else {
        return false;
    };
    let Some(session) = i.sessions.get(id) else {
        return false;
    };
    if seq > session.seq {
        return false;
    }
    let missed: Vec<String> = session
        .buffer
        .iter()
        .filter(|(s, _)| *s > seq)
        .map(|(_, f)| f.clone())
        .collect();
    for f in missed {
        let _ = tx.send(Ctl::Frame(f));
    }
    i.resumes += 1;
    i.current = Some(id.to_owned());
    i.dispatch("RESUMED", Value::Null);
    true
}

/// The Gateway takes the token bare or with the `Bot ` prefix the REST API wants.
fn token_ok(d: &Value, token: &str) -> bool {
    let given = d.get("token").and_then(Value::as_str).unwrap_or("");
    given.strip_prefix("Bot ").unwrap_or(given) == token
}

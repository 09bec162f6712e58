//! The fake's Web API, upload URLs and file downloads.

use super::{BOT_ID, BOT_USER, Inner, Message, Request, TEAM, lock, socket};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared state of the fake's routes.
pub(super) type App = Arc<Mutex<Inner>>;

pub(super) fn router(inner: App) -> Router {
    Router::new()
        .route("/api/{method}", any(method))
        .route("/upload/v1/{file}", post(upload))
        .route("/files-pri/{file}", get(download))
        .route("/link/", get(socket::upgrade))
        .with_state(inner)
}

/// Query and body merged: JSON, or a form.
fn params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in passerelle_sdk::webhook::parse_query(query.unwrap_or("")) {
        out.insert(k, Value::String(v));
    }
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            out.extend(m);
        }
    } else if let Ok(text) = std::str::from_utf8(body) {
        for (k, v) in passerelle_sdk::webhook::parse_query(text) {
            out.insert(k, Value::String(v));
        }
    }
    out
}

fn ok(v: Value) -> (u16, Value) {
    let mut v = v;
    v["ok"] = json!(true);
    (200, v)
}

fn err(code: &str) -> (u16, Value) {
    (200, json!({"ok": false, "error": code}))
}

fn text_param(p: &Map<String, Value>, k: &str) -> Option<String> {
    match p.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

async fn method(
    State(app): State<App>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(query.as_deref(), &headers, &body);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut i = lock(&app);
    let (status, answer, retry) = call(&mut i, &method, &p, token.as_deref());
    i.requests.push(Request {
        method: method.clone(),
        params: Value::Object(p),
        token,
        status,
        error: answer
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned),
    });
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [("content-type", "application/json; charset=utf-8")],
        answer.to_string(),
    )
        .into_response();
    if let Some(secs) = retry
        && let Ok(v) = secs.to_string().parse()
    {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

fn call(
    i: &mut Inner,
    method: &str,
    p: &Map<String, Value>,
    token: Option<&str>,
) -> (u16, Value, Option<u64>) {
    let Some(token) = token else {
        let (s, v) = err("not_authed");
        return (s, v, None);
    };
    let app_method = method == "apps.connections.open";
    let valid = if app_method {
        token == i.app_token
    } else {
        token == i.bot_token
    };
    if !valid {
        let code = if token == i.app_token || token == i.bot_token {
            "not_allowed_token_type"
        } else {
            "invalid_auth"
        };
        let (s, v) = err(code);
        return (s, v, None);
    }
    if let Some(pos) = i.fail.iter().position(|(m, _)| m == method) {
        let (_, code) = i.fail.remove(pos);
        let (s, v) = err(&code);
        return (s, v, None);
    }
    if let Some(pos) = i.limit_next.iter().position(|(m, _)| m == method) {
        let (_, secs) = i.limit_next.remove(pos);
        i.too_many += 1;
        return (
            429,
            json!({"ok": false, "error": "ratelimited"}),
            Some(secs),
        );
    }
    if method == "chat.postMessage" {
        let channel = text_param(p, "channel").unwrap_or_default();
        let burst = i.post_burst;
        let window = i.posts.entry(channel).or_default();
        window.retain(|t| t.elapsed() < Duration::from_secs(1));
        if window.len() >= burst {
            i.too_many += 1;
            return (429, json!({"ok": false, "error": "ratelimited"}), Some(1));
        }
        window.push(Instant::now());
    }
    let (s, v) = answer(i, method, p);
    (s, v, None)
}

fn answer(i: &mut Inner, method: &str, p: &Map<String, Value>) -> (u16, Value) {
    let param = |k: &str| text_param(p, k);
    match method {
        "auth.test" => ok(
            json!({"url": "https://fake.slack.example/", "team": "Fake", "user": "passerelle",
            "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": false}),
        ),
        "apps.connections.open" => {
            let ticket = i.id("ticket-");
            i.tickets.push(ticket.clone());
            ok(
                json!({"url": format!("ws://127.0.0.1:{}/link/?ticket={ticket}&app_id=A0FAKEAPP", i.port)}),
            )
        }
        "users.info" => match param("user").and_then(|u| i.users.get(&u).cloned()) {
            Some(u) => ok(json!({"user": u.object()})),
            None => err("user_not_found"),
        },
        "conversations.list" => {
            let limit: usize = param("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100)
                .clamp(1, 1000);
            let start: usize = param("cursor")
                .and_then(|c| c.strip_prefix("dXNlcjo").and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            let all: Vec<Value> = i
                .channels
                .iter()
                .filter(|(_, c)| c.im_user.is_none())
                .map(|(id, c)| json!({"id": id, "name": c.name, "is_channel": !c.private, "is_private": c.private, "is_member": c.bot_member}))
                .collect();
            let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
            let next = if start + limit < all.len() {
                format!("dXNlcjo{}", start + limit)
            } else {
                String::new()
            };
            ok(json!({"channels": page, "response_metadata": {"next_cursor": next}}))
        }
        "conversations.info" => {
            match param("channel").and_then(|c| i.channels.get(&c).map(|ch| (c, ch.clone()))) {
                Some((id, c)) => {
                    ok(json!({"channel": {"id": id, "name": c.name, "is_private": c.private}}))
                }
                None => err("channel_not_found"),
            }
        }
        "conversations.open" => {
            let Some(user) = param("users").filter(|u| i.users.contains_key(u)) else {
                return err("user_not_found");
            };
            let existing = i
                .channels
                .iter()
                .find(|(_, c)| c.im_user.as_deref() == Some(user.as_str()))
                .map(|(id, _)| id.clone());
            let id = existing.unwrap_or_else(|| {
                let id = i.id("D");
                i.channels.insert(
                    id.clone(),
                    super::Channel {
                        name: String::new(),
                        private: true,
                        im_user: Some(user.clone()),
                        bot_member: true,
                    },
                );
                id
            });
            ok(json!({"channel": {"id": id}}))
        }
        "conversations.history" => {
            let Some(channel) = param("channel") else {
                return err("channel_not_found");
            };
            match i.channels.get(&channel) {
                None => return err("channel_not_found"),
                Some(c) if !c.bot_member => return err("not_in_channel"),
                Some(_) => {}
            }
            let oldest = param("oldest")
                .map(|o| crate::inbound::ts_order(&o))
                .unwrap_or(0);
            let inclusive = param("inclusive").as_deref() == Some("true");
            let limit: usize = param("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100)
                .clamp(1, 999);
            let skip: usize = param("cursor")
                .and_then(|c| c.strip_prefix("bmV4dF90czo").and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            let mut top: Vec<&Message> = i
                .messages
                .iter()
                .filter(|m| m.channel == channel && !m.deleted)
                .filter(|m| {
                    m.thread_ts.as_deref().is_none_or(|t| t == m.ts)
                        || m.subtype.as_deref() == Some("thread_broadcast")
                })
                .filter(|m| {
                    let o = crate::inbound::ts_order(&m.ts);
                    o > oldest || (inclusive && o == oldest)
                })
                .collect();
            top.reverse();
            let has_more = top.len() > skip + limit;
            let page: Vec<Value> = top
                .iter()
                .skip(skip)
                .take(limit)
                .map(|m| m.object())
                .collect();
            let next = if has_more {
                format!("bmV4dF90czo{}", skip + limit)
            } else {
                String::new()
            };
            ok(
                json!({"messages": page, "has_more": has_more, "response_metadata": {"next_cursor": next}}),
            )
        }
        "chat.postMessage" => {
            let Some(channel) = param("channel") else {
                return err("channel_not_found");
            };
            match i.channels.get(&channel) {
                None => return err("channel_not_found"),
                Some(c) if !c.bot_member => return err("not_in_channel"),
                Some(_) => {}
            }
            let text = param("text").unwrap_or_default();
            if text.trim().is_empty() {
                return err("no_text");
            }
            if text.chars().count() > 40_000 {
                return err("msg_too_long");
            }
            let thread = param("thread_ts");
            if let Some(t) = &thread
                && !i
                    .messages
                    .iter()
                    .any(|m| m.channel == channel && &m.ts == t)
            {
                return err("thread_not_found");
            }
            let username = param("username");
            let ts = i.next_ts();
            let m = Message {
                channel: channel.clone(),
                ts: ts.clone(),
                user: None,
                bot_id: Some(BOT_ID.into()),
                icon_url: param("icon_url"),
                subtype: username.as_ref().map(|_| "bot_message".to_owned()),
                username,
                text,
                thread_ts: thread,
                edited: false,
                deleted: false,
                reactions: Vec::new(),
                files: Vec::new(),
            };
            let object = m.object();
            i.add_message(m);
            ok(json!({"channel": channel, "ts": ts, "message": object}))
        }
        "chat.update" | "chat.delete" => {
            let (Some(channel), Some(ts)) = (param("channel"), param("ts")) else {
                return err("message_not_found");
            };
            let Some(pos) = i
                .messages
                .iter()
                .position(|m| m.channel == channel && m.ts == ts && !m.deleted)
            else {
                return err("message_not_found");
            };
            if i.messages[pos].bot_id.as_deref() != Some(BOT_ID)
                && i.messages[pos].user.as_deref() != Some(BOT_USER)
            {
                return err(if method == "chat.update" {
                    "cant_update_message"
                } else {
                    "cant_delete_message"
                });
            }
            let previous = i.messages[pos].object();
            let now = i.next_ts();
            if method == "chat.update" {
                let text = param("text").unwrap_or_default();
                if text.trim().is_empty() {
                    return err("no_text");
                }
                i.messages[pos].text = text;
                i.messages[pos].edited = true;
                let message = i.messages[pos].object();
                i.dispatch(json!({"type": "message", "subtype": "message_changed", "hidden": true, "channel": channel,
                    "ts": now, "event_ts": now, "message": message, "previous_message": previous}));
                ok(json!({"channel": channel, "ts": ts, "text": i.messages[pos].text}))
            } else {
                i.messages[pos].deleted = true;
                i.dispatch(json!({"type": "message", "subtype": "message_deleted", "hidden": true, "channel": channel,
                    "ts": now, "deleted_ts": ts, "event_ts": now, "previous_message": previous}));
                ok(json!({"channel": channel, "ts": ts}))
            }
        }
        "reactions.add" | "reactions.remove" => {
            let (Some(channel), Some(ts), Some(name)) =
                (param("channel"), param("timestamp"), param("name"))
            else {
                return err("invalid_arguments");
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-+'".contains(&b))
            {
                return err("invalid_name");
            }
            let Some(pos) = i
                .messages
                .iter()
                .position(|m| m.channel == channel && m.ts == ts && !m.deleted)
            else {
                return err("message_not_found");
            };
            let mine = i.messages[pos]
                .reactions
                .iter()
                .position(|(n, u)| *n == name && u == BOT_USER);
            let now = i.next_ts();
            if method == "reactions.add" {
                if mine.is_some() {
                    return err("already_reacted");
                }
                i.messages[pos]
                    .reactions
                    .push((name.clone(), BOT_USER.into()));
                i.dispatch(
                    json!({"type": "reaction_added", "user": BOT_USER, "reaction": name,
                    "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": now}),
                );
            } else {
                let Some(at) = mine else {
                    return err("no_reaction");
                };
                i.messages[pos].reactions.remove(at);
                i.dispatch(
                    json!({"type": "reaction_removed", "user": BOT_USER, "reaction": name,
                    "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": now}),
                );
            }
            ok(json!({}))
        }
        "files.getUploadURLExternal" => {
            let (Some(name), Some(len)) = (
                param("filename"),
                param("length").and_then(|l| l.parse::<u64>().ok()),
            ) else {
                return err("invalid_arguments");
            };
            if len == 0 {
                return err("invalid_arguments");
            }
            let id = i.id("F");
            i.uploads.insert(id.clone(), (name, None));
            ok(
                json!({"upload_url": format!("http://127.0.0.1:{}/upload/v1/{id}", i.port), "file_id": id}),
            )
        }
        "files.completeUploadExternal" => {
            let files = match p.get("files") {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
                Some(v) => v.clone(),
                None => Value::Null,
            };
            let Some(files) = files.as_array().filter(|f| !f.is_empty()) else {
                return err("invalid_arguments");
            };
            let mut shared = Vec::new();
            for f in files {
                let Some(id) = f.get("id").and_then(Value::as_str) else {
                    return err("invalid_arguments");
                };
                match i.uploads.get(id) {
                    Some((name, Some(bytes))) => {
                        shared.push((id.to_owned(), name.clone(), bytes.len()))
                    }
                    _ => return err("file_not_found"),
                }
            }
            let Some(channel) = param("channel_id") else {
                // Uploaded but not shared: allowed, the files stay private.
                return ok(
                    json!({"files": shared.iter().map(|(id, n, _)| json!({"id": id, "title": n})).collect::<Vec<_>>()}),
                );
            };
            if !i.channels.get(&channel).is_some_and(|c| c.bot_member) {
                return err("channel_not_found");
            }
            let ts = i.next_ts();
            let m = Message {
                channel,
                ts,
                user: Some(BOT_USER.into()),
                bot_id: None,
                username: None,
                icon_url: None,
                text: param("initial_comment").unwrap_or_default(),
                thread_ts: param("thread_ts"),
                subtype: Some("file_share".into()),
                edited: false,
                deleted: false,
                reactions: Vec::new(),
                files: shared.clone(),
            };
            i.add_message(m);
            ok(
                json!({"files": shared.iter().map(|(id, n, _)| json!({"id": id, "title": n})).collect::<Vec<_>>()}),
            )
        }
        "files.info" => {
            let Some(id) = param("file") else {
                return err("file_not_found");
            };
            let found = i
                .messages
                .iter()
                .flat_map(|m| m.files.iter())
                .find(|(f, _, _)| *f == id)
                .cloned();
            match found {
                Some((id, name, size)) => ok(
                    json!({"file": {"id": id, "name": name, "mimetype": "application/octet-stream", "size": size,
                    "url_private": format!("http://127.0.0.1:{}/files-pri/{id}", i.port),
                    "url_private_download": format!("http://127.0.0.1:{}/files-pri/{id}", i.port)}}),
                ),
                None => err("file_not_found"),
            }
        }
        _ => err("unknown_method"),
    }
}

async fn upload(State(app): State<App>, Path(file): Path<String>, body: Bytes) -> Response {
    let mut i = lock(&app);
    match i.uploads.get_mut(&file) {
        Some((_, bytes)) => {
            *bytes = Some(body.to_vec());
            (StatusCode::OK, format!("OK - {}", body.len())).into_response()
        }
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

async fn download(
    State(app): State<App>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let i = lock(&app);
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(i.bot_token.as_str());
    if !authorized {
        // Slack answers a file URL without the token with its sign-in page.
        return (
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html>sign in</html>",
        )
            .into_response();
    }
    match i.uploads.get(&file).and_then(|(_, b)| b.clone()) {
        Some(bytes) => (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

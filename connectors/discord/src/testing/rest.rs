//! The fake's REST routes and rate limits.

use super::{Channel, Inner, Message, Request, Webhook};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Shared = Arc<Mutex<Inner>>;

#[derive(Clone)]
pub(super) struct App {
    pub(super) inner: Shared,
    pub(super) port: u16,
}

pub(super) fn router(inner: Shared, port: u16) -> Router {
    let app = App { inner, port };
    Router::new()
        .route("/", get(super::gateway::upgrade))
        .route("/api/v10/{*path}", any(handle))
        .with_state(app)
}

fn error(status: u16, code: u64, message: &str) -> (u16, Value) {
    (status, json!({"message": message, "code": code}))
}

/// Route template and top-level resource, as Discord buckets them.
fn bucket_key(method: &Method, parts: &[&str]) -> Option<(String, u64, Duration)> {
    let major = match parts.first() {
        Some(&"channels") | Some(&"guilds") => parts.get(..2)?.join("/"),
        Some(&"webhooks") => parts.get(..3.min(parts.len()))?.join("/"),
        _ => String::new(),
    };
    let shape: Vec<&str> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i > 1 && (p.bytes().all(|b| b.is_ascii_digit()) || parts[i - 1] == "reactions") {
                "{}"
            } else {
                p
            }
        })
        .collect();
    let route = format!("{method} {}", shape.join("/"));
    let sends = (method == Method::POST && parts.len() == 3 && parts[2] == "messages")
        || (method == Method::POST && parts.first() == Some(&"webhooks"));
    let reactions = parts.contains(&"reactions");
    // A limit of 0 stands for the configured send limit.
    let (limit, window) = if sends {
        (0, Duration::ZERO)
    } else if reactions {
        (1, Duration::from_millis(250))
    } else {
        (50, Duration::from_secs(1))
    };
    Some((format!("{route}|{major}"), limit, window))
}

fn bucket_hash(key: &str) -> String {
    // Discord's bucket ids are opaque hashes; FNV-1a of the route shape stands in.
    let route = key.split('|').next().unwrap_or(key);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in route.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Takes one request from the route's bucket and the global limit; the headers to answer with,
/// or the 429.
type Headers = Vec<(String, String)>;

fn limit(i: &mut Inner, method: &Method, parts: &[&str]) -> Result<Headers, (Headers, Value)> {
    let now = Instant::now();
    if now.duration_since(i.global.1) >= Duration::from_secs(1) {
        i.global = (0, now);
    }
    i.global.0 += 1;
    let webhook = parts.first() == Some(&"webhooks");
    if i.global.0 > 50 && !webhook {
        let retry = 1.0 - now.duration_since(i.global.1).as_secs_f64();
        i.too_many += 1;
        return Err((
            vec![
                ("x-ratelimit-global".into(), "true".into()),
                ("x-ratelimit-scope".into(), "global".into()),
                ("retry-after".into(), format!("{}", retry.ceil() as u64)),
            ],
            json!({"message": "You are being rate limited.", "retry_after": (retry * 1000.0).round() / 1000.0, "global": true}),
        ));
    }
    let Some((key, limit, window)) = bucket_key(method, parts) else {
        return Ok(Vec::new());
    };
    let (limit, window) = if limit == 0 {
        i.send_limit
    } else {
        (limit, window)
    };
    let bucket = i.buckets.entry(key.clone()).or_insert(super::Bucket {
        remaining: limit,
        reset_at: now + window,
    });
    if bucket.reset_at <= now {
        bucket.remaining = limit;
        bucket.reset_at = now + window;
    }
    let after = bucket.reset_at.saturating_duration_since(now).as_secs_f64();
    let reset_epoch = super::now_ms() as f64 / 1000.0 + after;
    let mut headers = vec![
        ("x-ratelimit-limit".into(), limit.to_string()),
        ("x-ratelimit-reset".into(), format!("{reset_epoch:.3}")),
        ("x-ratelimit-reset-after".into(), format!("{after:.3}")),
        ("x-ratelimit-bucket".into(), bucket_hash(&key)),
    ];
    if bucket.remaining == 0 {
        headers.push(("x-ratelimit-remaining".into(), "0".into()));
        headers.push(("x-ratelimit-scope".into(), "user".into()));
        headers.push(("retry-after".into(), format!("{}", after.ceil() as u64)));
        i.too_many += 1;
        return Err((
            headers,
            json!({"message": "You are being rate limited.", "retry_after": (after * 1000.0).round() / 1000.0, "global": false}),
        ));
    }
    bucket.remaining -= 1;
    headers.push(("x-ratelimit-remaining".into(), bucket.remaining.to_string()));
    Ok(headers)
}

fn id(s: &str) -> Option<u64> {
    s.parse().ok()
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

async fn handle(
    State(app): State<App>,
    method: Method,
    Path(path): Path<String>,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    // Requests are recorded as they came on the wire (percent-encoded); routes read them decoded.
    let wire = uri
        .path()
        .strip_prefix("/api/v10/")
        .unwrap_or(uri.path())
        .to_owned();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // Multipart bodies: `payload_json` and the `files[n]` parts.
    let parsed: Value =
        if let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") {
            let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
            let mut form = multer::Multipart::new(stream, boundary.to_owned());
            let mut payload = json!({});
            let mut files = Vec::new();
            while let Ok(Some(field)) = form.next_field().await {
                let name = field.name().unwrap_or("").to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let data = field.bytes().await.unwrap_or_default();
                if name == "payload_json" {
                    payload = serde_json::from_slice(&data).unwrap_or(json!({}));
                } else if name.starts_with("files[") {
                    files.push(json!({"name": file_name, "bytes": data.len()}));
                }
            }
            payload["files"] = Value::Array(files);
            payload
        } else if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return answer(
                        &app,
                        &method,
                        &wire,
                        &query,
                        Value::Null,
                        Vec::new(),
                        error(400, 50109, "The request body contains invalid JSON."),
                    );
                }
            }
        };
    let parts: Vec<&str> = path.split('/').collect();
    let mut i = app.inner.lock().unwrap_or_else(|p| p.into_inner());
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_webhook = parts.first() == Some(&"webhooks");
    if !is_webhook && auth != format!("Bot {}", i.token) {
        drop(i);
        return answer(
            &app,
            &method,
            &wire,
            &query,
            parsed,
            Vec::new(),
            error(401, 0, "401: Unauthorized"),
        );
    }
    let limits = match limit(&mut i, &method, &parts) {
        Ok(h) => h,
        Err((h, body)) => {
            drop(i);
            return answer(&app, &method, &wire, &query, parsed, h, (429, body));
        }
    };
    if let Some(at) = i
        .fail
        .iter()
        .position(|(m, p, _, _)| m == method.as_str() && path.starts_with(p.as_str()))
    {
        let (_, _, status, code) = i.fail.remove(at);
        drop(i);
        return answer(
            &app,
            &method,
            &wire,
            &query,
            parsed,
            limits,
            error(status, code, "injected failure"),
        );
    }
    let result = route(&mut i, app.port, &method, &parts, &query, &parsed);
    drop(i);
    answer(&app, &method, &wire, &query, parsed, limits, result)
}

fn answer(
    app: &App,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
    headers: Vec<(String, String)>,
    (status, json): (u16, Value),
) -> Response {
    let full = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    app.inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .push(Request {
            method: method.to_string(),
            path: full,
            body,
            status,
        });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if status == 204 {
        code.into_response()
    } else {
        (code, axum::Json(json)).into_response()
    };
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            axum::http::HeaderValue::try_from(v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

fn check_content(body: &Value, files: usize) -> Result<(), (u16, Value)> {
    let content = body.get("content").and_then(Value::as_str).unwrap_or("");
    if content.chars().count() > 2000 {
        return Err((
            400,
            json!({"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}),
        ));
    }
    if content.is_empty() && files == 0 {
        return Err(error(400, 50006, "Cannot send an empty message"));
    }
    Ok(())
}

fn bad_name(name: &str) -> bool {
    let lower = name.to_lowercase();
    name.trim().is_empty()
        || name.chars().count() > 80
        || lower.contains("discord")
        || lower.contains("clyde")
}

fn files_of(body: &Value) -> Vec<(String, usize)> {
    body.get("files")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or("file").to_owned(),
                        f["bytes"].as_u64().unwrap_or(0) as usize,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn route(
    i: &mut Inner,
    port: u16,
    method: &Method,
    parts: &[&str],
    query: &str,
    body: &Value,
) -> (u16, Value) {
    match (method.as_str(), parts) {
        ("GET", ["users", "@me"]) => (200, i.bot.object()),
        ("GET", ["gateway", "bot"]) => {
            let used = i.identifies.len() as u64;
            (
                200,
                json!({"url": format!("ws://127.0.0.1:{port}"), "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 1000u64.saturating_sub(used), "reset_after": 14_400_000, "max_concurrency": 1}}),
            )
        }
        ("GET", ["channels", c]) => match id(c).and_then(|c| i.channel_object(c)) {
            Some(o) => (200, o),
            None => error(404, 10003, "Unknown Channel"),
        },
        ("POST", ["users", "@me", "channels"]) => {
            let Some(user) = body
                .get("recipient_id")
                .and_then(Value::as_str)
                .and_then(id)
            else {
                return error(400, 50035, "Invalid Form Body");
            };
            let existing = i
                .channels
                .iter()
                .find(|(_, c)| c.recipient == Some(user))
                .map(|(k, _)| *k);
            let cid = match existing {
                Some(c) => c,
                None => {
                    let cid = i.next_id();
                    i.channels.insert(
                        cid,
                        Channel {
                            kind: 1,
                            name: String::new(),
                            parent: None,
                            guild: None,
                            recipient: Some(user),
                            no_webhooks: true,
                        },
                    );
                    cid
                }
            };
            (200, i.channel_object(cid).unwrap_or(Value::Null))
        }
        ("GET", ["channels", c, "webhooks"]) => {
            let Some(c) = id(c).filter(|c| i.channels.contains_key(c)) else {
                return error(404, 10003, "Unknown Channel");
            };
            if i.channels.get(&c).is_some_and(|ch| ch.no_webhooks) {
                return error(403, 50013, "Missing Permissions");
            }
            let hooks: Vec<Value> = i
                .webhooks
                .values()
                .filter(|w| w.channel == c)
                .map(|w| webhook_object(i, w))
                .collect();
            (200, Value::Array(hooks))
        }
        ("POST", ["channels", c, "webhooks"]) => {
            let Some(c) = id(c).filter(|c| i.channels.contains_key(c)) else {
                return error(404, 10003, "Unknown Channel");
            };
            if i.channels.get(&c).is_some_and(|ch| ch.no_webhooks) {
                return error(403, 50013, "Missing Permissions");
            }
            let name = body.get("name").and_then(Value::as_str).unwrap_or("");
            if bad_name(name) {
                return error(400, 50035, "Invalid Form Body");
            }
            if i.webhooks.values().filter(|w| w.channel == c).count() >= 15 {
                return error(400, 30007, "Maximum number of webhooks reached (15)");
            }
            let wid = i.next_id();
            let w = Webhook {
                id: wid,
                channel: c,
                token: format!("tok-{wid:x}-secret"),
                name: name.into(),
                user: i.bot.id,
            };
            i.webhooks.insert(wid, w.clone());
            (200, webhook_object(i, &w))
        }
        ("POST", ["webhooks", w, token]) => {
            let Some(hook) = id(w).and_then(|w| i.webhooks.get(&w)).cloned() else {
                return error(404, 10015, "Unknown Webhook");
            };
            if hook.token != *token {
                return error(401, 50027, "Invalid Webhook Token");
            }
            let files = files_of(body);
            if let Err(e) = check_content(body, files.len()) {
                return e;
            }
            let username = body
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or(&hook.name)
                .to_owned();
            if bad_name(&username) {
                return error(400, 50035, "Invalid Form Body");
            }
            let channel = match query_param(query, "thread_id").and_then(id) {
                Some(t) if i.channels.get(&t).and_then(|c| c.parent) == Some(hook.channel) => t,
                Some(_) => return error(400, 10003, "Unknown Channel"),
                None if i.channels.get(&hook.channel).is_some_and(|c| c.kind == 15) => {
                    return error(
                        400,
                        220001,
                        "Webhooks posted to forum channels must have a thread_name or thread_id",
                    );
                }
                None => hook.channel,
            };
            let author = json!({"id": hook.id.to_string(), "username": username, "discriminator": "0000",
                "avatar": body.get("avatar_url").map(|_| "webhookavatar"), "bot": true, "global_name": null});
            let mid = i.post(
                channel,
                author,
                None,
                body.get("content").and_then(Value::as_str).unwrap_or(""),
                0,
            );
            let object = {
                let m = i.messages.get_mut(&mid).expect("just posted");
                m.webhook_id = Some(hook.id);
                m.files = files;
                m.allowed_mentions = body.get("allowed_mentions").cloned();
                m.clone()
            };
            let gw = i.message_object(&object, true);
            i.dispatch("MESSAGE_CREATE", gw);
            let wait = query_param(query, "wait") == Some("true");
            if wait {
                (200, i.message_object(&object, false))
            } else {
                (204, Value::Null)
            }
        }
        (m @ ("PATCH" | "DELETE"), ["webhooks", w, token, "messages", mid]) => {
            let Some(hook) = id(w).and_then(|w| i.webhooks.get(&w)).cloned() else {
                return error(404, 10015, "Unknown Webhook");
            };
            if hook.token != *token {
                return error(401, 50027, "Invalid Webhook Token");
            }
            let Some(mid) = id(mid).filter(|mid| {
                i.messages
                    .get(mid)
                    .is_some_and(|m| m.webhook_id == Some(hook.id))
            }) else {
                return error(404, 10008, "Unknown Message");
            };
            change(i, m, mid, body)
        }
        ("POST", ["channels", c, "messages"]) => {
            let Some(c) = id(c).filter(|c| i.channels.contains_key(c)) else {
                return error(404, 10003, "Unknown Channel");
            };
            let files = files_of(body);
            if let Err(e) = check_content(body, files.len()) {
                return e;
            }
            let reference = body
                .get("message_reference")
                .and_then(|r| r.get("message_id"))
                .and_then(Value::as_str)
                .and_then(id);
            if let Some(r) = reference
                && !i.messages.contains_key(&r)
                && body["message_reference"]
                    .get("fail_if_not_exists")
                    .and_then(Value::as_bool)
                    != Some(false)
            {
                return (
                    400,
                    json!({"message": "Invalid Form Body", "code": 50035, "errors": {"message_reference": {"_errors": [{"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]}}}),
                );
            }
            let author = i.bot.object();
            let kind = if reference.is_some() { 19 } else { 0 };
            let mid = i.post(
                c,
                author,
                None,
                body.get("content").and_then(Value::as_str).unwrap_or(""),
                kind,
            );
            let object = {
                let m = i.messages.get_mut(&mid).expect("just posted");
                m.files = files;
                m.reference = reference.map(|r| (r, c));
                m.allowed_mentions = body.get("allowed_mentions").cloned();
                m.clone()
            };
            let gw = i.message_object(&object, true);
            i.dispatch("MESSAGE_CREATE", gw);
            (200, i.message_object(&object, false))
        }
        ("GET", ["channels", c, "messages"]) => {
            let Some(c) = id(c).filter(|c| i.channels.contains_key(c)) else {
                return error(404, 10003, "Unknown Channel");
            };
            let limit = query_param(query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(50);
            if !(1..=100).contains(&limit) {
                return error(400, 50035, "Invalid Form Body");
            }
            let after = query_param(query, "after").and_then(id);
            let mut page: Vec<&Message> = match after {
                // The `limit` messages right after `after`.
                Some(a) => i
                    .messages
                    .range(a + 1..)
                    .map(|(_, m)| m)
                    .filter(|m| m.channel == c)
                    .take(limit)
                    .collect(),
                None => i
                    .messages
                    .values()
                    .rev()
                    .filter(|m| m.channel == c)
                    .take(limit)
                    .collect(),
            };
            // Newest first, as Discord answers.
            page.sort_by_key(|m| std::cmp::Reverse(m.id));
            (
                200,
                Value::Array(
                    page.into_iter()
                        .map(|m| i.message_object(m, false))
                        .collect(),
                ),
            )
        }
        (m @ ("PATCH" | "DELETE"), ["channels", c, "messages", mid]) => {
            let Some(c) = id(c).filter(|c| i.channels.contains_key(c)) else {
                return error(404, 10003, "Unknown Channel");
            };
            let Some(mid) =
                id(mid).filter(|mid| i.messages.get(mid).is_some_and(|m| m.channel == c))
            else {
                return error(404, 10008, "Unknown Message");
            };
            let bot = i.bot.id.to_string();
            if m == "PATCH"
                && i.messages
                    .get(&mid)
                    .and_then(|m| m.author.get("id"))
                    .and_then(Value::as_str)
                    != Some(bot.as_str())
            {
                return error(403, 50005, "Cannot edit a message authored by another user");
            }
            change(i, m, mid, body)
        }
        (m @ ("PUT" | "DELETE"), ["channels", c, "messages", mid, "reactions", emoji, "@me"]) => {
            let Some(mid) = id(mid).filter(|mid| {
                id(c).is_some_and(|c| i.messages.get(mid).is_some_and(|m| m.channel == c))
            }) else {
                return error(404, 10008, "Unknown Message");
            };
            let emoji = percent_decode(emoji);
            let custom = emoji
                .split_once(':')
                .is_some_and(|(n, e)| !n.is_empty() && id(e).is_some());
            if !custom && (emoji.is_empty() || emoji.chars().any(|c| c.is_ascii_alphanumeric())) {
                return error(400, 10014, "Unknown Emoji");
            }
            let bot = i.bot.id;
            let channel = i.messages.get(&mid).map(|m| m.channel).unwrap_or(0);
            if let Some(msg) = i.messages.get_mut(&mid) {
                if m == "PUT" {
                    if !msg.bot_reactions.contains(&emoji) {
                        msg.bot_reactions.push(emoji.clone());
                    }
                } else {
                    msg.bot_reactions.retain(|e| *e != emoji);
                }
            }
            let t = if m == "PUT" {
                "MESSAGE_REACTION_ADD"
            } else {
                "MESSAGE_REACTION_REMOVE"
            };
            i.dispatch(t, json!({"user_id": bot.to_string(), "channel_id": channel.to_string(), "message_id": mid.to_string(), "emoji": {"id": null, "name": emoji}}));
            (204, Value::Null)
        }
        ("POST", ["channels", c, "messages", mid, "threads"]) => {
            let (Some(c), Some(mid)) = (id(c), id(mid)) else {
                return error(404, 10003, "Unknown Channel");
            };
            if i.messages.get(&mid).is_none_or(|m| m.channel != c) {
                return error(404, 10008, "Unknown Message");
            }
            if i.threads_made.contains(&mid) {
                return error(
                    400,
                    160004,
                    "A thread has already been created for this message",
                );
            }
            let name = body.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() || name.chars().count() > 100 {
                return error(400, 50035, "Invalid Form Body");
            }
            let guild = i.guild;
            i.channels.insert(
                mid,
                Channel {
                    kind: 11,
                    name: name.into(),
                    parent: Some(c),
                    guild: Some(guild),
                    recipient: None,
                    no_webhooks: false,
                },
            );
            i.threads_made.insert(mid);
            let o = i.channel_object(mid).unwrap_or(Value::Null);
            i.dispatch("THREAD_CREATE", o.clone());
            (201, o)
        }
        _ => error(404, 0, "404: Not Found"),
    }
}

fn change(i: &mut Inner, method: &str, mid: u64, body: &Value) -> (u16, Value) {
    if method == "DELETE" {
        let channel = i.messages.remove(&mid).map(|m| m.channel).unwrap_or(0);
        i.dispatch(
            "MESSAGE_DELETE",
            json!({"id": mid.to_string(), "channel_id": channel.to_string()}),
        );
        return (204, Value::Null);
    }
    if let Err(e) = check_content(body, 1) {
        return e;
    }
    let updated = {
        let Some(m) = i.messages.get_mut(&mid) else {
            return error(404, 10008, "Unknown Message");
        };
        if let Some(c) = body.get("content").and_then(Value::as_str) {
            m.content = c.to_owned();
        }
        m.edited = true;
        m.allowed_mentions = body
            .get("allowed_mentions")
            .cloned()
            .or(m.allowed_mentions.take());
        m.clone()
    };
    let gw = i.message_object(&updated, true);
    i.dispatch("MESSAGE_UPDATE", gw);
    (200, i.message_object(&updated, false))
}

fn webhook_object(i: &Inner, w: &Webhook) -> Value {
    let mut v = json!({"id": w.id.to_string(), "type": 1, "channel_id": w.channel.to_string(), "guild_id": i.guild.to_string(),
        "name": w.name, "avatar": null, "application_id": if w.user == i.bot.id { json!(i.application.to_string()) } else { Value::Null },
        "user": {"id": w.user.to_string(), "username": if w.user == i.bot.id { i.bot.username.clone() } else { "someone".into() }}});
    // Discord shows a webhook's token to whoever may manage it; a bot sees the tokens of all.
    v["token"] = json!(w.token);
    v
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut k = 0;
    while k < bytes.len() {
        if bytes[k] == b'%'
            && k + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[k + 1..k + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            k += 3;
        } else {
            out.push(bytes[k]);
            k += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

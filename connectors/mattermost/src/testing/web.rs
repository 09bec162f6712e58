//! The fake's REST API v4.

use super::{BOT_USER, Inner, Post, lock, socket};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Shared state of the fake's routes.
pub(super) type App = Arc<Mutex<Inner>>;

pub(super) fn router(inner: App) -> Router {
    Router::new()
        .route("/api/v4/websocket", get(socket::upgrade))
        .route("/api/v4/{*path}", any(rest))
        .with_state(inner)
}

fn error(status: u16, id: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"id": id, "message": message, "detailed_error": "", "request_id": "fakerequestid", "status_code": status}),
    )
}

async fn rest(
    State(app): State<App>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let headers: HeaderMap = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let authorized = {
        let i = lock(&app);
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(i.token.as_str())
    };
    let full = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let mut i = lock(&app);
    // The rate limit, as the server's throttle answers it.
    if let Some((n, per)) = i.rate {
        i.calls.retain(|t| t.elapsed() < per);
        if i.calls.len() >= n {
            i.too_many += 1;
            let reset = per.as_secs().max(1);
            i.requests
                .push((method.to_string(), full, Value::Null, 429));
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "limit exceeded\n").into_response();
            let h = r.headers_mut();
            h.insert("x-ratelimit-limit", n.into());
            h.insert("x-ratelimit-remaining", 0.into());
            h.insert("x-ratelimit-reset", reset.into());
            return r;
        }
        i.calls.push(Instant::now());
    }
    let (status, answer, raw) = if !authorized {
        let (s, v) = error(
            401,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        );
        (s, v, None)
    } else {
        handle(
            &mut i,
            &method,
            &path,
            query.as_deref().unwrap_or(""),
            &headers,
            &body,
        )
    };
    let logged = if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"))
    {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    i.requests.push((method.to_string(), full, logged, status));
    if let Some(bytes) = raw {
        return (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            bytes,
        )
            .into_response();
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [("content-type", "application/json")],
        answer.to_string(),
    )
        .into_response()
}

fn handle(
    i: &mut Inner,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> (u16, Value, Option<Vec<u8>>) {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let parts: Vec<&str> = path.split('/').collect();
    let ok = |v: Value| (200, v, None);
    let fail = |(s, v): (u16, Value)| (s, v, None);
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["users", "me"]) => ok(i
            .users
            .get(BOT_USER)
            .map(|u| u.object())
            .unwrap_or(Value::Null)),
        ("GET", ["users", id]) => match i.users.get(*id) {
            Some(u) => ok(u.object()),
            None => fail(error(
                404,
                "app.user.missing_account.const",
                "Unable to find the user.",
            )),
        },
        ("GET", ["config", "client"]) => {
            let on = if i.overrides { "true" } else { "false" };
            ok(
                json!({"EnablePostUsernameOverride": on, "EnablePostIconOverride": on, "Version": "9.11.0"}),
            )
        }
        ("GET", ["teams", "name", team, "channels", "name", name]) => {
            match i
                .channels
                .iter()
                .find(|(_, c)| c.team == *team && c.name == *name)
            {
                Some((id, c)) => {
                    ok(json!({"id": id, "name": c.name, "team_id": c.team, "type": "O"}))
                }
                None => fail(error(
                    404,
                    "app.channel.get_by_name.missing.app_error",
                    "Channel does not exist.",
                )),
            }
        }
        ("GET", ["channels", id, "posts"]) => {
            let since: u64 = passerelle_sdk::webhook::parse_query(query)
                .into_iter()
                .find(|(k, _)| k == "since")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if !i.channels.contains_key(*id) {
                return fail(error(
                    404,
                    "app.channel.get.existing.app_error",
                    "Unable to find the existing channel.",
                ));
            }
            let files = i.files.clone();
            let changed: Vec<&Post> = i
                .posts
                .iter()
                .filter(|p| {
                    p.channel_id == *id && p.create_at.max(p.edit_at).max(p.delete_at) >= since
                })
                .collect();
            let order: Vec<&str> = changed.iter().rev().map(|p| p.id.as_str()).collect();
            let posts: serde_json::Map<String, Value> = changed
                .iter()
                .map(|p| (p.id.clone(), p.object(&files)))
                .collect();
            ok(json!({"order": order, "posts": posts, "next_post_id": "", "prev_post_id": ""}))
        }
        ("GET", ["posts", id]) => match i.posts.iter().find(|p| p.id == *id && p.delete_at == 0) {
            Some(p) => ok(p.object(&i.files)),
            None => fail(error(
                404,
                "app.post.get.app_error",
                "Unable to get the post.",
            )),
        },
        ("POST", ["posts"]) => {
            let channel = json
                .get("channel_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match i.channels.get(&channel) {
                None => {
                    return fail(error(
                        404,
                        "app.channel.get.existing.app_error",
                        "Unable to find the existing channel.",
                    ));
                }
                Some(c) if !c.bot_member => {
                    return fail(error(
                        403,
                        "api.context.permissions.app_error",
                        "You do not have the appropriate permissions.",
                    ));
                }
                Some(_) => {}
            }
            let message = json
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let file_ids: Vec<String> = json
                .get("file_ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            if message.chars().count() > 16_383 {
                return fail(error(
                    400,
                    "model.post.is_valid.message_length.app_error",
                    "Invalid Message property length.",
                ));
            }
            if message.is_empty() && file_ids.is_empty() {
                return fail(error(
                    400,
                    "api.context.invalid_body_param.app_error",
                    "Invalid or missing post in request body.",
                ));
            }
            let root = json
                .get("root_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if !root.is_empty()
                && !i
                    .posts
                    .iter()
                    .any(|p| p.id == root && p.channel_id == channel && p.root_id.is_empty())
            {
                return fail(error(
                    400,
                    "api.post.create_post.root_id.app_error",
                    "Invalid RootId parameter.",
                ));
            }
            let mut props = json
                .get("props")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or(json!({}));
            if i.overrides && props.get("override_username").is_some() {
                props["from_webhook"] = json!("true");
            } else if let Some(p) = props.as_object_mut() {
                p.remove("override_username");
                p.remove("override_icon_url");
            }
            let id = i.id();
            let at = i.now();
            let post = Post {
                id,
                channel_id: channel,
                user_id: BOT_USER.into(),
                root_id: root,
                message,
                kind: String::new(),
                props,
                file_ids,
                create_at: at,
                edit_at: 0,
                delete_at: 0,
                reactions: Vec::new(),
            };
            let object = post.object(&i.files);
            i.post_event("posted", &post);
            i.posts.push(post);
            (201, object, None)
        }
        ("PUT", ["posts", id, "patch"]) => {
            let at = i.now();
            let Some(pos) = i.posts.iter().position(|p| p.id == *id && p.delete_at == 0) else {
                return fail(error(
                    404,
                    "app.post.get.app_error",
                    "Unable to get the post.",
                ));
            };
            if i.posts[pos].user_id != BOT_USER {
                return fail(error(
                    403,
                    "api.context.permissions.app_error",
                    "You do not have the appropriate permissions.",
                ));
            }
            if let Some(m) = json.get("message").and_then(Value::as_str) {
                i.posts[pos].message = m.to_owned();
            }
            i.posts[pos].edit_at = at;
            let p = i.posts[pos].clone();
            i.post_event("post_edited", &p);
            ok(p.object(&i.files))
        }
        ("DELETE", ["posts", id]) => {
            let at = i.now();
            let Some(pos) = i.posts.iter().position(|p| p.id == *id && p.delete_at == 0) else {
                return fail(error(
                    404,
                    "app.post.get.app_error",
                    "Unable to get the post.",
                ));
            };
            if i.posts[pos].user_id != BOT_USER {
                return fail(error(
                    403,
                    "api.context.permissions.app_error",
                    "You do not have the appropriate permissions.",
                ));
            }
            i.posts[pos].delete_at = at;
            let p = i.posts[pos].clone();
            i.post_event("post_deleted", &p);
            ok(json!({"status": "OK"}))
        }
        ("POST", ["reactions"]) => {
            let (Some(user), Some(post), Some(name)) = (
                json.get("user_id").and_then(Value::as_str),
                json.get("post_id").and_then(Value::as_str),
                json.get("emoji_name").and_then(Value::as_str),
            ) else {
                return fail(error(
                    400,
                    "api.context.invalid_body_param.app_error",
                    "Invalid or missing reaction in request body.",
                ));
            };
            if user != BOT_USER {
                return fail(error(
                    403,
                    "api.context.permissions.app_error",
                    "You do not have the appropriate permissions.",
                ));
            }
            let Some(pos) = i
                .posts
                .iter()
                .position(|p| p.id == post && p.delete_at == 0)
            else {
                return fail(error(
                    404,
                    "app.post.get.app_error",
                    "Unable to get the post.",
                ));
            };
            let (user, post, name) = (user.to_owned(), post.to_owned(), name.to_owned());
            if !i.posts[pos]
                .reactions
                .iter()
                .any(|(n, u)| *n == name && *u == user)
            {
                i.posts[pos].reactions.push((name.clone(), user.clone()));
            }
            let channel = i.posts[pos].channel_id.clone();
            let at = i.now();
            let reaction =
                json!({"user_id": user, "post_id": post, "emoji_name": name, "create_at": at});
            i.broadcast(
                "reaction_added",
                json!({"reaction": reaction.to_string()}),
                &channel,
            );
            ok(reaction)
        }
        ("DELETE", ["users", user, "posts", post, "reactions", name]) => {
            let Some(pos) = i.posts.iter().position(|p| p.id == *post) else {
                return fail(error(
                    404,
                    "app.post.get.app_error",
                    "Unable to get the post.",
                ));
            };
            i.posts[pos]
                .reactions
                .retain(|(n, u)| !(n == name && u == user));
            let channel = i.posts[pos].channel_id.clone();
            let reaction = json!({"user_id": user, "post_id": post, "emoji_name": name});
            i.broadcast(
                "reaction_removed",
                json!({"reaction": reaction.to_string()}),
                &channel,
            );
            ok(json!({"status": "OK"}))
        }
        ("POST", ["files"]) => {
            let boundary = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .and_then(|c| multer::parse_boundary(c).ok());
            let Some(boundary) = boundary else {
                return fail(error(
                    400,
                    "api.file.upload_file.read_request.app_error",
                    "Unable to read the request.",
                ));
            };
            let (mut channel, mut files) = (None, Vec::new());
            let data = body.clone();
            futures::executor::block_on(async {
                let stream =
                    futures::stream::once(async move { Ok::<Bytes, std::io::Error>(data) });
                let mut m = multer::Multipart::new(stream, boundary);
                while let Ok(Some(field)) = m.next_field().await {
                    let name = field.name().unwrap_or("").to_owned();
                    let file_name = field.file_name().map(str::to_owned);
                    let bytes = field.bytes().await.unwrap_or_default();
                    match name.as_str() {
                        "channel_id" => {
                            channel = Some(String::from_utf8_lossy(&bytes).into_owned())
                        }
                        "files" => {
                            files.push((file_name.unwrap_or_else(|| "file".into()), bytes.to_vec()))
                        }
                        _ => {}
                    }
                }
            });
            if channel.as_ref().is_none_or(|c| !i.channels.contains_key(c)) || files.is_empty() {
                return fail(error(
                    400,
                    "api.file.upload_file.incorrect_channelId.app_error",
                    "Unable to upload the file. Incorrect channel ID.",
                ));
            }
            let mut infos = Vec::new();
            for (name, bytes) in files {
                let id = i.id();
                infos.push(json!({"id": id, "name": name, "size": bytes.len()}));
                i.files.insert(id, (name, bytes));
            }
            (201, json!({"file_infos": infos, "client_ids": []}), None)
        }
        ("GET", ["files", id]) => match i.files.get(*id) {
            Some((_, bytes)) => (200, Value::Null, Some(bytes.clone())),
            None => fail(error(
                404,
                "app.file_info.get.app_error",
                "Unable to get the file info.",
            )),
        },
        _ => fail(error(
            404,
            "api.context.404.app_error",
            "Sorry, we could not find the page.",
        )),
    }
}

//! A fake of the Telegram Bot API, written from <https://core.telegram.org/bots/api> (see
//! this crate's `PROTOCOL.md`):
//!
//! - `/bot<token>/<method>` with JSON or multipart parameters; answers
//!   `{"ok":true,"result":…}` or `{"ok":false,"error_code","description","parameters"?}`; a wrong
//!   token is 401 `Unauthorized`, an unknown method 404 `Not Found`.
//! - `getUpdates` keeps updates until a call's `offset` is above their `update_id`, long-polls up
//!   to `timeout`, answers 409 while a webhook is set, and ends an earlier poll with 409 when a
//!   second one starts (two bot instances).
//! - `setWebhook` (with `secret_token`) makes the fake POST each update, one at a time and in
//!   order, with `X-Telegram-Bot-Api-Secret-Token`, again until it is answered 2xx.
//! - `sendMessage`, `editMessageText`, `deleteMessage`, `setMessageReaction`, `sendPhoto`,
//!   `sendDocument`, `getFile` and `/file/bot<token>/<path>` check what the documentation says
//!   they check (chat exists, text length, the group was not upgraded (400 with
//!   `migrate_to_chat_id`), reactions from the allowed emoji, one per bot).
//! - [`FakeTelegram::fail_next`] queues a documented error (429 with `retry_after`…).
//!
//! People are simulated with [`FakeTelegram::user_says`] and its siblings, which queue updates.
//! Every call the bot makes (but `getUpdates`) is recorded with its parameters.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod methods;
use methods::*;

/// The emoji a bot may react with (`ReactionTypeEmoji`).
pub const REACTIONS: &[&str] = &[
    "👍",
    "👎",
    "❤",
    "🔥",
    "🥰",
    "👏",
    "😁",
    "🤔",
    "🤯",
    "😱",
    "🤬",
    "😢",
    "🎉",
    "🤩",
    "🤮",
    "💩",
    "🙏",
    "👌",
    "🕊",
    "🤡",
    "🥱",
    "🥴",
    "😍",
    "🐳",
    "❤‍🔥",
    "🌚",
    "🌭",
    "💯",
    "🤣",
    "⚡",
    "🍌",
    "🏆",
    "💔",
    "🤨",
    "😐",
    "🍓",
    "🍾",
    "💋",
    "🖕",
    "😈",
    "😴",
    "😭",
    "🤓",
    "👻",
    "👨‍💻",
    "👀",
    "🎃",
    "🙈",
    "😇",
    "😨",
    "🤝",
    "✍",
    "🤗",
    "🫡",
    "🎅",
    "🎄",
    "☃",
    "💅",
    "🤪",
    "🗿",
    "🆒",
    "💘",
    "🙉",
    "🦄",
    "😘",
    "💊",
    "🙊",
    "😎",
    "👾",
    "🤷‍♂",
    "🤷",
    "🤷‍♀",
    "😡",
];

/// A call the bot made.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method.
    pub method: String,
    /// Its parameters (multipart fields as strings; files as `{"file_name","bytes"}`).
    pub params: Value,
}

#[derive(Clone, Debug)]
struct Msg {
    from_bot: bool,
    text: String,
    reaction: Vec<String>,
}

#[derive(Clone, Debug)]
struct Chat {
    kind: &'static str,
    title: String,
    forum: bool,
    migrated_to: Option<i64>,
    next_id: i64,
    messages: HashMap<i64, Msg>,
}

#[derive(Default)]
struct Inner {
    updates: VecDeque<Value>,
    next_update: i64,
    webhook: Option<(String, String)>,
    chats: HashMap<i64, Chat>,
    calls: Vec<Call>,
    files: HashMap<String, (String, Vec<u8>)>,
    fail: VecDeque<Value>,
    poll_generation: u64,
    webhook_generation: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    token: String,
    new_update: Arc<Notify>,
    http: reqwest::Client,
    stop: CancellationToken,
}

/// The bot's user id in the fake.
pub const BOT_ID: i64 = 7_000_000_001;

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    match inner.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

fn fail(code: u16, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(body),
    )
        .into_response()
}

fn bad(description: &str) -> Response {
    fail(400, &format!("Bad Request: {description}"), None)
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Bridge", "username": "bridge_bot"})
}

fn chat_json(id: i64, c: &Chat) -> Value {
    let mut v = json!({"id": id, "type": c.kind, "title": c.title});
    if c.forum {
        v["is_forum"] = json!(true);
    }
    v
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Shared {
    fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut inner = lock(&self.inner);
            inner.next_update += 1;
            let id = 800_000_000 + inner.next_update;
            update["update_id"] = json!(id);
            inner.updates.push_back(update);
            id
        };
        self.new_update.notify_waiters();
        id
    }

    /// Delivers queued updates to the webhook, in order, each until answered 2xx.
    async fn deliver_loop(self, generation: u64) {
        loop {
            let (next, hook) = {
                let inner = lock(&self.inner);
                if inner.webhook_generation != generation {
                    return;
                }
                (inner.updates.front().cloned(), inner.webhook.clone())
            };
            let (Some(update), Some((url, secret))) = (next, hook) else {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = self.new_update.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            };
            let answered = self
                .http
                .post(&url)
                .header("X-Telegram-Bot-Api-Secret-Token", secret)
                .json(&update)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if answered {
                let mut inner = lock(&self.inner);
                if inner.updates.front().map(|u| &u["update_id"]) == Some(&update["update_id"]) {
                    inner.updates.pop_front();
                }
            } else {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        }
    }
}

async fn params_of(headers: &HeaderMap, body: axum::body::Bytes) -> Value {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        return serde_json::from_slice(&body).unwrap_or(Value::Null);
    }
    if ct.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(ct).unwrap_or_default();
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut form = multer::Multipart::new(stream, boundary);
        let mut params = serde_json::Map::new();
        while let Ok(Some(field)) = form.next_field().await {
            let name = field.name().unwrap_or("").to_owned();
            match field.file_name().map(str::to_owned) {
                Some(file_name) => {
                    let bytes = field.bytes().await.unwrap_or_default();
                    params.insert(
                        name,
                        json!({"file_name": file_name, "bytes": bytes.to_vec()}),
                    );
                }
                None => {
                    let text = field.text().await.unwrap_or_default();
                    params.insert(name, Value::String(text));
                }
            }
        }
        return Value::Object(params);
    }
    // application/x-www-form-urlencoded or nothing.
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut params = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k.to_owned(), Value::String(v.replace('+', " ")));
    }
    Value::Object(params)
}

async fn method(
    State(s): State<Shared>,
    Path((bot, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if bot.strip_prefix("bot") != Some(s.token.as_str()) {
        return fail(401, "Unauthorized", None);
    }
    let params = params_of(&headers, body).await;
    if name == "getUpdates" {
        return get_updates(&s, &params).await;
    }
    {
        let mut inner = lock(&s.inner);
        if name != "getMe" {
            inner.calls.push(Call {
                method: name.clone(),
                params: params.clone(),
            });
        }
        if let Some(e) = inner.fail.pop_front() {
            let code = e["error_code"].as_u64().unwrap_or(400) as u16;
            return fail(
                code,
                e["description"].as_str().unwrap_or(""),
                e.get("parameters").cloned(),
            );
        }
    }
    match name.as_str() {
        "getMe" => ok(bot_user()),
        "deleteWebhook" => {
            let mut inner = lock(&s.inner);
            inner.webhook = None;
            inner.webhook_generation += 1;
            if params["drop_pending_updates"] == json!(true) {
                inner.updates.clear();
            }
            ok(json!(true))
        }
        "setWebhook" => set_webhook(&s, &params),
        "sendMessage" => send_message(&s, &params),
        "editMessageText" => edit_message(&s, &params),
        "deleteMessage" => delete_message(&s, &params),
        "setMessageReaction" => set_reaction(&s, &params),
        "sendPhoto" | "sendDocument" => send_file(&s, &name, &params),
        "getFile" => get_file(&s, &params),
        _ => fail(404, "Not Found", None),
    }
}

async fn get_updates(s: &Shared, params: &Value) -> Response {
    let offset = int(params.get("offset")).unwrap_or(0);
    let limit = int(params.get("limit")).unwrap_or(100).clamp(1, 100) as usize;
    let timeout = int(params.get("timeout")).unwrap_or(0).clamp(0, 50) as u64;
    let generation = {
        let mut inner = lock(&s.inner);
        if inner.webhook.is_some() {
            return fail(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                None,
            );
        }
        inner.poll_generation += 1;
        if offset > 0 {
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        }
        inner.poll_generation
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = s.new_update.notified();
        {
            let inner = lock(&s.inner);
            if inner.poll_generation != generation {
                return fail(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                    None,
                );
            }
            let ready: Vec<Value> = inner.updates.iter().take(limit).cloned().collect();
            if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                return ok(Value::Array(ready));
            }
        }
        tokio::select! {
            _ = s.stop.cancelled() => return ok(json!([])),
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

fn set_webhook(s: &Shared, params: &Value) -> Response {
    let Some(url) = params["url"].as_str().filter(|u| !u.is_empty()) else {
        return bad("bad webhook: An HTTPS URL must be provided for webhook");
    };
    let secret = params["secret_token"].as_str().unwrap_or("").to_owned();
    if secret.len() > 256
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("secret token contains unallowed characters");
    }
    let generation = {
        let mut inner = lock(&s.inner);
        inner.webhook = Some((url.to_owned(), secret));
        inner.webhook_generation += 1;
        inner.poll_generation += 1;
        inner.webhook_generation
    };
    tokio::spawn(s.clone().deliver_loop(generation));
    ok(json!(true))
}

/// The chat a send goes to, or the error Telegram answers.
/// The fake Bot API, serving on `127.0.0.1:port` until dropped.
pub struct FakeTelegram {
    /// Its port.
    pub port: u16,
    shared: Shared,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// A simulated person.
#[derive(Clone, Debug)]
pub struct User {
    /// Their user id.
    pub id: i64,
    /// Their first name.
    pub first_name: String,
}

impl User {
    /// A person.
    pub fn new(id: i64, first_name: &str) -> Self {
        Self {
            id,
            first_name: first_name.to_owned(),
        }
    }
    fn json(&self) -> Value {
        json!({"id": self.id, "is_bot": false, "first_name": self.first_name})
    }
}

impl FakeTelegram {
    /// Starts the fake for the bot with `token`.
    pub async fn start(token: &str) -> Self {
        let (listener, port) = passerelle_testkit::loopback::listen().await;
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner::default())),
            token: token.to_owned(),
            new_update: Arc::new(Notify::new()),
            http: reqwest::Client::new(),
            stop: CancellationToken::new(),
        };
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::any(method))
            .route("/file/{bot}/{*path}", axum::routing::get(file))
            .with_state(shared.clone());
        passerelle_testkit::loopback::serve(listener, app, shared.stop.clone());
        Self { port, shared }
    }

    /// The `api_base` a connector is configured with.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a chat the bot is in: `kind` is `private`, `group` or `supergroup`; `forum` turns
    /// topics on.
    pub fn add_chat(&self, id: i64, kind: &'static str, title: &str, forum: bool) {
        lock(&self.shared.inner).chats.insert(
            id,
            Chat {
                kind,
                title: title.to_owned(),
                forum,
                migrated_to: None,
                next_id: 100,
                messages: HashMap::new(),
            },
        );
    }

    fn user_message(&self, chat: i64, from: &User, extra: Value) -> i64 {
        let (id, chat_v) = {
            let mut inner = lock(&self.shared.inner);
            let Some(c) = inner.chats.get_mut(&chat) else {
                return 0;
            };
            c.next_id += 1;
            let text = extra["text"].as_str().unwrap_or("").to_owned();
            c.messages.insert(
                c.next_id,
                Msg {
                    from_bot: false,
                    text,
                    reaction: Vec::new(),
                },
            );
            (c.next_id, chat_json(chat, c))
        };
        let mut m = json!({"message_id": id, "from": from.json(), "chat": chat_v, "date": now()});
        if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        self.shared.push_update(json!({"message": m}));
        id
    }

    /// `from` says `text` in `chat`; the message id.
    pub fn user_says(&self, chat: i64, from: &User, text: &str) -> i64 {
        self.user_message(chat, from, json!({"text": text}))
    }

    /// `from` answers message `to` in `chat`.
    pub fn user_replies(&self, chat: i64, from: &User, to: i64, text: &str) -> i64 {
        let chat_v = chat_json(chat, &lock(&self.shared.inner).chats[&chat]);
        self.user_message(
            chat,
            from,
            json!({"text": text, "reply_to_message": {"message_id": to, "chat": chat_v, "date": now()}}),
        )
    }

    /// `from` says `text` in forum topic `thread` of `chat`.
    pub fn user_says_in_topic(&self, chat: i64, from: &User, thread: i64, text: &str) -> i64 {
        let chat_v = chat_json(chat, &lock(&self.shared.inner).chats[&chat]);
        self.user_message(
            chat,
            from,
            json!({"text": text, "message_thread_id": thread, "is_topic_message": true,
                   "reply_to_message": {"message_id": thread, "chat": chat_v, "date": now()}}),
        )
    }

    /// `from` sends a file (a document) with `caption`; the message id and the file id.
    pub fn user_sends_file(
        &self,
        chat: i64,
        from: &User,
        name: &str,
        data: &[u8],
        caption: &str,
    ) -> (i64, String) {
        let file_id = {
            let mut inner = lock(&self.shared.inner);
            let n = inner.files.len() + 1;
            let id = format!("BQACAgIAAxUser{n}");
            inner
                .files
                .insert(id.clone(), (format!("documents/file_{n}"), data.to_vec()));
            id
        };
        let id = self.user_message(
            chat,
            from,
            json!({"caption": caption, "document": {"file_id": file_id, "file_unique_id": "u",
                   "file_name": name, "mime_type": "application/octet-stream", "file_size": data.len()}}),
        );
        (id, file_id)
    }

    /// `from` edits their message `id` to `text`.
    pub fn user_edits(&self, chat: i64, from: &User, id: i64, text: &str) {
        let chat_v = {
            let mut inner = lock(&self.shared.inner);
            let Some(c) = inner.chats.get_mut(&chat) else {
                return;
            };
            if let Some(m) = c.messages.get_mut(&id) {
                m.text = text.to_owned();
            }
            chat_json(chat, c)
        };
        self.shared.push_update(json!({"edited_message": {
            "message_id": id, "from": from.json(), "chat": chat_v, "date": now() - 5,
            "edit_date": now(), "text": text}}));
    }

    /// `from`'s reactions to message `id` change from `old` to `new`.
    pub fn user_reacts(&self, chat: i64, from: &User, id: i64, old: &[&str], new: &[&str]) {
        let chat_v = chat_json(chat, &lock(&self.shared.inner).chats[&chat]);
        let list = |l: &[&str]| -> Vec<Value> {
            l.iter()
                .map(|e| json!({"type": "emoji", "emoji": e}))
                .collect()
        };
        self.shared.push_update(json!({"message_reaction": {
            "chat": chat_v, "message_id": id, "user": from.json(), "date": now(),
            "old_reaction": list(old), "new_reaction": list(new)}}));
    }

    /// The group `old` becomes the supergroup `new`: both service messages are queued, and sends
    /// to `old` are refused from now on with `migrate_to_chat_id`.
    pub fn migrate(&self, old: i64, new: i64, by: &User) {
        let (old_v, title) = {
            let mut inner = lock(&self.shared.inner);
            let Some(c) = inner.chats.get_mut(&old) else {
                return;
            };
            c.migrated_to = Some(new);
            (chat_json(old, c), c.title.clone())
        };
        self.add_chat(new, "supergroup", &title, false);
        let new_v = chat_json(new, &lock(&self.shared.inner).chats[&new]);
        self.shared
            .push_update(json!({"message": {"message_id": 999, "from": by.json(),
            "chat": old_v, "date": now(), "migrate_to_chat_id": new}}));
        self.shared
            .push_update(json!({"message": {"message_id": 1, "from": by.json(),
            "chat": new_v, "date": now(), "migrate_from_chat_id": old}}));
    }

    /// Makes the next call (other than `getUpdates`) fail with `code` and `description`, and
    /// `parameters` (e.g. `{"retry_after": 3}`).
    pub fn fail_next(&self, code: u16, description: &str, parameters: Option<Value>) {
        let mut e = json!({"error_code": code, "description": description});
        if let Some(p) = parameters {
            e["parameters"] = p;
        }
        lock(&self.shared.inner).fail.push_back(e);
    }

    /// Every call the bot made but `getUpdates` and `getMe`.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.inner).calls.clone()
    }

    /// The texts of the bot's messages in `chat`, in order, as they are now (edits applied,
    /// deleted ones gone).
    pub fn bot_texts(&self, chat: i64) -> Vec<String> {
        let inner = lock(&self.shared.inner);
        let Some(c) = inner.chats.get(&chat) else {
            return Vec::new();
        };
        let mut ids: Vec<&i64> = c.messages.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| c.messages.get(id))
            .filter(|m| m.from_bot)
            .map(|m| m.text.clone())
            .collect()
    }

    /// The bot's reaction on message `id`.
    pub fn bot_reaction(&self, chat: i64, id: i64) -> Vec<String> {
        lock(&self.shared.inner)
            .chats
            .get(&chat)
            .and_then(|c| c.messages.get(&id))
            .map(|m| m.reaction.clone())
            .unwrap_or_default()
    }

    /// How many updates Telegram still holds (not confirmed, or not delivered to the webhook).
    pub fn pending_updates(&self) -> usize {
        lock(&self.shared.inner).updates.len()
    }

    /// The ids of the updates Telegram still holds, oldest first.
    pub fn pending_update_ids(&self) -> Vec<i64> {
        lock(&self.shared.inner)
            .updates
            .iter()
            .filter_map(|u| u["update_id"].as_i64())
            .collect()
    }

    /// The webhook set, if any: (url, secret).
    pub fn webhook(&self) -> Option<(String, String)> {
        lock(&self.shared.inner).webhook.clone()
    }
}

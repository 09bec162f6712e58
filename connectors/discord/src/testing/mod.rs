//! A fake of Discord's REST API (v10) and Gateway, written from
//! <https://discord.com/developers/docs> (see this crate's `PROTOCOL.md`):
//!
//! - REST under `/api/v10/`, `Authorization: Bot <token>` (401 `{"message":"401: Unauthorized",
//!   "code":0}` otherwise; webhook executions need no token but the webhook's). Errors are
//!   Discord's JSON `{"message","code"}` with its codes: 10003 unknown channel, 10008 unknown
//!   message, 10014 unknown emoji, 10015 unknown webhook, 30007 fifteen webhooks, 50005 editing
//!   someone else's message, 50006 empty message, 50013 missing permissions, 50027 invalid
//!   webhook token, 50035 invalid form body (content over 2,000 characters, a webhook name with
//!   "discord" or "clyde"), 160004 a thread already made from the message.
//! - Rate limits per route and top-level resource, with `X-RateLimit-Limit`, `-Remaining`,
//!   `-Reset`, `-Reset-After` and `-Bucket` on every answer; over the limit, 429 with
//!   `{"message","retry_after","global"}`, `Retry-After` and `X-RateLimit-Scope`; and the global
//!   50 requests per second (`"global": true`, `X-RateLimit-Global`).
//! - The Gateway at `/?v=10&encoding=json`: Hello (op 10), Identify (op 2: a wrong token closes
//!   4004, intents without `MESSAGE_CONTENT` when it is not granted close 4014) answered by
//!   `READY` and `GUILD_CREATE`, Heartbeat (op 1) answered by op 11, Resume (op 6) replaying the
//!   session's dispatches after its `seq` then `RESUMED`, or op 9 (`false`) for a session it no
//!   longer has. Dispatches are kept per session while its client is away, as Discord does for a
//!   resumable session. Tests drop connections, send op 7, invalidate sessions and close with
//!   codes.
//!
//! People are simulated with [`FakeDiscord::user_says`] and its siblings. Every REST call is
//! recorded ([`FakeDiscord::requests`]); messages the fake holds can be read back as Discord
//! keeps them ([`FakeDiscord::messages_in`]).

mod gateway;
mod rest;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Discord's epoch (2015-01-01) in Unix milliseconds.
const EPOCH_MS: u64 = 1_420_070_400_000;

/// A person on the fake.
#[derive(Clone, Debug)]
pub struct User {
    /// Their id.
    pub id: u64,
    /// Their username.
    pub username: String,
    /// Their display name, if set.
    pub global_name: Option<String>,
    /// Their guild nickname, if set.
    pub nick: Option<String>,
    /// A bot account.
    pub bot: bool,
}

impl User {
    /// A person with a username (and no nickname).
    pub fn new(id: u64, username: &str) -> Self {
        Self {
            id,
            username: username.into(),
            global_name: None,
            nick: None,
            bot: false,
        }
    }

    fn object(&self) -> Value {
        json!({"id": self.id.to_string(), "username": self.username, "discriminator": "0",
               "global_name": self.global_name, "avatar": format!("a{:x}", self.id), "bot": self.bot})
    }
}

/// A REST call the bridge made.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`…
    pub method: String,
    /// The path after `/api/v10/`, with its query.
    pub path: String,
    /// The JSON body (for multipart, `payload_json` with `"files": [{"name","bytes"}]` added).
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

/// A message as the fake keeps it.
#[derive(Clone, Debug)]
pub struct Message {
    /// Its id.
    pub id: u64,
    /// The channel (or thread) it is in.
    pub channel: u64,
    /// Its author object.
    pub author: Value,
    /// The author's guild member object, for people.
    pub member: Option<Value>,
    /// Its text.
    pub content: String,
    /// The webhook that sent it.
    pub webhook_id: Option<u64>,
    /// `type`: 0 default, 19 reply.
    pub kind: u64,
    /// `message_reference.message_id` and its channel.
    pub reference: Option<(u64, u64)>,
    /// Attachments: file names and sizes.
    pub files: Vec<(String, usize)>,
    /// Whether it was edited.
    pub edited: bool,
    /// The emoji the bot reacted with.
    pub bot_reactions: Vec<String>,
    /// The `allowed_mentions` it was sent with.
    pub allowed_mentions: Option<Value>,
}

#[derive(Clone, Debug)]
struct Channel {
    kind: u64,
    name: String,
    parent: Option<u64>,
    guild: Option<u64>,
    recipient: Option<u64>,
    /// The bot may not manage webhooks here.
    no_webhooks: bool,
}

#[derive(Clone, Debug)]
struct Webhook {
    id: u64,
    channel: u64,
    token: String,
    name: String,
    user: u64,
}

#[derive(Default)]
struct Session {
    seq: u64,
    buffer: Vec<(u64, String)>,
}

/// What the Gateway connection is told to do.
enum Ctl {
    Frame(String),
    Close(u16),
    Drop,
}

struct Bucket {
    remaining: u64,
    reset_at: Instant,
}

struct Inner {
    token: String,
    bot: User,
    application: u64,
    guild: u64,
    grant_message_content: bool,
    channels: BTreeMap<u64, Channel>,
    messages: BTreeMap<u64, Message>,
    webhooks: BTreeMap<u64, Webhook>,
    members: HashMap<u64, User>,
    last_id: u64,
    requests: Vec<Request>,
    sessions: HashMap<String, Session>,
    current: Option<String>,
    conn: Option<mpsc::UnboundedSender<Ctl>>,
    identifies: Vec<Instant>,
    resumes: u64,
    heartbeat_ms: u64,
    buckets: HashMap<String, Bucket>,
    send_limit: (u64, Duration),
    global: (u64, Instant),
    too_many: u64,
    fail: Vec<(String, String, u16, u64)>,
    threads_made: HashSet<u64>,
}

/// The fake, serving on a loopback port until dropped.
pub struct FakeDiscord {
    inner: Arc<Mutex<Inner>>,
    port: u16,
    stop: CancellationToken,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An ISO 8601 timestamp of a snowflake, as Discord writes them.
fn timestamp(id: u64) -> String {
    let ms = (id >> 22) + EPOCH_MS;
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}000+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

impl Inner {
    fn next_id(&mut self) -> u64 {
        let id = ((now_ms().saturating_sub(EPOCH_MS)) << 22).max(self.last_id + 1);
        self.last_id = id;
        id
    }

    fn channel_object(&self, id: u64) -> Option<Value> {
        let c = self.channels.get(&id)?;
        let mut v = json!({"id": id.to_string(), "type": c.kind, "name": c.name});
        if let Some(g) = c.guild {
            v["guild_id"] = json!(g.to_string());
        }
        if let Some(p) = c.parent {
            v["parent_id"] = json!(p.to_string());
        }
        if let Some(r) = c.recipient {
            let user = self
                .members
                .get(&r)
                .map(User::object)
                .unwrap_or(json!({"id": r.to_string()}));
            v["recipients"] = json!([user]);
        }
        Some(v)
    }

    /// A message object; `gateway` adds `guild_id` and `member` as dispatches carry them.
    fn message_object(&self, m: &Message, gateway: bool) -> Value {
        let guild = self.channels.get(&m.channel).and_then(|c| c.guild);
        let mut v = json!({
            "id": m.id.to_string(), "channel_id": m.channel.to_string(), "author": m.author,
            "content": m.content, "timestamp": timestamp(m.id),
            "edited_timestamp": if m.edited { json!(timestamp(self.last_id)) } else { Value::Null },
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": m.files.iter().enumerate().map(|(i, (name, size))| json!({
                "id": (m.id + i as u64).to_string(), "filename": name, "size": size,
                "url": format!("https://cdn.discordapp.com/attachments/{}/{}/{name}", m.channel, m.id),
                "proxy_url": format!("https://media.discordapp.net/attachments/{}/{}/{name}", m.channel, m.id),
            })).collect::<Vec<_>>(),
            "embeds": [], "pinned": false, "type": m.kind, "flags": 0,
        });
        if let Some(w) = m.webhook_id {
            v["webhook_id"] = json!(w.to_string());
            v["application_id"] = json!(self.application.to_string());
        }
        if let Some((mid, cid)) = m.reference {
            v["message_reference"] =
                json!({"type": 0, "message_id": mid.to_string(), "channel_id": cid.to_string()});
        }
        if gateway && let Some(g) = guild {
            v["guild_id"] = json!(g.to_string());
            if let Some(member) = &m.member {
                v["member"] = member.clone();
            }
        }
        v
    }

    /// Sends a dispatch to the current session (kept for a resume while its client is away).
    fn dispatch(&mut self, t: &str, d: Value) {
        let Some(id) = self.current.clone() else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.seq += 1;
        let frame = json!({"op": 0, "t": t, "s": session.seq, "d": d}).to_string();
        session.buffer.push((session.seq, frame.clone()));
        if session.buffer.len() > 5000 {
            session.buffer.remove(0);
        }
        if let Some(conn) = &self.conn {
            let _ = conn.send(Ctl::Frame(frame));
        }
    }

    fn member_of(&self, user: &User) -> Value {
        json!({"nick": user.nick, "roles": [], "joined_at": timestamp(self.last_id), "deaf": false, "mute": false})
    }

    fn post(
        &mut self,
        channel: u64,
        author: Value,
        member: Option<Value>,
        content: &str,
        kind: u64,
    ) -> u64 {
        let id = self.next_id();
        let m = Message {
            id,
            channel,
            author,
            member,
            content: content.to_owned(),
            webhook_id: None,
            kind,
            reference: None,
            files: Vec::new(),
            edited: false,
            bot_reactions: Vec::new(),
            allowed_mentions: None,
        };
        self.messages.insert(id, m);
        id
    }
}

impl FakeDiscord {
    /// Starts the fake for a bot with `token`, in one guild.
    pub async fn start(token: &str) -> Self {
        let (listener, port) = passerelle_testkit::loopback::listen().await;
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            bot: User {
                bot: true,
                ..User::new(1_000_001, "passerelle-bot")
            },
            application: 1_000_001,
            guild: 2_000_001,
            grant_message_content: true,
            channels: BTreeMap::new(),
            messages: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            members: HashMap::new(),
            last_id: 0,
            requests: Vec::new(),
            sessions: HashMap::new(),
            current: None,
            conn: None,
            identifies: Vec::new(),
            resumes: 0,
            heartbeat_ms: 41_250,
            buckets: HashMap::new(),
            send_limit: (5, Duration::from_secs(5)),
            global: (0, Instant::now()),
            too_many: 0,
            fail: Vec::new(),
            threads_made: HashSet::new(),
        }));
        let stop = CancellationToken::new();
        let app = rest::router(inner.clone(), port);
        passerelle_testkit::loopback::serve(listener, app, stop.clone());
        Self { inner, port, stop }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The REST base to configure (`api_base`).
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api/v10", self.port)
    }

    /// The Gateway URL to configure (`gateway_url`); `GET /gateway/bot` answers it too.
    pub fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The bot's user id.
    pub fn bot_id(&self) -> u64 {
        self.lock().bot.id
    }

    /// Adds a guild text channel (`type` 0).
    pub fn add_text_channel(&self, id: u64, name: &str) {
        let mut i = self.lock();
        let guild = i.guild;
        i.channels.insert(
            id,
            Channel {
                kind: 0,
                name: name.into(),
                parent: None,
                guild: Some(guild),
                recipient: None,
                no_webhooks: false,
            },
        );
    }

    /// Adds a forum channel (`type` 15).
    pub fn add_forum(&self, id: u64, name: &str) {
        let mut i = self.lock();
        let guild = i.guild;
        i.channels.insert(
            id,
            Channel {
                kind: 15,
                name: name.into(),
                parent: None,
                guild: Some(guild),
                recipient: None,
                no_webhooks: false,
            },
        );
    }

    /// Takes the Manage Webhooks permission from the bot in `channel`.
    pub fn deny_webhooks(&self, channel: u64) {
        if let Some(c) = self.lock().channels.get_mut(&channel) {
            c.no_webhooks = true;
        }
    }

    /// Adds a member of the guild.
    pub fn add_member(&self, user: &User) {
        self.lock().members.insert(user.id, user.clone());
    }

    /// Whether the bot was granted the Message Content intent (default true).
    pub fn grant_message_content(&self, granted: bool) {
        self.lock().grant_message_content = granted;
    }

    /// The heartbeat interval Hello announces (default 41,250 ms, as Discord's).
    pub fn set_heartbeat_ms(&self, ms: u64) {
        self.lock().heartbeat_ms = ms;
    }

    /// The limit of the message-sending routes (default 5 per 5 s per channel or webhook).
    pub fn set_send_limit(&self, limit: u64, window: Duration) {
        self.lock().send_limit = (limit, window);
    }

    /// Makes the next `method` call whose path starts with `path` fail with `status` and
    /// Discord's `code`.
    pub fn fail_next(&self, method: &str, path: &str, status: u16, code: u64) {
        self.lock()
            .fail
            .push((method.to_owned(), path.to_owned(), status, code));
    }

    fn say(&self, channel: u64, user: &User, text: &str, reference: Option<u64>) -> u64 {
        let mut i = self.lock();
        i.members.insert(user.id, user.clone());
        let member = i.member_of(user);
        let kind = if reference.is_some() { 19 } else { 0 };
        let id = i.post(channel, user.object(), Some(member), text, kind);
        if let Some(r) = reference {
            let parent = i.messages.get(&r).map(|m| m.channel).unwrap_or(channel);
            if let Some(m) = i.messages.get_mut(&id) {
                m.reference = Some((r, parent));
            }
        }
        let object = i.messages.get(&id).map(|m| i.message_object(m, true));
        if let Some(o) = object {
            i.dispatch("MESSAGE_CREATE", o);
        }
        id
    }

    /// `user` says `text` in `channel` (a channel or a thread); the message's id.
    pub fn user_says(&self, channel: u64, user: &User, text: &str) -> u64 {
        self.say(channel, user, text, None)
    }

    /// `user` answers message `to` in `channel`.
    pub fn user_replies(&self, channel: u64, user: &User, to: u64, text: &str) -> u64 {
        self.say(channel, user, text, Some(to))
    }

    /// `user` changes their message.
    pub fn user_edits(&self, message: u64, text: &str) {
        let mut i = self.lock();
        let stamp = i.next_id();
        let _ = stamp;
        let Some(m) = i.messages.get_mut(&message) else {
            return;
        };
        m.content = text.to_owned();
        m.edited = true;
        let m = m.clone();
        let o = i.message_object(&m, true);
        i.dispatch("MESSAGE_UPDATE", o);
    }

    /// A message is deleted (by its author or a moderator).
    pub fn delete_message(&self, message: u64) {
        let mut i = self.lock();
        let Some(m) = i.messages.remove(&message) else {
            return;
        };
        let guild = i.channels.get(&m.channel).and_then(|c| c.guild);
        i.dispatch(
            "MESSAGE_DELETE",
            json!({"id": message.to_string(), "channel_id": m.channel.to_string(),
            "guild_id": guild.map(|g| g.to_string())}),
        );
    }

    /// `user` reacts to a message with a unicode emoji, or a custom one (`name`, `Some(id)`).
    pub fn user_reacts(
        &self,
        message: u64,
        user: &User,
        name: &str,
        custom: Option<u64>,
        removed: bool,
    ) {
        let mut i = self.lock();
        let Some(m) = i.messages.get(&message).cloned() else {
            return;
        };
        let guild = i.channels.get(&m.channel).and_then(|c| c.guild);
        let mut d = json!({"user_id": user.id.to_string(), "channel_id": m.channel.to_string(),
            "message_id": message.to_string(), "guild_id": guild.map(|g| g.to_string()),
            "emoji": {"id": custom.map(|c| c.to_string()), "name": name}});
        if !removed {
            let mut member = i.member_of(user);
            member["user"] = user.object();
            d["member"] = member;
        }
        i.dispatch(
            if removed {
                "MESSAGE_REACTION_REMOVE"
            } else {
                "MESSAGE_REACTION_ADD"
            },
            d,
        );
    }

    /// Opens a thread from message `from` of `channel` (its id is the message's), as a person
    /// would; or, for a forum, a post whose first message says `text`. The thread's id.
    pub fn start_thread(&self, channel: u64, from: Option<u64>, user: &User, text: &str) -> u64 {
        let mut i = self.lock();
        let id = match from {
            Some(m) => m,
            None => i.next_id(),
        };
        let guild = i.guild;
        let forum = i.channels.get(&channel).is_some_and(|c| c.kind == 15);
        i.channels.insert(
            id,
            Channel {
                kind: 11,
                name: "thread".into(),
                parent: Some(channel),
                guild: Some(guild),
                recipient: None,
                no_webhooks: false,
            },
        );
        i.threads_made.insert(id);
        if let Some(o) = i.channel_object(id) {
            i.dispatch("THREAD_CREATE", o);
        }
        if forum {
            i.members.insert(user.id, user.clone());
            let member = i.member_of(user);
            let m = Message {
                id,
                channel: id,
                author: user.object(),
                member: Some(member),
                content: text.to_owned(),
                webhook_id: None,
                kind: 0,
                reference: None,
                files: Vec::new(),
                edited: false,
                bot_reactions: Vec::new(),
                allowed_mentions: None,
            };
            let o = i.message_object(&m, true);
            i.messages.insert(id, m);
            i.dispatch("MESSAGE_CREATE", o);
        }
        id
    }

    /// Every REST call so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// The messages in `channel` (or a thread), oldest first.
    pub fn messages_in(&self, channel: u64) -> Vec<Message> {
        self.lock()
            .messages
            .values()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// One message, as the fake holds it.
    pub fn message(&self, id: u64) -> Option<Message> {
        self.lock().messages.get(&id).cloned()
    }

    /// The webhooks of `channel`: id, name and owner.
    pub fn webhooks_in(&self, channel: u64) -> Vec<(u64, String, u64)> {
        self.lock()
            .webhooks
            .values()
            .filter(|w| w.channel == channel)
            .map(|w| (w.id, w.name.clone(), w.user))
            .collect()
    }

    /// Makes a webhook in `channel` owned by someone else (an integration).
    pub fn add_foreign_webhook(&self, channel: u64, name: &str) -> u64 {
        let mut i = self.lock();
        let id = i.next_id();
        i.webhooks.insert(
            id,
            Webhook {
                id,
                channel,
                token: format!("foreign-{id}"),
                name: name.into(),
                user: 42,
            },
        );
        id
    }

    /// How many times a client identified, and when.
    pub fn identifies(&self) -> Vec<Instant> {
        self.lock().identifies.clone()
    }

    /// How many sessions were resumed.
    pub fn resumes(&self) -> u64 {
        self.lock().resumes
    }

    /// How many 429s were answered.
    pub fn too_many(&self) -> u64 {
        self.lock().too_many
    }

    /// Whether a client is connected and identified (or resumed).
    pub fn connected(&self) -> bool {
        let i = self.lock();
        i.conn.is_some() && i.current.is_some()
    }

    /// Cuts the Gateway connection without a close frame (the session stays resumable).
    pub fn drop_connection(&self) {
        if let Some(c) = self.lock().conn.take() {
            let _ = c.send(Ctl::Drop);
        }
    }

    /// Asks the client to reconnect and resume (op 7).
    pub fn send_reconnect(&self) {
        if let Some(c) = &self.lock().conn {
            let _ = c.send(Ctl::Frame(json!({"op": 7, "d": null}).to_string()));
        }
    }

    /// Forgets every session (as after a long outage): a resume gets op 9 `false`.
    pub fn expire_sessions(&self) {
        let mut i = self.lock();
        i.sessions.clear();
        i.current = None;
    }

    /// Closes the connection with `code` (4004 bad token, 4014 intents…).
    pub fn close_with(&self, code: u16) {
        if let Some(c) = self.lock().conn.take() {
            let _ = c.send(Ctl::Close(code));
        }
    }
}

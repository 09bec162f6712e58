//! A fake of Slack's Web API and Socket Mode, written from <https://api.slack.com/methods>,
//! <https://api.slack.com/apis/socket-mode> and <https://api.slack.com/events-api> (see this
//! crate's `PROTOCOL.md`):
//!
//! - Web API methods at `/api/{method}`, parameters in the query, a JSON body or a form.
//!   `Authorization: Bearer` with the bot token (`xoxb-`), or the app token (`xapp-`) for
//!   `apps.connections.open` only. Errors are HTTP 200 `{"ok": false, "error": code}` with
//!   Slack's codes: `not_authed`, `invalid_auth`, `not_allowed_token_type`, `channel_not_found`,
//!   `not_in_channel`, `no_text`, `msg_too_long`, `message_not_found`, `cant_update_message`,
//!   `cant_delete_message`, `already_reacted`, `no_reaction`, `invalid_name`, `user_not_found`,
//!   `file_not_found`, `unknown_method`.
//! - Rate limits: `chat.postMessage` allows a burst per channel per second ([`FakeSlack::set_post_burst`]);
//!   beyond it, HTTP 429 with `Retry-After` and `{"ok": false, "error": "ratelimited"}`.
//! - Socket Mode at `/link/?ticket=…`: one-use tickets from `apps.connections.open`; `hello`
//!   first; `events_api` envelopes, each delivered again (`retry_attempt`, `retry_reason:
//!   "timeout"`) when not acknowledged within the ack timeout (3 s, as Slack) or when the
//!   connection closes first, up to 3 retries, then dropped as Slack does; `disconnect` frames.
//! - The external upload flow: `files.getUploadURLExternal` gives an upload URL on the fake,
//!   the bytes are posted there, `files.completeUploadExternal` shares them.
//!
//! People are simulated with [`FakeSlack::user_says`] and its siblings. Every Web API call is
//! recorded ([`FakeSlack::requests`]); messages can be read back as Slack keeps them.

mod socket;
mod web;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The bot's user id on the fake.
pub const BOT_USER: &str = "UBRIDGEBOT";
/// The bot's bot id on the fake.
pub const BOT_ID: &str = "BBRIDGEBOT";
/// The workspace.
pub const TEAM: &str = "T0FAKETEAM";

/// A person on the fake.
#[derive(Clone, Debug)]
pub struct User {
    /// `U…`.
    pub id: String,
    /// Their username.
    pub name: String,
    /// Their display name (may be empty).
    pub display_name: String,
}

impl User {
    /// A person with a username and display name.
    pub fn new(id: &str, name: &str, display_name: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            display_name: display_name.into(),
        }
    }

    fn object(&self) -> Value {
        json!({"id": self.id, "team_id": TEAM, "name": self.name, "real_name": self.name, "is_bot": false,
               "profile": {"display_name": self.display_name, "real_name": self.name,
                           "image_72": format!("https://avatars.slack-edge.example/{}_72.png", self.id)}})
    }
}

/// A Web API call the bridge made.
#[derive(Clone, Debug)]
pub struct Request {
    /// The method (`chat.postMessage`).
    pub method: String,
    /// Its parameters, query and body merged.
    pub params: Value,
    /// The token it carried.
    pub token: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// Slack's `error`, if any.
    pub error: Option<String>,
}

/// A message as the fake keeps it.
#[derive(Clone, Debug)]
pub struct Message {
    /// Its conversation.
    pub channel: String,
    /// Its `ts`.
    pub ts: String,
    /// Its author, for people (and the bot's file shares).
    pub user: Option<String>,
    /// For the bot's messages.
    pub bot_id: Option<String>,
    /// The `username` it was posted with.
    pub username: Option<String>,
    /// The `icon_url` it was posted with.
    pub icon_url: Option<String>,
    /// Its text (mrkdwn).
    pub text: String,
    /// Its thread.
    pub thread_ts: Option<String>,
    /// Its subtype.
    pub subtype: Option<String>,
    /// Edited.
    pub edited: bool,
    /// Deleted.
    pub deleted: bool,
    /// Reactions: name and who.
    pub reactions: Vec<(String, String)>,
    /// Files: id, name, size.
    pub files: Vec<(String, String, usize)>,
}

impl Message {
    fn object(&self) -> Value {
        let mut v = json!({"type": "message", "ts": self.ts, "text": self.text, "team": TEAM});
        if let Some(u) = &self.user {
            v["user"] = json!(u);
        }
        if let Some(b) = &self.bot_id {
            v["bot_id"] = json!(b);
        }
        if let Some(u) = &self.username {
            v["username"] = json!(u);
        }
        if let Some(i) = &self.icon_url {
            v["icons"] = json!({"image_48": i});
        }
        if let Some(t) = &self.thread_ts {
            v["thread_ts"] = json!(t);
        }
        if let Some(s) = &self.subtype {
            v["subtype"] = json!(s);
        }
        if self.edited {
            v["edited"] = json!({"user": self.user.clone().unwrap_or_else(|| BOT_USER.into()), "ts": self.ts});
        }
        if !self.files.is_empty() {
            v["files"] = self
                .files
                .iter()
                .map(|(id, name, size)| json!({"id": id, "name": name, "title": name, "mimetype": "application/octet-stream", "size": size, "url_private": format!("https://files.slack.example/{id}")}))
                .collect();
        }
        v
    }
}

#[derive(Clone, Debug)]
struct Channel {
    name: String,
    private: bool,
    im_user: Option<String>,
    bot_member: bool,
}

/// An envelope waiting for its acknowledgement.
#[derive(Clone, Debug)]
struct Envelope {
    id: String,
    payload: Value,
    attempts: u32,
    /// When it was last sent, and on which connection.
    sent: Option<(Instant, u64)>,
}

/// What a Socket Mode connection is told to do.
enum Ctl {
    Frame(String),
    Drop,
}

struct Inner {
    port: u16,
    bot_token: String,
    app_token: String,
    users: HashMap<String, User>,
    channels: BTreeMap<String, Channel>,
    messages: Vec<Message>,
    requests: Vec<Request>,
    last_ts: u128,
    next_id: u64,
    tickets: Vec<String>,
    conn: Option<(u64, mpsc::UnboundedSender<Ctl>)>,
    connections: u64,
    pending: Vec<Envelope>,
    acked: Vec<String>,
    late_acks: u64,
    dropped: u64,
    deliveries: u64,
    ack_timeout: Duration,
    post_burst: usize,
    posts: HashMap<String, Vec<Instant>>,
    too_many: u64,
    uploads: HashMap<String, (String, Option<Vec<u8>>)>,
    fail: Vec<(String, String)>,
    limit_next: Vec<(String, u64)>,
}

/// The fake, serving on a loopback port until dropped.
pub struct FakeSlack {
    inner: Arc<Mutex<Inner>>,
    port: u16,
    stop: CancellationToken,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn next_ts(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let ts = now.max(self.last_ts + 1);
        self.last_ts = ts;
        format!("{}.{:06}", ts / 1_000_000, ts % 1_000_000)
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:09}", self.next_id)
    }

    /// Queues an event for the app (Socket Mode), as an `event_callback`.
    fn dispatch(&mut self, event: Value) {
        let event_id = self.id("Ev");
        let envelope = self.id("env-");
        let payload = json!({"token": "verification-token", "team_id": TEAM, "api_app_id": "A0FAKEAPP",
            "event": event, "type": "event_callback", "event_id": event_id,
            "event_time": self.last_ts / 1_000_000, "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": true}]});
        self.pending.push(Envelope {
            id: envelope,
            payload,
            attempts: 0,
            sent: None,
        });
        self.pump();
    }

    /// Sends what is due on the current connection: new envelopes, and those whose last send
    /// timed out or whose connection closed (a retry). After 3 retries an envelope is dropped.
    fn pump(&mut self) {
        let Some((conn_id, tx)) = self.conn.clone() else {
            return;
        };
        let timeout = self.ack_timeout;
        let due = |e: &Envelope| match e.sent {
            None => true,
            Some((at, c)) => c != conn_id || at.elapsed() >= timeout,
        };
        let before = self.pending.len();
        // The first send and 3 retries, as Slack makes.
        self.pending.retain(|e| !(due(e) && e.attempts >= 4));
        self.dropped += (before - self.pending.len()) as u64;
        let mut sent = 0;
        for e in self.pending.iter_mut() {
            if !due(e) {
                continue;
            }
            let retry = e.attempts;
            let frame = json!({"envelope_id": e.id, "payload": e.payload, "type": "events_api",
                "accepts_response_payload": false, "retry_attempt": retry,
                "retry_reason": if retry > 0 { "timeout" } else { "" }});
            if tx.send(Ctl::Frame(frame.to_string())).is_ok() {
                e.attempts += 1;
                e.sent = Some((Instant::now(), conn_id));
                sent += 1;
            }
        }
        self.deliveries += sent;
    }

    fn message_event(&self, m: &Message) -> Value {
        let mut v = m.object();
        v["channel"] = json!(m.channel);
        v["event_ts"] = json!(m.ts);
        v["channel_type"] = json!(match self.channels.get(&m.channel) {
            Some(c) if c.im_user.is_some() => "im",
            Some(c) if c.private => "group",
            _ => "channel",
        });
        v
    }

    fn add_message(&mut self, m: Message) -> Value {
        let event = self.message_event(&m);
        self.messages.push(m);
        self.dispatch(event.clone());
        event
    }
}

impl FakeSlack {
    /// Starts the fake with these tokens.
    pub async fn start(bot_token: &str, app_token: &str) -> Self {
        let (listener, port) = passerelle_testkit::loopback::listen().await;
        let inner = Arc::new(Mutex::new(Inner {
            port,
            bot_token: bot_token.into(),
            app_token: app_token.into(),
            users: HashMap::new(),
            channels: BTreeMap::new(),
            messages: Vec::new(),
            requests: Vec::new(),
            last_ts: 0,
            next_id: 0,
            tickets: Vec::new(),
            conn: None,
            connections: 0,
            pending: Vec::new(),
            acked: Vec::new(),
            late_acks: 0,
            dropped: 0,
            deliveries: 0,
            ack_timeout: Duration::from_secs(3),
            post_burst: 10,
            posts: HashMap::new(),
            too_many: 0,
            uploads: HashMap::new(),
            fail: Vec::new(),
            limit_next: Vec::new(),
        }));
        let stop = CancellationToken::new();
        let app = web::router(inner.clone());
        passerelle_testkit::loopback::serve(listener, app, stop.clone());
        // Retries of envelopes whose acknowledgement timed out.
        let ticker = inner.clone();
        let ticking = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ticking.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => lock(&ticker).pump(),
                }
            }
        });
        Self { inner, port, stop }
    }

    /// `api_base` for the connector.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    /// Adds a public channel the bot is a member of.
    pub fn add_channel(&self, id: &str, name: &str) {
        lock(&self.inner).channels.insert(
            id.into(),
            Channel {
                name: name.into(),
                private: false,
                im_user: None,
                bot_member: true,
            },
        );
    }

    /// Adds a public channel the bot was not invited to.
    pub fn add_channel_without_bot(&self, id: &str, name: &str) {
        self.add_channel(id, name);
        if let Some(c) = lock(&self.inner).channels.get_mut(id) {
            c.bot_member = false;
        }
    }

    /// Adds a person.
    pub fn add_user(&self, user: &User) {
        lock(&self.inner)
            .users
            .insert(user.id.clone(), user.clone());
    }

    /// How long an envelope waits for its acknowledgement before it is sent again.
    pub fn set_ack_timeout(&self, d: Duration) {
        lock(&self.inner).ack_timeout = d;
    }

    /// How many `chat.postMessage` calls per channel per second pass before 429s.
    pub fn set_post_burst(&self, n: usize) {
        lock(&self.inner).post_burst = n;
    }

    /// The next call of `method` answers `error`.
    pub fn fail_next(&self, method: &str, error: &str) {
        lock(&self.inner).fail.push((method.into(), error.into()));
    }

    /// The next call of `method` is answered 429 with `Retry-After: secs`, as when a workspace's
    /// other apps used the tier up.
    pub fn rate_limit_next(&self, method: &str, secs: u64) {
        lock(&self.inner).limit_next.push((method.into(), secs));
    }

    /// `user` says `text` (mrkdwn, as Slack stores it) in `channel`; its `ts`.
    pub fn user_says(&self, channel: &str, user: &User, text: &str) -> String {
        self.user_posts(channel, user, text, None, None)
    }

    /// `user` says `text` in the thread of `thread_ts`.
    pub fn user_says_in_thread(
        &self,
        channel: &str,
        user: &User,
        text: &str,
        thread_ts: &str,
    ) -> String {
        self.user_posts(channel, user, text, Some(thread_ts), None)
    }

    /// `user` does `/me text`.
    pub fn user_me(&self, channel: &str, user: &User, text: &str) -> String {
        self.user_posts(channel, user, text, None, Some("me_message"))
    }

    fn user_posts(
        &self,
        channel: &str,
        user: &User,
        text: &str,
        thread: Option<&str>,
        subtype: Option<&str>,
    ) -> String {
        let mut i = lock(&self.inner);
        i.users
            .entry(user.id.clone())
            .or_insert_with(|| user.clone());
        let ts = i.next_ts();
        i.add_message(Message {
            channel: channel.into(),
            ts: ts.clone(),
            user: Some(user.id.clone()),
            bot_id: None,
            username: None,
            icon_url: None,
            text: text.into(),
            thread_ts: thread.map(str::to_owned),
            subtype: subtype.map(str::to_owned),
            edited: false,
            deleted: false,
            reactions: Vec::new(),
            files: Vec::new(),
        });
        ts
    }

    /// `user` shares the uploaded file `file_id` (a `file_share` message).
    pub fn user_shares(
        &self,
        channel: &str,
        user: &User,
        file_id: &str,
        name: &str,
        size: usize,
    ) -> String {
        let mut i = lock(&self.inner);
        i.users
            .entry(user.id.clone())
            .or_insert_with(|| user.clone());
        let ts = i.next_ts();
        i.add_message(Message {
            channel: channel.into(),
            ts: ts.clone(),
            user: Some(user.id.clone()),
            bot_id: None,
            username: None,
            icon_url: None,
            text: String::new(),
            thread_ts: None,
            subtype: Some("file_share".into()),
            edited: false,
            deleted: false,
            reactions: Vec::new(),
            files: vec![(file_id.into(), name.into(), size)],
        });
        ts
    }

    /// `user` edits their message `ts` to `text`.
    pub fn user_edits(&self, channel: &str, ts: &str, text: &str) {
        let mut i = lock(&self.inner);
        let Some(pos) = i
            .messages
            .iter()
            .position(|m| m.channel == channel && m.ts == ts)
        else {
            return;
        };
        let previous = i.messages[pos].object();
        i.messages[pos].text = text.into();
        i.messages[pos].edited = true;
        let now = i.next_ts();
        let message = i.messages[pos].object();
        i.dispatch(json!({"type": "message", "subtype": "message_changed", "hidden": true, "channel": channel,
            "ts": now, "event_ts": now, "message": message, "previous_message": previous}));
    }

    /// `user`'s message `ts` is deleted.
    pub fn user_deletes(&self, channel: &str, ts: &str) {
        let mut i = lock(&self.inner);
        let Some(pos) = i
            .messages
            .iter()
            .position(|m| m.channel == channel && m.ts == ts)
        else {
            return;
        };
        i.messages[pos].deleted = true;
        let previous = i.messages[pos].object();
        let now = i.next_ts();
        i.dispatch(json!({"type": "message", "subtype": "message_deleted", "hidden": true, "channel": channel,
            "ts": now, "deleted_ts": ts, "event_ts": now, "previous_message": previous}));
    }

    /// `user` reacts to message `ts` with `name`.
    pub fn user_reacts(&self, channel: &str, ts: &str, user: &User, name: &str) {
        let mut i = lock(&self.inner);
        if let Some(m) = i
            .messages
            .iter_mut()
            .find(|m| m.channel == channel && m.ts == ts)
        {
            m.reactions.push((name.into(), user.id.clone()));
        }
        let now = i.next_ts();
        i.dispatch(json!({"type": "reaction_added", "user": user.id, "reaction": name,
            "item": {"type": "message", "channel": channel, "ts": ts}, "item_user": user.id, "event_ts": now}));
    }

    /// Sends `disconnect` with `reason` on the current connection.
    pub fn disconnect(&self, reason: &str) {
        let i = lock(&self.inner);
        if let Some((_, tx)) = &i.conn {
            let _ = tx.send(Ctl::Frame(json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}).to_string()));
        }
    }

    /// Drops the current connection without a close frame.
    pub fn drop_connection(&self) {
        let mut i = lock(&self.inner);
        if let Some((_, tx)) = i.conn.take() {
            let _ = tx.send(Ctl::Drop);
        }
    }

    /// The Web API calls made, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.inner).requests.clone()
    }

    /// The calls of `method`.
    pub fn calls(&self, method: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// The messages of `channel` (threads included), oldest first, deleted ones left out.
    pub fn messages_in(&self, channel: &str) -> Vec<Message> {
        lock(&self.inner)
            .messages
            .iter()
            .filter(|m| m.channel == channel && !m.deleted)
            .cloned()
            .collect()
    }

    /// Every message the fake ever held in `channel`, deleted ones too.
    pub fn all_messages_in(&self, channel: &str) -> Vec<Message> {
        lock(&self.inner)
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// How many Socket Mode connections were opened.
    pub fn connections(&self) -> u64 {
        lock(&self.inner).connections
    }

    /// Whether a Socket Mode connection is open.
    pub fn connected(&self) -> bool {
        lock(&self.inner).conn.is_some()
    }

    /// Envelopes not yet acknowledged (nor dropped).
    pub fn unacknowledged(&self) -> usize {
        lock(&self.inner).pending.len()
    }

    /// Drops every envelope not acknowledged yet, as Slack does once its retries are spent (an
    /// outage longer than its retry schedule, about 6 minutes with its 1 and 5 minute retries).
    pub fn give_up_pending(&self) {
        let mut i = lock(&self.inner);
        let n = i.pending.len() as u64;
        i.pending.clear();
        i.dropped += n;
    }

    /// Envelopes dropped after 3 retries, as Slack does.
    pub fn dropped(&self) -> u64 {
        lock(&self.inner).dropped
    }

    /// Envelope sends, retries included.
    pub fn deliveries(&self) -> u64 {
        lock(&self.inner).deliveries
    }

    /// Acknowledgements that came after the ack timeout.
    pub fn late_acks(&self) -> u64 {
        lock(&self.inner).late_acks
    }

    /// 429s answered.
    pub fn too_many(&self) -> u64 {
        lock(&self.inner).too_many
    }

    /// The bytes uploaded for a file id, when it was.
    pub fn uploaded(&self, file_id: &str) -> Option<Vec<u8>> {
        lock(&self.inner)
            .uploads
            .get(file_id)
            .and_then(|(_, b)| b.clone())
    }

    /// The payload of the last event queued, as the Events API would post it.
    pub fn last_payload(&self) -> Option<Value> {
        lock(&self.inner).pending.last().map(|e| e.payload.clone())
    }

    /// Posts `payload` to `url` as the HTTP Events API does: signed with `signing_secret` at
    /// `timestamp` (now when `None`). The answer's status and body.
    pub async fn post_event(
        url: &str,
        signing_secret: &str,
        payload: &Value,
        timestamp: Option<u64>,
    ) -> (u16, String) {
        let body = payload.to_string();
        let ts = timestamp.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        let sig = passerelle_sdk::webhook::encode_hex(&passerelle_sdk::webhook::slack_signature(
            signing_secret.as_bytes(),
            ts,
            body.as_bytes(),
        ));
        let answer = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", format!("v0={sig}"))
            .body(body)
            .send()
            .await;
        match answer {
            Ok(a) => {
                let status = a.status().as_u16();
                (status, a.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }
}

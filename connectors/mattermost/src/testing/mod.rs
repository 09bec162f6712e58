//! A fake of Mattermost's REST API v4 and WebSocket, written from <https://api.mattermost.com>
//! and <https://developers.mattermost.com/integrate/reference/server/server-reference/> (see this
//! crate's `PROTOCOL.md`):
//!
//! - REST under `/api/v4/`, `Authorization: Bearer <token>` (401 with Mattermost's error body
//!   `{"id", "message", "status_code", "request_id"}` otherwise). Posts are checked as the server
//!   does: the channel must exist (404) and have the bot as a member (403), the message at most
//!   16,383 characters (400 `api.post.create_post.message_length.app_error`... shortened here to
//!   the id the server gives), a `root_id` must be a post of that channel (400), edits and
//!   deletes only of one's own posts (403). `props.override_username` is kept only when the
//!   server allows it ([`FakeMattermost::set_overrides`]).
//! - An optional rate limit: over it, 429 with `X-Ratelimit-Limit`, `-Remaining`, `-Reset`.
//! - The WebSocket at `/api/v4/websocket`: `authentication_challenge` answered `{"status": "OK",
//!   "seq_reply"}` (or an error for a wrong token), then `hello`; events `posted`, `post_edited`,
//!   `post_deleted` (the post as a JSON string in `data.post`), `reaction_added`/`_removed`
//!   (`data.reaction` as a JSON string), each with the connection's `seq` from 0. A test can make
//!   the server skip events ([`FakeMattermost::skip_events`]), as it does for a slow client.
//!
//! People are simulated with [`FakeMattermost::user_posts`] and its siblings.

mod socket;
mod web;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The bot's user id on the fake.
pub const BOT_USER: &str = "bot00000000000000000000000";

/// A person on the fake.
#[derive(Clone, Debug)]
pub struct User {
    /// 26-character id.
    pub id: String,
    /// Username.
    pub username: String,
    /// Nickname (may be empty).
    pub nickname: String,
}

impl User {
    /// A person.
    pub fn new(id: &str, username: &str, nickname: &str) -> Self {
        Self {
            id: id.into(),
            username: username.into(),
            nickname: nickname.into(),
        }
    }
    fn object(&self) -> Value {
        json!({"id": self.id, "username": self.username, "nickname": self.nickname, "first_name": "", "last_name": "",
               "create_at": 1, "update_at": 1, "delete_at": 0, "roles": "system_user"})
    }
}

/// A post as the fake keeps it.
#[derive(Clone, Debug)]
pub struct Post {
    /// Its id.
    pub id: String,
    /// Its channel.
    pub channel_id: String,
    /// Its author.
    pub user_id: String,
    /// Its thread's root.
    pub root_id: String,
    /// Its Markdown.
    pub message: String,
    /// `type` (`""`, `me`).
    pub kind: String,
    /// `props`.
    pub props: Value,
    /// File ids.
    pub file_ids: Vec<String>,
    /// Milliseconds.
    pub create_at: u64,
    /// Edited at (0: never).
    pub edit_at: u64,
    /// Deleted at (0: not).
    pub delete_at: u64,
    /// Reactions: emoji name and user.
    pub reactions: Vec<(String, String)>,
}

impl Post {
    fn object(&self, files: &HashMap<String, (String, Vec<u8>)>) -> Value {
        let infos: Vec<Value> = self
            .file_ids
            .iter()
            .filter_map(|id| files.get(id).map(|(name, data)| json!({"id": id, "name": name, "size": data.len(), "mime_type": "application/octet-stream", "extension": ""})))
            .collect();
        let mut v = json!({"id": self.id, "create_at": self.create_at, "update_at": self.edit_at.max(self.create_at).max(self.delete_at),
            "edit_at": self.edit_at, "delete_at": self.delete_at, "is_pinned": false, "user_id": self.user_id,
            "channel_id": self.channel_id, "root_id": self.root_id, "original_id": "", "message": self.message,
            "type": self.kind, "props": self.props, "hashtags": "", "pending_post_id": "", "reply_count": 0,
            "metadata": {}});
        if !self.file_ids.is_empty() {
            v["file_ids"] = json!(self.file_ids);
            v["metadata"]["files"] = json!(infos);
        }
        v
    }
}

#[derive(Clone, Debug)]
struct Channel {
    team: String,
    name: String,
    bot_member: bool,
}

struct Inner {
    token: String,
    overrides: bool,
    users: HashMap<String, User>,
    channels: BTreeMap<String, Channel>,
    posts: Vec<Post>,
    files: HashMap<String, (String, Vec<u8>)>,
    next_id: u64,
    last_ms: u64,
    conn: Option<(u64, mpsc::UnboundedSender<Option<String>>)>,
    connections: u64,
    seq: u64,
    skip: u64,
    requests: Vec<(String, String, Value, u16)>,
    rate: Option<(usize, Duration)>,
    calls: Vec<Instant>,
    too_many: u64,
}

impl Inner {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{:026}", self.next_id).replace('0', "a")
    }

    fn now(&mut self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_ms = ms.max(self.last_ms + 1);
        self.last_ms
    }

    /// Sends an event to the connected client with the next `seq` (or skips it, when told to).
    fn broadcast(&mut self, event: &str, data: Value, channel: &str) {
        let seq = self.seq;
        self.seq += 1;
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if let Some((_, tx)) = &self.conn {
            let frame = json!({"event": event, "data": data, "broadcast": {"omit_users": null, "user_id": "", "channel_id": channel, "team_id": ""}, "seq": seq});
            let _ = tx.send(Some(frame.to_string()));
        }
    }

    fn post_event(&mut self, event: &str, post: &Post) {
        let object = post.object(&self.files).to_string();
        let channel = post.channel_id.clone();
        self.broadcast(event, json!({"channel_display_name": channel, "channel_name": channel, "channel_type": "O", "post": object, "sender_name": "", "team_id": ""}), &channel);
    }
}

/// The fake, serving on a loopback port until dropped.
pub struct FakeMattermost {
    inner: Arc<Mutex<Inner>>,
    port: u16,
    stop: CancellationToken,
}

impl Drop for FakeMattermost {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeMattermost {
    /// Starts the fake with the bot's token.
    pub async fn start(token: &str) -> Self {
        let (listener, port) = passerelle_testkit::loopback::listen().await;
        let mut users = HashMap::new();
        users.insert(BOT_USER.to_owned(), User::new(BOT_USER, "passerelle", ""));
        let inner = Arc::new(Mutex::new(Inner {
            token: token.into(),
            overrides: true,
            users,
            channels: BTreeMap::new(),
            posts: Vec::new(),
            files: HashMap::new(),
            next_id: 0,
            last_ms: 0,
            conn: None,
            connections: 0,
            seq: 0,
            skip: 0,
            requests: Vec::new(),
            rate: None,
            calls: Vec::new(),
            too_many: 0,
        }));
        let stop = CancellationToken::new();
        passerelle_testkit::loopback::serve(listener, web::router(inner.clone()), stop.clone());
        Self { inner, port, stop }
    }

    /// The server's address, for `url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a channel of `team` with the bot in it.
    pub fn add_channel(&self, id: &str, team: &str, name: &str) {
        lock(&self.inner).channels.insert(
            id.into(),
            Channel {
                team: team.into(),
                name: name.into(),
                bot_member: true,
            },
        );
    }

    /// Adds a person.
    pub fn add_user(&self, user: &User) {
        lock(&self.inner)
            .users
            .insert(user.id.clone(), user.clone());
    }

    /// Whether the server lets integrations override usernames and icons (default yes).
    pub fn set_overrides(&self, on: bool) {
        lock(&self.inner).overrides = on;
    }

    /// At most `n` calls per `per`, then 429s.
    pub fn set_rate_limit(&self, n: usize, per: Duration) {
        lock(&self.inner).rate = Some((n, per));
    }

    /// The next `n` events are not sent (their `seq` is used up), as for a slow client.
    pub fn skip_events(&self, n: u64) {
        lock(&self.inner).skip = n;
    }

    /// Closes the WebSocket.
    pub fn drop_connection(&self) {
        let mut i = lock(&self.inner);
        if let Some((_, tx)) = i.conn.take() {
            let _ = tx.send(None);
        }
    }

    /// Whether a client is connected.
    pub fn connected(&self) -> bool {
        lock(&self.inner).conn.is_some()
    }

    /// WebSocket connections made.
    pub fn connections(&self) -> u64 {
        lock(&self.inner).connections
    }

    /// 429s answered.
    pub fn too_many(&self) -> u64 {
        lock(&self.inner).too_many
    }

    fn add_post(&self, post: Post) -> String {
        let mut i = lock(&self.inner);
        let id = post.id.clone();
        i.post_event("posted", &post);
        i.posts.push(post);
        id
    }

    fn new_post(&self, channel: &str, user: &User, message: &str, root: &str, kind: &str) -> Post {
        let mut i = lock(&self.inner);
        i.users
            .entry(user.id.clone())
            .or_insert_with(|| user.clone());
        let id = i.id();
        let at = i.now();
        Post {
            id,
            channel_id: channel.into(),
            user_id: user.id.clone(),
            root_id: root.into(),
            message: message.into(),
            kind: kind.into(),
            props: json!({}),
            file_ids: Vec::new(),
            create_at: at,
            edit_at: 0,
            delete_at: 0,
            reactions: Vec::new(),
        }
    }

    /// `user` posts `message` in `channel`; its id.
    pub fn user_posts(&self, channel: &str, user: &User, message: &str) -> String {
        let p = self.new_post(channel, user, message, "", "");
        self.add_post(p)
    }

    /// `user` replies in the thread of `root`.
    pub fn user_replies(&self, channel: &str, user: &User, message: &str, root: &str) -> String {
        let p = self.new_post(channel, user, message, root, "");
        self.add_post(p)
    }

    /// `user` does `/me message`.
    pub fn user_me(&self, channel: &str, user: &User, message: &str) -> String {
        let p = self.new_post(channel, user, message, "", "me");
        self.add_post(p)
    }

    /// `user` posts a file.
    pub fn user_posts_file(&self, channel: &str, user: &User, name: &str, data: &[u8]) -> String {
        let mut p = self.new_post(channel, user, "", "", "");
        {
            let mut i = lock(&self.inner);
            let fid = i.id();
            i.files.insert(fid.clone(), (name.into(), data.to_vec()));
            p.file_ids.push(fid);
        }
        self.add_post(p)
    }

    /// `post` is edited to `message`.
    pub fn user_edits(&self, post: &str, message: &str) {
        let mut i = lock(&self.inner);
        let at = i.now();
        let Some(pos) = i.posts.iter().position(|p| p.id == post) else {
            return;
        };
        i.posts[pos].message = message.into();
        i.posts[pos].edit_at = at;
        let p = i.posts[pos].clone();
        i.post_event("post_edited", &p);
    }

    /// `post` is deleted.
    pub fn user_deletes(&self, post: &str) {
        let mut i = lock(&self.inner);
        let at = i.now();
        let Some(pos) = i.posts.iter().position(|p| p.id == post) else {
            return;
        };
        i.posts[pos].delete_at = at;
        let p = i.posts[pos].clone();
        i.post_event("post_deleted", &p);
    }

    /// `user` reacts to `post` with `name`.
    pub fn user_reacts(&self, post: &str, user: &User, name: &str) {
        let mut i = lock(&self.inner);
        let Some(pos) = i.posts.iter().position(|p| p.id == post) else {
            return;
        };
        i.posts[pos].reactions.push((name.into(), user.id.clone()));
        let channel = i.posts[pos].channel_id.clone();
        let at = i.now();
        let reaction =
            json!({"user_id": user.id, "post_id": post, "emoji_name": name, "create_at": at})
                .to_string();
        i.broadcast("reaction_added", json!({"reaction": reaction}), &channel);
    }

    /// The posts of `channel`, oldest first, deleted ones left out.
    pub fn posts_in(&self, channel: &str) -> Vec<Post> {
        lock(&self.inner)
            .posts
            .iter()
            .filter(|p| p.channel_id == channel && p.delete_at == 0)
            .cloned()
            .collect()
    }

    /// The REST calls made: method, path (with query), JSON body, status.
    pub fn requests(&self) -> Vec<(String, String, Value, u16)> {
        lock(&self.inner).requests.clone()
    }

    /// A file's bytes, by id.
    pub fn file(&self, id: &str) -> Option<(String, Vec<u8>)> {
        lock(&self.inner).files.get(id).cloned()
    }
}

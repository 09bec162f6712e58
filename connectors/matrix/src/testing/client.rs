//! A plain Matrix client-server API user for tests: raw HTTP with reqwest, so tests see exactly what
//! a homeserver holds, independent of the connector under test.

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One timeline event a [`MatrixUser`] saw, with its room.
#[derive(Clone, Debug)]
pub struct SeenEvent {
    /// The room id.
    pub room: String,
    /// The whole event as the homeserver sent it.
    pub event: Value,
}

impl SeenEvent {
    /// `event.type`.
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or("")
    }
    /// `event.sender`.
    pub fn sender(&self) -> &str {
        self.event["sender"].as_str().unwrap_or("")
    }
    /// `event.event_id`.
    pub fn id(&self) -> &str {
        self.event["event_id"].as_str().unwrap_or("")
    }
    /// `event.content.body`, for messages.
    pub fn body(&self) -> &str {
        self.event["content"]["body"].as_str().unwrap_or("")
    }
}

/// A logged-in user talking to the homeserver over the plain client-server API.
pub struct MatrixUser {
    http: reqwest::Client,
    base: String,
    token: String,
    /// The full user id, `@name:server`.
    pub user_id: String,
    since: Option<String>,
    pending: VecDeque<SeenEvent>,
    txn: u64,
    /// Timeline events per room per sync; the homeserver's default (10) when `None`.
    timeline_limit: Option<u32>,
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl MatrixUser {
    /// Logs in with a password.
    pub async fn login(homeserver: &str, name: &str, password: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let answer: Value = http
            .post(format!("{homeserver}/_matrix/client/v3/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": name},
                "password": password,
            }))
            .send()
            .await
            .expect("login request")
            .json()
            .await
            .expect("login answer");
        let token = answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login of {name} failed: {answer}"))
            .to_owned();
        let user_id = answer["user_id"].as_str().unwrap_or_default().to_owned();
        let mut user = Self {
            http,
            base: homeserver.trim_end_matches('/').to_owned(),
            token,
            user_id,
            since: None,
            pending: VecDeque::new(),
            txn: 0,
            timeline_limit: None,
        };
        // Start the timeline from now: what happened before login is not "seen".
        user.sync_once(0).await;
        user.pending.clear();
        user
    }

    /// This login's access token (for tests that hand it to a connector).
    pub fn access_token(&self) -> &str {
        &self.token
    }

    /// Sends a request and returns the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("homeserver request");
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, value)
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert!(status == 200, "{path} answered {status}: {value}");
        value
    }

    /// Creates a room with these extra `createRoom` fields (e.g. `{"invite": [...]}`), returns its id.
    pub async fn create_room(&self, extra: Value) -> String {
        let mut body = json!({"preset": "private_chat"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let v = self
            .ok(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(body),
            )
            .await;
        v["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Invites `user` to `room`.
    pub async fn invite(&self, room: &str, user: &str) {
        self.ok(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
            Some(json!({"user_id": user})),
        )
        .await;
    }

    /// Joins a room by id or alias; returns the room id.
    pub async fn join(&self, room: &str) -> String {
        let v = self
            .ok(
                reqwest::Method::POST,
                &format!("/_matrix/client/v3/join/{}", enc(room)),
                Some(json!({})),
            )
            .await;
        v["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Knocks on a room by id or alias (asks to be let in); returns the room id.
    pub async fn knock(&self, room: &str) -> String {
        let v = self
            .ok(
                reqwest::Method::POST,
                &format!("/_matrix/client/v3/knock/{}", enc(room)),
                Some(json!({})),
            )
            .await;
        v["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Sends a message-like event; returns its event id.
    pub async fn send(&mut self, room: &str, kind: &str, content: Value) -> String {
        self.txn += 1;
        let v = self
            .ok(
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/{}/t{}-{}",
                    enc(room),
                    enc(kind),
                    std::process::id(),
                    self.txn
                ),
                Some(content),
            )
            .await;
        v["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Says `text` (`m.text`).
    pub async fn say(&mut self, room: &str, text: &str) -> String {
        self.send(
            room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": text}),
        )
        .await
    }

    /// Replaces `event`'s text with `text` (`m.replace`, with the `* ` fallback clients send);
    /// returns the edit's event id.
    pub async fn edit(&mut self, room: &str, event: &str, text: &str) -> String {
        self.send(
            room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": format!("* {text}"),
            "m.new_content": {"msgtype": "m.text", "body": text},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event}}),
        )
        .await
    }

    /// Sends one to-device message of type `kind` to every device of `user`.
    pub async fn send_to_device(&mut self, kind: &str, user: &str, content: Value) {
        self.txn += 1;
        self.ok(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/sendToDevice/{}/d{}-{}",
                enc(kind),
                std::process::id(),
                self.txn
            ),
            Some(json!({"messages": {user: {"*": content}}})),
        )
        .await;
    }

    /// Redacts an event.
    pub async fn redact(&mut self, room: &str, event: &str) -> String {
        self.txn += 1;
        let v = self
            .ok(
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{}/redact/{}/r{}-{}",
                    enc(room),
                    enc(event),
                    std::process::id(),
                    self.txn
                ),
                Some(json!({})),
            )
            .await;
        v["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Sets a state event.
    pub async fn set_state(&self, room: &str, kind: &str, key: &str, content: Value) {
        self.ok(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/{}/{}",
                enc(room),
                enc(kind),
                enc(key)
            ),
            Some(content),
        )
        .await;
    }

    /// Reads a state event's content, if set.
    pub async fn state(&self, room: &str, kind: &str, key: &str) -> Option<Value> {
        let (status, v) = self
            .call(
                reqwest::Method::GET,
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/{}/{}",
                    enc(room),
                    enc(kind),
                    enc(key)
                ),
                None,
            )
            .await;
        (status == 200).then_some(v)
    }

    /// A user's global profile.
    pub async fn profile(&self, user: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/profile/{}", enc(user)),
            None,
        )
        .await
        .1
    }

    /// Sets this user's display name.
    pub async fn set_display_name(&self, name: &str) {
        self.ok(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&self.user_id)
            ),
            Some(json!({"displayname": name})),
        )
        .await;
    }

    /// The joined members of a room.
    pub async fn members(&self, room: &str) -> Vec<String> {
        let v = self
            .ok(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room)),
                None,
            )
            .await;
        v["joined"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Uploads a file to the content repository; returns its `mxc://` URI.
    pub async fn upload(&self, data: Vec<u8>, mime: &str) -> String {
        let resp = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .bearer_auth(&self.token)
            .header("content-type", mime)
            .body(data)
            .send()
            .await
            .expect("homeserver request");
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        v["content_uri"]
            .as_str()
            .unwrap_or_else(|| panic!("upload failed: {v}"))
            .to_owned()
    }

    /// Downloads an `mxc://server/id` file through authenticated media: status and bytes.
    pub async fn download(&self, mxc: &str) -> (u16, Vec<u8>) {
        let rest = mxc.strip_prefix("mxc://").unwrap_or(mxc);
        let resp = self
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{rest}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("homeserver request");
        let status = resp.status().as_u16();
        (
            status,
            resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        )
    }

    /// Fetches an event by id.
    pub async fn event(&self, room: &str, event: &str) -> Value {
        self.ok(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(room),
                enc(event)
            ),
            None,
        )
        .await
    }

    async fn sync_once(&mut self, timeout_ms: u64) {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(limit) = self.timeline_limit {
            let filter = format!(r#"{{"room":{{"timeline":{{"limit":{limit}}}}}}}"#);
            path.push_str(&format!("&filter={}", enc(&filter)));
        }
        if let Some(since) = &self.since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        let (status, v) = self.call(reqwest::Method::GET, &path, None).await;
        if status != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
        if let Some(next) = v["next_batch"].as_str() {
            self.since = Some(next.to_owned());
        }
        if let Some(joined) = v["rooms"]["join"].as_object() {
            for (room, update) in joined {
                if let Some(events) = update["timeline"]["events"].as_array() {
                    for event in events {
                        self.pending.push_back(SeenEvent {
                            room: room.clone(),
                            event: event.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The next timeline event, in any room, that `accept` takes, within `timeout`. Events before
    /// it are consumed.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        mut accept: impl FnMut(&SeenEvent) -> bool,
    ) -> Option<SeenEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.pending.pop_front() {
                if accept(&e) {
                    return Some(e);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sync_once(left.as_millis().min(5000) as u64).await;
        }
    }

    /// Every timeline event seen within `timeout` (all of them, after waiting the whole time).
    pub async fn drain(&mut self, timeout: Duration) -> Vec<SeenEvent> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            all.extend(self.pending.drain(..));
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return all;
            }
            self.sync_once(left.as_millis().min(2000) as u64).await;
        }
    }
}

impl MatrixUser {
    /// Asks for up to `limit` timeline events per room in each sync, so that a burst between two
    /// syncs is seen whole (the homeserver's default is 10, and it skips the rest).
    pub fn set_timeline_limit(&mut self, limit: u32) {
        self.timeline_limit = Some(limit);
    }

    /// Waits until `user` is joined to `room` (panics after `timeout`).
    pub async fn wait_member(&self, room: &str, user: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.members(room).await.iter().any(|m| m == user) {
            assert!(Instant::now() < deadline, "{user} never joined {room}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A Matrix user as the conformance suite's peer, in one room, seeing what the connector sends
/// there: messages from `bridge` (bot mode) or from any user whose id starts with it (ghosts).
pub struct RoomPeer {
    /// The user.
    pub user: MatrixUser,
    /// The room.
    pub room: String,
    /// The bridge's user id, or the ghosts' common prefix (`@passerelle_`).
    pub bridge: String,
    /// The port the connector's endpoints are served on (appservice mode).
    pub http_port: Option<u16>,
}

impl passerelle_testkit::conformance::Peer for RoomPeer {
    fn room(&self) -> passerelle_sdk::RoomId {
        self.room.as_str().into()
    }
    fn unknown_room(&self) -> passerelle_sdk::RoomId {
        "!not-served:hs.passerelle.test".into()
    }
    fn user(&self) -> passerelle_sdk::UserId {
        self.user.user_id.as_str().into()
    }
    fn http_port(&self) -> Option<u16> {
        self.http_port
    }
    fn say<'a>(&'a mut self, text: &'a str) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let room = self.room.clone();
            self.user.say(&room, text).await;
        })
    }
    fn act<'a>(&'a mut self, text: &'a str) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let room = self.room.clone();
            self.user
                .send(
                    &room,
                    "m.room.message",
                    json!({"msgtype": "m.emote", "body": text}),
                )
                .await;
        })
    }
    fn collect(
        &mut self,
        min_bytes: usize,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'_, Vec<passerelle_testkit::conformance::Seen>> {
        Box::pin(async move {
            let mut seen = Vec::new();
            let mut bytes = 0;
            let deadline = Instant::now() + timeout;
            while bytes < min_bytes {
                let left = deadline.saturating_duration_since(Instant::now());
                let (room, bridge) = (self.room.clone(), self.bridge.clone());
                let Some(e) = self
                    .user
                    .next_matching(left, |e| {
                        e.room == room
                            && e.sender().starts_with(&bridge)
                            && e.kind() == "m.room.message"
                    })
                    .await
                else {
                    break;
                };
                bytes += e.body().len();
                seen.push(passerelle_testkit::conformance::Seen {
                    text: e.body().to_owned(),
                    emote: e.event["content"]["msgtype"] == "m.emote",
                });
            }
            seen
        })
    }
}

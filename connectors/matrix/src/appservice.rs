//! Appservice mode: the daemon serves the Application Service API (transactions, user queries,
//! ping) on its HTTP listener, and remote people are ghost users in the appservice's exclusive
//! namespace, sending through identity assertion (`?user_id=`).
//!
//! Each transaction is acknowledged only after every event in it was handed to the daemon (which
//! answers once it has stored it). The last acknowledged transaction id is kept, so a transaction
//! the homeserver sends again is answered without being bridged twice; should the daemon die
//! between storing and remembering, the daemon recognises the events again by their ids.

use crate::admin;
use crate::bot::{self, BotSender, Syncer};
use crate::config::{AppserviceSettings, Resolved};
use crate::errors::{self, Meaning};
use crate::ghost;
use crate::media::{self, MediaLinks};
use crate::rooms::RoomMap;
use crate::translate::{self, Inbound, Outgoing};
use futures::future::BoxFuture;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::ruma::OwnedUserId;
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::{Client, SessionMeta, SessionTokens};
use passerelle_sdk::http::{HttpHandler, Request, Response, json_response};
use passerelle_sdk::{
    ConnectionState, ConnectorError, ConnectorIo, Emitter, Event, EventKind, MembershipChange,
    Outbound, Receipt, RemoteMessageId, RoomId, SendError, StateHandle,
};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

const LAST_TXN: &str = "last_txn";

/// An appservice-mode connector, built and ready to run.
pub struct Appservice {
    pub(crate) cfg: Resolved,
    pub(crate) asv: AppserviceSettings,
    pub(crate) data_dir: std::path::PathBuf,
}

/// The connector state key of the bot device's sync token.
const BOT_SYNC_TOKEN: &str = "bot_sync_token";

/// Percent-encodes one path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded path segment.
pub fn dec(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A homeserver error: status and `errcode`.
#[derive(Debug)]
pub struct HsError {
    status: u16,
    errcode: String,
    retry_after: Option<Duration>,
}

impl HsError {
    fn meaning(&self) -> Meaning {
        if self.status == 0 {
            return Meaning::Transient;
        }
        match (self.status, self.errcode.as_str()) {
            (_, "M_LIMIT_EXCEEDED") | (429, _) => {
                Meaning::RateLimited(self.retry_after.unwrap_or(Duration::from_secs(5)))
            }
            (_, "M_UNKNOWN_TOKEN") | (_, "M_MISSING_TOKEN") => Meaning::BadToken,
            (404, _) | (_, "M_NOT_FOUND") => Meaning::NotFound,
            (s, _) if s >= 500 => Meaning::Transient,
            (_, code) if !code.is_empty() => Meaning::Refused(code.to_owned()),
            (s, _) => Meaning::Refused(format!("status {s}")),
        }
    }
}

/// The client-server API, spoken with the appservice token.
#[derive(Clone)]
struct Hs {
    http: reqwest::Client,
    base: String,
    token: passerelle_sdk::Secret,
}

impl Hs {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        as_user: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, HsError> {
        let mut url = format!("{}{path}", self.base);
        if let Some(user) = as_user {
            url.push(if path.contains('?') { '&' } else { '?' });
            url.push_str("user_id=");
            url.push_str(&enc(user));
        }
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|_| HsError {
            status: 0,
            errcode: String::new(),
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        Err(HsError {
            status,
            errcode: value["errcode"].as_str().unwrap_or_default().to_owned(),
            retry_after: value["retry_after_ms"].as_u64().map(Duration::from_millis),
        })
    }
}

/// Ids and names of this appservice.
#[derive(Clone)]
struct Names {
    server: String,
    bot: String,
    sender: String,
    ghost_prefix: String,
}

impl Names {
    /// Whether a user id is ours (the bot, the sender user or a ghost): its events are echoes.
    fn is_ours(&self, user_id: &str) -> bool {
        user_id == self.bot
            || user_id == self.sender
            || ghost::local_of(user_id, &self.server)
                .is_some_and(|l| l.starts_with(&format!("{}_", self.ghost_prefix)))
    }

    fn ghost(&self, account: &str, user: &str) -> (String, String) {
        let local = ghost::localpart(&self.ghost_prefix, account, user);
        let id = format!("@{local}:{}", self.server);
        (local, id)
    }
}

/// The sender user's localpart (the registration's `sender_localpart`), distinct from the bot's
/// own user so that the bot can later run an encrypting device of its own.
pub fn sender_localpart(asv: &AppserviceSettings) -> String {
    format!("{}-sender", asv.bot_localpart)
}

/// The registration file for the homeserver, in YAML. `url` is where the homeserver reaches the
/// daemon's HTTP listener for this account.
pub fn registration_yaml(asv: &AppserviceSettings, url: &str) -> String {
    // Each value is written as a JSON string, which YAML reads as a double-quoted scalar: the
    // one backslash of a regex escape is doubled there, and YAML takes it back.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let server = regex_escape(&asv.server_name);
    let anchored = |local: String| q(&format!("^{local}:{server}$"));
    format!(
        "# Generated by passerelle matrix-registration. Give this file to the homeserver\n\
         # (Synapse: app_service_config_files) and restart it. It holds both tokens: keep it\n\
         # readable by the homeserver only.\n\
         id: {id}\n\
         url: {url}\n\
         as_token: {as_token}\n\
         hs_token: {hs_token}\n\
         sender_localpart: {sender}\n\
         rate_limited: false\n\
         receive_ephemeral: true\n\
         namespaces:\n  \
           users:\n    \
             - exclusive: true\n      regex: {ghosts}\n    \
             - exclusive: true\n      regex: {bot}\n  \
           aliases:\n    \
             - exclusive: true\n      regex: {aliases}\n  \
           rooms: []\n",
        id = q(&asv.registration_id),
        url = q(url),
        as_token = q(asv.as_token.expose()),
        hs_token = q(asv.hs_token.expose()),
        sender = q(&sender_localpart(asv)),
        ghosts = anchored(format!("@{}_.+", regex_escape(&asv.ghost_prefix))),
        bot = anchored(format!("@{}", regex_escape(&asv.bot_localpart))),
        aliases = anchored(format!("#{}_.+", regex_escape(&asv.alias_prefix))),
    )
}

/// `s` as a regular expression that matches exactly `s`: every character with a meaning in
/// Python's `re` (Synapse) or Rust's `regex` gets one backslash. Server names have dots, and may
/// have a port or an IPv6 address in brackets.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A transaction's body as far as it is parsed at once: its events stay raw.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    events: Vec<Box<serde_json::value::RawValue>>,
}

/// What the transaction endpoint shares with the connector's loop.
struct Shared {
    hs: Hs,
    names: Names,
    hs_token: passerelle_sdk::Secret,
    emitter: Emitter,
    state: StateHandle,
    links: MediaLinks,
    admins: Vec<String>,
    /// Matrix room id → configured room name.
    rooms: std::sync::RwLock<HashMap<String, RoomId>>,
    /// Configured (or portal) room name → Matrix room id.
    ids: std::sync::RwLock<HashMap<RoomId, String>>,
    /// Asks the daemon for portal links.
    portal_links: passerelle_sdk::Links,
    /// Accounts whose rooms Matrix users may open through an alias.
    portal_accounts: Vec<String>,
    /// The servers whose users the bot lets into portal rooms when they knock: its own and
    /// `portal_servers`.
    portal_servers: Vec<String>,
    alias_prefix: String,
    /// Serialises portal creation.
    portal_lock: Mutex<()>,
    /// Serialises transactions (the homeserver sends one at a time; this makes sure of it).
    txn_lock: Mutex<()>,
    /// Display names of Matrix members, by (room, user).
    names_cache: Mutex<HashMap<(String, String), Option<String>>>,
    /// What the daemon runs, for the admins' `status` and `links`.
    view: passerelle_sdk::DaemonView,
    /// The largest attachment uploaded, and whether private addresses may be fetched.
    max_upload: u64,
    fetch_private: bool,
}

/// The state key marking a Matrix room as a portal the bot made.
fn portal_room_key(room_id: &str) -> String {
    format!("portal_room\u{1f}{room_id}")
}

fn admin_room_key(admin: &str) -> String {
    format!("admin_room\u{1f}{admin}")
}

struct Endpoint(Arc<Shared>);

/// The largest transaction the homeserver may send (Synapse sends at most 100 events and 100
/// ephemeral ones, each at most 64 KiB).
const MAX_TRANSACTION: usize = 16 * 1024 * 1024;

impl HttpHandler for Endpoint {
    /// File links are for anyone holding one (their signature is the check, once the path is
    /// read); everything else needs the homeserver's `hs_token`, checked before the body is read.
    fn admit(&self, head: &http::request::Parts) -> passerelle_sdk::Admission {
        use passerelle_sdk::Admission;
        if head.uri.path().starts_with("/media/") && self.0.links.public() {
            return media::admit(head);
        }
        match self.0.authorized(&head.headers, &head.uri) {
            None => Admission::Answer(matrix_error(401, "M_UNAUTHORIZED", "missing token")),
            Some(false) => {
                warn!("appservice request with a wrong hs_token refused");
                Admission::Answer(matrix_error(403, "M_FORBIDDEN", "bad token"))
            }
            Some(true) if head.method == http::Method::PUT => Admission::read(MAX_TRANSACTION),
            // Queries and pings: small bodies, if any.
            Some(true) => Admission::read(64 * 1024),
        }
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        let shared = self.0.clone();
        Box::pin(async move { shared.handle(request).await })
    }
}

fn matrix_error(status: u16, errcode: &str, error: &str) -> Response {
    json_response(status, &json!({"errcode": errcode, "error": error}))
}

impl Shared {
    fn authorized(&self, headers: &http::HeaderMap, uri: &http::Uri) -> Option<bool> {
        let header = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .and_then(dec)
        });
        let token = header.map(str::to_owned).or(query)?;
        Some(self.hs_token.matches(&token))
    }

    async fn handle(&self, request: Request) -> Response {
        // File links are opened by anyone who has one; their signature is the check.
        if request.uri().path().starts_with("/media/") && self.links.public() {
            let path = request.uri().path().to_owned();
            return media::serve(
                &self.links,
                &path,
                &self.hs.base,
                self.hs.token.expose(),
                Some(&self.names.bot),
                self.max_upload,
            )
            .await
            .unwrap_or_else(|| matrix_error(404, "M_NOT_FOUND", "no such file"));
        }
        // Checked again here (admit already did): a handler is never called unchecked.
        match self.authorized(request.headers(), request.uri()) {
            None => return matrix_error(401, "M_UNAUTHORIZED", "missing token"),
            Some(false) => {
                warn!("appservice request with a wrong hs_token refused");
                return matrix_error(403, "M_FORBIDDEN", "bad token");
            }
            Some(true) => {}
        }
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("PUT", ["_matrix", "app", "v1", "transactions", txn]) => {
                let txn = dec(txn).unwrap_or_default();
                self.transaction(&txn, request.body()).await
            }
            ("GET", ["_matrix", "app", "v1", "users", user]) => {
                let user = dec(user).unwrap_or_default();
                self.user_query(&user).await
            }
            ("GET", ["_matrix", "app", "v1", "rooms", alias]) => {
                let alias = dec(alias).unwrap_or_default();
                self.alias_query(&alias).await
            }
            ("POST", ["_matrix", "app", "v1", "ping"]) => json_response(200, &json!({})),
            _ => matrix_error(404, "M_UNRECOGNIZED", "unknown endpoint"),
        }
    }

    async fn user_query(&self, user: &str) -> Response {
        if !self.names.is_ours(user) || user == self.names.sender {
            return matrix_error(404, "M_NOT_FOUND", "not ours");
        }
        let Some(local) = ghost::local_of(user, &self.names.server) else {
            return matrix_error(404, "M_NOT_FOUND", "not ours");
        };
        match register(&self.hs, local).await {
            Ok(()) => json_response(200, &json!({})),
            Err(_) => matrix_error(500, "M_UNKNOWN", "could not create the user"),
        }
    }

    async fn transaction(&self, txn: &str, body: &[u8]) -> Response {
        let _one_at_a_time = self.txn_lock.lock().await;
        let last = self
            .state
            .get(LAST_TXN)
            .await
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        if last.as_deref() == Some(txn) {
            debug!(txn, "transaction seen before; acknowledged again");
            return json_response(200, &json!({}));
        }
        // Only the envelope is parsed here; each event is read on its own, so that one event
        // that can't be read (nested past the parser's depth limit, say) is skipped instead of
        // refusing the transaction, which the homeserver would send again for ever with every
        // later one queued behind it. Skipping a raw event costs no recursion at any depth.
        let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
            warn!(txn, bytes = body.len(), "malformed transaction refused");
            return matrix_error(400, "M_NOT_JSON", "body is not JSON");
        };
        let events = envelope.events;
        for raw in &events {
            let Ok(ev) = serde_json::from_str::<Value>(raw.get()) else {
                passerelle_sdk::drops::inbound(self.emitter.account(), "matrix_event_unreadable");
                warn!(
                    txn,
                    bytes = raw.get().len(),
                    "an event of the transaction could not be read; skipped"
                );
                continue;
            };
            if let Err(e) = self.event(&ev).await {
                // Not acknowledged: the homeserver sends the transaction again later.
                warn!(txn, error = %e, "transaction not stored; the homeserver will retry");
                return matrix_error(503, "M_UNKNOWN", "try again");
            }
        }
        if let Err(e) = self.state.put(LAST_TXN, txn.as_bytes().to_vec()).await {
            warn!(txn, error = %e, "could not remember the transaction id");
        }
        debug!(txn, events = events.len(), "transaction stored");
        json_response(200, &json!({}))
    }

    async fn event(&self, ev: &Value) -> Result<(), passerelle_sdk::EmitError> {
        let sender = ev["sender"].as_str().unwrap_or_default();
        let room_id = ev["room_id"].as_str().unwrap_or_default();
        if ev["type"] == "m.room.member"
            && let Some(subject) = ev["state_key"].as_str()
        {
            // Keep the name cache fresh.
            let name = ev["content"]["displayname"].as_str().map(str::to_owned);
            self.names_cache
                .lock()
                .await
                .insert((room_id.to_owned(), subject.to_owned()), name);
            if ev["content"]["membership"] == "knock" && subject == sender {
                self.knocked(room_id, subject).await;
            }
            if subject == self.names.bot && ev["content"]["membership"] == "invite" {
                let linked = self.linked_name(room_id).is_some();
                if linked || self.admins.iter().any(|a| a == sender) {
                    let path = format!("/_matrix/client/v3/join/{}", enc(room_id));
                    match self.as_bot(&path, json!({})).await {
                        Ok(_) => info!(room = room_id, "joined on invite"),
                        Err(e) => warn!(
                            room = room_id,
                            status = e.status,
                            "could not join on invite"
                        ),
                    }
                }
            }
        }
        if self.names.is_ours(sender) {
            return Ok(());
        }
        let Some(room) = self.linked_name(room_id) else {
            if ev["type"] == "m.room.message" && self.admins.iter().any(|a| a == sender) {
                self.admin_command(room_id, sender, ev).await;
            }
            return Ok(());
        };
        let display = self.display_name(room_id, sender).await;
        match translate::inbound(ev, &room, display, &self.links) {
            Inbound::Event(event) => {
                let kind = event.kind.name();
                let d = self.emitter.emit(*event).await?;
                debug!(room = room_id, kind, disposition = ?d, "emitted");
            }
            Inbound::Skip(why) => debug!(room = room_id, why, "not bridged"),
        }
        Ok(())
    }

    /// The configured (or portal) name of a Matrix room, when it is linked.
    fn linked_name(&self, room_id: &str) -> Option<RoomId> {
        self.rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room_id)
            .cloned()
    }

    /// The Matrix room id of a configured (or portal) name.
    fn room_id(&self, name: &RoomId) -> Option<String> {
        self.ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// POSTs `body` to `path` as the bot.
    async fn as_bot(&self, path: &str, body: Value) -> Result<Value, HsError> {
        self.hs
            .call(
                reqwest::Method::POST,
                path,
                Some(&self.names.bot),
                Some(&body),
            )
            .await
    }

    /// `user` knocked on `room_id`: when it is a portal the bot made and the user is on a server
    /// it trusts, the bot invites them; otherwise the knock waits (logged, without the id).
    async fn knocked(&self, room_id: &str, user: &str) {
        let portal = matches!(self.state.get(&portal_room_key(room_id)).await, Ok(Some(_)));
        if !portal {
            return;
        }
        let server = user.split_once(':').map(|(_, s)| s).unwrap_or_default();
        if !self.portal_servers.iter().any(|s| s == server) {
            info!(
                room = room_id,
                "a knock from a server not in portal_servers; not let in"
            );
            return;
        }
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id));
        match self.as_bot(&path, json!({"user_id": user})).await {
            Ok(_) => info!(
                room = room_id,
                "a knock on a portal answered with an invite"
            ),
            Err(e) => warn!(
                room = room_id,
                status = e.status,
                "could not invite after a knock"
            ),
        }
    }

    /// `GET /_matrix/app/v1/rooms/{alias}`: a Matrix user asked for
    /// `#<alias_prefix>_<account>_<room>:<server>`. When that account may be opened this way and
    /// serves that room, the bot makes an invite-only room (join rule `knock`) with the alias and
    /// the daemon links it; the user then knocks and is invited (see [`Self::knocked`]).
    async fn alias_query(&self, alias: &str) -> Response {
        let not_found = || matrix_error(404, "M_NOT_FOUND", "no such portal");
        let Some((account, room)) =
            ghost::parse_alias(alias, &self.alias_prefix, &self.names.server)
        else {
            return not_found();
        };
        if !self.portal_accounts.contains(&account) {
            debug!("alias for an account that can't be opened from Matrix");
            return not_found();
        }
        let _one_at_a_time = self.portal_lock.lock().await;
        let local = alias
            .trim_start_matches('#')
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        // Invite-only: whoever resolves the alias may knock, and the bot invites the users of
        // the servers it trusts (`portal_servers`); no guest, no room directory entry.
        let body = json!({
            "room_alias_name": local,
            "name": room,
            "topic": format!("Bridged with {room} ({account}) by passerelle"),
            "preset": "private_chat",
            "visibility": "private",
            "initial_state": [
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}},
                {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
            ],
        });
        let created = self
            .hs
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&self.names.bot),
                Some(&body),
            )
            .await;
        let room_id = match created {
            Ok(v) => match v["room_id"].as_str() {
                Some(id) => id.to_owned(),
                None => return matrix_error(500, "M_UNKNOWN", "no room"),
            },
            Err(e) => {
                warn!(status = e.status, "could not create a portal room");
                return matrix_error(500, "M_UNKNOWN", "could not create the room");
            }
        };
        let request = passerelle_sdk::PortalRequest {
            name: format!("portal {alias}"),
            room: RoomId::new(room_id.as_str()),
            remote: (account.as_str().into(), RoomId::new(room.as_str())),
        };
        if let Err(why) = self.portal_links.open(request).await {
            warn!(reason = %why, "the daemon refused a portal");
            let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id));
            let _ = self
                .hs
                .call(
                    reqwest::Method::POST,
                    &leave,
                    Some(&self.names.bot),
                    Some(&json!({})),
                )
                .await;
            return not_found();
        }
        if let Err(e) = self
            .state
            .put(&portal_room_key(&room_id), alias.as_bytes().to_vec())
            .await
        {
            warn!(error = %e, "could not remember the portal room; knocks will not be answered");
        }
        self.rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room_id.clone(), RoomId::new(room_id.as_str()));
        self.ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(RoomId::new(room_id.as_str()), room_id.clone());
        info!(room = %room_id, "portal room opened");
        json_response(200, &json!({}))
    }

    async fn admin_command(&self, room_id: &str, admin: &str, ev: &Value) {
        // Only in a direct chat: the bot and this admin, nobody else (the answers name rooms,
        // accounts and people's numbers).
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room_id));
        let members = self
            .hs
            .call(reqwest::Method::GET, &path, Some(&self.names.bot), None)
            .await
            .ok()
            .and_then(|v| {
                v["joined"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>())
            })
            .unwrap_or_default();
        if !admin::is_direct_chat(&members, &self.names.bot, admin) {
            debug!(
                room = room_id,
                "an admin's message outside a direct chat with the bot; not answered"
            );
            return;
        }
        let _ = self
            .state
            .put(&admin_room_key(admin), room_id.as_bytes().to_vec())
            .await;
        let Some(text) = ev["content"]["body"]
            .as_str()
            .and_then(|b| admin::answer(b, &self.view))
        else {
            return;
        };
        self.notice(room_id, &text).await;
    }

    /// Says `text` as the bot in `room` (an `m.notice`).
    async fn notice(&self, room: &str, text: &str) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            enc(room),
            enc(&format!("pss.notice.{}", uuid::Uuid::now_v7()))
        );
        let body = json!({"msgtype": "m.notice", "body": text});
        if let Err(e) = self
            .hs
            .call(
                reqwest::Method::PUT,
                &path,
                Some(&self.names.bot),
                Some(&body),
            )
            .await
        {
            warn!(status = e.status, "could not send a notice to an admin");
        }
    }

    /// Tells every admin `text` in their management room (a direct chat is opened when none is
    /// known).
    async fn notify_admins(&self, text: &str) {
        for admin in &self.admins {
            let known = self
                .state
                .get(&admin_room_key(admin))
                .await
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok());
            let room = match known {
                Some(r) => r,
                None => {
                    let body = json!({"invite": [admin], "is_direct": true,
                        "preset": "trusted_private_chat"});
                    match self
                        .hs
                        .call(
                            reqwest::Method::POST,
                            "/_matrix/client/v3/createRoom",
                            Some(&self.names.bot),
                            Some(&body),
                        )
                        .await
                    {
                        Ok(v) => {
                            let Some(id) = v["room_id"].as_str() else {
                                continue;
                            };
                            let _ = self
                                .state
                                .put(&admin_room_key(admin), id.as_bytes().to_vec())
                                .await;
                            id.to_owned()
                        }
                        Err(e) => {
                            warn!(
                                status = e.status,
                                "could not open a direct chat with an admin"
                            );
                            continue;
                        }
                    }
                }
            };
            self.notice(&room, text).await;
        }
    }

    async fn display_name(&self, room: &str, user: &str) -> Option<String> {
        let key = (room.to_owned(), user.to_owned());
        if let Some(name) = self.names_cache.lock().await.get(&key) {
            return name.clone();
        }
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(room),
            enc(user)
        );
        let name = self
            .hs
            .call(reqwest::Method::GET, &path, Some(&self.names.bot), None)
            .await
            .ok()
            .and_then(|v| v["displayname"].as_str().map(str::to_owned));
        self.names_cache.lock().await.insert(key, name.clone());
        name
    }
}

impl Hs {
    /// [`Hs::call`] for a send: errors become the SDK's send errors.
    async fn act(
        &self,
        method: reqwest::Method,
        path: &str,
        as_user: &str,
        body: &Value,
    ) -> Result<Value, SendError> {
        self.call(method, path, Some(as_user), Some(body))
            .await
            .map_err(|e| errors::send_error(e.meaning()))
    }

    /// Uploads a file as `user`; returns its `mxc://` URI.
    async fn upload(
        &self,
        path: &str,
        user: &str,
        mime: &str,
        data: Vec<u8>,
    ) -> Result<String, HsError> {
        let url = format!("{}{path}&user_id={}", self.base, enc(user));
        let transient = || HsError {
            status: 0,
            errcode: String::new(),
            retry_after: None,
        };
        let resp = self
            .http
            .post(url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, mime)
            .body(data)
            .send()
            .await
            .map_err(|_| transient())?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        match v["content_uri"].as_str() {
            Some(uri) if (200..300).contains(&status) => Ok(uri.to_owned()),
            _ => Err(HsError {
                status,
                errcode: v["errcode"].as_str().unwrap_or_default().to_owned(),
                retry_after: None,
            }),
        }
    }
}

/// Registers a user in our namespace; one that exists already is fine.
async fn register(hs: &Hs, local: &str) -> Result<(), HsError> {
    let body = json!({"type": "m.login.application_service", "username": local,
        "inhibit_login": true});
    match hs
        .call(
            reqwest::Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.errcode == "M_USER_IN_USE" => Ok(()),
        Err(e) => Err(e),
    }
}

/// The connector's side: ghosts and sends.
struct Sender {
    shared: Arc<Shared>,
    /// The bot's own device (with `encryption`): sends into encrypted rooms.
    encrypted: Option<BotSender>,
    /// Configured room name → Matrix room id.

    /// Ghosts registered, with the display name they were given.
    ghosts: HashMap<String, Option<String>>,
    /// The remote avatar each ghost was given.
    avatars: HashMap<String, String>,
    /// (ghost, room) pairs known to be joined.
    joined: HashSet<(String, String)>,
}

fn reaction_key(room: &str, target: &str, key: &str, ghost: &str) -> String {
    format!("reaction\u{1f}{room}\u{1f}{target}\u{1f}{key}\u{1f}{ghost}")
}

impl Sender {
    fn hs(&self) -> &Hs {
        &self.shared.hs
    }

    async fn ensure_ghost(&mut self, out: &Outbound) -> Result<String, SendError> {
        let (local, id) = self
            .shared
            .names
            .ghost(out.origin.as_str(), out.event.sender.id.as_str());
        let name = out.event.sender.name().to_owned();
        let known = self.ghosts.get(&id).cloned();
        if known.is_none() {
            register(self.hs(), &local)
                .await
                .map_err(|e| errors::send_error(e.meaning()))?;
        }
        if known.flatten().as_deref() != Some(name.as_str()) {
            let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&id));
            self.hs()
                .act(
                    reqwest::Method::PUT,
                    &path,
                    &id,
                    &json!({"displayname": name}),
                )
                .await?;
        }
        self.ghosts.insert(id.clone(), Some(name));
        if let Some(avatar) = out.event.sender.avatar_url.as_deref()
            && self.avatars.get(&id).map(String::as_str) != Some(avatar)
        {
            self.sync_avatar(&id, avatar).await;
            self.avatars.insert(id.clone(), avatar.to_owned());
        }
        Ok(id)
    }

    /// Gives a ghost the remote avatar: an `mxc://` one as it is, an `http(s)` one fetched (under
    /// the same rules as attachments) and uploaded. A failure leaves the old avatar; the message
    /// still goes.
    async fn sync_avatar(&self, ghost: &str, avatar: &str) {
        let mxc = if avatar.starts_with("mxc://") {
            avatar.to_owned()
        } else {
            let att = passerelle_sdk::Attachment {
                name: "avatar".into(),
                mime: None,
                size: None,
                url: avatar.into(),
            };
            let limit = self.shared.max_upload.min(5 * 1024 * 1024);
            let Ok(file) =
                passerelle_sdk::fetch::fetch(&att, limit, self.shared.fetch_private).await
            else {
                debug!("remote avatar not fetched");
                return;
            };
            if !file.mime.starts_with("image/") {
                return;
            }
            match self
                .hs()
                .upload(
                    "/_matrix/media/v3/upload?filename=avatar",
                    ghost,
                    &file.mime,
                    file.data,
                )
                .await
            {
                Ok(mxc) => mxc,
                Err(_) => return,
            }
        };
        let path = format!("/_matrix/client/v3/profile/{}/avatar_url", enc(ghost));
        if let Err(e) = self
            .hs()
            .call(
                reqwest::Method::PUT,
                &path,
                Some(ghost),
                Some(&json!({"avatar_url": mxc})),
            )
            .await
        {
            debug!(status = e.status, "ghost avatar not set");
        }
    }

    async fn ensure_joined(&mut self, ghost: &str, room: &str) -> Result<(), SendError> {
        if self.joined.contains(&(ghost.to_owned(), room.to_owned())) {
            return Ok(());
        }
        let join = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
        let first = self
            .hs()
            .call(reqwest::Method::POST, &join, Some(ghost), Some(&json!({})))
            .await;
        if let Err(e) = first {
            if e.status != 403 {
                return Err(errors::send_error(e.meaning()));
            }
            // Invite-only: the bot invites its ghost, then the ghost joins.
            let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
            let bot = self.shared.names.bot.clone();
            self.hs()
                .call(
                    reqwest::Method::POST,
                    &invite,
                    Some(&bot),
                    Some(&json!({"user_id": ghost})),
                )
                .await
                .map_err(|e| errors::send_error(e.meaning()))?;
            self.hs()
                .act(reqwest::Method::POST, &join, ghost, &json!({}))
                .await?;
        }
        self.joined.insert((ghost.to_owned(), room.to_owned()));
        Ok(())
    }

    /// Whether the bot's device must carry `event` (message content in an encrypted room).
    async fn through_bot(&self, room: &str, event: &Event) -> bool {
        let Some(bot) = &self.encrypted else {
            return false;
        };
        if matches!(event.kind, EventKind::Membership(_) | EventKind::Typing(_)) {
            return false;
        }
        let Ok(id) = matrix_sdk::ruma::OwnedRoomId::try_from(room) else {
            return false;
        };
        match bot.client.get_room(&id) {
            Some(r) => r
                .latest_encryption_state()
                .await
                .map(|s| s.is_encrypted())
                .unwrap_or(false),
            None => false,
        }
    }

    async fn send(&mut self, out: &Outbound) -> Result<Receipt, SendError> {
        let event: &Event = &out.event;
        let room = self
            .shared
            .room_id(&event.room)
            .ok_or(SendError::RoomNotFound)?;
        if self.through_bot(&room, event).await
            && let Some(bot) = &self.encrypted
        {
            // Ghosts have no devices: in an encrypted room the bot's device speaks for them,
            // naming them (MSC4144 per-message profile and its text fallback).
            return bot.send(out).await;
        }
        let EventKind::Message(content) = &event.kind else {
            return self.send_event(out, event).await;
        };
        if content.attachments.is_empty() {
            return self.send_event(out, event).await;
        }
        // The text first (when there is one), then each file, uploaded by the ghost and sent as
        // its own event; key-derived transaction ids make a retry repeat nothing.
        let mut first = None;
        if !content.text.is_empty() {
            let mut text_only = event.clone();
            if let EventKind::Message(c) = &mut text_only.kind {
                c.attachments.clear();
            }
            first = self.send_event(out, &text_only).await?.remote_id;
        }
        let ghost = self.ensure_ghost(out).await?;
        self.ensure_joined(&ghost, &room).await?;
        let (max, private) = (self.shared.max_upload, self.shared.fetch_private);
        for (i, att) in content.attachments.iter().enumerate() {
            let content = match passerelle_sdk::fetch::fetch(att, max, private).await {
                Ok(file) => {
                    let size = file.data.len();
                    let path = format!(
                        "/_matrix/media/v3/upload?filename={}",
                        enc(att.name.as_str())
                    );
                    let mxc = self
                        .hs()
                        .upload(&path, &ghost, &file.mime, file.data)
                        .await
                        .map_err(|e| errors::send_error(e.meaning()))?;
                    json!({
                        "msgtype": media::msgtype(&file.mime),
                        "body": att.name.as_str(),
                        "filename": att.name.as_str(),
                        "url": mxc,
                        "info": {"mimetype": file.mime, "size": size},
                        "m.mentions": {},
                    })
                }
                // A file that can't be fetched (gone, refused, too large, a host that does not
                // resolve) goes as its link: retrying would hold the room for nothing.
                Err(e) => {
                    debug!(
                        reason = e.reason(),
                        "attachment not fetched; its link is sent"
                    );
                    json!({"msgtype": "m.text", "body": media::link_text(att), "m.mentions": {}})
                }
            };
            let txn = translate::txn_id(&event.key, &format!("a{i}"));
            let path = format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(&room),
                enc(&txn)
            );
            let v = self
                .hs()
                .act(reqwest::Method::PUT, &path, &ghost, &content)
                .await?;
            if first.is_none() {
                first = v["event_id"].as_str().map(RemoteMessageId::new);
            }
        }
        Ok(Receipt { remote_id: first })
    }

    async fn send_event(&mut self, out: &Outbound, event: &Event) -> Result<Receipt, SendError> {
        let room = self
            .shared
            .room_id(&event.room)
            .ok_or(SendError::RoomNotFound)?;
        let outgoing = translate::outbound(event).map_err(SendError::Unsupported)?;
        let ghost = self.ensure_ghost(out).await?;
        if !matches!(
            outgoing,
            Outgoing::Membership(
                MembershipChange::Leave | MembershipChange::Kick | MembershipChange::Ban
            )
        ) {
            self.ensure_joined(&ghost, &room).await?;
        }
        let txn = translate::txn_id(&event.key, "0");
        let r = enc(&room);
        let state = &self.shared.state;
        let result = match outgoing {
            Outgoing::Send { kind, mut content } => {
                // A reply mentions the person answered (when a Matrix user), as clients do, so
                // they are notified; nobody else is pinged by bridged text.
                if let Some(target) = &event.reply_to {
                    let path = format!(
                        "/_matrix/client/v3/rooms/{r}/event/{}",
                        enc(target.as_str())
                    );
                    if let Ok(v) = self
                        .hs()
                        .call(reqwest::Method::GET, &path, Some(&ghost), None)
                        .await
                        && let Some(sender) = v["sender"].as_str()
                        && !self.shared.names.is_ours(sender)
                    {
                        translate::mention(&mut content, sender);
                    }
                }
                let path = format!(
                    "/_matrix/client/v3/rooms/{r}/send/{}/{}",
                    enc(kind),
                    enc(&txn)
                );
                let v = self
                    .hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&content))
                    .await;
                if let (Ok(v), EventKind::Reaction { target, key, .. }) = (&v, &event.kind)
                    && let Some(id) = v["event_id"].as_str()
                {
                    let _ = state
                        .put(
                            &reaction_key(&room, target.as_str(), key.as_str(), &ghost),
                            id,
                        )
                        .await;
                }
                v
            }
            Outgoing::Redact { target } => {
                let path = format!(
                    "/_matrix/client/v3/rooms/{r}/redact/{}/{}",
                    enc(&target),
                    enc(&txn)
                );
                self.hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&json!({})))
                    .await
            }
            Outgoing::Unreact { target, key } => {
                let k = reaction_key(&room, &target, &key, &ghost);
                let Some(ours) = state
                    .get(&k)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| String::from_utf8(b).ok())
                else {
                    return Ok(Receipt::default());
                };
                let path = format!(
                    "/_matrix/client/v3/rooms/{r}/redact/{}/{}",
                    enc(&ours),
                    enc(&txn)
                );
                let v = self
                    .hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&json!({})))
                    .await;
                if v.is_ok() {
                    let _ = state.delete(&k).await;
                }
                v.map(|_| Value::Null)
            }
            Outgoing::State { kind, content } => {
                // A topic is set by the ghost where it may; else by the bot, when it may.
                let path = format!("/_matrix/client/v3/rooms/{r}/state/{}/", enc(kind));
                let by_ghost = self
                    .hs()
                    .call(reqwest::Method::PUT, &path, Some(&ghost), Some(&content))
                    .await;
                match by_ghost {
                    Err(e) if e.status == 403 => {
                        let bot = self.shared.names.bot.clone();
                        self.hs()
                            .call(reqwest::Method::PUT, &path, Some(&bot), Some(&content))
                            .await
                    }
                    other => other,
                }
            }
            Outgoing::Membership(MembershipChange::Join) => Ok(Value::Null),
            Outgoing::Membership(_) => {
                let path = format!("/_matrix/client/v3/rooms/{r}/leave");
                let v = self
                    .hs()
                    .call(reqwest::Method::POST, &path, Some(&ghost), Some(&json!({})))
                    .await;
                self.joined.remove(&(ghost.clone(), room.clone()));
                v
            }
            Outgoing::Typing(on) => {
                let path = format!("/_matrix/client/v3/rooms/{r}/typing/{}", enc(&ghost));
                self.hs()
                    .call(
                        reqwest::Method::PUT,
                        &path,
                        Some(&ghost),
                        Some(&json!({"typing": on, "timeout": 15000})),
                    )
                    .await
            }
        };
        match result {
            Ok(v) => Ok(Receipt {
                remote_id: v["event_id"].as_str().map(RemoteMessageId::new),
            }),
            Err(e) => {
                if e.status == 403 {
                    // Perhaps no longer in the room: join again next time.
                    self.joined.remove(&(ghost, room));
                }
                Err(errors::send_error(e.meaning()))
            }
        }
    }
}

impl Appservice {
    /// The bot's own device: logged in once with `m.login.application_service`, its session and
    /// keys kept in the data dir and restored on every start.
    async fn bot_device(&self, hs: &Hs, bot: &str) -> Result<Client, ConnectorError> {
        if let Some(session) =
            bot::saved_session(&self.data_dir).filter(|s| s.meta.user_id.as_str() == bot)
            && let Some(client) = bot::restore_saved(&self.cfg, &self.data_dir, session).await?
        {
            return Ok(client);
        }
        let body = json!({"type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": self.asv.bot_localpart},
            "initial_device_display_name": self.cfg.device_name});
        let v = hs
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(&body),
            )
            .await
            .map_err(|e| errors::connector_error(e.meaning(), "logging the bot's device in"))?;
        let (Some(user), Some(device), Some(token)) = (
            v["user_id"].as_str(),
            v["device_id"].as_str(),
            v["access_token"].as_str(),
        ) else {
            return Err(ConnectorError::Fatal(
                "login answer without a session".into(),
            ));
        };
        let session = MatrixSession {
            meta: SessionMeta {
                user_id: OwnedUserId::try_from(user)
                    .map_err(|_| ConnectorError::Fatal("bad user id from login".into()))?,
                device_id: device.into(),
            },
            tokens: SessionTokens {
                access_token: token.to_owned(),
                refresh_token: None,
            },
        };
        bot::reset_store(&self.data_dir);
        let client = bot::build_client(&self.cfg, &self.data_dir).await?;
        client
            .matrix_auth()
            .restore_session(session, RoomLoadSettings::default())
            .await
            .map_err(|e| ConnectorError::Fatal(format!("restore session: {e}")))?;
        bot::save_session(&client, &self.data_dir)?;
        info!(device, "the bot's device is logged in");
        Ok(client)
    }

    pub(crate) async fn run(self, io: &mut ConnectorIo) -> Result<(), ConnectorError> {
        io.status.set(ConnectionState::Connecting);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ConnectorError::Fatal(format!("http client: {e}")))?;
        let hs = Hs {
            http,
            base: self.cfg.homeserver.clone(),
            token: self.asv.as_token.clone(),
        };
        let names = Names {
            server: self.asv.server_name.clone(),
            bot: format!("@{}:{}", self.asv.bot_localpart, self.asv.server_name),
            sender: format!("@{}:{}", sender_localpart(&self.asv), self.asv.server_name),
            ghost_prefix: self.asv.ghost_prefix.clone(),
        };
        // The bot exists and the token works: this is our "connected".
        if let Err(e) = register(&hs, &self.asv.bot_localpart).await {
            return Err(match e.meaning() {
                Meaning::BadToken => ConnectorError::AuthRejected(
                    "the homeserver refused as_token (is the registration installed?)".into(),
                ),
                m => errors::connector_error(m, "registering the bot"),
            });
        }
        let mut ids = HashMap::new();
        let mut rooms = HashMap::new();
        for name in &io.rooms {
            let id = if name.as_str().starts_with('#') {
                let path = format!("/_matrix/client/v3/directory/room/{}", enc(name.as_str()));
                match hs
                    .call(reqwest::Method::GET, &path, Some(&names.bot), None)
                    .await
                {
                    Ok(v) => match v["room_id"].as_str() {
                        Some(id) => id.to_owned(),
                        None => continue,
                    },
                    Err(e) => {
                        warn!(room = %name, status = e.status, "alias not resolved");
                        continue;
                    }
                }
            } else {
                name.as_str().to_owned()
            };
            let join = format!("/_matrix/client/v3/join/{}", enc(&id));
            if let Err(e) = hs
                .call(
                    reqwest::Method::POST,
                    &join,
                    Some(&names.bot),
                    Some(&json!({})),
                )
                .await
            {
                info!(room = %name, status = e.status, "the bot is not in the room yet; waiting for an invite");
            }
            rooms.insert(id.clone(), name.clone());
            ids.insert(name.clone(), id);
        }
        let shared = Arc::new(Shared {
            hs,
            names,
            hs_token: self.asv.hs_token.clone(),
            emitter: io.emitter.clone(),
            state: io.state.clone(),
            links: MediaLinks::new(
                &self.cfg.homeserver,
                self.cfg.media_public_url.as_deref(),
                io.account.as_str(),
                &self.data_dir,
            )
            .map_err(|e| ConnectorError::Fatal(format!("media link key: {e}")))?,
            admins: self.cfg.admins.clone(),
            rooms: std::sync::RwLock::new(rooms),
            ids: std::sync::RwLock::new(ids),
            portal_links: io.links.clone(),
            portal_accounts: self.asv.portal_accounts.clone(),
            portal_servers: std::iter::once(self.asv.server_name.clone())
                .chain(self.asv.portal_servers.iter().cloned())
                .collect(),
            alias_prefix: self.asv.alias_prefix.clone(),
            portal_lock: Mutex::new(()),
            txn_lock: Mutex::new(()),
            names_cache: Mutex::new(HashMap::new()),
            view: io.daemon.clone(),
            max_upload: self.cfg.max_upload_bytes,
            fetch_private: self.cfg.media_fetch_private,
        });
        let mut sync_task = None;
        let mut encrypted = None;
        let stop = io.shutdown.child_token();
        if self.asv.encryption {
            let client = tokio::select! {
                c = self.bot_device(&shared.hs, &shared.names.bot) => c?,
                _ = io.shutdown.cancelled() => return Ok(()),
            };
            let mut map = RoomMap::default();
            let configured = shared
                .rooms
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for (id, name) in &configured {
                if let Ok(id) = matrix_sdk::ruma::OwnedRoomId::try_from(id.as_str()) {
                    map.insert(name.clone(), id);
                }
            }
            let map = Arc::new(map);
            let me = OwnedUserId::try_from(shared.names.bot.as_str())
                .map_err(|_| ConnectorError::Config("bot_localpart makes no user id".into()))?;
            let syncer = Syncer {
                client: client.clone(),
                me,
                rooms: map.clone(),
                emitter: io.emitter.clone(),
                state: io.state.clone(),
                status: io.status.clone(),
                links: shared.links.clone(),
                admins: self.cfg.admins.clone(),
                account: io.account.clone(),
                view: io.daemon.clone(),
                token_key: BOT_SYNC_TOKEN,
                encrypted_only: true,
                // Plain events come as transactions, which the homeserver retries: no gap.
                // Encrypted ones left out by a limited sync are fetched back like the bot's.
                backfill_limit: self.cfg.backfill_limit,
                held: std::sync::Mutex::new(crate::held::Held::new(self.cfg.undecryptable_hold)),
            };
            sync_task = Some(tokio::spawn(syncer.run(stop.clone())));
            encrypted = Some(BotSender {
                client,
                rooms: map,
                state: io.state.clone(),
                name_fallback: true,
                missing: Default::default(),
                max_upload: self.cfg.max_upload_bytes,
                fetch_private: self.cfg.media_fetch_private,
            });
        }
        io.http.serve(Arc::new(Endpoint(shared.clone())));
        io.status.set(ConnectionState::Connected);
        let mut sender = Sender {
            encrypted,
            shared,
            ghosts: HashMap::new(),
            avatars: HashMap::new(),
            joined: HashSet::new(),
        };
        let mut watchdog =
            admin::Watchdog::new(Duration::from_secs(self.cfg.disconnect_warning_secs));
        let mut tick = tokio::time::interval(admin::tick_every(self.cfg.disconnect_warning_secs));
        let result = loop {
            tokio::select! {
                _ = io.shutdown.cancelled() => break Ok(()),
                r = async { sync_task.as_mut().expect("guarded").await }, if sync_task.is_some() => {
                    break match r {
                        Ok(r) => r,
                        Err(e) => Err(ConnectorError::Fatal(format!("sync task: {e}"))),
                    };
                }
                _ = tick.tick(), if !self.cfg.admins.is_empty() => {
                    for note in watchdog.tick(&io.daemon, std::time::Instant::now()) {
                        sender.shared.notify_admins(&note).await;
                    }
                }
                out = io.outbound.recv() => {
                    let Some(out) = out else { break Ok(()) };
                    let answer = sender.send(&out).await;
                    if let Err(e) = &answer {
                        debug!(error = %e, kind = out.event.kind.name(), "send refused");
                    }
                    out.respond(answer);
                }
            }
        };
        io.http.clear();
        stop.cancel();
        if let Some(mut task) = sync_task
            && !task.is_finished()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut task).await;
            task.abort();
        }
        io.status.set(ConnectionState::Stopped);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(server_name: &str) -> AppserviceSettings {
        AppserviceSettings {
            server_name: server_name.into(),
            as_token: passerelle_sdk::Secret::new("a".repeat(32)),
            hs_token: passerelle_sdk::Secret::new("b".repeat(32)),
            registration_id: "passerelle".into(),
            bot_localpart: "passerelle".into(),
            ghost_prefix: "passerelle".into(),
            alias_prefix: "passerelle".into(),
            url: None,
            encryption: true,
            portal_accounts: Vec::new(),
            portal_servers: Vec::new(),
        }
    }

    fn regexes(yaml: &str) -> Vec<String> {
        yaml.lines()
            .filter_map(|l| l.trim().strip_prefix("regex: "))
            .map(|q| serde_json::from_str::<String>(q).expect("a JSON-quoted string"))
            .collect()
    }

    #[test]
    fn a_dotted_server_name_is_escaped_once() {
        let yaml = registration_yaml(&settings("example.org"), "http://127.0.0.1:9180");
        // YAML reads a double-quoted scalar as JSON does: these are the regexes Synapse compiles.
        assert_eq!(
            regexes(&yaml),
            [
                r"^@passerelle_.+:example\.org$",
                r"^@passerelle:example\.org$",
                r"^#passerelle_.+:example\.org$",
            ]
        );
        assert!(
            yaml.contains(r#"regex: "^@passerelle_.+:example\\.org$""#),
            "{yaml}"
        );
    }

    #[test]
    fn ports_and_ipv6_literals_are_escaped() {
        let yaml = registration_yaml(&settings("[::1]:8448"), "http://127.0.0.1:9180");
        assert_eq!(regexes(&yaml)[1], r"^@passerelle:\[::1\]:8448$");
    }
}

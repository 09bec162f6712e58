//! Appservice mode: the daemon serves the Application Service API (transactions, user queries,
//! ping) on its HTTP listener, and remote people are ghost users in the appservice's exclusive
//! namespace, sending through identity assertion (`?user_id=`).
//!
//! Each transaction is acknowledged only after every event in it was handed to the daemon (which
//! answers once it has stored it). The last acknowledged transaction id is kept, so a transaction
//! the homeserver sends again is answered without being bridged twice; should the daemon die
//! between storing and remembering, the daemon recognises the events again by their ids.

mod endpoint;
mod ghosts;
mod notices;
mod portals;
mod registration;
mod send;

pub use endpoint::Relay;
use endpoint::{Endpoint, matrix_error};
pub use registration::{registration_yaml, sender_localpart};
use send::Sender;

use crate::admin;
use crate::client;
use crate::config::{AppserviceSettings, Settings};
use crate::errors::{self, Meaning};
use crate::ghost;
use crate::media::{self, MediaLinks};
use crate::rooms::RoomMap;
use crate::sender::BotSender;
use crate::sync::Syncer;
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
    pub(crate) cfg: Settings,
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
    passerelle_sdk::state::key(&["portal_room", room_id])
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
impl Appservice {
    /// The bot's own device: logged in once with `m.login.application_service`, its session and
    /// keys kept in the data dir and restored on every start.
    async fn bot_device(&self, hs: &Hs, bot: &str) -> Result<Client, ConnectorError> {
        if let Some(session) =
            client::saved_session(&self.data_dir).filter(|s| s.meta.user_id.as_str() == bot)
            && let Some(client) = client::restore_saved(&self.cfg, &self.data_dir, session).await?
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
        client::reset_store(&self.data_dir);
        let client = client::build_client(&self.cfg, &self.data_dir).await?;
        client
            .matrix_auth()
            .restore_session(session, RoomLoadSettings::default())
            .await
            .map_err(|e| ConnectorError::Fatal(format!("restore session: {e}")))?;
        client::save_session(&client, &self.data_dir)?;
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
                self.cfg.media.public_url.as_deref(),
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
            max_upload: self.cfg.media.max_upload_bytes,
            fetch_private: self.cfg.media.fetch_private,
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
                max_upload: self.cfg.media.max_upload_bytes,
                fetch_private: self.cfg.media.fetch_private,
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
        let mut watch = admin::Watch::new(
            self.cfg.disconnect_warning_secs,
            !self.cfg.admins.is_empty(),
        );
        let result = loop {
            tokio::select! {
                _ = io.shutdown.cancelled() => break Ok(()),
                r = async { sync_task.as_mut().expect("guarded").await }, if sync_task.is_some() => {
                    break match r {
                        Ok(r) => r,
                        Err(e) => Err(ConnectorError::Fatal(format!("sync task: {e}"))),
                    };
                }
                notes = watch.notes(&io.daemon) => {
                    for note in notes {
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

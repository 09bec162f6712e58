//! Bot mode: one ordinary Matrix account driven by matrix-sdk, with end-to-end encryption and a
//! persistent store.
//!
//! Sync is driven here, one `sync_once` at a time, with our own sync token kept in the connector
//! state and advanced only after every event of a response has been handed to the daemon (which
//! acknowledges once it is stored). A crash therefore replays at most the last response, which the
//! daemon recognises by event id; nothing is missed.

use crate::admin;
use crate::config::{BotSettings, Login, Resolved};
use crate::errors::{self, Meaning};
use crate::held::Held;
use crate::media::{self, MediaLinks};
use crate::rooms::RoomMap;
use crate::translate::{self, Inbound, Outgoing};
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::filter::{FilterDefinition, RoomEventFilter, RoomFilter};
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::AnySyncTimelineEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{
    OwnedEventId, OwnedRoomId, OwnedTransactionId, OwnedUserId, RoomOrAliasId, UInt,
};
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, RoomState, SessionMeta, SessionTokens};
use passerelle_sdk::{
    AccountId, ConnectionState, ConnectorError, ConnectorIo, EmitError, Emitter, Event, Outbound,
    Receipt, RemoteMessageId, SendError, StateHandle,
};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const SYNC_TOKEN: &str = "sync_token";
const LONG_POLL: Duration = Duration::from_secs(30);

/// A bot-mode connector, built and ready to run.
pub struct Bot {
    pub(crate) cfg: Resolved,
    pub(crate) bot: BotSettings,
    pub(crate) data_dir: PathBuf,
}

fn session_file(dir: &std::path::Path) -> PathBuf {
    dir.join("session.json")
}

fn store_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("store")
}

/// Writes a file readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// A matrix-sdk client with its store in `data_dir/store`.
pub(crate) async fn build_client(
    cfg: &Resolved,
    data_dir: &std::path::Path,
) -> Result<Client, ConnectorError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| ConnectorError::Fatal(format!("cannot create {}: {e}", data_dir.display())))?;
    Client::builder()
        .homeserver_url(&cfg.homeserver)
        .sqlite_store(
            store_dir(data_dir),
            cfg.store_passphrase.as_ref().map(|s| s.expose()),
        )
        .handle_refresh_tokens()
        .build()
        .await
        .map_err(|e| ConnectorError::Fatal(format!("matrix client: {e}")))
}

/// The session saved in `data_dir`, if any.
pub(crate) fn saved_session(data_dir: &std::path::Path) -> Option<MatrixSession> {
    std::fs::read(session_file(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Saves the client's session in `data_dir` (owner-readable only).
pub(crate) fn save_session(
    client: &Client,
    data_dir: &std::path::Path,
) -> Result<(), ConnectorError> {
    if let Some(session) = client.matrix_auth().session() {
        let bytes = serde_json::to_vec(&session)
            .map_err(|e| ConnectorError::Fatal(format!("session: {e}")))?;
        write_private(&session_file(data_dir), &bytes).map_err(|e| {
            ConnectorError::Fatal(format!(
                "cannot save the session in {}: {e}",
                data_dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Restores a saved session on a client and checks that its token still works. `Ok(None)` when
/// the homeserver logged it out (the caller logs in again).
pub(crate) async fn restore_saved(
    cfg: &Resolved,
    data_dir: &std::path::Path,
    session: MatrixSession,
) -> Result<Option<Client>, ConnectorError> {
    let client = build_client(cfg, data_dir).await?;
    client
        .matrix_auth()
        .restore_session(session, RoomLoadSettings::default())
        .await
        .map_err(|e| ConnectorError::Fatal(format!("restore session: {e}")))?;
    match client.whoami().await {
        Ok(_) => Ok(Some(client)),
        Err(e) => match errors::http_meaning(&e) {
            Meaning::BadToken => {
                warn!("the saved session was logged out; logging in again");
                Ok(None)
            }
            m => Err(errors::connector_error(m, "whoami")),
        },
    }
}

/// Forgets the local store (a new device starts with an empty one).
pub(crate) fn reset_store(data_dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(store_dir(data_dir));
}

impl Bot {
    async fn client(&self) -> Result<Client, ConnectorError> {
        build_client(&self.cfg, &self.data_dir).await
    }

    /// Logs in (first run) or restores the saved session, so the device and its keys persist.
    async fn login(&self) -> Result<Client, ConnectorError> {
        let saved = saved_session(&self.data_dir);
        match (&self.bot.login, saved) {
            (Login::Password(_), Some(s)) if s.meta.user_id.as_str() == self.bot.user => {
                if let Some(client) = restore_saved(&self.cfg, &self.data_dir, s).await? {
                    return Ok(client);
                }
            }
            (Login::Token(token), _) => {
                let (user_id, device_id) = whoami(&self.cfg.homeserver, token.expose()).await?;
                if user_id != self.bot.user {
                    return Err(ConnectorError::Config(format!(
                        "access_token belongs to {user_id}, not to user {}",
                        self.bot.user
                    )));
                }
                let session = MatrixSession {
                    meta: SessionMeta {
                        user_id: parse_user(&user_id)?,
                        device_id: device_id.into(),
                    },
                    tokens: SessionTokens {
                        access_token: token.expose().to_owned(),
                        refresh_token: None,
                    },
                };
                let client = self.client().await?;
                if let Err(e) = client
                    .matrix_auth()
                    .restore_session(session.clone(), RoomLoadSettings::default())
                    .await
                {
                    // The store belongs to another device: start it afresh for this one.
                    warn!(error = %e, "the local store belongs to another device; starting it afresh");
                    drop(client);
                    reset_store(&self.data_dir);
                    let client = self.client().await?;
                    client
                        .matrix_auth()
                        .restore_session(session, RoomLoadSettings::default())
                        .await
                        .map_err(|e| ConnectorError::Fatal(format!("restore session: {e}")))?;
                    return Ok(client);
                }
                return Ok(client);
            }
            _ => {}
        }
        let Login::Password(password) = &self.bot.login else {
            return Err(ConnectorError::Fatal("no login method".into()));
        };
        // A new login is a new device: its store starts empty.
        reset_store(&self.data_dir);
        let client = self.client().await?;
        client
            .matrix_auth()
            .login_username(&self.bot.user, password.expose())
            .initial_device_display_name(&self.cfg.device_name)
            .send()
            .await
            .map_err(|e| match errors::meaning(&e) {
                Meaning::Refused(code) if code == "M_FORBIDDEN" => {
                    ConnectorError::AuthRejected("the homeserver refused the password".into())
                }
                m => errors::connector_error(m, "login"),
            })?;
        save_session(&client, &self.data_dir)?;
        info!(device = ?client.device_id(), "logged in");
        Ok(client)
    }

    pub(crate) async fn run(self, io: &mut ConnectorIo) -> Result<(), ConnectorError> {
        io.status.set(ConnectionState::Connecting);
        let client = tokio::select! {
            c = self.login() => c?,
            _ = io.shutdown.cancelled() => return Ok(()),
        };
        let me = client
            .user_id()
            .map(ToOwned::to_owned)
            .ok_or_else(|| ConnectorError::Fatal("no user id after login".into()))?;
        if self.cfg.key_backup {
            let file = self
                .cfg
                .recovery_key_file
                .clone()
                .unwrap_or_else(|| self.data_dir.join("recovery-key"));
            tokio::spawn(ensure_backup(client.clone(), file));
        }
        let rooms = Arc::new(RoomMap::resolve(&client, &io.rooms).await);
        let links = MediaLinks::new(
            &self.cfg.homeserver,
            self.cfg.media_public_url.as_deref(),
            io.account.as_str(),
            &self.data_dir,
        )
        .map_err(|e| ConnectorError::Fatal(format!("media link key: {e}")))?;
        if links.public() {
            io.http.serve(Arc::new(MediaEndpoint {
                links: links.clone(),
                client: client.clone(),
                homeserver: self.cfg.homeserver.clone(),
                max: self.cfg.max_upload_bytes,
            }));
        }
        let mut missing = HashSet::new();
        for id in rooms.ids() {
            if client
                .get_room(id)
                .is_none_or(|r| r.state() != RoomState::Joined)
                && let Err(e) = client.join_room_by_id(id).await
            {
                if matches!(errors::meaning(&e), errors::Meaning::NotFound) {
                    warn!(room = %id, "a linked room does not exist on the homeserver; what is sent to it is dropped (check the link's room)");
                    missing.insert(id.clone());
                } else {
                    info!(room = %id, error = %e, "not joined yet; waiting for an invite");
                }
            }
        }
        let syncer = Syncer {
            client: client.clone(),
            me,
            rooms: rooms.clone(),
            emitter: io.emitter.clone(),
            state: io.state.clone(),
            status: io.status.clone(),
            links: links.clone(),
            admins: self.cfg.admins.clone(),
            account: io.account.clone(),
            view: io.daemon.clone(),
            token_key: SYNC_TOKEN,
            encrypted_only: false,
            backfill_limit: self.cfg.backfill_limit,
            held: std::sync::Mutex::new(Held::new(self.cfg.undecryptable_hold)),
        };
        let stop = io.shutdown.child_token();
        let mut sync_task = tokio::spawn(syncer.run(stop.clone()));
        let sender = BotSender {
            client: client.clone(),
            rooms,
            state: io.state.clone(),
            name_fallback: false,
            missing: Arc::new(missing),
            max_upload: self.cfg.max_upload_bytes,
            fetch_private: self.cfg.media_fetch_private,
        };
        let mut watchdog =
            admin::Watchdog::new(Duration::from_secs(self.cfg.disconnect_warning_secs));
        let mut tick = tokio::time::interval(admin::tick_every(self.cfg.disconnect_warning_secs));
        let result = loop {
            tokio::select! {
                _ = io.shutdown.cancelled() => break Ok(()),
                _ = tick.tick(), if !self.cfg.admins.is_empty() => {
                    for note in watchdog.tick(&io.daemon, std::time::Instant::now()) {
                        notify_admins(&client, &io.state, &self.cfg.admins, &note).await;
                    }
                }
                r = &mut sync_task => {
                    break match r {
                        Ok(r) => r,
                        Err(e) => Err(ConnectorError::Fatal(format!("sync task: {e}"))),
                    };
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
        stop.cancel();
        if !sync_task.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut sync_task).await;
            sync_task.abort();
        }
        io.status.set(ConnectionState::Stopped);
        result
    }
}

/// Keeps the bot's room keys backed up on the homeserver: enables recovery (secret storage and a
/// key backup) and writes the recovery key to `file` the first time; a new device with the key
/// file joins the existing backup. The key is never logged.
async fn ensure_backup(client: Client, file: PathBuf) {
    use matrix_sdk::encryption::recovery::RecoveryState;
    let recovery = client.encryption().recovery();
    // The state is known once a sync has brought the account data.
    for _ in 0..120 {
        if recovery.state() != RecoveryState::Unknown {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match recovery.state() {
        RecoveryState::Enabled => debug!("key backup in place"),
        RecoveryState::Incomplete => match std::fs::read_to_string(&file) {
            Ok(key) => match recovery.recover(key.trim()).await {
                Ok(()) => info!("joined the existing key backup"),
                Err(e) => warn!(error = %e, "could not join the existing key backup"),
            },
            Err(_) => warn!(
                file = %file.display(),
                "a key backup exists but its recovery key file is missing"
            ),
        },
        RecoveryState::Disabled | RecoveryState::Unknown => match recovery.enable().await {
            Ok(key) => match write_private(&file, key.as_bytes()) {
                Ok(()) => info!(file = %file.display(), "key backup enabled; recovery key written"),
                Err(e) => {
                    warn!(error = %e, file = %file.display(), "key backup enabled, but the recovery key could not be written")
                }
            },
            Err(e) => warn!(error = %e, "could not enable the key backup"),
        },
    }
}

/// Bot mode's HTTP endpoint: the signed file links.
struct MediaEndpoint {
    links: MediaLinks,
    client: Client,
    homeserver: String,
    max: u64,
}

impl passerelle_sdk::HttpHandler for MediaEndpoint {
    fn admit(&self, head: &http::request::Parts) -> passerelle_sdk::Admission {
        media::admit(head)
    }

    fn handle(
        &self,
        request: passerelle_sdk::http::Request,
    ) -> futures::future::BoxFuture<'static, passerelle_sdk::http::Response> {
        let links = self.links.clone();
        let token = self.client.access_token().unwrap_or_default();
        let homeserver = self.homeserver.clone();
        let max = self.max;
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            match media::serve(&links, &path, &homeserver, &token, None, max).await {
                Some(r) => r,
                None => passerelle_sdk::http::json_response(
                    404,
                    &serde_json::json!({"error": "not found"}),
                ),
            }
        })
    }
}

fn parse_user(id: &str) -> Result<OwnedUserId, ConnectorError> {
    OwnedUserId::try_from(id).map_err(|_| ConnectorError::Fatal("bad user id from whoami".into()))
}

/// `GET /account/whoami` with a bare token: the token's user and device.
async fn whoami(homeserver: &str, token: &str) -> Result<(String, String), ConnectorError> {
    let resp = reqwest::Client::new()
        .get(format!("{homeserver}/_matrix/client/v3/account/whoami"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|_| ConnectorError::Disconnected("whoami: homeserver unreachable".into()))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        200 => {}
        401 => return Err(ConnectorError::AuthRejected("access_token refused".into())),
        s if s >= 500 => return Err(ConnectorError::Disconnected(format!("whoami: status {s}"))),
        s => return Err(ConnectorError::Fatal(format!("whoami: status {s}"))),
    }
    let user = body["user_id"].as_str().unwrap_or_default().to_owned();
    let device = body["device_id"].as_str().unwrap_or_default().to_owned();
    if user.is_empty() || device.is_empty() {
        return Err(ConnectorError::Config(
            "access_token has no device (log in with a password instead, or use a token from a \
             device login)"
                .into(),
        ));
    }
    Ok((user, device))
}

pub(crate) struct Syncer {
    pub(crate) client: Client,
    pub(crate) me: OwnedUserId,
    pub(crate) rooms: Arc<RoomMap>,
    pub(crate) emitter: Emitter,
    pub(crate) state: StateHandle,
    pub(crate) status: passerelle_sdk::StatusReporter,
    pub(crate) links: MediaLinks,
    pub(crate) admins: Vec<String>,
    pub(crate) account: AccountId,
    pub(crate) view: passerelle_sdk::DaemonView,
    /// The connector state key of the sync token.
    pub(crate) token_key: &'static str,
    /// Appservice mode: plain events come through transactions, so only what was encrypted is
    /// bridged from here, and invites are the transactions' business.
    pub(crate) encrypted_only: bool,
    /// Events fetched back per room when a sync's timeline is `limited` (0: none).
    pub(crate) backfill_limit: u32,
    /// Encrypted events whose key has not come yet, tried again after every sync.
    pub(crate) held: std::sync::Mutex<Held<HeldEvent>>,
}

/// `raw` decrypted, when its key is there. (matrix-sdk answers a failed decryption with an
/// event still marked unable to decrypt, not with an error.)
async fn decrypt(
    room: &matrix_sdk::Room,
    raw: &Raw<AnySyncTimelineEvent>,
) -> Option<TimelineEvent> {
    let event = room
        .decrypt_event(raw.cast_ref_unchecked(), None)
        .await
        .ok()?;
    matches!(event.kind, TimelineEventKind::Decrypted(_)).then_some(event)
}

/// An event held for its key: its room and its raw (encrypted) form.
pub(crate) type HeldEvent = (OwnedRoomId, Raw<AnySyncTimelineEvent>);

fn sync_filter() -> Filter {
    let mut timeline = RoomEventFilter::default();
    timeline.limit = Some(UInt::from(200u32));
    let mut room = RoomFilter::default();
    room.timeline = timeline;
    let mut def = FilterDefinition::default();
    def.room = room;
    Filter::FilterDefinition(def)
}

impl Syncer {
    /// Syncs until `stop` or a failure. Events still held for their keys then are counted as
    /// dropped (the sync token is past them): never lost without a trace.
    pub(crate) async fn run(self, stop: CancellationToken) -> Result<(), ConnectorError> {
        let result = self.sync_loop(stop).await;
        let left = self
            .held
            .lock()
            .map(|mut h| h.take_all().len())
            .unwrap_or(0);
        if left > 0 {
            warn!(
                events = left,
                "undecryptable events still held when sync stopped; dropped"
            );
            for _ in 0..left {
                passerelle_sdk::drops::inbound(&self.account, "matrix_undecryptable");
            }
        }
        result
    }

    async fn sync_loop(&self, stop: CancellationToken) -> Result<(), ConnectorError> {
        let mut token: Option<String> = self
            .state
            .get(self.token_key)
            .await
            .map_err(|e| ConnectorError::Fatal(format!("state: {e}")))?
            .and_then(|b| String::from_utf8(b).ok());
        let mut failures = 0u32;
        loop {
            let settings = match &token {
                Some(t) => SyncSettings::default().token(t.clone()).timeout(LONG_POLL),
                None => SyncSettings::default().timeout(Duration::ZERO),
            }
            .filter(sync_filter());
            let response = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = self.client.sync_once(settings) => r,
            };
            let response = match response {
                Ok(r) => r,
                Err(e) => match errors::meaning(&e) {
                    Meaning::BadToken => {
                        return Err(ConnectorError::AuthRejected("access token refused".into()));
                    }
                    Meaning::RateLimited(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    m => {
                        failures += 1;
                        self.status.set(ConnectionState::Connecting);
                        if failures >= 5 {
                            return Err(errors::connector_error(m, "sync"));
                        }
                        let wait = Duration::from_millis(500 * 2u64.pow(failures));
                        warn!(attempt = failures, "sync failed; retrying in {wait:?}");
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                },
            };
            failures = 0;
            let first = token.is_none();
            if !self.encrypted_only {
                self.accept_invites(&response).await;
            }
            self.status.set(ConnectionState::Connected);
            if !first {
                match self.deliver(&response, token.as_deref()).await {
                    Ok(()) => {}
                    Err(EmitError::ShuttingDown) => return Ok(()),
                    Err(e) => {
                        return Err(ConnectorError::Disconnected(format!(
                            "the daemon could not store an event ({e}); resyncing"
                        )));
                    }
                }
            }
            self.state
                .put(self.token_key, response.next_batch.clone())
                .await
                .map_err(|e| ConnectorError::Fatal(format!("state: {e}")))?;
            token = Some(response.next_batch);
        }
    }

    async fn accept_invites(&self, response: &SyncResponse) {
        for (room_id, invite) in &response.rooms.invited {
            let inviter = invite.invite_state.events.iter().find_map(|raw| {
                let v: Value = serde_json::from_str(raw.json().get()).ok()?;
                (v["type"] == "m.room.member"
                    && v["state_key"] == self.me.as_str()
                    && v["content"]["membership"] == "invite")
                    .then(|| v["sender"].as_str().map(str::to_owned))
                    .flatten()
            });
            let from_admin = inviter.as_ref().is_some_and(|i| self.admins.contains(i));
            if !self.rooms.contains(room_id) && !from_admin {
                debug!(room = %room_id, "ignoring an invite to a room no link names");
                continue;
            }
            match self.client.join_room_by_id(room_id).await {
                Ok(_) => info!(room = %room_id, "joined on invite"),
                Err(e) => warn!(room = %room_id, error = %e, "could not join on invite"),
            }
        }
    }

    /// Hands every event of a sync response to the daemon, in order per room: what a `limited`
    /// timeline left out first (fetched back from the homeserver, up to `backfill_limit`), then
    /// the timeline. Then the held undecryptable events are tried again.
    async fn deliver(&self, response: &SyncResponse, since: Option<&str>) -> Result<(), EmitError> {
        for (room_id, update) in &response.rooms.joined {
            let Some(name) = self.rooms.name(room_id) else {
                self.admin_room(room_id, &update.timeline.events).await;
                continue;
            };
            let room = self.client.get_room(room_id);
            let mut events: Vec<TimelineEvent> = Vec::new();
            if update.timeline.limited
                && self.backfill_limit > 0
                && let (Some(room), Some(prev), Some(since)) =
                    (&room, update.timeline.prev_batch.as_deref(), since)
            {
                events = self.backfill(room, prev, since).await;
            }
            events.extend(update.timeline.events.iter().cloned());
            // In a room we just joined, the timeline reaches back before our join: skip that part.
            let start = events
                .iter()
                .rposition(|e| {
                    let v: Value = serde_json::from_str(e.raw().json().get()).unwrap_or_default();
                    v["type"] == "m.room.member"
                        && v["state_key"] == self.me.as_str()
                        && v["content"]["membership"] == "join"
                        && v["unsigned"]["prev_content"]["membership"] != "join"
                })
                .map(|i| i + 1)
                .unwrap_or(0);
            for timeline_event in &events[start..] {
                if self.encrypted_only
                    && matches!(timeline_event.kind, TimelineEventKind::PlainText { .. })
                {
                    continue;
                }
                let mut raw = timeline_event.raw().clone();
                // Still encrypted: matrix-sdk could not decrypt it (or did not try, when its key
                // was not there yet).
                let encrypted = match &timeline_event.kind {
                    TimelineEventKind::UnableToDecrypt { .. } => true,
                    TimelineEventKind::PlainText { .. } => {
                        serde_json::from_str::<Value>(raw.json().get())
                            .is_ok_and(|v| v["type"] == "m.room.encrypted")
                    }
                    _ => false,
                };
                if encrypted {
                    // The key may have arrived later in the same response.
                    let decrypted = match &room {
                        Some(room) => decrypt(room, &raw).await,
                        None => None,
                    };
                    match decrypted {
                        Some(decrypted) => raw = decrypted.raw().clone(),
                        None => {
                            self.hold(room_id, raw);
                            continue;
                        }
                    }
                }
                self.bridge(room_id, name, room.as_ref(), &raw).await?;
            }
        }
        self.retry_held().await
    }

    /// What a `limited` timeline left out in `room`: `/messages` backwards from its `prev_batch`
    /// to the previous sync's token, oldest first, at most `backfill_limit` events (the newest of
    /// them). A failed page is tried three times; what could not be fetched is counted.
    async fn backfill(
        &self,
        room: &matrix_sdk::Room,
        prev: &str,
        since: &str,
    ) -> Vec<TimelineEvent> {
        let cap = self.backfill_limit as usize;
        let mut fetched: Vec<TimelineEvent> = Vec::new();
        let mut from = prev.to_owned();
        let mut cut = false;
        'pages: loop {
            let options = || {
                let mut options = MessagesOptions::backward().from(from.as_str());
                options.to = Some(since.to_owned());
                options.limit = UInt::from(100u32);
                options
            };
            let mut tries = 0;
            let page = loop {
                match room.messages(options()).await {
                    Ok(page) => break page,
                    Err(e) if tries < 2 => {
                        tries += 1;
                        debug!(room = %room.room_id(), error = %e, "backfill page failed; trying again");
                        tokio::time::sleep(Duration::from_millis(500 * tries)).await;
                    }
                    Err(e) => {
                        warn!(room = %room.room_id(), error = %e, "backfill failed; what the gap held is not bridged");
                        passerelle_sdk::drops::inbound(&self.account, "matrix_backfill_failed");
                        break 'pages;
                    }
                }
            };
            let done = page.chunk.is_empty() || page.end.is_none();
            for event in page.chunk {
                if fetched.len() >= cap {
                    cut = true;
                    break;
                }
                fetched.push(event);
            }
            match page.end {
                Some(end) if !done && !cut => from = end,
                _ => break,
            }
        }
        if cut {
            warn!(room = %room.room_id(), limit = cap, "more was said while the bridge was away than backfill_limit; the oldest events are not bridged");
            passerelle_sdk::drops::inbound(&self.account, "matrix_backfill_limit");
        }
        if !fetched.is_empty() {
            info!(room = %room.room_id(), events = fetched.len(), "backfilled a gap in the timeline");
        }
        fetched.reverse();
        fetched
    }

    /// Holds an event whose key has not arrived; counted as dropped when no more can be held.
    fn hold(&self, room_id: &OwnedRoomId, raw: Raw<AnySyncTimelineEvent>) {
        let held = self
            .held
            .lock()
            .map(|mut h| {
                h.hold(std::time::Instant::now(), (room_id.clone(), raw))
                    .is_ok()
            })
            .unwrap_or(false);
        if held {
            debug!(room = %room_id, "undecryptable event held until its key arrives");
        } else {
            warn!(room = %room_id, "undecryptable event dropped: too many held already");
            passerelle_sdk::drops::inbound(&self.account, "matrix_undecryptable");
        }
    }

    /// Tries the held events again (their keys may have come with this sync); those held too
    /// long are given up on, counted and logged.
    async fn retry_held(&self) -> Result<(), EmitError> {
        let waiting = match self.held.lock() {
            Ok(mut h) if !h.is_empty() => h.take_all(),
            _ => return Ok(()),
        };
        let mut failed = Vec::new();
        let mut waiting = waiting.into_iter();
        while let Some((seen, (room_id, raw))) = waiting.next() {
            let room = self.client.get_room(&room_id);
            let decrypted = match &room {
                Some(room) => decrypt(room, &raw).await,
                None => None,
            };
            match (decrypted, self.rooms.name(&room_id)) {
                (Some(event), Some(name)) => {
                    info!(room = %room_id, "a held event could be decrypted at last");
                    if let Err(e) = self
                        .bridge(&room_id, name, room.as_ref(), event.raw())
                        .await
                    {
                        // Not stored: keep it, and the rest, for the next round.
                        failed.push((seen, (room_id, raw)));
                        failed.extend(waiting);
                        self.put_back(failed);
                        return Err(e);
                    }
                }
                (None, Some(_)) => failed.push((seen, (room_id, raw))),
                // The room is no longer linked.
                (_, None) => {}
            }
        }
        self.put_back(failed);
        Ok(())
    }

    fn put_back(&self, failed: Vec<(std::time::Instant, HeldEvent)>) {
        let expired = match self.held.lock() {
            Ok(mut h) => h.put_back(std::time::Instant::now(), failed).too_old,
            Err(_) => 0,
        };
        for _ in 0..expired {
            passerelle_sdk::drops::inbound(&self.account, "matrix_undecryptable");
        }
        if expired > 0 {
            warn!(
                events = expired,
                "undecryptable events dropped: their keys never arrived"
            );
        }
    }

    /// Translates one (decrypted) event and hands it to the daemon.
    async fn bridge(
        &self,
        room_id: &OwnedRoomId,
        name: &passerelle_sdk::RoomId,
        room: Option<&matrix_sdk::Room>,
        raw: &Raw<AnySyncTimelineEvent>,
    ) -> Result<(), EmitError> {
        let Ok(v) = serde_json::from_str::<Value>(raw.json().get()) else {
            warn!(room = %room_id, "malformed event skipped");
            return Ok(());
        };
        if v["sender"] == self.me.as_str() {
            return Ok(());
        }
        let display = match (room, v["sender"].as_str()) {
            (Some(room), Some(sender)) => match OwnedUserId::try_from(sender) {
                Ok(uid) => room
                    .get_member_no_sync(&uid)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|m| m.display_name().map(str::to_owned)),
                Err(_) => None,
            },
            _ => None,
        };
        match translate::inbound(&v, name, display, &self.links) {
            Inbound::Event(event) => {
                let kind = event.kind.name();
                let d = self.emitter.emit(*event).await?;
                debug!(account = %self.account, room = %room_id, kind, disposition = ?d, "emitted");
            }
            Inbound::Skip(why) => debug!(room = %room_id, why, "not bridged"),
        }
        Ok(())
    }
}

impl Syncer {
    /// Answers the admins' commands in a room no link names.
    async fn admin_room(
        &self,
        room_id: &OwnedRoomId,
        events: &[matrix_sdk::deserialized_responses::TimelineEvent],
    ) {
        let Some(room) = self.client.get_room(room_id) else {
            return;
        };
        for e in events {
            if self.encrypted_only && matches!(e.kind, TimelineEventKind::PlainText { .. }) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(e.raw().json().get()) else {
                continue;
            };
            let sender = v["sender"].as_str().unwrap_or_default();
            if v["type"] != "m.room.message" || !self.admins.iter().any(|a| a == sender) {
                continue;
            }
            // Only in a direct chat: the bot and this admin, nobody else.
            let members: Vec<String> = match room.members(matrix_sdk::RoomMemberships::JOIN).await {
                Ok(m) => m.iter().map(|m| m.user_id().to_string()).collect(),
                Err(_) => continue,
            };
            let me = self
                .client
                .user_id()
                .map(|u| u.to_string())
                .unwrap_or_default();
            if !admin::is_direct_chat(&members, &me, sender) {
                debug!("an admin's message outside a direct chat with the bot; not answered");
                continue;
            }
            let _ = self
                .state
                .put(&admin_room_key(sender), room_id.as_str())
                .await;
            let Some(text) = v["content"]["body"]
                .as_str()
                .and_then(|b| admin::answer(b, &self.view))
            else {
                continue;
            };
            let content = serde_json::json!({"msgtype": "m.notice", "body": text});
            if let Err(e) = room.send_raw("m.room.message", content).await {
                warn!(error = %e, "could not answer an admin");
            }
        }
    }
}

fn admin_room_key(admin: &str) -> String {
    format!("admin_room\u{1f}{admin}")
}

/// Tells every admin `text` in their management room (a direct chat is opened when none is known).
async fn notify_admins(client: &Client, state: &StateHandle, admins: &[String], text: &str) {
    for admin in admins {
        let known = state
            .get(&admin_room_key(admin))
            .await
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|id| OwnedRoomId::try_from(id).ok())
            .and_then(|id| client.get_room(&id));
        let room = match known {
            Some(r) => r,
            None => {
                let Ok(user) = OwnedUserId::try_from(admin.as_str()) else {
                    continue;
                };
                match client.create_dm(&user).await {
                    Ok(r) => {
                        let _ = state
                            .put(&admin_room_key(admin), r.room_id().as_str())
                            .await;
                        r
                    }
                    Err(e) => {
                        warn!(error = %e, "could not open a direct chat with an admin");
                        continue;
                    }
                }
            }
        };
        let content = serde_json::json!({"msgtype": "m.notice", "body": text});
        if let Err(e) = room.send_raw("m.room.message", content).await {
            warn!(error = %e, "could not warn an admin");
        }
    }
}

pub(crate) struct BotSender {
    pub(crate) client: Client,
    pub(crate) rooms: Arc<RoomMap>,
    pub(crate) state: StateHandle,
    /// Appservice mode in an encrypted room: the text carries no name yet (ghosts carry it
    /// elsewhere), so the bot writes the per-message profile's fallback (`Name: text`) itself.
    pub(crate) name_fallback: bool,
    /// Linked rooms the homeserver said do not exist: sends to them are refused for good
    /// (counted drops), not retried until an invite that can't come.
    pub(crate) missing: Arc<HashSet<OwnedRoomId>>,
    /// The largest attachment uploaded, and whether private addresses may be fetched.
    pub(crate) max_upload: u64,
    pub(crate) fetch_private: bool,
}

fn reaction_key(room: &matrix_sdk::ruma::RoomId, target: &str, key: &str, sender: &str) -> String {
    format!("reaction\u{1f}{room}\u{1f}{target}\u{1f}{key}\u{1f}{sender}")
}

impl BotSender {
    pub(crate) async fn send(&self, out: &Outbound) -> Result<Receipt, SendError> {
        let event: &Event = &out.event;
        let passerelle_sdk::EventKind::Message(content) = &event.kind else {
            return self.send_event(event).await;
        };
        if content.attachments.is_empty() {
            return self.send_event(event).await;
        }
        // The text first (when there is one), then each file: uploaded (encrypted in an
        // encrypted room) and sent as its own event. Transaction ids come from the event key,
        // so a retry after a partial failure repeats nothing.
        let mut first = None;
        if !content.text.is_empty() {
            let mut text_only = event.clone();
            if let passerelle_sdk::EventKind::Message(c) = &mut text_only.kind {
                c.attachments.clear();
            }
            first = self.send_event(&text_only).await?.remote_id;
        }
        let room = self.joined(event)?;
        for (i, att) in content.attachments.iter().enumerate() {
            let txn = translate::txn_id(&event.key, &format!("a{i}"));
            let file = match passerelle_sdk::fetch::fetch(att, self.max_upload, self.fetch_private)
                .await
            {
                Ok(file) => file,
                // A file that can't be fetched goes as its link: retrying would hold the room.
                Err(e) => {
                    debug!(
                        reason = e.reason(),
                        "attachment not fetched; its link is sent"
                    );
                    let content = serde_json::json!({
                        "msgtype": "m.text", "body": media::link_text(att), "m.mentions": {}
                    });
                    let sent = room
                        .send_raw("m.room.message", content)
                        .with_transaction_id(&OwnedTransactionId::from(txn))
                        .await
                        .map_err(|e| errors::send_error(errors::meaning(&e)))?;
                    first.get_or_insert_with(|| {
                        RemoteMessageId::new(sent.response.event_id.as_str())
                    });
                    continue;
                }
            };
            let mime: mime::Mime = file.mime.parse().unwrap_or(mime::APPLICATION_OCTET_STREAM);
            let config = AttachmentConfig::new().txn_id(OwnedTransactionId::from(txn));
            let sent = room
                .send_attachment(att.name.as_str(), &mime, file.data, config)
                .await
                .map_err(|e| errors::send_error(errors::meaning(&e)))?;
            first.get_or_insert_with(|| RemoteMessageId::new(sent.event_id.as_str()));
        }
        Ok(Receipt { remote_id: first })
    }

    /// The joined room an event goes to.
    fn joined(&self, event: &Event) -> Result<matrix_sdk::Room, SendError> {
        let room_id = self.rooms.id(&event.room).ok_or(SendError::RoomNotFound)?;
        match self.client.get_room(room_id) {
            Some(r) if r.state() == RoomState::Joined => Ok(r),
            _ if self.missing.contains(room_id) => Err(SendError::RoomNotFound),
            // Linked but not joined yet (no invite so far): try again later.
            _ => Err(SendError::Disconnected),
        }
    }

    async fn send_event(&self, event: &Event) -> Result<Receipt, SendError> {
        let room = self.joined(event)?;
        let room_id = room.room_id();
        let outgoing = translate::outbound(event).map_err(SendError::Unsupported)?;
        let txn = translate::txn_id(&event.key, "0");
        match outgoing {
            Outgoing::Send { kind, mut content } => {
                // A reply mentions the person answered, as clients do, so they are notified.
                if let Some(target) = &event.reply_to
                    && let Ok(id) = OwnedEventId::try_from(target.as_str())
                    && let Ok(answered) = room.event(&id, None).await
                    && let Ok(v) = serde_json::from_str::<Value>(answered.raw().json().get())
                    && let Some(sender) = v["sender"].as_str()
                    && Some(sender) != self.client.user_id().map(|u| u.as_str())
                {
                    translate::mention(&mut content, sender);
                }
                if kind == "m.room.message" {
                    if self.name_fallback {
                        translate::add_name_fallback(&mut content, event.sender.name());
                    }
                    content["com.beeper.per_message_profile"] =
                        translate::per_message_profile(event, self.name_fallback);
                }
                let result = room
                    .send_raw(kind, content)
                    .with_transaction_id(&OwnedTransactionId::from(txn.clone()))
                    .await;
                match result {
                    Ok(r) => {
                        if let passerelle_sdk::EventKind::Reaction { target, key, .. } = &event.kind
                        {
                            let _ = self
                                .state
                                .put(
                                    &reaction_key(
                                        room_id,
                                        target.as_str(),
                                        key.as_str(),
                                        event.sender.id.as_str(),
                                    ),
                                    r.response.event_id.as_str(),
                                )
                                .await;
                        }
                        Ok(Receipt {
                            remote_id: Some(RemoteMessageId::new(r.response.event_id.as_str())),
                        })
                    }
                    Err(e) => Err(errors::send_error(errors::meaning(&e))),
                }
            }
            Outgoing::Redact { target } => {
                let id = OwnedEventId::try_from(target.as_str())
                    .map_err(|_| SendError::Rejected("bad event id".into()))?;
                room.redact(&id, None, Some(OwnedTransactionId::from(txn.clone())))
                    .await
                    .map(|_| Receipt::default())
                    .map_err(|e| errors::send_error(errors::http_meaning(&e)))
            }
            Outgoing::Unreact { target, key } => {
                let k = reaction_key(room_id, &target, &key, event.sender.id.as_str());
                let Some(ours) = self
                    .state
                    .get(&k)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| String::from_utf8(b).ok())
                else {
                    return Ok(Receipt::default());
                };
                let id = OwnedEventId::try_from(ours.as_str())
                    .map_err(|_| SendError::Rejected("bad event id".into()))?;
                room.redact(&id, None, Some(OwnedTransactionId::from(txn.clone())))
                    .await
                    .map_err(|e| errors::send_error(errors::http_meaning(&e)))?;
                let _ = self.state.delete(&k).await;
                Ok(Receipt::default())
            }
            Outgoing::State { kind, content } => room
                .send_state_event_raw(kind, "", content)
                .await
                .map(|_| Receipt::default())
                .map_err(|e| errors::send_error(errors::meaning(&e))),
            Outgoing::Membership(_) => Err(SendError::Unsupported("membership")),
            Outgoing::Typing(_) => Err(SendError::Unsupported("typing")),
        }
    }
}

/// Whether `s` names a room (`!id` or `#alias:server`).
pub fn is_room(s: &str) -> bool {
    <&RoomOrAliasId>::try_from(s).is_ok()
}

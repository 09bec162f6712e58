//! Bot mode: one ordinary Matrix account driven by matrix-sdk, with end-to-end encryption and a
//! persistent store.
//!
//! Sync is driven here, one `sync_once` at a time, with our own sync token kept in the connector
//! state and advanced only after every event of a response has been handed to the daemon (which
//! acknowledges once it is stored). A crash therefore replays at most the last response, which the
//! daemon recognises by event id; nothing is missed.

use crate::admin;
use crate::client::{
    build_client, parse_user, reset_store, restore_saved, save_session, saved_session, whoami,
    write_private,
};
use crate::config::{BotSettings, Login, Settings};
use crate::errors::{self, Meaning};
use crate::held::Held;
use crate::media::{self, MediaLinks};
use crate::rooms::RoomMap;
use crate::sender::BotSender;
use crate::sync::Syncer;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::ruma::RoomOrAliasId;
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::{Client, RoomState, SessionMeta, SessionTokens};
use passerelle_sdk::{ConnectionState, ConnectorError, ConnectorIo};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

const SYNC_TOKEN: &str = "sync_token";

/// A bot-mode connector, built and ready to run.
pub struct Bot {
    pub(crate) cfg: Settings,
    pub(crate) bot: BotSettings,
    pub(crate) data_dir: PathBuf,
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
            self.cfg.media.public_url.as_deref(),
            io.account.as_str(),
            &self.data_dir,
        )
        .map_err(|e| ConnectorError::Fatal(format!("media link key: {e}")))?;
        if links.public() {
            io.http.serve(Arc::new(MediaEndpoint {
                links: links.clone(),
                client: client.clone(),
                homeserver: self.cfg.homeserver.clone(),
                max: self.cfg.media.max_upload_bytes,
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
            max_upload: self.cfg.media.max_upload_bytes,
            fetch_private: self.cfg.media.fetch_private,
        };
        let mut watch = admin::Watch::new(
            self.cfg.disconnect_warning_secs,
            !self.cfg.admins.is_empty(),
        );
        let result = loop {
            tokio::select! {
                _ = io.shutdown.cancelled() => break Ok(()),
                notes = watch.notes(&io.daemon) => {
                    for note in notes {
                        admin::notify(&client, &io.state, &self.cfg.admins, &note).await;
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

/// Whether `s` names a room (`!id` or `#alias:server`).
pub fn is_room(s: &str) -> bool {
    <&RoomOrAliasId>::try_from(s).is_ok()
}

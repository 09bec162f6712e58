//! # passerelle-mattermost
//!
//! The Mattermost connector (`kind = "mattermost"`): a bot account or a personal access token on
//! the REST API v4 and the WebSocket, both spoken directly (reqwest, tokio-tungstenite).
//!
//! A *room* is a channel id, or `~` and a channel's name in the account's `team`. Posts from the
//! other networks carry each person's name and avatar (`props.override_username`,
//! `override_icon_url`) where the server allows it, else the name before the text, and mention
//! nobody.
//!
//! Both ways: Markdown, threads (`root_id`), edits, deletes, reactions, files (uploaded; in
//! through signed links). A gap in the WebSocket's `seq` or a reconnect is caught up from each
//! room's posts since the last one stored.
//!
//! ## Layout
//! - [`config`]: the typed account table.
//! - [`api`]: REST calls, rate limits and errors.
//! - [`inbound`]: WebSocket events to events; the directory.
//! - [`outbound`]: events to REST calls.
//! - [`socket`]: the WebSocket and the catch-up.
//! - [`media`]: signed file links.

pub mod api;
pub mod config;
pub mod import;
pub mod inbound;
pub mod media;
pub mod outbound;
pub mod socket;
#[cfg(feature = "testing")]
/// A faithful fake of Mattermost's REST API and WebSocket for tests (feature `testing`).
pub mod testing;

use futures::future::BoxFuture;
use inbound::Directory;
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, ConnectionState, Connector, ConnectorError,
    ConnectorFactory, ConnectorIo, Receipt, RoomId, SendError,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Builds Mattermost connectors.
pub struct MattermostFactory;

impl ConnectorFactory for MattermostFactory {
    fn kind(&self) -> &'static str {
        "mattermost"
    }

    fn example(&self) -> &'static str {
        include_str!("../example.toml")
    }

    fn matterbridge(&self) -> Option<&dyn passerelle_sdk::import::MatterbridgeImport> {
        Some(&import::Import)
    }

    fn build(
        &self,
        ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>> {
        Ok(Box::new(MattermostConnector {
            settings: config::MattermostConfig::parse(table)?,
            data_dir: ctx.data_dir.clone(),
        }))
    }
}

/// One Mattermost account.
pub struct MattermostConnector {
    settings: config::Settings,
    data_dir: std::path::PathBuf,
}

/// The WebSocket's URL for a server's address.
pub fn websocket_url(url: &str) -> String {
    let ws = if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    };
    format!("{ws}/api/v4/websocket")
}

impl Connector for MattermostConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            deletes: true,
            reactions: true,
            replies: true,
            threads: true,
            attachments: true,
            rich_text: true,
            per_message_identity: self.settings.per_message_identity,
            ..Capabilities::default()
        }
    }

    fn limits(&self) -> passerelle_sdk::Limits {
        passerelle_sdk::Limits {
            max_text_bytes: None,
            max_upload_bytes: Some(self.settings.media.max_upload_bytes),
            ..Default::default()
        }
    }

    fn check_room(&self, room: &RoomId) -> Result<(), String> {
        match config::room(room.as_str()) {
            Some(config::Room::Named(_)) if self.settings.team.is_none() => {
                Err("a ~name room needs the account's team: set team".into())
            }
            Some(_) => Ok(()),
            None => Err("a Mattermost room is a channel id (26 letters and digits: the channel's menu, View Info) or ~ and a channel's name in the account's team".into()),
        }
    }

    fn room_kind(&self, _room: &RoomId) -> passerelle_sdk::RoomKind {
        passerelle_sdk::RoomKind::Group
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let settings = self.settings;
            let api = api::Api::new(&settings.url, &settings.token, settings.request_timeout)
                .map_err(ConnectorError::Fatal)?;
            io.status.set(ConnectionState::Connecting);
            let me = match api.get("users/me").await {
                Ok(v) => v,
                Err(e) if e.is_auth() => {
                    return Err(ConnectorError::AuthRejected(
                        "Mattermost refused the token (401): check token".into(),
                    ));
                }
                Err(e) => return Err(ConnectorError::Disconnected(format!("GET /users/me: {e}"))),
            };
            let me = me
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let dir = Arc::new(Directory::default());
            *dir.me.write().unwrap_or_else(|p| p.into_inner()) = me.clone();
            for room in &io.rooms {
                match config::room(room.as_str()) {
                    Some(config::Room::Channel(id)) => dir.bind(room, &id),
                    Some(config::Room::Named(name)) => {
                        let Some(team) = &settings.team else { continue };
                        match api
                            .get(&format!("teams/name/{team}/channels/name/{name}"))
                            .await
                        {
                            Ok(c) => match c.get("id").and_then(Value::as_str) {
                                Some(id) => dir.bind(room, id),
                                None => {
                                    tracing::warn!(room = %room, "the channel came without an id")
                                }
                            },
                            Err(e) if e.is_auth() => {
                                return Err(ConnectorError::AuthRejected(
                                    "Mattermost refused the token".into(),
                                ));
                            }
                            Err(e) => {
                                tracing::warn!(room = %room, error = %e, "no channel of this name in the team the bot can see")
                            }
                        }
                    }
                    None => {}
                }
            }
            // Whether posts may carry another name and icon.
            let overrides = settings.per_message_identity
                && match api.get("config/client?format=old").await {
                    Ok(c) => {
                        c.get("EnablePostUsernameOverride").and_then(Value::as_str) == Some("true")
                    }
                    Err(_) => false,
                };
            if settings.per_message_identity && !overrides {
                tracing::warn!(account = %io.account, "the server does not let integrations override usernames: posts name the sender in the text");
            }
            let links = SignedLinks::for_account(
                settings.media.public_url.as_deref(),
                io.account.as_str(),
                &self.data_dir,
            )?;
            io.http.serve(Arc::new(media::Endpoints {
                links: links.clone(),
                api: api.clone(),
                max_bytes: settings.media.max_upload_bytes,
            }));
            let intake = Arc::new(inbound::Intake {
                api: api.clone(),
                dir: dir.clone(),
                emitter: io.emitter.clone(),
                links,
                state: io.state.clone(),
            });
            let sender = outbound::Sender {
                api: api.clone(),
                dir: dir.clone(),
                settings: settings.clone(),
                overrides,
            };
            let stop = io.shutdown.child_token();
            let mut task = Some(tokio::spawn(
                socket::Socket {
                    api: api.clone(),
                    url: websocket_url(&settings.url),
                    intake,
                    status: io.status.clone(),
                    catch_up: settings.catch_up,
                    account: io.account.to_string(),
                }
                .run(stop.clone()),
            ));
            tracing::info!(account = %io.account, user = %me, "Mattermost account starting");
            let result = loop {
                let next = tokio::select! {
                    _ = io.shutdown.cancelled() => break Ok(()),
                    ended = async { match task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                        task = None;
                        match ended {
                            Ok(Ok(())) => break Ok(()),
                            Ok(Err(e)) => break Err(e),
                            Err(_) => break Err(ConnectorError::Disconnected("the WebSocket task ended".into())),
                        }
                    }
                    next = io.outbound.recv() => next,
                };
                let Some(out) = next else { break Ok(()) };
                if !io.rooms.contains(&out.event.room) {
                    out.respond(Err(SendError::RoomNotFound));
                    continue;
                }
                let sent = match dir.channel_of(&out.event.room) {
                    Some(channel) => sender.send(&channel, &out.event).await,
                    None => Err(SendError::RoomNotFound),
                };
                out.respond(sent.map(|id| Receipt {
                    remote_id: id.map(Into::into),
                }));
            };
            stop.cancel();
            if let Some(task) = task {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
            io.status.set(ConnectionState::Stopped);
            result
        })
    }
}

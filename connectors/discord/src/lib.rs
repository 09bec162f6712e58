//! # passerelle-discord
//!
//! The Discord connector (`kind = "discord"`): a bot on the Gateway (v10) and the REST API.
//!
//! A *room* is a channel id: a text or announcement channel, whose threads are threads, or a
//! forum, whose posts are threads; or `@` and a person's user id, their direct messages with the
//! bot. Messages from the other networks are sent through one webhook per channel, as the person
//! who wrote them (name and avatar), and never ping anyone (`allowed_mentions` empty).
//!
//! Both ways: text with Markdown, replies, threads and forum posts, edits, deletes, reactions
//! (custom emoji as `:name:` elsewhere), files (uploaded within `max_upload_bytes`, else links).
//! Rate limits are followed from the headers. After a gap the Gateway could not replay, what was
//! said is fetched from each room's history.
//!
//! ## Layout
//! - [`config`]: the typed account table.
//! - [`rest`]: the REST client, its rate limits and errors.
//! - [`directory`]: channels, threads, webhooks and what was seen.
//! - [`inbound`]: Gateway dispatches to events.
//! - [`outbound`]: events to REST calls.
//! - [`gateway`]: the Gateway connection and the catch-up.

pub mod config;
pub mod directory;
pub mod gateway;
pub mod import;
pub mod inbound;
pub mod outbound;
pub mod rest;
#[cfg(feature = "testing")]
/// A faithful fake of Discord's REST API and Gateway for tests (feature `testing`).
pub mod testing;

use directory::Directory;
use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, ConnectionState, Connector, ConnectorError,
    ConnectorFactory, ConnectorIo, Receipt, RoomId, SendError,
};
use std::sync::Arc;
use std::time::Duration;

/// Builds Discord connectors.
pub struct DiscordFactory;

impl ConnectorFactory for DiscordFactory {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn example(&self) -> &'static str {
        include_str!("../example.toml")
    }

    fn matterbridge(&self) -> Option<&dyn passerelle_sdk::import::MatterbridgeImport> {
        Some(&import::Import)
    }

    fn build(
        &self,
        _ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>> {
        Ok(Box::new(DiscordConnector {
            settings: config::DiscordConfig::parse(table)?,
        }))
    }
}

/// One bot.
pub struct DiscordConnector {
    settings: config::Settings,
}

impl Connector for DiscordConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            deletes: true,
            reactions: true,
            replies: true,
            threads: true,
            attachments: true,
            rich_text: true,
            per_message_identity: true,
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
        config::room(room.as_str()).map(|_| ()).ok_or_else(|| {
            "a Discord room is a channel id (digits: Developer Mode, right-click the channel, Copy Channel ID), # and a channel's name, or @ and a user id for their direct messages".to_owned()
        })
    }

    fn room_kind(&self, room: &RoomId) -> passerelle_sdk::RoomKind {
        match config::room(room.as_str()) {
            Some(config::Room::Direct(_)) => passerelle_sdk::RoomKind::Private,
            _ => passerelle_sdk::RoomKind::Group,
        }
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            // twilight's TLS asks rustls for the process's provider: make it aws-lc-rs, as the
            // rest of the daemon uses (an error only says one is installed already).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let settings = self.settings;
            let rest = rest::Rest::new(
                &settings.api_base,
                &settings.token,
                settings.request_timeout,
            )
            .map_err(ConnectorError::Fatal)?;
            let me = match rest.get("users/@me").await {
                Ok(me) => me,
                Err(rest::RestError::Unauthorized) => {
                    return Err(ConnectorError::AuthRejected(
                        "Discord refused the bot token (401)".into(),
                    ));
                }
                Err(e) => return Err(ConnectorError::Disconnected(format!("GET /users/@me: {e}"))),
            };
            let me = rest::snowflake(&me, "id").ok_or_else(|| {
                ConnectorError::Disconnected("GET /users/@me answered without an id".into())
            })?;
            let dir = Arc::new(Directory::with_guild(&io.rooms, settings.guild.clone()));
            dir.set_me(me, 0);
            let sender = Arc::new(outbound::Sender {
                rest: rest.clone(),
                dir: dir.clone(),
                settings: settings.clone(),
            });
            let stop = io.shutdown.child_token();
            let (fatal_tx, mut fatal) = tokio::sync::mpsc::channel::<ConnectorError>(1);
            let gateway = gateway::Gateway {
                rest: rest.clone(),
                dir: dir.clone(),
                sender: sender.clone(),
                emitter: io.emitter.clone(),
                state: io.state.clone(),
                status: io.status.clone(),
                account: io.account.to_string(),
            };
            let task = tokio::spawn(gateway.run(stop.clone(), fatal_tx));
            tracing::info!(account = %io.account, bot = me, "Discord bot starting");
            let result = loop {
                let next = tokio::select! {
                    _ = io.shutdown.cancelled() => break Ok(()),
                    Some(e) = fatal.recv() => break Err(e),
                    next = io.outbound.recv() => next,
                };
                let Some(out) = next else { break Ok(()) };
                if !io.rooms.contains(&out.event.room) {
                    out.respond(Err(SendError::RoomNotFound));
                    continue;
                }
                let sent = match sender.channel_of(out.event.room.as_str()).await {
                    Ok(channel) => sender.send(channel, &out.event).await,
                    Err(e) => Err(e),
                };
                out.respond(sent.map(|id| Receipt {
                    remote_id: id.map(Into::into),
                }));
            };
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            io.status.set(ConnectionState::Stopped);
            result
        })
    }
}

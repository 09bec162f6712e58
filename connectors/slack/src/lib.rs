//! # passerelle-slack
//!
//! The Slack connector (`kind = "slack"`): a Slack app's bot, receiving by Socket Mode (default;
//! no public address needed) or the HTTP Events API, and sending through the Web API.
//!
//! A *room* is a conversation id (`C…`, `G…`, `D…`), `#` and a channel's name, or `@` and a
//! person's user id for their direct messages with the bot. Messages from the other networks are
//! posted as the person who wrote them (`username`, `icon_url`), in mrkdwn that can ping nobody.
//!
//! Both ways: text with formatting (mrkdwn ⇄ the bus's HTML), threads (`thread_ts`), edits,
//! deletes, reactions, files (the external upload flow; Slack's files offered through signed
//! links). Mentions are resolved to names. Rate limits are Slack's tiers, and `Retry-After` is
//! waited out.
//!
//! ## Layout
//! - [`config`]: the typed account table.
//! - [`api`]: the Web API (slack-morphism), its tiers and errors.
//! - [`directory`]: who we are, rooms' conversations, people's and channels' names.
//! - [`inbound`]: Events API payloads to events.
//! - [`outbound`]: events to Web API calls.
//! - [`socket`]: Socket Mode and the catch-up after a reconnect.
//! - [`hook`]: the HTTP Events API and signed file links.

pub mod api;
pub mod config;
pub mod directory;
pub mod hook;
pub mod import;
pub mod inbound;
pub mod outbound;
pub mod socket;
#[cfg(feature = "testing")]
/// A faithful fake of Slack's Web API and Socket Mode for tests (feature `testing`).
pub mod testing;

use directory::{Directory, Me};
use futures::future::BoxFuture;
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, ConnectionState, Connector, ConnectorError,
    ConnectorFactory, ConnectorIo, Receipt, RoomId, SendError,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Builds Slack connectors.
pub struct SlackFactory;

impl ConnectorFactory for SlackFactory {
    fn kind(&self) -> &'static str {
        "slack"
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
        Ok(Box::new(SlackConnector {
            settings: config::SlackConfig::parse(table)?,
            data_dir: ctx.data_dir.clone(),
        }))
    }
}

/// One Slack app.
pub struct SlackConnector {
    settings: config::Settings,
    data_dir: std::path::PathBuf,
}

impl Connector for SlackConnector {
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
        config::room(room.as_str()).map(|_| ()).ok_or_else(|| {
            "a Slack room is a conversation id (C…, G… or D…: the channel's details, at the bottom), # and a channel's name, or @ and a member id (U…) for their direct messages".to_owned()
        })
    }

    fn room_kind(&self, room: &RoomId) -> passerelle_sdk::RoomKind {
        match config::room(room.as_str()) {
            Some(config::Room::Direct(_)) => passerelle_sdk::RoomKind::Private,
            Some(config::Room::Conversation(c)) if c.starts_with('D') => {
                passerelle_sdk::RoomKind::Private
            }
            _ => passerelle_sdk::RoomKind::Group,
        }
    }

    /// In events mode (Socket Mode has no hook).
    fn relay(
        &self,
        account: &passerelle_sdk::AccountId,
    ) -> Option<Arc<dyn passerelle_sdk::relay::Relay>> {
        let signing = self.settings.signing_secret.clone()?;
        Some(Arc::new(hook::HookRelay {
            account: account.to_string(),
            signing,
        }))
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let settings = self.settings;
            let api = api::Api::new(&settings).map_err(ConnectorError::Fatal)?;
            io.status.set(ConnectionState::Connecting);
            let me = match api
                .call("auth.test", &serde_json::json!({}), api::Tier::T4)
                .await
            {
                Ok(v) => v,
                Err(e) if e.is_auth() => {
                    return Err(ConnectorError::AuthRejected(format!(
                        "Slack refused the bot token ({e}): check bot_token"
                    )));
                }
                Err(e) => return Err(ConnectorError::Disconnected(format!("auth.test: {e}"))),
            };
            let field = |k: &str| me.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let dir = Arc::new(Directory::default());
            dir.set_me(Me {
                user: field("user_id"),
                bot: field("bot_id"),
                team: field("team_id"),
            });
            match dir.resolve(&api, &io.rooms).await {
                Ok(()) => {}
                Err(e) if e.is_auth() => {
                    return Err(ConnectorError::AuthRejected(format!(
                        "Slack refused the bot token ({e})"
                    )));
                }
                Err(e) => {
                    return Err(ConnectorError::Disconnected(format!(
                        "the rooms' channels: {e}"
                    )));
                }
            }
            let links = SignedLinks::for_account(
                settings.media.public_url.as_deref(),
                io.account.as_str(),
                &self.data_dir,
            )?;
            let intake = Arc::new(inbound::Intake {
                api: api.clone(),
                dir: dir.clone(),
                emitter: io.emitter.clone(),
                links: links.clone(),
                state: io.state.clone(),
            });
            io.http.serve(Arc::new(hook::Endpoints {
                account: io.account.to_string(),
                signing: settings.signing_secret.clone(),
                intake: intake.clone(),
                links,
                api: api.clone(),
                max_bytes: settings.media.max_upload_bytes,
            }));
            let sender = outbound::Sender {
                api: api.clone(),
                dir: dir.clone(),
                settings: settings.clone(),
            };
            let stop = io.shutdown.child_token();
            let socket = match settings.mode {
                config::Mode::Socket => Some(tokio::spawn(
                    socket::Socket {
                        api: api.clone(),
                        intake: intake.clone(),
                        status: io.status.clone(),
                        catch_up: settings.catch_up,
                        account: io.account.to_string(),
                    }
                    .run(stop.clone()),
                )),
                config::Mode::Events => {
                    // Slack calls us: connected once the rooms are known; what was said while
                    // the daemon was down is read from history now.
                    io.status.set(ConnectionState::Connected);
                    if let Err(passerelle_sdk::EmitError::ShuttingDown) =
                        socket::catch_up(&api, &intake, settings.catch_up).await
                    {
                        return Ok(());
                    }
                    None
                }
            };
            tracing::info!(account = %io.account, bot = %dir.me().user, "Slack app starting");
            let mut socket = socket;
            let result = loop {
                let next = tokio::select! {
                    _ = io.shutdown.cancelled() => break Ok(()),
                    ended = async { match socket.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                        socket = None;
                        match ended {
                            Ok(Ok(())) => break Ok(()),
                            Ok(Err(e)) => break Err(e),
                            Err(_) => break Err(ConnectorError::Disconnected("the Socket Mode task ended".into())),
                        }
                    }
                    next = io.outbound.recv() => next,
                };
                let Some(out) = next else { break Ok(()) };
                if !io.rooms.contains(&out.event.room) {
                    out.respond(Err(SendError::RoomNotFound));
                    continue;
                }
                let sent = match dir.conversation_of(&out.event.room) {
                    Some(conversation) => sender.send(&conversation, &out.event).await,
                    None => Err(SendError::RoomNotFound),
                };
                if let Err(e) = &sent
                    && matches!(e, SendError::Rejected(why) if why.contains("refused the token"))
                {
                    out.respond(sent.map(|id| Receipt {
                        remote_id: id.map(Into::into),
                    }));
                    break Err(ConnectorError::AuthRejected(
                        "Slack refused the bot token".into(),
                    ));
                }
                out.respond(sent.map(|id| Receipt {
                    remote_id: id.map(Into::into),
                }));
            };
            stop.cancel();
            if let Some(task) = socket {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
            io.status.set(ConnectionState::Stopped);
            result
        })
    }
}

//! # passerelle-api
//!
//! The HTTP message API connector (`kind = "api"`): scripts and bots post into a link and read
//! what it carries, with matterbridge's API message shape so existing scripts keep working.
//!
//! Each API account listens on its own address. Every endpoint but `/api/health` needs
//! `Authorization: Bearer <token>`. A *room* of an API account is a gateway name: the `gateway`
//! field of a message.
//!
//! | endpoint | what it does |
//! | --- | --- |
//! | `GET /api/health` | `OK` |
//! | `POST /api/message` | posts one message (JSON body); answers the message with its new `id` |
//! | `GET /api/messages` | the messages received since the last call (a JSON array), then forgets them |
//! | `GET /api/stream` | newline-delimited JSON, one message per line, as they arrive |
//! | `GET /api/websocket` | the same as WebSocket text frames; frames sent by the client are posted |
//!
//! Posting: `text` and `gateway` are required; `username`, `userid` and `avatar` name the sender;
//! `event` is `""` (a message), `"user_action"` (`/me`), `"msg_delete"` (delete message `id`) or
//! `"topic_change"`; a post with an `id` and an empty `event` edits that message; `parent_id`
//! makes it a reply.
//!
//! ## Layout
//! - [`config`]: the account's typed config.
//! - [`message`]: the matterbridge-compatible message shape and its translation to and from events.
//! - [`server`]: the HTTP endpoints.

pub mod config;
pub mod import;
pub mod message;
pub mod server;

use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, ConnectionState, Connector, ConnectorError,
    ConnectorFactory, ConnectorIo, Receipt,
};
use std::sync::Arc;

/// Builds API connectors.
pub struct ApiFactory;

impl ConnectorFactory for ApiFactory {
    fn kind(&self) -> &'static str {
        "api"
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
        Ok(Box::new(ApiConnector {
            config: config::ApiConfig::parse(table)?,
        }))
    }
}

/// One API account.
pub struct ApiConnector {
    config: config::Settings,
}

impl Connector for ApiConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            deletes: true,
            replies: true,
            per_message_identity: true,
            topic: true,
            ..Capabilities::default()
        }
    }

    fn follows_room_changes(&self) -> bool {
        true
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(self.config.listen)
                .await
                .map_err(|e| {
                    ConnectorError::Disconnected(format!(
                        "cannot listen on {}: {e}",
                        self.config.listen
                    ))
                })?;
            let hub = Arc::new(server::Hub::new(self.config.buffer));
            let rooms = Arc::new(std::sync::RwLock::new(io.rooms.clone()));
            let app = server::router(server::AppState {
                token: Arc::new(self.config.token.clone()),
                emitter: io.emitter.clone(),
                rooms: rooms.clone(),
                hub: hub.clone(),
                max_body: self.config.max_body_bytes,
            });
            tracing::info!(account = %io.account, listen = %self.config.listen, "API listening");
            io.status.set(ConnectionState::Connected);
            let stop = io.shutdown.clone();
            let serve_stop = stop.clone();
            let name = io.account.clone();
            let mut server = tokio::spawn(async move {
                passerelle_sdk::front::serve(
                    listener,
                    app,
                    passerelle_sdk::front::FrontLimits::default(),
                    &name,
                    serve_stop,
                )
                .await
            });
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    served = &mut server => {
                        return Err(ConnectorError::Disconnected(match served {
                            Ok(Ok(())) => "API listener stopped".to_owned(),
                            Ok(Err(e)) => format!("API listener failed: {e}"),
                            Err(e) => format!("API listener task failed: {e}"),
                        }));
                    }
                    now = io.room_updates.changed() => {
                        // Gateways a reload adds are served at once, on the same listener.
                        *rooms.write().unwrap_or_else(|e| e.into_inner()) = now;
                    }
                    next = io.outbound.recv() => {
                        let Some(outbound) = next else { break };
                        let known = rooms
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(&outbound.event.room);
                        let result = if !known {
                            Err(passerelle_sdk::SendError::RoomNotFound)
                        } else {
                            message::ApiMessage::from_outbound(&outbound)
                        }
                        .map(|mut msg| {
                            // As matterbridge: the protocol is the origin account's kind.
                            if let Some(origin) = io
                                .daemon
                                .accounts()
                                .into_iter()
                                .find(|a| a.account == outbound.origin)
                            {
                                msg.protocol = origin.kind;
                            }
                            let id = msg.new_id.then(|| msg.id.clone());
                            hub.publish(msg);
                            Receipt { remote_id: id.map(Into::into) }
                        });
                        outbound.respond(result);
                    }
                }
            }
            hub.close();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
            Ok(())
        })
    }
}

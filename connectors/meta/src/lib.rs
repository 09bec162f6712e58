//! # passerelle-meta
//!
//! Connectors for Meta's three business messaging APIs, on their official interfaces only:
//! WhatsApp Business Cloud API (`kind = "whatsapp"`), Messenger Platform (`kind = "messenger"`)
//! and Instagram Messaging (`kind = "instagram"`). One crate serves the three kinds because they
//! share the Graph API, its error shape, the webhook signature and subscription handshake, and
//! (Messenger and Instagram) one webhook format; what differs is in [`kind::Kind`].
//!
//! A *room* is one person: their WhatsApp id (the phone number without `+`), or their Page- or
//! Instagram-scoped id. These networks have no group chats open to business APIs.
//!
//! Inbound, Meta calls the daemon at `/hooks/NAME` (set that URL, and `verify_token`, in the app's
//! webhook settings). The body's signature is checked before anything else; the answer is 200
//! once every event is durably queued, so Meta delivers again whatever was not. Redelivered
//! events are dropped by the daemon on their message ids.
//!
//! | | WhatsApp | Messenger | Instagram |
//! | --- | --- | --- | --- |
//! | text both ways | yes | yes | yes |
//! | replies | both ways | inbound (outbound quoted by the core) | inbound (outbound quoted) |
//! | reactions | both ways | inbound | inbound |
//! | edits | no | inbound | no |
//! | deletes | no | no | inbound (unsend) |
//! | files in | signed link through the daemon | Meta's link | Meta's link |
//! | files out | uploaded (`/media`) | link | link |
//!
//! ## Layout
//! - [`config`]: the typed account table.
//! - [`kind`]: the three networks' differences.
//! - [`graph`]: the Graph API client and its errors mapped to typed send errors.
//! - [`inbound`]: webhook bodies to events.
//! - [`outbound`]: events to Graph sends.
//! - [`hook`]: the account's HTTP endpoints (the webhook and the media links).
//! - [`profile`]: Messenger and Instagram people's names, from the User Profile APIs.

pub mod config;
pub mod graph;
pub mod hook;
pub mod import;
pub mod inbound;
pub mod kind;
pub mod outbound;
pub mod profile;
#[cfg(feature = "testing")]
/// A faithful fake of Meta's Graph API and webhook deliveries for tests (feature `testing`).
pub mod testing;

use futures::future::BoxFuture;
use kind::Kind;
use passerelle_sdk::signed_link::SignedLinks;
use passerelle_sdk::webhook::{DEFAULT_MAX_BODY, HookCheck, HookSettings, Proof, WebhookEndpoint};
use passerelle_sdk::{
    AccountId, BuildContext, Capabilities, ConfigIssue, ConnectionState, Connector, ConnectorError,
    ConnectorFactory, ConnectorIo, Limits, Receipt, RoomId, SendError,
};
use std::sync::Arc;

/// Builds connectors of one Meta kind.
pub struct MetaFactory(pub Kind);

/// The WhatsApp factory.
pub const WHATSAPP: MetaFactory = MetaFactory(Kind::WhatsApp);
/// The Messenger factory.
pub const MESSENGER: MetaFactory = MetaFactory(Kind::Messenger);
/// The Instagram factory.
pub const INSTAGRAM: MetaFactory = MetaFactory(Kind::Instagram);

impl ConnectorFactory for MetaFactory {
    fn kind(&self) -> &'static str {
        self.0.name()
    }

    fn example(&self) -> &'static str {
        include_str!("../example.toml")
    }

    fn matterbridge(&self) -> Option<&dyn passerelle_sdk::import::MatterbridgeImport> {
        (self.0 == Kind::WhatsApp)
            .then_some(&import::Import as &dyn passerelle_sdk::import::MatterbridgeImport)
    }

    fn build(
        &self,
        ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>> {
        let config = config::MetaConfig::parse(self.0, table)?;
        Ok(Box::new(MetaConnector {
            config,
            data_dir: ctx.data_dir.clone(),
        }))
    }
}

/// One Meta account.
pub struct MetaConnector {
    config: config::Settings,
    data_dir: std::path::PathBuf,
}

/// How Meta's calls to the hook are proved: the app secret's signature, the verify token's
/// handshake.
fn hook_settings(cfg: &config::Settings) -> HookSettings {
    HookSettings {
        proof: Proof::HubSignature256 {
            app_secret: cfg.app_secret.clone(),
        },
        verify_token: Some(cfg.verify_token.clone()),
        max_body: DEFAULT_MAX_BODY,
    }
}

impl Connector for MetaConnector {
    fn capabilities(&self) -> Capabilities {
        let whatsapp = self.config.kind == Kind::WhatsApp;
        Capabilities {
            replies: whatsapp,
            reactions: whatsapp,
            attachments: true,
            ..Capabilities::default()
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_text_bytes: None,
            max_upload_bytes: Some(self.config.media.max_upload_bytes),
            ..Default::default()
        }
    }

    fn check_room(&self, room: &RoomId) -> Result<(), String> {
        if config::numeric(room.as_str()) {
            Ok(())
        } else {
            Err(match self.config.kind {
                Kind::WhatsApp => "a WhatsApp room is a phone number in digits, without '+'",
                Kind::Messenger => "a Messenger room is a person's page-scoped id (digits)",
                Kind::Instagram => "an Instagram room is a person's Instagram-scoped id (digits)",
            }
            .to_owned())
        }
    }

    fn room_kind(&self, _room: &RoomId) -> passerelle_sdk::RoomKind {
        // WhatsApp's Cloud API, Messenger and Instagram chats are each with one person.
        passerelle_sdk::RoomKind::Private
    }

    fn relay(&self, account: &AccountId) -> Option<Arc<dyn passerelle_sdk::relay::Relay>> {
        Some(Arc::new(HookCheck::new(
            account.as_str(),
            hook_settings(&self.config),
        )))
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let cfg = self.config;
            let graph =
                graph::Graph::new(&cfg.api_base, cfg.access_token.clone(), cfg.request_timeout)
                    .map_err(ConnectorError::Fatal)?;
            // The token is checked once at start, so a wrong one stops the account at once.
            match graph.get(&format!("{}?fields=id", cfg.id)).await {
                Ok(_) => {}
                Err(e) if e.is_auth() => {
                    return Err(ConnectorError::AuthRejected(format!(
                        "{} refused access_token: {e}",
                        cfg.kind.name()
                    )));
                }
                Err(e @ graph::GraphError::Unreachable(_)) => {
                    return Err(ConnectorError::Disconnected(e.to_string()));
                }
                Err(e) => {
                    return Err(ConnectorError::Config(format!(
                        "{} id {} not usable with this token: {e}",
                        cfg.kind.name(),
                        cfg.id
                    )));
                }
            }
            // Only WhatsApp's media need the token; Messenger's and Instagram's links are public.
            let public = cfg
                .media
                .public_url
                .as_deref()
                .filter(|_| cfg.kind == Kind::WhatsApp);
            let links = SignedLinks::for_account(public, io.account.as_str(), &self.data_dir)?;
            let sink = hook::Sink {
                kind: cfg.kind,
                id: cfg.id.clone(),
                links: links.clone(),
                emitter: io.emitter.clone(),
                state: io.state.clone(),
                account: io.account.to_string(),
                graph: graph.clone(),
                profiles: Default::default(),
            };
            let endpoint =
                WebhookEndpoint::new(io.account.as_str(), hook_settings(&cfg), Arc::new(sink));
            io.http.serve(Arc::new(hook::Endpoints {
                webhook: endpoint,
                links,
                graph: graph.clone(),
                max_bytes: cfg.media.max_upload_bytes,
            }));
            tracing::info!(account = %io.account, kind = cfg.kind.name(), "webhook ready at /hooks/{}", io.account);
            io.status.set(ConnectionState::Connected);
            let sender = outbound::Sender {
                config: &cfg,
                graph: &graph,
            };
            let result = loop {
                let next = tokio::select! {
                    _ = io.shutdown.cancelled() => break Ok(()),
                    next = io.outbound.recv() => next,
                };
                let Some(out) = next else { break Ok(()) };
                if !io.rooms.contains(&out.event.room) {
                    out.respond(Err(SendError::RoomNotFound));
                    continue;
                }
                match sender.send(&out.event).await {
                    Ok(id) => out.respond(Ok(Receipt {
                        remote_id: id.map(Into::into),
                    })),
                    Err(f) if f.auth => {
                        out.respond(Err(SendError::Disconnected));
                        break Err(ConnectorError::AuthRejected(format!(
                            "{} refused access_token while sending",
                            cfg.kind.name()
                        )));
                    }
                    Err(f) => {
                        if let SendError::WindowClosed(_) = &f.error {
                            tracing::warn!(account = %io.account, room = %out.event.room, "not sent: the 24-hour customer-service window is closed; the person must write first");
                        }
                        out.respond(Err(f.error));
                    }
                }
            };
            io.status.set(ConnectionState::Stopped);
            result
        })
    }
}

//! # passerelle-xmpp
//!
//! The XMPP connector (`kind = "xmpp"`), on tokio-xmpp's XML streams and xmpp-parsers: a client
//! account (STARTTLS or direct TLS, SASL SCRAM/PLAIN) that joins multi-user chat rooms and talks
//! with configured people directly, or an external component (XEP-0114) in whose domain each
//! person from another network has their own address and occupant.
//!
//! Rooms are room addresses (`room@conference.example.org`) or `dm:user@example.org` for the
//! direct chat with one person; a direct message from anyone else, and a private message from a
//! room occupant, is never bridged. Corrections, replies, reactions, retractions, moderation,
//! stable ids, occupant ids, out-of-band links and `/me` are mapped both ways where XMPP has
//! them (see [`stanza`]).
//!
//! ## Layout
//! - [`config`]: the account's typed config, and what a room id may be.
//! - [`transport`]: TCP, TLS, login and binding; or the component handshake.
//! - [`bounds`]: every stanza's depth and size bounded on the raw bytes, before any parser.
//! - [`nsswap`]: a component connection under parsers built for client streams.
//! - [`stanza`]: message stanzas ↔ the event model, without I/O.
//! - [`upload`]: HTTP File Upload (XEP-0363) for files from other networks.
//! - [`memory`]: ids, reaction sets and the last message seen, per room, in the connector state.
//! - [`session`]: one connection: joins, the read/send loop, confirmations, keep-alive.

pub mod bounds;
pub mod config;
pub mod import;
pub mod memory;
pub mod nsswap;
pub mod session;
pub mod stanza;
#[cfg(feature = "testing")]
/// A throwaway Prosody and a plain XMPP client for tests (feature `testing`).
pub mod testing;
pub mod transport;
pub mod upload;

use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, Connector, ConnectorError, ConnectorFactory,
    ConnectorIo, Limits,
};

/// Builds XMPP connectors.
pub struct XmppFactory;

impl ConnectorFactory for XmppFactory {
    fn kind(&self) -> &'static str {
        "xmpp"
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
        Ok(Box::new(XmppConnector {
            settings: config::XmppConfig::parse(table)?,
        }))
    }
}

/// One XMPP account.
pub struct XmppConnector {
    settings: config::Settings,
}

impl Connector for XmppConnector {
    fn capabilities(&self) -> Capabilities {
        // Client mode: one account speaks for everyone, so the core puts the sender's name in
        // the text. Component mode: each person speaks as their own puppet.
        let puppets = self.settings.mode == config::Mode::Component;
        Capabilities {
            per_message_identity: puppets,
            puppets,
            edits: true,
            deletes: true,
            reactions: true,
            replies: true,
            // Uploaded with HTTP File Upload where the server has it, else sent as links.
            attachments: true,
            ..Capabilities::default()
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_text_bytes: Some(stanza::MAX_BODY_BYTES),
            max_upload_bytes: Some(self.settings.max_upload),
            ..Default::default()
        }
    }

    fn check_room(&self, room: &passerelle_sdk::RoomId) -> Result<(), String> {
        config::parse_room(room.as_str()).map(|_| ())
    }

    fn room_kind(&self, room: &passerelle_sdk::RoomId) -> passerelle_sdk::RoomKind {
        match config::parse_room(room.as_str()) {
            Ok(config::RoomKind::Direct(_)) => passerelle_sdk::RoomKind::Private,
            _ => passerelle_sdk::RoomKind::Group,
        }
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let session = tokio::select! {
                _ = io.shutdown.cancelled() => return Ok(()),
                s = session::Session::open(&self.settings, io) => s?,
            };
            tracing::info!(account = %io.account, jid = %session.jid(), "XMPP logged in");
            session.run(io).await
        })
    }
}

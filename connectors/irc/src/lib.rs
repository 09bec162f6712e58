//! # passerelle-irc
//!
//! The IRC connector (`kind = "irc"`), written directly on tokio: TLS through rustls, SASL PLAIN,
//! IRCv3 capability negotiation (`message-tags`, `server-time`, `echo-message` where offered),
//! keep-alive PINGs and a dead-link timeout, nick fallback, channel keys, UTF-8-safe splitting at
//! the protocol's 512-byte line limit, `/me` actions, formatting codes turned into plain text and
//! the HTML subset, and an outbound rate limit.
//!
//! Rooms are channels (`#name`); private messages are never bridged. IRC has no message ids
//! (unless the server tags them), no edits, no reactions: the core degrades those before they
//! reach this connector.
//!
//! ## Layout
//! - [`config`]: the account's typed config.
//! - [`line`]: the line parser and builder.
//! - [`format`]: formatting codes and CTCP.
//! - [`split`]: splitting long text.
//! - [`transport`]: TCP/TLS and the bounded line reader.
//! - [`session`]: one connection: registration, joins, the read/send loop.

pub mod address;
pub mod config;
pub mod format;
pub mod import;
pub mod line;
pub mod session;
pub mod split;
pub mod transport;

use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, Connector, ConnectorError, ConnectorFactory,
    ConnectorIo,
};

/// Builds IRC connectors.
pub struct IrcFactory;

impl ConnectorFactory for IrcFactory {
    fn kind(&self) -> &'static str {
        "irc"
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
        Ok(Box::new(IrcConnector {
            settings: config::IrcConfig::parse(table)?,
        }))
    }
}

/// One IRC account.
pub struct IrcConnector {
    settings: config::Settings,
}

impl Connector for IrcConnector {
    fn capabilities(&self) -> Capabilities {
        // Plain text with the sender's name in it; the core quotes replies and resends edits.
        Capabilities::default()
    }

    fn limits(&self) -> passerelle_sdk::Limits {
        passerelle_sdk::Limits {
            max_lines: self.settings.max_lines,
            line_bytes: Some(session::LINE_TEXT_BYTES),
            ..Default::default()
        }
    }

    fn check_room(&self, room: &passerelle_sdk::RoomId) -> Result<(), String> {
        if session::is_channel(room.as_str()) && !room.as_str().contains([' ', ',', '\x07']) {
            Ok(())
        } else {
            Err("an IRC room is a channel name such as \"#passerelle\" (private messages are never bridged)".into())
        }
    }

    fn follows_room_changes(&self) -> bool {
        // Channels a reload adds are joined, and those it removes left, on the same connection.
        true
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let rooms = io.rooms.clone();
            let session = tokio::select! {
                _ = io.shutdown.cancelled() => return Ok(()),
                s = session::Session::open(&self.settings, &rooms) => s?,
            };
            tracing::info!(
                account = %io.account,
                nick = %session.nick(),
                caps = session.caps().len(),
                "IRC registered"
            );
            session.run(io).await
        })
    }
}

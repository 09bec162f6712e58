//! # passerelle-matrix
//!
//! The Matrix connector, `kind = "matrix"`, in two modes:
//! - **bot** (`mode = "bot"`): one Matrix account driven by matrix-sdk, with end-to-end encryption
//!   and a persistent store; remote people are named in the message.
//! - **appservice** (`mode = "appservice"`): the daemon serves the Application Service API and remote
//!   people appear as ghost users.
//!
//! ## Layout
//! - [`config`]: the account's keys, checked with key paths.
//! - [`translate`]: Matrix event JSON ↔ the event model, shared by both modes.
//! - [`html`]: the safe HTML subset both ways.
//! - [`rooms`]: configured room names ↔ Matrix room ids.
//! - [`errors`]: homeserver errors → typed SDK errors.
//! - `bot`: bot mode.
#![recursion_limit = "256"]
#![deny(missing_docs)]

mod bot;
pub mod config;
pub mod errors;
pub mod html;
pub mod rooms;
pub mod translate;

use config::{MatrixConfig, ModeSettings, Resolved};
use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, Connector, ConnectorError, ConnectorFactory,
    ConnectorIo, Limits, RoomId,
};

/// Builds Matrix connectors.
pub struct MatrixFactory;

impl ConnectorFactory for MatrixFactory {
    fn kind(&self) -> &'static str {
        "matrix"
    }

    fn build(
        &self,
        ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>> {
        let cfg = MatrixConfig::parse(table)?;
        match &cfg.mode {
            ModeSettings::Bot(bot) => Ok(Box::new(MatrixConnector {
                mode: Mode::Bot(bot::Bot {
                    bot: bot.clone(),
                    cfg: cfg.clone(),
                    data_dir: ctx.data_dir.clone(),
                }),
            })),
            ModeSettings::Appservice(_) => Err(vec![ConfigIssue::new(
                "mode",
                "appservice mode is not available in this build yet",
            )]),
        }
    }
}

enum Mode {
    Bot(bot::Bot),
}

/// A Matrix account.
pub struct MatrixConnector {
    mode: Mode,
}

impl MatrixConnector {
    fn config(&self) -> &Resolved {
        match &self.mode {
            Mode::Bot(b) => &b.cfg,
        }
    }
}

impl Connector for MatrixConnector {
    fn capabilities(&self) -> Capabilities {
        let _ = self.config();
        Capabilities {
            edits: true,
            deletes: true,
            reactions: true,
            replies: true,
            threads: true,
            attachments: false,
            rich_text: true,
            per_message_identity: false,
            puppets: false,
            typing: false,
            membership: false,
            topic: true,
        }
    }

    fn limits(&self) -> Limits {
        // Synapse refuses events over 65,536 bytes of JSON; leave room for the envelope.
        Limits {
            max_text_bytes: Some(30_000),
            max_upload_bytes: None,
        }
    }

    fn check_room(&self, room: &RoomId) -> Result<(), String> {
        if bot::is_room(room.as_str()) {
            Ok(())
        } else {
            Err("not a Matrix room id (!…) or alias (#…:server)".into())
        }
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            match self.mode {
                Mode::Bot(b) => b.run(io).await,
            }
        })
    }
}

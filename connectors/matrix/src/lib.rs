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
//! - [`media`]: fetching attachments safely for upload.
//! - [`rooms`]: configured room names ↔ Matrix room ids.
//! - [`errors`]: homeserver errors → typed SDK errors.
//! - [`admin`]: the management room's commands and the disconnect watchdog.
//! - [`ghost`]: ghost user ids.
//! - [`appservice`]: appservice mode (transactions, ghosts, the registration file).
//! - `bot`: bot mode.
#![recursion_limit = "256"]
#![deny(missing_docs)]

pub mod admin;
pub mod appservice;
pub(crate) mod bot;
pub(crate) mod client;
pub mod config;
pub mod errors;
pub mod ghost;
pub mod held;
pub mod import;
pub mod media;
pub(crate) mod plan;
pub mod rooms;
pub(crate) mod sender;
pub(crate) mod sync;
#[cfg(feature = "testing")]
/// A throwaway Synapse and a plain Matrix client for tests (feature `testing`).
pub mod testing;
pub mod translate;

use config::{MatrixConfig, ModeSettings, Settings};
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

    fn example(&self) -> &'static str {
        include_str!("../example.toml")
    }

    fn matterbridge(&self) -> Option<&dyn passerelle_sdk::import::MatterbridgeImport> {
        Some(&import::Import)
    }

    fn commands(&self) -> &'static [passerelle_sdk::ConnectorCommand] {
        &[passerelle_sdk::ConnectorCommand {
            name: "registration",
            help: "print the appservice registration YAML for the homeserver (Synapse: \
                   app_service_config_files); appservice mode only",
            alias: Some("matrix-registration"),
        }]
    }

    fn run_command(
        &self,
        ctx: &passerelle_sdk::CommandContext,
        command: &str,
        table: serde_json::Value,
    ) -> Result<String, Vec<ConfigIssue>> {
        if command != "registration" {
            return Err(vec![ConfigIssue::new(
                "kind",
                format!("matrix has no command {command:?} (it has: registration)"),
            )]);
        }
        if table.get("url").is_none() && ctx.callbacks_url.is_none() {
            return Err(vec![ConfigIssue::new(
                "url",
                "neither http.public_listen nor http.listen is set, and url neither: the \
                 homeserver could not reach the daemon",
            )]);
        }
        registration(table, ctx.callbacks_url.as_deref().unwrap_or_default())
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
            ModeSettings::Appservice(asv) => Ok(Box::new(MatrixConnector {
                mode: Mode::Appservice(appservice::Appservice {
                    asv: asv.clone(),
                    cfg: cfg.clone(),
                    data_dir: ctx.data_dir.clone(),
                }),
            })),
        }
    }
}

/// The appservice registration YAML for an account's table, or the table's issues. `default_url`
/// is used when the table sets no `url`: where the homeserver reaches the daemon's HTTP listener
/// for this account (`http://LISTEN/accounts/NAME`).
pub fn registration(
    table: serde_json::Value,
    default_url: &str,
) -> Result<String, Vec<ConfigIssue>> {
    let cfg = MatrixConfig::parse(table)?;
    match &cfg.mode {
        ModeSettings::Appservice(asv) => Ok(appservice::registration_yaml(
            asv,
            asv.url.as_deref().unwrap_or(default_url),
        )),
        ModeSettings::Bot(_) => Err(vec![ConfigIssue::new(
            "mode",
            "a registration is only for mode = \"appservice\"",
        )]),
    }
}

enum Mode {
    Bot(bot::Bot),
    Appservice(appservice::Appservice),
}

/// A Matrix account.
pub struct MatrixConnector {
    mode: Mode,
}

impl MatrixConnector {
    fn config(&self) -> &Settings {
        match &self.mode {
            Mode::Bot(b) => &b.cfg,
            Mode::Appservice(a) => &a.cfg,
        }
    }
}

impl Connector for MatrixConnector {
    fn capabilities(&self) -> Capabilities {
        // Ghosts carry who speaks in appservice mode; the bot names them in the text otherwise.
        let ghosts = matches!(self.config().mode, ModeSettings::Appservice(_));
        Capabilities {
            edits: true,
            deletes: true,
            reactions: true,
            replies: true,
            threads: true,
            attachments: true,
            rich_text: true,
            per_message_identity: ghosts,
            puppets: ghosts,
            typing: ghosts,
            membership: ghosts,
            topic: true,
        }
    }

    fn limits(&self) -> Limits {
        // Synapse refuses events over 65,536 bytes of JSON; leave room for the envelope.
        Limits {
            max_text_bytes: Some(30_000),
            max_upload_bytes: Some(self.config().media.max_upload_bytes),
            ..Default::default()
        }
    }

    /// Appservice mode: the homeserver's transactions, at whichever instance they reach.
    fn relay(
        &self,
        _account: &passerelle_sdk::AccountId,
    ) -> Option<std::sync::Arc<dyn passerelle_sdk::relay::Relay>> {
        match &self.mode {
            Mode::Appservice(a) => Some(std::sync::Arc::new(appservice::Relay::new(&a.asv))),
            Mode::Bot(_) => None,
        }
    }

    fn opens_portals_to(&self, account: &passerelle_sdk::AccountId) -> bool {
        match &self.mode {
            Mode::Appservice(a) => a.asv.portal_accounts.iter().any(|p| p == account.as_str()),
            Mode::Bot(_) => false,
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
                Mode::Appservice(a) => a.run(io).await,
            }
        })
    }
}

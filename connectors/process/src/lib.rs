//! # passerelle-process
//!
//! Connectors out of process (`kind = "process"`): the daemon starts a configured program, in
//! any language, and speaks to it in JSON lines over its stdin and stdout, as documented in
//! `docs/connector-protocol.md` (version 1). The program gets what an in-process connector gets:
//! the event model, capabilities and limits, an acknowledgement of each inbound event once it is
//! stored, a receipt or a typed error for every send, private state, status and shutdown.
//!
//! A malformed line is counted and skipped; a program that exits is started again with the
//! daemon's backoff, and what it was sent without answering is sent again; its stderr is logged
//! as its log, never read as content. The reference program is `examples/spool.py`.
//!
//! ## Layout
//! - [`config`]: the account table (`command`, `env`, `capabilities`, `settings`…).
//! - [`wire`]: the protocol's lines.
//! - [`lines`]: bounded line reading of the program's output.
//! - `session`: one run of the program.

pub mod config;
pub mod lines;
mod session;
pub mod wire;

use futures::future::BoxFuture;
use passerelle_sdk::{
    BuildContext, Capabilities, ConfigIssue, Connector, ConnectorError, ConnectorFactory,
    ConnectorIo, RoomId, RoomKind,
};
use std::path::PathBuf;

/// Builds process connectors.
pub struct ProcessFactory;

impl ConnectorFactory for ProcessFactory {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn example(&self) -> &'static str {
        include_str!("../example.toml")
    }

    fn build(
        &self,
        ctx: &BuildContext,
        table: serde_json::Value,
    ) -> Result<Box<dyn Connector>, Vec<ConfigIssue>> {
        Ok(Box::new(ProcessConnector {
            settings: config::ProcessConfig::parse(table)?,
            data_dir: ctx.data_dir.clone(),
        }))
    }
}

/// One account's program.
pub struct ProcessConnector {
    settings: config::Settings,
    data_dir: PathBuf,
}

impl Connector for ProcessConnector {
    fn capabilities(&self) -> Capabilities {
        self.settings.capabilities
    }

    fn check_room(&self, room: &RoomId) -> Result<(), String> {
        let name = room.as_str();
        if name.is_empty() || name.len() > 1000 || name.contains(['\n', '\r']) {
            return Err("a room of a process connector is a non-empty name of one line".into());
        }
        Ok(())
    }

    fn room_kind(&self, room: &RoomId) -> RoomKind {
        if self
            .settings
            .private_room_prefixes
            .iter()
            .any(|p| room.as_str().starts_with(p.as_str()))
        {
            RoomKind::Private
        } else {
            RoomKind::Group
        }
    }

    fn follows_room_changes(&self) -> bool {
        true
    }

    fn run<'a>(
        self: Box<Self>,
        io: &'a mut ConnectorIo,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { session::run(&self.settings, &self.data_dir, io).await })
    }
}

//! # passerelle-sdk
//!
//! The one crate a passerelle connector depends on. It defines the vocabulary that the daemon's core
//! and every network connector share, and nothing else: it depends on no module of the core.
//!
//! ## Layout
//! - [`ids`]: typed, opaque identifiers, each documented with how far it must be unique.
//! - [`content`]: message content; [`Text`] never prints what it holds.
//! - [`event`]: the event model ([`Event`], [`EventKind`]) carried on the bus.
//! - [`caps`]: [`Capabilities`] and [`Limits`] a connector declares.
//! - [`connector`]: the [`ConnectorFactory`] and [`Connector`] contract and the [`ConnectorIo`] a
//!   connector runs with.
//! - [`error`]: typed errors for running, sending and configuring.
//! - [`state`]: a key-value handle for connector-private state kept in the daemon's store.
//! - [`drops`]: counting inbound data refused before it became an event.
//! - [`secret`]: [`Secret`], a string that never prints, and the `*_file` resolution rule.
//! - `fetch` (feature `fetch`): fetching a linked file safely (public addresses, size cap).
//! - `tls` (feature `tls`): one rustls client set-up with an operator's CA file.
//! - `webhook` (feature `webhook`): the checks every inbound webhook makes before its connector
//!   parses a body (size, signature, Meta's handshake), served at `/hooks/{account}`; and
//!   `signed_link`, links through the daemon to files only the connector can fetch.
//! - [`config`]: parsing a connector's typed config table with errors that name the key path.
//! - [`import`]: what a kind reads of matterbridge's configuration (`passerelle import
//!   matterbridge`).
//!
//! ## Writing a connector
//! Implement [`ConnectorFactory`] for your kind; its `build` parses the account's table into a
//! `#[serde(deny_unknown_fields)]` struct and returns a [`Connector`]. The daemon calls
//! [`Connector::run`] with a [`ConnectorIo`]: emit inbound events with [`Emitter::emit`], answer each
//! [`Outbound`] with a [`Receipt`] or a [`SendError`], report your connection state, and return when
//! [`ConnectorIo::shutdown`] is cancelled. Prove it with `passerelle-testkit`'s conformance suite.
#![deny(missing_docs)]

pub mod caps;
pub mod config;
pub mod connector;
pub mod content;
pub mod daemon_view;
pub mod drops;
pub mod emoji;
pub mod error;
pub mod event;
#[cfg(feature = "fetch")]
pub mod fetch;
#[cfg(feature = "front")]
pub mod front;
pub mod html;
pub mod http;
pub mod ids;
pub mod import;
pub mod links;
pub mod markdown;
pub mod relay;
pub mod secret;
#[cfg(feature = "webhook")]
pub mod signed_link;
pub mod state;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use caps::{Capabilities, Limits};
pub use connector::{
    BuildContext, CommandContext, ConnectionState, Connector, ConnectorCommand, ConnectorFactory,
    ConnectorIo, Disposition, EmitAck, Emitter, Inbound, Outbound, OutboundQueue, Receipt,
    RoomKind, RoomUpdates, StatusReporter,
};
pub use content::{Attachment, Content, Formatted, MessageKind, Text};
pub use daemon_view::{
    AccountStatus, DaemonView, DeadLetter, DeadLetterLog, LinkSummary, ViewUpdater,
};
pub use error::{ConfigIssue, ConnectorError, EmitError, SendError};
pub use event::{Event, EventKind, MembershipChange, Sender, Timestamp};
pub use http::{Admission, HttpHandler, HttpMount};
pub use ids::{AccountId, EventKey, RemoteMessageId, RoomId, UserId};
pub use links::{LinkService, Links, PortalRequest};
pub use secret::Secret;
pub use state::{StateBackend, StateError, StateHandle};

/// Re-exported so connectors name the same cancellation type as the daemon.
pub use tokio_util::sync::CancellationToken;

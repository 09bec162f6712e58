//! # passerelle
//!
//! A daemon that joins chat networks into one interoperable layer. One process runs one connector
//! task per configured account; every connector talks to one internal bus; the core maps rooms,
//! messages and threads across networks and guarantees where each message may and may not go.
//!
//! ## Layout
//! - [`config`]: the typed configuration (`config` crate: TOML file + `PASSERELLE__` overrides).
//! - [`registry`]: the explicit table from `kind` to connector factory.
//! - [`supervisor`]: one task per account, restarted with backoff.
//! - [`router`]: links, rights, the route guard and the degrade rules (no network names).
//! - [`bus`]: per-room ordered delivery lanes over the durable outbox.
//! - [`mapping`]: the message map (id translation through the store).
//! - [`store`]: the `Store` trait, the SQLite and PostgreSQL backends, sealing of queued payloads,
//!   conformance tests, `migrate-store`.
//! - [`cluster`]: cluster mode's leases (one owner per account, fenced by epoch) on PostgreSQL.
//! - [`http`]: the admin endpoints.
//! - [`live`]: the settings a reload replaces at once (policies, `[general]`).
//! - [`metrics`]: Prometheus metrics.
//! - [`pastes`]: links to the whole text of messages cut to a destination's lines.
//! - [`status`]: the status page for people (`/status`): accounts, links, queues, traffic.
//! - [`portals`]: links made at run time (portal rooms), checked and kept in the store.
//! - [`import`]: `passerelle import matterbridge`, another bridge's configuration turned into ours.
//! - [`daemon`]: wiring and ordered shutdown.
//!
//! Connectors live in their own crates under `connectors/` and depend only on `passerelle-sdk`.

pub mod bus;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod http;
pub mod import;
pub mod live;
pub mod mapping;
pub mod metrics;
pub mod pastes;
pub mod portals;
pub mod registry;
pub mod relay;
pub mod router;
pub mod status;
pub mod store;
pub mod supervisor;

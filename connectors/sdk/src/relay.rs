//! Callbacks taken by any instance of a cluster.
//!
//! In cluster mode a network's webhook (or a homeserver's appservice transaction) may reach an
//! instance that does not run the account it is for: a load balancer sends it to any of them.
//! A connector whose callbacks can be checked from its configuration alone offers a [`Relay`]
//! ([`crate::Connector::relay`]). The daemon then, at whichever instance the call reached, shows
//! the call to the relay: its head to [`Relay::admit`] (the same contract as
//! [`crate::HttpHandler::admit`]), then the whole request to [`Relay::check`], which proves the
//! sender and says whether to keep it. A kept call is sealed into the shared store and answered;
//! the instance that owns the account then hands it, in the order the calls were kept, to its
//! running connector's [`crate::HttpHandler::handle_relayed`], and deletes it once handled.
//!
//! So a relay must prove the sender exactly as the connector's own endpoint does (nothing
//! unproved is ever stored), and answer at once what needs no connector (a subscription
//! handshake, a ping).

use crate::http::{Admission, Request, Response};

/// What to do with a call whose body has been read.
#[derive(Debug)]
pub enum Relaying {
    /// Proved: keep it for the account's owner, then answer this.
    Keep(Response),
    /// Answer this and keep nothing (a refusal, a handshake, a ping).
    Answer(Response),
}

/// Checks one account's callbacks at any instance of a cluster, without running its connector.
pub trait Relay: Send + Sync + 'static {
    /// Whether a call with this head is one the relay takes (webhooks, transactions). The others
    /// (file links, queries needing the connector) go to the connector only where it runs.
    fn relays(&self, head: &http::request::Parts) -> bool;
    /// Looks at a call before its body is read, as [`crate::HttpHandler::admit`] does.
    fn admit(&self, head: &http::request::Parts) -> Admission;
    /// Proves the whole call (in constant time) and says whether to keep it.
    fn check(&self, request: &Request) -> Relaying;
}

//! Test doubles for XMPP, behind the `testing` feature: a throwaway Prosody server on loopback and
//! a plain XMPP client (tokio-xmpp's own `Client`, independent of the connector's streams). The
//! connector's own tests and the daemon's end-to-end tests use them; a normal build leaves them
//! out.

pub mod client;
pub mod prosody;

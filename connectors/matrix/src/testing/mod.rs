//! Test doubles for Matrix, behind the `testing` feature (as matrix-rust-sdk ships its own): a
//! throwaway Synapse homeserver on loopback and a plain client-server API user that sees exactly
//! what the homeserver holds. The connector's own tests, the daemon's end-to-end tests and the
//! load tool use them; a normal build leaves them out.

pub mod client;
pub mod synapse;

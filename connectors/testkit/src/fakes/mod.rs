//! Faithful fakes of services that can't run here, written from their public documentation (the
//! wire facts are gathered in `PROTOCOL-NOTES.md`). Each serves on loopback, checks requests as the
//! service documents it, answers with its documented bodies and errors, and records what it
//! accepted so tests can assert exact outbound payloads.

pub mod meta;
pub mod signal;
pub mod telegram;

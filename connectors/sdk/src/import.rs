//! Taking over another bridge's configuration: what a connector reads of one of matterbridge's
//! account tables (`[irc.libera]`), for `passerelle import matterbridge`.
//!
//! A kind that takes over a matterbridge protocol returns a [`MatterbridgeImport`] from
//! [`crate::ConnectorFactory::matterbridge`]. The daemon reads the file, hands each account
//! table of that protocol to [`MatterbridgeImport::account`] (keys lower-cased, as matterbridge
//! reads them case-insensitively) and each gateway channel to [`MatterbridgeImport::channel`],
//! and does the rest itself: `RemoteNickFormat`, gateways as links, and the list of every option
//! that was not carried over.

use serde_json::{Map, Value};

/// A secret found in matterbridge's table. It is written to a file and named by `<key>_file`,
/// or, with `--inline-secrets` and `inline`, written as `<key> = "…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedSecret {
    /// The key this kind reads it from, without `_file` (`token`, `password`).
    pub key: String,
    /// One line of the file. Lines with the same key go into one file (IRC's channel keys).
    pub line: String,
    /// Whether the secret may be written inline with `--inline-secrets`.
    pub inline: bool,
}

/// One matterbridge account, as this kind takes it over.
#[derive(Debug, Clone, Default)]
pub struct ImportedAccount {
    /// This kind's account table (without `kind`), secrets left out.
    pub table: Map<String, Value>,
    /// The secrets, written as files (or inline when asked).
    pub secrets: Vec<ImportedSecret>,
    /// matterbridge's keys (lower-cased) this kind carried over or knowingly dropped; every
    /// other key is listed to the operator as not carried over.
    pub used: Vec<&'static str>,
    /// What the operator should know or do, one line each (an option with no equivalent, a
    /// value to fill in).
    pub notes: Vec<String>,
    /// The account is written with `enabled = false`: it needs something matterbridge's
    /// configuration does not hold (the notes say what).
    pub disabled: bool,
}

/// One gateway channel, as this kind names the room.
#[derive(Debug, Clone, Default)]
pub struct ImportedRoom {
    /// The room.
    pub room: String,
    /// Secrets the room needs on its account (an IRC channel key).
    pub secrets: Vec<ImportedSecret>,
    /// What the operator should know.
    pub notes: Vec<String>,
}

/// A gateway channel to name as a room.
pub struct Channel<'a> {
    /// The channel, as the gateway writes it.
    pub channel: &'a str,
    /// The gateway's `[gateway.*.options]` (lower-cased).
    pub options: &'a Map<String, Value>,
    /// The account's own matterbridge table (lower-cased): a room may need it (XMPP's `Muc`).
    pub account: &'a Map<String, Value>,
    /// The gateway's name (an API account's room is the gateway).
    pub gateway: &'a str,
}

/// What a kind reads of matterbridge's configuration.
pub trait MatterbridgeImport: Send + Sync {
    /// The protocols this kind takes over: the first part of matterbridge's `[irc.NAME]`.
    fn protocols(&self) -> &'static [&'static str];
    /// Takes over one account table (`table`'s keys are lower-cased).
    fn account(&self, name: &str, table: &Map<String, Value>) -> ImportedAccount;
    /// A gateway's channel as a room; `Err` says why it can't be one, and what to write
    /// instead.
    fn channel(&self, channel: &Channel<'_>) -> Result<ImportedRoom, String> {
        Ok(ImportedRoom {
            room: channel.channel.to_owned(),
            ..ImportedRoom::default()
        })
    }
}

/// A string option of a matterbridge table (lower-cased key), when set and not empty.
pub fn text<'a>(table: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    table
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A boolean option (`true`/`false`, as matterbridge writes them).
pub fn flag(table: &Map<String, Value>, key: &str) -> Option<bool> {
    table.get(key).and_then(Value::as_bool)
}

impl ImportedAccount {
    /// Adds a secret that may be written inline.
    pub fn secret(&mut self, key: &str, value: &str) {
        self.secrets.push(ImportedSecret {
            key: key.to_owned(),
            line: value.to_owned(),
            inline: true,
        });
    }

    /// Sets a key of the account table.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.table.insert(key.to_owned(), value.into());
    }

    /// Records that matterbridge's `keys` were read.
    pub fn read(&mut self, keys: &[&'static str]) {
        self.used.extend_from_slice(keys);
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// A `host:port` server address: the host and the port, if given.
pub fn host_port(server: &str) -> (String, Option<u16>) {
    let server = server.trim();
    if let Some(rest) = server.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
    {
        return (host.to_owned(), port.parse().ok());
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_owned(), port.parse().ok()),
        _ => (server.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_split_into_host_and_port() {
        assert_eq!(
            host_port("irc.libera.chat:6697"),
            ("irc.libera.chat".into(), Some(6697))
        );
        assert_eq!(
            host_port("irc.libera.chat"),
            ("irc.libera.chat".into(), None)
        );
        assert_eq!(host_port("[::1]:6667"), ("::1".into(), Some(6667)));
        assert_eq!(host_port("::1"), ("::1".into(), None));
    }
}

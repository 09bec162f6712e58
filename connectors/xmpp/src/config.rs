//! The XMPP account's config: `[accounts.NAME]` with `kind = "xmpp"`.

use passerelle_sdk::config::parse_table;
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio_xmpp::jid::{BareJid, Jid};

/// How the connection is secured.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain TCP first, then `<starttls/>` before anything else is said (RFC 6120). Port 5222.
    #[default]
    Starttls,
    /// TLS from the first byte (XEP-0368). Port 5223.
    Direct,
}

/// How the bridge connects.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// As a client account: one occupant speaks for everyone (`<nick> text`).
    #[default]
    Client,
    /// As an external component (XEP-0114) with its own domain: every person from another
    /// network gets a JID there and joins rooms under their own name.
    Component,
}

/// The keys of an XMPP account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// `client` (default) or `component`.
    #[serde(default)]
    pub mode: Mode,
    /// Client mode: the bridge's account, `name@domain`. Component mode: the bridge's own
    /// address in the component's domain (`bridge@bridge.example.org`), which joins the rooms.
    pub jid: String,
    /// Client mode: the account's password. Component mode: the component's shared secret.
    pub password: Option<Secret>,
    /// File holding `password`.
    pub password_file: Option<PathBuf>,
    /// The host to connect to; default the JID's domain (no DNS SRV look-up is made).
    pub server: Option<String>,
    /// Port; default 5222 with STARTTLS, 5223 with direct TLS, 5347 in component mode.
    pub port: Option<u16>,
    /// Client mode: `starttls` (default) or `direct`. The certificate is always verified against
    /// the JID's domain (the Mozilla roots plus `tls_ca_file`). Component connections (XEP-0114)
    /// are plain TCP: keep them on loopback or a private network.
    pub tls: Option<TlsMode>,
    /// A PEM file of extra certificate authorities to trust (a private server's CA).
    pub tls_ca_file: Option<PathBuf>,
    /// The resource to bind; default `passerelle`.
    pub resource: Option<String>,
    /// The nick in rooms; default the JID's local part.
    pub nick: Option<String>,
    /// Nicks to try, in order, when `nick` is taken in a room; after them, `nick` with `_`
    /// appended.
    #[serde(default)]
    pub alt_nicks: Vec<String>,
    /// Passwords of rooms that need one, by room address (`room@conference.example.org`).
    #[serde(default)]
    pub room_passwords: BTreeMap<String, Secret>,
    /// A file of room passwords, one `room@service password` pair per line; merged with
    /// `room_passwords`.
    pub room_passwords_file: Option<PathBuf>,
    /// After a reconnect, how far back (in seconds) to ask each room for the messages we missed
    /// since the last one we saw (the daemon drops the ones it already has). 0 turns catch-up off:
    /// only new messages are bridged. Default 3600. On a first join, old messages are never asked
    /// for.
    #[serde(default = "default_catch_up")]
    pub catch_up_secs: u64,
    /// Seconds of silence from the server before we ping it. Default 60.
    #[serde(default = "default_ping")]
    pub ping_interval_secs: u64,
    /// Seconds a ping may go unanswered before the link counts as dead and we reconnect.
    /// Default 30.
    #[serde(default = "default_ping_timeout")]
    pub ping_timeout_secs: u64,
    /// Seconds to wait for the connection, TLS, login and resource binding. Default 30.
    #[serde(default = "default_connect")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the server to confirm a message we sent (a room echoes it back; a
    /// direct message is confirmed by a ping answered after it). Unconfirmed sends are retried by
    /// the daemon after a reconnect. Default 30.
    #[serde(default = "default_send_timeout")]
    pub send_timeout_secs: u64,
    /// The HTTP File Upload service (XEP-0363) that files from other networks are uploaded to;
    /// default: the one the server lists, if any. Without one, files go out as links.
    pub upload_service: Option<String>,
    /// The largest file fetched and uploaded, in bytes (the service's own limit applies too);
    /// larger ones go out as links. Default 52428800 (50 MiB).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Whether files may be fetched from loopback and private addresses (a private network, or
    /// tests). Default false: only public addresses.
    #[serde(default)]
    pub media_fetch_private: bool,
}

fn default_max_upload() -> u64 {
    50 * 1024 * 1024
}

fn default_catch_up() -> u64 {
    3600
}
fn default_ping() -> u64 {
    60
}
fn default_ping_timeout() -> u64 {
    30
}
fn default_connect() -> u64 {
    30
}
fn default_send_timeout() -> u64 {
    30
}

/// The config with secrets read and defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Client or component.
    pub mode: Mode,
    /// Our account (client mode), or our bot's address in the component's domain.
    pub jid: BareJid,
    /// The account's password, or the component's secret.
    pub password: Secret,
    /// Host to connect to.
    pub server: String,
    /// Port.
    pub port: u16,
    /// STARTTLS or direct TLS.
    pub tls: TlsMode,
    /// Extra CAs (PEM file).
    pub tls_ca_file: Option<PathBuf>,
    /// Resource to bind.
    pub resource: String,
    /// Nicks to try in rooms, in order.
    pub nicks: Vec<String>,
    /// Room passwords by room address (lower-case).
    pub room_passwords: BTreeMap<String, Secret>,
    /// How far back catch-up may reach (zero: off).
    pub catch_up: Duration,
    /// Ping after this much silence.
    pub ping_interval: Duration,
    /// A ping unanswered this long means the link is dead.
    pub ping_timeout: Duration,
    /// Connection and login timeout.
    pub connect_timeout: Duration,
    /// How long a sent message may stay unconfirmed.
    pub send_timeout: Duration,
    /// The upload service, when configured (else discovered).
    pub upload_service: Option<Jid>,
    /// The largest file uploaded.
    pub max_upload: u64,
    /// Whether files may be fetched from private addresses.
    pub fetch_private: bool,
}

/// Whether `room` names a room this connector can serve: `room@service` (a multi-user chat) or
/// `dm:user@domain` (the direct chat with one person). `Err` says why not.
pub fn parse_room(room: &str) -> Result<RoomKind, String> {
    let (dm, address) = match room.strip_prefix("dm:") {
        Some(rest) => (true, rest),
        None => (false, room),
    };
    let jid = BareJid::new(address).map_err(|_| {
        "an XMPP room is a room address such as \"room@conference.example.org\", or \
         \"dm:user@example.org\" for the direct chat with one person"
            .to_owned()
    })?;
    if jid.node().is_none() {
        return Err(format!(
            "{address} has no local part (expected name@domain)"
        ));
    }
    if jid.as_str() != address {
        return Err(format!(
            "{address} is not in normal form; write it as {}",
            jid.as_str()
        ));
    }
    Ok(if dm {
        RoomKind::Direct(jid)
    } else {
        RoomKind::Muc(jid)
    })
}

/// What a room id names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomKind {
    /// A multi-user chat room.
    Muc(BareJid),
    /// The direct chat with one person.
    Direct(BareJid),
}

impl XmppConfig {
    /// Parses and checks an account table, reporting every issue.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: XmppConfig = parse_table(table).map_err(|i| vec![i])?;
        let mut issues = Vec::new();
        let jid = match Jid::new(&raw.jid) {
            Ok(j) if j.node().is_some() && j.resource().is_none() => Some(j.to_bare()),
            Ok(_) => {
                issues.push(ConfigIssue::new(
                    "jid",
                    "must be name@domain, without a resource (set `resource` for that)",
                ));
                None
            }
            Err(e) => {
                issues.push(ConfigIssue::new("jid", format!("not a valid JID: {e}")));
                None
            }
        };
        let password = secret::require(
            "password",
            raw.password.as_ref(),
            raw.password_file.as_ref(),
        )
        .map_err(|i| issues.push(i))
        .ok();
        if let Some(server) = &raw.server
            && server.trim().is_empty()
        {
            issues.push(ConfigIssue::new("server", "must not be empty"));
        }
        if raw.mode == Mode::Component {
            if raw.server.is_none() {
                issues.push(ConfigIssue::new(
                    "server",
                    "missing (component mode connects to the XMPP server's component port)",
                ));
            }
            for (key, set) in [
                ("tls", raw.tls.is_some()),
                ("tls_ca_file", raw.tls_ca_file.is_some()),
            ] {
                if set {
                    issues.push(ConfigIssue::new(
                        key,
                        "not used in component mode (XEP-0114 connections are plain TCP)",
                    ));
                }
            }
        }
        if let Some(ca) = &raw.tls_ca_file
            && let Err(e) = passerelle_sdk::tls::client_config(Some(ca))
        {
            issues.push(ConfigIssue::new("tls_ca_file", e));
        }
        let resource = raw.resource.unwrap_or_else(|| "passerelle".to_owned());
        if resource.trim().is_empty() {
            issues.push(ConfigIssue::new("resource", "must not be empty"));
        }
        let nick = raw
            .nick
            .or_else(|| jid.as_ref().and_then(|j| j.node().map(|n| n.to_string())))
            .unwrap_or_default();
        let valid_nick = |n: &str| !n.trim().is_empty() && !n.chars().any(char::is_control);
        if jid.is_some() && !valid_nick(&nick) {
            issues.push(ConfigIssue::new("nick", "must not be empty"));
        }
        for (i, n) in raw.alt_nicks.iter().enumerate() {
            if !valid_nick(n) {
                issues.push(ConfigIssue::new(
                    format!("alt_nicks[{i}]"),
                    "must not be empty",
                ));
            }
        }
        let mut room_passwords = BTreeMap::new();
        for (room, pw) in raw.room_passwords {
            match parse_room(&room) {
                Ok(RoomKind::Muc(j)) => {
                    room_passwords.insert(j.to_string(), pw);
                }
                _ => issues.push(ConfigIssue::new(
                    format!("room_passwords.{}", passerelle_sdk::config::path_key(&room)),
                    "not a room address (room@service)",
                )),
            }
        }
        if let Some(path) = &raw.room_passwords_file {
            let shape = "room@service password";
            for pair in secret::read_pairs_file("room_passwords_file", path, shape, &mut issues) {
                match parse_room(&pair.name) {
                    Ok(RoomKind::Muc(j)) => {
                        room_passwords.insert(j.to_string(), pair.secret);
                    }
                    _ => issues.push(ConfigIssue::new(
                        "room_passwords_file",
                        format!("line {}: not a room address (room@service)", pair.line),
                    )),
                }
            }
        }
        let upload_service = match raw.upload_service.as_deref().map(Jid::new) {
            None => None,
            Some(Ok(j)) => Some(j),
            Some(Err(e)) => {
                issues.push(ConfigIssue::new(
                    "upload_service",
                    format!("not a valid JID: {e}"),
                ));
                None
            }
        };
        use passerelle_sdk::config::timeout;
        let ping_interval = timeout("ping_interval_secs", raw.ping_interval_secs, &mut issues);
        let ping_timeout = timeout("ping_timeout_secs", raw.ping_timeout_secs, &mut issues);
        let send_timeout = timeout("send_timeout_secs", raw.send_timeout_secs, &mut issues);
        let tls = raw.tls.unwrap_or_default();
        let (Some(jid), Some(password)) = (jid, password) else {
            return Err(issues);
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut nicks = vec![nick.clone()];
        nicks.extend(raw.alt_nicks);
        for n in 1..=3 {
            nicks.push(format!("{nick}{}", "_".repeat(n)));
        }
        Ok(Settings {
            server: raw.server.unwrap_or_else(|| jid.domain().to_string()),
            port: raw.port.unwrap_or(match (raw.mode, tls) {
                (Mode::Component, _) => 5347,
                (Mode::Client, TlsMode::Starttls) => 5222,
                (Mode::Client, TlsMode::Direct) => 5223,
            }),
            mode: raw.mode,
            jid,
            password,
            tls,
            tls_ca_file: raw.tls_ca_file,
            resource,
            nicks,
            room_passwords,
            catch_up: Duration::from_secs(raw.catch_up_secs),
            ping_interval,
            ping_timeout,
            connect_timeout: Duration::from_secs(raw.connect_timeout_secs.max(1)),
            send_timeout,
            upload_service,
            max_upload: raw.max_upload_bytes,
            fetch_private: raw.media_fetch_private,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_the_jid() {
        let s = XmppConfig::parse(json!({"jid": "bridge@example.org", "password": "pw"})).unwrap();
        assert_eq!(
            (s.server.as_str(), s.port, s.tls),
            ("example.org", 5222, TlsMode::Starttls)
        );
        assert_eq!(s.nicks, vec!["bridge", "bridge_", "bridge__", "bridge___"]);
        assert_eq!(s.resource, "passerelle");
        let s = XmppConfig::parse(
            json!({"jid": "b@example.org", "password": "pw", "tls": "direct", "nick": "Relay"}),
        )
        .unwrap();
        assert_eq!((s.port, s.nicks[0].as_str()), (5223, "Relay"));
    }

    #[test]
    fn component_mode_needs_a_server_and_no_tls() {
        let s = XmppConfig::parse(json!({
            "mode": "component", "jid": "bridge@bridge.example.org", "password": "secret",
            "server": "127.0.0.1"
        }))
        .unwrap();
        assert_eq!((s.mode, s.port), (Mode::Component, 5347));
        let err = XmppConfig::parse(json!({
            "mode": "component", "jid": "bridge@bridge.example.org", "password": "secret",
            "tls": "direct"
        }))
        .unwrap_err();
        let all: Vec<String> = err.iter().map(|i| i.to_string()).collect();
        assert!(
            all.iter().any(|e| e.starts_with("server: missing")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|e| e.starts_with("tls: not used in component mode")),
            "{all:?}"
        );
    }

    #[test]
    fn every_issue_names_its_key() {
        let err = XmppConfig::parse(json!({
            "jid": "example.org", "tls": "none", "password": "x"
        }))
        .unwrap_err();
        assert!(
            err[0].to_string().starts_with("tls: unknown variant"),
            "{err:?}"
        );
        let err = XmppConfig::parse(json!({
            "jid": "example.org/res", "server": " ", "ping_interval_secs": 0,
            "room_passwords": {"not a room": "x"}, "alt_nicks": [""]
        }))
        .unwrap_err();
        let all: Vec<String> = err.iter().map(|i| i.to_string()).collect();
        for expected in [
            "jid: must be name@domain",
            "password: missing",
            "server: must not be empty",
            "ping_interval_secs:",
            "room_passwords.\"not a room\":",
            "alt_nicks[0]:",
        ] {
            assert!(
                all.iter().any(|s| s.starts_with(expected)),
                "{expected} not in {all:?}"
            );
        }
    }

    #[test]
    fn room_passwords_come_from_the_table_and_the_file() {
        let dir = std::env::temp_dir().join(format!("xmpp-rooms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rooms");
        std::fs::write(&file, "secret@muc.example.org  hunter2\n\n").unwrap();
        let s = XmppConfig::parse(json!({
            "jid": "b@example.org", "password": "pw", "room_passwords_file": file,
            "room_passwords": {"inline@muc.example.org": "k1"}
        }))
        .unwrap();
        let got: Vec<(&str, &str)> = s
            .room_passwords
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("inline@muc.example.org", "k1"),
                ("secret@muc.example.org", "hunter2")
            ]
        );
        std::fs::write(&file, "lonely@muc.example.org\n").unwrap();
        let err = XmppConfig::parse(
            json!({"jid": "b@example.org", "password": "pw", "room_passwords_file": file}),
        )
        .unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "room_passwords_file: line 1: expected \"room@service password\""
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rooms_are_room_addresses_or_direct_chats() {
        assert_eq!(
            parse_room("r@muc.example.org"),
            Ok(RoomKind::Muc(BareJid::new("r@muc.example.org").unwrap()))
        );
        assert_eq!(
            parse_room("dm:alice@example.org"),
            Ok(RoomKind::Direct(BareJid::new("alice@example.org").unwrap()))
        );
        for bad in [
            "#irc",
            "muc.example.org",
            "r@muc.example.org/nick",
            "dm:",
            "R@Muc.Example.Org",
        ] {
            assert!(parse_room(bad).is_err(), "{bad}");
        }
    }
}

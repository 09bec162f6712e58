//! The Matrix account's config: `[accounts.NAME]` with `kind = "matrix"`.

use passerelle_sdk::config::parse_table;
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::path::PathBuf;

/// How the account meets the homeserver.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One ordinary Matrix account, driven by matrix-sdk.
    #[default]
    Bot,
    /// An application service: remote people appear as ghost users.
    Appservice,
}

/// The keys of a Matrix account, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// `bot` (default) or `appservice`.
    #[serde(default)]
    pub mode: Mode,
    /// The homeserver's client-server URL, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// Bot mode: the bot's user id, `@bridge:example.org`.
    pub user: Option<String>,
    /// Bot mode: the password (or `password_file`), used once to log in; the session is kept.
    pub password: Option<Secret>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// Bot mode: an access token instead of a password (or `access_token_file`).
    pub access_token: Option<Secret>,
    /// A file holding the access token.
    pub access_token_file: Option<PathBuf>,
    /// The name of the device the bridge logs in as. Default `passerelle`.
    #[serde(default = "default_device_name")]
    pub device_name: String,
    /// Encrypts matrix-sdk's store (crypto keys, room state) at rest (or `store_passphrase_file`).
    pub store_passphrase: Option<Secret>,
    /// A file holding the store passphrase.
    pub store_passphrase_file: Option<PathBuf>,
    /// Bot mode: back the bot's room keys up on the homeserver (server-side key backup with a
    /// recovery key), so a new device can read old encrypted messages. Default false.
    #[serde(default)]
    pub key_backup: bool,
    /// Where the recovery key is written when the backup is made, and read when a new device
    /// joins it. Default: `recovery-key` in the account's data dir.
    pub recovery_key_file: Option<PathBuf>,
    /// Appservice mode: the homeserver's server name, the part after `:` in user ids.
    pub server_name: Option<String>,
    /// Appservice mode: the token the bridge sends to the homeserver (or `as_token_file`).
    pub as_token: Option<Secret>,
    /// A file holding the appservice token.
    pub as_token_file: Option<PathBuf>,
    /// Appservice mode: the token the homeserver sends to the bridge (or `hs_token_file`).
    pub hs_token: Option<Secret>,
    /// A file holding the homeserver token.
    pub hs_token_file: Option<PathBuf>,
    /// Appservice mode: the registration's `id`. Default `passerelle`.
    #[serde(default = "default_prefix")]
    pub registration_id: String,
    /// Appservice mode: the bridge bot's localpart. Default `passerelle`.
    #[serde(default = "default_prefix")]
    pub bot_localpart: String,
    /// Appservice mode: ghost users are `@<ghost_prefix>_<account>_<user>`. Default `passerelle`.
    #[serde(default = "default_prefix")]
    pub ghost_prefix: String,
    /// Appservice mode: portal aliases are `#<alias_prefix>_<account>_<room>`. Default `passerelle`.
    #[serde(default = "default_prefix")]
    pub alias_prefix: String,
    /// Appservice mode: the URL the homeserver reaches the daemon's HTTP listener at, written into
    /// the registration. Default: `http://` + `[http] listen`.
    pub url: Option<String>,
    /// Appservice mode: accounts whose linked rooms Matrix users may open themselves by joining
    /// `#<alias_prefix>_<account>_<room>:<server_name>` (a portal room). Default none.
    #[serde(default)]
    pub portal_accounts: Vec<String>,
    /// Appservice mode: portal rooms are invite-only (join rule `knock`); the bot invites whoever
    /// knocks from `server_name` or from one of these servers. Default none (local users only).
    #[serde(default)]
    pub portal_servers: Vec<String>,
    /// Appservice mode: log the bridge bot in with its own device and decrypt/encrypt in encrypted
    /// rooms. Default true.
    #[serde(default = "yes")]
    pub encryption: bool,
    /// Matrix users who may send commands to the bot in a direct chat and get warnings there.
    #[serde(default)]
    pub admins: Vec<String>,
    /// How long an account may be disconnected before the admins are warned, in seconds.
    /// Default 300; 0 turns warnings off.
    #[serde(default = "default_warn")]
    pub disconnect_warning_secs: u64,
    /// The largest file uploaded to the homeserver for an attachment from another network, in
    /// bytes. Default 50 MiB (Synapse's own default limit).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Fetch attachments from loopback and private addresses too. Default false: a link on
    /// another network must not reach into the daemon's own network.
    #[serde(default)]
    pub media_fetch_private: bool,
    /// Bot mode: after downtime, the homeserver's first sync carries only a room's latest 200
    /// events; the rest said meanwhile is fetched back (`/messages`, oldest first), up to this
    /// many events per room. Beyond it the oldest are left out, counted and logged. Default
    /// 1000; 0 turns backfill off.
    #[serde(default = "default_backfill")]
    pub backfill_limit: u32,
    /// An encrypted event whose key has not arrived is held and tried again after every sync,
    /// for this many seconds (keys often arrive a moment after the message); then it is dropped,
    /// counted and logged (never its content). At most 1000 are held. Default 600.
    #[serde(default = "default_hold")]
    pub undecryptable_hold_secs: u64,
    /// Where people on other networks reach the daemon's HTTP listener (e.g.
    /// `https://bridge.example.org`). When set, Matrix files are offered to them as signed links
    /// through the daemon; when not, as the homeserver's authenticated links (which need a Matrix
    /// login to open).
    pub media_public_url: Option<String>,
}

fn default_max_upload() -> u64 {
    50 * 1024 * 1024
}

fn default_device_name() -> String {
    "passerelle".into()
}
fn default_prefix() -> String {
    "passerelle".into()
}
fn yes() -> bool {
    true
}
fn default_backfill() -> u32 {
    1000
}

fn default_hold() -> u64 {
    600
}

fn default_warn() -> u64 {
    300
}

/// How the bot logs in.
#[derive(Clone, Debug)]
pub enum Login {
    /// With a password (then the session is kept in the data dir).
    Password(Secret),
    /// With an existing access token.
    Token(Secret),
}

/// Bot-mode settings.
#[derive(Clone, Debug)]
pub struct BotSettings {
    /// The bot's user id.
    pub user: String,
    /// How it logs in.
    pub login: Login,
}

/// Appservice-mode settings.
#[derive(Clone, Debug)]
pub struct AppserviceSettings {
    /// The homeserver's name.
    pub server_name: String,
    /// Our token to the homeserver.
    pub as_token: Secret,
    /// The homeserver's token to us.
    pub hs_token: Secret,
    /// The registration id.
    pub registration_id: String,
    /// The bot's localpart.
    pub bot_localpart: String,
    /// Ghost localpart prefix.
    pub ghost_prefix: String,
    /// Alias localpart prefix.
    pub alias_prefix: String,
    /// Where the homeserver reaches us, when set.
    pub url: Option<String>,
    /// Whether the bot runs an encrypting device.
    pub encryption: bool,
    /// Accounts whose rooms may be opened through aliases.
    pub portal_accounts: Vec<String>,
    /// Servers besides `server_name` whose users the bot lets into portal rooms.
    pub portal_servers: Vec<String>,
}

/// The checked config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The homeserver URL, without a trailing slash.
    pub homeserver: String,
    /// The device's display name.
    pub device_name: String,
    /// The store passphrase.
    pub store_passphrase: Option<Secret>,
    /// Admin user ids.
    pub admins: Vec<String>,
    /// Disconnect warning delay; zero is off.
    pub disconnect_warning_secs: u64,
    /// `media_public_url` (the daemon's public base URL for file links), `max_upload_bytes`,
    /// `media_fetch_private`.
    pub media: passerelle_sdk::config::Media,
    /// Events fetched back per room after a gap.
    pub backfill_limit: u32,
    /// How long an undecryptable event is held.
    pub undecryptable_hold: std::time::Duration,
    /// Whether to keep a server-side key backup, and where its recovery key lives.
    pub key_backup: bool,
    /// The recovery key's file, when set.
    pub recovery_key_file: Option<PathBuf>,
    /// The mode and its settings.
    pub mode: ModeSettings,
}

/// Mode-specific settings.
#[derive(Clone, Debug)]
pub enum ModeSettings {
    /// Bot mode.
    Bot(BotSettings),
    /// Appservice mode.
    Appservice(AppserviceSettings),
}

/// Whether `s` is a plausible Matrix user id, `@local:server`.
pub fn is_user_id(s: &str) -> bool {
    s.starts_with('@')
        && s.split_once(':')
            .is_some_and(|(l, server)| l.len() > 1 && !server.is_empty())
}

fn localpart_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
}

impl MatrixConfig {
    /// Parses and checks an account table, reporting every issue.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: MatrixConfig = parse_table(table).map_err(|i| vec![i])?;
        let mut issues = Vec::new();
        let homeserver = raw.homeserver.trim_end_matches('/').to_owned();
        // https, or plain http only to loopback: the bot's password and tokens travel on it.
        if let Err(why) = passerelle_sdk::config::check_base_url(&homeserver) {
            issues.push(ConfigIssue::new(
                "homeserver",
                format!("{why} (e.g. https://matrix.example.org)"),
            ));
        }
        let media = passerelle_sdk::config::Media::check(
            raw.media_public_url.as_deref(),
            raw.max_upload_bytes,
            raw.media_fetch_private,
            &mut issues,
        );
        for (i, admin) in raw.admins.iter().enumerate() {
            if !is_user_id(admin) {
                issues.push(ConfigIssue::new(
                    format!("admins[{i}]"),
                    "not a Matrix user id (e.g. @alice:example.org)",
                ));
            }
        }
        let store_passphrase = secret::resolve(
            "store_passphrase",
            raw.store_passphrase.as_ref(),
            raw.store_passphrase_file.as_ref(),
        )
        .map_err(|i| issues.push(i))
        .ok()
        .flatten();
        let mode = match raw.mode {
            Mode::Bot => {
                for (key, set) in [
                    ("server_name", raw.server_name.is_some()),
                    (
                        "as_token",
                        raw.as_token.is_some() || raw.as_token_file.is_some(),
                    ),
                    (
                        "hs_token",
                        raw.hs_token.is_some() || raw.hs_token_file.is_some(),
                    ),
                    ("url", raw.url.is_some()),
                ] {
                    if set {
                        issues.push(ConfigIssue::new(
                            key,
                            "only used with mode = \"appservice\"",
                        ));
                    }
                }
                let user = match &raw.user {
                    Some(u) if is_user_id(u) => Some(u.clone()),
                    Some(_) => {
                        issues.push(ConfigIssue::new(
                            "user",
                            "not a Matrix user id (e.g. @bridge:example.org)",
                        ));
                        None
                    }
                    None => {
                        issues.push(ConfigIssue::new(
                            "user",
                            "missing (the bot's user id, e.g. @bridge:example.org)",
                        ));
                        None
                    }
                };
                let password = secret::resolve(
                    "password",
                    raw.password.as_ref(),
                    raw.password_file.as_ref(),
                )
                .map_err(|i| issues.push(i))
                .ok()
                .flatten();
                let token = secret::resolve(
                    "access_token",
                    raw.access_token.as_ref(),
                    raw.access_token_file.as_ref(),
                )
                .map_err(|i| issues.push(i))
                .ok()
                .flatten();
                let login = match (password, token) {
                    (Some(_), Some(_)) => {
                        issues.push(ConfigIssue::new(
                            "password",
                            "set either password or access_token, not both",
                        ));
                        None
                    }
                    (Some(p), None) => Some(Login::Password(p)),
                    (None, Some(t)) => Some(Login::Token(t)),
                    (None, None) => {
                        if !issues.iter().any(|i| {
                            i.path.starts_with("password") || i.path.starts_with("access_token")
                        }) {
                            issues.push(ConfigIssue::new(
                                "password",
                                "missing (set password, password_file, access_token or \
                                 access_token_file)",
                            ));
                        }
                        None
                    }
                };
                match (user, login) {
                    (Some(user), Some(login)) => {
                        Some(ModeSettings::Bot(BotSettings { user, login }))
                    }
                    _ => None,
                }
            }
            Mode::Appservice => {
                for (key, set) in [
                    ("user", raw.user.is_some()),
                    (
                        "password",
                        raw.password.is_some() || raw.password_file.is_some(),
                    ),
                    (
                        "access_token",
                        raw.access_token.is_some() || raw.access_token_file.is_some(),
                    ),
                ] {
                    if set {
                        issues.push(ConfigIssue::new(key, "only used with mode = \"bot\""));
                    }
                }
                let server_name = match &raw.server_name {
                    Some(s) if !s.is_empty() && !s.contains(['/', '@', ' ']) => Some(s.clone()),
                    Some(_) => {
                        issues.push(ConfigIssue::new("server_name", "not a server name"));
                        None
                    }
                    None => {
                        issues.push(ConfigIssue::new(
                            "server_name",
                            "missing (the homeserver's name, e.g. example.org)",
                        ));
                        None
                    }
                };
                let as_token = secret::require(
                    "as_token",
                    raw.as_token.as_ref(),
                    raw.as_token_file.as_ref(),
                )
                .map_err(|i| issues.push(i))
                .ok();
                let hs_token = secret::require(
                    "hs_token",
                    raw.hs_token.as_ref(),
                    raw.hs_token_file.as_ref(),
                )
                .map_err(|i| issues.push(i))
                .ok();
                for (key, token) in [("as_token", &as_token), ("hs_token", &hs_token)] {
                    if let Some(t) = token
                        && t.expose().len() < 32
                    {
                        issues.push(ConfigIssue::new(
                            key,
                            "too short: use at least 32 characters",
                        ));
                    }
                }
                if let (Some(a), Some(h)) = (&as_token, &hs_token)
                    && a.matches(h.expose())
                {
                    issues.push(ConfigIssue::new("hs_token", "must differ from as_token"));
                }
                for (key, value) in [
                    ("bot_localpart", &raw.bot_localpart),
                    ("ghost_prefix", &raw.ghost_prefix),
                    ("alias_prefix", &raw.alias_prefix),
                ] {
                    if !localpart_ok(value) || value.contains('_') {
                        issues.push(ConfigIssue::new(
                            key,
                            "use lowercase letters, digits and . = - / + only",
                        ));
                    }
                }
                if raw.registration_id.is_empty() {
                    issues.push(ConfigIssue::new("registration_id", "must not be empty"));
                }
                if let Some(url) = &raw.url
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    issues.push(ConfigIssue::new("url", "not an http(s) URL"));
                }
                match (server_name, as_token, hs_token) {
                    (Some(server_name), Some(as_token), Some(hs_token)) => {
                        Some(ModeSettings::Appservice(AppserviceSettings {
                            server_name,
                            as_token,
                            hs_token,
                            registration_id: raw.registration_id.clone(),
                            bot_localpart: raw.bot_localpart.clone(),
                            ghost_prefix: raw.ghost_prefix.clone(),
                            alias_prefix: raw.alias_prefix.clone(),
                            url: raw.url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
                            encryption: raw.encryption,
                            portal_accounts: raw.portal_accounts.clone(),
                            portal_servers: raw.portal_servers.clone(),
                        }))
                    }
                    _ => None,
                }
            }
        };
        match mode {
            Some(mode) if issues.is_empty() => Ok(Settings {
                homeserver,
                device_name: raw.device_name,
                store_passphrase,
                admins: raw.admins,
                disconnect_warning_secs: raw.disconnect_warning_secs,
                media: media.clone(),
                backfill_limit: raw.backfill_limit,
                undecryptable_hold: std::time::Duration::from_secs(raw.undecryptable_hold_secs),
                key_backup: raw.key_backup,
                recovery_key_file: raw.recovery_key_file.clone(),
                mode,
            }),
            _ => Err(issues),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(v: serde_json::Value) -> Vec<String> {
        MatrixConfig::parse(v)
            .unwrap_err()
            .iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn bot_mode_issues_name_their_keys() {
        let all = paths(json!({"homeserver": "matrix.example.org", "user": "bridge",
            "admins": ["@ok:x", "nope"], "hs_token": "x"}));
        for want in [
            "homeserver: not",
            "user: not",
            "admins[1]: not",
            "hs_token: only used",
            "password: missing",
        ] {
            assert!(all.iter().any(|s| s.starts_with(want)), "{want} in {all:?}");
        }
        // The bot's password and tokens never cross a network in clear.
        let all = paths(
            json!({"homeserver": "http://matrix.example.org", "user": "@b:h",
            "password": "p"}),
        );
        assert!(
            all[0].starts_with("homeserver: ") && all[0].contains("https"),
            "{all:?}"
        );
        assert!(
            MatrixConfig::parse(
                json!({"homeserver": "http://127.0.0.1:8008", "user": "@b:h",
                "password": "p"})
            )
            .is_ok(),
            "loopback http is fine"
        );
        let all = paths(
            json!({"homeserver": "https://h", "user": "@b:h", "password": "p",
            "access_token": "t"}),
        );
        assert!(all[0].starts_with("password: set either"), "{all:?}");
        let ok = MatrixConfig::parse(json!({"homeserver": "https://h/", "user": "@b:h",
            "password_file": "/nonexistent/pw"}));
        assert_eq!(ok.unwrap_err()[0].path, "password_file");
        let ok = MatrixConfig::parse(json!({"homeserver": "https://h/", "user": "@b:h",
            "access_token": "t"}))
        .unwrap();
        assert_eq!(ok.homeserver, "https://h");
        assert!(matches!(
            ok.mode,
            ModeSettings::Bot(BotSettings {
                login: Login::Token(_),
                ..
            })
        ));
    }

    #[test]
    fn appservice_mode_issues_name_their_keys() {
        let all = paths(json!({"mode": "appservice", "homeserver": "https://h",
            "as_token": "short", "ghost_prefix": "Bad_Prefix", "password": "p"}));
        for want in [
            "server_name: missing",
            "hs_token: missing",
            "ghost_prefix: use",
            "password: only used",
            "as_token: too short",
        ] {
            assert!(all.iter().any(|s| s.starts_with(want)), "{want} in {all:?}");
        }
        let same = "x".repeat(40);
        let all = paths(json!({"mode": "appservice", "homeserver": "https://h",
            "server_name": "h", "as_token": same, "hs_token": same}));
        assert!(
            all.iter().any(|s| s.starts_with("hs_token: must differ")),
            "{all:?}"
        );
        let ok = MatrixConfig::parse(json!({"mode": "appservice", "homeserver": "https://h",
            "server_name": "h", "as_token": "a".repeat(40), "hs_token": "b".repeat(40)}))
        .unwrap();
        let ModeSettings::Appservice(a) = ok.mode else {
            panic!("appservice settings")
        };
        assert_eq!(a.ghost_prefix, "passerelle");
        assert!(a.encryption);
    }
}

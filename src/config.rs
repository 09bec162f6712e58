//! The daemon's typed configuration.
//!
//! Read with the `config` crate: the TOML file first, then environment overrides named
//! `PASSERELLE__SECTION__KEY` (for example `PASSERELLE__STORE__PATH=/data/passerelle.db`; keys are
//! lower-cased, so name accounts in lower case to override them). Every secret has a `*_file`
//! variant. [`load`] reports every problem at once, each named by its key path.

use passerelle_sdk::config::{parse_table, path_key};
use passerelle_sdk::{AccountId, ConfigIssue, RoomId, Secret};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod cluster;
mod links;

pub use cluster::ClusterConfig;
use links::parse_links;
pub use links::{blocked_links, private_fanout_issues};

/// The whole configuration, validated.
#[derive(Debug)]
pub struct Config {
    /// `[general]`: behaviour shared by all links.
    pub general: General,
    /// `[store]`: where mapping, outbox and connector state live.
    pub store: StoreConfig,
    /// `[http]`: the admin listener.
    pub http: HttpConfig,
    /// `[pastes]`: links to the whole text of messages cut to a destination's lines.
    pub pastes: PastesConfig,
    /// `[cluster]`: several daemons sharing the accounts.
    pub cluster: ClusterConfig,
    /// `[accounts.NAME]`, sorted by name.
    pub accounts: BTreeMap<AccountId, AccountConfig>,
    /// `[[links]]`, in file order.
    pub links: Vec<LinkConfig>,
}

/// `[general]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// How a sender's name is put before the text on networks without per-message identity.
    /// Placeholders: `{nick}` (the sender's display name), `{nopingnick}` (the same with a
    /// zero-width space after its first character), `{account}` (the origin account), `{link}`
    /// (the link's name).
    #[serde(default = "default_nick_format")]
    pub remote_nick_format: String,
    /// What to do with an edit when the destination can't edit: `resend` the new text marked as
    /// a correction, or `drop` it (counted).
    #[serde(default)]
    pub edit_fallback: EditFallback,
    /// What to do with a reaction where the destination has no reactions: `text` says it as an
    /// action (`* alice reacted 👍 to bob's message`), `drop` drops it (counted). Taking a reaction
    /// back is never said.
    #[serde(default)]
    pub reaction_fallback: TextFallback,
    /// What to do with a deletion where the destination can't delete: `text` says it as an action
    /// (`* alice deleted a message`; the deleted text is never repeated), `drop` drops it (counted).
    #[serde(default)]
    pub delete_fallback: TextFallback,
    /// Seconds to keep delivering queued messages after SIGTERM/SIGINT before stopping anyway
    /// (what is left stays in the outbox for the next start).
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// Seconds a delivery waits for its destination's answer before it is logged as late. The
    /// message is never handed to the connector a second time while the first may still go
    /// out (a connector that is reconnecting keeps it queued): it waits on.
    #[serde(default = "default_answer_timeout")]
    pub answer_timeout_secs: u64,
    /// How many times a delivery is tried (each failed answer is one try; waiting for a
    /// connector that is reconnecting is not) before it is given up on: removed from the outbox,
    /// counted in `passerelle_dead_letters_total`, logged without content and listed by
    /// `/dead-letters`. With the retry pause growing to a minute, 100 tries are about 1.5 hours
    /// of failures. Counted per run of the daemon.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds a delivery may wait in the outbox, from when the daemon received the message,
    /// before it is given up on the same way (checked before each try). Default 259200 (3 days).
    #[serde(default = "default_max_queue_age")]
    pub max_queue_age_secs: u64,
    /// Whether a deletion by someone other than the message's author (a room moderator's
    /// redaction on Matrix, an XMPP room's moderation) is bridged. Off by default: only authors'
    /// own deletions cross. When on, it is applied only where the destination account has the
    /// `delete` right. An edit by anyone but the author is never bridged.
    #[serde(default)]
    pub bridge_moderation: bool,
}

fn default_max_attempts() -> u32 {
    100
}

fn default_max_queue_age() -> u64 {
    3 * 86_400
}

fn default_answer_timeout() -> u64 {
    120
}

fn default_nick_format() -> String {
    "<{nick}> ".to_owned()
}

fn default_grace() -> u64 {
    10
}

impl Default for General {
    fn default() -> Self {
        Self {
            remote_nick_format: default_nick_format(),
            edit_fallback: EditFallback::default(),
            reaction_fallback: TextFallback::default(),
            delete_fallback: TextFallback::default(),
            shutdown_grace_secs: default_grace(),
            answer_timeout_secs: default_answer_timeout(),
            max_attempts: default_max_attempts(),
            max_queue_age_secs: default_max_queue_age(),
            bridge_moderation: false,
        }
    }
}

/// What happens to edits on networks that can't edit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditFallback {
    /// Send the new text again, marked as a correction.
    #[default]
    Resend,
    /// Drop the edit (counted in `passerelle_drops_total{reason="no_edits"}`).
    Drop,
}

/// What happens to reactions and deletions on networks that can't carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextFallback {
    /// Say what happened in an action line, without repeating any message text.
    #[default]
    Text,
    /// Drop it (counted in `passerelle_drops_total`).
    Drop,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file. Its directory also holds the outbox key (when generated) and the
    /// connectors' data directories (with `url` set too, only those).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A PostgreSQL database instead of the SQLite file: `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// (libpq's key=value form works too). It holds a password: prefer `url_file`.
    pub url: Option<Secret>,
    /// File holding `url`.
    pub url_file: Option<PathBuf>,
    /// With `url`: connections to the database kept open at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Days to keep the message map (ids only), which translates replies, edits and deletes.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// Key that encrypts queued messages at rest: 64 hex digits. When neither this nor
    /// `outbox_key_file` is set, a key is generated once into `outbox.key` beside the database.
    pub outbox_key: Option<Secret>,
    /// File holding `outbox_key`.
    pub outbox_key_file: Option<PathBuf>,
    /// With `url` and `sslmode=require`: a PEM file of CA certificates trusted for the
    /// database's certificate besides the Mozilla roots (a private CA, or the server's own).
    pub tls_ca_file: Option<PathBuf>,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("data/passerelle.db")
}

fn default_retention() -> u32 {
    30
}

fn default_pool_size() -> usize {
    crate::store::postgres::DEFAULT_POOL_SIZE
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            retention_days: default_retention(),
            outbox_key: None,
            outbox_key_file: None,
            url: None,
            url_file: None,
            pool_size: default_pool_size(),
            tls_ca_file: None,
        }
    }
}

impl StoreConfig {
    /// The PostgreSQL database `url` or `url_file` names, when one does. Issues name the key.
    pub fn database_url(&self) -> Result<Option<Secret>, ConfigIssue> {
        let Some(url) =
            passerelle_sdk::secret::resolve("url", self.url.as_ref(), self.url_file.as_ref())
                .map_err(|issue| issue.under("store"))?
        else {
            return Ok(None);
        };
        let key = if self.url_file.is_some() {
            "store.url_file"
        } else {
            "store.url"
        };
        let text = url.expose().trim();
        let looks_like_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
        let looks_like_pairs = !text.contains("://") && text.contains('=');
        if !(looks_like_url || looks_like_pairs) {
            return Err(ConfigIssue::new(
                key,
                "not a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)",
            ));
        }
        let parsed = text
            .parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigIssue::new(key, format!("not a PostgreSQL URL: {e}")))?;
        let tls = parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
        match (&self.tls_ca_file, tls) {
            (Some(_), false) => {
                return Err(ConfigIssue::new(
                    "store.tls_ca_file",
                    format!(
                        "TLS to the database is used only with sslmode=require in {key}: add it, or remove this key"
                    ),
                ));
            }
            (ca, true) => {
                passerelle_sdk::tls::client_config(ca.as_deref()).map_err(|e| {
                    ConfigIssue::new(
                        if ca.is_some() {
                            "store.tls_ca_file"
                        } else {
                            key
                        },
                        e,
                    )
                })?;
            }
            (None, false) => {}
        }
        if !(1..=256).contains(&self.pool_size) {
            return Err(ConfigIssue::new("store.pool_size", "must be from 1 to 256"));
        }
        Ok(Some(Secret::new(text)))
    }

    /// The directory beside the database.
    pub fn data_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`, `/dead-letters`). Keep
    /// it on loopback or a private network: it is unauthenticated. Without `public_listen` it
    /// also serves the networks' callbacks (`/hooks`, `/accounts/…`, `/pastes/…`). Empty string:
    /// no admin listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Address of the public listener: the networks' callbacks only (`/hooks/…` for webhooks,
    /// `/accounts/…` for Matrix's appservice API and file links, `/pastes/…`, and `/healthz`),
    /// never `/metrics`, `/readyz` or `/dead-letters`. Publish this one (the container does);
    /// keep `listen` private. Unset: `listen` serves both.
    #[serde(default)]
    pub public_listen: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:9180".to_owned()
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_listen: None,
        }
    }
}

impl HttpConfig {
    /// The parsed listen address, `None` when disabled.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        if self.listen.is_empty() {
            None
        } else {
            self.listen.parse().ok()
        }
    }

    /// The parsed public listen address, `None` when unset.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public_listen.as_deref().and_then(|a| a.parse().ok())
    }

    /// Where the networks' callbacks are served: the public listener when there is one, else
    /// the admin listener.
    pub fn callbacks_addr(&self) -> Option<SocketAddr> {
        match &self.public_listen {
            Some(_) => self.public_addr(),
            None => self.listen_addr(),
        }
    }
}

/// `[pastes]`: paste links. Where a destination shows each line as a message (IRC) and a
/// message has more lines than its `max_lines`, the lines sent end with a link to the whole
/// text, served by the daemon at `{public_url}/pastes/...`. The text is kept sealed (encrypted
/// with the outbox key) and deleted after `keep_hours`; anyone with the link can read it until
/// then. Off unless `public_url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PastesConfig {
    /// Where people reach the daemon's listener, e.g. `https://bridge.example.org` (a reverse
    /// proxy in front of `http.listen`). Unset: no paste links (a cut message says only how
    /// many lines were left out).
    pub public_url: Option<String>,
    /// Hours a paste stays readable before it is deleted. Default 24.
    #[serde(default = "default_paste_hours")]
    pub keep_hours: u64,
}

fn default_paste_hours() -> u64 {
    24
}

impl Default for PastesConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            keep_hours: default_paste_hours(),
        }
    }
}

/// What an account may do. Each right is granted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// Its messages may enter the bus.
    pub read: bool,
    /// Messages may be posted to it.
    pub write: bool,
    /// Edits, deletes and reactions may be applied on it.
    pub delete: bool,
}

/// One `[accounts.NAME]`.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The connector kind (`irc`, `api`, ...).
    pub kind: String,
    /// Granted rights; default `["read", "write"]`.
    pub rights: Rights,
    /// A disabled account is neither started nor routed to.
    pub enabled: bool,
    /// Overrides `general.remote_nick_format` for messages sent to this account.
    pub remote_nick_format: Option<String>,
    /// The connector's own keys, checked by its factory.
    pub table: serde_json::Value,
}

/// Which way a room takes part in a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Its messages go into the link, and the link's messages come out to it.
    Inout,
    /// Its messages go into the link; nothing is sent to it.
    In,
    /// The link's messages come out to it; its own messages go nowhere.
    Out,
}

impl Direction {
    /// Messages from this room enter the link.
    pub fn feeds(self) -> bool {
        matches!(self, Self::Inout | Self::In)
    }
    /// The link's messages are sent to this room.
    pub fn receives(self) -> bool {
        matches!(self, Self::Inout | Self::Out)
    }
}

/// One `[[links]]`: rooms on several accounts that form one conversation.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The link's name (matterbridge's gateway name), unique.
    pub name: String,
    /// Its rooms.
    pub rooms: Vec<LinkRoom>,
    /// The operator's word that this link may carry one person's private chat to more than one
    /// place: join two private rooms, or a private room that is in another link as well.
    pub private_fanout: bool,
}

/// One room of a link.
#[derive(Debug, Clone)]
pub struct LinkRoom {
    /// The account the room is on.
    pub account: AccountId,
    /// The room on that account's network.
    pub room: RoomId,
    /// Which way it takes part.
    pub direction: Direction,
    /// Whether it is one person's private chat, as its connector says
    /// ([`passerelle_sdk::Connector::room_kind`]); set once the connectors are built.
    pub private: bool,
}
/// Reads `path` and the environment, and validates everything but the connectors' own tables
/// (see [`crate::registry::build_all`]).
pub fn load(path: &Path) -> Result<Config, Vec<ConfigIssue>> {
    let raw = read_raw(path).map_err(|issue| vec![issue])?;
    from_value(raw)
}

/// Like [`load`], but always returns the configuration it could make out (broken sections at
/// their defaults, broken accounts and links left out) beside every issue found, so that callers
/// can check the connectors' tables too and report everything at once.
pub fn load_lenient(path: &Path) -> (Config, Vec<ConfigIssue>) {
    match read_raw(path) {
        Ok(raw) => parse(raw),
        Err(issue) => (Config::empty(), vec![issue]),
    }
}

impl Config {
    fn empty() -> Self {
        Self {
            general: General::default(),
            store: StoreConfig::default(),
            http: HttpConfig::default(),
            pastes: PastesConfig::default(),
            cluster: ClusterConfig::default(),
            accounts: BTreeMap::new(),
            links: Vec::new(),
        }
    }
}

/// Reads the file and the `PASSERELLE__` environment into one JSON value.
pub fn read_raw(path: &Path) -> Result<serde_json::Value, ConfigIssue> {
    if !path.exists() {
        return Err(ConfigIssue::new(
            "",
            format!("config file {} not found", path.display()),
        ));
    }
    let built = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("PASSERELLE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .map_err(|e| ConfigIssue::new("", format!("cannot read {}: {e}", path.display())))?;
    built
        .try_deserialize::<serde_json::Value>()
        .map_err(|e| ConfigIssue::new("", format!("cannot read {}: {e}", path.display())))
}

/// Validates a configuration given as TOML text, without the environment (for `check` on
/// a text and for fuzzing): the same rules as [`load`].
pub fn from_toml_str(text: &str) -> Result<Config, Vec<ConfigIssue>> {
    let raw = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|built| built.try_deserialize::<serde_json::Value>())
        .map_err(|e| {
            vec![ConfigIssue::new(
                "",
                format!("cannot read the configuration: {e}"),
            )]
        })?;
    from_value(raw)
}

/// Validates a raw configuration value, collecting every issue.
pub fn from_value(raw: serde_json::Value) -> Result<Config, Vec<ConfigIssue>> {
    let (config, issues) = parse(raw);
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(issues)
    }
}

fn parse(raw: serde_json::Value) -> (Config, Vec<ConfigIssue>) {
    let mut issues = Vec::new();
    let serde_json::Value::Object(mut top) = raw else {
        return (
            Config::empty(),
            vec![ConfigIssue::new("", "the configuration must be a table")],
        );
    };

    let mut section = |name: &str| top.remove(name);
    let general = parse_section::<General>(section("general"), "general", &mut issues);
    let store = parse_section::<StoreConfig>(section("store"), "store", &mut issues);
    if let Some(Err(issue)) = store.as_ref().map(StoreConfig::database_url) {
        issues.push(issue);
    }
    let http = parse_section::<HttpConfig>(section("http"), "http", &mut issues);
    let pastes = parse_section::<PastesConfig>(section("pastes"), "pastes", &mut issues);
    let cluster = parse_section::<ClusterConfig>(section("cluster"), "cluster", &mut issues);
    let raw_accounts = section("accounts");
    let raw_links = section("links");
    for key in top.keys() {
        issues.push(ConfigIssue::new(
            path_key(key),
            "unknown key (expected general, store, http, pastes, cluster, accounts, links)",
        ));
    }

    if let Some(http) = &http
        && !http.listen.is_empty()
        && http.listen_addr().is_none()
    {
        issues.push(ConfigIssue::new(
            "http.listen",
            "not a socket address (e.g. 127.0.0.1:9180)",
        ));
    }
    if let Some(http) = &http
        && let Some(public) = &http.public_listen
    {
        if http.public_addr().is_none() {
            issues.push(ConfigIssue::new(
                "http.public_listen",
                "not a socket address (e.g. 0.0.0.0:9181)",
            ));
        } else if http.public_addr() == http.listen_addr() {
            issues.push(ConfigIssue::new(
                "http.public_listen",
                format!("{public} is http.listen too: the public listener needs a port of its own"),
            ));
        }
    }

    if let Some(PastesConfig {
        public_url: Some(url),
        keep_hours,
    }) = &pastes
    {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 10 {
            issues.push(ConfigIssue::new(
                "pastes.public_url",
                "not an http(s) URL (e.g. https://bridge.example.org)",
            ));
        }
        if *keep_hours == 0 || *keep_hours > 24 * 90 {
            issues.push(ConfigIssue::new(
                "pastes.keep_hours",
                "must be from 1 to 2160 (90 days)",
            ));
        }
    }

    let accounts = parse_accounts(raw_accounts, &mut issues);
    let links = parse_links(raw_links, &accounts, &mut issues);
    if let Some(http) = &http {
        example_secrets_need_loopback(http, &accounts, &mut issues);
    }
    if let (Some(cluster), Some(store)) = (&cluster, &store) {
        cluster::check(cluster, store, &accounts, &mut issues);
    }

    let config = Config {
        general: general.unwrap_or_default(),
        store: store.unwrap_or_default(),
        http: http.unwrap_or_default(),
        pastes: pastes.unwrap_or_default(),
        cluster: cluster.unwrap_or_default(),
        accounts,
        links,
    };
    (config, issues)
}

/// The mark of the example configuration's placeholder secrets.
const EXAMPLE_SECRET: &str = "change-me";

/// `config.example.toml` runs as it is, on loopback. Its placeholder secrets (`change-me…`) are
/// known to everyone, so once any listener (`http.listen`, an account's `listen`) is reachable
/// from elsewhere, each one left in an enabled account is an issue at its key.
fn example_secrets_need_loopback(
    http: &HttpConfig,
    accounts: &BTreeMap<AccountId, AccountConfig>,
    issues: &mut Vec<ConfigIssue>,
) {
    let on_loopback = |addr: &str| {
        addr.is_empty()
            || addr
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback())
            || addr.starts_with("localhost:")
    };
    let mut exposed: Vec<String> = Vec::new();
    if !on_loopback(&http.listen) {
        exposed.push(format!("http.listen = {:?}", http.listen));
    }
    if let Some(public) = &http.public_listen
        && !on_loopback(public)
    {
        exposed.push(format!("http.public_listen = {public:?}"));
    }
    for (id, account) in accounts.iter().filter(|(_, a)| a.enabled) {
        if let Some(listen) = account.table.get("listen").and_then(|v| v.as_str())
            && !on_loopback(listen)
        {
            exposed.push(format!(
                "accounts.{}.listen = {listen:?}",
                path_key(id.as_str())
            ));
        }
    }
    let Some(first) = exposed.first() else {
        return;
    };
    for (id, account) in accounts.iter().filter(|(_, a)| a.enabled) {
        let Some(table) = account.table.as_object() else {
            continue;
        };
        for (key, value) in table {
            if value.as_str().is_some_and(|v| v.contains(EXAMPLE_SECRET)) {
                issues.push(ConfigIssue::new(
                    format!("accounts.{}.{}", path_key(id.as_str()), path_key(key)),
                    format!(
                        "is the example's placeholder, known to everyone, and {first} is reachable \
                         from other machines: set your own secret (or {key}_file), or keep \
                         every listener on 127.0.0.1"
                    ),
                ));
            }
        }
    }
}

fn parse_section<T: serde::de::DeserializeOwned + Default>(
    value: Option<serde_json::Value>,
    name: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    match value {
        None => Some(T::default()),
        Some(v) => match parse_table::<T>(v) {
            Ok(t) => Some(t),
            Err(issue) => {
                issues.push(issue.under(name));
                None
            }
        },
    }
}

fn parse_accounts(
    raw: Option<serde_json::Value>,
    issues: &mut Vec<ConfigIssue>,
) -> BTreeMap<AccountId, AccountConfig> {
    let mut accounts = BTreeMap::new();
    let Some(raw) = raw else {
        return accounts;
    };
    let serde_json::Value::Object(map) = raw else {
        issues.push(ConfigIssue::new("accounts", "must be a table of accounts"));
        return accounts;
    };
    for (name, value) in map {
        let here = format!("accounts.{}", path_key(&name));
        let serde_json::Value::Object(mut table) = value else {
            issues.push(ConfigIssue::new(here, "must be a table"));
            continue;
        };
        let kind = match table.remove("kind") {
            Some(serde_json::Value::String(k)) => Some(k),
            Some(_) => {
                issues.push(ConfigIssue::new(format!("{here}.kind"), "must be a string"));
                None
            }
            None => {
                issues.push(ConfigIssue::new(format!("{here}.kind"), "missing"));
                None
            }
        };
        let rights = match table.remove("rights") {
            None => Some(Rights {
                read: true,
                write: true,
                delete: false,
            }),
            Some(v) => parse_rights(v, &format!("{here}.rights"), issues),
        };
        let enabled = match table.remove("enabled") {
            None => true,
            Some(serde_json::Value::Bool(b)) => b,
            Some(_) => {
                issues.push(ConfigIssue::new(
                    format!("{here}.enabled"),
                    "must be true or false",
                ));
                true
            }
        };
        let remote_nick_format = match table.remove("remote_nick_format") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(_) => {
                issues.push(ConfigIssue::new(
                    format!("{here}.remote_nick_format"),
                    "must be a string",
                ));
                None
            }
        };
        if let (Some(kind), Some(rights)) = (kind, rights) {
            accounts.insert(
                AccountId::new(name),
                AccountConfig {
                    kind,
                    rights,
                    enabled,
                    remote_nick_format,
                    table: serde_json::Value::Object(table),
                },
            );
        }
    }
    accounts
}

fn parse_rights(
    value: serde_json::Value,
    here: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Rights> {
    let serde_json::Value::Array(items) = value else {
        issues.push(ConfigIssue::new(
            here,
            "must be a list drawn from \"read\", \"write\", \"delete\"",
        ));
        return None;
    };
    let mut rights = Rights::default();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some("read") => rights.read = true,
            Some("write") => rights.write = true,
            Some("delete") => rights.delete = true,
            _ => {
                issues.push(ConfigIssue::new(
                    format!("{here}[{i}]"),
                    "unknown right (expected \"read\", \"write\" or \"delete\")",
                ));
                ok = false;
            }
        }
    }
    ok.then_some(rights)
}

/// The rooms each account takes part in, over all links.
pub fn rooms_of(config: &Config, account: &AccountId) -> Vec<RoomId> {
    let mut rooms: Vec<RoomId> = Vec::new();
    for link in &config.links {
        for r in &link.rooms {
            if &r.account == account && !rooms.contains(&r.room) {
                rooms.push(r.room.clone());
            }
        }
    }
    rooms
}

#[cfg(test)]
mod tests;

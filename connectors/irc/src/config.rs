//! The IRC account's config: `[accounts.NAME]` with `kind = "irc"`.

use passerelle_sdk::config::parse_table;
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The keys of an IRC account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcConfig {
    /// Server host name or address, optionally with its port as matterbridge writes it
    /// (`irc.libera.chat:6697`, `[2001:db8::1]:6697`).
    pub server: String,
    /// Port; default the one in `server`, else 6697 with TLS, 6667 without.
    pub port: Option<u16>,
    /// Connect with TLS (rustls, the Mozilla root store plus `tls_ca_file`). Default true.
    #[serde(default = "yes")]
    pub tls: bool,
    /// A PEM file of extra certificate authorities to trust (a private network's CA).
    pub tls_ca_file: Option<PathBuf>,
    /// The nick to use.
    pub nick: String,
    /// Nicks to try, in order, when `nick` is taken; after them, `nick` with `_` appended.
    #[serde(default)]
    pub alt_nicks: Vec<String>,
    /// The user name (ident); default the nick.
    pub username: Option<String>,
    /// The real name; default "passerelle bridge".
    pub realname: Option<String>,
    /// Server password (PASS).
    pub password: Option<Secret>,
    /// File holding `password`.
    pub password_file: Option<PathBuf>,
    /// SASL PLAIN account name; SASL is required when set.
    pub sasl_username: Option<String>,
    /// SASL PLAIN password.
    pub sasl_password: Option<Secret>,
    /// File holding `sasl_password`.
    pub sasl_password_file: Option<PathBuf>,
    /// Keys of channels that need one, by channel name.
    #[serde(default)]
    pub channel_keys: BTreeMap<String, Secret>,
    /// A file of channel keys, one `#channel key` pair per line; merged with `channel_keys`.
    pub channel_keys_file: Option<PathBuf>,
    /// Lines per second we send at most (the server's flood limits); 0 for no limit. Default 2.
    #[serde(default = "default_rate")]
    pub send_rate_per_second: f64,
    /// Lines we may send at once before the rate applies. Default 5.
    #[serde(default = "default_burst")]
    pub send_burst: u32,
    /// Seconds of silence from the server before we send a PING. Default 60.
    #[serde(default = "default_ping")]
    pub ping_interval_secs: u64,
    /// Seconds of silence after which the link counts as dead and we reconnect. Default 180.
    #[serde(default = "default_dead")]
    pub dead_link_secs: u64,
    /// Seconds to wait for the connection and registration. Default 30.
    #[serde(default = "default_connect")]
    pub connect_timeout_secs: u64,
    /// When `nick` is taken at connect time, seconds to wait for it to come free (checked every
    /// second) before joining under the fallback nick. The holder is usually our own previous
    /// connection, which the server is still closing after a crash: waiting for it to go keeps
    /// the lines it had already sent ahead of the new ones. 0 to join at once. Default 30.
    #[serde(default = "default_reclaim")]
    pub reclaim_nick_secs: u64,
    /// The most lines one bridged message becomes on IRC (a line too long for one IRC line
    /// counts as the lines it is split into). A longer message is sent as its first lines and a
    /// line `… (1,995 more lines)`, with a link to the whole text when `[pastes]` is set. Every
    /// line starts with the sender's name. 0 for no limit (a long paste then holds the channel,
    /// at `send_rate_per_second`, for as long as it takes). Default 5.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
}

fn default_max_lines() -> usize {
    5
}

fn default_reclaim() -> u64 {
    30
}

fn yes() -> bool {
    true
}
fn default_rate() -> f64 {
    2.0
}
fn default_burst() -> u32 {
    5
}
fn default_ping() -> u64 {
    60
}
fn default_dead() -> u64 {
    180
}
fn default_connect() -> u64 {
    30
}

/// The config with secrets read and defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Host.
    pub server: String,
    /// Port.
    pub port: u16,
    /// TLS on.
    pub tls: bool,
    /// Extra CAs (PEM file).
    pub tls_ca_file: Option<PathBuf>,
    /// Nicks to try, in order (the last ones with `_` appended).
    pub nicks: Vec<String>,
    /// Ident.
    pub username: String,
    /// Real name.
    pub realname: String,
    /// PASS.
    pub password: Option<Secret>,
    /// SASL PLAIN credentials.
    pub sasl: Option<(String, Secret)>,
    /// Channel keys, by lower-cased channel name.
    pub channel_keys: BTreeMap<String, Secret>,
    /// Lines per second (0: unlimited).
    pub send_rate: f64,
    /// Burst.
    pub send_burst: u32,
    /// PING after this much silence.
    pub ping_interval: Duration,
    /// Dead after this much silence.
    pub dead_link: Duration,
    /// Connection and registration timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the first nick to come free (`reclaim_nick_secs`).
    pub reclaim_nick: Duration,
    /// Lines per bridged message at most (`max_lines`); `None` for no limit.
    pub max_lines: Option<usize>,
}

impl IrcConfig {
    /// Parses and checks an account table, reporting every issue.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: IrcConfig = parse_table(table).map_err(|i| vec![i])?;
        let mut issues = Vec::new();
        let (host, server_port) = match split_server(&raw.server) {
            Ok(parts) => parts,
            Err(why) => {
                issues.push(ConfigIssue::new("server", why));
                (String::new(), None)
            }
        };
        if let (Some(in_server), Some(port)) = (server_port, raw.port)
            && in_server != port
        {
            issues.push(ConfigIssue::new(
                "port",
                format!(
                    "is {port}, but server names port {in_server}: keep one of them \
                     (server = \"{host}\", port = {in_server})"
                ),
            ));
        }
        let valid_nick = |n: &str| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit() || c == '-')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_[]\\^{}|`".contains(c))
        };
        if !valid_nick(&raw.nick) {
            issues.push(ConfigIssue::new("nick", "not a valid IRC nick"));
        }
        for (i, n) in raw.alt_nicks.iter().enumerate() {
            if !valid_nick(n) {
                issues.push(ConfigIssue::new(
                    format!("alt_nicks[{i}]"),
                    "not a valid IRC nick",
                ));
            }
        }
        let password = secret::resolve(
            "password",
            raw.password.as_ref(),
            raw.password_file.as_ref(),
        )
        .unwrap_or_else(|i| {
            issues.push(i);
            None
        });
        let sasl_password = secret::resolve(
            "sasl_password",
            raw.sasl_password.as_ref(),
            raw.sasl_password_file.as_ref(),
        )
        .unwrap_or_else(|i| {
            issues.push(i);
            None
        });
        let sasl = match (raw.sasl_username, sasl_password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            (Some(_), None) => {
                issues.push(ConfigIssue::new(
                    "sasl_password",
                    "missing (sasl_username is set)",
                ));
                None
            }
            (None, Some(_)) => {
                issues.push(ConfigIssue::new(
                    "sasl_username",
                    "missing (sasl_password is set)",
                ));
                None
            }
        };
        let mut channel_keys: BTreeMap<String, Secret> = raw
            .channel_keys
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        if let Some(path) = &raw.channel_keys_file {
            for pair in
                secret::read_pairs_file("channel_keys_file", path, "#channel key", &mut issues)
            {
                channel_keys.insert(pair.name.to_lowercase(), pair.secret);
            }
        }
        if let Some(ca) = &raw.tls_ca_file
            && let Err(e) = passerelle_sdk::tls::client_config(Some(ca))
        {
            issues.push(ConfigIssue::new("tls_ca_file", e));
        }
        if !(raw.send_rate_per_second >= 0.0 && raw.send_rate_per_second.is_finite()) {
            issues.push(ConfigIssue::new(
                "send_rate_per_second",
                "must be 0 or more",
            ));
        }
        if raw.send_burst == 0 {
            issues.push(ConfigIssue::new("send_burst", "must be at least 1"));
        }
        if raw.ping_interval_secs == 0 || raw.dead_link_secs <= raw.ping_interval_secs {
            issues.push(ConfigIssue::new(
                "dead_link_secs",
                "must be greater than ping_interval_secs (and both above 0)",
            ));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut nicks = vec![raw.nick.clone()];
        nicks.extend(raw.alt_nicks);
        for n in 1..=3 {
            nicks.push(format!("{}{}", raw.nick, "_".repeat(n)));
        }
        Ok(Settings {
            port: raw
                .port
                .or(server_port)
                .unwrap_or(if raw.tls { 6697 } else { 6667 }),
            server: host,
            tls: raw.tls,
            tls_ca_file: raw.tls_ca_file,
            username: raw.username.unwrap_or_else(|| raw.nick.clone()),
            realname: raw
                .realname
                .unwrap_or_else(|| "passerelle bridge".to_owned()),
            nicks,
            password,
            sasl,
            channel_keys,
            send_rate: raw.send_rate_per_second,
            send_burst: raw.send_burst,
            ping_interval: Duration::from_secs(raw.ping_interval_secs),
            dead_link: Duration::from_secs(raw.dead_link_secs),
            connect_timeout: Duration::from_secs(raw.connect_timeout_secs.max(1)),
            reclaim_nick: Duration::from_secs(raw.reclaim_nick_secs),
            max_lines: (raw.max_lines > 0).then_some(raw.max_lines),
        })
    }
}

/// The host and the port, if any, of `server`: `host`, `host:port`, `[v6]:port`, `[v6]` or a bare
/// IPv6 address. The error says what is wrong, in words for the `server` key.
fn split_server(server: &str) -> Result<(String, Option<u16>), String> {
    let server = server.trim();
    if server.is_empty() {
        return Err("must not be empty".into());
    }
    if server.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!(
            "\"{server}\" is not a host name (no scheme, path or spaces: e.g. \"irc.libera.chat\")"
        ));
    }
    let port_of = |p: &str| {
        let digits = p.strip_prefix('+').unwrap_or(p);
        digits.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(|| {
            format!("\"{p}\" is not a port (write the port as a number from 1 to 65535, or set `port`)")
        })
    };
    if let Some(rest) = server.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("\"{server}\" has no closing ']'"))?;
        let port = match after {
            "" => None,
            p => Some(port_of(p.strip_prefix(':').ok_or_else(|| {
                format!("\"{server}\": expected ':' and a port after ']'")
            })?)?),
        };
        return Ok((addr.to_owned(), port));
    }
    match server.matches(':').count() {
        0 => Ok((server.to_owned(), None)),
        1 => {
            let (host, port) = server.split_once(':').unwrap_or((server, ""));
            if host.is_empty() {
                return Err(format!("\"{server}\" has no host before the port"));
            }
            Ok((host.to_owned(), Some(port_of(port)?)))
        }
        // More than one colon and no brackets: a bare IPv6 address.
        _ => Ok((server.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn channel_keys_come_from_the_table_and_the_file() {
        let dir = std::env::temp_dir().join(format!("irc-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, "#Secret  hunter2\n\n#other k2\n").unwrap();
        let s = IrcConfig::parse(json!({
            "server": "x", "nick": "n", "channel_keys": {"#Inline": "k1"}, "channel_keys_file": file
        }))
        .unwrap();
        let keys: Vec<(&str, &str)> = s
            .channel_keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            keys,
            vec![("#inline", "k1"), ("#other", "k2"), ("#secret", "hunter2")]
        );
        std::fs::write(&file, "#lonely\n").unwrap();
        let err = IrcConfig::parse(json!({"server": "x", "nick": "n", "channel_keys_file": file}))
            .unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "channel_keys_file: line 1: expected \"#channel key\""
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_port_in_server_is_taken_as_matterbridge_writes_it() {
        let s = IrcConfig::parse(json!({"server": "irc.libera.chat:6697", "nick": "n"})).unwrap();
        assert_eq!((s.server.as_str(), s.port), ("irc.libera.chat", 6697));
        let s = IrcConfig::parse(json!({"server": "irc.libera.chat:+6697", "nick": "n"})).unwrap();
        assert_eq!((s.server.as_str(), s.port), ("irc.libera.chat", 6697));
        let s = IrcConfig::parse(json!({"server": "[2001:db8::1]:7000", "nick": "n"})).unwrap();
        assert_eq!((s.server.as_str(), s.port), ("2001:db8::1", 7000));
        let s =
            IrcConfig::parse(json!({"server": "2001:db8::1", "nick": "n", "tls": false})).unwrap();
        assert_eq!((s.server.as_str(), s.port), ("2001:db8::1", 6667));
        let same = json!({"server": "irc.libera.chat:6697", "port": 6697, "nick": "n"});
        assert_eq!(IrcConfig::parse(same).unwrap().port, 6697);

        let issue = |table| IrcConfig::parse(table).unwrap_err()[0].to_string();
        assert_eq!(
            issue(json!({"server": "irc.libera.chat:6697", "port": 6667, "nick": "n"})),
            "port: is 6667, but server names port 6697: keep one of them \
             (server = \"irc.libera.chat\", port = 6697)"
        );
        assert!(
            issue(json!({"server": "irc.libera.chat:ssl", "nick": "n"}))
                .starts_with("server: \"ssl\" is not a port")
        );
        assert!(
            issue(json!({"server": "irc.libera.chat:0", "nick": "n"}))
                .starts_with("server: \"0\" is not a port")
        );
        assert!(
            issue(json!({"server": "ircs://irc.libera.chat", "nick": "n"}))
                .starts_with("server: \"ircs://irc.libera.chat\" is not a host name")
        );
        assert!(
            issue(json!({"server": ":6697", "nick": "n"}))
                .starts_with("server: \":6697\" has no host")
        );
        assert!(issue(json!({"server": "[::1:6697", "nick": "n"})).starts_with("server:"));
    }

    #[test]
    fn defaults_and_issues() {
        let s = IrcConfig::parse(json!({"server": "irc.example", "nick": "bridge"})).unwrap();
        assert_eq!((s.port, s.tls), (6697, true));
        assert_eq!(s.nicks, vec!["bridge", "bridge_", "bridge__", "bridge___"]);
        let err = IrcConfig::parse(json!({"nick": "bridge"})).unwrap_err();
        assert_eq!(err[0].to_string(), "server: missing");
        let err = IrcConfig::parse(json!({
            "server": "", "nick": "9bad", "sasl_username": "u", "password_file": "/nonexistent/p",
            "send_burst": 0
        }))
        .unwrap_err();
        let all: Vec<String> = err.iter().map(|i| i.to_string()).collect();
        for expected in [
            "server:",
            "nick:",
            "sasl_password: missing",
            "password_file: cannot read",
            "send_burst:",
        ] {
            assert!(
                all.iter().any(|s| s.starts_with(expected)),
                "{expected} not in {all:?}"
            );
        }
    }
}

//! The Discord account's config: `[accounts.NAME]` with `kind = "discord"`.

use passerelle_sdk::config::{Media, check_base_url, parse_table, timeout};
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The most messages `catch_up_messages` may ask for, per channel.
pub const MAX_CATCH_UP: u32 = 1000;

/// The keys of a Discord account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot's token (Developer Portal, Bot, Reset Token), without the `Bot ` prefix.
    pub token: Option<Secret>,
    /// File holding `token`.
    pub token_file: Option<PathBuf>,
    /// The REST API's base. Default `https://discord.com/api/v10`. Must be `https`, except on
    /// loopback.
    pub api_base: Option<String>,
    /// The Gateway's URL. Default: what `GET /gateway/bot` answers. Must be `wss`, except on
    /// loopback.
    pub gateway_url: Option<String>,
    /// Send as the person who wrote (their name and avatar) through one webhook per channel,
    /// created by the bot or reused (needs the Manage Webhooks permission). Default true. When
    /// false, or where the bot may not manage webhooks, the bot sends with the name in the text.
    #[serde(default = "yes")]
    pub webhooks: bool,
    /// The guild (server) whose channels `#name` rooms are looked for in: its id, or its name.
    /// Default: any guild the bot is in.
    pub guild: Option<String>,
    /// The name of the webhook the bot creates in each channel. Default `passerelle`.
    #[serde(default = "default_webhook_name")]
    pub webhook_name: String,
    /// After a gap the Gateway could not replay (a new session after an outage or a restart), how
    /// many of each channel's messages since the last one seen are fetched from its history
    /// (0–1000). Default 100; 0 turns the catch-up off.
    #[serde(default = "default_catch_up")]
    pub catch_up_messages: u32,
    /// Discord's CDN links are public: this is only read to offer files through the daemon, and
    /// may stay unset.
    pub media_public_url: Option<String>,
    /// The largest file uploaded to a channel, in bytes; a larger one is sent as a link. Default
    /// 10 MiB (what every server allows; boosted servers allow more).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Fetch files from loopback and private addresses too (default false: public only).
    #[serde(default)]
    pub media_fetch_private: bool,
    /// Seconds a REST call may take. Default 30.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_webhook_name() -> String {
    "passerelle".into()
}

fn default_catch_up() -> u32 {
    100
}

fn default_max_upload() -> u64 {
    10 * 1024 * 1024
}

fn default_timeout() -> u64 {
    30
}

/// A checked config, secrets read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bot token (without `Bot `).
    pub token: Secret,
    /// REST base without trailing `/`.
    pub api_base: String,
    /// The Gateway URL, when set.
    pub gateway_url: Option<String>,
    /// Webhooks for per-message identity.
    pub webhooks: bool,
    /// Where `#name` rooms are looked for.
    pub guild: Guild,
    /// Their name.
    pub webhook_name: String,
    /// Messages fetched per channel after a gap.
    pub catch_up: u32,
    /// `media_public_url`, `max_upload_bytes`, `media_fetch_private`.
    pub media: Media,
    /// Per-call timeout.
    pub request_timeout: Duration,
}

/// What a room names: a guild channel (its id, or `#` and its name), or a person's direct
/// messages with the bot (`@` and their user id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Room {
    /// A text, announcement or forum channel (its threads are threads).
    Channel(u64),
    /// A channel by name (lower-cased, without `#`), found in the `guild` once connected.
    Named(String),
    /// The direct-message channel with this user.
    Direct(u64),
}

/// Reads a room name.
pub fn room(name: &str) -> Option<Room> {
    if let Some(channel) = name.strip_prefix('#') {
        // Discord's channel names: 1-100 characters, no spaces or `#`.
        let ok = !channel.is_empty()
            && channel.chars().count() <= 100
            && !channel
                .chars()
                .any(|c| c.is_whitespace() || c == '#' || c.is_control());
        return ok.then(|| Room::Named(channel.to_lowercase()));
    }
    let (direct, digits) = match name.strip_prefix('@') {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u64 = digits.parse().ok().filter(|id| *id != 0)?;
    Some(if direct {
        Room::Direct(id)
    } else {
        Room::Channel(id)
    })
}

/// Which guild named channels are looked for in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guild {
    /// Any the bot is in (a name in two of them is refused as ambiguous).
    Any,
    /// The guild with this id.
    Id(u64),
    /// The guild with this name (case ignored).
    Name(String),
}

fn check_ws_url(url: &str) -> Result<(), String> {
    let http = if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        return Err("must start with wss://".into());
    };
    check_base_url(&http).map_err(|e| e.replace("https", "wss"))
}

impl DiscordConfig {
    /// Parses and checks an account table, reporting every problem at once.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: DiscordConfig = parse_table(table).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        let token = match secret::require("token", raw.token.as_ref(), raw.token_file.as_ref()) {
            Ok(t) if t.expose().starts_with("Bot ") => {
                issues.push(ConfigIssue::new(
                    "token",
                    "write the token without the \"Bot \" prefix",
                ));
                None
            }
            Ok(t)
                if t.expose().is_empty()
                    || !t.expose().bytes().all(|b| b.is_ascii_graphic())
                    || t.expose().len() > 512 =>
            {
                issues.push(ConfigIssue::new(
                    "token",
                    "not a bot token (printable characters, no spaces, from the Developer Portal's Bot page)",
                ));
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                issues.push(e);
                None
            }
        };
        let api_base = raw
            .api_base
            .as_deref()
            .unwrap_or("https://discord.com/api/v10")
            .trim_end_matches('/')
            .to_owned();
        if let Err(why) = check_base_url(&api_base) {
            issues.push(ConfigIssue::new("api_base", why));
        }
        let gateway_url = raw
            .gateway_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &gateway_url
            && let Err(why) = check_ws_url(url)
        {
            issues.push(ConfigIssue::new("gateway_url", why));
        }
        let guild = match raw.guild.as_deref().map(str::trim) {
            None => Guild::Any,
            Some("") => {
                issues.push(ConfigIssue::new(
                    "guild",
                    "empty: give the server's id or name, or leave it out",
                ));
                Guild::Any
            }
            Some(g) => match g.parse::<u64>() {
                Ok(id) if id != 0 => Guild::Id(id),
                _ => Guild::Name(g.to_owned()),
            },
        };
        let name = raw.webhook_name.trim();
        // Discord refuses webhook names of more than 80 characters and names containing
        // "discord" or "clyde".
        let lower = name.to_lowercase();
        if name.is_empty() || name.chars().count() > 80 {
            issues.push(ConfigIssue::new("webhook_name", "must be 1-80 characters"));
        } else if lower.contains("discord") || lower.contains("clyde") {
            issues.push(ConfigIssue::new(
                "webhook_name",
                "Discord refuses webhook names containing \"discord\" or \"clyde\"",
            ));
        }
        if raw.catch_up_messages > MAX_CATCH_UP {
            issues.push(ConfigIssue::new(
                "catch_up_messages",
                format!("at most {MAX_CATCH_UP}"),
            ));
        }
        let media = Media::check(
            raw.media_public_url.as_deref(),
            raw.max_upload_bytes,
            raw.media_fetch_private,
            &mut issues,
        );
        let request_timeout = timeout(
            "request_timeout_secs",
            raw.request_timeout_secs,
            &mut issues,
        );
        match token {
            Some(token) if issues.is_empty() => Ok(Settings {
                token,
                api_base,
                gateway_url,
                webhooks: raw.webhooks,
                guild,
                webhook_name: name.to_owned(),
                catch_up: raw.catch_up_messages,
                media,
                request_timeout,
            }),
            _ => Err(issues),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rooms_are_channel_ids_names_or_a_person() {
        assert_eq!(room("1234567890123"), Some(Room::Channel(1234567890123)));
        assert_eq!(room("@42"), Some(Room::Direct(42)));
        assert_eq!(room("#General"), Some(Room::Named("general".into())));
        for bad in [
            "",
            "#",
            "# x",
            "##x",
            "@",
            "12a",
            "0",
            "99999999999999999999999",
            "-5",
        ] {
            assert_eq!(room(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let issues = DiscordConfig::parse(json!({
            "token": "Bot abc", "api_base": "http://discord.example.org/api", "gateway_url": "https://x",
            "webhook_name": "My Discord bridge", "catch_up_messages": 5000, "request_timeout_secs": 0
        }))
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "token",
                "api_base",
                "gateway_url",
                "webhook_name",
                "catch_up_messages",
                "request_timeout_secs"
            ],
            "{issues:?}"
        );
        let missing = DiscordConfig::parse(json!({})).unwrap_err();
        assert_eq!(missing[0].path, "token");
        let ok = DiscordConfig::parse(
            json!({"token": "MTA.abc.def", "gateway_url": "ws://127.0.0.1:5/"}),
        )
        .unwrap();
        assert_eq!(ok.gateway_url.as_deref(), Some("ws://127.0.0.1:5"));
        assert_eq!(ok.api_base, "https://discord.com/api/v10");
        assert!(ok.webhooks);
    }
}

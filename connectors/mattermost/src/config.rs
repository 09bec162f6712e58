//! The Mattermost account's config: `[accounts.NAME]` with `kind = "mattermost"`.

use passerelle_sdk::config::{Media, check_base_url, parse_table, timeout};
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The most posts `catch_up_posts` may ask for, per channel.
pub const MAX_CATCH_UP: u32 = 1000;

/// The keys of a Mattermost account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MattermostConfig {
    /// The server, as people open it (`https://chat.example.org`).
    pub url: Option<String>,
    /// A bot account's token (System Console, Bot Accounts) or a personal access token.
    pub token: Option<Secret>,
    /// File holding `token`.
    pub token_file: Option<PathBuf>,
    /// The team whose channels `~name` rooms are (its name in URLs: `chat.example.org/TEAM/…`).
    pub team: Option<String>,
    /// Send as the person who wrote (`props.override_username` and `override_icon_url`) where the
    /// server allows it (Integrations: Enable integrations to override usernames and profile
    /// picture icons). Default true; where the server does not, the name is written before the
    /// text.
    #[serde(default = "yes")]
    pub per_message_identity: bool,
    /// After a reconnect or a gap in the event sequence, how many posts of each channel since the
    /// last one seen are read (0–1000). Default 100.
    #[serde(default = "default_catch_up")]
    pub catch_up_posts: u32,
    /// The daemon's public address, to offer Mattermost's files (which need the token) to the
    /// other networks through signed links. Unset: files are named, not linked.
    pub media_public_url: Option<String>,
    /// The largest file uploaded, in bytes; a larger one is sent as a link. Default 50 MiB (the
    /// server's default `MaxFileSize`).
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

fn default_catch_up() -> u32 {
    100
}

fn default_max_upload() -> u64 {
    50 * 1024 * 1024
}

fn default_timeout() -> u64 {
    30
}

/// A checked config, secrets read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server, without trailing `/`.
    pub url: String,
    /// The token.
    pub token: Secret,
    /// The team of `~name` rooms.
    pub team: Option<String>,
    /// Override props wanted.
    pub per_message_identity: bool,
    /// Posts read per channel after a gap.
    pub catch_up: u32,
    /// `media_public_url`, `max_upload_bytes`, `media_fetch_private`.
    pub media: Media,
    /// Per-call timeout.
    pub request_timeout: Duration,
}

/// What a room names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Room {
    /// A channel by id (26 lowercase letters and digits).
    Channel(String),
    /// A channel of `team` by name (`~town-square`).
    Named(String),
}

/// Whether `id` has the shape of Mattermost's ids.
pub fn valid_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Reads a room name.
pub fn room(name: &str) -> Option<Room> {
    if let Some(channel) = name.strip_prefix('~') {
        // Channel names (URL handles): 1–64 lowercase letters, digits, `-`, `_`.
        let ok = !channel.is_empty()
            && channel.len() <= 64
            && channel
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        return ok.then(|| Room::Named(channel.to_owned()));
    }
    valid_id(name).then(|| Room::Channel(name.to_owned()))
}

impl MattermostConfig {
    /// Parses and checks an account table, reporting every problem at once.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: MattermostConfig = parse_table(table).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        let url = match raw
            .url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
        {
            Some(u) => {
                if let Err(why) = check_base_url(&u) {
                    issues.push(ConfigIssue::new("url", why));
                }
                u
            }
            None => {
                issues.push(ConfigIssue::new(
                    "url",
                    "missing: the server's address, as https://chat.example.org",
                ));
                String::new()
            }
        };
        let token = match secret::require("token", raw.token.as_ref(), raw.token_file.as_ref()) {
            Ok(t)
                if t.expose().len() < 16
                    || !t.expose().bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                issues.push(ConfigIssue::new(
                    "token",
                    "not a Mattermost token (letters and digits, as the bot's or your Profile, Security, Personal Access Tokens page gives it)",
                ));
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                issues.push(e);
                None
            }
        };
        let team = raw.team.as_deref().map(str::trim).map(str::to_owned);
        if team.as_deref() == Some("") {
            issues.push(ConfigIssue::new(
                "team",
                "empty: give the team's name, or leave it out",
            ));
        }
        if raw.catch_up_posts > MAX_CATCH_UP {
            issues.push(ConfigIssue::new(
                "catch_up_posts",
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
                url,
                token,
                team,
                per_message_identity: raw.per_message_identity,
                catch_up: raw.catch_up_posts,
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
    fn rooms_are_channel_ids_or_names() {
        assert_eq!(
            room("4xp9fdt77pncbef59f4k1qe83o"),
            Some(Room::Channel("4xp9fdt77pncbef59f4k1qe83o".into()))
        );
        assert_eq!(
            room("~town-square"),
            Some(Room::Named("town-square".into()))
        );
        for bad in [
            "",
            "~",
            "~Town",
            "~a b",
            "4xp9fdt77pncbef59f4k1qe83",
            "4XP9FDT77PNCBEF59F4K1QE83O",
        ] {
            assert_eq!(room(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let issues =
            MattermostConfig::parse(json!({"url": "http://chat.example.org", "token": "short",
            "team": " ", "catch_up_posts": 5000, "request_timeout_secs": 0}))
            .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "url",
                "token",
                "team",
                "catch_up_posts",
                "request_timeout_secs"
            ],
            "{issues:?}"
        );
        let ok = MattermostConfig::parse(
            json!({"url": "https://chat.example.org/", "token": "9f3k2m1x8c7v6b5n4a3s2d1f0g"}),
        )
        .unwrap();
        assert_eq!(ok.url, "https://chat.example.org");
        assert!(ok.per_message_identity);
    }
}

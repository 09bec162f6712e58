//! The Slack account's config: `[accounts.NAME]` with `kind = "slack"`.

use passerelle_sdk::config::{Media, check_base_url, parse_table, timeout};
use passerelle_sdk::{ConfigIssue, Secret, secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The most messages `catch_up_messages` may ask for, per channel.
pub const MAX_CATCH_UP: u32 = 1000;

/// How events reach the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Socket Mode: the bridge opens a WebSocket to Slack (no public address needed).
    Socket,
    /// The HTTP Events API: Slack posts to `/hooks/NAME` on the daemon's listener.
    Events,
}

/// The keys of a Slack account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The bot token (`xoxb-…`, OAuth & Permissions, Bot User OAuth Token).
    pub bot_token: Option<Secret>,
    /// File holding `bot_token`.
    pub bot_token_file: Option<PathBuf>,
    /// `socket` (default) or `events`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The app-level token (`xapp-…`, Basic Information, App-Level Tokens, with the
    /// `connections:write` scope); needed in Socket Mode.
    pub app_token: Option<Secret>,
    /// File holding `app_token`.
    pub app_token_file: Option<PathBuf>,
    /// The app's signing secret (Basic Information, App Credentials); needed with `mode =
    /// "events"`, where every call is checked against it.
    pub signing_secret: Option<Secret>,
    /// File holding `signing_secret`.
    pub signing_secret_file: Option<PathBuf>,
    /// The Web API's base. Default `https://slack.com/api`. Must be `https`, except on loopback.
    pub api_base: Option<String>,
    /// Send as the person who wrote (`username` and `icon_url`; needs the
    /// `chat:write.customize` scope). Default true. When false the bot writes the name before the
    /// text.
    #[serde(default = "yes")]
    pub per_message_identity: bool,
    /// After a reconnect, how many of each channel's messages since the last one seen are read
    /// from its history (0–1000): what Slack stopped redelivering during a long outage. Default
    /// 100; 0 turns the catch-up off.
    #[serde(default = "default_catch_up")]
    pub catch_up_messages: u32,
    /// The daemon's public address, to offer Slack's files (which need the bot token) to the other
    /// networks through signed links. Unset: files are named, not linked.
    pub media_public_url: Option<String>,
    /// The largest file uploaded to Slack, in bytes; a larger one is sent as a link. Default
    /// 100 MiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Fetch files from loopback and private addresses too (default false: public only).
    #[serde(default)]
    pub media_fetch_private: bool,
    /// Seconds a Web API call may take. Default 30.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_mode() -> Mode {
    Mode::Socket
}

fn default_catch_up() -> u32 {
    100
}

fn default_max_upload() -> u64 {
    100 * 1024 * 1024
}

fn default_timeout() -> u64 {
    30
}

/// A checked config, secrets read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `xoxb-…`.
    pub bot_token: Secret,
    /// How events come.
    pub mode: Mode,
    /// `xapp-…` (Socket Mode).
    pub app_token: Option<Secret>,
    /// The signing secret (Events API).
    pub signing_secret: Option<Secret>,
    /// Web API base without trailing `/`.
    pub api_base: String,
    /// `username`/`icon_url` per message.
    pub per_message_identity: bool,
    /// Messages read per channel after a reconnect.
    pub catch_up: u32,
    /// `media_public_url`, `max_upload_bytes`, `media_fetch_private`.
    pub media: Media,
    /// Per-call timeout.
    pub request_timeout: Duration,
}

/// What a room names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Room {
    /// A conversation by id: a channel (`C…`), a private channel (`G…`) or a direct message
    /// (`D…`).
    Conversation(String),
    /// A channel by name (lower-cased, without `#`), looked up once connected.
    Named(String),
    /// The direct messages with this user (`@U…`).
    Direct(String),
}

fn slack_id(s: &str, first: &[u8]) -> bool {
    (2..=24).contains(&s.len())
        && first.contains(&s.as_bytes()[0])
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Reads a room name.
pub fn room(name: &str) -> Option<Room> {
    if let Some(channel) = name.strip_prefix('#') {
        // Slack's channel names: 1–80 lowercase letters, digits, `-`, `_` and `.`.
        let ok = !channel.is_empty()
            && channel.chars().count() <= 80
            && channel
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
        return ok.then(|| Room::Named(channel.to_lowercase()));
    }
    if let Some(user) = name.strip_prefix('@') {
        return slack_id(user, b"UW").then(|| Room::Direct(user.to_owned()));
    }
    slack_id(name, b"CGD").then(|| Room::Conversation(name.to_owned()))
}

fn token(
    key: &str,
    prefix: &str,
    value: Option<&Secret>,
    file: Option<&PathBuf>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Secret> {
    match secret::require(key, value, file) {
        Ok(t) if !t.expose().starts_with(prefix) => {
            issues.push(ConfigIssue::new(
                key,
                format!("not a {prefix}… token (Slack's app settings give it)"),
            ));
            None
        }
        Ok(t) if t.expose().len() > 512 || !t.expose().bytes().all(|b| b.is_ascii_graphic()) => {
            issues.push(ConfigIssue::new(
                key,
                "printable characters without spaces, as Slack gives it",
            ));
            None
        }
        Ok(t) => Some(t),
        Err(e) => {
            issues.push(e);
            None
        }
    }
}

impl SlackConfig {
    /// Parses and checks an account table, reporting every problem at once.
    pub fn parse(table: serde_json::Value) -> Result<Settings, Vec<ConfigIssue>> {
        let raw: SlackConfig = parse_table(table).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        let bot_token = token(
            "bot_token",
            "xoxb-",
            raw.bot_token.as_ref(),
            raw.bot_token_file.as_ref(),
            &mut issues,
        );
        let app_token = match raw.mode {
            Mode::Socket => token(
                "app_token",
                "xapp-",
                raw.app_token.as_ref(),
                raw.app_token_file.as_ref(),
                &mut issues,
            ),
            Mode::Events => None,
        };
        let signing_secret = match raw.mode {
            Mode::Events => match secret::require(
                "signing_secret",
                raw.signing_secret.as_ref(),
                raw.signing_secret_file.as_ref(),
            ) {
                Ok(s) if s.expose().len() >= 16 => Some(s),
                Ok(_) => {
                    issues.push(ConfigIssue::new(
                        "signing_secret",
                        "too short for a signing secret (Basic Information, App Credentials)",
                    ));
                    None
                }
                Err(e) => {
                    issues.push(e);
                    None
                }
            },
            Mode::Socket => None,
        };
        let api_base = raw
            .api_base
            .as_deref()
            .unwrap_or("https://slack.com/api")
            .trim_end_matches('/')
            .to_owned();
        if let Err(why) = check_base_url(&api_base) {
            issues.push(ConfigIssue::new("api_base", why));
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
        match bot_token {
            Some(bot_token) if issues.is_empty() => Ok(Settings {
                bot_token,
                mode: raw.mode,
                app_token,
                signing_secret,
                api_base,
                per_message_identity: raw.per_message_identity,
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
    fn rooms_are_conversation_ids_names_or_a_person() {
        assert_eq!(
            room("C0123ABCD"),
            Some(Room::Conversation("C0123ABCD".into()))
        );
        assert_eq!(
            room("G0PRIVATE"),
            Some(Room::Conversation("G0PRIVATE".into()))
        );
        assert_eq!(room("@U0PERSON"), Some(Room::Direct("U0PERSON".into())));
        assert_eq!(room("#General"), Some(Room::Named("general".into())));
        for bad in [
            "",
            "#",
            "# x",
            "#a b",
            "@",
            "@C0123",
            "c0123abcd",
            "X0123",
            "C",
            "C0123-ABC",
        ] {
            assert_eq!(room(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let issues = SlackConfig::parse(json!({
            "bot_token": "xoxp-user-token", "app_token": "xoxb-wrong", "api_base": "http://slack.example.org/api",
            "catch_up_messages": 5000, "request_timeout_secs": 0
        }))
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bot_token",
                "app_token",
                "api_base",
                "catch_up_messages",
                "request_timeout_secs"
            ],
            "{issues:?}"
        );
        let events =
            SlackConfig::parse(json!({"bot_token": "xoxb-1-2", "mode": "events"})).unwrap_err();
        assert_eq!(events[0].path, "signing_secret");
        let ok = SlackConfig::parse(json!({"bot_token": "xoxb-1-2", "app_token": "xapp-1-A-3"}))
            .unwrap();
        assert_eq!(ok.api_base, "https://slack.com/api");
        assert_eq!(ok.mode, Mode::Socket);
        assert!(ok.per_message_identity);
    }
}
